"""State keys of the commerce app (layout documented in docs/commerce.md).

Every key is ``prefix byte || fixed-width parts``: ids are 8-byte big-endian
(so a prefix scan lists them in id order), addresses 20 bytes, item refs 32.
"""

from __future__ import annotations

import hashlib

from vm.prefixes import KeyPrefix

# Counter kinds (the byte after COMMERCE_COUNTER).
LISTING_IDS = 1
SESSION_IDS = 2
DEAL_IDS = 3
ORDER_IDS = 4

_P = {p: bytes([p]) for p in KeyPrefix}

CONFIG_KEY = _P[KeyPrefix.COMMERCE_CONFIG]
ESCROW_KEY = _P[KeyPrefix.COMMERCE_ESCROW]
DEAL_CLOCK_KEY = _P[KeyPrefix.COMMERCE_DEAL_CLOCK]


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def role_key(address: bytes) -> bytes:
    return _P[KeyPrefix.COMMERCE_ROLE] + address


def counter_key(kind: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_COUNTER] + bytes([kind])


def merchant_key(address: bytes) -> bytes:
    return _P[KeyPrefix.COMMERCE_MERCHANT] + address


def listing_key(listing_id: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_LISTING] + _u64(listing_id)


def listing_version_key(listing_id: int, version: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_LISTING_VERSION] + _u64(listing_id) + version.to_bytes(4, "big")


def session_key(session_id: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_SESSION] + _u64(session_id)


def deal_key(deal_id: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_DEAL] + _u64(deal_id)


def deal_buyer_key(deal_id: int, buyer: bytes) -> bytes:
    return _P[KeyPrefix.COMMERCE_DEAL_BUYER] + _u64(deal_id) + buyer


def order_key(order_id: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_ORDER] + _u64(order_id)


def dispute_key(order_id: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_DISPUTE] + _u64(order_id)


def disclosure_key(order_id: int, seq: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_DISCLOSURE] + _u64(order_id) + seq.to_bytes(4, "big")


def party_key(address: bytes) -> bytes:
    return _P[KeyPrefix.COMMERCE_PARTY] + address


def deadline_queue_key(kind: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_DEADLINE_QUEUE] + bytes([kind])


def deadline_entry_key(kind: int, seq: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_DEADLINE_ENTRY] + bytes([kind]) + _u64(seq)


def deal_bucket_key(bucket: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_DEAL_BUCKET] + _u64(bucket)


def item_key(ref: bytes) -> bytes:
    return _P[KeyPrefix.COMMERCE_ITEM] + ref


def item_event_key(ref: bytes, seq: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_ITEM_EVENT] + ref + seq.to_bytes(4, "big")


def review_key(order_id: int) -> bytes:
    return _P[KeyPrefix.COMMERCE_REVIEW] + _u64(order_id)


def item_ref(gtin: str, serial: str) -> bytes:
    """The 32-byte reference of a GS1 item (GTIN + serial), used in keys.

    BLAKE2b-256, personalised so it can collide with no other hash in the
    chain. GTIN is fixed at 14 digits, so ``gtin || serial`` is unambiguous.
    """
    data = (gtin + serial).encode()
    return hashlib.blake2b(data, digest_size=32, person=b"ll-gs1-item-ref").digest()
