"""What a peer's TLS record size costs the node that reads it (p2p, hostile inputs).

A member (it finishes the handshake with its own key) sends ``--frames`` frames
of ``--payload`` bytes each to a ``P2PNode``, first as ordinary TLS records (up
to 16 KiB of plaintext each), then with every byte in a TLS record of its own.
The sender runs in a child process and encrypts its whole stream before the
clock starts, then writes it at once: the figures are the node's CPU
(``time.process_time`` of this process, from the first frame handled to the
last), per plaintext byte and per wire byte.

    python -m benches.tls_records --frames 200 --payload 1000

The node's inbound byte rate (``P2PConfig.rate_bytes``) counts a TLS record as
its plaintext plus ``RECORD_CHARGE`` bytes (``p2p.connection``); the last
column shows what it charged the sender per plaintext byte.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import ssl
import time
from dataclasses import dataclass

import uvloop

from core.codec import Wire
from core.keys import PrivateKey
from p2p import P2PConfig, P2PNode
from p2p.frames import encode_frame
from p2p.limits import RECORD_CHARGE
from p2p.messages import CERT_OFFER_TYPE, HELLO_TYPE, PROTOCOL_VERSION, CertOffer, Hello
from p2p.tls import NodeIdentity
from tests.p2p.helpers import CHAIN, CHAT_TYPE, GENESIS, Chat, registry

# Unthrottled, so the figures are the reading's cost, not the limiter's waits.
OPEN = P2PConfig(rate_messages=1e9, burst_messages=1e9, rate_bytes=1e12, burst_bytes=1e12)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def _read_frame(sock: socket.socket) -> bytes:
    header = _read_exactly(sock, 5)
    return _read_exactly(sock, int.from_bytes(header[:4], "big") - 1)


def _pump(sock: socket.socket, obj: ssl.SSLObject, inc: ssl.MemoryBIO, out: ssl.MemoryBIO) -> None:
    """Drive the TLS handshake over a blocking socket through memory BIOs."""
    while True:
        try:
            obj.do_handshake()
            sock.sendall(out.read())
            return
        except ssl.SSLWantReadError:
            sock.sendall(out.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during TLS") from None
            inc.write(data)


def _sender(seed: bytes, port: int, frames: int, payload: int, one_byte: bool) -> None:
    """The hostile member: handshake by hand, then its stream in 1-byte or full records."""
    key = PrivateKey(seed)
    ident = NodeIdentity(key)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode_frame(CERT_OFFER_TYPE, CertOffer(ident.cert_der).encode()))
    theirs = CertOffer.decode(_read_frame(sock))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ident.client_context(theirs.cert).wrap_bio(inc, out)
    _pump(sock, obj, inc, out)
    hello = encode_frame(HELLO_TYPE, Hello(PROTOCOL_VERSION, CHAIN, GENESIS).encode())
    stream = hello + b"".join(
        encode_frame(CHAT_TYPE, Chat(i, bytes(payload)).encode()) for i in range(frames)
    )
    if one_byte:
        for i in range(len(stream)):
            obj.write(stream[i : i + 1])
    else:
        obj.write(stream)
    wire = out.read()
    sock.sendall(wire)
    # Keep the connection until the node has read everything (it closes it then).
    sock.settimeout(60)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()
    ident.close()


@dataclass
class Row:
    mode: str
    plain: int
    cpu: float
    charged: float


async def _run(frames: int, payload: int, one_byte: bool) -> Row:
    node_key, peer_key = PrivateKey.generate(), PrivateKey.generate()
    members = {node_key.public_key, peer_key.public_key}
    got = 0
    first_cpu = 0.0
    last_cpu = 0.0
    done = asyncio.Event()

    async def handler(peer: bytes, msg: Wire) -> None:
        nonlocal got, first_cpu, last_cpu
        got += 1
        if got == 1:
            first_cpu = time.process_time()
        if got == frames:
            last_cpu = time.process_time()
            done.set()

    node = P2PNode(
        node_key,
        "127.0.0.1",
        0,
        [],
        members.__contains__,
        handler,
        chain_id=CHAIN,
        genesis_hash=GENESIS,
        registry=registry(),
        config=OPEN,
    )
    async with node:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=_sender, args=(peer_key.seed, node.port, frames, payload, one_byte)
        )
        proc.start()
        await asyncio.wait_for(done.wait(), 600)
        stats = node.peer_stats()[peer_key.public_key]
        charged = stats.bytes_in + stats.records_in * RECORD_CHARGE
        node.drop_peer(peer_key.public_key, "bench over", ban=False)
        proc.kill()
        proc.join()
    frame_bytes = len(encode_frame(CHAT_TYPE, Chat(0, bytes(payload)).encode()))
    # The first frame's cost is outside the measured span.
    plain = frame_bytes * (frames - 1)
    mode = "1-byte records" if one_byte else "full records"
    return Row(mode, plain, last_cpu - first_cpu, charged / (frame_bytes * frames))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--payload", type=int, default=1000)
    parser.add_argument("--full-only", action="store_true", help="skip the 1-byte records")
    args = parser.parse_args()
    modes = (False,) if args.full_only else (False, True)
    rows = [uvloop.run(_run(args.frames, args.payload, one)) for one in modes]
    print(f"{'mode':16} {'plaintext':>10} {'cpu ms':>8} {'ns/byte':>8} {'charged/byte':>13}")
    for r in rows:
        print(
            f"{r.mode:16} {r.plain:>10} {r.cpu * 1e3:>8.1f} {r.cpu / r.plain * 1e9:>8.0f} "
            f"{r.charged:>13.1f}"
        )
    if len(rows) == 2:
        print(f"ratio 1-byte/full per byte: {rows[1].cpu / rows[0].cpu:.0f}x")
    print(f"python -m benches.tls_records --frames {args.frames} --payload {args.payload}")


if __name__ == "__main__":
    main()
