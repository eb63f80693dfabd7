"""End-to-end throughput and latency: pre-signed transfers over HTTP into a devnet.

Run: .venv/bin/python -m benches.throughput --validators 1   (or 4)

Phase 1 floods the nodes (batches spread over all nodes, several requests in
flight, as many clients would) and measures finalized tx/s two ways:

- sustained: the transactions of the blocks proposed while the flood was still
  being submitted, after the first of them, divided by the time between the
  first and the last of those blocks (header times). The chain's rate under
  saturation, with admission running alongside: this is the RESULT figure. The
  flood is 60 transfers from each of 4,000 accounts: the mempool admits two
  blocks' worth ahead, and with 25 each four validators' window held two or three
  blocks and swung by a fifth between runs of one build (ten or more now);
- end to end: every flood transaction over the time from the first submission
  to the last one final. It also counts the filling of the first block and
  the draining of the last (about one block interval each), so it reads low
  on a short flood.

Phase 2 submits at half the sustained rate and measures submit-to-final latency
per transaction (p50, p99). The ceiling is the 2-thread PyNaCl verification rate,
sampled twice before the devnet starts and once after it stopped; the best sample
is used (the machine is shared: noise only ever slows a sample down, so the fastest
is the closest to what the machine can do, and the ratio errs low); every validator
verifies every transaction, so the ratio is ``tps * validators / ceiling``. The last
line is ``RESULT tps=... ceiling=... ratio=...`` (plus ``p50_ms=... p99_ms=...``
with more than one validator, and ``own_per_sig=...`` where the signature workers'
CPU can be read).

``own_per_sig`` is the issue's other measure: the validators' own CPU per transaction
(event loop, consensus thread, other threads) over their signature workers' during the
flood (``benches.common.own_work_per_signature``). With both cores busy the ratio
cannot pass ``1 / (1 + own_per_sig)``, and both sides come from one window, so the
host's drift between the ceiling's samples and the flood, which moves the ratio by a
tenth between runs of one build, does not move it.

``--state-accounts N`` puts N more funded accounts (random addresses, never sending)
into the height-0 state before the devnet starts (``benches.common.prebuild_state``),
so that the cost of state size shows: compare runs at 10,000 and 1,000,000.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path

import aiohttp

from benches.common import (
    CpuPhase,
    Devnet,
    cpu_table,
    fund_accounts,
    own_work_per_signature,
    p50_p99,
    peak_rss_mb,
    prebuild_state,
    stage_table,
    verify_ceiling,
)
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
        # (height, header time in ms, transactions) of every block followed.
        self.blocks: list[tuple[int, int, int]] = []
        # When each of them was read (perf_counter), in the same order.
        self.seen_at: list[float] = []
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
                    self.blocks.append((self.height, doc["header"]["time_ms"], doc["num_txs"]))
                    self.seen_at.append(now)
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()

    def latencies_ms(self, submitted: dict[str, float]) -> list[float]:
        """Submit-to-final (ms, sorted) of the transactions ``submitted`` (hash: when)
        that became final while hashes were followed."""
        return sorted(
            (self.final_at[h] - t) * 1000 for h, t in submitted.items() if h in self.final_at
        )


REJECTED: Counter[str] = Counter()
# A node refuses what does not fit in its mempool's window (``mempool_full``) before
# verifying it: the client submits those transactions again after a pause that
# doubles from RETRY_S up to RETRY_MAX_S while the node keeps refusing.
RETRY_S = 0.1
RETRY_MAX_S = 1.0
RETRIED: Counter[str] = Counter()


async def signing_terms(url: str) -> tuple[str, int, int, int]:
    """What presigned transfers to the node at ``url`` need, read from it: (chain id,
    minimum fee, an expiry height half the window ahead, the height now)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/v1/genesis") as r:
            genesis = (await r.json())["genesis"]
        async with s.get(url + "/v1/status") as r:
            height: int = (await r.json())["height"]
    params = genesis["params"]
    expiry = height + params["max_expiry_blocks"] // 2
    return genesis["chain_id"], params["min_fee"], expiry, height


async def post_batch(
    session: aiohttp.ClientSession,
    url: str,
    batch: list[bytes],
    retry: Collection[str] = ("mempool_full",),
) -> int:
    """Submit ``batch`` to the node at ``url``, again for what it refused with a code
    in ``retry``; other refusals are counted in REJECTED."""
    accepted = 0
    pause = RETRY_S
    while batch:
        # The refused items only, with their index: a client that knows its hashes
        # need not have the node write (and itself parse) a result per transaction.
        async with session.post(
            url + "/v1/txs?results=refused",
            data=pack_raw(batch),
            headers={"Content-Type": "application/msgpack"},
        ) as resp:
            doc = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"submit failed: {doc}")
        accepted += doc["accepted"]
        again = []
        for result in doc["refused"]:
            code = result["code"]
            if code in retry:
                again.append(batch[result["index"]])
                RETRIED[code] += 1
            else:
                REJECTED[code] += 1
        batch = again
        if batch:
            await asyncio.sleep(pause)
            pause = min(2 * pause, RETRY_MAX_S)
    return accepted


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


def sustained_rate(blocks: list[tuple[int, int, int]], until_ms: int) -> float | None:
    """Finalized tx/s over the blocks proposed from the first loaded one until ``until_ms``.

    The first block's transactions arrived before the window opened, so they are
    not counted; None when fewer than three blocks fall in the window.
    """
    loaded = [b for b in blocks if b[2] > 0]
    if not loaded:
        return None
    window = [b for b in loaded if b[1] <= until_ms]
    if len(window) < 3:
        return None
    seconds = (window[-1][1] - window[0][1]) / 1000
    return sum(b[2] for b in window[1:]) / seconds


async def run(args: argparse.Namespace) -> None:
    ceilings = [verify_ceiling(), verify_ceiling()]
    print(f"verify ceiling (2 threads): {max(ceilings):,.0f} sig/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="ll-bench-") as tmp:
        # With --dir the devnet (and its node logs) stays for a look afterwards.
        root = args.dir if args.dir is not None else Path(tmp) / "devnet"
        create_localnet(root, args.validators, "")
        keys = [PrivateKey.generate() for _ in range(args.accounts)]
        fund_accounts(root, keys, 10**12)
        if args.state_accounts:
            # Accounts in state that never send: what a big state costs the senders' blocks.
            more = (os.urandom(20) for _ in range(args.state_accounts))
            prebuild_state(root, args.validators, more, 1, "more accounts")
        net = Devnet(root, args.validators, args.log_level)
        net.start()
        try:
            waited = net.wait_tree_loaded()
            print(f"state tree upper levels loaded on every validator (waited {waited:.1f} s)")
            urls = [n["url"] for n in net.nodes]
            chain_id, fee, expiry, start_height = await signing_terms(urls[0])
            load = presign(keys, range(args.per_account), chain_id, fee, expiry)
            print(f"{len(load):,} pre-signed transfers from {len(keys):,} accounts", flush=True)

            follower = Follower(urls[0], start_height)
            follow_task = asyncio.create_task(follower.run())
            cpu_before = await asyncio.to_thread(net.cpu_seconds)
            started = time.perf_counter()
            accepted = await flood(urls, load, args.batch, args.concurrency)
            submitted_in = time.perf_counter() - started
            flood_end_ms = int(time.time() * 1000)
            await wait_for(follower, accepted, 300)
            elapsed = time.perf_counter() - started
            committed = follower.count
            cpu_after = await asyncio.to_thread(net.cpu_seconds)
            end_to_end = committed / elapsed
            flood_blocks = list(follower.blocks)
            sustained = sustained_rate(flood_blocks, flood_end_ms)
            print(
                f"flood: accepted {accepted:,} in {submitted_in:.2f} s; "
                f"final {committed:,} by height {follower.height} in {elapsed:.2f} s "
                f"-> end to end {end_to_end:,.0f} tx/s",
                flush=True,
            )
            print(
                "flood blocks (height, txs): " + ", ".join(f"{h}:{n}" for h, _, n in flood_blocks)
            )
            # Where a node's CPU went, per transaction: every validator handles every one.
            flood_cpu: list[CpuPhase] = [("flood", committed, cpu_before, cpu_after)]
            print(cpu_table(flood_cpu))
            print(stage_table(flood_cpu))
            if sustained is None:
                print("too few blocks during the flood for a sustained rate: using end to end")
                tps = end_to_end
            else:
                print(f"sustained while submitting: {sustained:,.0f} tx/s", flush=True)
                tps = sustained

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
            rss_mb = [peak_rss_mb(n["pid"]) or 0.0 for n in net.nodes]
            checks = net.signature_checks()
            latencies = follower.latencies_ms(submit_times)
        finally:
            net.stop()
    ceilings.append(verify_ceiling())
    ceiling = max(ceilings)
    print("verify ceiling samples: " + ", ".join(f"{c:,.0f}" for c in ceilings) + " sig/s")
    p50, p99 = p50_p99(latencies)
    print(
        f"latency at {rate:,.0f} tx/s (half the maximum): {len(latencies):,} txs, "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    print("peak RSS per validator: " + ", ".join(f"{r:,.0f} MB" for r in rss_mb))
    # Once per transaction where a node keeps up; a node behind its peers checks a
    # proposal's transactions before their gossip comes (node.verifier).
    print(
        "signature checks per committed transaction, by validator: "
        + ", ".join(f"{c / max(1.0, n):.3f} ({r / max(1.0, n):.3f} reused)" for c, r, n in checks)
    )
    if REJECTED:
        print(f"refused at submission: {dict(REJECTED)}")
    if RETRIED:
        print(f"submitted again after the node refused them: {dict(RETRIED)}")
    ratio = tps * args.validators / ceiling
    own = own_work_per_signature(flood_cpu)
    if own is not None:
        print(
            f"own work per signature: {own:.2f} (the validators' event loop, consensus and "
            "other threads' CPU over their signature workers', in the flood)"
        )
    print(
        f"end to end: {end_to_end:,.0f} tx/s, "
        f"ratio {end_to_end * args.validators / ceiling:.3f} (fill and drain included)"
    )
    print(f"command: {' '.join([sys.executable, '-m', 'benches.throughput', *sys.argv[1:]])}")
    line = f"RESULT tps={tps:.0f} ceiling={ceiling:.0f} ratio={ratio:.3f}"
    if args.validators > 1:
        line += f" p50_ms={p50:.0f} p99_ms={p99:.0f}"
    if own is not None:
        line += f" own_per_sig={own:.2f}"
    print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--dir", type=Path, help="run the devnet here and keep it (default: a temp dir)")
    p.add_argument("--log-level", default="INFO", help="log level of the node processes")
    p.add_argument("--accounts", type=int, default=4000)
    p.add_argument(
        "--per-account",
        type=int,
        default=60,
        help="transfers per account in the flood (below the mempool's 64 per sender)",
    )
    p.add_argument(
        "--state-accounts",
        type=int,
        default=0,
        help="funded accounts in state before the start that never send (a big state)",
    )
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--paced-batch", type=int, default=200)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
