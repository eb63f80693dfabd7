"""POST /v1/txs/simulate on a real node: the receipt a block would give, nothing committed;
and the account's next nonce after what the node holds pending."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import aiohttp

from core import PrivateKey, TxBody, format_address, sign_tx
from node.simulate import SIMULATION_QUEUE, SIMULATION_SLOTS, SIMULATIONS
from tests.apps.commerce.test_http_reads import WAIT, Holds, busy, until
from tests.node.conftest import refusals
from vm import Registry, Transfer, TxType


def signed_transfer(key, chain_id, to, amount, nonce, *, fee=1000, expiry=1000) -> str:
    body = TxBody(nonce, fee, expiry, "transfer", Transfer(to, amount).encode())
    return sign_tx(key, chain_id, body).encode().hex()


async def account(client, address: bytes) -> dict:
    return await (await client.get(f"/v1/accounts/{format_address(address)}")).json()


async def simulate(client, tx_hex: str, status: int = 200) -> dict:
    resp = await client.post("/v1/txs/simulate", json={"tx": tx_hex})
    doc = await resp.json()
    assert resp.status == status, doc
    return doc


async def wait_height(client, height: int) -> None:
    for _ in range(200):
        if (await (await client.get("/v1/status")).json())["height"] >= height:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"height {height} not reached")


async def test_simulation_answers_the_receipt_and_commits_nothing(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    await wait_height(client, 1)
    alice = PrivateKey.generate()
    before = await account(client, faucet.address)
    tx = signed_transfer(faucet, chain_id, alice.address, before["balance"], before["nonce"])
    doc = await simulate(client, tx)
    assert doc["receipt"]["code"] == "insufficient_funds" and doc["receipt"]["fee"] == 1000
    assert doc["height"] >= 1
    ok = await simulate(client, signed_transfer(faucet, chain_id, alice.address, 5, 0))
    assert ok["receipt"]["code"] == "ok" and ok["receipt"]["events"]
    # Nothing was queued, committed or charged.
    await wait_height(client, doc["height"] + 2)
    assert (await client.get(f"/v1/txs/{ok['hash']}")).status == 404
    after = await account(client, faucet.address)
    assert (after["balance"], after["nonce"]) == (before["balance"], before["nonce"])
    assert (await account(client, alice.address))["balance"] == 0


async def test_a_private_outcome_is_simulated_without_events(node_client, monkeypatch):
    # A bid's events give the price it would set (a leader's secret maximum plus one
    # increment): its type declares ``private_outcome``, here given to transfers.
    declaration = Registry.declaration

    def private(self: Registry, tx_type: str) -> TxType:
        return dataclasses.replace(declaration(self, tx_type), private_outcome=True)

    monkeypatch.setattr(Registry, "declaration", private)
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    await wait_height(client, 1)
    to = PrivateKey.generate().address
    ok = (await simulate(client, signed_transfer(faucet, chain_id, to, 5, 0)))["receipt"]
    assert (ok["code"], ok["message"], ok["events"], ok["fee"]) == ("ok", "", [], 1000)
    before = await account(client, faucet.address)
    tx = signed_transfer(faucet, chain_id, to, before["balance"], before["nonce"])
    short = (await simulate(client, tx))["receipt"]
    # A failure still says why (a bid's failures name nothing of the leader's).
    assert short["code"] == "insufficient_funds" and "is less than the amount" in short["message"]


async def test_next_nonce_follows_the_pending_transactions(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    to = PrivateKey.generate().address
    txs = [signed_transfer(faucet, chain_id, to, 1, n) for n in range(3)]
    resp = await client.post("/v1/txs", json={"txs": txs})
    assert (await resp.json())["accepted"] == 3
    # Pending or committed by now: either way the next one to sign is 3.
    doc = await account(client, faucet.address)
    assert doc["next_nonce"] == 3 and doc["nonce"] <= 3
    # A simulation of nonce 3 runs after them; nonce 0 is spent (or about to be).
    assert (await simulate(client, signed_transfer(faucet, chain_id, to, 1, 3)))["receipt"][
        "code"
    ] == "ok"
    for _ in range(100):
        if (await account(client, faucet.address))["nonce"] == 3:
            break
        await asyncio.sleep(0.05)
    doc = await account(client, faucet.address)
    assert doc["nonce"] == doc["next_nonce"] == 3
    refused = await simulate(client, signed_transfer(faucet, chain_id, to, 1, 0), 400)
    assert refused["code"] == "nonce_too_low"
    gap = await simulate(client, signed_transfer(faucet, chain_id, to, 1, 9), 400)
    assert gap["code"] == "nonce_gap"


async def test_simulation_refuses_bad_bodies_before_work(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    tx = signed_transfer(faucet, chain_id, b"\x01" * 20, 1, 0)
    cases = [
        (json.dumps({"txs": [tx]}), "malformed"),
        (json.dumps({"tx": tx[:-2]}), "malformed"),
        (
            json.dumps({"tx": signed_transfer(faucet, "elsewhere", b"\x01" * 20, 1, 0)}),
            "wrong_chain",
        ),
        ("{", "malformed"),
        # Bigger than any one transaction could need: refused from its Content-Length.
        (json.dumps({"tx": "00" * (node.chain.params.max_tx_bytes + 200)}), "too_large"),
    ]
    for body, code in cases:
        resp = await client.post(
            "/v1/txs/simulate", data=body, headers={"Content-Type": "application/json"}
        )
        doc = await resp.json()
        assert (resp.status, doc["code"]) == (400, code), (body[:40], doc)
    assert (await client.get("/v1/status")).status == 200


async def test_simulations_beyond_the_slots_and_queue_are_busy(node_client):
    """A burst of simulations: those beyond the running and waiting ones are refused
    with 503 busy and Retry-After at once, the rest answered; the node keeps serving."""
    client, node, faucet = node_client
    tx = signed_transfer(faucet, node.genesis.chain_id, b"\x01" * 20, 1, 0)

    async def one():
        resp = await client.post("/v1/txs/simulate", json={"tx": tx})
        return resp.status, resp.headers.get("Retry-After"), (await resp.json())

    answers = await asyncio.gather(*(one() for _ in range(100)))
    busy = [a for a in answers if a[0] == 503]
    done = [a for a in answers if a[0] == 200]
    assert busy and len(busy) + len(done) == 100
    assert {(retry, doc["code"]) for _, retry, doc in busy} == {("1", "busy")}
    assert {d["receipt"]["code"] for _, _, d in done} == {"ok"}
    assert (await client.get("/v1/status")).status == 200


async def post_from(url: str, doc: dict, source: str) -> tuple[int, dict, str | None]:
    """(status, JSON body, Retry-After) of a POST from loopback address ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(url, json=doc) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_one_address_cannot_take_every_simulation_place(node_client, monkeypatch):
    """Simulations held in their threads: one address's burst is refused (503 busy)
    beyond its quarter of the running and waiting places, and another address's
    simulation is served in its turn, ahead of the burst's waiting ones. With a plain
    semaphore (before) one address took all of them."""
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    hostile_tx = signed_transfer(faucet, chain_id, b"\x01" * 20, 1, 0)
    other_tx = signed_transfer(faucet, chain_id, b"\x01" * 20, 2, 0)
    held = Holds()
    executor_type = type(node.chain.executor)
    simulate_one = executor_type.simulate

    def slow(self, state, before, vtx, ctx):
        # Only the burst's simulations (amount 1) are held.
        if vtx.payload.amount == 1:
            held.hold()
        return simulate_one(self, state, before, vtx, ctx)

    monkeypatch.setattr(executor_type, "simulate", slow)
    url = str(client.make_url("/v1/txs/simulate"))
    places = client.server.app[SIMULATIONS]
    share = (SIMULATION_SLOTS + SIMULATION_QUEUE) // 4
    burst = 3 * share
    hostile = [
        asyncio.create_task(post_from(url, {"tx": hostile_tx}, "127.0.0.1")) for _ in range(burst)
    ]
    try:
        await until(lambda: held.entered >= SIMULATION_SLOTS, "simulations running")
        await until(lambda: sum(t.done() for t in hostile) >= burst - share, "refusals")
        refused = [t.result() for t in hostile if t.done()]
        assert len(refused) == burst - share
        assert all(busy(answer) for answer in refused), refused[0]
        other = asyncio.create_task(post_from(url, {"tx": other_tx}, "127.0.0.2"))
        await until(lambda: places.held("127.0.0.2") == 1, "the other address waiting")
        # Two places free: one goes to the burst, the next to the other address.
        held.let_go(SIMULATION_SLOTS)
        status, doc, _ = await asyncio.wait_for(other, WAIT)
        assert (status, doc["receipt"]["code"]) == (200, "ok"), doc
        assert any(not t.done() for t in hostile)
    finally:
        held.open()
        await asyncio.gather(*hostile, return_exceptions=True)
    assert {t.result()[0] for t in hostile} == {200, 503}
    metrics = await (await client.get("/metrics")).text()
    assert refusals(metrics, "simulations", "per_address") == burst - share
    assert refusals(metrics, "simulations", "total") == 0
