"""`liveledger live watch` takes the feed's messages as a node's answer: a malformed one
is the node's fault."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from cli.main import main
from tests.served import app_server

REPO = Path(__file__).resolve().parents[3]
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


@pytest.mark.parametrize("output", ["reader gone", "disk full"])
async def test_an_output_that_refuses_a_line_ends_the_watch_not_the_feed(output):
    # `live watch 7 | head -n 1`: once the reader goes, printing an event fails with
    # BrokenPipeError, an OSError, which the watcher took for the feed's loss. It
    # reconnected, replayed, failed to print the next event, and again, once per event,
    # for as long as the session stayed open: a node load from a pipe that ended. So
    # did stdout on a full disk (ENOSPC), without a word of why.
    connections = 0

    async def session(_request: web.Request) -> web.Response:
        return web.json_response({"id": 7})

    async def events(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        # Events for as long as the client stays (a live session); its close is read
        # and answered meanwhile, as the node's feed does.
        reading = asyncio.ensure_future(ws.receive())
        index = 0
        with contextlib.suppress(ConnectionError):
            while not ws.closed and not reading.done():
                doc = {"type": "event", "height": 5, "index": index, "kind": "x", "attrs": {}}
                await ws.send_str(json.dumps(doc))
                index += 1
                await asyncio.sleep(0.01)
        await reading
        return ws

    app = web.Application()
    app.router.add_get("/v1/sessions/7", session)
    app.router.add_get("/v1/sessions/7/events", events)
    server = app_server(app)
    await server.start_server()

    def watch() -> tuple[bytes, int]:
        argv = ["live", "watch", "7", "--node", str(server.make_url("")), "--retry-for", "60"]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with contextlib.ExitStack() as stack:
            full = stack.enter_context(open("/dev/full", "wb"))
            proc = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-m", "cli", *argv],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE if output == "reader gone" else full,
                    stderr=subprocess.PIPE,
                )
            )
            first = b""
            if proc.stdout is not None:
                first = proc.stdout.readline()
                proc.stdout.close()
            try:
                # A bound for a hang, not a timing: the watch ends at its next print.
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
            return first + err, proc.returncode

    try:
        printed, code = await asyncio.to_thread(watch)
    finally:
        await server.close()
    text = printed.decode()
    assert connections == 1, text
    assert "Traceback" not in text and "reconnect" not in text and "feed lost" not in text, text
    assert code == 1, text
    if output == "reader gone":
        # The line the reader took; nothing on stderr (nobody reads it).
        assert text.startswith('{"type": "event", "height": 5, "index": 0'), text
        assert text.count("\n") == 1, text
    else:
        assert "error: cannot print the feed's events: " in text, text
        assert "No space left on device" in text, text
