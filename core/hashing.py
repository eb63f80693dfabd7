"""Domain-separated BLAKE2b-256 and binary Merkle roots over lists."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import IntEnum

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)


class Domain(IntEnum):
    """One-byte prefix per kind of hashed object; values are part of the protocol."""

    TX = 0x01
    HEADER = 0x02
    VOTE = 0x03
    GENESIS = 0x04
    ADDRESS = 0x05
    LIST_LEAF = 0x10
    LIST_NODE = 0x11
    STATE_KEY = 0x20
    STATE_VALUE = 0x21
    STATE_LEAF = 0x22
    STATE_NODE = 0x23
    RECEIPT = 0x30
    PRODUCER_SET = 0x40


_PREFIX = {d: bytes([d]) for d in Domain}


def hash_bytes(domain: Domain, data: bytes) -> bytes:
    """BLAKE2b-256 of ``domain || data``."""
    return hashlib.blake2b(_PREFIX[domain] + data, digest_size=HASH_SIZE).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root over already-encoded items.

    Leaves are hashed with ``LIST_LEAF``, inner nodes with ``LIST_NODE``; an odd
    node at the end of a level is promoted unchanged (no duplication, so no
    CVE-2012-2459-style second preimage). The root of an empty list is zero.
    """
    if not leaves:
        return ZERO_HASH
    blake = hashlib.blake2b
    leaf = _PREFIX[Domain.LIST_LEAF]
    node = _PREFIX[Domain.LIST_NODE]
    level = [blake(leaf + x, digest_size=HASH_SIZE).digest() for x in leaves]
    while len(level) > 1:
        nxt = [
            blake(node + level[i] + level[i + 1], digest_size=HASH_SIZE).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
