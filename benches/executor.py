"""Block execution cost per transfer over a dict-backed state.

    .venv/bin/python -m benches.executor [--txs 10000] [--repeat 7]

Builds one block of signed transfers (each from a distinct funded sender to a
random recipient, the worst case for account caching), verifies them once,
then times ``Executor.execute_block`` (strict and building) on a fresh
``Overlay`` each run, with the cyclic GC tuned as the node tunes it
(``benches.common.node_gc``). Also times the stateless ``verify_signed_tx`` on one
thread, which the node spreads over a pool.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from benches.common import node_gc
from core.keys import PrivateKey
from core.types import TxBody, sign_tx
from vm import (
    Account,
    BlockContext,
    ChainParams,
    Executor,
    Registry,
    Transfer,
    TxType,
    account_key,
    default_registry,
    verify_signed_tx,
)

CHAIN = "bench-chain"


def _build(n: int, seed: int) -> tuple[dict[bytes, bytes], list[bytes]]:
    rng = random.Random(seed)
    keys = [PrivateKey(rng.randbytes(32)) for _ in range(n)]
    state = {account_key(k.address): Account(10**12, 0).encode() for k in keys}
    txs = []
    for k in keys:
        payload = Transfer(rng.randbytes(20), rng.randint(1, 10**6)).encode()
        body = TxBody(0, 1_000, 100, "transfer", payload)
        txs.append(sign_tx(k, CHAIN, body).encode())
    return state, txs


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]  # callables in a mixed tuple
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    state, encoded = _build(args.txs, args.seed)
    registry = default_registry()
    params = ChainParams.default()
    t0 = time.perf_counter()
    vtxs = [verify_signed_tx(e, CHAIN, registry, params.max_tx_bytes) for e in encoded]
    verify_s = time.perf_counter() - t0
    executor = Executor(registry)
    # The same block with a handler that does nothing: the executor's own share
    # (checks, fee, nonce, snapshot, receipt, the sender's decode and encode).
    noop = Registry()
    noop.register(TxType("transfer", Transfer, lambda state, tx, payload, ctx: None))
    ctx = BlockContext(CHAIN, 10, 0, bytes(20), params)
    result = executor.execute_block(state, vtxs, ctx, strict=True)
    assert len(result.receipts) == args.txs and all(r.ok for r in result.receipts)

    def run(ex: Executor, strict: bool) -> None:
        ex.execute_block(state, vtxs, ctx, strict=strict)

    n = args.txs
    with node_gc():
        rows = [
            ("verify_signed_tx (1 thread)", verify_s),
            ("execute_block strict", _best(lambda: run(executor, True), args.repeat)),
            ("execute_block build", _best(lambda: run(executor, False), args.repeat)),
            ("  of which executor (no-op)", _best(lambda: run(Executor(noop), True), args.repeat)),
        ]
    print(f"{'stage':<30} {'us/tx':>8} {'tx/s':>10}")
    for name, secs in rows:
        print(f"{name:<30} {secs / n * 1e6:>8.2f} {n / secs:>10.0f}")
    print(f"\n{n} transfers, distinct senders, best of {args.repeat}")
    print("command: " + " ".join([".venv/bin/python -m benches.executor", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
