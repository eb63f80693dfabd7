"""Mempool admission and selection throughput, beside the signature-check ceiling.

    python -m benches.mempool [--accounts 2000] [--per-account 10] [--batch 1000] [--block 10000]

Submits pre-signed transfers (nonce rounds, so every batch holds one nonce of
many senders) in batches, awaiting each batch as one API client would, then
again with two batches in flight; times ``select`` for one block and
``on_block_committed`` for it. State is an in-memory dict, so the figures
leave out state-tree reads. The ceilings are measured in the same run:
raw Ed25519 verifications and full stateless checks (``verify_signed_tx``)
on the same threads the mempool uses.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shlex
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from core.keys import PrivateKey, SignDomain, verify
from core.types import SignedTx, TxBody, sign_tx
from node.mempool import Mempool, MempoolConfig
from vm.accounts import Account, account_key
from vm.executor import Executor, verify_signed_tx
from vm.params import ChainParams
from vm.registry import default_registry
from vm.transfer import Transfer

CHAIN = "bench-mempool"


class DictState:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


def make_txs(accounts: int, per_account: int) -> tuple[list[bytes], DictState]:
    keys = [PrivateKey(hashlib.sha256(b"bench-%d" % i).digest()) for i in range(accounts)]
    state = DictState()
    for k in keys:
        state.data[account_key(k.address)] = Account(10**15, 0).encode()
    sink = bytes(20)
    raws = [
        sign_tx(k, CHAIN, TxBody(n, 1_000, 1_000, "transfer", Transfer(sink, 1).encode())).encode()
        for n in range(per_account)
        for k in keys
    ]
    return raws, state


def signature_rate(raws: list[bytes], threads: int) -> float:
    """Bare Ed25519 verifications per second on ``threads`` threads."""
    txs = [SignedTx.decode(r) for r in raws]

    def run(part: list[SignedTx]) -> None:
        for tx in part:
            verify(tx.sender, SignDomain.TX, CHAIN, tx.body, tx.signature)

    return _threaded(run, txs, threads)


def stateless_rate(raws: list[bytes], threads: int, max_tx_bytes: int) -> float:
    """``verify_signed_tx`` (decode + signature + payload) per second on ``threads`` threads."""
    registry = default_registry()

    def run(part: list[bytes]) -> None:
        for raw in part:
            verify_signed_tx(raw, CHAIN, registry, max_tx_bytes)

    return _threaded(run, raws, threads)


def _threaded(fn, items: list, threads: int) -> float:
    step = -(-len(items) // threads)
    parts = [items[i : i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(fn, parts))
        elapsed = time.perf_counter() - started
    return len(items) / elapsed


def new_mempool(
    state: DictState, params: ChainParams, pool: ThreadPoolExecutor, threads: int
) -> Mempool:
    registry = default_registry()
    config = MempoolConfig(verify_threads=threads)
    return Mempool(CHAIN, registry, Executor(registry), params, state, lambda: 0, config, pool)


async def admit(mempool: Mempool, raws: list[bytes], batch: int, in_flight: int) -> float:
    """Seconds to submit ``raws`` in batches, at most ``in_flight`` batches at a time."""
    batches = [raws[i : i + batch] for i in range(0, len(raws), batch)]
    limit = asyncio.Semaphore(in_flight)
    accepted = 0

    async def one(b: list[bytes]) -> None:
        nonlocal accepted
        async with limit:
            results = await mempool.submit(b)
        accepted += sum(r.accepted for r in results)

    started = time.perf_counter()
    # Tasks start in order, so nonce rounds still arrive in order.
    await asyncio.gather(*(one(b) for b in batches))
    elapsed = time.perf_counter() - started
    if accepted != len(raws):
        raise SystemExit(f"expected {len(raws)} accepted, got {accepted}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benches.mempool")
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--per-account", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--block", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is shown")
    args = ap.parse_args(argv)
    params = ChainParams()
    total = args.accounts * args.per_account

    print("$ " + shlex.join([sys.executable, "-m", "benches.mempool", *sys.argv[1:]]))
    print(f"signing {total} transfers from {args.accounts} accounts ...", flush=True)
    raws, base_state = make_txs(args.accounts, args.per_account)
    avg_size = sum(map(len, raws)) / len(raws)

    rows: list[tuple[str, str]] = []
    sig = max(signature_rate(raws, args.threads) for _ in range(args.repeat))
    stateless = max(
        stateless_rate(raws, args.threads, params.max_tx_bytes) for _ in range(args.repeat)
    )

    with ThreadPoolExecutor(args.threads, thread_name_prefix="verify") as pool:
        admit_rates: dict[int, float] = {}
        for in_flight in (1, 2):
            best = 0.0
            for _ in range(args.repeat):
                state = DictState()
                state.data = dict(base_state.data)
                mempool = new_mempool(state, params, pool, args.threads)
                elapsed = asyncio.run(admit(mempool, raws, args.batch, in_flight))
                best = max(best, total / elapsed)
            admit_rates[in_flight] = best

        # Selection and commit on a full pool (the last one admitted).
        select_ms: list[float] = []
        for _ in range(max(5, args.repeat)):
            started = time.perf_counter()
            block = mempool.select(args.block, params.max_block_bytes)
            select_ms.append((time.perf_counter() - started) * 1000)
        picked = len(block)
        # Mark the block executed in state so the commit re-reads real nonces.
        for vtx in block:
            a = Account.decode(state.data[account_key(vtx.sender_address)])
            state.data[account_key(vtx.sender_address)] = Account(
                a.balance - vtx.body.fee, a.nonce + 1
            ).encode()
        started = time.perf_counter()
        mempool.on_block_committed([v.hash for v in block])
        commit_ms = (time.perf_counter() - started) * 1000
        left = len(mempool)

    rows += [
        ("transactions", f"{total} x {avg_size:.0f} B, {args.accounts} senders"),
        ("verify threads", str(args.threads)),
        ("Ed25519 verify ceiling", f"{sig:,.0f} sig/s"),
        ("verify_signed_tx ceiling", f"{stateless:,.0f} tx/s"),
        (f"admitted, batches of {args.batch}", f"{admit_rates[1]:,.0f} tx/s"),
        ("admitted, 2 batches in flight", f"{admit_rates[2]:,.0f} tx/s"),
        (
            f"select {args.block} of {total}",
            f"{statistics.median(select_ms):.1f} ms median "
            f"(min {min(select_ms):.1f}), {picked} picked",
        ),
        (f"on_block_committed({picked})", f"{commit_ms:.1f} ms, {left} left"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
