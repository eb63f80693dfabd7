"""The node's HTTP listener: aiohttp's server behind a gate that bounds what clients hold.

aiohttp bounds a request (its size, the body's time) but not a client: any number
of connections, idle ones for the keep-alive time, and a response queued for a
client that never reads, for ever. Each costs a descriptor and buffers, and
descriptors are shared with what keeps the node alive (LevelDB's tables, the
consensus WAL, the signer's state, its peers). So every accepted connection
first passes ``ConnectionGate``:

- **caps.** At most ``max_per_address`` connections from one client address (an
  IPv6 client's whole /64, which one subscriber usually holds; the TCP peer's, so
  behind a reverse proxy the proxy's own, whatever ``trusted_proxies`` says: the
  gate answers before any header is read) and
  ``max_connections`` in all, itself kept below the process's open-file limit
  (``connection_cap``). A connection over a cap is answered ``503`` with
  ``Retry-After`` and closed before aiohttp sees it: no task, no parser. At the
  total cap a newcomer instead takes the place of the least recently active
  connection of the address holding the most, when that one holds at least two
  more: a few addresses cannot fill the node and keep everyone else out.
- **writes that stall.** A connection whose unsent bytes have not shrunk for
  ``write_stall_ms`` is reset: its client stopped reading (a TCP zero window).
  A closing transport waits for its buffer to drain first, so this also ends
  connections whose close would never finish. Reset, not closed: a close hands
  the unsent bytes to the kernel, which keeps them as long as the window stays
  shut (``core.sockets``); for closes the gate does not see (aiohttp's), the
  kernel itself gives up on unacknowledged bytes a while later.
- **idle and slow headers.** aiohttp closes a connection that has no request in
  progress after ``keepalive_timeout_ms``, counted from the connection or the
  last answer; headers trickled byte by byte do not restart it.

Log lines that clients cause as often as they like (a reset, aiohttp's error for a
malformed request) are throttled (``node.logs.ThrottledLog``); the metrics count every reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from core.errors import CannotListen
from core.netaddr import client_key, parse_trusted_proxies
from core.sockets import bound_unacked, reset
from node.logs import ThrottledLog

log = logging.getLogger("node.http")


def _malformed(exc: BaseException | None) -> bool:
    """Whether aiohttp's line is for a request its parser refused (a client's input)."""
    return isinstance(exc, HttpProcessingError)


# Descriptors kept out of the HTTP clients' reach: LevelDB's table files (a store's
# two databases keep up to plyvel's max_open_files of 1,000 each, and LevelDB itself
# at most a fifth of the limit: storage.table_reads), and 1,024 for the WAL, the
# signer, peers' connections and the signature workers' pipes. At most half of a
# small limit (a hard limit of 1,024 would leave HTTP nothing).
LEVELDB_TABLE_FILES = 2 * 1000
FD_RESERVE = 1024
# Below this many connections in all, the node warns at start: its limit is too low.
FEW_CONNECTIONS = 256


def connection_cap(fd_limit: int) -> int:
    """The HTTP connections a process with ``fd_limit`` open files can spare."""
    tables = min(fd_limit // 5, LEVELDB_TABLE_FILES)
    return max(1, fd_limit - min(fd_limit // 2, FD_RESERVE + tables))


# How often stalled writes are looked for.
SWEEP_S = 1.0
_REFUSED_BODY = json.dumps(
    {"code": "busy", "message": "too many connections; retry later"}
).encode()
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_REFUSED_BODY)).encode()
    + b"\r\n\r\n"
    + _REFUSED_BODY
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What the node's HTTP clients may hold at most (the node config's ``http`` section)."""

    # Open connections in all (and never more than ``connection_cap`` of the open-file limit).
    max_connections: int = 8192
    # From one address (an IPv6 /64): many phones share a carrier's NAT address.
    max_per_address: int = 256
    # An idle connection, or one still sending its headers, is closed after this.
    keepalive_timeout_ms: int = 15_000
    # A connection whose unsent bytes do not shrink for this long is reset.
    write_stall_ms: int = 30_000
    # Request bytes held by bodies being read, over all connections; a quarter of it
    # per address (node.bodies).
    max_bodies_bytes: int = 128 * 1024 * 1024
    # Answer bytes being sent, over all connections; a quarter of it per address
    # (node.bodies.ANSWER_BUDGET).
    max_answers_bytes: int = 128 * 1024 * 1024
    # An answer in that budget must be taken by its client within this, plus its size
    # at ``answer_min_bytes_per_s``; else its connection is reset and the budget freed:
    # a client reading a byte now and then (progress to the stall watch) held it for ever.
    answer_timeout_ms: int = 30_000
    answer_min_bytes_per_s: int = 128 * 1024
    # Transactions a client address may submit that are refused once checked, though
    # making them cost nothing (bytes that are no transaction, a bad signature, a copy
    # of a spent one, an unfunded sender...: node.mempool.SubmitResult.unpaid), a second
    # and saved up; past it, the address's submissions are 503 ``busy`` unchecked until
    # it has saved up again.
    refused_txs_per_s: int = 1_000
    refused_txs_burst: int = 20_000
    # Reverse proxies (IP addresses or networks) whose X-Forwarded-For names the client
    # for the per-address bounds of requests (bodies, answers, reads, feeds:
    # core.netaddr.TrustedProxies); the connection caps above still count the proxy's
    # own address. None by default: every peer is its own client.
    trusted_proxies: tuple[str, ...] = ()

    def answer_deadline_ms(self, size: int) -> int:
        """How long an answer of ``size`` bytes may take to be sent (``answer_timeout_ms``
        plus its size at ``answer_min_bytes_per_s``)."""
        return self.answer_timeout_ms + size * 1000 // self.answer_min_bytes_per_s

    def __post_init__(self) -> None:
        try:
            parse_trusted_proxies(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"http trusted_proxies: {exc}") from None


class _Gated(asyncio.Protocol):
    """One connection: aiohttp's handler behind the gate's count and stall watch."""

    __slots__ = ("gate", "inner", "transport", "address", "unsent", "stalled_since", "active")

    def __init__(self, gate: ConnectionGate) -> None:
        self.gate = gate
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.unsent = 0
        self.stalled_since: float | None = None
        # When the client last sent something (the least recent is evicted first).
        self.active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not subclass asyncio's classes).
        transport = cast(asyncio.Transport, transport)
        self.address = client_key(transport.get_extra_info("peername"))
        refused = self.gate.admit(self)
        if refused is not None:
            log.debug("refused an HTTP connection from %s: %s", self.address, refused)
            transport.write(_REFUSED)
            transport.close()
            return
        self.transport = transport
        # Whatever ends it (aiohttp's keep-alive close included, which the sweep does
        # not see), the kernel gives up on bytes the client never acknowledges; later
        # than the sweep, which resets a stalled connection it sees itself.
        stall_ms = self.gate.limits.write_stall_ms
        bound_unacked(transport, 2 * stall_ms + int(2000 * SWEEP_S))
        try:
            self.inner = self.gate.factory()
            self.inner.connection_made(transport)
        except BaseException:
            self.gate.release(self)
            self.inner = None
            raise

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.active = time.monotonic()
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is None:
            return
        self.gate.release(self)
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)


class ConnectionGate:
    """Protocol factory in front of aiohttp's ``web.Server``: counts connections by
    address and in all, refuses or makes room at a cap, and resets those whose writes stall."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limits: HttpLimits,
        *,
        max_connections: int | None = None,
        on_refused: Callable[[str], None] | None = None,
        on_stalled: Callable[[], None] | None = None,
        on_evicted: Callable[[], None] | None = None,
    ) -> None:
        self.factory = factory
        self.limits = limits
        self.max_connections = min(limits.max_connections, max_connections or 1 << 62)
        self._on_refused = on_refused
        self._on_stalled = on_stalled
        self._on_evicted = on_evicted
        self._open: set[_Gated] = set()
        self._by_address: dict[str, set[_Gated]] = {}
        # Addresses by how many connections each holds, and the most any holds: the
        # heaviest address in O(1), however many there are (a newcomer at the cap
        # must not cost a scan of thousands).
        self._by_count: dict[int, set[str]] = {}
        self._most = 0
        # A line per reset, at the rate clients stop reading, filled the operator's disk.
        self._stall_log = ThrottledLog(log)

    def __call__(self) -> asyncio.Protocol:
        return _Gated(self)

    @property
    def connections(self) -> int:
        return len(self._open)

    def admit(self, conn: _Gated) -> str | None:
        """Count ``conn``; the reason it is refused, if it is (then it is not counted).

        At the total cap a newcomer takes the place of the least recently active
        connection of the address holding the most, if that address holds at least
        two more than the newcomer's: a few addresses that fill the node cannot keep
        the others out (max-min fairness by address); equals never evict each other.
        """
        mine = self._by_address.get(conn.address)
        held = len(mine) if mine else 0
        reason = None
        if held >= self.limits.max_per_address:
            reason = "per_address"
        elif len(self._open) >= self.max_connections:
            victim = self._heaviest_address_oldest(held + 1)
            if victim is None:
                reason = "total"
            else:
                self.release(victim)
                if victim.transport is not None:
                    reset(victim.transport)
                if self._on_evicted is not None:
                    self._on_evicted()
        if reason is not None:
            if self._on_refused is not None:
                self._on_refused(reason)
            return reason
        self._open.add(conn)
        mine = self._by_address.setdefault(conn.address, set())
        mine.add(conn)
        self._recount(conn.address, len(mine) - 1, len(mine))
        return None

    def _recount(self, address: str, old: int, new: int) -> None:
        if old:
            bucket = self._by_count[old]
            bucket.discard(address)
            if not bucket:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, set()).add(address)
        if new > self._most:
            self._most = new
        while self._most and self._most not in self._by_count:
            self._most -= 1

    def _heaviest_address_oldest(self, more_than: int) -> _Gated | None:
        """The least recently active connection of the address holding the most, if it
        holds more than ``more_than``."""
        if self._most <= more_than:
            return None
        address = next(iter(self._by_count[self._most]))
        return min(self._by_address[address], key=lambda c: c.active)

    def release(self, conn: _Gated) -> None:
        if conn not in self._open:
            return
        self._open.discard(conn)
        mine = self._by_address[conn.address]
        mine.discard(conn)
        self._recount(conn.address, len(mine) + 1, len(mine))
        if not mine:
            del self._by_address[conn.address]

    def sweep(self, now: float) -> int:
        """Reset the connections whose unsent bytes did not shrink for ``write_stall_ms``;
        how many. Any shrink counts as progress: a slow reader is not a stalled one."""
        stall_s = self.limits.write_stall_ms / 1000
        aborted = 0
        for conn in list(self._open):
            transport = conn.transport
            if transport is None:
                continue
            unsent = transport.get_write_buffer_size()
            if unsent == 0 or unsent < conn.unsent:
                conn.stalled_since = None
            elif conn.stalled_since is None:
                conn.stalled_since = now
            elif now - conn.stalled_since >= stall_s:
                self._stall_log.info(
                    "reset an HTTP connection from %s: %d bytes unread for %.0f s",
                    conn.address,
                    unsent,
                    now - conn.stalled_since,
                )
                reset(transport)
                aborted += 1
                if self._on_stalled is not None:
                    self._on_stalled()
            conn.unsent = unsent
        return aborted

    async def watch(self) -> None:
        """Sweep for stalled writes until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep(loop.time())


class HttpServer:
    """``app`` served on ``host:port`` (or on ``sock``, a socket already bound) behind a
    ``ConnectionGate``."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        limits: HttpLimits,
        *,
        fd_limit: int | None = None,
        shutdown_timeout: float = 5.0,
        on_refused: Callable[[str], None] | None = None,
        on_stalled: Callable[[], None] | None = None,
        on_evicted: Callable[[], None] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits
        self.sock = sock
        # With no descriptors to spare, still one connection (an operator's status call).
        self._fd_limit = fd_limit
        self._max_connections = None if fd_limit is None else connection_cap(fd_limit)
        self._shutdown_timeout = shutdown_timeout
        self._on_refused = on_refused
        self._on_stalled = on_stalled
        self._on_evicted = on_evicted
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._watch: asyncio.Task[None] | None = None
        self.gate: ConnectionGate | None = None

    async def start(self) -> None:
        """Run the app's startup (the node opens) and listen."""
        runner = web.AppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout,
            keepalive_timeout=self.limits.keepalive_timeout_ms / 1000,
            # A handler runs on when its client leaves (aiohttp's default, said here
            # because its test server says otherwise): work that must not stop halfway
            # is not cut at any await, and long work (a feed's replay) checks for
            # itself whether anyone still listens. Tests serve through this class
            # (tests/served.py) to run with the same setting.
            handler_cancellation=False,
            # aiohttp logs an error with its traceback for each malformed request, as
            # often as clients send them: throttled, under its own name. Only those: it
            # logs an exception a handler let out (a bug, a 500) in the same words, and
            # a throttle shared with a client's malformed requests hid it.
            logger=ThrottledLog(logging.getLogger("aiohttp.server"), only=_malformed),
        )
        self._runner = runner
        await runner.setup()
        assert runner.server is not None
        self.gate = ConnectionGate(
            runner.server,
            self.limits,
            max_connections=self._max_connections,
            on_refused=self._on_refused,
            on_stalled=self._on_stalled,
            on_evicted=self._on_evicted,
        )
        if self.gate.max_connections < FEW_CONNECTIONS:
            log.warning(
                "HTTP serves at most %d connections (open-file limit %s): raise the hard "
                "limit (LimitNOFILE=, ulimit -Hn) for more",
                self.gate.max_connections,
                self._fd_limit,
            )
        loop = asyncio.get_running_loop()
        try:
            if self.sock is not None:
                self._server = await loop.create_server(self.gate, sock=self.sock, backlog=1024)
            else:
                self._server = await loop.create_server(
                    self.gate, self.host, self.port, reuse_address=True, backlog=1024
                )
        except OSError as exc:
            raise CannotListen("HTTP", self.host, self.port, exc) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._watch = loop.create_task(self.gate.watch(), name="http-stall-watch")

    async def stop(self) -> None:
        """Stop listening, close the connections (in-flight requests get
        ``shutdown_timeout``), then the app's cleanup (the node stops)."""
        if self._server is not None:
            self._server.close()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._runner is not None:
            await self._runner.cleanup()


def serve_until_signalled(
    loop: asyncio.AbstractEventLoop, server: HttpServer, until: asyncio.Event | None = None
) -> None:
    """Start ``server`` on ``loop``, run until SIGINT or SIGTERM (or ``until`` is set),
    then stop it. The process's handlers of those signals are as before once it returns."""
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {signum: signal.getsignal(signum) for signum in signals}

    async def main() -> None:
        stopping = until if until is not None else asyncio.Event()
        for signum in signals:
            loop.add_signal_handler(signum, stopping.set)
        # Starting may take long (a node that joins by state sync syncs first): a
        # signal meanwhile cancels the start instead of waiting for its end.
        starting = loop.create_task(server.start(), name="http-start")
        stopped = loop.create_task(stopping.wait(), name="http-stop-wait")
        try:
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a failed start raises here
                await stopped
            else:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        finally:
            stopped.cancel()
            await server.stop()

    try:
        loop.run_until_complete(main())
    finally:
        for signum, handler in before.items():
            loop.remove_signal_handler(signum)
            # uvloop removes a handler only while it runs (else it does nothing and says
            # False): its own, which queues the signal for the loop, stayed installed,
            # and every later SIGINT or SIGTERM went to a loop that no longer runs (a
            # second Ctrl-C while the process exits did nothing).
            if handler is not None:  # None: not set from Python, nothing to restore
                signal.signal(signum, handler)
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


__all__ = [
    "FD_RESERVE",
    "FEW_CONNECTIONS",
    "LEVELDB_TABLE_FILES",
    "ConnectionGate",
    "HttpLimits",
    "HttpServer",
    "connection_cap",
    "serve_until_signalled",
]
