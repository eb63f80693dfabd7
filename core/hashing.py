"""Domain-separated BLAKE2b-256 and binary Merkle roots over lists."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
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


# A hasher that has taken in each prefix byte, to be copied and continued: a quarter
# cheaper than a new hasher over ``prefix + data`` (keyword parsing, a copy of the
# data). Indexed by the byte: a list index reads an IntEnum's value in C, where an
# enum dict key would cost a Python-level __hash__ per call.
_PREFIXED = [hashlib.blake2b(bytes([v]), digest_size=HASH_SIZE) for v in range(256)]


def prefixed(domain: Domain) -> Callable[[], hashlib.blake2b]:
    """A maker of BLAKE2b-256 hashers that have taken in ``domain``'s prefix: update
    one with the data and take its digest (``hash_bytes`` inlined, for hot loops)."""
    return _PREFIXED[domain].copy


def hash_bytes(domain: Domain, data: bytes) -> bytes:
    """BLAKE2b-256 of ``domain || data``."""
    h = _PREFIXED[domain].copy()
    h.update(data)
    return h.digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root over already-encoded items.

    Leaves are hashed with ``LIST_LEAF``, inner nodes with ``LIST_NODE``; an odd
    node at the end of a level is promoted unchanged (no duplication, so no
    CVE-2012-2459-style second preimage). The root of an empty list is zero.
    """
    if not leaves:
        return ZERO_HASH
    # A block hashes two trees of tens of thousands of leaves: ``prefixed`` hashers.
    level: list[bytes] = []
    append = level.append
    leaf = _PREFIXED[Domain.LIST_LEAF].copy
    for x in leaves:
        h = leaf()
        h.update(x)
        append(h.digest())
    node = _PREFIXED[Domain.LIST_NODE].copy
    while len(level) > 1:
        nxt: list[bytes] = []
        append = nxt.append
        pairs = iter(level)
        for left, right in zip(pairs, pairs, strict=False):  # an odd last one waits
            h = node()
            h.update(left)
            h.update(right)
            append(h.digest())
        if len(level) % 2:
            append(level[-1])
        level = nxt
    return level[0]
