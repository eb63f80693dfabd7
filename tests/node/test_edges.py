"""Hostile clients at the HTTP and WebSocket edges of a real node (issue 10, item 3).

Each attack runs against a single-validator node serving on a real socket on
127.0.0.1, with the node's defaults (32 MiB bodies, feed caps) unless the test
says otherwise, and each checks that an honest client's transfer, submitted
during the attack, still commits. Figures (time, memory, event-loop stalls) are
printed, never asserted: run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from apps.commerce.feed import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, FeedLimits
from core import PrivateKey, TxBody, sign_tx
from core.keystore import load_key
from genesis import create_localnet
from node.service import Node
from tests.node.conftest import refusals
from tests.served import node_server
from vm import ChainParams, Transfer

BOMB_BYTES = 32 * 1024 * 1024
# The bound for an honest transfer during an attack is 3 s on the devnet;
# asserted with room for a loaded two-core test machine, the figure is printed.
HONEST_TIMEOUT_S = 15.0
WAIT = 10.0


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *, params: ChainParams | None = None, **config: object):
    """(client, node, faucet) of a one-validator node with ``config`` over its defaults."""
    layout = create_localnet(tmp_path / "net", 1, "", params=params)
    home = layout.nodes[0].home
    path = home / "config.json"
    doc = json.loads(path.read_text())
    doc.update({"block_interval_ms": 100, **config})
    path.write_text(json.dumps(doc))
    node = Node.from_home(home, "")
    client = TestClient(node_server(node))
    await client.start_server()
    try:
        yield client, node, load_key(layout.faucet_key_path, "")
    finally:
        await client.close()


def transfer(key: PrivateKey, chain_id: str, nonce: int, amount: int = 7) -> bytes:
    to = PrivateKey.generate().address
    body = TxBody(nonce, 1000, 1000, "transfer", Transfer(to, amount).encode())
    return sign_tx(key, chain_id, body).encode()


async def committed(client: TestClient, tx_hash: str, timeout: float = HONEST_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await client.get(f"/v1/txs/{tx_hash}")
        if resp.status == 200:
            doc = await resp.json()
            if doc["status"] == "committed":
                return doc
        await asyncio.sleep(0.02)
    raise AssertionError(f"honest transfer {tx_hash} not committed in {timeout} s")


async def honest_transfer(client: TestClient, node: Node, key: PrivateKey, nonce: int) -> float:
    """Submit a transfer and wait until it is final; seconds it took (printed by callers)."""
    started = time.monotonic()
    resp = await client.post(
        "/v1/txs", json={"tx": transfer(key, node.genesis.chain_id, nonce).hex()}
    )
    assert resp.status == 200, await resp.text()
    doc = await committed(client, (await resp.json())["hash"])
    assert doc["receipt"]["code"] == "ok"
    return time.monotonic() - started


class LoopStalls:
    """The longest the event loop went without running a 5 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.worst = max(self.worst, now - last - 0.005)
            last = now

    def __enter__(self) -> LoopStalls:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def bomb(client, body: bytes, content_type: str) -> tuple[int, dict, float, float, float]:
    """POST ``body``: (status, answer, seconds, peak traced MiB, worst loop stall s)."""
    tracemalloc.start()
    try:
        with LoopStalls() as stalls:
            started = time.monotonic()
            resp = await client.post("/v1/txs", data=body, headers={"Content-Type": content_type})
            doc = await resp.json()
            elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return resp.status, doc, elapsed, peak, stalls.worst


# --- parse bombs ---


async def test_msgpack_parse_bomb_is_refused_from_its_header(tmp_path):
    """32 MiB of msgpack nils under an array-32 header: 33 million items, once unpacked."""
    async with serving(tmp_path) as (client, node, faucet):
        count = BOMB_BYTES - 5
        body = b"\xdd" + count.to_bytes(4, "big") + b"\xc0" * count
        honest = asyncio.create_task(honest_transfer(client, node, faucet, 0))
        status, doc, elapsed, peak, stall = await bomb(client, body, "application/msgpack")
        print(
            f"\nmsgpack bomb ({len(body) / 2**20:.0f} MiB, {count:,} items): {status} "
            f"{doc['code']} in {elapsed * 1000:.0f} ms, peak traced memory {peak:.0f} MiB, "
            f"worst event-loop stall {stall * 1000:.0f} ms"
        )
        assert status == 400 and doc["code"] == "too_large", doc
        # Refused from the 5-byte header: nothing near the 33M-item list (>250 MiB)
        # was built; what remains is the body itself and aiohttp's copy of it.
        assert peak < 3 * BOMB_BYTES / 2**20, peak
        print(f"honest transfer final in {await honest * 1000:.0f} ms")


async def test_msgpack_batch_shape_is_checked_item_by_item(tmp_path):
    async with serving(tmp_path) as (client, node, faucet):
        good = transfer(faucet, node.genesis.chain_id, 0)
        cases = {
            b"\x91\xc0": "malformed",  # an item that is not bin
            b"\x92\xc4\x01\x00": "malformed",  # fewer items than the header says
            b"\x91\xc4\x05\x00": "malformed",  # an item running past the end
            b"\x90\x00": "malformed",  # trailing bytes
            b"\xdc\x4e\x21": "too_large",  # 20,001 items, from the header alone
            b"\x81\xa1a\x01": "malformed",  # a map
            b"\xdd\x00": "malformed",  # a truncated header
        }
        for body, code in cases.items():
            resp = await client.post(
                "/v1/txs", data=body, headers={"Content-Type": "application/msgpack"}
            )
            assert resp.status == 400 and (await resp.json())["code"] == code, body
        # Still the canonical batch a client sends (bin 8 / bin 16 headers).
        body = b"\x91\xc5" + len(good).to_bytes(2, "big") + good
        resp = await client.post(
            "/v1/txs", data=body, headers={"Content-Type": "application/msgpack"}
        )
        doc = await resp.json()
        assert resp.status == 200 and doc["accepted"] == 1, doc
        await committed(client, doc["results"][0]["hash"])


async def test_json_bombs_are_refused_before_parsing(tmp_path):
    """Nested brackets (recursion), a 10k-digit integer and 11M empty strings: all 400."""
    async with serving(tmp_path) as (client, node, faucet):
        nested = b'{"txs": ' + b"[" * (BOMB_BYTES // 2 - 8) + b"]" * (BOMB_BYTES // 2 - 8) + b"}"
        huge_int = b'{"tx": ' + b"9" * 10_000 + b"}"
        empties = b'{"txs": [' + b'"",' * (BOMB_BYTES // 3 - 4) + b'""]}'
        honest = asyncio.create_task(honest_transfer(client, node, faucet, 0))
        for name, body, code in (
            ("nested brackets", nested, "malformed"),
            ("huge integer", huge_int, "malformed"),
            ("empty strings", empties, "too_large"),
        ):
            status, doc, elapsed, peak, stall = await bomb(client, body, "application/json")
            print(
                f"\njson bomb, {name} ({len(body) / 2**20:.1f} MiB): {status} {doc['code']} in "
                f"{elapsed * 1000:.0f} ms, peak traced memory {peak:.0f} MiB, worst event-loop "
                f"stall {stall * 1000:.0f} ms"
            )
            assert status == 400 and doc["code"] == code, (name, doc)
        print(f"honest transfer final in {await honest * 1000:.0f} ms")


# --- a full mempool ---


async def test_full_mempool_answers_503_with_retry_after(tmp_path):
    """A node whose mempool holds one 3-transaction block: the next client waits, not fails."""
    params = dataclasses.replace(ChainParams(), max_block_txs=3)
    async with serving(
        tmp_path, params=params, block_interval_ms=1000, mempool={"max_pending_blocks": 1}
    ) as (client, node, faucet):
        chain_id = node.genesis.chain_id
        refused = None
        for nonce in range(50):
            raw = transfer(faucet, chain_id, nonce)
            resp = await client.post("/v1/txs", json={"tx": raw.hex()})
            if resp.status != 200:
                refused = (resp, raw, nonce)
                break
        assert refused is not None, "the mempool never filled"
        resp, raw, nonce = refused
        doc = await resp.json()
        assert resp.status == 503 and doc["code"] == "mempool_full", doc
        wait = int(resp.headers["Retry-After"])
        assert wait >= 1
        # The same bytes, resubmitted after Retry-After (as a client would): accepted, final.
        started = time.monotonic()
        deadline = started + HONEST_TIMEOUT_S
        while True:
            await asyncio.sleep(wait)
            resp = await client.post("/v1/txs", json={"tx": raw.hex()})
            if resp.status == 200 or time.monotonic() > deadline:
                break
            assert resp.status == 503
        assert resp.status == 200, await resp.text()
        await committed(client, (await resp.json())["hash"])
        print(f"\nrefused transfer final {time.monotonic() - started:.1f} s after its retry")


# --- WebSocket exhaustion ---


async def ws_ready(client: TestClient, path: str) -> aiohttp.ClientWebSocketResponse:
    """A feed socket once the server said ``ready``."""
    ws = await client.ws_connect(path)
    msg = await ws.receive(timeout=WAIT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    assert json.loads(msg.data)["type"] == "ready"
    return ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes: its close code (None if still open after WAIT)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=deadline - time.monotonic())
        except TimeoutError:
            return None
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code
    return None


async def test_feed_connections_are_capped_per_address(tmp_path):
    """One address opens feeds until refused: closed at once with 1013, others still served."""
    cap = FeedLimits().max_per_address
    async with serving(tmp_path) as (client, node, faucet):
        sockets = [await ws_ready(client, "/v1/blocks/ws") for _ in range(cap)]
        honest = asyncio.create_task(honest_transfer(client, node, faucet, 0))
        extra = await client.ws_connect("/v1/blocks/ws")
        assert await closed_with(extra) == CLOSE_TRY_AGAIN_LATER
        metrics = await (await client.get("/metrics")).text()
        assert refusals(metrics, "feeds", "per_address") == 1
        assert refusals(metrics, "feeds", "total") == 0
        print(f"\nhonest transfer final in {await honest * 1000:.0f} ms with {cap} feeds open")
        # A slot frees once a client has left (its handler ends just after the close).
        await sockets.pop().close()
        deadline = time.monotonic() + WAIT
        while True:
            again = await client.ws_connect("/v1/blocks/ws")
            msg = await again.receive(timeout=WAIT)
            if msg.type == aiohttp.WSMsgType.TEXT:
                break
            assert again.close_code == CLOSE_TRY_AGAIN_LATER and time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert json.loads(msg.data)["type"] == "ready"
        sockets.append(again)
        for ws in sockets:
            await ws.close()


async def test_feed_connections_are_capped_per_node_and_replays_bounded(tmp_path):
    async with serving(
        tmp_path, feeds={"max_connections": 3, "max_per_address": 10, "max_replay_blocks": 2}
    ) as (client, node, faucet):
        sockets = [await ws_ready(client, "/v1/blocks/ws") for _ in range(3)]
        extra = await client.ws_connect("/v1/blocks/ws")
        assert await closed_with(extra) == CLOSE_TRY_AGAIN_LATER
        metrics = await (await client.get("/metrics")).text()
        assert refusals(metrics, "feeds", "total") == 1
        assert refusals(metrics, "feeds", "per_address") == 0
        for ws in sockets:
            await ws.close()
        await honest_transfer(client, node, faucet, 0)
        deadline = time.monotonic() + WAIT
        while node.chain.height < 4:
            assert time.monotonic() < deadline, "the chain stopped"
            await asyncio.sleep(0.02)
        height = node.chain.height
        resp = await client.get("/v1/blocks/ws?from=0", headers={"Upgrade": "websocket"})
        assert resp.status == 400 and (await resp.json())["code"] == "replay_too_long"
        # Within the bound the replay is exact: the blocks after `from`, then ready.
        ws = await client.ws_connect(f"/v1/blocks/ws?from={height - 2}")
        heights = []
        while True:
            doc = json.loads((await ws.receive(timeout=WAIT)).data)
            if doc["type"] == "ready":
                break
            heights.append(doc["height"])
        assert heights == list(range(height - 1, doc["height"] + 1))
        await ws.close()


async def test_feed_client_flooding_messages_is_closed(tmp_path):
    """Client messages mean nothing to the feed; a flood of them is closed with 1008."""
    async with serving(tmp_path) as (client, node, faucet):
        flooder = await ws_ready(client, "/v1/blocks/ws")
        quiet = await ws_ready(client, "/v1/blocks/ws")
        honest = asyncio.create_task(honest_transfer(client, node, faucet, 0))
        for i in range(2_000):
            try:
                await flooder.send_str(f"spam {i}")
            except ConnectionError:
                break
        assert await closed_with(flooder) == CLOSE_POLICY_VIOLATION
        print(f"\nhonest transfer final in {await honest * 1000:.0f} ms during the flood")
        # The quiet client still gets blocks.
        msg = await quiet.receive(timeout=WAIT)
        assert json.loads(msg.data)["type"] == "block"
        await quiet.close()


@pytest.mark.parametrize("text", ["²", "١٢", "1²"])
async def test_unicode_digits_are_refused_not_crashing(tmp_path, text):
    """``str.isdigit`` takes "²", which ``int`` refuses: a 400, never a 500."""
    async with serving(tmp_path) as (client, _node, _faucet):
        for path in (
            f"/v1/blocks/{text}",
            f"/v1/state/01?height={text}",
            f"/v1/listings/{text}",
            f"/v1/listings?limit={text}",
        ):
            resp = await client.get(path)
            assert 400 <= resp.status < 500, (path, resp.status)
            assert "code" in await resp.json()
        signed = {"X-LiveLedger-Key": "00" * 32, "X-LiveLedger-Time": text}
        signed["X-LiveLedger-Signature"] = "00" * 64
        resp = await client.get("/v1/orders/1", headers=signed)
        assert resp.status in (401, 503), resp.status


async def test_a_slow_upload_ends_with_408_and_honest_clients_are_served(tmp_path):
    """A client trickling a body cannot hold its connection and buffer forever."""
    async with serving(tmp_path, body_timeout_ms=300) as (client, node, faucet):
        server = client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"tx": "'
        )
        await writer.drain()
        honest = asyncio.create_task(honest_transfer(client, node, faucet, 0))
        # A byte now and then, never the whole body.
        for _ in range(5):
            await asyncio.sleep(0.1)
            writer.write(b"0")
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 408")
        assert b"Connection: close" in head
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), WAIT)
        assert json.loads(body)["code"] == "request_timeout"
        writer.close()
        print(f"\nhonest transfer final in {await honest * 1000:.0f} ms")


async def test_bodies_that_do_not_decode_or_end_early_are_the_clients_fault(tmp_path, caplog):
    """A body that fails its ``Content-Encoding``, or a client that drops mid-body, is a
    400 ``malformed`` (when anyone is left to read it), never a 500 logged as the node's
    bug. (aiohttp itself still logs the broken payload when it lingers on the socket.)"""
    async with serving(tmp_path) as (client, node, faucet):
        for path in ("/v1/txs", "/v1/txs/simulate"):
            resp = await client.post(
                path,
                data=b"0123456789",
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
            assert resp.status == 400 and (await resp.json())["code"] == "malformed", path
        server = client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"tx": "'
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await honest_transfer(client, node, faucet, 0)
    bugs = [r for r in caplog.records if r.name == "node.api" and r.levelno >= logging.ERROR]
    assert not bugs, caplog.text


@pytest.mark.parametrize(
    "config, budget",
    [({}, 2000), ({"timeout_propose_ms": 600}, 400), ({"build_budget_ms": 300}, 300)],
)
async def test_the_build_budget_never_outlasts_timeout_propose(tmp_path, config, budget):
    """A proposal built for longer than the others wait for it loses its round whatever
    the setting says: the budget is at most two thirds of timeout_propose."""
    async with serving(tmp_path, **config) as (_client, node, _faucet):
        assert node.consensus is not None
        assert node.consensus.app.build_budget_ms == budget
