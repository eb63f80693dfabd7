"""LevelDB's background CPU for a big state's writes: tree nodes keyed by version, by hash, snappy.

    .venv/bin/python -m benches.compaction [--base 2500000] [--mb 200] [--per-block 50000]

What a validator at 1M accounts writes most is state tree nodes: a 41-byte key
(prefix, the version that made the node, its hash) and an 86-byte value of two
child references, which do not compress. Each side, in a child process of its own:
a store of ``--base``
such entries is written and compacted (a big state, as ``prebuild_state`` leaves
it), then ``--mb`` MB more go in write batches of ``--per-block`` entries (a
block's new nodes each). LevelDB flushes and compacts on its own thread; the
figure is the process's CPU beyond the writing thread's from the first batch
until the compactions have settled (no CPU used for a second).

- ``node``: ``storage.Database`` as the node opens it (tables without compression),
  each key leading with its batch's number (8 bytes, big-endian) as a node's version
  does (since tree layout 3);
- ``hash``: as ``node``, but keyed by the hash alone (layout 2, the node's before
  session 28): each batch spans the whole key space;
- ``snappy``: as ``hash``, with snappy, LevelDB's default (the node's before session 27).

Last line:

    RESULT node_cpu_s=<n> hash_cpu_s=<n> snappy_cpu_s=<n> ratio=<node/hash>
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benches.common import dir_bytes
from storage.db import TREE_NODE, Database
from storage.state_tree import internal_encoding

SIDES = ("node", "hash", "snappy")


def _entry(i: int, version: int | None = None) -> tuple[bytes, bytes]:
    """A tree node's key and value (children's references); with ``version``, the key
    leads with it."""
    node_hash = hashlib.blake2b(i.to_bytes(8, "big"), digest_size=32).digest()
    children = hashlib.blake2b(node_hash, digest_size=64).digest()
    key = TREE_NODE + (b"" if version is None else version.to_bytes(8, "big")) + node_hash
    at = (version or 0).to_bytes(8, "big")
    return key, internal_encoding(at + children[:32], at + children[32:])


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_side(side: str, path: Path, base: int, mb: int, per_block: int) -> dict[str, float]:
    """One side in this process: the figures ``main`` prints."""
    db = Database(path, compression="snappy" if side == "snappy" else None)
    try:
        by_height = side == "node"
        batch = db.new_batch(sync=False)
        for i in range(base):
            batch.put(*_entry(i, 0 if by_height else None))
            if len(batch) == per_block:
                db.write(batch)
                batch = db.new_batch(sync=False)
        db.write(batch)
        db.compact()
        base_bytes = dir_bytes(path)
        entries = mb * 1_000_000 // sum(map(len, _entry(0)))
        started, cpu0, thread0 = time.perf_counter(), _process_cpu_s(), time.thread_time()
        i, height = base, 1
        while i < base + entries:
            batch = db.new_batch(sync=False)
            for _ in range(min(per_block, base + entries - i)):
                batch.put(*_entry(i, height if by_height else None))
                i += 1
            db.write(batch)
            height += 1
        writer_s = time.thread_time() - thread0
        while True:
            before = _process_cpu_s()
            time.sleep(1.0)
            if _process_cpu_s() - before < 0.02:
                break
        background_s = _process_cpu_s() - cpu0 - writer_s
        wall_s = time.perf_counter() - started - 1.0
        return {
            "background_s": background_s,
            "writer_s": writer_s,
            "wall_s": wall_s,
            "base_mb": base_bytes / 1e6,
            "growth_mb": (dir_bytes(path) - base_bytes) / 1e6,
        }
    finally:
        db.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=2_500_000, help="entries in the store first")
    ap.add_argument("--mb", type=int, default=200, help="MB of entries written then")
    ap.add_argument("--per-block", type=int, default=50_000, help="entries per write batch")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        figures = run_side(args.side, args.dir, args.base, args.mb, args.per_block)
        print(json.dumps(figures))
        return
    results = {}
    for side in SIDES:
        with tempfile.TemporaryDirectory(prefix="ll-bench-compaction-") as tmp:
            child = [sys.executable, "-m", "benches.compaction", "--side", side]
            child += ["--dir", str(Path(tmp) / "db"), "--base", str(args.base)]
            child += ["--mb", str(args.mb), "--per-block", str(args.per_block)]
            out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            results[side] = json.loads(out.splitlines()[-1])
    print(
        f"{'side':<8} {'LevelDB CPU s':>14} {'writer s':>9} {'wall s':>7} {'base MB':>8} {'+MB':>6}"
    )
    for side, r in results.items():
        print(
            f"{side:<8} {r['background_s']:>14.2f} {r['writer_s']:>9.2f} {r['wall_s']:>7.1f} "
            f"{r['base_mb']:>8.0f} {r['growth_mb']:>6.0f}"
        )
    print(f"{args.base:,} entries, then {args.mb} MB in batches of {args.per_block:,}")
    print("command: " + " ".join([".venv/bin/python -m benches.compaction", *sys.argv[1:]]))
    node, by_hash, snappy = (results[side]["background_s"] for side in SIDES)
    print(
        f"RESULT node_cpu_s={node:.2f} hash_cpu_s={by_hash:.2f} snappy_cpu_s={snappy:.2f} "
        f"ratio={node / max(by_hash, 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
