"""Test servers that serve HTTP the way the node does, for aiohttp's ``TestClient``.

aiohttp's ``TestServer`` runs handlers with ``handler_cancellation=True``: a handler
is cancelled when its client disconnects. The node's ``HttpServer`` does not cancel
them: a handler runs on for a client that left. A test served by ``TestServer``
therefore passes where production keeps working for nobody (a feed's replay read on
after its client had gone). ``Served`` serves through ``HttpServer`` itself, so a
test gets its runner's settings and its connection gate, and nothing here repeats
them. Every test that serves an app over HTTP does it with ``node_server`` or
``app_server`` (tests/test_served.py checks that no test builds a ``TestServer``).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from aiohttp.web_runner import BaseRunner
from yarl import URL

from node.http_server import HttpLimits, HttpServer
from node.run import build_app, http_server
from node.service import Node

LOOPBACK = "127.0.0.1"


class Served(BaseTestServer):
    """``http`` as aiohttp's test server: ``TestClient(Served(...))`` starts it on a
    free loopback port (unless given a socket) and stops it on close."""

    def __init__(self, http: HttpServer) -> None:
        super().__init__(host=LOOPBACK)
        self.http = http
        self.app = http.app
        self.root: URL | None = None
        self.stopped = False

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **_: Any) -> None:
        if self.root is not None:
            return
        await self.http.start()
        self.port = self.http.port
        self.root = URL(f"http://{LOOPBACK}:{self.port}")

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        # aiohttp's hook for its own runner: never reached, since ``start_server`` above
        # starts ``HttpServer``, which makes the node's runner itself.
        raise AssertionError("Served starts HttpServer, which makes its own runner")

    def make_url(self, path: str | URL) -> URL:
        url = URL(path)
        assert self.root is not None and not url.absolute, path
        return self.root.join(url)

    @property
    def started(self) -> bool:
        return self.root is not None

    @property
    def closed(self) -> bool:
        return self.stopped

    async def close(self) -> None:
        if self.root is not None and not self.stopped:
            self.stopped = True
            await self.http.stop()


def node_server(
    node: Node, app: web.Application | None = None, *, sock: socket.socket | None = None
) -> Served:
    """``app`` (``build_app(node)`` unless given) served as ``run_node`` serves it
    (``node.run.http_server``: the node's HTTP limits and metrics), on a free loopback
    port instead of the config's, or on ``sock``."""
    http = http_server(node, app if app is not None else build_app(node))
    http.host, http.port, http.sock = LOOPBACK, 0, sock
    return Served(http)


def app_server(app: web.Application, limits: HttpLimits | None = None) -> Served:
    """A bare ``app`` served as the node serves its own, with ``limits`` (the
    defaults unless given)."""
    return Served(HttpServer(app, LOOPBACK, 0, limits if limits is not None else HttpLimits()))
