"""Order privacy on every route (docs/commerce.md, Privacy): the generic state route
refuses order data by prefix, whether the key exists or not; public keys keep their
proofs of value and of absence; the parties still read their order (signed)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient

from apps.commerce import keys
from apps.commerce import payloads as tx
from apps.commerce.http import NODE_HEADER, PRIVATE_STATE_PREFIXES, sign_read_request
from genesis import create_localnet
from node.service import Node
from storage import StateProof, verify_proof
from tests.apps.commerce.test_http import Actor, open_shop, place, running_driver
from tests.served import node_server


@pytest.fixture
async def driver(tmp_path):
    async with running_driver(tmp_path) as d:
        yield d


async def test_state_route_refuses_order_data_and_still_proves_absence(driver):
    d = driver
    merchant, host, alice = (Actor(n) for n in ("merchant", "host", "alice"))
    await d.fund(merchant, host, alice)
    await open_shop(d, merchant, host)
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane, Springfield"))

    private = {
        "order": keys.order_key(1),
        "party": keys.party_key(alice.address),
        "deal buyer": keys.deal_buyer_key(1, alice.address),
        "dispute": keys.dispute_key(1),
        "disclosure": keys.disclosure_key(1, 0),
        # The leader's maximum bid and its sealed address.
        "auction": keys.auction_key(1),
        "absent order": keys.order_key(999),
    }
    assert {key[0] for key in private.values()} == PRIVATE_STATE_PREFIXES
    for what, key in private.items():
        status, doc = await d.get(f"/v1/state/{key.hex()}")
        # The same refusal whether the record exists or not: it says nothing.
        assert (status, doc["code"]) == (403, "private_state"), what
        status, doc = await d.get(f"/v1/state/{key.hex()}?height=1")
        assert (status, doc["code"]) == (403, "private_state"), what

    # Public keys: a value with its proof, and an absence with its proof.
    for key, present in ((keys.listing_key(1), True), (keys.listing_key(999), False)):
        status, doc = await d.get(f"/v1/state/{key.hex()}")
        assert status == 200
        value = None if doc["value"] is None else bytes.fromhex(doc["value"])
        assert (value is not None) == present
        proof = StateProof.decode(bytes.fromhex(doc["proof"]))
        verify_proof(bytes.fromhex(doc["state_root"]), key, value, proof)

    # The parties still see their order, through the signed route.
    status, doc = await d.get("/v1/orders/1", alice.key)
    assert status == 200 and doc["order"]["buyer"] == alice.text


async def test_signed_reads_outlive_the_pruning_of_block_1(tmp_path):
    """The chain id a signed read is checked under is the node's, not block 1's: a node
    that pruned block 1 (every default node after a day, every state-synced one) still
    serves the parties their orders."""
    pruning = {"keep_blocks": 2, "keep_states": 2, "interval": 1}
    async with running_driver(tmp_path, pruning=pruning) as d:
        deadline = time.monotonic() + 10
        while d.node.chain.store.block_base <= 1:
            assert time.monotonic() < deadline, "block 1 was never pruned"
            await asyncio.sleep(0.05)
        alice = Actor("alice")
        status, doc = await d.get("/v1/orders", alice.key)
        assert status == 200, doc
        assert doc["orders"] == []


async def test_signed_order_answers_are_never_kept_by_a_cache(driver):
    """A signed read is one viewer's answer, and its signature rides in headers no HTTP
    cache keys on: every signed answer says no cache may keep it, or a caching proxy in
    front of the node would hand one party's order to the next client asking that URL."""
    d = driver
    merchant, host, alice = (Actor(n) for n in ("merchant", "host", "alice"))
    await d.fund(merchant, host, alice)
    await open_shop(d, merchant, host)
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane, Springfield"))
    for path in ("/v1/orders/1", "/v1/orders?role=buyer"):
        headers = sign_read_request(alice.key, d.chain_id, "GET", path, node=d.node_key)
        resp = await d.client.get(path, headers=headers)
        assert resp.status == 200, await resp.text()
        directives = {x.strip() for x in resp.headers.get("Cache-Control", "").split(",")}
        assert {"private", "no-store"} <= directives, (path, resp.headers)
    # Public answers are not touched.
    resp = await d.client.get("/v1/listings/1")
    assert resp.status == 200 and "no-store" not in resp.headers.get("Cache-Control", "")


async def test_a_read_signed_for_one_node_is_refused_by_another(driver, tmp_path):
    """Whoever sees a signed read (a proxy, a log, a member node it was sent to) could
    present it to another node of the chain within its window and read the order there.
    The node's key is signed: another node (here one of the same chain id, its own key)
    refuses it ``wrong_node``, the node it was for answers, and a read signed the old
    way, for no node, is refused ``unbound_read``."""
    d = driver
    merchant, host, alice = (Actor(n) for n in ("merchant", "host", "alice"))
    await d.fund(merchant, host, alice)
    await open_shop(d, merchant, host)
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane, Springfield"))
    layout = create_localnet(tmp_path / "other", 1, "", chain_id=d.chain_id)
    other = Node.from_home(layout.nodes[0].home, "")
    async with TestClient(node_server(other)) as elsewhere:
        assert other.key.public_key != d.node_key
        for path in ("/v1/orders/1", "/v1/orders?role=buyer"):
            headers = sign_read_request(alice.key, d.chain_id, "GET", path, node=d.node_key)
            resp = await elsewhere.get(path, headers=headers)
            assert (resp.status, (await resp.json())["code"]) == (401, "wrong_node")
            resp = await d.client.get(path, headers=headers)
            assert resp.status == 200, await resp.text()
            unbound = {k: v for k, v in headers.items() if k != NODE_HEADER}
            resp = await d.client.get(path, headers=unbound)
            assert (resp.status, (await resp.json())["code"]) == (401, "unbound_read")
