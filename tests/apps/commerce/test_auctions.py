"""Live auctions: one test per path (anti-snipe, sudden death, proxy wars, reserve, cancel,
pre-bids, the winner's order settled or disputed) and the adversary's bounds."""

import dataclasses
from collections import Counter

import pytest

from apps.commerce import keys
from apps.commerce import payloads as tx
from apps.commerce.auctions import bidder_tag, next_minimum
from apps.commerce.model import Auction, AuctionMode, AuctionStatus, OrderState
from apps.commerce.params import CommerceParams
from apps.commerce.sealing import open_address, seal_address
from apps.commerce.views import (
    auction_view,
    escrow_view,
    get_auction,
    get_listing,
    get_order,
    session_view,
)
from core.codec import UINT64_MAX
from tests.apps.commerce.helpers import (
    CHAIN_PARAMS,
    FEE,
    PRICE,
    REGISTRY,
    STOCK,
    TEST_PARAMS,
    TREASURY,
    Chain,
    maybe_write_vectors,
    new_chain,
    open_shop,
)
from vm import TRANSFER, Transfer

S = 1_000
TIMED, SUDDEN = int(AuctionMode.TIMED), int(AuctionMode.SUDDEN_DEATH)


def start(
    chain, start_price=10, *, reserve=0, duration=30 * S, mode=TIMED, start_ms=0, who="merchant"
):
    receipt = chain.ok(
        who, tx.START_AUCTION, tx.StartAuction(1, 1, start_price, reserve, start_ms, duration, mode)
    )
    (event,) = receipt.events
    return int(event.get("auction"))


def bid(shop, auction_id, top, address="1 Main St, Springfield"):
    ciphertext, commitment, _ = seal_address(shop.enc_public, address)
    return tx.Bid(auction_id, top, shop.enc_public, commitment, ciphertext)


def place(chain, shop, who, auction_id, top, **kw):
    return chain.ok(who, tx.BID, bid(shop, auction_id, top, **kw))


def auction(chain, auction_id=1):
    return get_auction(chain.state, auction_id)


def ended(result):
    return [e for e in result.begin_events if e.kind == "commerce.auction_ended"]


def stock(chain):
    lst = get_listing(chain.state, 1)
    return lst.available, lst.reserved, lst.sold


def test_increment_table_and_minimum():
    p = CommerceParams()
    assert [p.increment(x) for x in (0, 29, 30, 49, 50, 99, 100, 299, 300, 999)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        5,
        5,
        10,
        10,
    ]
    assert [p.increment(x) for x in (1_000, 1_999, 2_000, UINT64_MAX)] == [20, 20, 50, 50]
    a = _auction(price=0, leader=None, start_price=10)
    assert next_minimum(p, a) == 10
    # At the top of uint64 no higher bid exists: the minimum is past any amount a bid carries.
    top = _auction(price=UINT64_MAX, leader=b"l" * 20, start_price=1)
    assert next_minimum(p, top) > UINT64_MAX


def _auction(price, leader, start_price):
    return Auction(
        1, 1, 1, 1, b"m" * 20, b"h" * 20, 0, TIMED, start_price, 0, 0, 1, 2, 1, price, price,
        leader, price, 0, 0, b"", b"", b"", 0, 0,
    )  # fmt: skip


def test_timed_auction_anti_snipe_then_won_and_settled():
    chain = new_chain()
    shop = open_shop(chain, host_bps=1_000)
    alice0, bob0, merchant0, host0 = (
        chain.balance(n) for n in ("alice", "bob", "merchant", "host")
    )
    assert start(chain, 10, duration=30 * S) == 1
    a = auction(chain)
    assert (a.start_ms, a.end_ms, a.max_end_ms) == (
        chain.time_ms,
        chain.time_ms + 30 * S,
        a.end_ms + 120 * S,
    )
    assert stock(chain) == (STOCK - 1, 1, 0)
    (shown,) = session_view(chain.state, 1, chain.time_ms).auctions
    assert (shown.id, shown.live, shown.next_minimum, shown.leader) == (1, True, 10, "")

    r = place(chain, shop, "alice", 1, 10)
    (event,) = r.events
    assert event.kind == "commerce.auction_bid"
    assert event.get("amount") == "10" and event.get("leader") == bidder_tag(1, chain.addr("alice"))
    assert event.get("left_ms") == str(a.end_ms - chain.time_ms)
    # The feed names no bidder, only its tag.
    assert chain.addr("alice").hex() not in str(event)
    assert chain.balance("alice") == alice0 - FEE - 10

    # Below the next valid amount: its own code, naming the minimum.
    r = chain.fails("bob", tx.BID, bid(shop, 1, 10), "bid_too_low")
    assert r.message == "bid 10 is below the minimum 11"

    # A bid with 3 s left resets the clock to the counter-bid time (10 s).
    chain.wait(a.end_ms - chain.time_ms - 4 * S)
    r = chain.ok("bob", tx.BID, bid(shop, 1, 11))
    kinds = [e.kind for e in r.events]
    assert kinds == ["commerce.auction_bid", "commerce.auction_extended"]
    assert auction(chain).end_ms == chain.time_ms + 10 * S
    assert r.events[1].get("left_ms") == "10000"
    # Alice, outbid, was refunded in the same block.
    assert chain.balance("alice") == alice0 - FEE
    assert chain.balance("bob") == bob0 - 2 * FEE - 11  # a failed bid pays its fee too

    # The leader raising its own maximum moves no price, so it does not reset the clock.
    end_ms = auction(chain).end_ms
    r = chain.ok("bob", tx.BID, bid(shop, 1, 500), advance_ms=2 * S)
    assert [e.kind for e in r.events] == ["commerce.auction_bid"]
    assert auction(chain).end_ms == end_ms
    # The original end passed: the auction runs on to its extended end.
    chain.wait(3 * S)
    assert auction(chain).status == AuctionStatus.OPEN
    result = chain.wait(5 * S)
    (end,) = ended(result)
    assert (end.get("outcome"), end.get("price"), end.get("order")) == ("won", "11", "1")
    assert end.get("leader") == bidder_tag(1, chain.addr("bob"))
    a = auction(chain)
    assert (a.status, a.held, a.order_id) == (AuctionStatus.SOLD, 0, 1)
    assert session_view(chain.state, 1).auctions == ()

    # The winner's escrow is now an accepted order, like a deal order.
    order = get_order(chain.state, 1)
    assert (order.buyer, order.amount, order.escrow, order.quantity) == (
        chain.addr("bob"),
        11,
        11,
        1,
    )
    assert OrderState(order.state) == OrderState.ACCEPTED and order.session_id == 1
    assert escrow_view(chain.state).held == 11 and escrow_view(chain.state).open_orders == 1
    # The merchant opens the winner's address like any order's.
    assert open_address(shop.enc_private, order.sealed_address, order.address_commitment)
    assert stock(chain) == (STOCK - 1, 1, 0)

    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    r = chain.ok("bob", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    assert OrderState(get_order(chain.state, 1).state) == OrderState.COMPLETED
    fee = 11 * 200 // 10_000
    commission = (11 - fee) * 1_000 // 10_000
    assert chain.balance("bob") == bob0 - 4 * FEE - 11
    assert chain.balance("host") == host0 + commission  # the merchant started it
    assert chain.balance(TREASURY) == fee
    assert stock(chain) == (STOCK - 1, 0, 1)
    chain.ok("bob", tx.REVIEW, tx.WriteReview(1, 5, "won it"))
    maybe_write_vectors(chain, "auction-won")


def test_sudden_death_never_extends():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 10, duration=20 * S, mode=SUDDEN)
    end_ms = auction(chain).end_ms
    place(chain, shop, "alice", 1, 10)
    chain.wait(end_ms - chain.time_ms - 2 * S)
    r = place(chain, shop, "bob", 1, 11)
    assert [e.kind for e in r.events] == ["commerce.auction_bid"]
    assert auction(chain).end_ms == end_ms
    # The block at the end time ends it first (begin-block): nothing slips in.
    r = chain.run("alice", tx.BID, bid(shop, 1, 50), advance_ms=end_ms - chain.time_ms)
    assert r.code == "auction_closed", r.message
    assert auction(chain).status == AuctionStatus.SOLD
    assert get_order(chain.state, 1).buyer == chain.addr("bob")


def test_proxy_bidding_war_by_increments_ties_to_the_earlier_maximum():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 20, duration=60 * S)
    alice0, bob0, carol0 = (chain.balance(n) for n in ("alice", "bob", "carol"))
    place(chain, shop, "alice", 1, 100)  # a maximum: she leads at the start price
    assert (auction(chain).price, auction(chain).leader_max) == (20, 100)
    assert chain.balance("alice") == alice0 - FEE - 20
    # Bob bids 60: the proxy answers for Alice one increment above (60 + 3).
    r = place(chain, shop, "bob", 1, 60)
    assert r.events[0].get("amount") == "63"
    assert r.events[0].get("leader") == bidder_tag(1, chain.addr("alice"))
    assert auction(chain).leader == chain.addr("alice")
    assert chain.balance("alice") == alice0 - FEE - 63  # drawn as the proxy raised
    assert chain.balance("bob") == bob0 - FEE  # never held anything
    # Carol matches Alice's maximum: the earlier maximum wins the tie, at that amount.
    place(chain, shop, "carol", 1, 100)
    a = auction(chain)
    assert (a.leader, a.price, a.held) == (chain.addr("alice"), 100, 100)
    # Bob's 150 beats it: he leads one increment above her maximum (100 + 5).
    place(chain, shop, "bob", 1, 150)
    a = auction(chain)
    assert (a.leader, a.price) == (chain.addr("bob"), 105)
    assert chain.balance("alice") == alice0 - FEE  # refunded in the same block
    assert chain.balance("bob") == bob0 - 2 * FEE - 105
    # Alice raises to 1000: she leads at Bob's maximum plus an increment (150 + 5).
    place(chain, shop, "alice", 1, 1_000)
    assert (auction(chain).leader, auction(chain).price) == (chain.addr("alice"), 155)
    # The leader raising her own maximum moves nothing.
    place(chain, shop, "alice", 1, 2_000)
    assert (auction(chain).price, auction(chain).leader_max) == (155, 2_000)
    r = chain.fails("alice", tx.BID, bid(shop, 1, 2_000), "bid_too_low")
    # Its receipt is public: it names no figure of her maximum.
    assert "2000" not in r.message and "2001" not in r.message
    # The view shows the price, the next minimum and the leader's tag, never its maximum.
    view = auction_view(chain.state, 1, chain.time_ms)
    assert (view.price, view.next_minimum, view.leader, view.bids) == (
        155,
        160,
        bidder_tag(1, chain.addr("alice")),
        6,
    )
    assert "2000" not in str(view)
    chain.wait(60 * S)
    assert get_order(chain.state, 1).amount == 155
    assert chain.balance("carol") == carol0 - FEE


def test_a_maximum_counts_only_as_far_as_the_leaders_balance():
    chain = Chain(
        {"registrar": 10**9, "merchant": 10**9, "host": 10**9, "alice": 10**9, "bob": 10**9}
    )
    shop = open_shop(chain)
    start(chain, 10, duration=60 * S)
    place(chain, shop, "alice", 1, 10_000)
    # Alice moves all but 90 away: her maximum is worth held (10) + 90 = 100 now.
    keep = 90
    chain.ok(
        "alice", TRANSFER, Transfer(chain.addr("registrar"), chain.balance("alice") - FEE - keep)
    )
    assert chain.balance("alice") == keep
    # Bob's 80: the proxy answers with 83, drawn from what she holds.
    place(chain, shop, "bob", 1, 80)
    assert (auction(chain).leader, auction(chain).price) == (chain.addr("alice"), 83)
    assert chain.balance("alice") == 100 - 83
    # Bob's 500 beats her effective 100: he leads at 100 + 5, and she gets her 83 back.
    place(chain, shop, "bob", 1, 500)
    assert (auction(chain).leader, auction(chain).price) == (chain.addr("bob"), 105)
    assert chain.balance("alice") == 100


def test_reserve_not_met_returns_the_unit_and_the_bid():
    chain = new_chain()
    shop = open_shop(chain)
    alice0 = chain.balance("alice")
    start(chain, 10, reserve=500, duration=20 * S)
    place(chain, shop, "alice", 1, 200)
    view = auction_view(chain.state, 1)
    assert (view.price, view.reserve_met) == (10, False)
    result = chain.wait(30 * S)
    (end,) = ended(result)
    assert (end.get("outcome"), end.get("order")) == ("unsold", "0")
    assert auction(chain).status == AuctionStatus.UNSOLD
    assert chain.balance("alice") == alice0 - FEE
    assert stock(chain) == (STOCK, 0, 0)
    assert escrow_view(chain.state).held == 0


def test_a_maximum_that_meets_the_reserve_pays_the_reserve():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 10, reserve=500, duration=20 * S)
    place(chain, shop, "alice", 1, 600)
    assert auction(chain).price == 500
    assert auction_view(chain.state, 1).reserve_met
    chain.wait(30 * S)
    assert get_order(chain.state, 1).amount == 500


def test_no_bid_returns_the_unit_to_stock():
    chain = new_chain()
    open_shop(chain)
    start(chain, 10, duration=10 * S)
    assert stock(chain) == (STOCK - 1, 1, 0)
    (end,) = ended(chain.wait(10 * S))
    assert (end.get("outcome"), end.get("bids"), end.get("leader")) == ("unsold", "0", "")
    assert stock(chain) == (STOCK, 0, 0)


def test_winner_disputes_and_an_arbiter_rules():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 100, duration=10 * S)
    place(chain, shop, "alice", 1, 100)
    chain.wait(10 * S)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("arbiter"), 2, b""))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    alice = chain.balance("alice")
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(1, "never arrived"))
    chain.ok("arbiter", tx.RULE, tx.Rule(1, 10_000))
    assert OrderState(get_order(chain.state, 1).state) == OrderState.RESOLVED
    assert chain.balance("alice") == alice - FEE + 100


def test_cancel_only_without_bids_and_session_closes_after_auctions():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 10)
    r = chain.fails("host", tx.CLOSE_SESSION, tx.SessionRef(1), "auctions_open")
    assert "open auctions [1]" in r.message
    chain.fails("stranger", tx.CANCEL_AUCTION, tx.AuctionRef(1), "not_authorized")
    r = chain.ok("merchant", tx.CANCEL_AUCTION, tx.AuctionRef(1))
    assert r.events[0].get("outcome") == "cancelled"
    assert stock(chain) == (STOCK, 0, 0)
    chain.fails("merchant", tx.CANCEL_AUCTION, tx.AuctionRef(1), "auction_closed")
    chain.fails("alice", tx.BID, bid(shop, 1, 10), "auction_closed")
    start(chain, 10)
    place(chain, shop, "alice", 1 + 1, 10)
    r = chain.fails("merchant", tx.CANCEL_AUCTION, tx.AuctionRef(2), "auction_has_bids")
    assert r.message == "auction 2 has 1 bids, it can no longer be cancelled"
    chain.wait(30 * S)
    chain.ok("host", tx.CLOSE_SESSION, tx.SessionRef(1))


def test_seller_and_host_cannot_bid():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 10)
    for who in ("merchant", "host"):
        r = chain.fails(who, tx.BID, bid(shop, 1, 10), "self_dealing")
        assert "cannot bid" in r.message


def test_a_registrar_cannot_bid():
    # The winner's bid becomes its order: a registrar, who rules escalated disputes, may
    # not be a party to one (tests/apps/commerce/test_orders.py, test_a_registrar_cannot_buy).
    chain = new_chain()
    shop = open_shop(chain)
    aid = start(chain)
    chain.fails("registrar", tx.BID, bid(shop, aid, 100), "registrar_party")
    assert auction(chain, aid).leader is None


def test_pre_bids_before_the_start_and_no_extension_before_it():
    chain = new_chain()
    shop = open_shop(chain)
    begin = chain.time_ms + 60 * S
    start(chain, 10, start_ms=begin, duration=10 * S)
    a = auction(chain)
    assert (a.start_ms, a.end_ms) == (begin, begin + 10 * S)
    assert not auction_view(chain.state, 1, chain.time_ms).live
    place(chain, shop, "alice", 1, 40)
    place(chain, shop, "bob", 1, 25)
    a = auction(chain)
    assert (a.leader, a.price, a.end_ms) == (chain.addr("alice"), 26, begin + 10 * S)
    chain.wait(begin + 10 * S - chain.time_ms)
    assert get_order(chain.state, 1).amount == 26


def test_start_checks():
    chain = new_chain()
    open_shop(chain)
    now = chain.time_ms + 1_000

    def refused(code, who="merchant", **kw):
        args = {"start_price": 10, "reserve": 0, "start_ms": 0, "duration_ms": 30 * S, "mode": 1}
        args.update(kw)
        p = tx.StartAuction(1, 1, **args)
        return chain.fails(who, tx.START_AUCTION, p, code)

    refused("not_authorized", who="alice")
    refused("invalid_price", start_price=0)
    refused("invalid_reserve", reserve=5)
    refused("invalid_mode", mode=3)
    refused("invalid_schedule", start_ms=now - 10 * S)
    r = refused("invalid_schedule", start_ms=UINT64_MAX)
    assert "the maximum is 3600000" in r.message
    refused("invalid_schedule", duration_ms=4 * S)
    refused("invalid_schedule", duration_ms=301 * S)
    for _ in range(TEST_PARAMS.max_open_auctions):
        start(chain, 10)
    refused("too_many_auctions")


def test_anti_snipe_stops_at_its_cap():
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 10, duration=10 * S)
    max_end = auction(chain).max_end_ms
    price, bidders = 10, ("alice", "bob")
    n = 0
    # Two accounts outbidding each other every 5 s keep the clock at 10 s left...
    while chain.time_ms + 5 * S < max_end:
        who = bidders[n % 2]
        chain.ok(who, tx.BID, bid(shop, 1, price), advance_ms=5 * S)
        price += TEST_PARAMS.increment(price)
        n += 1
    # ...until the scheduled end plus auction_max_extension_ms: then it ends.
    assert auction(chain).end_ms == max_end
    chain.wait(max_end - chain.time_ms)
    assert auction(chain).status == AuctionStatus.SOLD


# How far back a producer can date its block (docs/consensus.md, Bounds): about a block
# interval and timeout_propose alone (3.5 s at a node's defaults); producers of
# consecutive heights, up to D + P between them (10.5 s).
_ONE_PRODUCER_MS = 3_500
_BLOCK_INTERVAL_MS = 500
_NEIGHBOURS_MS = CHAIN_PARAMS.time_message_delay_ms + CHAIN_PARAMS.time_precision_ms


@pytest.mark.parametrize(
    ("dated_back_ms", "code", "winner"),
    [(_ONE_PRODUCER_MS, "ok", "bob"), (_NEIGHBOURS_MS, "auction_closed", "carol")],
    ids=["one-producer", "neighbour-producers"],
)
def test_a_snipe_dated_back_leaves_rivals_the_counter_less_what_it_was_dated_back(
    dated_back_ms, code, winner
):
    # The documented limit of anti-snipe (docs/commerce.md, What members are trusted
    # with): its clock counts from the sniping block's time, which its producer chose.
    # A rival who answers once that block is final has the counter less how far back
    # the block was dated; at the defaults (10 s against D + P = 10.5 s), nothing.
    assert TEST_PARAMS.auction_counter_ms == CommerceParams().auction_counter_ms
    chain = new_chain()
    shop = open_shop(chain)
    start(chain, 10, duration=30 * S)
    end_ms = auction(chain).end_ms
    place(chain, shop, "alice", 1, 10)
    # The producer's block: 1 ms before the end, carol's bid in, its rivals' left out.
    chain.ok("carol", tx.BID, bid(shop, 1, 20), advance_ms=end_ms - 1 - chain.time_ms)
    assert auction(chain).end_ms == end_ms - 1 + TEST_PARAMS.auction_counter_ms
    # The next block, an honest one, is dated by its producer's clock: what the snipe
    # was dated back, and a block interval. Bob's answer is in it.
    r = chain.run("bob", tx.BID, bid(shop, 1, 50), advance_ms=dated_back_ms + _BLOCK_INTERVAL_MS)
    assert r.code == code, r.message
    chain.wait(TEST_PARAMS.auction_max_extension_ms)
    assert get_order(chain.state, 1).buyer == chain.addr(winner)


def test_state_per_auction_does_not_grow_with_bidders():
    bidders = [f"bidder{i}" for i in range(60)]
    chain = Chain({n: 10**9 for n in ("registrar", "merchant", "host", *bidders)})
    shop = open_shop(chain)
    start(chain, 10, duration=60 * S)
    size = None
    top = 10
    for i, who in enumerate(bidders):
        top += 60
        result = chain.block(chain.sign(who, tx.BID, bid(shop, 1, top)))
        assert result.receipts[0].ok
        if i == 1:
            size = len(chain.state[keys.auction_key(1)])
    # One leader, its maximum, the price and its address: after 60 bidders the record has
    # grown only by the width of its integers (price, held, maximum, bid count).
    assert len(chain.state[keys.auction_key(1)]) <= size + 4 * 4
    assert escrow_view(chain.state).held == auction(chain).price


def test_many_bidders_in_one_block_refund_every_outbid_bidder():
    bidders = [f"bidder{i}" for i in range(40)]
    chain = Chain({n: 10**9 for n in ("registrar", "merchant", "host", *bidders)})
    shop = open_shop(chain)
    start(chain, 10, duration=60 * S)
    txs = [chain.sign(b, tx.BID, bid(shop, 1, 10 + 10 * i)) for i, b in enumerate(bidders)]
    result = chain.block(*txs, name="auction-rush")
    assert Counter(r.code for r in result.receipts) == {"ok": 40}
    leader = auction(chain)
    assert leader.leader == chain.addr(bidders[-1])
    assert all(chain.balance(b) == 10**9 - FEE for b in bidders[:-1])
    assert chain.balance(bidders[-1]) == 10**9 - FEE - leader.price
    maybe_write_vectors(chain, "auction-rush")


def test_auction_ends_per_block_are_bounded_and_carry_over():
    params = dataclasses.replace(TEST_PARAMS, max_auction_ends_per_block=3)
    chain = new_chain(params=params)
    shop = open_shop(chain, stock=20)
    for session in (2, 3):
        chain.ok("merchant", tx.OPEN_SESSION, tx.OpenSession(chain.addr("host"), 0, f"s{session}"))
    # Six auctions started in one block end together, in one bucket.
    starts = [
        chain.sign("merchant", tx.START_AUCTION, tx.StartAuction(s, 1, 10, 0, 0, 30 * S, TIMED))
        for s in (1, 2, 3)
        for _ in range(2)
    ]
    result = chain.block(*starts)
    ids = [int(r.events[0].get("auction")) for r in result.receipts]
    chain.block(*(chain.sign("alice", tx.BID, bid(shop, i, 10)) for i in ids))
    # The hook reads the bucket and two records per block (a budget of 3).
    result = chain.wait(60 * S)
    assert len(ended(result)) == 2
    # Meanwhile an auction past its end takes no bid, though it has not ended yet.
    late = [i for i in ids if auction(chain, i).status == AuctionStatus.OPEN]
    assert len(late) == 4
    result = chain.block(chain.sign("bob", tx.BID, bid(shop, late[-1], 100)))
    assert result.receipts[0].code == "auction_ended"
    assert len(ended(result)) == 2
    assert len(ended(chain.wait(S))) == 2
    assert all(auction(chain, i).status == AuctionStatus.SOLD for i in ids)
    assert [get_order(chain.state, o).amount for o in range(1, 7)] == [10] * 6


def test_one_merchant_holds_at_most_its_open_auctions_across_sessions():
    """Sessions are not bounded: without a per-merchant count, one merchant could open
    sessions until the auction-end buckets every merchant shares were full."""
    params = dataclasses.replace(TEST_PARAMS, max_open_auctions_per_merchant=2)
    chain = new_chain(params=params)
    shop = open_shop(chain, stock=20)
    chain.ok("merchant", tx.OPEN_SESSION, tx.OpenSession(chain.addr("host"), 0, "second"))
    first = start(chain, 10)
    p = tx.StartAuction(2, 1, 10, 0, 0, 60 * S, TIMED)
    second = int(chain.ok("merchant", tx.START_AUCTION, p).events[0].get("auction"))
    r = chain.fails("merchant", tx.START_AUCTION, p, "merchant_auction_limit")
    assert r.message.endswith("has 2 open auctions, the maximum is 2")
    # The host's start counts against the session's merchant too.
    at_price = tx.StartAuction(2, 1, 10, PRICE, 0, 60 * S, TIMED)
    chain.fails("host", tx.START_AUCTION, at_price, "merchant_auction_limit")
    # A cancelled auction leaves the count...
    chain.ok("merchant", tx.CANCEL_AUCTION, tx.AuctionRef(first))
    third = int(chain.ok("merchant", tx.START_AUCTION, p).events[0].get("auction"))
    chain.fails("merchant", tx.START_AUCTION, p, "merchant_auction_limit")
    # ...and so does one that ends, sold or not.
    place(chain, shop, "alice", second, 10)
    assert [e.get("auction") for e in ended(chain.wait(60 * S))] == [str(second), str(third)]
    assert auction(chain, second).status == AuctionStatus.SOLD
    for _ in range(2):
        chain.ok("merchant", tx.START_AUCTION, p)
    chain.fails("merchant", tx.START_AUCTION, p, "merchant_auction_limit")


def test_bid_address_checks_and_a_full_end_bucket():
    params = dataclasses.replace(TEST_PARAMS, max_auctions_per_bucket=1)
    chain = new_chain(params=params)
    shop = open_shop(chain)
    p = tx.StartAuction(1, 1, 10, 0, 0, 30 * S, TIMED)
    at_price = tx.StartAuction(1, 1, 10, PRICE, 0, 30 * S, TIMED)
    result = chain.block(
        chain.sign("host", tx.START_AUCTION, at_price), chain.sign("merchant", tx.START_AUCTION, p)
    )
    assert [r.code for r in result.receipts] == ["ok", "auction_bucket_full"]
    assert "choose another duration" in result.receipts[1].message
    good = bid(shop, 1, 10)
    chain.fails(
        "alice",
        tx.BID,
        tx.Bid(1, 10, b"\x01" * 32, good.address_commitment, good.sealed_address),
        "stale_key",
    )
    chain.fails(
        "alice",
        tx.BID,
        tx.Bid(1, 10, shop.enc_public, good.address_commitment, b"\x00" * 8),
        "invalid_sealed_address",
    )
    chain.fails("alice", tx.BID, bid(shop, 9, 10), "unknown_auction")


@pytest.mark.parametrize("top", [1_001, 10**15])
def test_a_failed_bid_above_the_leaders_maximum_says_nothing_of_it(top):
    """A bid above the leader's maximum that the bidder cannot pay fails naming only its
    own maximum and the bidder's balance: the hold it would have taken (one increment
    above the leader's maximum) would tell anyone with fees the secret maximum, which a
    seller's second account could then bid exactly (found by a review, session 38)."""
    chain = Chain(
        {"registrar": 10**9, "merchant": 10**9, "host": 10**9, "alice": 10**9, "mallory": 5 * FEE}
    )
    shop = open_shop(chain)
    start(chain, 10, duration=60 * S)
    place(chain, shop, "alice", 1, 777)
    r = chain.fails("mallory", tx.BID, bid(shop, 1, top), "insufficient_funds")
    assert r.message == f"bid {top} is over the balance {chain.balance('mallory')}"
    assert "777" not in r.message and "787" not in r.message


@pytest.mark.parametrize("top", [500, 777])
def test_a_leader_bid_that_does_not_raise_its_maximum_fails_without_naming_it(top):
    """Receipts are public (GET /v1/txs/{hash} of any bid a block holds), so the leader's
    own failed raise must not tell its maximum, nor a bound on it: a seller's second
    account would bid exactly up to it and make the winner pay it all."""
    chain = Chain({"registrar": 10**9, "merchant": 10**9, "host": 10**9, "alice": 10**9})
    shop = open_shop(chain)
    start(chain, 10, duration=60 * S)
    place(chain, shop, "alice", 1, 777)
    r = chain.fails("alice", tx.BID, bid(shop, 1, top), "bid_too_low")
    assert r.message == "the leader's new maximum must be above its current one"
    assert (auction(chain).leader_max, auction(chain).price) == (777, 10)


def test_only_a_bids_outcome_is_private_to_simulation():
    private = [t.name for t in REGISTRY.declarations if t.private_outcome]
    assert private == [tx.BID]


def test_a_bid_the_proxy_answers_must_be_one_the_bidder_could_pay():
    """A rival's maximum below the leader's costs the rival nothing when the proxy answers
    it, so it must be one the rival could pay: else an account holding only fees would
    push the leader to its maximum (and probe it) at no risk."""
    chain = Chain(
        {"registrar": 10**9, "merchant": 10**9, "host": 10**9, "alice": 10**9, "mallory": 5 * FEE}
    )
    shop = open_shop(chain)
    start(chain, 10, duration=60 * S)
    place(chain, shop, "alice", 1, 1_000)
    alice = chain.balance("alice")
    r = chain.fails("mallory", tx.BID, bid(shop, 1, 999), "insufficient_funds")
    assert "999" in r.message
    a = auction(chain)
    assert (a.leader, a.price, a.held) == (chain.addr("alice"), 10, 10)
    assert chain.balance("alice") == alice
    # What the rival holds is what it may push the leader to: 30 here, answered with 32.
    chain.ok("registrar", TRANSFER, Transfer(chain.addr("mallory"), 30))
    place(chain, shop, "mallory", 1, 30)
    assert (auction(chain).leader, auction(chain).price) == (chain.addr("alice"), 32)


def test_a_host_auctions_the_merchants_stock_no_cheaper_than_its_price():
    """The host runs the show, but the floor under the merchant's stock is the
    merchant's: a host's auction starting at 1 with no reserve sold a 1,000 listing for
    1 (a deal, which spends stock at the merchant's price, only the merchant opens)."""
    chain = new_chain()
    shop = open_shop(chain)
    cheap = tx.StartAuction(1, 1, 1, 0, 0, 30 * S, TIMED)
    r = chain.fails("host", tx.START_AUCTION, cheap, "below_listing_price")
    assert r.message == (
        "a host's auction sells at no less than listing 1's price 1000, its floor "
        "(reserve, else start price) is 1"
    )
    # A reserve just below the price is refused too; at the price, the host may start low.
    under = tx.StartAuction(1, 1, 1, PRICE - 1, 0, 30 * S, TIMED)
    chain.fails("host", tx.START_AUCTION, under, "below_listing_price")
    host_aid = start(chain, 1, reserve=PRICE, who="host")
    # So may a start at the price with no reserve.
    start(chain, PRICE, who="host")
    # The merchant sets any floor for its own stock.
    merchant_aid = start(chain, 1)
    place(chain, shop, "alice", host_aid, PRICE - 1)
    place(chain, shop, "bob", merchant_aid, 1)
    outcomes = {e.get("auction"): e.get("outcome") for e in ended(chain.wait(30 * S))}
    # Below the host's reserve nothing sells; the merchant's sells at 1.
    assert outcomes[str(host_aid)] != "won" and outcomes[str(merchant_aid)] == "won"
    assert get_order(chain.state, 1).amount == 1
