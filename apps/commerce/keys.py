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
# Each prefix's byte bound once: the key builders run several times per transaction,
# and a lookup through the enum costs more than the rest of the key.
_ROLE = _P[CommercePrefix.ROLE]
_COUNTER = _P[CommercePrefix.COUNTER]
_MERCHANT = _P[CommercePrefix.MERCHANT]
_LISTING = _P[CommercePrefix.LISTING]
_LISTING_VERSION = _P[CommercePrefix.LISTING_VERSION]
_SESSION = _P[CommercePrefix.SESSION]
_DEAL = _P[CommercePrefix.DEAL]
_DEAL_BUYER = _P[CommercePrefix.DEAL_BUYER]
_ORDER = _P[CommercePrefix.ORDER]
_DISPUTE = _P[CommercePrefix.DISPUTE]
_DISCLOSURE = _P[CommercePrefix.DISCLOSURE]
_PARTY = _P[CommercePrefix.PARTY]
_DEADLINE_QUEUE = _P[CommercePrefix.DEADLINE_QUEUE]
_DEADLINE_ENTRY = _P[CommercePrefix.DEADLINE_ENTRY]
_DEAL_BUCKET = _P[CommercePrefix.DEAL_BUCKET]
_AUCTION = _P[CommercePrefix.AUCTION]
_AUCTION_BUCKET = _P[CommercePrefix.AUCTION_BUCKET]
_ITEM = _P[CommercePrefix.ITEM]
_ITEM_EVENT = _P[CommercePrefix.ITEM_EVENT]
_REVIEW = _P[CommercePrefix.REVIEW]

CONFIG_KEY = _P[CommercePrefix.CONFIG]
ESCROW_KEY = _P[CommercePrefix.ESCROW]


def escrow_key(currency: str) -> bytes:
    """The escrow of ``currency``: ``ESCROW_KEY`` for the native token (as before
    currencies), ``ESCROW_KEY || symbol`` for an issued one."""
    return ESCROW_KEY + currency.encode()


DEAL_CLOCK_KEY = _P[CommercePrefix.DEAL_CLOCK]
AUCTION_CLOCK_KEY = _P[CommercePrefix.AUCTION_CLOCK]


def role_key(address: bytes) -> bytes:
    return _ROLE + address


def counter_key(kind: int) -> bytes:
    return _COUNTER + bytes([kind])


def merchant_key(address: bytes) -> bytes:
    return _MERCHANT + address


def listing_key(listing_id: int) -> bytes:
    return _LISTING + listing_id.to_bytes(8, "big")


def listing_version_key(listing_id: int, version: int) -> bytes:
    return _LISTING_VERSION + listing_id.to_bytes(8, "big") + version.to_bytes(4, "big")


def session_key(session_id: int) -> bytes:
    return _SESSION + session_id.to_bytes(8, "big")


def deal_key(deal_id: int) -> bytes:
    return _DEAL + deal_id.to_bytes(8, "big")


def deal_buyer_key(deal_id: int, buyer: bytes) -> bytes:
    # The buyer first: a record kept for an address starts with it, so it sits beside
    # the buyer's party record in the state tree (``storage.state_tree.key_group``).
    return _DEAL_BUYER + buyer + deal_id.to_bytes(8, "big")


def order_key(order_id: int) -> bytes:
    return _ORDER + order_id.to_bytes(8, "big")


def dispute_key(order_id: int) -> bytes:
    return _DISPUTE + order_id.to_bytes(8, "big")


def disclosure_key(order_id: int, seq: int) -> bytes:
    return _DISCLOSURE + order_id.to_bytes(8, "big") + seq.to_bytes(4, "big")


def party_key(address: bytes) -> bytes:
    return _PARTY + address


def deadline_queue_key(kind: int) -> bytes:
    return _DEADLINE_QUEUE + bytes([kind])


def deadline_entry_key(kind: int, seq: int) -> bytes:
    return _DEADLINE_ENTRY + bytes([kind]) + seq.to_bytes(8, "big")


def deal_bucket_key(bucket: int) -> bytes:
    return _DEAL_BUCKET + bucket.to_bytes(8, "big")


def auction_key(auction_id: int) -> bytes:
    return _AUCTION + auction_id.to_bytes(8, "big")


def auction_bucket_key(bucket: int) -> bytes:
    return _AUCTION_BUCKET + bucket.to_bytes(8, "big")


def item_key(ref: bytes) -> bytes:
    return _ITEM + ref


def item_event_key(ref: bytes, seq: int) -> bytes:
    return _ITEM_EVENT + ref + seq.to_bytes(4, "big")


def review_key(order_id: int) -> bytes:
    return _REVIEW + order_id.to_bytes(8, "big")


def item_ref(gtin: str, serial: str) -> bytes:
    """The 32-byte reference of a GS1 item (GTIN + serial), used in keys.

    BLAKE2b-256, personalised so it can collide with no other hash in the
    chain. GTIN is fixed at 14 digits, so ``gtin || serial`` is unambiguous.
    """
    data = (gtin + serial).encode()
    return hashlib.blake2b(data, digest_size=32, person=b"ll-gs1-item-ref").digest()
