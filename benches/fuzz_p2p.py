"""Fuzzing p2p frame handling (issue 10): random and mutated frames through a real connection.

Each case is a byte stream, some valid frames of the node's message kinds
(gossip, sync, consensus, keepalive) then mutants of them (header and payload
edits, random bytes), written into a socket whose other end is read by a
``p2p.connection.Connection`` of a ``P2PNode``, exactly as an authenticated
peer's stream is. It must end with the connection closed (the peer dropped,
or the stream over), within ``HANG_SECONDS``, with nothing raised out of the
connection and no error logged (an error is our bug: a non-``Invalid``
exception in the reader). The valid frames before the first mutant must reach
the handler.

    python -m benches.fuzz_p2p --inputs 200000

``tests/p2p/test_frame_fuzz.py`` runs a small campaign of the same checks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import resource
import socket
import sys
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benches.fuzz_codec import instances, mutate
from core.codec import Wire
from core.keys import PrivateKey
from p2p import P2PConfig, P2PNode
from p2p.connection import Connection
from p2p.frames import encode_frame
from p2p.messages import PING_TYPE, PONG_TYPE, MessageRegistry, Ping, Pong

HANG_SECONDS = 5.0
# No throttling: the limits are not what is fuzzed here.
CONFIG = P2PConfig(rate_messages=1e9, burst_messages=1e9, rate_bytes=1e12, burst_bytes=1e12)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class FrameTally:
    streams: int = 0
    frames: int = 0
    dropped_for_misbehaviour: int = 0
    slowest: float = 0.0
    crashes: list[str] = field(default_factory=list)


class FrameCrash(AssertionError):
    """A stream made the connection raise, log an error, hang or lose valid frames."""


class FrameFuzzer:
    """A node that is never started; its connections are fed from socket pairs."""

    def __init__(self, registry: MessageRegistry) -> None:
        self.registry = registry
        self.peer = PrivateKey.generate().public_key
        self.received: list[Wire] = []
        self.errors = _Errors()
        logging.getLogger("p2p").addHandler(self.errors)
        # Misbehaviour is logged as a warning per dropped peer: keep the campaign quiet.
        logging.getLogger("p2p").setLevel(logging.ERROR)

        async def handler(peer: bytes, msg: Wire) -> None:
            self.received.append(msg)

        self.node = P2PNode(
            PrivateKey.generate(),
            "127.0.0.1",
            0,
            [],
            lambda pk: True,
            handler,
            chain_id="fuzz-chain",
            genesis_hash=bytes(32),
            registry=registry,
            config=CONFIG,
        )

    def close(self) -> None:
        logging.getLogger("p2p").removeHandler(self.errors)

    def essential(self) -> set[int]:
        """Application kinds that are never dropped: each one sent must be handled."""
        kinds = [self.registry.by_id(t) for t in range(256)]
        return {k.type_id for k in kinds if k is not None and not k.droppable}

    def kinds(self) -> list[tuple[int, type[Wire]]]:
        out = [(PING_TYPE, Ping), (PONG_TYPE, Pong)]
        for type_id in range(256):
            kind = self.registry.by_id(type_id)
            if kind is not None:
                out.append((type_id, kind.cls))
        return out

    async def feed(self, stream: bytes, valid_prefix: int, tally: FrameTally) -> None:
        """Feed ``stream``; at least ``valid_prefix`` of its frames must reach the handler."""
        self.received.clear()
        self.errors.records.clear()
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=ours)
        conn = Connection(self.node, self.peer, reader, writer, self.peer, "fuzz")
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        task = conn.start()
        try:
            await loop.sock_sendall(theirs, stream)
            theirs.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(HANG_SECONDS):
                await task
                await conn.closed.wait()
        except TimeoutError as exc:
            raise FrameCrash(
                f"connection still open {HANG_SECONDS} s after {stream.hex()}"
            ) from exc
        except OSError:
            pass  # the connection dropped us before it read everything: fine
        finally:
            theirs.close()
            writer.transport.abort()
        elapsed = time.perf_counter() - start
        tally.slowest = max(tally.slowest, elapsed)
        tally.streams += 1
        if self.errors.records:
            first = self.errors.records[0]
            raise FrameCrash(
                f"error logged for {stream.hex()}: {first.getMessage()} {first.exc_info!r}"
            )
        if not task.done() or task.exception() is not None:
            raise FrameCrash(f"connection task failed on {stream.hex()}")
        if "misbehaviour" in conn.reason:
            tally.dropped_for_misbehaviour += 1
        if len(self.received) < valid_prefix:
            raise FrameCrash(
                f"{valid_prefix} valid frames sent, {len(self.received)} handled: {stream.hex()}"
            )


def stream_of(
    kinds: list[tuple[int, type[Wire]]],
    messages: list[tuple[int, Wire]],
    essential: set[int],
    rng: random.Random,
    mutants: int,
) -> tuple[bytes, int, int]:
    """Valid frames, then ``mutants`` mutated ones; (stream, valid essential frames, frames)."""
    frames = [encode_frame(t, m.encode()) for t, m in messages]
    # Gossip (droppable) may be discarded with a peer dropped later in the stream.
    valid = sum(1 for t, _ in messages if t in essential)
    corpus = list(frames)
    out = list(frames)
    for _ in range(mutants):
        base = rng.choice(corpus) if corpus else b""
        if rng.random() < 0.2:
            # A valid payload under another type byte.
            type_id = rng.choice(kinds)[0] if rng.random() < 0.8 else rng.randrange(256)
            out.append(encode_frame(type_id, base[5:]))
        else:
            out.append(mutate(base, rng, corpus))
    return b"".join(out), valid, len(out)


def frame_messages(
    kinds: list[tuple[int, type[Wire]]],
) -> st.SearchStrategy[list[tuple[int, Wire]]]:
    one = st.sampled_from(kinds).flatmap(lambda k: instances(k[1]).map(lambda m: (k[0], m)))
    return st.lists(one, max_size=3)


def run_campaign(examples: int, mutants: int, seed: int) -> FrameTally:
    from node.service import message_registry

    tally = FrameTally()
    loop = asyncio.new_event_loop()
    fuzzer = FrameFuzzer(message_registry())
    kinds = fuzzer.kinds()
    essential = fuzzer.essential()
    try:

        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(messages=frame_messages(kinds), n=st.integers(0, 2**32))
        def run(messages: list[tuple[int, Wire]], n: int) -> None:
            rng = random.Random(n + seed)
            stream, valid, count = stream_of(kinds, messages, essential, rng, mutants)
            tally.frames += count
            loop.run_until_complete(fuzzer.feed(stream, valid, tally))

        try:
            run()
        except Exception as exc:
            tally.crashes.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        fuzzer.close()
        loop.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=200_000, help="frames, about")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    mutants = 3
    # Each stream: up to 3 valid frames and the mutants, 4.5 frames on average.
    examples = max(1, int(args.inputs / (mutants + 1.5)))
    start = time.monotonic()
    tally = run_campaign(examples, mutants, args.seed)
    elapsed = time.monotonic() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"python -m benches.fuzz_p2p --inputs {args.inputs} --seed {args.seed}")
    print(f"{'streams':<28}{tally.streams:>12}")
    print(f"{'frames (inputs tried)':<28}{tally.frames:>12}")
    print(f"{'peers dropped':<28}{tally.dropped_for_misbehaviour:>12}")
    print(f"{'seconds':<28}{elapsed:>12.1f}")
    print(f"{'slowest stream (ms)':<28}{tally.slowest * 1000:>12.2f}")
    print(f"{'peak RSS (MiB)':<28}{peak_mib:>12.0f}")
    print(f"{'crashes':<28}{len(tally.crashes):>12}")
    for crash in tally.crashes:
        print(crash)
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
