"""Checked u64 arithmetic for handlers.

Every integer in state is a u64 (the codec refuses anything else), so a handler
that adds to a running total or multiplies a price must refuse a result past
``2**64 - 1`` itself: as ``TxFailed`` with a code the client can act on, before
any write. ``Overlay.check_writes`` would catch the write too (``state_limit``),
but only after the handler ran, and with a code that names no cause.
"""

from __future__ import annotations

from core.codec import UINT64_MAX
from vm.registry import TxFailed

# Receipt code of a running total or amount that would pass 2**64-1.
U64_OVERFLOW = "u64_overflow"


def checked_add(a: int, b: int, what: str, code: str = U64_OVERFLOW) -> int:
    """``a + b`` for non-negative ``a``, ``b``; ``TxFailed`` (``code``) past 2**64-1."""
    total = a + b
    # State holds u64 only: a larger total could not be stored.
    if total > UINT64_MAX:
        raise TxFailed(f"{what} {a} + {b} exceeds 2**64-1", code)
    return total


def checked_mul(a: int, b: int, what: str, code: str = U64_OVERFLOW) -> int:
    """``a * b`` for non-negative ``a``, ``b``; ``TxFailed`` (``code``) past 2**64-1."""
    product = a * b
    # State holds u64 only: a larger product could not be stored.
    if product > UINT64_MAX:
        raise TxFailed(f"{what} {a} x {b} exceeds 2**64-1", code)
    return product
