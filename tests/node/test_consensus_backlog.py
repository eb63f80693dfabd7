"""What one peer may make a node hold for its consensus thread: while the thread is busy
(a block executing), a peer's messages wait up to ``PEER_BACKLOG_BYTES`` and then the
peer is not read from; other peers' messages still go through."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from consensus.bft import NIL
from consensus.messages import Message, Proposal
from core import ZERO_HASH, Block, BlockHeader, Vote, VoteType
from core.types import MAX_BLOCK_TXS
from node.consensus import ConsensusSeams, ConsensusService, Inbound
from node.service import Node
from tests.node.conftest import make_home, until

FLOOD = b"\x09" * 32
OTHER = b"\x0a" * 32


class Held(ConsensusSeams):
    """Holds the consensus thread on the flooding peer's first message, as a block taking
    long to execute would, until ``release`` is set."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        # The peer of each message handed to the engine, in order, and the messages.
        self.seen: list[bytes] = []
        self.messages: list[tuple[bytes, Message]] = []

    def inbound(self, deliver: Inbound) -> Inbound:
        def hold(msg: Message, peer: bytes, received_ms: int) -> None:
            if peer == FLOOD and not self.release.is_set():
                self.held.set()
                self.release.wait(60)
            self.seen.append(peer)
            self.messages.append((peer, msg))
            deliver(msg, peer, received_ms)

        return hold


@asynccontextmanager
async def held_node(
    tmp_path, **config: object
) -> AsyncIterator[tuple[Node, ConsensusService, Held]]:
    """A started node (its config overridden by ``config``) whose consensus thread
    ``Held`` can hold; stopped (and let go) after."""
    _, home = make_home(tmp_path, **config)
    seams = Held()
    node = Node.from_home(home, "", seams=seams)
    node.open()
    await node.start()
    try:
        assert node.consensus is not None
        yield node, node.consensus, seams
    finally:
        seams.release.set()
        await node.stop()


def far_proposal(
    node: Node, round_: int, mib: int, txs: tuple[bytes, ...] | None = None
) -> Proposal:
    """A proposal for a height and round far ahead (the engine drops it unread) carrying
    ``mib`` MiB of transactions (or ``txs``)."""
    header = BlockHeader(
        node.genesis.chain_id,
        10**6,
        99,
        1,
        ZERO_HASH,
        ZERO_HASH,
        ZERO_HASH,
        ZERO_HASH,
        b"\x01" * 32,
        ZERO_HASH,
        None,
    )
    block = Block(header, txs if txs is not None else (bytes(mib * 1024 * 1024),))
    return Proposal(10**6, round_, None, block, b"\x02" * 32, bytes(64))


async def test_a_peer_waits_once_its_backlog_is_full_and_others_do_not(tmp_path):
    async with held_node(tmp_path) as (node, consensus, seams):
        per = 4
        fits = ConsensusService.PEER_BACKLOG_BYTES // (per * 1024 * 1024 + 1024)
        await consensus.deliver(far_proposal(node, 0, per), FLOOD)
        while not seams.held.is_set():
            await asyncio.sleep(0.01)
        # What fits in the backlog is handed over at once, though the thread is busy...
        for r in range(1, fits):
            await asyncio.wait_for(consensus.deliver(far_proposal(node, r, per), FLOOD), 5)
        # ...the next waits for the thread to take some up (its peer is not read from)...
        waiting = asyncio.create_task(consensus.deliver(far_proposal(node, fits, per), FLOOD))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        # ...while another peer's message is not held back by it.
        await asyncio.wait_for(consensus.deliver(far_proposal(node, 0, 1), OTHER), 5)
        seams.release.set()
        await asyncio.wait_for(waiting, 30)


async def test_a_peer_waiting_on_its_backlog_is_let_go_when_consensus_stops(tmp_path):
    # The consensus thread is busy and will take nothing more: a stop must not leave
    # the peer's reader waiting for a drain that never comes (the node's shutdown would
    # wait on it).
    async with held_node(tmp_path) as (node, consensus, seams):
        big = ConsensusService.PEER_BACKLOG_BYTES // (1024 * 1024) - 1
        await consensus.deliver(far_proposal(node, 0, big), FLOOD)
        while not seams.held.is_set():
            await asyncio.sleep(0.01)
        # The next one does not fit beside it: its reader waits.
        waiting = asyncio.create_task(consensus.deliver(far_proposal(node, 1, big), FLOOD))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        # stop() joins the consensus thread, still held: off the loop, as the node does.
        stopping = asyncio.get_running_loop().run_in_executor(None, consensus.stop)
        await asyncio.wait_for(waiting, 5)
        seams.release.set()
        await asyncio.wait_for(stopping, 30)


async def test_a_backlog_of_tiny_transactions_is_bounded_by_the_memory_they_hold(tmp_path):
    # A peer that fills far proposals with the most transactions a block may hold, each
    # of two bytes: the decoded objects hold some 20 times their bytes on the wire (an
    # object per transaction). Counted by their bytes alone, a backlog of them held
    # about 20 times PEER_BACKLOG_BYTES in memory (~700 MB for one peer) while the
    # consensus thread was busy.
    txs = tuple(i.to_bytes(3, "big")[1:] for i in range(MAX_BLOCK_TXS))
    held = sys.getsizeof(txs) + sum(sys.getsizeof(tx) for tx in txs)
    async with held_node(tmp_path) as (node, consensus, seams):
        await consensus.deliver(far_proposal(node, 0, 0, txs), FLOOD)
        while not seams.held.is_set():
            await asyncio.sleep(0.01)
        handed = 1
        waiting = None
        for r in range(1, 4 * ConsensusService.PEER_BACKLOG_BYTES // held):
            task = asyncio.create_task(consensus.deliver(far_proposal(node, r, 0, txs), FLOOD))
            done, _ = await asyncio.wait({task}, timeout=0.3)
            if not done:
                waiting = task
                break
            handed += 1
        # The peer was made to wait (it is no longer read from) before what it handed
        # over held more than the bound.
        assert handed * held <= ConsensusService.PEER_BACKLOG_BYTES
        assert waiting is not None
        seams.release.set()
        await asyncio.wait_for(waiting, 30)


async def test_what_a_peer_sent_before_its_fault_was_found_is_not_checked(tmp_path, caplog):
    # A peer's messages handed to the busy consensus thread (up to PEER_BACKLOG_BYTES,
    # some 32,000 votes) were each checked after the first was found forged: a
    # signature check (~0.1 ms) and two warnings apiece, seconds of the thread that
    # decides heights and 60,000 log lines, once per ban. What the peer sent before
    # it was dropped goes with its connection.
    sent = 200
    # A long block interval: the height does not change while the votes wait.
    async with held_node(tmp_path, block_interval_ms=60_000) as (node, consensus, seams):
        await consensus.deliver(far_proposal(node, 0, 0), FLOOD)
        while not seams.held.is_set():
            await asyncio.sleep(0.01)
        engine = consensus.engine
        assert engine is not None
        producer = node.key.public_key
        # A signature, but of another vote: checked in full, and it fails.
        other = Vote.create(node.key, node.genesis.chain_id, VoteType.PREVOTE, 1, 0, NIL)
        forged = Vote(
            VoteType.PREVOTE, engine.height, engine.round, b"\x07" * 32, producer, other.signature
        )
        for _ in range(sent):
            await asyncio.wait_for(consensus.deliver(forged, FLOOD), 5)
        # Peers take turns, one message each: once another peer's as many messages are
        # taken, all but one of the flood's were.
        with caplog.at_level(logging.WARNING, logger="node.consensus"):
            for r in range(sent):
                await asyncio.wait_for(consensus.deliver(far_proposal(node, r, 0), OTHER), 5)
            seams.release.set()
            await until(lambda: seams.seen.count(OTHER) == sent)
        reported = [r for r in caplog.records if "bad consensus message" in r.getMessage()]
        assert len(reported) == 1


async def test_peers_take_turns_on_the_consensus_thread(tmp_path):
    # Messages went to the thread in the order they were handed over, whoever sent
    # them: a peer that queued its whole backlog while a block executed (some 30,000
    # votes of a non-producer, ~15 us each) had every other peer's votes wait behind
    # them, half a second, after every long block.
    async with held_node(tmp_path) as (node, consensus, seams):
        await consensus.deliver(far_proposal(node, 0, 0), FLOOD)
        while not seams.held.is_set():
            await asyncio.sleep(0.01)
        for r in range(1, 100):
            await asyncio.wait_for(consensus.deliver(far_proposal(node, r, 0), FLOOD), 5)
        await consensus.deliver(far_proposal(node, 0, 0), OTHER)
        seams.release.set()
        await until(lambda: len(seams.seen) == 101)
        # The held one, at most one more of the flood's, then the other peer's.
        assert seams.seen.index(OTHER) <= 2


async def test_turns_keep_each_peers_messages_in_the_order_it_sent_them(tmp_path):
    # Turns interleave peers, never one peer's messages: a vote before the proposal it
    # needs, or a block's parts, must reach the engine (and its WAL) as sent.
    third = b"\x0b" * 32
    async with held_node(tmp_path) as (node, consensus, seams):
        await consensus.deliver(far_proposal(node, 0, 0), FLOOD)
        while not seams.held.is_set():
            await asyncio.sleep(0.01)
        sent: dict[bytes, list[int]] = {FLOOD: [0], OTHER: [], third: []}
        for r in range(1, 60):
            peer = (FLOOD, OTHER, FLOOD, third)[r % 4]
            await asyncio.wait_for(consensus.deliver(far_proposal(node, r, 0), peer), 5)
            sent[peer].append(r)
        seams.release.set()
        await until(lambda: len(seams.messages) == 60)
        for peer, rounds in sent.items():
            got = [msg.round for p, msg in seams.messages if p == peer]
            assert got == rounds
