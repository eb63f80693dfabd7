"""Commerce HTTP reads on a real node: listings, merchants, sessions, signed order reads,
reviews with paging, and an item's history with a state proof checked client-side."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib

import pytest
from aiohttp.test_utils import TestClient

from apps.commerce import http_items, keys
from apps.commerce import payloads as tx
from apps.commerce.http import (
    READ_WINDOW_MS,
    sign_read_request,
    verify_item_doc,
    verify_item_page,
    verify_item_proof,
)
from apps.commerce.model import ItemId, Role
from apps.commerce.provenance import gtin_check_digit
from apps.commerce.sealing import encryption_keypair, open_address, seal_address
from consensus import ValidatorSet, verify_commit
from core import BlockHeader, Commit, Invalid, PrivateKey, TxBody, format_address, sign_tx
from core.keystore import load_key
from node.reader import NodeChainReader
from node.service import Node
from tests.node.conftest import make_home
from tests.served import node_server
from vm import Transfer

FEE = 1_000
PRICE = 7_000
DEAL_PRICE = 5_000
GTIN = "0950600013435" + str(gtin_check_digit("0950600013435"))


class Actor:
    """A test party: a signing key and, for merchants, an X25519 key pair."""

    def __init__(self, name: str) -> None:
        self.key = PrivateKey(hashlib.blake2b(name.encode(), digest_size=32).digest())
        self.enc_private, self.enc_public = encryption_keypair(
            hashlib.blake2b(b"enc" + name.encode(), digest_size=32).digest()
        )

    @property
    def address(self) -> bytes:
        return self.key.address

    @property
    def text(self) -> str:
        return format_address(self.key.address)


class Driver:
    """Signs, submits and waits for transactions on the node under test."""

    def __init__(self, client: TestClient, node: Node, faucet: PrivateKey) -> None:
        self.client = client
        self.node = node
        self.faucet = faucet
        self.chain_id = node.genesis.chain_id
        self.nonces: dict[bytes, int] = {}

    async def submit(self, key: PrivateKey, tx_type: str, payload: object) -> str:
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        expiry = self.node.chain.height + 500
        body = TxBody(nonce, FEE, expiry, tx_type, payload.encode())  # type: ignore[attr-defined]  # payloads are Wire
        resp = await self.client.post(
            "/v1/txs", json={"tx": sign_tx(key, self.chain_id, body).encode().hex()}
        )
        doc = await resp.json()
        assert resp.status == 200, doc
        return doc["hash"]

    async def wait(self, tx_hash: str, expect: str = "ok") -> dict:
        for _ in range(400):
            resp = await self.client.get(f"/v1/txs/{tx_hash}")
            if resp.status == 200:
                doc = await resp.json()
                if doc["status"] == "committed":
                    receipt = doc["receipt"]
                    assert receipt["code"] == expect, receipt
                    return doc
            await asyncio.sleep(0.02)
        raise AssertionError(f"{tx_hash} not committed")

    async def run(self, key: PrivateKey, tx_type: str, payload: object, expect: str = "ok") -> dict:
        return await self.wait(await self.submit(key, tx_type, payload), expect)

    async def all(self, *steps: tuple[PrivateKey, str, object]) -> list[dict]:
        """Independent transactions in one go (same block when they fit)."""
        hashes = [await self.submit(k, t, p) for k, t, p in steps]
        return [await self.wait(h) for h in hashes]

    async def fund(self, *actors: Actor) -> None:
        await self.all(*((self.faucet, "transfer", Transfer(a.address, 10**10)) for a in actors))

    @property
    def node_key(self) -> bytes:
        """The node's key: what a signed read for it is signed for."""
        return self.node.key.public_key

    @property
    def block_time(self) -> int:
        head = self.node.chain.head
        assert head is not None
        return head.time_ms

    async def get(self, path: str, signer: PrivateKey | None = None, **sign_kw: int) -> tuple:
        headers = (
            {}
            if signer is None
            else sign_read_request(
                signer, self.chain_id, "GET", path, **sign_kw, node=self.node_key
            )
        )
        resp = await self.client.get(path, headers=headers)
        return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def running_driver(tmp_path, **config: object):
    """A single-validator node (real LevelDB) serving its API on a real socket."""
    layout, home = make_home(tmp_path, **config)
    node = Node.from_home(home, "")
    client = TestClient(node_server(node))
    await client.start_server()
    try:
        yield Driver(client, node, load_key(layout.faucet_key_path, ""))
    finally:
        await client.close()


@pytest.fixture
async def driver(tmp_path):
    async with running_driver(tmp_path) as d:
        yield d


async def open_shop(d: Driver, merchant: Actor, host: Actor, *, stock: int = 20) -> None:
    """Approved merchant (also a maker), listing 1, session 1 with it pinned, deal 1."""
    registrar = d.faucet
    await d.run(
        merchant.key,
        tx.REGISTER_MERCHANT,
        tx.RegisterMerchant("Acme", "acme.example", merchant.enc_public),
    )
    await d.all(
        (registrar, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True)),
        (registrar, tx.SET_ROLES, tx.SetRoles(merchant.address, int(Role.MAKER), b"")),
    )
    await d.run(
        merchant.key,
        tx.CREATE_LISTING,
        tx.CreateListing("Tea pot", "Cast iron", PRICE, stock, b""),
    )
    await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))
    await d.run(host.key, tx.PIN, tx.PinListing(1, 1))
    start = d.block_time
    await d.run(
        merchant.key,
        tx.OPEN_DEAL,
        tx.OpenDeal(1, 1, DEAL_PRICE, 5, 2, start, start + 600_000),
    )


def place(merchant: Actor, address: str, *, deal: int = 1) -> tx.PlaceOrder:
    ciphertext, commitment, _ = seal_address(merchant.enc_public, address)
    price = DEAL_PRICE if deal else PRICE
    return tx.PlaceOrder(1, 1, 1, price, 1, deal, merchant.enc_public, commitment, ciphertext)


async def test_listings_merchants_sessions_orders_reviews_and_item_proof(driver):
    d = driver
    merchant, host, alice, bob, stranger = (
        Actor(n) for n in ("merchant", "host", "alice", "bob", "stranger")
    )
    await d.fund(merchant, host, alice, bob, stranger)
    await open_shop(d, merchant, host)
    item = ItemId(GTIN, "SN-1")
    await d.run(
        merchant.key,
        tx.REGISTER_ITEM,
        tx.RegisterItem(item, "Tea pot #1", "urn:acme:plant", d.block_time),
    )

    # Listings: a page and one listing.
    status, doc = await d.get("/v1/listings")
    assert status == 200 and doc["next_start"] is None
    assert [x["title"] for x in doc["listings"]] == ["Tea pot"]
    status, doc = await d.get("/v1/listings/1")
    listing = doc["listing"]
    assert status == 200 and doc["height"] >= 1
    assert (listing["price"], listing["total"], listing["reserved"]) == (PRICE, 20, 5)
    assert listing["merchant"] == merchant.text

    # The live session: pinned listing, open deal with what it has left.
    status, doc = await d.get("/v1/sessions/1")
    session = doc["session"]
    assert status == 200 and session["status"] == "open"
    assert [p["id"] for p in session["pinned"]] == [1]
    assert [(x["id"], x["left"], x["live"]) for x in session["deals"]] == [(1, 5, True)]

    # Two buyers order from the deal, sealed addresses; one ships with the item.
    # One block each: order ids follow block order, not submission order.
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane"))
    await d.run(bob.key, tx.PLACE_ORDER, place(merchant, "2 Bob Road"))
    status, doc = await d.get("/v1/deals/1")
    assert status == 200 and doc["deal"]["left"] == 3 and doc["deal"]["sold"] == 2
    tracking = hashlib.blake2b(b"TRACK-1", digest_size=32).digest()
    await d.all(
        (merchant.key, tx.SHIP_ORDER, tx.ShipOrder(1, tracking, (item,))),
        (merchant.key, tx.SHIP_ORDER, tx.ShipOrder(2, tracking, ())),
    )
    await d.all(
        (alice.key, tx.CONFIRM_DELIVERY, tx.OrderRef(1)),
        (bob.key, tx.CONFIRM_DELIVERY, tx.OrderRef(2)),
    )
    # Reviews in order too: the newest is listed first.
    await d.run(alice.key, tx.REVIEW, tx.WriteReview(1, 5, "lovely"))
    await d.run(bob.key, tx.REVIEW, tx.WriteReview(2, 4, "good"))
    await d.run(merchant.key, tx.REPLY_REVIEW, tx.ReplyReview(1, "thanks"))

    # Orders: the parties see their own; nobody else; never an address in clear.
    path = "/v1/orders/1"
    status, doc = await d.get(path)
    assert (status, doc["code"]) == (401, "unauthenticated")
    status, doc = await d.get(path, stranger.key)
    assert (status, doc["code"]) == (403, "forbidden")
    status, doc = await d.get(path, bob.key)
    assert (status, doc["code"]) == (403, "forbidden")
    for viewer in (alice, merchant):
        status, doc = await d.get(path, viewer.key)
        assert status == 200, doc
        order = doc["order"]
        assert order["state"] == "completed" and order["buyer"] == alice.text
        assert "Alice" not in str(doc)
        sealed = bytes.fromhex(order["sealed_address"])
        commitment = bytes.fromhex(order["address_commitment"])
        assert open_address(merchant.enc_private, sealed, commitment) == "1 Alice Lane"
    # The host and a registrar see the order, not the sealed box.
    for viewer_key in (host.key, d.faucet):
        status, doc = await d.get(path, viewer_key)
        assert status == 200 and doc["order"]["sealed_address"] is None

    # Signed reads: stale, tampered or re-aimed signatures are refused.
    old = d.block_time - 2 * READ_WINDOW_MS
    status, doc = await d.get(path, alice.key, time_ms=old)
    assert (status, doc["code"]) == (401, "stale_request")
    headers = sign_read_request(alice.key, d.chain_id, "GET", "/v1/orders/2", node=d.node_key)
    resp = await d.client.get(path, headers=headers)
    assert (resp.status, (await resp.json())["code"]) == (401, "bad_signature")
    headers = sign_read_request(alice.key, "another-chain", "GET", path, node=d.node_key)
    resp = await d.client.get(path, headers=headers)
    assert resp.status == 401

    # A party's own order list, as buyer and as merchant.
    status, doc = await d.get("/v1/orders?role=buyer", bob.key)
    assert status == 200 and [o["id"] for o in doc["orders"]] == [2] and doc["total"] == 1
    status, doc = await d.get("/v1/orders?role=merchant&limit=1", merchant.key)
    assert [o["id"] for o in doc["orders"]] == [2] and doc["next_before"] == 2
    status, doc = await d.get("/v1/orders?role=merchant&limit=1&before=2", merchant.key)
    assert [o["id"] for o in doc["orders"]] == [1]
    status, doc = await d.get("/v1/orders?role=merchant", stranger.key)
    assert status == 200 and doc["orders"] == [] and doc["total"] == 0

    # Merchant rating and reviews, by merchant and by listing, a page at a time.
    status, doc = await d.get(f"/v1/merchants/{merchant.text}")
    assert status == 200
    assert (doc["merchant"]["rating_count"], doc["merchant"]["rating_avg_x100"]) == (2, 450)
    status, doc = await d.get(f"/v1/merchants/{merchant.text}/reviews?limit=1")
    assert [r["order_id"] for r in doc["reviews"]] == [2] and doc["next_before"] == 2
    status, doc = await d.get(f"/v1/merchants/{merchant.text}/reviews?limit=1&before=2")
    assert [(r["order_id"], r["reply"]) for r in doc["reviews"]] == [(1, "thanks")]
    status, doc = await d.get("/v1/listings/1/reviews")
    assert [r["rating"] for r in doc["reviews"]] == [4, 5] and doc["next_before"] is None
    status, doc = await d.get(f"/v1/roles/{merchant.text}")
    assert doc["roles"] == ["maker"]

    # The item: full history and a proof checked against a finalized header. A short
    # history is one page: the whole of it, and no next page.
    status, doc = await d.get(f"/v1/items/01/{GTIN}/21/SN-1")
    assert status == 200, doc
    steps = [e["biz_step"] for e in doc["item"]["history"]]
    assert steps[0] == "commissioning" and steps[-1] == "retail_selling"
    assert (doc["from_seq"], doc["event_count"], doc["next_from_seq"]) == (0, len(steps), None)
    # Settled: alice owns it and holds it (the page shows both, apart).
    assert doc["item"]["custodian"] == doc["item"]["owner"] == alice.text
    proof = doc["proof"]
    header = BlockHeader.decode(bytes.fromhex(proof["header"]))
    commit = Commit.decode(bytes.fromhex(proof["commit"]))
    genesis = d.node.genesis
    validators = ValidatorSet.of(v.public_key for v in genesis.validators)
    verify_commit(commit, genesis.chain_id, proof["height"], header.hash, validators)
    proven_item, events = verify_item_proof(GTIN, "SN-1", proof, header.state_root)
    assert format_address(proven_item.custodian) == alice.text
    assert [e.biz_step for e in events] == steps
    # What a client prints is what is proven, every field of every event: a node that
    # rewrites an event's contents (the count unchanged) or the custodian is caught.
    assert verify_item_doc(doc["item"], GTIN, "SN-1", proof, header.state_root)[0] == proven_item
    for tamper in (
        lambda item: item["history"][1].update(biz_step="receiving"),
        lambda item: item["history"][0].update(read_point="urn:elsewhere"),
        lambda item: item.update(custodian=merchant.text),
        lambda item: item.update(owner=merchant.text),
        lambda item: item["history"].pop(),
        # Equal to Python's ==, printed as sent: "seq": true, "registered_ms": 1.7e12.
        lambda item: item["history"][1].update(seq=True),
        lambda item: item.update(registered_ms=float(item["registered_ms"])),
    ):
        forged = copy.deepcopy(doc["item"])
        tamper(forged)
        with pytest.raises(Invalid, match="differs from the proven one") as failed:
            verify_item_doc(forged, GTIN, "SN-1", proof, header.state_root)
        assert failed.value.code == "proof_mismatch"
    # A bundle for another item cannot pass as this one.
    with pytest.raises(Exception, match="expected"):
        verify_item_proof(GTIN, "SN-2", proof, header.state_root)
    # Nor as an item whose GTIN and serial make the same text, split elsewhere (a GTIN
    # not padded to 14 digits): the item's key is of the text alone.
    with pytest.raises(Invalid, match="the bundle proves item") as failed:
        verify_item_proof(GTIN[:-1], GTIN[-1] + "SN-1", proof, header.state_root)
    assert failed.value.code == "bad_proof"
    assert verify_item_page(doc, GTIN, "SN-1", header).events == tuple(events)


async def make_item(d: Driver, serial: str, events: int) -> Actor:
    """An item of ``events`` events (commissioning, then inspections) by a new maker."""
    maker = Actor("maker")
    await d.fund(maker)
    await d.run(d.faucet, tx.SET_ROLES, tx.SetRoles(maker.address, int(Role.MAKER), b""))
    item = ItemId(GTIN, serial)
    await d.run(maker.key, tx.REGISTER_ITEM, tx.RegisterItem(item, "pot", "urn:p", d.block_time))
    await attest(d, maker, serial, range(1, events))
    return maker


async def attest(d: Driver, maker: Actor, serial: str, seqs: range) -> None:
    """An inspection of the item as each of ``seqs``, at read point ``urn:r<seq>``."""
    item, now = ItemId(GTIN, serial), d.block_time
    await d.all(
        *(
            (maker.key, tx.ATTEST, tx.Attest(item, "inspecting", "", f"urn:r{seq}", "", now, b""))
            for seq in seqs
        )
    )


def certified(d: Driver, doc: dict) -> BlockHeader:
    """The header a page is proven at, once its certificate verifies (as a client does)."""
    proof = doc["proof"]
    header = BlockHeader.decode(bytes.fromhex(proof["header"]))
    genesis = d.node.genesis
    validators = ValidatorSet.of(v.public_key for v in genesis.validators)
    commit = Commit.decode(bytes.fromhex(proof["commit"]))
    verify_commit(commit, genesis.chain_id, proof["height"], header.hash, validators)
    return header


@pytest.fixture
def pages_of_two(monkeypatch):
    """Pages of at most two events (as a history of 257 would take as many transactions)."""
    limit = dataclasses.replace(http_items.ITEM_LIMIT, high=2, default=2)
    monkeypatch.setattr(http_items, "ITEM_LIMIT", limit)


async def test_a_long_history_is_answered_in_pages_at_one_height(driver, pages_of_two):
    d = driver
    path = f"/v1/items/01/{GTIN}/21/SN-9"
    maker = await make_item(d, "SN-9", 5)
    # The first page: the latest final height, the item record, the first two events.
    status, first = await d.get(path)
    assert status == 200, first
    height = first["height"]
    assert (first["from_seq"], first["event_count"], first["next_from_seq"]) == (0, 5, 2)
    assert [e["seq"] for e in first["item"]["history"]] == [0, 1]
    assert len(first["proof"]["entries"]) == 3
    header = certified(d, first)
    # The history goes on while the client pages: later pages are still at `height`.
    await attest(d, maker, "SN-9", range(5, 6))
    assert d.node.chain.height > height
    pages = [verify_item_page(first, GTIN, "SN-9", header)]
    while pages[-1].next_from_seq is not None:
        at = pages[-1].next_from_seq
        status, doc = await d.get(f"{path}?from_seq={at}&height={height}")
        assert status == 200 and doc["height"] == height, doc
        pages.append(verify_item_page(doc, GTIN, "SN-9", header, at))
    events = [e for page in pages for e in page.events]
    assert [e.seq for e in events] == [0, 1, 2, 3, 4]
    assert [e.read_point for e in events[1:]] == ["urn:r1", "urn:r2", "urn:r3", "urn:r4"]
    assert [len(page.events) for page in pages] == [2, 2, 1]
    # Every page proves the record: who holds the item and how many events it has.
    assert {(p.item.custodian, p.item.event_count) for p in pages} == {(maker.address, 5)}
    # At the latest height the history has one more event; `limit` asks for less.
    status, doc = await d.get(f"{path}?limit=1&from_seq=5")
    assert (doc["event_count"], doc["next_from_seq"]) == (6, None)
    assert [e["read_point"] for e in doc["item"]["history"]] == ["urn:r5"]
    # A client that wants the whole history in one bundle is refused it, not misled.
    with pytest.raises(Invalid, match="5 events, the bundle proves 2") as refused:
        verify_item_proof(GTIN, "SN-9", first["proof"], header.state_root)
    assert refused.value.code == "bad_proof"


async def test_a_page_costs_its_own_events_not_the_whole_history(driver, pages_of_two, monkeypatch):
    d = driver
    await make_item(d, "SN-9", 5)
    proven: list[bytes] = []
    prove = NodeChainReader.prove

    def counting(self: NodeChainReader, key: bytes, height: int) -> tuple:
        proven.append(key)
        return prove(self, key, height)

    monkeypatch.setattr(NodeChainReader, "prove", counting)
    status, doc = await d.get(f"/v1/items/01/{GTIN}/21/SN-9?from_seq=2")
    assert status == 200, doc
    # The record and the page's two events: nothing else of the history is read.
    ref = keys.item_ref(GTIN, "SN-9")
    assert proven == [keys.item_key(ref), keys.item_event_key(ref, 2), keys.item_event_key(ref, 3)]


async def test_item_page_parameters_out_of_range_are_refused(driver, pages_of_two):
    d = driver
    await make_item(d, "SN-9", 3)
    path = f"/v1/items/01/{GTIN}/21/SN-9"
    head = d.node.chain.height
    for query, status, code, says in [
        ("from_seq=-1", 400, "bad_param", "from_seq must be an integer"),
        ("from_seq=x", 400, "bad_param", "from_seq must be an integer"),
        ("from_seq=3", 400, "bad_param", "below the item's 3 events"),
        ("limit=0", 400, "bad_param", "limit must be an integer in 1..2"),
        ("limit=3", 400, "bad_param", "limit must be an integer in 1..2"),
        ("height=0", 400, "bad_param", "height must be an integer"),
        ("height=tip", 400, "bad_param", "height must be an integer"),
        (f"height={head + 1000}", 404, "not_found", "above the final height"),
        # Before the item was registered: no such item at that height.
        ("height=1", 404, "not_found", "no item"),
    ]:
        got, doc = await d.get(f"{path}?{query}")
        assert (got, doc.get("code")) == (status, code), (query, doc)
        assert says in doc["message"], (query, doc)


async def test_an_item_page_at_a_pruned_height_is_gone(tmp_path):
    pruning = {"keep_states": 2, "keep_blocks": 2, "interval": 1}
    async with running_driver(tmp_path, pruning=pruning) as d:
        await make_item(d, "SN-9", 1)
        status, doc = await d.get(f"/v1/items/01/{GTIN}/21/SN-9")
        assert status == 200, doc
        height = doc["height"]
        # Blocks keep coming on their own; a loaded machine makes them slow, so the
        # wait is bounded generously and its end asserted, not assumed. The page is
        # asked until the pruner's pass has forgotten the height's root (the window's
        # base moves a moment before the pass deletes it): whole until then, then gone.
        async with asyncio.timeout(120):
            while True:
                status, doc = await d.get(f"/v1/items/01/{GTIN}/21/SN-9?from_seq=0&height={height}")
                if status != 200:
                    break
                await asyncio.sleep(0.02)
        assert (status, doc["code"]) == (410, "pruned"), doc
        assert d.node.chain.store.state_base > height


async def test_a_page_that_skips_repeats_reorders_or_mixes_heights_is_refused(driver, pages_of_two):
    d = driver
    path = f"/v1/items/01/{GTIN}/21/SN-9"
    maker = await make_item(d, "SN-9", 6)
    _, first = await d.get(path)
    height = first["height"]
    header = certified(d, first)
    pages = {at: (await d.get(f"{path}?from_seq={at}&height={height}"))[1] for at in (0, 2, 4)}

    def refused(doc: dict, at: int, code: str, says: str) -> None:
        with pytest.raises(Invalid, match=says) as failed:
            verify_item_page(doc, GTIN, "SN-9", header, at)
        assert failed.value.code == code

    # Asked for events from 2, answered from 4 (a skip) or from 0 (a repeat).
    refused(pages[4], 2, "bad_proof", "entry 1 proves key")
    refused(pages[0], 2, "bad_proof", "entry 1 proves key")
    # Two events swapped, in the proof and in the view alike.
    swapped = copy.deepcopy(pages[2])
    entries, history = swapped["proof"]["entries"], swapped["item"]["history"]
    entries[1], entries[2] = entries[2], entries[1]
    history[0], history[1] = history[1], history[0]
    refused(swapped, 2, "bad_proof", "entry 1 proves key")
    # The last event left out, the answer claiming the history ends there.
    short = copy.deepcopy(pages[4])
    del short["proof"]["entries"][2], short["item"]["history"][1]
    short["next_from_seq"] = None
    refused(short, 4, "proof_mismatch", "next_from_seq")
    # A page with no event, which would have a client ask for the same page for ever.
    empty = copy.deepcopy(pages[2])
    del empty["proof"]["entries"][1:], empty["item"]["history"][:]
    refused(empty, 2, "bad_proof", "proves no event")
    # A page from a later block: refused by its height, and by its proofs when it
    # claims the first page's height.
    await attest(d, maker, "SN-9", range(6, 7))
    _, later = await d.get(f"{path}?from_seq=2")
    assert later["height"] > height
    refused(later, 2, "proof_mismatch", f"expected {height}")
    later["height"] = later["proof"]["height"] = height
    refused(later, 2, "bad_proof", "another state root")
    # Paging fields that differ from what the proofs say.
    lying = copy.deepcopy(pages[2])
    lying["event_count"] = 4
    refused(lying, 2, "proof_mismatch", "event_count")
    # The pages as served pass.
    assert [verify_item_page(pages[at], GTIN, "SN-9", header, at).from_seq for at in pages] == [
        0,
        2,
        4,
    ]


async def test_bad_input_and_missing_objects(driver):
    d = driver
    for path, status, code in [
        ("/v1/listings/999", 404, "not_found"),
        ("/v1/listings/abc", 400, "bad_param"),
        ("/v1/listings?limit=0", 400, "bad_param"),
        ("/v1/sessions/5", 404, "not_found"),
        ("/v1/merchants/notanaddress", 400, "bad_address"),
        (f"/v1/items/01/{GTIN[:-1]}{(int(GTIN[-1]) + 1) % 10}/21/X", 400, "invalid_gtin"),
        (f"/v1/items/01/{GTIN}/21/UNKNOWN", 404, "not_found"),
        ("/v1/sessions/1/events", 404, "not_found"),
    ]:
        got, doc = await d.get(path)
        assert (got, doc.get("code")) == (status, code), (path, doc)
    got, doc = await d.get("/v1/commerce")
    assert got == 200 and doc["config"]["registrars"] == [format_address(d.faucet.address)]
    assert doc["escrow"] == {"held": 0, "open_orders": 0}


@pytest.mark.parametrize(
    "bundle",
    [
        {"entries": [{}]},
        {"entries": [1], "state_root": "00" * 32},
        {"entries": [{"key": "zz"}], "state_root": "00" * 32},
        {"entries": [{"key": "00"}], "state_root": None},
        {"entries": [{}], "state_root": "00" * 32},
    ],
)
def test_a_malformed_item_proof_bundle_is_bad_proof(bundle):
    """The bundle comes from an untrusted node: whatever its shape, ``bad_proof``."""
    with pytest.raises(Invalid) as refused:
        verify_item_proof(GTIN, "SN-1", bundle, bytes(32))
    assert refused.value.code == "bad_proof"
