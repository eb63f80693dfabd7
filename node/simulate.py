"""``POST /v1/txs/simulate``: the receipt a signed transaction would get, without committing it.

As Cosmos ``simulate`` or ``eth_call``: a client (the CLI, before it sends) learns
whether a transaction would fail in a block, and with which code, without paying
its fee. The transaction runs on a ``vm.Overlay`` over the latest final state,
after the sender's pending transactions of lower nonce (so back-to-back sends see
each other); the overlay is dropped, so nothing is ever written.

Hostile clients: a simulation is free, so its cost is bounded per call and per
node. One transaction per call, its body refused by its ``Content-Length``
before it is read when it could not hold a transaction of ``max_tx_bytes``; the
stateless checks of ``POST /v1/txs`` (signature included) first; at most the
sender's pending run (``per_account_cap``) executed before it. Checks and
execution run in threads of their own (``apps.read_slots.ReadSlots``), never on the
event loop, at most ``SIMULATION_SLOTS`` at once; beyond ``SIMULATION_QUEUE``
waiting, or a quarter of both from one client address, the node answers 503 ``busy``
with ``Retry-After`` rather than queueing without bound, and the waiting ones are
taken by address in turn: one client's burst cannot take every place. A simulation reads no
private view: a receipt says what a block's receipt would say, which anyone may
read once the transaction is sent; for a type whose outcome is private
(``TxType.private_outcome``: a bid, whose events give the price it would set) it holds
no events.
"""

from __future__ import annotations

from aiohttp import web

from apps.read_slots import ReadSlots
from apps.routes import (
    HASH,
    UINT,
    Answer,
    Body,
    Component,
    Refusal,
    RouteTable,
    client_of,
    described,
    obj,
    ref,
)
from core import HttpError, Invalid, SignedTx, address_of
from node.api_common import node_of, ready
from node.bodies import parse_json_txs, read_body
from node.openapi import TX_REFUSAL_CODES
from node.render import RECEIPT
from node.service import Node
from storage import StateTree
from vm import Receipt, StateView, VerifiedTx, receipt_json, verify_signed_tx

# Simulations executing at once (worker threads), and how many more may wait.
SIMULATION_SLOTS = 2
SIMULATION_QUEUE = 16
# JSON around the hex of one transaction: {"tx": "..."} with room for whitespace.
_JSON_OVERHEAD = 256

ROUTES = RouteTable("node")


SIMULATIONS: web.AppKey[ReadSlots] = web.AppKey("simulations", ReadSlots)


class _TreeView:
    """The state after one final block, read through the tree at its root: a block
    committing meanwhile cannot mix into what the simulation reads."""

    __slots__ = ("_tree", "_root")

    def __init__(self, tree: StateTree, root: bytes) -> None:
        self._tree = tree
        self._root = root

    def get(self, key: bytes) -> bytes | None:
        return self._tree.get(self._root, key)


SIMULATION = Component(
    "Simulation",
    obj(
        {
            "hash": HASH,
            "height": described(UINT, "the final height whose state it ran on"),
            "receipt": RECEIPT,
        },
        description="The receipt the transaction would get in the next block; nothing "
        "was committed and no fee was charged.",
    ),
)
_REFUSED = tuple(
    code
    for code in TX_REFUSAL_CODES
    if code not in ("duplicate", "mempool_full", "account_queue_full")
)


@ROUTES.post(
    "/v1/txs/simulate",
    "simulateTx",
    "Simulate a transaction",
    'JSON `{"tx": "<hex>"}`: one signed transaction, checked as `POST /v1/txs` checks '
    "it, then executed on the latest final state after the sender's pending "
    "transactions of lower nonce, as the next block would execute it (its deadline "
    "and epoch hooks aside). Answers the receipt it would get (`receipt.code` is "
    "`ok` or the execution error a block would record, with the fee it would "
    "charge), or 400 with the code a block builder would leave it out with. Nothing "
    "is committed, queued or gossiped, and no fee is charged. The body must have a "
    "`Content-Length` no larger than one transaction of `max_tx_bytes` needs; "
    f"at most {SIMULATION_SLOTS} simulations run at once and "
    f"{SIMULATION_QUEUE} wait, a quarter of those per client address, beyond which the "
    "node answers 503 `busy`.",
    ok=Answer("The receipt it would get.", SIMULATION),
    errors=(
        Refusal(
            400,
            "A body that is not one transaction (`malformed`, `too_large`), or a "
            "transaction no block would include next.",
            *_REFUSED,
        ),
        Refusal(408, "The body did not arrive in time (a slow upload).", "request_timeout"),
        Refusal(
            503,
            "Too many simulations or request bodies at once (retry after `Retry-After` "
            "seconds), or the node is starting or stopping.",
            "busy",
            "unavailable",
        ),
    ),
    body=Body(
        {
            "application/json": {
                "type": "object",
                "properties": {"tx": described(ref("Hex"), "an encoded SignedTx, hex")},
                "required": ["tx"],
                "additionalProperties": False,
            }
        }
    ),
)
async def simulate_tx(request: web.Request) -> web.Response:
    node = node_of(request)
    chain, mempool = ready(node)
    # Refused before reading: a body that cannot be one transaction costs nothing.
    limit = 2 * chain.params.max_tx_bytes + _JSON_OVERHEAD
    length = request.content_length
    if length is None:
        raise HttpError(400, "malformed", "a simulation body needs a Content-Length")
    if length > limit:
        raise HttpError(
            400, "too_large", f"a simulation body is at most {limit} bytes, got {length}"
        )
    body = await read_body(request, limit, node.config.body_timeout_ms)
    raws, batch = parse_json_txs(body, 1)
    if batch:
        raise HttpError(400, "malformed", 'a simulation takes one transaction: {"tx": "<hex>"}')
    raw = raws[0]
    # The sender's pending run, then the head, with no await between: the store commits
    # before the mempool forgets what a block included, so the head read second is never
    # older than the run (what it already holds is skipped). The run is the envelope's
    # sender's, read before its signature is checked: it only feeds the execution, which
    # happens once the signature verified (a forged sender gets its refusal, no receipt).
    sender = _claimed_sender(raw)
    before = [] if sender is None else mempool.pending_for(sender)
    height = chain.store.height
    # The root stored for that height: one consistent (height, root) pair.
    view = _TreeView(chain.store.tree, chain.store.state_ref(height))
    vtx, receipt = await request.app[SIMULATIONS].run(
        client_of(request), _simulate, node, raw, view, height, before
    )
    if node.registry.declaration(vtx.body.type).private_outcome:
        # No events (``TxType.private_outcome``): what it would do stays unsaid until it
        # is sent and pays its fee; a failure still says why.
        receipt = Receipt(receipt.tx_hash, receipt.code, receipt.message, receipt.fee, ())
    return web.json_response(
        {"hash": vtx.hash.hex(), "height": height, "receipt": receipt_json(receipt)}
    )


def _claimed_sender(raw: bytes) -> bytes | None:
    """The address of the sender ``raw``'s envelope names, not yet verified; None if
    the envelope does not decode (``_simulate`` then refuses it with its code)."""
    try:
        return address_of(SignedTx.decode(raw).sender)
    except Invalid:
        return None


def _simulate(
    node: Node, raw: bytes, state: StateView, height: int, before: list[VerifiedTx]
) -> tuple[VerifiedTx, Receipt]:
    """``raw`` checked as ``POST /v1/txs`` checks it (refusals are ``Invalid``, each with
    its code: the middleware answers 400), then executed on ``state`` after ``before``."""
    chain = node.chain
    assert chain is not None
    vtx = verify_signed_tx(raw, node.genesis.chain_id, node.registry, chain.params.max_tx_bytes)
    # Another sender's run than the envelope's cannot be: the address is the key's.
    assert not before or before[0].sender_address == vtx.sender_address
    # The next block: its height, a time no earlier than now, this node as producer
    # (a producer's identity changes no transaction's outcome but its fees).
    ctx = chain.context(
        height + 1, chain.next_block_time(node.wall.time_ms()), node.key.public_key, None
    )
    return vtx, chain.executor.simulate(state, before, vtx, ctx)


def install(app: web.Application) -> None:
    """Mount the route and its slots."""
    slots = app[SIMULATIONS] = ReadSlots("simulation", SIMULATION_SLOTS, SIMULATION_QUEUE)

    async def close_slots(_app: web.Application) -> None:
        slots.close()

    app.on_cleanup.append(close_slots)
    ROUTES.mount(app)


__all__ = ["ROUTES", "SIMULATIONS", "SIMULATION_QUEUE", "SIMULATION_SLOTS", "install"]
