"""Live sessions, flash deals and tips; the oversubscribed flash deal in one block."""

import dataclasses
from collections import Counter

import pytest

from apps.commerce import check_invariants, feed_events, keys, register, session_of
from apps.commerce import payloads as tx
from apps.commerce.keys import CommercePrefix
from apps.commerce.model import Count, Merchant, OrderState, Role
from apps.commerce.views import deal_view, get_deal, get_listing, get_order, session_view
from consensus import register_staking
from consensus.staking_state import MODULE_ACCOUNT_NAMES
from core.keys import format_address
from tests.apps.commerce.helpers import (
    FEE,
    MIN,
    PRICE,
    Chain,
    key,
    maybe_write_vectors,
    new_chain,
    open_shop,
)
from vm import Registry, default_registry

DEAL_PRICE = 600


def open_deal(chain, shop, allocation=10, cap=2, start=None, end_in=30 * MIN, price=DEAL_PRICE):
    now = chain.time_ms + 1_000  # the block that carries it
    start = now if start is None else start
    return chain.ok(
        "merchant",
        tx.OPEN_DEAL,
        tx.OpenDeal(shop.session, shop.listing, price, allocation, cap, start, now + end_in),
    )


def test_flash_deal_with_more_buyers_than_stock_in_one_block():
    buyers = [f"buyer{i}" for i in range(40)]
    chain = Chain({n: 10**9 for n in ("registrar", "merchant", "host", *buyers)})
    shop = open_shop(chain, stock=100)
    open_deal(chain, shop, allocation=25, cap=1)
    orders = [
        chain.sign(b, tx.PLACE_ORDER, shop.order(b, deal=1, price=DEAL_PRICE)) for b in buyers
    ]
    result = chain.block(*orders, name="flash-deal-rush")
    codes = Counter(r.code for r in result.receipts)
    assert codes == {"ok": 25, "sold_out": 15}
    # First come, first served in block order.
    assert [r.code for r in result.receipts] == ["ok"] * 25 + ["sold_out"] * 15
    assert result.receipts[25].message == "deal 1 has 0 left, order asks 1"
    deal = get_deal(chain.state, 1)
    assert (deal.sold, deal.allocation) == (25, 25)
    listing = get_listing(chain.state, 1)
    assert (listing.available, listing.reserved, listing.sold) == (75, 25, 0)
    # Deal orders are accepted at once.
    assert {OrderState(get_order(chain.state, i).state) for i in range(1, 26)} == {
        OrderState.ACCEPTED
    }
    # The feed saw stock go down by one per order, for this session, with no buyer in it.
    events = [e for r in result.receipts for e in r.events]
    left = [int(e.get("left")) for e in feed_events(events, 1) if e.kind == "commerce.stock_left"]
    assert left == list(range(24, -1, -1))
    for e in feed_events(events):
        assert all(key(b).address.hex() not in str(e) for b in buyers)
    # Losers paid only their fee.
    assert all(chain.balance(b) == 10**9 - 10 for b in buyers[25:])
    assert all(chain.balance(b) == 10**9 - 10 - DEAL_PRICE for b in buyers[:25])
    # Each buyer's count in the deal rides in its party record, which the order writes
    # anyway: a storm writes no count records (at a million accounts, each key an order
    # writes costs a path of the state tree).
    assert not [k for k in chain.state if k[0] == CommercePrefix.DEAL_BUYER]
    maybe_write_vectors(chain, "flash-deal")


def test_per_buyer_cap():
    chain = new_chain()
    shop = open_shop(chain)
    open_deal(chain, shop, allocation=10, cap=2)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 1, deal=1, price=DEAL_PRICE))
    r = chain.fails(
        "alice", tx.PLACE_ORDER, shop.order("alice", 2, deal=1, price=DEAL_PRICE), "buyer_cap"
    )
    assert r.message == "deal 1 allows 2 per buyer, buyer has 1 and asks 2"
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 1, deal=1, price=DEAL_PRICE))
    chain.ok("bob", tx.PLACE_ORDER, shop.order("bob", 2, deal=1, price=DEAL_PRICE))


def test_per_buyer_cap_holds_for_a_buyer_moving_between_deals():
    # A buyer's units in its last deal are counted in its party record, in any other
    # deal in a record of their own: moving between deals moves the counts, never
    # loses one (the chain checks the invariants, each count in one place, every block).
    chain = new_chain()
    shop = open_shop(chain, stock=20)
    open_deal(chain, shop, allocation=10, cap=2)
    open_deal(chain, shop, allocation=10, cap=3)

    def order(deal, n, code="ok"):
        payload = shop.order("alice", n, deal=deal, price=DEAL_PRICE)
        if code == "ok":
            return chain.ok("alice", tx.PLACE_ORDER, payload)
        return chain.fails("alice", tx.PLACE_ORDER, payload, code)

    order(1, 1)
    order(2, 2)
    order(1, 1)
    r = order(1, 1, "buyer_cap")
    assert r.message == "deal 1 allows 2 per buyer, buyer has 2 and asks 1"
    r = order(2, 2, "buyer_cap")
    assert r.message == "deal 2 allows 3 per buyer, buyer has 2 and asks 2"
    order(2, 1)
    r = order(1, 1, "buyer_cap")
    assert r.message == "deal 1 allows 2 per buyer, buyer has 2 and asks 1"
    assert (get_deal(chain.state, 1).sold, get_deal(chain.state, 2).sold) == (2, 3)


def test_the_invariants_find_a_count_no_order_holds():
    # A stray count would refuse a buyer's orders as over the cap: the invariants look
    # at every deal for every buyer, not only where orders are.
    chain = new_chain()
    shop = open_shop(chain)
    open_deal(chain, shop, allocation=10, cap=2)
    open_deal(chain, shop, allocation=10, cap=2)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 1, deal=1, price=DEAL_PRICE))
    assert check_invariants(chain.state, chain.accounts, chain.supply) == []
    bob, alice = chain.addr("bob"), chain.addr("alice")
    chain.state[keys.deal_buyer_key(2, bob)] = Count(2).encode()
    chain.state[keys.deal_buyer_key(1, alice)] = Count(1).encode()
    # Alice's party record counts deal 1; Bob has none, so no count of his is read.
    assert sorted(check_invariants(chain.state, chain.accounts, chain.supply)) == [
        f"deal 1 buyer {alice.hex()} has a stray count of 1",
        f"deal 2 buyer {bob.hex()} has a stray count of 2",
    ]


def test_the_invariants_find_a_merchant_count_of_open_deals_off():
    chain = new_chain()
    shop = open_shop(chain)
    open_deal(chain, shop, allocation=10, cap=2)
    merchant = chain.addr("merchant")
    key = keys.merchant_key(merchant)
    chain.state[key] = dataclasses.replace(Merchant.decode(chain.state[key]), open_deals=3).encode()
    assert check_invariants(chain.state, chain.accounts, chain.supply) == [
        f"merchant {merchant.hex()} counts [3, 0] open deals and auctions, found [1, 0]"
    ]


def test_deal_checks():
    chain = new_chain()
    open_shop(chain, stock=20)
    now = chain.time_ms + 1_000
    bad = [
        ("host", tx.OpenDeal(1, 1, 500, 5, 1, now, now + MIN), "not_authorized"),
        ("merchant", tx.OpenDeal(1, 1, 0, 5, 1, now, now + MIN), "invalid_price"),
        ("merchant", tx.OpenDeal(1, 1, 500, 0, 1, now, now + MIN), "invalid_quantity"),
        ("merchant", tx.OpenDeal(1, 1, 500, 21, 1, now, now + MIN), "insufficient_stock"),
        ("merchant", tx.OpenDeal(1, 1, 500, 5, 6, now, now + MIN), "invalid_cap"),
        ("merchant", tx.OpenDeal(1, 1, 500, 5, 0, now, now + MIN), "invalid_cap"),
        ("merchant", tx.OpenDeal(1, 1, 500, 5, 1, now + MIN, now + MIN), "invalid_window"),
        ("merchant", tx.OpenDeal(1, 1, 500, 5, 1, now - MIN, now - 1), "invalid_window"),
        ("merchant", tx.OpenDeal(1, 1, 500, 5, 1, now, now + 61 * MIN), "invalid_window"),
        ("merchant", tx.OpenDeal(2, 1, 500, 5, 1, now, now + MIN), "unknown_session"),
        ("merchant", tx.OpenDeal(1, 2, 500, 5, 1, now, now + MIN), "unknown_listing"),
    ]
    for who, payload, code in bad:
        chain.fails(who, tx.OPEN_DEAL, payload, code)
        now += 1_000


def test_deal_terms_and_window():
    chain = new_chain()
    shop = open_shop(chain)
    start = chain.time_ms + 1_000 + 5 * MIN
    open_deal(chain, shop, start=start, end_in=10 * MIN)
    order = shop.order("alice", deal=1, price=DEAL_PRICE)
    chain.fails("alice", tx.PLACE_ORDER, order, "deal_not_started")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", deal=1), "deal_not_started")
    chain.wait(5 * MIN)
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", deal=1), "price_mismatch")
    chain.fails(
        "alice",
        tx.PLACE_ORDER,
        shop.order("alice", deal=1, session=7, price=DEAL_PRICE),
        "deal_mismatch",
    )
    chain.ok("alice", tx.PLACE_ORDER, order)
    assert deal_view(chain.state, 1).left == 9


def test_deal_closes_at_its_end_time_and_returns_unsold_stock():
    chain = new_chain()
    shop = open_shop(chain, stock=30)
    open_deal(chain, shop, allocation=10, end_in=10 * MIN)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2, deal=1, price=DEAL_PRICE))
    listing = get_listing(chain.state, 1)
    assert (listing.available, listing.reserved) == (20, 10)
    result = chain.wait(10 * MIN)
    (closed,) = [e for e in result.begin_events if e.kind == "commerce.deal_closed"]
    assert closed.get("session") == "1" and closed.get("reason") == "ended"
    assert (closed.get("sold"), closed.get("returned")) == ("2", "8")
    listing = get_listing(chain.state, 1)
    assert (listing.available, listing.reserved, listing.open_deals) == (28, 2, 0)
    assert session_view(chain.state, 1).deals == ()
    chain.fails(
        "alice", tx.PLACE_ORDER, shop.order("alice", deal=1, price=DEAL_PRICE), "deal_closed"
    )
    # The deal clock is empty again: nothing left in state for it.
    from apps.commerce import keys

    assert keys.DEAL_CLOCK_KEY not in chain.state


def test_close_deal_and_close_session():
    chain = new_chain()
    shop = open_shop(chain, stock=30)
    open_deal(chain, shop, allocation=10)
    open_deal(chain, shop, allocation=5)
    chain.fails("alice", tx.CLOSE_DEAL, tx.DealRef(1), "not_authorized")
    r = chain.ok("host", tx.CLOSE_DEAL, tx.DealRef(1))
    assert r.events[0].get("reason") == "closed"
    chain.fails("host", tx.CLOSE_DEAL, tx.DealRef(1), "deal_closed")
    chain.fails("merchant", tx.DELIST, tx.ListingRef(1), "listing_in_deal")
    r = chain.ok("merchant", tx.CLOSE_SESSION, tx.SessionRef(1))
    kinds = [e.kind for e in r.events]
    assert kinds == ["commerce.deal_closed", "commerce.session_closed"]
    assert all(session_of(e) == 1 for e in r.events)
    assert get_listing(chain.state, 1).available == 30
    chain.fails("host", tx.PIN, tx.PinListing(1, 1), "session_closed")
    chain.fails("alice", tx.TIP, tx.Tip(1, 5, ""), "session_closed")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice"), "session_closed")
    chain.ok("merchant", tx.DELIST, tx.ListingRef(1))
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", session=0), "listing_inactive")
    # The deal-end entries of closed deals are dropped when their bucket comes due.
    chain.wait(60 * MIN)
    from apps.commerce import keys

    assert keys.DEAL_CLOCK_KEY not in chain.state


def test_pins():
    chain = new_chain()
    open_shop(chain, pin=False)
    chain.fails("alice", tx.PIN, tx.PinListing(1, 1), "not_authorized")
    r = chain.ok("host", tx.PIN, tx.PinListing(1, 1))
    assert (r.events[0].kind, r.events[0].get("session")) == ("commerce.listing_pinned", "1")
    chain.fails("merchant", tx.PIN, tx.PinListing(1, 1), "already_pinned")
    assert [v.id for v in session_view(chain.state, 1).pinned] == [1]
    r = chain.ok("merchant", tx.UNPIN, tx.PinListing(1, 1))
    assert r.events[0].kind == "commerce.listing_unpinned"
    chain.fails("merchant", tx.UNPIN, tx.PinListing(1, 1), "not_pinned")
    # Another merchant's listing cannot be pinned here.
    chain.ok("bob", tx.REGISTER_MERCHANT, tx.RegisterMerchant("Bob", "", b"\x01" * 32))
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr("bob"), True))
    chain.ok("bob", tx.CREATE_LISTING, tx.CreateListing("Mug", "", 10, 1, b""))
    chain.fails("host", tx.PIN, tx.PinListing(1, 2), "not_authorized")


def test_session_checks():
    chain = new_chain()
    shop = open_shop(chain)
    assert shop.session == 1
    chain.fails(
        "merchant",
        tx.OPEN_SESSION,
        tx.OpenSession(chain.addr("host"), 2_001, "x"),
        "invalid_commission",
    )
    chain.fails(
        "alice", tx.OPEN_SESSION, tx.OpenSession(chain.addr("host"), 0, "x"), "missing_role"
    )
    chain.fails(
        "merchant",
        tx.OPEN_SESSION,
        tx.OpenSession(chain.addr("host"), 0, "x" * 129),
        "text_too_long",
    )


def test_a_registrar_cannot_host_a_session():
    # A host is a party to the session's orders and a registrar rules escalated disputes:
    # with the chain's only registrar as host (named without its consent), an escalated
    # order of the session could never be ruled and its escrow would stay locked.
    chain = new_chain()
    open_shop(chain)
    r = chain.fails(
        "merchant",
        tx.OPEN_SESSION,
        tx.OpenSession(chain.addr("registrar"), 0, "x"),
        "registrar_host",
    )
    assert format_address(chain.addr("registrar")) in r.message
    # An arbiter may host: another arbiter, or the registrar, rules the session's orders.
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("bob"), int(Role.ARBITER), b""))
    chain.ok("merchant", tx.OPEN_SESSION, tx.OpenSession(chain.addr("bob"), 0, "x"))


def with_staking() -> Registry:
    """The node's transaction set, commerce registered before the staking module accounts."""
    registry = default_registry()
    register(registry)
    register_staking(registry)
    return registry


@pytest.mark.parametrize(
    ("pool", "name"), MODULE_ACCOUNT_NAMES.items(), ids=MODULE_ACCOUNT_NAMES.values()
)
def test_a_module_account_cannot_host_a_session(pool, name):
    # Tips and commission are paid to the host: into a staking pool they would break its books.
    chain = new_chain(registry=with_staking())
    shop = open_shop(chain)
    merchant0 = chain.balance("merchant")
    r = chain.fails("merchant", tx.OPEN_SESSION, tx.OpenSession(pool, 0, "x"), "module_account")
    assert r.message == (
        f"host must not be a module account, got {format_address(pool)} (the {name} module account)"
    )
    assert chain.balance("merchant") == merchant0 - FEE
    assert session_view(chain.state, 2) is None
    # A host that is a plain account is still fine, and is tipped as before.
    chain.ok("merchant", tx.OPEN_SESSION, tx.OpenSession(chain.addr("bob"), 0, "x"))
    host0 = chain.balance("host")
    chain.ok("alice", tx.TIP, tx.Tip(shop.session, 250, "great show"))
    assert chain.balance("host") == host0 + 250


def test_tips_go_to_the_host():
    chain = new_chain()
    open_shop(chain)
    host0 = chain.balance("host")
    r = chain.ok("alice", tx.TIP, tx.Tip(1, 250, "great show"))
    (event,) = r.events
    assert (event.kind, event.get("session"), event.get("amount")) == ("commerce.tip", "1", "250")
    assert chain.balance("host") == host0 + 250
    assert session_view(chain.state, 1).tips_total == 250
    chain.fails("alice", tx.TIP, tx.Tip(1, 0, ""), "invalid_amount")
    chain.fails("host", tx.TIP, tx.Tip(1, 5, ""), "self_dealing")
    chain.fails("alice", tx.TIP, tx.Tip(1, 10**12, ""), "insufficient_funds")
    chain.fails("alice", tx.TIP, tx.Tip(2, 5, ""), "unknown_session")
    chain.fails("alice", tx.TIP, tx.Tip(1, 5, "x" * 141), "text_too_long")


def test_session_view_shows_open_deals_with_stock_left():
    chain = new_chain()
    shop = open_shop(chain)
    open_deal(chain, shop, allocation=4, cap=4)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 3, deal=1, price=DEAL_PRICE))
    view = session_view(chain.state, 1, now_ms=chain.time_ms)
    (deal,) = view.deals
    assert (deal.left, deal.sold, deal.live, deal.status) == (1, 3, True, "open")
    assert view.pinned[0].available == 50 - 4
    assert session_view(chain.state, 1, now_ms=chain.time_ms + 31 * MIN).deals[0].live is False
    assert session_view(chain.state, 99) is None
    # A deal order pays the deal price.
    assert get_order(chain.state, 1).amount == 3 * DEAL_PRICE != 3 * PRICE
