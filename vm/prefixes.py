"""The one table of state key prefixes.

Every state key starts with one byte naming what it holds, so the key spaces of
the vm, consensus and the apps can never collide and a range scan over one kind
of object is a prefix scan. Values are part of the protocol: never renumber.
Ranges are reserved per layer (see docs/vm.md); add new kinds here.
"""

from __future__ import annotations

from enum import IntEnum


class KeyPrefix(IntEnum):
    # 0x00 is never used, so an all-zero or empty-prefixed key is always a bug.
    ACCOUNT = 0x01

    # 0x10-0x1F: consensus (key layout in docs/staking.md).
    MEMBER = 0x10
    CANDIDATE = 0x11
    STAKER = 0x12
    UNBONDING_QUEUE = 0x13
    PRODUCER_SET = 0x14
    EVIDENCE = 0x15
    PROPOSAL = 0x16
    # Singletons: member and candidate lists, proposal counter, staking totals.
    STAKING_INDEX = 0x17
    # Governed chain parameters: the active set and the scheduled changes.
    CHAIN_PARAMS = 0x18

    # 0x20-0x4F: apps/commerce (key layout in docs/commerce.md).
    COMMERCE_CONFIG = 0x20
    COMMERCE_ROLE = 0x21
    COMMERCE_COUNTER = 0x22
    COMMERCE_ESCROW = 0x23
    COMMERCE_MERCHANT = 0x24
    COMMERCE_LISTING = 0x25
    COMMERCE_LISTING_VERSION = 0x26
    COMMERCE_SESSION = 0x27
    COMMERCE_DEAL = 0x28
    COMMERCE_DEAL_BUYER = 0x29
    COMMERCE_ORDER = 0x2A
    COMMERCE_PARTY = 0x2B
    COMMERCE_DISPUTE = 0x2C
    COMMERCE_DISCLOSURE = 0x2D
    COMMERCE_DEADLINE_QUEUE = 0x2E
    COMMERCE_DEADLINE_ENTRY = 0x2F
    COMMERCE_DEAL_CLOCK = 0x30
    COMMERCE_DEAL_BUCKET = 0x31
    COMMERCE_ITEM = 0x32
    COMMERCE_ITEM_EVENT = 0x33
    COMMERCE_REVIEW = 0x34
