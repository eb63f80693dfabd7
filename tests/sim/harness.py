"""Deterministic simulation of a validator network running the real consensus engine.

Everything is driven by one virtual clock and one seeded ``random.Random``: message
delays, drops, duplicates (and so reordering), partitions, crashes and restarts.
The same seed always gives the same run, so a failing seed is a reproducible test.

Nodes run the real ``ConsensusEngine`` and ``PrivValidator`` (state on disk under
``tmp_path``, so restarts exercise the double-sign guard); the application is a toy
chain whose blocks carry a counter and are checked with ``validate_header``.
Messages travel as encoded ``ConsensusMessage`` bytes, so the codec is exercised too.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from consensus import ValidatorSet, validate_header, verify_commit
from consensus.bft import BFTConfig, ConsensusEngine, Synchrony, Transport
from consensus.messages import ConsensusMessage, DuplicateVoteEvidence, Message, Proposal
from consensus.privval import PrivValidator
from consensus.wal import WAL
from core import (
    ZERO_HASH,
    Block,
    BlockHeader,
    Commit,
    Domain,
    InvalidBlock,
    PrivateKey,
    Vote,
    hash_bytes,
    merkle_root,
)
from tests.consensus.byzantine import EquivocatingVotes, sign_proposal

CHAIN_ID = "sim-chain"
GENESIS_HASH = hash_bytes(Domain.GENESIS, b"sim genesis")
GENESIS_TIME_MS = 1_000

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


# The chain's clock bounds (ChainParams' defaults).
SIM_SYNCHRONY = Synchrony(precision_ms=500, message_delay_ms=10_000)


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
    """What every node finalized; checks safety at every single commit."""

    def __init__(self) -> None:
        self.by_height: dict[int, bytes] = {}

    def record(self, node: int, block: Block) -> None:
        h = block.header.height
        first = self.by_height.setdefault(h, block.hash)
        if first != block.hash:
            raise SafetyViolation(
                f"node {node} finalized {block.hash.hex()} at height {h}, "
                f"another node finalized {first.hex()}"
            )


class SimApp:
    """A toy chain: block h carries counter h (as its state root) on top of block h-1."""

    def __init__(
        self,
        index: int,
        key: PrivateKey,
        validators: ValidatorSet,
        sched: Scheduler,
        ledger: Ledger,
    ) -> None:
        self.index = index
        self.key = key
        self.vs = validators
        self.sched = sched
        self.ledger = ledger
        self.blocks: list[Block] = []
        self.commits: list[Commit] = []
        self.validate_calls = 0

    def height(self) -> int:
        return len(self.blocks)

    def validators(self, height: int) -> ValidatorSet:
        return self.vs

    def _head(self) -> BlockHeader | None:
        return self.blocks[-1].header if self.blocks else None

    def synchrony(self, height: int) -> Synchrony:
        return SIM_SYNCHRONY

    def propose(self, height: int, round_: int, time_ms: int, *, salt: int = 0) -> Block:
        head = self._head()
        prev_time = head.time_ms if head else GENESIS_TIME_MS
        header = BlockHeader(
            chain_id=CHAIN_ID,
            height=height,
            round=round_,
            time_ms=max(time_ms, prev_time + 1) + salt,
            prev_hash=head.hash if head else GENESIS_HASH,
            tx_root=merkle_root([]),
            state_root=counter_root(height),
            receipt_root=ZERO_HASH,
            producer=self.key.public_key,
            producer_set_hash=self.vs.hash,
            last_commit=self.commits[-1] if self.commits else None,
        )
        return Block(header, ())

    def validate(self, block: Block) -> bool:
        self.validate_calls += 1
        try:
            validate_header(
                block.header,
                chain_id=CHAIN_ID,
                prev=self._head(),
                genesis_hash=GENESIS_HASH,
                genesis_time_ms=GENESIS_TIME_MS,
                validators=self.vs,
            )
        except InvalidBlock:
            return False
        # The "execution": the counter advances by one per block.
        return block.header.state_root == counter_root(block.header.height) and not block.txs

    def commit(self, block: Block, commit: Commit) -> None:
        assert block.header.height == self.height() + 1, "commit out of order"
        verify_commit(commit, CHAIN_ID, block.header.height, block.hash, self.vs)
        self.blocks.append(block)
        self.commits.append(commit)
        self.ledger.record(self.index, block)

    def committed(self, height: int) -> tuple[Block, Commit] | None:
        if 1 <= height <= len(self.blocks):
            return self.blocks[height - 1], self.commits[height - 1]
        return None

    def note_late_precommit(self, vote: Vote) -> None:
        """Certificates here hold what the engine gathered by the commit."""


def counter_root(height: int) -> bytes:
    return hash_bytes(Domain.STATE_VALUE, height.to_bytes(8, "big"))


@dataclass
class NetParams:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_min_ms: int = 5
    delay_max_ms: int = 40


class Network:
    def __init__(self, sched: Scheduler, rng: random.Random, params: NetParams) -> None:
        self.sched = sched
        self.rng = rng
        self.params = params
        self.nodes: list[SimNode] = []
        # Node index -> group; nodes in different groups cannot talk. None: fully connected.
        self.groups: dict[int, int] | None = None
        self.sent = 0

    def partition(self, groups: list[set[int]]) -> None:
        self.groups = {n: g for g, members in enumerate(groups) for n in members}

    def heal(self) -> None:
        self.groups = None

    def send(self, src: int, dst: int, msg: Message) -> None:
        self.sent += 1
        if self.groups is not None and self.groups.get(src) != self.groups.get(dst):
            return
        p = self.params
        if self.rng.random() < p.drop:
            return
        data = ConsensusMessage.wrap(msg).encode()
        copies = 2 if self.rng.random() < p.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(p.delay_min_ms, p.delay_max_ms)
            self.sched.call_at(
                self.sched.now + delay, lambda d=data: self.nodes[dst].receive(src, d)
            )


class SimTransport:
    def __init__(self, node: SimNode) -> None:
        self.node = node

    def broadcast(self, msg: Message) -> None:
        for other in self.node.net.nodes:
            if other.index != self.node.index:
                self.node.net.send(self.node.index, other.index, msg)

    def send(self, peer: int, msg: Message) -> None:
        self.node.net.send(self.node.index, peer, msg)


class EquivocatingTransport(SimTransport):
    """A Byzantine proposer: a second, different proposal goes to half of the peers.

    (Conflicting votes come from ``EquivocatingVotes`` wrapped around it.)
    """

    def broadcast(self, msg: Message) -> None:
        if not isinstance(msg, Proposal) or msg.pol_round is not None:
            super().broadcast(msg)
            return
        node = self.node
        assert node.privval is not None
        alt_block = node.app.propose(
            msg.height, msg.round, msg.block.header.time_ms, salt=1 + msg.round
        )
        alt = sign_proposal(node.key, CHAIN_ID, msg.height, msg.round, None, alt_block)
        others = [n.index for n in node.net.nodes if n.index != node.index]
        for i, peer in enumerate(others):
            node.net.send(node.index, peer, msg if i % 2 == 0 else alt)


class NodeClock:
    """One incarnation's view of the virtual clock; timers die with the incarnation."""

    def __init__(self, node: SimNode, incarnation: int) -> None:
        self.node = node
        self.incarnation = incarnation

    def now(self) -> int:
        return self.node.sched.now

    def time_ms(self) -> int:
        return GENESIS_TIME_MS + self.node.sched.now

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
    app: SimApp
    byzantine: bool = False
    alive: bool = False
    incarnation: int = 0
    engine: ConsensusEngine | None = None
    privval: PrivValidator | None = None
    evidence: list[DuplicateVoteEvidence] = field(default_factory=list)
    restarts: int = 0

    def start(self) -> None:
        """First boot (at a slightly different time per node, as real processes)."""
        if not self.alive and self.incarnation == 0:
            self.boot()

    def boot(self) -> None:
        self.incarnation += 1
        self.alive = True
        self.privval = PrivValidator(self.key, CHAIN_ID, self.home)
        transport: Transport = SimTransport(self)
        if self.byzantine:
            transport = EquivocatingVotes(EquivocatingTransport(self), self.key, CHAIN_ID)
        self.engine = ConsensusEngine(
            chain_id=CHAIN_ID,
            app=self.app,
            transport=transport,
            clock=NodeClock(self, self.incarnation),
            privval=self.privval,
            wal=WAL(self.home, CHAIN_ID),
            config=SIM_CONFIG,
            on_evidence=self.evidence.append,
        )
        self.engine.start()

    def crash(self, power_loss: bool = False) -> None:
        # Everything in memory is lost; the app's blocks (its "database"), the privval
        # file and the synced part of the WAL survive, as they would on disk. A power
        # loss also drops what was written to the WAL but not yet fsynced.
        if not self.alive:
            return
        wal = self.engine.wal if self.engine is not None else None
        if wal is not None:
            wal.close()
            if power_loss:
                with open(wal.path, "r+b") as f:
                    f.truncate(wal.synced_size)
        self.alive = False
        self.engine = None
        self.privval = None

    def restart(self) -> None:
        # Restart only what crashed; a node not started yet boots on its own schedule.
        if self.alive or self.incarnation == 0:
            return
        self.restarts += 1
        self.boot()

    def receive(self, src: int, data: bytes) -> None:
        if not self.alive or self.engine is None:
            return
        msg = ConsensusMessage.decode(data).unwrap()
        self.engine.deliver(msg, src)


@dataclass
class Scenario:
    """A seeded fault schedule. Faults happen in [0, heal_at); afterwards all is well."""

    n: int
    net: NetParams
    heal_at_ms: int = 0
    partitions: int = 0
    crashes: int = 0
    # Allow crashing more than f nodes at once (the chain must halt, not fork).
    crash_beyond_f: bool = False
    byzantine: int = 0
    # Blocks every node must reach after healing, beyond the highest height at heal time.
    extra_heights: int = 5
    min_height: int = 5
    liveness_bound_ms: int = 60_000


@dataclass
class SimResult:
    seed: int
    heights: list[int]
    heal_height: int
    target: int
    finished_ms: int
    heal_at_ms: int
    messages: int
    evidence: list[list[DuplicateVoteEvidence]]
    restarts: int
    max_round: int
    validators: ValidatorSet


def run(seed: int, sc: Scenario, tmp_path: Path) -> SimResult:
    rng = random.Random(seed)
    sched = Scheduler()
    net = Network(sched, rng, sc.net)
    ledger = Ledger()
    keys = [PrivateKey(hash_bytes(Domain.ADDRESS, f"sim-{seed}-{i}".encode())) for i in range(sc.n)]
    vs = ValidatorSet.of(k.public_key for k in keys)
    byzantine = set(rng.sample(range(sc.n), sc.byzantine))
    nodes = [
        SimNode(
            index=i,
            key=k,
            home=tmp_path / f"seed{seed}" / f"node{i}",
            sched=sched,
            net=net,
            app=SimApp(i, k, vs, sched, ledger),
            byzantine=i in byzantine,
        )
        for i, k in enumerate(keys)
    ]
    net.nodes = nodes
    max_round = [0]

    def watch_rounds() -> None:
        for node in nodes:
            if node.engine is not None:
                max_round[0] = max(max_round[0], node.engine.round)
        sched.call_at(sched.now + 100, watch_rounds)

    # Start times differ a little, as real processes do.
    for node in nodes:
        sched.call_at(rng.randint(0, 50), node.start)
    sched.call_at(0, watch_rounds)
    _plan_faults(sc, rng, sched, net, nodes)

    sched.run(sc.heal_at_ms)
    # Everyone is back and connected from here on.
    net.heal()
    for node in nodes:
        if not node.alive:
            node.restart()
    heal_height = max(node.app.height() for node in nodes)
    target = max(heal_height + sc.extra_heights, sc.min_height)
    deadline = sc.heal_at_ms + sc.liveness_bound_ms

    def done() -> bool:
        return all(node.app.height() >= target for node in nodes)

    sched.run(deadline, done)
    heights = [node.app.height() for node in nodes]
    result = SimResult(
        seed=seed,
        heights=heights,
        heal_height=heal_height,
        target=target,
        finished_ms=sched.now,
        heal_at_ms=sc.heal_at_ms,
        messages=net.sent,
        evidence=[node.evidence for node in nodes],
        restarts=sum(node.restarts for node in nodes),
        max_round=max_round[0],
        validators=vs,
    )
    # LIVENESS: after healing, every node reaches the target within the bound.
    assert done(), (
        f"seed {seed}: liveness: heights {heights} at {sched.now} ms, "
        f"target {target} (healed at {sc.heal_at_ms} ms with height {heal_height})"
    )
    _check_chains(nodes, vs)
    return result


def _plan_faults(
    sc: Scenario, rng: random.Random, sched: Scheduler, net: Network, nodes: list[SimNode]
) -> None:
    n = sc.n
    f = (n - 1) // 3
    window = sc.heal_at_ms
    for _ in range(sc.partitions):
        start = rng.randint(0, max(0, window - 1))
        end = rng.randint(start, window)
        members = list(range(n))
        rng.shuffle(members)
        cut = rng.randint(1, n - 1)
        groups = [set(members[:cut]), set(members[cut:])]
        sched.call_at(start, lambda g=groups: net.partition(g))
        sched.call_at(end, net.heal)
    if sc.crashes:
        limit = n if sc.crash_beyond_f else f
        victims = rng.sample(range(n), min(limit, sc.crashes))
        for v in victims:
            # Crash and restart once (or twice) inside the fault window.
            t = rng.randint(100, max(100, window // 2))
            for _ in range(rng.randint(1, 2)):
                down = rng.randint(100, max(101, window // 4))
                power_loss = rng.random() < 0.5
                sched.call_at(t, lambda v=v, p=power_loss: nodes[v].crash(p))
                if t + down < window:
                    sched.call_at(t + down, nodes[v].restart)
                t = min(window, t + down + rng.randint(100, 1000))


def _check_chains(nodes: list[SimNode], vs: ValidatorSet) -> None:
    """Every node's chain links up and carries verifying certificates."""
    for node in nodes:
        prev: BlockHeader | None = None
        for block, commit in zip(node.app.blocks, node.app.commits, strict=True):
            validate_header(
                block.header,
                chain_id=CHAIN_ID,
                prev=prev,
                genesis_hash=GENESIS_HASH,
                genesis_time_ms=GENESIS_TIME_MS,
                validators=vs,
            )
            verify_commit(commit, CHAIN_ID, block.header.height, block.hash, vs)
            prev = block.header
