"""State keys of the commerce app (layout documented in docs/commerce.md).

Every key is ``prefix byte || fixed-width parts``: ids are 8-byte big-endian
(so a prefix scan lists them in id order), addresses 20 bytes, item refs 32. A
record kept for an address puts the address first, right after the prefix: the
state tree keeps an address's records together, and a key of ``prefix || id``
beside the 255 ids around it (``storage.state_tree.key_group``).
"""

from __future__ import annotations

import hashlib
from enum import IntEnum


class CommercePrefix(IntEnum):
    """State key prefixes of the commerce app (range 0x20-0x4F, ``vm.prefixes.PREFIX_RANGES``).

    Values are part of the protocol: never renumber; a new kind takes the next free value.
    """

    CONFIG = 0x20
    ROLE = 0x21
    COUNTER = 0x22
    ESCROW = 0x23
    MERCHANT = 0x24
    LISTING = 0x25
    LISTING_VERSION = 0x26
    SESSION = 0x27
    DEAL = 0x28
    DEAL_BUYER = 0x29
    ORDER = 0x2A
    PARTY = 0x2B
    DISPUTE = 0x2C
    DISCLOSURE = 0x2D
    DEADLINE_QUEUE = 0x2E
    DEADLINE_ENTRY = 0x2F
    DEAL_CLOCK = 0x30
    DEAL_BUCKET = 0x31
    ITEM = 0x32
    ITEM_EVENT = 0x33
    REVIEW = 0x34
    AUCTION = 0x35
    AUCTION_CLOCK = 0x36
    AUCTION_BUCKET = 0x37


# Counter kinds (the byte after CommercePrefix.COUNTER).
LISTING_IDS = 1
SESSION_IDS = 2
DEAL_IDS = 3
ORDER_IDS = 4
AUCTION_IDS = 5

_P = {p: bytes([p]) for p in CommercePrefix}

CONFIG_KEY = _P[CommercePrefix.CONFIG]
ESCROW_KEY = _P[CommercePrefix.ESCROW]


def escrow_key(currency: str) -> bytes:
    """The escrow of ``currency``: ``ESCROW_KEY`` for the native token (as before
    currencies), ``ESCROW_KEY || symbol`` for an issued one."""
    return ESCROW_KEY + currency.encode()


DEAL_CLOCK_KEY = _P[CommercePrefix.DEAL_CLOCK]
AUCTION_CLOCK_KEY = _P[CommercePrefix.AUCTION_CLOCK]


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def role_key(address: bytes) -> bytes:
    return _P[CommercePrefix.ROLE] + address


def counter_key(kind: int) -> bytes:
    return _P[CommercePrefix.COUNTER] + bytes([kind])


def merchant_key(address: bytes) -> bytes:
    return _P[CommercePrefix.MERCHANT] + address


def listing_key(listing_id: int) -> bytes:
    return _P[CommercePrefix.LISTING] + _u64(listing_id)


def listing_version_key(listing_id: int, version: int) -> bytes:
    return _P[CommercePrefix.LISTING_VERSION] + _u64(listing_id) + version.to_bytes(4, "big")


def session_key(session_id: int) -> bytes:
    return _P[CommercePrefix.SESSION] + _u64(session_id)


def deal_key(deal_id: int) -> bytes:
    return _P[CommercePrefix.DEAL] + _u64(deal_id)


def deal_buyer_key(deal_id: int, buyer: bytes) -> bytes:
    # The buyer first: a record kept for an address starts with it, so it sits beside
    # the buyer's party record in the state tree (``storage.state_tree.key_group``).
    return _P[CommercePrefix.DEAL_BUYER] + buyer + _u64(deal_id)


def order_key(order_id: int) -> bytes:
    return _P[CommercePrefix.ORDER] + _u64(order_id)


def dispute_key(order_id: int) -> bytes:
    return _P[CommercePrefix.DISPUTE] + _u64(order_id)


def disclosure_key(order_id: int, seq: int) -> bytes:
    return _P[CommercePrefix.DISCLOSURE] + _u64(order_id) + seq.to_bytes(4, "big")


def party_key(address: bytes) -> bytes:
    return _P[CommercePrefix.PARTY] + address


def deadline_queue_key(kind: int) -> bytes:
    return _P[CommercePrefix.DEADLINE_QUEUE] + bytes([kind])


def deadline_entry_key(kind: int, seq: int) -> bytes:
    return _P[CommercePrefix.DEADLINE_ENTRY] + bytes([kind]) + _u64(seq)


def deal_bucket_key(bucket: int) -> bytes:
    return _P[CommercePrefix.DEAL_BUCKET] + _u64(bucket)


def auction_key(auction_id: int) -> bytes:
    return _P[CommercePrefix.AUCTION] + _u64(auction_id)


def auction_bucket_key(bucket: int) -> bytes:
    return _P[CommercePrefix.AUCTION_BUCKET] + _u64(bucket)


def item_key(ref: bytes) -> bytes:
    return _P[CommercePrefix.ITEM] + ref


def item_event_key(ref: bytes, seq: int) -> bytes:
    return _P[CommercePrefix.ITEM_EVENT] + ref + seq.to_bytes(4, "big")


def review_key(order_id: int) -> bytes:
    return _P[CommercePrefix.REVIEW] + _u64(order_id)


def item_ref(gtin: str, serial: str) -> bytes:
    """The 32-byte reference of a GS1 item (GTIN + serial), used in keys.

    BLAKE2b-256, personalised so it can collide with no other hash in the
    chain. GTIN is fixed at 14 digits, so ``gtin || serial`` is unambiguous.
    """
    data = (gtin + serial).encode()
    return hashlib.blake2b(data, digest_size=32, person=b"ll-gs1-item-ref").digest()
