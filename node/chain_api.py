"""The node's reads of its chain: a transaction's status and the proof of its inclusion
and receipt, blocks, accounts, currencies, any state key with its proof, and the epoch
records light clients walk.

Declared in ``ROUTES`` (``apps.routes``) as the node's other routes are; ``node.api``
takes them into its table after the transaction submission (``RouteTable.include``),
where they are mounted and documented. A block, an account with its proofs, a state
proof or an epoch record is read off the event loop, ``BLOCK_READ_SLOTS`` at once
(``BLOCK_READS``, installed with ``RENDERED_BLOCKS`` by ``node.api.create_app``), in
threads of their own, ``BLOCK_READ_QUEUE`` more waiting, a quarter of both per client
address; so is a transaction's proof, whose blocks' Merkle trees are kept
(``PROOF_TREES``) for the next transaction of the same block.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any

from aiohttp import web

from apps.commerce.http import PRIVATE_STATE_PREFIXES
from apps.read_slots import ReadSlots
from apps.routes import (
    BOOL,
    HASH,
    HEIGHT,
    HEX_CHARS,
    STR,
    UINT,
    Answer,
    Component,
    Param,
    Refusal,
    RouteTable,
    array,
    client_of,
    described,
    hex_bytes,
    nullable,
    obj,
    ref,
)
from core import (
    Block,
    BlockHeader,
    DecodeError,
    HttpError,
    InvalidProof,
    MerkleTree,
    StorageError,
    format_address,
    parse_address,
    tx_hash,
    unpack_raw,
)
from node.api_common import node_of, ready
from node.epoch_records import EpochRecord, epoch_record
from node.reader import header_of_block
from node.render import BLOCK, RECEIPT, block_json, header_only_json
from storage import MAX_KEY_SIZE, ChainStore, Pruned
from vm import (
    MAX_TX_PATH,
    Account,
    Balance,
    Currency,
    CurrencyList,
    Receipt,
    TxInclusion,
    account_key,
    balance_key,
    currency_key,
    receipt_json,
    verify_tx_inclusion,
)
from vm.currency import CURRENCY_LIST_KEY

log = logging.getLogger("node.api")

# Whole blocks decoded and rendered at once, in threads of their own: an 8 MiB block of
# 40k transactions is ~200 ms of CPU and ~20 MB of JSON, so a burst of block reads
# waits here instead of taking every thread and the memory with it. State proofs and
# accounts with proofs (tree walks, at old heights from disk) share them.
BLOCK_READ_SLOTS = 2
# Block reads and proofs that may wait, and one address's share (a quarter of running
# and waiting, ``apps.read_slots``): beyond, 503 ``busy``. Unbounded, 256 requests from
# one address for uncached big blocks put everyone's block, proof and `?proof=true` read
# ~25 s behind them; now an address waits behind at most one read of each other address
# (they are taken by address in turn), and 18 reads are ~2 s of big blocks.
BLOCK_READ_QUEUE = 16
BLOCK_READS: web.AppKey[ReadSlots] = web.AppKey("block_reads", ReadSlots)
BUSY = Refusal(
    503,
    f"{BLOCK_READ_SLOTS} block reads or proofs run and {BLOCK_READ_QUEUE} wait, or the "
    "client's address holds a quarter of those (`busy`); or the node is starting or "
    "stopping (`unavailable`): retry after `Retry-After` seconds.",
    "busy",
    "unavailable",
)


def block_reads() -> ReadSlots:
    """The threads and turns of block reads and proofs (``BLOCK_READS``)."""
    return ReadSlots("block", BLOCK_READ_SLOTS, BLOCK_READ_QUEUE)


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

# Documented with the node's routes (``node.api.ROUTES``, which lists the chain objects
# every answer shares first).
ROUTES = RouteTable("node")


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
        Refusal(
            404,
            "Neither pending nor in a block (`not_found`: this node holds every block), or "
            "in no block this node holds while it holds none below `retained.blocks_from` "
            "(`maybe_pruned`: it cannot tell whether a pruned block held it).",
            "not_found",
            "maybe_pruned",
        ),
    ),
)
async def get_tx(request: web.Request) -> web.Response:
    node = node_of(request)
    chain, mempool = ready(node)
    tx_hash = _parse_hash(request.match_info["hash"])
    # The head before the lookup: a block committed in between would have the refusal
    # say "up to height H" of a transaction in block H.
    head = chain.store.height
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
    raise _unknown_tx(chain.store, tx_hash, "is neither pending nor in a block", head)


def _unknown_tx(store: ChainStore, hash_: bytes, what: str, head: int) -> HttpError:
    """The refusal for a transaction in no block this node holds, looked up with the
    head at ``head`` (read before the lookup). Pruning deletes a block's tx index
    entries with it (and a state-synced store never had the blocks below its sync
    height): with blocks gone, "never included" cannot be told from "included in a
    block no longer held", so that answer has a code of its own (``maybe_pruned``), and
    ``not_found`` means the whole chain was looked at."""
    # The base after the lookup: pruning raises it before it deletes (prune_blocks), so
    # a lookup that missed a deleted entry sees the raised base here.
    base = store.block_base
    if base <= 1:
        return HttpError(404, "not_found", f"transaction {hash_.hex()} {what} up to height {head}")
    return HttpError(
        404,
        "maybe_pruned",
        f"transaction {hash_.hex()} {what} from height {base} to {head}; this node holds no "
        f"block below {base} (pruned, or before its state sync) and cannot tell whether "
        "one of those held it",
    )


# Merkle trees of recent blocks kept for transaction proofs, in bytes of hashes: a block
# of 40k transactions is ~100 ms to hash into its two trees and 5.1 MB to keep, and its
# buyers all ask for a proof of their order in it.
PROOF_TREE_BYTES = 32 * 1024 * 1024


class ProofTrees:
    """The (transactions, receipts) Merkle trees of final blocks by height, least
    recently used out first; used from the block reads' threads. Final blocks never
    change, so a kept tree is never stale (a height pruned since is found gone when its
    block is read).
    """

    def __init__(self, max_bytes: int = PROOF_TREE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._trees: OrderedDict[int, tuple[MerkleTree, MerkleTree]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, height: int) -> tuple[MerkleTree, MerkleTree] | None:
        with self._lock:
            trees = self._trees.get(height)
            if trees is not None:
                self._trees.move_to_end(height)
            return trees

    def put(self, height: int, trees: tuple[MerkleTree, MerkleTree]) -> None:
        size = trees[0].size + trees[1].size
        with self._lock:
            if size > self.max_bytes or height in self._trees:
                return
            self._trees[height] = trees
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (txs, receipts) = self._trees.popitem(last=False)
                self._bytes -= txs.size + receipts.size


PROOF_TREES: web.AppKey[ProofTrees] = web.AppKey("proof_trees", ProofTrees)

TX_PROOF = Component(
    "TxProof",
    obj(
        {
            "hash": HASH,
            "height": described(UINT, "the block that holds the transaction"),
            "index": described(UINT, "its position in the block, from 0"),
            "count": described(
                UINT,
                "how many transactions the block holds (the header does not commit to it: "
                "`index` is proven for this count, docs/node.md)",
            ),
            "tx": described(ref("Hex"), "the encoded SignedTx, as the block carries it"),
            "receipt": described(ref("Hex"), "the encoded Receipt the receipt root commits to"),
            "tx_path": described(
                {**array(HASH), "maxItems": MAX_TX_PATH},
                f"Merkle path of `tx` to the header's tx root: the siblings from the leaves "
                f"up, where the node has one (at most {MAX_TX_PATH})",
            ),
            "receipt_path": described(
                {**array(HASH), "maxItems": MAX_TX_PATH},
                "Merkle path of `receipt` to the header's receipt root, likewise",
            ),
            "header": described(ref("Hex"), "the encoded BlockHeader of `height`"),
            "commit": described(ref("Hex"), "the encoded Commit certifying that header"),
        }
    ),
)


@ROUTES.get(
    "/v1/txs/{hash}/proof",
    "getTxProof",
    "Proof of a transaction's inclusion and receipt",
    "For a committed transaction: its block's height, its index among the block's `count` "
    "transactions, its encoding and its receipt's, their Merkle paths to the header's tx "
    "root and receipt root, and the header with its commit certificate. A client checks "
    "the certificate against the producers it derives from genesis and the paths against "
    "the header (`vm.verify_tx_inclusion`): the receipt's code is then the chain's, not "
    "this node's word.",
    params=(Param("hash", "path", hex_bytes(32), "transaction hash, hex"),),
    ok=Answer("The transaction, its receipt and their proof.", TX_PROOF),
    errors=(
        Refusal(400, "Not a hash.", "bad_hash"),
        Refusal(
            404,
            "In no block (`not_found`: this node holds every block), in no block this "
            "node holds while it holds none below `retained.blocks_from` (`maybe_pruned`: "
            "a pruned block may have held it), or still in its mempool (`pending`).",
            "not_found",
            "maybe_pruned",
            "pending",
        ),
        Refusal(410, "Its block was pruned while the proof was read.", "pruned"),
        BUSY,
    ),
)
async def get_tx_proof(request: web.Request) -> web.Response:
    node = node_of(request)
    chain, mempool = ready(node)
    hash_ = _parse_hash(request.match_info["hash"])
    head = chain.store.height  # before the lookup, as get_tx reads it
    location = chain.store.tx_location(hash_)
    if location is None:
        if mempool.contains(hash_):
            raise HttpError(
                404, "pending", f"transaction {hash_.hex()} is pending: no block holds it yet"
            )
        raise _unknown_tx(chain.store, hash_, "is in no block", head)
    height, index = location
    # Reading the block and hashing its trees is CPU in proportion to its size: never
    # on the event loop, and a few at once, as block reads.
    out = await request.app[BLOCK_READS].run(
        client_of(request), _tx_proof, chain, hash_, height, index, request.app[PROOF_TREES]
    )
    return web.json_response(out)


def _tx_proof(
    chain: Any, hash_: bytes, height: int, index: int, trees: ProofTrees
) -> dict[str, Any]:
    """The proof of transaction ``index`` of block ``height`` (``hash_``), in a worker
    thread; the block's trees are taken from ``trees`` (then the transaction's receipt
    alone is read, not the block's) or kept there."""
    # Looked up when the read's turn comes, not as the request came: a flash deal's
    # buyers ask at once, and every request queued behind the block's first read built
    # its trees again (~100 ms at 40k transactions, each).
    kept = trees.get(height)
    store = chain.store
    data = store.get_block_bytes(height)
    commit = store.get_commit(height)
    if kept is None:
        receipts = store.get_receipts(height)
        receipt = receipts[index] if index < len(receipts) else None
    else:
        receipts, receipt = [], store.get_receipt(hash_)
    header_raw, txs = unpack_raw(data) if data is not None else (None, [])
    count = len(txs) if kept is None else kept[0].count
    # Pruning deletes a block, its certificate and receipts in one batch, but these reads
    # are several: any of them may come after it.
    shortfall = index >= len(txs) or (kept is None and len(receipts) != count)
    if data is None or commit is None or receipt is None or shortfall:
        if height < store.block_base:
            raise Pruned(
                f"block {height} was pruned: this node keeps blocks from {store.block_base}"
            )
        raise StorageError(f"block {height} does not hold transaction {index} and its receipt")
    header = BlockHeader.from_raw(header_raw)
    tx_tree, receipt_tree = kept or (MerkleTree.of(txs), MerkleTree.of(receipts))
    proof = TxInclusion(
        height,
        index,
        count,
        txs[index],
        receipt,
        tx_tree.path(index),
        receipt_tree.path(index),
    )
    # What a client checks, checked here first: a damaged store is this node's fault
    # (500), never a proof handed out that no client can verify.
    try:
        verify_tx_inclusion(header, hash_, proof)
    except (InvalidProof, DecodeError) as exc:
        raise StorageError(f"stored block {height} proves no transaction {index}: {exc}") from exc
    if kept is None:
        trees.put(height, (tx_tree, receipt_tree))
    return {
        "hash": hash_.hex(),
        "height": height,
        "index": index,
        "count": count,
        "tx": proof.tx.hex(),
        "receipt": proof.receipt.hex(),
        "tx_path": [h.hex() for h in proof.tx_path],
        "receipt_path": [h.hex() for h in proof.receipt_path],
        "header": header.encode().hex(),
        "commit": commit.encode().hex(),
    }


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
        BUSY,
    ),
)
async def get_block(request: web.Request) -> web.Response:
    node = node_of(request)
    chain, _ = ready(node)
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
        text = await request.app[BLOCK_READS].run(
            client_of(request), _render_block, chain, height, mode
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
    errors=(Refusal(400, "Not an address.", "bad_address"), BUSY),
)
async def get_account(request: web.Request) -> web.Response:
    node = node_of(request)
    chain, mempool = ready(node)
    address = parse_address(request.match_info["address"])
    want_proof = request.query.get("proof", "").lower() in ("1", "true", "yes")
    if want_proof:
        # A proof per balance (up to max_currencies + 2) is tree walks and hashing:
        # never on the event loop, and a few at once, as block reads.
        out = await request.app[BLOCK_READS].run(
            client_of(request), _account_answer, chain, address, True
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
    chain, _ = ready(node_of(request))
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
    chain, _ = ready(node_of(request))
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
    "`private_state`, by prefix), so a `null` value is always a true absence. An "
    "epoch's producer set at its boundary, with the header and certificate that prove "
    "it, is `GET /v1/epochs/{epoch}`, answered whatever the node prunes.",
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
        BUSY,
    ),
)
async def get_state(request: web.Request) -> web.Response:
    """Any state key's value (or absence) with its proof, at a retained height."""
    node = node_of(request)
    chain, _ = ready(node)
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
    value, proof, root = await request.app[BLOCK_READS].run(
        client_of(request), chain.store.prove, key, height
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


def _decoded_record(epoch: int, raw: bytes) -> EpochRecord:
    """A stored epoch record, decoded (its header too). The node wrote it after checking
    it (or made it from its own block and state): one that does not decode is this
    node's damaged store, said as such (500 ``corrupt_record``), not a client's error
    nor an anonymous ``internal`` one."""
    try:
        record = EpochRecord.decode(raw)
        BlockHeader.decode(record.header)
        return record
    except DecodeError as exc:
        log.error("stored record of epoch %d does not decode: %s", epoch, exc)
        raise HttpError(
            500,
            "corrupt_record",
            f"this node's stored record of epoch {epoch} does not decode ({exc.message[:120]}); "
            "ask another node",
        ) from None


EPOCH_RECORD = Component(
    "EpochRecord",
    obj(
        {
            "epoch": described(UINT, "from 1: epoch 0's producers are genesis's validators"),
            "height": described(
                UINT, "the boundary: `epoch * epoch_length`, the last block of epoch `epoch - 1`"
            ),
            "header": described(ref("Hex"), "the encoded BlockHeader of `height`"),
            "commit": described(
                ref("Hex"), "the encoded Commit certifying that header (by epoch `epoch - 1`'s set)"
            ),
            "producers": described(
                ref("Hex"), "the encoded ProducerSet of epoch `epoch` (state key 0x14 || epoch)"
            ),
            "proof": described(
                ref("Hex"), "the encoded StateProof of `producers` against the header's state root"
            ),
        }
    ),
)


@ROUTES.get(
    "/v1/epochs/{epoch}",
    "getEpoch",
    "What proves an epoch's producers",
    "The record every node keeps for good of epoch `epoch` (from 1): the header of its "
    "boundary block (height `epoch * epoch_length`, the last of epoch `epoch - 1`), that "
    "header's commit certificate, and the producer set of epoch `epoch` with its state "
    "proof against the header's state root. Pruned or not, a node answers it for every "
    "epoch whose boundary it has final: a light client walks the epochs from genesis, "
    "checking each certificate with the set before it, with one read per change of "
    "producers (`/v1/epochs/{epoch}/next-change`), or per epoch from a node without it.",
    params=(
        Param(
            "epoch",
            "path",
            {"type": "string", "pattern": "^[0-9]{1,19}$"},
            "an epoch number, from 1",
        ),
    ),
    ok=Answer("The epoch's record.", EPOCH_RECORD),
    errors=(
        Refusal(400, "Not an epoch number.", "bad_epoch"),
        Refusal(
            404,
            "No record of that epoch here: epoch 0 (genesis gives its producers), an epoch "
            "whose boundary is above the head, or a chain without staking (one set for good).",
            "not_found",
        ),
        Refusal(
            500, "This node's stored record does not decode (a damaged store).", "corrupt_record"
        ),
        BUSY,
    ),
)
async def get_epoch(request: web.Request) -> web.Response:
    """An epoch's record (``node.epoch_records.EpochRecord``), its parts in hex."""
    node = node_of(request)
    chain, _ = ready(node)
    epoch = _decimal(request.match_info["epoch"], "epoch", "bad_epoch")
    length = node.genesis.params.epoch_length
    head = chain.height
    # Epoch 0 has no record (genesis is its proof); past the head there is none yet.
    if epoch < 1 or epoch * length > head:
        raise HttpError(
            404,
            "not_found",
            f"no record of epoch {epoch}: records are of epochs 1 to {head // length} "
            f"(epoch_length {length}, head {head}); epoch 0's producers are genesis's",
        )
    return await _record_answer(request, epoch)


async def _record_answer(request: web.Request, epoch: int) -> web.Response:
    """Epoch ``epoch``'s record as ``GET /v1/epochs/{epoch}`` answers it (its boundary
    at or below the head); 404 ``not_found`` if this node holds none."""
    node = node_of(request)
    chain, _ = ready(node)
    length = node.genesis.params.epoch_length
    # Kept, or made from the block and state at the boundary (a node stopped between a
    # boundary's commit and keeping its record): a proof's tree walk, so off the loop
    # and bounded, as the state route's.
    raw = await request.app[BLOCK_READS].run(
        client_of(request), epoch_record, chain.store, epoch, length
    )
    if raw is None:
        raise HttpError(404, "not_found", f"this node holds no record of epoch {epoch}")
    record = _decoded_record(epoch, raw)
    return web.json_response(
        {
            "epoch": epoch,
            "height": epoch * length,
            "header": record.header.hex(),
            "commit": record.commit.hex(),
            "producers": record.producers.hex(),
            "proof": record.proof.hex(),
        }
    )


@ROUTES.get(
    "/v1/epochs/{epoch}/next-change",
    "getNextSetChange",
    "The next epoch whose producers change",
    "The record (as `GET /v1/epochs/{epoch}` gives it) of the first epoch after `epoch` "
    "(from 0, genesis's) whose producer set differs from epoch `epoch`'s: a light client "
    "holding epoch `epoch`'s set verifies that record's boundary header with it (the "
    "header names that set, and more than 2/3 of it signed) and so reads one record per "
    "change of producers, not one per epoch (docs/state-sync.md, Trust model: Rule S). "
    "Where this node cannot tell (a record it holds unindexed, or none), it answers the "
    "first epoch it cannot vouch for, whose record verifies the same way. Two index "
    "seeks in the node's store, never a scan.",
    params=(
        Param(
            "epoch",
            "path",
            {"type": "string", "pattern": "^[0-9]{1,19}$"},
            "an epoch number, from 0",
        ),
    ),
    ok=Answer("The record of the next epoch whose producers change.", EPOCH_RECORD),
    errors=(
        Refusal(400, "Not an epoch number.", "bad_epoch"),
        Refusal(
            404,
            "`no_set_change`: the producers of every epoch from `epoch` to the head's are "
            "epoch `epoch`'s (a chain without staking has one set for good). `not_found`: "
            "`epoch` is past the head's epoch, or this node holds no record of the change "
            "(a client then walks the epochs one by one, as from a node without this route).",
            "no_set_change",
            "not_found",
        ),
        Refusal(
            500, "This node's stored record does not decode (a damaged store).", "corrupt_record"
        ),
        BUSY,
    ),
)
async def get_next_set_change(request: web.Request) -> web.Response:
    """The record of the first epoch after ``epoch`` whose producers differ (the store's
    index, ``ChainStore.next_set_change``)."""
    node = node_of(request)
    chain, _ = ready(node)
    epoch = _decimal(request.match_info["epoch"], "epoch", "bad_epoch")
    length = node.genesis.params.epoch_length
    # The highest epoch with a record: its boundary is at or below the head.
    last = chain.height // length
    if epoch > last:
        raise HttpError(
            404,
            "not_found",
            f"epoch {epoch} is past this node's records (epochs 0 to {last}, "
            f"epoch_length {length}, head {chain.height})",
        )
    change = None if node.genesis.staking is None else chain.store.next_set_change(epoch)
    if change is None or change > last:
        raise HttpError(
            404,
            "no_set_change",
            f"the producers of epochs {epoch} to {last} (the head's, height {chain.height}) "
            f"are epoch {epoch}'s",
        )
    return await _record_answer(request, change)


__all__ = [
    "BLOCK_READS",
    "BLOCK_READ_QUEUE",
    "BLOCK_READ_SLOTS",
    "PROOF_TREES",
    "PROOF_TREE_BYTES",
    "ProofTrees",
    "block_reads",
    "RENDERED_BLOCKS",
    "RENDERED_BLOCK_BYTES",
    "ROUTES",
    "RenderedBlocks",
]
