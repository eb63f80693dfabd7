"""HTTP route declarations: each route's documentation beside its handler.

A module's handlers are declared in its ``RouteTable``; the decorator states
what the OpenAPI document says of the route: summary and description, its path,
query and header parameters with their types and bounds, its request body, its
answer and the error answers with the stable codes it may refuse with::

    LISTING_ID = IntParam("id", "path", 1, MAX_ID, "listing id")

    @ROUTES.get("/v1/listings/{id}", "getListing", "A listing", "Terms and stock.",
                params=(LISTING_ID,), ok=Answer("The listing.", views.ListingView),
                errors=(Refusal(404, "No such listing.", "not_found"),))
    async def get_listing(request: web.Request) -> web.Response:
        listing_id = LISTING_ID.read(request)  # parsed with the bounds it documents

``RouteTable.mount`` adds exactly the declared routes to an aiohttp app, and
``node.openapi`` generates the document from the same declarations: a route is
never mounted without its documentation, nor parses other bounds than it
documents. A route refuses by raising ``core.errors.HttpError`` (or any
``Invalid``, which carries its status); the node's one middleware renders it.

Schemas are JSON Schema dicts in which a dataclass (derived field by field) or a
``Component`` stands for a named schema: the generator registers it under
``components.schemas`` and writes a ``$ref`` in its place.

Apps sit below ``node`` in the layer order: this module serves the routes of
``apps.commerce.http`` and the node's own alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from core.errors import HttpError
from core.netaddr import TrustedProxies, client_key

Schema = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

# --- schema vocabulary ---

HEX_CHARS = "[0-9a-f]"
UINT: Schema = {"type": "integer", "minimum": 0}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}


def ref(name: str) -> Schema:
    """A reference to the component schema ``name`` (one defined by ``node.openapi``)."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Any) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Any) -> Schema:
    return {"type": "array", "items": items}


def hex_bytes(size: int) -> Schema:
    """Exactly ``size`` bytes as lowercase hex."""
    return {"type": "string", "pattern": f"^{HEX_CHARS}{{{2 * size}}}$"}


def described(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description}


def obj(
    properties: Mapping[str, Any],
    *,
    optional: Sequence[str] = (),
    description: str | None = None,
) -> Schema:
    """An object whose properties are all present, except those named ``optional``."""
    out: Schema = {
        "type": "object",
        "properties": dict(properties),
        "required": [name for name in properties if name not in optional],
    }
    if description is not None:
        out["description"] = description
    return out


HASH = described(hex_bytes(32), "32-byte hash, hex")
PUBLIC_KEY = described(hex_bytes(32), "Ed25519 public key, hex")
HEIGHT = described(UINT, "final height this answer is read at")


@dataclass(frozen=True, eq=False)
class Component:
    """A named schema of ``components.schemas``, written as a ``$ref`` where it is used."""

    name: str
    schema: Schema


# --- parameters ---


@dataclass(frozen=True, eq=False)
class Param:
    """A path, query or header parameter, documented as given.

    With ``component`` it is documented once under ``components.parameters`` and
    referenced where used.
    """

    name: str
    location: str  # "path", "query" or "header"
    schema: Schema
    description: str
    component: str | None = None

    @property
    def required(self) -> bool:
        # Path parameters always are; so is every header documented here (the
        # signed-read headers, the WebSocket upgrade); queries never.
        return self.location != "query"


@dataclass(frozen=True)
class IntParam:
    """A decimal path or query parameter in ``low..high``: documented and parsed from here."""

    name: str
    location: str  # "path" or "query"
    low: int
    high: int
    description: str
    default: int | None = None
    component: None = None

    @property
    def required(self) -> bool:
        return self.location == "path"

    @property
    def schema(self) -> Schema:
        out: Schema = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            out["default"] = self.default
        return out

    def read(self, request: web.Request) -> int:
        """The value in ``request`` (``default`` if a query leaves it out); else 400 ``bad_param``."""
        if self.location == "path":
            text = request.match_info.get(self.name)
        else:
            text = request.query.get(self.name)
        if text is None and self.default is not None:
            return self.default
        # ASCII only: str.isdigit also takes digits int() refuses ("²").
        if (
            text is None
            or not (text.isascii() and text.isdigit())
            or len(text) > 20
            or not self.low <= int(text) <= self.high
        ):
            got = "nothing" if text is None else repr(text[:40])
            raise HttpError(
                400,
                "bad_param",
                f"{self.name} must be an integer in {self.low}..{self.high}, got {got}",
            )
        return int(text)


# --- refusals ---

# Seconds a client refused with a 503 waits before asking again: about a block, by
# when the node has opened, or drained a block's worth of what it was busy with.
RETRY_AFTER_S = 1
RETRY_AFTER: Schema = {
    "description": "seconds to wait before asking again",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def retry_later(code: str, message: str) -> HttpError:
    """A 503: refused for now, not for ever, with ``Retry-After``. Every 503 is one."""
    return HttpError(503, code, message, {"Retry-After": str(RETRY_AFTER_S)})


def unavailable(message: str = "node is starting or stopping") -> HttpError:
    """The node is not open (or has no final block yet): 503 ``unavailable``."""
    return retry_later("unavailable", message)


# --- answers ---


@dataclass(frozen=True, eq=False)
class Answer:
    """A route's success: its description, body schema and media type, and headers.

    No schema: an answer without a body (a WebSocket's 101).
    """

    description: str
    schema: Any = None
    status: int = 200
    media: str = "application/json"
    headers: Mapping[str, Schema] | None = None


class Refusal:
    """An error answer of one status: its description and the stable codes it carries.

    Its body is always the shared ``Error`` schema ``{"code", "message"}``. A 503
    carries ``Retry-After`` (``retry_later``) unless ``headers`` say otherwise.
    """

    __slots__ = ("status", "description", "codes", "headers")

    def __init__(
        self,
        status: int,
        description: str,
        *codes: str,
        headers: Mapping[str, Schema] | None = None,
    ) -> None:
        if not codes:
            raise ValueError(f"a {status} refusal must list its codes")
        self.status = status
        self.description = description
        self.codes = codes
        if headers is None and status == 503:
            headers = {"Retry-After": RETRY_AFTER}
        self.headers = headers


@dataclass(frozen=True, eq=False)
class Body:
    """A request body: its schema for each media type it may come in."""

    content: Mapping[str, Any]


# --- routes ---


@dataclass(frozen=True, eq=False)
class Route:
    """One (method, path), its handler and everything the document says of it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    tag: str
    summary: str
    description: str
    ok: Answer
    params: tuple[Param | IntParam, ...] = ()
    errors: tuple[Refusal, ...] = ()
    body: Body | None = None
    # False for routes that answer while the node starts or stops (no 503).
    ready: bool = True
    # Further fields of the operation, e.g. a WebSocket's ``x-websocket``.
    extra: Mapping[str, Any] = field(default_factory=dict)


class RouteTable:
    """A module's routes, in the order they are mounted and documented.

    ``components`` are documented before the routes, in that order (the read
    models an app serves), whether or not a route names them.
    """

    def __init__(self, tag: str, components: Sequence[Component | type] = ()) -> None:
        self.tag = tag
        self.components = tuple(components)
        self.routes: list[Route] = []

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def route(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        description: str,
        *,
        ok: Answer,
        params: Sequence[Param | IntParam] = (),
        errors: Sequence[Refusal] = (),
        body: Body | None = None,
        ready: bool = True,
        tag: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Callable[[H], H]:
        """Declare the decorated handler as ``method path``."""
        if any(r.method == method and r.path == path for r in self.routes):
            raise ValueError(f"{method} {path} declared twice")

        def declare(handler: H) -> H:
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    operation_id,
                    tag or self.tag,
                    summary,
                    description,
                    ok,
                    tuple(params),
                    tuple(errors),
                    body,
                    ready,
                    dict(extra or {}),
                )
            )
            return handler

        return declare

    def get(
        self, path: str, operation_id: str, summary: str, description: str, **details: Any
    ) -> Callable[[H], H]:
        """Declare a GET route (mounted with its HEAD, as aiohttp's ``add_get`` does)."""
        return self.route("GET", path, operation_id, summary, description, **details)

    def post(
        self, path: str, operation_id: str, summary: str, description: str, **details: Any
    ) -> Callable[[H], H]:
        return self.route("POST", path, operation_id, summary, description, **details)

    def include(self, other: RouteTable) -> None:
        """Take the routes declared so far in ``other`` (a module's routes kept in a
        module of their own) as if they were declared here, at this point: mounted and
        documented in this table's order. Components of ``other`` not listed here are
        documented after this table's."""
        for route in other.routes:
            if any(r.method == route.method and r.path == route.path for r in self.routes):
                raise ValueError(f"{route.method} {route.path} declared twice")
            self.routes.append(route)
        self.components += tuple(c for c in other.components if c not in self.components)

    def mount(self, app: web.Application) -> None:
        """Add every declared route to ``app``'s router, in declaration order."""
        for route in self.routes:
            if route.method == "GET":
                app.router.add_get(route.path, route.handler)
            else:
                app.router.add_route(route.method, route.path, route.handler)


# The reverse proxies whose ``X-Forwarded-For`` names the client (the node config's
# ``http.trusted_proxies``); none in an app without it.
TRUSTED_PROXIES: web.AppKey[TrustedProxies] = web.AppKey("trusted_proxies", TrustedProxies)
_FORWARDED_FOR = "X-Forwarded-For"


def client_of(request: web.Request) -> str:
    """The client address ``request`` came from, as the node's per-address bounds count
    it (``core.netaddr.client_key``: an IPv6 client's /64 is one). From a peer listed in
    the app's ``TRUSTED_PROXIES``, the client ``X-Forwarded-For`` names
    (``TrustedProxies.client``); from any other, the peer itself, whatever it sends."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport else None
    proxies = request.app.get(TRUSTED_PROXIES)
    if proxies is None or not proxies.networks:
        return client_key(peername)
    return proxies.client(peername, request.headers.getall(_FORWARDED_FOR, ()))


__all__ = [
    "TRUSTED_PROXIES",
    "client_of",
    "BOOL",
    "HASH",
    "HEIGHT",
    "HEX_CHARS",
    "PUBLIC_KEY",
    "RETRY_AFTER",
    "RETRY_AFTER_S",
    "STR",
    "UINT",
    "Answer",
    "Body",
    "Component",
    "IntParam",
    "Param",
    "Refusal",
    "Route",
    "RouteTable",
    "Schema",
    "array",
    "described",
    "hex_bytes",
    "nullable",
    "obj",
    "ref",
    "retry_later",
    "unavailable",
]
