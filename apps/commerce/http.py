"""HTTP reads of the commerce app, and the signed-read scheme that guards orders.

``add_routes(app, reader)`` mounts every route (JSON under ``/v1/``, and the
WebSocket feeds of ``apps.commerce.feed``). Apps sit below ``node`` in the layer
order, so the node hands in a ``ChainReader``: the few read hooks used here.

Every response reads one final height: values come from the state tree at that
height (``reader.prove``), so a response never mixes two blocks, and its
``height`` is where a WebSocket client resumes (``?from=<height>``) to get
exactly the events after what it shows.

Orders are private to their parties: a read of an order is signed by the
viewer's Ed25519 key (``sign_read_request``); see docs/commerce.md, Interfaces.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from apps.commerce import feed, keys, views
from apps.commerce.model import Counter, Item, ProvenanceEvent, SessionStatus
from apps.commerce.provenance import valid_gtin
from apps.commerce.store import load
from core.codec import pack_raw
from core.errors import Invalid, InvalidSignature
from core.keys import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    PrivateKey,
    SignDomain,
    address_of,
    parse_address,
    verify,
)
from core.types import BlockHeader, Commit
from storage import StateProof, verify_proof
from vm import Event, KeyPrefix, Receipt, StateView

# --- privacy ---

# State key prefixes whose records belong to an order's parties (docs/commerce.md,
# Privacy): the order (buyer, amounts, sealed address), the party's index of its
# orders, the buyer's count in a deal, the dispute (its reason) and the disclosures.
# The generic state route refuses them; the signed order routes show them to whom
# ``views.order_view`` allows.
PRIVATE_STATE_PREFIXES = frozenset(
    {
        KeyPrefix.COMMERCE_DEAL_BUYER,
        KeyPrefix.COMMERCE_ORDER,
        KeyPrefix.COMMERCE_PARTY,
        KeyPrefix.COMMERCE_DISPUTE,
        KeyPrefix.COMMERCE_DISCLOSURE,
    }
)

# --- signed reads ---

# Headers of a signed read: the viewer's Ed25519 public key, the time of the
# request (unix ms) and the signature, all in hex / decimal.
KEY_HEADER = "X-LiveLedger-Key"
TIME_HEADER = "X-LiveLedger-Time"
SIGNATURE_HEADER = "X-LiveLedger-Signature"
# How far a signed read's time may be from the server's clock, either way: a
# captured request can be replayed only this long, and clients may be a little off.
READ_WINDOW_MS = 60_000


def read_request_body(method: str, path_qs: str, time_ms: int) -> bytes:
    """What a signed read signs, under ``SignDomain.HTTP_READ`` and the chain id.

    The domain keeps a signed read from ever passing as a transaction, vote or
    proposal (and the reverse); the chain id from being replayed on another chain;
    the path with its query string from being replayed as another read.
    """
    return pack_raw([method.upper(), path_qs, time_ms])


def sign_read_request(
    key: PrivateKey, chain_id: str, method: str, path_qs: str, time_ms: int | None = None
) -> dict[str, str]:
    """The headers that sign ``method path_qs`` (path with its query string) as ``key``."""
    if time_ms is None:
        time_ms = time.time_ns() // 1_000_000
    signature = key.sign(
        SignDomain.HTTP_READ, chain_id, read_request_body(method, path_qs, time_ms)
    )
    return {
        KEY_HEADER: key.public_key.hex(),
        TIME_HEADER: str(time_ms),
        SIGNATURE_HEADER: signature.hex(),
    }


class HttpError(Exception):
    """A refusal with its HTTP status and stable code (rendered as ``{"code", "message"}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def verify_read_request(
    chain_id: str,
    method: str,
    path_qs: str,
    headers: Any,
    now_ms: int | None = None,
) -> bytes:
    """The address of the viewer who signed this read; ``HttpError`` 401 if none did."""
    key_hex, time_text, sig_hex = (
        headers.get(KEY_HEADER),
        headers.get(TIME_HEADER),
        headers.get(SIGNATURE_HEADER),
    )
    if key_hex is None or time_text is None or sig_hex is None:
        raise HttpError(
            401,
            "unauthenticated",
            f"this read is for the order's parties: sign it with the headers {KEY_HEADER}, "
            f"{TIME_HEADER} and {SIGNATURE_HEADER}",
        )
    try:
        public_key, signature = bytes.fromhex(key_hex), bytes.fromhex(sig_hex)
    except ValueError:
        raise HttpError(401, "bad_signature", "key and signature must be hex") from None
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise HttpError(
            401,
            "bad_signature",
            f"expected a {PUBLIC_KEY_SIZE}-byte key and a {SIGNATURE_SIZE}-byte signature, "
            f"got {len(public_key)} and {len(signature)}",
        )
    if not (time_text.isascii() and time_text.isdigit()) or len(time_text) > 16:
        raise HttpError(401, "bad_signature", f"{TIME_HEADER} must be unix milliseconds")
    signed_ms = int(time_text)
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    # A stale (or far future) request is refused: it bounds how long a captured one works.
    if abs(now_ms - signed_ms) > READ_WINDOW_MS:
        raise HttpError(
            401,
            "stale_request",
            f"request signed at {signed_ms} ms, server time is {now_ms} ms; "
            f"at most {READ_WINDOW_MS} ms apart",
        )
    body = read_request_body(method, path_qs, signed_ms)
    try:
        verify(public_key, SignDomain.HTTP_READ, chain_id, body, signature)
    except InvalidSignature:
        raise HttpError(401, "bad_signature", "signature does not verify") from None
    return address_of(public_key)


# --- what the node provides ---


class ChainReader(Protocol):
    """Read access to the node's finalized chain (``node.reader.NodeChainReader``)."""

    @property
    def height(self) -> int:
        """Latest final height."""
        ...

    def prove(self, key: bytes, height: int) -> tuple[bytes | None, StateProof, bytes]:
        """(value or None, proof, state root) of ``key`` after block ``height``."""
        ...

    def header(self, height: int) -> BlockHeader | None: ...

    def commit(self, height: int) -> Commit | None: ...

    def receipts(self, height: int) -> list[Receipt]:
        """One receipt per transaction of block ``height``, in block order."""
        ...

    def block_events(self, height: int) -> list[Event]:
        """Events of block ``height``'s begin-block hooks."""
        ...

    def add_block_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(height)`` on the event loop after each block is final."""
        ...

    def remove_block_listener(self, listener: Callable[[int], None]) -> None: ...


READER: web.AppKey[ChainReader] = web.AppKey("commerce_reader", ChainReader)


class StateAt:
    """The state after block ``height``, read through the state tree (a ``StateView``).

    Reads through the tree rather than the flat latest copy so that every value a
    response shows is from one block (a block may commit while a view is read); it
    keeps each key's proof, which the item route hands out.
    """

    __slots__ = ("_reader", "height", "root", "_values", "proofs")

    def __init__(self, reader: ChainReader, height: int) -> None:
        self._reader = reader
        self.height = height
        self.root: bytes | None = None
        self._values: dict[bytes, bytes | None] = {}
        # key -> (value, proof), in the order first read.
        self.proofs: dict[bytes, tuple[bytes | None, StateProof]] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._values:
            return self._values[key]
        value, proof, root = self._reader.prove(key, self.height)
        self.root = root
        self._values[key] = value
        self.proofs[key] = (value, proof)
        return value


# --- plumbing ---

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def json_errors(handler: _Handler) -> _Handler:
    """Render refusals as ``{"code", "message"}`` with their status in the route itself.

    The node's middleware maps every ``Invalid`` to 400; a denied view must be a
    403, so these routes answer their errors themselves.
    """

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return _error(exc.status, exc.code, exc.message)
        except views.ViewDenied as exc:
            return _error(403, exc.code, exc.message)
        except Invalid as exc:
            return _error(400, exc.code, exc.message)

    return wrapper


def _reader(request: web.Request) -> ChainReader:
    return request.app[READER]


def _final_height(reader: ChainReader) -> int:
    try:
        return reader.height
    except RuntimeError:
        # The node is starting or stopping: its store is closed.
        raise HttpError(503, "unavailable", "node is starting or stopping") from None


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a view off the event loop: it reads LevelDB and walks the tree per key."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A decimal query or path parameter in ``low..high``."""
    text = request.match_info.get(name, request.query.get(name))
    if text is None:
        return default
    # ASCII only: str.isdigit also takes digits int() refuses ("²").
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or not low <= int(text) <= high:
        raise HttpError(
            400, "bad_param", f"{name} must be an integer in {low}..{high}, got {text[:40]!r}"
        )
    return int(text)


def _id(request: web.Request, name: str) -> int:
    return _int(request, name, 0, 1, 2**64 - 1)


def _limit(request: web.Request) -> int:
    return _int(request, "limit", 50, 1, views.MAX_PAGE)


def _not_found(what: str, height: int) -> HttpError:
    return HttpError(404, "not_found", f"no {what} at height {height}")


def _doc(state: StateAt, **fields: Any) -> web.Response:
    return web.json_response({"height": state.height, **fields})


def _chain_id(reader: ChainReader) -> str:
    # The node's chain id is in every header; with no block yet there is no order
    # to read either.
    header = reader.header(1)
    if header is None:
        raise HttpError(503, "unavailable", "no block is final yet")
    return header.chain_id


def _viewer(request: web.Request) -> bytes:
    return verify_read_request(
        _chain_id(_reader(request)), request.method, request.raw_path, request.headers
    )


# --- listings and merchants ---


@json_errors
async def get_listings(request: web.Request) -> web.Response:
    reader = _reader(request)
    start, limit = _int(request, "start", 1, 1, 2**64 - 1), _limit(request)
    state = StateAt(reader, _final_height(reader))
    page = await _in_thread(views.listings, state, start, limit)
    # Ids are dense (1..count), so the next page starts right after this one's range.
    more = start + limit < await _in_thread(_next_listing_id, state)
    return _doc(state, listings=views.jsonable(page), next_start=start + limit if more else None)


def _next_listing_id(state: StateView) -> int:
    counter = load(state, keys.counter_key(keys.LISTING_IDS), Counter)
    return 1 if counter is None else counter.next


@json_errors
async def get_listing(request: web.Request) -> web.Response:
    reader = _reader(request)
    listing_id = _id(request, "id")
    state = StateAt(reader, _final_height(reader))
    view = await _in_thread(views.listing_view, state, listing_id)
    if view is None:
        raise _not_found(f"listing {listing_id}", state.height)
    return _doc(state, listing=views.jsonable(view))


def _address(request: web.Request) -> bytes:
    return parse_address(request.match_info["address"])


@json_errors
async def get_merchant(request: web.Request) -> web.Response:
    reader = _reader(request)
    address = _address(request)
    state = StateAt(reader, _final_height(reader))
    view = await _in_thread(views.merchant_view, state, address)
    if view is None:
        raise _not_found(f"merchant {request.match_info['address']}", state.height)
    return _doc(state, merchant=views.jsonable(view))


@json_errors
async def get_roles(request: web.Request) -> web.Response:
    reader = _reader(request)
    address = _address(request)
    state = StateAt(reader, _final_height(reader))
    record = await _in_thread(views.roles_view, state, address)
    return _doc(
        state,
        address=request.match_info["address"],
        roles=[] if record.roles == 0 else views.role_names(record.roles).split(","),
        mask=record.roles,
        enc_key=record.enc_key.hex(),
    )


@json_errors
async def get_config(request: web.Request) -> web.Response:
    reader = _reader(request)
    state = StateAt(reader, _final_height(reader))
    config = await _in_thread(views.commerce_config, state)
    if config is None:
        raise HttpError(404, "commerce_disabled", "this chain's genesis has no commerce section")
    escrow = await _in_thread(views.escrow_view, state)
    orders = await _in_thread(views.order_count, state)
    return _doc(state, config=views.jsonable(config), escrow=views.jsonable(escrow), orders=orders)


async def _reviews(request: web.Request, **which: Any) -> web.Response:
    reader = _reader(request)
    before, limit = _int(request, "before", 0, 0, 2**64 - 1), _limit(request)
    state = StateAt(reader, _final_height(reader))
    page = await _in_thread(
        functools.partial(views.reviews_for, state, before=before, limit=limit, **which)
    )
    # A full page may have more behind it: page on from its last order id.
    next_before = page[-1].order_id if len(page) == limit else None
    return _doc(state, reviews=views.jsonable(page), next_before=next_before)


@json_errors
async def get_merchant_reviews(request: web.Request) -> web.Response:
    return await _reviews(request, merchant=_address(request))


@json_errors
async def get_listing_reviews(request: web.Request) -> web.Response:
    return await _reviews(request, listing=_id(request, "id"))


# --- live sessions and deals ---


async def _timed_view(request: web.Request, what: str, view_fn: Any) -> web.Response:
    """A session or deal as of the latest final height and that block's time."""
    reader = _reader(request)
    object_id = _id(request, "id")
    state = StateAt(reader, _final_height(reader))
    header = reader.header(state.height)
    # A deal is live while start <= block time < end: judged at this height's time.
    now_ms = None if header is None else header.time_ms
    view = await _in_thread(view_fn, state, object_id, now_ms)
    if view is None:
        raise _not_found(f"{what} {object_id}", state.height)
    return _doc(state, time_ms=now_ms, **{what: views.jsonable(view)})


@json_errors
async def get_session(request: web.Request) -> web.Response:
    return await _timed_view(request, "session", views.session_view)


@json_errors
async def get_deal(request: web.Request) -> web.Response:
    return await _timed_view(request, "deal", views.deal_view)


# --- orders (signed reads) ---


@json_errors
async def get_order(request: web.Request) -> web.Response:
    reader = _reader(request)
    order_id = _id(request, "id")
    viewer = _viewer(request)
    state = StateAt(reader, _final_height(reader))
    view = await _in_thread(views.order_view, state, order_id, viewer)
    if view is None:
        raise _not_found(f"order {order_id}", state.height)
    return _doc(state, order=views.jsonable(view))


def _orders_page(
    state: StateView, viewer: bytes, role: str, before: int, limit: int
) -> tuple[list[views.OrderView], int]:
    ids, total = views.orders_of(state, viewer, role, before, limit)
    out = []
    for order_id in ids:
        view = views.order_view(state, order_id, viewer)
        if view is not None:
            out.append(view)
    return out, total


@json_errors
async def get_orders(request: web.Request) -> web.Response:
    """The signer's own orders, as buyer (default) or as merchant, newest first."""
    reader = _reader(request)
    role = request.query.get("role", "buyer")
    if role not in ("buyer", "merchant"):
        raise HttpError(400, "bad_param", f"role must be buyer or merchant, got {role[:40]!r}")
    before, limit = _int(request, "before", 0, 0, 2**64 - 1), _limit(request)
    viewer = _viewer(request)
    state = StateAt(reader, _final_height(reader))
    page, total = await _in_thread(_orders_page, state, viewer, role, before, limit)
    next_before = page[-1].id if len(page) == limit else None
    return _doc(state, role=role, total=total, orders=views.jsonable(page), next_before=next_before)


# --- provenance ---


def _item_bundle(state: StateAt, gtin: str, serial: str) -> dict[str, Any] | None:
    view = views.item_view(state, gtin, serial)
    if view is None:
        return None
    # Exactly the keys behind the view (the item, then each event), each with its
    # value and proof at this height: the client rebuilds the history from them.
    entries = []
    for key in views.item_state_keys(state, gtin, serial):
        state.get(key)
        value, proof = state.proofs[key]
        entries.append(
            {
                "key": key.hex(),
                "value": None if value is None else value.hex(),
                "proof": proof.encode().hex(),
            }
        )
    return {"item": views.jsonable(view), "entries": entries}


@json_errors
async def get_item(request: web.Request) -> web.Response:
    """An item's full history with a state proof: what a code on the package resolves to.

    The path is GS1 Digital Link's (``/01/<gtin>/21/<serial>``), so a printed
    link's path maps onto it as is.
    """
    reader = _reader(request)
    gtin, serial = request.match_info["gtin"], request.match_info["serial"]
    if not valid_gtin(gtin):
        raise HttpError(
            400, "invalid_gtin", f"GTIN must be 14 digits with a valid check digit, got {gtin!r}"
        )
    # The registering transaction checks the character set; an unknown serial is a 404.
    if not 1 <= len(serial) <= 20:
        raise HttpError(
            400, "invalid_serial", f"serial must be 1..20 characters, got {len(serial)}"
        )
    state = StateAt(reader, _final_height(reader))
    bundle = await _in_thread(_item_bundle, state, gtin, serial)
    if bundle is None:
        raise _not_found(f"item (01){gtin}(21){serial}", state.height)
    header = reader.header(state.height)
    commit = reader.commit(state.height)
    assert state.root is not None
    proof = {
        "height": state.height,
        "state_root": state.root.hex(),
        # The finalized header and its certificate: with the genesis document a
        # client checks the whole bundle offline.
        "header": None if header is None else header.encode().hex(),
        "commit": None if commit is None else commit.encode().hex(),
        "entries": bundle["entries"],
    }
    return _doc(state, item=bundle["item"], proof=proof)


def verify_item_proof(
    gtin: str, serial: str, proof_doc: dict[str, Any], state_root: bytes
) -> tuple[Item, list[ProvenanceEvent]]:
    """Check an item's proof bundle against a trusted state root; return what it proves.

    ``state_root`` must come from a header the caller trusts (finalized, checked
    against the genesis producers). The entries must be exactly the item's keys
    (its record, then events ``0..event_count-1``), so a node cannot answer with
    another item's history or leave events out. Raises ``Invalid`` (``bad_proof``
    or the proof's own code).
    """
    ref = keys.item_ref(gtin, serial)
    entries = proof_doc.get("entries")
    if not isinstance(entries, list) or not entries:
        raise Invalid("the bundle holds no proof entries", "bad_proof")
    if bytes.fromhex(proof_doc["state_root"]) != state_root:
        raise Invalid("the bundle is proven against another state root", "bad_proof")
    proven: list[bytes] = []
    for seq, entry in enumerate(entries):
        key = bytes.fromhex(entry["key"])
        expected = keys.item_key(ref) if seq == 0 else keys.item_event_key(ref, seq - 1)
        # Only this item's keys, in order: no substitution, no gaps.
        if key != expected:
            raise Invalid(
                f"entry {seq} proves key {key.hex()}, expected {expected.hex()}", "bad_proof"
            )
        if entry["value"] is None:
            raise Invalid(f"entry {seq} proves an absent key", "bad_proof")
        value = bytes.fromhex(entry["value"])
        verify_proof(state_root, key, value, StateProof.decode(bytes.fromhex(entry["proof"])))
        proven.append(value)
    item = Item.decode(proven[0])
    events = [ProvenanceEvent.decode(v) for v in proven[1:]]
    # Every event the record counts is there.
    if len(events) != item.event_count:
        raise Invalid(
            f"item has {item.event_count} events, the bundle proves {len(events)}", "bad_proof"
        )
    return item, events


# --- WebSocket feeds ---


def _feed_start(request: web.Request, hub: feed.FeedHub) -> feed.Position | None:
    try:
        start = feed.parse_from(request.query.get("from"))
    except ValueError:
        raise HttpError(
            400, "bad_param", "from must be <height> or <height>:<index> (decimal)"
        ) from None
    if start is not None and hub.delivered() - start[0] > hub.max_replay_blocks:
        raise HttpError(
            400,
            "replay_too_long",
            f"from height {start[0]} is over {hub.max_replay_blocks} blocks back; "
            f"read a snapshot and resume from its height",
        )
    return start


@json_errors
async def session_events(request: web.Request) -> web.StreamResponse:
    """The live session's feed (WebSocket); protocol in apps.commerce.feed."""
    hub = request.app[feed.HUB]
    session_id = _id(request, "id")
    start = _feed_start(request, hub)
    latest = StateAt(hub.reader, _final_height(hub.reader))
    if await _in_thread(views.get_session, latest, session_id) is None:
        raise _not_found(f"session {session_id}", latest.height)
    reader = hub.reader

    def ended_at(height: int) -> bool:
        session = views.get_session(StateAt(reader, height), session_id)
        return session is not None and session.status == SessionStatus.CLOSED

    return await feed.serve_feed(request, hub, session_id, start, ended_at=ended_at)


@json_errors
async def blocks_feed(request: web.Request) -> web.StreamResponse:
    """One message per finalized block (WebSocket)."""
    hub = request.app[feed.HUB]
    return await feed.serve_feed(request, hub, None, _feed_start(request, hub))


def add_routes(
    app: web.Application, reader: ChainReader, feed_limits: feed.FeedLimits | None = None
) -> None:
    """Mount the commerce reads and feeds on ``app`` (the node's API)."""
    app[READER] = reader
    r = app.router
    r.add_get("/v1/commerce", get_config)
    r.add_get("/v1/listings", get_listings)
    r.add_get("/v1/listings/{id}", get_listing)
    r.add_get("/v1/listings/{id}/reviews", get_listing_reviews)
    r.add_get("/v1/merchants/{address}", get_merchant)
    r.add_get("/v1/merchants/{address}/reviews", get_merchant_reviews)
    r.add_get("/v1/roles/{address}", get_roles)
    r.add_get("/v1/sessions/{id}", get_session)
    r.add_get("/v1/deals/{id}", get_deal)
    r.add_get("/v1/orders", get_orders)
    r.add_get("/v1/orders/{id}", get_order)
    r.add_get("/v1/items/01/{gtin}/21/{serial}", get_item)
    feed.install_hub(app, reader, feed_limits)
    r.add_get("/v1/sessions/{id}/events", session_events)
    r.add_get("/v1/blocks/ws", blocks_feed)


__all__ = [
    "KEY_HEADER",
    "PRIVATE_STATE_PREFIXES",
    "READER",
    "READ_WINDOW_MS",
    "SIGNATURE_HEADER",
    "TIME_HEADER",
    "ChainReader",
    "HttpError",
    "StateAt",
    "add_routes",
    "verify_item_proof",
    "read_request_body",
    "sign_read_request",
    "verify_read_request",
]
