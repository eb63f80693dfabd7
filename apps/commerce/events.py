"""Event kinds of the commerce app, and which of them feed a live session.

Every event a live-stream client may see carries a ``session`` attribute (the
session id in decimal); ``feed_events`` picks those out of a block's events in
block order, for the WebSocket feed ``/v1/sessions/{id}/events``. Feed events
never name a buyer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from vm.receipts import MAX_ATTR_VALUE, Event, EventAttr

# Live-session feed.
SESSION_OPENED = "commerce.session_opened"
LISTING_PINNED = "commerce.listing_pinned"
LISTING_UNPINNED = "commerce.listing_unpinned"
DEAL_OPENED = "commerce.deal_opened"
STOCK_LEFT = "commerce.stock_left"
ORDER_PLACED = "commerce.order_placed"
DEAL_CLOSED = "commerce.deal_closed"
TIP = "commerce.tip"
SESSION_CLOSED = "commerce.session_closed"

# Everything else (receipts, audits, the order parties' clients).
ROLES_SET = "commerce.roles_set"
MERCHANT_REGISTERED = "commerce.merchant_registered"
MERCHANT_UPDATED = "commerce.merchant_updated"
MERCHANT_STATUS = "commerce.merchant_status"
LISTING_CREATED = "commerce.listing_created"
LISTING_UPDATED = "commerce.listing_updated"
LISTING_STOCK = "commerce.listing_stock"
LISTING_DELISTED = "commerce.listing_delisted"
ORDER_STATE = "commerce.order_state"
ORDER_REFUND = "commerce.order_refund"
PAYOUT = "commerce.payout"
DISPUTE_OPENED = "commerce.dispute_opened"
DISCLOSED = "commerce.disclosed"
ITEM_REGISTERED = "commerce.item_registered"
ITEM_EVENT = "commerce.item_event"
CUSTODY_PROPOSED = "commerce.custody_proposed"
CUSTODY_ACCEPTED = "commerce.custody_accepted"
CUSTODY_REFUSED = "commerce.custody_refused"
REVIEW_WRITTEN = "commerce.review"
REVIEW_REPLIED = "commerce.review_reply"

FEED_KINDS = frozenset(
    {
        SESSION_OPENED,
        LISTING_PINNED,
        LISTING_UNPINNED,
        DEAL_OPENED,
        STOCK_LEFT,
        ORDER_PLACED,
        DEAL_CLOSED,
        TIP,
        SESSION_CLOSED,
    }
)


def make(kind: str, **attrs: str | int | bytes) -> Event:
    """``Event.of`` for the handlers' own events, without its per-call generality.

    Same result as ``Event.of``: integers in decimal, bytes in lowercase hex,
    attributes in the order given. Kinds and keys are this module's constants
    and short literals; integers (uint64) and the bytes passed (at most 32) are
    always within bounds; a string that might not be goes through ``Event.of``,
    which checks it.
    """
    items = []
    cache = _ATTRS
    for key, value in attrs.items():
        t = type(value)
        if t is int:
            text = str(value)
        elif t is bytes:
            text = value.hex()  # type: ignore[union-attr]  # t is bytes
        elif t is str and len(value) * 4 <= MAX_ATTR_VALUE:  # type: ignore[arg-type]  # t is str
            text = value  # type: ignore[assignment]  # t is str
        else:
            return Event.of(kind, **attrs)
        # Attributes are immutable, and most (session, deal, state...) repeat.
        attr = cache.get((key, text))
        if attr is None:
            if len(cache) >= _ATTR_CACHE_SIZE:
                cache.clear()
            attr = cache[(key, text)] = EventAttr(key, text)
        items.append(attr)
    return Event(kind, tuple(items))


_ATTR_CACHE_SIZE = 8192
_ATTRS: dict[tuple[str, str], EventAttr] = {}


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
