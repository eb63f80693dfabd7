"""End-to-end throughput: pre-signed transfers over HTTP into a devnet, committed tx/s.

Run: .venv/bin/python -m benches.throughput --validators 1
The last line is ``RESULT tps=... ceiling=... ratio=...`` where the ceiling is the
2-thread PyNaCl verification rate measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benches.common import Devnet, fund_accounts, verify_ceiling
from core import PrivateKey, TxBody, pack_raw, sign_tx
from genesis import create_localnet
from vm import Transfer


def presign(
    keys: list[PrivateKey], per_account: int, chain_id: str, fee: int, expiry: int
) -> list[bytes]:
    """Nonce-ordered rounds over all accounts, so early batches carry early nonces."""
    sink = keys[0].address
    txs = []
    for nonce in range(per_account):
        for key in keys:
            body = TxBody(nonce, fee, expiry, "transfer", Transfer(sink, 1).encode())
            txs.append(sign_tx(key, chain_id, body).encode())
    return txs


async def submit_all(urls: list[str], txs: list[bytes], batch: int, concurrency: int) -> int:
    batches = [txs[i : i + batch] for i in range(0, len(txs), batch)]
    accepted = 0
    queue: asyncio.Queue[tuple[int, list[bytes]]] = asyncio.Queue()
    for i, b in enumerate(batches):
        queue.put_nowait((i, b))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            i, b = queue.get_nowait()
            url = urls[i % len(urls)] + "/v1/txs"
            async with session.post(
                url, data=pack_raw(b), headers={"Content-Type": "application/msgpack"}
            ) as resp:
                doc = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"submit failed: {doc}")
                accepted += doc["accepted"]

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted


async def wait_committed(
    url: str, start_height: int, total: int, timeout: float
) -> tuple[int, int]:
    """Follow blocks until ``total`` txs are committed; return (txs, last height)."""
    committed = 0
    height = start_height
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while committed < total and time.monotonic() < deadline:
            async with session.get(url + "/v1/status") as resp:
                head = (await resp.json())["height"]
            while height < head:
                height += 1
                async with session.get(f"{url}/v1/blocks/{height}?txs=false") as resp:
                    committed += (await resp.json())["num_txs"]
            await asyncio.sleep(0.05)
    return committed, height


async def run(args: argparse.Namespace) -> None:
    ceiling = verify_ceiling()
    print(f"verify ceiling (2 threads): {ceiling:,.0f} sig/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="ll-bench-") as tmp:
        root = Path(tmp) / "devnet"
        layout = create_localnet(root, args.validators, "")
        keys = [PrivateKey.generate() for _ in range(args.accounts)]
        fund_accounts(root, keys, 10**12)
        net = Devnet(root, args.validators)
        net.start()
        try:
            urls = [n["url"] for n in net.nodes]
            async with aiohttp.ClientSession() as s, s.get(urls[0] + "/v1/genesis") as r:
                genesis = (await r.json())["genesis"]
            async with aiohttp.ClientSession() as s, s.get(urls[0] + "/v1/status") as r:
                start_height = (await r.json())["height"]
            params = genesis["params"]
            expiry = start_height + params["max_expiry_blocks"] // 2
            txs = presign(keys, args.per_account, genesis["chain_id"], params["min_fee"], expiry)
            print(f"{len(txs):,} pre-signed transfers from {len(keys):,} accounts", flush=True)
            started = time.perf_counter()
            accepted = await submit_all(urls, txs, args.batch, args.concurrency)
            submitted = time.perf_counter() - started
            committed, height = await wait_committed(urls[0], start_height, accepted, 300)
            elapsed = time.perf_counter() - started
        finally:
            net.stop()
        del layout
    tps = committed / elapsed
    ratio = tps * args.validators / ceiling
    print(
        f"accepted {accepted:,} in {submitted:.2f} s; committed {committed:,} "
        f"by height {height} in {elapsed:.2f} s"
    )
    print(f"command: {' '.join([sys.executable, '-m', 'benches.throughput', *sys.argv[1:]])}")
    print(f"RESULT tps={tps:.0f} ceiling={ceiling:.0f} ratio={ratio:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--accounts", type=int, default=4000)
    p.add_argument("--per-account", type=int, default=10)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=2)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
