"""The commerce invariants, checked from state alone (tests, audits, replays).

Ids are dense (1..counter-1), so every listing, deal, session and order can be
enumerated with point reads. Accounts cannot (they are keyed by address), so
the caller names the addresses whose balances make up the supply.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

from apps.commerce import keys
from apps.commerce.deadlines import pending
from apps.commerce.model import (
    DEADLINE_STATE,
    OPEN_STATES,
    UNSHIPPED_STATES,
    Auction,
    AuctionBucket,
    AuctionStatus,
    Count,
    DeadlineKind,
    Deal,
    DealBucket,
    DealClock,
    DealStatus,
    Dispute,
    Item,
    ItemStatus,
    Listing,
    Merchant,
    Order,
    OrderState,
    Party,
    Review,
    Session,
    SessionStatus,
    state_name,
)
from apps.commerce.orders import units_bought
from apps.commerce.params import CommerceGenesis
from apps.commerce.provenance import offers_item
from apps.commerce.store import escrow, load, peek_next_id
from core.codec import Wire
from vm.accounts import NATIVE, get_account
from vm.currency import check_supply, currency_symbols
from vm.state import StateView

W = TypeVar("W", bound=Wire)

# The deadline kind an open order waits for in each state (none for ESCALATED).
_KIND_IN: dict[int, DeadlineKind] = {state: kind for kind, state in DEADLINE_STATE.items()}


def check_invariants(
    state: StateView, accounts: Iterable[bytes] | None = None, supply: int | None = None
) -> list[str]:
    """Every broken invariant, as a sentence naming expected and actual values."""
    problems: list[str] = []
    bad = problems.append

    orders = _all(state, keys.ORDER_IDS, keys.order_key, Order)
    deals = _all(state, keys.DEAL_IDS, keys.deal_key, Deal)
    listings = _all(state, keys.LISTING_IDS, keys.listing_key, Listing)
    sessions = _all(state, keys.SESSION_IDS, keys.session_key, Session)
    auctions = _all(state, keys.AUCTION_IDS, keys.auction_key, Auction)

    # Every invariant about money holds per currency: the native token and each issued one.
    currencies = (NATIVE, *currency_symbols(state))
    held = {c: escrow(state, c) for c in currencies}
    # The accounts named, once: the checks below go over them twice.
    named: set[bytes] = set() if accounts is None else set(accounts)
    # Tokens are conserved: balances plus escrow equal the supply (native: genesis's;
    # issued: minted minus burned).
    if accounts is not None and supply is not None:
        total = sum(get_account(state, a).balance for a in named) + held[NATIVE].held
        if total != supply:
            bad(f"tokens not conserved: expected supply {supply}, balances + escrow = {total}")
        problems += check_supply(state, named, {c: e.held for c, e in held.items()})

    # Each currency's escrow holds the sum of its open orders plus its live bids (one per
    # auction, in its listing's currency: an auction has no currency of its own).
    open_orders = [o for o in orders.values() if o.state in OPEN_STATES]
    for o in orders.values():
        if o.currency not in held:
            bad(f"order {o.id} is in {o.currency!r}, which is no currency")
        # An order pays in its listing's currency, which never changes.
        lst = listings.get(o.listing_id)
        if lst is not None and lst.currency != o.currency:
            bad(f"order {o.id} is in {o.currency!r}, its listing in {lst.currency!r}")
    live_bids: dict[str, int] = defaultdict(int)
    for a in auctions.values():
        if a.status != AuctionStatus.OPEN:
            continue
        lst = listings.get(a.listing_id)
        if lst is None:
            bad(f"auction {a.id} is for listing {a.listing_id}, which does not exist")
            continue
        live_bids[lst.currency] += a.held
    for currency in live_bids.keys() - held.keys():
        bad(f"live bids are held in {currency!r}, which is no currency")
    for currency, h in held.items():
        mine = [o for o in open_orders if o.currency == currency]
        open_sum = sum(o.escrow for o in mine)
        bids_sum = live_bids.get(currency, 0)
        name = currency or "native"
        if h.held != open_sum + bids_sum:
            bad(
                f"{name} escrow holds {h.held}, open orders hold {open_sum} and live bids {bids_sum}"
            )
        if h.open_orders != len(mine):
            bad(f"{name} escrow counts {h.open_orders} open orders, there are {len(mine)}")

    reserved_by: dict[int, int] = defaultdict(int)
    deal_sold: dict[int, int] = defaultdict(int)
    deal_buyer: dict[tuple[int, bytes], int] = defaultdict(int)
    for o in orders.values():
        # Every order is in exactly one known state.
        try:
            OrderState(o.state)
        except ValueError:
            bad(f"order {o.id} has unknown state {o.state}")
            continue
        if o.state in OPEN_STATES:
            # An open order holds a positive part of what it paid.
            if not 1 <= o.escrow <= o.amount or o.escrow + o.refunded != o.amount:
                bad(
                    f"order {o.id} ({o.state}) holds {o.escrow} with {o.refunded} refunded, "
                    f"amount {o.amount}"
                )
        elif o.escrow != 0:
            # A terminal order holds nothing.
            bad(f"terminal order {o.id} still holds {o.escrow}")
        if o.refunded > o.amount:
            bad(f"order {o.id} refunded {o.refunded}, more than its amount {o.amount}")
        if o.amount != o.unit_price * o.quantity:
            bad(f"order {o.id} amount {o.amount} != {o.unit_price} x {o.quantity}")
        if o.state in UNSHIPPED_STATES:
            reserved_by[o.listing_id] += o.quantity
        if o.deal_id:
            deal_sold[o.deal_id] += o.quantity
            deal_buyer[(o.deal_id, o.buyer)] += o.quantity

    open_deals_of: dict[int, int] = defaultdict(int)
    for d in deals.values():
        # A deal never sells beyond its allocation...
        if d.sold > d.allocation:
            bad(f"deal {d.id} sold {d.sold}, allocation {d.allocation}")
        if deal_sold[d.id] != d.sold:
            bad(f"deal {d.id} counts {d.sold} sold, its orders hold {deal_sold[d.id]}")
        if d.status == DealStatus.OPEN:
            reserved_by[d.listing_id] += d.allocation - d.sold
            open_deals_of[d.listing_id] += 1
            session = sessions.get(d.session_id)
            if session is None or d.id not in session.open_deals:
                bad(f"open deal {d.id} is missing from session {d.session_id}'s open deals")
    for (deal_id, buyer), n in deal_buyer.items():
        deal = deals.get(deal_id)
        # ...nor to one buyer beyond its cap.
        if deal is None or n > deal.per_buyer_cap:
            cap = deal and deal.per_buyer_cap
            bad(f"buyer {buyer.hex()} holds {n} of deal {deal_id}, cap {cap}")
    # A buyer's count in a deal is what its orders there hold, none where it has none
    # (a stray count would refuse its orders as over the cap), and sits in one place:
    # its party record (its last deal) or a record of its own. Checked for every deal
    # and every address that ordered or that the caller names.
    parties = {o.buyer for o in orders.values()} | named
    for buyer in parties:
        party = load(state, keys.party_key(buyer), Party)
        if party is not None and party.last_deal and party.last_deal not in deals:
            bad(f"buyer {buyer.hex()} counts units in deal {party.last_deal}, which is no deal")
        for deal_id in deals:
            n = deal_buyer.get((deal_id, buyer), 0)
            counted, in_record = units_bought(state, deal_id, buyer)
            if counted != n:
                bad(f"deal {deal_id} buyer {buyer.hex()} counted {counted}, orders hold {n}")
            # A count record that ``units_bought`` does not read (the party record
            # counts that deal, or counted none) is a stray.
            own = load(state, keys.deal_buyer_key(deal_id, buyer), Count)
            if not in_record and own is not None:
                bad(f"deal {deal_id} buyer {buyer.hex()} has a stray count of {own.n}")

    for a in auctions.values():
        _check_auction(a, orders, sessions, bad)
        if a.status == AuctionStatus.OPEN:
            reserved_by[a.listing_id] += 1

    for s in sessions.values():
        for deal_id in s.open_deals:
            deal = deals.get(deal_id)
            if deal is None or deal.status != DealStatus.OPEN or deal.session_id != s.id:
                bad(f"session {s.id} lists deal {deal_id}, which is not its open deal")
        if s.status == SessionStatus.CLOSED and s.open_deals:
            bad(f"closed session {s.id} still has open deals {s.open_deals}")
        for auction_id in s.open_auctions:
            auction = auctions.get(auction_id)
            if (
                auction is None
                or auction.status != AuctionStatus.OPEN
                or auction.session_id != s.id
            ):
                bad(f"session {s.id} lists auction {auction_id}, which is not its open auction")
        if s.status == SessionStatus.CLOSED and s.open_auctions:
            bad(f"closed session {s.id} still has open auctions {s.open_auctions}")

    rating: dict[bytes, list[int]] = defaultdict(lambda: [0, 0])
    listing_rating: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for o in orders.values():
        review = load(state, keys.review_key(o.id), Review)
        if review is not None:
            rating[o.merchant][0] += review.rating
            rating[o.merchant][1] += 1
            listing_rating[o.listing_id][0] += review.rating
            listing_rating[o.listing_id][1] += 1

    for lst in listings.values():
        # No stock goes missing: available + reserved + sold == total.
        if lst.available + lst.reserved + lst.sold != lst.total:
            bad(
                f"listing {lst.id}: available {lst.available} + reserved {lst.reserved} + "
                f"sold {lst.sold} != total {lst.total}"
            )
        if lst.reserved != reserved_by[lst.id]:
            bad(
                f"listing {lst.id} reserves {lst.reserved}, open deals, open auctions and "
                "unshipped orders "
                f"hold {reserved_by[lst.id]}"
            )
        if lst.open_deals != open_deals_of[lst.id]:
            bad(
                f"listing {lst.id} counts {lst.open_deals} open deals, found {open_deals_of[lst.id]}"
            )
        if [lst.rating_sum, lst.rating_count] != listing_rating[lst.id]:
            bad(f"listing {lst.id} rating aggregate differs from its reviews")
        merchant = load(state, keys.merchant_key(lst.merchant), Merchant)
        if merchant is None:
            bad(f"listing {lst.id} belongs to unregistered merchant {lst.merchant.hex()}")
        elif [merchant.rating_sum, merchant.rating_count] != rating[lst.merchant]:
            bad(f"merchant {lst.merchant.hex()} rating aggregate differs from its reviews")

    # An item is offered (or held for a buyer) by one resale listing at most, the one it
    # names: so one buyer at most pays into escrow for it.
    offered_by: dict[bytes, list[int]] = defaultdict(list)
    for lst in listings.values():
        if lst.item_ref and offers_item(lst):
            offered_by[lst.item_ref].append(lst.id)
    for ref, offering in offered_by.items():
        item = load(state, keys.item_key(ref), Item)
        names = None if item is None else item.listing_id
        if offering != [names]:
            bad(f"item {ref.hex()} is offered by listings {offering}, it names listing {names}")
        # ...which its seller can ship: active, owned and held by the listing's merchant,
        # with no hand-off pending and in no order, until the listing's order ships it.
        seller = listings[offering[0]].merchant
        if item is not None and (
            item.status != ItemStatus.ACTIVE
            or item.owner != seller
            or item.custodian != seller
            or item.pending_to is not None
            or item.order_id
        ):
            bad(
                f"item {ref.hex()} offered by listing {offering[0]} of {seller.hex()} is not "
                f"its seller's to ship: owner {_hex(item.owner)}, custodian "
                f"{item.custodian.hex()}, pending to {_hex(item.pending_to)}, order "
                f"{item.order_id}, status {item.status}"
            )

    # An item is locked to an order only on its way: shipping in it while the order is
    # open, or going back to its merchant once the order returned the buyer all it paid,
    # until the merchant holds it with no hand-off pending.
    for o in orders.values():
        for ref in o.items:
            _check_lock(o, ref, load(state, keys.item_key(ref), Item), bad)

    # A merchant's counts of open deals and auctions (its per-merchant limits) are exact.
    open_of: dict[bytes, list[int]] = defaultdict(lambda: [0, 0])
    for d in deals.values():
        if d.status == DealStatus.OPEN:
            open_of[d.merchant][0] += 1
    for a in auctions.values():
        if a.status == AuctionStatus.OPEN:
            open_of[a.merchant][1] += 1
    for who in open_of.keys() | {lst.merchant for lst in listings.values()}:
        merchant = load(state, keys.merchant_key(who), Merchant)
        have = [0, 0] if merchant is None else [merchant.open_deals, merchant.open_auctions]
        if have != open_of[who]:
            bad(f"merchant {who.hex()} counts {have} open deals and auctions, found {open_of[who]}")

    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    if cfg is not None:
        _check_ways_out(state, cfg, open_orders, deals, auctions, bad)
    return problems


def _check_ways_out(
    state: StateView,
    cfg: CommerceGenesis,
    open_orders: list[Order],
    deals: dict[int, Deal],
    auctions: dict[int, Auction],
    bad: Callable[[str], None],
) -> None:
    """No escrow is stuck: every open order has a way out that needs no party's goodwill
    (its deadline queued, a registrar who may rule it), and every open deal and auction
    is where the begin-block hooks will find it when it ends."""
    queued = {kind: set(pending(state, kind)) for kind in _KIND_IN.values()}
    for o in open_orders:
        kind = _KIND_IN.get(o.state)
        # The deadline of its state is queued: the hook will enforce it.
        if kind is not None and (o.deadline_ms, o.id) not in queued[kind]:
            bad(
                f"open order {o.id} ({state_name(o.state)}) has no {kind.name.lower()} "
                f"deadline queued at {o.deadline_ms}"
            )
        # A disputed order can be ruled, or escalated, only with its dispute record.
        disputed = o.state in (OrderState.DISPUTED, OrderState.ESCALATED)
        if disputed and load(state, keys.dispute_key(o.id), Dispute) is None:
            bad(f"order {o.id} is {state_name(o.state)} without a dispute record")
        # Any open order may end up escalated, and only a registrar that is no party to
        # it may then rule it: escalated orders have no deadline.
        if all(r in (o.buyer, o.merchant, o.host) for r in cfg.registrars):
            bad(f"open order {o.id}: every registrar is a party to it, none could rule it")
    deal_clock = load(state, keys.DEAL_CLOCK_KEY, DealClock)
    for d in deals.values():
        if d.status != DealStatus.OPEN:
            continue
        # In the bucket of its end, which the deal clock has yet to reach.
        b = d.end_ms // cfg.params.deal_bucket_ms
        entry = load(state, keys.deal_bucket_key(b), DealBucket)
        filed = entry is not None and d.id in entry.deal_ids
        if not filed or deal_clock is None or not deal_clock.next <= b <= deal_clock.last:
            bad(f"open deal {d.id} is not in bucket {b} within the deal clock {deal_clock}")
    auction_clock = load(state, keys.AUCTION_CLOCK_KEY, DealClock)
    for a in auctions.values():
        if a.status != AuctionStatus.OPEN:
            continue
        # In the bucket it names, which the auction clock has yet to reach.
        found = load(state, keys.auction_bucket_key(a.bucket), AuctionBucket)
        filed = found is not None and a.id in found.auction_ids
        clock_ok = (
            auction_clock is not None and auction_clock.next <= a.bucket <= auction_clock.last
        )
        if not filed or not clock_ok:
            bad(
                f"open auction {a.id} is not in bucket {a.bucket} within the auction clock "
                f"{auction_clock}"
            )


def _check_lock(o: Order, ref: bytes, item: Item | None, bad: Callable[[str], None]) -> None:
    if item is None:
        bad(f"order {o.id} shipped item {ref.hex()}, which does not exist")
        return
    locked = item.order_id == o.id
    if o.state in OPEN_STATES:
        if not locked or item.return_to is not None:
            bad(f"item {ref.hex()} of open order {o.id} is locked to {item.order_id}")
    elif locked:
        # Only an order that gave everything back keeps its items, returning.
        home = item.custodian == o.merchant and item.pending_to is None
        if o.refunded != o.amount or item.return_to != o.merchant or home:
            bad(
                f"item {ref.hex()} is still locked to ended order {o.id} (refunded "
                f"{o.refunded} of {o.amount}), returning to {item.return_to!r}"
            )
    if item.return_to is not None and item.order_id == 0:
        bad(f"item {ref.hex()} returns to {item.return_to.hex()} locked to no order")


def _check_auction(
    a: Auction,
    orders: dict[int, Order],
    sessions: dict[int, Session],
    bad: Callable[[str], None],
) -> None:
    try:
        status = AuctionStatus(a.status)
    except ValueError:
        bad(f"auction {a.id} has unknown status {a.status}")
        return
    session = sessions.get(a.session_id)
    listed = session is not None and a.id in session.open_auctions
    if status == AuctionStatus.OPEN:
        # The leader's escrow is the current price; without a leader nothing is held.
        expected = 0 if a.leader is None else a.price
        if a.held != expected:
            bad(f"auction {a.id} holds {a.held}, its price with a leader is {expected}")
        if a.leader is not None and not a.start_price <= a.price <= a.leader_max:
            bad(f"auction {a.id} price {a.price} outside {a.start_price}..{a.leader_max}")
        if not a.end_ms <= a.max_end_ms or a.order_id or a.ended_ms:
            bad(f"open auction {a.id} ends at {a.end_ms} (max {a.max_end_ms}) or has ended")
        if not listed:
            bad(f"open auction {a.id} is missing from session {a.session_id}'s open auctions")
        return
    # An ended auction holds nothing, has left its session, and ended once: a sale made
    # exactly one order, of its winner at its price.
    if a.held != 0 or listed or not a.ended_ms:
        bad(f"ended auction {a.id} holds {a.held} or is still open in its session")
    order = orders.get(a.order_id)
    if status == AuctionStatus.SOLD:
        if order is None or (order.buyer, order.amount) != (a.leader, a.price):
            bad(f"sold auction {a.id} has no order {a.order_id} of its winner at {a.price}")
    elif a.order_id:
        bad(f"auction {a.id} ({status.name.lower()}) has order {a.order_id}")


def _hex(address: bytes | None) -> str:
    return "none" if address is None else address.hex()


def _all(state: StateView, kind: int, key: Callable[[int], bytes], cls: type[W]) -> dict[int, W]:
    out = {}
    for i in range(1, peek_next_id(state, kind)):
        obj = load(state, key(i), cls)
        if obj is not None:
            out[i] = obj
    return out
