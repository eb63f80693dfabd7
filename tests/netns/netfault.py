"""A userspace fault proxy between network hosts (the kernels we run on have no ``tc netem``).

One proxy runs inside each host's network namespace (``tests/netns/hosts.py``): it
listens on the host's public p2p address, the one genesis publishes, and forwards
every connection to the node's real listener on the namespace's loopback. Every
connection between two hosts therefore passes through exactly one proxy, the
dialled host's, which chooses the faults by the dialling host's source address:

- **latency** ``latency_ms ± jitter_ms`` (uniform) on every chunk, in each
  direction; chunks of one connection keep their order (a chunk is never sent
  before the one read before it), as TCP keeps them;
- **loss**: a TCP stream loses no bytes, it stalls: a lost segment is sent again
  after the retransmission timeout, and everything behind it waits. So ``loss`` is
  the probability that a chunk is "lost", which delays it (and, order kept, the
  rest of its connection) by ``rto_ms`` more;
- **cuts**: ``cut`` is the probability that a chunk resets its connection instead
  of being forwarded (a middlebox or a peer dropping the connection): the node must
  redial and resynchronise;
- **partitions**: sources in ``blocked`` are refused at once, and their
  connections in progress are cut when the setting arrives; heal by removing them.

The proxy connects to the node from ``127.1.A.B`` for a source ``X.Y.A.B``, so the
node still sees one address per peer host (its per-source admission limits stay
meaningful) instead of one loopback address for everyone.

Control: a TCP port (``--control``) taking one JSON object per line, the whole
settings::

    {"default": {"latency_ms": 50, "jitter_ms": 10, "loss": 0.01, "rto_ms": 200,
                 "cut": 0.001},
     "by_source": {"10.1.2.3": {...}},
     "blocked": ["10.1.2.4"]}

and answering one line: ``{"ok": true, "stats": {...}}`` (or ``{"ok": false,
"error": ...}``). An empty object ``{}`` resets to no faults. Start::

    python -m tests.netns.netfault --listen 10.1.2.1:9100 --target 127.0.0.1:9100 \\
        --control 10.1.2.1:9900
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import random
import socket
from dataclasses import asdict, dataclass, field, fields
from typing import Any

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Faults:
    """What happens to the traffic of one source (see the module doc)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rto_ms: float = 200.0
    cut: float = 0.0

    @classmethod
    def from_json(cls, doc: Any) -> Faults:
        if not isinstance(doc, dict):
            raise ValueError("faults must be an object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        for name, value in doc.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        faults = cls(**{k: float(v) for k, v in doc.items()})
        if faults.jitter_ms > faults.latency_ms:
            raise ValueError("jitter_ms must not exceed latency_ms")
        if faults.loss > 1 or faults.cut > 1:
            raise ValueError("loss and cut are probabilities (0..1)")
        return faults

    def delay_s(self, rng: random.Random) -> tuple[float, bool]:
        """A chunk's delay in seconds, and whether it was "lost" (stalled ``rto_ms``)."""
        delay = self.latency_ms + rng.uniform(-self.jitter_ms, self.jitter_ms)
        lost = bool(self.loss) and rng.random() < self.loss
        if lost:
            delay += self.rto_ms
        return max(0.0, delay) / 1000, lost


@dataclass(frozen=True, slots=True)
class Settings:
    default: Faults = Faults()
    by_source: dict[str, Faults] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, doc: Any) -> Settings:
        if not isinstance(doc, dict):
            raise ValueError("settings must be an object")
        unknown = sorted(set(doc) - {"default", "by_source", "blocked"})
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        by_source = doc.get("by_source", {})
        blocked = doc.get("blocked", [])
        if not isinstance(by_source, dict) or not isinstance(blocked, list):
            raise ValueError("by_source must be an object and blocked a list")
        for ip in [*by_source, *blocked]:
            ipaddress.ip_address(ip)  # ValueError names a bad one
        return cls(
            Faults.from_json(doc.get("default", {})),
            {ip: Faults.from_json(f) for ip, f in by_source.items()},
            frozenset(blocked),
        )

    def faults(self, source: str) -> Faults:
        return self.by_source.get(source, self.default)


@dataclass(slots=True)
class Stats:
    accepted: int = 0
    refused: int = 0
    cut: int = 0
    chunks: int = 0
    lost: int = 0


class _Link:
    """One proxied connection: two pumps, and a cut that ends both."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    def cut(self) -> None:
        for writer in self.writers:
            # abort, not close: no FIN handshake, buffered data dropped (a reset).
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], seed: int = 0) -> None:
        self.listen = listen
        self.target = target
        self.settings = Settings()
        self.stats = Stats()
        self.links: set[_Link] = set()
        self.rng = random.Random(seed or None)

    def apply(self, settings: Settings) -> None:
        self.settings = settings
        for link in list(self.links):
            if link.source in settings.blocked:
                self.stats.cut += 1
                link.cut()

    async def serve(self, control: tuple[str, int]) -> None:
        server = await asyncio.start_server(self._on_client, *self.listen, reuse_address=True)
        ctl = await asyncio.start_server(self._on_control, *control, reuse_address=True)
        async with server, ctl:
            await asyncio.gather(server.serve_forever(), ctl.serve_forever())

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        if source in self.settings.blocked:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            node_reader, node_writer = await asyncio.open_connection(
                *self.target, local_addr=(_loopback_for(source), 0)
            )
        except OSError:
            writer.transport.abort()
            return
        self.stats.accepted += 1
        link = _Link(source)
        link.writers = [writer, node_writer]
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, node_writer)),
            asyncio.create_task(self._pump(link, node_reader, writer)),
        ]
        self.links.add(link)
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self.links.discard(link)
            for w in link.writers:
                w.transport.abort()

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        last_due = 0.0
        try:
            while data := await reader.read(CHUNK):
                faults = self.settings.faults(link.source)
                self.stats.chunks += 1
                if faults.cut and self.rng.random() < faults.cut:
                    self.stats.cut += 1
                    link.cut()
                    return
                delay, lost = faults.delay_s(self.rng)
                self.stats.lost += lost
                # Never before the previous chunk: one connection keeps its order.
                last_due = max(loop.time() + delay, last_due)
                queue.put_nowait((last_due, data))
            queue.put_nowait(None)
            await sender
        except (OSError, asyncio.IncompleteReadError):
            link.cut()
        finally:
            sender.cancel()

    @staticmethod
    async def _send(
        queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        # The source closed its side: pass the half-close on.
        if writer.can_write_eof():
            writer.write_eof()

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while line := await reader.readline():
                try:
                    self.apply(Settings.from_json(json.loads(line)))
                    answer: dict[str, Any] = {"ok": True, "stats": asdict(self.stats)}
                except ValueError as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        writer.close()


def _loopback_for(source: str) -> str:
    """127.1.A.B for a source X.Y.A.B: one loopback address per peer host."""
    try:
        packed = socket.inet_aton(source)
    except OSError:
        return "127.0.0.1"
    return f"127.1.{packed[2]}.{packed[3]}"


def control(address: tuple[str, int], settings: dict[str, Any], timeout: float = 5.0) -> Any:
    """Send ``settings`` to the proxy whose control port is ``address``; its stats."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(json.dumps(settings).encode() + b"\n")
        answer = json.loads(sock.makefile("rb").readline())
    if not answer.get("ok"):
        raise ValueError(f"proxy {address} refused {settings}: {answer.get('error')}")
    return answer["stats"]


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--target", type=_address, required=True)
    parser.add_argument("--control", type=_address, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    proxy = FaultProxy(args.listen, args.target, args.seed)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(proxy.serve(args.control))


if __name__ == "__main__":
    main()
