"""Tests serve HTTP the way the node does (tests/served.py)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from aiohttp import web

from tests.served import app_server

TESTS = Path(__file__).resolve().parent
# aiohttp's own test servers, and its pytest plugin's fixtures that build them: each
# cancels a handler whose client disconnects, which the node's server never does.
AIOHTTP_SERVERS = frozenset(
    {"TestServer", "RawTestServer", "aiohttp_client", "aiohttp_server", "aiohttp_raw_server"}
)


def aiohttp_servers(source: str, filename: str) -> list[str]:
    """Each use of one of ``AIOHTTP_SERVERS`` in ``source``, as ``line: name``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        found += [f"{node.lineno}: {name}" for name in names if name in AIOHTTP_SERVERS]
    return found


def test_no_test_serves_through_aiohttps_test_server():
    uses = {}
    for path in TESTS.rglob("*.py"):
        if path.name == "test_served.py":
            continue
        found = aiohttp_servers(path.read_text(), str(path))
        if found:
            uses[str(path.relative_to(TESTS))] = found
    assert uses == {}, "serve with tests.served.node_server or app_server"


def test_the_scan_sees_a_test_server_and_the_plugins_fixtures():
    source = (
        "from aiohttp.test_utils import TestClient, TestServer\n"
        "async def test_x(aiohttp_client):\n"
        "    await aiohttp_client(app)\n"
    )
    assert aiohttp_servers(source, "<test>") == [
        "1: TestServer",
        "2: aiohttp_client",
        "3: aiohttp_client",
    ]


async def test_a_handler_runs_on_when_its_client_leaves():
    """As in production: a client that disconnects does not cancel its handler
    (aiohttp's ``TestServer`` would cancel it, and this test would time out)."""
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        started.set()
        await release.wait()
        finished.set()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    server = app_server(app)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            await started.wait()
            writer.close()
            await writer.wait_closed()
            # The server saw the client go (its gate released the connection).
            while server.http.gate is not None and server.http.gate.connections:
                await asyncio.sleep(0.01)
            release.set()
            await finished.wait()
