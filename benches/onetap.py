"""One-tap buyers: each request carries one transaction from a sender never seen before.

Run: .venv/bin/python -m benches.onetap [--validators 1] [--requests 4000] [--concurrency 16]

The other benches submit batches of thousands, which spread a request's fixed costs
(HTTP, the handler, a call to the signature workers) thinly. A shop's app sends one
transaction per tap, so this is what a validator pays per buyer in a flash deal: fresh
funded senders each send one transfer as ``POST /v1/txs`` with ``{"tx": "<hex>"}``,
``--concurrency`` requests in flight, spread over the validators. It prints the
requests a second, every validator's CPU per request by part and by stage
(``benches.common.cpu_table``, ``stage_table``) and waits for every transaction to be
final. Last line: ``RESULT rps=<n> cpu_us=<n> event_loop_us=<n>``, CPU per request
summed over the parts, and the event loop's, as the validators' mean.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benches.common import (
    CpuPhase,
    Devnet,
    cpu_table,
    fund_accounts,
    mean_us_per_tx,
    stage_table,
)
from benches.throughput import Follower, presign, signing_terms, wait_for
from core import PrivateKey
from genesis import create_localnet


async def tap(urls: list[str], txs: list[bytes], concurrency: int) -> dict[int, int]:
    """Send each of ``txs`` in a request of its own; the count of each HTTP status."""
    statuses: dict[int, int] = {}
    todo = iter(enumerate(txs))
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for i, raw in todo:
                url = urls[i % len(urls)] + "/v1/txs"
                async with session.post(url, json={"tx": raw.hex()}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ll-bench-") as tmp:
        root = args.dir if args.dir is not None else Path(tmp) / "devnet"
        create_localnet(root, args.validators, "")
        keys = [PrivateKey.generate() for _ in range(args.requests)]
        fund_accounts(root, keys, 10**12)
        net = Devnet(root, args.validators, args.log_level)
        net.start()
        try:
            net.wait_tree_loaded()
            urls = [n["url"] for n in net.nodes]
            chain_id, fee, expiry, start_height = await signing_terms(urls[0])
            txs = presign(keys, range(1), chain_id, fee, expiry)
            follower = Follower(urls[0], start_height)
            follow_task = asyncio.create_task(follower.run())
            before = await asyncio.to_thread(net.cpu_seconds)
            started = time.perf_counter()
            statuses = await tap(urls, txs, args.concurrency)
            sent_in = time.perf_counter() - started
            accepted = statuses.get(200, 0)
            await wait_for(follower, accepted, 120)
            after = await asyncio.to_thread(net.cpu_seconds)
            follower.stop()
            await follow_task
        finally:
            net.stop()
    rps = len(txs) / sent_in
    print(
        f"{len(txs):,} requests of one transaction each, {args.concurrency} in flight, "
        f"in {sent_in:.2f} s: {rps:,.0f} a second; statuses {statuses}; "
        f"{follower.count:,} final"
    )
    phase: CpuPhase = ("one tap", len(txs), before, after)
    print(cpu_table([phase]))
    print(stage_table([phase]))
    us = mean_us_per_tx(phase)
    print(f"command: {' '.join([sys.executable, '-m', 'benches.onetap', *sys.argv[1:]])}")
    print(
        f"RESULT rps={rps:.0f} cpu_us={sum(us.values()):.0f} event_loop_us={us['event_loop']:.0f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--requests", type=int, default=4000, help="buyers, one request each")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    p.add_argument("--dir", type=Path, help="run the devnet here and keep it (default: a temp dir)")
    p.add_argument("--log-level", default="INFO", help="log level of the node processes")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be at least 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
