"""HTTP reads and WebSocket feeds of the commerce app, each route with its documentation.

``add_routes(app, reader)`` mounts every route (JSON under ``/v1/``, and the
WebSocket feeds of ``apps.commerce.feed``). Apps sit below ``node`` in the layer
order, so the node hands in a ``ChainReader``: the few read hooks used here.
Each route is declared in ``ROUTES`` with its documentation (``apps.routes``):
parameters and their bounds, answer and error codes; the node's OpenAPI document
is generated from them. A refusal is raised (``HttpError`` or any ``Invalid``)
and rendered by the node's one error middleware. An item's provenance is served by
``apps.commerce.http_items``, whose routes ``ROUTES`` takes in their place; what the
route modules share (``ChainReader``, ``StateAt``, the plumbing of an answer) is in
``apps.commerce.http_common``.

Every response reads one final height: values come from the state tree at that
height (``reader.prove``), so a response never mixes two blocks, and its
``height`` is where a WebSocket client resumes (``?from=<height>``) to get
exactly the events after what it shows.

Orders are private to their parties: a read of an order is signed by the
viewer's Ed25519 key (``apps.commerce.signed_reads``, whose names this module
re-exports); see docs/commerce.md, Interfaces.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from apps.commerce import feed, keys, views
from apps.commerce.http_common import (
    MAX_ID,
    READER,
    UNAVAILABLE,
    VIEW_READ_QUEUE,
    VIEW_READ_SLOTS,
    VIEW_READS,
    ChainReader,
    StateAt,
    at_height,
    doc_at,
    final_height,
    in_thread,
    not_found,
    reader_of,
)
from apps.commerce.http_items import ITEM_PROOF, MAX_ITEM_PAGE
from apps.commerce.http_items import ROUTES as ITEM_ROUTES
from apps.commerce.item_proofs import (
    ItemPage,
    verify_item_doc,
    verify_item_page,
    verify_item_page_proof,
    verify_item_proof,
)
from apps.commerce.keys import CommercePrefix
from apps.commerce.model import (
    Counter,
    Disclosure,
    ProvenanceEvent,
    Review,
    Role,
    SessionStatus,
)
from apps.commerce.params import CommerceGenesis
from apps.commerce.signed_reads import (
    KEY_HEADER,
    NODE_HEADER,
    READ_WINDOW_MS,
    SIGNATURE_HEADER,
    SIGNED,
    SIGNED_READ_REFUSED,
    TIME_HEADER,
    read_request_body,
    sign_read_request,
    verify_read_request,
)
from apps.commerce.store import load
from apps.read_slots import ReadSlots
from apps.routes import (
    STR,
    UINT,
    Answer,
    Component,
    IntParam,
    Param,
    Refusal,
    RouteTable,
    array,
    described,
    nullable,
    obj,
    ref,
)
from core.errors import HttpError
from core.keys import parse_address
from vm import StateView

# --- privacy ---

# State key prefixes whose records belong to an order's parties (docs/commerce.md,
# Privacy): the order (buyer, amounts, sealed address), the party's index of its
# orders, the buyer's count in a deal, the dispute (its reason) and the disclosures;
# and the auction record, which holds the leader's maximum bid (a rival who read it
# would bid exactly up to it) and its sealed address (``/v1/auctions/{id}`` shows the
# rest). The generic state route refuses them; the signed order routes show them to whom
# ``views.order_view`` allows.
PRIVATE_STATE_PREFIXES = frozenset(
    {
        CommercePrefix.DEAL_BUYER,
        CommercePrefix.ORDER,
        CommercePrefix.PARTY,
        CommercePrefix.DISPUTE,
        CommercePrefix.DISCLOSURE,
        CommercePrefix.AUCTION,
    }
)

# --- plumbing ---


def _private_doc(state: StateAt, **fields: Any) -> web.Response:
    """A signed read's answer: one viewer's, so no cache may keep it.

    The signature rides in headers of our own, which no HTTP cache keys on (as it
    would not store an answer to ``Authorization``): without this, a caching proxy in
    front of the node would serve one party's order to the next client of that URL.
    """
    resp = doc_at(state, **fields)
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _viewer(request: web.Request) -> bytes:
    reader = reader_of(request)
    return verify_read_request(
        reader.chain_id, request.method, request.raw_path, request.headers, node=reader.node_key
    )


def _address(request: web.Request) -> bytes:
    return parse_address(request.match_info["address"])


# --- what the routes document ---

LIMIT = IntParam("limit", "query", 1, views.MAX_PAGE, "page size", default=50)
BEFORE = IntParam(
    "before",
    "query",
    0,
    MAX_ID,
    "page on from the previous page's `next_before` (0: newest)",
    default=0,
)
ADDRESS = Param("address", "path", ref("Address"), "account address")

BAD_PARAM = Refusal(400, "A parameter out of range.", "bad_param")
BAD_ADDRESS = Refusal(400, "A bad address.", "bad_address")
NOT_FOUND = Refusal(404, "No such object at the height read.", "not_found")

ESCROW = Component(
    "Escrow", obj({"held": UINT, "open_orders": UINT}, description="tokens held for open orders")
)
# The read models and feed messages these routes serve, documented first and in this
# order (the order the document has always had: its bytes stay the same).
ROUTES = RouteTable(
    "commerce",
    components=(
        views.ListingView,
        views.MerchantView,
        views.SessionView,
        views.DealView,
        views.OrderView,
        views.ItemView,
        Review,
        ProvenanceEvent,
        Disclosure,
        CommerceGenesis,
        ESCROW,
        ITEM_PROOF,
        feed.FEED_EVENT,
        feed.FEED_BLOCK,
        feed.FEED_READY,
    ),
)


# --- configuration, listings and merchants ---


@ROUTES.get(
    "/v1/commerce",
    "getCommerceConfig",
    "Commerce configuration and escrow",
    "The genesis commerce section (registrars, treasury, parameters), the escrow "
    "held for open orders (native, and per issued currency) and the number of orders.",
    ok=Answer(
        "Configuration.",
        at_height(
            config=CommerceGenesis,
            escrow=ESCROW,
            escrows=described(
                array(obj({"currency": STR, "held": UINT, "open_orders": UINT})),
                "in each issued currency, in symbol order",
            ),
            orders=described(UINT, "orders placed so far"),
        ),
    ),
    errors=(
        Refusal(404, "No commerce section in genesis.", "commerce_disabled"),
        UNAVAILABLE,
    ),
)
async def get_config(request: web.Request) -> web.Response:
    reader = reader_of(request)
    state = StateAt(reader, final_height(reader))
    read = await in_thread(request, _config_reads, state)
    if read is None:
        raise HttpError(404, "commerce_disabled", "this chain's genesis has no commerce section")
    config, escrow, escrows, orders = read
    return doc_at(
        state,
        config=views.jsonable(config),
        escrow=views.jsonable(escrow),
        escrows=[{"currency": c, **views.jsonable(e)} for c, e in escrows],
        orders=orders,
    )


def _config_reads(state: StateAt) -> tuple[Any, Any, Any, int] | None:
    """The configuration, escrows and order count (None without commerce): one read."""
    config = views.commerce_config(state)
    if config is None:
        return None
    escrow = views.escrow_view(state)
    return config, escrow, views.currency_escrows(state), views.order_count(state)


LISTING_START = IntParam("start", "query", 1, MAX_ID, "first listing id", default=1)


@ROUTES.get(
    "/v1/listings",
    "listListings",
    "Listings by id",
    "A page of listings from id `start` (ids are dense, 1..count).",
    params=(LISTING_START, LIMIT),
    ok=Answer(
        "A page.",
        at_height(
            listings=array(views.ListingView),
            next_start=described(nullable(UINT), "`start` of the next page"),
        ),
    ),
    errors=(BAD_PARAM, UNAVAILABLE),
)
async def get_listings(request: web.Request) -> web.Response:
    reader = reader_of(request)
    start, limit = LISTING_START.read(request), LIMIT.read(request)
    state = StateAt(reader, final_height(reader))
    page, next_id = await in_thread(request, _listings_page, state, start, limit)
    # Ids are dense (1..count), so the next page starts right after this one's range.
    more = start + limit < next_id
    return doc_at(state, listings=views.jsonable(page), next_start=start + limit if more else None)


def _listings_page(state: StateView, start: int, limit: int) -> tuple[list[Any], int]:
    """A page of listings and the next listing id: one read."""
    counter = load(state, keys.counter_key(keys.LISTING_IDS), Counter)
    return views.listings(state, start, limit), 1 if counter is None else counter.next


LISTING_ID = IntParam("id", "path", 1, MAX_ID, "listing id")


@ROUTES.get(
    "/v1/listings/{id}",
    "getListing",
    "A listing",
    "Terms of the current version, stock (`total`, `available`, `reserved`, `sold`) and rating.",
    params=(LISTING_ID,),
    ok=Answer("The listing.", at_height(listing=views.ListingView)),
    errors=(BAD_PARAM, NOT_FOUND, UNAVAILABLE),
)
async def get_listing(request: web.Request) -> web.Response:
    reader = reader_of(request)
    listing_id = LISTING_ID.read(request)
    state = StateAt(reader, final_height(reader))
    view = await in_thread(request, views.listing_view, state, listing_id)
    if view is None:
        raise not_found(f"listing {listing_id}", state.height)
    return doc_at(state, listing=views.jsonable(view))


REVIEWS = Answer(
    "Reviews, newest first.",
    at_height(
        reviews=array(Review),
        next_before=described(nullable(UINT), "`before` of the next page; null at the end"),
    ),
)


async def _reviews(request: web.Request, **which: Any) -> web.Response:
    reader = reader_of(request)
    before, limit = BEFORE.read(request), LIMIT.read(request)
    state = StateAt(reader, final_height(reader))
    page = await in_thread(
        request, functools.partial(views.reviews_for, state, before=before, limit=limit, **which)
    )
    # A full page may have more behind it: page on from its last order id.
    next_before = page[-1].order_id if len(page) == limit else None
    return doc_at(state, reviews=views.jsonable(page), next_before=next_before)


@ROUTES.get(
    "/v1/listings/{id}/reviews",
    "listListingReviews",
    "A listing's reviews",
    "Newest first; page on with `before=next_before`.",
    params=(LISTING_ID, BEFORE, LIMIT),
    ok=REVIEWS,
    errors=(BAD_PARAM, UNAVAILABLE),
)
async def get_listing_reviews(request: web.Request) -> web.Response:
    return await _reviews(request, listing=LISTING_ID.read(request))


@ROUTES.get(
    "/v1/merchants/{address}",
    "getMerchant",
    "A merchant",
    "Profile, status, encryption key (buyers seal addresses to it) and rating.",
    params=(ADDRESS,),
    ok=Answer("The merchant.", at_height(merchant=views.MerchantView)),
    errors=(BAD_ADDRESS, NOT_FOUND, UNAVAILABLE),
)
async def get_merchant(request: web.Request) -> web.Response:
    reader = reader_of(request)
    address = _address(request)
    state = StateAt(reader, final_height(reader))
    view = await in_thread(request, views.merchant_view, state, address)
    if view is None:
        raise not_found(f"merchant {request.match_info['address']}", state.height)
    return doc_at(state, merchant=views.jsonable(view))


@ROUTES.get(
    "/v1/merchants/{address}/reviews",
    "listMerchantReviews",
    "A merchant's reviews",
    "Newest first; page on with `before=next_before`.",
    params=(ADDRESS, BEFORE, LIMIT),
    ok=REVIEWS,
    errors=(
        Refusal(400, "A bad address or parameter.", "bad_address", "bad_param"),
        UNAVAILABLE,
    ),
)
async def get_merchant_reviews(request: web.Request) -> web.Response:
    return await _reviews(request, merchant=_address(request))


@ROUTES.get(
    "/v1/roles/{address}",
    "getRoles",
    "An account's commerce roles",
    "Role names, the role bit mask and the X25519 key of an auditor.",
    params=(ADDRESS,),
    ok=Answer(
        "The roles (none: an empty list and mask 0).",
        at_height(
            address=described(STR, "as given"),
            roles=array({"type": "string", "enum": [r.name.lower() for r in Role if r.name]}),
            mask=UINT,
            enc_key=ref("Hex"),
        ),
    ),
    errors=(BAD_ADDRESS, UNAVAILABLE),
)
async def get_roles(request: web.Request) -> web.Response:
    reader = reader_of(request)
    address = _address(request)
    state = StateAt(reader, final_height(reader))
    record = await in_thread(request, views.roles_view, state, address)
    return doc_at(
        state,
        address=request.match_info["address"],
        roles=[] if record.roles == 0 else views.role_names(record.roles).split(","),
        mask=record.roles,
        enc_key=record.enc_key.hex(),
    )


# --- live sessions and deals ---


async def _timed_view(
    request: web.Request, what: str, object_id: IntParam, view_fn: Any
) -> web.Response:
    """A session or deal as of the latest final height and that block's time."""
    reader = reader_of(request)
    oid = object_id.read(request)
    state = StateAt(reader, final_height(reader))
    now_ms, view = await in_thread(request, _timed, reader, view_fn, state, oid)
    if view is None:
        raise not_found(f"{what} {oid}", state.height)
    return doc_at(state, time_ms=now_ms, **{what: views.jsonable(view)})


def _timed(reader: ChainReader, view_fn: Any, state: StateAt, oid: int) -> tuple[int | None, Any]:
    """(block time of ``state``'s height, the view judged at it): one read."""
    header = reader.header(state.height)
    # A deal is live while start <= block time < end: judged at this height's time.
    now_ms = None if header is None else header.time_ms
    return now_ms, view_fn(state, oid, now_ms)


SESSION_ID = IntParam("id", "path", 1, MAX_ID, "session id")


@ROUTES.get(
    "/v1/sessions/{id}",
    "getSession",
    "A live session",
    "Pinned active listings and open deals with the stock they have left and "
    "whether they are live, judged at the block time `time_ms` of `height`.",
    params=(SESSION_ID,),
    ok=Answer("The session.", at_height(time_ms=nullable(UINT), session=views.SessionView)),
    errors=(BAD_PARAM, NOT_FOUND, UNAVAILABLE),
)
async def get_session(request: web.Request) -> web.Response:
    return await _timed_view(request, "session", SESSION_ID, views.session_view)


DEAL_ID = IntParam("id", "path", 1, MAX_ID, "deal id")


@ROUTES.get(
    "/v1/deals/{id}",
    "getDeal",
    "A flash deal",
    "Price, allocation, sold, left, per-buyer cap and window, live at `time_ms`.",
    params=(DEAL_ID,),
    ok=Answer("The deal.", at_height(time_ms=nullable(UINT), deal=views.DealView)),
    errors=(BAD_PARAM, NOT_FOUND, UNAVAILABLE),
)
async def get_deal(request: web.Request) -> web.Response:
    return await _timed_view(request, "deal", DEAL_ID, views.deal_view)


AUCTION_ID = IntParam("id", "path", 1, MAX_ID, "auction id")


@ROUTES.get(
    "/v1/auctions/{id}",
    "getAuction",
    "A live auction",
    "Mode, start price, reserve, price, the lowest bid accepted next, the leader's "
    "anonymous tag, bids and end time (anti-snipe moves it), live at `time_ms`; never "
    "the leader's maximum.",
    params=(AUCTION_ID,),
    ok=Answer("The auction.", at_height(time_ms=nullable(UINT), auction=views.AuctionView)),
    errors=(BAD_PARAM, NOT_FOUND, UNAVAILABLE),
)
async def get_auction(request: web.Request) -> web.Response:
    return await _timed_view(request, "auction", AUCTION_ID, views.auction_view)


# --- orders (signed reads) ---

ORDER_ROLES = ("buyer", "merchant")


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


@ROUTES.get(
    "/v1/orders",
    "listOrders",
    "The signer's own orders (signed read)",
    "The signer's orders as buyer (default) or merchant, newest first, as the signer may see them.",
    params=(
        Param(
            "role",
            "query",
            {"type": "string", "enum": list(ORDER_ROLES), "default": "buyer"},
            "the signer's side of the orders",
        ),
        BEFORE,
        LIMIT,
        *SIGNED,
    ),
    ok=Answer(
        "A page.",
        at_height(
            role={"type": "string", "enum": list(ORDER_ROLES)},
            total=described(UINT, "the signer's orders in that role"),
            orders=array(views.OrderView),
            next_before=described(nullable(UINT), "`before` of the next page"),
        ),
    ),
    errors=(BAD_PARAM, SIGNED_READ_REFUSED, UNAVAILABLE),
)
async def get_orders(request: web.Request) -> web.Response:
    """The signer's own orders, as buyer (default) or as merchant, newest first."""
    reader = reader_of(request)
    role = request.query.get("role", "buyer")
    if role not in ORDER_ROLES:
        raise HttpError(400, "bad_param", f"role must be buyer or merchant, got {role[:40]!r}")
    before, limit = BEFORE.read(request), LIMIT.read(request)
    viewer = _viewer(request)
    state = StateAt(reader, final_height(reader))
    page, total = await in_thread(request, _orders_page, state, viewer, role, before, limit)
    next_before = page[-1].id if len(page) == limit else None
    return _private_doc(
        state, role=role, total=total, orders=views.jsonable(page), next_before=next_before
    )


ORDER_ID = IntParam("id", "path", 1, MAX_ID, "order id")


@ROUTES.get(
    "/v1/orders/{id}",
    "getOrder",
    "An order (signed read)",
    "Buyer and merchant see everything, including the sealed address (ciphertext "
    "only); host, registrars and (once disputed) arbiters see the order without "
    "it; an auditor sees the disclosures sealed to it; anyone else gets 403.",
    params=(ORDER_ID, *SIGNED),
    ok=Answer("The order as the signer may see it.", at_height(order=views.OrderView)),
    errors=(
        BAD_PARAM,
        SIGNED_READ_REFUSED,
        # views.ViewDenied: an Invalid whose status is 403.
        Refusal(403, "Not the signer's order to see.", "forbidden"),
        NOT_FOUND,
        UNAVAILABLE,
    ),
)
async def get_order(request: web.Request) -> web.Response:
    reader = reader_of(request)
    order_id = ORDER_ID.read(request)
    viewer = _viewer(request)
    state = StateAt(reader, final_height(reader))
    view = await in_thread(request, views.order_view, state, order_id, viewer)
    if view is None:
        raise not_found(f"order {order_id}", state.height)
    return _private_doc(state, order=views.jsonable(view))


# --- provenance (apps.commerce.http_items) ---

# Between the orders and the feeds: mounted and documented where they always were.
ROUTES.include(ITEM_ROUTES)


# --- WebSocket feeds ---

FROM = Param(
    "from",
    "query",
    {"type": "string", "pattern": "^[0-9]{1,19}(:[0-9]{1,19})?$"},
    "resume after `<height>:<index>` (a position), or after the whole block `<height>` "
    "(a snapshot's height); without it the feed starts with the next final block",
)
UPGRADE = Param(
    "Upgrade",
    "header",
    {"const": "websocket"},
    "WebSocket handshake (with `Connection: Upgrade` and the "
    "`Sec-WebSocket-*` headers a client library sends)",
)
SWITCHING = Answer("Switching Protocols: the feed's messages follow.", status=101)
FEED_REFUSED = Refusal(
    400,
    "A bad `from` or id, a resume from too far back, or not a WebSocket handshake.",
    "bad_param",
    "replay_too_long",
    "http_error",
)


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


@ROUTES.get(
    "/v1/sessions/{id}/events",
    "sessionEvents",
    "A live session's feed (WebSocket)",
    "WebSocket (`GET` with `Upgrade: websocket`, answered by 101). Sends the "
    "session's feed events (pins, deals opened and closed, stock left after each "
    "order, orders without buyer, tips, session closed), each once its block is "
    "final, in block order, as JSON text messages:\n\n"
    '`{"type": "event", "height": 812, "index": 3, "time_ms": 1767000000000, '
    '"session": 1, "kind": "commerce.stock_left", "attrs": {"session": "1", '
    '"listing": "1", "deal": "1", "left": "41"}}`\n\n'
    "`(height, index)` is the event's position: `index` counts every event of the "
    "block (begin-block events first, then each receipt's), so a feed's indexes "
    f"have gaps; positions strictly increase. {feed.FEED_RULES}",
    tag="feeds",
    params=(SESSION_ID, FROM, UPGRADE),
    ok=SWITCHING,
    errors=(FEED_REFUSED, Refusal(404, "No such session.", "not_found"), UNAVAILABLE),
    extra={
        "x-websocket": {
            "messages": {"oneOf": [feed.FEED_EVENT, feed.FEED_READY]},
            "close-codes": feed.CLOSE_CODES,
        }
    },
)
async def session_events(request: web.Request) -> web.StreamResponse:
    """The live session's feed (WebSocket); protocol in apps.commerce.feed."""
    hub = request.app[feed.HUB]
    session_id = SESSION_ID.read(request)
    start = _feed_start(request, hub)
    latest = StateAt(hub.reader, final_height(hub.reader))
    if await in_thread(request, views.get_session, latest, session_id) is None:
        raise not_found(f"session {session_id}", latest.height)
    reader = hub.reader

    # A state read: serve_feed runs it in the replays' threads, off the event loop.
    def ended_at(height: int) -> bool:
        session = views.get_session(StateAt(reader, height), session_id)
        return session is not None and session.status == SessionStatus.CLOSED

    return await feed.serve_feed(request, hub, session_id, start, ended_at=ended_at)


@ROUTES.get(
    "/v1/blocks/ws",
    "blocksFeed",
    "Finalized blocks (WebSocket)",
    "WebSocket (`GET` with `Upgrade: websocket`, answered by 101). One JSON text "
    'message per finalized block: `{"type": "block", "height", "hash", "time_ms", '
    f'"num_txs"}}`. `?from=<height>` resumes after that block. {feed.FEED_RULES}',
    tag="feeds",
    params=(FROM, UPGRADE),
    ok=SWITCHING,
    errors=(FEED_REFUSED,),
    extra={
        "x-websocket": {
            "messages": {"oneOf": [feed.FEED_BLOCK, feed.FEED_READY]},
            "close-codes": {k: v for k, v in feed.CLOSE_CODES.items() if k != "1000"},
        }
    },
)
async def blocks_feed(request: web.Request) -> web.StreamResponse:
    """One message per finalized block (WebSocket)."""
    hub = request.app[feed.HUB]
    return await feed.serve_feed(request, hub, None, _feed_start(request, hub))


def add_routes(
    app: web.Application, reader: ChainReader, feed_limits: feed.FeedLimits | None = None
) -> None:
    """Mount the commerce reads and feeds on ``app`` (the node's API), with the threads
    and turns of the reads (``VIEW_READS``)."""
    app[READER] = reader
    reads = app[VIEW_READS] = ReadSlots("commerce", VIEW_READ_SLOTS, VIEW_READ_QUEUE)

    async def close_reads(_app: web.Application) -> None:
        reads.close()

    app.on_cleanup.append(close_reads)
    feed.install_hub(app, reader, feed_limits)
    ROUTES.mount(app)


__all__ = [
    "KEY_HEADER",
    "NODE_HEADER",
    "PRIVATE_STATE_PREFIXES",
    "READER",
    "READ_WINDOW_MS",
    "ROUTES",
    "SIGNATURE_HEADER",
    "TIME_HEADER",
    "ChainReader",
    "StateAt",
    "ItemPage",
    "MAX_ITEM_PAGE",
    "add_routes",
    "verify_item_doc",
    "verify_item_page",
    "verify_item_page_proof",
    "verify_item_proof",
    "read_request_body",
    "sign_read_request",
    "verify_read_request",
]
