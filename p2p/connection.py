"""One authenticated connection to a peer: reader, writer and keepalive.

The reader delivers essential messages (consensus, sync) to the node's handler
one at a time, in order, so they are handled in the order the peer sent them
and a slow handler slows only that peer (TCP backpressure does the rest). The
order holds within one connection: a connection that closes while its handler
runs is no longer the peer's, and the peer's next connection is handled beside
that handler (``P2PConfig.max_closing_per_peer`` bounds how many linger).

Droppable messages (transaction gossip) are handed to a second lane with its own
task, bounded by ``P2PConfig.inbound_gossip_bytes``: admitting a batch waits for
signature checks and can take a second under load, and a vote read after it
must not wait that long (measured: four loaded validators lost rounds to votes
seconds late). When the lane is full the batch is discarded, as the sender does
with gossip it cannot send: the transactions stay in the sender's mempool. The
writer drains the peer's outbound queue. Rate limits delay reading; they never
drop data.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.codec import Wire
from core.errors import Invalid
from p2p.frames import HEADER_SIZE, ProtocolViolation, check_size, encode_frame, read_header
from p2p.limits import RECORD_CHARGE, OutboundQueue, QueueOverflow, RecordCount
from p2p.messages import PING_TYPE, PONG_TYPE, Ping, Pong, held_bytes

if TYPE_CHECKING:
    from p2p.node import P2PNode

log = logging.getLogger("p2p")

Handler = Callable[[bytes, Wire], Awaitable[None]]

# A payload larger than this is read in pieces, its TLS records charged as they come
# (``Connection._read_payload``): a frame's records are charged at least every 64 KiB
# of it (~70 ms of the loop at one byte a record), then the peer's debt pauses reading.
PAYLOAD_CHUNK = 64 * 1024

# Errors that mean the connection is gone, not that the peer misbehaved.
CONNECTION_ERRORS = (
    asyncio.IncompleteReadError,
    ConnectionError,
    ssl.SSLError,
    OSError,
)


def short(public_key: bytes) -> str:
    """A public key as it appears in logs."""
    return public_key.hex()[:16]


@dataclass(slots=True)
class PeerStats:
    """Counters of one connection, for metrics and status."""

    outbound: bool
    address: str
    connected_at: float
    msgs_in: int = 0
    bytes_in: int = 0
    msgs_out: int = 0
    bytes_out: int = 0
    # Outbound frames discarded because the peer's queue was full (droppable kinds only).
    dropped: int = 0
    # Inbound droppable messages discarded because their lane was full.
    dropped_in: int = 0
    # TLS records received (each charged RECORD_CHARGE bytes of the peer's byte rate).
    records_in: int = 0
    # Seconds the reader waited because the peer exceeded its rate.
    throttled: float = 0.0
    queued_bytes: int = 0


class Connection:
    def __init__(
        self,
        node: P2PNode,
        public_key: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dialer: bytes,
        address: str,
        records: RecordCount | None = None,
    ) -> None:
        cfg = node.config
        self.node = node
        self.public_key = public_key
        self.reader = reader
        self.writer = writer
        # Who opened the TCP connection; decides which of two duplicates survives.
        self.dialer = dialer
        self.queue = OutboundQueue(cfg.outbound_queue_bytes)
        loop = asyncio.get_running_loop()
        self.stats = PeerStats(dialer == node.public_key, address, loop.time())
        # Set the moment the connection closes. Its tasks may still be finishing a
        # handler (see ``tasks()``), but it no longer counts as the peer's connection.
        self.closed = asyncio.Event()
        self._loop = loop
        # The peer's, not this connection's: a reconnect starts with what it left.
        self._msg_bucket, self._byte_bucket = node.inbound_rate(public_key)
        # The TLS records of data received (counted by the TLS object as OpenSSL reads
        # them; the Hello came in some) and how many were charged; None for a plain
        # stream (benches/fuzz_p2p.py feeds one).
        self._records = records
        self._records_charged = 0
        self._last_rx = loop.time()
        self._closing = False
        self._reason = ""
        self._in_handler = False
        self._task: asyncio.Task[None] | None = None
        # Whether _run has begun: a task cancelled before its first step never runs
        # its body, so its ``finally`` would never tell the node it closed.
        self._started = False
        self._helpers: list[asyncio.Task[None]] = []
        # The gossip lane: decoded droppable messages with what they hold in memory
        # (``held_bytes``), waiting.
        self._gossip: deque[tuple[Wire, int]] = deque()
        self._gossip_bytes = 0
        self._gossip_ready = asyncio.Event()
        self._gossip_task: asyncio.Task[None] | None = None
        self._in_gossip_handler = False

    def __repr__(self) -> str:
        return f"Connection(peer={short(self.public_key)}, address={self.stats.address})"

    # --- sending ---

    @property
    def reason(self) -> str:
        """Why the connection closed (empty while it is open)."""
        return self._reason

    def put(self, frame: bytes, droppable: bool) -> bool:
        """Queue a frame; False if it was dropped or the peer was dropped for being too slow."""
        if self._closing:
            return False
        try:
            queued = self.queue.put(frame, droppable)
        except QueueOverflow as exc:
            log.warning("dropping slow peer %s: %s", short(self.public_key), exc)
            self.close(f"slow peer: {exc}")
            return False
        if not queued:
            self.stats.dropped += 1
        return queued

    # --- lifecycle ---

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name=f"p2p-peer-{short(self.public_key)}")
        return self._task

    def close(self, reason: str) -> None:
        """Close at once. A handler that is running is allowed to finish, never cancelled.

        The transport is aborted, not closed: a TLS close waits for the peer's
        close_notify (up to 30 s) and a dropped or stuck peer may never send it.
        """
        if self._closing:
            return
        self._closing = True
        self._reason = reason
        # The records decrypted since the last charge are charged now, to the key's rate
        # that its next connection takes over: a peer that sent a payload a byte per
        # record and closed left them all uncharged (up to what the stream buffers,
        # ~128K records, ~130 ms of the loop, each session).
        self._byte_bucket.take(self._record_charge())
        self.closed.set()
        # Unregistered at once, not when a running handler ends: a handler that takes
        # long (or hangs) must not keep the peer from connecting again meanwhile.
        self.node.connection_closed(self, reason)
        current = asyncio.current_task()
        # A task closing its own connection returns by itself; cancelling it
        # would only turn its normal end into a cancellation.
        for helper in self._helpers:
            if helper is not current:
                helper.cancel()
        self.writer.transport.abort()
        task = self._task
        if task is not None and task is not current and self._started and not self._in_handler:
            # Not yet started: it starts, sees _closing and ends through its finally.
            task.cancel()
        gossip = self._gossip_task
        if gossip is not None and gossip is not current and not self._in_gossip_handler:
            gossip.cancel()
        self._gossip.clear()
        self._gossip_ready.set()
        # Nothing queued will be written now; a handler still running must not keep it.
        self.queue.clear()

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every task of this connection not done yet: its reader, its writer and pinger,
        and its gossip lane (whose handler may outlive the reader)."""
        tasks = [self._task, self._gossip_task, *self._helpers]
        return [t for t in tasks if t is not None and not t.done()]

    async def _run(self) -> None:
        node = self.node
        self._started = True
        try:
            if self._closing:
                return
            self._helpers = [
                asyncio.create_task(self._write_loop()),
                asyncio.create_task(self._ping_loop()),
            ]
            self._gossip_task = asyncio.create_task(self._gossip_loop())
            await self._read_loop()
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Invalid as exc:
            # Before CONNECTION_ERRORS: a TLS error the peer is to blame for is both
            # (p2p.tls.ControlRecordFlood).
            node.misbehaved(self, f"{exc.code}: {exc.message}")
        except CONNECTION_ERRORS as exc:
            self._reason = self._reason or f"connection lost ({type(exc).__name__})"
        except Exception:
            # Our bug, not the peer's: log it and drop only this connection.
            log.exception("reader for peer %s failed", short(self.public_key))
            self._reason = "internal error"
        finally:
            try:
                self.close(self._reason or "closed")
                gossip = self._gossip_task
                if gossip is not None and not gossip.done():
                    # A gossip handler that was running finishes before the connection
                    # counts as ended (close() cancelled the lane if it was idle).
                    await asyncio.wait([gossip])
            finally:
                # Even when cancelled in that wait: stop() cancelled the lane too,
                # with everything else that outlived its grace.
                node.connection_ended(self)

    async def _read_loop(self) -> None:
        node = self.node
        reader = self.reader
        registry = node.registry
        max_frame = node.config.max_frame_size
        stats = self.stats
        while not self._closing:
            type_id, size = await read_header(reader)
            self._last_rx = self._loop.time()
            if type_id == PING_TYPE or type_id == PONG_TYPE:
                kind = None
                check_size(type_id, size, Ping.MAX_ENCODED)
            else:
                kind = registry.by_id(type_id)
                if kind is None:
                    raise ProtocolViolation(f"unknown message type {type_id:#x}")
                check_size(type_id, size, min(kind.max_size, max_frame))
            # Throttle before reading the payload: a flooding peer is slowed by
            # TCP backpressure and its frames never pile up in our memory.
            delay = max(
                self._msg_bucket.take(1),
                self._byte_bucket.take(size + HEADER_SIZE + self._record_charge()),
            )
            if delay > 0:
                stats.throttled += delay
                await asyncio.sleep(delay)
            payload = await self._read_payload(size)
            self._last_rx = self._loop.time()
            stats.msgs_in += 1
            stats.bytes_in += size + HEADER_SIZE
            if kind is None:
                if type_id == PING_TYPE:
                    ping = Ping.decode(payload)
                    self.put(encode_frame(PONG_TYPE, Pong(ping.nonce).encode()), False)
                else:
                    Pong.decode(payload)
                continue
            # DecodeError is Invalid: _run treats it as misbehaviour.
            msg = kind.cls.decode(payload)
            held = held_bytes(msg, size)
            if held > size:
                # What decoding made beyond the bytes counts against the peer's rate as
                # well: 400 KB of two-byte transactions in a block decode into 100,000
                # objects (15 ms of this loop, some 14 times a real block's cost per
                # byte). The debt delays its next frame.
                self._byte_bucket.take(held - size)
            if kind.droppable:
                self._queue_gossip(msg, held)
                continue
            self._in_handler = True
            try:
                await self._handle(msg)
            finally:
                self._in_handler = False
                self._last_rx = self._loop.time()

    def _record_charge(self) -> int:
        """What the TLS records received since the last charge cost the byte rate: each
        is a pass of the TLS read loop whatever its size, so a peer sending 1-byte
        records would else cost ~500 times what its rate says (``RECORD_CHARGE``)."""
        if self._records is None:
            return 0
        records = self._records.records - self._records_charged
        self._records_charged += records
        self.stats.records_in += records
        return records * RECORD_CHARGE

    async def _read_payload(self, size: int) -> bytes:
        """A frame's payload. One larger than ``PAYLOAD_CHUNK`` is read as it comes and
        its records charged meanwhile: a 16 MiB frame sent a byte per record is 16
        million of them (some 16 s of this loop), too many to charge once it is read."""
        if size <= PAYLOAD_CHUNK or self._records is None:
            return await self.reader.readexactly(size)
        parts: list[bytes] = []
        left = size
        while left:
            chunk = await self.reader.read(min(left, PAYLOAD_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), size)
            parts.append(chunk)
            left -= len(chunk)
            self._last_rx = self._loop.time()
            delay = self._byte_bucket.take(self._record_charge())
            if delay > 0:
                self.stats.throttled += delay
                await asyncio.sleep(delay)
        return b"".join(parts)

    async def _handle(self, msg: Wire) -> None:
        """Hand ``msg`` to the node. ``Invalid`` (the peer's fault) propagates; any other
        failure is a bug in our handler, not the peer's: logged, and the peer stays."""
        try:
            await self.node.handler(self.public_key, msg)
        except Invalid:
            raise
        except Exception:
            log.exception(
                "handler failed on %s from peer %s", type(msg).__name__, short(self.public_key)
            )

    def _queue_gossip(self, msg: Wire, size: int) -> None:
        if self._gossip_bytes + size > self.node.config.inbound_gossip_bytes:
            self.stats.dropped_in += 1
            return
        self._gossip.append((msg, size))
        self._gossip_bytes += size
        self._gossip_ready.set()

    async def _gossip_loop(self) -> None:
        """Hand the gossip lane's messages to the handler, one at a time, in order."""
        lane = self._gossip
        while not self._closing:
            if not lane:
                self._gossip_ready.clear()
                await self._gossip_ready.wait()
                continue
            msg, size = lane.popleft()
            self._in_gossip_handler = True
            try:
                await self._handle(msg)
            except Invalid as exc:
                self.node.misbehaved(self, f"{exc.code}: {exc.message}")
                return
            finally:
                self._in_gossip_handler = False
                self._gossip_bytes -= size

    async def _write_loop(self) -> None:
        writer = self.writer
        stats = self.stats
        batch_bytes = self.node.config.write_batch_bytes
        try:
            while True:
                frames = await self.queue.get_batch(batch_bytes)
                data = b"".join(frames)
                writer.write(data)
                stats.msgs_out += len(frames)
                stats.bytes_out += len(data)
                await writer.drain()
        except Exception as exc:
            # Usually the connection is gone; whatever it is, this peer cannot be written to.
            self.close(f"write failed ({type(exc).__name__})")

    async def _ping_loop(self) -> None:
        cfg = self.node.config
        nonce = 0
        while True:
            await asyncio.sleep(cfg.ping_interval)
            # A peer is idle only if we are not the ones holding up its frames.
            idle = self._loop.time() - self._last_rx
            if not self._in_handler and idle > cfg.idle_timeout:
                self.close(f"idle for {idle:.1f} s")
                return
            nonce += 1
            self.put(encode_frame(PING_TYPE, Ping(nonce).encode()), False)
            if self._closing:
                # The ping overflowed the queue and closed the connection from this
                # task, which close() does not cancel: end with it.
                return
