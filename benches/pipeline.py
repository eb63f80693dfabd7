"""The node's own CPU per transaction in a one-validator transfer flood, in-process.

    .venv/bin/python -m benches.pipeline [--accounts 4000] [--blocks 8] [--batch 2000] [--ahead 1]

What the main process of a loaded validator does per transaction besides the
signature checks (which run in worker processes): admission (``Mempool.submit``
with the workers' verdicts given, so ``complete_checked`` and the stateful
checks run as in the node), ``select``, ``Chain.build``, ``Chain.commit`` and
``on_block_committed``, over a real ChainStore with ``--accounts`` funded
senders, each paying one sink (as ``benches.throughput`` does). Each block
takes one nonce of every sender; ``--ahead`` rounds of nonces are admitted
before the first block, so senders hold pending transactions across commits as
under a flood. Figures are this thread's CPU time (``time.thread_time``) per
transaction, the best block of the run (a shared machine's noise only adds).
The GC is tuned as the node tunes it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from core import Commit, CommitSig, PrivateKey, TxBody, Vote, VoteType, sign_tx
from core.keystore import load_key
from genesis import GenesisAccount, create_localnet, load_genesis
from node.chain import Chain
from node.config import MempoolConfig
from node.mempool import Mempool
from node.run import tune_gc
from node.service import build_registry
from storage import ChainStore
from vm import Transfer

STAGES = ("submit", "select", "build", "commit", "after_commit")


class _Verified:
    """The verification workers' side of ``ProcessVerifier``: every envelope passes
    (the transactions were signed here), so the node's own work is what is timed."""

    async def check(
        self, raws: Sequence[bytes], chain_id: str, max_tx_bytes: int
    ) -> list[tuple[str, str] | None]:
        return [None] * len(raws)


def run(
    root: Path, accounts: int, blocks: int, batch: int, ahead: int, per_block: int
) -> dict[str, float]:
    layout = create_localnet(root / "net", 1, "")
    g = load_genesis(layout.genesis_path)
    keys = [PrivateKey(hashlib.sha256(b"pipeline-%d" % i).digest()) for i in range(accounts)]
    funded = tuple(GenesisAccount(k.address, 10**12) for k in keys)
    g = replace(g, accounts=g.accounts + funded)
    producer = load_key(layout.nodes[0].key_path, "")
    chain = Chain(ChainStore(root / "db"), g, build_registry())
    sink = keys[0].address
    rounds = [
        [
            sign_tx(
                k,
                g.chain_id,
                TxBody(n, g.params.min_fee, 3_000, "transfer", Transfer(sink, 1).encode()),
            ).encode()
            for n in range(r * per_block, (r + 1) * per_block)
            for k in keys
        ]
        for r in range(blocks + ahead)
    ]
    mempool = Mempool(
        g.chain_id,
        chain.registry,
        chain.executor,
        chain.params,
        chain.state,
        lambda: chain.height,
        MempoolConfig(),
        verifier=_Verified(),  # type: ignore[arg-type]  # the workers' verdicts, given
    )
    loop = asyncio.new_event_loop()
    tune_gc()
    clock = time.thread_time

    def admit(raws: list[bytes]) -> None:
        for k in range(0, len(raws), batch):
            results = loop.run_until_complete(mempool.submit(raws[k : k + batch], client=True))
            refused = [r for r in results if not r.accepted]
            if refused:
                raise SystemExit(f"refused: {refused[:3]}")

    for raws in rounds[:ahead]:
        admit(raws)
    best = dict.fromkeys(STAGES, float("inf"))
    for b, raws in enumerate(rounds[ahead:]):
        t0 = clock()
        admit(raws)
        t1 = clock()
        picked = mempool.select(len(raws), chain.params.max_block_bytes)
        t2 = clock()
        executed = chain.build(picked, producer, chain.next_block_time(int(time.time() * 1000)))
        t3 = clock()
        included = executed.result.included
        if len(included) != len(raws):
            raise SystemExit(f"block {b}: {len(included)} of {len(raws)} transactions included")
        h = executed.block.header
        vote = Vote.create(producer, g.chain_id, VoteType.PRECOMMIT, h.height, 0, h.hash)
        chain.commit(
            executed, Commit(h.height, 0, h.hash, (CommitSig(vote.validator, vote.signature),))
        )
        t4 = clock()
        # As ``Node.after_commit`` calls it.
        mempool.set_params(chain.params)
        mempool.on_block_committed((), included=included)
        t5 = clock()
        if b == 0:
            continue  # warm-up: first reads of every account, codecs built
        for name, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            best[name] = min(best[name], dt / len(raws))
    loop.close()
    mempool.close()
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=4000, help="senders, one transaction per block")
    ap.add_argument("--blocks", type=int, default=8, help="blocks timed (after one warm-up)")
    ap.add_argument("--batch", type=int, default=2000, help="transactions per submit call")
    ap.add_argument("--ahead", type=int, default=1, help="blocks' worth admitted before block 1")
    ap.add_argument(
        "--per-block",
        type=int,
        default=1,
        help="nonces of every sender per block (a flood's blocks hold several)",
    )
    args = ap.parse_args(argv)
    if args.blocks < 2:
        ap.error("--blocks must be at least 2 (the first is a warm-up)")
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        best = run(root, args.accounts, args.blocks, args.batch, args.ahead, args.per_block)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'stage':<14} {'us/tx':>7}")
    for name in STAGES:
        print(f"{name:<14} {best[name] * 1e6:>7.2f}")
    total = sum(best.values())
    print(f"{'total':<14} {total * 1e6:>7.2f}   ({1 / total:,.0f} tx/s of one core)")
    print(
        f"\n{args.accounts} senders, {args.per_block} transactions each per block, "
        f"thread CPU time, best of {args.blocks - 1} blocks"
    )
    print("command: " + " ".join([".venv/bin/python -m benches.pipeline", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
