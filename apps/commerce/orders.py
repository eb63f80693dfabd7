"""Orders and escrow: place, cancel, decline, accept, ship, confirm, refund, dispute,
rule, disclose; and the begin-block hook that enforces deadlines from block time.

Placing an order debits the buyer and credits the escrow (one state key, not an
account: no transfer can reach it) in the same handler, so both happen or
neither does. Every way out of the escrow goes through ``_refund_all``,
``_partial_refund`` or ``_release``, and every state change through
``_transition``, which refuses (as a node fault) any move outside
``model.TRANSITIONS``.
"""

from __future__ import annotations

import functools

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.deadlines import pop_due, schedule
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import (
    DEADLINE_STATE,
    OPEN_STATES,
    TRANSITIONS,
    UNSHIPPED_STATES,
    Auction,
    Count,
    DeadlineKind,
    DealStatus,
    Disclosure,
    Dispute,
    Listing,
    ListingStatus,
    Order,
    OrderState,
    Party,
    Role,
    state_name,
)
from apps.commerce.params import BPS, MAX_DISCLOSURES, CommerceGenesis
from apps.commerce.payloads import (
    ACCEPT_ORDER,
    CANCEL_ORDER,
    CONFIRM_DELIVERY,
    DECLINE_ORDER,
    DISCLOSE,
    OPEN_DISPUTE,
    PLACE_ORDER,
    REFUND,
    RULE,
    SHIP_ORDER,
    Disclose,
    OpenDispute,
    OrderRef,
    PlaceOrder,
    Refund,
    Rule,
    ShipOrder,
)
from apps.commerce.provenance import hand_to_buyer, lock_for_order, return_items
from apps.commerce.sessions import require_open_session
from apps.commerce.store import (
    addr,
    checked_mul,
    config,
    escrow_in,
    escrow_open_order,
    escrow_out,
    load,
    next_id,
    refuse_registrar,
    require_approved,
    require_deal,
    require_listing,
    require_order,
    require_role,
    require_sealed,
    require_session,
    require_text,
    roles_of,
)
from core.codec import constructor, replace
from core.errors import NodeFault
from vm.accounts import credit, debit
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.prefixes import KeyPrefix
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay, StateView

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)

# --- shared checks ---


def _require_buyer(order: Order, signer: bytes, what: str) -> None:
    # Only the order's buyer may do this. The message names the signer only: a receipt
    # is public (and a simulation free), so naming the buyer would tell anyone who
    # bought any order (docs/commerce.md, Privacy).
    if signer != order.buyer:
        raise TxFailed(
            f"{what} order {order.id} needs its buyer, signer {addr(signer)} is not",
            "not_authorized",
        )


def _require_merchant(order: Order, signer: bytes, what: str) -> None:
    # Only the order's merchant may do this.
    if signer != order.merchant:
        raise TxFailed(
            f"{what} order {order.id} needs its merchant {addr(order.merchant)}, "
            f"signer is {addr(signer)}",
            "not_authorized",
        )


def _require_state(order: Order, *allowed: OrderState) -> None:
    # Each action applies in given states only (docs/commerce.md has the machine).
    if order.state not in allowed:
        expected = " or ".join(s.name.lower() for s in allowed)
        raise TxFailed(
            f"order {order.id} is {state_name(order.state)}, expected {expected}", "bad_state"
        )


def _require_before_deadline(order: Order, now_ms: int) -> None:
    # A deadline that passed is enforced at the next block start; until then, too late.
    if order.deadline_ms and now_ms >= order.deadline_ms:
        raise TxFailed(
            f"order {order.id} deadline {order.deadline_ms} has passed (block time {now_ms})",
            "deadline_passed",
        )


# --- state changes and payouts ---


def _transition(
    state: Overlay, order: Order, new: OrderState, now_ms: int, **changes: object
) -> Order:
    allowed = TRANSITIONS.get(order.state)
    if allowed is None or new not in allowed:
        raise NodeFault(f"order {order.id}: no transition from state {order.state} to {new.name}")
    updated = replace(order, state=int(new), updated_ms=now_ms, **changes)
    state.set_obj(keys.order_key(order.id), updated)
    state.emit(
        ev.make(
            ev.ORDER_STATE,
            order=order.id,
            previous=state_name(order.state),
            state=state_name(new),
        )
    )
    return updated


def _release_stock(state: Overlay, order: Order) -> None:
    """An unshipped order's units go back to the listing's available stock."""
    key = keys.listing_key(order.listing_id)
    listing = load(state, key, Listing)
    if listing is None or listing.reserved < order.quantity:
        raise NodeFault(f"order {order.id}: listing {order.listing_id} lost its reservation")
    state.set_obj(
        key,
        replace(
            listing,
            available=listing.available + order.quantity,
            reserved=listing.reserved - order.quantity,
        ),
    )


def _refund_all(state: Overlay, order: Order, new: OrderState, now_ms: int) -> Order:
    """End ``order`` returning all it holds to the buyer (cancel, decline, refund, expiry)."""
    held = order.escrow
    escrow_out(state, held, closes_order=True, currency=order.currency)
    credit(state, order.buyer, held, currency=order.currency)
    if order.state in UNSHIPPED_STATES:
        _release_stock(state, order)
    # The buyer has all its money back: what was shipped is still the merchant's.
    return_items(state, order)
    if held:
        refund = ev.make(
            ev.ORDER_REFUND, order=order.id, amount=held, full=1, **ev.in_currency(order.currency)
        )
        state.emit(refund)
    return _transition(
        state, order, new, now_ms, escrow=0, refunded=order.refunded + held, deadline_ms=0
    )


def _release(
    state: Overlay,
    order: Order,
    new: OrderState,
    ctx: BlockContext,
    buyer_bps: int,
    tx_hash: bytes,
) -> Order:
    """Pay out an order: ``buyer_bps`` of the escrow back to the buyer, the rest to the
    merchant side (chain fee to the treasury, host commission, the remainder to the
    merchant). The shipped items pass to the buyer, unless it got all it paid back."""
    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    if cfg is None:
        raise NodeFault("an order exists without a commerce configuration")
    held = order.escrow
    to_buyer = held * buyer_bps // BPS
    seller = held - to_buyer
    fee = seller * cfg.params.fee_bps // BPS
    commission = seller * order.host_bps // BPS if order.host is not None else 0
    to_merchant = seller - fee - commission
    # Every share is in the order's currency; only transaction fees are native.
    currency = order.currency
    escrow_out(state, held, closes_order=True, currency=currency)
    credit(state, order.buyer, to_buyer, currency=currency)
    credit(state, cfg.treasury, fee, currency=currency)
    if order.host is not None:
        credit(state, order.host, commission, currency=currency)
    credit(state, order.merchant, to_merchant, currency=currency)
    if seller:
        hand_to_buyer(state, order, ctx, tx_hash)
    else:
        # A ruling of the whole escrow to the buyer is a refund: the buyer, who paid
        # nothing in the end, gets the money back, not the goods as well.
        return_items(state, order)
    state.emit(
        ev.make(
            ev.PAYOUT,
            order=order.id,
            merchant=to_merchant,
            host=commission,
            fee=fee,
            buyer=to_buyer,
            **ev.in_currency(currency),
        )
    )
    return _transition(
        state, order, new, ctx.time_ms, escrow=0, refunded=order.refunded + to_buyer, deadline_ms=0
    )


def units_bought(state: StateView, deal_id: int, buyer: bytes) -> tuple[int, bool]:
    """The units ``buyer`` bought in deal ``deal_id``, and whether they are counted in
    a record of their own (``keys.deal_buyer_key``) rather than in the buyer's party
    record, which counts its last deal's (``Party``)."""
    party = load(state, keys.party_key(buyer), Party)
    if party is None or not party.last_deal:
        # A deal's own record is written only as the party record's count moves on to
        # another deal (``_link``), and party records are never deleted: a buyer whose
        # record never counted a deal has none to read (a first order of a flash sale's
        # crowd reads one key fewer).
        return 0, False
    if party.last_deal == deal_id:
        return party.deal_units, False
    count = load(state, keys.deal_buyer_key(deal_id, buyer), Count)
    return (0, False) if count is None else (count.n, True)


def _link(
    state: Overlay,
    buyer: bytes,
    merchant: bytes,
    order_id: int,
    deal: tuple[int, int, bool] | None = None,
) -> tuple[int, int]:
    """Make ``order_id`` the newest order of its buyer and merchant; returns the
    previous heads (the order links back to them).

    ``deal``: (deal id, the buyer's units in it after this order, whether the units
    before it were in their own record, ``units_bought``). The buyer's party record
    then counts them; the count of the deal it counted before moves to its own record,
    and the deal's own record, if any, goes (each count sits in one place)."""
    bkey, mkey = keys.party_key(buyer), keys.party_key(merchant)
    b = state.get_obj(bkey, Party) or _NO_PARTY
    last_deal, deal_units = b.last_deal, b.deal_units
    if deal is not None:
        deal_id, units, in_record = deal
        if last_deal != deal_id:
            if last_deal:
                state.set_obj(keys.deal_buyer_key(last_deal, buyer), Count(deal_units))
            if in_record:
                state.delete(keys.deal_buyer_key(deal_id, buyer))
        last_deal, deal_units = deal_id, units
    # Built whole (every order writes two): cheaper than ``replace`` by keyword.
    state.set_obj(
        bkey,
        _new_party(
            checked_add(b.orders_as_buyer, 1, "orders as buyer"),
            order_id,
            b.orders_as_merchant,
            b.last_as_merchant,
            last_deal,
            deal_units,
        ),
    )
    # Read after the buyer's write: were buyer and merchant one address, both counts
    # would land in its one record.
    m = state.get_obj(mkey, Party) or _NO_PARTY
    state.set_obj(
        mkey,
        _new_party(
            m.orders_as_buyer,
            m.last_as_buyer,
            checked_add(m.orders_as_merchant, 1, "orders as merchant"),
            order_id,
            m.last_deal,
            m.deal_units,
        ),
    )
    return b.last_as_buyer, m.last_as_merchant


_NO_PARTY = Party(0, 0, 0, 0, 0, 0)
# Every order placed builds one, of 28 fields, and two party records: set the slots
# directly.
_new_order = constructor(Order)
_new_party = constructor(Party)


def open_won_order(state: Overlay, auction: Auction, currency: str, ctx: BlockContext) -> int:
    """The order of an auction's winner (begin-block, at its end): one unit at the final
    price in the listing's ``currency``, whose escrow is the winning bid's (already held),
    accepted at once like a deal order (the merchant committed by starting the auction).
    Returns its id."""
    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    if cfg is None or auction.leader is None:
        raise NodeFault(f"auction {auction.id} won without a configuration or a leader")
    now = ctx.time_ms
    order_id = next_id(state, keys.ORDER_IDS)
    escrow_open_order(state, currency)
    due = now + cfg.params.ship_window_ms
    prev_of_buyer, prev_of_merchant = _link(state, auction.leader, auction.merchant, order_id)
    order = Order(
        order_id,
        auction.leader,
        auction.merchant,
        auction.listing_id,
        auction.listing_version,
        1,
        auction.price,
        auction.price,
        auction.price,
        0,
        int(OrderState.ACCEPTED),
        now,
        now,
        due,
        0,
        auction.session_id,
        0,
        auction.host,
        auction.host_bps,
        b"",
        (),
        0,
        auction.sealed_to,
        auction.address_commitment,
        auction.sealed_address,
        prev_of_buyer,
        prev_of_merchant,
        currency,
    )
    state.set_obj(keys.order_key(order_id), order)
    schedule(state, DeadlineKind.SHIP, due, order_id)
    state.emit(
        ev.make(
            ev.ORDER_PLACED,
            session=auction.session_id,
            order=order_id,
            listing=auction.listing_id,
            deal=0,
            quantity=1,
            amount=auction.price,
            state=OrderState.ACCEPTED.name.lower(),
            **ev.in_currency(currency),
        )
    )
    return order_id


# --- handlers ---


@TX_TYPES.declare(
    PLACE_ORDER,
    PlaceOrder,
    "buyer: an order; reserves stock and moves `unit_price * quantity` into escrow",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "merchant_not_approved",
            "text_too_long",
            "unknown_listing",
            "listing_inactive",
            "stale_version",
            "invalid_quantity",
            "insufficient_stock",
            "unknown_session",
            "session_closed",
            "not_pinned",
            "unknown_deal",
            "deal_closed",
            "self_dealing",
            "registrar_party",
            "invalid_sealed_address",
            "stale_key",
            "insufficient_funds",
            "invalid_amount",
            "u64_overflow",
        ),
        "deal_not_started": "block time is before the deal's start",
        "deal_ended": "block time is at or after the deal's end",
        "deal_mismatch": "the deal is for another listing or session",
        "price_mismatch": "the unit price offered is not the listing's or deal's price",
        "sold_out": "the deal has fewer units left than asked",
        "buyer_cap": "the order would take the buyer over the deal's per-buyer cap",
        "currency_mismatch": "the order pays in another currency than the listing's",
    },
    events={ev.ORDER_PLACED, ev.STOCK_LEFT},
    feed={ev.ORDER_PLACED, ev.STOCK_LEFT},
    reads={P.CONFIG, P.MERCHANT, P.SESSION},
    writes={
        KeyPrefix.ACCOUNT,
        KeyPrefix.BALANCE,
        P.COUNTER,
        P.ESCROW,
        P.LISTING,
        P.DEAL,
        P.DEAL_BUYER,
        P.ORDER,
        P.PARTY,
        P.DEADLINE_QUEUE,
        P.DEADLINE_ENTRY,
    },
    view="OrderView",
)
def process_place_order(state: Overlay, tx: TxInfo, p: PlaceOrder, ctx: BlockContext) -> None:
    cfg = config(state)
    params = cfg.params
    buyer = tx.sender_address
    now = ctx.time_ms
    listing = require_listing(state, p.listing_id)
    # A delisted listing sells nothing.
    if listing.status != ListingStatus.ACTIVE:
        raise TxFailed(f"listing {listing.id} is delisted, expected active", "listing_inactive")
    # The order pins the version the buyer saw; terms may have changed since.
    if p.listing_version != listing.version:
        raise TxFailed(
            f"listing {listing.id} is at version {listing.version}, order names "
            f"{p.listing_version}",
            "stale_version",
        )
    # The buyer pays in the listing's currency, and says so (as it says the price).
    if p.currency != listing.currency:
        raise TxFailed(
            f"listing {listing.id} is priced in {listing.currency or 'the native token'}, "
            f"order pays in {p.currency[:8] or 'the native token'}",
            "currency_mismatch",
        )
    merchant = require_approved(state, listing.merchant)
    # Buying from oneself would move nothing but could fake sales and reviews.
    if buyer == listing.merchant:
        raise TxFailed(f"merchant {addr(buyer)} cannot buy its own listing", "self_dealing")
    # Nor may a registrar, who rules escalated disputes and may not rule its own order.
    refuse_registrar(cfg, buyer, "buy")
    # At least one unit, and no more than the chain's per-order maximum.
    if not 1 <= p.quantity <= params.max_order_quantity:
        raise TxFailed(
            f"quantity must be in 1..{params.max_order_quantity}, got {p.quantity}",
            "invalid_quantity",
        )
    # The address must be sealed to the merchant's current key, or it cannot be read.
    if p.sealed_to != merchant.enc_key:
        raise TxFailed(
            f"address sealed to key {p.sealed_to.hex()}, merchant key is {merchant.enc_key.hex()}",
            "stale_key",
        )
    require_sealed(p.sealed_address, params.sealed_address_max_bytes, "sealed address")
    session_id = 0
    host = None
    host_bps = 0
    deal = None
    counted: tuple[int, int, bool] | None = None
    if p.deal_id:
        deal = require_deal(state, p.deal_id)
        # A deal sells one listing only.
        if deal.listing_id != listing.id:
            raise TxFailed(
                f"deal {deal.id} sells listing {deal.listing_id}, order names {listing.id}",
                "deal_mismatch",
            )
        # The session, when named, must be the deal's.
        if p.session_id not in (0, deal.session_id):
            raise TxFailed(
                f"deal {deal.id} runs in session {deal.session_id}, order names {p.session_id}",
                "deal_mismatch",
            )
        # A closed deal sells nothing.
        if deal.status != DealStatus.OPEN:
            raise TxFailed(f"deal {deal.id} is closed, expected open", "deal_closed")
        # Not before its start time...
        if now < deal.start_ms:
            raise TxFailed(
                f"deal {deal.id} starts at {deal.start_ms}, block time is {now}",
                "deal_not_started",
            )
        # ...and not at or after its end time.
        if now >= deal.end_ms:
            raise TxFailed(
                f"deal {deal.id} ended at {deal.end_ms}, block time is {now}", "deal_ended"
            )
        # The buyer agrees to the deal's price.
        if p.unit_price != deal.price:
            raise TxFailed(
                f"deal {deal.id} price is {deal.price}, order offers {p.unit_price}",
                "price_mismatch",
            )
        # A deal never sells beyond its allocation.
        if p.quantity > deal.allocation - deal.sold:
            raise TxFailed(
                f"deal {deal.id} has {deal.allocation - deal.sold} left, order asks {p.quantity}",
                "sold_out",
            )
        already, in_record = units_bought(state, deal.id, buyer)
        # Nor to one buyer beyond the per-buyer cap.
        if already + p.quantity > deal.per_buyer_cap:
            raise TxFailed(
                f"deal {deal.id} allows {deal.per_buyer_cap} per buyer, buyer has {already} "
                f"and asks {p.quantity}",
                "buyer_cap",
            )
        session = require_session(state, deal.session_id)
        session_id, host, host_bps = session.id, session.host, session.host_bps
    else:
        # The buyer agrees to the listing's price.
        if p.unit_price != listing.price:
            raise TxFailed(
                f"listing {listing.id} price is {listing.price}, order offers {p.unit_price}",
                "price_mismatch",
            )
        # Only stock nobody holds can be reserved.
        if p.quantity > listing.available:
            raise TxFailed(
                f"listing {listing.id} has {listing.available} available, order asks {p.quantity}",
                "insufficient_stock",
            )
        if p.session_id:
            session = require_session(state, p.session_id)
            require_open_session(session)
            # A session earns commission only on what it shows.
            if listing.id not in session.pinned:
                raise TxFailed(
                    f"listing {listing.id} is not pinned in session {session.id}", "not_pinned"
                )
            session_id, host, host_bps = session.id, session.host, session.host_bps
    amount = checked_mul(p.unit_price, p.quantity, "order amount")
    debit(state, buyer, amount, currency=listing.currency)
    escrow_in(state, amount, currency=listing.currency)
    order_id = next_id(state, keys.ORDER_IDS)
    if deal is not None:
        # Deal units move from the deal's hold to the order's: both are "reserved".
        state.set_obj(keys.deal_key(deal.id), replace(deal, sold=deal.sold + p.quantity))
        counted = (deal.id, already + p.quantity, in_record)
        order_state, kind, window = OrderState.ACCEPTED, DeadlineKind.SHIP, params.ship_window_ms
        left = deal.allocation - deal.sold - p.quantity
    else:
        state.set_obj(
            keys.listing_key(listing.id),
            replace(
                listing,
                available=listing.available - p.quantity,
                reserved=listing.reserved + p.quantity,
            ),
        )
        order_state, kind, window = OrderState.PLACED, DeadlineKind.ACCEPT, params.accept_window_ms
        left = listing.available - p.quantity
    due = now + window
    prev_of_buyer, prev_of_merchant = _link(state, buyer, listing.merchant, order_id, counted)
    order = _new_order(
        order_id,
        buyer,
        listing.merchant,
        listing.id,
        listing.version,
        p.quantity,
        p.unit_price,
        amount,
        amount,
        0,
        int(order_state),
        now,
        now,
        due,
        0,
        session_id,
        p.deal_id,
        host,
        host_bps,
        b"",
        (),
        0,
        p.sealed_to,
        p.address_commitment,
        p.sealed_address,
        prev_of_buyer,
        prev_of_merchant,
        listing.currency,
    )
    state.set_obj(keys.order_key(order_id), order)
    schedule(state, kind, due, order_id)
    # Feed events: no buyer identity.
    state.emit(
        ev.make(
            ev.ORDER_PLACED,
            session=session_id,
            order=order_id,
            listing=listing.id,
            deal=p.deal_id,
            quantity=p.quantity,
            amount=amount,
            state=order_state.name.lower(),
            **ev.in_currency(listing.currency),
        )
    )
    if session_id:
        state.emit(
            ev.make(
                ev.STOCK_LEFT, session=session_id, listing=listing.id, deal=p.deal_id, left=left
            )
        )


@TX_TYPES.declare(
    CANCEL_ORDER,
    OrderRef,
    "buyer: placed → cancelled, full refund",
    codes=shared("commerce_disabled", "not_authorized", "unknown_order", "bad_state"),
    events={ev.ORDER_REFUND, ev.ORDER_STATE},
    reads={P.CONFIG},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, P.ESCROW, P.LISTING, P.ORDER, P.ITEM},
    view="OrderView",
)
def process_cancel_order(state: Overlay, tx: TxInfo, p: OrderRef, ctx: BlockContext) -> None:
    config(state)
    order = require_order(state, p.order_id)
    _require_buyer(order, tx.sender_address, "cancelling")
    _require_state(order, OrderState.PLACED)
    _refund_all(state, order, OrderState.CANCELLED, ctx.time_ms)


@TX_TYPES.declare(
    DECLINE_ORDER,
    OrderRef,
    "merchant: placed → declined, full refund",
    codes=shared("commerce_disabled", "not_authorized", "unknown_order", "bad_state"),
    events={ev.ORDER_REFUND, ev.ORDER_STATE},
    reads={P.CONFIG},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, P.ESCROW, P.LISTING, P.ORDER, P.ITEM},
    view="OrderView",
)
def process_decline_order(state: Overlay, tx: TxInfo, p: OrderRef, ctx: BlockContext) -> None:
    config(state)
    order = require_order(state, p.order_id)
    _require_merchant(order, tx.sender_address, "declining")
    _require_state(order, OrderState.PLACED)
    _refund_all(state, order, OrderState.DECLINED, ctx.time_ms)


@TX_TYPES.declare(
    ACCEPT_ORDER,
    OrderRef,
    "merchant: placed → accepted",
    codes=shared(
        "commerce_disabled", "not_authorized", "unknown_order", "bad_state", "deadline_passed"
    ),
    events={ev.ORDER_STATE},
    reads={P.CONFIG},
    writes={P.ORDER, P.DEADLINE_QUEUE, P.DEADLINE_ENTRY},
    view="OrderView",
)
def process_accept_order(state: Overlay, tx: TxInfo, p: OrderRef, ctx: BlockContext) -> None:
    params = config(state).params
    order = require_order(state, p.order_id)
    _require_merchant(order, tx.sender_address, "accepting")
    _require_state(order, OrderState.PLACED)
    _require_before_deadline(order, ctx.time_ms)
    due = ctx.time_ms + params.ship_window_ms
    _transition(state, order, OrderState.ACCEPTED, ctx.time_ms, deadline_ms=due)
    schedule(state, DeadlineKind.SHIP, due, order.id)


@TX_TYPES.declare(
    SHIP_ORDER,
    ShipOrder,
    "merchant: accepted → shipped; stock reserved → sold; items locked to the order",
    codes={
        **shared(
            "commerce_disabled",
            "not_authorized",
            "unknown_order",
            "bad_state",
            "deadline_passed",
            "unknown_item",
            "not_custodian",
            "item_decommissioned",
            "item_locked",
            "item_listed",
            "too_many_events",
            "not_owner",
        ),
        "too_many_items": "more serialized items than units (or max_items_per_order)",
        "duplicate_item": "an item listed twice in one shipment",
        "wrong_item": "a resale shipped without exactly the item its listing sells",
    },
    events={ev.ORDER_STATE},
    reads={P.CONFIG},
    writes={P.LISTING, P.ORDER, P.DEADLINE_QUEUE, P.DEADLINE_ENTRY, P.ITEM},
    view="OrderView",
)
def process_ship_order(state: Overlay, tx: TxInfo, p: ShipOrder, ctx: BlockContext) -> None:
    params = config(state).params
    order = require_order(state, p.order_id)
    _require_merchant(order, tx.sender_address, "shipping")
    _require_state(order, OrderState.ACCEPTED)
    _require_before_deadline(order, ctx.time_ms)
    limit = min(order.quantity, params.max_items_per_order)
    # A parcel carries at most one serialized item per unit ordered.
    if len(p.items) > limit:
        raise TxFailed(
            f"order {order.id} may ship at most {limit} serialized items, got {len(p.items)}",
            "too_many_items",
        )
    key = keys.listing_key(order.listing_id)
    listing = load(state, key, Listing)
    if listing is None or listing.reserved < order.quantity:
        raise NodeFault(f"order {order.id}: listing {order.listing_id} lost its reservation")
    # A resale ships the item it sold, and only that: ownership moves with it.
    wanted = listing.item_ref
    if wanted and [keys.item_ref(i.gtin, i.serial) for i in p.items] != [wanted]:
        raise TxFailed(
            f"listing {listing.id} resells item {wanted.hex()}: ship exactly that item",
            "wrong_item",
        )
    refs = lock_for_order(state, order, p.items)
    # Shipped units leave the warehouse: reserved -> sold.
    state.set_obj(
        key,
        replace(
            listing,
            reserved=listing.reserved - order.quantity,
            sold=listing.sold + order.quantity,
        ),
    )
    due = ctx.time_ms + params.confirm_window_ms
    _transition(
        state,
        order,
        OrderState.SHIPPED,
        ctx.time_ms,
        deadline_ms=due,
        dispute_by_ms=ctx.time_ms + params.dispute_window_ms,
        tracking_hash=p.tracking_hash,
        items=refs,
    )
    schedule(state, DeadlineKind.CONFIRM, due, order.id)


@TX_TYPES.declare(
    CONFIRM_DELIVERY,
    OrderRef,
    "buyer: shipped → completed, escrow released",
    codes=shared(
        "commerce_disabled", "not_authorized", "unknown_order", "bad_state", "too_many_events"
    ),
    events={ev.ITEM_EVENT, ev.ORDER_STATE, ev.PAYOUT},
    reads={P.CONFIG},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, P.ESCROW, P.ORDER, P.ITEM, P.ITEM_EVENT},
    view="OrderView",
)
def process_confirm_delivery(state: Overlay, tx: TxInfo, p: OrderRef, ctx: BlockContext) -> None:
    config(state)
    order = require_order(state, p.order_id)
    _require_buyer(order, tx.sender_address, "confirming delivery of")
    _require_state(order, OrderState.SHIPPED)
    _release(state, order, OrderState.COMPLETED, ctx, 0, tx.hash)


@TX_TYPES.declare(
    REFUND,
    Refund,
    "merchant: a partial refund (state kept) or a full one (→ refunded)",
    codes=shared(
        "commerce_disabled", "not_authorized", "invalid_amount", "unknown_order", "bad_state"
    ),
    events={ev.ORDER_REFUND, ev.ORDER_STATE},
    reads={P.CONFIG},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, P.ESCROW, P.LISTING, P.ORDER, P.ITEM},
    view="OrderView",
)
def process_refund(state: Overlay, tx: TxInfo, p: Refund, ctx: BlockContext) -> None:
    config(state)
    order = require_order(state, p.order_id)
    _require_merchant(order, tx.sender_address, "refunding")
    # Only an open order still holds anything to refund.
    if order.state not in OPEN_STATES:
        raise TxFailed(
            f"order {order.id} is {state_name(order.state)}, expected an open state", "bad_state"
        )
    # A refund is between 1 and what the escrow still holds for the order.
    if not 1 <= p.amount <= order.escrow:
        raise TxFailed(
            f"refund must be in 1..{order.escrow} (held for order {order.id}), got {p.amount}",
            "invalid_amount",
        )
    if p.amount == order.escrow:
        _refund_all(state, order, OrderState.REFUNDED, ctx.time_ms)
        return
    escrow_out(state, p.amount, closes_order=False, currency=order.currency)
    credit(state, order.buyer, p.amount, currency=order.currency)
    updated = replace(
        order,
        escrow=order.escrow - p.amount,
        refunded=order.refunded + p.amount,
        updated_ms=ctx.time_ms,
    )
    state.set_obj(keys.order_key(order.id), updated)
    state.emit(
        ev.make(
            ev.ORDER_REFUND,
            order=order.id,
            amount=p.amount,
            full=0,
            **ev.in_currency(order.currency),
        )
    )


@TX_TYPES.declare(
    OPEN_DISPUTE,
    OpenDispute,
    "buyer or merchant: shipped → disputed, within the dispute window",
    codes={
        **shared(
            "commerce_disabled", "not_authorized", "text_too_long", "unknown_order", "bad_state"
        ),
        "window_closed": "the dispute window after shipping has closed",
    },
    events={ev.DISPUTE_OPENED, ev.ORDER_STATE},
    reads={P.CONFIG},
    writes={P.ORDER, P.DISPUTE, P.DEADLINE_QUEUE, P.DEADLINE_ENTRY},
    view="OrderView",
)
def process_open_dispute(state: Overlay, tx: TxInfo, p: OpenDispute, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    order = require_order(state, p.order_id)
    # Only a party to the order can dispute it.
    if signer != order.buyer and signer != order.merchant:
        raise TxFailed(
            f"disputing order {order.id} needs its buyer or merchant, signer is {addr(signer)}",
            "not_authorized",
        )
    _require_state(order, OrderState.SHIPPED)
    # Disputes are for a window after shipping only.
    if ctx.time_ms >= order.dispute_by_ms:
        raise TxFailed(
            f"order {order.id} dispute window closed at {order.dispute_by_ms}, block time is "
            f"{ctx.time_ms}",
            "window_closed",
        )
    require_text(p.reason, params.reason_max_bytes, "dispute reason")
    due = ctx.time_ms + params.ruling_window_ms
    dispute = Dispute(order.id, signer, ctx.time_ms, p.reason, None, None, 0, False)
    state.set_obj(keys.dispute_key(order.id), dispute)
    _transition(state, order, OrderState.DISPUTED, ctx.time_ms, deadline_ms=due)
    schedule(state, DeadlineKind.RULE, due, order.id)
    state.emit(ev.make(ev.DISPUTE_OPENED, order=order.id, by=signer, rule_by_ms=due))


@TX_TYPES.declare(
    RULE,
    Rule,
    "arbiter (disputed) or registrar (escalated), not a party: → resolved, the escrow split",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "unknown_order",
            "bad_state",
            "deadline_passed",
            "too_many_events",
        ),
        "invalid_split": "a ruling share over 10000 basis points",
        "conflict": "the arbiter is a party to the order",
    },
    events={ev.ITEM_EVENT, ev.ORDER_STATE, ev.PAYOUT},
    reads={P.CONFIG, P.ROLE},
    writes={
        KeyPrefix.ACCOUNT,
        KeyPrefix.BALANCE,
        P.ESCROW,
        P.ORDER,
        P.DISPUTE,
        P.ITEM,
        P.ITEM_EVENT,
    },
    view="OrderView",
)
def process_rule(state: Overlay, tx: TxInfo, p: Rule, ctx: BlockContext) -> None:
    config(state)
    signer = tx.sender_address
    order = require_order(state, p.order_id)
    _require_state(order, OrderState.DISPUTED, OrderState.ESCALATED)
    if order.state == OrderState.DISPUTED:
        require_role(state, signer, Role.ARBITER, "ruling a dispute")
        _require_before_deadline(order, ctx.time_ms)
    else:
        require_role(state, signer, Role.REGISTRAR, "ruling an escalated dispute")
    # An arbiter must not judge their own case.
    if signer in (order.buyer, order.merchant, order.host):
        raise TxFailed(
            f"{addr(signer)} is a party to order {order.id} and cannot rule on it", "conflict"
        )
    # A split is a share of the escrow in basis points.
    if p.buyer_bps > BPS:
        raise TxFailed(f"buyer share must be in 0..{BPS} bps, got {p.buyer_bps}", "invalid_split")
    dkey = keys.dispute_key(order.id)
    dispute = load(state, dkey, Dispute)
    if dispute is None:
        raise NodeFault(f"order {order.id} is disputed without a dispute record")
    state.set_obj(
        dkey, replace(dispute, buyer_bps=p.buyer_bps, ruled_by=signer, ruled_ms=ctx.time_ms)
    )
    _release(state, order, OrderState.RESOLVED, ctx, p.buyer_bps, tx.hash)


@TX_TYPES.declare(
    DISCLOSE,
    Disclose,
    "buyer or merchant: record the address re-sealed to an auditor",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "not_authorized",
            "text_too_long",
            "invalid_sealed_address",
            "stale_key",
            "unknown_order",
        ),
        "too_many_disclosures": "the order's address was disclosed 64 times already",
    },
    events={ev.DISCLOSED},
    reads={P.CONFIG, P.ROLE},
    writes={P.ORDER, P.DISCLOSURE},
    view="OrderView",
)
def process_disclose(state: Overlay, tx: TxInfo, p: Disclose, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    order = require_order(state, p.order_id)
    # Only a party that holds the address may disclose it.
    if signer != order.buyer and signer != order.merchant:
        raise TxFailed(
            f"disclosing order {order.id}'s address needs its buyer or merchant, signer is "
            f"{addr(signer)}",
            "not_authorized",
        )
    record = roles_of(state, p.auditor)
    # Addresses are disclosed to registered auditors only.
    if not record.roles & Role.AUDITOR:
        raise TxFailed(
            f"{addr(p.auditor)} does not hold role auditor (role auditor missing)",
            "missing_role",
        )
    # The copy must be sealed to the auditor's current key: the record names that key,
    # and the auditor opens its copy with the key its record names. Rotated meanwhile
    # (set_roles), the copy was recorded under a key that cannot open it.
    if p.sealed_to != record.enc_key:
        raise TxFailed(
            f"disclosure sealed to key {p.sealed_to.hex()}, auditor key is {record.enc_key.hex()}",
            "stale_key",
        )
    require_sealed(p.ciphertext, params.sealed_address_max_bytes, "disclosure")
    seq = order.disclosures
    # Each disclosure is a record keyed by the order; a few auditors need a few copies.
    if seq >= MAX_DISCLOSURES:
        raise TxFailed(
            f"order {order.id} has {seq} disclosures, the maximum is {MAX_DISCLOSURES}",
            "too_many_disclosures",
        )
    disclosure = Disclosure(
        order.id, seq, signer, p.auditor, record.enc_key, p.ciphertext, ctx.time_ms
    )
    state.set_obj(keys.disclosure_key(order.id, seq), disclosure)
    state.set_obj(keys.order_key(order.id), replace(order, disclosures=seq + 1))
    state.emit(ev.make(ev.DISCLOSED, order=order.id, seq=seq, by=signer, auditor=p.auditor))


# --- begin-block: deadlines ---


def run_deadlines(state: Overlay, ctx: BlockContext) -> None:
    """Enforce every order deadline due at the block time (up to the per-block budget).

    Not accepted in time, or not shipped in time: refund (EXPIRED). Not
    confirmed (nor disputed) in time: release to the merchant (COMPLETED). Not
    ruled in time: escalate to the registrars (ESCALATED, no further deadline).
    """
    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    if cfg is None:
        return
    left = cfg.params.max_deadlines_per_block
    # Each kind takes its share of the budget first, then what the others left: taken
    # kind by kind, a backlog of one (orders placed faster than the budget and never
    # accepted) used it all, and the others' deadlines never fired while it lasted. The
    # kinds take turns to go first, so a budget below their number starves none either.
    turn = ctx.height % len(_KINDS)
    kinds = _KINDS[turn:] + _KINDS[:turn]
    share = max(1, left // len(_KINDS))
    more = []
    for kind in kinds:
        if left <= 0:
            return
        fire = functools.partial(_fire_deadline, state, ctx, kind)
        allowed = min(share, left)
        spent = pop_due(state, kind, ctx.time_ms, allowed, fire)
        left -= spent
        if spent >= allowed:
            more.append((kind, fire))
    for kind, fire in more:
        if left <= 0:
            return
        left -= pop_due(state, kind, ctx.time_ms, left, fire)


_KINDS = tuple(DeadlineKind)


def _fire_deadline(
    state: Overlay, ctx: BlockContext, kind: DeadlineKind, due_ms: int, order_id: int
) -> int:
    """Enforce one deadline; its work for the block's budget (``pop_due``): 1, plus the
    order's items, which a release hands over (up to ``max_items_per_order``, with an
    event apiece). A deadline refunds only unshipped orders, which have no items: no
    hook sends items back (``return_items``)."""
    order = load(state, keys.order_key(order_id), Order)
    if order is None:
        raise NodeFault(f"deadline for missing order {order_id}")
    # Stale: the order moved on (or got a later deadline) before this one.
    if order.state != DEADLINE_STATE[kind] or order.deadline_ms != due_ms:
        return 1
    now = ctx.time_ms
    if kind in (DeadlineKind.ACCEPT, DeadlineKind.SHIP):
        _refund_all(state, order, OrderState.EXPIRED, now)
    elif kind == DeadlineKind.CONFIRM:
        _release(state, order, OrderState.COMPLETED, ctx, 0, b"")
    else:
        dkey = keys.dispute_key(order.id)
        dispute = load(state, dkey, Dispute)
        if dispute is None:
            raise NodeFault(f"order {order.id} is disputed without a dispute record")
        state.set_obj(dkey, replace(dispute, escalated=True))
        _transition(state, order, OrderState.ESCALATED, now, deadline_ms=0)
        return 1
    return 1 + len(order.items)
