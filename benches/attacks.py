"""Honest transfers while a devnet is under attack (issue 10: "nothing lost").

Run: .venv/bin/python -m benches.attacks          (make attacks; about 3 minutes)

Starts a devnet of ``--validators`` (4) validators on loopback, funds a pool of
honest keys from the faucet, then runs a baseline with no attack and each attack
of ``benches.attackers`` in turn for ``--seconds`` (15) seconds, in a process of
its own:

- ``nonce_gap``: a few hundred funded accounts send nonces 1..16 (never 0) to
  every node, fresh bytes every round (a fee bump makes each round a replacement);
- ``junk``: batches of bad signatures, other chains' transactions, signed bodies
  that do not decode and random bytes, msgpack and JSON, at ``POST /v1/txs``;
- ``parse_bombs``: 32 MiB msgpack and JSON bombs, and bodies over the limit;
- ``websockets``: from many loopback addresses, one feed more than the caps allow,
  each asking for the longest replay, held a moment and opened again;
- ``handshakes``: unfinished p2p handshakes from other loopback addresses
  (``tests/p2p/flood.py``);
- ``spender``: one funded account sending its nonce window as fast as the nodes
  take it.

During each one, once the attack has run for a second, an honest client submits
a transfer about every ``--interval`` (0.5) seconds (jittered) to the nodes in turn, each from a
key with nothing in flight (so no transfer waits for its own predecessor), as a
wallet does: one JSON transaction, and on 503 the same bytes again after
``Retry-After``. Latency runs from the first submission until the node it was
sent to reports the transaction committed (final: BFT commits are final). After
the attack the bench waits up to ``--drain`` seconds for every accepted honest
transfer: one still without a receipt is lost.

Prints per phase the honest transfers sent, final, refused and lost, latency
p50/p99/max in ms (nearest rank: with ~30 transfers a phase, p99 is the max), and
the attacker's requests and what the nodes answered, counted by outcome. The last
line is ``RESULT baseline_p99_ms=.. worst_attack=<name> worst_p99_ms=.. lost=<n>``.
The attackers share the machine's cores with the nodes: on a shared two-core
machine the figures are noisy and the attacks cost the nodes more than the same
traffic from other machines would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benches.attackers import ATTACKS, Outcome, Target, run_attack
from benches.common import Devnet, fund_accounts
from core import PrivateKey, TxBody, format_address, pack_raw, sign_tx, tx_hash
from core.keystore import load_key
from genesis import create_localnet
from vm import Transfer

POLL_S = 0.05
# The attack runs this long before the first honest transfer: measured at full strength.
WARMUP_S = 1.0
# Between phases: the last attack's leftovers drain (blocks of its transactions).
SETTLE_S = 2.0


@dataclass
class Phase:
    """What the honest client saw during one phase, and what the attacker did."""

    name: str
    sent: int = 0
    # Submit-to-final latency of every honest transfer that became final, in ms.
    latencies_ms: list[float] = field(default_factory=list)
    # Final refusals (a clear answer, nothing to wait for) by code.
    refused: Counter[str] = field(default_factory=Counter)
    # 503 answers the client waited out and submitted again after.
    retried: Counter[str] = field(default_factory=Counter)
    # Submissions that got no answer (timeout, connection error), then retried.
    errors: Counter[str] = field(default_factory=Counter)
    # Accepted, but no receipt when the drain ended: still pending, or gone.
    still_pending: int = 0
    dropped: int = 0
    # Receipts whose code is not ok (a transfer between funded keys must succeed).
    failed: Counter[str] = field(default_factory=Counter)
    attack: Outcome | None = None
    # Attack-specific checks that failed (e.g. an accepted spender nonce never committed).
    problems: list[str] = field(default_factory=list)

    @property
    def final(self) -> int:
        return len(self.latencies_ms)

    @property
    def lost(self) -> int:
        return self.still_pending + self.dropped

    def percentile(self, p: float) -> float:
        """Nearest rank; NaN without a final transfer."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


@dataclass
class _InFlight:
    started: float
    url: str
    key: int


class HonestClient:
    """Transfers between the client's own keys; each key has at most one in flight."""

    def __init__(
        self, session: aiohttp.ClientSession, urls: list[str], keys: list[PrivateKey], chain_id: str
    ) -> None:
        self.session = session
        self.urls = urls
        self.keys = keys
        self.chain_id = chain_id
        self.nonces = [0] * len(keys)
        self.fee = 1000
        self.expiry = 0
        self.idle: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(keys)):
            self.idle.put_nowait(i)
        self.in_flight: dict[str, _InFlight] = {}
        self.phase = Phase("none")
        self.rng = random.Random(1)

    async def run(self, seconds: float, interval: float) -> None:
        """One transfer every ``interval`` seconds for ``seconds``, to the nodes in turn."""
        tasks = []
        started = time.perf_counter()
        for n in range(max(1, int(seconds / interval))):
            # Jittered: on a fixed beat in step with the block interval, every transfer
            # would arrive at the same point of a block's round and the percentiles
            # would measure that phase rather than the chain.
            at = started + (n + self.rng.uniform(-0.5, 0.5)) * interval
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._transfer(self.urls[n % len(self.urls)])))
        await asyncio.gather(*tasks)

    async def _transfer(self, url: str) -> None:
        started = time.perf_counter()
        k = await self.idle.get()
        key = self.keys[k]
        to = self.keys[(k + 1) % len(self.keys)].address
        body = TxBody(self.nonces[k], self.fee, self.expiry, "transfer", Transfer(to, 1).encode())
        raw = sign_tx(key, self.chain_id, body).encode()
        digest = tx_hash(raw).hex()
        phase = self.phase
        phase.sent += 1
        while True:
            try:
                async with self.session.post(url + "/v1/txs", json={"tx": raw.hex()}) as resp:
                    doc = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                phase.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            code = doc.get("code")
            if resp.status == 200 or code == "duplicate":
                # A duplicate is this transaction, accepted by an earlier try that got no answer.
                self.nonces[k] += 1
                self.in_flight[digest] = _InFlight(started, url, k)
                return
            if resp.status == 503:
                phase.retried[code] += 1
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                continue
            phase.refused[code] += 1
            self.idle.put_nowait(k)
            return

    async def poll(self) -> None:
        """Until cancelled: find in-flight transfers committed, record their latency."""
        while True:
            await asyncio.gather(*(self._check(h) for h in list(self.in_flight)))
            await asyncio.sleep(POLL_S)

    async def _check(self, digest: str) -> None:
        flight = self.in_flight.get(digest)
        if flight is None:
            return
        try:
            async with self.session.get(f"{flight.url}/v1/txs/{digest}") as resp:
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return
        if doc.get("status") != "committed" or self.in_flight.pop(digest, None) is None:
            return
        now = time.perf_counter()
        self.phase.latencies_ms.append((now - flight.started) * 1000)
        code = (doc.get("receipt") or {}).get("code")
        if code != "ok":
            self.phase.failed[str(code)] += 1
        self.idle.put_nowait(flight.key)

    async def drain(self, timeout: float) -> None:
        """Wait for every accepted transfer; count what is still without a receipt."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        for digest, flight in list(self.in_flight.items()):
            async with self.session.get(f"{flight.url}/v1/txs/{digest}") as resp:
                doc = await resp.json(content_type=None)
            if doc.get("status") == "pending":
                self.phase.still_pending += 1
            else:
                self.phase.dropped += 1
            # Its nonce is taken (pending) or may be (a gossiped copy): the key stays out.
            del self.in_flight[digest]


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json()


async def _wait_height(session: aiohttp.ClientSession, url: str, height: int) -> int:
    while True:
        head = int((await _json(session, url + "/v1/status"))["height"])
        if head >= height:
            return head
        await asyncio.sleep(0.2)


async def _fund(
    session: aiohttp.ClientSession,
    url: str,
    faucet: PrivateKey,
    keys: list[PrivateKey],
    chain_id: str,
) -> None:
    """One faucet batch to every honest key; returns once all are committed."""
    nonce = (await _json(session, f"{url}/v1/accounts/{format_address(faucet.address)}"))["nonce"]
    head = (await _json(session, url + "/v1/status"))["height"]
    raws = [
        sign_tx(
            faucet,
            chain_id,
            TxBody(nonce + i, 1000, head + 100, "transfer", Transfer(k.address, 10**12).encode()),
        ).encode()
        for i, k in enumerate(keys)
    ]
    headers = {"Content-Type": "application/msgpack"}
    async with session.post(url + "/v1/txs", data=pack_raw(raws), headers=headers) as resp:
        doc = await resp.json()
    assert doc["accepted"] == len(raws), doc
    for raw in raws:
        while (await _json(session, f"{url}/v1/txs/{tx_hash(raw).hex()}")).get(
            "status"
        ) != "committed":
            await asyncio.sleep(0.1)


async def _attack_events(queue: Any, timeout: float) -> tuple[str, Any]:
    """The next message of the attacker process (its queue, read off the event loop)."""
    return await asyncio.get_running_loop().run_in_executor(None, queue.get, True, timeout)


async def run_phase(
    name: str, honest: HonestClient, target: Target, args: argparse.Namespace
) -> Phase:
    """The baseline (no attack) or one attack, with honest transfers during it."""
    phase = honest.phase = Phase(name)
    session = honest.session
    head = (await _json(session, target.urls[0] + "/v1/status"))["height"]
    honest.expiry = head + 200
    process = None
    if name != "baseline":
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        process = ctx.Process(target=run_attack, args=(name, target, args.seconds, queue))
        process.start()
        kind, _ = await _attack_events(queue, 300)
        assert kind == "ready", kind
    await asyncio.sleep(WARMUP_S)
    await honest.run(args.seconds - WARMUP_S, args.interval)
    if process is not None:
        kind, phase.attack = await _attack_events(queue, args.seconds + 120)
        assert kind == "done", kind
        await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
    await honest.drain(args.drain)
    if name == "spender" and phase.attack is not None:
        phase.problems += await _spender_committed(session, target, phase.attack, args.drain)
    await asyncio.sleep(SETTLE_S)
    return phase


async def _spender_committed(
    session: aiohttp.ClientSession, target: Target, outcome: Outcome, timeout: float
) -> list[str]:
    """Every nonce a node accepted from the spender is committed (its nonce passes it)."""
    highest = outcome.extra.get("highest_accepted_nonce", -1)
    url = f"{target.urls[0]}/v1/accounts/{format_address(target.spender.address)}"
    deadline = time.monotonic() + timeout
    while True:
        nonce = (await _json(session, url))["nonce"]
        if nonce > highest:
            return []
        if time.monotonic() > deadline:
            return [f"spender: nonce {nonce} on chain, but a node accepted nonce {highest}"]
        await asyncio.sleep(0.2)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _counts(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])) or "-"


def print_phase(phase: Phase) -> None:
    print(
        f"== {phase.name}: honest sent {phase.sent}, final {phase.final}, "
        f"p50 {_ms(phase.percentile(0.5))} ms, p99 {_ms(phase.percentile(0.99))} ms, "
        f"max {_ms(phase.percentile(1.0))} ms, lost {phase.lost} "
        f"(pending {phase.still_pending}, dropped {phase.dropped})",
        flush=True,
    )
    if phase.refused:
        print(f"   honest refused: {_counts(phase.refused)}")
    if phase.retried:
        print(f"   honest retried after 503: {_counts(phase.retried)}")
    if phase.errors:
        print(f"   honest submissions without an answer (retried): {_counts(phase.errors)}")
    if phase.failed:
        print(f"   honest receipts not ok: {_counts(phase.failed)}")
    if phase.attack is not None:
        a = phase.attack
        print(f"   attacker: {a.requests:,} requests in {a.seconds:.1f} s: {_counts(a.outcomes)}")
        if a.extra:
            print(f"   attacker figures: {_counts(a.extra)}")
    for problem in phase.problems:
        print(f"   PROBLEM: {problem}")


async def run(args: argparse.Namespace) -> list[Phase]:
    """Start the devnet, run every phase, print each; the phases."""
    names = ["baseline", *args.attacks]
    with tempfile.TemporaryDirectory(prefix="ll-attacks-") as tmp:
        root = args.dir if args.dir is not None else Path(tmp) / "devnet"
        create_localnet(root, args.validators, "")
        flooders = [PrivateKey.generate() for _ in range(args.gap_accounts)]
        spender = PrivateKey.generate()
        fund_accounts(root, [*flooders, spender], 10**15)
        net = Devnet(root, args.validators, args.log_level)
        net.start()
        try:
            urls = [n["url"] for n in net.nodes]
            ports = [
                json.loads((Path(n["home"]) / "config.json").read_text())["p2p_port"]
                for n in net.nodes
            ]
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                genesis = (await _json(session, urls[0] + "/v1/genesis"))["genesis"]
                chain_id, params = genesis["chain_id"], genesis["params"]
                head = await _wait_height(session, urls[0], 2)
                keys = [PrivateKey.generate() for _ in range(args.honest_keys)]
                faucet = load_key(root / "keyring" / "faucet.json", "")
                await _fund(session, urls[0], faucet, keys, chain_id)
                honest = HonestClient(session, urls, keys, chain_id)
                honest.fee = params["min_fee"]
                sources = tuple(f"127.0.0.{i}" for i in range(2, 2 + args.sources))
                target = Target(
                    tuple(urls),
                    tuple(ports),
                    chain_id,
                    params["min_fee"],
                    head + min(600, params["max_expiry_blocks"] - 1),
                    tuple(k.seed for k in flooders),
                    spender.seed,
                    sources,
                )
                poller = asyncio.create_task(honest.poll())
                phases = []
                try:
                    for name in names:
                        phase = await run_phase(name, honest, target, args)
                        print_phase(phase)
                        phases.append(phase)
                finally:
                    poller.cancel()
        finally:
            net.stop()
    print_summary(phases, args.argv)
    return phases


def print_summary(phases: list[Phase], argv: list[str]) -> None:
    print()
    print(
        f"{'phase':<12} {'sent':>5} {'final':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lost':>5}"
    )
    for p in phases:
        print(
            f"{p.name:<12} {p.sent:>5} {p.final:>5} {_ms(p.percentile(0.5)):>7} "
            f"{_ms(p.percentile(0.99)):>7} {_ms(p.percentile(1.0)):>7} {p.lost:>5}"
        )
    print(f"command: {' '.join([sys.executable, '-m', 'benches.attacks', *argv])}")
    baseline = phases[0].percentile(0.99)
    attacks = phases[1:] or phases
    # NaN (nothing final) is the worst there is.
    worst = max(
        attacks, key=lambda p: math.inf if math.isnan(p.percentile(0.99)) else p.percentile(0.99)
    )
    lost = sum(p.lost for p in phases)
    print(
        f"RESULT baseline_p99_ms={_ms(baseline)} worst_attack={worst.name} "
        f"worst_p99_ms={_ms(worst.percentile(0.99))} lost={lost}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between honest transfers")
    p.add_argument("--drain", type=float, default=60.0, help="wait for accepted honest transfers")
    p.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--gap-accounts", type=int, default=400, help="nonce-gap flooders")
    p.add_argument("--honest-keys", type=int, default=24)
    p.add_argument("--sources", type=int, default=34, help="loopback addresses the floods use")
    p.add_argument("--dir", type=Path, help="run the devnet here and keep it (default: a temp dir)")
    p.add_argument("--log-level", default="INFO", help="log level of the node processes")
    args = p.parse_args(argv)
    # For the command line printed at the end (a test passes its own arguments).
    args.argv = sys.argv[1:] if argv is None else argv
    return args


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
