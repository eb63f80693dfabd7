"""Route declarations: a parameter is parsed with the bounds it documents, and a table
mounts what it declares, once."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from apps.routes import Answer, Component, IntParam, RouteTable
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


def test_an_included_table_keeps_its_routes_in_place():
    # A module's routes kept in a module of their own are mounted and documented where
    # the including table takes them, with their own tag, and never twice.
    extra_component = Component("Extra", {"type": "object"})
    shared_component = Component("Shared", {"type": "object"})
    table = RouteTable("outer", components=(shared_component,))
    inner = RouteTable("inner", components=(shared_component, extra_component))

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    table.get("/v1/a", "getA", "A", "A.", ok=Answer("A."))(handler)
    inner.get("/v1/b", "getB", "B", "B.", ok=Answer("B."))(handler)
    table.include(inner)
    table.post("/v1/c", "postC", "C", "C.", ok=Answer("C."))(handler)
    assert [(r.method, r.path, r.tag) for r in table] == [
        ("GET", "/v1/a", "outer"),
        ("GET", "/v1/b", "inner"),
        ("POST", "/v1/c", "outer"),
    ]
    assert table.components == (shared_component, extra_component)
    with pytest.raises(ValueError, match="declared twice"):
        table.include(inner)
