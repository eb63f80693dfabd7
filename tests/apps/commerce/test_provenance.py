"""Provenance: item registration, EPCIS-shaped attestations, custody hand-offs."""

import pytest

from apps.commerce import keys
from apps.commerce import payloads as tx
from apps.commerce.keys import CommercePrefix
from apps.commerce.model import Item, ItemId, Role
from apps.commerce.params import MAX_SEQ
from apps.commerce.provenance import gtin_check_digit, valid_gtin
from apps.commerce.views import item_history, item_state_keys, item_view
from core.codec import replace
from tests.apps.commerce.helpers import MIN, item, new_chain, open_shop

A1 = item("A1")


def chain_with_roles():
    chain = new_chain()
    grants = {"maker": Role.MAKER, "carrier": Role.CARRIER, "inspector": Role.INSPECTOR}
    for name, role in grants.items():
        chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr(name), int(role), b""))
    chain.ok(
        "maker",
        tx.REGISTER_ITEM,
        tx.RegisterItem(A1, "cast iron pot", "urn:plant:1", chain.time_ms),
    )
    return chain


def view(chain, it=A1):
    return item_view(chain.state, it.gtin, it.serial)


def test_gtin_check_digit():
    # GS1's own example: GTIN-13 4006381333931 -> as GTIN-14 04006381333931.
    assert valid_gtin("04006381333931")
    assert gtin_check_digit("0400638133393") == 1
    assert not valid_gtin("04006381333932")
    assert not valid_gtin("4006381333931")
    assert not valid_gtin("0400638133393a")


def test_register_item():
    chain = chain_with_roles()
    v = view(chain)
    assert (v.maker, v.custodian, v.status) == (chain.addr("maker"),) * 2 + ("active",)
    assert v.label == f"(01){A1.gtin}(21)A1"
    (first,) = v.history
    assert (first.action, first.biz_step, first.read_point) == (
        "ADD",
        "commissioning",
        "urn:plant:1",
    )
    now = chain.time_ms
    chain.fails("maker", tx.REGISTER_ITEM, tx.RegisterItem(A1, "", "", now), "item_exists")
    chain.fails(
        "carrier", tx.REGISTER_ITEM, tx.RegisterItem(item("B"), "", "", now), "missing_role"
    )
    bad_gtin = ItemId("09506000134351", "B")
    chain.fails("maker", tx.REGISTER_ITEM, tx.RegisterItem(bad_gtin, "", "", now), "invalid_gtin")
    chain.fails(
        "maker", tx.REGISTER_ITEM, tx.RegisterItem(item("a b"), "", "", now), "invalid_serial"
    )
    chain.fails("maker", tx.REGISTER_ITEM, tx.RegisterItem(item(""), "", "", now), "invalid_serial")
    future = tx.RegisterItem(item("B"), "", "", now + 10**6)
    chain.fails("maker", tx.REGISTER_ITEM, future, "invalid_time")


def test_custody_hand_off_refused_then_accepted():
    chain = chain_with_roles()
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(A1, chain.addr("carrier")))
    assert view(chain).pending_to == chain.addr("carrier")
    # Only the named receiver answers.
    chain.fails("inspector", tx.ACCEPT_CUSTODY, tx.ItemRef(A1), "no_pending_handoff")
    chain.ok("carrier", tx.REFUSE_CUSTODY, tx.ItemRef(A1))
    v = view(chain)
    assert (v.custodian, v.pending_to) == (chain.addr("maker"), None)
    chain.fails("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1), "no_pending_handoff")

    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(A1, chain.addr("carrier")))
    # Until accepted, the maker is still the custodian and the carrier cannot attest.
    attest = tx.Attest(A1, "shipping", "in_transit", "urn:truck:7", "", chain.time_ms, b"")
    chain.fails("carrier", tx.ATTEST, attest, "not_custodian")
    chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    v = view(chain)
    assert (v.custodian, v.pending_to) == (chain.addr("carrier"), None)
    chain.ok("carrier", tx.ATTEST, attest)
    chain.fails("maker", tx.ATTEST, attest, "not_custodian")

    steps = [(e.biz_step, e.disposition) for e in item_history(chain.state, A1.gtin, "A1")]
    assert steps == [
        ("commissioning", "active"),
        ("shipping", "in_transit"),
        ("receiving", "refused"),
        ("shipping", "in_transit"),
        ("receiving", "in_progress"),
        ("shipping", "in_transit"),
    ]
    history = item_history(chain.state, A1.gtin, "A1")
    assert [e.seq for e in history] == list(range(6))
    assert history[4].source == chain.addr("maker") and history[4].destination == chain.addr(
        "carrier"
    )
    # Proof material: the item record and each event's key.
    assert len(item_state_keys(chain.state, A1.gtin, "A1")) == 7


def test_history_is_append_only():
    chain = chain_with_roles()
    before = {k: v for k, v in chain.state.items() if k[0] == CommercePrefix.ITEM_EVENT}
    chain.ok(
        "maker",
        tx.ATTEST,
        tx.Attest(A1, "inspecting", "conformant", "urn:qa", "", chain.time_ms, b"\x05" * 32),
    )
    after = {k: v for k, v in chain.state.items() if k[0] == CommercePrefix.ITEM_EVENT}
    assert all(after[k] == v for k, v in before.items())
    assert len(after) == len(before) + 1


def test_attestation_checks():
    chain = chain_with_roles()
    now = chain.time_ms

    def attest(step="inspecting", disposition="ok", read_point="urn:x", time=now, data=b""):
        return tx.Attest(A1, step, disposition, read_point, "", time, data)

    chain.fails("stranger", tx.ATTEST, attest(), "missing_role")
    chain.fails("maker", tx.ATTEST, attest(step="commissioning"), "invalid_step")
    chain.fails("maker", tx.ATTEST, attest(disposition="has space"), "invalid_text")
    chain.fails("maker", tx.ATTEST, attest(time=now + 10**6), "invalid_time")
    chain.fails("maker", tx.ATTEST, attest(data=b"\x01"), "invalid_hash")
    chain.fails(
        "maker", tx.ATTEST, tx.Attest(item("Z"), "inspecting", "", "", "", now, b""), "unknown_item"
    )
    chain.ok("maker", tx.ATTEST, attest(step="decommissioning", disposition="destroyed"))
    assert view(chain).status == "decommissioned"
    chain.fails("maker", tx.ATTEST, attest(), "item_decommissioned")
    chain.fails(
        "maker",
        tx.PROPOSE_CUSTODY,
        tx.ProposeCustody(A1, chain.addr("carrier")),
        "item_decommissioned",
    )


@pytest.mark.parametrize("settle", ["confirm", "refund"])
def test_shipping_locks_items_and_settlement_hands_them_to_the_buyer(settle):
    chain = chain_with_roles()
    shop = open_shop(chain)
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(A1, chain.addr("merchant")))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.fails(
        "merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x00" * 32, (A1, A1)), "duplicate_item"
    )
    chain.fails(
        "merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x00" * 32, (A1, item("Q"))), "unknown_item"
    )
    chain.fails(
        "merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x00" * 32, (A1,) * 3), "too_many_items"
    )
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x00" * 32, (A1,)))
    assert view(chain).order_id == 1
    # Still the merchant's item, but it cannot be decommissioned while it travels.
    now = chain.time_ms
    decommission = tx.Attest(A1, "decommissioning", "destroyed", "", "", now, b"")
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("merchant"), int(Role.CARRIER), b""))
    chain.fails("merchant", tx.ATTEST, decommission, "item_locked")
    if settle == "confirm":
        chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
        assert view(chain).custodian == chain.addr("alice")
    else:
        chain.ok("merchant", tx.REFUND, tx.Refund(1, 2_000))
        assert view(chain).custodian == chain.addr("merchant")
    assert view(chain).order_id == 0


def test_an_item_in_an_order_keeps_the_last_place_of_its_history_for_its_settlement():
    # The settlement event is appended by the confirm deadline's begin-block hook, where
    # a full history would halt the chain: while the item ships, its custodian's own
    # events stop one short of the maximum. (A history this long stands for billions of
    # hand-offs, written into the state directly.)
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("merchant"), int(Role.MAKER), b""))
    x = item("Z1")
    chain.ok("merchant", tx.REGISTER_ITEM, tx.RegisterItem(x, "pot", "urn:p", chain.time_ms))
    key = keys.item_key(keys.item_ref(x.gtin, x.serial))
    chain.state[key] = replace(Item.decode(chain.state[key]), event_count=MAX_SEQ - 2).encode()
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, (x,)))
    chain.ok("merchant", tx.PROPOSE_CUSTODY, tx.ProposeCustody(x, chain.addr("alice")))
    assert Item.decode(chain.state[key]).event_count == MAX_SEQ - 1
    chain.fails("alice", tx.REFUSE_CUSTODY, tx.ItemRef(x), "too_many_events")
    chain.wait(31 * MIN)  # the confirm deadline settles the order: the item is alice's
    settled = Item.decode(chain.state[key])
    assert (settled.event_count, settled.owner, settled.order_id) == (
        MAX_SEQ,
        chain.addr("alice"),
        0,
    )


def test_item_must_be_in_the_merchants_custody_to_ship():
    chain = chain_with_roles()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.fails("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x00" * 32, (A1,)), "not_custodian")


def test_a_settlement_counts_its_items_against_the_deadline_budget():
    # A block's deadline budget bounds the work its deadlines do: a release hands each
    # of the order's items to its buyer (a write and an event apiece), so an order of
    # three items costs four. Counted by deadlines alone, a budget of 10,000 settlements
    # of 16 items each let ~170,000 item events into one block's hook.
    from dataclasses import replace

    from apps.commerce.model import OrderState
    from apps.commerce.views import get_order
    from tests.apps.commerce.helpers import TEST_PARAMS

    chain = new_chain(params=replace(TEST_PARAMS, max_deadlines_per_block=8))
    shop = open_shop(chain, stock=100)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("merchant"), int(Role.MAKER), b""))
    buyers = ("alice", "bob", "carol")
    for n, buyer in enumerate(buyers, start=1):
        refs = tuple(item(f"S{n}X{k}") for k in range(3))
        for ref in refs:
            chain.ok("merchant", tx.REGISTER_ITEM, tx.RegisterItem(ref, "", "", chain.time_ms))
        chain.ok(buyer, tx.PLACE_ORDER, shop.order(buyer, 3))
        chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(n))
        chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(n, b"\x00" * 32, refs))
    # Every confirmation deadline is due in the next block, with the stale accept and
    # ship deadlines of the same orders (one of work each): twelve settlement units
    # and more do not fit its budget of eight, so a settlement waits for a next block.
    chain.wait(TEST_PARAMS.confirm_window_ms + MIN)
    states = [OrderState(get_order(chain.state, n).state) for n in (1, 2, 3)]
    assert OrderState.SHIPPED in states and OrderState.COMPLETED in states
    for _ in range(3):
        chain.wait(1_000)
    assert {OrderState(get_order(chain.state, n).state) for n in (1, 2, 3)} == {
        OrderState.COMPLETED
    }
    assert view(chain, item("S3X2")).owner == chain.addr("carol")


def test_only_the_maker_of_an_unsold_item_decommissions_it_not_who_carries_it():
    """A carrier holding the maker's item in transit attested its decommissioning: the
    item was dead for good (never shipped, never sold) on a custodian's word alone."""
    chain = chain_with_roles()
    now = chain.time_ms
    destroy = tx.Attest(A1, "decommissioning", "destroyed", "", "", now, b"")
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(A1, chain.addr("carrier")))
    chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    r = chain.fails("carrier", tx.ATTEST, destroy, "not_owner")
    assert "maker" in r.message
    # The carrier still records what it sees, and hands the parcel on.
    chain.ok("carrier", tx.ATTEST, tx.Attest(A1, "inspecting", "damaged", "", "", now, b""))
    chain.ok("carrier", tx.PROPOSE_CUSTODY, tx.ProposeCustody(A1, chain.addr("inspector")))
    chain.ok("inspector", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.fails("inspector", tx.ATTEST, destroy, "not_owner")
    assert view(chain).status == "active"
    # Back in its maker's hands, the maker ends it.
    chain.ok("inspector", tx.PROPOSE_CUSTODY, tx.ProposeCustody(A1, chain.addr("maker")))
    chain.ok("maker", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.ok("maker", tx.ATTEST, destroy)
    assert view(chain).status == "decommissioned"


def test_an_item_shipping_in_an_order_goes_only_to_a_carrier_its_buyer_or_back():
    """The parcel bought by alice could be handed by its merchant (or a carrier) to
    anyone: the chain then showed a stranger holding alice's item, and on a refund the
    item stayed with that stranger."""
    chain = chain_with_roles()
    to = shipped_by_merchant(chain)
    r = chain.fails("merchant", tx.PROPOSE_CUSTODY, to("stranger"), "item_locked")
    assert "order 1" in r.message
    # A carrier takes it on; it goes on to a carrier or to its buyer, not elsewhere.
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("carrier"))
    chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.fails("carrier", tx.PROPOSE_CUSTODY, to("bob"), "item_locked")
    chain.ok("carrier", tx.PROPOSE_CUSTODY, to("alice"))
    chain.ok("alice", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    # A return goes back the same way: to a carrier or to the merchant.
    chain.fails("alice", tx.PROPOSE_CUSTODY, to("stranger"), "item_locked")
    chain.ok("alice", tx.PROPOSE_CUSTODY, to("merchant"))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 1_000))
    # The order over, the item is free to go anywhere again.
    assert (view(chain).custodian, view(chain).order_id) == (chain.addr("merchant"), 0)
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("stranger"))


def shipped_by_merchant(chain):
    """A1 handed to the merchant, ordered by alice (order 1), shipped in it: the merchant
    holds it, locked to the open order. Returns the hand-off to a named party."""
    shop = open_shop(chain)
    to = lambda name: tx.ProposeCustody(A1, chain.addr(name))  # noqa: E731
    chain.ok("maker", tx.PROPOSE_CUSTODY, to("merchant"))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x00" * 32, (A1,)))
    return to


def shipped_to_alice(chain):
    """A1 handed to the merchant, ordered by alice, shipped, carried to alice: she holds
    it, the order is open."""
    to = shipped_by_merchant(chain)
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("carrier"))
    chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.ok("carrier", tx.PROPOSE_CUSTODY, to("alice"))
    chain.ok("alice", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    return to


def test_a_refunded_parcel_goes_back_to_its_merchant():
    """Refunded after shipping, alice had all her money back and kept the merchant's
    item, unlocked: she could hand it to anyone, and the merchant could get it back only
    by her goodwill, with nothing on chain saying it was owed."""
    chain = chain_with_roles()
    to = shipped_to_alice(chain)
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 1_000))
    r = chain.fails("alice", tx.PROPOSE_CUSTODY, to("stranger"), "item_locked")
    assert "goes back to its merchant" in r.message
    # Still the merchant's (never sold), in alice's hands, locked to the refunded order
    # and going back to the merchant.
    v = view(chain)
    assert (v.owner, v.custodian) == (None, chain.addr("alice"))
    assert (v.order_id, v.return_to) == (1, chain.addr("merchant"))
    # A carrier takes it back: to the merchant, not on to the buyer.
    chain.ok("alice", tx.PROPOSE_CUSTODY, to("carrier"))
    chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.fails("carrier", tx.PROPOSE_CUSTODY, to("alice"), "item_locked")
    chain.ok("carrier", tx.PROPOSE_CUSTODY, to("merchant"))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    # Back home: unlocked, the merchant's to sell again.
    v = view(chain)
    assert (v.custodian, v.order_id, v.return_to) == (chain.addr("merchant"), 0, None)
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("stranger"))


@pytest.mark.parametrize("buyer_bps", [10_000, 9_000])
def test_a_ruling_that_gives_the_buyer_all_back_returns_the_item(buyer_bps):
    """An arbiter ruled the whole escrow back to alice: she was refunded in full and
    became the item's owner as well, goods for nothing. A split that leaves the seller
    side something still passes the item to her."""
    chain = chain_with_roles()
    to = shipped_to_alice(chain)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("arbiter"), int(Role.ARBITER), b""))
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(1, "broken"))
    before = chain.balance("alice")
    chain.ok("arbiter", tx.RULE, tx.Rule(1, buyer_bps))
    assert chain.balance("alice") == before + 1_000 * buyer_bps // 10_000
    v = view(chain)
    if buyer_bps == 10_000:
        assert (v.owner, v.custodian) == (None, chain.addr("alice"))
        assert v.return_to == chain.addr("merchant")
        chain.fails("alice", tx.PROPOSE_CUSTODY, to("stranger"), "item_locked")
        chain.ok("alice", tx.PROPOSE_CUSTODY, to("merchant"))
        chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
        assert (view(chain).order_id, view(chain).return_to) == (0, None)
    else:
        assert (v.owner, v.custodian, v.order_id) == (chain.addr("alice"),) * 2 + (0,)
        assert v.return_to is None


def test_a_refund_while_the_merchant_still_hands_the_parcel_on_waits_for_it_to_stay():
    """Refunded before the carrier took the parcel: the hand-off is the merchant's, still
    pending. Accepted, the carrier must bring it back; refused, the merchant has it and
    the lock goes."""
    chain = chain_with_roles()
    shop = open_shop(chain)
    to = lambda name: tx.ProposeCustody(A1, chain.addr(name))  # noqa: E731
    chain.ok("maker", tx.PROPOSE_CUSTODY, to("merchant"))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    for n, buyer in enumerate(("alice", "bob"), start=1):
        chain.ok(buyer, tx.PLACE_ORDER, shop.order(buyer))
        chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(n))
        chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(n, b"\x00" * 32, (A1,)))
        chain.ok("merchant", tx.PROPOSE_CUSTODY, to("carrier"))
        chain.ok("merchant", tx.REFUND, tx.Refund(n, 1_000))
        if buyer == "alice":
            chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
            chain.fails("carrier", tx.PROPOSE_CUSTODY, to("bob"), "item_locked")
            chain.ok("carrier", tx.PROPOSE_CUSTODY, to("merchant"))
            chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
        else:
            chain.ok("carrier", tx.REFUSE_CUSTODY, tx.ItemRef(A1))
        v = view(chain)
        assert v.history[-1].biz_step == "receiving"
        assert (v.custodian, v.order_id, v.return_to) == (chain.addr("merchant"), 0, None)


def test_a_refund_drops_the_merchants_own_hand_off_to_the_buyer():
    """Refunded while its own hand-off to alice was pending, the merchant held its item
    locked until alice, who had all her money back, answered: it could not withdraw the
    hand-off (proposing to itself is self-dealing) nor hand the item to any but a
    carrier. The hand-off lapses: the item is not going to her any more."""
    chain = chain_with_roles()
    to = shipped_by_merchant(chain)
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("alice"))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 1_000))
    v = view(chain)
    assert (v.custodian, v.pending_to) == (chain.addr("merchant"), None)
    assert (v.order_id, v.return_to) == (0, None)
    # Alice cannot take it now; the merchant's item is free again.
    chain.fails("alice", tx.ACCEPT_CUSTODY, tx.ItemRef(A1), "no_pending_handoff")
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("stranger"))


def test_a_custodian_withdraws_its_own_hand_off_that_nobody_answers():
    """Refunded while its hand-off to a carrier was pending, the merchant held its item
    locked to the order until that carrier answered: a carrier that never did kept it
    locked for good (the merchant may not propose to itself, and a new proposal to
    another carrier only moves the wait). The custodian withdraws its own proposal; the
    item, back with its merchant and nothing pending, is unlocked."""
    chain = chain_with_roles()
    to = shipped_by_merchant(chain)
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("carrier"))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 1_000))
    v = view(chain)
    assert (v.pending_to, v.return_to) == (chain.addr("carrier"), chain.addr("merchant"))
    # Nobody but the custodian or the receiver may drop the proposal.
    chain.fails("stranger", tx.REFUSE_CUSTODY, tx.ItemRef(A1), "no_pending_handoff")
    chain.ok("merchant", tx.REFUSE_CUSTODY, tx.ItemRef(A1))
    v = view(chain)
    last = v.history[-1]
    assert (last.biz_step, last.disposition) == ("shipping", "cancelled")
    assert (last.source, last.destination) == (chain.addr("merchant"), chain.addr("carrier"))
    assert (v.custodian, v.pending_to) == (chain.addr("merchant"), None)
    assert (v.order_id, v.return_to) == (0, None)
    chain.fails("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(A1), "no_pending_handoff")
    chain.ok("merchant", tx.PROPOSE_CUSTODY, to("stranger"))
    # With nothing pending there is nothing to withdraw.
    chain.ok("stranger", tx.ACCEPT_CUSTODY, tx.ItemRef(A1))
    chain.fails("stranger", tx.REFUSE_CUSTODY, tx.ItemRef(A1), "no_pending_handoff")
