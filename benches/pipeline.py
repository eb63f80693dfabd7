"""The node's own CPU per transaction in a one-validator flood, in-process.

    .venv/bin/python -m benches.pipeline [--accounts 4000] [--blocks 8] [--batch 2000] [--ahead 1]
    .venv/bin/python -m benches.pipeline --flashdeal [--state-accounts 1000000] [--accounts 2000]

What the main process of a loaded validator does per transaction besides the
signature checks (which run in worker processes): admission (``Mempool.submit``
with the workers' verdicts given, so ``complete_checked`` and the stateful
checks run as in the node), ``select``, ``Chain.build``, ``Chain.commit`` and
``on_block_committed``, over a real ChainStore. Figures are this thread's CPU
time (``time.thread_time``) per transaction, the best block of the run (a shared
machine's noise only adds). The GC is tuned as the node tunes it.

The transfer flood (the default): ``--accounts`` funded senders, each paying one
sink (as ``benches.throughput`` does). Each block takes ``--per-block`` nonces of
every sender; ``--ahead`` rounds of nonces are admitted before the first block, so
senders hold pending transactions across commits as under a flood.

``--flashdeal``: the consensus side of ``benches.flashdeal`` on one thread. A state
of ``--state-accounts`` funded accounts (default 1,000,000) is built first, its
tree's upper levels loaded as a node loads them after a start; a live session runs
flash deals (``benches.flashdeal.live_setup``). Two workloads of the same shape are
timed on the same chain, alternating block by block: every block holds ``--accounts``
buyers who have not sent before, each placing one order and tipping the host, or as
many fresh senders, each sending two transfers to one sink. The ratio of the two
totals is what the flash-deal storm's ratio tracks where the consensus thread is
the limit.

``--commerce``: the phases of ``benches.commerce`` on one thread, each beside a block
of as many transfers from the same buyers (as that bench interleaves them): per
group of ``--accounts`` buyers, two transfers each, then an order and a tip each;
one transfer each, then the merchant's shipment of every order (one sender); two
transfers each, then a confirmation and a review each. Where the node-level bench
says how much more a commerce transaction costs, this says in which stage.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from apps.commerce import payloads as tx
from apps.commerce.events import ORDER_PLACED
from benches.common import node_gc, prebuild_state
from benches.flashdeal import Signer, keys, live_setup, order_txs
from core import Commit, CommitSig, PrivateKey, TxBody, Vote, VoteType, sign_tx
from core.keystore import load_key
from genesis import Genesis, GenesisAccount, create_localnet, load_genesis
from node.chain import Chain
from node.config import MempoolConfig
from node.mempool import Mempool
from node.service import build_registry
from node.verifier import PassedEnvelopes
from storage import ChainStore
from vm import Receipt, Transfer, VerifiedTx

# ``Chain.build`` in two: its transactions' execution, and what comes after the last
# one ran (the state tree's update, the roots, the block's encoding), split in the
# proportion of ``ExecutedBlock``'s wall-clock figures.
STAGES = ("submit", "select", "execute", "build_after", "commit", "after_commit")


class _Verified:
    """``ProcessVerifier`` with its workers' side given: every envelope passes (the
    transactions were signed here), so the node's own work is what is timed, its
    memory of passes included."""

    def __init__(self) -> None:
        self.passed = PassedEnvelopes()

    async def check(
        self,
        raws: Sequence[bytes],
        chain_id: str,
        max_tx_bytes: int,
        hashes: Sequence[bytes | None] | None = None,
    ) -> list[tuple[str, str] | None]:
        todo = self.passed.unknown(raws, chain_id, max_tx_bytes, hashes)
        return self.passed.merge(len(raws), todo, [None] * len(todo), hashes, chain_id)


class _Node:
    """A one-validator chain and its mempool, driven block by block on this thread."""

    def __init__(
        self,
        root: Path,
        genesis: Genesis,
        producer: PrivateKey,
        batch: int,
        mempool: MempoolConfig | None = None,
    ) -> None:
        self.genesis, self.producer, self.batch = genesis, producer, batch
        self.chain = Chain(ChainStore(root), genesis, build_registry())
        chain = self.chain
        self.mempool = Mempool(
            genesis.chain_id,
            chain.registry,
            chain.executor,
            chain.params,
            chain.state,
            lambda: chain.height,
            mempool or MempoolConfig(),
            verifier=_Verified(),  # type: ignore[arg-type]  # the workers' verdicts, given
        )
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()
        self.mempool.close()
        self.chain.store.close()

    def warm(self) -> None:
        """Load the state tree's upper levels, as a node does after a start."""
        start = 1
        while start:
            start = self.chain.store.warm_tree(start)

    def admit(self, raws: list[bytes]) -> None:
        for k in range(0, len(raws), self.batch):
            results = self.loop.run_until_complete(
                self.mempool.submit(raws[k : k + self.batch], client=True)
            )
            refused = [r for r in results if not r.accepted]
            if refused:
                raise SystemExit(f"refused: {refused[:3]}")

    def block(self, raws: list[bytes]) -> tuple[dict[str, float], Included]:
        """Admit ``raws`` and run them through one block: each stage's CPU seconds, and
        what the block included (with how many state keys it wrote)."""
        clock = time.thread_time
        chain, mempool = self.chain, self.mempool
        t0 = clock()
        self.admit(raws)
        t1 = clock()
        picked = mempool.select(len(raws), chain.params.max_block_bytes)
        t2 = clock()
        executed = chain.build(
            picked, self.producer, chain.next_block_time(int(time.time() * 1000))
        )
        t3 = clock()
        included = executed.result.included
        if len(included) != len(raws):
            raise SystemExit(
                f"block of {len(included)} of {len(raws)} transactions: "
                f"{executed.result.rejected[:3]}"
            )
        h = executed.block.header
        vote = Vote.create(
            self.producer, self.genesis.chain_id, VoteType.PRECOMMIT, h.height, 0, h.hash
        )
        chain.commit(
            executed, Commit(h.height, 0, h.hash, (CommitSig(vote.validator, vote.signature),))
        )
        t4 = clock()
        # As ``Node.after_commit`` calls it.
        mempool.set_params(chain.params)
        mempool.on_block_committed(
            (), included=included, result=executed.result, result_height=h.height
        )
        t5 = clock()
        # Every transaction must have done its work (checked outside the timed stages).
        bad = [r for r in executed.result.receipts if not r.ok]
        if bad:
            raise SystemExit(f"{len(bad)} transactions failed: {bad[0].code}: {bad[0].message}")
        after = (t3 - t2) * executed.after_seconds / max(executed.execute_seconds, 1e-9)
        times = (t1 - t0, t2 - t1, t3 - t2 - after, after, t4 - t3, t5 - t4)
        result = executed.result
        return dict(zip(STAGES, times, strict=True)), Included(
            included, result.receipts, len(result.changes)
        )


@dataclass(frozen=True)
class Included:
    """What a block took: its transactions, their receipts, the state keys it wrote."""

    txs: Sequence[VerifiedTx]
    receipts: Sequence[Receipt]
    keys_written: int


def _best(into: dict[str, float], stages: dict[str, float], txs: int) -> None:
    for name, seconds in stages.items():
        into[name] = min(into.get(name, float("inf")), seconds / txs)


def _localnet(root: Path) -> tuple[Genesis, PrivateKey, PrivateKey]:
    """A one-validator localnet in ``root``: its genesis, its producer's key and its
    faucet's key (the commerce registrar)."""
    layout = create_localnet(root, 1, "")
    producer = load_key(layout.nodes[0].key_path, "")
    return load_genesis(layout.genesis_path), producer, load_key(layout.faucet_key_path, "")


def run(
    root: Path, accounts: int, blocks: int, batch: int, ahead: int, per_block: int
) -> dict[str, float]:
    """The transfer flood: best CPU seconds per transaction of each stage."""
    g, producer, _ = _localnet(root / "net")
    keys_ = [PrivateKey(hashlib.sha256(b"pipeline-%d" % i).digest()) for i in range(accounts)]
    funded = tuple(GenesisAccount(k.address, 10**12) for k in keys_)
    g = replace(g, accounts=g.accounts + funded)
    sink = keys_[0].address
    rounds = [
        [
            sign_tx(
                k,
                g.chain_id,
                TxBody(n, g.params.min_fee, 3_000, "transfer", Transfer(sink, 1).encode()),
            ).encode()
            for n in range(r * per_block, (r + 1) * per_block)
            for k in keys_
        ]
        for r in range(blocks + ahead)
    ]
    node = _Node(root / "db", g, producer, batch)
    best: dict[str, float] = {}
    # The GC tuned as the node tunes it; the process's own tuning is back after.
    try:
        with node_gc():
            for raws in rounds[:ahead]:
                node.admit(raws)
            for b, raws in enumerate(rounds[ahead:]):
                stages, _ = node.block(raws)
                if b:  # the first is a warm-up: first reads of every account, codecs built
                    _best(best, stages, len(raws))
    finally:
        node.close()
    return best


@dataclass(frozen=True)
class FlashFigures:
    # Best CPU seconds per transaction of each stage.
    transfers: dict[str, float]
    orders: dict[str, float]
    # State keys written per transaction (a block's changes over its transactions).
    transfer_keys: float
    order_keys: float


def run_flashdeal(
    root: Path, accounts: int, blocks: int, batch: int, state_accounts: int, deals: int
) -> FlashFigures:
    """Orders and tips of fresh buyers against transfers of fresh senders, alternating
    block by block on one chain: best CPU seconds per transaction of each stage."""
    g, producer, faucet = _localnet(root)
    merchant, host = keys(0, 2)
    per_side = accounts * blocks
    buyers = keys(10, per_side)
    senders = keys(10 + per_side, per_side)
    named = [k.address for k in (merchant, host, *buyers, *senders)]
    others = (os.urandom(20) for _ in range(max(0, state_accounts - len(named))))
    prebuild_state(root, 1, (*named, *others), 10**10, "funded accounts")
    # ``prebuild_state`` wrote node0's store: the one this node opens.
    node = _Node(root / "node0" / "data", g, producer, batch)
    try:
        with node_gc():
            started = time.perf_counter()
            node.warm()
            print(f"state tree upper levels loaded in {time.perf_counter() - started:.1f} s")
            sign = Signer(g.chain_id, g.params.min_fee, g.params.max_expiry_blocks // 2)
            start_ms = node.chain.next_block_time(int(time.time() * 1000))
            allocation = -(-per_side // deals)
            setup, order_payloads = live_setup(
                sign, faucet, merchant, host, deals, allocation, start_ms
            )
            for raws in setup:
                node.block(raws)
            sink = Transfer(host.address, 1).encode()
            transfers: dict[str, float] = {}
            orders: dict[str, float] = {}
            written = {"transfers": 0, "orders": 0}
            for b in range(blocks):
                fresh = slice(b * accounts, (b + 1) * accounts)
                sides = (
                    (
                        "transfers",
                        transfers,
                        [sign(s, "transfer", sink) for s in senders[fresh] for _ in range(2)],
                    ),
                    ("orders", orders, order_txs(sign, buyers[fresh], deals, 0, order_payloads)),
                )
                for name, figures, raws in sides:
                    stages, took = node.block(raws)
                    written[name] += took.keys_written
                    if b:  # the first of each is a warm-up
                        _best(figures, stages, len(raws))
    finally:
        node.close()
    txs = 2 * per_side
    return FlashFigures(transfers, orders, written["transfers"] / txs, written["orders"] / txs)


# ``run_commerce``'s blocks, in the order each group of buyers runs them: a commerce
# phase after a transfer block of its size (as ``benches.commerce`` interleaves them).
COMMERCE_BLOCKS = (
    "transfers 2N",
    "orders + tips",
    "transfers 1N",
    "ships",
    "transfers 2N'",
    "confirms + reviews",
)


def run_commerce(root: Path, buyers: int, groups: int, batch: int) -> dict[str, dict[str, float]]:
    """``benches.commerce``'s phases block by block, each after a block of as many
    transfers from the same buyers: best CPU seconds per transaction of each stage, by
    block kind (``COMMERCE_BLOCKS``). ``groups`` groups of ``buyers`` run in turn, each
    through every kind; the first group's blocks are a warm-up."""
    g, producer, faucet = _localnet(root / "net")
    merchant, host = keys(0, 2)
    everyone = keys(10, buyers * groups)
    funded = tuple(GenesisAccount(k.address, 10**12) for k in (merchant, host, *everyone))
    g = replace(g, accounts=g.accounts + funded)
    # The merchant's shipments are one sender's run: its queue must hold a block of them.
    pool = MempoolConfig(per_account_cap=buyers + 16)
    node = _Node(root / "db", g, producer, batch, pool)
    best: dict[str, dict[str, float]] = {name: {} for name in COMMERCE_BLOCKS}
    try:
        with node_gc():
            sign = Signer(g.chain_id, g.params.min_fee, g.params.max_expiry_blocks // 2)
            start_ms = node.chain.next_block_time(int(time.time() * 1000))
            setup, payloads = live_setup(sign, faucet, merchant, host, 1, len(everyone), start_ms)
            for raws in setup:
                node.block(raws)
            sink = Transfer(host.address, 1).encode()

            def signed(
                name: str, mine: list[PrivateKey], order_of: dict[bytes, int]
            ) -> list[bytes]:
                # Signed as each block comes: shipments and settlements name the order
                # ids the block of orders handed out (in the order the mempool chose).
                if name == "orders + tips":
                    return order_txs(sign, mine, 1, 0, payloads)
                if name == "ships":
                    return [
                        sign(
                            merchant,
                            tx.SHIP_ORDER,
                            tx.ShipOrder(i, i.to_bytes(32, "big"), ()).encode(),
                        )
                        for i in sorted(order_of.values())
                    ]
                if name == "confirms + reviews":
                    out = []
                    for k in mine:
                        ref = tx.OrderRef(order_of[k.address])
                        review = tx.WriteReview(ref.order_id, 5, "great stream deal")
                        out.append(sign(k, tx.CONFIRM_DELIVERY, ref.encode()))
                        out.append(sign(k, tx.REVIEW, review.encode()))
                    return out
                each = 1 if name == "transfers 1N" else 2
                return [sign(k, "transfer", sink) for k in mine for _ in range(each)]

            for group in range(groups):
                mine = everyone[group * buyers : (group + 1) * buyers]
                order_of: dict[bytes, int] = {}
                for name in COMMERCE_BLOCKS:
                    raws = signed(name, mine, order_of)
                    stages, took = node.block(raws)
                    if name == "orders + tips":
                        order_of.update(_order_ids(took))
                    if group:
                        _best(best[name], stages, len(raws))
    finally:
        node.close()
    return best


def _order_ids(took: Included) -> dict[bytes, int]:
    """Each buyer's order id, from the receipts of a block of orders."""
    ids = {}
    for vtx, receipt in zip(took.txs, took.receipts, strict=True):
        for event in receipt.events:
            if event.kind == ORDER_PLACED:
                ids[vtx.sender_address] = next(
                    int(a.value) for a in event.attrs if a.key == "order"
                )
    return ids


def _table(columns: dict[str, dict[str, float]]) -> str:
    head = f"{'stage':<14}" + "".join(f" {name:>10}" for name in columns)
    rows = [head]
    for stage in STAGES:
        rows.append(f"{stage:<14}" + "".join(f" {c[stage] * 1e6:>10.2f}" for c in columns.values()))
    rows.append(
        f"{'total':<14}" + "".join(f" {sum(c.values()) * 1e6:>10.2f}" for c in columns.values())
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--accounts",
        type=int,
        help="senders, one transaction per block (default 4000); with --flashdeal, fresh "
        "buyers and senders per block (default 2000)",
    )
    ap.add_argument("--blocks", type=int, default=8, help="blocks timed (after one warm-up)")
    ap.add_argument("--batch", type=int, default=2000, help="transactions per submit call")
    ap.add_argument("--ahead", type=int, default=1, help="blocks' worth admitted before block 1")
    ap.add_argument(
        "--per-block",
        type=int,
        default=1,
        help="nonces of every sender per block (a flood's blocks hold several)",
    )
    ap.add_argument(
        "--flashdeal", action="store_true", help="orders and tips against transfers, fresh senders"
    )
    ap.add_argument(
        "--commerce",
        action="store_true",
        help="benches.commerce's phases, each beside a block of transfers of its size",
    )
    ap.add_argument(
        "--state-accounts", type=int, default=1_000_000, help="with --flashdeal: accounts in state"
    )
    ap.add_argument("--deals", type=int, default=4, help="with --flashdeal: deals in the session")
    args = ap.parse_args(argv)
    if args.blocks < 2:
        ap.error("--blocks must be at least 2 (the first is a warm-up)")
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    command = "command: " + " ".join([".venv/bin/python -m benches.pipeline", *sys.argv[1:]])
    if args.commerce:
        accounts = args.accounts or 2000
        try:
            commerce = run_commerce(root, accounts, args.blocks, args.batch)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(_table(commerce))
        # Weighted as benches.commerce's phases are: two transactions per buyer but
        # for the shipments (and the transfer block beside them).
        total = {name: sum(c.values()) for name, c in commerce.items()}
        transfer_s = (
            2 * total["transfers 2N"] + total["transfers 1N"] + 2 * total["transfers 2N'"]
        ) / 5
        commerce_s = (
            2 * total["orders + tips"] + total["ships"] + 2 * total["confirms + reviews"]
        ) / 5
        print(
            f"\n{accounts} buyers per group, {args.blocks - 1} groups timed after one; "
            "thread CPU time, best block of each kind"
        )
        print(command)
        print(
            f"RESULT commerce_us={commerce_s * 1e6:.2f} transfer_us={transfer_s * 1e6:.2f} "
            f"ratio={transfer_s / commerce_s:.3f}"
        )
        return
    try:
        if args.flashdeal:
            accounts = args.accounts or 2000
            flash = run_flashdeal(
                root, accounts, args.blocks, args.batch, args.state_accounts, args.deals
            )
        else:
            accounts = args.accounts or 4000
            best = run(root, accounts, args.blocks, args.batch, args.ahead, args.per_block)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not args.flashdeal:
        print(_table({"us/tx": best}))
        total = sum(best.values())
        print(f"\n{1 / total:,.0f} tx/s of one core")
        print(
            f"{accounts} senders, {args.per_block} transactions each per block, "
            f"thread CPU time, best of {args.blocks - 1} blocks"
        )
        print(command)
        return
    print(_table({"transfers": flash.transfers, "orders": flash.orders}))
    print(f"{'state keys/tx':<14} {flash.transfer_keys:>10.2f} {flash.order_keys:>10.2f}")
    transfer_s, order_s = sum(flash.transfers.values()), sum(flash.orders.values())
    print(
        f"\n{accounts} fresh buyers (orders and tips) against {accounts} fresh senders "
        f"(two transfers each) per block, alternating; state {args.state_accounts:,} "
        f"accounts; thread CPU time, best of {args.blocks - 1} blocks each"
    )
    print(command)
    print(
        f"RESULT order_us={order_s * 1e6:.2f} transfer_us={transfer_s * 1e6:.2f} "
        f"ratio={transfer_s / order_s:.3f}"
    )


if __name__ == "__main__":
    main()
