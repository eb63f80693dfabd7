"""The OpenAPI document on a real node: valid OpenAPI 3.1, every routed (method, path) in it
and nothing else, the stable codes of the docs in it, and real answers of every route
(JSON, errors, WebSocket messages) valid against its schemas with no undocumented field."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import aiohttp
from aiohttp import web
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from apps.commerce import ERROR_CODES
from apps.commerce import payloads as tx
from apps.commerce.http import sign_read_request
from apps.commerce.model import ItemId
from consensus.governance import PROPOSE_PARAM_CHANGE, ProposeParamChange
from core import TxBody, pack_raw, sign_tx
from node.api import ROUTE_TABLES
from node.openapi import OPENAPI_PATH, build_openapi, openapi_json
from node.service import build_registry
from node.web import WEB_ROUTES
from tests.apps.commerce.test_http import GTIN, Actor, Driver, open_shop, place
from vm import Transfer

DOCS = Path(__file__).resolve().parents[2] / "docs"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def routed(app) -> set[tuple[str, str]]:
    """(method, path template) of every API route in the router, HEAD and the web app's
    files (node/web.py, not an API) aside."""
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD" or (route.method, route.resource.canonical) in WEB_ROUTES:
            continue
        # Templates with a regex ({name:regex}) are {name} in OpenAPI.
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical)
        out.add((route.method.lower(), path))
    return out


def documented(doc) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


def strict(schema):
    """A copy of a schema in which objects allow no property beyond those listed."""
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.get("type") == "object" and isinstance(out.get("properties"), dict):
        out.setdefault("additionalProperties", False)
    return out


class Checker:
    """Validates answers against the document, strictly (an undocumented field fails)."""

    def __init__(self, doc) -> None:
        self.doc = doc
        self.components = strict(doc["components"])

    def validate(self, schema, value) -> None:
        root = {**strict(schema), "components": self.components}
        Draft202012Validator(root).validate(value)

    def response(self, template: str, method: str, status: int) -> dict:
        responses = self.doc["paths"][template][method]["responses"]
        resp = responses.get(str(status), responses["default"])
        if "$ref" in resp:
            resp = self.doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
        return resp

    def answer(self, template: str, method: str, status: int, body) -> None:
        resp = self.response(template, method, status)
        self.validate(resp["content"]["application/json"]["schema"], body)
        if status >= 400:
            assert body["code"] in resp["x-codes"], (template, status, body)

    def request(self, template: str, method: str, content_type: str, body) -> None:
        content = self.doc["paths"][template][method]["requestBody"]["content"]
        self.validate(content[content_type]["schema"], body)


async def fetch(client, checker, template, url=None, *, status=200, headers=None):
    resp = await client.get(url or template, headers=headers or {})
    body = await resp.json()
    assert resp.status == status, (url or template, body)
    checker.answer(template, "get", status, body)
    return body


async def get_document(client):
    resp = await client.get(OPENAPI_PATH)
    assert resp.status == 200 and resp.content_type == "application/json"
    return await resp.json()


async def test_document_is_valid_openapi_and_covers_every_route(node_client):
    client, _node, _faucet = node_client
    doc = await get_document(client)
    validate(doc)  # the OpenAPI 3.1 schema, $refs, path parameters, unique operation ids
    assert doc["openapi"].startswith("3.1") and doc == build_openapi()
    routes = routed(client.server.app)
    assert len(routes) >= 20
    # A route added without documentation fails here, and so does a stale entry.
    assert routes - documented(doc) == set(), "routes missing from the OpenAPI document"
    assert documented(doc) - routes == set(), "documented routes that are not routed"
    for item in doc["paths"].values():
        for method in set(item) & set(METHODS):
            op = item[method]
            assert op["summary"] and op["description"] and op["tags"], op["operationId"]
            assert "default" in op["responses"], op["operationId"]
            # Every error answer is the shared schema and lists its codes.
            for status, resp in op["responses"].items():
                if "$ref" in resp or status[0] not in "45":
                    continue
                schema = resp["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"} and resp["x-codes"]


async def test_the_router_mounts_exactly_the_declared_routes(node_client):
    """Every route of the app has a declaration (its documentation) and every declaration
    is mounted, with the declared handler; the document is the same bytes on every build."""
    client, _node, _faucet = node_client
    # The web app's files (node/web.py) are served beside the API, not part of it.
    routes = [
        r
        for r in client.server.app.router.routes()
        if (r.method if r.method != "HEAD" else "GET", r.resource.canonical) not in WEB_ROUTES
    ]
    assert all(not path.startswith("/v1/") for _, path in WEB_ROUTES)
    mounted = {(route.method, route.resource.canonical, route.handler) for route in routes}
    mounted = {m for m in mounted if m[0] != "HEAD"}
    declared = [(r.method, r.path, r.handler) for table in ROUTE_TABLES for r in table]
    assert len(declared) == len(set(declared)) >= 20
    assert mounted - set(declared) == set(), "routes mounted without a declaration"
    assert set(declared) - mounted == set(), "declared routes that are not mounted"
    heads = {r.resource.canonical for r in routes if r.method == "HEAD"}
    assert heads == {path for method, path, _ in declared if method == "GET"}
    doc = build_openapi()
    assert documented(doc) == {(m.lower(), path) for m, path, _ in declared}
    # Every code a route declares is one the Error schema explains.
    explained = set(doc["components"]["schemas"]["Error"]["x-codes"])
    for route in (r for table in ROUTE_TABLES for r in table):
        for refusal in route.errors:
            assert set(refusal.codes) <= explained, (route.path, refusal.codes)
    assert json.dumps(build_openapi(), separators=(",", ":")).encode() == openapi_json()


def test_an_undocumented_route_is_caught():
    async def handler(request):
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/status", handler)
    app.router.add_get("/v1/new/{x:[0-9]+}", handler)
    app.router.add_post("/v1/new/{x:[0-9]+}", handler)
    missing = routed(app) - documented(build_openapi())
    assert missing == {("get", "/v1/new/{x}"), ("post", "/v1/new/{x}")}


def section(name: str, heading: str) -> str:
    """One ``## `` section of a doc."""
    return (DOCS / name).read_text().split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def column_codes(text: str, column: int) -> set[str]:
    """Backticked codes in one column of the table rows of ``text``."""
    codes = set()
    for line in text.splitlines():
        cells = line.strip().strip("|").split("|")
        if line.startswith("| `") and len(cells) > column:
            codes |= set(re.findall(r"`([a-z][a-z_]+)`", cells[column]))
    return codes


def test_stable_codes_of_the_docs_are_listed():
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    http, receipt = set(schemas["Error"]["x-codes"]), set(schemas["ReceiptCode"]["x-codes"])
    assert set(ERROR_CODES) <= receipt
    # Staking: the refusals column of the transactions table, and staking_disabled.
    staking = column_codes(section("staking.md", "## Transactions"), -1) | {"staking_disabled"}
    assert len(staking) > 30 and staking <= receipt, staking - receipt
    interfaces = section(
        "interfaces.md", "## Error codes for transactions (stable, shown to clients)"
    )
    tx_codes = set(re.findall(r"`([a-z][a-z_]+)`", interfaces))
    vm_codes = column_codes(section("vm.md", "## Error codes"), 0)
    assert len(tx_codes) > 10 and len(vm_codes) > 10
    assert tx_codes | vm_codes <= http | receipt, (tx_codes | vm_codes) - (http | receipt)


def test_every_transaction_type_is_documented_from_its_declaration():
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    documented = schemas["TxType"]["x-tx-types"]
    registry = build_registry()
    # Exactly what a node executes (by package: core, commerce, staking).
    assert set(documented) == set(registry.tx_types) == set(schemas["TxType"]["enum"])
    receipt_codes = set(schemas["ReceiptCode"]["x-codes"])
    for decl in registry.declarations:
        entry = documented[decl.name]
        assert entry["codes"] == list(decl.codes) and set(decl.codes) <= receipt_codes
        assert entry["events"] == sorted(decl.events) and entry["feed"] == sorted(decl.feed)
        assert entry["payload"]["class"] == decl.payload.__name__
        assert entry["writes"] == [f"0x{p:02x}" for p in sorted(decl.writes)]
        # A read model is a schema of the document.
        assert entry["view"] is None or entry["view"] in schemas
    assert documented["commerce.place_order"]["view"] == "OrderView"
    assert documented["bond"]["class"] == "consensus"


async def read_feed(client, path: str, checker, schema) -> list[dict]:
    """A feed's messages up to its ``ready``, each checked against the documented schema."""
    messages = []
    async with client.ws_connect(path) as ws:
        while True:
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            doc = json.loads(msg.data)
            checker.validate(schema, doc)
            messages.append(doc)
            if doc["type"] == "ready":
                return messages


async def test_answers_match_the_documented_schemas(node_client):
    client, node, faucet = node_client
    doc = await get_document(client)
    c = Checker(doc)
    d = Driver(client, node, faucet)
    merchant, host, alice, stranger = (Actor(n) for n in ("merchant", "host", "alice", "x"))
    await d.fund(merchant, host, alice, stranger)
    await open_shop(d, merchant, host)
    item = ItemId(GTIN, "SN-1")
    await d.run(
        merchant.key,
        tx.REGISTER_ITEM,
        tx.RegisterItem(item, "Tea pot #1", "urn:acme:plant", d.block_time),
    )
    await d.run(alice.key, tx.PLACE_ORDER, place(merchant, "1 Alice Lane"))
    tracking = hashlib.blake2b(b"TRACK-1", digest_size=32).digest()
    await d.run(merchant.key, tx.SHIP_ORDER, tx.ShipOrder(1, tracking, (item,)))
    await d.run(alice.key, tx.CONFIRM_DELIVERY, tx.OrderRef(1))
    await d.run(alice.key, tx.REVIEW, tx.WriteReview(1, 5, "lovely"))
    reviewed = await d.run(merchant.key, tx.REPLY_REVIEW, tx.ReplyReview(1, "thanks"))
    height = reviewed["height"]

    # Core reads.
    await fetch(client, c, "/v1/status")
    body = await fetch(client, c, "/v1/txs/{hash}", f"/v1/txs/{reviewed['hash']}")
    assert body["receipt"]["events"]
    proof = "/v1/txs/{hash}/proof"
    body = await fetch(client, c, proof, f"/v1/txs/{reviewed['hash']}/proof")
    assert body["height"] == height and body["count"] == 1 and body["tx_path"] == []
    blocks = "/v1/blocks/{height}"
    body = await fetch(client, c, blocks, f"/v1/blocks/{height}")
    assert body["txs"]
    await fetch(client, c, blocks, "/v1/blocks/latest?txs=false")
    body = await fetch(client, c, blocks, f"/v1/blocks/{height}?txs=hashes")
    assert body["tx_hashes"] == [reviewed["hash"]]
    accounts = "/v1/accounts/{address}"
    await fetch(client, c, accounts, f"/v1/accounts/{alice.text}")
    body = await fetch(client, c, accounts, f"/v1/accounts/{alice.text}?proof=true")
    assert body["proof"]
    state = "/v1/state/{key}"
    key = "01" + alice.address.hex()
    body = await fetch(client, c, state, f"/v1/state/{key}?height={height}")
    assert body["value"] and body["proof"]
    await fetch(client, c, state, "/v1/state/zz", status=400)
    body = await fetch(client, c, "/v1/genesis")
    assert "staking" in body["genesis"] and "commerce" in body["genesis"]
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]

    # Core refusals: each code is one the route lists.
    await fetch(client, c, "/v1/txs/{hash}", "/v1/txs/zz", status=400)
    await fetch(client, c, "/v1/txs/{hash}", "/v1/txs/" + "00" * 32, status=404)
    await fetch(client, c, proof, "/v1/txs/zz/proof", status=400)
    await fetch(client, c, proof, "/v1/txs/" + "00" * 32 + "/proof", status=404)
    await fetch(client, c, blocks, "/v1/blocks/tip", status=400)
    await fetch(client, c, blocks, "/v1/blocks/99999", status=404)
    await fetch(client, c, accounts, "/v1/accounts/nobody", status=400)

    # Submissions: one, a JSON batch, a msgpack batch, and refusals.
    def signed_transfer(amount: int) -> bytes:
        nonce = d.nonces.get(faucet.address, 0)
        d.nonces[faucet.address] = nonce + 1
        payload = Transfer(alice.address, amount).encode()
        body = TxBody(nonce, 1_000, node.chain.height + 500, "transfer", payload)
        return sign_tx(faucet, d.chain_id, body).encode()

    async def submit(payload, status: int, content_type: str = "application/json"):
        if content_type == "application/json":
            c.request("/v1/txs", "post", content_type, payload)
            resp = await client.post("/v1/txs", json=payload)
        else:
            resp = await client.post(
                "/v1/txs", data=pack_raw(payload), headers={"Content-Type": content_type}
            )
        body = await resp.json()
        assert resp.status == status, body
        c.answer("/v1/txs", "post", status, body)
        return body

    await submit({"tx": signed_transfer(1).hex()}, 200)
    body = await submit({"txs": [signed_transfer(2).hex(), "00"]}, 200)
    assert body["accepted"] == 1 and body["results"][1]["code"] == "malformed"
    body = await submit([signed_transfer(3)], 200, "application/msgpack")
    assert body["accepted"] == 1
    await submit({"tx": "00"}, 400)
    body = await submit({"tx": signed_transfer(4).hex()}, 200)
    d.nonces[faucet.address] -= 1
    body = await submit({"tx": signed_transfer(4).hex()}, 400)  # the same nonce again
    assert body["code"] == "duplicate"
    resp = await client.post("/v1/txs", data=b"{", headers={"Content-Type": "application/json"})
    c.answer("/v1/txs", "post", 400, await resp.json())

    # Simulations: a receipt, and refusals.
    for payload, status in (({"tx": signed_transfer(5).hex()}, 200), ({"tx": "00"}, 400)):
        c.request("/v1/txs/simulate", "post", "application/json", payload)
        resp = await client.post("/v1/txs/simulate", json=payload)
        assert resp.status == status
        c.answer("/v1/txs/simulate", "post", status, await resp.json())
    d.nonces[faucet.address] -= 1

    # Commerce reads.
    await fetch(client, c, "/v1/commerce")
    await fetch(client, c, "/v1/listings", "/v1/listings?start=1&limit=10")
    await fetch(client, c, "/v1/listings/{id}", "/v1/listings/1")
    body = await fetch(client, c, "/v1/listings/{id}/reviews", "/v1/listings/1/reviews")
    assert body["reviews"][0]["reply"] == "thanks"
    await fetch(client, c, "/v1/merchants/{address}", f"/v1/merchants/{merchant.text}")
    reviews = f"/v1/merchants/{merchant.text}/reviews?limit=1"
    await fetch(client, c, "/v1/merchants/{address}/reviews", reviews)
    await fetch(client, c, "/v1/roles/{address}", f"/v1/roles/{merchant.text}")
    body = await fetch(client, c, "/v1/sessions/{id}", "/v1/sessions/1")
    assert body["session"]["pinned"] and body["session"]["deals"]
    await fetch(client, c, "/v1/deals/{id}", "/v1/deals/1")
    body = await fetch(client, c, "/v1/items/01/{gtin}/21/{serial}", f"/v1/items/01/{GTIN}/21/SN-1")
    assert len(body["item"]["history"]) >= 2 and body["proof"]["entries"]

    # Signed order reads, with the documented headers.
    params = doc["components"]["parameters"]
    header_names = {params[p]["name"] for p in ("ReadKey", "ReadTime", "ReadNode", "ReadSignature")}
    for path, template in (("/v1/orders/1", "/v1/orders/{id}"), ("/v1/orders", "/v1/orders")):
        headers = sign_read_request(alice.key, d.chain_id, "GET", path, node=d.node_key)
        assert set(headers) == header_names
        body = await fetch(client, c, template, path, headers=headers)
    assert body["orders"][0]["sealed_address"] and body["orders"][0]["items"]
    headers = sign_read_request(host.key, d.chain_id, "GET", "/v1/orders/1", node=d.node_key)
    body = await fetch(client, c, "/v1/orders/{id}", "/v1/orders/1", headers=headers)
    assert body["order"]["sealed_address"] is None
    headers = sign_read_request(stranger.key, d.chain_id, "GET", "/v1/orders/1", node=d.node_key)
    await fetch(client, c, "/v1/orders/{id}", "/v1/orders/1", status=403, headers=headers)
    await fetch(client, c, "/v1/orders/{id}", "/v1/orders/1", status=401)

    # Commerce refusals.
    await fetch(client, c, "/v1/listings/{id}", "/v1/listings/999", status=404)
    await fetch(client, c, "/v1/listings/{id}", "/v1/listings/abc", status=400)
    await fetch(client, c, "/v1/listings", "/v1/listings?limit=0", status=400)
    await fetch(client, c, "/v1/merchants/{address}", f"/v1/merchants/{alice.text}", status=404)
    bad_gtin = f"/v1/items/01/{GTIN[:-1]}{(int(GTIN[-1]) + 1) % 10}/21/X"
    await fetch(client, c, "/v1/items/01/{gtin}/21/{serial}", bad_gtin, status=400)
    await fetch(client, c, "/v1/sessions/{id}/events", "/v1/sessions/9/events", status=404)
    await fetch(client, c, "/v1/blocks/ws", "/v1/blocks/ws?from=x", status=400)

    # Staking reads.
    await fetch(client, c, "/v1/staking/candidates")
    await fetch(client, c, "/v1/staking/producers")
    await fetch(client, c, "/v1/staking/members")
    await fetch(client, c, "/v1/params")
    proposals = "/v1/governance/proposals"
    await fetch(client, c, f"{proposals}/{{id}}", f"{proposals}/1", status=404)
    await d.run(node.key, PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 1000))
    body = await fetch(client, c, proposals, f"{proposals}?start=1&limit=5")
    assert body["proposals"][0]["status"] == "open"
    await fetch(client, c, f"{proposals}/{{id}}", f"{proposals}/1")
    await fetch(client, c, proposals, f"{proposals}?limit=0", status=400)
    await fetch(client, c, f"{proposals}/{{id}}", f"{proposals}/x", status=400)

    # WebSocket feeds: every message fits the schemas under x-websocket.
    ws_op = doc["paths"]["/v1/sessions/{id}/events"]["get"]
    assert "101" in ws_op["responses"]
    messages = await read_feed(
        client, "/v1/sessions/1/events?from=0", c, ws_op["x-websocket"]["messages"]
    )
    kinds = [m["kind"] for m in messages if m["type"] == "event"]
    assert "commerce.deal_opened" in kinds and "commerce.stock_left" in kinds
    ws_op = doc["paths"]["/v1/blocks/ws"]["get"]
    messages = await read_feed(
        client, f"/v1/blocks/ws?from={height - 3}", c, ws_op["x-websocket"]["messages"]
    )
    assert [m["type"] for m in messages[:3]] == ["block"] * 3 and messages[-1]["type"] == "ready"
