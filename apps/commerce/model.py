"""State objects of the commerce app: frozen ``Wire`` dataclasses, one per key kind.

Enumerations are stored as plain integers (their values are protocol); the
``IntEnum``s below name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Annotated

from apps.commerce.params import (
    DESCRIPTION_CAP,
    MAX_AUCTION_BUCKET_CAP,
    MAX_AUCTIONS_CAP,
    MAX_BUCKET_CAP,
    MAX_DEALS_CAP,
    MAX_ITEMS_CAP,
    MAX_PINNED_CAP,
    NAME_CAP,
    PROFILE_CAP,
    SEALED_CAP,
    TEXT_CAP,
    TITLE_CAP,
)
from core.codec import Len, MaxItems, MaxLen, Wire
from core.types import Address, Hash32
from vm.accounts import NATIVE
from vm.currency import Symbol

# An X25519 public key (libsodium ``crypto_box``), for sealed boxes.
EncKey = Annotated[bytes, Len(32)]
OptEncKey = Annotated[bytes, MaxLen(32)]
OptHash = Annotated[bytes, MaxLen(32)]
Text = Annotated[str, MaxLen(TEXT_CAP)]
Field = Annotated[str, MaxLen(NAME_CAP)]


class Role(IntFlag):
    """Roles an address may hold; a registrar grants all but REGISTRAR (genesis only)."""

    REGISTRAR = 1
    ARBITER = 2
    MAKER = 4
    CARRIER = 8
    INSPECTOR = 16
    AUDITOR = 32


ATTESTOR = Role.MAKER | Role.CARRIER | Role.INSPECTOR
GRANTABLE = Role.ARBITER | ATTESTOR | Role.AUDITOR


def role_names(roles: int) -> str:
    """``"arbiter,maker"``; ``"none"`` for 0."""
    names = [r.name.lower() for r in Role if roles & r and r.name]
    return ",".join(names) or "none"


class MerchantStatus(IntEnum):
    PENDING = 1
    APPROVED = 2
    SUSPENDED = 3


class ListingStatus(IntEnum):
    ACTIVE = 1
    DELISTED = 2


class SessionStatus(IntEnum):
    OPEN = 1
    CLOSED = 2


class DealStatus(IntEnum):
    OPEN = 1
    CLOSED = 2


class DealCloseReason(IntEnum):
    CLOSED = 1  # by the merchant or the host
    ENDED = 2  # its end time passed (begin-block)
    SESSION_CLOSED = 3


class OrderState(IntEnum):
    # Open: escrow held.
    PLACED = 1
    ACCEPTED = 2
    SHIPPED = 3
    DISPUTED = 4
    ESCALATED = 5
    # Terminal: escrow paid out, never left.
    CANCELLED = 6
    DECLINED = 7
    REFUNDED = 8
    EXPIRED = 9
    COMPLETED = 10
    RESOLVED = 11


OPEN_STATES = frozenset(
    {
        OrderState.PLACED,
        OrderState.ACCEPTED,
        OrderState.SHIPPED,
        OrderState.DISPUTED,
        OrderState.ESCALATED,
    }
)
TERMINAL_STATES = frozenset(OrderState) - OPEN_STATES
# Settled: paid out after shipping; the buyer may review, and receives the shipped items
# unless the payout gave it back all it paid (a ruling of the whole escrow to the buyer:
# the items then go back to the merchant, as after a refund).
SETTLED_STATES = frozenset({OrderState.COMPLETED, OrderState.RESOLVED})
# Stock of an order in these states is still reserved (not yet shipped).
UNSHIPPED_STATES = frozenset({OrderState.PLACED, OrderState.ACCEPTED})

# Every allowed transition; anything else is a bug (NodeFault), never a tx error.
TRANSITIONS: dict[int, frozenset[OrderState]] = {
    OrderState.PLACED: frozenset(
        {OrderState.ACCEPTED, OrderState.CANCELLED, OrderState.DECLINED}
        | {OrderState.REFUNDED, OrderState.EXPIRED}
    ),
    OrderState.ACCEPTED: frozenset({OrderState.SHIPPED, OrderState.REFUNDED, OrderState.EXPIRED}),
    OrderState.SHIPPED: frozenset({OrderState.COMPLETED, OrderState.DISPUTED, OrderState.REFUNDED}),
    OrderState.DISPUTED: frozenset(
        {OrderState.RESOLVED, OrderState.ESCALATED, OrderState.REFUNDED}
    ),
    OrderState.ESCALATED: frozenset({OrderState.RESOLVED, OrderState.REFUNDED}),
}
for _terminal in TERMINAL_STATES:
    TRANSITIONS[_terminal] = frozenset()


# Each state's name as events and views spell it, by value: a table lookup where the
# enum's constructor cost a call per order transition (three per transition).
_STATE_NAMES: dict[int, str] = {s.value: s.name.lower() for s in OrderState}


def state_name(state: int) -> str:
    """``state``'s name in lowercase (``ValueError`` for a value no state has)."""
    name = _STATE_NAMES.get(state)
    return OrderState(state).name.lower() if name is None else name


# --- configuration, roles, counters, escrow ---


@dataclass(frozen=True, slots=True)
class RoleRecord(Wire):
    roles: int
    # X25519 key for disclosures to an auditor (empty for other roles).
    enc_key: OptEncKey

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class Counter(Wire):
    """Next id to hand out (ids start at 1; 0 means "none" in payloads)."""

    next: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class Escrow(Wire):
    """Tokens held for open orders. Not an account: no transfer can reach it."""

    held: int
    open_orders: int

    MAX_ENCODED = 32


# --- merchants and listings ---


@dataclass(frozen=True, slots=True)
class Merchant(Wire):
    address: Address
    name: Field
    profile: Annotated[str, MaxLen(PROFILE_CAP)]
    # Buyers seal shipping addresses to this X25519 key.
    enc_key: EncKey
    status: int
    registered_ms: int
    updated_ms: int
    rating_sum: int
    rating_count: int
    # Newest review of this merchant (reviews link back: Review.prev_of_merchant).
    last_review: int
    # Open deals across all its sessions (at most max_open_deals_per_merchant).
    open_deals: int = 0
    # Open auctions across all its sessions (at most max_open_auctions_per_merchant).
    open_auctions: int = 0


@dataclass(frozen=True, slots=True)
class Listing(Wire):
    """A listing's current version and stock: available + reserved + sold == total.

    ``reserved`` counts stock held by open deals (allocated, not yet ordered)
    and by open orders that have not shipped.
    """

    id: int
    merchant: Address
    version: int
    status: int
    # Price of the current version (copied from its terms for the order path).
    price: int
    total: int
    available: int
    reserved: int
    sold: int
    open_deals: int
    created_ms: int
    rating_sum: int
    rating_count: int
    # Newest review of this listing (reviews link back: Review.prev_of_listing).
    last_review: int
    # What ``price`` (and every deal's) is in: "" the native token, else an issued
    # currency's symbol (vm/currency.py). Fixed when the listing is created.
    currency: Symbol = NATIVE
    # A resale listing: the ref of the one item it sells (b"": an ordinary listing).
    item_ref: OptHash = b""


@dataclass(frozen=True, slots=True)
class ListingTerms(Wire):
    """One version of a listing's terms; orders pin (listing id, version)."""

    listing_id: int
    version: int
    title: Annotated[str, MaxLen(TITLE_CAP)]
    description: Annotated[str, MaxLen(DESCRIPTION_CAP)]
    price: int
    # Hash of off-chain media (images, video), or empty.
    media_hash: OptHash
    created_ms: int


# --- live sessions and flash deals ---


@dataclass(frozen=True, slots=True)
class Session(Wire):
    id: int
    merchant: Address
    host: Address
    host_bps: int
    title: Annotated[str, MaxLen(TITLE_CAP)]
    status: int
    opened_ms: int
    closed_ms: int
    pinned: Annotated[tuple[int, ...], MaxItems(MAX_PINNED_CAP)]
    open_deals: Annotated[tuple[int, ...], MaxItems(MAX_DEALS_CAP)]
    tips_total: int
    # Open auctions (at most max_open_auctions): the session closes only without any.
    open_auctions: Annotated[tuple[int, ...], MaxItems(MAX_AUCTIONS_CAP)] = ()


@dataclass(frozen=True, slots=True)
class Deal(Wire):
    id: int
    session_id: int
    listing_id: int
    listing_version: int
    merchant: Address
    price: int
    allocation: int
    # Units ordered from the allocation (never more than it).
    sold: int
    per_buyer_cap: int
    start_ms: int
    end_ms: int
    status: int
    closed_ms: int
    close_reason: int

    @property
    def left(self) -> int:
        return self.allocation - self.sold


@dataclass(frozen=True, slots=True)
class Count(Wire):
    n: int

    MAX_ENCODED = 16


# --- orders ---


@dataclass(frozen=True, slots=True)
class Order(Wire):
    id: int
    buyer: Address
    merchant: Address
    listing_id: int
    listing_version: int
    quantity: int
    unit_price: int
    # unit_price * quantity, moved into escrow at placement.
    amount: int
    # Still held for this order (amount minus partial refunds; 0 once terminal).
    escrow: int
    refunded: int
    state: int
    placed_ms: int
    updated_ms: int
    # Deadline of the current state (0: none); see docs/commerce.md.
    deadline_ms: int
    # Last moment a dispute may be opened (set on shipping).
    dispute_by_ms: int
    session_id: int
    deal_id: int
    host: Address | None
    host_bps: int
    tracking_hash: OptHash
    items: Annotated[tuple[Hash32, ...], MaxItems(MAX_ITEMS_CAP)]
    disclosures: int
    # The shipping address, sealed (libsodium sealed box) to the merchant key
    # ``sealed_to``; ``address_commitment`` binds the plaintext (see
    # apps.commerce.sealing), so whoever opens a copy (merchant, auditor) can
    # check it is the address the buyer committed to. Never in clear on chain.
    sealed_to: EncKey
    address_commitment: Hash32
    sealed_address: Annotated[bytes, MaxLen(SEALED_CAP)]
    # The same buyer's and merchant's previous orders (0: none): per-party lists
    # whose heads are in ``Party``, so listing a party's orders needs no index keys.
    prev_of_buyer: int
    prev_of_merchant: int
    # The listing's currency: what the escrow holds and every payout moves.
    currency: Symbol = NATIVE


@dataclass(frozen=True, slots=True)
class Party(Wire):
    """Heads of an address's order lists, as buyer and as merchant (newest first), and
    the units it bought in the last deal it bought in.

    ``deal_units`` counts the buyer's units in deal ``last_deal`` (0: none yet); its
    units in any other deal are at ``keys.deal_buyer_key`` (``apps.commerce.orders.
    units_bought``). An order writes the party record anyway, so a buyer ordering in
    one deal at a time (a flash deal's storm) writes no count record of its own: at a
    million accounts each new state key an order writes costs a path of the state tree
    (docs/commerce.md, Live sessions and flash deals)."""

    orders_as_buyer: int
    last_as_buyer: int
    orders_as_merchant: int
    last_as_merchant: int
    last_deal: int
    deal_units: int

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class Dispute(Wire):
    order_id: int
    opened_by: Address
    opened_ms: int
    reason: Text
    # Set once ruled: the buyer's share of the escrow in basis points.
    buyer_bps: int | None
    ruled_by: Address | None
    ruled_ms: int
    escalated: bool


@dataclass(frozen=True, slots=True)
class Disclosure(Wire):
    order_id: int
    seq: int
    by: Address
    auditor: Address
    auditor_key: EncKey
    ciphertext: Annotated[bytes, MaxLen(SEALED_CAP)]
    disclosed_ms: int


# --- deadlines ---


class DeadlineKind(IntEnum):
    ACCEPT = 1  # PLACED past deadline -> EXPIRED (refund)
    SHIP = 2  # ACCEPTED past deadline -> EXPIRED (refund)
    CONFIRM = 3  # SHIPPED past deadline -> COMPLETED (release)
    RULE = 4  # DISPUTED past deadline -> ESCALATED


# The state an order must still be in for a deadline entry to fire.
DEADLINE_STATE = {
    DeadlineKind.ACCEPT: OrderState.PLACED,
    DeadlineKind.SHIP: OrderState.ACCEPTED,
    DeadlineKind.CONFIRM: OrderState.SHIPPED,
    DeadlineKind.RULE: OrderState.DISPUTED,
}


@dataclass(frozen=True, slots=True)
class QueueMeta(Wire):
    """A FIFO of deadline entries: ``head`` is the next to look at, ``tail`` the next free."""

    head: int
    tail: int

    MAX_ENCODED = 32


@dataclass(frozen=True, slots=True)
class Deadline(Wire):
    """Orders ``first_order .. first_order + count - 1`` are due at ``due_ms``.

    Orders placed (or moved on) in one block share a due time and mostly have
    consecutive ids, so one entry usually covers a whole block's orders.
    """

    due_ms: int
    first_order: int
    count: int

    MAX_ENCODED = 32


@dataclass(frozen=True, slots=True)
class DealClock(Wire):
    """Deal-end buckets still to look at: ``next`` .. ``last`` (absent when none).

    Two integers rather than a list of buckets, so scheduling a deal end writes a
    record of constant size; the hook reads the buckets in between, most of them
    absent, at most ``MAX_DEAL_BUCKETS + 1`` after a long pause.
    """

    next: int
    last: int

    MAX_ENCODED = 32


@dataclass(frozen=True, slots=True)
class DealBucket(Wire):
    """Ids of the open deals whose end falls in one bucket (closed ones are removed)."""

    deal_ids: Annotated[tuple[int, ...], MaxItems(MAX_BUCKET_CAP)]

    MAX_ENCODED = MAX_BUCKET_CAP * 9 + 8


# --- live auctions ---


class AuctionMode(IntEnum):
    TIMED = 1  # anti-snipe: a late bid resets the clock to auction_counter_ms
    SUDDEN_DEATH = 2  # no extension


class AuctionStatus(IntEnum):
    OPEN = 1
    SOLD = 2  # ended with a bid at or above the reserve: the winner's order exists
    UNSOLD = 3  # ended without a bid, or below the reserve: the unit went back to stock
    CANCELLED = 4  # by the merchant or host, before any bid


@dataclass(frozen=True, slots=True)
class Auction(Wire):
    """One listing unit sold by ascending bids; its size does not grow with the bidders.

    Only the leader is kept: its maximum (``leader_max``, the proxy bids for it up to
    that), the price it pays now (``price``) and what the escrow holds for it
    (``held``, equal to ``price``), and its sealed address for the order it wins.
    Every outbid bidder has been refunded already.
    """

    id: int
    session_id: int
    listing_id: int
    listing_version: int
    merchant: Address
    host: Address
    host_bps: int
    mode: int
    start_price: int
    # 0: no reserve.
    reserve: int
    start_ms: int
    # The current end; anti-snipe moves it, never past max_end_ms.
    end_ms: int
    max_end_ms: int
    status: int
    # 0 until the first bid.
    price: int
    held: int
    leader: Address | None
    leader_max: int
    bids: int
    # The auction-clock bucket that holds its id while open.
    bucket: int
    sealed_to: OptEncKey
    address_commitment: OptHash
    sealed_address: Annotated[bytes, MaxLen(SEALED_CAP)]
    # The winner's order (0: none).
    order_id: int
    ended_ms: int

    MAX_ENCODED = SEALED_CAP + 512


@dataclass(frozen=True, slots=True)
class AuctionBucket(Wire):
    """Ids of the open auctions filed in one auction-clock bucket."""

    auction_ids: Annotated[tuple[int, ...], MaxItems(MAX_AUCTION_BUCKET_CAP)]

    MAX_ENCODED = MAX_AUCTION_BUCKET_CAP * 9 + 8


# --- provenance ---


@dataclass(frozen=True, slots=True)
class ItemId(Wire):
    """A GS1-style serialized item: GTIN-14 plus serial (AI 01 + AI 21)."""

    gtin: Annotated[str, MaxLen(14)]
    serial: Annotated[str, MaxLen(20)]

    MAX_ENCODED = 64


class ItemStatus(IntEnum):
    ACTIVE = 1
    DECOMMISSIONED = 2


@dataclass(frozen=True, slots=True)
class Item(Wire):
    ref: Hash32
    gtin: Annotated[str, MaxLen(14)]
    serial: Annotated[str, MaxLen(20)]
    maker: Address
    custodian: Address
    # A proposed hand-off waiting for the receiver.
    pending_to: Address | None
    status: int
    # The order it ships in (0: none); set from shipping to the end of the order.
    order_id: int
    event_count: int
    registered_ms: int
    description: Annotated[str, MaxLen(TITLE_CAP)]
    # Who owns it: None until an order settles it on chain, then that order's buyer
    # (a resale order's buyer in turn). Custody is apart: an owner may hand the item
    # to a carrier or an inspector and still own it; only an owner sells it.
    owner: Address | None = None
    # The resale listing that offers it (0: none), set when its owner lists it; it offers
    # the item while active with its one unit unsold, and no other listing may meanwhile.
    listing_id: int = 0
    # Whom it goes back to (None: nobody): the merchant of the order it shipped in
    # (``order_id``, still set), which ended giving its buyer back all it paid. It stays
    # locked to that order, handed on only to a carrier or the merchant, until the
    # merchant holds it again with no hand-off pending.
    return_to: Address | None = None


@dataclass(frozen=True, slots=True)
class ProvenanceEvent(Wire):
    """An EPCIS-shaped ObjectEvent: what (the item), when, where, why."""

    seq: int
    # EPCIS action: ADD (commissioning), OBSERVE, DELETE (decommissioning).
    action: Annotated[str, MaxLen(8)]
    biz_step: Field
    disposition: Field
    read_point: Field
    biz_location: Field
    # When it happened (attestor's claim, at most the block time).
    event_time_ms: int
    # When the chain recorded it (block time and height) and who signed it.
    recorded_ms: int
    height: int
    attestor: Address
    # EPCIS source / destination (possessing party) for custody changes.
    source: Address | None
    destination: Address | None
    data_hash: OptHash
    # The transaction that recorded it (empty when a begin-block settlement did).
    tx_hash: OptHash


# --- reviews ---


@dataclass(frozen=True, slots=True)
class Review(Wire):
    order_id: int
    buyer: Address
    merchant: Address
    listing_id: int
    rating: int
    text: Text
    created_ms: int
    updated_ms: int
    edits: int
    # The merchant's one reply; once set the review can no longer be edited.
    reply: Text | None
    replied_ms: int
    # The previous review of the same merchant / listing (0: none).
    prev_of_merchant: int
    prev_of_listing: int
