"""The OpenAPI 3.1 document of the node's HTTP API, served at ``GET /v1/openapi.json``.

Generated from the route declarations (``apps.routes``) that sit beside each
handler: the core routes (``node/api.py``), the commerce reads and feeds
(``apps/commerce/http.py``), the staking reads (``node/staking_api.py``) and this
document's own route, in ``node.api.ROUTE_TABLES`` order. Nothing about a route
is written here: its parameters, body, answers and error codes come from its
declaration. Every refusal is the shared ``Error`` schema ``{"code", "message"}``;
each error answer lists the stable codes that route answers in its text and,
machine-readable, in ``x-codes``.

Named schemas are derived from dataclasses (the commerce views and state
objects, ``apps.commerce.views`` and ``apps.commerce.model``), so a field added
there appears here: a field of 20 bytes (``Address``) is an address, a ``str``
annotated with an enum holds a member's name, lowercased. Others are declared as
``Component``s beside the code that renders them. The ``TxType`` schema lists
every transaction type with its declaration (``vm.TxType``), and the receipt codes
are the packages' tables derived from the same declarations. The output is deterministic: the same declarations give the same bytes.
``tests/node/test_openapi.py`` checks the document against the OpenAPI 3.1
schema, that the router mounts exactly the declared routes, and real answers of
a node against the schemas.

WebSocket feeds have no OpenAPI form: they are described as GETs carrying
``Upgrade: websocket`` and answered by 101, their messages in the text and, as
schemas, under the operation's ``x-websocket``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Iterable
from enum import Enum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any

from aiohttp import web

import apps.commerce
import consensus
import vm
from apps.commerce.http import READ_WINDOW_MS
from apps.routes import (
    BOOL,
    HEX_CHARS,
    STR,
    UINT,
    Answer,
    Component,
    IntParam,
    Param,
    Refusal,
    Route,
    RouteTable,
    array,
    described,
    hex_bytes,
    nullable,
    obj,
    ref,
)
from core.codec import Len, MaxItems, MaxLen
from storage import MAX_KEY_SIZE
from vm import TxType

OPENAPI_PATH = "/v1/openapi.json"

# --- stable codes ---

# Codes of refused requests (the HTTP status is in the text).
HTTP_CODES: dict[str, str] = {
    "malformed": "400: the body is not JSON, has the wrong shape, is not hex or msgpack, "
    "does not decode as its `Content-Encoding`, or a transaction is not a canonical encoding",
    "too_large": "400: the body is over the node's `max_request_bytes`, a batch over its "
    "cap, or a transaction over `max_tx_bytes`",
    "bad_hash": "400: a hash that is not 64 hex characters",
    "bad_height": "400: a height that is neither a number nor `latest`",
    "bad_epoch": "400: an epoch that is not a number",
    "bad_address": "400: not a bech32m `ll1…` address",
    "bad_key": f"400: a state key that is not 1..{MAX_KEY_SIZE} bytes of hex",
    "bad_param": "400: a query or path parameter out of its range",
    "invalid_gtin": "400: not 14 digits with a valid GS1 check digit",
    "invalid_serial": "400: a serial that is not 1..20 characters",
    "replay_too_long": "400: a feed resumed from too far back; read a snapshot and resume from "
    "its height",
    "unauthenticated": "401: a signed read without its signature headers",
    "bad_signature": "401: a signed read whose key or signature is malformed or does not "
    "verify (400 for a transaction whose signature does not verify)",
    "stale_request": f"401: a signed read more than {READ_WINDOW_MS} ms from the server's clock",
    "unbound_read": "401: a signed read signed for no node (the old form, without "
    "X-LiveLedger-Node): sign it for this node's key",
    "wrong_node": "401: a signed read signed for another node's key (a replay, or a client "
    "that asked one node and sent to another)",
    "forbidden": "403: the signer may not see this order",
    "private_state": "403: a state key of order data private to its parties (prefixes 0x29, "
    "0x2A-0x2D), refused by the generic state route whether it exists or not",
    "not_found": "404: no such route, object or transaction at the height read, or a height "
    "above the latest final one",
    "maybe_pruned": "404: a transaction in no block this node holds, on a node that holds "
    "no block below `retained.blocks_from` (pruned, or before its state sync): it may have "
    "been in one of those; an archive node tells",
    "pending": "404: a proof of a transaction that is still in the node's mempool: no "
    "block holds it yet",
    "no_set_change": "404: no epoch after the one asked, up to the head's, has other "
    "producers than it (`GET /v1/epochs/{epoch}/next-change`)",
    "commerce_disabled": "404: the chain's genesis has no commerce section",
    "staking_disabled": "404: the chain's genesis has no staking section",
    "method_not_allowed": "405: the route exists for another method",
    "request_timeout": "408: a request body that did not arrive within the node's time "
    "limit (a slow upload); the connection is closed",
    "pruned": "410: a block or state version below the heights this node keeps (its pruning "
    "settings, or the height it state-synced from); an archive node has it",
    "internal": "500: a bug in the node (logged)",
    "corrupt_record": "500: a record this node stored does not decode (its store is damaged; "
    "logged): ask another node",
    "unavailable": "503: the node is starting or stopping (with `Retry-After`)",
    "busy": "503: the node runs as many simulations, reads as many request bodies, holds "
    "as many unsent answers, queues as many reads (blocks, proofs, commerce views), or "
    "serves as many connections (in all or from the client's address) as it allows "
    "(with `Retry-After`)",
    "http_error": "any other HTTP error, e.g. a plain GET on a WebSocket route",
}

# Refusals of a submitted transaction (it never enters the mempool nor a block).
TX_REFUSAL_CODES: dict[str, str] = {
    "malformed": "not the canonical encoding of a SignedTx, its body or its type's payload",
    "too_large": "encoded transaction over `max_tx_bytes`",
    "wrong_chain": "signed for another chain id",
    "bad_signature": "the signature does not verify",
    "unknown_type": "no handler registered for the body's type",
    "expired": "`expiry_height` below the next height or too far past it",
    "fee_too_low": "fee below `min_fee`",
    "nonce_too_low": "nonce already used (a replay)",
    "nonce_exhausted": "nonce 2**64-1: the account's next nonce would not fit in u64",
    "nonce_gap": "nonce too far above the account's next nonce (beyond the mempool's window)",
    "insufficient_fee": "balance below the fee, with the fees already queued",
    "duplicate": "already known, or its (sender, nonce) is queued without a large enough fee bump",
    "mempool_full": "the mempool is full: 503 with `Retry-After` (seconds) for a single "
    "transaction; in a batch, that item's code, and the answer carries `Retry-After`",
    "account_queue_full": "the sender has the most pending transactions a node queues",
}

# Every transaction type a node executes, by the package that declares it (on its handler,
# ``vm.TxTable.declare``), with the package's error-code table, derived from the same
# declarations. The core codes also hold what the executor gives any type.
TX_PACKAGES: tuple[tuple[str, str, tuple[TxType, ...], dict[str, str]], ...] = (
    ("Core", "vm", vm.TX_TYPES, {**vm.EXECUTION_CODES, **vm.ERROR_CODES}),
    ("Commerce", "apps.commerce", apps.commerce.TX_TYPES, apps.commerce.ERROR_CODES),
    ("Staking and governance", "consensus", consensus.TX_TYPES, consensus.ERROR_CODES),
)


def _code_table(codes: dict[str, str]) -> str:
    rows = "\n".join(f"| `{code}` | {meaning} |" for code, meaning in codes.items())
    return f"| code | meaning |\n|---|---|\n{rows}"


# --- schemas ---

_BECH32_CHARS = "[qpzry9x8gf2tvdw0s3jn54khce6mua7l]"


class _Schemas:
    """``components.schemas``: dataclasses derived and ``Component``s added as they are referenced."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._classes: dict[str, type] = {}
        self._components: dict[str, Component] = {}

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        if name in self.schemas:
            raise ValueError(f"schema {name} defined twice")
        self.schemas[name] = schema
        return ref(name)

    def component(self, component: Component) -> dict[str, Any]:
        """A reference to ``component``, registered (what it names first) on first use."""
        known = self._components.get(component.name)
        if known is None:
            schema = self.resolve(component.schema)
            self._components[component.name] = component
            self.add(component.name, schema)
        elif known is not component:
            raise ValueError(f"two components named {component.name}")
        return ref(component.name)

    def resolve(self, value: Any) -> Any:
        """A copy of a declared schema with each dataclass and ``Component`` as a ``$ref``."""
        if isinstance(value, Component):
            return self.component(value)
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            return self.of(value)
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.resolve(item) for item in value]
        return value

    def of(self, cls: type) -> dict[str, Any]:
        """A reference to the schema of dataclass ``cls`` as ``views.jsonable`` writes it."""
        name = cls.__name__
        known = self._classes.get(name)
        if known is None:
            self._classes[name] = cls
            self.schemas[name] = self._dataclass(cls)
        elif known is not cls:
            raise ValueError(f"two classes named {name}: {known!r} and {cls!r}")
        return ref(name)

    def _dataclass(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)
        properties = {f.name: self._field(hints[f.name], f.name) for f in fields}
        out = obj(properties)
        doc = (cls.__doc__ or "").strip()
        # A dataclass without a docstring gets its signature as one: not a description.
        if doc and not doc.startswith(f"{cls.__name__}("):
            out["description"] = " ".join(doc.split())
        return out

    def _field(self, hint: Any, name: str) -> dict[str, Any]:
        metadata: list[Any] = []
        if typing.get_origin(hint) is Annotated:
            hint, *metadata = typing.get_args(hint)
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"{name}: only X | None unions are described, got {hint}")
            return nullable(self._field(args[0], name))
        if origin is tuple:
            item, _ellipsis = typing.get_args(hint)
            out = array(self._field(item, name))
            out.update(("maxItems", m.n) for m in metadata if isinstance(m, MaxItems))
            return out
        if hint is bool:
            return dict(BOOL)
        if hint is int:
            return dict(UINT)
        if hint is str and any(isinstance(m, type) and issubclass(m, Enum) for m in metadata):
            # A member's name, lowercased, or one of the strings annotated beside the enum.
            names = [m for m in metadata if isinstance(m, str)]
            for m in metadata:
                if isinstance(m, type) and issubclass(m, Enum):
                    names += [member.name.lower() for member in m]
            return {"type": "string", "enum": names}
        if hint is str:
            # MaxLen counts UTF-8 bytes: a bound on characters too.
            out = dict(STR)
            out.update(("maxLength", m.n) for m in metadata if isinstance(m, MaxLen))
            return out
        if hint is bytes:
            exact = next((m.n for m in metadata if isinstance(m, Len)), None)
            most = next((m.n for m in metadata if isinstance(m, MaxLen)), None)
            if exact == 20:
                return ref("Address")
            if exact is not None:
                return hex_bytes(exact)
            if most is not None:
                return {"type": "string", "pattern": f"^({HEX_CHARS}{{2}}){{0,{most}}}$"}
            return ref("Hex")
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.of(hint)
        raise TypeError(f"{name}: no schema for {hint!r}")


# --- operations, from the declarations ---

_DEFAULT_ERROR = "DefaultError"
_UNAVAILABLE = "Unavailable"


def _error(description: str, *codes: str) -> dict[str, Any]:
    listed = ", ".join(f"`{c}`" for c in codes)
    return {
        "description": f"{description} Codes: {listed}.",
        "content": {"application/json": {"schema": ref("Error")}},
        "x-codes": list(codes),
    }


def _error_answer(refusal: Refusal) -> dict[str, Any]:
    out = _error(refusal.description, *refusal.codes)
    if refusal.headers:
        out["headers"] = dict(refusal.headers)
    return out


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.schema is not None:
        out["content"] = {answer.media: {"schema": answer.schema}}
    if answer.headers:
        out["headers"] = dict(answer.headers)
    return out


def _parameter(param: Param | IntParam, parameters: dict[str, Any], s: _Schemas) -> Any:
    """A parameter's document, or a ``$ref`` to it under ``components.parameters``."""
    doc = {
        "name": param.name,
        "in": param.location,
        "required": param.required,
        "description": param.description,
        "schema": s.resolve(param.schema),
    }
    if param.component is None:
        return doc
    if parameters.setdefault(param.component, doc) != doc:
        raise ValueError(f"two parameters named {param.component}")
    return {"$ref": f"#/components/parameters/{param.component}"}


def _operation(route: Route, parameters: dict[str, Any], s: _Schemas) -> dict[str, Any]:
    """The OpenAPI operation of ``route``: its answer, its refusals, 503 while the node
    starts (if ``route.ready``) and the default error for anything else."""
    out: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": route.summary,
        "description": route.description,
    }
    if route.params:
        out["parameters"] = [_parameter(p, parameters, s) for p in route.params]
    responses: dict[str, Any] = {str(route.ok.status): _answer(route.ok)}
    for refusal in route.errors:
        responses[str(refusal.status)] = _error_answer(refusal)
    if route.ready:
        responses.setdefault("503", {"$ref": f"#/components/responses/{_UNAVAILABLE}"})
    responses["default"] = {"$ref": f"#/components/responses/{_DEFAULT_ERROR}"}
    out["responses"] = responses
    if route.body is not None:
        content = {media: {"schema": schema} for media, schema in route.body.content.items()}
        out["requestBody"] = {"required": True, "content": content}
    out.update(route.extra)
    resolved: dict[str, Any] = s.resolve(out)
    return resolved


def _paths(tables: Iterable[RouteTable], s: _Schemas) -> tuple[dict[str, Any], dict[str, Any]]:
    """``paths`` and ``components.parameters`` of every declared route, in table order."""
    paths: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    for table in tables:
        for component in table.components:
            s.resolve(component)
        for route in table:
            item = paths.setdefault(route.path, {})
            method = route.method.lower()
            if method in item:
                raise ValueError(f"{route.method} {route.path} declared twice")
            item[method] = _operation(route, parameters, s)
    return paths, parameters


# --- the document ---


def _package_version() -> str:
    try:
        return package_version("liveledger")
    except PackageNotFoundError:
        return "0.0.0"


def _common_schemas(s: _Schemas) -> None:
    s.add(
        "Error",
        {
            "type": "object",
            "description": "Every refusal, whatever the route: a stable `code` that clients "
            "branch on and a `message` for people (it names expected and actual values). "
            "HTTP codes:\n\n"
            + _code_table(HTTP_CODES)
            + "\n\n`POST /v1/txs` answers a refused transaction with its admission code:\n\n"
            + _code_table(TX_REFUSAL_CODES),
            "properties": {
                "code": described(STR, "stable error code"),
                "message": described(STR, "what went wrong, for people"),
            },
            "required": ["code", "message"],
            "x-codes": sorted(HTTP_CODES.keys() | TX_REFUSAL_CODES.keys()),
        },
    )
    s.add(
        "Address",
        {
            "type": "string",
            "pattern": f"^ll1{_BECH32_CHARS}{{38}}$",
            "description": "account address: 20 bytes in bech32m with the prefix `ll1`",
            "examples": ["ll1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq6yvv9t"],
        },
    )
    s.add(
        "Hex",
        {
            "type": "string",
            "pattern": f"^({HEX_CHARS}{{2}})*$",
            "description": "bytes as lowercase hex (empty for none)",
        },
    )
    s.add(
        "ReceiptCode",
        {
            "type": "string",
            "description": "`ok` or the stable code of an execution failure (the transaction "
            "is in its block and paid its fee; nothing else changed). Each package's table is "
            "derived from its transaction types' declarations (`TxType` lists the codes of "
            "each type)."
            + "".join(
                f"\n\n{title} (from `{package}`):\n\n{_code_table(codes)}"
                for title, package, _types, codes in TX_PACKAGES
            ),
            "x-codes": sorted(set().union(*(codes for *_, codes in TX_PACKAGES))),
        },
    )


def _hex_prefixes(prefixes: Iterable[int]) -> list[str]:
    return [f"0x{p:02x}" for p in sorted(prefixes)]


def _tx_types(s: _Schemas) -> None:
    """The ``TxType`` schema: every type a node executes, each with its declaration."""
    declared: dict[str, Any] = {}
    rows = []
    for _title, package, declarations, _codes in TX_PACKAGES:
        for t in declarations:
            if t.view and t.view not in s.schemas:
                raise ValueError(f"{t.name}: read model {t.view} is no schema of the document")
            rows.append(f"| `{t.name}` | {package} | {t.summary} |")
            if not dataclasses.is_dataclass(t.payload):
                raise ValueError(f"{t.name}: payload {t.payload.__name__} is no dataclass")
            declared[t.name] = {
                "summary": t.summary,
                "class": t.tx_class.name.lower(),
                "payload": {
                    "class": t.payload.__name__,
                    "fields": [f.name for f in dataclasses.fields(t.payload)],
                },
                "codes": list(t.codes),
                "events": sorted(t.events),
                "feed": sorted(t.feed),
                "reads": _hex_prefixes(t.reads),
                "writes": _hex_prefixes(t.writes),
                "view": t.view or None,
            }
    s.add(
        "TxType",
        {
            "type": "string",
            "enum": list(declared),
            "description": "A transaction type (`TxBody.type`); its payload is the msgpack "
            "array of its payload class's fields, in order. `x-tx-types` holds each type's "
            "declaration: priority class, payload, the codes its receipts may carry besides "
            "the core ones (`ReceiptCode`), the event kinds it may emit and those a live "
            "session's feed sends, the state key prefixes it only reads and those it may "
            "write, and the schema of its read model.\n\n| type | package | summary |\n"
            "|---|---|---|\n" + "\n".join(rows),
            "x-tx-types": declared,
        },
    )


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``node.api.create_app`` (a fresh dict)."""
    # node.api mounts this module's route, so it is imported here, not at the top.
    from node.api import ROUTE_TABLES

    s = _Schemas()
    _common_schemas(s)
    paths, parameters = _paths(ROUTE_TABLES, s)
    # After the routes: a type's read model is one of the schemas they name.
    _tx_types(s)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LiveLedger node API",
            "version": _package_version(),
            "summary": "A permissioned blockchain for live-stream commerce",
            "description": "Versioned JSON routes under `/v1/`, WebSocket feeds, and "
            'Prometheus metrics at `/metrics`. Every error is JSON `{"code", "message"}` '
            "with a stable `code` (schema `Error`; each error response lists its codes, also "
            "in `x-codes`). Amounts are integers, addresses bech32m `ll1…`, other bytes "
            "lowercase hex. Commerce answers carry `height`: every value in one answer is "
            "read from the state at that final height, and a feed resumed with "
            "`?from=<height>` continues right after it. See docs/node.md and "
            "docs/commerce.md (Interfaces).",
        },
        "tags": [
            {"name": "node", "description": "Chain, transactions, accounts, metrics."},
            {
                "name": "commerce",
                "description": "Reads of the commerce app. Order reads are signed by the viewer.",
            },
            {"name": "feeds", "description": "WebSocket feeds of sessions and blocks."},
            {"name": "staking", "description": "Read-only views of staking state."},
        ],
        "paths": paths,
        "components": {
            "schemas": s.schemas,
            "parameters": parameters,
            "responses": {
                _UNAVAILABLE: _error_answer(
                    Refusal(503, "The node is starting or stopping.", "unavailable")
                ),
                _DEFAULT_ERROR: _error(
                    "Any other refusal: an unknown route, a method the route does not take, "
                    "a bug in the node.",
                    "not_found",
                    "method_not_allowed",
                    "internal",
                    "http_error",
                ),
            },
        },
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as served (built once per process)."""
    return json.dumps(build_openapi(), separators=(",", ":")).encode()


ROUTES = RouteTable("node")


@ROUTES.get(
    OPENAPI_PATH,
    "getOpenapi",
    "This document",
    "The OpenAPI 3.1 document of every route.",
    ok=Answer("The document.", {"type": "object"}),
    ready=False,
)
async def get_openapi(_request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")


def add_openapi_route(app: web.Application) -> None:
    """Mount ``GET /v1/openapi.json`` (the document is built now, so a broken one fails early)."""
    openapi_json()
    ROUTES.mount(app)


__all__ = [
    "HTTP_CODES",
    "OPENAPI_PATH",
    "ROUTES",
    "TX_PACKAGES",
    "TX_REFUSAL_CODES",
    "add_openapi_route",
    "build_openapi",
    "get_openapi",
    "openapi_json",
]
