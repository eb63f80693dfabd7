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
