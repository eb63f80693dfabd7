"""Per-peer limits: token buckets for inbound rate, a byte-bounded outbound queue."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    ``take(n)`` always succeeds and returns how long the caller must wait
    before acting: the bucket may go into debt, so a single request larger
    than ``burst`` (a big sync frame) is delayed, never refused forever.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_clock")

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._stamp = clock()

    def level(self) -> float:
        """Tokens saved up now (negative while in debt)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def take(self, n: float) -> float:
        self._tokens = self.level() - n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


# What one bytes object held in a list or queue costs beside its bytes: the object's
# header, the allocator's rounding and its slot. A peer decides how many items its bytes
# make (a batch of two-byte transactions, a Ping a Pong each), so what it makes us hold
# is counted with this per item, never by its bytes alone.
ITEM_OBJECT_BYTES = sys.getsizeof(b"") + 16 + 8


class QueueOverflow(Exception):
    """A message that must not be dropped does not fit: the peer is too slow."""


class OutboundQueue:
    """Frames waiting to be written to one peer, bounded by the memory they hold (their
    bytes and ``ITEM_OBJECT_BYTES`` each: a peer that sends Pings and never reads makes
    us queue a 7-byte Pong each, which hold eight times that).

    Two FIFO lanes: essential frames (consensus, sync, keepalive) and droppable
    ones (transaction gossip). The writer empties the essential lane first.
    When a frame does not fit, the oldest droppable frames are discarded to
    make room; if a droppable frame still does not fit it is discarded itself,
    and if an essential one does not fit, ``QueueOverflow`` tells the caller to
    drop the peer (it will reconnect and catch up by block sync).
    """

    __slots__ = ("limit", "size", "dropped", "_essential", "_droppable", "_ready")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.dropped = 0
        self._essential: deque[bytes] = deque()
        self._droppable: deque[bytes] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._essential) + len(self._droppable)

    def clear(self) -> None:
        """Forget every queued frame (the connection is closed: none will be written)."""
        self._essential.clear()
        self._droppable.clear()
        self.size = 0

    def put(self, frame: bytes, droppable: bool) -> bool:
        """Queue a frame; False if it was dropped. Raises ``QueueOverflow`` (see class doc)."""
        need = len(frame) + ITEM_OBJECT_BYTES
        while self.size + need > self.limit and self._droppable:
            self.size -= len(self._droppable.popleft()) + ITEM_OBJECT_BYTES
            self.dropped += 1
        if self.size + need > self.limit:
            if droppable:
                self.dropped += 1
                return False
            raise QueueOverflow(
                f"outbound queue full: {self.size} of {self.limit} bytes used, "
                f"frame holding {need} bytes"
            )
        (self._droppable if droppable else self._essential).append(frame)
        self.size += need
        self._ready.set()
        return True

    async def get_batch(self, max_bytes: int) -> list[bytes]:
        """Wait for frames; take essential ones first, up to ``max_bytes`` (at least one)."""
        while not (self._essential or self._droppable):
            self._ready.clear()
            await self._ready.wait()
        out: list[bytes] = []
        taken = 0
        for lane in (self._essential, self._droppable):
            while lane and (not out or taken + len(lane[0]) <= max_bytes):
                frame = lane.popleft()
                out.append(frame)
                taken += len(frame)
        self.size -= taken + ITEM_OBJECT_BYTES * len(out)
        return out


# What one received TLS record costs the peer's byte rate beside its plaintext. Each
# record is one pass of the TLS layer's read loop (one ``SSLObject.read``), about 1 us
# of the event loop whatever its size (benches/tls_records.py: a frame sent one byte
# per record costs 990 ns a byte, in 16 KiB records 2 ns a byte), so a peer sending 1-byte
# records at its byte rate (32 MiB/s) asked for some 30 s of CPU a second. At 512 bytes
# a record, 1-byte records at the byte rate cost about what full records do (65 ms a
# second); a 16 KiB record pays 3 % more, a 300-byte vote sent alone 2.7 times its size.
RECORD_CHARGE = 512


class RecordCount(Protocol):
    """Counts the TLS records of data a connection received: the TLS object itself
    (``p2p.tls.record_count``), which sees each record OpenSSL decrypts."""

    records: int
