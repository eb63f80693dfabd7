"""The WebSocket feeds on a real node and server: a scripted live session's events in
order, resumed after a disconnect and replayed from a position with nothing missed or
duplicated; slow clients dropped with a close code; clients that stop reading (raw
sockets with small buffers) holding no replay slot and dropped after the send deadline;
the finalized blocks feed.

Every test runs on uvloop, as the node does; those marked ``both_loops`` (a client that
stops reading) on asyncio's loop too: how a transport holds the bytes its client does
not take is each loop's own (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator
from itertools import chain

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, get_port_socket

from apps.commerce import feed, feed_events, views
from apps.commerce import payloads as tx
from apps.commerce.feed import CLOSE_SLOW_CONSUMER, CLOSE_TRY_AGAIN_LATER, HUB, REPLAY_SLOTS
from apps.commerce.sealing import seal_address
from core import PrivateKey, TxBody, sign_tx
from core.keystore import load_key
from node.run import build_app, http_server
from node.service import Node
from tests.apps.commerce.test_http import FEE, PRICE, Actor, Driver, place, running_driver
from tests.node.conftest import make_home
from tests.served import node_server
from vm import Transfer

WAIT = 10.0


@pytest.fixture
async def driver(tmp_path):
    async with running_driver(tmp_path) as d:
        yield d


async def read_until(ws, count=None, *, kind=None, wait=WAIT):
    """Messages until ``count`` events, an event of ``kind``, or the socket closes;
    ``wait`` is the longest quiet gap between two messages."""
    events = []
    while True:
        msg = await ws.receive(timeout=wait)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return events
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        doc = json.loads(msg.data)
        if doc["type"] != "event":
            continue
        events.append(doc)
        if (count is not None and len(events) == count) or doc["kind"] == kind:
            return events


async def connect(d: Driver, path: str):
    """A feed socket, once the server says it is live (its ``ready`` message)."""
    ws = await d.client.ws_connect(path)
    backlog = []
    while True:
        msg = await ws.receive(timeout=WAIT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        doc = json.loads(msg.data)
        if doc["type"] == "ready":
            return ws, backlog, doc["height"]
        backlog.append(doc)


def stored_feed(d: Driver, session_id: int, first: int, last: int) -> list[tuple]:
    """The session's feed recomputed from the node's store, as (height, index, kind)."""
    store = d.node.chain.store
    from vm import BlockEvents, Receipt

    out = []
    for height in range(first, last + 1):
        raw = store.get_block_events(height)
        begin = [] if raw is None else list(BlockEvents.decode(raw).events)
        receipts = [Receipt.decode(r) for r in store.get_receipts(height)]
        events = list(chain(begin, (e for r in receipts for e in r.events)))
        chosen = {id(e) for e in feed_events(events, session_id)}
        out += [(height, i, e.kind) for i, e in enumerate(events) if id(e) in chosen]
    return out


def bid(merchant: Actor, auction_id: int, maximum: int) -> tx.Bid:
    ciphertext, commitment, _ = seal_address(merchant.enc_public, "1 Bid Street")
    return tx.Bid(auction_id, maximum, merchant.enc_public, commitment, ciphertext)


def positions(events):
    return [(e["height"], e["index"]) for e in events]


async def test_session_feed_in_order_with_resume_and_replay(driver):
    d = driver
    merchant, host, alice, bob, carol = (
        Actor(n) for n in ("merchant", "host", "alice", "bob", "carol")
    )
    await d.fund(merchant, host, alice, bob, carol)
    await d.run(
        merchant.key, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", merchant.enc_public)
    )
    await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
    await d.run(merchant.key, tx.CREATE_LISTING, tx.CreateListing("Tea pot", "", PRICE, 20, b""))
    await d.run(merchant.key, tx.CREATE_LISTING, tx.CreateListing("Cups", "", PRICE, 20, b""))
    await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))

    path = "/v1/sessions/1/events"
    ws_a, backlog, start_height = await connect(d, path)
    ws_b, _, _ = await connect(d, path)
    assert backlog == []

    await d.run(host.key, tx.PIN, tx.PinListing(1, 1))
    await d.run(merchant.key, tx.PIN, tx.PinListing(1, 2))
    now = d.block_time
    await d.run(merchant.key, tx.OPEN_DEAL, tx.OpenDeal(1, 1, 5_000, 3, 1, now, now + 600_000))
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane", deal=1))

    # Client B drops after the order (before the stock event of the same transaction)
    # and resumes from its last position later.
    first_b = await read_until(ws_b, 4)
    await ws_b.close()
    assert [e["kind"] for e in first_b] == [
        "commerce.listing_pinned",
        "commerce.listing_pinned",
        "commerce.deal_opened",
        "commerce.order_placed",
    ]
    last_b = first_b[-1]

    await d.run(bob.key, tx.PLACE_ORDER, place(merchant, "2 Bob Road", deal=1))
    await d.run(carol.key, tx.TIP, tx.Tip(1, 250, "hello from carol"))
    now = d.block_time
    # Deal 2 ends by block time: its close is a begin-block event.
    await d.run(merchant.key, tx.OPEN_DEAL, tx.OpenDeal(1, 2, 5_000, 2, 1, now, now + 1_000))
    ended = await read_until(ws_a, kind="commerce.deal_closed")
    assert ended[-1]["attrs"]["reason"] == "ended" and ended[-1]["attrs"]["deal"] == "2"

    # An auction of one cup (timed, 5 s): every bid after its start comes with less than
    # the counter-bid time (10 s) left, so each resets the clock; Bob's lower maximum is
    # answered by Alice's proxy. It ends while the script goes on.
    await d.run(merchant.key, tx.START_AUCTION, tx.StartAuction(1, 2, 5_000, 0, 0, 5_000, 1))
    await d.run(alice.key, tx.BID, bid(merchant, 1, 7_000))
    await d.run(bob.key, tx.BID, bid(merchant, 1, 6_000))

    ws_b, replayed_b, _ = await connect(d, f"{path}?from={last_b['height']}:{last_b['index']}")
    await d.run(host.key, tx.UNPIN, tx.PinListing(1, 2))
    await d.run(host.key, tx.CLOSE_DEAL, tx.DealRef(1))
    await d.run(carol.key, tx.PLACE_ORDER, place(merchant, "3 Carol Court", deal=0))
    # A session closes once its auctions have ended. The feed is quiet from Carol's
    # order until the auction's end, up to the 10 s counter-bid time after Bob's bid.
    until_won = await read_until(ws_a, kind="commerce.auction_ended", wait=WAIT + 10)
    await d.run(host.key, tx.CLOSE_SESSION, tx.SessionRef(1))

    all_a = ended + until_won + await read_until(ws_a)
    assert ws_a.close_code == 1000
    rest_b = await read_until(ws_b)
    assert ws_b.close_code == 1000

    kinds = [e["kind"].removeprefix("commerce.") for e in all_a]
    assert kinds == [
        "listing_pinned",
        "listing_pinned",
        "deal_opened",
        "order_placed",
        "stock_left",
        "order_placed",
        "stock_left",
        "tip",
        "deal_opened",
        "deal_closed",
        "auction_started",
        "auction_bid",
        "auction_extended",
        "auction_bid",
        "auction_extended",
        "listing_unpinned",
        "deal_closed",
        "order_placed",
        "stock_left",
        "order_placed",  # the winner's order, in the block that ends the auction
        "auction_ended",
        "session_closed",
    ]
    auction = [e["attrs"] for e in all_a if e["kind"].startswith("commerce.auction_")]
    # Bids show the price after them, the leader as a tag, and the time left.
    assert [(a["amount"], a["leader"]) for a in auction if "amount" in a] == [
        ("5000", auction[1]["leader"]),
        ("6050", auction[1]["leader"]),
    ]
    assert all(0 < int(a["left_ms"]) <= 10_000 for a in auction if "left_ms" in a)
    assert (auction[-1]["outcome"], auction[-1]["price"]) == ("won", "6050")
    # Strictly increasing positions, exactly the store's feed, no buyer anywhere.
    assert positions(all_a) == sorted(set(positions(all_a)))
    last = all_a[-1]["height"]
    assert [(*p, e["kind"]) for p, e in zip(positions(all_a), all_a, strict=True)] == stored_feed(
        d, 1, start_height + 1, last
    )
    text = json.dumps(all_a)
    for buyer in (alice, bob, carol):
        assert buyer.address.hex() not in text and buyer.text not in text
    # Deal units left, then the listing's: 20 - 3 allocated + 1 returned - 1 ordered.
    lefts = [e["attrs"]["left"] for e in all_a if e["kind"] == "commerce.stock_left"]
    assert lefts == ["2", "1", "17"]

    # B: what it saw, then the replay and live events: the same list, no gap, no repeat.
    assert first_b + replayed_b + rest_b == all_a

    # A late client replays from a position (after the first event) to the end and is closed.
    first = all_a[0]
    ws_c, replayed_c, _ = await connect(d, f"{path}?from={first['height']}:{first['index']}")
    assert replayed_c == all_a[1:]
    assert await read_until(ws_c) == [] and ws_c.close_code == 1000
    # ``from=<height>`` means after that whole block.
    ws_d, replayed_d, _ = await connect(d, f"{path}?from={all_a[3]['height']}")
    assert all_a[4]["height"] == all_a[3]["height"] and replayed_d == all_a[5:]
    await ws_d.close()


def on_a_loop() -> bool:
    """Whether the calling thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_a_session_feeds_ended_check_reads_off_the_event_loop(driver, monkeypatch):
    """Whether the session had closed at the subscription's height is a state read: it
    runs in the replays' threads, so while it is held there the node still answers (on
    the event loop it held every client), and the feed then delivers as before: a
    closed session's feed sends ``ready`` and closes with 1000."""
    d = driver
    merchant, host = Actor("merchant"), Actor("host")
    await d.fund(merchant, host)
    await d.run(
        merchant.key, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", merchant.enc_public)
    )
    await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
    await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))
    await d.run(host.key, tx.CLOSE_SESSION, tx.SessionRef(1))
    get_session = views.get_session
    on_loop: list[bool] = []
    entered, release = threading.Event(), threading.Event()

    def watched(state, session_id):
        on_loop.append(on_a_loop())
        if len(on_loop) == 2:  # the ended check (the first: whether the session exists)
            entered.set()
            release.wait(WAIT)
        return get_session(state, session_id)

    monkeypatch.setattr(views, "get_session", watched)
    try:
        # Without ``from``: nothing replayed, so only the check can end the feed.
        ws = await d.client.ws_connect("/v1/sessions/1/events")
        async with asyncio.timeout(WAIT):
            while not entered.is_set():
                await asyncio.sleep(0.01)
        # The check is held in its thread; the node answers meanwhile.
        assert (await d.client.get("/v1/status")).status == 200
    finally:
        release.set()
    msg = await ws.receive(timeout=WAIT)
    assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "ready"
    assert await read_until(ws) == [] and ws.close_code == 1000
    assert on_loop == [False, False]


@pytest.mark.both_loops
async def test_slow_client_is_dropped_with_a_close_code(driver):
    d = driver
    merchant, host, alice = (Actor(n) for n in ("merchant", "host", "alice"))
    await d.fund(merchant, host, alice)
    await d.run(
        merchant.key, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", merchant.enc_public)
    )
    await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
    await d.run(merchant.key, tx.CREATE_LISTING, tx.CreateListing("Tea pot", "", PRICE, 20, b""))
    await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))
    await d.run(host.key, tx.PIN, tx.PinListing(1, 1))
    # Room for one message: an order's two events in one block overflow the queue.
    d.client.server.app[HUB].max_queue_bytes = 400
    ws, _, _ = await connect(d, "/v1/sessions/1/events")
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane", deal=0))
    assert await read_until(ws) == []
    assert ws.close_code == CLOSE_SLOW_CONSUMER


async def test_blocks_feed_live_and_resumed(driver):
    d = driver
    ws, _, start = await connect(d, "/v1/blocks/ws")
    blocks = []
    while len(blocks) < 3:
        msg = await ws.receive(timeout=WAIT)
        blocks.append(json.loads(msg.data))
    await ws.close()
    assert [b["height"] for b in blocks] == [start + 1, start + 2, start + 3]
    assert all(b["type"] == "block" and len(b["hash"]) == 64 for b in blocks)
    ws, replayed, _ = await connect(d, f"/v1/blocks/ws?from={start + 1}")
    await ws.close()
    # Replayed block messages come before ``ready``; connect() collects them too.
    assert [b["height"] for b in replayed][:2] == [start + 2, start + 3]
    resp = await d.client.get("/v1/blocks/ws?from=x")
    assert (resp.status, (await resp.json())["code"]) == (400, "bad_param")
    await asyncio.sleep(0)


async def test_blocks_feed_counts_transactions_with_and_without_session_listeners(driver):
    """The block message counts a block's transactions whether the node reads its
    receipts (a session listens) or not (block listeners alone)."""
    d = driver
    merchant, host = Actor("merchant"), Actor("host")
    actors = [Actor(n) for n in ("ann", "ben", "cat")]
    ws, _, _ = await connect(d, "/v1/blocks/ws")

    async def counted(txs: int) -> None:
        """Blocks until ``txs`` more transactions were counted (a busy machine may
        split them over blocks), each block's count checked against its receipts."""
        store = d.node.chain.store
        seen = 0
        for _ in range(500):
            doc = json.loads((await ws.receive(timeout=WAIT)).data)
            assert doc["num_txs"] == len(store.get_receipts(doc["height"]))
            seen += doc["num_txs"]
            if seen >= txs:
                return
        raise AssertionError(f"{seen} of {txs} transactions counted in 500 blocks")

    await d.fund(*actors, merchant, host)
    await counted(5)
    await d.run(
        merchant.key, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", merchant.enc_public)
    )
    await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
    await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Live"))
    await counted(3)
    session_ws, _, _ = await connect(d, "/v1/sessions/1/events")
    await d.all(*((a.key, "transfer", Transfer(actors[0].address, 1)) for a in actors[1:]))
    await counted(2)
    await session_ws.close()
    await ws.close()


async def test_resumed_feeds_hold_a_replay_slot_only_while_replaying(driver):
    """A slot bounds replays at once, not resumed clients: live ones hold none, so more
    clients than slots resume (each gets its ``ready``) while the others stay open."""
    d = driver
    ws, _, start = await connect(d, "/v1/blocks/ws")
    await ws.close()
    resumed = []
    for _ in range(REPLAY_SLOTS + 2):
        ws, _, _ = await connect(d, f"/v1/blocks/ws?from={start}")
        resumed.append(ws)
    # Every one of them is live: the next block reaches them all.
    heights = [json.loads((await ws.receive(timeout=WAIT)).data)["height"] for ws in resumed]
    assert all(h > start for h in heights)
    for ws in resumed:
        await ws.close()


# --- clients that stop reading ---

# Socket buffers small enough that a replay of a few hundred KB fills them. Linux grows a
# send buffer to megabytes unless it is set; accepted sockets inherit the listener's.
SMALL_BUFFER = 4096
# Tips of the longest message: about 360 bytes of feed each, 700 KB in all, well past
# what the small buffers and aiohttp's write buffers of one socket hold (~260 KB).
TIPPERS = 32
TIPS_EACH = 60
TIP_MESSAGE = "m" * 140


@contextlib.asynccontextmanager
async def small_buffer_driver(tmp_path, **config: object):
    """``running_driver`` whose server sockets have small send buffers."""

    layout, home = make_home(tmp_path, **config)
    node = Node.from_home(home, "")
    listener = get_port_socket("127.0.0.1", 0, socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    client = TestClient(node_server(node, sock=listener))
    await client.start_server()
    try:
        yield Driver(client, node, load_key(layout.faucet_key_path, ""))
    finally:
        await client.close()


def signed(d: Driver, key: PrivateKey, tx_type: str, payload: object) -> str:
    """A transaction as ``Driver.submit`` signs it (hex), for a batch."""
    nonce = d.nonces.get(key.address, 0)
    d.nonces[key.address] = nonce + 1
    body = TxBody(nonce, FEE, d.node.chain.height + 500, tx_type, payload.encode())
    return sign_tx(key, d.chain_id, body).encode().hex()


async def tipped_session(d: Driver, tips_each: int = TIPS_EACH) -> int:
    """Session 1 with TIPPERS * tips_each tips stored; the height before the first."""
    merchant, host = Actor("merchant"), Actor("host")
    tippers = [Actor(f"tipper{i}") for i in range(TIPPERS)]
    await d.fund(merchant, host, *tippers)
    await d.run(
        merchant.key, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Acme", "", merchant.enc_public)
    )
    await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
    await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))
    start = d.node.chain.height
    batch = [
        signed(d, t.key, tx.TIP, tx.Tip(1, 1, TIP_MESSAGE))
        for _ in range(tips_each)
        for t in tippers
    ]
    resp = await d.client.post("/v1/txs", json={"txs": batch})
    doc = await resp.json()
    assert resp.status == 200 and doc["accepted"] == len(batch), doc
    # A sender's transactions commit in nonce order: its last one closes the batch.
    for result in doc["results"][-TIPPERS:]:
        await d.wait(result["hash"])
    return start


async def stalled(d: Driver, path: str, port: int | None = None) -> socket.socket:
    """A feed socket that reads the handshake's answer and then nothing (a zero window);
    to the driver's server, or to ``port`` on loopback."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setblocking(False)
    if port is None:
        await loop.sock_connect(sock, (d.client.server.host, d.client.server.port))
    else:
        await loop.sock_connect(sock, ("127.0.0.1", port))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        async with asyncio.timeout(WAIT):
            answer += await loop.sock_recv(sock, 1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete (opcode, payload) frames of a server's byte stream (never masked)."""
    out, at = [], 0
    while at + 2 <= len(data):
        opcode, size, head = data[at] & 0x0F, data[at + 1] & 0x7F, 2
        if size >= 126:
            width = 2 if size == 126 else 8
            head += width
            size = int.from_bytes(data[at + 2 : at + head])
        if at + head + size > len(data):
            break
        out.append((opcode, data[at + head : at + head + size]))
        at += head + size
    return out


async def read_stalled(
    sock: socket.socket, *, until_close: bool = False
) -> list[tuple[int, bytes]]:
    """Read the socket now: its frames until the connection ends (or, with
    ``until_close``, until a close frame)."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                chunk = b""
            data += chunk
            if not chunk or (until_close and any(op == 0x8 for op, _ in frames(data))):
                return frames(data)


def texts(got: list[tuple[int, bytes]]) -> list[dict]:
    return [json.loads(payload) for opcode, payload in got if opcode == 0x1]


async def admitted(d: Driver, count: int) -> list[aiohttp.ClientWebSocketResponse]:
    """``count`` live session feeds open at once, retried while the address's cap
    refuses them (1013): proof that the server released that many of its sockets."""
    feeds: list[aiohttp.ClientWebSocketResponse] = []
    async with asyncio.timeout(WAIT):
        while len(feeds) < count:
            ws = await d.client.ws_connect("/v1/sessions/1/events")
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:  # its ``ready``
                feeds.append(ws)
            else:
                assert ws.close_code == CLOSE_TRY_AGAIN_LATER
                await asyncio.sleep(0.1)
    return feeds


@pytest.mark.both_loops
async def test_clients_that_stop_reading_hold_no_replay_slot(tmp_path):
    """As many resuming clients as there are replay slots stop reading once their replay
    fills the socket buffers (a zero TCP window): an honest client still resumes at once,
    long before their sends' deadline would drop them."""
    async with small_buffer_driver(tmp_path) as d:
        start = await tipped_session(d)
        d.client.server.app[HUB].send_deadline_s = 10 * WAIT
        path = f"/v1/sessions/1/events?from={start}"
        socks = [await stalled(d, path) for _ in range(REPLAY_SLOTS)]
        try:
            async with asyncio.timeout(WAIT):
                ws, replayed, _ = await connect(d, path)
            assert [e["kind"] for e in replayed] == ["commerce.tip"] * (TIPPERS * TIPS_EACH)
            await ws.close()
        finally:
            for sock in socks:
                sock.close()


@pytest.mark.both_loops
async def test_clients_that_stop_reading_are_dropped_after_the_send_deadline(tmp_path, caplog):
    """A client that stops reading mid-replay is disconnected once a send has waited the
    hub's deadline, without a close frame (its buffer is full), and releases what it held:
    its address may open as many feeds again. Nothing is logged for it."""
    async with small_buffer_driver(tmp_path, feeds={"max_per_address": REPLAY_SLOTS}) as d:
        start = await tipped_session(d)
        d.client.server.app[HUB].send_deadline_s = 0.5
        socks = [
            await stalled(d, f"/v1/sessions/1/events?from={start}") for _ in range(REPLAY_SLOTS)
        ]
        try:
            fresh = await admitted(d, REPLAY_SLOTS)
            for sock in socks:
                got = await read_stalled(sock)
                # Cut in its replay: events only, no ``ready``, no close frame.
                assert got and {opcode for opcode, _ in got} == {0x1}
                assert {doc["type"] for doc in texts(got)} == {"event"}
        finally:
            for sock in socks:
                sock.close()
        for ws in fresh:
            await ws.close()
    assert [
        r
        for r in caplog.records
        if r.name.startswith(("aiohttp", "asyncio", "apps")) and r.levelno >= logging.WARNING
    ] == []


@pytest.mark.both_loops
async def test_a_replay_that_falls_behind_is_closed_before_it_ends(tmp_path):
    """Live messages that pile up past a client's queue cap while its replay is stuck
    close the feed with 4008 as soon as the socket moves, not after the whole replay."""
    async with small_buffer_driver(tmp_path) as d:
        start = await tipped_session(d)
        hub = d.client.server.app[HUB]
        hub.send_deadline_s = 10 * WAIT
        watcher, _, _ = await connect(d, "/v1/sessions/1/events")
        # Room for one tip in the queues of clients from now on.
        hub.max_queue_bytes = 400
        sock = await stalled(d, f"/v1/sessions/1/events?from={start}")
        try:
            tipper = Actor("tipper0")
            tip = (tipper.key, tx.TIP, tx.Tip(1, 1, TIP_MESSAGE))
            await d.all(tip, tip)
            # Published: the watcher has them, so the stalled client's queue overflowed.
            assert len(await read_until(watcher, 2)) == 2
            got = await read_stalled(sock, until_close=True)
        finally:
            sock.close()
        await watcher.close()
    opcode, payload = got[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2]) == CLOSE_SLOW_CONSUMER
    # Cut in its replay: events only, no ``ready``.
    assert {doc["type"] for doc in texts(got)} == {"event"}
    assert len(got) < TIPPERS * TIPS_EACH


@pytest.mark.both_loops
async def test_a_client_that_stops_reading_while_idle_is_dropped(tmp_path, monkeypatch):
    """A replay smaller than the write buffers leaves the feed idle with bytes unsent
    to a client that stopped reading. When the heartbeat gives up on it, the connection
    is dropped with them, not kept open (uncounted) until the client reads."""
    monkeypatch.setattr(feed, "HEARTBEAT_S", 0.5)
    async with small_buffer_driver(tmp_path, feeds={"max_per_address": 1}) as d:
        start = await tipped_session(d, tips_each=3)
        sock = await stalled(d, f"/v1/sessions/1/events?from={start}")
        try:
            for ws in await admitted(d, 1):
                await ws.close()
            got = await read_stalled(sock)
        finally:
            sock.close()
    # What the kernel buffers held; the rest of the replay and ``ready`` were dropped.
    assert {doc["type"] for doc in texts(got)} == {"event"}


@pytest.mark.both_loops
async def test_clients_that_never_answer_a_close_do_not_hold_the_servers_stop(
    tmp_path, monkeypatch
):
    """At shutdown every feed is closed (1001). aiohttp waits up to 10 s for a client to
    answer a close (for as long as its window stays shut if the close frame does not fit),
    and the feeds were closed one after another, before the node's own stop: a few
    clients that never answer (phones gone out of coverage, or on purpose) held the stop
    for minutes. All are closed at once, each within the send deadline."""
    release = threading.Event()
    real = feed.read_block_feed

    def held(*args: object) -> object:
        # The replays stay under way: their sockets have no read pending, which a close
        # would end at once.
        release.wait(WAIT)
        return real(*args)  # type: ignore[arg-type]  # the arguments it was given

    monkeypatch.setattr(feed, "read_block_feed", held)
    async with running_driver(tmp_path) as d:
        async with asyncio.timeout(WAIT):
            while d.node.chain.height < 2:
                await asyncio.sleep(0.05)
        d.client.server.app[HUB].send_deadline_s = 0.5
        socks = [await stalled(d, "/v1/blocks/ws?from=1") for _ in range(4)]
        stopping = asyncio.get_running_loop().create_task(d.client.close())
        try:
            async with asyncio.timeout(WAIT):
                for sock in socks:
                    got = await read_stalled(sock, until_close=True)
                    opcode, payload = got[-1]
                    assert opcode == 0x8 and int.from_bytes(payload[:2]) == 1001
                release.set()
                await stopping
        finally:
            release.set()
            for sock in socks:
                sock.close()
            await asyncio.wait([stopping])


async def test_a_feed_is_not_compressed_even_when_the_client_offers_it(driver):
    # permessage-deflate keeps a compressor per socket (about 100 KB with the client's
    # state, 1,024 feeds the cap) and compresses every message again per subscriber on
    # the event loop; feed messages are small JSON. Every browser offers it.
    d = driver
    ws = await d.client.ws_connect("/v1/blocks/ws", compress=15)
    try:
        msg = await ws.receive(timeout=WAIT)
        assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "ready"
        assert ws.compress == 0
    finally:
        await ws.close()


# aiohttp's own wait for a client's answer to a close (WebSocketResponse's ``timeout``).
ANSWER_WAIT = inspect.signature(web.WebSocketResponse).parameters["timeout"].default


@pytest.mark.both_loops
async def test_a_refused_client_that_never_answers_is_dropped_after_the_send_deadline(
    tmp_path,
):
    """A feed over the address's cap is closed with 1013 at once. Its close waited for
    the client's answer with no deadline of the feed's own (aiohttp's, 10 s): a client
    that never reads nor answers held the handler and the connection, which no feed cap
    counts, that long. The close now has the send deadline every other close has: the
    connection ends after it, long before aiohttp would have given up."""
    async with running_driver(tmp_path, feeds={"max_per_address": 1}) as d:
        d.client.server.app[HUB].send_deadline_s = 0.5
        ws, _, _ = await connect(d, "/v1/blocks/ws")
        sock = await stalled(d, "/v1/blocks/ws")
        try:
            loop = asyncio.get_running_loop()
            data = b""
            async with asyncio.timeout(ANSWER_WAIT / 2):
                # The close frame, then the end of the connection (the answer never came).
                while chunk := await loop.sock_recv(sock, 65536):
                    data += chunk
        finally:
            sock.close()
        await ws.close()
    opcode, payload = frames(data)[-1]
    assert opcode == 0x8 and int.from_bytes(payload[:2]) == CLOSE_TRY_AGAIN_LATER


# Blocks with none of the session's events, which a replay from before them reads.
QUIET_BLOCKS = 20


@contextlib.asynccontextmanager
async def served_as_a_node(tmp_path) -> AsyncIterator[tuple[Driver, int, feed.FeedHub]]:
    """(driver, port, feed hub) of a node served as ``liveledger`` serves it (its own
    ``HttpServer``, behind its gate). aiohttp's test server cancels a handler whose
    client left; the node's server, as aiohttp's by default, does not."""
    layout, home = make_home(tmp_path, http_port=0)
    node = Node.from_home(home, "")
    app = build_app(node)
    server = http_server(node, app)
    await server.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
            driver = Driver(session, node, load_key(layout.faucet_key_path, ""))  # type: ignore[arg-type]  # a session answers the driver's get and post as a test client does
            yield driver, server.port, app[HUB]
    finally:
        await server.stop()


async def test_a_replay_stops_reading_once_its_client_is_gone(tmp_path, monkeypatch):
    """The node's server cancels no handler whose client left, and a replay noticed
    nothing but a failed send: a session feed whose session had no events in the
    replayed blocks read every one of them (up to 1,000, receipts decoded, in the
    replays' threads ahead of other clients) for a client that had hung up. It stops at
    the block it is reading."""
    real = feed.read_block_feed
    replayed: list[int] = []
    last = 0
    entered, release = threading.Event(), threading.Event()

    def counted(*args: object) -> object:
        height = args[1]
        # Blocks final before the client came are read by its replay alone (the live
        # feed reads the later ones); the first read waits until the client is gone.
        if isinstance(height, int) and height <= last:
            replayed.append(height)
            entered.set()
            release.wait(WAIT)
        return real(*args)  # type: ignore[arg-type]  # the arguments it was given

    monkeypatch.setattr(feed, "read_block_feed", counted)
    async with served_as_a_node(tmp_path) as (d, port, hub):
        merchant, host = Actor("merchant"), Actor("host")
        await d.fund(merchant, host)
        await d.run(
            merchant.key,
            tx.REGISTER_MERCHANT,
            tx.RegisterMerchant("Acme", "", merchant.enc_public),
        )
        await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
        await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))
        start = d.node.chain.height
        last = start + QUIET_BLOCKS
        async with asyncio.timeout(WAIT):
            while d.node.chain.height < last:
                await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        sock = await stalled(d, f"/v1/sessions/1/events?from={start}", port)
        try:
            async with asyncio.timeout(WAIT):
                while not entered.is_set():
                    await asyncio.sleep(0.01)
                # The client hangs up while the replay's first read is under way; the
                # server's end of the connection closes (the client reads to its end).
                sock.shutdown(socket.SHUT_WR)
                while await loop.sock_recv(sock, 65536):
                    pass
                release.set()
                while hub.websockets:
                    await asyncio.sleep(0.01)
        finally:
            release.set()
            sock.close()
    assert replayed == [start + 1]


async def test_a_client_gone_before_its_feed_opens_is_not_an_error(tmp_path, monkeypatch, caplog):
    """A session feed first reads whether its session exists (in a thread): a client
    that hangs up meanwhile leaves the upgrade's answer unsendable, which is its leaving,
    not a bug of the node's. It was logged as an unhandled error with its traceback, one
    per request (a blocks feed's client that sends its request and a reset at once, too):
    anyone could fill the node's log at will. Nothing is logged for it now."""
    get_session = views.get_session
    entered, release = threading.Event(), threading.Event()

    def held(state, session_id):
        entered.set()
        release.wait(WAIT)
        return get_session(state, session_id)

    served = feed.serve_feed
    ended = asyncio.Event()

    async def watched(*args, **kwargs):
        try:
            return await served(*args, **kwargs)
        finally:
            ended.set()

    async with served_as_a_node(tmp_path) as (d, port, hub):
        merchant, host = Actor("merchant"), Actor("host")
        await d.fund(merchant, host)
        await d.run(
            merchant.key,
            tx.REGISTER_MERCHANT,
            tx.RegisterMerchant("Acme", "", merchant.enc_public),
        )
        await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True))
        await d.run(merchant.key, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "Tea live"))
        monkeypatch.setattr(views, "get_session", held)
        monkeypatch.setattr(feed, "serve_feed", watched)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            request = (
                "GET /v1/sessions/1/events HTTP/1.1\r\nHost: localhost\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            async with asyncio.timeout(WAIT):
                while not entered.is_set():
                    await asyncio.sleep(0.01)
                # The client hangs up while the session is read; the server's end of
                # the connection closes (the client reads to its end).
                sock.shutdown(socket.SHUT_WR)
                while await loop.sock_recv(sock, 65536):
                    pass
                release.set()
                await ended.wait()
        finally:
            release.set()
            sock.close()
        monkeypatch.setattr(views, "get_session", get_session)
        # The node serves feeds as before.
        ws, _, _ = await connect(d, "/v1/sessions/1/events")
        await ws.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
