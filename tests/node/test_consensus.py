"""The consensus service between the engine's thread and the node's loop: peers that send
invalid data are dropped, double signs become evidence transactions, a halted engine is
reported to the node once (however it halted) and takes no more input.

A real chain on LevelDB, the engine on its own thread as in the node; p2p, the mempool
and the node's callbacks are played by recorders on the test's loop. Four producers,
this node one of them: alone it decides nothing, so every height is the test's doing.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from consensus import BFTConfig, ConsensusMessage, PrivValidator, make_commit
from consensus.evidence import SubmitEvidence
from consensus.messages import FinalizedBlock, SyncRequest
from core import StorageError, Vote, VoteType
from node.chain import Chain
from node.consensus import ConsensusSeams, ConsensusService, LoopLink, MainLoopTxSource
from node.metrics import NodeMetrics
from node.service import build_registry
from p2p import Encoded
from storage import ChainStore
from storage.db import BLOCK, encode_height
from tests.consensus.byzantine import conflicting_vote
from tests.consensus.staking_helpers import CHAIN, KEYS, PARAMS, T0, make_genesis
from tests.node.conftest import until
from tests.storage.storage_chain_fixtures import raw_write

GENESIS = make_genesis(validators=4, params=PARAMS.replace(max_producers=4))
ME, OTHER = KEYS[0], KEYS[1]
PRODUCERS = KEYS[:4]
BY_PUB = {k.public_key: k for k in PRODUCERS}
PEER = b"\x07" * 32


class Peers:
    """``PeerLink`` recording what the engine sent and whom it dropped."""

    def __init__(self) -> None:
        self.broadcasts: list[ConsensusMessage] = []
        self.sent: list[tuple[bytes, ConsensusMessage]] = []
        self.dropped: list[tuple[bytes, str]] = []

    def broadcast(self, msg: ConsensusMessage) -> None:
        self.broadcasts.append(msg)

    def send(self, peer: bytes, msg: ConsensusMessage) -> None:
        self.sent.append((peer, msg))

    def drop_peer(self, peer: bytes, reason: str) -> None:
        self.dropped.append((peer, reason))


class NoTxs:
    def select(self, max_txs: int, max_bytes: int) -> list:
        return []

    def get(self, tx_hash: bytes) -> None:
        return None

    def reject(self, tx_hashes: list[bytes]) -> None:
        pass


class Node:
    """What the service reports to: halts, submitted transactions, committed heights."""

    def __init__(self) -> None:
        self.halts: list[BaseException] = []
        self.submitted: list[tuple[str, bytes]] = []
        self.committed: list[int] = []
        self.peers = Peers()
        self.metrics = NodeMetrics()


def service(
    tmp_path: Path,
    node: Node,
    *,
    seams: ConsensusSeams | None = None,
    store: ChainStore | None = None,
) -> ConsensusService:
    chain = Chain(store or ChainStore(tmp_path / "db"), GENESIS, build_registry())
    return ConsensusService(
        chain,
        BFTConfig(),
        PrivValidator(ME, CHAIN, tmp_path / "privval"),
        key=ME,
        wal_dir=tmp_path / "wal",
        build_budget_ms=0,
        main=LoopLink(asyncio.get_running_loop()),
        txs=NoTxs(),
        peers=node.peers,
        committed=lambda executed, _commit, _s: node.committed.append(executed.block.header.height),
        submit_tx=lambda tx_type, payload: node.submitted.append((tx_type, payload)),
        metrics=node.metrics,
        seams=seams,
        halted=node.halts.append,
    )


def finalized(tmp_path: Path, height: int, salt: int = 0) -> FinalizedBlock:
    """Blocks 1..``height`` built on another store, certified by all three producers;
    the last one with its certificate (``salt`` moves its time: another block)."""
    chain = Chain(ChainStore(tmp_path / f"other-{height}-{salt}"), GENESIS, build_registry())
    result = None
    for h in range(1, height + 1):
        proposer = BY_PUB[chain.validators_for(h).proposer(h, 0)]
        time_ms = T0 + h * 1_000 + (salt if h == height else 0)
        executed = chain.build([], proposer, time_ms)
        commit = make_commit(PRODUCERS, CHAIN, h, 0, executed.block.hash)
        chain.commit(executed, commit)
        result = FinalizedBlock(executed.block, commit, latest=height + 3)
    assert result is not None
    return result


def forged(v: Vote) -> Vote:
    return Vote(v.type, v.height, v.round, v.block_hash, v.validator, bytes(64))


def votes_received(node: Node, kind: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "liveledger_votes_received_total", {"type": kind}
    )
    return value or 0.0


async def test_bad_peers_are_dropped_double_signs_submitted_and_a_halt_reported_once(tmp_path):
    node = Node()
    consensus = service(tmp_path, node)
    consensus.start()
    try:
        # A vote whose signature fails: its sender is dropped by p2p, on the main loop.
        good = Vote.create(OTHER, CHAIN, VoteType.PREVOTE, 1, 0, b"")
        await consensus.deliver(forged(good), PEER)
        await until(lambda: node.peers.dropped)
        assert node.peers.dropped[0][0] == PEER and "vote 1/0" in node.peers.dropped[0][1]

        # A producer's two prevotes at one step: evidence, held until height 1 commits
        # (the chain refuses evidence of the height being decided).
        await consensus.deliver(good, PEER)
        await consensus.deliver(conflicting_vote(OTHER, CHAIN, good), PEER)
        await until(lambda: votes_received(node, "prevote") == 3)  # the forged one too
        assert node.submitted == []
        first = finalized(tmp_path, 1)
        await consensus.deliver(first, PEER)
        await until(lambda: node.submitted)
        [(tx_type, payload)] = node.submitted
        evidence = SubmitEvidence.decode(payload)
        assert tx_type == "submit_evidence"
        assert {evidence.vote_a, evidence.vote_b} == {good, conflicting_vote(OTHER, CHAIN, good)}
        assert node.committed == [1]
        # The peer is further ahead: it is asked for the next height, and only it.
        await until(lambda: node.peers.sent)
        assert node.peers.sent[0] == (PEER, ConsensusMessage.wrap(SyncRequest(2, b"")))

        # Height 2: +2/3 precommit a block (not held yet), then a peer's certificate
        # for another block at that height: more than 1/3 signed both, the engine halts.
        decided = finalized(tmp_path, 2)
        for key in PRODUCERS[1:]:
            precommit = Vote.create(key, CHAIN, VoteType.PRECOMMIT, 2, 0, decided.block.hash)
            await consensus.deliver(precommit, PEER)
        await until(lambda: votes_received(node, "precommit") == 3)
        other = finalized(tmp_path, 2, salt=1)
        assert other.block.hash != decided.block.hash
        await consensus.deliver(other, PEER)
        await until(lambda: node.halts)
        assert "certificates for" in str(node.halts[0])
        assert node.committed == [1]
        # A halted engine takes nothing more, and the peer is not held up by it.
        for _ in range(3):
            await asyncio.wait_for(consensus.deliver(decided, PEER), 5)
        await asyncio.sleep(1.2)  # two more rounds of the service's halt check
        assert len(node.halts) == 1 and node.committed == [1]
    finally:
        consensus.stop()
    # Stopped: messages from p2p that still come are let go.
    await asyncio.wait_for(consensus.deliver(good, PEER), 5)


class FailsToStart(ConsensusSeams):
    """The application the engine asks where it is fails (a store that cannot be read)."""

    def application(self, app):
        class Failing:
            def __getattr__(self, name):
                return getattr(app, name)

            def committed(self, height):
                raise StorageError("block store unreadable")

        return Failing()


async def test_an_engine_that_fails_to_start_is_reported_to_the_node(tmp_path):
    # The failure comes before the engine's own loop, which marks a halt for the
    # service's periodic check: it is reported by the start itself.
    node = Node()
    consensus = service(tmp_path, node, seams=FailsToStart())
    consensus.start()
    try:
        await until(lambda: node.halts)
        assert isinstance(node.halts[0], StorageError)
    finally:
        consensus.stop()


class UnwarmableStore(ChainStore):
    def warm_tree(self, start: int) -> int:
        raise StorageError("tree node unreadable")


async def test_a_tree_warm_up_that_cannot_read_ends_and_the_engine_goes_on(tmp_path):
    node = Node()
    consensus = service(tmp_path, node, store=UnwarmableStore(tmp_path / "db"))
    consensus.start()
    try:
        await until(
            lambda: node.metrics.registry.get_sample_value("liveledger_state_tree_loaded") == 1
        )
        await consensus.deliver(finalized(tmp_path, 1), PEER)
        await until(lambda: node.committed == [1])
        assert node.halts == []
    finally:
        consensus.stop()


class Mempool:
    """The mempool's part ``MainLoopTxSource`` reaches, noting the thread of each call."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.dropped: list[tuple[tuple, list[bytes]]] = []
        self.failing = False

    def select(self, max_txs: int, max_bytes: int) -> list[str]:
        self.threads.append(threading.get_ident())
        if self.failing:
            raise RuntimeError("mempool broken")
        return ["tx-a", "tx-b", "tx-c"][:max_txs]

    def get(self, tx_hash: bytes) -> str | None:
        return "tx-a" if tx_hash == b"a" else None

    def on_block_committed(self, included: tuple, rejected: list[bytes]) -> None:
        self.threads.append(threading.get_ident())
        self.dropped.append((included, rejected))


async def test_the_mempool_is_reached_on_its_loop_from_the_consensus_thread():
    loop = asyncio.get_running_loop()
    mempool = Mempool()
    source = MainLoopTxSource(LoopLink(loop), mempool)  # type: ignore[arg-type]  # a stand-in
    # Called from another thread, as the consensus thread does: run on the loop's.
    assert await loop.run_in_executor(None, source.select, 2, 10**6) == ["tx-a", "tx-b"]
    await loop.run_in_executor(None, source.reject, [b"stale"])
    await until(lambda: mempool.dropped)
    assert mempool.dropped == [((), [b"stale"])]
    assert set(mempool.threads) == {threading.get_ident()}
    assert source.get(b"a") == "tx-a" and source.get(b"b") is None
    # A failure on the loop is the caller's (the engine halts on it and it is reported),
    # not lost on the loop while the caller waits for ever.
    mempool.failing = True
    with pytest.raises(RuntimeError, match="mempool broken"):
        await asyncio.wait_for(loop.run_in_executor(None, source.select, 2, 10**6), 10)


def stored_chain(tmp_path: Path, height: int) -> list[FinalizedBlock]:
    """Blocks 1..``height`` in the store the service opens, certified by the producers."""
    chain = Chain(ChainStore(tmp_path / "db"), GENESIS, build_registry())
    stored = []
    for h in range(1, height + 1):
        proposer = BY_PUB[chain.validators_for(h).proposer(h, 0)]
        executed = chain.build([], proposer, T0 + h * 1_000)
        commit = make_commit(PRODUCERS, CHAIN, h, 0, executed.block.hash)
        chain.commit(executed, commit)
        stored.append(FinalizedBlock(executed.block, commit, latest=height))
    chain.store.close()
    return stored


def wire(msg: object) -> bytes:
    """The payload p2p frames for what the service handed it."""
    return msg.payload if isinstance(msg, Encoded) else msg.encode()  # type: ignore[attr-defined]  # a ConsensusMessage


async def test_a_block_is_served_as_stored_in_the_bytes_a_peer_decoded_before(tmp_path):
    # Read and sent as stored, never decoded and encoded again: a peer on older code
    # gets what encoding the decoded block made.
    stored = stored_chain(tmp_path, 3)
    node = Node()
    consensus = service(tmp_path, node)
    consensus.start()
    try:
        await consensus.deliver(SyncRequest(2, b""), PEER)
        await until(lambda: node.peers.sent)
        [(peer, msg)] = node.peers.sent
        assert peer == PEER
        assert wire(msg) == ConsensusMessage.wrap(stored[1]).encode()
        assert node.halts == []
    finally:
        consensus.stop()


async def test_a_damaged_stored_block_is_not_served_and_the_engine_goes_on(tmp_path):
    # A peer asked for a block the store holds damaged: the read raised on the engine's
    # thread, which halted (any member could stop a node with one request). Now
    # nothing is sent for it, and the engine answers others and goes on deciding.
    # Nor is a block sent that is not the one its certificate names (height 3's
    # block under height 2, which decodes): sent as stored, it is checked as stored.
    stored = stored_chain(tmp_path, 3)
    raw_write(
        tmp_path / "db",
        {BLOCK + encode_height(1): b"\xc1", BLOCK + encode_height(2): stored[2].block.encode()},
    )
    node = Node()
    consensus = service(tmp_path, node)
    consensus.start()
    try:
        other, third = b"\x08" * 32, b"\x09" * 32
        await consensus.deliver(SyncRequest(1, b""), PEER)
        await consensus.deliver(SyncRequest(2, b""), third)
        await consensus.deliver(SyncRequest(3, b""), other)
        await until(lambda: node.peers.sent or node.halts)
        await asyncio.sleep(0.2)
        assert node.halts == []
        assert [(peer, wire(msg)) for peer, msg in node.peers.sent] == [
            (other, ConsensusMessage.wrap(stored[2]).encode())
        ]
        # Still deciding: height 4 commits from a peer's certificate.
        nxt = finalized(tmp_path, 4)
        await consensus.deliver(nxt, PEER)
        await until(lambda: node.committed == [4] or node.halts)
        assert node.halts == []
    finally:
        consensus.stop()
