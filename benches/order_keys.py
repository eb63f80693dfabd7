"""What each state key an order writes costs the state tree, beside a transfer's.

    .venv/bin/python -m benches.order_keys [--accounts 1000000] [--buyers 1500]
        [--blocks 6] [--parts account,party,deal_count,order]

A ``ChainStore`` (real LevelDB in a temporary directory) holds ``--accounts``
funded accounts. Blocks then alternate: a block of ``--buyers`` orders, each
writing the keys ``--parts`` names for its buyer (the buyer's account, its
commerce party record, its count in the deal, the order record; keys and value
sizes as the commerce app lays them out) plus the keys a whole block of orders
shares (escrow, counters, the deal, the merchant's party record, the deadline run,
the host's account); and a block of as many senders' transfers to one receiver.
Buyers and senders are fresh accounts, each used once. Per block, this thread's
CPU (``time.thread_time``) in ``prepare_state`` (the tree update) and
``commit_block`` (the synced batch), per buyer or sender; the median of the
timed blocks after two untimed rounds. Run it once per ``--parts`` to see each
key's share: the differences between runs are what one key more costs.

Last line: ``RESULT order_us=<n> transfer_us=<n> ratio=<transfer/order>``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benches.state_tree import empty_block
from storage import ChainStore

PARTS = ("account", "party", "deal_count", "order")
GENESIS = b"\x42" * 32
ORDER_BYTES = 330  # an order record with its sealed address, as the flash-deal bench's

# Keys every order of a block writes, whoever the buyer (commerce keys: escrow, the
# order and deal counters, the deal, the merchant's party record, the deadline queue
# and run, the host's account).
SHARED = (
    b"\x23",
    b"\x22\x04",
    b"\x28" + (1).to_bytes(8, "big"),
    b"\x2b" + b"M" * 20,
    b"\x2e\x01",
    b"\x2f\x01" + bytes(8),
    b"\x01" + b"H" * 20,
)
RECEIVER = b"\x01" + b"R" * 20


def run(root: Path, accounts: int, buyers: int, blocks: int, parts: set[str]) -> dict[str, float]:
    rng = random.Random(1)
    addresses = [rng.randbytes(20) for _ in range(accounts)]
    state = {b"\x01" + a: rng.randbytes(12) for a in addresses}
    for key in (*SHARED, RECEIVER):
        state[key] = rng.randbytes(30)
    t0 = time.monotonic()
    store = ChainStore(root / "db")
    store.initialize(GENESIS, state)
    del state
    print(f"{accounts:,} accounts stored in {time.monotonic() - t0:.1f} s", flush=True)
    order = rng.sample(range(accounts), accounts)
    used = 0
    next_order = 1
    prev = GENESIS

    def fresh() -> list[bytes]:
        nonlocal used
        picked = [addresses[i] for i in order[used : used + buyers]]
        used += buyers
        return picked

    def orders() -> dict[bytes, bytes | None]:
        nonlocal next_order
        changes: dict[bytes, bytes | None] = {}
        for a in fresh():
            if "account" in parts:
                changes[b"\x01" + a] = rng.randbytes(12)
            if "party" in parts:
                changes[b"\x2b" + a] = rng.randbytes(20)
            if "deal_count" in parts:
                changes[b"\x29" + a + (1).to_bytes(8, "big")] = b"\x01"
            if "order" in parts:
                changes[b"\x2a" + next_order.to_bytes(8, "big")] = rng.randbytes(ORDER_BYTES)
            next_order += 1
        for key in SHARED:
            changes[key] = rng.randbytes(30)
        return changes

    def transfers() -> dict[bytes, bytes | None]:
        changes: dict[bytes, bytes | None] = {b"\x01" + a: rng.randbytes(12) for a in fresh()}
        changes[RECEIVER] = rng.randbytes(12)
        return changes

    def commit(changes: dict[bytes, bytes | None]) -> tuple[float, float]:
        nonlocal prev
        for key in changes:
            store.state_get(key)  # as execution reads them first
        t = time.thread_time()
        update = store.prepare_state(changes)
        t1 = time.thread_time()
        block, cert = empty_block(store.height + 1, prev, update.root)
        store.commit_block(block, cert, [], changes, update)
        t2 = time.thread_time()
        prev = block.hash
        return t1 - t, t2 - t1

    try:
        for _ in range(2):
            commit(orders())
            commit(transfers())
        timed: dict[str, list[tuple[float, float]]] = {"orders": [], "transfers": []}
        for _ in range(blocks):
            timed["orders"].append(commit(orders()))
            timed["transfers"].append(commit(transfers()))
    finally:
        store.close()
    out = {}
    for kind, runs in timed.items():
        out[f"{kind}_update"] = statistics.median(u for u, _ in runs) / buyers * 1e6
        out[f"{kind}_commit"] = statistics.median(c for _, c in runs) / buyers * 1e6
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=1_000_000, help="funded accounts in state")
    ap.add_argument("--buyers", type=int, default=1500, help="buyers (or senders) per block")
    ap.add_argument("--blocks", type=int, default=6, help="timed blocks of each kind")
    ap.add_argument(
        "--parts", default=",".join(PARTS), help=f"keys each order writes, of {','.join(PARTS)}"
    )
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        ap.error(f"--parts must name keys of {','.join(PARTS)}, got {args.parts}")
    if args.buyers < 1 or args.blocks < 1:
        ap.error("--buyers and --blocks must be at least 1")
    # Every buyer and sender a fresh account, as the docstring says.
    if args.accounts < 2 * args.buyers * (args.blocks + 2):
        ap.error(f"--accounts must be at least {2 * args.buyers * (args.blocks + 2)}")
    root = Path(tempfile.mkdtemp(prefix="bench-order-keys-"))
    try:
        r = run(root, args.accounts, args.buyers, args.blocks, parts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'block':<10} {'update us':>10} {'commit us':>10} {'total us':>10}  (per buyer)")
    for kind in ("orders", "transfers"):
        u, c = r[f"{kind}_update"], r[f"{kind}_commit"]
        print(f"{kind:<10} {u:>10.1f} {c:>10.1f} {u + c:>10.1f}")
    order = r["orders_update"] + r["orders_commit"]
    transfer = r["transfers_update"] + r["transfers_commit"]
    print(f"order parts: {','.join(p for p in PARTS if p in parts)}")
    print("command: " + " ".join([".venv/bin/python -m benches.order_keys", *sys.argv[1:]]))
    print(f"RESULT order_us={order:.1f} transfer_us={transfer:.1f} ratio={transfer / order:.3f}")


if __name__ == "__main__":
    main()
