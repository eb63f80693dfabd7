"""Roles, merchants, listings, disclosure, and a chain without commerce."""

import pytest

from apps.commerce import payloads as tx
from apps.commerce.model import Role
from apps.commerce.sealing import open_address, open_plaintext, reseal
from apps.commerce.views import (
    ViewDenied,
    get_listing,
    listing_terms,
    listing_view,
    listings,
    merchant_view,
    order_view,
    orders_of,
    roles_view,
)
from tests.apps.commerce.helpers import enc_keys, new_chain, open_shop

ENC = b"\x09" * 32


def test_merchant_registration_and_approval():
    chain = new_chain()
    chain.ok("merchant", tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "tea things", ENC))
    assert merchant_view(chain.state, chain.addr("merchant")).status == "pending"
    chain.fails(
        "merchant", tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", ENC), "merchant_exists"
    )
    chain.fails("bob", tx.REGISTER_MERCHANT, tx.RegisterMerchant(" ", "", ENC), "invalid_text")
    chain.fails(
        "bob", tx.REGISTER_MERCHANT, tx.RegisterMerchant("x" * 65, "", ENC), "text_too_long"
    )
    # Pending merchants cannot sell.
    r = chain.fails(
        "merchant",
        tx.CREATE_LISTING,
        tx.CreateListing("Pot", "", 5, 1, b""),
        "merchant_not_approved",
    )
    assert "is pending, expected approved" in r.message
    r = chain.fails(
        "alice",
        tx.APPROVE_MERCHANT,
        tx.ApproveMerchant(chain.addr("merchant"), True),
        "missing_role",
    )
    assert "requires role registrar" in r.message and "has none" in r.message
    chain.fails(
        "registrar",
        tx.APPROVE_MERCHANT,
        tx.ApproveMerchant(chain.addr("bob"), True),
        "unknown_merchant",
    )
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr("merchant"), True))
    chain.ok("merchant", tx.CREATE_LISTING, tx.CreateListing("Pot", "", 5, 1, b""))
    chain.ok("merchant", tx.UPDATE_MERCHANT, tx.UpdateMerchant("Acme Tea", "new", ENC))
    assert merchant_view(chain.state, chain.addr("merchant")).name == "Acme Tea"
    chain.fails("bob", tx.UPDATE_MERCHANT, tx.UpdateMerchant("Bob", "", ENC), "missing_role")
    # Suspension stops new business.
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr("merchant"), False))
    assert merchant_view(chain.state, chain.addr("merchant")).status == "suspended"
    chain.fails(
        "merchant",
        tx.CREATE_LISTING,
        tx.CreateListing("Pot", "", 5, 1, b""),
        "merchant_not_approved",
    )


def test_a_registrar_cannot_register_as_a_merchant():
    # A merchant is a party to its orders and a registrar may not rule its own: as the
    # chain's only registrar, its escalated orders could never be ruled, and a buyer's
    # escrow would wait on the merchant's own refund (tests/apps/commerce/test_orders.py,
    # test_a_registrar_cannot_buy).
    chain = new_chain()
    r = chain.fails(
        "registrar",
        tx.REGISTER_MERCHANT,
        tx.RegisterMerchant("Gov shop", "", ENC),
        "registrar_party",
    )
    assert "rules escalated disputes" in r.message
    assert merchant_view(chain.state, chain.addr("registrar")) is None


def test_suspended_merchant_gets_no_orders_but_finishes_open_ones():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr("merchant"), False))
    chain.fails("bob", tx.PLACE_ORDER, shop.order("bob"), "merchant_not_approved")
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))


def test_roles():
    chain = new_chain()
    r = chain.fails(
        "alice",
        tx.SET_ROLES,
        tx.SetRoles(chain.addr("bob"), int(Role.ARBITER), b""),
        "missing_role",
    )
    assert r.message.startswith("setting roles requires role registrar")
    chain.fails(
        "registrar",
        tx.SET_ROLES,
        tx.SetRoles(chain.addr("bob"), int(Role.REGISTRAR), b""),
        "invalid_roles",
    )
    chain.fails("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("bob"), 64, b""), "invalid_roles")
    chain.fails(
        "registrar",
        tx.SET_ROLES,
        tx.SetRoles(chain.addr("bob"), int(Role.AUDITOR), b""),
        "invalid_key",
    )
    chain.fails(
        "registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("bob"), 2, b"\x01"), "invalid_key"
    )
    both = int(Role.ARBITER | Role.INSPECTOR)
    r = chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("bob"), both, b""))
    assert r.events[0].get("roles") == "arbiter,inspector"
    assert roles_view(chain.state, chain.addr("bob")).roles == both
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("bob"), 0, b""))
    from apps.commerce import keys

    assert keys.role_key(chain.addr("bob")) not in chain.state
    # A registrar keeps its own role when given others.
    chain.ok(
        "registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("registrar"), int(Role.ARBITER), b"")
    )
    assert roles_view(chain.state, chain.addr("registrar")).roles == int(
        Role.REGISTRAR | Role.ARBITER
    )


def test_listing_versions_and_stock():
    chain = new_chain()
    open_shop(chain, stock=10)
    chain.fails(
        "alice", tx.UPDATE_LISTING, tx.UpdateListing(1, 1, "x", "", 5, b""), "not_authorized"
    )
    chain.fails(
        "merchant", tx.UPDATE_LISTING, tx.UpdateListing(1, 2, "x", "", 5, b""), "stale_version"
    )
    chain.fails(
        "merchant", tx.UPDATE_LISTING, tx.UpdateListing(1, 1, "x", "", 0, b""), "invalid_price"
    )
    chain.fails(
        "merchant", tx.UPDATE_LISTING, tx.UpdateListing(1, 1, "x", "", 5, b"\x01"), "invalid_hash"
    )
    chain.ok(
        "merchant", tx.UPDATE_LISTING, tx.UpdateListing(1, 1, "Tea pot v2", "", 1_500, b"\x02" * 32)
    )
    view = listing_view(chain.state, 1)
    assert (view.version, view.title, view.price) == (2, "Tea pot v2", 1_500)
    # Old versions stay readable (orders pin them).
    assert listing_terms(chain.state, 1, 1).price == 1_000
    chain.ok("merchant", tx.RESTOCK, tx.StockChange(1, 5))
    chain.fails("merchant", tx.RESTOCK, tx.StockChange(1, 0), "invalid_quantity")
    chain.fails("merchant", tx.WITHDRAW_STOCK, tx.StockChange(1, 16), "insufficient_stock")
    chain.ok("merchant", tx.WITHDRAW_STOCK, tx.StockChange(1, 6))
    lst = get_listing(chain.state, 1)
    assert (lst.total, lst.available) == (9, 9)
    chain.ok("merchant", tx.DELIST, tx.ListingRef(1))
    chain.fails("merchant", tx.DELIST, tx.ListingRef(1), "listing_inactive")
    chain.fails("merchant", tx.RESTOCK, tx.StockChange(1, 1), "listing_inactive")
    chain.fails("merchant", tx.RESTOCK, tx.StockChange(2, 1), "unknown_listing")
    assert [v.id for v in listings(chain.state)] == [1]


def test_disclosure_to_an_auditor():
    chain = new_chain()
    shop = open_shop(chain)
    auditor_private, auditor_public = enc_keys("auditor")
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", address="7 Harbour Rd"))
    view = order_view(chain.state, 1, chain.addr("merchant"))
    plain = open_plaintext(shop.enc_private, view.sealed_address)
    copy = reseal(auditor_public, plain)
    chain.fails(
        "merchant",
        tx.DISCLOSE,
        tx.Disclose(1, chain.addr("auditor"), auditor_public, copy),
        "missing_role",
    )
    chain.ok(
        "registrar",
        tx.SET_ROLES,
        tx.SetRoles(chain.addr("auditor"), int(Role.AUDITOR), auditor_public),
    )
    chain.fails(
        "stranger",
        tx.DISCLOSE,
        tx.Disclose(1, chain.addr("auditor"), auditor_public, copy),
        "not_authorized",
    )
    chain.fails(
        "merchant",
        tx.DISCLOSE,
        tx.Disclose(1, chain.addr("auditor"), auditor_public, b"\x00" * 48),
        "invalid_sealed_address",
    )
    r = chain.ok(
        "merchant", tx.DISCLOSE, tx.Disclose(1, chain.addr("auditor"), auditor_public, copy)
    )
    assert r.events[0].kind == "commerce.disclosed"
    # The auditor sees the order with its own copy, opens it and checks the commitment.
    seen = order_view(chain.state, 1, chain.addr("auditor"))
    assert seen.sealed_address is None
    (disclosure,) = seen.disclosures
    assert disclosure.auditor_key == auditor_public
    assert (
        open_address(auditor_private, disclosure.ciphertext, seen.address_commitment)
        == "7 Harbour Rd"
    )


def test_a_disclosure_sealed_to_a_key_the_auditor_no_longer_has_is_refused():
    """The registrar rotated the auditor's key between the merchant's read of it and its
    disclosure: the chain recorded the copy under the new key, which cannot open it (the
    CLI opens a copy with the key its record names), as it would refuse an order sealed
    to a merchant's old key."""
    chain = new_chain()
    shop = open_shop(chain)
    old_private, old_public = enc_keys("auditor")
    new_private, new_public = enc_keys("auditor, rotated")
    auditor = chain.addr("auditor")
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(auditor, int(Role.AUDITOR), old_public))
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", address="7 Harbour Rd"))
    plain = open_plaintext(
        shop.enc_private, order_view(chain.state, 1, chain.addr("merchant")).sealed_address
    )
    copy = reseal(old_public, plain)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(auditor, int(Role.AUDITOR), new_public))
    r = chain.fails("merchant", tx.DISCLOSE, tx.Disclose(1, auditor, old_public, copy), "stale_key")
    assert new_public.hex() in r.message
    # Sealed again to the key the auditor holds now, it is recorded under that key.
    copy = reseal(new_public, plain)
    chain.ok("merchant", tx.DISCLOSE, tx.Disclose(1, auditor, new_public, copy))
    (disclosure,) = order_view(chain.state, 1, auditor).disclosures
    assert disclosure.auditor_key == new_public
    commitment = order_view(chain.state, 1, auditor).address_commitment
    assert open_address(new_private, disclosure.ciphertext, commitment) == "7 Harbour Rd"
    assert old_private != new_private


def test_order_visibility():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    assert order_view(chain.state, 1, chain.addr("alice")).sealed_address is not None
    assert order_view(chain.state, 1, chain.addr("merchant")).sealed_address is not None
    assert order_view(chain.state, 1, chain.addr("host")).sealed_address is None
    assert order_view(chain.state, 1, chain.addr("registrar")).sealed_address is None
    with pytest.raises(ViewDenied) as info:
        order_view(chain.state, 1, chain.addr("stranger"))
    assert info.value.code == "forbidden"
    assert order_view(chain.state, 2, chain.addr("alice")) is None
    chain.ok("bob", tx.PLACE_ORDER, shop.order("bob"))
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    assert orders_of(chain.state, chain.addr("alice")) == ([3, 1], 2)
    assert orders_of(chain.state, chain.addr("alice"), before=3) == ([1], 2)
    assert orders_of(chain.state, chain.addr("merchant"), "merchant") == ([3, 2, 1], 3)
    assert orders_of(chain.state, chain.addr("merchant"), "merchant", limit=1) == ([3], 3)
    assert orders_of(chain.state, chain.addr("bob")) == ([2], 1)
    assert orders_of(chain.state, chain.addr("carol")) == ([], 0)
    # A cursor that is not the party's order gives nothing.
    assert orders_of(chain.state, chain.addr("bob"), before=3) == ([], 1)


def test_chain_without_commerce_refuses_commerce_txs():
    chain = new_chain(commerce=False)
    chain.fails(
        "merchant", tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", ENC), "commerce_disabled"
    )
    chain.wait(10**9)  # hooks do nothing
