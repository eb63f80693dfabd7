"""Listings: create, update (a new version), restock, withdraw stock, delist.

Stock of a listing always satisfies ``available + reserved + sold == total``.
"""

from __future__ import annotations

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import Listing, ListingStatus, ListingTerms
from apps.commerce.params import MAX_SEQ, CommerceParams
from apps.commerce.payloads import (
    CREATE_LISTING,
    DELIST,
    RESTOCK,
    UPDATE_LISTING,
    WITHDRAW_STOCK,
    CreateListing,
    ListingRef,
    StockChange,
    UpdateListing,
)
from apps.commerce.provenance import offer_item, require_resellable
from apps.commerce.store import (
    addr,
    config,
    next_id,
    require_approved,
    require_listing,
    require_merchant,
    require_text,
)
from core.codec import replace
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.currency import require_priceable
from vm.prefixes import KeyPrefix
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)

# A resale listing sells its one item: creating and restocking it both keep it at one unit.
_INVALID_RESALE = {
    "invalid_resale": "a resale listing with more than one unit (created with stock other "
    "than 1, or restocked past 1)"
}


def _check_terms(params: CommerceParams, title: str, description: str, price: int) -> None:
    require_text(title, params.title_max_bytes, "title")
    require_text(description, params.description_max_bytes, "description")
    # A listing needs a title shoppers can see.
    if not title.strip():
        raise TxFailed("listing title must not be blank", "invalid_text")
    # Escrow holds a positive amount for every open order.
    if price < 1:
        raise TxFailed(f"price must be at least 1, got {price}", "invalid_price")


def _require_own(listing: Listing, signer: bytes) -> None:
    # Only the listing's merchant may change it.
    if listing.merchant != signer:
        raise TxFailed(
            f"listing {listing.id} belongs to merchant {addr(listing.merchant)}, "
            f"signer is {addr(signer)}",
            "not_authorized",
        )


def _require_active(listing: Listing) -> None:
    # A delisted listing is closed for good.
    if listing.status != ListingStatus.ACTIVE:
        raise TxFailed(f"listing {listing.id} is delisted, expected active", "listing_inactive")


@TX_TYPES.declare(
    CREATE_LISTING,
    CreateListing,
    "approved merchant: a listing at version 1, `total = available = stock`",
    codes=shared(
        "commerce_disabled",
        "missing_role",
        "merchant_not_approved",
        "invalid_text",
        "text_too_long",
        "invalid_hash",
        "invalid_price",
        "u64_overflow",
        "unknown_currency",
        "currency_revoked",
        "unknown_item",
        "item_decommissioned",
        "not_custodian",
        "not_owner",
        "item_locked",
        "item_listed",
    )
    | _INVALID_RESALE,
    events={ev.LISTING_CREATED},
    reads={P.CONFIG, P.MERCHANT, KeyPrefix.CURRENCY},
    writes={P.COUNTER, P.LISTING, P.LISTING_VERSION, P.ITEM},
    view="ListingView",
)
def process_create_listing(state: Overlay, tx: TxInfo, p: CreateListing, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    require_approved(state, signer)
    _check_terms(params, p.title, p.description, p.price)
    # Hashes are 32 bytes; anything shorter is not one.
    if len(p.media_hash) not in (0, 32):
        raise TxFailed(f"media hash must be 0 or 32 bytes, got {len(p.media_hash)}", "invalid_hash")
    # Priced in the native token or an issued currency that takes new business.
    require_priceable(state, p.currency)
    item_ref = b""
    if p.item is not None:
        # A resale sells the one item it names, so one unit.
        if p.stock != 1:
            raise TxFailed(
                f"a resale listing sells one item, stock must be 1, got {p.stock}",
                "invalid_resale",
            )
        item_ref = require_resellable(state, p.item, signer)
    listing_id = next_id(state, keys.LISTING_IDS)
    terms = ListingTerms(listing_id, 1, p.title, p.description, p.price, p.media_hash, ctx.time_ms)
    listing = Listing(
        listing_id,
        signer,
        1,
        ListingStatus.ACTIVE,
        p.price,
        p.stock,
        p.stock,
        0,
        0,
        0,
        ctx.time_ms,
        0,
        0,
        0,
        p.currency,
        item_ref,
    )
    state.set_obj(keys.listing_key(listing_id), listing)
    state.set_obj(keys.listing_version_key(listing_id, 1), terms)
    if item_ref:
        offer_item(state, item_ref, listing_id)
    state.emit(
        ev.make(
            ev.LISTING_CREATED,
            listing=listing_id,
            merchant=signer,
            price=p.price,
            stock=p.stock,
            **ev.in_currency(p.currency),
            **({"item": item_ref} if item_ref else {}),
        )
    )


@TX_TYPES.declare(
    UPDATE_LISTING,
    UpdateListing,
    "its merchant: a new version of the listing's terms (if `version` is the current one)",
    codes={
        **shared(
            "commerce_disabled",
            "not_authorized",
            "invalid_text",
            "text_too_long",
            "invalid_hash",
            "unknown_listing",
            "listing_inactive",
            "stale_version",
            "invalid_price",
        ),
        "too_many_versions": "the listing is at its last version (2**32-1)",
    },
    events={ev.LISTING_UPDATED},
    reads={P.CONFIG},
    writes={P.LISTING, P.LISTING_VERSION},
    view="ListingView",
)
def process_update_listing(state: Overlay, tx: TxInfo, p: UpdateListing, ctx: BlockContext) -> None:
    params = config(state).params
    listing = require_listing(state, p.listing_id)
    _require_own(listing, tx.sender_address)
    _require_active(listing)
    # Optimistic concurrency: the update names the version it replaces.
    if p.version != listing.version:
        raise TxFailed(
            f"listing {listing.id} is at version {listing.version}, update names {p.version}",
            "stale_version",
        )
    _check_terms(params, p.title, p.description, p.price)
    # Hashes are 32 bytes; anything shorter is not one.
    if len(p.media_hash) not in (0, 32):
        raise TxFailed(f"media hash must be 0 or 32 bytes, got {len(p.media_hash)}", "invalid_hash")
    # Version keys carry a 4-byte number.
    if listing.version >= MAX_SEQ:
        raise TxFailed(
            f"listing {listing.id} is at version {listing.version}, the maximum is {MAX_SEQ}",
            "too_many_versions",
        )
    version = listing.version + 1
    terms = ListingTerms(
        listing.id, version, p.title, p.description, p.price, p.media_hash, ctx.time_ms
    )
    state.set_obj(keys.listing_version_key(listing.id, version), terms)
    state.set_obj(keys.listing_key(listing.id), replace(listing, version=version, price=p.price))
    state.emit(ev.make(ev.LISTING_UPDATED, listing=listing.id, version=version, price=p.price))


@TX_TYPES.declare(
    RESTOCK,
    StockChange,
    "its merchant: restock (`total` and `available` up)",
    codes=shared(
        "commerce_disabled",
        "not_authorized",
        "unknown_listing",
        "listing_inactive",
        "invalid_quantity",
    )
    | _INVALID_RESALE,
    events={ev.LISTING_STOCK},
    reads={P.CONFIG},
    writes={P.LISTING},
    view="ListingView",
)
def process_restock(state: Overlay, tx: TxInfo, p: StockChange, ctx: BlockContext) -> None:
    config(state)
    listing = require_listing(state, p.listing_id)
    _require_own(listing, tx.sender_address)
    _require_active(listing)
    # Restocking nothing is a mistake.
    if p.quantity < 1:
        raise TxFailed(f"quantity must be at least 1, got {p.quantity}", "invalid_quantity")
    # Stock counts are u64 (available <= total, so it cannot overflow either).
    total = checked_add(listing.total, p.quantity, "total stock", "invalid_quantity")
    # A resale sells its one item once: more units would be sold and never shipped.
    if listing.item_ref and total > 1:
        raise TxFailed(
            f"listing {listing.id} resells one item, its total stock would be {total}",
            "invalid_resale",
        )
    updated = replace(listing, total=total, available=listing.available + p.quantity)
    state.set_obj(keys.listing_key(listing.id), updated)
    state.emit(
        ev.make(
            ev.LISTING_STOCK, listing=listing.id, total=updated.total, available=updated.available
        )
    )


@TX_TYPES.declare(
    WITHDRAW_STOCK,
    StockChange,
    "its merchant: withdraw stock (`total` and `available` down)",
    codes=shared(
        "commerce_disabled",
        "not_authorized",
        "unknown_listing",
        "invalid_quantity",
        "insufficient_stock",
    ),
    events={ev.LISTING_STOCK},
    reads={P.CONFIG},
    writes={P.LISTING},
    view="ListingView",
)
def process_withdraw_stock(state: Overlay, tx: TxInfo, p: StockChange, ctx: BlockContext) -> None:
    config(state)
    listing = require_listing(state, p.listing_id)
    _require_own(listing, tx.sender_address)
    # Withdrawing nothing is a mistake.
    if p.quantity < 1:
        raise TxFailed(f"quantity must be at least 1, got {p.quantity}", "invalid_quantity")
    # Only unreserved stock can be withdrawn: reserved units belong to deals and orders.
    if p.quantity > listing.available:
        raise TxFailed(
            f"listing {listing.id} has {listing.available} available, withdrawal asks {p.quantity}",
            "insufficient_stock",
        )
    updated = replace(
        listing, total=listing.total - p.quantity, available=listing.available - p.quantity
    )
    state.set_obj(keys.listing_key(listing.id), updated)
    state.emit(
        ev.make(
            ev.LISTING_STOCK, listing=listing.id, total=updated.total, available=updated.available
        )
    )


@TX_TYPES.declare(
    DELIST,
    ListingRef,
    "its merchant: delisted for good (refused while deals are open)",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "not_authorized",
            "unknown_listing",
            "listing_inactive",
        ),
        "listing_in_deal": "the listing has open deals",
    },
    events={ev.LISTING_DELISTED},
    reads={P.CONFIG, P.MERCHANT},
    writes={P.LISTING},
    view="ListingView",
)
def process_delist(state: Overlay, tx: TxInfo, p: ListingRef, ctx: BlockContext) -> None:
    config(state)
    listing = require_listing(state, p.listing_id)
    require_merchant(state, tx.sender_address)
    _require_own(listing, tx.sender_address)
    _require_active(listing)
    # An open deal holds stock of this listing and sells it; close it first.
    if listing.open_deals:
        raise TxFailed(
            f"listing {listing.id} has {listing.open_deals} open deal(s), expected 0",
            "listing_in_deal",
        )
    state.set_obj(keys.listing_key(listing.id), replace(listing, status=ListingStatus.DELISTED))
    state.emit(ev.make(ev.LISTING_DELISTED, listing=listing.id))
