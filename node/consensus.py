"""The node's BFT consensus: the engine on its own thread, wired to chain, mempool and p2p.

The engine is one owner consuming one queue (``consensus.bft``). It runs on a
dedicated thread with its own event loop, so block execution inside
``propose``/``validate``/``commit`` never stalls the HTTP API or p2p, which live
on the main loop. The two loops talk only through ``call_soon_threadsafe``:

- p2p (main loop) delivers proposals and votes into the consensus loop;
- the engine's broadcasts go out through the main loop's p2p;
- a proposal's transactions are drawn from the mempool on the main loop (it is not
  thread-safe), and the mempool hears about each commit on the main loop.

``ConsensusService`` knows the node only through small Protocols: ``MainLoop``
(run on the serving loop), ``TxSource`` (pick transactions), ``PeerLink`` (p2p),
and callbacks for a final block and for the node's own transactions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from consensus import (
    WAL,
    Application,
    BFTConfig,
    Clock,
    ConsensusEngine,
    ConsensusMessage,
    DuplicateVoteEvidence,
    LoopClock,
    PrivValidator,
    Synchrony,
    Transport,
    ValidatorSet,
    WallClock,
)
from consensus.evidence import SubmitEvidence
from consensus.messages import (
    EncodedFinalizedBlock,
    FinalizedBlock,
    Message,
    Proposal,
    encode_message,
)
from core import Block, Commit, CommitSig, Invalid, PrivateKey, StorageError, Vote, VoteType
from core.codec import Wire
from node.chain import Chain, ExecutedBlock
from node.metrics import NodeMetrics
from p2p.limits import ITEM_OBJECT_BYTES
from p2p.messages import Encoded
from vm import VerifiedTx

if TYPE_CHECKING:
    from node.mempool import Mempool

log = logging.getLogger("node.consensus")

EVIDENCE_TX = "submit_evidence"


T = TypeVar("T")

Inbound = Callable[[Message, bytes, int], None]
"""Hands a consensus message from a peer (its node key) to the engine, with the
engine clock's ``time_ms`` when it arrived."""


class ConsensusSeams:
    """Where the engine's surroundings can be wrapped: its transport, application and
    clock, and the path of peers' messages into it.

    Each method gets what the node built and returns what the engine uses; these
    defaults change nothing, and a production node never gets anything else (no
    setting can reach this). Tests subclass it to make a real node misbehave
    (``tests/e2e/byzantine.py``), so the node's code holds no misbehaviour switch.
    Everything returned runs on the consensus thread.
    """

    def transport(self, transport: Transport) -> Transport:
        return transport

    def application(self, app: Application) -> Application:
        return app

    def clock(self, clock: Clock) -> Clock:
        return clock

    def inbound(self, deliver: Inbound) -> Inbound:
        return deliver

    def snapshot_chunk(self, nodes: list[bytes]) -> list[bytes]:
        """The state tree nodes this node serves as one state sync chunk."""
        return nodes


class TxSource(Protocol):
    """Where a proposer's transactions come from, and what it tells them back.

    Called from the consensus thread; the node's adapter (``MainLoopTxSource``) hops
    to the main loop where the mempool lives. The simulation calls a mempool directly.
    """

    def select(self, max_txs: int, max_bytes: int) -> list[VerifiedTx]:
        """Transactions for the next block, in an order that executes (mempool ``select``)."""
        ...

    def get(self, tx_hash: bytes) -> VerifiedTx | None:
        """An already verified transaction by hash, so a proposal's copy is not verified
        again; None when this node does not hold it."""
        ...

    def reject(self, tx_hashes: list[bytes]) -> None:
        """Transactions the builder left out as no longer includable: drop them."""
        ...


class MainLoop(Protocol):
    """The node's serving loop (p2p, HTTP, the mempool), reached from other threads."""

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` soon on the loop; never waits. A closed loop drops it."""
        ...

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop and wait for its result (or its exception)."""
        ...


class LoopLink:
    """``MainLoop`` over an asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def call_soon(self, fn: Callable[[], object]) -> None:
        loop = self._loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(fn)

    def run(self, fn: Callable[[], T]) -> T:
        return run_on(self._loop, fn)


class PeerLink(Protocol):
    """p2p as consensus uses it; called on the main loop."""

    def broadcast(self, msg: Wire) -> object: ...

    def send(self, peer: bytes, msg: Wire | Encoded) -> object: ...

    def drop_peer(self, peer: bytes, reason: str) -> None: ...


BlockCommitted = Callable[[ExecutedBlock, Commit, float], None]
"""Told of every block once it is final and stored: the block as executed, its
certificate and the seconds the store's commit took."""


class ChainApplication:
    """The engine's ``Application``: the node's chain. Runs on the consensus thread.

    It holds only what it needs: the chain, the key it signs blocks with, a
    ``TxSource`` and a ``BlockCommitted`` callback (the node supplies adapters that
    keep the mempool on the main loop), and the proposer's build budget.
    """

    # Executed blocks kept at one height, the newest. Each holds its state changes,
    # receipts and new tree nodes (~14 MB for 10k transfers over a small state, more
    # over a big one), and a height whose rounds keep failing while a quorum is up
    # (proposals that reach the others late or that they all refuse: a clock outage, a
    # link too slow for the blocks, an execution bug being fixed) brings a new block
    # nearly every round: kept all, one hour of it (66-120 rounds) held gigabytes.
    # One round needs one (its proposal); a few leave room for a rival block and the
    # locked one. A block let go that is committed after all is executed again
    # (``commit``), as a block never validated here is.
    MAX_EXECUTED = 4

    def __init__(
        self,
        chain: Chain,
        key: PrivateKey,
        txs: TxSource,
        on_commit: BlockCommitted,
        *,
        build_budget_ms: int = 0,
    ) -> None:
        self.chain = chain
        self.key = key
        self.txs = txs
        self.on_commit = on_commit
        # 0: no budget, every selected transaction is tried.
        self.build_budget_ms = build_budget_ms
        # Blocks executed at this height (own proposals and validated ones), by hash,
        # oldest first, so that commit does not execute again; at most MAX_EXECUTED.
        self._executed: dict[bytes, ExecutedBlock] = {}
        self._executed_height = 0
        # Precommits for the last committed block that arrived after the engine had
        # its quorum (the engine checks them). The next proposal carries them all in
        # its last_commit, so a producer that was merely slower than the quorum is not
        # counted as missing.
        self._late_height = 0
        self._late: dict[bytes, CommitSig] = {}

    def _cache(self, executed: ExecutedBlock) -> None:
        height = executed.block.header.height
        if height != self._executed_height:
            self._executed.clear()
            self._executed_height = height
        executed_blocks = self._executed
        executed_blocks.pop(executed.block.hash, None)
        executed_blocks[executed.block.hash] = executed
        while len(executed_blocks) > self.MAX_EXECUTED:
            del executed_blocks[next(iter(executed_blocks))]

    def height(self) -> int:
        return self.chain.height

    def note_late_precommit(self, vote: Vote) -> None:
        head = self.chain.head
        if head is None or vote.height != head.height:
            return
        if self._late_height != head.height:
            self._late.clear()
            self._late_height = head.height
        self._late[vote.validator] = CommitSig(vote.validator, vote.signature)

    def _last_commit(self) -> Commit | None:
        """The stored certificate of the head, with any precommits that came late."""
        head = self.chain.head
        if head is None:
            return None
        stored = self.chain.store.get_commit(head.height)
        if stored is None or self._late_height != head.height or not self._late:
            return stored
        sigs = {s.validator: s for s in stored.signatures} | self._late
        ordered = tuple(sorted(sigs.values(), key=lambda s: s.validator))
        return Commit(stored.height, stored.round, stored.block_hash, ordered)

    def validators(self, height: int) -> ValidatorSet:
        return self.chain.validators_for(height)

    def synchrony(self, height: int) -> Synchrony:
        params = self.chain.params_for(height)
        return Synchrony(params.time_precision_ms, params.time_message_delay_ms)

    def propose(self, height: int, round_: int, time_ms: int) -> Block:
        started = time.perf_counter()
        params = self.chain.params
        txs = self.txs.select(params.max_block_txs, params.max_block_bytes)
        budget_s = None
        if self.build_budget_ms:
            # The others' timeout_propose is running: waiting for the mempool (on the
            # main loop, busy admitting transactions in a storm) spends the budget too.
            budget_s = max(0.0, self.build_budget_ms / 1000 - (time.perf_counter() - started))
        executed = self.chain.build(
            txs,
            self.key,
            self.chain.next_block_time(time_ms),
            round_,
            self._last_commit(),
            budget_s=budget_s,
        )
        self._cache(executed)
        if executed.result.rejected:
            self.txs.reject([v.hash for v, _ in executed.result.rejected])
        return executed.block

    def validate(self, block: Block) -> bool:
        if block.hash in self._executed:
            return True
        try:
            # Transactions this node already verified are not verified again; the
            # chain hashes each transaction once and asks the mempool by hash. The
            # engine hands over only bodies it matched to their header on entry.
            executed = self.chain.verify(block, self.txs.get, body_matched=True)
        except Invalid as exc:
            log.warning(
                "invalid proposal %d %s: %s",
                block.header.height,
                block.hash.hex(),
                exc,
                extra={"height": block.header.height, "block_hash": block.hash},
            )
            return False
        self._cache(executed)
        return True

    def commit(self, block: Block, commit: Commit) -> None:
        executed = self._executed.get(block.hash)
        if executed is None:
            # A block finalized by others that this node never validated (catch-up).
            executed = self.chain.verify(block)
        started = time.perf_counter()
        self.chain.commit(executed, commit)
        seconds = time.perf_counter() - started
        self._executed.clear()
        self.on_commit(executed, commit, seconds)

    def committed(self, height: int) -> tuple[Block, Commit] | None:
        if height < 1 or height > self.chain.height:
            return None
        block = self.chain.store.get_block(height)
        commit = self.chain.store.get_commit(height)
        if block is None or commit is None:
            return None
        return block, commit

    def committed_encoded(self, height: int) -> tuple[bytes, bytes] | None:
        if height < 1 or height > self.chain.height:
            return None
        return self.chain.store.get_encoded_block(height)


class EvidencePool:
    """Double-sign evidence this node saw, handed to ``submit`` once it can be included.

    The chain refuses evidence whose votes are not below the including block's height
    (``future_evidence``). Evidence of the height being decided is caught while that
    height is still open, and a later round of the same height may include it, where
    it fails for good (a node submits each piece once). So it waits for its height to
    commit; evidence of an older height goes out at once. Runs on the consensus thread.

    What one offender makes this node hold and submit is bounded: up to a third of
    the producers may double-sign at every height, round and step, each piece a
    transaction of this node and (kept for ``REMEMBER_HEIGHTS``) about 0.4 KB of
    memory: 85 of 256 producers at 6 steps a height would have made 5 million
    pieces, 2 GB. The chain slashes and jails an offender for any one piece, so
    ``MAX_PER_OFFENDER`` pieces of one height are taken, and as many (its newest)
    are remembered: the engine reports a piece once, while its height is open.
    """

    # Evidence remembered (so it is submitted once) for this many heights below the
    # last commit. Governance may raise max_evidence_age_blocks past it; that changes
    # nothing here, since the engine reports a piece only while its height is open.
    REMEMBER_HEIGHTS = 10_000
    # Pieces of one offender taken per height, and remembered in all.
    MAX_PER_OFFENDER = 8

    def __init__(self, submit: Callable[[DuplicateVoteEvidence], None]) -> None:
        self._submit = submit
        # Per offender: encoding of each piece remembered -> the height of its votes.
        self._seen: dict[bytes, dict[bytes, int]] = {}
        # Evidence of heights not yet committed, in the order it was caught.
        self._waiting: list[DuplicateVoteEvidence] = []

    def __len__(self) -> int:
        """Pieces remembered."""
        return sum(len(seen) for seen in self._seen.values())

    def add(self, evidence: DuplicateVoteEvidence, committed_height: int) -> None:
        """New evidence, with the height of the last committed block."""
        height = evidence.height
        if height + self.REMEMBER_HEIGHTS < committed_height:
            return
        seen = self._seen.get(evidence.validator, {})
        key = evidence.encode()
        # Seen, or enough of the offender's at this height to slash and jail it.
        if key in seen or sum(h == height for h in seen.values()) >= self.MAX_PER_OFFENDER:
            return
        if len(seen) >= self.MAX_PER_OFFENDER:
            # Its oldest piece, of an earlier height: the engine reports no more of it.
            del seen[min(seen, key=seen.__getitem__)]
        seen[key] = height
        self._seen[evidence.validator] = seen
        if height > committed_height:
            self._waiting.append(evidence)
        else:
            self._submit(evidence)

    def committed(self, height: int) -> None:
        """Block ``height`` is final: evidence up to it can go into the next block."""
        floor = height - self.REMEMBER_HEIGHTS
        for offender in [o for o, seen in self._seen.items() if max(seen.values()) < floor]:
            del self._seen[offender]
        ready = [ev for ev in self._waiting if ev.vote_a.height <= height]
        if ready:
            self._waiting = [ev for ev in self._waiting if ev.vote_a.height > height]
            for ev in ready:
                self._submit(ev)


class MainLoopTxSource:
    """``TxSource`` over the node's mempool, which lives on the main loop: selecting
    waits for the main loop, dropping is queued to it. ``get`` reads the mempool's
    dict from the consensus thread, the one read the mempool allows off its loop."""

    def __init__(self, main: MainLoop, mempool: Mempool) -> None:
        self._main = main
        self._mempool = mempool

    def select(self, max_txs: int, max_bytes: int) -> list[VerifiedTx]:
        mempool = self._mempool
        return self._main.run(lambda: mempool.select(max_txs, max_bytes))

    def get(self, tx_hash: bytes) -> VerifiedTx | None:
        return self._mempool.get(tx_hash)

    def reject(self, tx_hashes: list[bytes]) -> None:
        mempool = self._mempool
        self._main.call_soon(lambda: mempool.on_block_committed((), tx_hashes))


class _P2PTransport:
    """The engine's ``Transport``: hands messages to p2p on the main loop."""

    def __init__(self, main: MainLoop, peers: PeerLink) -> None:
        self._main = main
        self._peers = peers

    def broadcast(self, msg: object) -> None:
        wrapped = ConsensusMessage.wrap(msg)  # type: ignore[arg-type]  # engine sends Messages
        peers = self._peers
        self._main.call_soon(lambda: peers.broadcast(wrapped))

    def send(self, peer: object, msg: object) -> None:
        peers = self._peers
        assert isinstance(peer, bytes)
        if isinstance(msg, EncodedFinalizedBlock):
            # A stored block goes out as its bytes are, joined on the main loop (where
            # another message is encoded): neither thread decodes nor encodes it.
            self._main.call_soon(
                lambda: peers.send(peer, Encoded(ConsensusMessage, encode_message(msg)))
            )
            return
        wrapped = ConsensusMessage.wrap(msg)  # type: ignore[arg-type]  # engine sends Messages
        self._main.call_soon(lambda: peers.send(peer, wrapped))


def _message_bytes(msg: Message) -> int:
    """About what ``msg`` holds in memory until the engine takes it: a block's
    transactions, or a small fixed size for a vote or a request."""
    if isinstance(msg, Proposal | FinalizedBlock):
        # A peer decides how many transactions its bytes make: a block of the most a
        # block may hold, two bytes each, holds some 20 times its size on the wire.
        txs = msg.block.txs
        return 1024 + ITEM_OBJECT_BYTES * len(txs) + sum(map(len, txs))
    return 1024


@dataclass(frozen=True, slots=True)
class _Handed:
    """A peer's message handed to the consensus thread: when it arrived, what it holds
    (``_message_bytes``) and its place among all handed over (``ConsensusService``)."""

    msg: Message
    peer: bytes
    received_ms: int
    size: int
    seq: int


class ConsensusService:
    """Owns the consensus thread, its loop and the engine."""

    # Bytes of one peer's messages handed to the consensus thread and not taken up by
    # it yet, at most (about; ``_message_bytes``): past it the peer is not read from
    # until the thread catches up. While the thread executes a block (seconds under
    # load) a peer's frames would otherwise pile up at its p2p byte rate (a review
    # measured 118 MiB from one peer in 3.5 s). A message bigger than the bound alone
    # still goes through when nothing of its peer is waiting.
    PEER_BACKLOG_BYTES = 32 * 1024 * 1024

    def __init__(
        self,
        chain: Chain,
        config: BFTConfig,
        privval: PrivValidator | None,
        *,
        key: PrivateKey,
        wal_dir: Path,
        build_budget_ms: int,
        main: MainLoop,
        txs: TxSource,
        peers: PeerLink,
        committed: BlockCommitted,
        submit_tx: Callable[[str, bytes], None],
        metrics: NodeMetrics,
        seams: ConsensusSeams | None = None,
        wall: WallClock | None = None,
        halted: Callable[[BaseException], None] | None = None,
    ) -> None:
        """``committed`` (a block is final and stored), ``submit_tx`` (sign and
        submit a transaction of this type and payload with the node key) and
        ``halted`` (the engine stopped on a fault, once) run on the main loop;
        ``txs`` is called from the consensus thread. ``wall`` is the node's wall
        clock (default: the system's)."""
        self.chain = chain
        self.config = config
        self.privval = privval
        self.seams = seams or ConsensusSeams()
        self._node_loop = main
        self._peers = peers
        self._node_committed = committed
        self._submit_tx = submit_tx
        self._halted = halted
        self._halt_reported = False
        self._metrics = metrics
        self._wal_dir = wal_dir
        self._wall = wall if wall is not None else WallClock()
        self.evidence = EvidencePool(self._submit_evidence)
        self.app = ChainApplication(
            chain,
            key,
            txs,
            self._committed,
            build_budget_ms=build_budget_ms,
        )
        self._inbound: Inbound = self.seams.inbound(self._to_engine)
        # Main loop only: bytes of each peer's messages not yet taken up by the
        # consensus thread, and the peer's reader waiting for them to drain.
        self._backlog: dict[bytes, int] = {}
        self._drained: dict[bytes, list[asyncio.Future[None]]] = {}
        # Messages handed to the consensus thread so far, all peers (main loop), and per
        # peer found at fault how many had been when it was (consensus thread): what a
        # peer sent before it is dropped is dropped with it, not checked one by one.
        self._handed = 0
        self._faulted_at: dict[bytes, int] = {}
        # Consensus thread: each peer's messages not yet given to the engine, and the
        # peers with some, in turn: one message each, so a peer's backlog (up to
        # PEER_BACKLOG_BYTES, some 30,000 votes) never stands before another's votes.
        self._queues: dict[bytes, deque[_Handed]] = {}
        self._turns: deque[bytes] = deque()
        self._stopping = False
        self.engine: ConsensusEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="consensus", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        import uvloop

        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._metrics.thread_cpu.track("consensus", threading.get_native_id())
        engine = ConsensusEngine(
            chain_id=self.chain.chain_id,
            app=self.seams.application(self.app),
            transport=self.seams.transport(_P2PTransport(self._node_loop, self._peers)),
            clock=self.seams.clock(LoopClock(loop, self._wall)),
            privval=self.privval,
            # Replayed on restart: restores locks, proofs of lock and peers' votes.
            wal=WAL(self._wal_dir, self.chain.chain_id),
            config=self.config,
            on_evidence=self._on_evidence,
            on_bad_peer=self._on_bad_peer,
        )
        self.engine = engine
        loop.call_soon(self._start_engine)
        loop.call_soon(self._report_round)
        loop.call_soon(self._warm_tree, 1, time.perf_counter())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _start_engine(self) -> None:
        assert self.engine is not None
        try:
            self.engine.start()
        except Exception as exc:
            log.exception("consensus engine failed to start")
            # Some failures come before the engine's own loop marks it halted.
            self._report_halt(exc)

    def _warm_tree(self, start: int, started: float) -> None:
        """Fill the state tree's upper levels after a start (``StateTree.warm``), a
        slice at a time (~60 ms at 1M keys) between the engine's work on this thread,
        the tree's updating thread. Best effort: a node it cannot read is skipped, and
        the block that needs the node reports it; any other storage error stops it."""
        assert self._loop is not None
        try:
            resume = self.chain.store.warm_tree(start)
        except StorageError as exc:
            log.warning("state tree warm-up stopped at slot %d: %s", start, exc)
            # Over, if not whole: what is missing fills as blocks cross it.
            self._metrics.state_tree_loaded.set(1)
            return
        if resume:
            self._loop.call_soon(self._warm_tree, resume, started)
        else:
            log.info("state tree upper levels loaded in %.1f s", time.perf_counter() - started)
            self._metrics.state_tree_loaded.set(1)

    def _report_round(self) -> None:
        """Publish the round in progress twice a second (the engine owns it), and a
        halt of the engine once, whichever input or timer it came from."""
        engine = self.engine
        if engine is not None and self._loop is not None:
            self._metrics.round.set(engine.round)
            if engine.halted is not None:
                self._report_halt(engine.halted)
            self._loop.call_later(0.5, self._report_round)

    def _report_halt(self, fault: BaseException) -> None:
        """Tell the node, once, that the engine will not advance again."""
        report = self._halted
        if report is not None and not self._halt_reported:
            self._halt_reported = True
            self._node_loop.call_soon(lambda: report(fault))

    def stop(self) -> None:
        # Readers waiting for a backlog to drain give up: the thread takes no more.
        # (Called off the main loop: the futures are woken there.)
        self._stopping = True
        self._node_loop.call_soon(self._release_readers)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)

    # --- inputs ----------------------------------------------------------------------

    async def deliver(self, msg: Message, peer: bytes) -> None:
        """From the main loop: a consensus message from ``peer``. Returns once it is
        handed to the consensus thread, which waits while the peer's earlier messages
        not yet taken up hold ``PEER_BACKLOG_BYTES`` (p2p hands a peer's messages one
        at a time, so the peer is not read from meanwhile; others are)."""
        loop = self._loop
        engine = self.engine
        if loop is None or loop.is_closed() or engine is None:
            return
        # Stamped here, as it arrives: the consensus thread may be busy executing a
        # block, and a proposal is judged by its arrival (docs/consensus.md, Block time).
        received_ms = engine.clock.time_ms()
        size = _message_bytes(msg)
        backlog = self._backlog.get(peer, 0)
        while backlog and backlog + size > self.PEER_BACKLOG_BYTES:
            drained = asyncio.get_running_loop().create_future()
            self._drained.setdefault(peer, []).append(drained)
            await drained
            if self._stopping or loop.is_closed():
                return
            backlog = self._backlog.get(peer, 0)
        self._backlog[peer] = backlog + size
        self._handed += 1
        loop.call_soon_threadsafe(
            self._enqueue, _Handed(msg, peer, received_ms, size, self._handed)
        )

    def _enqueue(self, item: _Handed) -> None:
        """Consensus thread: queue a peer's message for its turn (``_next``)."""
        queue = self._queues.get(item.peer)
        if queue is None:
            queue = self._queues[item.peer] = deque()
            self._turns.append(item.peer)
            if len(self._turns) == 1:
                assert self._loop is not None
                self._loop.call_soon(self._next)
        queue.append(item)

    def _next(self) -> None:
        """Consensus thread: give the engine one message of the peer whose turn it is.
        One a callback, so timers still come between messages; a ``_next`` is due
        while some peer has a message waiting."""
        peer = self._turns.popleft()
        queue = self._queues[peer]
        item = queue.popleft()
        if queue:
            self._turns.append(peer)
        else:
            del self._queues[peer]
        if self._turns:
            assert self._loop is not None
            self._loop.call_soon(self._next)
        self._deliver(item)

    def _deliver(self, item: _Handed) -> None:
        msg, peer, size = item.msg, item.peer, item.size
        try:
            engine = self.engine
            if engine is None or engine.halted is not None:
                return
            if item.seq <= self._faulted_at.get(peer, 0):
                # Handed over before its sender's fault was found (it is being dropped):
                # a backlog of forged votes cost a signature check and two warnings each,
                # seconds of this thread for one peer.
                return
            if isinstance(msg, Vote):
                kind = "precommit" if msg.type == VoteType.PRECOMMIT else "prevote"
                self._metrics.votes.labels(type=kind).inc()
            self._inbound(msg, peer, item.received_ms)
        finally:
            self._node_loop.call_soon(lambda: self._taken(peer, size))

    def _taken(self, peer: bytes, size: int) -> None:
        """Main loop: the consensus thread took up ``size`` bytes of ``peer``'s."""
        left = self._backlog.get(peer, 0) - size
        if left > 0:
            self._backlog[peer] = left
        else:
            self._backlog.pop(peer, None)
        self._wake(self._drained.pop(peer, ()))

    def _release_readers(self) -> None:
        """Main loop: every reader waiting for a backlog to drain goes on (stopping)."""
        for waiters in self._drained.values():
            self._wake(waiters)
        self._drained.clear()

    @staticmethod
    def _wake(waiters: Iterable[asyncio.Future[None]]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _to_engine(self, msg: Message, peer: bytes, received_ms: int) -> None:
        engine = self.engine
        if engine is None or engine.halted is not None:
            return
        try:
            engine.deliver(msg, peer, received_ms=received_ms)
        except Exception:
            log.exception(
                "consensus halted while handling a message from %s",
                peer.hex()[:16],
                extra={"peer": peer},
            )

    def _on_bad_peer(self, peer: object, reason: str) -> None:
        log.warning(
            "bad consensus message from %s: %s", getattr(peer, "hex", lambda: peer)(), reason
        )
        if isinstance(peer, bytes):
            # Its messages handed over until now (the main loop's count as it stands)
            # are skipped: they came behind the one at fault, with the same connection.
            self._faulted_at[peer] = self._handed
            peers = self._peers
            self._node_loop.call_soon(lambda: peers.drop_peer(peer, reason))

    def _committed(self, executed: ExecutedBlock, commit: Commit, seconds: float) -> None:
        """A block is final (consensus thread): release the evidence it makes includable;
        the node's bookkeeping (mempool, metrics, feeds) runs on the main loop."""
        self.evidence.committed(executed.block.header.height)
        committed = self._node_committed
        self._node_loop.call_soon(lambda: committed(executed, commit, seconds))

    def _on_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        self.evidence.add(evidence, self.chain.height)

    def _submit_evidence(self, evidence: DuplicateVoteEvidence) -> None:
        """Turn two conflicting votes into a transaction anyone may submit: this node does."""
        a, b = evidence.vote_a, evidence.vote_b
        # vote_a and vote_b are what `liveledger staking submit-evidence` reads from a file.
        log.warning(
            "double sign by %s at height %d: submitting evidence",
            a.validator.hex()[:16],
            a.height,
            extra={
                "height": a.height,
                "round": a.round,
                "validator": a.validator,
                "vote_a": a.encode(),
                "vote_b": b.encode(),
            },
        )
        payload = SubmitEvidence(evidence.vote_a, evidence.vote_b).encode()
        submit = self._submit_tx
        self._node_loop.call_soon(lambda: submit(EVIDENCE_TX, payload))

    # --- views -----------------------------------------------------------------------

    @property
    def round(self) -> int:
        engine = self.engine
        return 0 if engine is None else engine.round


def run_on(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
    """Run ``fn`` on ``loop`` from another thread and wait for its result."""
    future: Future[T] = Future()

    def call() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    loop.call_soon_threadsafe(call)
    return future.result()
