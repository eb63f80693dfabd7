"""Test-only entry point: a real node that misbehaves in one chosen way.

    python -m tests.e2e.byzantine --home H --behaviour double-sign|tamper-relay|future-time
        [--ahead-ms MS]

It runs the real ``Node`` (``node.run.run_node``) and injects the behaviour at the
engine's public seams (``node.consensus.ConsensusSeams``: transport, application,
clock, inbound messages). ``tests/`` is not an installed package (pyproject's
package list), so no production install can reach this, and no config key can.

Behaviours:

- ``double-sign``: after each own vote, a conflicting vote signed with the node key
  (``tests.consensus.byzantine.EquivocatingVotes``); evidence must jail and slash it.
- ``tamper-relay``: every proposal received is relayed to every peer with its last
  transaction removed (same signed header, tampered body), and every peer that is
  behind (an old-height message or a ``SyncRequest``) gets, at once, a tampered
  ``FinalizedBlock`` (same certified header, tampered body). Logs one
  ``byzantine: tampered ...`` line per message sent.
- ``future-time``: as a producer, dates its own blocks ``--ahead-ms`` ahead of its
  clock (default one day; ``--ahead-ms max`` asks for 2**64 - 1, to try to overflow).
- ``io-fault``: committing block ``--at-height`` fails as a full disk would (an
  ``OSError`` before anything is written), once per process; the engine halts and
  the node must exit (``node.run.EXIT_CONSENSUS_HALTED``), not serve a frozen head.
- ``bad-chunks``: every state sync chunk it serves has one byte flipped in its last
  node (a validator otherwise honest). Logs ``byzantine: corrupted chunk``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from consensus import Application, Transport
from consensus.messages import FinalizedBlock, Message, Proposal, SyncRequest
from core import Block, Vote
from core.keystore import load_key
from genesis import load_genesis
from node.config import GENESIS_FILE, NODE_KEY_FILE
from node.consensus import ConsensusSeams, Inbound
from node.run import configure_logging, run_node
from node.service import PASSPHRASE_ENV
from tests.consensus.byzantine import EquivocatingVotes

log = logging.getLogger("byzantine")

DAY_MS = 24 * 3600 * 1000
U64_MAX = 2**64 - 1
# A peer that is behind gets a tampered block at most this often per height.
TAMPER_RESEND_S = 0.2


class DoubleSign(ConsensusSeams):
    def __init__(self, home: Path) -> None:
        self.key = load_key(home / NODE_KEY_FILE, os.environ.get(PASSPHRASE_ENV, ""))
        self.chain_id = load_genesis(home / GENESIS_FILE).chain_id

    def transport(self, transport: Transport) -> Transport:
        return EquivocatingVotes(transport, self.key, self.chain_id)


def tampered(block: Block) -> Block | None:
    """``block`` with its last transaction removed (None for an empty block)."""
    if not block.txs:
        return None
    return Block(block.header, block.txs[:-1])


class _TamperedStore:
    """The node's application, except that committed blocks come out tampered, so the
    engine's own answers to peers that are behind carry tampered bodies too."""

    def __init__(self, inner: Application) -> None:
        self._inner = inner

    def committed(self, height: int) -> Any:
        found = self._inner.committed(height)
        if found is None:
            return None
        block, commit = found
        return tampered(block) or block, commit

    def committed_encoded(self, height: int) -> Any:
        # The engine serves peers from the stored bytes: these come out tampered too.
        found = self.committed(height)
        return None if found is None else (found[0].encode(), found[1].encode())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TamperRelay(ConsensusSeams):
    def __init__(self) -> None:
        self._transport: Transport | None = None
        self._app: Application | None = None
        self._sent: dict[tuple[bytes, int], float] = {}

    def transport(self, transport: Transport) -> Transport:
        self._transport = transport
        return transport

    def application(self, app: Application) -> Application:
        self._app = app
        return _TamperedStore(app)  # type: ignore[return-value]  # a wrapper with the same surface

    def inbound(self, deliver: Inbound) -> Inbound:
        def relay(msg: Message, peer: bytes, received_ms: int) -> None:
            # Tampered copies first: they must beat the honest peers' answers.
            self._misbehave(msg, peer)
            deliver(msg, peer, received_ms)

        return relay

    def _misbehave(self, msg: Message, peer: bytes) -> None:
        assert self._transport is not None and self._app is not None
        ours = self._app.height()
        if isinstance(msg, Proposal) and msg.height > ours:
            block = tampered(msg.block)
            if block is not None:
                copy = Proposal(
                    msg.height, msg.round, msg.pol_round, block, msg.proposer, msg.signature
                )
                self._transport.broadcast(copy)
                log.warning("byzantine: tampered proposal %d/%d relayed", msg.height, msg.round)
            return
        if isinstance(msg, SyncRequest | Vote | Proposal) and 1 <= msg.height <= ours:
            self._serve_tampered(peer, msg.height, ours)

    def _serve_tampered(self, peer: bytes, height: int, ours: int) -> None:
        assert self._transport is not None and self._app is not None
        now = time.monotonic()
        if now - self._sent.get((peer, height), 0.0) < TAMPER_RESEND_S:
            return
        self._sent[(peer, height)] = now
        found = self._app.committed(height)
        block = None if found is None else tampered(found[0])
        if found is None or block is None:
            return
        self._transport.send(peer, FinalizedBlock(block, found[1], ours))
        log.warning("byzantine: tampered finalized block %d sent to %s", height, peer.hex()[:16])


class _FutureApplication:
    """The node's application, except that its own proposals are dated ahead."""

    def __init__(self, inner: Application, ahead_ms: int | None) -> None:
        self._inner = inner
        self._ahead_ms = ahead_ms

    def propose(self, height: int, round_: int, time_ms: int) -> Block:
        when = U64_MAX if self._ahead_ms is None else time_ms + self._ahead_ms
        log.warning("byzantine: proposing %d/%d dated %d (clock %d)", height, round_, when, time_ms)
        return self._inner.propose(height, round_, when)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class FutureTime(ConsensusSeams):
    def __init__(self, ahead_ms: int | None) -> None:
        self.ahead_ms = ahead_ms

    def application(self, app: Application) -> Application:
        return _FutureApplication(app, self.ahead_ms)  # type: ignore[return-value]  # a wrapper with the same surface


class _FailingCommit:
    """Commits as ``inner`` does, but fails the commit of block ``height``."""

    def __init__(self, inner: Application, height: int) -> None:
        self._inner = inner
        self._height = height

    def commit(self, block: Block, commit: Any) -> None:
        if block.header.height == self._height:
            log.warning("byzantine: failing the commit of block %d", self._height)
            raise OSError(28, "No space left on device (injected)")
        self._inner.commit(block, commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class IoFault(ConsensusSeams):
    def __init__(self, height: int) -> None:
        self.height = height

    def application(self, app: Application) -> Application:
        return _FailingCommit(app, self.height)  # type: ignore[return-value]  # a wrapper with the same surface


class BadChunks(ConsensusSeams):
    def snapshot_chunk(self, nodes: list[bytes]) -> list[bytes]:
        if not nodes:
            return nodes
        last = bytearray(nodes[-1])
        last[-1] ^= 0x01
        log.warning("byzantine: corrupted chunk of %d nodes", len(nodes))
        return [*nodes[:-1], bytes(last)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.byzantine")
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument(
        "--behaviour",
        required=True,
        choices=["double-sign", "tamper-relay", "future-time", "bad-chunks", "io-fault"],
    )
    parser.add_argument("--at-height", type=int, default=10, help="io-fault: the block")
    parser.add_argument(
        "--ahead-ms", default=str(DAY_MS), help="future-time: ms ahead, or 'max' for 2**64-1"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    seams: ConsensusSeams
    if args.behaviour == "double-sign":
        seams = DoubleSign(args.home)
    elif args.behaviour == "tamper-relay":
        seams = TamperRelay()
    elif args.behaviour == "bad-chunks":
        seams = BadChunks()
    elif args.behaviour == "io-fault":
        seams = IoFault(args.at_height)
    else:
        seams = FutureTime(None if args.ahead_ms == "max" else int(args.ahead_ms))
    log.warning("byzantine: %s node from %s", args.behaviour, args.home)
    run_node(args.home, seams=seams)


if __name__ == "__main__":
    main()
