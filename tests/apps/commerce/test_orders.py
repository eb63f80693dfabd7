"""Order lifecycle scenarios: one test per path through the order state machine."""

import pytest

from apps.commerce import payloads as tx
from apps.commerce.model import OrderState
from apps.commerce.sealing import open_address
from apps.commerce.views import get_listing, get_order, order_view
from core.keys import format_address
from tests.apps.commerce.helpers import (
    MIN,
    PRICE,
    STOCK,
    TREASURY,
    enc_keys,
    item,
    maybe_write_vectors,
    new_chain,
    open_shop,
)


def state_of(chain, order_id=1):
    return OrderState(get_order(chain.state, order_id).state)


def stock(chain, listing_id=1):
    lst = get_listing(chain.state, listing_id)
    return lst.available, lst.reserved, lst.sold


def test_happy_path_pays_merchant_host_and_treasury():
    chain = new_chain()
    shop = open_shop(chain, host_bps=1_000)
    alice0, merchant0, host0 = (chain.balance(n) for n in ("alice", "merchant", "host"))
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("maker"), 4, b""))
    chain.ok(
        "maker", tx.REGISTER_ITEM, tx.RegisterItem(item("A1"), "pot", "urn:plant:1", chain.time_ms)
    )
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(item("A1"), chain.addr("merchant")))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(item("A1")))

    receipt = chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2))
    placed = receipt.events[0]
    assert placed.kind == "commerce.order_placed" and placed.get("session") == "1"
    # The feed event names no buyer.
    assert chain.addr("alice").hex() not in str(placed)
    assert chain.balance("alice") == alice0 - 2 * PRICE - 10
    assert stock(chain) == (STOCK - 2, 2, 0)
    assert state_of(chain) == OrderState.PLACED

    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    assert state_of(chain) == OrderState.ACCEPTED
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, (item("A1"),)))
    assert state_of(chain) == OrderState.SHIPPED
    assert stock(chain) == (STOCK - 2, 0, 2)
    receipt = chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    assert state_of(chain) == OrderState.COMPLETED

    amount = 2 * PRICE
    fee = amount * 200 // 10_000
    commission = amount * 1_000 // 10_000
    payout = next(e for e in receipt.events if e.kind == "commerce.payout")
    assert payout.get("fee") == str(fee) and payout.get("host") == str(commission)
    assert chain.balance(TREASURY) == fee
    assert chain.balance("host") == host0 + commission
    # Fees of the merchant's three txs since: accept custody, accept, ship.
    assert chain.balance("merchant") == merchant0 + amount - fee - commission - 3 * 10
    # The item passed to the buyer with the settlement, in its history.
    from apps.commerce.views import item_view

    view = item_view(chain.state, item("A1").gtin, "A1")
    assert view.custodian == chain.addr("alice") and view.order_id == 0
    assert view.history[-1].biz_step == "retail_selling"
    assert view.history[-1].destination == chain.addr("alice")
    maybe_write_vectors(chain, "happy-path")


def test_cancel_before_acceptance_refunds_and_restocks():
    chain = new_chain()
    shop = open_shop(chain)
    alice0 = chain.balance("alice")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 3))
    chain.fails("bob", tx.CANCEL_ORDER, tx.OrderRef(1), "not_authorized")
    chain.fails("merchant", tx.CANCEL_ORDER, tx.OrderRef(1), "not_authorized")
    chain.ok("alice", tx.CANCEL_ORDER, tx.OrderRef(1))
    assert state_of(chain) == OrderState.CANCELLED
    assert chain.balance("alice") == alice0 - 2 * 10
    assert stock(chain) == (STOCK, 0, 0)
    # Terminal: nothing moves it any more.
    chain.fails("alice", tx.CANCEL_ORDER, tx.OrderRef(1), "bad_state")
    chain.fails("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1), "bad_state")
    chain.fails("merchant", tx.REFUND, tx.Refund(1, 1), "bad_state")


def test_refusing_a_stranger_never_names_the_orders_buyer():
    """Receipts are public and simulations free: a stranger's cancel, confirmation or
    review of someone's order is refused without the buyer's address in the message."""
    chain = new_chain()
    shop = open_shop(chain)
    buyer = chain.addr("alice")
    named = (format_address(buyer), buyer.hex())
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    refused = [chain.fails("bob", tx.CANCEL_ORDER, tx.OrderRef(1), "not_authorized")]
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    refused.append(chain.fails("bob", tx.CONFIRM_DELIVERY, tx.OrderRef(1), "not_authorized"))
    chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    refused.append(chain.fails("bob", tx.REVIEW, tx.WriteReview(1, 5, "great"), "not_authorized"))
    for receipt in refused:
        # The signer is named (it is the envelope's sender anyway); the buyer is not.
        assert format_address(chain.addr("bob")) in receipt.message
        assert not any(form in receipt.message for form in named), receipt.message


def test_cancel_after_acceptance_is_refused():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    r = chain.fails("alice", tx.CANCEL_ORDER, tx.OrderRef(1), "bad_state")
    assert r.message == "order 1 is accepted, expected placed"


def test_decline_refunds_and_restocks():
    chain = new_chain()
    shop = open_shop(chain)
    alice0 = chain.balance("alice")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2))
    chain.fails("alice", tx.DECLINE_ORDER, tx.OrderRef(1), "not_authorized")
    chain.ok("merchant", tx.DECLINE_ORDER, tx.OrderRef(1))
    assert state_of(chain) == OrderState.DECLINED
    assert chain.balance("alice") == alice0 - 2 * 10
    assert stock(chain) == (STOCK, 0, 0)


def test_not_accepted_in_time_is_refunded():
    chain = new_chain()
    shop = open_shop(chain)
    alice0 = chain.balance("alice")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2))
    chain.wait(10 * MIN - 1)  # one ms before the deadline: nothing happens
    assert state_of(chain) == OrderState.PLACED
    result = chain.wait(1)
    assert state_of(chain) == OrderState.EXPIRED
    kinds = [e.kind for e in result.begin_events]
    assert "commerce.order_state" in kinds and "commerce.order_refund" in kinds
    assert chain.balance("alice") == alice0 - 10
    assert stock(chain) == (STOCK, 0, 0)
    chain.fails("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1), "bad_state")


def test_not_shipped_in_time_is_refunded():
    chain = new_chain()
    shop = open_shop(chain)
    alice0 = chain.balance("alice")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.wait(20 * MIN)
    assert state_of(chain) == OrderState.EXPIRED
    assert chain.balance("alice") == alice0 - 10
    assert stock(chain) == (STOCK, 0, 0)


def test_not_confirmed_in_time_is_released_to_the_merchant():
    chain = new_chain()
    shop = open_shop(chain, host_bps=0)
    merchant0 = chain.balance("merchant")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x02" * 32, ()))
    chain.wait(30 * MIN)
    assert state_of(chain) == OrderState.COMPLETED
    fee = PRICE * 200 // 10_000
    assert chain.balance("merchant") == merchant0 + PRICE - fee - 2 * 10
    assert chain.balance(TREASURY) == fee
    chain.fails("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1), "bad_state")


def _shipped(chain, shop, buyer="alice", quantity=1):
    chain.ok(buyer, tx.PLACE_ORDER, shop.order(buyer, quantity))
    order_id = chain.vectors[-1].receipts[0].events[0].get("order")
    order_id = int(order_id)
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(order_id))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(order_id, b"\x03" * 32, ()))
    return order_id


@pytest.mark.parametrize("buyer_bps", [0, 2_500, 10_000])
def test_dispute_ruled_by_an_arbiter(buyer_bps):
    chain = new_chain()
    shop = open_shop(chain, host_bps=1_000)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("arbiter"), 2, b""))
    oid = _shipped(chain, shop, quantity=4)
    alice0, merchant0, host0 = (chain.balance(n) for n in ("alice", "merchant", "host"))
    chain.fails("stranger", tx.OPEN_DISPUTE, tx.OpenDispute(oid, "?"), "not_authorized")
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(oid, "arrived cracked"))
    assert state_of(chain) == OrderState.DISPUTED
    # Confirming is no longer possible, and the confirm deadline no longer applies.
    chain.fails("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(oid), "bad_state")
    r = chain.fails("stranger", tx.RULE, tx.Rule(oid, 5_000), "missing_role")
    assert "requires role arbiter" in r.message
    chain.fails("arbiter", tx.RULE, tx.Rule(oid, 10_001), "invalid_split")
    chain.ok("arbiter", tx.RULE, tx.Rule(oid, buyer_bps))
    assert state_of(chain) == OrderState.RESOLVED
    amount = 4 * PRICE
    to_buyer = amount * buyer_bps // 10_000
    seller = amount - to_buyer
    fee, commission = seller * 200 // 10_000, seller * 1_000 // 10_000
    assert chain.balance("alice") == alice0 + to_buyer - 2 * 10
    assert chain.balance("merchant") == merchant0 + seller - fee - commission
    assert chain.balance("host") == host0 + commission
    assert chain.balance(TREASURY) == fee
    view = order_view(chain.state, oid, chain.addr("arbiter"))
    assert view.dispute.buyer_bps == buyer_bps and view.dispute.ruled_by == chain.addr("arbiter")
    assert view.sealed_address is None  # arbiters never see the sealed address


def test_arbiter_may_not_rule_own_order():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("bob"), 2, b""))
    oid = _shipped(chain, shop, buyer="bob")
    chain.ok("merchant", tx.OPEN_DISPUTE, tx.OpenDispute(oid, "buyer claims non-delivery"))
    chain.fails("bob", tx.RULE, tx.Rule(oid, 10_000), "conflict")


def test_no_ruling_in_time_escalates_to_a_registrar():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("arbiter"), 2, b""))
    oid = _shipped(chain, shop)
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(oid, "wrong colour"))
    result = chain.wait(15 * MIN)
    assert state_of(chain) == OrderState.ESCALATED
    assert any(e.get("state") == "escalated" for e in result.begin_events)
    # Escalated orders have no further deadline: they wait for governance.
    chain.wait(24 * 60 * MIN)
    assert state_of(chain) == OrderState.ESCALATED
    r = chain.fails("arbiter", tx.RULE, tx.Rule(oid, 5_000), "missing_role")
    assert "requires role registrar" in r.message
    chain.ok("registrar", tx.RULE, tx.Rule(oid, 5_000))
    assert state_of(chain) == OrderState.RESOLVED


def test_a_registrar_cannot_buy():
    # Only a registrar rules an escalated dispute, which has no deadline, and a party may
    # not rule its own order. The chain's only registrar as the buyer (a localnet's
    # faucet is it) could receive the goods, dispute, let the ruling deadline pass, and
    # hold the merchant's payment until the merchant refunded it all: nobody could
    # rule the order. So no registrar may be a party to an order.
    chain = new_chain()
    shop = open_shop(chain)
    r = chain.fails("registrar", tx.PLACE_ORDER, shop.order("registrar"), "registrar_party")
    assert "registrar" in r.message and "rules escalated disputes" in r.message
    # Nor in a deal, which the merchant cannot decline.
    now = chain.time_ms + 1_000
    chain.ok("merchant", tx.OPEN_DEAL, tx.OpenDeal(1, 1, 900, 5, 1, now, now + 10 * MIN))
    deal = shop.order("registrar", deal=1, price=900)
    chain.fails("registrar", tx.PLACE_ORDER, deal, "registrar_party")


def test_dispute_window_closes():
    chain = new_chain()
    shop = open_shop(chain)
    oid = _shipped(chain, shop)
    chain.wait(20 * MIN)  # dispute window is 20 min, confirm window 30 min
    chain.fails("alice", tx.OPEN_DISPUTE, tx.OpenDispute(oid, "late"), "window_closed")
    chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(oid))


def test_dispute_needs_a_shipped_order():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.fails("alice", tx.OPEN_DISPUTE, tx.OpenDispute(1, "x"), "bad_state")


def test_partial_refunds_then_release_of_the_rest():
    chain = new_chain()
    shop = open_shop(chain, host_bps=0)
    alice0, merchant0 = chain.balance("alice"), chain.balance("merchant")
    oid = _shipped(chain, shop, quantity=2)
    chain.fails("alice", tx.REFUND, tx.Refund(oid, 100), "not_authorized")
    chain.fails("merchant", tx.REFUND, tx.Refund(oid, 0), "invalid_amount")
    chain.fails("merchant", tx.REFUND, tx.Refund(oid, 2 * PRICE + 1), "invalid_amount")
    chain.ok("merchant", tx.REFUND, tx.Refund(oid, 300))
    chain.ok("merchant", tx.REFUND, tx.Refund(oid, 200))
    order = get_order(chain.state, oid)
    assert (order.escrow, order.refunded, OrderState(order.state)) == (
        1_500,
        500,
        OrderState.SHIPPED,
    )
    chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(oid))
    fee = 1_500 * 200 // 10_000
    assert chain.balance("alice") == alice0 - 2 * PRICE + 500 - 3 * 10
    merchant_fees = 6 * 10  # accept, ship, 2 failed refunds, 2 refunds
    assert chain.balance("merchant") == merchant0 + 1_500 - fee - merchant_fees


def test_full_refund_ends_the_order():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 2 * PRICE))
    assert state_of(chain) == OrderState.REFUNDED
    # Not shipped: the stock is available again.
    assert stock(chain) == (STOCK, 0, 0)


def test_refund_after_shipping_keeps_the_stock_sold():
    chain = new_chain()
    shop = open_shop(chain)
    oid = _shipped(chain, shop, quantity=2)
    chain.ok("merchant", tx.REFUND, tx.Refund(oid, 2 * PRICE))
    assert state_of(chain, oid) == OrderState.REFUNDED
    assert stock(chain) == (STOCK - 2, 0, 2)


def test_order_checks():
    chain = new_chain()
    shop = open_shop(chain)
    chain.fails("merchant", tx.PLACE_ORDER, shop.order("merchant"), "self_dealing")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", 0), "invalid_quantity")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", 101), "invalid_quantity")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", STOCK + 1), "insufficient_stock")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", price=PRICE - 1), "price_mismatch")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", version=2), "stale_version")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", listing=9), "unknown_listing")
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", session=9), "unknown_session")
    poor = new_chain(balance=1_000)
    poor_shop = open_shop(poor)
    r = poor.fails("alice", tx.PLACE_ORDER, poor_shop.order("alice"), "insufficient_funds")
    assert r.message == "balance 990 is less than the amount 1000"
    # A listing that is not pinned cannot be bought through the session (no commission).
    chain.ok("host", tx.UNPIN, tx.PinListing(1, 1))
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice"), "not_pinned")
    # Without a session it can.
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", session=0))
    assert get_order(chain.state, 1).host is None


def test_order_pins_the_listing_version():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok(
        "merchant", tx.UPDATE_LISTING, tx.UpdateListing(1, 1, "Tea pot", "now blue", 1_200, b"")
    )
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice"), "stale_version")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", version=2, price=1_200))
    assert get_order(chain.state, 1).listing_version == 2


def test_stale_merchant_key_is_refused():
    chain = new_chain()
    shop = open_shop(chain)
    _, new_public = enc_keys("rotated")
    chain.ok("merchant", tx.UPDATE_MERCHANT, tx.UpdateMerchant("Acme", "", new_public))
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice"), "stale_key")


def test_only_the_merchant_can_read_the_sealed_address():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", address="42 Rue des Lilas, Lyon"))
    view = order_view(chain.state, 1, chain.addr("merchant"))
    text = open_address(shop.enc_private, view.sealed_address, view.address_commitment)
    assert text == "42 Rue des Lilas, Lyon"
    # The chain's state never holds the address in clear.
    assert not any(b"Lilas" in v for v in chain.state.values())


def test_deadline_passed_is_refused_before_the_hook_runs():
    # With a budget of one deadline per block, the second due order waits a block.
    from dataclasses import replace

    from tests.apps.commerce.helpers import TEST_PARAMS

    chain = new_chain(params=replace(TEST_PARAMS, max_deadlines_per_block=1))
    shop = open_shop(chain)
    chain.block(*(chain.sign(b, tx.PLACE_ORDER, shop.order(b)) for b in ("alice", "bob", "carol")))
    chain.wait(10 * MIN)
    states = [state_of(chain, i) for i in (1, 2, 3)]
    assert states == [OrderState.EXPIRED, OrderState.PLACED, OrderState.PLACED]
    # Next block: the hook expires order 2; order 3 is past due but still waits its turn.
    receipt = chain.run("merchant", tx.ACCEPT_ORDER, tx.OrderRef(3))
    assert receipt.code == "deadline_passed"
    assert [state_of(chain, i) for i in (2, 3)] == [OrderState.EXPIRED, OrderState.PLACED]
    chain.wait(1_000)
    assert state_of(chain, 3) == OrderState.EXPIRED


def test_a_backlog_of_one_deadline_kind_holds_up_no_other():
    # Deadlines of every kind share one budget per block. A griefer placing more orders a
    # block than the budget, on a listing whose merchant never accepts them (its own,
    # say), keeps the accept queue full: taken kind by kind, accept deadlines used the
    # whole budget, and a disputed order's ruling deadline never fired. Its arbiter was
    # refused (deadline_passed), no registrar could rule it (not escalated), and its
    # escrow stayed put for as long as the flood went on. Each kind now has its share.
    from dataclasses import replace

    from tests.apps.commerce.helpers import TEST_PARAMS

    chain = new_chain(params=replace(TEST_PARAMS, max_deadlines_per_block=4))
    shop = open_shop(chain, stock=1_000)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("arbiter"), 2, b""))
    oid = _shipped(chain, shop)
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(oid, "never arrived"))
    rule_by = get_order(chain.state, oid).deadline_ms
    flood = 0
    while chain.time_ms < rule_by:
        # Eight orders a block, twice the budget: their accept deadlines (10 min) come
        # due from 10 min on, before the ruling deadline (15 min).
        chain.block(
            *(chain.sign("bob", tx.PLACE_ORDER, shop.order("bob")) for _ in range(8)),
            advance_ms=30_000,
        )
        flood += 8
    # The first block past the ruling deadline escalates the order, backlog or not.
    assert state_of(chain, oid) == OrderState.ESCALATED
    chain.ok("registrar", tx.RULE, tx.Rule(oid, 10_000))
    # The backlog still drains: every flooding order expires in time.
    chain.wait(10 * MIN)
    while any(state_of(chain, i) == OrderState.PLACED for i in range(2, 2 + flood)):
        chain.wait(1_000)
    assert {state_of(chain, i) for i in range(2, 2 + flood)} == {OrderState.EXPIRED}
