"""Admission of inbound connections before they authenticate.

Anyone can open a TCP connection to a node's p2p port; only members finish
the handshake. Until then a connection is a stranger's, and a stranger must
not be able to keep members out (issue 10) nor make the node work or log
without bound. ``HandshakeGate`` holds the inbound handshakes in progress:

- at most ``max_per_source`` from one source (an IPv4 address, or an IPv6 /64,
  which one host usually holds whole): many source ports behind a few
  addresses hold a few slots, never all of them;
- at most ``max_pending`` in all; a newcomer that finds them full closes the
  oldest, first among those that have not yet offered a member's
  certificate. A member offers at once and finishes in milliseconds, so it
  is never the oldest; a stranger holding slots from many addresses only
  evicts other strangers;
- at most ``tls_rate`` TLS handshakes per second per source (a burst of
  ``tls_burst``): each costs us about 2 ms of CPU, and anyone can replay a
  member's public certificate to get that far.

``RefusalLog`` keeps refusals from flooding the log: a few lines per
interval, then a count.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Sources remembered for the TLS rate; the least recently seen is forgotten first
# (it starts again with a full burst, which bounds what forgetting can give away).
MAX_RATE_SOURCES = 4096


@dataclass(eq=False, slots=True)
class Pending:
    """One inbound handshake in progress."""

    source: str
    # Closes the connection at once (the transport's abort).
    abort: Callable[[], None]
    # Closed to make room for a newer connection.
    evicted: bool = False


class HandshakeGate:
    """Inbound handshakes in progress, bounded per source and in all (see the module doc)."""

    def __init__(
        self,
        max_pending: int,
        max_per_source: int,
        tls_rate: float,
        tls_burst: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending = max_pending
        self.max_per_source = max_per_source
        self.tls_rate = tls_rate
        self.tls_burst = tls_burst
        self.evicted = 0
        self._clock = clock
        # Insertion order is age: the first entry is the oldest.
        self._unidentified: dict[Pending, None] = {}
        self._identified: dict[Pending, None] = {}
        self._per_source: dict[str, int] = {}
        # source -> (tokens, time of the last update)
        self._tls: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._unidentified) + len(self._identified)

    def pending_from(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def admit(self, source: str, abort: Callable[[], None]) -> Pending | None:
        """Start tracking a new connection; None if its source is at its cap (refuse it)."""
        if self._per_source.get(source, 0) >= self.max_per_source:
            return None
        while len(self) >= self.max_pending:
            oldest = next(iter(self._unidentified or self._identified))
            oldest.evicted = True
            self.evicted += 1
            self.release(oldest)
            oldest.abort()
        pending = Pending(source, abort)
        self._unidentified[pending] = None
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return pending

    def identify(self, pending: Pending) -> None:
        """The connection offered a member's certificate: evict it only after strangers."""
        if pending in self._unidentified:
            del self._unidentified[pending]
            self._identified[pending] = None

    def release(self, pending: Pending) -> None:
        """The handshake ended (either way); idempotent."""
        if pending in self._unidentified:
            del self._unidentified[pending]
        elif pending in self._identified:
            del self._identified[pending]
        else:
            return
        left = self._per_source[pending.source] - 1
        if left:
            self._per_source[pending.source] = left
        else:
            del self._per_source[pending.source]

    def allow_tls(self, source: str) -> bool:
        """Take one TLS handshake from ``source``'s budget; False if it has none left."""
        now = self._clock()
        tokens, stamp = self._tls.pop(source, (self.tls_burst, now))
        tokens = min(self.tls_burst, tokens + (now - stamp) * self.tls_rate)
        allowed = tokens >= 1.0
        self._tls[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._tls) > MAX_RATE_SOURCES:
            self._tls.popitem(last=False)
        return allowed


@dataclass(slots=True)
class _Budget:
    """One level's lines in the current interval, and the lines left out."""

    window: float
    lines: int = 0
    skipped: int = 0


class RefusalLog:
    """At most ``burst`` lines per ``interval`` seconds of each level; the lines left out
    are counted and the count is logged, at their level, with the next line of that level
    after the interval (or by ``flush``).

    Levels have budgets of their own: a stranger's flood of warnings must not use up the
    lines that would show an error of ours (``ERROR``, with its traceback).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._budgets: dict[int, _Budget] = {}

    def log(self, level: int, msg: str, *args: Any, exc_info: BaseException | None = None) -> None:
        now = self._clock()
        budget = self._budgets.setdefault(level, _Budget(now - self.interval))
        if now - budget.window >= self.interval:
            self._flush(level, budget)
            budget.window = now
            budget.lines = 0
        if budget.lines < self.burst:
            budget.lines += 1
            self.logger.log(level, msg, *args, exc_info=exc_info)
        else:
            budget.skipped += 1

    def flush(self) -> None:
        for level, budget in self._budgets.items():
            self._flush(level, budget)

    def _flush(self, level: int, budget: _Budget) -> None:
        if budget.skipped:
            self.logger.log(
                level,
                "%d more inbound connections refused in the last %.0f s (not logged one by one)",
                budget.skipped,
                self.interval,
            )
            budget.skipped = 0
