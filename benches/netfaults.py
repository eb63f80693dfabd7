"""Finality under network latency: four validators on four network hosts (issue 12).

Run (as root; needs ``ip``, see tests/netns): ``python -m benches.netfaults``

Four validators, each in its own network namespace behind the fault proxy of
``tests/netns`` (the kernel has no ``tc netem``). Phases alternate in one run, on
one network: no added latency ("0ms"), then 50 ms ± 10 ms each way between every
two hosts ("50ms"), ``--rounds`` times. In each phase transfers are submitted at
``--rate`` per second, each to a node in turn, and one client follows node 0's
final blocks. Figures per kind of phase (all its rounds together):

- submit-to-final: from sending a transfer to node 0 serving the block holding it;
- block-to-block: between two successive final blocks as node 0 serves them.

p50 and p99 of each. The last line is ``RESULT zero_p50_ms=.. zero_p99_ms=..
lat_p50_ms=.. lat_p99_ms=.. zero_block_p50_ms=.. zero_block_p99_ms=..
lat_block_p50_ms=.. lat_block_p99_ms=..``. Nodes run with the default block
interval (1000 ms) and propose timeout (3000 ms) unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benches.throughput import Follower
from core import PrivateKey
from tests.e2e.helpers import Signer, faucet_key
from tests.netns.hosts import NetnsNetwork, unavailable

LATENCY = {"latency_ms": 50, "jitter_ms": 10}


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def phase(
    net: NetnsNetwork,
    follower: Follower,
    signer: Signer,
    seconds: float,
    rate: float,
) -> tuple[list[float], list[float]]:
    """Submit transfers for ``seconds``; their submit-to-final times and the
    block-to-block times of the blocks finalized meanwhile (ms)."""
    sent: dict[str, float] = {}
    first_block = len(follower.blocks)
    urls = [n.url for n in net.nodes]
    sink = PrivateKey.generate().address
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        i = 0
        while (now := time.perf_counter()) - started < seconds:
            raw = signer.transfer(sink, 1)
            t0 = time.perf_counter()
            async with session.post(
                urls[i % len(urls)] + "/v1/txs", data=json.dumps({"tx": raw.hex()})
            ) as resp:
                doc = await resp.json()
            if "hash" not in doc:
                raise RuntimeError(f"transfer refused: {doc}")
            sent[doc["hash"]] = t0
            i += 1
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        deadline = now + 60
        while any(h not in follower.final_at for h in sent):
            if time.perf_counter() > deadline:
                raise RuntimeError("transfers not final within 60 s of the phase's end")
            await asyncio.sleep(0.05)
    latencies = [(follower.final_at[h] - t) * 1000 for h, t in sent.items()]
    seen = follower.seen_at[first_block:]
    gaps = [(b - a) * 1000 for a, b in zip(seen, seen[1:], strict=False)]
    return latencies, gaps


async def run(args: argparse.Namespace, net: NetnsNetwork) -> dict[str, list[float]]:
    assert net.layout is not None
    net.wait_height(2, timeout=120)
    signer = Signer(faucet_key(net.layout.dir), net.layout.chain_id)
    signer.sync_nonce(net[0].url)
    follower = Follower(net[0].url, net[0].height())
    follower.want_hashes = True
    follow = asyncio.create_task(follower.run())
    results: dict[str, list[float]] = {"zero": [], "lat": [], "zero_block": [], "lat_block": []}
    try:
        for r in range(args.rounds):
            for kind, faults in (("zero", {}), ("lat", LATENCY)):
                net.faults(default=faults)
                # Let the new latency reach every connection's traffic before measuring.
                await asyncio.sleep(2.0)
                latencies, gaps = await phase(net, follower, signer, args.seconds, args.rate)
                results[kind] += latencies
                results[f"{kind}_block"] += gaps
                print(
                    f"round {r + 1} {'0ms' if kind == 'zero' else '50ms±10'}: "
                    f"{len(latencies)} transfers, submit-to-final p50 "
                    f"{pct(latencies, 0.5):.0f} ms p99 {pct(latencies, 0.99):.0f} ms; "
                    f"{len(gaps)} block gaps, p50 {pct(gaps, 0.5):.0f} ms "
                    f"p99 {pct(gaps, 0.99):.0f} ms",
                    flush=True,
                )
    finally:
        follower.stop()
        await follow
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rate", type=float, default=5.0, help="transfers per second")
    parser.add_argument("--rounds", type=int, default=2, help="0ms and 50ms phases, alternating")
    parser.add_argument("--block-interval-ms", type=int, default=1000)
    parser.add_argument("--timeout-propose-ms", type=int, default=3000)
    args = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="netfaults-") as tmp:
        with NetnsNetwork(
            Path(tmp),
            block_interval_ms=args.block_interval_ms,
            timeout_propose_ms=args.timeout_propose_ms,
        ) as net:
            print(
                f"4 validators on 4 network hosts; block interval {args.block_interval_ms} ms, "
                f"{args.rate:g} transfers/s, {args.rounds} x ({args.seconds:g} s at 0 ms, "
                f"{args.seconds:g} s at 50±10 ms each way)",
                flush=True,
            )
            results = asyncio.run(run(args, net))
    figures = {
        f"{kind}_{q}_ms": pct(values, p)
        for kind, values in results.items()
        for q, p in (("p50", 0.5), ("p99", 0.99))
    }
    for kind, values in results.items():
        if values:
            print(f"{kind}: n={len(values)} mean {statistics.fmean(values):.0f} ms")
    print("RESULT " + " ".join(f"{k}={v:.0f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
