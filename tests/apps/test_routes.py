"""Route declarations: a parameter is parsed with the bounds it documents, and a table
mounts what it declares, once."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from apps.routes import Answer, IntParam, RouteTable
from core import HttpError

LIMIT = IntParam("limit", "query", 1, 200, "page size", default=50)
ID = IntParam("id", "path", 1, 2**64 - 1, "listing id")


def query(text: str) -> web.Request:
    return make_mocked_request("GET", f"/v1/listings{text}")


def test_an_int_param_reads_what_it_documents():
    assert LIMIT.schema == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert ID.schema == {"type": "integer", "minimum": 1, "maximum": 2**64 - 1}
    assert (LIMIT.required, ID.required) == (False, True)
    assert LIMIT.read(query("")) == 50
    assert LIMIT.read(query("?limit=200")) == 200
    assert ID.read(make_mocked_request("GET", "/", match_info={"id": str(2**64 - 1)})) == 2**64 - 1
    for text in ("0", "201", "-1", "²", "1e3", "", "9" * 25):
        with pytest.raises(HttpError) as info:
            LIMIT.read(query(f"?limit={text}"))
        assert (info.value.status, info.value.code) == (400, "bad_param"), text
        assert "limit must be an integer in 1..200" in info.value.message


def test_a_table_mounts_each_declared_route_once():
    table = RouteTable("test")

    @table.get("/v1/x/{id}", "getX", "An x", "One x.", params=(ID,), ok=Answer("The x."))
    async def get_x(request: web.Request) -> web.Response:
        return web.json_response({"id": ID.read(request)})

    (route,) = table
    assert (route.method, route.path, route.handler, route.tag) == (
        "GET",
        "/v1/x/{id}",
        get_x,
        "test",
    )
    with pytest.raises(ValueError, match="declared twice"):
        table.get("/v1/x/{id}", "getX2", "Again", "Again.", ok=Answer("The x."))
    app = web.Application()
    table.mount(app)
    mounted = {(r.method, r.resource.canonical, r.handler) for r in app.router.routes()}
    assert mounted == {("GET", "/v1/x/{id}", get_x), ("HEAD", "/v1/x/{id}", get_x)}
