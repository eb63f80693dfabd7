"""Builders for consensus unit tests: keys, a manual clock, a recording transport, a toy app.

The engine under test is one validator ("me"); the tests play the other validators
by signing their proposals and votes directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from consensus import ValidatorSet, validate_header, validate_tx_root, verify_commit
from consensus.bft import BFTConfig, ConsensusEngine, Step, Synchrony
from consensus.messages import (
    ConsensusMessage,
    EncodedFinalizedBlock,
    Message,
    Outgoing,
    Proposal,
    encode_message,
    proposal_signing_body,
)
from consensus.privval import PrivValidator
from consensus.wal import WAL
from core import (
    ZERO_HASH,
    Block,
    BlockHeader,
    Commit,
    CommitSig,
    Domain,
    InvalidBlock,
    PrivateKey,
    SignDomain,
    Vote,
    VoteType,
    hash_bytes,
    merkle_root,
)

CHAIN = "bft-test"
GENESIS_HASH = hash_bytes(Domain.GENESIS, b"bft test genesis")
GENESIS_TIME = 1_000
KEYS = sorted((PrivateKey(bytes([i + 1]) * 32) for i in range(4)), key=lambda k: k.public_key)
VALIDATORS = ValidatorSet.of(k.public_key for k in KEYS)
# Proposer of (h, r) is KEYS[(h + r) % 4]: KEYS[0] ("me") proposes round 3 of height 1.
ME = KEYS[0]
OTHERS = KEYS[1:]
CONFIG = BFTConfig(
    timeout_propose_ms=1000,
    timeout_propose_delta_ms=500,
    timeout_prevote_ms=400,
    timeout_prevote_delta_ms=100,
    timeout_precommit_ms=300,
    timeout_precommit_delta_ms=50,
    timeout_commit_ms=200,
    rebroadcast_ms=0,
    sync_interval_ms=100,
)


def key_of(pub: bytes) -> PrivateKey:
    return next(k for k in KEYS if k.public_key == pub)


def proposer(height: int, round_: int) -> PrivateKey:
    return key_of(VALIDATORS.proposer(height, round_))


@dataclass
class ManualClock:
    """Time moves only when a test says so; records every scheduled delay."""

    now_ms: int = 0
    # How far this node's wall clock is off (a skewed clock; ``time_ms``).
    wall_offset_ms: int = 0
    pending: list[tuple[int, int, Callable[[], None]]] = field(default_factory=list)
    delays: list[int] = field(default_factory=list)
    _seq: int = 0

    def now(self) -> int:
        return self.now_ms

    def time_ms(self) -> int:
        # The wall clock starts at genesis time, as a chain's first blocks do.
        return GENESIS_TIME + self.now_ms + self.wall_offset_ms

    def schedule(self, delay_ms: int, event: Callable[[], None]) -> None:
        self._seq += 1
        self.delays.append(delay_ms)
        self.pending.append((self.now_ms + delay_ms, self._seq, event))

    def advance(self, ms: int) -> None:
        """Move time forward, firing due timers in order."""
        end = self.now_ms + ms
        while True:
            due = sorted(p for p in self.pending if p[0] <= end)
            if not due:
                break
            at, seq, event = due[0]
            self.pending.remove(due[0])
            self.now_ms = at
            event()
        self.now_ms = end


@dataclass
class RecordingTransport:
    sent: list[tuple[object, Message]] = field(default_factory=list)

    def broadcast(self, msg: Message) -> None:
        self.sent.append(("*", msg))

    def send(self, peer: object, msg: Outgoing) -> None:
        # What the peer decodes: a block sent as stored goes through the wire's bytes.
        if isinstance(msg, EncodedFinalizedBlock):
            self.sent.append((peer, ConsensusMessage.decode(encode_message(msg)).unwrap()))
        else:
            self.sent.append((peer, msg))

    def votes(self, vote_type: VoteType, round_: int | None = None) -> list[Vote]:
        return [
            m
            for _, m in self.sent
            if isinstance(m, Vote)
            and m.type == vote_type
            and m.validator == ME.public_key
            and (round_ is None or m.round == round_)
        ]

    def proposals(self) -> list[Proposal]:
        return [m for _, m in self.sent if isinstance(m, Proposal)]


# The chain's clock bounds in these tests (ChainParams' defaults).
SYNCHRONY = Synchrony(precision_ms=500, message_delay_ms=10_000)


class ToyApp:
    """Blocks carry a counter (their height); ``invalid`` lists hashes to reject."""

    def __init__(self, key: PrivateKey = ME) -> None:
        self.key = key
        self.timing = SYNCHRONY
        # Block times of own proposals (the engine's clock reading).
        self.proposed_times: list[int] = []
        self.blocks: list[Block] = []
        self.commits: list[Commit] = []
        self.invalid: set[bytes] = set()
        self.validated: list[bytes] = []
        self.late: list[Vote] = []

    def height(self) -> int:
        return len(self.blocks)

    def validators(self, height: int) -> ValidatorSet:
        return VALIDATORS

    def synchrony(self, height: int) -> Synchrony:
        return self.timing

    def propose(self, height: int, round_: int, time_ms: int) -> Block:
        self.proposed_times.append(time_ms)
        return make_block(self, height, round_, self.key, time_ms=time_ms)

    def validate(self, block: Block) -> bool:
        self.validated.append(block.hash)
        if block.hash in self.invalid:
            return False
        try:
            validate_header(
                block.header,
                chain_id=CHAIN,
                prev=self.blocks[-1].header if self.blocks else None,
                genesis_hash=GENESIS_HASH,
                genesis_time_ms=GENESIS_TIME,
                validators=VALIDATORS,
            )
            # As a node's chain does: the body must be the one the header commits to.
            validate_tx_root(block)
        except InvalidBlock:
            return False
        return True

    def commit(self, block: Block, commit: Commit) -> None:
        verify_commit(commit, CHAIN, block.header.height, block.hash, VALIDATORS)
        self.blocks.append(block)
        self.commits.append(commit)

    def committed(self, height: int) -> tuple[Block, Commit] | None:
        if 1 <= height <= len(self.blocks):
            return self.blocks[height - 1], self.commits[height - 1]
        return None

    def committed_encoded(self, height: int) -> tuple[bytes, bytes] | None:
        found = self.committed(height)
        return None if found is None else (found[0].encode(), found[1].encode())

    def note_late_precommit(self, vote: Vote) -> None:
        self.late.append(vote)

    def certificate(self) -> Commit | None:
        """The head's certificate as the next proposal carries it: the stored one with
        the precommits that came late (as ``node.consensus.ChainApplication``)."""
        if not self.commits:
            return None
        stored = self.commits[-1]
        sigs = {s.validator: s for s in stored.signatures}
        for v in self.late:
            if v.height == stored.height:
                sigs.setdefault(v.validator, CommitSig(v.validator, v.signature))
        ordered = tuple(sigs[k] for k in sorted(sigs))
        return Commit(stored.height, stored.round, stored.block_hash, ordered)


def make_block(
    app: ToyApp,
    height: int,
    round_: int,
    producer: PrivateKey,
    salt: int = 0,
    time_ms: int = 0,
    txs: tuple[bytes, ...] = (),
) -> Block:
    """A block on ``app``'s head, dated ``time_ms`` or just after its parent if later."""
    prev = app.blocks[-1].header if app.blocks else None
    header = BlockHeader(
        chain_id=CHAIN,
        height=height,
        round=round_,
        time_ms=max(time_ms, (prev.time_ms if prev else GENESIS_TIME) + 1) + salt,
        prev_hash=prev.hash if prev else GENESIS_HASH,
        tx_root=merkle_root(txs),
        state_root=hash_bytes(Domain.STATE_VALUE, height.to_bytes(8, "big")),
        receipt_root=ZERO_HASH,
        producer=producer.public_key,
        producer_set_hash=VALIDATORS.hash,
        last_commit=app.certificate(),
    )
    return Block(header, txs)


def sign_proposal(
    key: PrivateKey, height: int, round_: int, block: Block, pol_round: int | None = None
) -> Proposal:
    body = proposal_signing_body(height, round_, pol_round, block.hash)
    sig = key.sign(SignDomain.PROPOSAL, CHAIN, body)
    return Proposal(height, round_, pol_round, block, key.public_key, sig)


def vote(key: PrivateKey, vote_type: VoteType, height: int, round_: int, block_hash: bytes) -> Vote:
    return Vote.create(key, CHAIN, vote_type, height, round_, block_hash)


@dataclass
class Harness:
    engine: ConsensusEngine
    app: ToyApp
    clock: ManualClock
    transport: RecordingTransport
    evidence: list
    bad_peers: list
    missing: list

    def deliver(self, msg: Message, peer: object = "peer") -> None:
        self.engine.deliver(msg, peer)

    def votes_from(
        self,
        keys: list[PrivateKey],
        vote_type: VoteType,
        round_: int,
        block_hash: bytes,
        height: int = 1,
    ) -> None:
        for k in keys:
            self.deliver(vote(k, vote_type, height, round_, block_hash))

    @property
    def step(self) -> Step:
        return self.engine.step


def make_engine(
    tmp_path: Path,
    *,
    app: ToyApp | None = None,
    config: BFTConfig = CONFIG,
    with_wal: bool = False,
    start: bool = True,
) -> Harness:
    app = app or ToyApp()
    clock = ManualClock()
    transport = RecordingTransport()
    evidence: list = []
    bad: list = []
    missing: list = []
    engine = ConsensusEngine(
        chain_id=CHAIN,
        app=app,
        transport=transport,
        clock=clock,
        privval=PrivValidator(ME, CHAIN, tmp_path / "privval"),
        wal=WAL(tmp_path / "wal", CHAIN) if with_wal else None,
        config=config,
        on_evidence=evidence.append,
        on_bad_peer=lambda peer, reason: bad.append((peer, reason)),
        on_missing_block=lambda h, bh: missing.append((h, bh)),
    )
    if start:
        engine.start()
    return Harness(engine, app, clock, transport, evidence, bad, missing)
