"""Strangers that flood a p2p port with handshakes they never finish (tests only).

Each worker connects from one of several loopback source addresses (Linux
routes all of 127.0.0.0/8 to lo, so 127.0.0.2, 127.0.0.3, ... are distinct
sources), sends an optional first chunk (nothing, half a frame header, a
member's public certificate offer), then holds the connection until the
server closes it, and reconnects at once: the cheapest way to keep
handshake slots busy. ``HandshakeFloodThread`` runs one in a thread of its
own, for tests that drive real node processes.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass


@dataclass
class FloodStats:
    connects: int = 0
    # Connections the server closed within ``quick`` seconds: refused on sight.
    refused: int = 0
    open_now: int = 0
    peak_open: int = 0


class HandshakeFlood:
    """``per_source`` workers per (port, source address) pair, until ``stop()``."""

    def __init__(
        self,
        ports: list[int],
        sources: list[str],
        per_source: int,
        first_bytes: bytes = b"",
        retry: float = 0.05,
        quick: float = 0.05,
    ) -> None:
        self.ports = ports
        self.sources = sources
        self.per_source = per_source
        self.first_bytes = first_bytes
        self.retry = retry
        self.quick = quick
        self.stats = FloodStats()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for port in self.ports:
            for source in self.sources:
                for _ in range(self.per_source):
                    self._tasks.append(asyncio.create_task(self._worker(port, source)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> HandshakeFlood:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _worker(self, port: int, source: str) -> None:
        loop = asyncio.get_running_loop()
        stats = self.stats
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0)
                )
            except OSError:
                # The node is not listening (yet, or any more): try again soon.
                await asyncio.sleep(self.retry)
                continue
            stats.connects += 1
            stats.open_now += 1
            stats.peak_open = max(stats.peak_open, stats.open_now)
            opened = loop.time()
            try:
                if self.first_bytes:
                    writer.write(self.first_bytes)
                # Hold the connection: read (and ignore) until the server closes it.
                while await reader.read(65536):
                    pass
            except OSError:
                pass
            finally:
                stats.open_now -= 1
                writer.transport.abort()
            if loop.time() - opened < self.quick:
                stats.refused += 1
                await asyncio.sleep(self.retry)


class HandshakeFloodThread:
    """A ``HandshakeFlood`` on an event loop in a thread, for synchronous tests."""

    def __init__(self, flood: HandshakeFlood) -> None:
        self.flood = flood
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> HandshakeFlood:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.flood

    async def _start(self) -> None:
        self.flood.start()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.flood.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
