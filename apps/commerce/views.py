"""Read models: plain functions over a ``StateView`` for the HTTP routes and the CLI.

Every function reads committed state only (or an overlay) and never writes.
Views are frozen dataclasses; ``jsonable`` turns any of them (or a state
object) into JSON-ready values: 20-byte values as bech32m addresses, other
bytes as lowercase hex, tuples as lists. Amounts stay integers. The OpenAPI
document derives their schemas from the annotations: ``Address`` fields are
addresses, and a ``str`` annotated with an enum holds a member's name, lowercased
(or one of the strings beside it).

``order_view`` applies the visibility rules (docs/commerce.md): the parties see
their order; the sealed address ciphertext is shown only to buyer and merchant
(and each auditor sees the copies sealed to it). No view ever holds an address
in clear: the chain never has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

from apps.commerce import keys
from apps.commerce.auctions import bidder_tag, next_minimum
from apps.commerce.model import (
    OPEN_STATES,
    Auction,
    AuctionMode,
    AuctionStatus,
    Counter,
    Deal,
    DealCloseReason,
    DealStatus,
    Disclosure,
    Dispute,
    Escrow,
    Item,
    ItemStatus,
    Listing,
    ListingStatus,
    ListingTerms,
    Merchant,
    MerchantStatus,
    Order,
    OrderState,
    Party,
    ProvenanceEvent,
    Review,
    Role,
    RoleRecord,
    Session,
    SessionStatus,
    role_names,
    state_name,
)
from apps.commerce.params import CommerceGenesis
from apps.commerce.store import escrow, load, roles_of
from core.errors import Invalid
from core.keys import ADDRESS_SIZE, format_address
from core.types import Address
from vm.currency import currency_symbols
from vm.state import StateView

MAX_PAGE = 200


class ViewDenied(Invalid):
    """The viewer may not see this object (HTTP 403)."""

    code = "forbidden"
    status = 403


def _avg_x100(total: int, count: int) -> int:
    """Average rating times 100, rounded half up (0 when there is none)."""
    return (total * 100 * 2 + count) // (2 * count) if count else 0


# --- configuration and roles ---


def commerce_config(state: StateView) -> CommerceGenesis | None:
    return load(state, keys.CONFIG_KEY, CommerceGenesis)


def roles_view(state: StateView, address: bytes) -> RoleRecord:
    return roles_of(state, address)


def escrow_view(state: StateView) -> Escrow:
    return escrow(state)


def currency_escrows(state: StateView) -> list[tuple[str, Escrow]]:
    """The escrow of each issued currency (docs/commerce.md, Currencies)."""
    return [(c, escrow(state, c)) for c in currency_symbols(state)]


# --- merchants ---


@dataclass(frozen=True, slots=True)
class MerchantView:
    address: Address
    name: str
    profile: str
    enc_key: bytes
    status: Annotated[str, MerchantStatus]
    registered_ms: int
    updated_ms: int
    rating_count: int
    rating_sum: int
    rating_avg_x100: int


def get_merchant(state: StateView, address: bytes) -> Merchant | None:
    return load(state, keys.merchant_key(address), Merchant)


def merchant_view(state: StateView, address: bytes) -> MerchantView | None:
    m = get_merchant(state, address)
    if m is None:
        return None
    return MerchantView(
        m.address,
        m.name,
        m.profile,
        m.enc_key,
        MerchantStatus(m.status).name.lower(),
        m.registered_ms,
        m.updated_ms,
        m.rating_count,
        m.rating_sum,
        _avg_x100(m.rating_sum, m.rating_count),
    )


# --- listings ---


@dataclass(frozen=True, slots=True)
class ListingView:
    id: int
    merchant: Address
    version: int
    status: Annotated[str, ListingStatus]
    title: str
    description: str
    price: int
    media_hash: bytes
    total: int
    available: int
    reserved: int
    sold: int
    open_deals: int
    created_ms: int
    updated_ms: int
    rating_count: int
    rating_sum: int
    rating_avg_x100: int
    # What the price is in: "" the native token, else an issued currency's symbol.
    currency: str
    # A resale listing: the ref of the item it sells, whose history is at
    # /v1/items/01/{gtin}/21/{serial} (empty for an ordinary listing).
    item_ref: bytes


def get_listing(state: StateView, listing_id: int) -> Listing | None:
    return load(state, keys.listing_key(listing_id), Listing)


def listing_terms(state: StateView, listing_id: int, version: int) -> ListingTerms | None:
    """The terms of one version (orders pin the version they were placed against)."""
    return load(state, keys.listing_version_key(listing_id, version), ListingTerms)


def listing_view(state: StateView, listing_id: int) -> ListingView | None:
    listing = get_listing(state, listing_id)
    if listing is None:
        return None
    terms = listing_terms(state, listing_id, listing.version)
    if terms is None:
        return None
    return ListingView(
        listing.id,
        listing.merchant,
        listing.version,
        ListingStatus(listing.status).name.lower(),
        terms.title,
        terms.description,
        listing.price,
        terms.media_hash,
        listing.total,
        listing.available,
        listing.reserved,
        listing.sold,
        listing.open_deals,
        listing.created_ms,
        terms.created_ms,
        listing.rating_count,
        listing.rating_sum,
        _avg_x100(listing.rating_sum, listing.rating_count),
        listing.currency,
        listing.item_ref,
    )


def listings(state: StateView, start: int = 1, limit: int = 50) -> list[ListingView]:
    """Listings by id from ``start`` (ids are dense: 1..count)."""
    out = []
    next_free = _next(state, keys.LISTING_IDS)
    for listing_id in range(max(start, 1), min(next_free, max(start, 1) + _page(limit))):
        view = listing_view(state, listing_id)
        if view is not None:
            out.append(view)
    return out


# --- sessions and deals ---


@dataclass(frozen=True, slots=True)
class DealView:
    id: int
    session_id: int
    listing_id: int
    listing_version: int
    price: int
    allocation: int
    sold: int
    left: int
    per_buyer_cap: int
    start_ms: int
    end_ms: int
    status: Annotated[str, DealStatus]
    # Open and, when the caller passed a time, within its window.
    live: bool
    # Empty while the deal is open.
    close_reason: Annotated[str, DealCloseReason, ""]


@dataclass(frozen=True, slots=True)
class AuctionView:
    id: int
    session_id: int
    listing_id: int
    listing_version: int
    merchant: Address
    host: Address
    mode: Annotated[str, AuctionMode]
    start_price: int
    # 0: none.
    reserve: int
    reserve_met: bool
    start_ms: int
    # The current end (anti-snipe moves it, never past max_end_ms).
    end_ms: int
    max_end_ms: int
    status: Annotated[str, AuctionStatus]
    # The price the leader pays now (0 before the first bid).
    price: int
    # The lowest bid accepted now from anyone but the leader.
    next_minimum: int
    # The leader's anonymous tag in this auction (as in the feed), "" before a bid.
    leader: str
    bids: int
    # Open and, when the caller passed a time, started and not ended.
    live: bool
    # The winner's order, once sold (0: none).
    order_id: int
    ended_ms: int


def get_auction(state: StateView, auction_id: int) -> Auction | None:
    return load(state, keys.auction_key(auction_id), Auction)


def auction_view(
    state: StateView, auction_id: int, now_ms: int | None = None
) -> AuctionView | None:
    """An auction as bidders see it: never the leader's maximum nor its address."""
    a = get_auction(state, auction_id)
    cfg = commerce_config(state)
    if a is None or cfg is None:
        return None
    is_open = a.status == AuctionStatus.OPEN
    live = is_open and (now_ms is None or a.start_ms <= now_ms < a.end_ms)
    return AuctionView(
        a.id,
        a.session_id,
        a.listing_id,
        a.listing_version,
        a.merchant,
        a.host,
        AuctionMode(a.mode).name.lower(),
        a.start_price,
        a.reserve,
        a.leader is not None and a.price >= a.reserve,
        a.start_ms,
        a.end_ms,
        a.max_end_ms,
        AuctionStatus(a.status).name.lower(),
        a.price,
        next_minimum(cfg.params, a),
        "" if a.leader is None else bidder_tag(a.id, a.leader),
        a.bids,
        live,
        a.order_id,
        a.ended_ms,
    )


@dataclass(frozen=True, slots=True)
class SessionView:
    id: int
    merchant: Address
    host: Address
    host_bps: int
    title: str
    status: Annotated[str, SessionStatus]
    opened_ms: int
    closed_ms: int
    tips_total: int
    pinned: tuple[ListingView, ...]
    # The session's open deals with the stock they have left.
    deals: tuple[DealView, ...]
    # Its open auctions.
    auctions: tuple[AuctionView, ...]


def get_deal(state: StateView, deal_id: int) -> Deal | None:
    return load(state, keys.deal_key(deal_id), Deal)


def deal_view(state: StateView, deal_id: int, now_ms: int | None = None) -> DealView | None:
    d = get_deal(state, deal_id)
    if d is None:
        return None
    is_open = d.status == DealStatus.OPEN
    live = is_open and (now_ms is None or d.start_ms <= now_ms < d.end_ms)
    reason = "" if d.close_reason == 0 else DealCloseReason(d.close_reason).name.lower()
    return DealView(
        d.id,
        d.session_id,
        d.listing_id,
        d.listing_version,
        d.price,
        d.allocation,
        d.sold,
        d.allocation - d.sold,
        d.per_buyer_cap,
        d.start_ms,
        d.end_ms,
        DealStatus(d.status).name.lower(),
        live,
        reason,
    )


def get_session(state: StateView, session_id: int) -> Session | None:
    return load(state, keys.session_key(session_id), Session)


def session_view(
    state: StateView, session_id: int, now_ms: int | None = None
) -> SessionView | None:
    """A live session with its pinned (active) listings and its open deals."""
    s = get_session(state, session_id)
    if s is None:
        return None
    pinned = []
    for listing_id in s.pinned:
        view = listing_view(state, listing_id)
        if view is not None and view.status == "active":
            pinned.append(view)
    deals = []
    for deal_id in s.open_deals:
        deal = deal_view(state, deal_id, now_ms)
        if deal is not None:
            deals.append(deal)
    return SessionView(
        s.id,
        s.merchant,
        s.host,
        s.host_bps,
        s.title,
        SessionStatus(s.status).name.lower(),
        s.opened_ms,
        s.closed_ms,
        s.tips_total,
        tuple(pinned),
        tuple(deals),
        tuple(v for i in s.open_auctions if (v := auction_view(state, i, now_ms)) is not None),
    )


# --- orders ---


@dataclass(frozen=True, slots=True)
class DisputeView:
    opened_by: Address
    opened_ms: int
    reason: str
    escalated: bool
    buyer_bps: int | None
    ruled_by: Address | None
    ruled_ms: int


@dataclass(frozen=True, slots=True)
class OrderView:
    id: int
    buyer: Address
    merchant: Address
    listing_id: int
    listing_version: int
    quantity: int
    unit_price: int
    amount: int
    escrow: int
    refunded: int
    state: Annotated[str, OrderState]
    open: bool
    placed_ms: int
    updated_ms: int
    deadline_ms: int
    dispute_by_ms: int
    session_id: int
    deal_id: int
    host: Address | None
    host_bps: int
    tracking_hash: bytes
    items: tuple[bytes, ...]
    # Commitment to the address (anyone allowed to see the order may check a copy).
    address_commitment: bytes
    sealed_to: bytes
    # The sealed box, for buyer and merchant only; never the address in clear.
    sealed_address: bytes | None
    dispute: DisputeView | None
    # Buyer and merchant see all disclosures; an auditor sees those sealed to it.
    disclosures: tuple[Disclosure, ...]
    reviewed: bool
    # What every amount of the order is in: "" the native token, else a currency symbol.
    currency: str


def get_order(state: StateView, order_id: int) -> Order | None:
    return load(state, keys.order_key(order_id), Order)


def order_view(state: StateView, order_id: int, viewer: bytes) -> OrderView | None:
    """The order as ``viewer`` may see it; None if there is none, ``ViewDenied`` if not theirs.

    Buyer and merchant: everything, including the sealed address. Host,
    arbiters (once disputed), registrars: everything but the sealed address.
    Auditors: the order and the disclosures sealed to them. Anyone else: denied.
    """
    o = get_order(state, order_id)
    if o is None:
        return None
    party = viewer in (o.buyer, o.merchant)
    dispute = load(state, keys.dispute_key(o.id), Dispute)
    disclosures = tuple(
        d
        for seq in range(o.disclosures)
        if (d := load(state, keys.disclosure_key(o.id, seq), Disclosure)) is not None
    )
    roles = roles_of(state, viewer).roles
    mine = tuple(d for d in disclosures if d.auditor == viewer)
    if party:
        shown = disclosures
    elif viewer == o.host or roles & Role.REGISTRAR or (roles & Role.ARBITER and dispute):
        shown = ()
    elif mine:
        shown = mine
    else:
        raise ViewDenied(
            f"order {o.id} is visible to its parties, arbiters, registrars and auditors it "
            f"was disclosed to; {format_address(viewer)} is none of them"
        )
    dview = None
    if dispute is not None:
        dview = DisputeView(
            dispute.opened_by,
            dispute.opened_ms,
            dispute.reason,
            dispute.escalated,
            dispute.buyer_bps,
            dispute.ruled_by,
            dispute.ruled_ms,
        )
    return OrderView(
        o.id,
        o.buyer,
        o.merchant,
        o.listing_id,
        o.listing_version,
        o.quantity,
        o.unit_price,
        o.amount,
        o.escrow,
        o.refunded,
        state_name(o.state),
        o.state in OPEN_STATES,
        o.placed_ms,
        o.updated_ms,
        o.deadline_ms,
        o.dispute_by_ms,
        o.session_id,
        o.deal_id,
        o.host,
        o.host_bps,
        o.tracking_hash,
        o.items,
        o.address_commitment,
        o.sealed_to,
        o.sealed_address if party else None,
        dview,
        shown,
        load(state, keys.review_key(o.id), Review) is not None,
        o.currency,
    )


def orders_of(
    state: StateView, address: bytes, role: str = "buyer", before: int = 0, limit: int = 50
) -> tuple[list[int], int]:
    """Order ids of ``address`` as ``role`` ("buyer" or "merchant"), newest first, and
    the total. Page on with ``before`` = the last id of the previous page."""
    if role not in ("buyer", "merchant"):
        raise ValueError(f"role must be 'buyer' or 'merchant', got {role!r}")
    party = load(state, keys.party_key(address), Party)
    if party is None:
        return [], 0
    as_buyer = role == "buyer"
    total = party.orders_as_buyer if as_buyer else party.orders_as_merchant
    if before:
        start = get_order(state, before)
        if start is None or (start.buyer if as_buyer else start.merchant) != address:
            # Not one of this party's orders in this role: no page follows it.
            next_id = 0
        else:
            next_id = start.prev_of_buyer if as_buyer else start.prev_of_merchant
    else:
        next_id = party.last_as_buyer if as_buyer else party.last_as_merchant
    ids: list[int] = []
    while next_id and len(ids) < _page(limit):
        ids.append(next_id)
        order = get_order(state, next_id)
        if order is None:
            break
        next_id = order.prev_of_buyer if as_buyer else order.prev_of_merchant
    return ids, total


def order_count(state: StateView) -> int:
    return _next(state, keys.ORDER_IDS) - 1


# --- provenance ---


@dataclass(frozen=True, slots=True)
class ItemView:
    ref: bytes
    gtin: str
    serial: str
    # GS1 element string, e.g. "(01)09506000134352(21)A1".
    label: str
    description: str
    maker: Address
    # Who holds it (attests, hands it on) and who owns it (sells it): apart when an
    # owner leaves it with a carrier or an inspector. None: never sold on chain.
    custodian: Address
    owner: Address | None
    pending_to: Address | None
    status: Annotated[str, ItemStatus]
    order_id: int
    # The merchant it goes back to, from order ``order_id``, which gave its buyer back
    # all it paid (None: it goes to nobody in particular).
    return_to: Address | None
    registered_ms: int
    history: tuple[ProvenanceEvent, ...]


def get_item(state: StateView, gtin: str, serial: str) -> Item | None:
    return load(state, keys.item_key(keys.item_ref(gtin, serial)), Item)


def _event_seqs(item: Item | None, start: int, limit: int | None) -> range:
    """The seqs of the events from ``start``, at most ``limit`` of them (all: None)."""
    count = 0 if item is None else item.event_count
    end = count if limit is None else min(count, start + limit)
    return range(start, end)


def item_history(
    state: StateView, gtin: str, serial: str, start: int = 0, limit: int | None = None
) -> list[ProvenanceEvent]:
    """The item's events in the order recorded, from seq ``start``, at most ``limit`` of
    them (default: all); empty if unknown. Reads only those events' keys."""
    item = get_item(state, gtin, serial)
    if item is None:
        return []
    return [
        e
        for seq in _event_seqs(item, start, limit)
        if (e := load(state, keys.item_event_key(item.ref, seq), ProvenanceEvent)) is not None
    ]


def item_view(state: StateView, gtin: str, serial: str) -> ItemView | None:
    item = get_item(state, gtin, serial)
    if item is None:
        return None
    return item_view_of(item, item_history(state, gtin, serial))


def item_view_of(item: Item, history: list[ProvenanceEvent]) -> ItemView:
    """The view of ``item`` with ``history``: what a client rebuilds from a proof bundle."""
    return ItemView(
        item.ref,
        item.gtin,
        item.serial,
        f"(01){item.gtin}(21){item.serial}",
        item.description,
        item.maker,
        item.custodian,
        item.owner,
        item.pending_to,
        ItemStatus(item.status).name.lower(),
        item.order_id,
        item.return_to,
        item.registered_ms,
        tuple(history),
    )


def item_state_keys(
    state: StateView, gtin: str, serial: str, start: int = 0, limit: int | None = None
) -> list[bytes]:
    """The state keys behind an item's view (record, then each event from ``start``, at
    most ``limit`` of them, default all), for state proofs."""
    ref = keys.item_ref(gtin, serial)
    item = load(state, keys.item_key(ref), Item)
    seqs = _event_seqs(item, start, limit)
    return [keys.item_key(ref)] + [keys.item_event_key(ref, seq) for seq in seqs]


# --- reviews ---


def get_review(state: StateView, order_id: int) -> Review | None:
    return load(state, keys.review_key(order_id), Review)


def reviews_for(
    state: StateView,
    *,
    merchant: bytes | None = None,
    listing: int | None = None,
    before: int = 0,
    limit: int = 50,
) -> list[Review]:
    """Reviews of a merchant or of a listing (exactly one of them), newest first.

    Page on with ``before`` = the order id of the last review of the previous page.
    """
    if (merchant is None) == (listing is None):
        raise ValueError("pass exactly one of merchant= or listing=")
    if merchant is not None:
        m = get_merchant(state, merchant)
        head = 0 if m is None else m.last_review
    else:
        assert listing is not None
        lst = get_listing(state, listing)
        head = 0 if lst is None else lst.last_review
    by_merchant = merchant is not None
    if before:
        start = get_review(state, before)
        if start is None or (
            start.merchant != merchant if by_merchant else start.listing_id != listing
        ):
            # Not a review of this merchant or listing: no page follows it.
            head = 0
        else:
            head = start.prev_of_merchant if by_merchant else start.prev_of_listing
    out: list[Review] = []
    while head and len(out) < _page(limit):
        review = get_review(state, head)
        if review is None:
            break
        out.append(review)
        head = review.prev_of_merchant if by_merchant else review.prev_of_listing
    return out


# --- helpers ---


def _next(state: StateView, kind: int) -> int:
    counter = load(state, keys.counter_key(kind), Counter)
    return 1 if counter is None else counter.next


def _page(limit: int) -> int:
    return max(0, min(limit, MAX_PAGE))


def jsonable(obj: Any) -> Any:
    """JSON-ready form of a view, a state object, or a list/tuple of them."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        return format_address(obj) if len(obj) == ADDRESS_SIZE else obj.hex()
    if isinstance(obj, Enum):
        return obj.name.lower()
    if isinstance(obj, list | tuple):
        return [jsonable(x) for x in obj]
    return obj


__all__ = [
    "MAX_PAGE",
    "AuctionView",
    "DealView",
    "DisputeView",
    "ItemView",
    "ListingView",
    "MerchantView",
    "OrderView",
    "SessionView",
    "ViewDenied",
    "auction_view",
    "commerce_config",
    "deal_view",
    "escrow_view",
    "get_auction",
    "get_deal",
    "get_item",
    "get_listing",
    "get_merchant",
    "get_order",
    "get_review",
    "get_session",
    "item_history",
    "item_state_keys",
    "item_view",
    "jsonable",
    "listing_terms",
    "listing_view",
    "listings",
    "merchant_view",
    "order_count",
    "order_view",
    "orders_of",
    "reviews_for",
    "role_names",
    "roles_view",
    "session_view",
]
