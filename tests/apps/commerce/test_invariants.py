"""The invariants that no escrow is stuck: each is broken by hand in a state the
transactions made, and ``check_invariants`` must name it (the transactions themselves
never break them: every commerce test checks the invariants after every block)."""

import dataclasses

from apps.commerce import check_invariants, keys
from apps.commerce import payloads as tx
from apps.commerce.model import Item, Order
from tests.apps.commerce.helpers import new_chain, open_shop
from tests.apps.commerce.test_auctions import start


def problems(chain):
    return check_invariants(chain.state, chain.accounts, chain.supply)


def test_an_open_order_whose_deadline_is_not_queued_is_stuck():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    due = Order.decode(chain.state[keys.order_key(1)]).deadline_ms
    # The hook would never expire it: nothing but the merchant could move its escrow.
    del chain.state[keys.deadline_queue_key(1)]
    del chain.state[keys.deadline_entry_key(1, 0)]
    assert problems(chain) == [f"open order 1 (placed) has no accept deadline queued at {due}"]


def test_an_order_every_registrar_is_a_party_to_could_never_be_ruled():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    key = keys.order_key(1)
    order = Order.decode(chain.state[key])
    # The chain's only registrar as the buyer: escalated, no one could rule it.
    chain.state[key] = dataclasses.replace(order, buyer=chain.addr("registrar")).encode()
    assert "open order 1: every registrar is a party to it, none could rule it" in problems(chain)


def test_a_disputed_order_without_its_dispute_record():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(1, "broken"))
    del chain.state[keys.dispute_key(1)]
    assert problems(chain) == ["order 1 is disputed without a dispute record"]


def test_an_open_deal_or_auction_the_clock_would_not_reach():
    chain = new_chain()
    shop = open_shop(chain)
    now = chain.time_ms + 1_000
    chain.ok("merchant", tx.OPEN_DEAL, tx.OpenDeal(1, 1, 900, 5, 1, now, now + 600_000))
    start(chain)
    assert problems(chain) == []
    deal_clock = chain.state.pop(keys.DEAL_CLOCK_KEY)
    bucket = (now + 600_000) // shop.chain.params.deal_bucket_ms
    assert problems(chain) == [f"open deal 1 is not in bucket {bucket} within the deal clock None"]
    chain.state[keys.DEAL_CLOCK_KEY] = deal_clock
    del chain.state[keys.AUCTION_CLOCK_KEY]
    (problem,) = problems(chain)
    assert problem.startswith("open auction 1 is not in bucket ")
    assert problem.endswith(" within the auction clock None")


def test_an_item_offered_by_a_listing_it_does_not_name():
    # Another listing could then offer it too, and take a second buyer's escrow for it.
    from tests.apps.commerce.test_resale import TEAPOT, become_merchant, resale, sold_to_alice

    chain = sold_to_alice()
    become_merchant(chain, "alice")
    chain.ok("alice", tx.CREATE_LISTING, resale())
    assert problems(chain) == []
    ref = keys.item_ref(TEAPOT.gtin, TEAPOT.serial)
    item = Item.decode(chain.state[keys.item_key(ref)])
    chain.state[keys.item_key(ref)] = dataclasses.replace(item, listing_id=0).encode()
    assert problems(chain) == [f"item {ref.hex()} is offered by listings [2], it names listing 0"]


def test_an_item_offered_by_a_listing_its_seller_does_not_hold():
    # A buyer's escrow would wait for an item its seller cannot ship.
    from tests.apps.commerce.test_resale import TEAPOT, become_merchant, resale, sold_to_alice

    chain = sold_to_alice()
    become_merchant(chain, "alice")
    chain.ok("alice", tx.CREATE_LISTING, resale())
    ref = keys.item_ref(TEAPOT.gtin, TEAPOT.serial)
    item = Item.decode(chain.state[keys.item_key(ref)])
    inspector = chain.addr("inspector")
    for away in ({"custodian": inspector}, {"pending_to": inspector}):
        chain.state[keys.item_key(ref)] = dataclasses.replace(item, **away).encode()
        (problem,) = problems(chain)
        assert problem.startswith(f"item {ref.hex()} offered by listing 2 of ")
        assert "is not its seller's to ship" in problem
    chain.state[keys.item_key(ref)] = item.encode()
    assert problems(chain) == []


def test_an_item_locked_to_an_order_off_its_way():
    # Unlocked while its order is open, it could be shipped again or resold; still locked
    # to an order that settled with the seller paid, or ended without returning it, it
    # would be stuck where it is.
    from tests.apps.commerce.test_provenance import A1, chain_with_roles, shipped_to_alice

    chain = chain_with_roles()
    shipped_to_alice(chain)
    ref = keys.item_ref(A1.gtin, A1.serial)
    item = Item.decode(chain.state[keys.item_key(ref)])
    chain.state[keys.item_key(ref)] = dataclasses.replace(item, order_id=0).encode()
    assert problems(chain) == [f"item {ref.hex()} of open order 1 is locked to 0"]
    chain.state[keys.item_key(ref)] = item.encode()
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 1_000))
    assert problems(chain) == []
    returning = Item.decode(chain.state[keys.item_key(ref)])
    chain.state[keys.item_key(ref)] = dataclasses.replace(returning, return_to=None).encode()
    (problem,) = problems(chain)
    assert problem.startswith(f"item {ref.hex()} is still locked to ended order 1")
