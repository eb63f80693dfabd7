"""``--wait``'s "committed" is proven, not the node's word: against a real node (real
LevelDB, real socket) behind a hostile proxy that drops the transaction and says it is
committed, says a failed one succeeded, or forges its proof. With a trusted genesis the
CLI prints the outcome the inclusion proof shows, and ends with ``unproven`` (exit 4)
when the node cannot prove what it says; without one, it says the outcome is the
node's word."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web
from click.testing import CliRunner, Result

from cli.main import main
from core import tx_hash
from tests.cli.test_trust import Net, running_net, until_height
from tests.served import app_server
from vm import Receipt

# A transaction's status and its proof.
STATUS = r"/v1/txs/[0-9a-f]{64}"
PROOF = r"/v1/txs/[0-9a-f]{64}/proof"
# GET answers the proxy rewrites: (path, JSON document) -> JSON document.
Rewrite = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class Hostile:
    """A proxy to the node: ``drop`` answers a submitted transaction with its hash and
    never passes it on; ``rewrite`` changes the node's successful GET answers."""

    upstream: str
    url: str = ""
    drop: bool = False
    rewrite: Rewrite | None = None
    # Hashes of the transactions dropped.
    dropped: list[str] = field(default_factory=list)
    # GET paths matching a pattern answered 503 busy (a node at its read bound), as many
    # times as its count.
    busy: dict[str, int] = field(default_factory=dict)


@asynccontextmanager
async def hostile(upstream: str) -> AsyncIterator[Hostile]:
    proxy = Hostile(upstream)
    session = ClientSession()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if proxy.drop and request.method == "POST" and request.path == "/v1/txs":
            raw = bytes.fromhex(json.loads(body)["tx"])
            proxy.dropped.append(tx_hash(raw).hex())
            return web.json_response({"hash": proxy.dropped[-1]})
        if proxy.drop and request.path in {f"/v1/txs/{h}" for h in proxy.dropped}:
            # The node's word for the dropped transaction: committed, ok, at its head.
            async with session.get(f"{upstream}/v1/status") as resp:
                head = (await resp.json())["height"]
            receipt = {"code": "ok", "message": "", "fee": 1_000, "events": []}
            doc = {"hash": request.path[8:], "status": "committed", "height": head}
            return web.json_response({**doc, "index": 0, "receipt": receipt})
        for pattern, times in proxy.busy.items():
            if times and request.method == "GET" and re.fullmatch(pattern, request.path):
                proxy.busy[pattern] -= 1
                doc = {"code": "busy", "message": "2 block reads or proofs run and 16 wait"}
                return web.json_response(doc, status=503, headers={"Retry-After": "1"})
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.request(
            request.method, upstream + request.path_qs, data=body or None, headers=headers
        ) as resp:
            status, answer = resp.status, await resp.read()
        if proxy.rewrite is not None and request.method == "GET" and status == 200:
            answer = json.dumps(proxy.rewrite(request.path, json.loads(answer))).encode()
        return web.Response(status=status, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = app_server(app)
    await server.start_server()
    proxy.url = str(server.make_url("")).rstrip("/")
    try:
        yield proxy
    finally:
        await server.close()
        await session.close()


async def transfer(net: Net, node: str, amount: int, *extra: str) -> Result:
    """The faucet's transfer to itself, sent through ``node`` and waited for."""
    argv = ["tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", str(amount)]
    argv += ["--wait", "--keyring", str(net.keyring), "--node", node, *extra]
    env = {"LIVELEDGER_PASSPHRASE": ""}
    return await asyncio.to_thread(CliRunner().invoke, main, argv, env=env)


def trusting(net: Net) -> tuple[str, str]:
    return ("--genesis", str(net.layout.genesis_path))


def said_ok(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A status answer whose receipt says ok (the transaction failed in its block)."""
    if path.startswith("/v1/txs/") and not path.endswith("/proof") and doc.get("receipt"):
        doc["receipt"].update(code="ok", message="")
    return doc


def forged(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``said_ok``, and the proof's receipt changed to say ok as well."""
    if path.endswith("/proof"):
        real = Receipt.decode(bytes.fromhex(doc["receipt"]))
        doc["receipt"] = Receipt(real.tx_hash, "ok", "", real.fee, real.events).encode().hex()
        return doc
    return said_ok(path, doc)


async def test_a_dropped_transaction_said_committed_is_unproven_exit_4(tmp_path):
    async with running_net(tmp_path) as net, hostile(net.url) as proxy:
        await until_height(net, 1)
        # An honest answer is proven, and says against what.
        done = await transfer(net, proxy.url, 1, *trusting(net))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert f"(proven against --genesis {net.layout.genesis_path})" in done.stdout
        assert "unproven" not in done.output

        proxy.drop = True
        done = await transfer(net, proxy.url, 2, *trusting(net))
        assert done.exit_code == 4, (done.stdout, done.stderr)
        (dropped,) = proxy.dropped
        assert "committed at height" not in done.stdout
        assert f"error: unproven: {proxy.url} says transaction {dropped} is committed" in (
            done.stderr
        )
        # Why: the node itself has it in no block.
        assert "(not_found: transaction" in done.stderr
        assert "its outcome is unknown" in done.stderr
        assert "hint: the node may have dropped it" in done.stderr
        assert f"liveledger query tx {dropped} --prove --node URL" in done.stderr


async def test_without_a_trusted_genesis_the_outcome_is_said_to_be_the_node_s_word(tmp_path):
    async with running_net(tmp_path) as net, hostile(net.url) as proxy:
        await until_height(net, 1)
        proxy.drop = True
        done = await transfer(net, proxy.url, 2)
        # Existing flows go on (exit 0), and the line says what it is.
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert "(unproven: the node's word, no genesis is trusted)" in done.stdout
        assert "warning: no genesis is pinned" in done.stderr


async def test_the_proven_receipt_is_printed_not_the_node_s(tmp_path):
    async with running_net(tmp_path) as net, hostile(net.url) as proxy:
        await until_height(net, 1)
        # A transfer no balance covers, sent unsimulated: it fails in its block, and the
        # node says it succeeded; its proof shows the failure (exit 3, the chain's code).
        proxy.rewrite = said_ok
        done = await transfer(net, proxy.url, 2**63, "--no-simulate", *trusting(net))
        assert done.exit_code == 3, (done.stdout, done.stderr)
        assert "error: insufficient_funds:" in done.stderr
        assert f"proven against --genesis {net.layout.genesis_path})" in done.stderr
        assert "committed at height" not in done.stdout
        # A proof whose receipt is changed to match the lie does not verify.
        proxy.rewrite = forged
        done = await transfer(net, proxy.url, 2**63, "--no-simulate", *trusting(net))
        assert done.exit_code == 4, (done.stdout, done.stderr)
        assert "error: unproven:" in done.stderr and "is committed at height" in done.stderr
        assert "(ok)" in done.stderr and "invalid_proof" in done.stderr


async def test_a_busy_node_is_asked_again_not_said_unproven(tmp_path):
    """An honest node at its bound of block reads (a flash deal's buyers all proving
    their orders) answers 503 busy: no word about the transaction, so --wait asks again.
    Read as a failed proof, every --wait user of a busy node got exit 4 "the node may
    have dropped it"; a busy status answer ended a sent transaction with exit 2, as if
    refused before any block (and sending it again pays twice)."""
    async with running_net(tmp_path) as net, hostile(net.url) as proxy:
        await until_height(net, 1)
        proxy.busy = {PROOF: 2}
        done = await transfer(net, proxy.url, 1, *trusting(net))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert f"(proven against --genesis {net.layout.genesis_path})" in done.stdout
        assert proxy.busy == {PROOF: 0}
        # Busy as it is polled for the transaction's status, then for its proof.
        proxy.busy = {STATUS: 2, PROOF: 1}
        done = await transfer(net, proxy.url, 2, *trusting(net))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert f"(proven against --genesis {net.layout.genesis_path})" in done.stdout
        assert proxy.busy == {STATUS: 0, PROOF: 0}
