"""Every commerce transaction type, and what is derived from their declarations.

Each type is declared on its handler (``TxTable.declare`` in merchants, listings,
sessions, orders, auctions, provenance and reviews); a new handler module is added to
``TX_TYPES`` here. From the declarations come ``ERROR_CODES`` (every code a
commerce receipt may carry) and ``FEED_KINDS`` (the event kinds the live-session
feed sends, picked out of a block's events by ``feed_events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from apps.commerce import auctions, listings, merchants, orders, provenance, reviews, sessions
from vm.receipts import Event
from vm.registry import TxType, error_codes, feed_kinds

# In registration order.
TX_TYPES: tuple[TxType, ...] = (
    *merchants.TX_TYPES,
    *listings.TX_TYPES,
    *sessions.TX_TYPES,
    *orders.TX_TYPES,
    *auctions.TX_TYPES,
    *provenance.TX_TYPES,
    *reviews.TX_TYPES,
)
# Code -> meaning (docs/commerce.md, Error codes).
ERROR_CODES: dict[str, str] = error_codes(TX_TYPES)
FEED_KINDS: frozenset[str] = feed_kinds(TX_TYPES)


def session_of(event: Event) -> int | None:
    """The live session a feed event belongs to, or None for any other event."""
    if event.kind not in FEED_KINDS:
        return None
    value = event.get("session")
    # Session ids start at 1; an order outside any session carries session 0.
    if value is None or not value.isdigit() or int(value) == 0:
        return None
    return int(value)


def feed_events(events: Iterable[Event], session_id: int | None = None) -> Iterator[Event]:
    """Feed events in the order given (a block's begin events, then its receipts' events).

    With ``session_id``, only that session's.
    """
    for event in events:
        sid = session_of(event)
        if sid is not None and (session_id is None or sid == session_id):
            yield event
