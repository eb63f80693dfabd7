"""Live-session commerce throughput beside plain transfers, measured in the same run.

    .venv/bin/python -m benches.commerce [--buyers 20000] [--block-ms 200]
    .venv/bin/python -m benches.commerce --executor [--buyers 4000] [--repeat 5]

Node level (default): a single-validator devnet runs as a subprocess (as
``benches.throughput`` does); pre-signed transactions go over HTTP in msgpack
batches, and a phase's time runs from its first submission until the block
holding its last transaction is final. The commerce mix is a live session's
traffic, phase by phase as it must happen: every buyer orders one unit from a
flash deal and tips the host; the merchant ships every order; every buyer
confirms delivery and writes a review. Then an auction phase: many bidders bid
on one live auction (at node level the buyers of one mempool shard, whose bids a
block takes in fee order: maxima rise as fees fall, so every bid outbids the
last; they are sent in one lane, in order, as the merchant's shipments are; at
executor level every buyer, in one block); its rate is reported beside
the transfers, apart from the commerce mix. Before each commerce phase a phase of
as many plain transfers from the same buyers runs (same sizes, so both sides
pay the same phase barriers; interleaved, so both see the same node, state size
and machine load). The end checks, through the commerce reads, that every order
sold, shipped, settled and was reviewed. Order ids follow the block order the
mempool chose, so the settle phase is signed once the orders are final, with
each buyer's id read from its receipt.
Blocks come every 200 ms by default so that a phase spans several blocks: the
figure is then the node's throughput rather than the wait for the next block
tick (with 1 s blocks, a phase of a few thousand transactions is one block of
either kind and the ratio drifts toward 1). For the same reason the default is
20,000 buyers: a phase of 4,000 spans three to five blocks, one block more or
less moved its rate by a quarter, and the ratio read 0.65-0.84 over five runs of
one build. Each phase's node CPU per transaction by part (event loop, consensus
thread, other threads, signature workers) is printed too: it does not move with
block ticks, and says where a commerce transaction costs more than a transfer.

``--executor`` keeps the earlier measurement: blocks executed with
``Executor.execute_block`` (strict) over a dict state, on transactions verified
once beforehand, with no node around them, and the cyclic GC tuned as the node
tunes it (``benches.common.node_gc``).

Last line:

    RESULT commerce_tps=<n> transfer_tps=<n> ratio=<commerce/transfer> auction_tps=<n> auction_ratio=<bids/transfer>

At node level it ends with ``cpu_ratio=<transfer/commerce>`` too: the CPU per
transaction of the node's event loop and consensus thread (which share one GIL)
for transfers over that for the commerce mix. It is the rates' ratio once the
GIL is the limit, and does not move with the idle time a phase's batches leave
(with ``--concurrency 4`` instead of 2, one build's ratio fell from 0.73-0.88 to
0.74-0.77, toward it).

The workload is built by ``live_session_workload``, which returns pre-signed
``SignedTx`` lists per phase for funded keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from apps.commerce import CommerceGenesis, commerce_genesis_state, register
from apps.commerce import payloads as tx
from apps.commerce.auctions import bidder_tag
from apps.commerce.events import ORDER_PLACED
from apps.commerce.model import AuctionMode
from apps.commerce.sealing import encryption_keypair, seal_address
from benches.common import node_gc
from benches.throughput import REJECTED, post_batch
from core.keys import PrivateKey, format_address
from core.keystore import load_key
from core.types import MAX_BLOCK_TXS, SignedTx, TxBody, sign_tx, tx_hash
from vm import (
    Account,
    BlockContext,
    ChainParams,
    Executor,
    Transfer,
    VerifiedTx,
    account_key,
    default_registry,
    verify_signed_tx,
)
from vm.params import MAX_BLOCK_BYTES

CHAIN = "bench-commerce"
FEE = 1_000
DEAL_PRICE = 5_000
MIN = 60_000
# The auction: start price, and the gap between consecutive bidders' maxima (at least
# two of the largest increment, so each maximum beats the price the previous left).
AUCTION_START = 1_000
BID_STEP = 100


@dataclass
class Actors:
    registrar: PrivateKey
    merchant: PrivateKey
    host: PrivateKey
    buyers: list[PrivateKey]
    # The merchant's X25519 public key (buyers seal addresses to it).
    enc_public: bytes


@dataclass
class Workload:
    """Pre-signed transactions, phase by phase (each phase may span several blocks)."""

    # Register and approve the merchant, list, open the session, pin, open the deal,
    # start the auction.
    setup: list[list[SignedTx]]
    # Every buyer: an order into the deal and a tip.
    orders: list[SignedTx]
    # The merchant ships every order.
    ships: list[SignedTx]
    # Every buyer: confirm delivery, then a review.
    settle: list[SignedTx]

    @property
    def mix(self) -> list[SignedTx]:
        return self.orders + self.ships + self.settle


def make_actors(buyers: int, seed: int = 1) -> Actors:
    def key(i: int) -> PrivateKey:
        return PrivateKey((seed * 1_000_003 + i).to_bytes(32, "big"))

    _, enc_public = encryption_keypair(bytes([7]) * 32)
    return Actors(key(0), key(1), key(2), [key(10 + i) for i in range(buyers)], enc_public)


def commerce_genesis(actors: Actors, treasury: bytes = bytes(20)) -> CommerceGenesis:
    return CommerceGenesis((actors.registrar.address,), treasury)


def live_session_workload(
    actors: Actors,
    chain_id: str,
    start_ms: int,
    *,
    nonces: dict[bytes, int] | None = None,
    expiry_height: int = 1_000,
    fee: int = FEE,
    settle: bool = True,
) -> Workload:
    """Signed transactions of one live session on a chain with fresh commerce state.

    Ids are those a fresh chain hands out (listing 1, session 1, deal 1, orders
    1..N in buyer order). ``start_ms`` is a block time at or before the setup's
    last block: the deal runs from then for 50 minutes. ``nonces`` gives each
    account's next nonce (default 0); it is updated. ``settle=False`` leaves the
    settle phase out (and its nonces unused): a node orders a block's orders as
    its mempool draws them, so ids are known only once they are final
    (``settle_workload``).
    """
    nonces = {} if nonces is None else nonces
    sign = _signer(chain_id, nonces, expiry_height, fee)

    m, n = actors.merchant, len(actors.buyers)
    setup = [
        [sign(m, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Bench", "", actors.enc_public))],
        [sign(actors.registrar, tx.APPROVE_MERCHANT, tx.ApproveMerchant(m.address, True))],
        [
            sign(m, tx.CREATE_LISTING, tx.CreateListing("Item", "", 9_000, n + 1, b"")),
            sign(m, tx.OPEN_SESSION, tx.OpenSession(actors.host.address, 1_000, "live")),
            sign(m, tx.PIN, tx.PinListing(1, 1)),
            sign(
                m, tx.OPEN_DEAL, tx.OpenDeal(1, 1, DEAL_PRICE, n, 1, start_ms, start_ms + 50 * MIN)
            ),
        ],
        # The one unit left goes to auction (for the longest the chain allows), by the
        # merchant (a host's may not start below the listing's price).
        [
            sign(
                m,
                tx.START_AUCTION,
                tx.StartAuction(1, 1, AUCTION_START, 0, 0, 300_000, int(AuctionMode.TIMED)),
            ),
        ],
    ]
    ciphertext, commitment, _ = seal_address(actors.enc_public, "1 Bench Road", salt=bytes(32))
    order = tx.PlaceOrder(1, 1, 1, DEAL_PRICE, 1, 1, actors.enc_public, commitment, ciphertext)
    orders, ships = [], []
    for b in actors.buyers:
        orders.append(sign(b, tx.PLACE_ORDER, order))
        orders.append(sign(b, tx.TIP, tx.Tip(1, 100, "")))
    for order_id in range(1, n + 1):
        ships.append(
            sign(m, tx.SHIP_ORDER, tx.ShipOrder(order_id, order_id.to_bytes(32, "big"), ()))
        )
    settle_txs = []
    if settle:
        ids = range(1, n + 1)
        settle_txs = settle_workload(
            actors, chain_id, ids, nonces=nonces, expiry_height=expiry_height, fee=fee
        )
    return Workload(setup, orders, ships, settle_txs)


def settle_workload(
    actors: Actors,
    chain_id: str,
    order_ids: Sequence[int],
    *,
    nonces: dict[bytes, int],
    expiry_height: int = 1_000,
    fee: int = FEE,
) -> list[SignedTx]:
    """Every buyer confirms delivery of its order (``order_ids[i]`` for buyer i) and reviews it."""
    sign = _signer(chain_id, nonces, expiry_height, fee)
    out = []
    for order_id, b in zip(order_ids, actors.buyers, strict=True):
        out.append(sign(b, tx.CONFIRM_DELIVERY, tx.OrderRef(order_id)))
        out.append(sign(b, tx.REVIEW, tx.WriteReview(order_id, 5, "great stream deal")))
    return out


def bid_workload(
    bidders: Sequence[PrivateKey],
    enc_public: bytes,
    chain_id: str,
    *,
    nonces: dict[bytes, int],
    expiry_height: int = 1_000,
    fee: int = FEE,
    fee_ladder: bool = False,
) -> list[SignedTx]:
    """One bid per bidder on auction 1, maxima rising in bidder order; with
    ``fee_ladder`` each bid pays one unit more fee than the next, so a mempool that
    orders by fee takes them in that order whenever they arrive."""
    ciphertext, commitment, _ = seal_address(enc_public, "1 Bench Road", salt=bytes(32))
    out = []
    for i, b in enumerate(bidders):
        top = AUCTION_START + BID_STEP * (i + 1)
        pay = fee + (len(bidders) - i if fee_ladder else 0)
        sign = _signer(chain_id, nonces, expiry_height, pay)
        out.append(sign(b, tx.BID, tx.Bid(1, top, enc_public, commitment, ciphertext)))
    return out


def final_price(bidders: int) -> int:
    """The price the last of ``bidders`` leads at: one increment over the previous maximum."""
    from apps.commerce.params import CommerceParams

    previous = AUCTION_START + BID_STEP * (bidders - 1)
    return min(previous + BID_STEP, previous + CommerceParams().increment(previous))


def _signer(
    chain_id: str, nonces: dict[bytes, int], expiry_height: int, fee: int
) -> Callable[[PrivateKey, str, object], SignedTx]:
    def sign(key: PrivateKey, tx_type: str, payload: object) -> SignedTx:
        nonce = nonces.get(key.address, 0)
        nonces[key.address] = nonce + 1
        body = TxBody(nonce, fee, expiry_height, tx_type, payload.encode())  # type: ignore[attr-defined]  # payloads are Wire
        return sign_tx(key, chain_id, body)

    return sign


def transfer_workload(
    actors: Actors,
    chain_id: str,
    count: int,
    *,
    nonces: dict[bytes, int] | None = None,
    expiry_height: int = 1_000,
    fee: int = FEE,
) -> list[SignedTx]:
    """``count`` transfers from the buyers (round robin) to the host."""
    nonces = {} if nonces is None else nonces
    out = []
    payload = Transfer(actors.host.address, 100).encode()
    for i in range(count):
        b = actors.buyers[i % len(actors.buyers)]
        nonce = nonces.get(b.address, 0)
        nonces[b.address] = nonce + 1
        body = TxBody(nonce, fee, expiry_height, "transfer", payload)
        out.append(sign_tx(b, chain_id, body))
    return out


# --- the executor-level run ---


def _state(actors: Actors) -> dict[bytes, bytes]:
    accounts = [actors.registrar, actors.merchant, actors.host, *actors.buyers]
    state = {account_key(k.address): Account(10**12, 0).encode() for k in accounts}
    state.update(commerce_genesis_state(commerce_genesis(actors)))
    return state


def _apply(state: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    out = dict(state)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _verify(txs: list[SignedTx], registry: object, params: ChainParams) -> list[VerifiedTx]:
    return [verify_signed_tx(t.encode(), CHAIN, registry, params.max_tx_bytes) for t in txs]  # type: ignore[arg-type]  # SignedTx list


def run_executor(args: argparse.Namespace) -> None:
    registry = default_registry()
    register(registry)
    executor = Executor(registry)
    params = ChainParams(max_block_txs=MAX_BLOCK_TXS, max_block_bytes=MAX_BLOCK_BYTES)
    actors = make_actors(args.buyers)
    t0_ms = 1_700_000_000_000
    nonces: dict[bytes, int] = {}
    workload = live_session_workload(actors, CHAIN, t0_ms + 3_000, nonces=nonces)

    # Setup blocks, once.
    state = _state(actors)
    height = 0
    for block in workload.setup:
        height += 1
        ctx = BlockContext(CHAIN, height, t0_ms + 1_000 * height, bytes(20), params)
        result = executor.execute_block(state, _verify(block, registry, params), ctx, strict=True)
        assert all(r.ok for r in result.receipts), [r.message for r in result.receipts]
        state = _apply(state, result.changes)

    started = time.perf_counter()
    phases = [
        ("orders + tips", _verify(workload.orders, registry, params)),
        ("ships", _verify(workload.ships, registry, params)),
        ("confirms + reviews", _verify(workload.settle, registry, params)),
    ]
    verify_s = time.perf_counter() - started
    n_commerce = sum(len(v) for _, v in phases)
    # Every buyer bids on the one auction, in one block (apart from the mix).
    bids = bid_workload(actors.buyers, actors.enc_public, CHAIN, nonces=nonces)
    phases.append(("bids, one auction", _verify(bids, registry, params)))
    transfers = _verify(transfer_workload(actors, CHAIN, n_commerce), registry, params)

    # One pass to get each phase's pre-state (and to check everything succeeds).
    pre_states = []
    s = state
    commerce_keys = 0
    for i, (name, vtxs) in enumerate(phases):
        if i == len(phases) - 1:
            commerce_keys_mix = commerce_keys
        ctx = BlockContext(CHAIN, height + 1 + i, t0_ms + 10_000 + i * 1_000, bytes(20), params)
        pre_states.append((s, vtxs, ctx))
        result = executor.execute_block(s, vtxs, ctx, strict=True)
        bad = [r for r in result.receipts if not r.ok]
        assert not bad, f"{name}: {bad[0].code}: {bad[0].message}"
        commerce_keys += len(result.changes)
        s = _apply(s, result.changes)
    transfer_ctx = BlockContext(CHAIN, height + 1, t0_ms + 10_000, bytes(20), params)
    transfer_keys = len(executor.execute_block(state, transfers, transfer_ctx, strict=True).changes)

    def best(fn: object) -> float:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()  # type: ignore[operator]  # callables in a mixed tuple
            times.append(time.perf_counter() - t)
        return min(times)

    phase_secs = []
    for name, (pre, vtxs, ctx) in zip((p[0] for p in phases), pre_states, strict=True):
        secs = best(
            lambda pre=pre, vtxs=vtxs, ctx=ctx: executor.execute_block(pre, vtxs, ctx, strict=True)
        )
        phase_secs.append((name, len(vtxs), secs))
    transfer_s = best(lambda: executor.execute_block(state, transfers, transfer_ctx, strict=True))
    _, n_bids, bids_s = phase_secs[-1]
    commerce_s = sum(secs for _, _, secs in phase_secs[:-1])
    commerce_tps = n_commerce / commerce_s
    auction_tps = n_bids / bids_s
    transfer_tps = len(transfers) / transfer_s
    # With one-thread verification added to each side (the node verifies each tx once).
    per_verify = verify_s / n_commerce
    commerce_pipe = 1 / (1 / commerce_tps + per_verify)
    transfer_pipe = 1 / (1 / transfer_tps + per_verify)

    print(f"{'phase':<22} {'txs':>7} {'us/tx':>8} {'tx/s':>9}")
    for name, count, secs in phase_secs:
        print(f"{name:<22} {count:>7} {secs / count * 1e6:>8.1f} {count / secs:>9.0f}")
    print(f"{'commerce mix':<22} {n_commerce:>7} {1e6 / commerce_tps:>8.1f} {commerce_tps:>9.0f}")
    print(f"{'transfers':<22} {len(transfers):>7} {1e6 / transfer_tps:>8.1f} {transfer_tps:>9.0f}")
    print(f"{'auction bids':<22} {n_bids:>7} {1e6 / auction_tps:>8.1f} {auction_tps:>9.0f}")
    print(
        f"{'verify_signed_tx':<22} {n_commerce:>7} {per_verify * 1e6:>8.1f} {1 / per_verify:>9.0f}"
    )
    print(
        f"\nwith 1-thread verification: commerce {commerce_pipe:.0f} tx/s, "
        f"transfers {transfer_pipe:.0f} tx/s, ratio {commerce_pipe / transfer_pipe:.2f}"
    )
    print(
        f"state keys written per tx (the state tree's cost at node level): commerce "
        f"{commerce_keys_mix / n_commerce:.2f}, transfers {transfer_keys / len(transfers):.2f}"
    )
    print(f"{args.buyers} buyers, execute_block strict, best of {args.repeat}")
    print("command: " + " ".join([".venv/bin/python -m benches.commerce", *sys.argv[1:]]))
    print(
        f"RESULT commerce_tps={commerce_tps:.0f} transfer_tps={transfer_tps:.0f} "
        f"ratio={commerce_tps / transfer_tps:.2f} auction_tps={auction_tps:.0f} "
        f"auction_ratio={auction_tps / transfer_tps:.2f}"
    )


# --- the node-level run ---


async def _submit(url: str, txs: list[SignedTx], batch: int, concurrency: int) -> int:
    """Send ``txs`` in msgpack batches, in order per lane (``concurrency`` lanes); return
    how many were accepted.

    A full mempool, or a nonce ahead of a batch still in the other lane (one sender's
    run: the merchant's ships), is sent again, as a client does; any other refusal
    fails the run.
    """
    chunks = [txs[i : i + batch] for i in range(0, len(txs), batch)]
    accepted = 0
    refused_before = REJECTED.copy()

    async def worker(session: aiohttp.ClientSession, mine: list[list[SignedTx]]) -> None:
        nonlocal accepted
        for chunk in mine:
            raws = [t.encode() for t in chunk]
            # Awaited first: "accepted += await ..." reads the total before the await
            # and loses the other lane's additions.
            done = await post_batch(session, url, raws, ("mempool_full", "nonce_gap"))
            accepted += done

    # Each lane sends its chunks in order; a nonce that arrives before an earlier one
    # of its account waits in the mempool's nonce window.
    lanes = [chunks[i::concurrency] for i in range(concurrency)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(worker(session, lane) for lane in lanes))
    refused = REJECTED - refused_before
    if refused:
        raise RuntimeError(f"transactions refused: {dict(refused)}")
    return accepted


async def _head(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/v1/status") as resp:
        return int((await resp.json())["height"])


async def _run_phase(
    url: str,
    txs: list[SignedTx],
    args: argparse.Namespace,
    start_height: int,
    *,
    in_order: bool = False,
) -> tuple[float, int]:
    """Submit a phase and follow blocks until all its txs are in; (seconds, last height).

    ``in_order``: one lane, chunk after chunk, for a phase whose transactions must
    reach blocks in the order signed. One sender's run (the merchant's shipments), as
    its client sends it: split over lanes, every chunk but the first arrived past a
    gap wider than the mempool queues per sender (``max_queued_per_sender``) and
    waited out the retry pauses. Bids on one auction, maxima rising: the fee ladder
    orders the bids a block takes, but a chunk admitted after a block took a later one
    bids below the price (a run failed 2,000 bids as ``bid_too_low`` that way).
    """
    started = time.perf_counter()
    lanes = 1 if in_order else args.concurrency
    submitter = asyncio.create_task(_submit(url, txs, args.batch, lanes))
    committed, height = 0, start_height
    async with aiohttp.ClientSession() as session:
        while committed < len(txs):
            head = await _head(session, url)
            while height < head:
                height += 1
                async with session.get(f"{url}/v1/blocks/{height}?txs=false") as resp:
                    committed += (await resp.json())["num_txs"]
            if submitter.done():
                submitter.result()  # raise a refusal at once
            await asyncio.sleep(0.01)
    await submitter
    return time.perf_counter() - started, height


async def _get(url: str, path: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url + path) as resp:
        return await resp.json()


async def _wait_height(url: str, height: int) -> None:
    while (await _get(url, "/v1/status"))["height"] < height:
        await asyncio.sleep(0.02)


async def _order_ids(url: str, orders: list[SignedTx]) -> list[int]:
    """Each buyer's order id, from its order's receipt (orders alternate with tips)."""
    sem = asyncio.Semaphore(32)

    async def order_id(session: aiohttp.ClientSession, signed: SignedTx) -> int:
        async with sem, session.get(f"{url}/v1/txs/{tx_hash(signed.encode()).hex()}") as resp:
            events = (await resp.json())["receipt"]["events"]
        return next(int(e["attrs"]["order"]) for e in events if e["kind"] == ORDER_PLACED)

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(order_id(session, t) for t in orders[::2])))


async def _failures(url: str, first: int, last: int) -> dict[str, int]:
    """Failed receipts of blocks ``first..last`` by tx type and code (diagnostics)."""
    counts: dict[str, int] = {}
    for height in range(first, last + 1):
        block = await _get(url, f"/v1/blocks/{height}")
        for t in block["txs"]:
            receipt = (await _get(url, f"/v1/txs/{t['hash']}"))["receipt"]
            if receipt["code"] != "ok":
                key = f"{t['type']}:{receipt['code']}"
                counts[key] = counts.get(key, 0) + 1
                if counts[key] == 1:
                    print(f"{key}: {receipt['message']}", flush=True)
    return counts


async def run_node(args: argparse.Namespace) -> None:
    from benches.common import (
        CpuPhase,
        Devnet,
        cpu_table,
        fund_accounts,
        main_process_us,
        stage_table,
    )
    from genesis import create_localnet

    with tempfile.TemporaryDirectory(prefix="ll-bench-commerce-") as tmp:
        root = Path(tmp) / "devnet"
        layout = create_localnet(root, 1, "", block_interval_ms=args.block_ms)
        faucet = load_key(layout.faucet_key_path, "")
        base = make_actors(args.buyers)
        # The devnet's registrar is its faucet (genesis commerce section).
        actors = Actors(faucet, base.merchant, base.host, base.buyers, base.enc_public)
        fund_accounts(root, [actors.merchant, actors.host, *actors.buyers], 10**12)
        # The merchant ships every order of the flash deal: its queue must hold them
        # all (node-local mempool setting; the default 64 would meter shipping).
        config_path = root / "node0" / "config.json"
        config = json.loads(config_path.read_text())
        config["mempool"]["per_account_cap"] = max(64, args.buyers + 16)
        config_path.write_text(json.dumps(config))
        # The auction's bidders: the buyers of one mempool shard, where a block takes
        # transactions by fee (shards take turns), so the fee ladder orders their bids.
        shards = config["mempool"]["shards"]
        bidders = [b for b in actors.buyers if int.from_bytes(b.address[:8], "big") % shards == 0]
        net = Devnet(root, 1)
        net.start()
        try:
            url = net.nodes[0]["url"]
            genesis = (await _get(url, "/v1/genesis"))["genesis"]
            status = await _get(url, "/v1/status")
            chain_id, params = genesis["chain_id"], genesis["params"]
            expiry = status["height"] + params["max_expiry_blocks"] // 2
            nonces: dict[bytes, int] = {}
            n, fee = args.buyers, params["min_fee"]

            def transfers(count: int) -> list[SignedTx]:
                return transfer_workload(
                    actors, chain_id, count, nonces=nonces, expiry_height=expiry, fee=fee
                )

            # Signed in the order they run, as nonces must be: the live session's
            # setup (unmeasured), then each commerce phase after a transfer phase of
            # its size, interleaved so that both sides see the same node and load.
            start_ms = status["latest_block_time_ms"]
            first_transfers = transfers(2 * n)
            workload = live_session_workload(
                actors,
                chain_id,
                start_ms,
                nonces=nonces,
                expiry_height=expiry,
                fee=fee,
                settle=False,
            )
            height = status["height"]
            for block in workload.setup:
                _, height = await _run_phase(url, block, args, height)
            commerce_start = height + 1
            transfer_phases, commerce_phases = [], []
            cpu: list[CpuPhase] = []
            for name in ("orders + tips", "ships", "confirms + reviews"):
                if name == "orders + tips":
                    plain, chunk = first_transfers, workload.orders
                elif name == "ships":
                    plain, chunk = transfers(n), workload.ships
                else:
                    plain = transfers(2 * n)
                    # Each buyer settles the order it really got (ids follow block order).
                    ids = await _order_ids(url, workload.orders)
                    chunk = settle_workload(
                        actors, chain_id, ids, nonces=nonces, expiry_height=expiry, fee=fee
                    )
                await _wait_height(url, height + 1)
                label = f"transfers ({len(plain) // n}N)"
                before = await asyncio.to_thread(net.cpu_seconds)
                secs, height = await _run_phase(url, plain, args, height)
                cpu.append((label, len(plain), before, await asyncio.to_thread(net.cpu_seconds)))
                transfer_phases.append((label, len(plain), secs))
                await _wait_height(url, height + 1)
                before = await asyncio.to_thread(net.cpu_seconds)
                secs, height = await _run_phase(url, chunk, args, height, in_order=name == "ships")
                cpu.append((name, len(chunk), before, await asyncio.to_thread(net.cpu_seconds)))
                commerce_phases.append((name, len(chunk), secs))

            # The auction: as many transfers from the bidders, then their bids.
            plain = transfer_workload(
                Actors(actors.registrar, actors.merchant, actors.host, bidders, actors.enc_public),
                chain_id,
                len(bidders),
                nonces=nonces,
                expiry_height=expiry,
                fee=fee,
            )
            bids = bid_workload(
                bidders,
                actors.enc_public,
                chain_id,
                nonces=nonces,
                expiry_height=expiry,
                fee=fee,
                fee_ladder=True,
            )
            await _wait_height(url, height + 1)
            # In one lane as the bids go (``in_order``): a like-for-like pace to compare.
            secs, height = await _run_phase(url, plain, args, height, in_order=True)
            auction_phases = [("transfers (bidders)", len(plain), secs)]
            await _wait_height(url, height + 1)
            secs, height = await _run_phase(url, bids, args, height, in_order=True)
            auction_phases.append(("bids, one auction", len(bids), secs))
            lot = (await _get(url, "/v1/auctions/1"))["auction"]
            leader = bidder_tag(1, bidders[-1].address)
            want = (len(bidders), leader, final_price(len(bidders)))
            if (lot["bids"], lot["leader"], lot["price"]) != want:
                codes = await _failures(url, height - 20, height)
                raise RuntimeError(
                    f"auction run incomplete: bids, leader, price {lot['bids']}, "
                    f"{lot['leader']}, {lot['price']}, expected {want}; failed receipts: {codes}"
                )

            # Every commerce transaction did what it should (failures would count as txs).
            deal = (await _get(url, "/v1/deals/1"))["deal"]
            merchant = (
                await _get(url, f"/v1/merchants/{format_address(actors.merchant.address)}")
            )["merchant"]
            escrow = (await _get(url, "/v1/commerce"))["escrow"]
            if (deal["sold"], merchant["rating_count"], escrow["open_orders"]) != (n, n, 0):
                codes = await _failures(url, commerce_start, height)
                raise RuntimeError(
                    f"commerce run incomplete: sold {deal['sold']}, reviews "
                    f"{merchant['rating_count']}, open orders {escrow['open_orders']}; "
                    f"failed receipts by type and code: {codes}"
                )
        finally:
            net.stop()

    def tps(phases: list[tuple[str, int, float]]) -> float:
        return sum(c for _, c, _ in phases) / sum(s for _, _, s in phases)

    print(f"{'phase':<22} {'txs':>7} {'seconds':>8} {'tx/s':>9}")
    pairs = zip(transfer_phases, commerce_phases, strict=True)
    for name, count, secs in [p for pair in pairs for p in pair]:
        print(f"{name:<22} {count:>7} {secs:>8.2f} {count / secs:>9.0f}")
    for name, count, secs in auction_phases:
        print(f"{name:<22} {count:>7} {secs:>8.2f} {count / secs:>9.0f}")
    commerce_tps, transfer_tps = tps(commerce_phases), tps(transfer_phases)
    auction_tps = tps(auction_phases[1:])
    print(f"{'commerce mix':<22} {5 * n:>7} {'':>8} {commerce_tps:>9.0f}")
    print(f"{'transfers':<22} {5 * n:>7} {'':>8} {transfer_tps:>9.0f}")
    print(f"{'auction bids':<22} {len(bidders):>7} {'':>8} {auction_tps:>9.0f}")
    # CPU per transaction does not move with block ticks as a phase's rate does.
    print(cpu_table(cpu))
    print(stage_table(cpu))
    # What one core (the GIL) must do per transaction: the rates' ratio at saturation.
    commerce_us = main_process_us([c for c in cpu if not c[0].startswith("transfers")])
    transfer_us = main_process_us([c for c in cpu if c[0].startswith("transfers")])
    cpu_ratio = transfer_us / commerce_us if commerce_us else float("nan")
    print(
        f"event loop + consensus thread per tx: commerce mix {commerce_us:.1f} us, "
        f"transfers {transfer_us:.1f} us -> {cpu_ratio:.2f}"
    )
    print(
        f"{n} buyers ({len(bidders)} bidders), 1 validator, block interval {args.block_ms} ms, "
        f"batches of {args.batch} x {args.concurrency} concurrent"
    )
    print("command: " + " ".join([".venv/bin/python -m benches.commerce", *sys.argv[1:]]))
    bids_vs = auction_tps / tps(auction_phases[:1])
    print(
        f"RESULT commerce_tps={commerce_tps:.0f} transfer_tps={transfer_tps:.0f} "
        f"ratio={commerce_tps / transfer_tps:.2f} auction_tps={auction_tps:.0f} "
        f"auction_ratio={bids_vs:.2f} cpu_ratio={cpu_ratio:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--buyers",
        type=int,
        default=None,
        help="Node level 20,000, executor level 4,000 (each phase is one block there).",
    )
    ap.add_argument("--executor", action="store_true", help="Executor level, no node.")
    ap.add_argument("--repeat", type=int, default=5, help="Executor level: best of this many.")
    ap.add_argument("--block-ms", type=int, default=200, help="Node level: block interval.")
    ap.add_argument("--batch", type=int, default=2_000, help="Node level: txs per HTTP request.")
    ap.add_argument("--concurrency", type=int, default=2, help="Node level: requests in flight.")
    args = ap.parse_args(argv)
    if args.buyers is None:
        args.buyers = 4_000 if args.executor else 20_000
    if args.executor:
        with node_gc():
            run_executor(args)
    else:
        asyncio.run(run_node(args))


if __name__ == "__main__":
    main()
