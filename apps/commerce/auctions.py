"""Live auctions: one listing unit sold by ascending bids inside an open live session,
ended from block time at the start of a block.

A merchant or the session's host starts one (start price, optional reserve, a start
time up to ``auction_max_lead_ms`` ahead, a duration in
``auction_min_ms..auction_max_ms``, timed with anti-snipe or sudden death); the unit
moves from available to reserved. A bid is a maximum: the chain bids for the leader by
the genesis increment table up to it (proxy bidding), before the start too (pre-bids).

**Escrow.** The escrow holds exactly the current price for the leader and nothing for
anyone else: a new leader pays the price it now leads at and the one it displaced is
refunded in the same transaction. When a challenger raises the price but the leader's
maximum still wins, the proxy draws the difference from the leader's balance; the
leader's maximum counts only as far as its escrow plus its balance reach at that moment
(its *effective* maximum), so a maximum is never a promise the chain cannot keep, and a
leader who moved its tokens away loses to a bid above what it could still pay. Ties go
to the earlier maximum, which is always the leader's.

**Bounded.** An auction is one record whatever the number of bidders: the leader, its
maximum, the price, what is held, its sealed address. Ends are found by an auction
clock of buckets (``auction_bucket_ms`` wide) as deal ends are, and the end hook reads
at most ``max_auction_ends_per_block`` records and buckets per block; what is left
waits a block. Bids are refused from the end time on (block time: its producer's,
within docs/consensus.md's bounds), so an end the hook reaches late changes when the
winner's order appears, never who wins or at what price.

Every token movement of an auction is in ``_hold_bid`` and ``_return_bid``.
"""

from __future__ import annotations

import hashlib

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import (
    Auction,
    AuctionBucket,
    AuctionMode,
    AuctionStatus,
    DealClock,
    Listing,
    Merchant,
    Session,
)
from apps.commerce.orders import open_won_order
from apps.commerce.params import MAX_AUCTION_BUCKET_CAP, CommerceGenesis, CommerceParams
from apps.commerce.payloads import (
    BID,
    CANCEL_AUCTION,
    START_AUCTION,
    AuctionRef,
    Bid,
    StartAuction,
)
from apps.commerce.sessions import require_host_or_merchant, require_open_session, session_listing
from apps.commerce.store import (
    addr,
    config,
    escrow_in,
    escrow_out,
    load,
    next_id,
    refuse_registrar,
    require_approved,
    require_auction,
    require_sealed,
    require_session,
    schedule_bucket,
)
from core.codec import replace
from core.errors import NodeFault
from vm.accounts import credit, debit, get_balance
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.prefixes import KeyPrefix
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)

_AUCTION_CODES = {
    "unknown_auction": "no such auction",
    "auction_closed": "the auction has ended or was cancelled",
    "auction_ended": "block time is at or after the auction's end (the next block ends it)",
}


def bidder_tag(auction_id: int, address: bytes) -> str:
    """The anonymous tag of a bidder in one auction's feed: the same bidder keeps it for
    the auction, and it differs between auctions. Not a secret: bid transactions name
    their sender, as every transaction does."""
    key = auction_id.to_bytes(8, "big")
    return hashlib.blake2b(address, digest_size=4, key=key, person=b"ll-bid-tag").hexdigest()


def next_minimum(params: CommerceParams, auction: Auction) -> int:
    """The lowest bid the auction accepts now from anyone but its leader."""
    if auction.leader is None:
        return auction.start_price
    return auction.price + params.increment(auction.price)


# --- tokens: every movement of an auction's money ---


def _currency(state: Overlay, auction: Auction) -> str:
    """The auction's currency: its listing's, fixed when the listing was created (so an
    auction needs no field of its own for it)."""
    listing = load(state, keys.listing_key(auction.listing_id), Listing)
    if listing is None:
        raise NodeFault(f"auction {auction.id}: listing {auction.listing_id} is missing")
    return listing.currency


def _hold_bid(state: Overlay, bidder: bytes, amount: int, currency: str) -> None:
    """Move ``amount`` of ``currency`` from ``bidder`` into that currency's escrow, held
    for a live bid."""
    if amount:
        debit(state, bidder, amount, currency=currency)
        escrow_in(state, amount, opens_order=False, currency=currency)


def _return_bid(state: Overlay, bidder: bytes, amount: int, currency: str) -> None:
    """Give a bid's ``amount`` of ``currency`` back to ``bidder`` (outbid, or below the
    reserve)."""
    if amount:
        escrow_out(state, amount, closes_order=False, currency=currency)
        credit(state, bidder, amount, currency=currency)


# --- handlers ---


@TX_TYPES.declare(
    START_AUCTION,
    StartAuction,
    "merchant or host: auction one unit of a listing in an open session; the unit is reserved",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "not_authorized",
            "merchant_not_approved",
            "unknown_listing",
            "listing_inactive",
            "invalid_price",
            "insufficient_stock",
            "unknown_session",
            "session_closed",
            "u64_overflow",
        ),
        "invalid_reserve": "a reserve below the auction's start price",
        "below_listing_price": "the host (not the merchant) starts an auction whose reserve "
        "(or, without one, start price) is below the listing's price",
        "invalid_mode": "an auction mode other than 1 (timed) or 2 (sudden death)",
        "invalid_schedule": "an auction start in the past or beyond auction_max_lead_ms, "
        "or a duration outside auction_min_ms..auction_max_ms",
        "too_many_auctions": "the session has max_open_auctions open auctions",
        "merchant_auction_limit": "the session's merchant has max_open_auctions_per_merchant "
        "open auctions",
        "auction_bucket_full": "max_auctions_per_bucket open auctions already end in that "
        "auction-clock bucket",
    },
    events={ev.AUCTION_STARTED},
    feed={ev.AUCTION_STARTED},
    reads={P.CONFIG},
    writes={
        P.COUNTER,
        P.LISTING,
        P.SESSION,
        P.MERCHANT,
        P.AUCTION,
        P.AUCTION_CLOCK,
        P.AUCTION_BUCKET,
    },
    view="AuctionView",
)
def process_start_auction(state: Overlay, tx: TxInfo, p: StartAuction, ctx: BlockContext) -> None:
    params = config(state).params
    now = ctx.time_ms
    session = require_session(state, p.session_id)
    require_host_or_merchant(session, tx.sender_address, "starting an auction")
    require_open_session(session)
    merchant = require_approved(state, session.merchant)
    listing = session_listing(state, session, p.listing_id)
    # An auction sells one unit nobody else holds.
    if listing.available < 1:
        raise TxFailed(f"listing {listing.id} has no unit available", "insufficient_stock")
    # Escrow holds a positive amount for every order.
    if p.start_price < 1:
        raise TxFailed(f"start price must be at least 1, got {p.start_price}", "invalid_price")
    # A reserve below the start price could never matter.
    if p.reserve and p.reserve < p.start_price:
        raise TxFailed(
            f"reserve {p.reserve} is below the start price {p.start_price}", "invalid_reserve"
        )
    # Two modes only.
    if p.mode not in (AuctionMode.TIMED, AuctionMode.SUDDEN_DEATH):
        raise TxFailed(
            f"auction mode must be 1 (timed) or 2 (sudden death), got {p.mode}", "invalid_mode"
        )
    start = now if p.start_ms == 0 else p.start_ms
    # An auction starts now or later, never in the past...
    if start < now:
        raise TxFailed(f"auction start {start} is before the block time {now}", "invalid_schedule")
    # ...and not so far ahead that the auction clock's horizon would be unbounded.
    if start - now > params.auction_max_lead_ms:
        raise TxFailed(
            f"auction starts {start - now} ms from now, the maximum is "
            f"{params.auction_max_lead_ms}",
            "invalid_schedule",
        )
    # Live auctions are short, within the chain's bounds.
    if not params.auction_min_ms <= p.duration_ms <= params.auction_max_ms:
        raise TxFailed(
            f"auction duration must be in {params.auction_min_ms}..{params.auction_max_ms} ms, "
            f"got {p.duration_ms}",
            "invalid_schedule",
        )
    # A host sells the merchant's stock no cheaper than the merchant prices it: a lower
    # floor (a start at 1 and no reserve) is the merchant's own call, as a deal is.
    floor = p.reserve or p.start_price
    if tx.sender_address != session.merchant and floor < listing.price:
        raise TxFailed(
            f"a host's auction sells at no less than listing {listing.id}'s price "
            f"{listing.price}, its floor (reserve, else start price) is {floor}",
            "below_listing_price",
        )
    # Bounded so the session object and its view stay small.
    if len(session.open_auctions) >= params.max_open_auctions:
        raise TxFailed(
            f"session {session.id} has {len(session.open_auctions)} open auctions, the maximum "
            f"is {params.max_open_auctions}",
            "too_many_auctions",
        )
    # Per merchant, whatever its sessions: one merchant cannot fill the auction buckets.
    if merchant.open_auctions >= params.max_open_auctions_per_merchant:
        raise TxFailed(
            f"merchant {addr(session.merchant)} has {merchant.open_auctions} open auctions, "
            f"the maximum is {params.max_open_auctions_per_merchant}",
            "merchant_auction_limit",
        )
    end = start + p.duration_ms
    extension = params.auction_max_extension_ms if p.mode == AuctionMode.TIMED else 0
    bucket = end // params.auction_bucket_ms
    bucket_key = keys.auction_bucket_key(bucket)
    entry = load(state, bucket_key, AuctionBucket)
    ids = () if entry is None else entry.auction_ids
    # A bucket is one state value, rewritten by each auction starting or ending in it.
    if len(ids) >= params.max_auctions_per_bucket:
        raise TxFailed(
            f"{len(ids)} open auctions end in the bucket of {end}, the maximum is "
            f"{params.max_auctions_per_bucket}; choose another duration",
            "auction_bucket_full",
        )
    auction_id = next_id(state, keys.AUCTION_IDS)
    auction = Auction(
        auction_id,
        session.id,
        listing.id,
        listing.version,
        session.merchant,
        session.host,
        session.host_bps,
        int(p.mode),
        p.start_price,
        p.reserve,
        start,
        end,
        end + extension,
        int(AuctionStatus.OPEN),
        0,
        0,
        None,
        0,
        0,
        bucket,
        b"",
        b"",
        b"",
        0,
        0,
    )
    state.set_obj(keys.auction_key(auction_id), auction)
    state.set_obj(
        keys.listing_key(listing.id),
        replace(listing, available=listing.available - 1, reserved=listing.reserved + 1),
    )
    state.set_obj(
        keys.session_key(session.id),
        replace(session, open_auctions=(*session.open_auctions, auction_id)),
    )
    state.set_obj(
        keys.merchant_key(session.merchant),
        replace(merchant, open_auctions=merchant.open_auctions + 1),
    )
    state.set_obj(bucket_key, AuctionBucket((*ids, auction_id)))
    schedule_bucket(state, keys.AUCTION_CLOCK_KEY, bucket)
    state.emit(
        ev.make(
            ev.AUCTION_STARTED,
            session=session.id,
            auction=auction_id,
            listing=listing.id,
            start_price=p.start_price,
            reserve=p.reserve,
            mode=AuctionMode(p.mode).name.lower(),
            start_ms=start,
            end_ms=end,
        )
    )


@TX_TYPES.declare(
    CANCEL_AUCTION,
    AuctionRef,
    "merchant or host: cancel an auction that has no bid; the unit returns to stock",
    codes={
        **shared("commerce_disabled", "not_authorized", "unknown_session"),
        **_AUCTION_CODES,
        "auction_has_bids": "the auction has a bid: it can no longer be cancelled",
    },
    events={ev.AUCTION_ENDED},
    feed={ev.AUCTION_ENDED},
    reads={P.CONFIG},
    writes={P.LISTING, P.SESSION, P.MERCHANT, P.AUCTION, P.AUCTION_BUCKET},
    view="AuctionView",
)
def process_cancel_auction(state: Overlay, tx: TxInfo, p: AuctionRef, ctx: BlockContext) -> None:
    config(state)
    auction = require_auction(state, p.auction_id)
    session = require_session(state, auction.session_id)
    require_host_or_merchant(session, tx.sender_address, "cancelling an auction")
    _require_open(auction, ctx.time_ms)
    # A bidder who holds the lead was promised the item at that price.
    if auction.leader is not None:
        raise TxFailed(
            f"auction {auction.id} has {auction.bids} bids, it can no longer be cancelled",
            "auction_has_bids",
        )
    _unfile(state, auction)
    _close(state, auction, AuctionStatus.CANCELLED, ctx.time_ms, 0)


@TX_TYPES.declare(
    BID,
    Bid,
    "anyone but the seller, host and registrars: a maximum bid; the chain bids by increments",
    codes={
        **shared(
            "commerce_disabled",
            "text_too_long",
            "self_dealing",
            "registrar_party",
            "invalid_sealed_address",
            "stale_key",
            "insufficient_funds",
            "u64_overflow",
        ),
        **_AUCTION_CODES,
        "bid_too_low": "a bid below the next valid amount (the message names the minimum)",
    },
    events={ev.AUCTION_BID, ev.AUCTION_EXTENDED},
    feed={ev.AUCTION_BID, ev.AUCTION_EXTENDED},
    reads={P.CONFIG, P.MERCHANT, P.LISTING},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, P.ESCROW, P.AUCTION},
    view="AuctionView",
    # A simulated bid would give the price it sets, one increment above the leader's
    # maximum, to anyone holding that much, without bidding.
    private_outcome=True,
)
def process_bid(state: Overlay, tx: TxInfo, p: Bid, ctx: BlockContext) -> None:
    cfg = config(state)
    params = cfg.params
    bidder = tx.sender_address
    now = ctx.time_ms
    a = require_auction(state, p.auction_id)
    _require_open(a, now)
    # Bidding on one's own auction would only raise the price against real buyers.
    if bidder == a.merchant or bidder == a.host:
        raise TxFailed(
            f"{addr(bidder)} sells or hosts auction {a.id} and cannot bid on it", "self_dealing"
        )
    # The winner's bid becomes its order, to which a registrar may not be a party.
    refuse_registrar(cfg, bidder, "bid")
    merchant = load(state, keys.merchant_key(a.merchant), Merchant)
    if merchant is None:
        raise NodeFault(f"auction {a.id} of unregistered merchant {addr(a.merchant)}")
    # The address must be sealed to the merchant's current key, or it cannot be read.
    if p.sealed_to != merchant.enc_key:
        raise TxFailed(
            f"address sealed to key {p.sealed_to.hex()}, merchant key is {merchant.enc_key.hex()}",
            "stale_key",
        )
    require_sealed(p.sealed_address, params.sealed_address_max_bytes, "sealed address")
    # Bids are in the listing's currency (fees stay native).
    currency = _currency(state, a)
    top = p.max_amount
    address = {
        "sealed_to": p.sealed_to,
        "address_commitment": p.address_commitment,
        "sealed_address": p.sealed_address,
    }
    if a.leader == bidder:
        # The leader raises its own maximum: the price moves only to meet the reserve.
        # Said without a figure: a receipt is public, and the leader's maximum (or a bound
        # on it, from a bid it does not beat) would let a seller's second account bid
        # exactly up to it. The leader knows its own.
        if top <= a.leader_max:
            raise TxFailed("the leader's new maximum must be above its current one", "bid_too_low")
        price = _meet_reserve(a, a.price, top)
        _hold_bid(state, bidder, price - a.held, currency)
        new = replace(a, leader_max=top, price=price, held=price, **address)
    else:
        minimum = next_minimum(params, a)
        # Each bid beats the price by at least one increment (the first: the start price).
        if top < minimum:
            raise TxFailed(f"bid {top} is below the minimum {minimum}", "bid_too_low")
        # A rival's maximum must be one it could pay, checked before anything depends
        # on the leader's: the proxy answers a lower one for nothing, and a failed hold
        # of a higher one would name the price it tried to hold, one increment above
        # the leader's secret maximum. Either way an account holding only fees could
        # probe that maximum (or push the leader to it) at no risk.
        have = get_balance(state, bidder, currency)
        if have < top:
            unit = f" {currency}" if currency else ""
            raise TxFailed(
                f"bid {top}{unit} is over the balance {have}{unit}", "insufficient_funds"
            )
        if a.leader is None:
            price = _meet_reserve(a, a.start_price, top)
            _hold_bid(state, bidder, price, currency)
            new = replace(a, leader=bidder, leader_max=top, price=price, held=price, **address)
        else:
            # What the leader's maximum is worth now: no more than it can pay.
            effective = min(a.leader_max, a.held + get_balance(state, a.leader, currency))
            if top > effective:
                # The challenger leads, one increment above the old leader's maximum.
                price = _meet_reserve(a, min(top, effective + params.increment(effective)), top)
                _return_bid(state, a.leader, a.held, currency)
                _hold_bid(state, bidder, price, currency)
                new = replace(a, leader=bidder, leader_max=top, price=price, held=price, **address)
            else:
                # The proxy answers for the leader (ties go to the earlier maximum, its own).
                price = _meet_reserve(a, min(effective, top + params.increment(top)), effective)
                _hold_bid(state, a.leader, price - a.held, currency)
                new = replace(a, price=price, held=price)
    new = replace(new, bids=checked_add(a.bids, 1, "auction bids"))
    # Only a bid that others see (a new price or leader) resets the clock: the leader
    # raising its own maximum in silence does not.
    seen = new.price != a.price or new.leader != a.leader
    extended = _anti_snipe(params, new, now) if seen else new.end_ms
    state.set_obj(keys.auction_key(a.id), replace(new, end_ms=extended))
    leader = new.leader if new.leader is not None else bidder
    state.emit(
        ev.make(
            ev.AUCTION_BID,
            session=a.session_id,
            auction=a.id,
            amount=new.price,
            leader=bidder_tag(a.id, leader),
            left_ms=extended - now,
            bids=new.bids,
        )
    )
    if extended != new.end_ms:
        state.emit(
            ev.make(
                ev.AUCTION_EXTENDED,
                session=a.session_id,
                auction=a.id,
                end_ms=extended,
                left_ms=extended - now,
            )
        )


def _require_open(auction: Auction, now_ms: int) -> None:
    # An ended or cancelled auction takes nothing more.
    if auction.status != AuctionStatus.OPEN:
        status = AuctionStatus(auction.status).name.lower()
        raise TxFailed(f"auction {auction.id} is {status}, expected open", "auction_closed")
    # Its end time passed: the next block start ends it, nothing may slip in before.
    if now_ms >= auction.end_ms:
        raise TxFailed(
            f"auction {auction.id} ended at {auction.end_ms}, block time is {now_ms}",
            "auction_ended",
        )


def _meet_reserve(auction: Auction, price: int, maximum: int) -> int:
    """``price``, raised to the reserve when the leader's ``maximum`` reaches it (so a
    maximum that meets the reserve never loses the item to it)."""
    if price < auction.reserve <= maximum:
        return auction.reserve
    return price


def _anti_snipe(params: CommerceParams, auction: Auction, now_ms: int) -> int:
    """The end after a bid at ``now_ms``: in timed mode, once started, a bid with less
    than ``auction_counter_ms`` left resets the clock to it, up to ``max_end_ms``."""
    if auction.mode != AuctionMode.TIMED or now_ms < auction.start_ms:
        return auction.end_ms
    if auction.end_ms - now_ms >= params.auction_counter_ms:
        return auction.end_ms
    return max(auction.end_ms, min(now_ms + params.auction_counter_ms, auction.max_end_ms))


def _close(
    state: Overlay, auction: Auction, status: AuctionStatus, now_ms: int, order_id: int
) -> None:
    """End an open auction (its id already out of its bucket). Without an order the unit
    goes back to the listing's available stock; with one it stays reserved, the order's."""
    session = load(state, keys.session_key(auction.session_id), Session)
    if session is None or auction.id not in session.open_auctions:
        raise NodeFault(f"open auction {auction.id} is missing from its session")
    if not order_id:
        key = keys.listing_key(auction.listing_id)
        listing = load(state, key, Listing)
        if listing is None or listing.reserved < 1:
            raise NodeFault(f"auction {auction.id}: listing {auction.listing_id} lost its unit")
        state.set_obj(
            key, replace(listing, available=listing.available + 1, reserved=listing.reserved - 1)
        )
    open_auctions = tuple(i for i in session.open_auctions if i != auction.id)
    state.set_obj(keys.session_key(session.id), replace(session, open_auctions=open_auctions))
    merchant = load(state, keys.merchant_key(auction.merchant), Merchant)
    if merchant is None or merchant.open_auctions < 1:
        raise NodeFault(f"auction {auction.id} is open but its merchant counts no open auction")
    state.set_obj(
        keys.merchant_key(auction.merchant),
        replace(merchant, open_auctions=merchant.open_auctions - 1),
    )
    # The winner's address went into its order; nothing is held any more.
    ended = replace(
        auction,
        status=int(status),
        held=0,
        order_id=order_id,
        ended_ms=now_ms,
        sealed_address=b"",
    )
    state.set_obj(keys.auction_key(auction.id), ended)
    leader = "" if auction.leader is None else bidder_tag(auction.id, auction.leader)
    state.emit(
        ev.make(
            ev.AUCTION_ENDED,
            session=auction.session_id,
            auction=auction.id,
            outcome={AuctionStatus.SOLD: "won", AuctionStatus.UNSOLD: "unsold"}.get(
                status, "cancelled"
            ),
            price=auction.price,
            leader=leader,
            bids=auction.bids,
            order=order_id,
        )
    )


def _finish(state: Overlay, auction: Auction, ctx: BlockContext) -> None:
    """The end of an auction whose end time passed: sold to the leader if the price
    meets the reserve, else unsold (the leader, if any, refunded)."""
    if auction.leader is not None and auction.price >= auction.reserve:
        order_id = open_won_order(state, auction, _currency(state, auction), ctx)
        _close(state, auction, AuctionStatus.SOLD, ctx.time_ms, order_id)
        return
    if auction.leader is not None:
        _return_bid(state, auction.leader, auction.held, _currency(state, auction))
    _close(state, auction, AuctionStatus.UNSOLD, ctx.time_ms, 0)


# --- the auction clock: find ended auctions without a range scan ---


def _unfile(state: Overlay, auction: Auction) -> None:
    """Take a cancelled auction out of its bucket, so buckets hold open auctions only."""
    key = keys.auction_bucket_key(auction.bucket)
    entry = load(state, key, AuctionBucket)
    if entry is None or auction.id not in entry.auction_ids:
        raise NodeFault(f"open auction {auction.id} is missing from its bucket")
    ids = tuple(i for i in entry.auction_ids if i != auction.id)
    if ids:
        state.set_obj(key, AuctionBucket(ids))
    else:
        state.delete(key)


def _refile(state: Overlay, auction: Auction, bucket: int) -> bool:
    """File an extended auction in the bucket of its new end; False if that bucket is
    at the hard cap (the auction then stays where it is and is looked at again)."""
    key = keys.auction_bucket_key(bucket)
    entry = load(state, key, AuctionBucket)
    ids = () if entry is None else entry.auction_ids
    if len(ids) >= MAX_AUCTION_BUCKET_CAP:
        return False
    state.set_obj(key, AuctionBucket((*ids, auction.id)))
    state.set_obj(keys.auction_key(auction.id), replace(auction, bucket=bucket))
    return True


def end_auctions(state: Overlay, ctx: BlockContext) -> None:
    """Begin-block: end every open auction whose end time is at or before the block time,
    reading at most ``max_auction_ends_per_block`` buckets and auctions."""
    clock = load(state, keys.AUCTION_CLOCK_KEY, DealClock)
    if clock is None:
        return
    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    if cfg is None:
        return
    params = cfg.params
    now = ctx.time_ms
    now_bucket = now // params.auction_bucket_ms
    budget = params.max_auction_ends_per_block
    last = clock.last
    first_kept: int | None = None
    bucket = clock.next
    while bucket <= min(now_bucket, clock.last) and budget > 0:
        budget -= 1
        key = keys.auction_bucket_key(bucket)
        entry = load(state, key, AuctionBucket)
        ids = () if entry is None else entry.auction_ids
        keep: list[int] = []
        for i, auction_id in enumerate(ids):
            # Out of budget (each block ends at least one): the rest waits a block.
            if budget <= 0 and i > 0:
                keep.extend(ids[i:])
                break
            budget -= 1
            auction = load(state, keys.auction_key(auction_id), Auction)
            if auction is None or auction.status != AuctionStatus.OPEN:
                continue  # cancelling removes an auction from its bucket; drop a stray id
            if auction.end_ms <= now:
                _finish(state, auction, ctx)
                continue
            # Extended by anti-snipe: file it where its new end is.
            target = auction.end_ms // params.auction_bucket_ms
            if target != bucket and _refile(state, auction, target):
                last = max(last, target)
            else:
                keep.append(auction_id)
        if keep:
            if len(keep) != len(ids):
                state.set_obj(key, AuctionBucket(tuple(keep)))
            if first_kept is None:
                first_kept = bucket
            if budget <= 0:
                break
        elif entry is not None:
            state.delete(key)
        bucket += 1
    # Buckets before ``next`` are empty; none after ``last`` was filled.
    nxt = bucket if first_kept is None else first_kept
    if nxt > last:
        state.delete(keys.AUCTION_CLOCK_KEY)
    elif (nxt, last) != (clock.next, clock.last):
        state.set_obj(keys.AUCTION_CLOCK_KEY, DealClock(nxt, last))
