"""The attackers of ``benches.attacks``: each floods a live devnet for a while.

Each attack runs in a process of its own (``run_attack``), so its Python work
does not delay the honest client whose latency the bench measures; on one
machine it still takes cores the nodes would have, as a real attacker's traffic
takes the node's network and kernel time. An attack prepares what it sends
(signatures, bodies) before it reports ready, sends for ``duration`` seconds as
fast as the nodes answer (closed loop: a worker sends its next request when the
last one was answered), and returns what the nodes answered, counted by outcome.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from core import PrivateKey, SignDomain, SignedTx, TxBody, pack_raw, sign_tx
from tests.p2p.flood import HandshakeFlood
from vm import Transfer

MSGPACK = {"Content-Type": "application/msgpack"}
JSON = {"Content-Type": "application/json"}
BODY_BYTES = 32 * 1024 * 1024
# Gapped transactions a flooder holds per sender (``mempool.max_queued_per_sender``):
# it sends nonces 1..16 and never nonce 0, so none is ever selectable.
GAP_NONCES = 16
# How a feed's ready message begins (json.dumps of {"type": "ready", ...}).
READY = '{"type": "ready"'


@dataclass(frozen=True)
class Target:
    """The devnet under attack and what the attackers may use."""

    urls: tuple[str, ...]
    p2p_ports: tuple[int, ...]
    chain_id: str
    min_fee: int
    # Expiry height for the attackers' transactions.
    expiry: int
    # Seeds of genesis-funded keys (keys refuse to be pickled; seeds cross to the
    # attacker's process): the nonce-gap flooders, and the spender.
    flooder_seeds: tuple[bytes, ...]
    spender_seed: bytes
    # Loopback source addresses for the WebSocket and p2p floods.
    sources: tuple[str, ...]

    @property
    def flooders(self) -> list[PrivateKey]:
        return [PrivateKey(seed) for seed in self.flooder_seeds]

    @property
    def spender(self) -> PrivateKey:
        return PrivateKey(self.spender_seed)


@dataclass(frozen=True)
class Outcome:
    """What one attack did: requests sent and answers by kind (``code`` of each item)."""

    name: str
    requests: int
    outcomes: dict[str, int]
    seconds: float
    # Attack-specific figures (e.g. the spender's highest accepted nonce).
    extra: dict[str, int]


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.extra: dict[str, int] = {}


Attack = Callable[[Target, float, Tally], Awaitable[None]]


def _transfer(key: PrivateKey, chain_id: str, nonce: int, fee: int, expiry: int) -> bytes:
    body = TxBody(nonce, fee, expiry, "transfer", Transfer(key.address, 1).encode())
    return sign_tx(key, chain_id, body).encode()


async def _post_batch(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], tally: Tally
) -> list[str]:
    """POST a batch; count each item's code (or the request's error); the item codes."""
    tally.requests += 1
    try:
        async with session.post(url + "/v1/txs", data=body, headers=headers) as resp:
            doc = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        tally.outcomes[f"request error {type(exc).__name__}"] += 1
        await asyncio.sleep(0.1)
        return []
    if resp.status != 200:
        tally.outcomes[f"http {resp.status} {doc.get('code')}"] += 1
        return []
    codes = [r["code"] for r in doc["results"]]
    tally.outcomes.update(codes)
    return codes


def _session(**connector: Any) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=60)
    return aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0, **connector)
    )


# --- 1. nonce gaps ---


def gap_rounds(target: Target, rounds: int) -> list[list[bytes]]:
    """Per round, every flooder's nonces 1..GAP_NONCES (nonce 0 never comes), each
    round's fee over the last one's by more than the 10% a replacement needs: every
    round is fresh bytes that the nodes verify, admit as replacements and gossip."""
    out = []
    fee = target.min_fee
    flooders = target.flooders
    for _ in range(rounds):
        out.append(
            [
                _transfer(k, target.chain_id, n, fee, target.expiry)
                for k in flooders
                for n in range(1, GAP_NONCES + 1)
            ]
        )
        fee = fee * 115 // 100 + 1
    return out


async def nonce_gap(
    target: Target, seconds: float, tally: Tally, rounds: list[list[bytes]]
) -> None:
    """Every round to every node, batches of 1,000, one request in flight per node."""
    batches = [pack_raw(r[i : i + 1000]) for r in rounds for i in range(0, len(r), 1000)]
    deadline = time.monotonic() + seconds

    async def worker(url: str) -> None:
        async with _session() as session:
            for body in itertools.cycle(batches):
                if time.monotonic() > deadline:
                    return
                await _post_batch(session, url, body, MSGPACK, tally)

    await asyncio.gather(*(worker(u) for u in target.urls))


# --- 2. junk ---


def junk_pool(target: Target, count: int) -> list[bytes]:
    """Bad signatures, another chain's transactions, a good signature over a body that
    does not decode, and bytes that are no transaction at all, in equal parts."""
    rng = random.Random(7)
    out: list[bytes] = []
    for i in range(count):
        key = PrivateKey.generate()
        kind = i % 4
        if kind == 0:
            tx = sign_tx(key, target.chain_id, _body(key, i, target))
            flipped = bytearray(tx.signature)
            flipped[rng.randrange(len(flipped))] ^= 0x01
            out.append(SignedTx(tx.chain_id, tx.sender, tx.body, bytes(flipped)).encode())
        elif kind == 1:
            out.append(sign_tx(key, "another-chain", _body(key, i, target)).encode())
        elif kind == 2:
            body = os.urandom(rng.randrange(8, 200))
            sig = key.sign(SignDomain.TX, target.chain_id, body)
            out.append(SignedTx(target.chain_id, key.public_key, body, sig).encode())
        else:
            out.append(os.urandom(rng.randrange(1, 400)))
    return out


def _body(key: PrivateKey, nonce: int, target: Target) -> TxBody:
    return TxBody(
        nonce, target.min_fee, target.expiry, "transfer", Transfer(key.address, 1).encode()
    )


async def junk(target: Target, seconds: float, tally: Tally, pool: list[bytes]) -> None:
    """Batches of 500 junk transactions, msgpack and JSON in turn, two in flight per node."""
    step = 500
    bodies: list[tuple[bytes, dict[str, str]]] = []
    for i in range(0, len(pool), step):
        part = pool[i : i + step]
        bodies.append((pack_raw(part), MSGPACK))
        bodies.append((json.dumps({"txs": [raw.hex() for raw in part]}).encode(), JSON))
    deadline = time.monotonic() + seconds

    async def worker(url: str, offset: int) -> None:
        # From an address of its own, as an attacker is: the node's budget of refused
        # checks (``http.refused_txs_per_s``) is per address, and on the honest client's
        # it would refuse that client with it.
        async with _session(local_addr=(target.sources[0], 0)) as session:
            n = offset
            while time.monotonic() < deadline:
                body, headers = bodies[n % len(bodies)]
                n += 1
                await _post_batch(session, url, body, headers, tally)

    # The second worker starts half-way: the same bytes twice at once are refused as
    # duplicates before any signature work, which would spare the node.
    half = len(bodies) // 2
    await asyncio.gather(*(worker(u, k * half) for u in target.urls for k in range(2)))


# --- 3. parse bombs ---


def bomb_bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    """Bodies at the node's 32 MiB limit that were costly to parse (node/bodies.py)."""
    count = BODY_BYTES - 5
    half = BODY_BYTES // 2 - 8
    return [
        ("msgpack 33M nils", b"\xdd" + count.to_bytes(4, "big") + b"\xc0" * count, MSGPACK),
        ("json nested brackets", b'{"txs": ' + b"[" * half + b"]" * half + b"}", JSON),
        ("json 11M empty strings", b'{"txs": [' + b'"",' * (BODY_BYTES // 3 - 4) + b'""]}', JSON),
        ("json huge integer", b'{"tx": ' + b"9" * 10_000 + b"}", JSON),
        ("msgpack 20,001-item header", b"\xdc\x4e\x21", MSGPACK),
        ("over the size limit", b"\x00" * (BODY_BYTES + 1), MSGPACK),
    ]


async def parse_bombs(
    target: Target, seconds: float, tally: Tally, bodies: list[tuple[str, bytes, dict[str, str]]]
) -> None:
    """Every body in turn, two requests in flight per node."""
    deadline = time.monotonic() + seconds

    async def worker(url: str, offset: int) -> None:
        async with _session() as session:
            n = offset
            while time.monotonic() < deadline:
                name, body, headers = bodies[n % len(bodies)]
                n += 1
                tally.requests += 1
                try:
                    async with session.post(url + "/v1/txs", data=body, headers=headers) as resp:
                        doc = await resp.json(content_type=None)
                    tally.outcomes[f"{name}: {resp.status} {doc.get('code')}"] += 1
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    tally.outcomes[f"{name}: request error {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.1)

    await asyncio.gather(*(worker(u, k) for u in target.urls for k in range(2)))


# --- 4. WebSocket feeds ---


async def ws_exhaustion(target: Target, seconds: float, tally: Tally, start: int) -> None:
    """From every source address, one socket more than the per-address cap to every
    node (with enough addresses, more than the node's cap too), each asking for the
    longest replay allowed (from ``start``), holding the feed 1-3 s, then again."""
    deadline = time.monotonic() + seconds
    per_address = 33
    rng = random.Random(5)

    async def worker(session: aiohttp.ClientSession, url: str) -> None:
        while time.monotonic() < deadline:
            tally.requests += 1
            try:
                async with session.ws_connect(f"{url}/v1/blocks/ws?from={start}") as ws:
                    messages = 0
                    hold_until = None
                    closed = False
                    while True:
                        left = deadline - time.monotonic()
                        if hold_until is not None:
                            left = min(left, hold_until - time.monotonic())
                        if left <= 0:
                            break
                        try:
                            msg = await ws.receive(timeout=left)
                        except TimeoutError:
                            break
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            # The reason says which cap refused it (apps/commerce/feed.py).
                            reason = str(msg.extra or "")
                            which = " (node cap)" if "the node serves" in reason else ""
                            which = " (per address)" if "per address" in reason else which
                            tally.outcomes[f"closed {ws.close_code}{which}"] += 1
                            closed = True
                            await asyncio.sleep(0.2 + rng.random() * 0.3)
                            break
                        messages += 1
                        if hold_until is None and msg.data.startswith(READY):
                            tally.outcomes["replayed to ready"] += 1
                            hold_until = time.monotonic() + 1 + 2 * rng.random()
                    if hold_until is None and not closed:
                        # Admitted; the replay had not reached ``ready`` when the attack ended.
                        tally.outcomes["admitted, replay queued or unfinished at the end"] += 1
                    tally.extra["messages"] = tally.extra.get("messages", 0) + messages
            except aiohttp.WSServerHandshakeError as exc:
                tally.outcomes[f"upgrade refused {exc.status}"] += 1
                await asyncio.sleep(0.5)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                tally.outcomes[f"error {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)

    sessions = [_session(local_addr=(source, 0)) for source in target.sources]
    workers = [
        worker(session, url)
        for session in sessions
        for url in target.urls
        for _ in range(per_address)
    ]
    try:
        # Workers still waiting for an upgrade or a replay slot at the deadline give up.
        await asyncio.wait_for(asyncio.gather(*workers), seconds + 0.5)
    except TimeoutError:
        pass
    finally:
        for session in sessions:
            await session.close()


# --- 5. p2p handshakes ---


async def handshake_flood(target: Target, seconds: float, tally: Tally) -> None:
    """tests/p2p/flood.py: unfinished handshakes from other loopback addresses, 12 per
    address and port (more than the per-address limit, and together than the slots)."""
    flood = HandshakeFlood(list(target.p2p_ports), list(target.sources[:8]), 12, retry=0.05)
    async with flood:
        await asyncio.sleep(seconds)
    stats = flood.stats
    tally.requests = stats.connects
    tally.outcomes["closed at once (refused)"] = stats.refused
    tally.outcomes["held open (not refused at once)"] = stats.connects - stats.refused
    tally.extra["peak_open"] = stats.peak_open


# --- 6. one spender ---


async def spender_flood(target: Target, seconds: float, tally: Tally) -> None:
    """One funded account sends its next nonces, a batch of the nonce window (64) at a
    time to each node in turn, as fast as the nodes answer."""
    key = target.spender
    deadline = time.monotonic() + seconds
    nxt = 0
    highest = -1
    ok = {"accepted", "duplicate", "nonce_too_low"}
    async with _session() as session:
        for n in itertools.count():
            if time.monotonic() > deadline:
                break
            url = target.urls[n % len(target.urls)]
            raws = [
                _transfer(key, target.chain_id, nonce, target.min_fee, target.expiry)
                for nonce in range(nxt, nxt + 64)
            ]
            codes = await _post_batch(session, url, pack_raw(raws), MSGPACK, tally)
            run = 0
            for i, code in enumerate(codes):
                if code == "accepted":
                    highest = max(highest, nxt + i)
                if code not in ok:
                    break
                run += 1
            nxt += run
            if run == 0:
                # Nothing more fits now: the window moves when a block commits.
                await asyncio.sleep(0.02)
    tally.extra["highest_accepted_nonce"] = highest


# --- the process an attack runs in ---


async def _head(url: str) -> int:
    async with _session() as session, session.get(url + "/v1/status") as resp:
        return int((await resp.json())["height"])


async def _run(name: str, target: Target, seconds: float, ready: Callable[[], None]) -> Tally:
    tally = Tally()
    if name == "nonce_gap":
        # About a round a second: each node takes roughly that long to verify one.
        rounds = gap_rounds(target, max(2, int(seconds)))
        ready()
        await nonce_gap(target, seconds, tally, rounds)
    elif name == "junk":
        pool = junk_pool(target, 4000)
        ready()
        await junk(target, seconds, tally, pool)
    elif name == "parse_bombs":
        bodies = bomb_bodies()
        ready()
        await parse_bombs(target, seconds, tally, bodies)
    elif name == "websockets":
        # The longest replay a node serves (max_replay_blocks, 1,000), whatever the height.
        start = max(1, await _head(target.urls[0]) - 990)
        ready()
        await ws_exhaustion(target, seconds, tally, start)
    elif name == "handshakes":
        ready()
        await handshake_flood(target, seconds, tally)
    elif name == "spender":
        ready()
        await spender_flood(target, seconds, tally)
    else:
        raise ValueError(f"unknown attack {name!r}")
    return tally


ATTACKS = ("nonce_gap", "junk", "parse_bombs", "websockets", "handshakes", "spender")


def run_attack(name: str, target: Target, seconds: float, queue: Any) -> None:
    """Process entry point: prepare, put ``("ready", None)``, attack, put ``("done", Outcome)``."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = [0.0]

    def ready() -> None:
        started[0] = time.monotonic()
        queue.put(("ready", None))

    tally = asyncio.run(_run(name, target, seconds, ready))
    outcome = Outcome(
        name,
        tally.requests,
        dict(tally.outcomes),
        time.monotonic() - started[0],
        dict(tally.extra),
    )
    queue.put(("done", outcome))
