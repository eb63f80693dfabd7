"""Commerce in an issued currency: a listing priced in USD; orders, escrow, refunds, splits,
payouts and tips move USD; fees stay native; every invariant holds per currency (the
chain helper checks them after each block, USD conservation included)."""

from __future__ import annotations

import pytest

from apps.commerce import payloads as tx
from apps.commerce.model import AuctionMode, AuctionStatus, OrderState
from apps.commerce.sealing import seal_address
from apps.commerce.store import escrow
from apps.commerce.views import get_auction, get_listing, get_order
from tests.apps.commerce.helpers import (
    FEE,
    PRICE,
    TREASURY,
    item,
    new_chain,
    open_shop,
)
from vm import get_currency
from vm.currency import BURN, CURRENCY_TRANSFER, MINT, Burn, CurrencyTransfer, Mint

USD = "USD"
FUNDS = 100 * PRICE


def usd_chain():
    """A chain with USD issued by ``issuer``; alice and bob hold USD."""
    chain = new_chain("issuer")
    chain.add_currency(USD, "issuer")
    for buyer in ("alice", "bob"):
        chain.ok("issuer", MINT, Mint(USD, chain.addr(buyer), FUNDS))
    return chain


def usd(chain, who) -> int:
    return chain.balance(who, USD)


def test_pay_in_usd_and_settle_fees_stay_native():
    chain = usd_chain()
    shop = open_shop(chain, currency=USD, host_bps=1_000)
    assert get_listing(chain.state, 1).currency == USD
    native = {n: chain.balance(n) for n in ("alice", "merchant", "host")}
    receipt = chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 3))
    assert receipt.events[0].get("currency") == USD
    amount = 3 * PRICE
    assert usd(chain, "alice") == FUNDS - amount
    assert escrow(chain.state, USD).held == amount and escrow(chain.state).held == 0
    assert get_order(chain.state, 1).currency == USD
    assert receipt.fee == FEE and chain.balance("alice") == native["alice"] - FEE
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    payout = chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1)).events
    assert [e.get("currency") for e in payout if e.kind == "commerce.payout"] == [USD]
    fee, commission = amount * 200 // 10_000, amount * 1_000 // 10_000
    assert usd(chain, "merchant") == amount - fee - commission
    assert usd(chain, "host") == commission and usd(chain, TREASURY) == fee
    assert escrow(chain.state, USD).held == 0
    # Native balances moved by transaction fees only.
    assert chain.balance("alice") == native["alice"] - 2 * FEE
    assert chain.balance("merchant") == native["merchant"] - 2 * FEE
    assert chain.balance("host") == native["host"]


def test_an_auction_of_a_usd_listing_bids_refunds_and_settles_in_usd():
    """Bids on a USD listing's auction hold USD, an outbid leader gets USD back, a leader's
    maximum counts only as far as its USD, and the won order settles in USD; fees native."""
    chain = usd_chain()
    shop = open_shop(chain, currency=USD, host_bps=1_000)
    native = {n: chain.balance(n) for n in ("alice", "bob", "merchant")}
    start = tx.StartAuction(1, 1, 100, 0, 0, 30_000, int(AuctionMode.TIMED))
    chain.ok("merchant", tx.START_AUCTION, start)
    ciphertext, commitment, _ = seal_address(shop.enc_public, "1 Main St")

    def bid(who: str, top: int) -> None:
        chain.ok(who, tx.BID, tx.Bid(1, top, shop.enc_public, commitment, ciphertext))

    bid("alice", 300)
    assert usd(chain, "alice") == FUNDS - 100
    assert escrow(chain.state, USD).held == 100 and escrow(chain.state, USD).open_orders == 0
    assert escrow(chain.state).held == 0
    # The proxy answers bob for alice, from her USD.
    bid("bob", 150)
    assert usd(chain, "alice") == FUNDS - 155 and usd(chain, "bob") == FUNDS
    assert escrow(chain.state, USD).held == 155
    # Her maximum counts only as far as her USD, however much native she holds: with her
    # USD sent away, bob's 200 beats what it is worth (155), and she is refunded in USD.
    chain.ok("alice", CURRENCY_TRANSFER, CurrencyTransfer(USD, chain.addr("carol"), FUNDS - 155))
    bid("bob", 200)
    assert usd(chain, "alice") == 155 and usd(chain, "bob") == FUNDS - 160
    assert escrow(chain.state, USD).held == 160 and escrow(chain.state).held == 0

    chain.wait(31_000)
    a = get_auction(chain.state, 1)
    assert (a.status, a.held, a.order_id) == (AuctionStatus.SOLD, 0, 1)
    order = get_order(chain.state, 1)
    assert (order.buyer, order.amount, order.currency) == (chain.addr("bob"), 160, USD)
    assert escrow(chain.state, USD).held == 160 and escrow(chain.state, USD).open_orders == 1
    assert escrow(chain.state).open_orders == 0
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    payout = chain.ok("bob", tx.CONFIRM_DELIVERY, tx.OrderRef(1)).events
    assert [e.get("currency") for e in payout if e.kind == "commerce.payout"] == [USD]
    assert usd(chain, TREASURY) == 160 * 200 // 10_000
    assert usd(chain, "merchant") + usd(chain, "host") + usd(chain, TREASURY) == 160
    assert escrow(chain.state, USD).held == 0 and usd(chain, "bob") == FUNDS - 160
    # Native balances moved by transaction fees only.
    assert chain.balance("alice") == native["alice"] - 2 * FEE
    assert chain.balance("bob") == native["bob"] - 3 * FEE
    assert chain.balance("merchant") == native["merchant"] - 2 * FEE


def test_refunds_and_a_split_ruling_in_usd():
    chain = usd_chain()
    shop = open_shop(chain, currency=USD)
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("arbiter"), 2, b""))
    # Partial refund, then cancel: all back in USD.
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 300))
    assert usd(chain, "alice") == FUNDS - 2 * PRICE + 300
    chain.ok("alice", tx.CANCEL_ORDER, tx.OrderRef(1))
    assert usd(chain, "alice") == FUNDS and get_order(chain.state, 1).refunded == 2 * PRICE
    # Declined and expired orders refund in USD too.
    chain.ok("bob", tx.PLACE_ORDER, shop.order("bob", 1))
    chain.ok("merchant", tx.DECLINE_ORDER, tx.OrderRef(2))
    chain.ok("bob", tx.PLACE_ORDER, shop.order("bob", 1))
    chain.wait(11 * 60_000)
    assert get_order(chain.state, 3).state == OrderState.EXPIRED
    assert usd(chain, "bob") == FUNDS
    # A dispute split: 40% back to the buyer, the rest to the seller side, in USD.
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 4))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(4))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(4, b"\x02" * 32, ()))
    chain.ok("alice", tx.OPEN_DISPUTE, tx.OpenDispute(4, "cracked"))
    chain.ok("arbiter", tx.RULE, tx.Rule(4, 4_000))
    amount = 4 * PRICE
    to_buyer = amount * 4_000 // 10_000
    seller = amount - to_buyer
    fee, commission = seller * 200 // 10_000, seller * 1_000 // 10_000
    assert usd(chain, "alice") == FUNDS - amount + to_buyer
    assert usd(chain, "merchant") == seller - fee - commission
    assert usd(chain, "host") == commission and usd(chain, TREASURY) == fee
    assert escrow(chain.state, USD).held == 0


def test_deal_tip_and_redeem_in_usd():
    chain = usd_chain()
    shop = open_shop(chain, currency=USD)
    t0 = chain.time_ms
    chain.ok(
        "merchant",
        tx.OPEN_DEAL,
        tx.OpenDeal(shop.session, shop.listing, 700, 5, 2, t0, t0 + 30 * 60_000),
    )
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", 2, deal=1, price=700))
    assert usd(chain, "alice") == FUNDS - 1_400
    # A deal sells in its listing's currency only.
    chain.fails(
        "bob",
        tx.PLACE_ORDER,
        shop.order("bob", 1, deal=1, price=700, currency=""),
        "currency_mismatch",
    )
    # Tips: USD to the host; tips_total counts native tips only.
    receipt = chain.ok("bob", tx.TIP, tx.Tip(shop.session, 250, "great show", USD))
    assert receipt.events[0].get("currency") == USD
    assert usd(chain, "host") == 250 and usd(chain, "bob") == FUNDS - 250
    chain.fails("bob", tx.TIP, tx.Tip(shop.session, 1, "", "EUR"), "unknown_currency")
    chain.fails("bob", tx.TIP, tx.Tip(shop.session, FUNDS, "", USD), "insufficient_funds")
    # The host redeems what it was tipped: supply shrinks, conservation still holds.
    chain.ok("host", BURN, Burn(USD, 250, b"payout-ref"))
    currency = get_currency(chain.state, USD)
    assert (currency.minted, currency.burned) == (2 * FUNDS, 250)
    assert usd(chain, "host") == 0


def test_hostile_listings_and_orders_get_receipt_codes():
    chain = usd_chain()
    shop = open_shop(chain)  # a native listing (1)
    for symbol in ("EUR", "usd", "USD\x00", "ＵＳＤ"[:2]):
        chain.fails(
            "merchant",
            tx.CREATE_LISTING,
            tx.CreateListing("Cup", "", PRICE, 5, b"", symbol),
            "unknown_currency",
        )
    chain.ok("merchant", tx.CREATE_LISTING, tx.CreateListing("Cup", "", PRICE, 5, b"", USD))
    # Paying a listing in another currency than its own, either way round.
    chain.fails("alice", tx.PLACE_ORDER, shop.order("alice", currency=USD), "currency_mismatch")
    chain.fails(
        "alice",
        tx.PLACE_ORDER,
        shop.order("alice", listing=2, session=0, currency=""),
        "currency_mismatch",
    )
    chain.fails(
        "alice",
        tx.PLACE_ORDER,
        shop.order("alice", listing=2, session=0, currency="usd"),
        "currency_mismatch",
    )
    # More than the buyer holds in USD, however much native it holds.
    chain.fails(
        "carol",
        tx.PLACE_ORDER,
        shop.order("carol", listing=2, session=0, currency=USD),
        "insufficient_funds",
    )
    # A revoked currency takes no new listings; open business in it runs to its end.
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice", listing=2, session=0, currency=USD))
    chain.revoke_currency(USD)
    chain.fails(
        "merchant",
        tx.CREATE_LISTING,
        tx.CreateListing("Mug", "", PRICE, 5, b"", USD),
        "currency_revoked",
    )
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, PRICE))
    assert usd(chain, "alice") == FUNDS


@pytest.mark.parametrize("currency", ["", USD])
def test_items_pass_to_the_buyer_whatever_the_currency(currency):
    chain = usd_chain()
    chain.ok("registrar", tx.SET_ROLES, tx.SetRoles(chain.addr("merchant"), 4, b""))
    shop = open_shop(chain, currency=currency)
    chain.ok(
        "merchant",
        tx.REGISTER_ITEM,
        tx.RegisterItem(item("C1"), "teapot", "urn:epc:id:sgln:0950600.00001.0", chain.time_ms),
    )
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, (item("C1"),)))
    chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    assert chain.balance("merchant", currency) >= PRICE * 8 // 10
