"""End-to-end throughput and latency: pre-signed transfers over HTTP into a devnet.

Run: .venv/bin/python -m benches.throughput --validators 1   (or 4)

Phase 1 floods the nodes (batches spread over all nodes) and measures finalized
tx/s. Phase 2 submits at half that rate and measures submit-to-final latency
per transaction (p50, p99). The ceiling is the 2-thread PyNaCl verification
rate measured in the same run; every validator verifies every transaction, so
the ratio is ``tps * validators / ceiling``. The last line is
``RESULT tps=... ceiling=... ratio=...`` (plus ``p50_ms=... p99_ms=...`` with
more than one validator).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from benches.common import Devnet, fund_accounts, verify_ceiling
from core import PrivateKey, TxBody, pack_raw, sign_tx, tx_hash
from genesis import create_localnet
from vm import Transfer


def presign(
    keys: list[PrivateKey], nonces: range, chain_id: str, fee: int, expiry: int
) -> list[bytes]:
    """Nonce-ordered rounds over all accounts, so early batches carry early nonces."""
    sink = keys[0].address
    txs = []
    for nonce in nonces:
        for key in keys:
            body = TxBody(nonce, fee, expiry, "transfer", Transfer(sink, 1).encode())
            txs.append(sign_tx(key, chain_id, body).encode())
    return txs


class Follower:
    """Follows finalized blocks on one node and records when each tx hash became final."""

    def __init__(self, url: str, start_height: int) -> None:
        self.url = url
        self.height = start_height
        self.final_at: dict[str, float] = {}
        self.count = 0
        # Hashes only while latency is measured: listing them costs the node work.
        self.want_hashes = False
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                async with session.get(self.url + "/v1/status") as resp:
                    head = (await resp.json())["height"]
                while self.height < head:
                    self.height += 1
                    mode = "hashes" if self.want_hashes else "false"
                    url = f"{self.url}/v1/blocks/{self.height}?txs={mode}"
                    async with session.get(url) as resp:
                        doc = await resp.json()
                    now = time.perf_counter()
                    for h in doc.get("tx_hashes", ()):
                        self.final_at[h] = now
                    self.count += doc["num_txs"]
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()


REJECTED: Counter[str] = Counter()


async def post_batch(session: aiohttp.ClientSession, url: str, batch: list[bytes]) -> int:
    async with session.post(
        url + "/v1/txs", data=pack_raw(batch), headers={"Content-Type": "application/msgpack"}
    ) as resp:
        doc = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"submit failed: {doc}")
        for result in doc["results"]:
            if result["code"] != "accepted":
                REJECTED[result["code"]] += 1
        return doc["accepted"]


async def flood(urls: list[str], txs: list[bytes], batch: int, concurrency: int) -> int:
    batches = [txs[i : i + batch] for i in range(0, len(txs), batch)]
    accepted = 0
    next_index = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, next_index
        while next_index < len(batches):
            i = next_index
            next_index += 1
            # Await first: "accepted += await ..." would read the total before the await
            # and lose the other worker's additions.
            done = await post_batch(session, urls[i % len(urls)], batches[i])
            accepted += done

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted


async def paced(
    urls: list[str], txs: list[bytes], rate: float, batch: int
) -> tuple[int, dict[str, float]]:
    """Submit at ``rate`` tx/s in small batches; return accepted count and submit times."""
    submitted: dict[str, float] = {}
    accepted = 0
    interval = batch / rate
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for n, i in enumerate(range(0, len(txs), batch)):
            part = txs[i : i + batch]
            delay = started + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            for raw in part:
                submitted[tx_hash(raw).hex()] = now
            accepted += await post_batch(session, urls[n % len(urls)], part)
    return accepted, submitted


async def wait_for(follower: Follower, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while follower.count < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> None:
    ceiling = verify_ceiling()
    print(f"verify ceiling (2 threads): {ceiling:,.0f} sig/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="ll-bench-") as tmp:
        root = Path(tmp) / "devnet"
        create_localnet(root, args.validators, "")
        keys = [PrivateKey.generate() for _ in range(args.accounts)]
        fund_accounts(root, keys, 10**12)
        net = Devnet(root, args.validators)
        net.start()
        try:
            urls = [n["url"] for n in net.nodes]
            async with aiohttp.ClientSession() as s:
                async with s.get(urls[0] + "/v1/genesis") as r:
                    genesis = (await r.json())["genesis"]
                async with s.get(urls[0] + "/v1/status") as r:
                    start_height = (await r.json())["height"]
            params = genesis["params"]
            expiry = start_height + params["max_expiry_blocks"] // 2
            chain_id, fee = genesis["chain_id"], params["min_fee"]
            load = presign(keys, range(args.per_account), chain_id, fee, expiry)
            print(f"{len(load):,} pre-signed transfers from {len(keys):,} accounts", flush=True)

            follower = Follower(urls[0], start_height)
            follow_task = asyncio.create_task(follower.run())
            started = time.perf_counter()
            accepted = await flood(urls, load, args.batch, args.concurrency)
            submitted_in = time.perf_counter() - started
            await wait_for(follower, accepted, 300)
            elapsed = time.perf_counter() - started
            committed = follower.count
            tps = committed / elapsed
            print(
                f"flood: accepted {accepted:,} in {submitted_in:.2f} s; "
                f"final {committed:,} by height {follower.height} in {elapsed:.2f} s "
                f"-> {tps:,.0f} tx/s",
                flush=True,
            )

            rate = max(1.0, tps / 2)
            count = int(rate * args.latency_seconds)
            rounds = max(1, -(-count // len(keys)))
            nonces = range(args.per_account, args.per_account + rounds)
            second = presign(keys, nonces, chain_id, fee, expiry)[:count]
            base = follower.count
            follower.want_hashes = True
            accepted2, submit_times = await paced(urls, second, rate, args.paced_batch)
            await wait_for(follower, base + accepted2, 120)
            follower.stop()
            await follow_task
            latencies = sorted(
                (follower.final_at[h] - t) * 1000
                for h, t in submit_times.items()
                if h in follower.final_at
            )
        finally:
            net.stop()
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    print(
        f"latency at {rate:,.0f} tx/s (half the maximum): {len(latencies):,} txs, "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    if REJECTED:
        print(f"refused at submission: {dict(REJECTED)}")
    ratio = tps * args.validators / ceiling
    print(f"command: {' '.join([sys.executable, '-m', 'benches.throughput', *sys.argv[1:]])}")
    line = f"RESULT tps={tps:.0f} ceiling={ceiling:.0f} ratio={ratio:.3f}"
    if args.validators > 1:
        line += f" p50_ms={p50:.0f} p99_ms={p99:.0f}"
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--accounts", type=int, default=4000)
    p.add_argument("--per-account", type=int, default=10)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--paced-batch", type=int, default=200)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
