"""State tree cost per block: batch update, commit, get, prove and verify.

    .venv/bin/python -m benches.state_tree [--keys 100000] [--changes 1000,10000]
        [--blocks 5] [--samples 2000] [--seed 1] [--dir DIR] [--prebuilt DIR]
        [--warmup N] [--cache ENTRIES]

Initializes a ``ChainStore`` (real LevelDB in a temporary directory) with a
state of ``--keys`` keys (29-byte keys, 64-byte values), then for each N in
``--changes`` commits ``--blocks`` consecutive blocks of N state changes (70%
updates of existing keys, 20% inserts, 10% deletes), each on the previous
block's root, as the node does: ``prepare_state`` (the tree update, timed as
"update") then ``commit_block`` (one synced batch with the new nodes, timed as
"commit"; the blocks carry no transactions, so it is the state's share). Each
block's keys are read (``state_get``, untimed) before its update, as execution
reads them, so the update finds their old values in the state cache. Then
times ``get``, ``prove`` and ``verify_proof`` for random present keys at the
head. Times are wall clock on one thread; the tree cache starts filled by the
genesis build, as on a node that just initialized.

With ``--prebuilt DIR`` the genesis store is built once in DIR (by a child
process, so its ~2 GB peak is not this process's) and each run measures a copy of
it, opened with an empty cache as a restarted node would: the build is skipped
after the first run, and the peak RSS printed is the blocks' own (tree and state
caches, LevelDB's caches, the updates in flight). ``--warmup N`` commits N
untimed blocks of the first size first, to fill the caches as a running node's
are; ``--warm-slots`` first loads the tree's slot levels as a node does after a
start (``ChainStore.warm_tree``), printing how long that took. Per block size it also prints the tree nodes read from LevelDB per block
(cache misses: a deterministic figure, for a given hash seed) and each update's
CPU time on its thread, which a loaded machine inflates much less than the wall
clock (run with PYTHONHASHSEED=0 to draw the same changes every run).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from core.hashing import ZERO_HASH
from core.types import Block, BlockHeader, Commit
from storage import ChainStore, verify_proof
from storage.state_tree import DEFAULT_TREE_CACHE_SIZE, TREE_LAYOUT

GENESIS = b"\x42" * 32


def empty_block(height: int, prev: bytes, state_root: bytes) -> tuple[Block, Commit]:
    """A block at ``height`` with no transactions and its (unsigned) commit: what a
    bench commits to store a state of its own making."""
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


def random_changes(rng: random.Random, live: list[bytes], n: int) -> dict[bytes, bytes | None]:
    """``n`` changes: 70% updates of keys in ``live``, 10% deletes of them, 20% inserts."""
    changes: dict[bytes, bytes | None] = {}
    for key in rng.sample(live, int(n * 0.8)):
        changes[key] = rng.randbytes(64)
    deletes = list(changes)[: int(n * 0.1)]
    for key in deletes:
        changes[key] = None
    while len(changes) < n:
        changes[b"acct/" + rng.randbytes(24)] = rng.randbytes(64)
    return changes


def apply_live(live: list[bytes], live_set: set[bytes], changes: dict[bytes, bytes | None]) -> None:
    """The keys present after ``changes``, in ``live`` (a list, to sample) and ``live_set``."""
    for key, value in changes.items():
        if value is None:
            live_set.discard(key)
        else:
            live_set.add(key)
    live[:] = list(live_set)


@dataclass
class _Row:
    """Per-block figures for one block size."""

    changes: int
    updates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    commits: list[float] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def _rss() -> str:
    """Resident memory now: anonymous (the heap) and file pages (LevelDB's mmapped tables)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                fields[name] = int(rest.split()[0]) / 1024  # kB
    return f"{fields['RssAnon']:.0f} MB heap + {fields['RssFile']:.0f} MB files"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def genesis_state(rng: random.Random, keys: int) -> dict[bytes, bytes]:
    return {b"acct/" + rng.randbytes(24): rng.randbytes(64) for _ in range(keys)}


def prebuild(path: str, keys: int, seed: int) -> None:
    """Build the genesis store at ``path`` (the ``--build-only`` child's work)."""
    state = genesis_state(random.Random(seed), keys)
    started = time.perf_counter()
    with ChainStore(path) as store:
        store.initialize(GENESIS, state)
        # Compacted, as benches.common.prebuild_state does: otherwise every open replays
        # the one big write batch from LevelDB's log into memory (hundreds of MB of RSS).
        store.compact()
    print(f"prebuilt {keys:,} keys at {path} in {time.perf_counter() - started:.2f} s")


def prebuilt_store(where: str, keys: int, seed: int) -> str:
    """The path of a genesis store of ``keys`` keys (``genesis_state``) under
    ``where``, built the first time by a child process (so that its ~2 GB peak is
    not the caller's): a bench copies it and opens the copy."""
    # The layout in the name: a store built by code of another layout is refused
    # (``ChainStore``), and a run of that code beside this one keeps its own.
    path = os.path.join(where, f"keys{keys}-seed{seed}-layout{TREE_LAYOUT}")
    if not os.path.exists(path):
        child = [sys.executable, "-m", "benches.state_tree", "--build-only", path]
        subprocess.run([*child, "--keys", str(keys), "--seed", str(seed)], check=True)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--changes", default="1000,10000")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--warmup", type=int, default=0, help="untimed blocks of the first size, to fill caches"
    )
    ap.add_argument(
        "--warm-slots", action="store_true", help="load the slot levels first, as a started node"
    )
    ap.add_argument("--cache", type=int, default=DEFAULT_TREE_CACHE_SIZE, help="tree cache entries")
    ap.add_argument("--dir", default=None, help="where the temporary LevelDB goes")
    ap.add_argument(
        "--prebuilt", default=None, help="genesis store kept here between runs (built if absent)"
    )
    ap.add_argument("--build-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_only:
        prebuild(args.build_only, args.keys, args.seed)
        return
    sizes = [int(x) for x in args.changes.split(",")]
    rng = random.Random(args.seed)

    prebuilt = None if not args.prebuilt else prebuilt_store(args.prebuilt, args.keys, args.seed)
    state = genesis_state(rng, args.keys)
    live = list(state)
    live_set = set(live)
    if prebuilt is not None:
        del state  # the store has it
    with tempfile.TemporaryDirectory(prefix="bench-state-", dir=args.dir) as tmp:
        path = os.path.join(tmp, "db")
        genesis_s = 0.0
        if prebuilt is not None:
            shutil.copytree(prebuilt, path)
            store = ChainStore(path, tree_cache_size=args.cache)
        else:
            store = ChainStore(path, tree_cache_size=args.cache)
            started = time.perf_counter()
            store.initialize(GENESIS, state)
            del state
            genesis_s = time.perf_counter() - started
        open_rss = _rss()
        prev = GENESIS
        warmed = ""
        if args.warm_slots:
            reads_before = store.tree.store_reads
            t0 = time.perf_counter()
            pos = 1
            while pos:
                pos = store.warm_tree(pos)
            warmed = (
                f"; slot levels loaded in {time.perf_counter() - t0:.2f} s "
                f"({store.tree.store_reads - reads_before:,} nodes read)"
            )

        def run_blocks(n: int, count: int) -> _Row:
            nonlocal prev
            row = _Row(n)
            for _ in range(count):
                changes = random_changes(rng, live, n)
                # Execution reads what it writes before the update (untimed here):
                # the values it leaves in the state cache spare the old leaves' reads.
                for key in changes:
                    store.state_get(key)
                reads_before = store.tree.store_reads
                c0 = time.thread_time()
                t0 = time.perf_counter()
                update = store.prepare_state(changes)
                t1 = time.perf_counter()
                row.cpu.append(time.thread_time() - c0)
                row.reads.append(store.tree.store_reads - reads_before)
                block, commit = empty_block(store.height + 1, prev, update.root)
                store.commit_block(block, commit, [], changes, update)
                t2 = time.perf_counter()
                row.updates.append(t1 - t0)
                row.commits.append(t2 - t1)
                row.nodes.append(len(update.nodes))
                prev = block.hash
                apply_live(live, live_set, changes)
            return row

        if args.warmup:
            run_blocks(sizes[0], args.warmup)
        rows = [run_blocks(n, args.blocks) for n in sizes]
        blocks_rss = _rss()

        root = store.head_ref
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

    built = (
        "prebuilt, opened with empty caches"
        if prebuilt
        else f"genesis build+write {genesis_s:.2f} s"
    )
    print(
        f"state tree: {args.keys:,} keys; {built}; "
        f"{args.blocks} blocks per size (70% update / 20% insert / 10% delete){warmed}"
    )
    print(
        f"{'changes/block':>13} | {'update median':>13} | {'update best':>11} | "
        f"{'commit median':>13} | {'new nodes':>9} | {'per change':>10} | {'node reads':>10}"
    )
    for row in rows:
        n = row.changes
        med = statistics.median(row.updates)
        print(
            f"{n:>13,} | {_ms(med):>13} | {_ms(min(row.updates)):>11} | "
            f"{_ms(statistics.median(row.commits)):>13} | {int(statistics.mean(row.nodes)):>9,} | "
            f"{med / n * 1e6:>7.1f} us | {int(statistics.median(row.reads)):>10,}"
        )
        print(f"{'':>13}   updates (ms): " + " ".join(f"{u * 1e3:.0f}" for u in row.updates))
        print(f"{'':>13}   update thread CPU (ms): " + " ".join(f"{u * 1e3:.0f}" for u in row.cpu))
    print(f"{'operation':>13} | {'per call':>13}")
    print(f"{'get':>13} | {get_s * 1e6:>10.1f} us")
    print(f"{'prove':>13} | {prove_s * 1e6:>10.1f} us")
    print(f"{'verify_proof':>13} | {verify_s * 1e6:>10.1f} us")
    print(f"proofs: {depth:.1f} siblings on average, {size:.0f} bytes encoded")
    print(
        f"RSS: {open_rss} once open, {blocks_rss} after the blocks, "
        f"peak {peak_rss_mb():.0f} MB" + ("" if prebuilt else " (includes the genesis build)")
    )
    cache = "" if args.cache == DEFAULT_TREE_CACHE_SIZE else f" --cache {args.cache}"
    if args.prebuilt:
        cache += f" --prebuilt {args.prebuilt}"
    if args.warmup:
        cache += f" --warmup {args.warmup}"
    if args.warm_slots:
        cache += " --warm-slots"
    print(
        "reproduce: .venv/bin/python -m benches.state_tree "
        f"--keys {args.keys} --changes {args.changes} --blocks {args.blocks} "
        f"--samples {args.samples} --seed {args.seed}{cache}"
    )


if __name__ == "__main__":
    main()
