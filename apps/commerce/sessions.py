"""Live sessions, flash deals and tips.

A session's terms (merchant, host, commission) are fixed when it opens; a
deal's terms (price, allocation, per-buyer cap, window) are fixed when it
opens: there is no transaction that changes either. A deal takes its
allocation out of the listing's available stock into ``reserved`` and gives
back what it did not sell when it closes: by the merchant or host, when the
session closes, or at its end time (begin-block, through the deal clock).
"""

from __future__ import annotations

from collections.abc import Mapping

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import (
    Deal,
    DealBucket,
    DealClock,
    DealCloseReason,
    DealStatus,
    Listing,
    ListingStatus,
    Merchant,
    Role,
    Session,
    SessionStatus,
)
from apps.commerce.params import CommerceGenesis
from apps.commerce.payloads import (
    CLOSE_DEAL,
    CLOSE_SESSION,
    OPEN_DEAL,
    OPEN_SESSION,
    PIN,
    TIP,
    UNPIN,
    DealRef,
    OpenDeal,
    OpenSession,
    PinListing,
    SessionRef,
    Tip,
)
from apps.commerce.store import (
    addr,
    config,
    load,
    next_id,
    require_approved,
    require_deal,
    require_listing,
    require_session,
    require_text,
    roles_of,
    schedule_bucket,
)
from core.codec import UINT64_MAX, replace
from core.errors import NodeFault
from vm.accounts import (
    ACCOUNT_PREFIX,
    Account,
    after_fee,
    move_tokens,
    new_account,
    shortfall,
    supply_fault,
)
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.currency import require_currency
from vm.prefixes import KeyPrefix
from vm.receipts import OK, bound_message, encode_receipt
from vm.registry import (
    NO_MODULE_ACCOUNTS,
    TxClass,
    TxFailed,
    TxInfo,
    TxTable,
    refuse_module_account,
)
from vm.state import Overlay, StateView

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)


def require_open_session(session: Session) -> None:
    # A closed session takes no more pins, deals, orders or tips.
    if session.status != SessionStatus.OPEN:
        raise TxFailed(f"session {session.id} is closed, expected open", "session_closed")


def require_host_or_merchant(session: Session, signer: bytes, what: str) -> None:
    # Only the session's merchant or host runs the show.
    if signer != session.merchant and signer != session.host:
        raise TxFailed(
            f"{what} in session {session.id} needs its merchant {addr(session.merchant)} or "
            f"host {addr(session.host)}, signer is {addr(signer)}",
            "not_authorized",
        )


@TX_TYPES.declare(
    OPEN_SESSION,
    OpenSession,
    "approved merchant: open a live session with its host and the host's commission",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "merchant_not_approved",
            "text_too_long",
            "u64_overflow",
        ),
        "invalid_commission": "host commission over max_commission_bps",
        "module_account": "a session host that is a module account (e.g. a staking pool)",
        "registrar_host": "a session host holding the registrar role, who rules escalated "
        "disputes and may not rule on an order it is a party to",
    },
    events={ev.SESSION_OPENED},
    feed={ev.SESSION_OPENED},
    reads={P.CONFIG, P.MERCHANT, P.ROLE},
    writes={P.COUNTER, P.SESSION},
    view="SessionView",
)
def process_open_session(
    state: Overlay,
    tx: TxInfo,
    p: OpenSession,
    ctx: BlockContext,
    *,
    module_accounts: Mapping[bytes, str] = NO_MODULE_ACCOUNTS,
) -> None:
    """Open a live session; ``register`` binds ``module_accounts`` (the registry's)."""
    params = config(state).params
    signer = tx.sender_address
    require_approved(state, signer)
    require_text(p.title, params.title_max_bytes, "title")
    # The host is paid tips and commission, which would break a module account's books.
    refuse_module_account(module_accounts, p.host, "host")
    # A host is a party to every order of the session, and a party may not rule on it:
    # named without its consent, the chain's only registrar could then never rule an
    # escalated dispute of the session, whose escrow would stay locked for good.
    if roles_of(state, p.host).roles & Role.REGISTRAR:
        raise TxFailed(
            f"host {addr(p.host)} is a registrar, who rules escalated disputes",
            "registrar_host",
        )
    # The commission is promised out of every release, within the chain's cap.
    if p.host_bps > params.max_commission_bps:
        raise TxFailed(
            f"host commission {p.host_bps} bps is over the maximum {params.max_commission_bps}",
            "invalid_commission",
        )
    session_id = next_id(state, keys.SESSION_IDS)
    session = Session(
        session_id,
        signer,
        p.host,
        p.host_bps,
        p.title,
        SessionStatus.OPEN,
        ctx.time_ms,
        0,
        (),
        (),
        0,
    )
    state.set_obj(keys.session_key(session_id), session)
    state.emit(
        ev.make(
            ev.SESSION_OPENED,
            session=session_id,
            merchant=signer,
            host=p.host,
            host_bps=p.host_bps,
        )
    )


def session_listing(state: Overlay, session: Session, listing_id: int) -> Listing:
    """The listing, if the session may show or sell it (its merchant's, active)."""
    listing = require_listing(state, listing_id)
    # A session shows only its own merchant's listings.
    if listing.merchant != session.merchant:
        raise TxFailed(
            f"listing {listing_id} belongs to {addr(listing.merchant)}, session {session.id} "
            f"to {addr(session.merchant)}",
            "not_authorized",
        )
    # A delisted listing cannot be sold, so it cannot be shown or dealt.
    if listing.status != ListingStatus.ACTIVE:
        raise TxFailed(f"listing {listing_id} is delisted, expected active", "listing_inactive")
    return listing


@TX_TYPES.declare(
    PIN,
    PinListing,
    "merchant or host: show one of the merchant's active listings in the session",
    codes={
        **shared(
            "commerce_disabled",
            "not_authorized",
            "unknown_listing",
            "listing_inactive",
            "unknown_session",
            "session_closed",
        ),
        "already_pinned": "the listing is already pinned in the session",
        "too_many_pins": "the session has max_pinned listings pinned",
    },
    events={ev.LISTING_PINNED},
    feed={ev.LISTING_PINNED},
    reads={P.CONFIG, P.LISTING},
    writes={P.SESSION},
    view="SessionView",
)
def process_pin(state: Overlay, tx: TxInfo, p: PinListing, ctx: BlockContext) -> None:
    params = config(state).params
    session = require_session(state, p.session_id)
    require_host_or_merchant(session, tx.sender_address, "pinning")
    require_open_session(session)
    session_listing(state, session, p.listing_id)
    # Pinning twice would show the listing twice.
    if p.listing_id in session.pinned:
        raise TxFailed(
            f"listing {p.listing_id} is already pinned in session {session.id}", "already_pinned"
        )
    # Bounded so the session object and its view stay small.
    if len(session.pinned) >= params.max_pinned:
        raise TxFailed(
            f"session {session.id} has {len(session.pinned)} pinned listings, the maximum is "
            f"{params.max_pinned}",
            "too_many_pins",
        )
    state.set_obj(
        keys.session_key(session.id), replace(session, pinned=(*session.pinned, p.listing_id))
    )
    state.emit(ev.make(ev.LISTING_PINNED, session=session.id, listing=p.listing_id))


@TX_TYPES.declare(
    UNPIN,
    PinListing,
    "merchant or host: stop showing a listing in the session",
    codes=shared(
        "commerce_disabled", "not_authorized", "unknown_session", "session_closed", "not_pinned"
    ),
    events={ev.LISTING_UNPINNED},
    feed={ev.LISTING_UNPINNED},
    reads={P.CONFIG},
    writes={P.SESSION},
    view="SessionView",
)
def process_unpin(state: Overlay, tx: TxInfo, p: PinListing, ctx: BlockContext) -> None:
    config(state)
    session = require_session(state, p.session_id)
    require_host_or_merchant(session, tx.sender_address, "unpinning")
    require_open_session(session)
    # Only a pinned listing can be unpinned.
    if p.listing_id not in session.pinned:
        raise TxFailed(
            f"listing {p.listing_id} is not pinned in session {session.id}", "not_pinned"
        )
    pinned = tuple(i for i in session.pinned if i != p.listing_id)
    state.set_obj(keys.session_key(session.id), replace(session, pinned=pinned))
    state.emit(ev.make(ev.LISTING_UNPINNED, session=session.id, listing=p.listing_id))


@TX_TYPES.declare(
    OPEN_DEAL,
    OpenDeal,
    "session's merchant: a flash deal; its allocation moves from available to reserved",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "not_authorized",
            "merchant_not_approved",
            "unknown_listing",
            "listing_inactive",
            "invalid_price",
            "invalid_quantity",
            "insufficient_stock",
            "unknown_session",
            "session_closed",
            "u64_overflow",
        ),
        "too_many_deals": "the session has max_open_deals open deals",
        "merchant_deal_limit": "the merchant has max_open_deals_per_merchant open deals",
        "deal_bucket_full": "max_deals_per_bucket open deals already end in that deal-clock bucket",
        "invalid_cap": "per-buyer cap outside 1..allocation",
        "invalid_window": "a deal window that is empty, over, or too long",
    },
    events={ev.DEAL_OPENED},
    feed={ev.DEAL_OPENED},
    reads={P.CONFIG},
    writes={P.COUNTER, P.MERCHANT, P.LISTING, P.SESSION, P.DEAL, P.DEAL_CLOCK, P.DEAL_BUCKET},
    view="DealView",
)
def process_open_deal(state: Overlay, tx: TxInfo, p: OpenDeal, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    session = require_session(state, p.session_id)
    # Deals spend the merchant's stock at the merchant's price: the merchant opens them.
    if signer != session.merchant:
        raise TxFailed(
            f"opening a deal in session {session.id} needs its merchant "
            f"{addr(session.merchant)}, signer is {addr(signer)}",
            "not_authorized",
        )
    merchant = require_approved(state, signer)
    require_open_session(session)
    listing = session_listing(state, session, p.listing_id)
    # Escrow holds a positive amount for every order.
    if p.price < 1:
        raise TxFailed(f"deal price must be at least 1, got {p.price}", "invalid_price")
    # A deal sells at least one unit.
    if p.allocation < 1:
        raise TxFailed(f"allocation must be at least 1, got {p.allocation}", "invalid_quantity")
    # The allocation comes out of stock nobody else holds.
    if p.allocation > listing.available:
        raise TxFailed(
            f"listing {listing.id} has {listing.available} available, deal allocates "
            f"{p.allocation}",
            "insufficient_stock",
        )
    # Every buyer may take at least one unit and no more than the allocation.
    if not 1 <= p.per_buyer_cap <= p.allocation:
        raise TxFailed(
            f"per-buyer cap must be in 1..{p.allocation}, got {p.per_buyer_cap}", "invalid_cap"
        )
    # A deal window is a non-empty interval.
    if p.start_ms >= p.end_ms:
        raise TxFailed(
            f"deal start {p.start_ms} must be before its end {p.end_ms}", "invalid_window"
        )
    # A deal that already ended could sell nothing.
    if p.end_ms <= ctx.time_ms:
        raise TxFailed(
            f"deal end {p.end_ms} is not after the block time {ctx.time_ms}", "invalid_window"
        )
    # Flash deals are short: bounded from now (this also bounds the deal clock).
    if p.end_ms - ctx.time_ms > params.max_deal_ms:
        raise TxFailed(
            f"deal ends {p.end_ms - ctx.time_ms} ms from now, the maximum is {params.max_deal_ms}",
            "invalid_window",
        )
    # Bounded so the session object and its view stay small.
    if len(session.open_deals) >= params.max_open_deals:
        raise TxFailed(
            f"session {session.id} has {len(session.open_deals)} open deals, the maximum is "
            f"{params.max_open_deals}",
            "too_many_deals",
        )
    # Per merchant, whatever its sessions: one merchant cannot fill a deal-end bucket.
    if merchant.open_deals >= params.max_open_deals_per_merchant:
        raise TxFailed(
            f"merchant {addr(signer)} has {merchant.open_deals} open deals, the maximum is "
            f"{params.max_open_deals_per_merchant}",
            "merchant_deal_limit",
        )
    bucket = p.end_ms // params.deal_bucket_ms
    bucket_key = keys.deal_bucket_key(bucket)
    entry = load(state, bucket_key, DealBucket)
    ids = () if entry is None else entry.deal_ids
    # A bucket is one state value, rewritten by each deal opening or closing in it.
    if len(ids) >= params.max_deals_per_bucket:
        raise TxFailed(
            f"{len(ids)} open deals end in the minute of {p.end_ms}, the maximum is "
            f"{params.max_deals_per_bucket}; choose another end",
            "deal_bucket_full",
        )
    deal_id = next_id(state, keys.DEAL_IDS)
    deal = Deal(
        deal_id,
        session.id,
        listing.id,
        listing.version,
        signer,
        p.price,
        p.allocation,
        0,
        p.per_buyer_cap,
        p.start_ms,
        p.end_ms,
        DealStatus.OPEN,
        0,
        0,
    )
    state.set_obj(keys.deal_key(deal_id), deal)
    state.set_obj(
        keys.listing_key(listing.id),
        replace(
            listing,
            available=listing.available - p.allocation,
            reserved=listing.reserved + p.allocation,
            open_deals=listing.open_deals + 1,
        ),
    )
    state.set_obj(
        keys.session_key(session.id),
        replace(session, open_deals=(*session.open_deals, deal_id)),
    )
    state.set_obj(keys.merchant_key(signer), replace(merchant, open_deals=merchant.open_deals + 1))
    state.set_obj(bucket_key, DealBucket((*ids, deal_id)))
    schedule_bucket(state, keys.DEAL_CLOCK_KEY, bucket)
    state.emit(
        ev.make(
            ev.DEAL_OPENED,
            session=session.id,
            deal=deal_id,
            listing=listing.id,
            price=p.price,
            allocation=p.allocation,
            per_buyer_cap=p.per_buyer_cap,
            start_ms=p.start_ms,
            end_ms=p.end_ms,
        )
    )


def close_deal(
    state: Overlay, deal: Deal, reason: DealCloseReason, now_ms: int, bucket_ms: int
) -> None:
    """Close an open deal: unsold allocation goes back to the listing's available stock,
    and the deal leaves its merchant's count and its deal-end bucket (``bucket_ms`` is
    the bucket width; 0 when the caller, the end-of-deals hook, rewrites the bucket)."""
    if deal.status != DealStatus.OPEN:
        raise NodeFault(f"closing deal {deal.id}, which is not open")
    left = deal.left
    listing = load(state, keys.listing_key(deal.listing_id), Listing)
    session = load(state, keys.session_key(deal.session_id), Session)
    merchant = load(state, keys.merchant_key(deal.merchant), Merchant)
    if listing is None or session is None or listing.reserved < left:
        raise NodeFault(f"deal {deal.id} refers to a missing listing/session or lost stock")
    if merchant is None or merchant.open_deals < 1:
        raise NodeFault(f"deal {deal.id} is open but its merchant counts no open deal")
    state.set_obj(
        keys.merchant_key(deal.merchant), replace(merchant, open_deals=merchant.open_deals - 1)
    )
    if bucket_ms:
        _unschedule_deal_end(state, deal, bucket_ms)
    state.set_obj(
        keys.listing_key(listing.id),
        replace(
            listing,
            available=listing.available + left,
            reserved=listing.reserved - left,
            open_deals=listing.open_deals - 1,
        ),
    )
    open_deals = tuple(i for i in session.open_deals if i != deal.id)
    state.set_obj(keys.session_key(session.id), replace(session, open_deals=open_deals))
    state.set_obj(
        keys.deal_key(deal.id),
        replace(deal, status=DealStatus.CLOSED, closed_ms=now_ms, close_reason=int(reason)),
    )
    state.emit(
        ev.make(
            ev.DEAL_CLOSED,
            session=deal.session_id,
            deal=deal.id,
            sold=deal.sold,
            returned=left,
            reason=reason.name.lower(),
        )
    )


@TX_TYPES.declare(
    CLOSE_DEAL,
    DealRef,
    "merchant or host: close a deal; unsold allocation returns to available",
    codes=shared(
        "commerce_disabled", "not_authorized", "unknown_session", "unknown_deal", "deal_closed"
    ),
    events={ev.DEAL_CLOSED},
    feed={ev.DEAL_CLOSED},
    reads={P.CONFIG},
    writes={P.MERCHANT, P.LISTING, P.SESSION, P.DEAL, P.DEAL_BUCKET},
    view="DealView",
)
def process_close_deal(state: Overlay, tx: TxInfo, p: DealRef, ctx: BlockContext) -> None:
    cfg = config(state)
    deal = require_deal(state, p.deal_id)
    session = require_session(state, deal.session_id)
    require_host_or_merchant(session, tx.sender_address, "closing a deal")
    # A deal closes once.
    if deal.status != DealStatus.OPEN:
        raise TxFailed(f"deal {deal.id} is closed, expected open", "deal_closed")
    close_deal(state, deal, DealCloseReason.CLOSED, ctx.time_ms, cfg.params.deal_bucket_ms)


@TX_TYPES.declare(
    CLOSE_SESSION,
    SessionRef,
    "merchant or host: close the session and its open deals (once its auctions have ended)",
    codes={
        **shared(
            "commerce_disabled",
            "not_authorized",
            "unknown_session",
            "session_closed",
            "unknown_deal",
        ),
        "auctions_open": "the session has open auctions (they end by themselves, or cancel them)",
    },
    events={ev.DEAL_CLOSED, ev.SESSION_CLOSED},
    feed={ev.DEAL_CLOSED, ev.SESSION_CLOSED},
    reads={P.CONFIG},
    writes={P.MERCHANT, P.LISTING, P.SESSION, P.DEAL, P.DEAL_BUCKET},
    view="SessionView",
)
def process_close_session(state: Overlay, tx: TxInfo, p: SessionRef, ctx: BlockContext) -> None:
    bucket_ms = config(state).params.deal_bucket_ms
    session = require_session(state, p.session_id)
    require_host_or_merchant(session, tx.sender_address, "closing")
    require_open_session(session)
    # An auction with bids was promised to run to its end; one without may be cancelled.
    if session.open_auctions:
        raise TxFailed(
            f"session {session.id} has open auctions {list(session.open_auctions)}; they end "
            "by themselves (or cancel those without bids)",
            "auctions_open",
        )
    for deal_id in session.open_deals:
        deal = require_deal(state, deal_id)
        close_deal(state, deal, DealCloseReason.SESSION_CLOSED, ctx.time_ms, bucket_ms)
    session = require_session(state, p.session_id)
    closed = replace(session, status=SessionStatus.CLOSED, closed_ms=ctx.time_ms)
    state.set_obj(keys.session_key(session.id), closed)
    state.emit(ev.make(ev.SESSION_CLOSED, session=session.id, tips_total=session.tips_total))


def _check_tip(state: StateView, signer: bytes, p: Tip) -> Session:
    """What fails a tip before any balance moves (``process_tip`` and ``execute_tip``):
    the session it tips."""
    params = config(state).params
    session = require_session(state, p.session_id)
    require_open_session(session)
    require_text(p.message, params.tip_message_max_bytes, "tip message")
    # A tip moves tokens; zero would only add noise.
    if p.amount < 1:
        raise TxFailed(f"tip must be at least 1, got {p.amount}", "invalid_amount")
    # Tipping oneself moves nothing.
    if signer == session.host:
        raise TxFailed(f"the host {addr(signer)} cannot tip their own session", "self_dealing")
    if p.currency:
        require_currency(state, p.currency)
    return session


def _tip_event(session: Session, p: Tip) -> bytes:
    return ev.make(
        ev.TIP,
        session=session.id,
        amount=p.amount,
        host=session.host,
        message=p.message,
        **ev.in_currency(p.currency),
    )


def execute_tip(state: Overlay, tx: TxInfo, p: Tip, sender: Account, ctx: BlockContext) -> bytes:
    """A tip's whole execution (``TxType.fast_path``): what the executor's generic path
    does around ``process_tip``, in one function (a flash sale's buyers tip as they
    order: half a storm's transactions).

    ``sender`` is the sender's account before the fee. The generic path writes the
    tipper's account twice (fee and nonce, then the debit), each a new record and a
    journal entry, inside a snapshot it may revert, then checks every write; here the
    failures are ``process_tip``'s, checked first in its order, so a failed tip
    writes only the fee and nonce, as the generic path's revert leaves it, and a
    native tip writes the tipper once. Same writes in the same order, same event,
    same receipt, returned encoded (tests/apps/commerce/test_tip_fast_path.py holds
    the two paths to each other).
    """
    key, balance, nonce = after_fee(state, tx, sender)
    fee = tx.fee
    address = tx.sender_address
    amount = p.amount
    try:
        session = _check_tip(state, address, p)
        host = session.host
        if p.currency:
            # An issued currency moves between balance records: the account pays the
            # fee and nonce only, and ``move_tokens`` fails before it writes.
            state.set_obj(key, new_account(balance, nonce))
            move_tokens(state, address, host, amount, currency=p.currency)
            return encode_receipt(tx.hash, OK, "", fee, (_tip_event(session, p),))
        if balance < amount:
            raise shortfall(balance, amount)
        host_key = ACCOUNT_PREFIX + host
        held = state.get_obj(host_key, Account)
        total = amount if held is None else held.balance + amount
        if total > UINT64_MAX:
            raise supply_fault(host)
        tips = checked_add(session.tips_total, amount, "session tips")
    except TxFailed as exc:
        # The inclusion check left the fee payable and the nonce is above 0: the
        # account is never empty.
        state.set_obj(key, new_account(balance, nonce))
        return encode_receipt(tx.hash, exc.code, bound_message(exc.message), fee, ())
    state.set_obj(key, new_account(balance - amount, nonce))
    state.set_obj(host_key, new_account(total, 0 if held is None else held.nonce))
    state.set_obj(keys.session_key(session.id), replace(session, tips_total=tips))
    return encode_receipt(tx.hash, OK, "", fee, (_tip_event(session, p),))


@TX_TYPES.declare(
    TIP,
    Tip,
    "anyone but the host: tip the host of an open session",
    codes=shared(
        "commerce_disabled",
        "text_too_long",
        "unknown_session",
        "session_closed",
        "self_dealing",
        "insufficient_funds",
        "invalid_amount",
        "u64_overflow",
        "unknown_currency",
    ),
    events={ev.TIP},
    feed={ev.TIP},
    reads={P.CONFIG, KeyPrefix.CURRENCY},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, P.SESSION},
    view="SessionView",
    fast_path=execute_tip,
)
def process_tip(state: Overlay, tx: TxInfo, p: Tip, ctx: BlockContext) -> None:
    signer = tx.sender_address
    session = _check_tip(state, signer, p)
    if p.currency:
        # Tips in an issued currency move it; ``tips_total`` counts the native token.
        move_tokens(state, signer, session.host, p.amount, currency=p.currency)
    else:
        move_tokens(state, signer, session.host, p.amount)
        tips = checked_add(session.tips_total, p.amount, "session tips")
        state.set_obj(keys.session_key(session.id), replace(session, tips_total=tips))
    state.emit(_tip_event(session, p))


# --- the deal clock: find deals whose end time passed, without a range scan ---


def _unschedule_deal_end(state: Overlay, deal: Deal, bucket_ms: int) -> None:
    """Take a deal closed before its end out of its bucket, so buckets hold open deals
    only: a merchant opening and closing deals cannot grow one."""
    key = keys.deal_bucket_key(deal.end_ms // bucket_ms)
    entry = load(state, key, DealBucket)
    if entry is None or deal.id not in entry.deal_ids:
        raise NodeFault(f"open deal {deal.id} is missing from its deal-end bucket")
    ids = tuple(i for i in entry.deal_ids if i != deal.id)
    if ids:
        state.set_obj(key, DealBucket(ids))
    else:
        # The clock may still name the bucket; the hook reads its absence cheaply.
        state.delete(key)


# Deal-clock buckets read plus deals looked at, per block. A bucket holds at most
# ``max_deals_per_bucket`` open deals, but after a long pause (a halted chain) every
# bucket of a ``max_deal_ms`` window may be due at once: hundreds of thousands of deals
# closed in one block's hook, with their events. The rest waits for the next blocks;
# a deal past its end takes no order meanwhile (``deal_ended`` is read from block time).
DEAL_ENDS_PER_BLOCK = 1_024


def end_deals(state: Overlay, ctx: BlockContext) -> None:
    """Begin-block: close the open deals whose end time is at or before the block time,
    reading at most ``DEAL_ENDS_PER_BLOCK`` buckets and deals (at least one deal)."""
    clock = load(state, keys.DEAL_CLOCK_KEY, DealClock)
    if clock is None:
        return
    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    if cfg is None:
        return
    now = ctx.time_ms
    now_bucket = now // cfg.params.deal_bucket_ms
    # Buckets before next are done, none after last was scheduled. Deals end within
    # max_deal_ms (at most MAX_DEAL_BUCKETS buckets) of opening, so even after a long
    # pause the hook reads at most that many buckets, most of them absent.
    budget = DEAL_ENDS_PER_BLOCK
    bucket = clock.next
    while bucket <= min(now_bucket, clock.last) and budget > 0:
        budget -= 1
        key = keys.deal_bucket_key(bucket)
        entry = load(state, key, DealBucket)
        ids = () if entry is None else entry.deal_ids
        keep: list[int] = []
        for i, deal_id in enumerate(ids):
            # Out of budget (each block looks at one deal at least): the rest waits.
            if budget <= 0 and i > 0:
                keep.extend(ids[i:])
                break
            budget -= 1
            deal = load(state, keys.deal_key(deal_id), Deal)
            if deal is None or deal.status != DealStatus.OPEN:
                continue  # closing removes a deal from its bucket; drop a stray id all the same
            if deal.end_ms <= now:
                close_deal(state, deal, DealCloseReason.ENDED, now, 0)
            else:
                keep.append(deal_id)
        if keep:
            # What is kept ends later (only the current bucket holds such deals) or was
            # past the budget: the clock goes on from this bucket either way.
            if len(keep) != len(ids):
                state.set_obj(key, DealBucket(tuple(keep)))
            break
        if entry is not None:
            state.delete(key)
        bucket += 1
    if bucket > clock.last:
        state.delete(keys.DEAL_CLOCK_KEY)
    elif bucket != clock.next:
        state.set_obj(keys.DEAL_CLOCK_KEY, DealClock(bucket, clock.last))
