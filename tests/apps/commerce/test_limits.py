"""Parameters at their caps stay within the vm's bounds (64 events per tx, tx size)."""

from dataclasses import replace

from apps.commerce import payloads as tx
from apps.commerce.model import Role
from apps.commerce.params import MAX_DEALS_CAP, MAX_ITEMS_CAP
from tests.apps.commerce.helpers import MIN, TEST_PARAMS, item, new_chain, open_shop


def test_closing_a_session_with_the_most_open_deals():
    chain = new_chain(params=replace(TEST_PARAMS, max_open_deals=MAX_DEALS_CAP))
    open_shop(chain, stock=1_000)
    now = chain.time_ms
    deals = [
        chain.sign("merchant", tx.OPEN_DEAL, tx.OpenDeal(1, 1, 10, 2, 1, now, now + 30 * MIN))
        for _ in range(MAX_DEALS_CAP)
    ]
    assert all(r.ok for r in chain.block(*deals).receipts)
    more = tx.OpenDeal(1, 1, 10, 2, 1, now, now + 30 * MIN)
    chain.fails("merchant", tx.OPEN_DEAL, more, "too_many_deals")
    receipt = chain.ok("host", tx.CLOSE_SESSION, tx.SessionRef(1))
    assert len(receipt.events) == MAX_DEALS_CAP + 1


def test_settling_an_order_with_the_most_items():
    chain = new_chain(params=replace(TEST_PARAMS, max_items_per_order=MAX_ITEMS_CAP))
    shop = open_shop(chain, stock=100)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("merchant"), int(Role.MAKER), b""))
    items = [item(f"N{i}") for i in range(MAX_ITEMS_CAP)]
    now = chain.time_ms
    chain.block(
        *(chain.sign("merchant", tx.REGISTER_ITEM, tx.RegisterItem(i, "", "", now)) for i in items)
    )
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", MAX_ITEMS_CAP))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, tuple(items)))
    receipt = chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    assert len(receipt.events) == MAX_ITEMS_CAP + 2
