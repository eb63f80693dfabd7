"""The HTTP API: versioned JSON routes under /v1/ and Prometheus metrics at /metrics.

Each route is declared with its documentation (``apps.routes``) beside its
handler; ``node.openapi`` generates the OpenAPI document from the declarations.
Every error is JSON ``{"code", "message"}`` with a stable code: handlers raise
``HttpError`` (or any ``Invalid``, which carries its HTTP status) and one
middleware renders it; anything unexpected is a logged 500 ``internal``.

This module builds the app (``create_app``) and serves the node's status, the
submission of transactions, the genesis document and the metrics; the reads of the
chain (a transaction's status, blocks, accounts, currencies, state proofs) are in
``node.chain_api``, whose routes ``ROUTES`` takes in their place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apps.commerce.feed import HUB
from apps.commerce.http import ROUTES as COMMERCE_ROUTES
from apps.commerce.http import add_routes as add_commerce_routes
from apps.commerce.http_common import VIEW_READS
from apps.commerce.params import CommerceGenesis
from apps.routes import (
    BOOL,
    HASH,
    PUBLIC_KEY,
    RETRY_AFTER,
    RETRY_AFTER_S,
    STR,
    TRUSTED_PROXIES,
    UINT,
    Answer,
    Body,
    Component,
    Param,
    Refusal,
    RouteTable,
    array,
    client_of,
    described,
    nullable,
    obj,
    ref,
    retry_later,
)
from core import HttpError, Invalid
from core.netaddr import TrustedProxies
from core.sockets import reset
from genesis import Genesis
from node.api_common import node_of, ready
from node.bodies import (
    ANSWER_BUDGET,
    BODY_BUDGET,
    CHECK_BUDGET,
    SMALL_ANSWER_BYTES,
    BodyBudget,
    CheckBudget,
    parse_json_txs,
    read_body,
    split_msgpack_batch,
)
from node.chain_api import (
    BLOCK_READS,
    PROOF_TREES,
    RENDERED_BLOCKS,
    ProofTrees,
    RenderedBlocks,
    block_reads,
)
from node.chain_api import ROUTES as CHAIN_ROUTES
from node.config import NodeConfig
from node.logs import ThrottledLog
from node.mempool import SubmitResult
from node.openapi import ROUTES as OPENAPI_ROUTES
from node.openapi import TX_REFUSAL_CODES, add_openapi_route
from node.reader import NodeChainReader
from node.render import BLOCK, RECEIPT
from node.service import NODE, Node
from node.simulate import ROUTES as SIMULATE_ROUTES
from node.simulate import SIMULATIONS
from node.simulate import install as install_simulate
from node.staking_api import ROUTES as STAKING_ROUTES
from node.web import add_web_routes
from vm import (
    ChainParams,
)

log = logging.getLogger("node.api")
# The line of each answer's connection reset past its deadline (``answers_middleware``):
# clients cause one as often as they like, so they are throttled.
ANSWER_RESETS: web.AppKey[ThrottledLog] = web.AppKey("answer_resets", ThrottledLog)

MAX_BATCH = 20_000
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/octet-stream")
# The node's routes; the chain objects every answer shares are documented first.
ROUTES = RouteTable("node", components=(RECEIPT, BLOCK))
# Every route of ``create_app``, in the order the OpenAPI document lists them.
ROUTE_TABLES = (ROUTES, SIMULATE_ROUTES, OPENAPI_ROUTES, COMMERCE_ROUTES, STAKING_ROUTES)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None) -> web.Response:
    resp = web.json_response({"code": code, "message": message}, status=status, headers=headers)
    if headers is not None and headers.get("Connection") == "close":
        # No keep-alive after it: the connection ends once aiohttp has lingered (10 s).
        resp.force_close()
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place refusals become answers: ``{"code", "message"}`` with their status."""
    try:
        return await handler(request)
    except Invalid as exc:
        # HttpError, BodyError, a bad address, a denied view...: each carries its status.
        headers = exc.headers if isinstance(exc, HttpError) else None
        return _error(exc.status, exc.code, exc.message, headers)
    except web.HTTPRequestEntityTooLarge as exc:
        # The body is refused as bad input, like any other malformed request.
        return _error(400, "too_large", f"request body too large: {exc.text}", None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 503: "unavailable"}.get(
            exc.status, "http_error"
        )
        return _error(exc.status, code, exc.reason, None)
    except ConnectionError:
        transport = request.transport
        if transport is None or transport.is_closing():
            # A handler that answers itself (a feed's upgrade) found its client gone:
            # the client's leaving, not a bug. This answer (499, "client closed
            # request") is never sent: aiohttp finds the connection gone as it ends it.
            return web.Response(status=499)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error", None)
    except Exception:
        # A bug: logged with its traceback here, never shown to the client.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error", None)


@web.middleware
async def answers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sends every answer over ``SMALL_ANSWER_BYTES`` itself, charged to the app's
    ``ANSWER_BUDGET`` until the socket has taken it: 503 ``busy`` past the budget or the
    client address's quarter of it.

    aiohttp hands an answer's body to the transport whole, and the transport keeps what
    the socket does not take for as long as the client leaves its window shut (or reads
    a byte at a time, which the gate's stall watch counts as progress): without a bound,
    one address's 256 connections asking for batch answers (2.6 MB for 60 KB asked)
    held 670 MB, and a big block's answer is ~20 MB. Feeds (prepared WebSocket answers)
    have their own bounds (``apps.commerce.feed``).

    Nor may a client hold its share for as long as it likes by reading slowly (which
    the stall watch counts as progress): an answer not taken within the config's
    ``HttpLimits.answer_deadline_ms`` of its size has its connection reset, which frees
    its bytes and its budget (the rest of the answer would never arrive in time anyway)."""
    resp = await handler(request)
    if not isinstance(resp, web.Response) or resp.prepared:
        return resp
    body = resp.body
    if not isinstance(body, bytes | bytearray) or len(body) <= SMALL_ANSWER_BYTES:
        return resp
    size = len(body)
    budget = request.app[ANSWER_BUDGET]
    client = client_of(request)
    if not budget.take(client, size):
        return _error(
            503,
            "busy",
            "the node holds as many unsent answers as it allows; retry later",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    node = node_of(request)
    deadline_ms = node.config.http.answer_deadline_ms(size)
    try:
        async with asyncio.timeout(deadline_ms / 1000):
            await resp.prepare(request)
            await resp.write_eof()
    except ConnectionError:
        # The client went away: aiohttp's own send finds the connection closed.
        pass
    except TimeoutError:
        transport = request.transport
        if transport is not None:
            request.app[ANSWER_RESETS].info(
                "reset an HTTP connection from %s: a %d-byte answer not taken in %d ms",
                client,
                size,
                deadline_ms,
            )
            # Reset, not closed: a close would leave the unsent bytes to the kernel
            # (core.sockets). aiohttp's own send then finds the connection closed.
            reset(transport)
            node.metrics.http_stalled.inc()
    finally:
        budget.give(client, size)
    return resp


STATUS = Component(
    "Status",
    obj(
        {
            "chain_id": STR,
            "genesis_hash": HASH,
            "moniker": STR,
            "validator": described(PUBLIC_KEY, "this node's key (a signed read is signed for it)"),
            "height": described(UINT, "latest final height"),
            "finalized_height": described(UINT, "equal to `height`: every block is final"),
            "latest_block_hash": nullable(HASH),
            "latest_block_time_ms": nullable(UINT),
            "round": described(UINT, "consensus round at the next height"),
            "producers": described(array(PUBLIC_KEY), "the active producer set"),
            "peers": described(array(PUBLIC_KEY), "connected member nodes"),
            "mempool_size": UINT,
            "observer": described(BOOL, "this node follows and serves, never signs"),
            "retained": described(
                obj({"blocks_from": UINT, "states_from": UINT}),
                "lowest heights whose blocks and state this node keeps (pruning; 0: all)",
            ),
        }
    ),
)


@ROUTES.get(
    "/v1/status",
    "getStatus",
    "Node and chain status",
    "Chain id, heights, the latest block, the producers, peers and mempool size.",
    ok=Answer("Status.", STATUS),
)
async def status(request: web.Request) -> web.Response:
    node = node_of(request)
    chain, mempool = ready(node)
    head = chain.head
    return web.json_response(
        {
            "chain_id": node.genesis.chain_id,
            "genesis_hash": chain.genesis_hash.hex(),
            "moniker": node.config.moniker,
            "validator": node.key.public_key.hex(),
            "height": chain.height,
            "finalized_height": chain.height,
            "latest_block_hash": head.hash.hex() if head else None,
            "latest_block_time_ms": head.time_ms if head else None,
            "round": node.consensus.round if node.consensus else 0,
            "producers": [k.hex() for k in chain.validators.keys],
            "peers": node.peers(),
            "mempool_size": len(mempool),
            "observer": node.config.observer,
            "retained": {
                "blocks_from": chain.store.block_base,
                "states_from": chain.store.state_base,
            },
        }
    )


async def _read_raw_txs(request: web.Request) -> tuple[list[bytes], bool]:
    """The transactions in a POST body and whether the body was a batch.

    The batch's length is known from the msgpack header or the JSON body's
    separators before anything is unpacked (``node.bodies``).
    """
    config = node_of(request).config
    body = await read_body(request, config.max_request_bytes, config.body_timeout_ms)
    # A refusal is a BodyError (an Invalid): the middleware answers 400 with its code.
    if request.content_type in MSGPACK_TYPES:
        # A msgpack body is always a batch: an array of encoded SignedTx (bin).
        return split_msgpack_batch(body, MAX_BATCH), True
    return parse_json_txs(body, MAX_BATCH)


_RESUBMIT_AFTER = described(
    RETRY_AFTER,
    "seconds to wait before submitting again (on 503, and on a batch's 200 when some "
    "items were refused as `mempool_full`)",
)
SUBMIT_RESULT = Component("SubmitResult", obj({"hash": HASH}))
SUBMIT_BATCH_RESULT = Component(
    "SubmitBatchResult",
    obj(
        {
            "accepted": described(UINT, "how many were accepted"),
            "results": described(
                array(
                    obj(
                        {
                            "hash": described(nullable(HASH), "null if it did not decode"),
                            "code": described(STR, "`accepted` or an admission code (`Error`)"),
                            "message": STR,
                        }
                    )
                ),
                "one per transaction, in order",
            ),
        }
    ),
)
SUBMIT_REFUSED_RESULT = Component(
    "SubmitRefusedResult",
    obj(
        {
            "accepted": described(UINT, "how many were accepted"),
            "refused": described(
                array(
                    obj(
                        {
                            "index": described(UINT, "its position in the batch"),
                            "hash": described(nullable(HASH), "null if it did not decode"),
                            "code": described(STR, "an admission code (`Error`)"),
                            "message": STR,
                        }
                    )
                ),
                "the transactions not accepted, in batch order",
            ),
        }
    ),
)
_TX_HEX = described(ref("Hex"), "an encoded SignedTx, hex")
_MSGPACK_BATCH = {
    "type": "string",
    "contentMediaType": "application/msgpack",
    "description": "a msgpack array of bin items, each an encoded SignedTx; always a batch",
}


@ROUTES.post(
    "/v1/txs",
    "submitTxs",
    "Submit transactions",
    'JSON `{"tx": "<hex>"}` submits one transaction and answers `{"hash"}`, or 400 '
    'with its admission code. JSON `{"txs": ["<hex>", ...]}` or a msgpack array '
    f"of encoded transactions (`Content-Type: {MSGPACK_TYPES[0]}`; also "
    f"{', '.join(f'`{t}`' for t in MSGPACK_TYPES[1:])}) is a batch of at most "
    f"{MAX_BATCH:,}: it answers 200 with one result per transaction. An accepted "
    "transaction is in the mempool and gossiped to the producers; read its fate "
    "with `GET /v1/txs/{hash}`. A batch's length is checked from the msgpack "
    "array header (or the JSON body's separators) before anything is unpacked. "
    "A full mempool is not the transaction's fault: a single transaction is "
    "answered 503 `mempool_full` with `Retry-After`; a batch keeps its 200 with "
    "`mempool_full` on the items refused and `Retry-After` on the answer. With "
    "`?results=refused` a batch is answered with the refused items only, each with "
    "its index: a client sending thousands a second knows its own hashes, and a "
    "result per accepted transaction is most of the answer's bytes.",
    params=(
        Param(
            "results",
            "query",
            {"type": "string", "enum": ["all", "refused"], "default": "all"},
            "a batch's answer: `all` (one result per transaction) or `refused` "
            "(the refused ones, with their index)",
        ),
    ),
    ok=Answer(
        "One transaction accepted, or a batch's results.",
        {"oneOf": [SUBMIT_RESULT, SUBMIT_BATCH_RESULT, SUBMIT_REFUSED_RESULT]},
        headers={"Retry-After": _RESUBMIT_AFTER},
    ),
    errors=(
        Refusal(
            400,
            "Bad input (a body over the node's `max_request_bytes`, "
            f"{NodeConfig().max_request_bytes // 2**20} MiB by default, is "
            f"`too_large`), an empty batch, more than {MAX_BATCH:,} "
            "transactions, a single transaction refused, or an unknown `results`.",
            *(c for c in TX_REFUSAL_CODES if c != "mempool_full"),
            "bad_param",
        ),
        Refusal(408, "The body did not arrive in time (a slow upload).", "request_timeout"),
        Refusal(
            503,
            "The mempool is full (a single transaction): submit the same bytes again after "
            "`Retry-After` seconds; the node reads as many bodies as it allows at once, or "
            "the client's address sent more transactions refused by their checks (bad "
            "signatures, not transactions, spent, unfunded, a fee below the minimum, a "
            "nonce too far ahead) than `http.refused_txs_per_s` allows (`busy`); or the "
            "node is starting or stopping.",
            "mempool_full",
            "busy",
            "unavailable",
            headers={"Retry-After": _RESUBMIT_AFTER},
        ),
    ),
    body=Body(
        {
            "application/json": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"tx": _TX_HEX},
                        "required": ["tx"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "txs": {**array(_TX_HEX), "minItems": 1, "maxItems": MAX_BATCH}
                        },
                        "required": ["txs"],
                        "additionalProperties": False,
                    },
                ]
            },
            **{t: _MSGPACK_BATCH for t in MSGPACK_TYPES},
        }
    ),
)
async def submit_txs(request: web.Request) -> web.Response:
    node = node_of(request)
    ready(node)
    answer = request.query.get("results", "all")
    if answer not in ("all", "refused"):
        raise HttpError(400, "bad_param", f"results must be all or refused, got {answer[:40]!r}")
    checks = request.app[CHECK_BUDGET]
    client = client_of(request)
    _check_budget(checks, client, 0)
    raws, batch = await _read_raw_txs(request)
    if not raws:
        raise HttpError(400, "malformed", "no transactions in the batch")
    if len(raws) > MAX_BATCH:
        raise HttpError(
            400, "too_large", f"at most {MAX_BATCH} transactions per batch, got {len(raws)}"
        )
    # Charged whole before any check, with no await since the budget was asked: batches
    # sent at once cannot all pass while it still holds.
    _check_budget(checks, client, len(raws))
    paid = len(raws)
    try:
        results = await node.submit(raws)
        paid = sum(1 for r in results if not r.unpaid)
    finally:
        checks.give(client, paid)
    for r in results:
        if r.code != "accepted":
            node.metrics.txs_rejected.labels(code=r.code).inc()
    if not batch:
        r = results[0]
        if r.code == "mempool_full":
            # Not the transaction's fault: the node is busy, the same bytes may pass later.
            raise retry_later(r.code, r.message)
        if r.code != "accepted":
            raise HttpError(400, r.code, r.message)
        # Only refusals of bytes that are no transaction lack a hash.
        assert r.hash is not None, "an accepted transaction has a hash"
        return web.json_response({"hash": r.hash.hex()})
    # A batch answers each transaction; Retry-After says when to resubmit the full ones.
    full = any(r.code == "mempool_full" for r in results)
    return web.Response(
        text=_refused_json(results) if answer == "refused" else _batch_json(results),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S)} if full else None,
    )


def _check_budget(checks: CheckBudget, client: str, count: int) -> None:
    """Charge ``count`` transactions to ``client``'s ``CheckBudget``; 503 ``busy``,
    with the seconds until it may send again, while it is in debt."""
    wait = checks.take(client, count)
    if wait:
        raise HttpError(
            503,
            "busy",
            "too many of this address's transactions were refused by their checks (bad "
            "signatures, not transactions, spent, unfunded, a fee below the minimum, a "
            "nonce too far ahead); retry later",
            {"Retry-After": str(math.ceil(wait))},
        )


def _batch_json(results: list[SubmitResult]) -> str:
    """``{"accepted": n, "results": [{"hash", "code", "message"}, ...]}`` as JSON text.

    Written by hand: a batch holds up to 20,000 results and building a dict per
    result for ``json.dumps`` cost several times more. Hashes are hex; codes and
    messages go through ``json.dumps``, except the constant of a plain acceptance.
    """
    parts = []
    accepted = 0
    for r in results:
        if r.code == "accepted":
            accepted += 1
            if r.message == "accepted":
                parts.append(_ACCEPTED_ITEM % r.hash.hex())  # type: ignore[union-attr]  # accepted: hashed
                continue
        parts.append(f"{{{_result_fields(r)}}}")
    return f'{{"accepted":{accepted},"results":[{",".join(parts)}]}}'


_ACCEPTED_ITEM = '{"hash":"%s","code":"accepted","message":"accepted"}'


def _refused_json(results: list[SubmitResult]) -> str:
    """``{"accepted": n, "refused": [{"index", "hash", "code", "message"}, ...]}``."""
    parts = [
        f'{{"index":{i},{_result_fields(r)}}}'
        for i, r in enumerate(results)
        if r.code != "accepted"
    ]
    return f'{{"accepted":{len(results) - len(parts)},"refused":[{",".join(parts)}]}}'


def _result_fields(r: SubmitResult) -> str:
    """A result's ``"hash", "code", "message"`` members as JSON text (no braces)."""
    digest = f'"{r.hash.hex()}"' if r.hash else "null"
    return f'"hash":{digest},"code":{json.dumps(r.code)},"message":{json.dumps(r.message)}'


# --- reads of the chain (node.chain_api) ---

# After the submission: mounted and documented where they always were.
ROUTES.include(CHAIN_ROUTES)


GENESIS_DOCUMENT = Component(
    "GenesisDocument",
    obj(
        {
            "chain_id": STR,
            "genesis_time_ms": UINT,
            "params": ChainParams,
            "accounts": array(obj({"address": ref("Address"), "balance": UINT})),
            "validators": array(
                obj(
                    {
                        "name": STR,
                        "public_key": PUBLIC_KEY,
                        "power": UINT,
                        "address": described(STR, "host:port its node listens on for peers"),
                    },
                    optional=("address",),
                )
            ),
            "staking": obj({"self_bond": UINT}),
            "commerce": CommerceGenesis,
        },
        optional=("staking", "commerce"),
        description="`genesis.json` as the node holds it",
    ),
)


@ROUTES.get(
    "/v1/genesis",
    "getGenesis",
    "The genesis document and its hash",
    "What a client needs to verify the chain offline. `encoded` is the document's "
    "canonical encoding, whose BLAKE2b-256 under domain 0x04 is `hash`: a client that "
    "cannot rebuild the encoding from the JSON form (a browser) hashes and reads it.",
    ok=Answer(
        "The genesis document.",
        obj(
            {
                "hash": HASH,
                "genesis": GENESIS_DOCUMENT,
                "encoded": described(ref("Hex"), "the canonical encoding (its hash is `hash`)"),
            }
        ),
    ),
    ready=False,
)
async def get_genesis(request: web.Request) -> web.Response:
    body = await request.app[RENDERED_GENESIS].body()
    return web.Response(body=body, content_type="application/json", charset="utf-8")


class RenderedGenesis:
    """``GET /v1/genesis``'s answer, rendered once, in a thread.

    The genesis never changes while the node runs, but rendering it is not cheap: one
    may list ``MAX_GENESIS_ACCOUNTS`` (100,000) accounts, 15 MB of JSON and ~3 s of
    work. Rendered per request on the event loop, which also runs the node's p2p (votes
    and proposals wait behind it), a client asking again and again froze the node.
    """

    __slots__ = ("_genesis", "_rendering")

    def __init__(self, genesis: Genesis) -> None:
        self._genesis = genesis
        self._rendering: asyncio.Task[bytes] | None = None

    async def body(self) -> bytes:
        if self._rendering is None:
            self._rendering = asyncio.get_running_loop().create_task(
                asyncio.to_thread(_genesis_body, self._genesis), name="render-genesis"
            )
        # Shielded: a client that hangs up does not cancel what the others wait for.
        return await asyncio.shield(self._rendering)


def _genesis_body(genesis: Genesis) -> bytes:
    doc = {
        "hash": genesis.hash.hex(),
        "genesis": genesis.to_json(),
        "encoded": genesis.encode().hex(),
    }
    # The bytes ``web.json_response`` made of it.
    return json.dumps(doc).encode()


RENDERED_GENESIS: web.AppKey[RenderedGenesis] = web.AppKey("rendered_genesis", RenderedGenesis)


@ROUTES.get(
    "/metrics",
    "getMetrics",
    "Prometheus metrics",
    "The node's metrics in the Prometheus text format.",
    ok=Answer("Metrics.", STR, media="text/plain"),
    ready=False,
)
async def metrics(request: web.Request) -> web.Response:
    node = node_of(request)
    body = generate_latest(node.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def create_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[answers_middleware, errors_middleware],
        client_max_size=node.config.max_request_bytes,
    )
    app[NODE] = node
    # Whose X-Forwarded-For names the client of the per-address bounds (apps.routes).
    app[TRUSTED_PROXIES] = TrustedProxies(node.config.http.trusted_proxies)
    # Each bound that refuses a client for now is counted by what it is
    # (``liveledger_http_refused_total``; the connection gate's in ``node.run``).
    refusals = node.metrics.count_refusals
    app[BODY_BUDGET] = BodyBudget(node.config.http.max_bodies_bytes, refusals("bodies"))
    app[ANSWER_BUDGET] = BodyBudget(node.config.http.max_answers_bytes, refusals("answers"))
    app[ANSWER_RESETS] = ThrottledLog(log)
    app[CHECK_BUDGET] = CheckBudget(
        node.config.http.refused_txs_per_s,
        node.config.http.refused_txs_burst,
        refusals("unpaid_checks"),
    )
    ROUTES.mount(app)
    install_simulate(app)
    app[SIMULATIONS].on_refused = refusals("simulations")
    reads = app[BLOCK_READS] = block_reads()
    reads.on_refused = refusals("block_reads")

    async def close_reads(_app: web.Application) -> None:
        reads.close()

    app.on_cleanup.append(close_reads)
    app[RENDERED_BLOCKS] = RenderedBlocks()
    app[PROOF_TREES] = ProofTrees()
    app[RENDERED_GENESIS] = RenderedGenesis(node.genesis)
    add_commerce_routes(app, NodeChainReader(node), node.config.feeds)
    app[VIEW_READS].on_refused = refusals("commerce_reads")
    app[HUB].on_refused = refusals("feeds")
    STAKING_ROUTES.mount(app)
    add_openapi_route(app)
    # The web app's files (node/web.py): served, not an API.
    add_web_routes(app)
    return app
