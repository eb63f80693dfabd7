"""The flash-deal storm: four validators, a million accounts, 100,000 buyers ordering at once.

    .venv/bin/python -m benches.flashdeal [--buyers 100000] [--state-accounts 1000000]

Before the measurement: a devnet of ``--validators`` (4) node processes whose
height-0 state holds ``--state-accounts`` funded accounts in all
(``benches.common.prebuild_state``; the time it takes is printed): the buyers, as many
plain-transfer senders, the latency phase's buyers and random addresses that never
send. Once every validator has loaded its state tree's upper levels (as it does
after each start; the wait is printed), every transaction is signed. Then the live
session's setup (merchant registered and approved, ``--deals`` listings pinned in one
session, a flash deal on each) is run, unmeasured.

Measured, in one run, alternating so that both sides see the same nodes, state size
and machine load:

- transfers: ``2 x buyers`` plain transfers, two from each of ``buyers`` distinct
  senders;
- orders: every buyer places one order into one of the deals (round robin) and tips
  the host: ``2 x buyers`` transactions.

Each side is cut into ``--rounds`` (2) equal parts, run in the order transfers,
orders, orders, transfers (and so on: each round reverses the one before), so that
a machine growing slower or faster during the run weighs on both sides alike; a
side's rate is its transactions over the sum of its parts' times.

Both go in batches spread over all nodes, several requests in flight, resubmitted
when a node refuses them as full (``benches.throughput.flood``). A phase's rate is
its transactions over the time from its first submission until its last one is
final (block counts followed on node0), so fill and drain count on both sides.
``order_tps`` counts the order phase's transactions (orders and their tips; the
orders alone are half of it). Then ``--latency-orders`` more buyers order (and tip)
at half the measured order rate (or ``--latency-tps``, to compare two builds at one
load), and submit-to-final p50/p99 is measured per transaction. The end checks
through the commerce reads that the deals sold every order.

Also printed: each validator's CPU seconds in each measured phase by part (its event
loop, its consensus thread, its other threads, LevelDB's compactions foremost, and
its signature workers: ``Devnet.cpu_seconds``), peak RSS per validator (``VmHWM``),
each one's resident set at the end split into anonymous and file-backed pages
(``rss_split_mb``) and the peak of each part from the devnet's start on
(``RssPeaks``, sampled every 0.25 s), and node0's data directory growth per million finalized
transactions over the measured phases. Last line:

    RESULT order_tps=<n> transfer_tps=<n> ratio=<orders/transfers> p50_ms=<n> p99_ms=<n> rss_mb=<n>

(``rss_mb`` is the largest validator's peak.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from apps.commerce import payloads as tx
from apps.commerce.sealing import encryption_keypair, seal_address
from benches.common import (
    CpuPhase,
    Devnet,
    RssPeaks,
    cpu_table,
    dir_bytes,
    fund_accounts,
    p50_p99,
    peak_rss_mb,
    prebuild_state,
    stage_table,
)
from benches.throughput import REJECTED, RETRIED, Follower, flood, paced, wait_for
from core import PrivateKey, TxBody, sign_tx
from core.keystore import load_key
from genesis import DEFAULT_BLOCK_INTERVAL_MS, create_localnet
from vm import Transfer

MIN_MS = 60_000
DEAL_PRICE = 5_000
TIP = 100
BALANCE = 10**10


def keys(first: int, count: int) -> list[PrivateKey]:
    """Deterministic keys ``first .. first + count - 1`` (no randomness to wait for)."""
    return [PrivateKey((1_000_003 + i).to_bytes(32, "big")) for i in range(first, first + count)]


class Signer:
    """Signs for one chain, keeping every account's next nonce."""

    def __init__(self, chain_id: str, fee: int, expiry: int) -> None:
        self.chain_id, self.fee, self.expiry = chain_id, fee, expiry
        self.nonces: dict[bytes, int] = {}

    def __call__(self, key: PrivateKey, tx_type: str, payload: bytes) -> bytes:
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        body = TxBody(nonce, self.fee, self.expiry, tx_type, payload)
        return sign_tx(key, self.chain_id, body).encode()


def order_txs(
    sign: Signer, buyers: list[PrivateKey], deals: int, first_deal: int, order_payloads: list[bytes]
) -> list[bytes]:
    """One order into a deal (round robin from ``first_deal``) and one tip per buyer."""
    tip = tx.Tip(1, TIP, "").encode()
    out = []
    for i, b in enumerate(buyers):
        out.append(sign(b, tx.PLACE_ORDER, order_payloads[(first_deal + i) % deals]))
        out.append(sign(b, tx.TIP, tip))
    return out


def live_setup(
    sign: Signer,
    registrar: PrivateKey,
    merchant: PrivateKey,
    host: PrivateKey,
    deals: int,
    allocation: int,
    start_ms: int,
) -> tuple[list[list[bytes]], list[bytes]]:
    """The live session's setup, block by block (merchant registered and approved by
    ``registrar``, a session hosted by ``host``, ``deals`` listings pinned in it with a
    flash deal of ``allocation`` units on each, from ``start_ms`` for 50 minutes), and
    each deal's order payload. Deal d sells listing d: ids as a fresh chain gives them."""
    _, enc_public = encryption_keypair(bytes([7]) * 32)
    setup = [
        [
            sign(
                merchant,
                tx.REGISTER_MERCHANT,
                tx.RegisterMerchant("Bench", "", enc_public).encode(),
            )
        ],
        [sign(registrar, tx.APPROVE_MERCHANT, tx.ApproveMerchant(merchant.address, True).encode())],
        [sign(merchant, tx.OPEN_SESSION, tx.OpenSession(host.address, 1_000, "live").encode())],
    ]
    last: list[bytes] = []
    for d in range(1, deals + 1):
        listing = tx.CreateListing(f"Item {d}", "", 9_000, allocation, b"")
        last.append(sign(merchant, tx.CREATE_LISTING, listing.encode()))
        last.append(sign(merchant, tx.PIN, tx.PinListing(1, d).encode()))
        deal = tx.OpenDeal(1, d, DEAL_PRICE, allocation, 1, start_ms, start_ms + 50 * MIN_MS)
        last.append(sign(merchant, tx.OPEN_DEAL, deal.encode()))
    setup.append(last)
    ciphertext, commitment, _ = seal_address(enc_public, "1 Bench Road", salt=bytes(32))
    order_payloads = [
        tx.PlaceOrder(d, 1, 1, DEAL_PRICE, 1, d, enc_public, commitment, ciphertext).encode()
        for d in range(1, deals + 1)
    ]
    return setup, order_payloads


async def get(url: str, path: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url + path) as resp:
        return await resp.json()


async def wait_height(url: str, height: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (await get(url, "/v1/status"))["height"] < height:
        if time.monotonic() > deadline:
            raise RuntimeError(f"height {height} not reached")
        await asyncio.sleep(0.05)


async def phase(
    urls: list[str], follower: Follower, txs: list[bytes], args: argparse.Namespace
) -> float:
    """Seconds from the first submission of ``txs`` until all of them are final."""
    base = follower.count
    started = time.perf_counter()
    accepted = await flood(urls, txs, args.batch, args.concurrency)
    if accepted != len(txs):
        raise RuntimeError(f"{len(txs) - accepted} of {len(txs)} refused: {dict(REJECTED)}")
    await wait_for(follower, base + accepted, 600)
    if follower.count < base + accepted:
        raise RuntimeError(f"only {follower.count - base} of {accepted} final")
    return time.perf_counter() - started


@dataclass(frozen=True)
class FlashResult:
    order_tps: float
    transfer_tps: float
    # Units sold per deal (the run raises unless they add up to every order).
    sold: list[int]
    # Submit-to-final of the latency phase's transactions that became final.
    latencies_ms: list[float]
    latency_txs: int
    rss_mb: list[float]


async def run(args: argparse.Namespace) -> FlashResult:
    n, deals = args.buyers, args.deals
    latency_n = args.latency_orders // 2
    with tempfile.TemporaryDirectory(prefix="ll-bench-flash-") as tmp:
        root = args.dir if args.dir is not None else Path(tmp) / "devnet"
        layout = create_localnet(root, args.validators, "", block_interval_ms=args.block_ms)
        faucet = load_key(layout.faucet_key_path, "")  # the devnet's commerce registrar
        merchant, host = keys(0, 2)
        started = time.perf_counter()
        buyers = keys(10, n)
        senders = keys(10 + n, n)
        late_buyers = keys(10 + 2 * n, latency_n)
        print(f"{2 * n + latency_n:,} keys derived in {time.perf_counter() - started:.1f} s")
        fund_accounts(root, [merchant, host], BALANCE)
        named = [k.address for k in (*buyers, *senders, *late_buyers)]
        others = (os.urandom(20) for _ in range(args.state_accounts - len(named)))
        prebuild_state(root, args.validators, (*named, *others), BALANCE, "funded accounts")
        net = Devnet(root, args.validators, args.log_level)
        net.start()
        peaks = RssPeaks([node["pid"] for node in net.nodes])
        peaks.start()
        try:
            urls = [node["url"] for node in net.nodes]
            opened = [peak_rss_mb(node["pid"]) or 0.0 for node in net.nodes]
            print("peak RSS per validator once open: " + ", ".join(f"{r:,.0f} MB" for r in opened))
            waited = net.wait_tree_loaded()
            print(f"state tree upper levels loaded on every validator (waited {waited:.1f} s)")
            genesis = (await get(urls[0], "/v1/genesis"))["genesis"]
            status = await get(urls[0], "/v1/status")
            params = genesis["params"]
            expiry = status["height"] + params["max_expiry_blocks"] // 2
            sign = Signer(genesis["chain_id"], params["min_fee"], expiry)

            start_ms = status["latest_block_time_ms"] or genesis["genesis_time_ms"]
            allocation = -(-(n + latency_n) // deals)
            setup, order_payloads = live_setup(
                sign, faucet, merchant, host, deals, allocation, start_ms
            )

            started = time.perf_counter()
            sink = Transfer(host.address, 1).encode()
            transfers = [sign(s, "transfer", sink) for _ in range(2) for s in senders]
            orders = order_txs(sign, buyers, deals, 0, order_payloads)
            late = order_txs(sign, late_buyers, deals, n, order_payloads)
            print(
                f"{len(transfers) + len(orders) + len(late):,} transactions signed "
                f"in {time.perf_counter() - started:.1f} s",
                flush=True,
            )

            follower = Follower(urls[0], status["height"])
            follow_task = asyncio.create_task(follower.run())
            for block in setup:
                await phase(urls[:1], follower, block, args)
            await wait_height(urls[0], follower.height + 1)
            data_before = dir_bytes(root / "node0" / "data")
            count_before = follower.count

            sides = {"transfers": transfers, "orders + tips": orders}
            seconds = dict.fromkeys(sides, 0.0)
            cpu: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
            for part, names in enumerate(round_order(list(sides), args.rounds)):
                for name in names:
                    txs = cut(sides[name], args.rounds)[part]
                    # Scraped in a thread: a busy node may take seconds to answer, and
                    # the follower runs on this loop meanwhile.
                    before = await asyncio.to_thread(net.cpu_seconds)
                    took = await phase(urls, follower, txs, args)
                    cpu[name] = add_cpu(cpu[name], before, await asyncio.to_thread(net.cpu_seconds))
                    seconds[name] += took
                    print(f"{name}: {len(txs):,} final in {took:.2f} s", flush=True)
                    await wait_height(urls[0], follower.height + 1)
            transfer_s, order_s = seconds["transfers"], seconds["orders + tips"]
            transfer_tps, order_tps = len(transfers) / transfer_s, len(orders) / order_s

            # Half the measured rate (the point), or a fixed one, to compare the
            # latency of two builds at the same load.
            rate = args.latency_tps or max(1.0, order_tps / 2)
            base = follower.count
            follower.want_hashes = True
            accepted, submit_times = await paced(urls, late, rate, args.paced_batch)
            await wait_for(follower, base + accepted, 120)
            follower.stop()
            await follow_task
            latencies = follower.latencies_ms(submit_times)
            final_txs = follower.count - count_before
            data_growth = dir_bytes(root / "node0" / "data") - data_before
            rss_mb = [peak_rss_mb(node["pid"]) or 0.0 for node in net.nodes]
            split = peaks.sample()
            peaks.stop()

            sold = [
                (await get(urls[0], f"/v1/deals/{d}"))["deal"]["sold"] for d in range(1, deals + 1)
            ]
            if sum(sold) != n + len(late_buyers):
                raise RuntimeError(f"deals sold {sold}, expected {n + len(late_buyers)} in all")
        finally:
            peaks.stop()
            net.stop()

    p50, p99 = p50_p99(latencies)
    print(f"{'phase':<16} {'txs':>8} {'seconds':>8} {'tx/s':>8}")
    print(f"{'transfers':<16} {len(transfers):>8} {transfer_s:>8.2f} {transfer_tps:>8.0f}")
    print(f"{'orders + tips':<16} {len(orders):>8} {order_s:>8.2f} {order_tps:>8.0f}")
    print(f"finalized orders alone: {n / order_s:,.0f} orders/s; deals sold {sold}")
    phases: list[CpuPhase] = [
        ("transfers", len(transfers), zero_cpu(cpu["transfers"]), cpu["transfers"]),
        ("orders + tips", len(orders), zero_cpu(cpu["orders + tips"]), cpu["orders + tips"]),
    ]
    print(cpu_table(phases))
    print(stage_table(phases))
    how = "as asked" if args.latency_tps else "half the order rate"
    print(
        f"latency at {rate:,.0f} tx/s ({how}): {len(latencies):,} of "
        f"{len(late):,} txs, p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    print("peak RSS per validator: " + ", ".join(f"{r:,.0f} MB" for r in rss_mb))
    print(
        "RSS at the end, anonymous / file-backed (LevelDB's table maps): "
        + ", ".join(f"{a:,.0f} / {f:,.0f} MB" for a, f in split)
    )
    print(
        "peak RSS sampled every 0.25 s, anonymous / file-backed: "
        + ", ".join(
            f"{a:,.0f} / {f:,.0f} MB"
            for a, f in zip(peaks.anonymous, peaks.file_backed, strict=True)
        )
    )
    print(
        f"disk growth (node0): {data_growth / 1e6:,.1f} MB for {final_txs:,} txs = "
        f"{data_growth / max(1, final_txs):,.0f} MB per million txs"
    )
    if RETRIED:
        print(f"submitted again after a node refused them: {dict(RETRIED)}")
    print(
        f"{n:,} buyers over {deals} deals, {args.validators} validators, state "
        f"{args.state_accounts:,} accounts, block interval {args.block_ms} ms"
    )
    print("command: " + " ".join([sys.executable, "-m", "benches.flashdeal", *sys.argv[1:]]))
    print(
        f"RESULT order_tps={order_tps:.0f} transfer_tps={transfer_tps:.0f} "
        f"ratio={order_tps / transfer_tps:.3f} p50_ms={p50:.0f} p99_ms={p99:.0f} "
        f"rss_mb={max(rss_mb):.0f}"
    )
    return FlashResult(order_tps, transfer_tps, sold, latencies, len(late), rss_mb)


def round_order(names: list[str], rounds: int) -> list[list[str]]:
    """The order of the sides in each round: as given, then reversed, and so on (ABBA)."""
    return [names if r % 2 == 0 else names[::-1] for r in range(rounds)]


def cut(txs: list[bytes], parts: int) -> list[list[bytes]]:
    """``txs`` cut into ``parts`` runs in order, their lengths at most one apart."""
    n = len(txs)
    return [txs[k * n // parts : (k + 1) * n // parts] for k in range(parts)]


def add_cpu(
    total: list[dict[str, float]], before: list[dict[str, float]], after: list[dict[str, float]]
) -> list[dict[str, float]]:
    """``total`` (per node, CPU seconds by part) plus what each node spent from
    ``before`` to ``after`` (``Devnet.cpu_seconds``); a part one read lacks is left out."""
    out = []
    for k, (b, a) in enumerate(zip(before, after, strict=True)):
        # Clamped: two reads of one counter a few ms apart may differ by a tick.
        spent = {p: max(0.0, a[p] - b[p]) for p in a if p in b}
        if k < len(total):
            spent = {p: v + total[k][p] for p, v in spent.items() if p in total[k]}
        out.append(spent)
    return out


def zero_cpu(like: list[dict[str, float]]) -> list[dict[str, float]]:
    return [dict.fromkeys(node, 0.0) for node in like]


def _rounds(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive rate, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--buyers", type=int, default=100_000, help="distinct buyers (and senders)")
    p.add_argument("--state-accounts", type=int, default=1_000_000, help="funded accounts in all")
    p.add_argument("--deals", type=int, default=4, help="flash deals in the live session")
    p.add_argument("--latency-orders", type=int, default=10_000, help="txs of the latency phase")
    p.add_argument(
        "--latency-tps",
        type=_positive,
        default=0.0,
        help="rate of the latency phase (default: half the measured order rate)",
    )
    p.add_argument(
        "--rounds", type=_rounds, default=2, help="parts of each side, alternating (ABBA)"
    )
    p.add_argument("--block-ms", type=int, default=DEFAULT_BLOCK_INTERVAL_MS, help="block interval")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--paced-batch", type=int, default=200)
    p.add_argument("--dir", type=Path, help="run the devnet here and keep it (default: a temp dir)")
    p.add_argument("--log-level", default="INFO", help="log level of the node processes")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
