"""LevelDB's background CPU for a big state's writes: the tree's nodes in a database of their own, beside the chain's records, in one database, keyed by hash, snappy.

    .venv/bin/python -m benches.compaction [--base 2500000] [--mb 200] [--per-block 50000]
        [--nodes-per-tx 21]

What a validator at 1M accounts writes most is state tree nodes: a 41-byte key
(prefix, the version that made the node, its hash) and an 86-byte value of two
child references, which do not compress. With them, per transaction (one per
``--nodes-per-tx`` nodes: a fresh account's path at 1M accounts is ~21 nodes), a
block writes the chain's records: the flat state's copy of a value and a tx index
entry, both under keys of random hashes, and a receipt under its height. Each side,
in a child process of its own: a store of ``--base`` nodes (and their share of
records) is written and compacted (a big state, as ``prebuild_state`` leaves it),
then ``--mb`` MB more of nodes go in write batches of ``--per-block`` nodes (a
block's new nodes each) with their records. LevelDB flushes and compacts on its own
threads; the figure is the process's CPU beyond the writing thread's from the first
batch until the compactions have settled (no CPU used for a second).

- ``node``: as ``storage.ChainStore`` keeps them (since tree layout 5): the nodes,
  keyed by version (each key leads with its batch's number, 8 bytes big-endian), in
  a database of their own and the records in another, both opened as the store opens
  them (tables without compression);
- ``one``: the same writes in one database (layout 3 and 4, before session 30):
  every flushed table then holds random keys beside the nodes, so it spans the
  whole key space;
- ``hash``: as ``one``, with nodes keyed by their hash alone (layout 2, before
  session 28): every batch's nodes span the whole key space too;
- ``snappy``: as ``hash``, with snappy, LevelDB's default (the node's before session 27).

Last line:

    RESULT node_cpu_s=<n> one_cpu_s=<n> hash_cpu_s=<n> snappy_cpu_s=<n> ratio=<node/one>
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
from storage.chain_store import TREE_DIR, open_store_db
from storage.db import RECEIPT, STATE, TREE_NODE, TX_INDEX, Database
from storage.state_tree import internal_encoding

SIDES = ("node", "one", "hash", "snappy")


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


def _records(n: int, height: int, position: int) -> list[tuple[bytes, bytes]]:
    """The chain's records of transaction ``n`` (at ``position`` in block ``height``):
    a flat state value and a tx index entry under random keys, a receipt by height."""
    digest = hashlib.blake2b(b"tx%d" % n, digest_size=64).digest()
    at = height.to_bytes(8, "big") + position.to_bytes(4, "big")
    return [
        (STATE + b"\x01" + digest[:20], digest[20:60]),
        (TX_INDEX + digest[32:], at),
        (RECEIPT + at, digest * 3),
    ]


def run_side(
    side: str, path: Path, base: int, mb: int, per_block: int, nodes_per_tx: int
) -> dict[str, float]:
    """One side in this process: the figures ``main`` prints."""
    if side == "node":
        nodes_db, records_db = open_store_db(path / TREE_DIR), open_store_db(path)
        dbs = (nodes_db, records_db)
    else:
        nodes_db = records_db = Database(path, compression="snappy" if side == "snappy" else None)
        dbs = (nodes_db,)
    by_height = side in ("node", "one")
    try:

        def write(first: int, count: int, height: int) -> None:
            nodes = nodes_db.new_batch(sync=False)
            records = nodes if records_db is nodes_db else records_db.new_batch(sync=False)
            for i in range(first, first + count):
                nodes.put(*_entry(i, height if by_height else None))
                if i % nodes_per_tx == 0:
                    for key, value in _records(i, height, (i - first) // nodes_per_tx):
                        records.put(key, value)
            nodes_db.write(nodes)
            if records is not nodes:
                records_db.write(records)

        for first in range(0, base, per_block):
            write(first, min(per_block, base - first), 0)
        for db in dbs:
            db.compact()
        base_bytes = dir_bytes(path)
        entries = mb * 1_000_000 // sum(map(len, _entry(0)))
        started, cpu0, thread0 = time.perf_counter(), _process_cpu_s(), time.thread_time()
        i, height = base, 1
        while i < base + entries:
            count = min(per_block, base + entries - i)
            write(i, count, height)
            i += count
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
        for db in dbs:
            db.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=2_500_000, help="entries in the store first")
    ap.add_argument("--mb", type=int, default=200, help="MB of entries written then")
    ap.add_argument("--per-block", type=int, default=50_000, help="nodes per write batch")
    ap.add_argument(
        "--nodes-per-tx", type=int, default=21, help="nodes per transaction's chain records"
    )
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        figures = run_side(
            args.side, args.dir, args.base, args.mb, args.per_block, args.nodes_per_tx
        )
        print(json.dumps(figures))
        return
    results = {}
    for side in SIDES:
        with tempfile.TemporaryDirectory(prefix="ll-bench-compaction-") as tmp:
            child = [sys.executable, "-m", "benches.compaction", "--side", side]
            child += ["--dir", str(Path(tmp) / "db"), "--base", str(args.base)]
            child += ["--mb", str(args.mb), "--per-block", str(args.per_block)]
            child += ["--nodes-per-tx", str(args.nodes_per_tx)]
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
    print(
        f"{args.base:,} nodes, then {args.mb} MB of nodes in batches of {args.per_block:,}, "
        f"with a transaction's records per {args.nodes_per_tx} nodes"
    )
    print("command: " + " ".join([".venv/bin/python -m benches.compaction", *sys.argv[1:]]))
    node, one, by_hash, snappy = (results[side]["background_s"] for side in SIDES)
    print(
        f"RESULT node_cpu_s={node:.2f} one_cpu_s={one:.2f} hash_cpu_s={by_hash:.2f} "
        f"snappy_cpu_s={snappy:.2f} ratio={node / max(one, 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
