"""The node client turns whatever a node answers into a ``NodeError`` or a document."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cli.client import NodeClient, NodeError
from cli.operator import OperatorError, read_evidence

BOMB = "[" * 100_000


@pytest.mark.parametrize("status, code", [(200, "bad_answer"), (400, "http_error")])
async def test_a_nesting_bomb_from_a_node_is_a_node_error(status, code):
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=BOMB, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/status", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        client = NodeClient(str(server.make_url("")))
        with pytest.raises(NodeError) as info:
            await asyncio.to_thread(client.status)
        assert info.value.code == code
    finally:
        await server.close()


def test_a_nesting_bomb_in_an_evidence_file_is_refused(tmp_path):
    path = tmp_path / "evidence.json"
    path.write_text('{"vote_a": ' + "[" * 10_000)
    with pytest.raises(OperatorError, match="not JSON"):
        read_evidence(path)
