"""State tree cost per block: batch update, commit, get, prove and verify.

    .venv/bin/python -m benches.state_tree [--keys 100000] [--changes 1000,10000]
        [--blocks 5] [--samples 2000] [--seed 1] [--dir DIR]

Initializes a ``ChainStore`` (real LevelDB in a temporary directory) with a
state of ``--keys`` keys (29-byte keys, 64-byte values), then for each N in
``--changes`` commits ``--blocks`` consecutive blocks of N state changes (70%
updates of existing keys, 20% inserts, 10% deletes), each on the previous
block's root, as the node does: ``prepare_state`` (the tree update, timed as
"update") then ``commit_block`` (one synced batch with the new nodes, timed as
"commit"; the blocks carry no transactions, so it is the state's share). Then
times ``get``, ``prove`` and ``verify_proof`` for random present keys at the
head. Times are wall clock on one thread; the tree cache starts filled by the
genesis build, as on a node that just initialized.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time

from core.hashing import ZERO_HASH
from core.types import Block, BlockHeader, Commit
from storage import ChainStore, verify_proof
from storage.state_tree import DEFAULT_CACHE_SIZE

GENESIS = b"\x42" * 32


def _block(height: int, prev: bytes, state_root: bytes) -> tuple[Block, Commit]:
    header = BlockHeader(
        "bench",
        height,
        0,
        height,
        prev,
        ZERO_HASH,
        state_root,
        ZERO_HASH,
        bytes(32),
        ZERO_HASH,
        None,
    )
    block = Block(header, ())
    return block, Commit(height, 0, block.hash, ())


def _changes(rng: random.Random, live: list[bytes], n: int) -> dict[bytes, bytes | None]:
    changes: dict[bytes, bytes | None] = {}
    for key in rng.sample(live, int(n * 0.8)):
        changes[key] = rng.randbytes(64)
    deletes = list(changes)[: int(n * 0.1)]
    for key in deletes:
        changes[key] = None
    while len(changes) < n:
        changes[b"acct/" + rng.randbytes(24)] = rng.randbytes(64)
    return changes


def _apply(live: list[bytes], live_set: set[bytes], changes: dict[bytes, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            live_set.discard(key)
        else:
            live_set.add(key)
    live[:] = list(live_set)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--changes", default="1000,10000")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cache", type=int, default=DEFAULT_CACHE_SIZE, help="tree cache entries")
    ap.add_argument("--dir", default=None, help="where the temporary LevelDB goes")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.changes.split(",")]
    rng = random.Random(args.seed)

    state = {b"acct/" + rng.randbytes(24): rng.randbytes(64) for _ in range(args.keys)}
    live = list(state)
    live_set = set(live)
    with tempfile.TemporaryDirectory(prefix="bench-state-", dir=args.dir) as tmp:
        store = ChainStore(os.path.join(tmp, "db"), tree_cache_size=args.cache)
        started = time.perf_counter()
        store.initialize(GENESIS, state)
        genesis_s = time.perf_counter() - started
        prev = GENESIS
        rows = []
        for n in sizes:
            updates, commits, nodes = [], [], []
            for _ in range(args.blocks):
                changes = _changes(rng, live, n)
                t0 = time.perf_counter()
                update = store.prepare_state(changes)
                t1 = time.perf_counter()
                block, commit = _block(store.height + 1, prev, update.root)
                store.commit_block(block, commit, [], changes, update)
                t2 = time.perf_counter()
                updates.append(t1 - t0)
                commits.append(t2 - t1)
                nodes.append(len(update.nodes))
                prev = block.hash
                _apply(live, live_set, changes)
            rows.append((n, updates, commits, nodes))

        root = store.head_root
        probe = rng.sample(live, min(args.samples, len(live)))
        tree = store.tree
        t0 = time.perf_counter()
        for key in probe:
            tree.get(root, key)
        get_s = (time.perf_counter() - t0) / len(probe)
        proofs = []
        t0 = time.perf_counter()
        for key in probe:
            proofs.append(store.prove(key))
        prove_s = (time.perf_counter() - t0) / len(probe)
        t0 = time.perf_counter()
        for key, (value, proof, at) in zip(probe, proofs, strict=True):
            verify_proof(at, key, value, proof)
        verify_s = (time.perf_counter() - t0) / len(probe)
        depth = statistics.mean(len(p.siblings) for _, p, _ in proofs)
        size = statistics.mean(len(p.encode()) for _, p, _ in proofs)
        store.close()

    print(
        f"state tree: {args.keys:,} keys; genesis build+write {genesis_s:.2f} s; "
        f"{args.blocks} blocks per size (70% update / 20% insert / 10% delete)"
    )
    print(
        f"{'changes/block':>13} | {'update median':>13} | {'update best':>11} | "
        f"{'commit median':>13} | {'new nodes':>9} | {'per change':>10}"
    )
    for n, updates, commits, nodes in rows:
        med = statistics.median(updates)
        print(
            f"{n:>13,} | {_ms(med):>13} | {_ms(min(updates)):>11} | "
            f"{_ms(statistics.median(commits)):>13} | {int(statistics.mean(nodes)):>9,} | "
            f"{med / n * 1e6:>7.1f} us"
        )
    print(f"{'operation':>13} | {'per call':>13}")
    print(f"{'get':>13} | {get_s * 1e6:>10.1f} us")
    print(f"{'prove':>13} | {prove_s * 1e6:>10.1f} us")
    print(f"{'verify_proof':>13} | {verify_s * 1e6:>10.1f} us")
    print(f"proofs: {depth:.1f} siblings on average, {size:.0f} bytes encoded")
    cache = "" if args.cache == DEFAULT_CACHE_SIZE else f" --cache {args.cache}"
    print(
        "reproduce: .venv/bin/python -m benches.state_tree "
        f"--keys {args.keys} --changes {args.changes} --blocks {args.blocks} "
        f"--samples {args.samples} --seed {args.seed}{cache}"
    )


if __name__ == "__main__":
    main()
