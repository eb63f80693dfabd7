"""The HTTP API: versioned JSON routes under /v1/ and Prometheus metrics at /metrics.

Every error is JSON ``{"code", "message"}`` with a stable code; one middleware
turns the error tree into responses, so handlers just raise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apps.commerce.http import PRIVATE_STATE_PREFIXES
from apps.commerce.http import add_routes as add_commerce_routes
from core import (
    Block,
    BlockHeader,
    Invalid,
    format_address,
    parse_address,
    tx_hash,
    unpack_raw,
)
from node.bodies import parse_json_txs, split_msgpack_batch
from node.mempool import SubmitResult
from node.openapi import add_openapi_route
from node.reader import NodeChainReader, header_of_block
from node.render import block_json, header_only_json, receipt_json
from node.service import Node
from node.staking_api import add_staking_routes
from storage import MAX_KEY_SIZE
from vm import Account, Receipt, account_key

log = logging.getLogger("node.api")

NODE: web.AppKey[Node] = web.AppKey("node", Node)
MAX_BATCH = 20_000
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/octet-stream")
# Seconds a client told ``mempool_full`` (503) waits before submitting again: about a
# block, by when the mempool has drained a block's worth.
RETRY_AFTER_S = 1
# Whole blocks decoded and rendered at once, in worker threads: a 4 MiB block of 20k
# transactions is ~100 ms of CPU and ~10 MB of JSON, so a burst of block reads
# queues here instead of taking every thread and the memory with it.
BLOCK_READ_SLOTS = 2
BLOCK_READS: web.AppKey[asyncio.Semaphore] = web.AppKey("block_reads", asyncio.Semaphore)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message, exc.headers)
    except Invalid as exc:
        return _error(400, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge as exc:
        # The body is refused as bad input, like any other malformed request.
        return _error(400, "too_large", f"request body too large: {exc.text}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 503: "unavailable"}.get(
            exc.status, "http_error"
        )
        return _error(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error")


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _ready(node: Node) -> tuple[Any, Any]:
    if node.chain is None or node.mempool is None:
        raise ApiError(
            503,
            "unavailable",
            "node is starting or stopping",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    return node.chain, node.mempool


def _decimal(text: str, name: str, code: str) -> int:
    """A height-like decimal: ASCII digits only (``str.isdigit`` also takes "²")."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise ApiError(400, code, f"{name} must be a decimal number, got {text[:40]!r}")
    return int(text)


def _parse_hash(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ApiError(
            400, "bad_hash", f"hash must be 64 hex characters, got {text[:80]!r}"
        ) from None
    if len(raw) != 32:
        raise ApiError(400, "bad_hash", f"hash must be 32 bytes, got {len(raw)}")
    return raw


async def status(request: web.Request) -> web.Response:
    node = _node(request)
    chain, mempool = _ready(node)
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
        }
    )


async def _read_raw_txs(request: web.Request) -> tuple[list[bytes], bool]:
    """The transactions in a POST body and whether the body was a batch.

    The batch's length is known from the msgpack header or the JSON body's
    separators before anything is unpacked (``node.bodies``).
    """
    body = await request.read()
    # A refusal is a BodyError (an Invalid): the middleware answers 400 with its code.
    if request.content_type in MSGPACK_TYPES:
        # A msgpack body is always a batch: an array of encoded SignedTx (bin).
        return split_msgpack_batch(body, MAX_BATCH), True
    return parse_json_txs(body, MAX_BATCH)


async def submit_txs(request: web.Request) -> web.Response:
    node = _node(request)
    _ready(node)
    raws, batch = await _read_raw_txs(request)
    if not raws:
        raise ApiError(400, "malformed", "no transactions in the batch")
    if len(raws) > MAX_BATCH:
        raise ApiError(
            400, "too_large", f"at most {MAX_BATCH} transactions per batch, got {len(raws)}"
        )
    results = await node.submit(raws)
    for r in results:
        if r.code != "accepted":
            node.metrics.txs_rejected.labels(code=r.code).inc()
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if not batch:
        r = results[0]
        if r.code == "mempool_full":
            # Not the transaction's fault: the node is busy, the same bytes may pass later.
            raise ApiError(503, r.code, r.message, retry)
        if r.code != "accepted":
            raise ApiError(400, r.code, r.message)
        return web.json_response({"hash": r.hash.hex()})
    # A batch answers each transaction; Retry-After says when to resubmit the full ones.
    full = any(r.code == "mempool_full" for r in results)
    return web.Response(
        text=_batch_json(results),
        content_type="application/json",
        headers=retry if full else None,
    )


def _batch_json(results: list[SubmitResult]) -> str:
    """``{"accepted": n, "results": [{"hash", "code", "message"}, ...]}`` as JSON text.

    Written by hand: a batch holds up to 20,000 results and building a dict per
    result for ``json.dumps`` cost several times more. Hashes are hex; codes and
    messages go through ``json.dumps``, except the constant of a plain acceptance.
    """
    dumps = json.dumps
    parts = []
    accepted = 0
    for r in results:
        if r.code == "accepted":
            accepted += 1
            if r.message == "accepted":
                parts.append(_ACCEPTED_ITEM % r.hash.hex())  # type: ignore[union-attr]  # accepted: hashed
                continue
        digest = f'"{r.hash.hex()}"' if r.hash else "null"
        parts.append(f'{{"hash":{digest},"code":{dumps(r.code)},"message":{dumps(r.message)}}}')
    return f'{{"accepted":{accepted},"results":[{",".join(parts)}]}}'


_ACCEPTED_ITEM = '{"hash":"%s","code":"accepted","message":"accepted"}'


async def get_tx(request: web.Request) -> web.Response:
    node = _node(request)
    chain, mempool = _ready(node)
    tx_hash = _parse_hash(request.match_info["hash"])
    location = chain.store.tx_location(tx_hash)
    if location is not None:
        height, index = location
        raw_receipt = chain.store.get_receipt(tx_hash)
        receipt = Receipt.decode(raw_receipt) if raw_receipt is not None else None
        return web.json_response(
            {
                "hash": tx_hash.hex(),
                "status": "committed",
                "height": height,
                "index": index,
                "receipt": receipt_json(receipt) if receipt else None,
            }
        )
    if mempool.contains(tx_hash):
        return web.json_response({"hash": tx_hash.hex(), "status": "pending"})
    raise ApiError(
        404, "not_found", f"transaction {tx_hash.hex()} is neither pending nor committed"
    )


async def get_block(request: web.Request) -> web.Response:
    node = _node(request)
    chain, _ = _ready(node)
    which = request.match_info["height"]
    height = chain.height if which == "latest" else _decimal(which, "height", "bad_height")
    mode = request.query.get("txs", "true").lower()
    # Reading, decoding and rendering a block is CPU and memory in proportion to its
    # size: never on the event loop (p2p and every client share it), and a few at once.
    async with request.app[BLOCK_READS]:
        text = await asyncio.get_running_loop().run_in_executor(
            None, _render_block, chain, height, mode
        )
    if text is None:
        raise ApiError(404, "not_found", f"no block at height {height} (head is {chain.height})")
    return web.Response(text=text, content_type="application/json")


def _render_block(chain: Any, height: int, mode: str) -> str | None:
    """The JSON text of block ``height`` (None if absent), in a worker thread."""
    data = chain.store.get_block_bytes(height) if height > 0 else None
    if data is None:
        return None
    commit = chain.store.get_commit(height)
    # ?txs=false leaves out the transaction list (followers that only count), and
    # reads the header alone; the transactions stay bytes.
    if mode in ("0", "false", "no"):
        header, num_txs = header_of_block(data)
        return json.dumps(header_only_json(header, num_txs, commit))
    if mode == "hashes":
        header_raw, txs_raw = unpack_raw(data)
        out = header_only_json(BlockHeader.from_raw(header_raw), len(txs_raw), commit)
        out["tx_hashes"] = [tx_hash(raw).hex() for raw in txs_raw]
        return json.dumps(out)
    return json.dumps(block_json(Block.decode(data), commit))


async def get_account(request: web.Request) -> web.Response:
    node = _node(request)
    chain, _ = _ready(node)
    address = parse_address(request.match_info["address"])
    key = account_key(address)
    want_proof = request.query.get("proof", "").lower() in ("1", "true", "yes")
    out: dict[str, Any] = {"address": format_address(address)}
    if want_proof:
        # Read the height once: a block may commit while the proof is built.
        height = chain.height
        value, proof, root = chain.store.prove(key, height)
        out.update(
            height=height,
            state_root=root.hex(),
            key=key.hex(),
            value=value.hex() if value is not None else None,
            proof=proof.encode().hex(),
        )
    else:
        value = chain.store.state_get(key)
        out["height"] = chain.height
    account = Account.decode(value) if value is not None else Account(0, 0)
    out.update(balance=account.balance, nonce=account.nonce)
    return web.json_response(out)


async def get_state(request: web.Request) -> web.Response:
    """Any state key's value (or absence) with its proof, at a retained height."""
    node = _node(request)
    chain, _ = _ready(node)
    try:
        key = bytes.fromhex(request.match_info["key"])
    except ValueError:
        raise ApiError(400, "bad_key", "state key must be hex") from None
    if not key or len(key) > MAX_KEY_SIZE:
        raise ApiError(400, "bad_key", f"state key must be 1..{MAX_KEY_SIZE} bytes, got {len(key)}")
    # Orders are their parties' (docs/commerce.md, Privacy): refused by prefix, whether
    # the key exists or not, so a refusal says nothing and every answer this route
    # does give (a value, or null with its proof) is the truth.
    if key[0] in PRIVATE_STATE_PREFIXES:
        raise ApiError(
            403,
            "private_state",
            f"keys with prefix {key[0]:#04x} hold order data private to its parties; "
            "read it with the signed order routes (GET /v1/orders/{id})",
        )
    which = request.query.get("height", "")
    height = chain.height
    if which:
        height = _decimal(which, "height", "bad_height")
        if height > chain.height:
            raise ApiError(404, "not_found", f"height {height} is above the head {chain.height}")
    value, proof, root = chain.store.prove(key, height)
    return web.json_response(
        {
            "key": key.hex(),
            "height": height,
            "state_root": root.hex(),
            "value": value.hex() if value is not None else None,
            "proof": proof.encode().hex(),
        }
    )


async def get_genesis(request: web.Request) -> web.Response:
    node = _node(request)
    return web.json_response({"hash": node.genesis.hash.hex(), "genesis": node.genesis.to_json()})


async def metrics(request: web.Request) -> web.Response:
    node = _node(request)
    body = generate_latest(node.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def create_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=node.config.max_request_bytes
    )
    app[NODE] = node
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/txs", submit_txs)
    app.router.add_get("/v1/txs/{hash}", get_tx)
    app.router.add_get("/v1/blocks/{height}", get_block)
    app.router.add_get("/v1/accounts/{address}", get_account)
    app.router.add_get("/v1/state/{key}", get_state)
    app.router.add_get("/v1/genesis", get_genesis)
    app.router.add_get("/metrics", metrics)
    app[BLOCK_READS] = asyncio.Semaphore(BLOCK_READ_SLOTS)
    add_commerce_routes(app, NodeChainReader(node), node.config.feeds)
    add_staking_routes(app, node)
    add_openapi_route(app)
    return app
