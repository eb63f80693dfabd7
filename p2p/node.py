"""The p2p node: listens, dials configured peers, keeps one connection per peer.

Connection set-up, both directions (see docs/p2p.md):

1. TCP; the dialer sends ``CertOffer`` (its certificate) in clear.
2. The acceptor refuses at once unless the offered key is a member's (and not
   banned, not itself); otherwise it answers with its own ``CertOffer``. The
   dialer checks that the key is the one it meant to dial.
3. Mutual TLS 1.3, each side pinning the certificate the other offered.
4. ``Hello`` both ways: protocol version, chain id and genesis hash must match.
5. Duplicate resolution, then the connection carries application frames.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from core.codec import Wire
from core.errors import CannotListen, Invalid
from core.keys import PrivateKey
from core.netaddr import source_of
from p2p.admission import HandshakeGate, RefusalLog
from p2p.connection import CONNECTION_ERRORS, Connection, Handler, PeerStats, short
from p2p.frames import encode_frame, read_frame
from p2p.limits import TokenBucket
from p2p.lookup import PeerLookups
from p2p.messages import (
    CERT_OFFER_TYPE,
    HELLO_TYPE,
    PROTOCOL_VERSION,
    CertOffer,
    Encoded,
    Hello,
    MessageRegistry,
)
from p2p.tls import (
    ControlRecordFlood,
    NodeIdentity,
    PeerRejected,
    certificate_public_key,
    peer_certificate,
    record_count,
)

log = logging.getLogger("p2p")

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A peer to dial: its node public key (pinned) and where it listens."""

    public_key: bytes
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Node-local transport settings (none of them are consensus-critical)."""

    # Absolute cap on one frame's payload, whatever its kind; sync responses are the largest.
    max_frame_size: int = 16 * MiB
    # Per peer: bytes of frames waiting to be sent; must exceed max_frame_size.
    outbound_queue_bytes: int = 48 * MiB
    # Per peer inbound rate; a faster peer is slowed down (reads wait), not dropped.
    rate_messages: float = 5_000.0
    burst_messages: float = 10_000.0
    rate_bytes: float = 32.0 * MiB
    burst_bytes: float = 64.0 * MiB
    # TCP connect, then certificate exchange + TLS + Hello, each bounded.
    dial_timeout: float = 3.0
    handshake_timeout: float = 5.0
    # Redial backoff: doubles from min to max, with jitter; reset after a connection.
    backoff_min: float = 0.2
    backoff_max: float = 5.0
    # The node with the higher key waits this long before dialing a peer, so the
    # lower one (whose connection wins a tie) usually dials first.
    higher_key_dial_delay: float = 1.0
    ping_interval: float = 5.0
    # A peer that sent nothing (not even a Pong) for this long is dropped.
    idle_timeout: float = 20.0
    # How long a misbehaving peer is refused after it is dropped.
    ban_seconds: float = 30.0
    # Inbound connections still in certificate exchange / TLS / Hello, in all. When full,
    # a newcomer closes the oldest (strangers that offered no member's certificate
    # first): a member finishes in milliseconds, a stranger holding a slot does not.
    max_pending_handshakes: int = 64
    # ... from one source address (IPv4, or an IPv6 /64); more are refused, so strangers
    # with many source ports but few addresses hold a few slots, never all of them.
    max_pending_per_address: int = 8
    # An inbound connection's certificate offer must arrive this soon (a member sends it
    # at once): a silent stranger holds its slot this long, not handshake_timeout.
    offer_timeout: float = 1.0
    # TLS handshakes started per source address (each costs us ~2 ms of CPU, and anyone
    # can get that far by replaying a member's public certificate).
    tls_rate_per_address: float = 10.0
    tls_burst_per_address: float = 20.0
    # The writer hands the transport up to this many bytes of queued frames at once.
    write_batch_bytes: int = 256 * 1024
    # Per peer: bytes of received gossip waiting for the handler, counted as they are held
    # in memory (``p2p.messages.held_bytes``); more is discarded.
    inbound_gossip_bytes: int = 16 * MiB
    # Per peer: closed connections whose handler still runs, beside its current one. A
    # peer that reconnects while a handler of its old connection runs gets the new one
    # at once (a slow handler must not keep it away), but a member reconnecting over
    # and over behind handlers that hang could otherwise pile them up: a connection
    # that would leave more than this many is refused (before TLS) until one ends. At
    # least 1, or a peer could never replace a stale connection (it restarted).
    max_closing_per_peer: int = 2
    # Per peer key: TLS sessions it may establish (either direction), a token bucket
    # charged when TLS has proven the key. A member holding many addresses (an IPv6 /48
    # is 65,536 /64s) is bounded by no per-address limit: each session costs ~2 ms of
    # our CPU, a connection's tasks and a log line, and replaces the last one, so its
    # key could churn sessions as fast as our CPU allowed. A key out of sessions is
    # refused before TLS until it has one again; a stranger replaying the key's
    # certificate cannot spend them (it never completes TLS).
    session_rate_per_key: float = 0.5
    session_burst_per_key: float = 10.0

    def __post_init__(self) -> None:
        if self.outbound_queue_bytes <= self.max_frame_size:
            raise ValueError(
                f"outbound_queue_bytes ({self.outbound_queue_bytes}) must exceed "
                f"max_frame_size ({self.max_frame_size})"
            )
        if not 1 <= self.max_pending_per_address <= self.max_pending_handshakes:
            raise ValueError(
                f"max_pending_per_address must be in 1..max_pending_handshakes "
                f"({self.max_pending_handshakes}), got {self.max_pending_per_address}"
            )
        if not 0 < self.offer_timeout <= self.handshake_timeout:
            raise ValueError(
                f"offer_timeout must be in (0, handshake_timeout ({self.handshake_timeout})], "
                f"got {self.offer_timeout}"
            )
        if not (self.session_rate_per_key > 0 and self.session_burst_per_key >= 1):
            raise ValueError(
                f"session_rate_per_key must be > 0 and session_burst_per_key >= 1, got "
                f"{self.session_rate_per_key} and {self.session_burst_per_key}"
            )
        if self.max_closing_per_peer < 1:
            raise ValueError(f"max_closing_per_peer must be >= 1, got {self.max_closing_per_peer}")


class _Duplicate(Exception):
    """A second connection to a peer that loses the tie-break; closed quietly."""


class P2PNode:
    """Authenticated transport between member nodes.

    ``is_member(public_key)`` decides who may connect; it is consulted at every
    handshake and by ``check_members()``, so membership can follow chain
    state. ``handler(peer_public_key, msg)`` receives every registered message
    kind; if it raises ``Invalid``, the peer is dropped as misbehaving.
    """

    def __init__(
        self,
        key: PrivateKey,
        host: str,
        port: int,
        peers: Iterable[PeerAddress | tuple[bytes, str, int]],
        is_member: Callable[[bytes], bool],
        handler: Handler,
        *,
        chain_id: str,
        genesis_hash: bytes,
        registry: MessageRegistry | None = None,
        config: P2PConfig | None = None,
        on_connect: Callable[[bytes], None] | None = None,
        on_disconnect: Callable[[bytes], None] | None = None,
    ) -> None:
        if len(genesis_hash) != 32:
            raise ValueError(f"genesis hash must be 32 bytes, got {len(genesis_hash)}")
        self.public_key = key.public_key
        self.host = host
        self._port = port
        self.is_member = is_member
        self.handler = handler
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self.registry = registry if registry is not None else MessageRegistry()
        self.config = config or P2PConfig()
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._key = key
        self._identity: NodeIdentity | None = None
        self._addresses: dict[bytes, PeerAddress] = {}
        for peer in peers:
            addr = peer if isinstance(peer, PeerAddress) else PeerAddress(*peer)
            self._addresses[addr.public_key] = addr
        self._conns: dict[bytes, Connection] = {}
        # Per peer, every registered connection whose tasks have not ended (its current
        # one, and closed ones still finishing a handler).
        self._live: dict[bytes, set[Connection]] = {}
        self._banned: dict[bytes, float] = {}
        # Per peer key, its inbound rate (messages, bytes), kept across its connections:
        # one that reconnects (a TLS handshake, ~2 ms) must not get a full burst again and
        # its debt forgotten. Members' keys only (pruned by ``check_members``).
        self._rates: dict[bytes, tuple[TokenBucket, TokenBucket]] = {}
        # Per peer key, the TLS sessions it may still establish (``session_rate_per_key``).
        # Members' keys only: charged once TLS proved the key, pruned by ``check_members``.
        self._sessions: dict[bytes, TokenBucket] = {}
        self._dialers: dict[bytes, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._lookups = PeerLookups()
        # After a failed dial, the wait it was followed by (until the peer connects). Per
        # key, not per address: a peer that changes its address (a member's on chain, as
        # often as it likes) is redialed no sooner than if it had kept it.
        self._backoff: dict[bytes, float] = {}
        cfg = self.config
        self._gate = HandshakeGate(
            cfg.max_pending_handshakes,
            cfg.max_pending_per_address,
            cfg.tls_rate_per_address,
            cfg.tls_burst_per_address,
        )
        # Inbound refusals are a stranger's doing: a flood of them must not flood the log.
        self._refusals = RefusalLog(log)
        self._server: asyncio.Server | None = None
        self._running = False

    def __repr__(self) -> str:
        return f"P2PNode(public={short(self.public_key)}, port={self._port})"

    # --- lifecycle ---

    async def start(self) -> None:
        """Listen and start dialing the configured peers."""
        self._identity = NodeIdentity(self._key)
        try:
            self._server = await asyncio.start_server(self._on_inbound, self.host, self._port)
        except BaseException as exc:
            # E.g. the port is taken: do not leave the key file behind.
            self._identity.close()
            self._identity = None
            if isinstance(exc, OSError):
                raise CannotListen("p2p", self.host, self._port, exc) from exc
            raise
        self._port = self._server.sockets[0].getsockname()[1]
        self._running = True
        for addr in self._addresses.values():
            self._start_dialer(addr)
        log.info("p2p listening on %s:%d as %s", self.host, self._port, short(self.public_key))

    async def stop(self) -> None:
        """Close the listener and every connection; wait for their tasks."""
        self._running = False
        if self._server is not None:
            self._server.close()
        for task in self._dialers.values():
            task.cancel()
        # Also those closed already whose handlers still run.
        conns = [conn for live in self._live.values() for conn in live]
        for conn in conns:
            conn.close("node stopping")
        for task in list(self._handshakes):
            task.cancel()
        self._refusals.flush()
        tasks = set(self._tasks) | set(self._dialers.values()) | set(self._handshakes)
        # A gossip handler that was running when its connection closed is not the
        # connection task's: without this it would go on after stop() returns.
        tasks.update(t for conn in conns for t in conn.tasks())
        if tasks:
            # Give running handlers a moment to finish, then cancel what is left.
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._dialers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._identity is not None:
            self._identity.close()
            self._identity = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The listening port (the bound one when constructed with port 0)."""
        return self._port

    # --- sending ---

    def peers(self) -> list[bytes]:
        """Public keys of the peers connected now."""
        return list(self._conns)

    def send(self, peer: bytes, msg: Wire | Encoded) -> bool:
        """Queue ``msg`` for one peer; False if not connected or dropped (queue full)."""
        conn = self._conns.get(peer)
        if conn is None:
            return False
        frame, droppable = self._frame(msg)
        return conn.put(frame, droppable)

    def broadcast(self, msg: Wire | Encoded, exclude: Iterable[bytes] = ()) -> int:
        """Queue ``msg`` for every connected peer not in ``exclude``; returns how many took it."""
        skip = set(exclude)
        targets = [conn for pk, conn in self._conns.items() if pk not in skip]
        if not targets:
            # Nobody to send to (a lone validator): do not encode a whole block for nothing.
            return 0
        frame, droppable = self._frame(msg)
        return sum(conn.put(frame, droppable) for conn in targets)

    def max_payload(self, cls: type[Wire]) -> int:
        """The largest encoding of ``cls`` a peer accepts from us (for sizing sync responses)."""
        kind = self.registry.kind_of_class(cls)
        return min(kind.max_size, self.config.max_frame_size)

    def _frame(self, msg: Wire | Encoded) -> tuple[bytes, bool]:
        if isinstance(msg, Encoded):
            cls, payload = msg.cls, msg.payload
        else:
            cls, payload = type(msg), msg.encode()
        kind = self.registry.kind_of_class(cls)
        limit = min(kind.max_size, self.config.max_frame_size)
        if len(payload) > limit:
            # The peer would drop us for it; this is our bug, not theirs.
            raise ValueError(
                f"{cls.__name__} of {len(payload)} bytes exceeds the frame cap of {limit}"
            )
        return encode_frame(kind.type_id, payload), kind.droppable

    # --- peers ---

    def add_peer(self, peer: PeerAddress) -> None:
        """Dial ``peer`` from now on (replaces an earlier address for the same key)."""
        if self._addresses.get(peer.public_key) == peer and peer.public_key in self._dialers:
            return  # already dialing it there
        old = self._dialers.pop(peer.public_key, None)
        if old is not None:
            old.cancel()
        self._addresses[peer.public_key] = peer
        if self._running:
            self._start_dialer(peer)

    def remove_peer(self, public_key: bytes) -> None:
        """Stop dialing ``public_key`` (a connection it has stays; ``check_members`` ends it
        when the key may no longer connect)."""
        self._addresses.pop(public_key, None)
        self._backoff.pop(public_key, None)
        task = self._dialers.pop(public_key, None)
        if task is not None:
            task.cancel()

    def dial_addresses(self) -> dict[bytes, PeerAddress]:
        """Where each peer is dialed (one address per key)."""
        return dict(self._addresses)

    def check_members(self) -> None:
        """Drop connected peers that are no longer members (call after membership changes)."""
        for pk, conn in list(self._conns.items()):
            if not self.is_member(pk):
                log.warning("dropping peer %s: no longer a member", short(pk), extra={"peer": pk})
                conn.close("no longer a member")
        for pk in [pk for pk in self._rates if pk not in self._live and not self.is_member(pk)]:
            del self._rates[pk]
        for pk in [pk for pk in self._sessions if pk not in self._live and not self.is_member(pk)]:
            del self._sessions[pk]

    def drop_peer(self, peer: bytes, reason: str, *, ban: bool = True) -> None:
        """Disconnect a peer the node found misbehaving (e.g. it served an invalid block)."""
        conn = self._conns.get(peer)
        if ban:
            self._ban(peer, reason, conn.stats.address if conn is not None else "-")
        if conn is not None:
            conn.close(reason)

    def peer_stats(self) -> dict[bytes, PeerStats]:
        """Counters of each connected peer (live objects: read, do not keep)."""
        for conn in self._conns.values():
            conn.stats.queued_bytes = conn.queue.size
        return {pk: conn.stats for pk, conn in self._conns.items()}

    # --- called by connections ---

    def inbound_rate(self, peer: bytes) -> tuple[TokenBucket, TokenBucket]:
        """``peer``'s inbound rate limits (messages, bytes), shared by its connections."""
        rate = self._rates.get(peer)
        if rate is None:
            cfg = self.config
            rate = self._rates[peer] = (
                TokenBucket(cfg.rate_messages, cfg.burst_messages),
                TokenBucket(cfg.rate_bytes, cfg.burst_bytes),
            )
        return rate

    def misbehaved(self, conn: Connection, reason: str) -> None:
        self._ban(conn.public_key, reason, conn.stats.address)
        conn.close(f"misbehaviour: {reason}")
        # A handler of a connection closed earlier may find the fault after the peer
        # reconnected: the ban ends the peer's current connection too.
        current = self._conns.get(conn.public_key)
        if current is not None:
            current.close(f"misbehaviour: {reason}")

    def connection_closed(self, conn: Connection, reason: str) -> None:
        """``conn`` closed: it is no longer the peer's connection (its tasks may still run).

        Called from ``close()``, so ``on_disconnect`` runs inside whatever closed the
        connection (``send``, ``broadcast``, ``drop_peer``, ``check_members``, ``stop``).
        """
        if self._conns.get(conn.public_key) is conn:
            del self._conns[conn.public_key]
            log.info(
                "peer %s disconnected: %s",
                short(conn.public_key),
                reason,
                extra={"peer": conn.public_key},
            )
            self._notify(self.on_disconnect, conn.public_key)

    def connection_ended(self, conn: Connection) -> None:
        """``conn``'s reader ended and its running handlers with it."""
        live = self._live.get(conn.public_key)
        if live is not None:
            live.discard(conn)
            if not live:
                del self._live[conn.public_key]

    def _ban(self, peer: bytes, reason: str, address: str = "-") -> None:
        log.warning(
            "misbehaviour peer=%s addr=%s: %s (banned for %.0f s)",
            short(peer),
            address,
            reason,
            self.config.ban_seconds,
            extra={"peer": peer, "peer_address": address},
        )
        self._banned[peer] = asyncio.get_running_loop().time() + self.config.ban_seconds

    # --- handshakes ---

    def _check_peer(self, public_key: bytes) -> None:
        if public_key == self.public_key:
            raise PeerRejected("connection to ourselves")
        if not self.is_member(public_key):
            raise PeerRejected(f"key {public_key.hex()} is not a member")
        until = self._banned.get(public_key)
        if until is not None:
            if asyncio.get_running_loop().time() < until:
                raise PeerRejected(f"peer {short(public_key)} is banned for misbehaviour")
            del self._banned[public_key]
        # Every connection it still has becomes a closed one beside a new one.
        running = len(self._live.get(public_key, ()))
        if running > self.config.max_closing_per_peer:
            raise PeerRejected(
                f"peer {short(public_key)} has {running} connections still finishing handlers"
            )

    def _check_admission(self, public_key: bytes) -> None:
        """``_check_peer``, and the key has a TLS session left (checked before TLS)."""
        self._check_peer(public_key)
        sessions = self._sessions.get(public_key)
        if sessions is not None and sessions.level() < 1.0:
            raise PeerRejected(
                f"peer {short(public_key)} is out of sessions "
                f"({self.config.session_rate_per_key:g} a second)"
            )

    def _session_proven(self, public_key: bytes) -> None:
        """TLS proved ``public_key``: the session is charged to it, whatever follows."""
        sessions = self._sessions.get(public_key)
        if sessions is None:
            cfg = self.config
            sessions = self._sessions[public_key] = TokenBucket(
                cfg.session_rate_per_key, cfg.session_burst_per_key
            )
        sessions.take(1.0)

    def _identity_now(self) -> NodeIdentity:
        if self._identity is None:
            raise PeerRejected("node is stopped")
        return self._identity

    def _offer(self) -> bytes:
        offer = CertOffer(self._identity_now().cert_der)
        return encode_frame(CERT_OFFER_TYPE, offer.encode())

    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.config
        peername = writer.get_extra_info("peername")
        host = str(peername[0]) if peername else "?"
        address = f"{host}:{peername[1]}" if peername else "?"
        if not self._running:
            writer.transport.abort()
            return
        source = source_of(host)
        pending = self._gate.admit(source, writer.transport.abort)
        if pending is None:
            writer.transport.abort()
            self._refusals.log(
                logging.WARNING,
                "refused connection from %s: %d handshakes from %s pending already",
                address,
                self._gate.pending_from(source),
                source,
            )
            return
        task = asyncio.current_task()
        assert task is not None
        self._handshakes.add(task)
        try:
            async with asyncio.timeout(cfg.handshake_timeout):
                # The short pre-authentication budget: the offer is the dialer's first frame.
                async with asyncio.timeout(cfg.offer_timeout):
                    payload = await read_frame(reader, CERT_OFFER_TYPE, CertOffer.MAX_ENCODED)
                offer = CertOffer.decode(payload)
                # Membership (a set lookup) before the certificate's signature check.
                public_key = certificate_public_key(offer.cert, self._check_admission)
                self._gate.identify(pending)
                if not self._gate.allow_tls(source):
                    raise PeerRejected(f"too many TLS handshakes from {source}")
                writer.write(self._offer())
                await writer.drain()
                await writer.start_tls(self._identity_now().server_context(offer.cert))
                await self._finish(reader, writer, public_key, offer.cert, address, False)
        except asyncio.CancelledError:
            # stop() cancels handshakes in progress. This task is the stream server's
            # callback, which nobody awaits; ending it quietly spares the "exception in
            # callback" error that Python 3.11 logs for each cancelled one.
            writer.transport.abort()
            return
        except Exception as exc:
            writer.transport.abort()
            if pending.evicted:
                self._refusals.log(
                    logging.WARNING,
                    "refused connection from %s: closed to make room (%d handshakes pending)",
                    address,
                    len(self._gate),
                )
            else:
                self._log_refusal(f"refused connection from {address}", exc, self._refusals)
            return
        finally:
            self._gate.release(pending)
            self._handshakes.discard(task)

    async def _dial(self, addr: PeerAddress) -> Connection:
        cfg = self.config
        address = f"{addr.host}:{addr.port}"
        async with asyncio.timeout(cfg.dial_timeout):
            reader, writer = await self._connect(addr)
        try:
            async with asyncio.timeout(cfg.handshake_timeout):
                writer.write(self._offer())
                offer = CertOffer.decode(
                    await read_frame(reader, CERT_OFFER_TYPE, CertOffer.MAX_ENCODED)
                )
                public_key = certificate_public_key(offer.cert)
                if public_key != addr.public_key:
                    raise PeerRejected(
                        f"dialed {short(addr.public_key)} at {address}, got {short(public_key)}"
                    )
                self._check_admission(public_key)
                await writer.start_tls(self._identity_now().client_context(offer.cert))
                return await self._finish(reader, writer, public_key, offer.cert, address, True)
        except BaseException:
            # Also on cancellation: never leave a half-open socket behind.
            writer.transport.abort()
            raise

    async def _connect(
        self, addr: PeerAddress
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """TCP to the first of ``addr.host``'s IP addresses that answers (as
        ``open_connection`` does with a name, but looked up by ``PeerLookups``)."""
        ips = await self._lookups.resolve(addr.public_key, addr.host, addr.port)
        error: OSError = ConnectionRefusedError(f"{addr.host} has no address")
        for ip in ips:
            try:
                return await asyncio.open_connection(ip, addr.port)
            except OSError as exc:
                error = exc
        raise error

    async def _finish(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        public_key: bytes,
        offered: bytes,
        address: str,
        outbound: bool,
    ) -> Connection:
        tls = writer.get_extra_info("ssl_object")
        # OpenSSL already required exactly the offered certificate; check again
        # so that pinning does not rest on one configuration detail alone.
        if peer_certificate(tls) != offered:
            raise PeerRejected("TLS certificate differs from the offered one")
        # Proven: from here on the session is the key's doing (a Hello it fails too).
        self._session_proven(public_key)
        hello = Hello(PROTOCOL_VERSION, self.chain_id, self.genesis_hash)
        writer.write(encode_frame(HELLO_TYPE, hello.encode()))
        try:
            theirs = Hello.decode(await read_frame(reader, HELLO_TYPE, Hello.MAX_ENCODED))
        except ControlRecordFlood as exc:
            # Banned as after set-up: refused and no more, a member could flood again at
            # each of its sessions (10, then one every 2 s), each read up to 256 KiB of
            # KeyUpdates (~200 ms of the loop), where one flood after set-up costs it
            # ban_seconds. Other faults here cost a frame's decoding, and a Hello that
            # does not decode may be an honest node of another version: refused only.
            self._ban(public_key, f"{exc.code}: {exc.message}", address)
            raise
        if theirs.protocol != PROTOCOL_VERSION:
            raise PeerRejected(
                f"protocol version: expected {PROTOCOL_VERSION}, got {theirs.protocol}"
            )
        if theirs.chain_id != self.chain_id:
            raise PeerRejected(f"chain id: expected {self.chain_id!r}, got {theirs.chain_id!r}")
        if theirs.genesis_hash != self.genesis_hash:
            raise PeerRejected(
                f"genesis hash: expected {self.genesis_hash.hex()}, got {theirs.genesis_hash.hex()}"
            )
        # Membership or a ban may have changed while we were shaking hands.
        self._check_peer(public_key)
        dialer = self.public_key if outbound else public_key
        conn = Connection(self, public_key, reader, writer, dialer, address, record_count(tls))
        self._register(conn)
        return conn

    def _register(self, conn: Connection) -> None:
        """Keep one connection per peer; both sides pick the same survivor.

        The connection dialed by the lower key wins; between two dialed by the
        same side, the newer wins (the older is likely stale, e.g. the peer
        restarted). Both nodes apply the same rule, so they converge.
        """
        pk = conn.public_key
        old = self._conns.get(pk)
        if old is not None:
            lower = min(self.public_key, pk)
            if old.dialer == lower and conn.dialer != lower:
                raise _Duplicate(f"already connected to {short(pk)}")
        # Registered before the old one closes, which then reports no disconnect: the
        # peer stays connected throughout.
        self._conns[pk] = conn
        self._live.setdefault(pk, set()).add(conn)
        # Started in the same step it registers: a task that cancels this one's
        # handshake or dialer next (stop(), a timeout) cannot leave it registered with
        # no task to end it.
        self._track(conn.start())
        if old is not None:
            old.close("replaced by a newer connection")
        log.info(
            "peer %s connected (%s, %s)",
            short(pk),
            "outbound" if conn.stats.outbound else "inbound",
            conn.stats.address,
            extra={"peer": pk, "peer_address": conn.stats.address},
        )
        if old is None:
            self._notify(self.on_connect, pk)

    def _notify(self, callback: Callable[[bytes], None] | None, peer: bytes) -> None:
        if callback is None:
            return
        try:
            callback(peer)
        except Exception:
            # The node's callback failing must not break our connection bookkeeping.
            log.exception("peer callback %r failed", callback)

    def _log_refusal(self, what: str, exc: Exception, limit: RefusalLog | None = None) -> None:
        """Log why a handshake failed; through ``limit`` for inbound ones (strangers')."""
        emit = log.log if limit is None else limit.log
        if isinstance(exc, _Duplicate):
            log.debug("%s: %s", what, exc)
        elif isinstance(exc, Invalid):
            emit(logging.WARNING, "%s: %s", what, exc)
        elif isinstance(exc, TimeoutError):
            emit(logging.WARNING, "%s: handshake timed out", what)
        elif isinstance(exc, asyncio.IncompleteReadError):
            emit(logging.WARNING, "%s: peer closed the connection during the handshake", what)
        elif isinstance(exc, CONNECTION_ERRORS):
            emit(logging.WARNING, "%s: %s: %s", what, type(exc).__name__, exc)
        else:
            # Our bug, not the peer's: at ERROR, with its traceback. An inbound one still
            # goes through the limiter (a budget of its own, which warnings do not use
            # up): a stranger who finds how to cause it could else log a traceback per
            # connection, as fast as it connects.
            emit(logging.ERROR, "%s: unexpected error", what, exc_info=exc)

    # --- dialing ---

    def _start_dialer(self, addr: PeerAddress) -> None:
        if addr.public_key == self.public_key:
            return
        task = asyncio.create_task(self._dial_loop(addr), name=f"p2p-dial-{short(addr.public_key)}")
        self._dialers[addr.public_key] = task

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial_loop(self, addr: PeerAddress) -> None:
        cfg = self.config
        pk = addr.public_key
        where = f"{addr.host}:{addr.port}"
        if pk in self._backoff:
            # The last dial failed (maybe at an earlier address): wait as after it.
            await asyncio.sleep(self._backoff[pk] * random.uniform(0.5, 1.0))
        while self._running:
            conn = self._conns.get(pk)
            if conn is not None:
                await conn.closed.wait()
                self._backoff.pop(pk, None)
                await asyncio.sleep(cfg.backoff_min * random.uniform(0.5, 1.0))
                continue
            if self.public_key > pk:
                await asyncio.sleep(cfg.higher_key_dial_delay)
                if pk in self._conns:
                    continue
            try:
                # Not a member (yet) or banned: wait quietly, membership may change.
                self._check_admission(pk)
            except PeerRejected:
                await asyncio.sleep(cfg.backoff_max)
                continue
            try:
                await self._dial(addr)
            except _Duplicate:
                pass
            except (TimeoutError, ConnectionRefusedError) as exc:
                # The peer is down or not listening yet: routine while nodes boot.
                log.debug("dial %s failed: %s", where, type(exc).__name__)
            except Exception as exc:
                self._log_refusal(f"dial to {short(pk)} at {where} failed", exc)
            else:
                continue
            last = self._backoff.get(pk)
            backoff = cfg.backoff_min if last is None else min(last * 2, cfg.backoff_max)
            self._backoff[pk] = backoff
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
