"""Random sequences of every commerce transaction, valid and invalid, through real blocks.

Each rule signs transactions into the pending block; ``end_block`` executes
the block through ``Executor.execute_block`` (strict) after a random block-time
advance (short, or long enough to pass deadlines and deal ends), then checks:
tokens conserved, no negative balance or stock, deal allocations and
per-buyer caps, each currency's escrow equal to its open orders and live bids, each live
auction's leader holding exactly the price, every auction ending exactly once,
every order in exactly one known state, terminal states final, and every failure code one its type
declares (and the executor holds each transaction's events and key prefixes to
its declaration too).

Rules are few and broad (each picks one of several transaction kinds) so that
every kind is drawn often; ``progress`` drives recent orders down their
lifecycle with the right signer, the other rules mostly try anything.

Bounds are small (3 open deals per merchant, 4 per deal-end bucket, 3 deadline actions
a block, so every kind of deadline carries over and the kinds take turns) and amounts
reach u64 limits (a supply of nearly 2**64, restocks of 2**64-1, tips of whole
balances that the host passes back), so the merchant and bucket limits and the
checked stock sum are hit on every run (a session's tip total passing 2**64-1 is
possible but rarely reached); the checks include each bucket holding exactly the
open deals of its minute within its cap, and each merchant's count of open deals.

Money comes in two currencies: the native token, and USD issued by ``iss`` (m1's
listings are priced in USD, m2's in the native token; new listings, orders and
tips name either, a wrong one, or one that does not exist). The issuer mints up to
the u64 limit, holders transfer and redeem, and conservation, the escrows and every
other invariant are checked per currency.

Items are owned: a settled order makes its buyer the owner, and the owner (b1 is a
buyer that is also an approved merchant, and owns S1 from the start), a holder or anyone
else tries to resell items (resale listings name the item, and shipping one must carry
exactly it; an auction or a deal of b1's session may hold the listing's one unit);
the checks include each owner being the buyer of a settled order that carried the
item and paid the seller something, each item offered by one resale listing at most
(the invariants), and each item ended by whom it belonged to. Shipped items travel
(``carry``): along their order's way, and back to the merchant once the order gave its
buyer all it paid (a full refund, or a ruling of the whole escrow to the buyer).
A settled resale is rare in these runs: tests/apps/commerce/test_resale.py drives it;
``offered`` walks S1 through its resale step by step (listed, a hand-off refused while
the listing is active, delisted and lent out, ordered, shipped, refunded in full or
ruled back, settled). The auditor discloses to a key the registrar rotates, and every
recorded copy must open with the key its record names.

One key holds several roles: a merchant orders from and bids on its own listings, the
host buys through its own session, the arbiter role moves between an outsider, a buyer,
the host and a merchant (or is taken away), so arbiters judge disputes they are party
to, and the registrar tries to buy, bid and sell (refused: an escalated order of its own
could never be ruled). The invariants include that no escrow is stuck: each open order's
deadline queued, a registrar no party to it, deals and auctions where their clocks reach.
"""

from dataclasses import replace

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from apps.commerce import check_invariants, keys
from apps.commerce import payloads as tx
from apps.commerce.keys import item_ref
from apps.commerce.model import (
    TERMINAL_STATES,
    AuctionStatus,
    DealBucket,
    DealStatus,
    Disclosure,
    ItemStatus,
    ListingStatus,
    OrderState,
    Role,
)
from apps.commerce.sealing import open_address, open_plaintext, reseal, seal_address
from apps.commerce.store import peek_next_id
from apps.commerce.views import (
    get_auction,
    get_deal,
    get_item,
    get_listing,
    get_merchant,
    get_order,
    item_history,
    roles_view,
)
from tests.apps.commerce.helpers import MIN, TEST_PARAMS, Chain, enc_keys, item
from vm import TRANSFER, Transfer
from vm.currency import BURN, CURRENCY_TRANSFER, MINT, Burn, CurrencyTransfer, Mint

MERCHANTS = ("m1", "m2")
BUYERS = ("b1", "b2", "b3")
ACTORS = (*MERCHANTS, *BUYERS, "host", "arb", "maker", "carrier", "reg", "iss", "aud")
USD = "USD"
# What a listing, order or tip may name: the two currencies, and none (exactly).
currencies = st.sampled_from(["", "", USD, USD, "EUR", "usd"])
CURRENCY_OF = {"m1": USD, "m2": ""}
# b1 buys, and also sells: it resells the items it comes to own.
SELLERS = (*MERCHANTS, "b1")
ENC = {m: enc_keys(m)[1] for m in SELLERS}
SEALED = {m: seal_address(ENC[m], "1 Main St", salt=bytes(32))[:2] for m in SELLERS}
SERIALS = ("S1", "S2", "S3", "S4")
# The auditor's keys: the registrar rotates them (``disclose``); private by public.
AUDITOR_KEYS = tuple(enc_keys(name) for name in ("aud", "aud, rotated"))
OPENS = {public: private for private, public in AUDITOR_KEYS}

anyone = st.sampled_from(ACTORS)
ids = st.integers(0, 9).map(lambda i: (1, 1, 1, 1, 1, 2, 2, 3, 0, 7)[i])
DEAL_MISTAKES = {
    "price": {"price": 0},
    "allocation": {"allocation": 10_000},
    "cap": {"per_buyer_cap": 0},
    "window": {"end_ms": 0},
    "session": {"session_id": 9},
    "listing": {"listing_id": 2},
    "signer": {},
}
U64 = 2**64 - 1
AUCTION_MISTAKES = {
    "price": {"start_price": 0},
    "huge price": {"start_price": U64},
    "reserve": {"reserve": 5},
    "past": {"start_ms": 5_000},
    "far": {"start_ms": U64},
    "duration": {"duration_ms": 4_000},
    "mode": {"mode": 3},
    "listing": {"listing_id": 2},
    "signer": {},
}
# Who else orders, beside the buyers: a merchant (its own listings: self_dealing), the
# host (through its own session), the arbiter (then a party to what it would judge), the
# registrar (refused: an escalated order of its own could never be ruled).
PARTIES = ("m1", "host", "arb", "reg")
# Who may hold the arbiter role (``roles`` moves it): buyers and the host are parties too.
JUDGES = ("arb", "arb", "b2", "host", "m2")
# Three deadline actions a block, fewer than the kinds: deadlines of every kind carry
# over, in turns, and each open order's deadline must stay queued (the invariants).
PARAMS = replace(
    TEST_PARAMS, max_open_deals_per_merchant=3, max_deals_per_bucket=4, max_deadlines_per_block=3
)
advances = st.sampled_from([1_000, 1_000, 30_000, 5 * MIN, 11 * MIN, 21 * MIN, 40 * MIN])


class CommerceMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        balances = {n: U64 // len(ACTORS) for n in ACTORS}
        self.chain = Chain(balances, params=PARAMS, registrars=("reg",), check=False)
        self.pending = []
        self.terminal = {}
        self.auction_ends = {}
        # Codes some transactions must end with (by hash; ``offered``), checked at end_block.
        self.expected = {}
        c = self.chain
        c.add_currency(USD, "iss")
        for b in BUYERS:
            c.ok("iss", MINT, Mint(USD, c.addr(b), U64 // 8))
        for m in MERCHANTS:
            c.ok(m, tx.REGISTER_MERCHANT, tx.RegisterMerchant(m, "", ENC[m]))
            c.ok("reg", tx.APPROVE_MERCHANT, tx.ApproveMerchant(c.addr(m), True))
            listing = tx.CreateListing(f"{m} goods", "", 700, 60, b"", CURRENCY_OF[m])
            c.ok(m, tx.CREATE_LISTING, listing)
        c.ok("b1", tx.REGISTER_MERCHANT, tx.RegisterMerchant("b1", "", ENC["b1"]))
        c.ok("reg", tx.APPROVE_MERCHANT, tx.ApproveMerchant(c.addr("b1"), True))
        c.ok("reg", tx.SET_ROLES, tx.SetRoles(c.addr("arb"), int(Role.ARBITER), b""))
        c.ok("reg", tx.SET_ROLES, tx.SetRoles(c.addr("maker"), int(Role.MAKER), b""))
        c.ok("reg", tx.SET_ROLES, tx.SetRoles(c.addr("carrier"), int(Role.CARRIER), b""))
        aud = tx.SetRoles(c.addr("aud"), int(Role.AUDITOR), AUDITOR_KEYS[0][1])
        c.ok("reg", tx.SET_ROLES, aud)
        c.ok("m1", tx.OPEN_SESSION, tx.OpenSession(c.addr("host"), 1_500, "live"))
        c.ok("host", tx.PIN, tx.PinListing(1, 1))
        c.ok("m2", tx.OPEN_SESSION, tx.OpenSession(c.addr("host"), 0, "live"))
        c.ok("host", tx.PIN, tx.PinListing(2, 2))
        # Items start in the merchants' hands, ready to ship (and to be resold).
        for serial, m in (("S1", "m1"), ("S2", "m2"), ("S4", "m1")):
            it = item(serial)
            c.ok("maker", tx.REGISTER_ITEM, tx.RegisterItem(it, "", "urn:x", c.time_ms))
            c.ok("maker", tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, c.addr(m)))
            c.ok(m, tx.ACCEPT_CUSTODY, tx.ItemRef(it))
        # b1 buys S1 from m1 and owns it: it resells it from the start (one listing at a
        # time offers it, so at most one buyer's escrow waits for it).
        c.ok("b1", tx.PLACE_ORDER, self.order_payload(1, 1, 0, 0))
        c.ok("m1", tx.ACCEPT_ORDER, tx.OrderRef(1))
        c.ok("m1", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, (item("S1"),)))
        c.ok("b1", tx.CONFIRM_DELIVERY, tx.OrderRef(1))
        # b1 resells through a session of its own too (auctions and deals hold the one
        # unit of a resale listing), and may end S1 while it owns and holds it.
        c.ok("b1", tx.OPEN_SESSION, tx.OpenSession(c.addr("host"), 0, "resale"))
        c.ok("reg", tx.SET_ROLES, tx.SetRoles(c.addr("b1"), int(Role.INSPECTOR), b""))

    # --- helpers ---

    @property
    def state(self):
        return self.chain.state

    def add(self, who, tx_type, payload, expect=None):
        signed = self.chain.sign(who, tx_type, payload)
        self.pending.append(signed)
        if expect is not None:
            self.expected[signed.hash] = expect
        # Keep blocks small: close one when it is full.
        if len(self.pending) >= 12:
            self.end_block(1_000)

    def bucket(self, end_ms):
        raw = self.state.get(keys.deal_bucket_key(end_ms // PARAMS.deal_bucket_ms))
        return () if raw is None else DealBucket.decode(raw).deal_ids

    def name_of(self, address):
        return next(n for n in ACTORS if self.chain.addr(n) == address)

    def pick_order(self, data):
        """Mostly a recent order, sometimes any id (unknown ones included)."""
        top = peek_next_id(self.state, keys.ORDER_IDS)
        if top > 1 and data.draw(st.integers(0, 4)):
            return data.draw(st.integers(max(1, top - 5), top - 1))
        return data.draw(st.integers(0, top))

    def order_payload(self, listing_id, quantity, deal_id, session_id, wrong=None):
        lst = get_listing(self.state, listing_id)
        deal = get_deal(self.state, deal_id) if deal_id else None
        price = deal.price if deal else (lst.price if lst else 700)
        price += wrong == "price"
        version = (lst.version if lst else 1) + (wrong == "version")
        merchant = self.name_of(lst.merchant) if lst else "m1"
        merchant = merchant if merchant in ENC else "m1"
        sealed, commitment = SEALED[merchant]
        key = ENC["m2" if merchant == "m1" else "m1"] if wrong == "key" else ENC[merchant]
        currency = lst.currency if lst else ""
        if wrong == "currency":
            currency = "" if currency else USD
        return tx.PlaceOrder(
            listing_id,
            version,
            quantity,
            price,
            session_id,
            deal_id,
            key,
            commitment,
            sealed,
            currency,
        )

    # --- rules ---

    @rule(data=st.data(), kind=st.integers(0, 6), who=st.sampled_from(("m1", "m1", "m2", "b1")))
    def catalogue(self, data, kind, who):
        """Listings and merchant approval."""
        lid = data.draw(ids)
        lst = get_listing(self.state, lid)
        if kind == 0:
            price, stock = data.draw(st.sampled_from([(900, 20), (0, 5), (50, 0)]))
            currency = data.draw(currencies)
            listing = tx.CreateListing("thing", "", price, stock, b"", currency)
            self.add(who, tx.CREATE_LISTING, listing)
        elif kind == 1:
            version = (lst.version if lst else 1) + data.draw(st.sampled_from([0, 0, 1]))
            price = data.draw(st.sampled_from([800, 0]))
            self.add(who, tx.UPDATE_LISTING, tx.UpdateListing(lid, version, "v", "", price, b""))
        elif kind in (2, 3):
            qty = data.draw(st.sampled_from([3, 0, 100, U64]))
            self.add(who, tx.RESTOCK if kind == 2 else tx.WITHDRAW_STOCK, tx.StockChange(lid, qty))
        elif kind == 4:
            self.add(who, tx.DELIST, tx.ListingRef(lid))
        else:
            merchant = self.chain.addr(data.draw(st.sampled_from(MERCHANTS)))
            approved = data.draw(st.sampled_from([True, True, False]))
            signer = data.draw(st.sampled_from(("reg", "reg", "b1")))
            self.add(signer, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant, approved))

    @rule(data=st.data(), kind=st.integers(0, 7))
    def live(self, data, kind):
        """Sessions, pins, deals, tips."""
        sid = data.draw(ids)
        who = data.draw(st.sampled_from(("m1", "m1", "host", "m2", "b2")))
        now = self.chain.time_ms
        if kind == 0:
            bps = data.draw(st.sampled_from([1_000, 0, 2_500]))
            self.add(who, tx.OPEN_SESSION, tx.OpenSession(self.chain.addr("host"), bps, "live"))
        elif kind in (1, 2):
            kind_name = tx.PIN if kind == 1 else tx.UNPIN
            self.add(who, kind_name, tx.PinListing(sid, data.draw(ids)))
        elif kind in (3, 4):
            # A valid deal on session 1 / listing 1, or one with a single thing wrong.
            wrong = data.draw(st.sampled_from([None] * 5 + list(DEAL_MISTAKES)))
            allocation = data.draw(st.sampled_from([3, 5, 10]))
            start = now + data.draw(st.sampled_from([0, 0, -MIN, 2 * MIN]))
            end = start + data.draw(st.sampled_from([30 * MIN, 10 * MIN]))
            n = data.draw(st.sampled_from([1, 1, 2]))
            deal = dict(
                session_id=n,
                listing_id=n,
                price=600,
                allocation=allocation,
                per_buyer_cap=data.draw(st.sampled_from([1, 2, 3])),
                start_ms=start,
                end_ms=end,
            )
            if wrong is not None:
                deal.update(DEAL_MISTAKES[wrong])
            signer = MERCHANTS[(n == 1) == (wrong == "signer")]
            self.add(signer, tx.OPEN_DEAL, tx.OpenDeal(**deal))
        elif kind == 5:
            self.add(who, tx.CLOSE_DEAL, tx.DealRef(data.draw(ids)))
        elif kind == 6:
            # Rarely the session everything runs in.
            sid = data.draw(st.sampled_from([2, 3, 0, 1]))
            self.add(who, tx.CLOSE_SESSION, tx.SessionRef(sid))
        elif data.draw(st.booleans()):
            amount = data.draw(st.sampled_from([100, 0, 10**13, 9 * 10**17, U64]))
            self.add(data.draw(anyone), tx.TIP, tx.Tip(sid, amount, "gg", data.draw(currencies)))
        else:
            # The host passes tips back, so the same tokens can be tipped again.
            host = self.chain.balance("host")
            to = self.chain.addr(data.draw(st.sampled_from(BUYERS)))
            self.add("host", TRANSFER, Transfer(to, max(1, host - 10_000)))

    @rule(data=st.data(), n=st.integers(1, 5))
    def rush(self, data, n):
        """Counts and amounts to their bounds: deals of one unit ending in one minute
        (merchant and bucket limits), the largest tips (the session tip total)."""
        now = self.chain.time_ms
        end = (now // MIN + 12) * MIN + data.draw(st.sampled_from([0, 1_000]))
        for _ in range(n):
            if data.draw(st.booleans()):
                m = data.draw(st.sampled_from((1, 2)))
                deal = tx.OpenDeal(m, m, 600, 1, 1, now, end)
                self.add(MERCHANTS[m - 1], tx.OPEN_DEAL, deal)
            else:
                who = data.draw(st.sampled_from(BUYERS))
                amount = max(1, self.chain.balance(who) - 10_000)
                self.add(who, tx.TIP, tx.Tip(data.draw(st.sampled_from((1, 2))), amount, ""))

    @rule(data=st.data(), kind=st.integers(0, 3))
    def money(self, data, kind):
        """USD: the issuer (or an impostor) mints, to the u64 limit; holders pass USD
        around, redeem it, and the host and merchants hand it back to buyers."""
        amount = data.draw(st.sampled_from([1_000, 0, 10**15, U64]))
        symbol = data.draw(st.sampled_from([USD, USD, USD, "usd", "EUR"]))
        if kind == 0:
            who = data.draw(st.sampled_from(("iss", "iss", "b1")))
            to = self.chain.addr(data.draw(st.sampled_from(BUYERS)))
            self.add(who, MINT, Mint(symbol, to, amount))
        elif kind == 1:
            who = data.draw(st.sampled_from(("host", "m1", "reg", "b1")))
            held = self.chain.balance(who, USD)
            amount = data.draw(st.sampled_from([max(1, held), amount]))
            to = self.chain.addr(data.draw(st.sampled_from(BUYERS)))
            self.add(who, CURRENCY_TRANSFER, CurrencyTransfer(symbol, to, amount))
        else:
            who = data.draw(st.sampled_from((*BUYERS, "m1", "host")))
            amount = data.draw(st.sampled_from([max(1, self.chain.balance(who, USD) // 2), amount]))
            self.add(who, BURN, Burn(symbol, amount, b""))

    @rule(data=st.data(), n=st.integers(1, 4))
    def shop(self, data, n):
        """Buyers order: into one of the newest deals (so a buyer moves between deals and
        its count between its party record and a record of its own), by listing, the
        newest listing, or something wrong."""
        newest = peek_next_id(self.state, keys.DEAL_IDS) - 1
        for _ in range(n):
            buyer = data.draw(st.sampled_from((*BUYERS, *BUYERS, *PARTIES)))
            qty = data.draw(st.sampled_from([1, 1, 2, 0, 500]))
            wrong = data.draw(st.sampled_from([None] * 6 + ["price", "key", "version", "currency"]))
            how = data.draw(st.integers(0, 4))
            if how == 4:
                # The newest listing (often a resale).
                newest_listing = peek_next_id(self.state, keys.LISTING_IDS) - 1
                payload = self.order_payload(newest_listing, qty, 0, 0, wrong)
            elif how == 0 and newest:
                deal = get_deal(self.state, data.draw(st.integers(max(1, newest - 3), newest)))
                payload = self.order_payload(deal.listing_id, qty, deal.id, 0, wrong)
            elif how == 1:
                payload = self.order_payload(1, qty, 0, 1, wrong)  # through the session
            elif how == 2:
                payload = self.order_payload(data.draw(ids), qty, 0, 0, wrong)
            else:
                deal_id = data.draw(st.integers(0, newest + 1))
                payload = self.order_payload(data.draw(ids), qty, deal_id, data.draw(ids), wrong)
            self.add(buyer, tx.PLACE_ORDER, payload)

    @rule(data=st.data(), n=st.integers(1, 4))
    def rebuy(self, data, n):
        """Buyers order again, a unit at a time, in deals open now: a buyer moves between
        deals, its count with it (its party record holds its last deal's, a record of
        their own the others'), and reaches a deal's cap (``buyer_cap``)."""
        now = self.chain.time_ms
        live = [
            d
            for i in range(1, peek_next_id(self.state, keys.DEAL_IDS))
            if (d := get_deal(self.state, i)) is not None
            and d.status == DealStatus.OPEN
            and d.start_ms <= now < d.end_ms
        ]
        if sum(d.per_buyer_cap > 1 and d.sold < d.allocation for d in live) < 2:
            # Deals a buyer can come back to (m1's session 1 and listing 1), for a later
            # call: most deals the other rules open sell one unit or none.
            self.add("m1", tx.OPEN_DEAL, tx.OpenDeal(1, 1, 600, 10, 3, now, now + 30 * MIN))
        if not live:
            return
        for _ in range(n):
            deal = data.draw(st.sampled_from(live))
            buyer = data.draw(st.sampled_from(BUYERS))
            self.add(buyer, tx.PLACE_ORDER, self.order_payload(deal.listing_id, 1, deal.id, 0))

    @rule(data=st.data(), n=st.integers(1, 3))
    def progress(self, data, n):
        """The natural next step of recent orders, by the right party (mostly valid)."""
        top = peek_next_id(self.state, keys.ORDER_IDS)
        if top <= 1:
            return
        for oid in sorted({data.draw(st.integers(max(1, top - 8), top - 1)) for _ in range(n)}):
            self.step_order(oid, data.draw(st.integers(0, 9)))

    def step_order(self, oid, action):
        order = get_order(self.state, oid)
        buyer, merchant = self.name_of(order.buyer), self.name_of(order.merchant)
        state = OrderState(order.state)
        if state == OrderState.PLACED:
            if action < 6:
                self.add(merchant, tx.ACCEPT_ORDER, tx.OrderRef(oid))
            elif action < 8:
                self.add(buyer, tx.CANCEL_ORDER, tx.OrderRef(oid))
            else:
                self.add(merchant, tx.DECLINE_ORDER, tx.OrderRef(oid))
        elif state == OrderState.ACCEPTED:
            items = (item(SERIALS[action % 3]),) if action > 6 else ()
            resold = get_listing(self.state, order.listing_id).item_ref
            if resold and action > 2:
                # A resale ships the item it sold (mostly).
                items = tuple(item(s) for s in SERIALS if item_ref(item(s).gtin, s) == resold)
            self.add(merchant, tx.SHIP_ORDER, tx.ShipOrder(oid, b"\x01" * 32, items))
        elif state == OrderState.SHIPPED:
            if action < 4:
                self.add(buyer, tx.CONFIRM_DELIVERY, tx.OrderRef(oid))
            elif action < 7:
                self.add(
                    buyer if action < 6 else merchant, tx.OPEN_DISPUTE, tx.OpenDispute(oid, "x")
                )
            else:
                amount = order.escrow if action == 9 else max(1, order.escrow // 3)
                self.add(merchant, tx.REFUND, tx.Refund(oid, amount))
        elif state in (OrderState.DISPUTED, OrderState.ESCALATED):
            # Whoever holds the arbiter role now (``roles``), a party to the order at times.
            judge = JUDGES[action % len(JUDGES)] if state == OrderState.DISPUTED else "reg"
            if action == 9:
                self.add(merchant, tx.REFUND, tx.Refund(oid, order.escrow))
            elif action < 5:
                self.add(judge, tx.RULE, tx.Rule(oid, action * 2_500))
            # Otherwise leave it to the ruling deadline.
        elif state in (OrderState.COMPLETED, OrderState.RESOLVED):
            if action < 6:
                self.add(buyer, tx.REVIEW, tx.WriteReview(oid, 1 + action % 5, "fine"))
            else:
                self.add(merchant, tx.REPLY_REVIEW, tx.ReplyReview(oid, "thank you"))

    @rule(data=st.data())
    def quarrel(self, data):
        """Orders on their way end in disputes: an accepted order ships, a shipped one is
        disputed, a disputed one is judged by whoever holds the arbiter role now (a party
        to it at times: the host, a buyer, a merchant), an escalated one by the registrar
        (``progress`` reaches a dispute rarely: it takes four steps of one order)."""
        ways = (OrderState.ACCEPTED, OrderState.SHIPPED, OrderState.DISPUTED, OrderState.ESCALATED)
        orders = [
            o
            for i in range(1, peek_next_id(self.state, keys.ORDER_IDS))
            if (o := get_order(self.state, i)).state in ways
        ]
        if not orders:
            return
        order = data.draw(st.sampled_from(orders))
        state = OrderState(order.state)
        if state == OrderState.ACCEPTED:
            self.step_order(order.id, 0)
        elif state == OrderState.SHIPPED:
            who = order.buyer if data.draw(st.integers(0, 3)) else order.merchant
            self.add(self.name_of(who), tx.OPEN_DISPUTE, tx.OpenDispute(order.id, "no"))
        elif state == OrderState.DISPUTED and data.draw(st.booleans()):
            # A party to the order is made an arbiter, then judges it (``conflict``).
            parties = [p for p in (order.buyer, order.merchant, order.host) if p is not None]
            party = data.draw(st.sampled_from(parties))
            self.add("reg", tx.SET_ROLES, tx.SetRoles(party, int(Role.ARBITER), b""))
            self.add(self.name_of(party), tx.RULE, tx.Rule(order.id, 5_000))
        else:
            self.step_order(order.id, data.draw(st.integers(0, 4)))

    @rule(data=st.data(), kind=st.integers(0, 10))
    def meddle(self, data, kind):
        """Any order action, by anyone, on any order, with any amount."""
        oid = self.pick_order(data)
        who = data.draw(anyone)
        simple = (tx.CANCEL_ORDER, tx.DECLINE_ORDER, tx.ACCEPT_ORDER, tx.CONFIRM_DELIVERY)
        if kind < 4:
            self.add(who, simple[kind], tx.OrderRef(oid))
        elif kind == 4:
            items = (item(data.draw(st.sampled_from(SERIALS))),)
            self.add(who, tx.SHIP_ORDER, tx.ShipOrder(oid, b"\x02" * 32, items))
        elif kind == 5:
            amount = data.draw(st.sampled_from([1, 0, 10**6]))
            self.add(who, tx.REFUND, tx.Refund(oid, amount))
        elif kind == 6:
            self.add(who, tx.OPEN_DISPUTE, tx.OpenDispute(oid, "?"))
        elif kind == 7:
            self.add(who, tx.RULE, tx.Rule(oid, data.draw(st.sampled_from([5_000, 10_001]))))
        elif kind == 8:
            rating = data.draw(st.sampled_from([5, 0, 6]))
            self.add(who, tx.REVIEW, tx.WriteReview(oid, rating, "meh"))
        elif kind == 9:
            self.add(who, tx.REPLY_REVIEW, tx.ReplyReview(oid, "hm"))
        else:
            self.add(
                who, tx.DISCLOSE, tx.Disclose(oid, self.chain.addr("arb"), bytes(32), b"\x00" * 64)
            )

    @rule(data=st.data(), kind=st.integers(0, 5), n=st.integers(1, 4))
    def auction(self, data, kind, n):
        """Auctions: started (valid or with one thing wrong), bid on by several buyers in
        one block (maxima from too low to 2**64-1), cancelled, by anyone."""
        now = self.chain.time_ms
        newest = peek_next_id(self.state, keys.AUCTION_IDS) - 1
        if kind < 2:
            # A valid auction in session 1 or 2, or one with a single thing wrong (session
            # 1 auctions m1's listing, priced in USD: its bids move USD; session 2 native).
            m = data.draw(st.sampled_from((1, 1, 2)))
            wrong = data.draw(st.sampled_from([None] * 6 + list(AUCTION_MISTAKES)))
            auction = dict(
                session_id=m,
                listing_id=m,
                start_price=data.draw(st.sampled_from([10, 10, 700])),
                # 700: the listings' price, which a host's auction may not go under.
                reserve=data.draw(st.sampled_from([0, 0, 500, 700])),
                start_ms=data.draw(st.sampled_from([0, 0, now + 20_000])),
                duration_ms=data.draw(st.sampled_from([10_000, 30_000])),
                mode=data.draw(st.sampled_from([1, 2])),
            )
            if wrong is not None:
                auction.update(AUCTION_MISTAKES[wrong])
            who = (
                "b1"
                if wrong == "signer"
                else data.draw(st.sampled_from(("host", MERCHANTS[m - 1])))
            )
            self.add(who, tx.START_AUCTION, tx.StartAuction(**auction))
        elif kind < 5:
            for _ in range(n):
                aid = data.draw(st.sampled_from([newest, newest, max(1, newest - 1), 0]))
                a = get_auction(self.state, aid)
                merchant = "m2" if a and a.merchant == self.chain.addr("m2") else "m1"
                base = a.price if a else 10
                top = data.draw(st.sampled_from([base + 1, base + 40, base * 3, 5, U64]))
                sealed, commitment = SEALED[merchant]
                who = data.draw(st.sampled_from((*BUYERS, *BUYERS, "host", merchant, "reg", "arb")))
                payload = tx.Bid(aid, top, ENC[merchant], commitment, sealed)
                self.add(who, tx.BID, payload)
        else:
            who = data.draw(st.sampled_from(("host", "m1", "m2", "b3")))
            self.add(who, tx.CANCEL_AUCTION, tx.AuctionRef(data.draw(st.integers(0, newest + 1))))

    @rule(data=st.data(), kind=st.integers(0, 2))
    def roles(self, data, kind):
        """One key in several roles: the registrar (and the arbiter, and the host) try to
        sell, as they try to buy and bid in ``shop`` and ``auction``; the arbiter role
        moves to a buyer, the host or a merchant, who then judge disputes of orders they
        are party to (``conflict``: they escalate to the registrar), or is taken away."""
        if kind == 0:
            who = data.draw(st.sampled_from(("reg", "reg", "arb", "host")))
            self.add(who, tx.REGISTER_MERCHANT, tx.RegisterMerchant(who, "", ENC["m1"]))
        else:
            to = self.chain.addr(data.draw(st.sampled_from(JUDGES)))
            roles = data.draw(st.sampled_from([int(Role.ARBITER), int(Role.ARBITER), 0]))
            self.add("reg", tx.SET_ROLES, tx.SetRoles(to, roles, b""))

    @rule(data=st.data(), kind=st.integers(0, 5))
    def provenance(self, data, kind):
        it = item(data.draw(st.sampled_from(SERIALS)))
        now = self.chain.time_ms
        if kind == 0:
            who = data.draw(st.sampled_from(("maker", "maker", "carrier")))
            self.add(who, tx.REGISTER_ITEM, tx.RegisterItem(it, "", "urn:x", now))
        elif kind == 1:
            frm = data.draw(st.sampled_from(("maker", "carrier", "m1", "m2", "b1", "b2")))
            to = self.chain.addr(data.draw(st.sampled_from(("carrier", "m1", "m2", "b1", "b2"))))
            self.add(frm, tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, to))
        elif kind in (2, 3):
            who = data.draw(st.sampled_from(("carrier", "m1", "m2", "b1", "b2", "b3")))
            self.add(who, tx.ACCEPT_CUSTODY if kind == 2 else tx.REFUSE_CUSTODY, tx.ItemRef(it))
        elif kind == 4:
            who = data.draw(st.sampled_from(("carrier", "maker")))
            # Now and then its end: for its owner, or its maker before its first sale.
            step = data.draw(st.sampled_from(("inspecting", "inspecting", "decommissioning")))
            payload = tx.Attest(it, step, "ok", "urn:y", "", now, b"")
            self.add(who, tx.ATTEST, payload)
        else:
            # Resale: mostly by its owner, else by whoever holds or once sold it.
            found = get_item(self.state, it.gtin, it.serial)
            owner = self.name_of(found.owner) if found and found.owner else None
            who = data.draw(st.sampled_from((owner or "b1", owner or "m1", "m1", "b2")))
            stock = data.draw(st.sampled_from([1, 1, 1, 2]))
            price = data.draw(st.sampled_from([700, 1]))
            listing = tx.CreateListing("again", "", price, stock, b"", data.draw(currencies), it)
            self.add(who, tx.CREATE_LISTING, listing)

    @rule(data=st.data())
    def dispatch(self, data):
        """The newest order whose merchant holds an item ships with it (accepted first,
        if need be): ``progress`` mostly ships none, so that items travel, settle, and
        come back."""
        for oid in range(peek_next_id(self.state, keys.ORDER_IDS) - 1, 0, -1):
            order = get_order(self.state, oid)
            if order.state not in (OrderState.PLACED, OrderState.ACCEPTED):
                continue
            held = [
                s
                for s in SERIALS
                if (found := get_item(self.state, item(s).gtin, s)) is not None
                and found.custodian == order.merchant
                and not found.order_id
            ]
            if not held:
                continue
            merchant = self.name_of(order.merchant)
            if order.state == OrderState.PLACED:
                self.add(merchant, tx.ACCEPT_ORDER, tx.OrderRef(oid))
            items = (item(data.draw(st.sampled_from(held))),)
            self.add(merchant, tx.SHIP_ORDER, tx.ShipOrder(oid, b"\x03" * 32, items))
            return
        # None to ship: a buyer orders from a merchant holding an item, for a next call.
        listing = data.draw(st.sampled_from((1, 2)))
        buyer = data.draw(st.sampled_from(("b2", "b3")))
        self.add(buyer, tx.PLACE_ORDER, self.order_payload(listing, 1, 0, 0))

    @rule(data=st.data(), kind=st.integers(0, 3))
    def carry(self, data, kind):
        """A shipped item travels: its holder hands it to its order's buyer, merchant or
        a carrier (or tries a stranger), its receiver accepts or refuses, and its order
        ends on the way (a full refund, a ruling all for the buyer or a split); after a
        refund or a ruling all for the buyer it goes back to the merchant the same way."""
        locked = [
            (item(s), found)
            for s in SERIALS
            if (found := get_item(self.state, item(s).gtin, s)) is not None and found.order_id
        ]
        if not locked:
            return
        it, found = data.draw(st.sampled_from(locked))
        order = get_order(self.state, found.order_id)
        if kind == 3 and order.state in (OrderState.DISPUTED, OrderState.ESCALATED):
            judge = "arb" if order.state == OrderState.DISPUTED else "reg"
            bps = data.draw(st.sampled_from([10_000, 10_000, 5_000]))
            self.add(judge, tx.RULE, tx.Rule(order.id, bps))
            return
        if kind == 3 and order.state == OrderState.SHIPPED:
            refund = tx.Refund(order.id, order.escrow)
            self.add(self.name_of(order.merchant), tx.REFUND, refund)
            return
        if found.pending_to is not None and kind == 2:
            answer = data.draw(st.sampled_from([tx.ACCEPT_CUSTODY, tx.REFUSE_CUSTODY]))
            self.add(self.name_of(found.pending_to), answer, tx.ItemRef(it))
            return
        way = (order.buyer, order.merchant, self.chain.addr("carrier"), self.chain.addr("b3"))
        to = data.draw(st.sampled_from(way))
        self.add(self.name_of(found.custodian), tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, to))
        if kind < 2:
            # Mostly the receiver takes it in the same block.
            self.add(self.name_of(to), tx.ACCEPT_CUSTODY, tx.ItemRef(it))

    @rule(data=st.data(), kind=st.integers(0, 7))
    def resell(self, data, kind):
        """The owner of S1 (b1 at first) offers it again and again, delists, puts the
        listing's one unit in an auction or a deal of its session (the host may start
        the auction), now and then ends the item, and buyers order its newest listings:
        one listing offers it at a time, so at most one buyer's escrow waits for it
        (the invariants)."""
        it = item("S1")
        found = get_item(self.state, it.gtin, it.serial)
        owner = self.name_of(found.owner) if found.owner else "b1"
        newest = peek_next_id(self.state, keys.LISTING_IDS) - 1
        recent = data.draw(st.integers(max(1, newest - 2), newest))
        if data.draw(st.integers(0, 3)):
            # Mostly S1's newest resale listing (other rules list things meanwhile).
            ref = item_ref(it.gtin, it.serial)
            resales = [
                i for i in range(newest, 0, -1) if get_listing(self.state, i).item_ref == ref
            ]
            recent = resales[0] if resales else recent
        # Each seller's own session (b1's opened last in ``setup``).
        session = {"m1": 1, "m2": 2, "b1": 3}.get(owner, 3)
        now = self.chain.time_ms
        if kind == 0:
            listing = tx.CreateListing("again", "", 700, 1, b"", "", it)
            self.add(owner, tx.CREATE_LISTING, listing)
        elif kind == 1:
            self.add(owner, tx.DELIST, tx.ListingRef(recent))
        elif kind in (3, 7):
            self.add(owner, tx.PIN, tx.PinListing(session, recent))
            who = data.draw(st.sampled_from((owner, "host")))
            start = tx.StartAuction(
                session, recent, 700, 0, 0, 10_000, data.draw(st.sampled_from([1, 2]))
            )
            self.add(who, tx.START_AUCTION, start)
        elif kind == 4:
            self.add(owner, tx.PIN, tx.PinListing(session, recent))
            deal = tx.OpenDeal(session, recent, 600, 1, 1, now, now + 10 * MIN)
            self.add(owner, tx.OPEN_DEAL, deal)
        elif kind == 5 and data.draw(st.integers(0, 4)) == 0:
            end = tx.Attest(it, "decommissioning", "destroyed", "", "", now, b"")
            self.add(owner, tx.ATTEST, end)
        else:
            buyer = data.draw(st.sampled_from(("b2", "b3", "m2")))
            deal = peek_next_id(self.state, keys.DEAL_IDS) - 1 if kind == 6 else 0
            self.add(buyer, tx.PLACE_ORDER, self.order_payload(recent, 1, deal, 0))

    @rule(data=st.data(), kind=st.integers(0, 9))
    def offered(self, data, kind):
        """S1's resale, step by step (``resell`` tries anything, and rarely gets this far):
        a listing offers it, and its owner's hand-off is refused (``item_listed``) while
        the listing is active; delisted, the owner lends it out (to the carrier or b3)
        and gets it back; a buyer (mostly m2, a merchant who lists it again) orders, the
        order ships it, and is refunded in full (the item comes back, the listing has sold
        its unit and offers it no more), confirmed, disputed or ruled. The block before is
        closed first, so what this rule sees is what its transactions meet."""
        if self.pending:
            self.end_block(1_000)
        it = item("S1")
        found = get_item(self.state, it.gtin, it.serial)
        if found.status != ItemStatus.ACTIVE:
            return
        owner, holder = self.name_of(found.owner), self.name_of(found.custodian)
        lend = data.draw(st.sampled_from([n for n in ("carrier", "b3", "m2") if n != holder]))
        if found.pending_to is not None:
            # A hand-off waits: its receiver takes it (mostly) or refuses it, or its holder
            # takes it back.
            to = self.name_of(found.pending_to)
            answer = tx.ACCEPT_CUSTODY if kind < 6 else tx.REFUSE_CUSTODY
            self.add(holder if kind == 9 else to, answer, tx.ItemRef(it))
            return
        if found.order_id:
            self.offered_order(data, kind, it, found, holder)
            return
        if holder != owner:
            # Lent out: it comes back to its owner.
            self.add(holder, tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, found.owner))
            self.add(owner, tx.ACCEPT_CUSTODY, tx.ItemRef(it))
            return
        listing = get_listing(self.state, found.listing_id) if found.listing_id else None
        offering = listing is not None and not listing.sold
        offering = offering and (listing.status == ListingStatus.ACTIVE or listing.reserved > 0)
        if not offering:
            if kind < (6 if listing is not None else 3):
                # Nothing offers it (any more: delisted, or its unit sold and the order
                # refunded): its owner may lend it out.
                self.add(owner, tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, self.chain.addr(lend)))
                self.add(lend, tx.ACCEPT_CUSTODY, tx.ItemRef(it))
            else:
                # Listed (refused unless its owner is an approved merchant: b1 or m2).
                self.add(owner, tx.CREATE_LISTING, tx.CreateListing("S1", "", 700, 1, b"", "", it))
            return
        waiting = [
            o
            for oid in range(peek_next_id(self.state, keys.ORDER_IDS) - 1, 0, -1)
            if (o := get_order(self.state, oid)).listing_id == listing.id
            and o.state in (OrderState.PLACED, OrderState.ACCEPTED)
        ]
        if waiting and kind > 2:
            # A buyer waits for it: its seller accepts and ships exactly it.
            order = waiting[0]
            if order.state == OrderState.PLACED:
                self.add(owner, tx.ACCEPT_ORDER, tx.OrderRef(order.id))
            self.add(owner, tx.SHIP_ORDER, tx.ShipOrder(order.id, b"\x04" * 32, (it,)))
        elif kind < 3:
            # Offered, it stays with its seller: no hand-off (checked only while the
            # listing is active: a deadline at the block's start cannot end its offer).
            expect = "item_listed" if listing.status == ListingStatus.ACTIVE else None
            to = tx.ProposeCustody(it, self.chain.addr(lend))
            self.add(owner, tx.PROPOSE_CUSTODY, to, expect=expect)
        elif kind == 3:
            self.add(owner, tx.DELIST, tx.ListingRef(listing.id))
        elif listing.status == ListingStatus.ACTIVE:
            buyer = data.draw(st.sampled_from(("m2", "m2", "b2", "b1")))
            self.add(buyer, tx.PLACE_ORDER, self.order_payload(listing.id, 1, 0, 0))

    def offered_order(self, data, kind, it, found, holder):
        """S1 ships in an order (``offered``), or goes back from one."""
        order = get_order(self.state, found.order_id)
        merchant = self.name_of(order.merchant)
        if found.return_to is not None:
            # Back to its merchant, which takes it.
            self.add(holder, tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, order.merchant))
            self.add(merchant, tx.ACCEPT_CUSTODY, tx.ItemRef(it))
        elif order.state == OrderState.SHIPPED and kind < 4:
            # Refunded in full: the buyer has all back, the item goes back to the seller.
            self.add(merchant, tx.REFUND, tx.Refund(order.id, order.escrow))
        elif order.state == OrderState.SHIPPED and kind < 6:
            self.add(self.name_of(order.buyer), tx.CONFIRM_DELIVERY, tx.OrderRef(order.id))
        elif order.state == OrderState.SHIPPED and kind == 6:
            self.add(self.name_of(order.buyer), tx.OPEN_DISPUTE, tx.OpenDispute(order.id, "?"))
        elif order.state in (OrderState.DISPUTED, OrderState.ESCALATED):
            judge = "arb" if order.state == OrderState.DISPUTED else "reg"
            self.add(judge, tx.RULE, tx.Rule(order.id, data.draw(st.sampled_from([10_000, 0]))))
        elif holder != self.name_of(order.buyer):
            # On its way to the buyer.
            self.add(holder, tx.PROPOSE_CUSTODY, tx.ProposeCustody(it, order.buyer))
            self.add(self.name_of(order.buyer), tx.ACCEPT_CUSTODY, tx.ItemRef(it))

    @rule(data=st.data(), kind=st.integers(0, 3))
    def disclose(self, data, kind):
        """Buyers and merchants (and a stranger) disclose orders' addresses to the auditor,
        whose key the registrar rotates or whose role it takes away, at times in the same
        block as a disclosure sealed to the key it held: a copy is recorded only sealed to
        the auditor's key of the moment (``stale_key``), so every copy opens with the key
        its record names (the checks)."""
        aud = self.chain.addr("aud")
        current = roles_view(self.state, aud).enc_key
        if kind == 0:
            roles = data.draw(st.sampled_from([int(Role.AUDITOR)] * 3 + [0]))
            _, public = AUDITOR_KEYS[data.draw(st.integers(0, 1))]
            self.add("reg", tx.SET_ROLES, tx.SetRoles(aud, roles, public if roles else b""))
        top = peek_next_id(self.state, keys.ORDER_IDS) - 1
        order = get_order(self.state, data.draw(st.integers(max(1, top - 5), top)))
        merchant = self.name_of(order.merchant)
        if merchant not in ENC:
            return
        plaintext = open_plaintext(enc_keys(merchant)[0], order.sealed_address)
        public = data.draw(st.sampled_from([current, current, *OPENS]))
        if len(public) != 32:
            public = AUDITOR_KEYS[0][1]
        who = data.draw(st.sampled_from((merchant, self.name_of(order.buyer), "b3")))
        payload = tx.Disclose(order.id, aud, public, reseal(public, plaintext))
        self.add(who, tx.DISCLOSE, payload)

    @rule(advance=advances)
    def end_block(self, advance):
        # Built as a producer builds it: a proxy bid may draw a leader's whole balance,
        # and the leader's later transactions in the block then cannot pay their fee.
        result = self.chain.block(*self.pending, advance_ms=advance, strict=False)
        self.pending = []
        for vtx, exc in result.rejected:
            assert "fee" in exc.message or "nonce" in exc.message, (vtx.body.type, exc.message)
        for vtx, receipt in zip(result.included, result.receipts, strict=True):
            # Every failure carries a documented, stable code that its type declares (the
            # executor checks the events and key prefixes too: check_declarations).
            declared = self.chain.registry.declaration(vtx.body.type).codes
            assert receipt.ok or receipt.code in declared, (vtx.body.type, receipt.code)
            expected = self.expected.pop(vtx.hash, None)
            assert expected in (None, receipt.code), (vtx.body.type, expected, receipt.message)
        events = [*result.begin_events, *(e for r in result.receipts for e in r.events)]
        for e in events:
            if e.kind == "commerce.auction_ended":
                # An auction ends exactly once.
                aid = int(e.get("auction"))
                assert aid not in self.auction_ends, (aid, self.auction_ends[aid], e)
                self.auction_ends[aid] = e.get("outcome")
        self.check()

    # --- the checks after every block ---

    def check(self):
        c = self.chain
        # Tokens conserved, escrow == open orders, stock identities, deal caps, ...
        problems = check_invariants(c.state, c.accounts, c.supply)
        assert problems == [], problems
        for oid in range(1, peek_next_id(c.state, keys.ORDER_IDS)):
            # Decoding checks the state is one known value.
            state = OrderState(get_order(c.state, oid).state)
            # Terminal states are final.
            if oid in self.terminal:
                assert state == self.terminal[oid], (oid, self.terminal[oid], state)
            elif state in TERMINAL_STATES:
                self.terminal[oid] = state
        for lid in range(1, peek_next_id(c.state, keys.LISTING_IDS)):
            # Decoding refuses negative integers; stock fields are all uint64.
            get_listing(c.state, lid)
        open_by = {c.addr(m): 0 for m in SELLERS}
        for did in range(1, peek_next_id(c.state, keys.DEAL_IDS)):
            deal = get_deal(c.state, did)
            if deal.status == DealStatus.OPEN:
                open_by[deal.merchant] += 1
                # Every open deal is in the bucket of its end, until it closes.
                assert did in self.bucket(deal.end_ms)
            else:
                assert did not in self.bucket(deal.end_ms)
            assert len(self.bucket(deal.end_ms)) <= PARAMS.max_deals_per_bucket
        for address, n in open_by.items():
            # Each merchant's count of open deals is exact and within its bound.
            assert get_merchant(c.state, address).open_deals == n
            assert n <= PARAMS.max_open_deals_per_merchant
        orders = [get_order(c.state, i) for i in range(1, peek_next_id(c.state, keys.ORDER_IDS))]
        for o in orders:
            for seq in range(o.disclosures):
                d = Disclosure.decode(c.state[keys.disclosure_key(o.id, seq)])
                # Every copy opens, with the key its record names, to the order's address.
                assert open_address(OPENS[d.auditor_key], d.ciphertext, o.address_commitment)
        settled = (OrderState.COMPLETED, OrderState.RESOLVED)
        # What the buyer paid for in the end: settled with something left to the seller.
        paid = [o for o in orders if o.state in settled and o.refunded < o.amount]
        for aid in range(1, peek_next_id(c.state, keys.AUCTION_IDS)):
            a = get_auction(c.state, aid)
            # Ended (by one event) exactly when no longer open; the outcome is the status.
            outcome = self.auction_ends.get(aid)
            status = AuctionStatus(a.status)
            expected = {"won": AuctionStatus.SOLD, "unsold": AuctionStatus.UNSOLD}
            assert (outcome is None) == (status == AuctionStatus.OPEN), (aid, outcome, status)
            assert outcome is None or expected.get(outcome, AuctionStatus.CANCELLED) == status
        for serial in SERIALS:
            it = get_item(c.state, item(serial).gtin, serial)
            if it is not None:
                # Its owner is the buyer of a settled order that carried it and paid for it
                # (one that gave the buyer everything back sent it back); none before.
                buyers = {o.buyer for o in paid if it.ref in o.items}
                assert (it.owner in buyers) if buyers else it.owner is None, (serial, it.owner)
            if it is not None and it.status == ItemStatus.DECOMMISSIONED:
                # Ended by whom it belonged to: its owner, or its maker if never sold.
                (end,) = [e for e in item_history(c.state, it.gtin, serial) if e.action == "DELETE"]
                assert end.attestor == (it.maker if it.owner is None else it.owner), serial
            if it is not None and it.order_id:
                # An item is locked only to an order that is still on its way, or that
                # gave its buyer all back: the item then goes back to the merchant.
                order = get_order(c.state, it.order_id)
                shipped = (OrderState.SHIPPED, OrderState.DISPUTED, OrderState.ESCALATED)
                if it.return_to is None:
                    assert order.state in shipped
                else:
                    assert order.state in TERMINAL_STATES and order.refunded == order.amount
                    assert it.return_to == order.merchant
                # On its way it is held by, or handed to, a carrier, its buyer or merchant.
                way = {order.buyer, order.merchant, c.addr("carrier")}
                assert it.custodian in way and it.pending_to in (way | {None}), serial


CommerceMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCommerceMachine = CommerceMachine.TestCase
