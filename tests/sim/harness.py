"""Deterministic simulation of a validator network running the real consensus engine.

Everything is driven by one virtual clock and one seeded ``random.Random``: message
delays, drops, duplicates (and so reordering), partitions, crashes and restarts,
clock skews, Byzantine behaviours and the client workload. The same seed always
gives the same run, so a failing seed is a reproducible test.

Nodes run the real ``ConsensusEngine``, ``PrivValidator`` and ``WAL`` (on disk, so
restarts exercise the double-sign guard) on the node's real application: an ``AppHost``
(``chain_host.py``: ``ChainApplication`` over a real ``Chain`` and ``Mempool``).
Messages travel as encoded ``ConsensusMessage`` and ``TxBatch`` bytes, so the codec is
exercised too. Byzantine behaviours are in ``byzantine.py``; scenarios, runs and
their checks in ``runner.py``; the client in ``workload.py``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from consensus import ValidatorSet
from consensus.bft import Application, BFTConfig, ConsensusEngine, Synchrony, Transport
from consensus.messages import (
    ConsensusMessage,
    DuplicateVoteEvidence,
    Message,
    Outgoing,
    encode_message,
)
from consensus.privval import PrivValidator
from consensus.wal import WAL
from core import (
    Block,
    Commit,
    PrivateKey,
    Vote,
)
from p2p import TxBatch
from tests.consensus.byzantine import EquivocatingVotes
from tests.sim import byzantine

CHAIN_ID = "sim-chain"
# Wall-clock time at virtual time 0; genesis is a second earlier.
EPOCH_MS = 1_700_000_000_000
GENESIS_TIME_MS = EPOCH_MS - 1_000

SIM_CONFIG = BFTConfig(
    timeout_propose_ms=300,
    timeout_propose_delta_ms=100,
    timeout_prevote_ms=150,
    timeout_prevote_delta_ms=50,
    timeout_precommit_ms=150,
    timeout_precommit_delta_ms=50,
    timeout_commit_ms=50,
    rebroadcast_ms=200,
    sync_interval_ms=200,
)

# The chain's clock bounds in the simulation. The precision is the default; the
# message delay is scaled down with the virtual timeouts (the default 10 s would
# exceed most runs, and a proposal dated "far behind" could not be told apart).
SIM_SYNCHRONY = Synchrony(precision_ms=500, message_delay_ms=1_500)

# How long a peer reported through on_bad_peer stays disconnected (p2p drops it;
# a member reconnects later).
BAN_MS = 1_000


class SafetyViolation(AssertionError):
    pass


class Scheduler:
    """The virtual clock: a heap of (time, sequence, callback); ties run in FIFO order."""

    def __init__(self) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0

    def call_at(self, at_ms: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_ms, self._seq, fn))

    def run(self, until_ms: int, done: Callable[[], bool] | None = None) -> None:
        while self._heap and self._heap[0][0] <= until_ms:
            at, _, fn = heapq.heappop(self._heap)
            self.now = at
            fn()
            if done is not None and done():
                return
        self.now = max(self.now, until_ms)


class Ledger:
    """What every node finalized; checks safety at every single commit.

    Byzantine nodes run the real engine too, so their commits are recorded as well:
    a different block there would need a second certificate, i.e. more than f faulty.
    """

    def __init__(self, honest_clock: Callable[[], int], precision_ms: int) -> None:
        self.by_height: dict[int, bytes] = {}
        self.honest_clock = honest_clock
        self.precision_ms = precision_ms
        self.commits = 0

    def record(self, node: int, block: Block) -> None:
        self.commits += 1
        h = block.header.height
        first = self.by_height.setdefault(h, block.hash)
        if first != block.hash:
            raise SafetyViolation(
                f"node {node} finalized {block.hash.hex()} at height {h}, "
                f"another node finalized {first.hex()}"
            )
        # Block time is never more than P ahead of an honest clock (docs/consensus.md,
        # "Block time"): a final block was timely to some honest producer, whose clock
        # has only moved on since.
        latest = self.honest_clock() + self.precision_ms
        if block.header.time_ms > latest:
            raise SafetyViolation(
                f"node {node} finalized height {h} dated {block.header.time_ms}, more than "
                f"{self.precision_ms} ms ahead of every honest clock (at most {latest})"
            )


class AppHost(Protocol):
    """One node's application and what survives its crashes (its "disk")."""

    def open(self, node: SimNode) -> Application:
        """A fresh application over what is on disk (first boot and every restart)."""
        ...

    def close(self) -> None:
        """A crash: everything in memory is lost."""
        ...

    def height(self) -> int: ...

    def committed(self, height: int) -> tuple[Block, Commit] | None: ...

    def validators(self, height: int) -> ValidatorSet: ...

    def on_evidence(self, node: SimNode, evidence: DuplicateVoteEvidence) -> None:
        """What the node does with double-sign evidence (the real node submits it)."""
        ...

    def receive_txs(self, node: SimNode, txs: list[bytes]) -> None:
        """Transactions gossiped by a peer."""
        ...


# --- the network ---------------------------------------------------------------------


@dataclass
class NetParams:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_min_ms: int = 5
    delay_max_ms: int = 40


# Links of a Byzantine relay are fast, so its tampered copies usually arrive first.
FAST_DELAY_MS = (1, 2)

CONSENSUS = 0
TXS = 1


class Network:
    def __init__(self, sched: Scheduler, rng: random.Random, params: NetParams) -> None:
        self.sched = sched
        self.rng = rng
        self.params = params
        self.nodes: list[SimNode] = []
        # Node index -> group; nodes in different groups cannot talk. None: fully connected.
        self.groups: dict[int, int] | None = None
        # (reporter, peer) -> until when the reporter refuses the peer (on_bad_peer).
        self.bans: dict[tuple[int, int], int] = {}
        # Every on_bad_peer report: (reporter, peer, reason).
        self.reports: list[tuple[int, int, str]] = []
        # Nodes whose links are fast (Byzantine relays).
        self.fast: set[int] = set()
        # Nodes that may talk only to the given peers (twins, each with its own half).
        self.only: dict[int, frozenset[int]] = {}
        self.sent = 0

    def partition(self, groups: list[set[int]]) -> None:
        self.groups = {n: g for g, members in enumerate(groups) for n in members}

    def heal(self) -> None:
        self.groups = None

    def report(self, reporter: int, peer: object, reason: str) -> None:
        """``on_bad_peer``: the reporter drops the peer for a while, as p2p does."""
        assert isinstance(peer, int), f"peer {peer!r} is not a node index"
        self.reports.append((reporter, peer, reason))
        self.bans[(reporter, peer)] = self.sched.now + BAN_MS

    def connected(self, src: int, dst: int) -> bool:
        if self.groups is not None and self.groups.get(src) != self.groups.get(dst):
            return False
        for a, b in ((src, dst), (dst, src)):
            peers = self.only.get(a)
            if peers is not None and b not in peers:
                return False
        now = self.sched.now
        for pair in ((src, dst), (dst, src)):
            until = self.bans.get(pair)
            if until is not None and until > now:
                return False
        return True

    def send(self, src: int, dst: int, msg: Outgoing) -> None:
        self._send(src, dst, CONSENSUS, encode_message(msg))

    def send_txs(self, src: int, dst: int, txs: list[bytes]) -> None:
        self._send(src, dst, TXS, TxBatch(tuple(txs)).encode())

    def _send(self, src: int, dst: int, kind: int, data: bytes) -> None:
        self.sent += 1
        if not self.connected(src, dst):
            return
        p = self.params
        if self.rng.random() < p.drop:
            return
        copies = 2 if self.rng.random() < p.duplicate else 1
        low, high = p.delay_min_ms, p.delay_max_ms
        if src in self.fast or dst in self.fast:
            low, high = FAST_DELAY_MS
        for _ in range(copies):
            delay = self.rng.randint(low, high)
            self.sched.call_at(
                self.sched.now + delay, lambda d=data: self.nodes[dst].receive(src, kind, d)
            )


class SimTransport:
    """The engine's ``Transport``; a Byzantine node's behaviour rewrites what leaves."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def broadcast(self, msg: Message) -> None:
        for other in self.node.net.nodes:
            if other.index != self.node.index:
                self.send(other.index, msg)

    def send(self, peer: int, msg: Outgoing) -> None:
        node = self.node
        out = byzantine.outgoing(node, msg, peer)
        if out is not None:
            node.net.send(node.index, peer, out)


class NodeClock:
    """One incarnation's view of the virtual clock; timers die with the incarnation."""

    def __init__(self, node: SimNode, incarnation: int) -> None:
        self.node = node
        self.incarnation = incarnation

    def now(self) -> int:
        return self.node.sched.now

    def time_ms(self) -> int:
        return self.node.wall_clock()

    def schedule(self, delay_ms: int, event: Callable[[], None]) -> None:
        node, inc = self.node, self.incarnation

        def fire() -> None:
            if node.alive and node.incarnation == inc:
                event()

        node.sched.call_at(node.sched.now + delay_ms, fire)


@dataclass
class SimNode:
    index: int
    key: PrivateKey
    home: Path
    sched: Scheduler
    net: Network
    host: AppHost
    # A Byzantine behaviour (byzantine.BEHAVIOURS), or None for an honest node.
    behaviour: str | None = None
    # This node's wall clock minus the true time (honest: within +-precision/2).
    skew_ms: int = 0
    # Peers that a "selective" node sends its votes to.
    vote_peers: frozenset[int] = frozenset()
    alive: bool = False
    incarnation: int = 0
    engine: ConsensusEngine | None = None
    privval: PrivValidator | None = None
    evidence: list[DuplicateVoteEvidence] = field(default_factory=list)
    restarts: int = 0
    # Per (height, round): the second proposal of an equivocating proposer.
    alt_proposals: dict[tuple[int, int], Message] = field(default_factory=dict)
    # Votes of Byzantine validators received at the vote's height:
    # (validator, type, height, round) -> block hashes.
    byzantine_votes: dict[tuple[bytes, int, int, int], set[bytes]] = field(default_factory=dict)
    byzantine_keys: frozenset[bytes] = frozenset()

    @property
    def honest(self) -> bool:
        return self.behaviour is None

    def wall_clock(self) -> int:
        return EPOCH_MS + self.sched.now + self.skew_ms

    def start(self) -> None:
        """First boot (at a slightly different time per node, as real processes)."""
        if not self.alive and self.incarnation == 0:
            self.boot()

    def boot(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.privval = PrivValidator(self.key, CHAIN_ID, self.home / "consensus")
        app = byzantine.wrap_app(self, self.host.open(self))
        transport: Transport = SimTransport(self)
        if self.behaviour == "equivocate":
            # A conflicting vote after each own vote, signed with the key directly.
            transport = EquivocatingVotes(transport, self.key, CHAIN_ID)
        self.engine = ConsensusEngine(
            chain_id=CHAIN_ID,
            app=app,
            transport=transport,
            clock=NodeClock(self, self.incarnation),
            privval=self.privval,
            wal=WAL(self.home / "consensus", CHAIN_ID),
            config=SIM_CONFIG,
            on_evidence=self._on_evidence,
            on_bad_peer=lambda peer, reason: self.net.report(self.index, peer, reason),
        )
        self.engine.start()

    def _on_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        self.evidence.append(evidence)
        self.host.on_evidence(self, evidence)

    def crash(self, power_loss: bool = False) -> None:
        # Everything in memory is lost; the app's store, the privval file and the
        # synced part of the WAL survive, as they would on disk. A power loss also
        # drops what was written to the WAL but not yet fsynced.
        if not self.alive:
            return
        wal = self.engine.wal if self.engine is not None else None
        if wal is not None:
            wal.close()
            if power_loss:
                with open(wal.path, "r+b") as f:
                    f.truncate(wal.synced_size)
        self.host.close()
        self.alive = False
        self.engine = None
        self.privval = None

    def restart(self) -> None:
        # Restart only what crashed; a node not started yet boots on its own schedule.
        if self.alive or self.incarnation == 0:
            return
        self.restarts += 1
        self.boot()

    def receive(self, src: int, kind: int, data: bytes) -> None:
        if not self.alive or self.engine is None or not self.net.connected(src, self.index):
            return
        if kind == TXS:
            self.host.receive_txs(self, list(TxBatch.decode(data).txs))
            return
        msg = ConsensusMessage.decode(data).unwrap()
        if (
            isinstance(msg, Vote)
            and msg.validator in self.byzantine_keys
            and msg.height == self.engine.height
        ):
            key = (msg.validator, msg.type, msg.height, msg.round)
            self.byzantine_votes.setdefault(key, set()).add(msg.block_hash)
        byzantine.on_receive(self, msg, src)
        self.engine.deliver(msg, src)
