"""State key prefixes: the vm's own, and the range each package owns.

Every state key starts with one byte naming what it holds, so the key spaces of
the vm, consensus and the apps can never collide and a range scan over one kind
of object is a prefix scan. Each package defines its prefixes as an ``IntEnum``
beside its keys, within the range reserved for it here; a package not listed
has none until it is given a range. Values are part of the protocol: never
renumber (docs/vm.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class KeyPrefix(IntEnum):
    """The vm's own prefixes. 0x00 is never used, so an all-zero or empty-prefixed key
    is always a bug."""

    ACCOUNT = 0x01
    # A balance in an issued currency: ``0x02 || address || symbol`` (docs/vm.md, Currencies).
    BALANCE = 0x02
    # An issued currency: ``0x03 || symbol``.
    CURRENCY = 0x03
    # The symbols of every issued currency, sorted: ``0x04``.
    CURRENCY_LIST = 0x04


@dataclass(frozen=True, slots=True)
class PrefixRange:
    """The prefixes ``first..last`` (inclusive) belong to the package ``owner``."""

    owner: str
    first: int
    last: int

    def __contains__(self, prefix: object) -> bool:
        return isinstance(prefix, int) and self.first <= prefix <= self.last


# One range per package that owns state; 0x50-0xFF are unassigned.
PREFIX_RANGES: tuple[PrefixRange, ...] = (
    PrefixRange("vm", 0x01, 0x0F),
    # Key layout in docs/staking.md (consensus/prefixes.py).
    PrefixRange("consensus", 0x10, 0x1F),
    # Key layout in docs/commerce.md (apps/commerce/keys.py).
    PrefixRange("apps.commerce", 0x20, 0x4F),
)


def prefix_owner(prefix: int) -> str | None:
    """The package that owns key prefix ``prefix``, or None if no range holds it."""
    return next((r.owner for r in PREFIX_RANGES if prefix in r), None)
