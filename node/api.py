"""The HTTP API: versioned JSON routes under /v1/ and Prometheus metrics at /metrics.

Each route is declared with its documentation (``apps.routes``) beside its
handler; ``node.openapi`` generates the OpenAPI document from the declarations.
Every error is JSON ``{"code", "message"}`` with a stable code: handlers raise
``HttpError`` (or any ``Invalid``, which carries its HTTP status) and one
middleware renders it; anything unexpected is a logged 500 ``internal``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apps.commerce.http import PRIVATE_STATE_PREFIXES
from apps.commerce.http import ROUTES as COMMERCE_ROUTES
from apps.commerce.http import add_routes as add_commerce_routes
from apps.commerce.params import CommerceGenesis
from apps.routes import (
    BOOL,
    HASH,
    HEIGHT,
    HEX_CHARS,
    PUBLIC_KEY,
    RETRY_AFTER,
    RETRY_AFTER_S,
    STR,
    UINT,
    Answer,
    Body,
    Component,
    Param,
    Refusal,
    RouteTable,
    array,
    described,
    hex_bytes,
    nullable,
    obj,
    ref,
    retry_later,
    unavailable,
)
from core import (
    Block,
    BlockHeader,
    HttpError,
    Invalid,
    format_address,
    parse_address,
    tx_hash,
    unpack_raw,
)
from node.bodies import BODY_BUDGET, BodyBudget, parse_json_txs, read_body, split_msgpack_batch
from node.config import NodeConfig
from node.mempool import SubmitResult
from node.openapi import ROUTES as OPENAPI_ROUTES
from node.openapi import TX_REFUSAL_CODES, add_openapi_route
from node.reader import NodeChainReader, header_of_block
from node.render import BLOCK, RECEIPT, block_json, header_only_json, receipt_json
from node.service import NODE, Node
from node.simulate import ROUTES as SIMULATE_ROUTES
from node.simulate import install as install_simulate
from node.staking_api import ROUTES as STAKING_ROUTES
from node.web import add_web_routes
from storage import MAX_KEY_SIZE
from vm import (
    Account,
    Balance,
    ChainParams,
    Currency,
    CurrencyList,
    Receipt,
    account_key,
    balance_key,
    currency_key,
)
from vm.currency import CURRENCY_LIST_KEY

log = logging.getLogger("node.api")

MAX_BATCH = 20_000
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/octet-stream")
# Whole blocks decoded and rendered at once, in worker threads: an 8 MiB block of 40k
# transactions is ~200 ms of CPU and ~20 MB of JSON, so a burst of block reads
# queues here instead of taking every thread and the memory with it.
BLOCK_READ_SLOTS = 2
BLOCK_READS: web.AppKey[asyncio.Semaphore] = web.AppKey("block_reads", asyncio.Semaphore)
# Rendered blocks kept, in bytes of JSON text: a big block takes ~200 ms of CPU to
# render, and explorers and apps all ask for the same recent ones.
RENDERED_BLOCK_BYTES = 16 * 1024 * 1024


class RenderedBlocks:
    """The JSON text of final blocks by (height, mode), least recently used out first.

    Final blocks never change, so a kept text is never stale; a height pruned since is
    checked by the caller before it is served.
    """

    def __init__(self, max_bytes: int = RENDERED_BLOCK_BYTES) -> None:
        self.max_bytes = max_bytes
        self._texts: OrderedDict[tuple[int, str], str] = OrderedDict()
        self._bytes = 0

    def get(self, height: int, mode: str) -> str | None:
        text = self._texts.get((height, mode))
        if text is not None:
            self._texts.move_to_end((height, mode))
        return text

    def put(self, height: int, mode: str, text: str) -> None:
        if len(text) > self.max_bytes or (height, mode) in self._texts:
            return
        self._texts[(height, mode)] = text
        self._bytes += len(text)
        while self._bytes > self.max_bytes:
            self._bytes -= len(self._texts.popitem(last=False)[1])


RENDERED_BLOCKS: web.AppKey[RenderedBlocks] = web.AppKey("rendered_blocks", RenderedBlocks)

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
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
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
    except Exception:
        # A bug: logged with its traceback here, never shown to the client.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error", None)


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _ready(node: Node) -> tuple[Any, Any]:
    if node.chain is None or node.mempool is None:
        raise unavailable()
    return node.chain, node.mempool


def _decimal(text: str, name: str, code: str) -> int:
    """A height-like decimal: ASCII digits only (``str.isdigit`` also takes "²")."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise HttpError(400, code, f"{name} must be a decimal number, got {text[:40]!r}")
    return int(text)


def _parse_hash(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise HttpError(
            400, "bad_hash", f"hash must be 64 hex characters, got {text[:80]!r}"
        ) from None
    if len(raw) != 32:
        raise HttpError(400, "bad_hash", f"hash must be 32 bytes, got {len(raw)}")
    return raw


STATUS = Component(
    "Status",
    obj(
        {
            "chain_id": STR,
            "genesis_hash": HASH,
            "moniker": STR,
            "validator": described(PUBLIC_KEY, "this node's key"),
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
    config = _node(request).config
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
            "`Retry-After` seconds; the node reads as many bodies as it allows at once "
            "(`busy`); or the node is starting or stopping.",
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
    node = _node(request)
    _ready(node)
    answer = request.query.get("results", "all")
    if answer not in ("all", "refused"):
        raise HttpError(400, "bad_param", f"results must be all or refused, got {answer[:40]!r}")
    raws, batch = await _read_raw_txs(request)
    if not raws:
        raise HttpError(400, "malformed", "no transactions in the batch")
    if len(raws) > MAX_BATCH:
        raise HttpError(
            400, "too_large", f"at most {MAX_BATCH} transactions per batch, got {len(raws)}"
        )
    results = await node.submit(raws)
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
        return web.json_response({"hash": r.hash.hex()})
    # A batch answers each transaction; Retry-After says when to resubmit the full ones.
    full = any(r.code == "mempool_full" for r in results)
    return web.Response(
        text=_refused_json(results) if answer == "refused" else _batch_json(results),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S)} if full else None,
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


TX_STATUS = Component(
    "TxStatus",
    {
        "oneOf": [
            obj(
                {
                    "hash": HASH,
                    "status": {"const": "committed"},
                    "height": UINT,
                    "index": described(UINT, "position in the block"),
                    "receipt": nullable(RECEIPT),
                }
            ),
            obj({"hash": HASH, "status": {"const": "pending"}}),
        ]
    },
)


@ROUTES.get(
    "/v1/txs/{hash}",
    "getTx",
    "A transaction's status",
    "`committed` with its height, index and receipt, or `pending` while it is in "
    "this node's mempool.",
    params=(Param("hash", "path", hex_bytes(32), "transaction hash, hex"),),
    ok=Answer("Committed or pending.", TX_STATUS),
    errors=(
        Refusal(400, "Not a hash.", "bad_hash"),
        Refusal(404, "Neither pending nor committed.", "not_found"),
    ),
)
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
    raise HttpError(
        404, "not_found", f"transaction {tx_hash.hex()} is neither pending nor committed"
    )


@ROUTES.get(
    "/v1/blocks/{height}",
    "getBlock",
    "A finalized block",
    "Header, commit certificate and transactions of the block at `height` (or the "
    "latest). `?txs=false` leaves the transactions out without decoding them; "
    "`?txs=hashes` lists their hashes only.",
    params=(
        Param(
            "height",
            "path",
            {"type": "string", "pattern": "^([0-9]{1,19}|latest)$"},
            "a height, or `latest`",
        ),
        Param(
            "txs",
            "query",
            {"type": "string", "enum": ["true", "false", "hashes"], "default": "true"},
            "`true`: transaction summaries; `false` (also `0`, `no`): none; `hashes`: their hashes",
        ),
    ),
    ok=Answer("The block.", BLOCK),
    errors=(
        Refusal(400, "Not a height.", "bad_height"),
        Refusal(404, "No block at that height.", "not_found"),
        Refusal(
            410, "Below the heights this node keeps (pruned, or before its state sync).", "pruned"
        ),
    ),
)
async def get_block(request: web.Request) -> web.Response:
    node = _node(request)
    chain, _ = _ready(node)
    which = request.match_info["height"]
    height = chain.height if which == "latest" else _decimal(which, "height", "bad_height")
    # One spelling per view, so that the kept texts are keyed by what they hold.
    mode = request.query.get("txs", "true").lower()
    mode = "false" if mode in ("0", "false", "no") else "hashes" if mode == "hashes" else "true"
    rendered = request.app[RENDERED_BLOCKS]
    text = rendered.get(height, mode) if height >= chain.store.block_base else None
    if text is None:
        # Reading, decoding and rendering a block is CPU and memory in proportion to its
        # size: never on the event loop (p2p and every client share it), and a few at once.
        async with request.app[BLOCK_READS]:
            text = await asyncio.get_running_loop().run_in_executor(
                None, _render_block, chain, height, mode
            )
        if text is not None:
            rendered.put(height, mode, text)
    if text is None:
        chain.store.require_block(height)  # 410 pruned, when it was there once
        raise HttpError(404, "not_found", f"no block at height {height} (head is {chain.height})")
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


PROVEN = {
    "key": described(ref("Hex"), "with `?proof=true`: the state key"),
    "value": described(nullable(ref("Hex")), "with `?proof=true`: null if absent"),
    "proof": described(ref("Hex"), "with `?proof=true`: the encoded StateProof"),
}
ACCOUNT = Component(
    "Account",
    obj(
        {
            "address": ref("Address"),
            "height": HEIGHT,
            "balance": described(UINT, "in the native token"),
            "nonce": described(UINT, "the next nonce the account must use in a block"),
            "next_nonce": described(
                UINT,
                "the nonce to sign next: after the account's transactions this node "
                "holds pending (equal to `nonce` when it holds none)",
            ),
            "balances": described(
                array(
                    obj(
                        {"currency": STR, "decimals": UINT, "balance": UINT, **PROVEN},
                        optional=tuple(PROVEN),
                    )
                ),
                "the balance in every issued currency (docs/vm.md, Currencies), zero "
                "included, in symbol order; with `?proof=true` each with its proof",
            ),
            "currencies": described(
                obj(PROVEN),
                "with `?proof=true`: the proof of the currency list, so a client knows "
                "`balances` leaves none out",
            ),
            "state_root": described(HASH, "with `?proof=true`: the root at `height`"),
            **PROVEN,
        },
        optional=("state_root", "key", "value", "proof", "currencies"),
    ),
)


@ROUTES.get(
    "/v1/accounts/{address}",
    "getAccount",
    "An account's balance and nonce",
    "`next_nonce` is the nonce a client signs next, after the transactions of the "
    "account this node holds pending (send several in a row without waiting). "
    "With `?proof=true`, a state proof of the account at `height` against that "
    "height's state root: check the root against the header (`GET "
    "/v1/blocks/{height}`) and its commit against the genesis producers.",
    params=(
        Param("address", "path", ref("Address"), "account address"),
        Param(
            "proof",
            "query",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "`true` (also `1`, `yes`) adds the state proof",
        ),
    ),
    ok=Answer("The account (zero balance and nonce if absent).", ACCOUNT),
    errors=(Refusal(400, "Not an address.", "bad_address"),),
)
async def get_account(request: web.Request) -> web.Response:
    node = _node(request)
    chain, mempool = _ready(node)
    address = parse_address(request.match_info["address"])
    want_proof = request.query.get("proof", "").lower() in ("1", "true", "yes")
    if want_proof:
        # A proof per balance (up to max_currencies + 2) is tree walks and hashing:
        # never on the event loop, and a few at once, as block reads.
        async with request.app[BLOCK_READS]:
            out = await asyncio.get_running_loop().run_in_executor(
                None, _account_answer, chain, address, True
            )
    else:
        out = _account_answer(chain, address, False)
    # The mempool catches up with a commit a moment after the store: never below state.
    pending = mempool.next_nonce(address)
    out["next_nonce"] = out["nonce"] if pending is None else max(pending, out["nonce"])
    return web.json_response(out)


def _account_answer(chain: Any, address: bytes, want_proof: bool) -> dict[str, Any]:
    """An account's balances (every currency), with their proofs if ``want_proof``."""
    out: dict[str, Any] = {"address": format_address(address)}
    # Read the height once: a block may commit while the proofs are built.
    height = chain.height

    def read(key: bytes) -> tuple[bytes | None, dict[str, Any]]:
        """A value, with its proof at ``height`` when asked for."""
        if not want_proof:
            return chain.store.state_get(key), {}
        value, proof, _ = chain.store.prove(key, height)
        hexed = value.hex() if value is not None else None
        return value, {"key": key.hex(), "value": hexed, "proof": proof.encode().hex()}

    value, proven = read(account_key(address))
    out.update(height=height, **proven)
    if want_proof:
        out["state_root"] = chain.store.state_root(height).hex()
    account = Account.decode(value) if value is not None else Account(0, 0)
    out.update(balance=account.balance, nonce=account.nonce)
    # Every issued currency (at most max_currencies), each balance a key of its own.
    raw_list, proven_list = read(CURRENCY_LIST_KEY)
    if want_proof:
        out["currencies"] = proven_list
    balances = []
    for symbol in CurrencyList.decode(raw_list).symbols if raw_list is not None else ():
        # Decimals only, and they never change (a re-grant keeps them, a currency is
        # never removed): read at the head, not proven.
        raw_currency = chain.store.state_get(currency_key(symbol))
        decimals = Currency.decode(raw_currency).decimals if raw_currency is not None else 0
        raw, proven = read(balance_key(address, symbol))
        amount = Balance.decode(raw).amount if raw is not None else 0
        balances.append({"currency": symbol, "decimals": decimals, "balance": amount, **proven})
    out["balances"] = balances
    return out


CURRENCY = Component(
    "Currency",
    obj(
        {
            "symbol": STR,
            "decimals": described(UINT, "for display: amounts are integers of the smallest unit"),
            "issuer": described(ref("Address"), "the member that mints and attests"),
            "revoked": described(BOOL, "governance revoked the issuer: no mints, no new listings"),
            "minted": UINT,
            "burned": UINT,
            "supply": described(UINT, "minted - burned: what balances and escrows hold"),
            "reserves": described(UINT, "the issuer's latest attestation of its reserves"),
            "report_hash": described(HASH, "hash of the attestation report (zeros before one)"),
            "attested_height": described(UINT, "height of the latest attestation (0: none)"),
            "granted_height": UINT,
        }
    ),
)
CURRENCY_LIST = Component(
    "CurrencyList", obj({"height": HEIGHT, "currencies": array(ref("Currency"))})
)


def _currency_json(currency: Currency) -> dict[str, Any]:
    return {
        "symbol": currency.symbol,
        "decimals": currency.decimals,
        "issuer": format_address(currency.issuer),
        "revoked": currency.revoked,
        "minted": currency.minted,
        "burned": currency.burned,
        "supply": currency.supply,
        "reserves": currency.reserves,
        "report_hash": currency.report_hash.hex(),
        "attested_height": currency.attested_height,
        "granted_height": currency.granted_height,
    }


@ROUTES.get(
    "/v1/currencies",
    "listCurrencies",
    "Every issued currency",
    "The currencies governance granted an issuer for (revoked ones included), in symbol "
    "order, with their supply and the issuer's latest attestation of reserves. The "
    "native token (fees, staking) is not one of them.",
    ok=Answer("The currencies.", CURRENCY_LIST),
)
async def list_currencies(request: web.Request) -> web.Response:
    chain, _ = _ready(_node(request))
    state = chain.store
    height = chain.height
    raw = state.state_get(CURRENCY_LIST_KEY)
    symbols = CurrencyList.decode(raw).symbols if raw is not None else ()
    currencies = []
    for symbol in symbols:
        value = state.state_get(currency_key(symbol))
        if value is not None:
            currencies.append(_currency_json(Currency.decode(value)))
    return web.json_response({"height": height, "currencies": currencies})


@ROUTES.get(
    "/v1/currencies/{symbol}",
    "getCurrency",
    "One issued currency",
    "Symbols are exact (upper case): `usd` is no currency.",
    params=(Param("symbol", "path", {"type": "string", "maxLength": 8}, "currency symbol"),),
    ok=Answer("The currency.", CURRENCY),
    errors=(Refusal(404, "No currency has that symbol.", "not_found"),),
)
async def get_currency(request: web.Request) -> web.Response:
    chain, _ = _ready(_node(request))
    symbol = request.match_info["symbol"]
    value = chain.store.state_get(currency_key(symbol)) if 0 < len(symbol) <= 8 else None
    if value is None:
        raise HttpError(404, "not_found", f"no currency {symbol[:8]!r}")
    return web.json_response(_currency_json(Currency.decode(value)))


STATE_VALUE = Component(
    "StateValue",
    obj(
        {
            "key": ref("Hex"),
            "height": UINT,
            "state_root": described(HASH, "the state root after block `height`"),
            "value": described(nullable(ref("Hex")), "null if the key is absent"),
            "proof": described(ref("Hex"), "the encoded StateProof (of absence too)"),
        }
    ),
)


@ROUTES.get(
    "/v1/state/{key}",
    "getState",
    "Any state key with its proof",
    "The value of any public state key (or its absence) at `height` (default: the "
    "head), with a state proof against that height's state root: check the root "
    "against the header (`GET /v1/blocks/{height}`) and its commit against the "
    "producers. Order data is private to its parties and refused here (403 "
    "`private_state`, by prefix), so a `null` value is always a true absence.",
    params=(
        Param(
            "key",
            "path",
            {"type": "string", "pattern": f"^({HEX_CHARS}{{2}}){{1,{MAX_KEY_SIZE}}}$"},
            "state key, hex (a key prefix byte, docs/vm.md, then the key)",
        ),
        Param(
            "height",
            "query",
            {"type": "integer", "minimum": 0, "maximum": 10**19 - 1},
            "height to read at (default: the head)",
        ),
    ),
    ok=Answer("The value and its proof.", STATE_VALUE),
    errors=(
        Refusal(400, "Not a key or not a height.", "bad_key", "bad_height"),
        Refusal(
            403,
            "A key of order data private to its parties (prefixes 0x29 deal buyer counts, "
            "0x2A orders, 0x2B party indexes, 0x2C disputes, 0x2D disclosures), whether it "
            "exists or not; the parties read orders with the signed order routes.",
            "private_state",
        ),
        Refusal(404, "A height above the head.", "not_found"),
        Refusal(410, "A height whose state this node no longer keeps (pruning).", "pruned"),
    ),
)
async def get_state(request: web.Request) -> web.Response:
    """Any state key's value (or absence) with its proof, at a retained height."""
    node = _node(request)
    chain, _ = _ready(node)
    try:
        key = bytes.fromhex(request.match_info["key"])
    except ValueError:
        raise HttpError(400, "bad_key", "state key must be hex") from None
    if not key or len(key) > MAX_KEY_SIZE:
        raise HttpError(
            400, "bad_key", f"state key must be 1..{MAX_KEY_SIZE} bytes, got {len(key)}"
        )
    # Orders are their parties' (docs/commerce.md, Privacy): refused by prefix, whether
    # the key exists or not, so a refusal says nothing and every answer this route
    # does give (a value, or null with its proof) is the truth.
    if key[0] in PRIVATE_STATE_PREFIXES:
        raise HttpError(
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
            raise HttpError(404, "not_found", f"height {height} is above the head {chain.height}")
    # A proof is a tree walk (at an old height, node reads from disk) and hashing:
    # never on the event loop, and a few at once, as block reads.
    async with request.app[BLOCK_READS]:
        value, proof, root = await asyncio.get_running_loop().run_in_executor(
            None, chain.store.prove, key, height
        )
    return web.json_response(
        {
            "key": key.hex(),
            "height": height,
            "state_root": root.hex(),
            "value": value.hex() if value is not None else None,
            "proof": proof.encode().hex(),
        }
    )


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
    node = _node(request)
    genesis = node.genesis
    return web.json_response(
        {
            "hash": genesis.hash.hex(),
            "genesis": genesis.to_json(),
            "encoded": genesis.encode().hex(),
        }
    )


@ROUTES.get(
    "/metrics",
    "getMetrics",
    "Prometheus metrics",
    "The node's metrics in the Prometheus text format.",
    ok=Answer("Metrics.", STR, media="text/plain"),
    ready=False,
)
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
    app[BODY_BUDGET] = BodyBudget(node.config.http.max_bodies_bytes)
    ROUTES.mount(app)
    install_simulate(app)
    app[BLOCK_READS] = asyncio.Semaphore(BLOCK_READ_SLOTS)
    app[RENDERED_BLOCKS] = RenderedBlocks()
    add_commerce_routes(app, NodeChainReader(node), node.config.feeds)
    STAKING_ROUTES.mount(app)
    add_openapi_route(app)
    # The web app's files (node/web.py): served, not an API.
    add_web_routes(app)
    return app
