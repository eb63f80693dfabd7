"""Event kinds of the commerce app, and ``make``, the handlers' event builder.

A type's declaration lists the kinds its handler emits, and which of them feed a
live session (``feed``; ``txtypes.FEED_KINDS`` is derived from the declarations).
Every event a live-stream client may see carries a ``session`` attribute (the
session id in decimal) and never names a buyer.
"""

from __future__ import annotations

from core.codec import pack_raw
from vm.receipts import MAX_ATTR_KEY, MAX_ATTR_VALUE, MAX_ATTRS, MAX_EVENT_KIND, Event

# Live-session feed (declared ``feed`` by the types that emit them).
SESSION_OPENED = "commerce.session_opened"
LISTING_PINNED = "commerce.listing_pinned"
LISTING_UNPINNED = "commerce.listing_unpinned"
DEAL_OPENED = "commerce.deal_opened"
STOCK_LEFT = "commerce.stock_left"
ORDER_PLACED = "commerce.order_placed"
DEAL_CLOSED = "commerce.deal_closed"
TIP = "commerce.tip"
SESSION_CLOSED = "commerce.session_closed"
AUCTION_STARTED = "commerce.auction_started"
AUCTION_BID = "commerce.auction_bid"
AUCTION_EXTENDED = "commerce.auction_extended"
# Outcome won, unsold or cancelled (begin events at the end time; cancel's receipt).
AUCTION_ENDED = "commerce.auction_ended"

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


def in_currency(currency: str) -> dict[str, str]:
    """The ``currency`` attribute of an event that moves or prices an issued currency;
    none for the native token, so native events read as they always did."""
    return {"currency": currency} if currency else {}


def make(kind: str, **attrs: str | int | bytes) -> bytes:
    """The encoding of ``Event.of(kind, **attrs)``, packed straight from the values:
    the handlers' events go into receipts encoded (``Overlay.emit``), so no event or
    attribute objects are built.

    Same bytes as ``Event.of(...).encode()`` (integers in decimal, bytes in lowercase
    hex, attributes in the order given), and refused where it refuses: anything that
    might be over a bound a receipt's decoding holds (a text over a quarter of its
    byte limit, too many attributes, a value of another type) goes through
    ``Event.of``, which checks it exactly. Receipts are written by concatenation, so
    nothing later would catch an event no node could decode.
    """
    if len(attrs) > MAX_ATTRS or (
        len(kind) * 4 > MAX_EVENT_KIND and len(kind.encode()) > MAX_EVENT_KIND
    ):
        return Event.of(kind, **attrs).encode()  # raises, naming the bound
    items = []
    for key, value in attrs.items():
        t = type(value)
        if t is int:
            text = str(value)
        elif t is bytes:
            text = value.hex()  # type: ignore[union-attr]  # t is bytes
        elif t is str:
            text = value  # type: ignore[assignment]  # t is str
        else:
            return Event.of(kind, **attrs).encode()  # raises, naming the type
        # A UTF-8 character is at most 4 bytes: short texts and keys need no encoding.
        if len(text) * 4 > MAX_ATTR_VALUE or len(key) * 4 > MAX_ATTR_KEY:
            return Event.of(kind, **attrs).encode()
        items.append([key, text])
    return pack_raw([kind, items])
