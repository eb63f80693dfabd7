"""The HTTP API against a real node: submission, status, blocks, accounts, proofs, bad input."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from apps.commerce.views import ViewDenied
from core import (
    Domain,
    HttpError,
    PrivateKey,
    TxBody,
    format_address,
    hash_bytes,
    pack_raw,
    parse_address,
    sign_tx,
)
from genesis import Genesis
from node.api import errors_middleware
from node.chain_api import RenderedBlocks
from node.metrics import HTTP_REFUSERS, REFUSAL_BOUNDS
from node.stage_cpu import STAGES
from storage import StateProof, verify_proof
from tests.node.conftest import refusals
from tests.served import app_server, node_server
from vm import Account, Transfer, account_key


def transfer(key, chain_id, to, amount, nonce, *, fee=1000, expiry=1000):
    body = TxBody(nonce, fee, expiry, "transfer", Transfer(to, amount).encode())
    return sign_tx(key, chain_id, body)


async def wait_committed(client, tx_hash, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        resp = await client.get(f"/v1/txs/{tx_hash}")
        if resp.status == 200:
            doc = await resp.json()
            if doc["status"] == "committed":
                return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{tx_hash} not committed")


async def post_tx(client, tx):
    return await client.post("/v1/txs", json={"tx": tx.encode().hex()})


async def test_status_reports_chain_and_heights(node_client):
    client, node, _ = node_client
    resp = await client.get("/v1/status")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["chain_id"] == node.genesis.chain_id
    assert doc["height"] >= 0
    assert doc["finalized_height"] == doc["height"]


async def test_the_genesis_is_rendered_once_and_off_the_event_loop(node_client, monkeypatch):
    """Rendering the genesis answer is costly (a genesis may list 100,000 accounts: 15 MB
    of JSON, seconds of work), and it was done on the event loop, which also runs the
    node's p2p, for every request: a client asking again and again froze the node.
    Now it is rendered once, in a thread: other clients are served meanwhile, and later
    requests get the same bytes without another rendering."""
    client, _node, _ = node_client
    release = threading.Event()
    renders: list[str] = []
    to_json = Genesis.to_json

    def held(genesis: Genesis) -> dict:
        renders.append(threading.current_thread().name)
        # Held until another client has been served meanwhile: on the event loop nothing
        # else runs, and the wait runs out.
        assert release.wait(10.0), "no other client was served while the genesis rendered"
        return to_json(genesis)

    monkeypatch.setattr(Genesis, "to_json", held)
    first = asyncio.create_task(client.get("/v1/genesis"))
    deadline = time.monotonic() + 10.0
    while not renders:
        assert time.monotonic() < deadline, "the genesis was not rendered"
        await asyncio.sleep(0.01)
    assert (await client.get("/v1/status")).status == 200
    release.set()
    resp = await first
    assert resp.status == 200
    body = await resp.read()
    again = await client.get("/v1/genesis")
    assert again.status == 200 and await again.read() == body
    assert len(renders) == 1


async def test_genesis_carries_its_encoding_which_hashes_to_its_hash(node_client):
    """A client that cannot rebuild the encoding from the JSON (the web app) hashes the
    served bytes: they are the document's, and its hash."""
    client, node, _ = node_client
    doc = await (await client.get("/v1/genesis")).json()
    encoded = bytes.fromhex(doc["encoded"])
    assert Genesis.decode(encoded) == node.genesis == Genesis.from_json(doc["genesis"])
    assert hash_bytes(Domain.GENESIS, encoded).hex() == doc["hash"] == node.genesis.hash.hex()


async def test_transfer_commits_and_moves_balance_with_proof(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    alice = PrivateKey.generate()
    resp = await post_tx(client, transfer(faucet, chain_id, alice.address, 1234, 0))
    assert resp.status == 200, await resp.text()
    tx_hash = (await resp.json())["hash"]
    doc = await wait_committed(client, tx_hash)
    assert doc["receipt"]["code"] == "ok"
    assert doc["height"] >= 1

    resp = await client.get(f"/v1/accounts/{format_address(alice.address)}?proof=true")
    acct = await resp.json()
    assert acct["balance"] == 1234 and acct["nonce"] == 0
    value = bytes.fromhex(acct["value"])
    proof = StateProof.decode(bytes.fromhex(acct["proof"]))
    verify_proof(bytes.fromhex(acct["state_root"]), account_key(alice.address), value, proof)
    assert Account.decode(value).balance == 1234
    block = await (await client.get(f"/v1/blocks/{acct['height']}")).json()
    assert block["header"]["state_root"] == acct["state_root"]

    faucet_doc = await (await client.get(f"/v1/accounts/{format_address(faucet.address)}")).json()
    assert faucet_doc["nonce"] == 1


async def test_absent_account_is_proven_absent(node_client):
    client, node, faucet = node_client
    resp = await post_tx(client, transfer(faucet, node.genesis.chain_id, b"\x01" * 20, 5, 0))
    await wait_committed(client, (await resp.json())["hash"])
    nobody = PrivateKey.generate().address
    acct = await (await client.get(f"/v1/accounts/{format_address(nobody)}?proof=true")).json()
    assert acct["balance"] == 0 and acct["value"] is None
    proof = StateProof.decode(bytes.fromhex(acct["proof"]))
    verify_proof(bytes.fromhex(acct["state_root"]), account_key(nobody), None, proof)


async def test_batch_reports_each_transaction(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    to = PrivateKey.generate().address
    good = [transfer(faucet, chain_id, to, 1, n) for n in range(3)]
    wrong_chain = transfer(faucet, "other-chain", to, 1, 3)
    raws = [t.encode() for t in good] + [wrong_chain.encode(), b"garbage"]
    resp = await client.post(
        "/v1/txs", data=pack_raw(raws), headers={"Content-Type": "application/msgpack"}
    )
    assert resp.status == 200
    doc = await resp.json()
    codes = [r["code"] for r in doc["results"]]
    assert codes == ["accepted"] * 3 + ["wrong_chain", "malformed"]
    assert doc["accepted"] == 3
    await wait_committed(client, doc["results"][2]["hash"])


async def test_a_batch_may_be_answered_with_its_refused_items_only(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    to = PrivateKey.generate().address
    good = [transfer(faucet, chain_id, to, 1, n) for n in range(3)]
    wrong_chain = transfer(faucet, "other-chain", to, 1, 3)
    raws = [good[0].encode(), wrong_chain.encode(), good[1].encode(), b"garbage"]
    raws += [good[2].encode(), good[0].encode()]
    resp = await client.post(
        "/v1/txs?results=refused",
        data=pack_raw(raws),
        headers={"Content-Type": "application/msgpack"},
    )
    assert resp.status == 200
    doc = await resp.json()
    assert doc["accepted"] == 3
    assert [(r["index"], r["code"]) for r in doc["refused"]] == [
        (1, "wrong_chain"),
        (3, "malformed"),
        (5, "duplicate"),
    ]
    # Bytes that fail the stateless checks identify no transaction.
    assert [r["hash"] for r in doc["refused"]] == [None, None, good[0].hash.hex()]
    assert "results" not in doc
    await wait_committed(client, good[2].hash.hex())

    resp = await client.post(
        "/v1/txs?results=some",
        data=pack_raw(raws),
        headers={"Content-Type": "application/msgpack"},
    )
    assert resp.status == 400
    assert (await resp.json())["code"] == "bad_param"


async def test_each_rejection_has_its_own_code(node_client):
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    to = PrivateKey.generate().address
    first = await post_tx(client, transfer(faucet, chain_id, to, 1, 0))
    await wait_committed(client, (await first.json())["hash"])

    replay = transfer(faucet, chain_id, to, 2, 0)
    other_chain = transfer(faucet, "elsewhere", to, 1, 1)
    expired = transfer(faucet, chain_id, to, 1, 1, expiry=0)
    good = transfer(faucet, chain_id, to, 1, 1)
    bad_sig = type(good)(good.chain_id, good.sender, good.body, bytes(64))
    cases = {
        "nonce_too_low": replay,
        "wrong_chain": other_chain,
        "expired": expired,
        "bad_signature": bad_sig,
    }
    for code, tx in cases.items():
        resp = await post_tx(client, tx)
        assert resp.status == 400, code
        doc = await resp.json()
        assert doc["code"] == code, (code, doc)
        assert doc["message"]


async def test_bad_bodies_get_json_400_and_node_keeps_serving(node_client):
    client, _, _ = node_client
    bodies = [
        (b"\x00\xff garbage \x93", "application/octet-stream"),
        (b"\x00\xff garbage \x93", "application/json"),
        (b"{not json", "application/json"),
        (b'{"tx": 12}', "application/json"),
        (b'{"tx": "zz"}', "application/json"),
        (b'{"tx": "00"}', "application/json"),
        (b'{"txs": []}', "application/json"),
        (b'{"foo": "bar"}', "application/json"),
        (b"[1, 2]", "application/json"),
        (b"", "application/json"),
        (msgpack.packb({"a": 1}), "application/msgpack"),
        (msgpack.packb([1, 2]), "application/msgpack"),
        (b"x" * (300 * 1024), "application/json"),
        (b"x" * (300 * 1024), "application/octet-stream"),
    ]
    for body, ctype in bodies:
        resp = await client.post("/v1/txs", data=body, headers={"Content-Type": ctype})
        assert resp.status == 400, (body[:20], ctype, resp.status)
        doc = await resp.json()
        assert set(doc) == {"code", "message"}
        assert isinstance(doc["code"], str) and doc["code"]
    assert (await client.get("/v1/status")).status == 200


async def test_lookups_and_errors(node_client):
    client, _, _ = node_client
    assert (await client.get("/v1/txs/nothex")).status == 400
    resp = await client.get("/v1/txs/" + "ab" * 32)
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    assert (await client.get("/v1/blocks/abc")).status == 400
    assert (await client.get("/v1/blocks/999999")).status == 404
    assert (await client.get("/v1/accounts/ll1notanaddress")).status == 400
    resp = await client.get("/v1/nope")
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    for _ in range(100):
        if (await (await client.get("/v1/status")).json())["height"] >= 1:
            break
        await asyncio.sleep(0.05)
    latest = await (await client.get("/v1/blocks/latest")).json()
    assert latest["header"]["height"] >= 1
    metrics = await (await client.get("/metrics")).text()
    assert "liveledger_height" in metrics


async def test_http_refusals_are_counted_by_a_fixed_set_of_refusers(node_client):
    """Every refuser's series is there at 0 from the start (a rate over a series born
    with its first refusal misses it), and their labels are a fixed set: no client
    input becomes a label."""
    client, node, _faucet = node_client
    metrics = await (await client.get("/metrics")).text()
    for reason in HTTP_REFUSERS:
        for bound in REFUSAL_BOUNDS:
            assert refusals(metrics, reason, bound) == 0
    series = re.findall(r"^liveledger_http_refused_total\{", metrics, re.MULTILINE)
    assert len(series) == len(HTTP_REFUSERS) * len(REFUSAL_BOUNDS)
    with pytest.raises(ValueError, match="unknown HTTP refuser"):
        node.metrics.count_refusals("127.0.0.1")


def _stalls_over_300ms(metrics: str) -> float:
    """Observations of ``liveledger_event_loop_stall_seconds`` above 0.3 s."""
    name = "liveledger_event_loop_stall_seconds"
    total = re.search(rf"^{name}_count (\S+)$", metrics, re.MULTILINE)
    within = re.search(rf'^{name}_bucket{{le="0.3"}} (\S+)$', metrics, re.MULTILINE)
    assert total is not None and within is not None
    return float(total[1]) - float(within[1])


async def test_a_stalled_main_loop_shows_in_the_metrics(node_client):
    """A synchronous step that holds the loop (p2p and HTTP wait behind it) is counted
    in ``liveledger_event_loop_stall_seconds`` by how long it held it."""
    client, _, _ = node_client
    await asyncio.sleep(0.3)
    before = _stalls_over_300ms(await (await client.get("/metrics")).text())
    time.sleep(0.5)  # holds the loop: no timer, message or request runs meanwhile
    await asyncio.sleep(0.3)
    after = _stalls_over_300ms(await (await client.get("/metrics")).text())
    assert after >= before + 1


async def test_the_state_trees_load_after_a_start_shows_in_the_metrics(node_client):
    """Until the tree's upper levels are loaded a node reads more from disk per fresh
    key; ``liveledger_state_tree_loaded`` says when that is over (a bench waits for it
    before it measures)."""
    client, _, _ = node_client
    for _ in range(200):
        metrics = await (await client.get("/metrics")).text()
        if re.search(r"^liveledger_state_tree_loaded 1\.0$", metrics, re.MULTILINE):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the state tree was never reported loaded")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_metrics_split_the_nodes_cpu_by_thread(node_client):
    """Which part of a loaded node is busy (docs/node.md, LevelDB compactions): its
    event loop, its consensus thread, or the rest of the process."""
    client, _, _ = node_client
    for _ in range(200):
        metrics = await (await client.get("/metrics")).text()
        found = re.findall(
            r'^liveledger_thread_cpu_seconds_total\{thread="(\w+)"\} [0-9.e+-]+$',
            metrics,
            re.MULTILINE,
        )
        if "consensus" in found:
            assert sorted(found) == ["consensus", "event_loop", "other"]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no CPU figure for the consensus thread")


def _signature_checks(metrics: str) -> dict[str, float]:
    found = re.findall(
        r'^liveledger_signature_checks_total\{by="(\w+)"\} ([0-9.e+-]+)$', metrics, re.MULTILINE
    )
    return {by: float(n) for by, n in found}


async def test_a_transaction_sent_again_after_its_commit_costs_no_signature_check(node_client):
    """The metrics count what the signature workers checked and what they answered from
    memory; a committed transaction that comes again (a late gossip copy, a replay) is
    refused as before, from memory."""
    client, node, faucet = node_client
    before = _signature_checks(await (await client.get("/metrics")).text())
    tx = transfer(faucet, node.genesis.chain_id, bytes(20), 1, 0)
    resp = await post_tx(client, tx)
    assert resp.status == 200, await resp.text()
    await wait_committed(client, tx.hash.hex())
    again = await post_tx(client, tx)
    assert (await again.json())["code"] == "nonce_too_low"
    after = _signature_checks(await (await client.get("/metrics")).text())
    assert after["workers"] == before.get("workers", 0) + 1
    assert after["memory"] == before.get("memory", 0) + 1


def _stage_cpu(metrics: str) -> dict[str, float]:
    found = re.findall(
        r'^liveledger_stage_cpu_seconds_total\{stage="(\w+)"\} ([0-9.e+-]+)$', metrics, re.MULTILINE
    )
    return {stage: float(seconds) for stage, seconds in found}


async def test_the_metrics_split_the_pipelines_cpu_by_stage(node_client):
    """Where a transaction's CPU went, stage by stage (node.stage_cpu): the node admits,
    selects, executes, commits and cleans up after a commit, and says so."""
    client, node, faucet = node_client
    tx = transfer(faucet, node.genesis.chain_id, bytes(20), 1, 0)
    resp = await post_tx(client, tx)
    assert resp.status == 200, await resp.text()
    await wait_committed(client, tx.hash.hex())
    stages = _stage_cpu(await (await client.get("/metrics")).text())
    assert list(stages) == list(STAGES)
    busy = ("admission_decode", "admission_checks", "select", "execute", "tree", "roots")
    assert all(stages[s] > 0 for s in (*busy, "commit", "after_commit")), stages
    # A lone validator verifies no other producer's proposals.
    assert stages["block_txs"] == 0.0


async def test_one_middleware_renders_every_refusal_and_hides_bugs(caplog):
    """Whatever raises it (a route's HttpError, an Invalid with its own status, aiohttp,
    a bug), a refusal is ``{"code", "message"}``; a bug is a logged 500 without its detail."""

    async def unavailable(_request):
        raise HttpError(503, "unavailable", "node is starting or stopping", {"Retry-After": "1"})

    async def denied(_request):
        raise ViewDenied("not your order")

    async def bad_address(_request):
        parse_address("ll1nope")

    async def bug(_request):
        raise RuntimeError("secret detail of a bug")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/denied", denied)
    app.router.add_get("/address", bad_address)
    app.router.add_get("/bug", bug)
    cases = {
        "/unavailable": (503, "unavailable"),
        "/denied": (403, "forbidden"),
        "/address": (400, "bad_address"),
        "/bug": (500, "internal"),
        "/nowhere": (404, "not_found"),
    }
    async with TestClient(app_server(app)) as client:
        answers = {}
        for path, (status, code) in cases.items():
            resp = await client.get(path)
            doc = await resp.json()
            assert resp.status == status and set(doc) == {"code", "message"}, (path, doc)
            assert doc["code"] == code, (path, doc)
            answers[path] = resp, doc
        resp = await client.post("/bug")
        assert resp.status == 405 and (await resp.json())["code"] == "method_not_allowed"
    assert answers["/unavailable"][0].headers["Retry-After"] == "1"
    assert answers["/denied"][1]["message"] == "not your order"
    # The bug's detail is in the log, with its traceback, and not in the answer.
    assert answers["/bug"][1] == {"code": "internal", "message": "internal error"}
    (record,) = [r for r in caplog.records if r.name == "node.api"]
    assert record.exc_info and "secret detail" in str(record.exc_info[1])


async def test_every_route_answers_503_with_retry_after_until_the_node_is_open(tmp_path):
    """Before the node opens its store (and after it closes), each family of routes
    refuses with 503 ``unavailable`` and ``Retry-After``, as the document says."""
    from node.api import create_app
    from node.service import Node
    from tests.node.conftest import make_home

    _, home = make_home(tmp_path)
    node = Node.from_home(home, "")  # not opened: no chain, no mempool
    routes = [
        ("GET", "/v1/status"),
        ("GET", "/v1/staking/members"),
        ("GET", "/v1/params"),
        ("GET", "/v1/listings/1"),
        ("POST", "/v1/txs/simulate"),
    ]
    async with TestClient(node_server(node, create_app(node))) as client:
        for method, path in routes:
            resp = await client.request(method, path, json={"tx": "00"})
            doc = await resp.json()
            assert (resp.status, doc["code"]) == (503, "unavailable"), (path, doc)
            assert resp.headers.get("Retry-After") == "1", path


async def test_each_view_of_a_block_is_its_own_and_answers_alike_again(node_client):
    """Rendered blocks are kept by height and view (``?txs=``): every spelling of a view
    answers that view, the second time as the first."""
    client, _, _ = node_client
    for _ in range(100):
        if (await (await client.get("/v1/status")).json())["height"] >= 1:
            break
        await asyncio.sleep(0.05)
    views = {}
    for spelling in ("true", "false", "no", "0", "hashes", "anything", "hashes"):
        views.setdefault(spelling, []).append(
            await (await client.get(f"/v1/blocks/1?txs={spelling}")).text()
        )
    assert views["false"][0] == views["no"][0] == views["0"][0]
    assert views["anything"][0] == views["true"][0]
    assert views["hashes"][0] == views["hashes"][1]
    assert "tx_hashes" in json.loads(views["hashes"][0])
    assert {"tx_hashes", "txs"}.isdisjoint(json.loads(views["false"][0]))
    assert len({views["true"][0], views["false"][0], views["hashes"][0]}) == 3


def test_rendered_blocks_are_bounded_in_bytes():
    kept = RenderedBlocks(max_bytes=100)
    kept.put(1, "true", "a" * 60)
    kept.put(2, "true", "b" * 30)
    assert kept.get(1, "true") == "a" * 60  # now the most recently used
    kept.put(3, "true", "c" * 30)
    assert kept.get(2, "true") is None and kept.get(1, "true") is not None
    kept.put(4, "true", "d" * 101)  # larger than the whole bound: not kept
    assert kept.get(4, "true") is None
