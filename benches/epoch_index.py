"""What a light client's ``next-change`` question costs the store's producer-set index.

    .venv/bin/python -m benches.epoch_index [--epochs 50000,300000]
        [--record-bytes 2048] [--queries 2000] [--dir DIR]

A ``ChainStore`` (real LevelDB in a temporary directory, unsynced writes: the keys
written are the node's, the fsyncs are not what is measured) gets epoch 0's set, then
``--epochs`` epoch records written in order as the commit thread writes them (one
``put_epoch_record`` per epoch, each ``--record-bytes`` long), all with one producer
set: a chain whose set never changed, the one every client asks about from epoch 0.
No compaction is asked for: what LevelDB left of earlier writes stays where a node's
store would have it between its own compactions. Then ``next_set_change`` is timed
(``time.perf_counter``, the median of 20 rounds of ``--queries`` calls) for epoch 0
and for the middle epoch, with the write's cost per epoch. ``next_set_change`` runs
on the event loop (``GET /v1/epochs/{e}/next-change``).

Last line: ``RESULT epochs=<n> next_change_0_us=<n> ...`` for each count of epochs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from storage import ChainStore

SET = b"\x07" * 32


def _per_call_us(store: ChainStore, epoch: int, queries: int) -> float:
    rounds = []
    for _ in range(20):
        start = time.perf_counter()
        for _ in range(queries):
            store.next_set_change(epoch)
        rounds.append((time.perf_counter() - start) / queries * 1e6)
    return statistics.median(rounds)


def run(epochs: int, record_bytes: int, queries: int, where: str | None) -> dict[str, float]:
    """Write ``epochs`` records in order and time the questions; figures in µs."""
    with tempfile.TemporaryDirectory(prefix="bench-epoch-index-", dir=where) as tmp:
        store = ChainStore(tmp, sync=False)
        try:
            store.put_epoch_sets(0, [SET])
            record = b"r" * record_bytes
            start = time.perf_counter()
            for epoch in range(1, epochs + 1):
                store.put_epoch_record(epoch, record, SET)
            write_us = (time.perf_counter() - start) / epochs * 1e6
            # The answer is the same whatever the code: the epoch after the last.
            if store.next_set_change(0) != epochs + 1:
                raise AssertionError(f"next_set_change(0) = {store.next_set_change(0)}")
            return {
                "write_us": write_us,
                "next_change_0_us": _per_call_us(store, 0, queries),
                "next_change_mid_us": _per_call_us(store, epochs // 2, queries),
            }
        finally:
            store.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--epochs", default="50000,300000", help="counts of epochs, comma-separated")
    ap.add_argument("--record-bytes", type=int, default=2048, help="bytes of each epoch record")
    ap.add_argument("--queries", type=int, default=2000, help="calls per timed round")
    ap.add_argument("--dir", default=None, help="where the temporary LevelDB goes")
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.epochs.split(",")]

    results = [(n, run(n, args.record_bytes, args.queries, args.dir)) for n in counts]
    print(
        f"{'epochs':>8} {'write us/epoch':>15} {'next-change/0 us':>17} {'next-change/mid us':>19}"
    )
    for n, r in results:
        print(
            f"{n:>8} {r['write_us']:>15.1f} {r['next_change_0_us']:>17.1f} "
            f"{r['next_change_mid_us']:>19.1f}"
        )
    print("command: " + " ".join([".venv/bin/python -m benches.epoch_index", *sys.argv[1:]]))
    for n, r in results:
        print(
            f"RESULT epochs={n} next_change_0_us={r['next_change_0_us']:.1f} "
            f"next_change_mid_us={r['next_change_mid_us']:.1f} write_us={r['write_us']:.1f}"
        )


if __name__ == "__main__":
    main()
