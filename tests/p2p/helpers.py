"""Small p2p networks on 127.0.0.1 with ephemeral ports, and a hand-driven raw client."""

from __future__ import annotations

import asyncio
import ctypes
import os
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

from core.codec import MaxLen, Wire
from core.keys import PrivateKey
from p2p import MessageRegistry, P2PConfig, P2PNode, PeerAddress
from p2p.frames import encode_frame, read_frame
from p2p.messages import CERT_OFFER_TYPE, HELLO_TYPE, PROTOCOL_VERSION, CertOffer, Hello
from p2p.tls import NodeIdentity, make_certificate

CHAIN = "p2p-test"
GENESIS = bytes(range(32))

# Fast timers so reconnects and refusals show within the test budget.
FAST = P2PConfig(
    backoff_min=0.05,
    backoff_max=0.3,
    higher_key_dial_delay=0.1,
    handshake_timeout=2.0,
    dial_timeout=1.0,
    ping_interval=0.5,
    idle_timeout=5.0,
    ban_seconds=2.0,
)


@dataclass(frozen=True, slots=True)
class Chat(Wire):
    """A test message kind, registered by the 'node' like consensus messages would be."""

    n: int
    data: Annotated[bytes, MaxLen(256 * 1024)]

    MAX_ENCODED = 256 * 1024 + 32


@dataclass(frozen=True, slots=True)
class Small(Wire):
    """A kind with a small frame cap, to test oversized frames."""

    data: Annotated[bytes, MaxLen(4096)]

    MAX_ENCODED = 4096 + 16


CHAT_TYPE = 0x20
SMALL_TYPE = 0x21


def registry() -> MessageRegistry:
    reg = MessageRegistry()
    reg.register(CHAT_TYPE, Chat)
    reg.register(SMALL_TYPE, Small, max_size=64)
    return reg


@dataclass
class Member:
    key: PrivateKey
    node: P2PNode
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)


class Net:
    """Members share one membership set; each node's handler fills its inbox."""

    def __init__(self, n: int, config: P2PConfig = FAST) -> None:
        self.keys = [PrivateKey.generate() for _ in range(n)]
        self.members = {k.public_key for k in self.keys}
        self.config = config
        self.nodes: list[Member] = []
        self.extra_handlers: dict[bytes, Callable] = {}

    def is_member(self, pk: bytes) -> bool:
        return pk in self.members

    def make_node(
        self,
        key: PrivateKey,
        peers: Iterable[PeerAddress] = (),
        *,
        port: int = 0,
        chain_id: str = CHAIN,
        config: P2PConfig | None = None,
        is_member: Callable[[bytes], bool] | None = None,
    ) -> Member:
        inbox: asyncio.Queue = asyncio.Queue()

        async def handler(peer: bytes, msg: Wire) -> None:
            extra = self.extra_handlers.get(key.public_key)
            if extra is not None:
                await extra(peer, msg)
            inbox.put_nowait((peer, msg))

        node = P2PNode(
            key,
            "127.0.0.1",
            port,
            list(peers),
            is_member or self.is_member,
            handler,
            chain_id=chain_id,
            genesis_hash=GENESIS,
            registry=registry(),
            config=config or self.config,
        )
        return Member(key, node, inbox)

    async def start(self) -> list[Member]:
        """Start all nodes; node i dials every node j < i (the others dial it in turn)."""
        for key in self.keys:
            peers = [PeerAddress(m.key.public_key, "127.0.0.1", m.node.port) for m in self.nodes]
            member = self.make_node(key, peers)
            await member.node.start()
            self.nodes.append(member)
        return self.nodes

    async def stop(self) -> None:
        for m in self.nodes:
            await m.node.stop()

    async def wait_full_mesh(self, timeout: float = 5.0) -> None:
        n = len(self.nodes)
        await until(lambda: all(len(m.node.peers()) == n - 1 for m in self.nodes), timeout)


class Hang:
    """A handler (for ``Net.extra_handlers``) that holds every message ``match`` picks
    until ``release`` is set; ``running`` counts the ones it holds now."""

    def __init__(self, match: Callable[[Wire], bool]) -> None:
        self.match = match
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.running = 0

    async def __call__(self, peer: bytes, msg: Wire) -> None:
        if not self.match(msg):
            return
        self.running += 1
        self.started.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1


def tls_key_memfds() -> set[str]:
    """The anonymous memory files (as ``/proc/self/fd/N``) in which this process's
    ``NodeIdentity`` objects hold their encrypted TLS key now (empty without memfd)."""
    found = set()
    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        return found
    for fd in os.listdir(fds):
        try:
            target = os.readlink(f"{fds}/{fd}")
        except OSError:
            continue  # closed since the listing (e.g. the listing's own descriptor)
        if target.startswith("/memfd:liveledger-tls"):
            found.add(f"{fds}/{fd}")
    return found


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def recv(member: Member, timeout: float = 5.0) -> tuple[bytes, Wire]:
    return await asyncio.wait_for(member.inbox.get(), timeout)


async def raw_connect(
    port: int,
    key: PrivateKey,
    *,
    offer_cert: bytes | None = None,
    context: Callable[[NodeIdentity, bytes], ssl.SSLContext] | None = None,
    chain_id: str = CHAIN,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, NodeIdentity]:
    """Do the handshake by hand, with knobs to lie at each step."""
    ident = NodeIdentity(key)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        offer = CertOffer(offer_cert if offer_cert is not None else ident.cert_der)
        writer.write(encode_frame(CERT_OFFER_TYPE, offer.encode()))
        theirs = CertOffer.decode(await read_frame(reader, CERT_OFFER_TYPE, 4096))
        ctx = context(ident, theirs.cert) if context else ident.client_context(theirs.cert)
        await writer.start_tls(ctx)
        hello = Hello(PROTOCOL_VERSION, chain_id, GENESIS)
        writer.write(encode_frame(HELLO_TYPE, hello.encode()))
        Hello.decode(await read_frame(reader, HELLO_TYPE, 256))
    except BaseException:
        writer.transport.abort()
        ident.close()
        raise
    return reader, writer, ident


@dataclass
class ManualTLS:
    """A member's connection whose TLS runs in memory: what ``tls.write`` encrypts
    waits in ``outgoing`` until the caller puts it on ``writer``, cut as it likes."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tls: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO
    ident: NodeIdentity

    async def read_frame(self, type_id: int, max_size: int) -> bytes:
        """The next frame's payload from the peer (which must be of ``type_id``)."""
        data = b""
        while len(data) < 5 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            try:
                data += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.incoming.write(await self.reader.read(65536))
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        return await read_frame(stream, type_id, max_size)

    def close(self) -> None:
        self.writer.transport.abort()
        self.ident.close()


async def manual_tls_connect(port: int, key: PrivateKey) -> ManualTLS:
    """Offer ``key``'s certificate and shake hands up to the client's last flight
    (Certificate, CertificateVerify, Finished), which is left in ``outgoing``, unsent:
    the peer's handshake ends when that arrives."""
    ident = NodeIdentity(key)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_frame(CERT_OFFER_TYPE, CertOffer(ident.cert_der).encode()))
    theirs = CertOffer.decode(await read_frame(reader, CERT_OFFER_TYPE, 4096))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ident.client_context(theirs.cert).wrap_bio(incoming, outgoing)
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            incoming.write(await reader.read(65536))
        else:
            return ManualTLS(reader, writer, tls, incoming, outgoing, ident)


def close_raw(opened: Iterable[tuple[asyncio.StreamWriter, NodeIdentity]]) -> None:
    """Abort the connections ``raw_connect`` opened and drop their identities."""
    for writer, ident in opened:
        writer.transport.abort()
        ident.close()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """True once the other side closes (EOF or reset), reading and discarding anything sent."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return True


# Ed25519's algorithm identifier (1.3.101.112) as DER; a certificate carries it three
# times: the signature algorithm inside and outside the signed part, and the key's.
ED25519_OID = bytes.fromhex("06032b6570")
# The version field of an X.509 v3 certificate ([0] INTEGER 2).
VERSION_3 = bytes.fromhex("a003020102")


def unparsable_certificates(key: PrivateKey) -> dict[str, bytes]:
    """A member's certificate, changed where cryptography's parser raises something other
    than ValueError: a key of an algorithm it does not know (1.3.101.121), a version
    field of 5 (X.509 has 0 to 2). Anyone can send either in a ``CertOffer``."""
    der = make_certificate(key)
    spki = der.index(ED25519_OID, der.index(ED25519_OID) + 1)
    return {
        "unknown key algorithm": der[:spki] + bytes.fromhex("06032b6579") + der[spki + 5 :],
        "unknown version": der.replace(VERSION_3, bytes.fromhex("a003020105"), 1),
    }


def client_hello(ident: NodeIdentity, server_cert: bytes, pad: int = 0) -> bytes:
    """The TLS ClientHello handshake message ``ident`` would send to the holder of
    ``server_cert``, with a padding extension of ``pad`` zero bytes (RFC 7685) put
    first among its extensions when ``pad`` is not 0: anyone may send one that large."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ident.client_context(server_cert).wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    record = outgoing.read()
    message = record[5 : 5 + struct.unpack(">H", record[3:5])[0]]
    if not pad:
        return message
    body = message[4:]
    # version (2), random (32), session id, cipher suites, compression, then extensions
    at = 34
    at += 1 + body[at]
    at += 2 + struct.unpack(">H", body[at : at + 2])[0]
    at += 1 + body[at]
    extensions = struct.pack(">HH", 21, pad) + bytes(pad) + body[at + 2 :]
    body = body[:at] + struct.pack(">H", len(extensions)) + extensions
    return b"\x01" + len(body).to_bytes(3, "big") + body


def handshake_records(message: bytes, size: int) -> bytes:
    """``message`` as plaintext TLS handshake records of ``size`` bytes each."""
    return b"".join(
        b"\x16\x03\x01" + struct.pack(">H", len(message[i : i + size])) + message[i : i + size]
        for i in range(0, len(message), size)
    )


def send_key_updates(writer: asyncio.StreamWriter, count: int) -> None:
    """Queue ``count`` TLS 1.3 KeyUpdate messages, each asking for one back, on the TLS
    connection of ``writer`` (they go out with its next write). Python's ssl cannot send
    one; a hostile peer's TLS stack can, so this calls OpenSSL through ctypes, on the
    ``SSL *`` of CPython's ``_ssl._SSLSocket`` (after its object header and the socket
    weakref; CPython 3.11 and 3.12)."""
    libssl = ctypes.CDLL("libssl.so.3")
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libssl.SSL_do_handshake.argtypes = [ctypes.c_void_p]
    tls = writer.get_extra_info("ssl_object")
    ssl_ptr = ctypes.c_void_p.from_address(id(tls._sslobj) + 3 * ctypes.sizeof(ctypes.c_void_p))
    for _ in range(count):
        # SSL_KEY_UPDATE_REQUESTED: the receiver must answer with a KeyUpdate of its own.
        if libssl.SSL_key_update(ssl_ptr.value, 1) != 1:
            raise RuntimeError("SSL_key_update failed")
        if libssl.SSL_do_handshake(ssl_ptr.value) != 1:
            raise RuntimeError("SSL_do_handshake failed")
