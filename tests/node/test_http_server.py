"""What HTTP clients may hold of a node: connections per address and in all, idle
time, stalled writes and request bodies in flight (``node.http_server``,
``node.bodies``).

Each test serves a real single-validator node (real LevelDB) the way ``run_node``
does, behind its connection gate on a real socket on loopback, with small limits
from the node's config, and talks to it with raw sockets: a hostile client does
not follow HTTP's manners.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from core import PrivateKey, SignedTx, TxBody, sign_tx
from core.keystore import load_key
from core.netaddr import client_key
from genesis.localnet import FAUCET_NAME
from node.bodies import MAX_DECODE_RATIO
from node.http_server import (
    FD_RESERVE,
    LEVELDB_TABLE_FILES,
    ConnectionGate,
    HttpLimits,
    HttpServer,
    connection_cap,
    serve_until_signalled,
)
from node.run import build_app, http_server
from node.service import Node
from tests.node.conftest import make_home, refusals
from vm import Transfer

WAIT = 10.0


@contextlib.asynccontextmanager
async def gated(
    tmp_path, *, fd_limit: int | None = None, **http: object
) -> AsyncIterator[tuple[int, Node]]:
    """(port, node) of a node served behind its gate, with ``http`` limits."""
    _layout, home = make_home(tmp_path, http_port=0, http=http)
    node = Node.from_home(home, "")
    server = http_server(node, build_app(node), fd_limit)
    await server.start()
    try:
        yield server.port, node
    finally:
        await server.stop()


async def raw(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, Any]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def status_from(port: int, source: str) -> int:
    """The status of ``GET /v1/status`` from ``source`` (a loopback address)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://127.0.0.1:{port}/v1/status") as resp:
            return resp.status


async def refused(reader: asyncio.StreamReader) -> bool:
    """Whether the connection was answered 503 ``busy`` and closed."""
    answer = await asyncio.wait_for(reader.read(), WAIT)
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 503") and json.loads(body)["code"] == "busy"


async def metrics_text(port: int) -> str:
    """The node's ``/metrics`` (asked from an address of its own)."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            return await resp.text()


async def metric(port: int, name: str) -> float:
    """A sample of the node's ``/metrics``."""
    for line in (await metrics_text(port)).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def refused_by(port: int, reason: str) -> tuple[float, float]:
    """(total, per_address) of ``liveledger_http_refused_total`` for ``reason``."""
    text = await metrics_text(port)
    return refusals(text, reason, "total"), refusals(text, reason, "per_address")


async def test_connections_over_the_address_cap_are_refused_and_others_served(tmp_path):
    async with gated(tmp_path, max_per_address=3) as (port, _node):
        held = [await raw(port) for _ in range(3)]
        reader, writer = await raw(port)
        assert await refused(reader)
        writer.close()
        # Another address is served, and the first one again once it lets one go.
        assert await status_from(port, "127.0.0.2") == 200
        held.pop()[1].close()
        deadline = time.monotonic() + WAIT
        while await metric(port, "liveledger_http_connections") > 2 + 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await status_from(port, "127.0.0.1") == 200
        assert await metric(port, 'liveledger_http_connections_refused_total{reason="per_address"}')
        # Counted with every other refusal too: the one connection, by its address's cap.
        assert await refused_by(port, "connections") == (0, 1)
        for _, w in held:
            w.close()


async def test_connections_over_the_total_cap_are_refused(tmp_path):
    # The open-file limit caps the total too (here a tiny one).
    cap = connection_cap(8)
    async with gated(tmp_path, fd_limit=8) as (port, _node):
        held = [await raw(port, f"127.0.0.{10 + i}") for i in range(cap)]
        reader, writer = await raw(port, "127.0.0.20")
        assert await refused(reader)
        writer.close()
        held.pop()[1].close()
        deadline = time.monotonic() + WAIT
        while True:
            reader, writer = await raw(port, "127.0.0.20")
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), WAIT)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                break
            assert time.monotonic() < deadline, answer[:80]
            await asyncio.sleep(0.05)
        for _, w in held:
            w.close()
        total, per_address = await refused_by(port, "connections")
        assert total >= 1 and per_address == 0


async def test_at_the_total_cap_a_newcomer_evicts_from_the_heaviest_address(tmp_path):
    """Addresses that fill the node cannot keep others out: a newcomer takes the place
    of the least recently active connection of the address holding the most."""
    cap = connection_cap(8)
    async with gated(tmp_path, fd_limit=8) as (port, _node):
        heavy = [await raw(port, "127.0.0.10") for _ in range(cap - 1)]
        light = await raw(port, "127.0.0.11")
        # The heavy address's first connection has been quiet the longest.
        for _reader, writer in heavy[1:]:
            writer.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.2)
        assert await status_from(port, "127.0.0.20") == 200
        oldest = heavy[0][0]
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(oldest.read(), WAIT) == b""
        assert await metric(port, "liveledger_http_connections_evicted_total") >= 1
        # Equals do not evict each other: the light address keeps its connection.
        light[1].write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(light[0].readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 200")
        for _, writer in [*heavy, light]:
            writer.close()


async def test_a_client_that_stops_reading_is_aborted(tmp_path):
    """Pipelined requests whose answers are never read: the connection ends, instead of
    holding its answers (and a descriptor) for as long as the client likes."""
    requests = 400
    async with gated(tmp_path, write_stall_ms=1000) as (port, _node):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
        deadline = time.monotonic() + WAIT
        while not await metric(port, "liveledger_http_connections_stalled_total"):
            assert time.monotonic() < deadline, "the stalled connection was not aborted"
            await asyncio.sleep(0.2)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        received = b""
        # Reset, not closed: a close would leave the unsent answers to the kernel, which
        # keeps them (an orphan socket) for as long as the client holds its window shut.
        with pytest.raises(ConnectionResetError):
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), WAIT):
                received += chunk
        sock.close()
        assert received.count(b"HTTP/1.1 200") < requests


async def test_clients_that_stop_reading_log_a_line_an_interval_not_one_each(tmp_path, caplog):
    """Each connection reset because its client stopped reading logged a line: an
    attacker opening such connections as fast as it could filled the operator's disk.
    The lines are throttled (one every 10 s); the metric counts every reset."""
    clients = 6
    async with gated(tmp_path, write_stall_ms=1000) as (port, _node):
        socks = []
        with caplog.at_level(logging.INFO, logger="node.http"):
            for _ in range(clients):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 400)
                socks.append(sock)
            deadline = time.monotonic() + 3 * WAIT
            stalled = "liveledger_http_connections_stalled_total"
            while await metric(port, stalled) < clients:
                assert time.monotonic() < deadline, "the stalled connections were not reset"
                await asyncio.sleep(0.2)
        for sock in socks:
            sock.close()
    lines = [r for r in caplog.records if "reset an HTTP connection" in r.getMessage()]
    assert 1 <= len(lines) < clients


async def test_malformed_requests_log_a_line_an_interval_not_one_each(tmp_path, caplog):
    """aiohttp logs an error with its traceback (~2 KB) for each malformed request, as
    often as clients send them: throttled as the node's own lines."""
    requests = 20
    async with gated(tmp_path) as (port, _node):
        with caplog.at_level(logging.INFO, logger="aiohttp.server"):
            for i in range(requests):
                reader, writer = await raw(port)
                writer.write(b"GET /v1/status HTTP/1.1\r\nNo colon %d\r\n\r\n" % i)
                head = await read_to_end(reader)
                assert head.startswith(b"HTTP/1.0 400")
                writer.close()
    errors = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert 1 <= len(errors) < requests


async def test_a_fault_past_the_middlewares_is_logged_whatever_malformed_requests_came_first(
    tmp_path, caplog, monkeypatch
):
    """aiohttp logs an exception that got past the node's middlewares (a bug: a 500)
    under the same logger and words as a malformed request. Throttled as one kind, a
    client's malformed request every few seconds hid every such fault's line and
    traceback: only the malformed requests are throttled."""

    def fault(_limits: HttpLimits, _size: int) -> int:
        raise RuntimeError("a fault past the middlewares")

    async with gated(tmp_path) as (port, _node):
        with caplog.at_level(logging.INFO, logger="aiohttp.server"):
            for i in range(3):
                reader, writer = await raw(port)
                writer.write(b"GET /v1/status HTTP/1.1\r\nNo colon %d\r\n\r\n" % i)
                assert (await read_to_end(reader)).startswith(b"HTTP/1.0 400")
                writer.close()
            # The answers' middleware, outside the one that turns errors into answers,
            # fails on an answer of more than 16 KiB.
            monkeypatch.setattr(HttpLimits, "answer_deadline_ms", fault)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/v1/openapi.json") as resp:
                    assert resp.status == 500
    logged = [r.exc_info[1] for r in caplog.records if r.name == "aiohttp.server" and r.exc_info]
    faults = [e for e in logged if isinstance(e, RuntimeError)]
    assert [str(e) for e in faults] == ["a fault past the middlewares"]
    # The malformed requests are still throttled: one line for the three.
    assert len(logged) - len(faults) == 1


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it ended the connection. A client still writing when
    the server closed gets its late bytes answered with a reset, which ends the
    connection as the close did (nothing was answered either way)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def test_idle_and_slow_header_connections_end_after_the_keepalive_time(tmp_path):
    async with gated(tmp_path, keepalive_timeout_ms=500) as (port, _node):
        idle_reader, idle = await raw(port)
        slow_reader, slow = await raw(port)
        started = time.monotonic()
        slow.write(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        for _ in range(10):
            slow.write(b"X-Trickle: 1\r\n")
            await asyncio.sleep(0.2)
            if slow_reader.at_eof():
                break
        assert await asyncio.wait_for(idle_reader.read(), WAIT) == b""
        assert await read_to_end(slow_reader) == b""
        assert time.monotonic() - started < WAIT
        idle.close()
        slow.close()


async def stalled_upload(
    port: int, source: str, size: int, forwarded_for: str | None = None
) -> asyncio.StreamWriter:
    """An upload from ``source`` that sends ``size`` bytes of its body, then nothing;
    with ``forwarded_for``, as a proxy would forward it."""
    _reader, writer = await raw(port, source)
    forwarded = (
        b"" if forwarded_for is None else b"X-Forwarded-For: %s\r\n" % forwarded_for.encode()
    )
    writer.write(
        b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + forwarded
        + b"Content-Length: 200000\r\n\r\n"
        + b"0" * size
    )
    await writer.drain()
    return writer


async def post_txs(
    port: int, body: bytes, source: str = "127.0.0.1", **headers: str
) -> tuple[int, dict[str, str], str]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/txs",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        ) as resp:
            return resp.status, dict(resp.headers), (await resp.json())["code"]


async def eventually(
    port: int, body: bytes, done: Callable[[tuple], bool], source: str = "127.0.0.1", **headers: str
) -> tuple:
    """The first answer to posting ``body`` (from ``source``, with ``headers``) that is
    ``done``, within WAIT."""
    deadline = time.monotonic() + WAIT
    while not done(answer := await post_txs(port, body, source, **headers)):
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.05)
    return answer


async def test_request_bodies_in_flight_share_one_budget(tmp_path):
    """Uploads stalled before their end hold at most the node's body budget; beyond it
    a request is ``busy`` (503), and once they let go the next one is read."""
    async with gated(tmp_path, max_bodies_bytes=100_000) as (port, _node):
        # Four addresses, each within its quarter of the budget.
        stalls = [await stalled_upload(port, f"127.0.0.{2 + i}", 24_000) for i in range(4)]
        junk = b"0" * 20_000
        _status, headers, code = await eventually(port, junk, lambda a: a[0] == 503)
        assert code == "busy" and headers["Retry-After"] == "1"
        for writer in stalls:
            writer.close()
        status, _, code = await eventually(port, junk, lambda a: a[0] != 503)
        assert (status, code) == (400, "malformed")
        # Each address stayed within its quarter: the budget itself refused.
        total, per_address = await refused_by(port, "bodies")
        assert total >= 1 and per_address == 0


async def test_one_address_holds_a_quarter_of_the_body_budget(tmp_path):
    async with gated(tmp_path, max_bodies_bytes=100_000) as (port, _node):
        # Past its quarter, the address's own upload is refused...
        reader, writer = await raw(port, "127.0.0.2")
        writer.write(
            b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 60000\r\n\r\n" + b"0" * 60_000
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 503")
        writer.close()
        # ...while others are read.
        status, _, code = await post_txs(port, b"0" * 20_000)
        assert (status, code) == (400, "malformed")
        assert await refused_by(port, "bodies") == (0, 1)


async def test_a_compressed_body_decodes_to_a_bounded_multiple_of_its_size(tmp_path):
    async with gated(tmp_path) as (port, _node):
        bomb = gzip.compress(b"0" * 1_000_000)
        assert len(bomb) * MAX_DECODE_RATIO < 1_000_000
        status, _, code = await post_txs(port, bomb, **{"Content-Encoding": "gzip"})
        assert (status, code) == (400, "too_large")

        # Without a Content-Length the ratio cannot be checked: refused.
        async def chunks() -> AsyncIterator[bytes]:
            yield bomb

        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(
                f"http://127.0.0.1:{port}/v1/txs",
                data=chunks(),
                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            ) as resp:
                assert resp.status == 400 and (await resp.json())["code"] == "malformed"


FORWARDED = "X-Forwarded-For"


def forwarded_for(addresses: str) -> dict[str, str]:
    return {FORWARDED: addresses}


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_share(tmp_path):
    """With the proxy (here 127.0.0.1) in ``trusted_proxies``, the client its
    X-Forwarded-For names is the address of the per-address bounds: one client past its
    quarter of the body budget is busy while another, through the same proxy, is read.
    Without the setting every client of a proxy shares the proxy's one quarter."""
    junk = b"0" * 20_000
    async with gated(tmp_path, max_bodies_bytes=100_000, trusted_proxies=["127.0.0.1"]) as (
        port,
        _node,
    ):
        stall = await stalled_upload(port, "127.0.0.1", 24_000, "203.0.113.1")
        # The rightmost address is the client, whatever it put left of it itself.
        client = forwarded_for("198.51.100.7, 203.0.113.1")
        _status, _, code = await eventually(port, junk, lambda a: a[0] == 503, **client)
        assert code == "busy"
        # Another client of the proxy, and the proxy's own requests: shares of their own.
        assert (await post_txs(port, junk, **forwarded_for("203.0.113.2")))[0::2] == (
            400,
            "malformed",
        )
        assert (await post_txs(port, junk))[0::2] == (400, "malformed")
        total, per_address = await refused_by(port, "bodies")
        assert total == 0 and per_address >= 1
        stall.close()


async def test_without_trusted_proxies_x_forwarded_for_changes_nothing(tmp_path):
    junk = b"0" * 20_000
    async with gated(tmp_path, max_bodies_bytes=100_000) as (port, _node):
        stall = await stalled_upload(port, "127.0.0.1", 24_000, "203.0.113.1")
        # Naming another client gets no other share: the peer's own is taken.
        _status, _, code = await eventually(
            port, junk, lambda a: a[0] == 503, **forwarded_for("203.0.113.2")
        )
        assert code == "busy"
        # Another peer is read.
        assert (await post_txs(port, junk, "127.0.0.2"))[0::2] == (400, "malformed")
        stall.close()


async def test_an_untrusted_peer_cannot_name_its_own_client(tmp_path):
    """A peer that is not a trusted proxy sending X-Forwarded-For: ignored, or any client
    could pick a fresh key for each request and escape its share."""
    junk = b"0" * 20_000
    async with gated(tmp_path, max_bodies_bytes=100_000, trusted_proxies=["127.0.0.1"]) as (
        port,
        _node,
    ):
        stall = await stalled_upload(port, "127.0.0.2", 24_000, "203.0.113.1")
        _status, _, code = await eventually(
            port, junk, lambda a: a[0] == 503, "127.0.0.2", **forwarded_for("203.0.113.3")
        )
        assert code == "busy"
        # The trusted proxy's clients are untouched by it.
        assert (await post_txs(port, junk, **forwarded_for("203.0.113.3")))[0::2] == (
            400,
            "malformed",
        )
        stall.close()


# A batch of 20,000 one-byte items: 60 KB asked, a 2.6 MB answer (a result each).
JUNK_BATCH = bytes([0xDD]) + (20_000).to_bytes(4, "big") + b"\xc4\x01\x00" * 20_000
JUNK_POST = (
    b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
    b"Content-Length: %d\r\n\r\n" % len(JUNK_BATCH) + JUNK_BATCH
)


async def never_reading(port: int, source: str, requests: int) -> socket.socket:
    """A socket from ``source`` with a tiny receive window that sends ``requests``
    junk batches at once (pipelined) and reads nothing."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, JUNK_POST * requests)
    return sock


async def junk_status(port: int, source: str) -> bytes:
    """The status line of one junk batch's answer from ``source`` (the rest is not read)."""
    sock = await never_reading(port, source, 1)
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 12), WAIT)
    finally:
        sock.close()


async def test_answers_a_client_does_not_read_share_one_budget(tmp_path):
    """A client that asks for big answers and never reads them held them all in the node's
    memory: 60 KB asked for 2.6 MB held, 256 connections of one address 670 MB (beyond
    the few MB the kernel takes per socket). Answers being sent now share a budget, a
    quarter of it per address: past its share an address is ``busy`` (503), others are
    served, and the share comes back when the connections close."""
    async with gated(tmp_path, max_answers_bytes=24 * 2**20) as (port, _node):
        # Three answers each, pipelined: the socket's buffers take the first, the second
        # waits in the node (charged), the third is not yet made.
        holders = [await never_reading(port, "127.0.0.2", 3) for _ in range(2)]
        try:
            deadline = time.monotonic() + WAIT
            while (status := await junk_status(port, "127.0.0.2")) == b"HTTP/1.1 200":
                assert time.monotonic() < deadline, "the address's unread answers were not bounded"
                await asyncio.sleep(0.1)
            assert status == b"HTTP/1.1 503"
            # Another address is served.
            assert await junk_status(port, "127.0.0.3") == b"HTTP/1.1 200"
            # Refused by the address's share, never by the whole budget.
            total, per_address = await refused_by(port, "answers")
            assert total == 0 and per_address >= 1
        finally:
            for sock in holders:
                sock.close()
        deadline = time.monotonic() + WAIT
        while await junk_status(port, "127.0.0.2") != b"HTTP/1.1 200":
            assert time.monotonic() < deadline, "the closed connections kept their share"
            await asyncio.sleep(0.1)


async def trickle(sock: socket.socket) -> None:
    """Read ``sock`` a KiB at a time, ten times a second, until cancelled or it ends:
    progress enough that the stall watch never cuts it."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionError):
        while await loop.sock_recv(sock, 1024):
            await asyncio.sleep(0.1)


async def test_a_slow_reader_holds_its_answers_budget_for_a_bounded_time(tmp_path):
    """A client that asks for big answers and reads them a little at a time held its share
    of the answer budget for as long as it liked (the stall watch sees progress), and its
    address was ``busy`` all along. An answer not taken within its deadline now has its
    connection reset and its budget freed, while the slow readers still read."""
    limits = {
        "max_answers_bytes": 24 * 2**20,
        # The stall watch never fires here: only the answer deadline may free the share.
        "write_stall_ms": 600_000,
        "answer_timeout_ms": 1000,
        "answer_min_bytes_per_s": 2**40,
    }
    async with gated(tmp_path, **limits) as (port, _node):
        holders = [await never_reading(port, "127.0.0.2", 3) for _ in range(2)]
        readers = [asyncio.create_task(trickle(sock)) for sock in holders]
        try:
            # Their answers take the address's share (as when nobody reads: the test
            # above), but only until their deadline: then their connections are reset
            # while they still read, and the address is served again.
            deadline = time.monotonic() + 3 * WAIT
            while not all(r.done() for r in readers) or (
                await junk_status(port, "127.0.0.2") != b"HTTP/1.1 200"
            ):
                assert time.monotonic() < deadline, "slow readers kept their answers' budget"
                await asyncio.sleep(0.1)
            assert await metric(port, "liveledger_http_connections_stalled_total") >= 2
        finally:
            for task in readers:
                task.cancel()
            for sock in holders:
                sock.close()


def test_a_small_open_file_limit_still_leaves_http_most_of_it():
    assert connection_cap(1024) == 512
    assert connection_cap(8) == 4
    # A big limit keeps LevelDB's table files and the node's own descriptors.
    assert connection_cap(1 << 20) == (1 << 20) - FD_RESERVE - LEVELDB_TABLE_FILES


def test_client_key_groups_an_ipv6_subnet_and_unmaps_ipv4():
    assert client_key(("203.0.113.7", 5000)) == "203.0.113.7"
    assert client_key(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == client_key(
        ("2001:db8:1:2:bbbb::9", 6000, 0, 0)
    )
    assert client_key(("2001:db8:1:3::1", 5000, 0, 0)) != client_key(
        ("2001:db8:1:2::1", 5000, 0, 0)
    )
    assert client_key(("::ffff:203.0.113.7", 5000, 0, 0)) == "203.0.113.7"
    assert client_key(None) == "unknown"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=120),
    st.integers(1, 12),
    st.integers(1, 6),
)
def test_the_gate_keeps_its_caps_and_fairness(steps, total, per_address):
    """Any sequence of connections and disconnections: never more than the caps, and a
    newcomer refused at the total cap only when no address holds two more than its own."""
    gate = ConnectionGate(
        lambda: asyncio.Protocol(),
        HttpLimits(max_connections=total, max_per_address=per_address),
    )
    held: dict[str, list] = {}
    evicted: list = []

    class Transport:
        def get_extra_info(self, name: str) -> None:
            return None

        def abort(self) -> None:
            evicted.append(self)

    for connect, which in steps:
        address = f"10.0.0.{which}"
        if connect:
            conn = gate()
            conn.address = address
            conn.transport = Transport()
            before = {a: len(c) for a, c in held.items()}
            reason = gate.admit(conn)
            mine = before.get(address, 0)
            if reason == "per_address":
                assert mine >= per_address
            elif reason == "total":
                assert sum(before.values()) >= total
                assert max(before.values()) <= mine + 1
            else:
                assert reason is None
                if sum(before.values()) >= total:
                    # An address two heavier gave up the connection it held longest idle.
                    [transport] = evicted
                    evicted.clear()
                    [victim_address] = [
                        a for a, c in held.items() if any(x.transport is transport for x in c)
                    ]
                    assert before[victim_address] >= mine + 2
                    assert held[victim_address][0].transport is transport
                    held[victim_address].pop(0)
                held.setdefault(address, []).append(conn)
        elif held.get(address):
            gate.release(held[address].pop())
        held = {a: c for a, c in held.items() if c}
        assert gate.connections == sum(len(c) for c in held.values()) <= total
        assert all(len(c) <= per_address for c in held.values())


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_serving_until_signalled_stops_on_sigterm_and_gives_the_signals_back(new_loop):
    """``node.run`` serves on uvloop until SIGINT or SIGTERM. Once it is done, the
    process's signals are as they were: uvloop drops a handler only while it runs, and
    one left behind on the closed loop swallowed every later signal (a second Ctrl-C or
    a SIGTERM while the process exits did nothing)."""
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {signum: signal.getsignal(signum) for signum in signals}
    done: list[str] = []

    async def on_startup(app: web.Application) -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    async def on_cleanup(app: web.Application) -> None:
        done.append("cleaned up")

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    serve_until_signalled(new_loop(), HttpServer(app, "127.0.0.1", 0, HttpLimits()))
    assert done == ["cleaned up"]
    assert {signum: signal.getsignal(signum) for signum in signals} == before


def bad_signatures(chain_id: str, count: int, first_nonce: int = 0) -> bytes:
    """A JSON batch of ``count`` distinct transactions whose signatures do not verify:
    free to make, a signature check each for the node."""
    key = PrivateKey.generate()
    raws = []
    for nonce in range(first_nonce, first_nonce + count):
        body = TxBody(nonce, 1000, 1000, "transfer", Transfer(key.address, 1).encode())
        tx = sign_tx(key, chain_id, body)
        raws.append(SignedTx(tx.chain_id, tx.sender, tx.body, bytes(64)).encode().hex())
    return json.dumps({"txs": raws}).encode()


async def submitted(port: int, body: bytes, source: str = "127.0.0.1") -> tuple[int, Any, Any]:
    """(status, headers, JSON answer) of posting the batch ``body`` from ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/txs",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            return resp.status, resp.headers, await resp.json()


def codes(answer: dict[str, Any]) -> set[str]:
    return {r["code"] for r in answer["results"]}


async def test_an_address_sending_bad_signatures_is_refused_unchecked_past_its_budget(
    tmp_path,
):
    """Transactions that fail their checks cost the node a signature check each and
    their sender nothing: one client sending batches of 20,000 bad signatures kept the
    signature workers busy (and the mempool's window full) for everyone. Past its budget
    an address's batches are refused unchecked (503 ``busy`` with ``Retry-After``), while
    another address's are checked as before."""
    async with gated(tmp_path, refused_txs_per_s=1, refused_txs_burst=6) as (port, node):
        chain_id = node.genesis.chain_id
        status, _, answer = await submitted(port, bad_signatures(chain_id, 4))
        assert status == 200 and codes(answer) == {"bad_signature"}
        # 4 of 6 spent: a batch of 20 more is still checked (the budget goes into debt,
        # for 18 s at 1 a second)...
        status, _, answer = await submitted(port, bad_signatures(chain_id, 20, 4))
        assert status == 200 and codes(answer) == {"bad_signature"}
        # ...and the next is refused before any check, for the seconds the debt lasts.
        status, headers, answer = await submitted(port, bad_signatures(chain_id, 4, 24))
        assert (status, answer["code"]) == (503, "busy")
        assert int(headers["Retry-After"]) >= 1
        rejected = 'liveledger_txs_rejected_total{code="bad_signature"}'
        assert await metric(port, rejected) == 24
        assert await refused_by(port, "unpaid_checks") == (0, 1)
        # Another address has a budget of its own.
        status, _, answer = await submitted(port, bad_signatures(chain_id, 4), "127.0.0.2")
        assert status == 200 and codes(answer) == {"bad_signature"}
        assert await metric(port, rejected) == 28


def faucet_of(tmp_path) -> PrivateKey:
    """The funded key of the localnet ``gated`` made under ``tmp_path``."""
    return load_key(tmp_path / "net" / "keyring" / f"{FAUCET_NAME}.json", "")


def transfers(key: PrivateKey, chain_id: str, nonces: range, *, fee: int = 1000, amount=1):
    """A JSON batch of well-signed transfers from ``key``, one per nonce."""
    raws = [
        sign_tx(
            key, chain_id, TxBody(n, fee, 1000, "transfer", Transfer(key.address, amount).encode())
        )
        .encode()
        .hex()
        for n in nonces
    ]
    return json.dumps({"txs": raws}).encode()


async def test_an_address_sending_transactions_that_never_pay_is_refused_unchecked_past_its_budget(
    tmp_path,
):
    """Well signed and refused against the chain's state (an unfunded sender, a fee below
    the minimum, a nonce far past the account's): each cost the node a signature check
    and an account read, and, signed once and sent again and again, its sender nothing.
    They were not charged to the address's budget (only bytes that are no transaction,
    bad signatures and spent ones were), so batches of them kept the signature workers
    busy for free. They are now, as the peers' gossip budget counts them."""
    async with gated(tmp_path, refused_txs_per_s=1, refused_txs_burst=6) as (port, node):
        chain_id = node.genesis.chain_id
        faucet = faucet_of(tmp_path)
        # Each kind from addresses of its own: their debts last a while.
        for sender, batch, code in (
            (
                "127.0.0.10",
                transfers(PrivateKey.generate(), chain_id, range(20)),
                "insufficient_fee",
            ),
            ("127.0.0.11", transfers(faucet, chain_id, range(20), fee=999), "fee_too_low"),
            ("127.0.0.12", transfers(faucet, chain_id, range(10_000, 10_020)), "nonce_gap"),
        ):
            status, _, answer = await submitted(port, batch, sender)
            assert status == 200 and codes(answer) == {code}
            # 20 charged against 6 saved up: the next batch is refused unchecked, and
            # the address told to wait out its debt.
            status, headers, answer = await submitted(port, batch, sender)
            assert (status, answer["code"]) == (503, "busy")
            assert int(headers["Retry-After"]) >= 10
        assert await refused_by(port, "unpaid_checks") == (0, 3)
        # Another address is still checked.
        batch = transfers(faucet, chain_id, range(20), fee=999)
        status, _, answer = await submitted(port, batch, "127.0.0.13")
        assert status == 200 and codes(answer) == {"fee_too_low"}


async def test_an_honest_wallets_burst_refused_for_what_the_pool_holds_is_not_charged(tmp_path):
    """A wallet whose nonces arrive out of order (a burst behind a load balancer) meets
    refusals that depend on the mempool, not on what its transactions are: its queued
    nonces past the sender's cap (``nonce_gap``), a queued slot taken by other bytes
    (``duplicate``). Those are never charged: its address stays served however many."""
    async with gated(tmp_path, refused_txs_per_s=1, refused_txs_burst=6) as (port, node):
        chain_id = node.genesis.chain_id
        faucet = faucet_of(tmp_path)
        # Nonce 0 has not arrived: 1-16 wait for it, the rest past the sender's cap.
        status, _, answer = await submitted(port, transfers(faucet, chain_id, range(1, 41)))
        assert status == 200
        assert [r["code"] for r in answer["results"]] == ["accepted"] * 16 + ["nonce_gap"] * 24
        status, _, answer = await submitted(port, transfers(faucet, chain_id, range(17, 41)))
        assert status == 200 and codes(answer) == {"nonce_gap"}
        # Another version of the queued ones (the wallet signed again after a restart).
        batch = transfers(faucet, chain_id, range(1, 17), amount=2)
        status, _, answer = await submitted(port, batch)
        assert status == 200 and codes(answer) == {"duplicate"}
        # Then nonce 0 comes: the whole run is in.
        status, _, answer = await submitted(port, transfers(faucet, chain_id, range(1)))
        assert status == 200 and codes(answer) == {"accepted"}
        assert await refused_by(port, "unpaid_checks") == (0, 0)


async def test_a_pipeline_ahead_of_its_full_window_is_not_charged(tmp_path):
    """A merchant's client sends its nonces in order, faster than blocks take them: past
    its full window they are refused ``nonce_gap``, and resent later. Those refusals are
    free while the window is full of its pending nonces (each to pay its fee), so the
    address stays served; far-ahead nonces with the window not full are charged (the
    test above)."""
    async with gated(tmp_path, refused_txs_per_s=1, refused_txs_burst=6) as (port, node):
        chain_id = node.genesis.chain_id
        faucet = faucet_of(tmp_path)
        window = node.config.mempool.nonce_window
        batch = transfers(faucet, chain_id, range(window + 40))
        status, _, answer = await submitted(port, batch)
        assert status == 200
        assert [r["code"] for r in answer["results"]] == ["accepted"] * window + ["nonce_gap"] * 40
        # 40 refusals against 6 saved up would put the address in debt: it is served.
        status, _, answer = await submitted(port, transfers(PrivateKey.generate(), chain_id, [0]))
        assert status == 200 and codes(answer) == {"insufficient_fee"}
        assert await refused_by(port, "unpaid_checks") == (0, 0)
