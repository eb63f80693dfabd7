"""Items as owned things: a settled order makes the buyer the owner; the owner resells the
item with its history intact; custody and ownership stay apart."""

from __future__ import annotations

from apps.commerce import payloads as tx
from apps.commerce.keys import item_ref
from apps.commerce.model import Role
from apps.commerce.sealing import seal_address
from apps.commerce.views import get_item, item_view, listing_view
from tests.apps.commerce.helpers import PRICE, enc_keys, item, new_chain, open_shop
from vm.currency import MINT, Mint

TEAPOT = item("R1")
URN = "urn:epc:id:sgln:0950600.00001.0"


def sold_to_alice():
    """The maker's teapot, handed to the merchant, sold to alice and settled."""
    chain = new_chain("issuer")
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("maker"), int(Role.MAKER), b""))
    chain.ok(
        "registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("inspector"), int(Role.INSPECTOR), b"")
    )
    shop = open_shop(chain)
    chain.ok("maker", tx.REGISTER_ITEM, tx.RegisterItem(TEAPOT, "teapot", URN, chain.time_ms))
    assert get_item(chain.state, TEAPOT.gtin, TEAPOT.serial).owner is None
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("merchant")))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, (TEAPOT,)))
    chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    return chain


def become_merchant(chain, name):
    enc_public = enc_keys(name)[1]
    chain.ok(name, tx.REGISTER_MERCHANT, tx.RegisterMerchant(name, "", enc_public))
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr(name), True))
    return enc_public


def resale(price=3 * PRICE, stock=1, what=TEAPOT, currency=""):
    return tx.CreateListing("Teapot, once owned", "", price, stock, b"", currency, what)


def order(listing_id, seller_key, price, currency=""):
    sealed, commitment, _ = seal_address(seller_key, "2 Elm St")
    return tx.PlaceOrder(listing_id, 1, 1, price, 0, 0, seller_key, commitment, sealed, currency)


def test_a_settled_order_makes_the_buyer_the_owner_who_resells_it():
    chain = sold_to_alice()
    teapot = get_item(chain.state, TEAPOT.gtin, TEAPOT.serial)
    assert teapot.owner == teapot.custodian == chain.addr("alice")
    before = teapot.event_count

    # Alice resells it, in USD, to bob; the listing names the item.
    chain.add_currency("USD", "issuer")
    chain.ok("issuer", MINT, Mint("USD", chain.addr("bob"), 10 * PRICE))
    alice_key = become_merchant(chain, "alice")
    chain.ok("alice", tx.CREATE_LISTING, resale(currency="USD"))
    listing = listing_view(chain.state, 2)
    assert listing.item_ref == item_ref(TEAPOT.gtin, TEAPOT.serial) and listing.currency == "USD"
    chain.ok("bob", tx.PLACE_ORDER, order(2, alice_key, 3 * PRICE, "USD"))
    chain.ok("alice", tx.ACCEPT_ORDER, tx.OrderRef(2))
    # Only the item sold ships, and only it.
    chain.fails("alice", tx.SHIP_ORDER, tx.ShipOrder(2, b"\x02" * 32, ()), "wrong_item")
    chain.fails("alice", tx.SHIP_ORDER, tx.ShipOrder(2, b"\x02" * 32, (item("R2"),)), "wrong_item")
    chain.ok("alice", tx.SHIP_ORDER, tx.ShipOrder(2, b"\x02" * 32, (TEAPOT,)))
    chain.ok("bob", tx.CONFIRM_DELIVERY, tx.OrderRef(2))
    assert chain.balance("alice", "USD") == 3 * PRICE - 3 * PRICE * 200 // 10_000

    view = item_view(chain.state, TEAPOT.gtin, TEAPOT.serial)
    assert view.owner == view.custodian == chain.addr("bob")
    # The history carries on: every hand-off and both sales, in order, none lost.
    assert len(view.history) == before + 1
    steps = [e.biz_step for e in view.history]
    assert steps == ["commissioning", "shipping", "receiving", "retail_selling", "retail_selling"]
    assert (view.history[-1].source, view.history[-1].destination) == (
        chain.addr("alice"),
        chain.addr("bob"),
    )


def test_only_the_owner_holding_the_item_resells_it():
    chain = sold_to_alice()
    alice_key = become_merchant(chain, "alice")
    # The merchant sold it: no longer its to sell, nor in its hands.
    chain.fails("merchant", tx.CREATE_LISTING, resale(), "not_owner")
    chain.fails("alice", tx.CREATE_LISTING, resale(stock=2), "invalid_resale")
    chain.fails("alice", tx.CREATE_LISTING, resale(what=item("NOPE")), "unknown_item")
    # Alice leaves it with an inspector: still its owner, no longer its custodian.
    chain.ok("alice", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("inspector")))
    chain.fails("alice", tx.CREATE_LISTING, resale(), "item_locked")  # a hand-off pending
    chain.ok("inspector", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    view = item_view(chain.state, TEAPOT.gtin, TEAPOT.serial)
    assert (view.owner, view.custodian) == (chain.addr("alice"), chain.addr("inspector"))
    chain.fails("alice", tx.CREATE_LISTING, resale(), "not_custodian")
    # The inspector holds it (and is a merchant too), but does not own it.
    inspector_key = become_merchant(chain, "inspector")
    chain.fails("inspector", tx.CREATE_LISTING, resale(), "not_owner")
    # Nor can it sell it through an ordinary listing: shipping it is refused.
    chain.ok("inspector", tx.CREATE_LISTING, tx.CreateListing("Teapot", "", PRICE, 1, b""))
    chain.ok("bob", tx.PLACE_ORDER, order(2, inspector_key, PRICE))
    chain.ok("inspector", tx.ACCEPT_ORDER, tx.OrderRef(2))
    chain.fails("inspector", tx.SHIP_ORDER, tx.ShipOrder(2, b"\x03" * 32, (TEAPOT,)), "not_owner")
    # The inspector hands it back; the owner resells it.
    chain.ok("inspector", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("alice")))
    chain.ok("alice", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    chain.ok("alice", tx.CREATE_LISTING, resale())
    chain.ok("carol", tx.PLACE_ORDER, order(3, alice_key, 3 * PRICE))


def test_a_custodian_cannot_decommission_the_owners_item():
    """Alice owns the teapot and leaves it with an inspector: the inspector attested its
    decommissioning, and alice's item was dead for good (never to be resold)."""
    chain = sold_to_alice()
    now = chain.time_ms
    destroy = tx.Attest(TEAPOT, "decommissioning", "destroyed", "", "", now, b"")
    chain.ok("alice", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("inspector")))
    chain.ok("inspector", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    r = chain.fails("inspector", tx.ATTEST, destroy, "not_owner")
    assert "owned by" in r.message
    # The maker made it, but it is alice's now.
    chain.ok("inspector", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("maker")))
    chain.ok("maker", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    chain.fails("maker", tx.ATTEST, destroy, "not_owner")
    assert item_view(chain.state, TEAPOT.gtin, TEAPOT.serial).status == "active"
    # Its owner, holding it (and an attestor), may end it.
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("alice")))
    chain.ok("alice", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("alice"), int(Role.INSPECTOR), b""))
    chain.ok("alice", tx.ATTEST, destroy)
    assert item_view(chain.state, TEAPOT.gtin, TEAPOT.serial).status == "decommissioned"


def test_a_resale_listing_sells_its_one_item_once():
    """Restocking a resale listing would sell one item several times over: an order of
    three units shipped with the one item, other buyers' escrow held until it expired."""
    chain = sold_to_alice()
    alice_key = become_merchant(chain, "alice")
    chain.ok("alice", tx.CREATE_LISTING, resale())
    r = chain.fails("alice", tx.RESTOCK, tx.StockChange(2, 2), "invalid_resale")
    assert "one item" in r.message
    # Withdrawn, it may be put back, but never more than the one unit.
    chain.ok("alice", tx.WITHDRAW_STOCK, tx.StockChange(2, 1))
    chain.ok("alice", tx.RESTOCK, tx.StockChange(2, 1))
    chain.fails("alice", tx.RESTOCK, tx.StockChange(2, 1), "invalid_resale")
    assert (listing_view(chain.state, 2).total, listing_view(chain.state, 2).available) == (1, 1)
    chain.ok("bob", tx.PLACE_ORDER, order(2, alice_key, 3 * PRICE))
    # Sold, it stays sold: the item is no longer the seller's to offer again.
    chain.fails("alice", tx.RESTOCK, tx.StockChange(2, 1), "invalid_resale")


def test_an_item_is_offered_by_one_listing_at_a_time():
    """Alice listed her one teapot twice (or listed it and sold it through an ordinary
    listing too): bob and carol each paid into escrow for it, and one of them could only
    wait for the ship deadline to have the money back."""
    chain = sold_to_alice()
    alice_key = become_merchant(chain, "alice")
    chain.ok("alice", tx.CREATE_LISTING, resale())  # listing 2
    r = chain.fails("alice", tx.CREATE_LISTING, resale(price=PRICE), "item_listed")
    assert "listing 2" in r.message
    # Nor does it ship in another listing's order while listing 2 offers it.
    chain.ok("alice", tx.CREATE_LISTING, tx.CreateListing("Teapots", "", PRICE, 5, b""))
    chain.ok("carol", tx.PLACE_ORDER, order(3, alice_key, PRICE))
    chain.ok("alice", tx.ACCEPT_ORDER, tx.OrderRef(2))
    ship = tx.ShipOrder(2, b"\x04" * 32, (TEAPOT,))
    chain.fails("alice", tx.SHIP_ORDER, ship, "item_listed")
    # Delisted while bob's order holds its unit, listing 2 still holds the item.
    chain.ok("bob", tx.PLACE_ORDER, order(2, alice_key, 3 * PRICE))
    chain.ok("alice", tx.DELIST, tx.ListingRef(2))
    chain.fails("alice", tx.CREATE_LISTING, resale(), "item_listed")
    # Its order ended too, the item is alice's to offer again.
    chain.ok("alice", tx.DECLINE_ORDER, tx.OrderRef(3))
    chain.ok("alice", tx.CREATE_LISTING, resale())  # listing 4
    assert get_item(chain.state, TEAPOT.gtin, TEAPOT.serial).listing_id == 4
    # Listing 4 sells it to bob; refunded after shipping, the item is back with alice and
    # listing 4 has sold its one unit: alice lists it anew.
    chain.ok("bob", tx.PLACE_ORDER, order(4, alice_key, 3 * PRICE))
    chain.ok("alice", tx.ACCEPT_ORDER, tx.OrderRef(4))
    chain.ok("alice", tx.SHIP_ORDER, tx.ShipOrder(4, b"\x05" * 32, (TEAPOT,)))
    chain.fails("alice", tx.CREATE_LISTING, resale(), "item_locked")
    chain.ok("alice", tx.REFUND, tx.Refund(4, 3 * PRICE))
    chain.ok("alice", tx.CREATE_LISTING, resale())  # listing 5
    chain.ok("bob", tx.PLACE_ORDER, order(5, alice_key, 3 * PRICE))
    chain.ok("alice", tx.ACCEPT_ORDER, tx.OrderRef(5))
    chain.ok("alice", tx.SHIP_ORDER, tx.ShipOrder(5, b"\x06" * 32, (TEAPOT,)))
    chain.ok("bob", tx.CONFIRM_DELIVERY, tx.OrderRef(5))
    # Bob owns it now, offered by no listing: he lists it himself.
    assert get_item(chain.state, TEAPOT.gtin, TEAPOT.serial).listing_id == 0
    become_merchant(chain, "bob")
    chain.ok("bob", tx.CREATE_LISTING, resale())


def test_only_an_item_sold_on_chain_is_resold():
    """An item never sold on chain has no owner, and whoever held it could list it for
    resale: a carrier taking a maker's parcel to a merchant, if an approved merchant too,
    could offer it, and its listing held the item against the merchant it was bound for."""
    chain = new_chain()
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("maker"), int(Role.MAKER), b""))
    chain.ok("maker", tx.REGISTER_ITEM, tx.RegisterItem(TEAPOT, "teapot", URN, chain.time_ms))
    chain.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("carrier")))
    chain.ok("carrier", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    become_merchant(chain, "carrier")
    r = chain.fails("carrier", tx.CREATE_LISTING, resale(), "not_owner")
    assert "never been sold" in r.message
    # The merchant it was bound for sells it through an ordinary listing, as before.
    shop = open_shop(chain)
    chain.ok("carrier", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("merchant")))
    chain.ok("merchant", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    chain.fails("merchant", tx.CREATE_LISTING, resale(), "not_owner")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, (TEAPOT,)))


def test_an_item_a_listing_offers_is_not_decommissioned():
    """Alice listed her teapot and then attested its decommissioning: the listing went on
    selling an item that was no more, and bob's escrow waited for the ship deadline."""
    chain = sold_to_alice()
    alice_key = become_merchant(chain, "alice")
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("alice"), int(Role.INSPECTOR), b""))
    destroy = tx.Attest(TEAPOT, "decommissioning", "destroyed", "", "", chain.time_ms, b"")
    chain.ok("alice", tx.CREATE_LISTING, resale())  # listing 2
    r = chain.fails("alice", tx.ATTEST, destroy, "item_listed")
    assert "listing 2" in r.message
    # Delisted while bob's order holds its unit, the listing still offers it to bob.
    chain.ok("bob", tx.PLACE_ORDER, order(2, alice_key, 3 * PRICE))
    chain.ok("alice", tx.DELIST, tx.ListingRef(2))
    chain.fails("alice", tx.ATTEST, destroy, "item_listed")
    # Bob's order over, the item is offered by none: alice may end it.
    chain.ok("alice", tx.DECLINE_ORDER, tx.OrderRef(2))
    chain.ok("alice", tx.ATTEST, destroy)
    assert item_view(chain.state, TEAPOT.gtin, TEAPOT.serial).status == "decommissioned"


def test_an_item_a_listing_offers_stays_with_its_seller():
    """Alice listed her teapot and then handed it to someone else (a friend, an inspector):
    bob paid into escrow for an item alice no longer held, could not be shipped, and his
    money waited for the ship deadline. A hand-off pending when she lists does not get
    around it: the listing is refused until the hand-off is answered or withdrawn."""
    chain = sold_to_alice()
    alice_key = become_merchant(chain, "alice")
    to_inspector = tx.ProposeCustody(TEAPOT, chain.addr("inspector"))
    # A hand-off pending, then the listing, then the receiver's accept: the listing waits.
    chain.ok("alice", tx.PROPOSE_CUSTODY, to_inspector)
    chain.fails("alice", tx.CREATE_LISTING, resale(), "item_locked")
    chain.ok("alice", tx.REFUSE_CUSTODY, tx.ItemRef(TEAPOT))  # alice withdraws it
    chain.ok("alice", tx.CREATE_LISTING, resale())  # listing 2
    chain.fails("inspector", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT), "no_pending_handoff")
    # Listing 2 offers it: alice may not hand it to anyone.
    r = chain.fails("alice", tx.PROPOSE_CUSTODY, to_inspector, "item_listed")
    assert "listing 2" in r.message
    carrier = tx.ProposeCustody(TEAPOT, chain.addr("carrier"))
    chain.fails("alice", tx.PROPOSE_CUSTODY, carrier, "item_listed")
    # Delisted while bob's order holds its unit, it still waits for bob.
    chain.ok("bob", tx.PLACE_ORDER, order(2, alice_key, 3 * PRICE))
    chain.ok("alice", tx.DELIST, tx.ListingRef(2))
    chain.fails("alice", tx.PROPOSE_CUSTODY, to_inspector, "item_listed")
    teapot = get_item(chain.state, TEAPOT.gtin, TEAPOT.serial)
    assert teapot.custodian == chain.addr("alice") and teapot.pending_to is None
    # Shipping bob's order is what it waited for: shipped, it travels to bob.
    chain.ok("alice", tx.ACCEPT_ORDER, tx.OrderRef(2))
    chain.ok("alice", tx.SHIP_ORDER, tx.ShipOrder(2, b"\x07" * 32, (TEAPOT,)))
    chain.ok("alice", tx.PROPOSE_CUSTODY, tx.ProposeCustody(TEAPOT, chain.addr("bob")))
    chain.ok("bob", tx.ACCEPT_CUSTODY, tx.ItemRef(TEAPOT))
    chain.ok("bob", tx.CONFIRM_DELIVERY, tx.OrderRef(2))
    # A listing that ended with no order holding its unit frees the item as well.
    become_merchant(chain, "bob")
    chain.ok("bob", tx.CREATE_LISTING, resale())  # listing 3
    chain.ok("bob", tx.DELIST, tx.ListingRef(3))
    chain.ok("bob", tx.PROPOSE_CUSTODY, to_inspector)
