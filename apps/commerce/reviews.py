"""Reviews: one per settled order (an order has one line) by its buyer, editable until
the merchant replies once. Rating aggregates (sum and count) live on the merchant
and on the listing, with the newest review of each; every review links back to the
previous one of the same merchant and of the same listing (no index keys).
"""

from __future__ import annotations

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import SETTLED_STATES, Listing, Merchant, Review, state_name
from apps.commerce.payloads import (
    REPLY_REVIEW,
    REVIEW,
    ReplyReview,
    WriteReview,
)
from apps.commerce.store import addr, config, load, require_order, require_text
from core.codec import constructor, replace
from core.errors import NodeFault
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)

MIN_RATING = 1
MAX_RATING = 5


# Every review written builds one (13 fields): set the slots directly.
_new_review = constructor(Review)


@TX_TYPES.declare(
    REVIEW,
    WriteReview,
    "buyer of a settled order: write a review, or edit it until replied",
    codes={
        **shared(
            "commerce_disabled", "not_authorized", "text_too_long", "u64_overflow", "unknown_order"
        ),
        "not_settled": "the order is not completed or resolved",
        "invalid_rating": "a rating outside 1..5",
        "review_locked": "the merchant replied; the review is final",
    },
    events={ev.REVIEW_WRITTEN},
    reads={P.CONFIG, P.ORDER},
    writes={P.MERCHANT, P.LISTING, P.REVIEW},
    view="Review",
)
def process_review(state: Overlay, tx: TxInfo, p: WriteReview, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    order = require_order(state, p.order_id)
    # Only the buyer of the order reviews it. The message names the signer only
    # (receipts are public: see orders._require_buyer).
    if signer != order.buyer:
        raise TxFailed(
            f"reviewing order {order.id} needs its buyer, signer {addr(signer)} is not",
            "not_authorized",
        )
    # Only a settled order (completed or resolved) can be reviewed.
    if order.state not in SETTLED_STATES:
        raise TxFailed(
            f"order {order.id} is {state_name(order.state)}, expected completed or resolved",
            "not_settled",
        )
    # Ratings are whole stars.
    if not MIN_RATING <= p.rating <= MAX_RATING:
        raise TxFailed(
            f"rating must be in {MIN_RATING}..{MAX_RATING}, got {p.rating}", "invalid_rating"
        )
    require_text(p.text, params.review_max_bytes, "review text")
    rkey = keys.review_key(order.id)
    existing = load(state, rkey, Review)
    # Once the merchant replied, the review is what the reply answers: no more edits.
    if existing is not None and existing.reply is not None:
        raise TxFailed(
            f"review of order {order.id} was replied to at {existing.replied_ms}; it is final",
            "review_locked",
        )
    mkey = keys.merchant_key(order.merchant)
    lkey = keys.listing_key(order.listing_id)
    merchant = load(state, mkey, Merchant)
    listing = load(state, lkey, Listing)
    if merchant is None or listing is None:
        raise NodeFault(f"order {order.id} refers to a missing merchant or listing")
    if existing is None:
        review = _new_review(
            order.id,
            signer,
            order.merchant,
            order.listing_id,
            p.rating,
            p.text,
            ctx.time_ms,
            ctx.time_ms,
            0,
            None,
            0,
            merchant.last_review,
            listing.last_review,
        )
        delta_sum, delta_count = p.rating, 1
        # The new review becomes the newest of its merchant and listing.
        last_m = last_l = order.id
    else:
        review = replace(
            existing,
            rating=p.rating,
            text=p.text,
            updated_ms=ctx.time_ms,
            edits=checked_add(existing.edits, 1, "review edits"),
        )
        delta_sum, delta_count = p.rating - existing.rating, 0
        last_m, last_l = merchant.last_review, listing.last_review
    state.set_obj(rkey, review)
    state.set_obj(
        mkey,
        replace(
            merchant,
            rating_sum=checked_add(merchant.rating_sum, delta_sum, "merchant rating sum"),
            rating_count=checked_add(merchant.rating_count, delta_count, "merchant ratings"),
            last_review=last_m,
        ),
    )
    state.set_obj(
        lkey,
        replace(
            listing,
            rating_sum=checked_add(listing.rating_sum, delta_sum, "listing rating sum"),
            rating_count=checked_add(listing.rating_count, delta_count, "listing ratings"),
            last_review=last_l,
        ),
    )
    state.emit(
        ev.make(
            ev.REVIEW_WRITTEN,
            order=order.id,
            merchant=order.merchant,
            listing=order.listing_id,
            rating=p.rating,
            edit=review.edits,
        )
    )


@TX_TYPES.declare(
    REPLY_REVIEW,
    ReplyReview,
    "the order's merchant: reply once; the review is final",
    codes={
        **shared(
            "commerce_disabled", "not_authorized", "invalid_text", "text_too_long", "unknown_order"
        ),
        "unknown_review": "the order has no review",
        "already_replied": "the merchant already replied",
    },
    events={ev.REVIEW_REPLIED},
    reads={P.CONFIG, P.ORDER},
    writes={P.REVIEW},
    view="Review",
)
def process_reply_review(state: Overlay, tx: TxInfo, p: ReplyReview, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    order = require_order(state, p.order_id)
    # Only the order's merchant replies to its review.
    if signer != order.merchant:
        raise TxFailed(
            f"replying to the review of order {order.id} needs its merchant "
            f"{addr(order.merchant)}, signer is {addr(signer)}",
            "not_authorized",
        )
    rkey = keys.review_key(order.id)
    review = load(state, rkey, Review)
    # There must be a review to reply to.
    if review is None:
        raise TxFailed(f"order {order.id} has no review", "unknown_review")
    # The merchant replies once.
    if review.reply is not None:
        raise TxFailed(f"review of order {order.id} already has a reply", "already_replied")
    require_text(p.text, params.reply_max_bytes, "reply text")
    # An empty reply would lock the review while saying nothing.
    if not p.text.strip():
        raise TxFailed("reply must not be blank", "invalid_text")
    state.set_obj(rkey, replace(review, reply=p.text, replied_ms=ctx.time_ms))
    state.emit(ev.make(ev.REVIEW_REPLIED, order=order.id, merchant=signer))
