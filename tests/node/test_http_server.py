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
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from node.http_server import FD_RESERVE, address_key
from node.run import build_app, http_server
from node.service import Node
from tests.node.conftest import make_home

WAIT = 10.0


@contextlib.asynccontextmanager
async def gated(
    tmp_path, *, fd_limit: int | None = None, **http: int
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


async def metric(port: int, name: str) -> float:
    """A sample of the node's ``/metrics`` (from an address of its own)."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


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
        for _, w in held:
            w.close()


async def test_connections_over_the_total_cap_are_refused(tmp_path):
    # The open-file limit caps the total too, FD_RESERVE below it.
    async with gated(tmp_path, fd_limit=FD_RESERVE + 4) as (port, _node):
        held = [await raw(port, f"127.0.0.{10 + i}") for i in range(4)]
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
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), WAIT):
                received += chunk
        sock.close()
        assert received.count(b"HTTP/1.1 200") < requests


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
        assert await asyncio.wait_for(slow_reader.read(), WAIT) == b""
        assert time.monotonic() - started < WAIT
        idle.close()
        slow.close()


async def test_request_bodies_in_flight_share_one_budget(tmp_path):
    """Uploads stalled before their end hold at most the node's body budget; beyond it
    a request is ``busy`` (503), and once they let go the next one is read."""
    async with gated(tmp_path, max_bodies_bytes=100_000) as (port, _node):
        stall_reader, stall = await raw(port, "127.0.0.2")
        stall.write(
            b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000\r\n\r\n" + b"0" * 90_000
        )
        await stall.drain()
        junk = b"0" * 20_000
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post() -> tuple[int, dict[str, str], str]:
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/txs",
                    data=junk,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    return resp.status, dict(resp.headers), (await resp.json())["code"]

            deadline = time.monotonic() + WAIT
            while (answer := await post())[0] != 503:
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.05)
            status, headers, code = answer
            assert code == "busy" and headers["Retry-After"] == "1"
            stall.close()
            deadline = time.monotonic() + WAIT
            while (answer := await post())[0] == 503:
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.05)
            assert answer[0] == 400 and answer[2] == "malformed", answer
        del stall_reader


def test_address_key_groups_an_ipv6_subnet_and_unmaps_ipv4():
    assert address_key(("203.0.113.7", 5000)) == "203.0.113.7"
    assert address_key(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == address_key(
        ("2001:db8:1:2:bbbb::9", 6000, 0, 0)
    )
    assert address_key(("2001:db8:1:3::1", 5000, 0, 0)) != address_key(
        ("2001:db8:1:2::1", 5000, 0, 0)
    )
    assert address_key(("::ffff:203.0.113.7", 5000, 0, 0)) == "203.0.113.7"
    assert address_key(None) == "unknown"
