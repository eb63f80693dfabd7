"""What pruning old state versions costs a node with a big state, beside the blocks.

    .venv/bin/python -m benches.prune [--keys 1000000] [--changes 2000]
        [--blocks 300] [--keep 100] [--interval 50] [--prebuilt DIR] [--seed 1]
        [--dir DIR]

A ``ChainStore`` (real LevelDB in a temporary directory) starts from a state of
``--keys`` keys (``benches.state_tree``'s genesis; with ``--prebuilt DIR`` built
once there and copied). It then commits ``--blocks`` blocks of ``--changes``
random changes each (70% updates, 20% inserts, 10% deletes) as the node does
(``prepare_state``, then ``commit_block``), and every ``--interval`` blocks, once
the chain is longer than ``--keep``, runs a pruning pass as the node's pruner
does (``prune_states(height - keep + 1)``), here on the same thread so that each
is timed alone. Per pass: the state versions it let go, the tree nodes it
deleted, its thread CPU and wall time, and how much it raised the process's
peak RSS. The blocks' figure is the thread CPU of ``prepare_state`` and
``commit_block`` per block (median).

Last line: ``RESULT prune_ms_per_version=<n> commit_ms_per_block=<n>
ratio=<prune per version / commit per block> peak_rise_mb=<n>``: what a node
spends to forget one version, against what it spent to make it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time

from benches.state_tree import (
    GENESIS,
    apply_live,
    empty_block,
    genesis_state,
    peak_rss_mb,
    prebuilt_store,
    random_changes,
)
from storage import TREE_DIR, ChainStore


def _tree_mb(path: str) -> float:
    tree = os.path.join(path, TREE_DIR)
    return sum(e.stat().st_size for e in os.scandir(tree) if e.is_file()) / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys in the genesis state")
    ap.add_argument("--changes", type=int, default=2000, help="state changes per block")
    ap.add_argument("--blocks", type=int, default=300, help="blocks committed")
    ap.add_argument("--keep", type=int, default=100, help="state versions kept (keep_states)")
    ap.add_argument("--interval", type=int, default=50, help="a pass every this many blocks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prebuilt", default=None, help="where the genesis store is built once")
    ap.add_argument("--dir", default=None, help="where the temporary LevelDB goes")
    args = ap.parse_args(argv)
    if args.keep < 1 or args.interval < 1 or args.blocks <= args.keep:
        ap.error("--keep and --interval must be positive, and --blocks more than --keep")

    rng = random.Random(args.seed)
    state = genesis_state(rng, args.keys)
    live = list(state)
    live_set = set(live)
    prebuilt = None if not args.prebuilt else prebuilt_store(args.prebuilt, args.keys, args.seed)
    if prebuilt is not None:
        del state  # the store has it
    commits: list[float] = []
    passes: list[tuple[int, int, int, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-prune-", dir=args.dir) as tmp:
        path = os.path.join(tmp, "db")
        if prebuilt is not None:
            shutil.copytree(prebuilt, path)
        store = ChainStore(path)
        if prebuilt is None:
            store.initialize(GENESIS, state)
            del state
        prev = GENESIS
        for _ in range(args.blocks):
            changes = random_changes(rng, live, args.changes)
            for key in changes:
                store.state_get(key)  # execution reads what it writes (untimed)
            c0 = time.thread_time()
            update = store.prepare_state(changes)
            block, commit = empty_block(store.height + 1, prev, update.root)
            store.commit_block(block, commit, [], changes, update)
            commits.append(time.thread_time() - c0)
            prev = block.hash
            apply_live(live, live_set, changes)
            height = store.height
            if height % args.interval == 0 and height > args.keep:
                base = store.state_base
                peak = peak_rss_mb()
                c0, t0 = time.thread_time(), time.perf_counter()
                deleted = store.prune_states(height - args.keep + 1)
                cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
                let_go = store.state_base - base
                passes.append((height, let_go, deleted, cpu, wall, peak_rss_mb() - peak))
        tree_mb = _tree_mb(path)
        store.close()

    print(
        f"prune: {args.keys:,} keys, {args.blocks} blocks of {args.changes:,} changes, "
        f"keep {args.keep} versions, a pass every {args.interval} blocks"
        + (" (prebuilt genesis)" if prebuilt else "")
    )
    commit_s = statistics.median(commits)
    print(f"blocks: {commit_s * 1e3:.1f} ms of thread CPU per block (median, update + commit)")
    print(f"{'height':>7} | {'let go':>6} | {'deleted':>9} | {'CPU':>9} | {'wall':>9} | peak rise")
    for height, let_go, deleted, cpu, wall, rise in passes:
        print(
            f"{height:>7} | {let_go:>6} | {deleted:>9,} | {cpu:>7.2f} s | {wall:>7.2f} s | "
            f"{rise:.0f} MB"
        )
    print(f"tree database at the end: {tree_mb:.0f} MB")
    versions = sum(p[1] for p in passes)
    per_version = sum(p[3] for p in passes) / max(1, versions)
    rise = max((p[5] for p in passes), default=0.0)
    print(
        f"RESULT prune_ms_per_version={per_version * 1e3:.2f} "
        f"commit_ms_per_block={commit_s * 1e3:.2f} ratio={per_version / commit_s:.3f} "
        f"peak_rise_mb={rise:.0f}"
    )


if __name__ == "__main__":
    main()
