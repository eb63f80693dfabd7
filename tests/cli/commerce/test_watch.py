"""`liveledger live watch` takes the feed's messages as a node's answer: a malformed one
is the node's fault."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from click.testing import CliRunner

from cli.main import main
from tests.served import app_server

EVENT = '{"type": "event", "height": 5, "index": 0, "kind": "commerce.x", "attrs": {}}'


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[" * 100_000,
        "[]",
        '"event"',
        '{"type": "event"}',
        '{"type": "event", "height": 5, "index": 0, "kind": "commerce.x", "attrs": []}',
        '{"type": "event", "height": 5, "index": 0, "kind": "commerce.x", "attrs": {"a": 1}}',
    ],
    ids=["no json", "nesting bomb", "array", "string", "no position", "attrs array", "attr number"],
)
async def test_a_malformed_feed_message_is_the_nodes_fault(message):
    async def session(_request: web.Request) -> web.Response:
        return web.json_response({"id": 7})

    async def events(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(EVENT)
        await ws.send_str(message)
        await ws.close(code=1000)
        return ws

    app = web.Application()
    app.router.add_get("/v1/sessions/7", session)
    app.router.add_get("/v1/sessions/7/events", events)
    server = app_server(app)
    await server.start_server()
    try:
        argv = ["live", "watch", "7", "--node", str(server.make_url(""))]
        done = await asyncio.to_thread(CliRunner().invoke, main, argv)
        # The good event before it is printed; the bad one ends the watch as a bad answer.
        assert '"height": 5' in done.output, done.output
        assert "error: bad_answer: " in done.output and "feed message" in done.output
        assert done.exit_code == 2, done.output
    finally:
        await server.close()
