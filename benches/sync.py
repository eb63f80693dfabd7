"""Joining by state sync vs by replay, and disk with and without pruning (storage level).

    python -m benches.sync --blocks 10000 [--keys-per-block 40] [--chunk-bytes 1048576]
    nice python -m benches.sync --blocks 100000 --replay-during-build  # an hour or more

Builds a chain of ``--blocks`` blocks on a real LevelDB (deterministic state changes:
updates, inserts and deletes over a growing key set, as the storage tests use), then:

- **replay**: a fresh store applies every block's changes again (tree update and one
  synced commit per block). This is a lower bound of a real replay, which also
  verifies signatures and executes transactions;
- **state sync**: a fresh store fetches the head's state as verified subtree chunks
  (``snapshot_chunk`` -> ``verify_chunk`` -> ``store_chunk``, as the node does over p2p,
  without the network) and installs it (``finish_sync``, which walks the tree again);
- **disk**: the source directory's size as an archive, then after pruning to the
  default window (1,000 state versions, the last 100,000 blocks) and compaction.

Prints a table and the command line. Figures are this machine's, not asserted anywhere.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from core.hashing import Domain, hash_bytes
from storage import ChainStore, Database, SyncTarget, sync_root, verify_chunk
from tests.storage.storage_chain_fixtures import make_block

GENESIS_HASH = hash_bytes(Domain.GENESIS, b"bench sync")


def changes_for(height: int, per_block: int) -> dict[bytes, bytes | None]:
    rng = random.Random(height)
    # The key space grows with the chain, like accounts do.
    space = 1000 + height * per_block // 4
    out: dict[bytes, bytes | None] = {}
    for _ in range(per_block):
        key = b"acct/%08d" % rng.randrange(space)
        out[key] = None if rng.random() < 0.05 else rng.randbytes(48)
    return out


def progress(what: str, done: int, total: int) -> None:
    """A line on stderr every tenth of a long phase (a 100k-block run takes most of an hour)."""
    if total >= 10_000 and done % (total // 10) == 0:
        print(f"  {what}: {done}/{total} at {time.strftime('%H:%M:%S')}", file=sys.stderr)


def build(
    path: Path, blocks: int, per_block: int, txs: int, keep: bool
) -> tuple[list[tuple], float]:
    """The source chain; its blocks if ``keep``, and the seconds its store spent applying
    them (tree update and synced commit per block: what ``replay`` times on a fresh store)."""
    history = []
    applying = 0.0
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, {b"genesis": b"1"})
        prev = GENESIS_HASH
        for height in range(1, blocks + 1):
            changes = changes_for(height, per_block)
            started = time.perf_counter()
            update = store.prepare_state(changes)
            applying += time.perf_counter() - started
            block, commit, receipts = make_block(height, prev, update.root, txs)
            started = time.perf_counter()
            store.commit_block(block, commit, receipts, changes, update)
            applying += time.perf_counter() - started
            if keep:
                history.append((block, commit, receipts))
            prev = block.hash
            progress("built", height, blocks)
    return history, applying


def replay(path: Path, history: list[tuple], per_block: int) -> float:
    started = time.perf_counter()
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, {b"genesis": b"1"})
        for block, commit, receipts in history:
            changes = changes_for(block.header.height, per_block)
            update = store.prepare_state(changes)
            store.commit_block(block, commit, receipts, changes, update)
            progress("replayed", block.header.height, len(history))
    return time.perf_counter() - started


def state_sync(source: ChainStore, path: Path, chunk_bytes: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    height = source.height
    block, commit = source.get_block(height), source.get_commit(height)
    assert block is not None and commit is not None
    target = SyncTarget(height, block.header.state_root, block.encode(), commit.encode())
    chunks = sent = 0
    with ChainStore(path) as dest:
        dest.begin_sync(target)
        wanted = dest.missing_nodes(sync_root(target), 1)
        while wanted:
            subtree = wanted.pop()
            nodes = source.snapshot_chunk(height, subtree, chunk_bytes)
            chunk = verify_chunk(subtree, nodes, height)
            dest.store_chunk(chunk.nodes, chunk.leaves)
            wanted.extend(reversed(chunk.missing))
            chunks += 1
            sent += sum(len(n) for n in nodes)
        dest.finish_sync(GENESIS_HASH)
    return time.perf_counter() - started, chunks, sent


def early(name: str, value: str) -> None:
    """A figure on stderr as soon as it is measured: a long run that dies later keeps it."""
    print(f"  = {name}: {value} at {time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)


def disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def compact(path: Path) -> None:
    # With the node's options (tables without compression since session 27), as its
    # own compactions would write them: a plain plyvel.DB would write snappy tables.
    with Database(path, create_if_missing=False) as db:
        db.compact()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.sync")
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--keys-per-block", type=int, default=40)
    parser.add_argument("--txs-per-block", type=int, default=5)
    parser.add_argument("--chunk-bytes", type=int, default=1024 * 1024)
    parser.add_argument("--keep-states", type=int, default=1_000)
    parser.add_argument("--keep-blocks", type=int, default=100_000)
    # The default block window holds a whole 100k-block chain: a shorter one shows what
    # the blocks themselves weigh.
    parser.add_argument("--short-keep-blocks", type=int, default=10_000)
    # Building the source chain applies every block to a fresh store, as replay does:
    # time that instead of a second pass (halves a 100k-block run, and its memory).
    parser.add_argument("--replay-during-build", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        t0 = time.perf_counter()
        history, applying = build(
            root / "src",
            args.blocks,
            args.keys_per_block,
            args.txs_per_block,
            keep=not args.replay_during_build,
        )
        built = time.perf_counter() - t0
        if args.replay_during_build:
            replay_s = applying
        else:
            replay_s = replay(root / "replay", history, args.keys_per_block)
        del history
        early("join by replay, s", f"{replay_s:.2f} (build {built:.1f} s)")
        with ChainStore(root / "src") as source:
            keys = sum(1 for _ in source.iter_state())
            sync_s, chunks, sent = state_sync(source, root / "synced", args.chunk_bytes)
        early("join by state sync, s", f"{sync_s:.2f} ({keys} keys, {chunks} chunks)")
        compact(root / "src")
        archive = disk(root / "src")
        early("disk, archive, bytes", str(archive))
        with ChainStore(root / "src") as source:
            t1 = time.perf_counter()
            head = source.height
            source.prune_blocks(head - args.keep_blocks + 1)
            deleted = source.prune_states(head - args.keep_states + 1)
            prune_s = time.perf_counter() - t1
        compact(root / "src")
        pruned = disk(root / "src")
        early("disk, pruned, bytes", str(pruned))
        with ChainStore(root / "src") as source:
            source.prune_blocks(source.height - args.short_keep_blocks + 1)
        compact(root / "src")
        short = disk(root / "src")
        compact(root / "synced")
        synced = disk(root / "synced")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mib = 1024 * 1024
    print(
        f"chain: {args.blocks} blocks, {args.keys_per_block} state changes and "
        f"{args.txs_per_block} txs per block, {keys} keys at the head (built in {built:.1f} s)"
    )
    print(f"{'what':<44}{'value':>14}")
    rows = [
        (
            "join by replay (tree + commit per block), s"
            + (" [timed in the build]" if args.replay_during_build else ""),
            f"{replay_s:.2f}",
        ),
        ("join by state sync (fetch + verify + install), s", f"{sync_s:.2f}"),
        ("  chunks / bytes of nodes", f"{chunks} / {sent / mib:.1f} MiB"),
        ("disk, archive, MiB", f"{archive / mib:.1f}"),
        (
            f"disk, pruned (keep {args.keep_states} states, {args.keep_blocks} blocks), MiB",
            f"{pruned / mib:.1f}",
        ),
        ("  pruning pass, s / nodes deleted", f"{prune_s:.2f} / {deleted}"),
        (
            f"disk, pruned (keep {args.keep_states} states, {args.short_keep_blocks} blocks), MiB",
            f"{short / mib:.1f}",
        ),
        ("disk, state-synced node, MiB", f"{synced / mib:.1f}"),
    ]
    for name, value in rows:
        print(f"{name:<44}{value:>14}")
    print("command: python -m benches.sync " + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
