"""State sync between stores in this process: real chains on real LevelDB, real certificates,
peers played by ``SnapshotServer``s (honest) or by hand (hostile)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from consensus import ValidatorSet, make_commit
from core import Block, StorageError, Wire
from genesis import Genesis
from node import epoch_records, statesync
from node.chain import Chain
from node.config import PruningConfig
from node.epoch_records import keep_epoch_record, verify_epoch_record
from node.service import build_registry
from node.statesync import ReadBudget, SnapshotServer, StateSyncer, prune
from node.sync_rates import PeerRates
from p2p import (
    ChunkRequest,
    ChunkResponse,
    EpochsRequest,
    EpochsResponse,
    SnapshotOffer,
    SnapshotRequest,
)
from storage import TREE_DIR, ChainStore, Pruned
from storage.chain_store import sync_root
from storage.db import BLOCK, TREE_NODE, Database, WriteBatch, encode_height
from storage.snapshot import node_children
from tests.consensus.staking_helpers import KEYS, PARAMS, make_genesis
from tests.storage.storage_chain_fixtures import raw_write

EPOCH = 4
INTERVAL = 8
GENESIS = make_genesis(validators=3, params=dataclasses.replace(PARAMS, epoch_length=EPOCH))
BY_PUB = {k.public_key: k for k in KEYS}

Answer = Callable[[Wire], Awaitable[Wire | None]]


def grow(chain: Chain, height: int) -> None:
    """Commit empty blocks, each certified by all its producers, up to ``height``."""
    g = chain.genesis
    for h in range(chain.height + 1, height + 1):
        producers = chain.validators_for(h)
        proposer = BY_PUB[producers.proposer(h, 0)]
        executed = chain.build([], proposer, g.genesis_time_ms + h * 1000)
        keys = [BY_PUB[k] for k in producers.keys]
        chain.commit(executed, make_commit(keys, g.chain_id, h, 0, executed.block.hash))


def make_chain(path: Path, height: int) -> Chain:
    chain = Chain(ChainStore(path), GENESIS, build_registry())
    grow(chain, height)
    return chain


def server(store: ChainStore, chunk_bytes: int = 512) -> SnapshotServer:
    # Small chunks: the state takes many of them, more than a peer's read budget allows
    # a second (its own tests are below).
    return SnapshotServer(
        lambda: store,
        GENESIS,
        INTERVAL,
        chunk_bytes=chunk_bytes,
        budget=ReadBudget(1e6, 1e6),
        node_budget=ReadBudget(1e6, 1e6),
    )


class Net:
    """``SyncPeers`` over answerers in this process: each request is answered on the loop,
    as p2p hands a peer's message to the node; a dropped peer is gone."""

    def __init__(self, answerers: dict[bytes, Answer]) -> None:
        self.answerers = answerers
        self.dropped: dict[bytes, str] = {}
        # Requests sent, by (peer, request type), and answers the syncer took, by peer.
        self.asked: Counter[tuple[bytes, type[Wire]]] = Counter()
        self.answered: Counter[tuple[bytes, type[Wire]]] = Counter()
        self.syncer: StateSyncer | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def peers(self) -> list[bytes]:
        return [p for p in self.answerers if p not in self.dropped]

    def send(self, peer: bytes, msg: Wire) -> bool:
        if peer in self.dropped:
            return False
        self.asked[peer, type(msg)] += 1
        task = asyncio.get_running_loop().create_task(self._answer(peer, msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _answer(self, peer: bytes, msg: Wire) -> None:
        answer = await self.answerers[peer](msg)
        if answer is not None and self.syncer is not None and peer not in self.dropped:
            if self.syncer.deliver(peer, answer):
                self.answered[peer, type(answer)] += 1

    def drop_peer(self, peer: bytes, reason: str, *, ban: bool = True) -> None:
        self.dropped[peer] = reason

    async def sync(
        self,
        store: ChainStore,
        timeout: float = 30.0,
        request_timeout_s: float = 1.0,
        trust: Block | None = None,
    ) -> int:
        """Sync ``store`` from these peers (to the ``trust`` block, if given)."""
        trusted = {} if trust is None else {"trust_height": trust.header.height}
        if trust is not None:
            trusted["trust_hash"] = trust.hash
        self.syncer = StateSyncer(
            store, GENESIS, self, request_timeout_s=request_timeout_s, **trusted
        )
        try:
            return await asyncio.wait_for(self.syncer.run(), timeout)
        finally:
            for task in list(self.tasks):
                task.cancel()


HONEST = b"\x01" * 32
HOSTILE = b"\x02" * 32


async def test_a_store_syncs_from_a_peer_and_holds_its_state(tmp_path):
    source = make_chain(tmp_path / "a", 40)
    net = Net({HONEST: server(source.store).answer})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest) == 40
    assert dest.head_root == source.store.head_root
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
    assert net.dropped == {}


def far_offer(source: Chain, *, answers_epochs: bool) -> Answer:
    """A hostile peer offering a block far above ``source``'s chain (its certificate
    cannot be checked: no peer holds the epoch records up to there). Asked for epoch
    records, it answers none, or (``answers_epochs`` False) nothing at all."""
    real = source.store.get_block(40)
    commit = source.store.get_commit(40)
    assert real is not None and commit is not None
    fake = Block(dataclasses.replace(real.header, height=10_000), ())

    async def hostile(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(10_000, fake.encode(), commit.encode())
        if isinstance(msg, EpochsRequest) and answers_epochs:
            return EpochsResponse(msg.first, ())
        return None

    return hostile


async def test_an_offer_above_every_peer_is_refused_and_honest_peers_are_not(tmp_path):
    # The honest peer, asked for the hostile offer's epoch records, holds none past its
    # head: that is no fault of its own.
    source = make_chain(tmp_path / "a", 40)
    hostile = far_offer(source, answers_epochs=True)
    net = Net({HOSTILE: hostile, HONEST: server(source.store).answer})
    assert await net.sync(ChainStore(tmp_path / "b")) == 40
    assert HONEST not in net.dropped
    assert HOSTILE in net.dropped


async def test_each_epoch_record_is_verified_once_however_many_offers_are_checked(
    tmp_path, monkeypatch
):
    # A hostile offer far above the chain makes the joiner walk (and store) the records
    # the honest peer holds (the hostile one, asked first, never answers); the honest
    # offer checked next walked them all again, on the event loop (a month of records:
    # a minute of it, per hostile offer).
    source = make_chain(tmp_path / "a", 40)
    hostile = far_offer(source, answers_epochs=False)
    verified: Counter[int] = Counter()
    real_verify = epoch_records.verify_epoch_record

    def counting(
        genesis: Genesis, epoch: int, raw: bytes, validators: ValidatorSet
    ) -> ValidatorSet:
        verified[epoch] += 1
        return real_verify(genesis, epoch, raw, validators)

    monkeypatch.setattr(epoch_records, "verify_epoch_record", counting)
    net = Net({HOSTILE: hostile, HONEST: server(source.store).answer})
    assert await net.sync(ChainStore(tmp_path / "b")) == 40
    assert HOSTILE in net.dropped
    assert verified and set(verified.values()) == {1}


async def test_a_peer_is_not_asked_again_for_records_it_answered_it_lacks(tmp_path):
    # The hostile peer, asked first, holds its page of records out and never answers.
    # The honest peer hedged it and answered all it holds (up to its head); as each of
    # its answers came, it was asked for that page again (a page held by a peer it
    # outpaces, with records the sync lacked, though not any it holds): hundreds of
    # requests, each a read on its side, until the silent peer's timeout.
    source = make_chain(tmp_path / "a", 40)
    hostile = far_offer(source, answers_epochs=False)
    net = Net({HOSTILE: hostile, HONEST: server(source.store).answer})
    assert await net.sync(ChainStore(tmp_path / "b")) == 40
    assert HOSTILE in net.dropped and HONEST not in net.dropped
    # A few: its page, then a retry of what nobody held (3 here; hundreds before).
    assert net.asked[HONEST, EpochsRequest] <= 10


async def test_a_peer_flooding_answers_nobody_asked_for_cannot_stall_the_sync(tmp_path):
    # Once asked for a chunk, the hostile peer never answers it but sends answers to
    # other requests without pause: the sync gives its request to the honest peer.
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    flooding: list[asyncio.Task[None]] = []

    async def flood(net: Net, height: int) -> None:
        while True:
            assert net.syncer is not None
            net.syncer.deliver(HOSTILE, ChunkResponse(height, b"\x07" * 32, 0, bytes(32), ()))
            await asyncio.sleep(0.002)

    async def hostile(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(0, b"", b"")
        if isinstance(msg, ChunkRequest) and not flooding:
            flooding.append(asyncio.get_running_loop().create_task(flood(net, msg.height)))
        return None

    net = Net({HONEST: honest.answer, HOSTILE: hostile})
    try:
        assert await net.sync(ChainStore(tmp_path / "b"), timeout=20) == 40
    finally:
        for task in flooding:
            task.cancel()
    assert flooding and HONEST not in net.dropped


async def test_versions_a_server_makes_up_cannot_stall_the_sync(tmp_path):
    # The versions in a node's encoding (where the server keeps its children) are
    # covered by no hash. A hostile peer answers one request with its children's
    # versions made up, then serves nothing: the joiner keeps nodes at its own version
    # and asks the honest peer for the rest by place and hash, never by those versions.
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    made_up: list[bytes] = []
    sent = asyncio.Event()

    async def hostile(msg: Wire) -> Wire | None:
        # It offers nothing and holds no records, so it is never rated: untried, it is
        # asked first for the root.
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(0, b"", b"")
        if isinstance(msg, EpochsRequest):
            return EpochsResponse(msg.first, ())
        answer = await honest.answer(msg)
        if not isinstance(msg, ChunkRequest) or not isinstance(answer, ChunkResponse):
            return answer
        nodes: tuple[bytes, ...] = ()
        if not made_up and answer.nodes and answer.nodes[0][1] == 0:  # an internal node
            first = answer.nodes[0]
            made_up.append(first[:4] + b"\x7f" * 8 + first[12:46] + bytes(8) + first[54:])
            nodes = (made_up[0],)
        sent.set()
        return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, nodes)

    async def second(msg: Wire) -> Wire | None:
        # The honest peer asks again what the unrated one holds (hedging): answered first,
        # its root was kept and the made-up chunk was not (it sometimes was never even
        # made). The hostile one answers first.
        if isinstance(msg, ChunkRequest):
            await sent.wait()
        return await honest.answer(msg)

    net = Net({HOSTILE: hostile, HONEST: second})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=20) == 40
    assert made_up
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
    assert HONEST not in net.dropped


async def test_answers_nobody_asked_for_are_not_kept(tmp_path):
    source = make_chain(tmp_path / "a", 8)
    syncer = StateSyncer(ChainStore(tmp_path / "b"), GENESIS, Net({}))
    unasked = ChunkResponse(8, source.store.head_root, 0, bytes(32), ())
    assert all(syncer.deliver(HOSTILE, unasked) is False for _ in range(100))


async def test_a_peer_owed_many_answers_cannot_have_them_all_held_at_once(tmp_path, monkeypatch):
    # Answers are queued only if owed, one per request; but a request given up stays
    # owed: a peer silent on offers while the joiner waits for a usable one (no snapshot
    # yet) was owed one more each round (every request timeout and a second), and could
    # then send them all at once, up to a 16 MiB frame each, into a queue the sync does
    # not read while it walks or installs its tree (a minute or more at a big state).
    # Now a peer has at most ``MAX_QUEUED_ANSWERS`` answers held unread.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    real_sleep = asyncio.sleep

    async def brief(delay: float) -> None:
        await real_sleep(min(delay, 0.01))

    monkeypatch.setattr("node.statesync.asyncio.sleep", brief)
    young = make_chain(tmp_path / "a", INTERVAL - 1)  # no snapshot to offer yet

    async def silent(msg: Wire) -> Wire | None:
        return None

    net = Net({HONEST: server(young.store).answer, HOSTILE: silent})
    rounds = 3 * statesync.MAX_QUEUED_ANSWERS
    syncing = asyncio.get_running_loop().create_task(
        net.sync(ChainStore(tmp_path / "b"), timeout=30, request_timeout_s=0.02)
    )
    try:
        while net.asked[HOSTILE, SnapshotRequest] < rounds:
            await real_sleep(0.01)
        assert net.syncer is not None
        offer = SnapshotOffer(INTERVAL, b"\x00" * 1024, b"")
        held = sum(net.syncer.deliver(HOSTILE, offer) for _ in range(rounds))
        assert held == statesync.MAX_QUEUED_ANSWERS
    finally:
        syncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncing


class PrunedBelow(ChainStore):
    """A store pruned while it is read: nodes below the root of any version, and proofs
    at or above ``height``, are gone by the time they are looked up."""

    def __init__(self, path: Path, height: int) -> None:
        super().__init__(path)
        self.height_pruned = height
        self.roots = {self.state_ref(h) for h in range(self.height + 1)}

    def get_node_bytes(self, ref: bytes) -> bytes | None:
        return super().get_node_bytes(ref) if ref in self.roots else None

    def prove(self, key: bytes, height: int | None = None):
        if height is not None and height >= self.height_pruned:
            raise Pruned(f"state at height {height} was pruned while being read")
        return super().prove(key, height)


async def test_what_is_pruned_while_being_served_is_answered_as_not_served(tmp_path):
    # Not as a fault of the asker (p2p would drop it), nor by silence (it would give up
    # on this peer after its timeout).
    make_chain(tmp_path / "a", 24).store.close()
    store = PrunedBelow(tmp_path / "a", height=20)
    serving = server(store)
    chunk = await serving.answer(ChunkRequest(24, store.head_root, 0, bytes(32)))
    assert chunk == ChunkResponse(24, store.head_root, 0, bytes(32), ())
    epochs = await serving.answer(EpochsRequest(1, 64))
    assert isinstance(epochs, EpochsResponse) and epochs.first == 1


async def test_a_snapshot_block_stored_damaged_is_not_offered(tmp_path):
    # The block's bytes went out as read, whatever they were (here block 23's under
    # height 24): the asker refused the offer and the peer it came from. They are
    # checked against the certificate now, and not offered.
    source = make_chain(tmp_path / "a", 24)
    offer = await server(source.store).answer(SnapshotRequest(24))
    assert isinstance(offer, SnapshotOffer) and offer.height == 24
    assert offer.block == source.store.get_block_bytes(24)
    assert offer.commit == source.store.get_commit(24).encode()
    other = source.store.get_block_bytes(23)
    source.store.close()
    raw_write(tmp_path / "a", {BLOCK + encode_height(24): other})
    with ChainStore(tmp_path / "a") as store:
        assert await server(store).answer(SnapshotRequest(24)) == SnapshotOffer(0, b"", b"")


async def test_a_damaged_latest_snapshot_block_leaves_the_older_snapshot_offered(tmp_path):
    # Asked for its newest snapshot (height 0), a node whose latest snapshot block is
    # damaged offers the one before it, which it still holds whole, rather than none.
    source = make_chain(tmp_path / "a", 24)
    latest, older = server(source.store).snapshot_heights(24)
    other = source.store.get_block_bytes(latest - 1)
    source.store.close()
    raw_write(tmp_path / "a", {BLOCK + encode_height(latest): other})
    with ChainStore(tmp_path / "a") as store:
        offer = await server(store).answer(SnapshotRequest(0))
        assert isinstance(offer, SnapshotOffer) and offer.height == older
        assert offer.block == store.get_block_bytes(older)


async def test_a_node_without_a_chain_answers_that_it_serves_nothing(tmp_path):
    serving = server(ChainStore(tmp_path / "empty"))
    root = b"\x05" * 32
    assert await serving.answer(SnapshotRequest(0)) == SnapshotOffer(0, b"", b"")
    assert await serving.answer(EpochsRequest(3, 10)) == EpochsResponse(3, ())
    asked = ChunkRequest(8, root, 0, bytes(32))
    assert await serving.answer(asked) == ChunkResponse(8, root, 0, bytes(32), ())


async def test_a_chunk_asked_for_at_no_place_a_tree_has_is_answered_with_nothing(tmp_path):
    source = make_chain(tmp_path / "a", 8)
    serving = server(source.store)
    root = source.store.head_root
    whole = await serving.answer(ChunkRequest(8, root, 0, bytes(32)))
    assert isinstance(whole, ChunkResponse) and whole.nodes
    for depth, path in (
        (256, bytes(32)),
        (2**40, bytes(32)),
        (1, b"\x01" * 32),
        (0, b"\x80" + bytes(31)),
    ):
        asked = ChunkRequest(8, root, depth, path)
        assert await serving.answer(asked) == ChunkResponse(8, root, depth, path, ())


class SlowNodes(ChainStore):
    """A store whose node reads wait for ``gate``, counting the reads under way."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0

    def get_node_bytes(self, ref: bytes) -> bytes | None:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        self.gate.wait(30)
        with self.lock:
            self.inside -= 1
        return super().get_node_bytes(ref)


async def test_many_peers_asking_at_once_are_read_for_a_few_at_a_time(tmp_path):
    make_chain(tmp_path / "a", 8).store.close()
    store = SlowNodes(tmp_path / "a")
    serving = server(store)
    asks = [serving.answer(ChunkRequest(8, store.head_root, 0, bytes(32))) for _ in range(6)]
    tasks = [asyncio.get_running_loop().create_task(ask) for ask in asks]
    while store.inside < SnapshotServer.READERS:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # room for more readers to start, if they could
    most = store.most
    store.gate.set()
    answers = await asyncio.gather(*tasks)
    assert most == SnapshotServer.READERS < len(asks)
    assert all(isinstance(a, ChunkResponse) and a.nodes for a in answers)


def follow(chain: Chain, source: Chain, height: int) -> None:
    """Verify and commit the source's blocks up to ``height``, keeping each epoch's record
    as its last block commits (as the node does)."""
    for h in range(chain.height + 1, height + 1):
        block, commit = source.store.get_block(h), source.store.get_commit(h)
        assert block is not None and commit is not None
        chain.commit(chain.verify(block), commit)
        if h % EPOCH == 0:
            keep_epoch_record(chain.store, h // EPOCH, EPOCH)


async def test_a_synced_node_serves_every_epoch_record_after_pruning(tmp_path):
    # Synced at an epoch's last block, the node never committed that block: its record
    # is made from what the sync installed, before pruning takes it.
    source = make_chain(tmp_path / "a", 40)
    dest = ChainStore(tmp_path / "b")
    assert await Net({HONEST: server(source.store).answer}).sync(dest) == 40
    grow(source, 60)
    synced = Chain(dest, GENESIS, build_registry())
    follow(synced, source, 60)
    serving = server(dest)
    window = PruningConfig(keep_blocks=4, keep_states=4)
    prune(dest, GENESIS, window, 60, frozenset(serving.snapshot_heights(60)))
    assert dest.block_base == dest.state_base == 57

    answer = await serving.answer(EpochsRequest(1, 64))
    assert isinstance(answer, EpochsResponse)
    assert len(answer.records) == 60 // EPOCH
    producers = ValidatorSet.of(v.public_key for v in GENESIS.validators)
    for epoch, raw in enumerate(answer.records, start=1):
        producers = verify_epoch_record(GENESIS, epoch, raw, producers)


def test_a_peers_read_budget_lets_a_burst_through_then_spaces_its_reads():
    now = [100.0]
    budget = ReadBudget(4.0, 8.0, clock=lambda: now[0])
    assert [budget.wait_s("a") for _ in range(8)] == [0.0] * 8
    # The ninth waits a quarter of a second, the tenth half: reads owed queue up.
    assert [budget.wait_s("a") for _ in range(2)] == [0.25, 0.5]
    # Another peer has its own budget.
    assert budget.wait_s("b") == 0.0
    # Time refills the bucket: 3 s later the debt (2 reads) is paid and 8 are back.
    now[0] += 3.0
    assert [budget.wait_s("a") for _ in range(8)] == [0.0] * 8
    assert budget.wait_s("a") == 0.25


def test_a_read_budget_keeps_a_peers_debt_however_many_peers_come():
    # Only buckets that have refilled are forgotten (to bound the table): a peer that
    # asked past its budget cannot have it reset by others arriving.
    now = [0.0]
    budget = ReadBudget(1.0, 2.0, clock=lambda: now[0])
    for _ in range(12):
        budget.wait_s("busy")  # ten reads owed: ten seconds to pay
    now[0] += 3.0  # past a burst's refill, not past the debt
    for i in range(3 * ReadBudget.KEEP):
        budget.wait_s(i)
    assert budget.wait_s("busy") == 8.0


async def test_a_peer_asking_past_its_budget_waits_and_others_do_not(tmp_path, monkeypatch):
    chain = make_chain(tmp_path / "a", 3 * INTERVAL)
    waits: list[float] = []

    async def recorded(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr("node.statesync.asyncio.sleep", recorded)
    now = [0.0]
    serving = SnapshotServer(
        lambda: chain.store, GENESIS, INTERVAL, budget=ReadBudget(1.0, 2.0, clock=lambda: now[0])
    )
    for _ in range(3):
        assert (await serving.answer(SnapshotRequest(0), b"greedy")) is not None
    assert (await serving.answer(SnapshotRequest(0), b"other")) is not None
    assert waits == [1.0]


async def test_many_peers_each_within_its_budget_share_the_nodes_reads(tmp_path, monkeypatch):
    # Each peer's budget bounds what it costs, not what several cost together: members
    # asking at their rate kept both readers busy, two threads of Python holding the GIL
    # the consensus thread needs. All peers' reads now share the node's budget, taken
    # once a peer's own lets its read go.
    chain = make_chain(tmp_path / "a", 3 * INTERVAL)
    now = [0.0]
    waits: list[float] = []

    async def waited(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    monkeypatch.setattr("node.statesync.asyncio.sleep", waited)
    serving = SnapshotServer(
        lambda: chain.store,
        GENESIS,
        INTERVAL,
        budget=ReadBudget(1.0, 1.0, clock=lambda: now[0]),
        node_budget=ReadBudget(2.0, 2.0, clock=lambda: now[0]),
    )
    for peer in range(6):
        assert (await serving.answer(SnapshotRequest(0), peer)) is not None
    # Two within the node's burst, then each waits for the node's rate, whoever asks.
    assert waits == [0.5] * 4
    assert now[0] == 2.0
    # A peer past its own budget waits for it first and holds no node read meanwhile:
    # 2 s later the node's burst is back for another peer.
    now[0] += 2.0
    assert (await serving.answer(SnapshotRequest(0), "greedy")) is not None
    assert (await serving.answer(SnapshotRequest(0), "greedy")) is not None
    assert waits[4:] == [1.0]
    assert (await serving.answer(SnapshotRequest(0), "other")) is not None
    assert waits[5:] == []


async def test_a_peer_asking_for_offers_in_a_loop_is_sent_its_budget_in_bytes(
    tmp_path, monkeypatch
):
    # A read was one token whatever it sent: an offer is a whole block (up to
    # max_block_bytes, 8 MiB, at any height the store holds), so a member asking for
    # offers in a loop was sent 4 blocks a second (32 MiB/s), where a joiner takes one
    # offer a peer per attempt. Now a read is worth ``read_bytes``, and a bigger answer
    # costs the reads its bytes make: a peer is sent ``rate * read_bytes`` a second
    # whatever it asks for. (Here the blocks are small, and so is a read.)
    chain = make_chain(tmp_path / "a", 3 * INTERVAL)
    now = [0.0]

    async def waited(delay: float) -> None:
        now[0] += delay

    monkeypatch.setattr("node.statesync.asyncio.sleep", waited)
    read_bytes = 64
    serving = SnapshotServer(
        lambda: chain.store,
        GENESIS,
        INTERVAL,
        budget=ReadBudget(1.0, 2.0, clock=lambda: now[0], read_bytes=read_bytes),
        node_budget=ReadBudget(1e6, 1e6),
    )
    requests: list[Wire] = [SnapshotRequest(h) for h in (0, INTERVAL, 3, 5) * 5]
    requests += [EpochsRequest(1, 64)] * 5
    sent = 0
    for request in requests:
        answer = await serving.answer(request, b"greedy")
        assert answer is not None
        sent += statesync.answer_bytes(answer)
    assert sent > 10 * read_bytes * len(requests)  # each answer is many reads' worth
    # Before the next read: the bytes sent fit the burst and the time waited.
    await serving.answer(SnapshotRequest(0), b"greedy")
    assert sent <= read_bytes * (2.0 + 1.0 * now[0])
    # Another peer's budget is its own; a chunk within a read costs one read.
    before = now[0]
    assert statesync.answer_bytes(await serving.answer(SnapshotRequest(0), b"other")) > 0
    chunk = ChunkRequest(INTERVAL, chain.store.state_root(INTERVAL), 0, bytes(32))
    small = SnapshotServer(
        lambda: chain.store,
        GENESIS,
        INTERVAL,
        chunk_bytes=4 * read_bytes,
        budget=ReadBudget(1.0, 2.0, clock=lambda: now[0], read_bytes=16 * read_bytes),
        node_budget=ReadBudget(1e6, 1e6),
    )
    for _ in range(2):
        assert isinstance(await small.answer(chunk, b"joiner"), ChunkResponse)
    assert now[0] == before


# --- slow and hostile peers ------------------------------------------------------------

TRICKLER = b"\x03" * 32
# The request timeout of the tests below, and how long a trickling peer takes to answer:
# well within the timeout (it is never late), far slower than an honest peer (a sync of
# these chains from one takes a few tenths of a second).
PATIENCE = 4.0
TRICKLE_S = 0.75 * PATIENCE


def trickling(serving: SnapshotServer, *, offers: bool, delay: float = TRICKLE_S) -> Answer:
    """A peer holding the whole chain that answers each request with the least that is
    still valid, after ``delay`` (by default just before the timeout): one epoch record
    a page, one node a chunk. It offers the snapshot, or (``offers`` False) nothing."""

    async def trickle(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest) and not offers:
            return SnapshotOffer(0, b"", b"")
        real = await serving.answer(msg)
        if isinstance(msg, SnapshotRequest):
            return real
        await asyncio.sleep(delay)
        if isinstance(real, EpochsResponse):
            return EpochsResponse(real.first, real.records[:1])
        if isinstance(real, ChunkResponse):
            return dataclasses.replace(real, nodes=real.nodes[:1])
        return real

    return trickle


async def test_a_trickling_peer_beside_an_honest_one_is_asked_for_little(tmp_path, monkeypatch):
    # Tried first, it was asked for the root, and the sync waited for its one node, then
    # gave it a subtree whenever it was idle: the trickler's delay per level of the tree.
    # Now an idle honest peer asks again what the trickler holds (the first answer
    # wins): the sync ends before the trickler's first answer comes. Slow is no proven
    # fault: it stays connected.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    net = Net({TRICKLER: trickling(honest, offers=False), HONEST: honest.answer})
    assert await net.sync(ChainStore(tmp_path / "b"), request_timeout_s=PATIENCE) == 40
    assert net.dropped == {}
    assert net.answered[TRICKLER, EpochsResponse] == net.answered[TRICKLER, ChunkResponse] == 0
    assert net.asked[TRICKLER, ChunkRequest] == net.asked[TRICKLER, EpochsRequest] == 1


async def test_a_peer_answering_garbage_where_it_lost_the_race_is_refused_not_rated(
    tmp_path, monkeypatch
):
    # A peer's rate counted the bytes of a chunk before it was checked, and the chunk
    # was not checked at all when another peer's answer to the same subtree was kept
    # first (a hedge): a peer answering those with a large garbage chunk looked the
    # fastest by far, made the honest peers "slow" beside it (asked once in 16
    # answers), and was never caught. Now only verified bytes count, and a lost answer
    # is verified too: garbage gets its sender refused, wherever it goes.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    served: set[bytes] = set()
    garbage = [0]

    async def honest_answer(msg: Wire) -> Wire | None:
        answer = await honest.answer(msg)
        if isinstance(msg, ChunkRequest):
            served.add(msg.subtree)  # delivered as this returns (Net._answer)
        return answer

    async def late_garbage(msg: Wire) -> Wire | None:
        # Slow before the chunks: the honest peer outpaces it, and asks again what it holds.
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(0, b"", b"")
        if isinstance(msg, EpochsRequest):
            await asyncio.sleep(TRICKLE_S)
        if isinstance(msg, ChunkRequest):
            # Once the honest peer answered the same subtree (its answer queued first),
            # a big chunk of nothing; else an honest answer, slowly.
            for _ in range(100):
                if msg.subtree in served:
                    garbage[0] += 1
                    junk = (b"\x00" * 100_000,)
                    return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, junk)
                await asyncio.sleep(0.01)
        return await honest.answer(msg)

    net = Net({HOSTILE: late_garbage, HONEST: honest_answer})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, request_timeout_s=PATIENCE) == 40
    assert garbage[0] >= 1
    assert "chunk node 0" in net.dropped[HOSTILE]
    assert HONEST not in net.dropped
    assert dest.head_root == source.store.head_root


async def test_a_peer_answering_garbage_epoch_records_where_it_lost_the_race_is_refused(
    tmp_path, monkeypatch
):
    # A page of epoch records counted toward its sender's rate as it came, before it was
    # checked, and records another peer's page had brought first (a hedge lost, or
    # records verified already) were dropped unchecked: a peer answering those with big
    # garbage looked fast and was never caught. Now every page is verified on its own
    # (honest peers may hold other certificates of the same block: no comparing bytes
    # with the page kept), rated only once it verified, and its sender refused if not.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    served: set[int] = set()
    garbage = [0]

    async def honest_answer(msg: Wire) -> Wire | None:
        answer = await honest.answer(msg)
        if isinstance(msg, EpochsRequest):
            served.update(range(msg.first, msg.first + msg.count))  # delivered as this returns
        return answer

    async def late_garbage(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(0, b"", b"")
        if isinstance(msg, EpochsRequest):
            # Once the honest peer answered the same records (it hedges this page: this
            # peer is not rated yet), a page of garbage; else an honest page, slowly.
            asked = range(msg.first, msg.first + msg.count)
            for _ in range(100):
                if served.issuperset(asked):
                    garbage[0] += 1
                    return EpochsResponse(msg.first, tuple(b"\x00" * 10_000 for _ in asked))
                await asyncio.sleep(0.01)
        return await honest.answer(msg)

    net = Net({HOSTILE: late_garbage, HONEST: honest_answer})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, request_timeout_s=PATIENCE) == 40
    assert garbage[0] >= 1
    assert "epoch" in net.dropped[HOSTILE]
    assert HONEST not in net.dropped
    assert dest.head_root == source.store.head_root


async def test_a_peer_sending_fewer_epoch_records_than_its_offer_needs_is_refused(
    tmp_path, monkeypatch
):
    # Its own offer needs the records up to its epoch: it holds them, and an honest
    # server sends every record asked that it holds. It was asked for every page (the
    # offering peer was), and answered each with one record.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    net = Net({TRICKLER: trickling(honest, offers=True, delay=0.0), HONEST: honest.answer})
    assert await net.sync(ChainStore(tmp_path / "b"), request_timeout_s=PATIENCE) == 40
    assert "epoch records" in net.dropped[TRICKLER]
    assert net.asked[TRICKLER, EpochsRequest] == 1
    assert HONEST not in net.dropped


def serving_nothing_at_first(serving: SnapshotServer) -> Answer:
    """An honest peer whose first chunk answer is "not served" (it was still opening its
    store, or pruning raced the read), and that serves every later one."""
    first = [True]

    async def answer(msg: Wire) -> Wire | None:
        if isinstance(msg, ChunkRequest) and first:
            first.clear()
            return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())
        return await serving.answer(msg)

    return answer


async def test_a_peer_that_served_nothing_is_asked_again_when_the_others_fail(
    tmp_path, monkeypatch
):
    # The other peer never answers a chunk: once it is given up, the first one is asked
    # again at once; it was not asked again in this sync, which started over (offers,
    # epoch records) after a timeout.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)

    async def silent_on_chunks(msg: Wire) -> Wire | None:
        return None if isinstance(msg, ChunkRequest) else await honest.answer(msg)

    net = Net({HONEST: serving_nothing_at_first(honest), HOSTILE: silent_on_chunks})
    assert await net.sync(ChainStore(tmp_path / "b")) == 40
    assert "no chunk" in net.dropped[HOSTILE] and HONEST not in net.dropped
    assert net.asked[HONEST, SnapshotRequest] == 1


async def test_a_peer_that_served_nothing_is_asked_again_beside_a_trickling_one(
    tmp_path, monkeypatch
):
    # The trickler always has a request out, so the sync never ran out of peers to ask:
    # the honest peer, once it had answered "not served", was never asked again, and the
    # whole state came one node at a time. It is asked again after the request timeout,
    # and the trickler, far slower, only now and then (a probe).
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    trickler = trickling(honest, offers=False, delay=0.6)
    net = Net({HONEST: serving_nothing_at_first(honest), TRICKLER: trickler})
    assert await net.sync(ChainStore(tmp_path / "b"), request_timeout_s=1.0) == 40
    honest_chunks = net.asked[HONEST, ChunkRequest]
    # Asked while the honest peer is left out (a timeout, ~2 answers), then probes.
    assert net.asked[TRICKLER, ChunkRequest] <= 3 + honest_chunks // PeerRates.PROBE_AFTER
    assert net.dropped == {}


async def test_epoch_records_are_verified_off_the_event_loop(tmp_path, monkeypatch):
    # A month of records is a minute of signature checks: in a worker thread, the loop
    # (p2p, the syncer's own timeouts) goes on meanwhile.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    threads: list[int] = []
    real_verify = epoch_records.verify_epoch_record

    def recording(
        genesis: Genesis, epoch: int, raw: bytes, validators: ValidatorSet
    ) -> ValidatorSet:
        threads.append(threading.get_ident())
        return real_verify(genesis, epoch, raw, validators)

    monkeypatch.setattr(epoch_records, "verify_epoch_record", recording)
    net = Net({HONEST: server(source.store).answer})
    assert await net.sync(ChainStore(tmp_path / "b")) == 40
    assert len(threads) == 40 // EPOCH - 1  # epochs 1..9: the producers of height 40
    assert threading.get_ident() not in threads


class Crash(Exception):
    """The process died at this write: nothing of it reached the disk."""


@pytest.mark.parametrize("crash_at", [2, 3])
async def test_a_crash_while_syncing_keeps_whole_pages_of_epoch_records(
    tmp_path, monkeypatch, crash_at
):
    # Each record was its own synced write: a crash kept any prefix of a page. A page is
    # one write now (and kept only once verified), and the restarted sync fetches no
    # record it kept.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    where = str(tmp_path / "b")
    writes = [0]
    real_write = Database.write

    def crashing(db: Database, batch: WriteBatch) -> None:
        if db.path.startswith(where):
            writes[0] += 1
            if writes[0] == crash_at:
                raise Crash
        real_write(db, batch)

    dest = ChainStore(tmp_path / "b")
    monkeypatch.setattr(Database, "write", crashing)
    with pytest.raises(Crash):
        await Net({HONEST: server(source.store).answer}).sync(dest)
    monkeypatch.setattr(Database, "write", real_write)
    dest.close()

    dest = ChainStore(tmp_path / "b")
    kept = [e for e in range(1, 40 // EPOCH) if dest.get_epoch_record(e) is not None]
    assert kept in ([], list(range(1, 40 // EPOCH)))
    net = Net({HONEST: server(source.store).answer})
    assert await net.sync(dest) == 40
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
    assert (net.asked[HONEST, EpochsRequest] == 0) == bool(kept)


class Flaky(Net):
    """A ``Net`` whose peers in ``gone`` are disconnected for now: not listed, not sent to
    (what they were asked before is answered or not, as their answerer says)."""

    def __init__(self, answerers: dict[bytes, Answer]) -> None:
        super().__init__(answerers)
        self.gone: set[bytes] = set()

    def peers(self) -> list[bytes]:
        return [p for p in super().peers() if p not in self.gone]

    def send(self, peer: bytes, msg: Wire) -> bool:
        return peer not in self.gone and super().send(peer, msg)


LAGGING = b"\x04" * 32
SLOWER = b"\x05" * 32


async def test_a_peer_that_went_away_while_asked_for_records_is_not_refused(tmp_path, monkeypatch):
    # The only peer offering a snapshot drops its connection when asked for epoch
    # records; the other one holds only the first (its chain is below any snapshot).
    # With no peer left holding them, the offer was "refused": its sender banned for
    # good in this sync, which then never ended (nobody else offers). A sender still
    # connected would have been refused for its short page already: gone, it is not at
    # fault, and its offer is taken again once it is back.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    serving, behind = server(source.store), server(make_chain(tmp_path / "l", 7).store)
    net: Flaky

    async def leaves_once(msg: Wire) -> Wire | None:
        if isinstance(msg, EpochsRequest) and net.asked[HONEST, SnapshotRequest] == 1:
            net.gone.add(HONEST)
            return None  # lost with the connection
        return await serving.answer(msg)

    async def lagging(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest) and net.asked[LAGGING, SnapshotRequest] == 2:
            net.gone.discard(HONEST)  # back by the next round of offers
        return await behind.answer(msg)

    net = Flaky({HONEST: leaves_once, LAGGING: lagging})
    assert await net.sync(ChainStore(tmp_path / "b"), timeout=20) == 40
    assert net.dropped == {}
    assert net.asked[HONEST, SnapshotRequest] == 2


async def test_a_page_answered_after_a_reconnection_is_judged_by_the_request_it_answers(
    tmp_path, monkeypatch
):
    # A server's handler runs to its end and sends its answer on the peer's connection
    # of that time. The joiner forgot the page it asked of a peer that went away, and
    # asked the peer, back, for another: the first page's answer then came, was judged
    # against the second request ("64 records from 65, asked 21 from 129"), and an
    # honest peer was refused. A peer seen gone is asked for no other page until its
    # page is answered (or its timeout passed).
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 600)  # 149 epochs: a few pages each
    serving = server(source.store)
    net: Flaky
    dropped_once, asked_again = asyncio.Event(), asyncio.Event()

    async def bounded(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def reconnecting(msg: Wire) -> Wire | None:
        pages = net.asked[HONEST, EpochsRequest]
        if isinstance(msg, EpochsRequest) and pages == 2:
            net.gone.add(HONEST)  # its connection drops while this page is read
            dropped_once.set()
            await bounded(asked_again, PATIENCE / 2)  # answered on the next connection
        elif isinstance(msg, EpochsRequest) and pages == 3:
            asked_again.set()
        return await serving.answer(msg)

    async def slower(msg: Wire) -> Wire | None:
        if isinstance(msg, EpochsRequest):
            await asyncio.sleep(0.2)  # well below the other's rate: it is hedged
            if net.asked[SLOWER, EpochsRequest] == 1:
                await bounded(dropped_once, PATIENCE / 2)
            else:
                net.gone.discard(HONEST)
                await bounded(asked_again, PATIENCE / 4)
        return await serving.answer(msg)

    net = Flaky({HONEST: reconnecting, SLOWER: slower})
    assert await net.sync(ChainStore(tmp_path / "b"), request_timeout_s=PATIENCE) == 600
    assert net.dropped == {}
    assert net.asked[HONEST, EpochsRequest] == 2


class PrunedMidRead(ChainStore):
    """A store whose next read of block ``at`` waits for a pruning pass (``run``) to end:
    that pass ran between a server's look for a kept record and the reads that make it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.at: int | None = None
        self.run: Callable[[], object] = lambda: None

    def get_block(self, height: int) -> Block | None:
        if height == self.at:
            self.at = None
            self.run()
        return super().get_block(height)


async def test_a_record_kept_by_pruning_while_it_is_read_is_still_served(tmp_path):
    # Synced at an epoch's last block, the node makes that epoch's record from the block
    # and state the sync installed until a pruning pass keeps it. A pass running while
    # a peer's page was read (after the look for a kept record, before the block was
    # read) cut the page short there: fewer records than the server's own offer needs,
    # for which a joiner refuses it.
    source = make_chain(tmp_path / "a", 40)
    dest = PrunedMidRead(tmp_path / "b")
    assert await Net({HONEST: server(source.store).answer}).sync(dest) == 40
    grow(source, 60)
    follow(Chain(dest, GENESIS, build_registry()), source, 60)
    assert dest.get_epoch_record(40 // EPOCH) is None  # made from the installed block
    serving = server(dest)
    window = PruningConfig(keep_blocks=4, keep_states=4)
    dest.at = 40
    dest.run = lambda: prune(dest, GENESIS, window, 60, frozenset(serving.snapshot_heights(60)))

    answer = await serving.answer(EpochsRequest(1, 64))
    assert dest.at is None and dest.block_base == 57  # the pass ran mid-read
    assert isinstance(answer, EpochsResponse)
    assert len(answer.records) == 60 // EPOCH


# --- lies in offers, chunks and epoch records -------------------------------------------


def _offer_lie(source: Chain, lie: str) -> SnapshotOffer:
    """The honest offer of ``source``'s height 40, with ``lie`` told in it."""
    block, commit = source.store.get_block(40), source.store.get_commit(40)
    assert block is not None and commit is not None
    if lie == "undecodable":
        return SnapshotOffer(40, b"\x93not a block", commit.encode())
    if lie == "another height":
        older = source.store.get_block(32)
        assert older is not None
        return SnapshotOffer(40, older.encode(), commit.encode())
    if lie == "forged certificate":
        strangers = [k for k in KEYS if k.public_key not in BY_PUB_PRODUCERS]
        forged = make_commit(strangers[:3], GENESIS.chain_id, 40, 0, block.hash)
        return SnapshotOffer(40, block.encode(), forged.encode())
    assert lie == "swapped body"
    return SnapshotOffer(40, Block(block.header, (b"\x93extra",)).encode(), commit.encode())


BY_PUB_PRODUCERS = {v.public_key for v in GENESIS.validators}


LIES = {
    "undecodable": "trailing bytes",
    "another height": "offered block is staking-test/32",
    "forged certificate": "commit signed by non-producer",
    "swapped body": "height 40: tx root",
}


@pytest.mark.parametrize("lie", sorted(LIES))
async def test_a_peer_lying_in_its_offer_is_refused_and_the_sync_goes_on(
    tmp_path, monkeypatch, lie
):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    offer = _offer_lie(source, lie)

    async def hostile(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return offer
        return await honest.answer(msg)

    async def later(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            await asyncio.sleep(0.2)  # the lie, at the same height, is looked at first
        return await honest.answer(msg)

    net = Net({HOSTILE: hostile, HONEST: later})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest) == 40
    assert f"snapshot offer at 40: {LIES[lie]}" in net.dropped[HOSTILE]
    assert HONEST not in net.dropped
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


async def test_an_offer_other_than_the_trusted_block_is_refused(tmp_path, monkeypatch):
    # With a trusted height and hash configured, a block certified as well as can be is
    # still not the one: its sender is refused, the trusted one synced.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    trusted = source.store.get_block(40)
    assert trusted is not None
    other = Block(dataclasses.replace(trusted.header, time_ms=trusted.header.time_ms + 1), ())
    commit = make_commit(
        [BY_PUB[k] for k in source.validators_for(40).keys], GENESIS.chain_id, 40, 0, other.hash
    )

    async def hostile(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(40, other.encode(), commit.encode())
        return await honest.answer(msg)

    async def later(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            await asyncio.sleep(0.2)
        return await honest.answer(msg)

    net = Net({HOSTILE: hostile, HONEST: later})
    dest = ChainStore(tmp_path / "b")
    net.syncer = StateSyncer(
        dest, GENESIS, net, trust_height=40, trust_hash=trusted.hash, request_timeout_s=1.0
    )
    assert await asyncio.wait_for(net.syncer.run(), 30) == 40
    assert "not the trusted 40/" in net.dropped[HOSTILE] and HONEST not in net.dropped


async def test_a_peer_silent_on_the_offer_request_does_not_hold_the_sync(tmp_path, monkeypatch):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)

    async def silent(msg: Wire) -> Wire | None:
        return None

    net = Net({HOSTILE: silent, HONEST: honest.answer})
    assert await net.sync(ChainStore(tmp_path / "b")) == 40


class Reconnecting(Net):
    """``Net`` whose dropped peers come back, as p2p dials a peer again once its ban is
    over: each drop is recorded in ``drops``, and the peer stays reachable."""

    def __init__(self, answerers: dict[bytes, Answer]) -> None:
        super().__init__(answerers)
        self.drops: list[tuple[bytes, str]] = []

    def drop_peer(self, peer: bytes, reason: str, *, ban: bool = True) -> None:
        self.drops.append((peer, reason))


def stalling_once(serving: SnapshotServer, kind: type[Wire]) -> tuple[Answer, list[Wire]]:
    """An honest peer that leaves its first request of ``kind`` unanswered (its link, or
    the server, stalled past the request timeout) and answers every other one; the
    requests it left go to the list."""
    stalled: list[Wire] = []

    async def answer(msg: Wire) -> Wire | None:
        if isinstance(msg, kind) and not stalled:
            stalled.append(msg)
            return None
        return await serving.answer(msg)

    return answer, stalled


@pytest.mark.parametrize("kind", [EpochsRequest, ChunkRequest])
async def test_a_sync_whose_only_peer_stalled_once_asks_it_again(tmp_path, monkeypatch, kind):
    # Given up for its silence for the rest of the sync, it left no peer to ask: the
    # sync waited for ever (until a restart), though the peer was back and serving.
    # Silence proves no fault (a stall of the joiner's own link times every peer out at
    # once): with no other peer left, the peers given up for it are asked again.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    answer, stalled = stalling_once(server(source.store), kind)
    net = Reconnecting({HONEST: answer})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=20, request_timeout_s=0.5) == 40
    assert stalled and [peer for peer, _ in net.drops] == [HONEST]
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


async def test_a_peer_that_stalled_is_asked_again_before_a_snapshot_is_given_up(
    tmp_path, monkeypatch
):
    # The other peer offers nothing and serves nothing. Once the honest one was given
    # up for a stall, every peer left said "not served": the snapshot was given up for
    # a newer offer, which the peer left never made, and the sync asked it for offers
    # for ever.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    answer, stalled = stalling_once(server(source.store), ChunkRequest)

    async def serves_nothing(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(0, b"", b"")
        if isinstance(msg, EpochsRequest):
            return EpochsResponse(msg.first, ())
        if isinstance(msg, ChunkRequest):
            return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())
        return None

    net = Reconnecting({HONEST: answer, HOSTILE: serves_nothing})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=20, request_timeout_s=0.5) == 40
    assert stalled and [peer for peer, _ in net.drops] == [HONEST]
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


def offered_40_then_pruned(honest: SnapshotServer) -> Answer:
    """``honest``, but its first offer is of height 40, whose chunks it then answers as
    not served (pruned); later offers are its own."""
    offers = [0]

    async def pruned_40(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            offers[0] += 1
            return await honest.answer(SnapshotRequest(40) if offers[0] == 1 else msg)
        if isinstance(msg, ChunkRequest) and msg.height == 40:
            return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())
        return await honest.answer(msg)

    return pruned_40


async def test_a_peer_silent_for_ever_does_not_keep_a_snapshot_nobody_serves(tmp_path, monkeypatch):
    # The honest peer offered 40, then pruned it; the other one never answers a chunk
    # and is back at once each time it is dropped. Taken back (once) before the snapshot
    # is given up, it must not be taken back again and again: the sync moves on to 48.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 48)
    honest = server(source.store)
    pruned_40 = offered_40_then_pruned(honest)

    async def silent_on_chunks(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return SnapshotOffer(0, b"", b"")
        return None if isinstance(msg, ChunkRequest) else await honest.answer(msg)

    net = Reconnecting({HONEST: pruned_40, HOSTILE: silent_on_chunks})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=20, request_timeout_s=0.5) == 48
    assert {peer for peer, _ in net.drops} == {HOSTILE}


async def test_a_peer_serving_a_tampered_chunk_is_refused_and_its_subtree_asked_again(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    tampered: list[ChunkRequest] = []

    async def hostile(msg: Wire) -> Wire | None:
        answer = await honest.answer(msg)
        if isinstance(answer, ChunkResponse) and answer.nodes and not tampered:
            assert isinstance(msg, ChunkRequest)
            tampered.append(msg)
            last = answer.nodes[-1]
            flipped = last[:-1] + bytes([last[-1] ^ 1])
            return dataclasses.replace(answer, nodes=(*answer.nodes[:-1], flipped))
        return answer

    net = Net({HOSTILE: hostile, HONEST: honest.answer})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest) == 40
    assert tampered and "chunk node" in net.dropped[HOSTILE]
    assert HONEST not in net.dropped
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


class CrashOnChunk(ChainStore):
    """The process dies at its ``at``-th chunk write (nothing of it reaches the disk)."""

    def __init__(self, path: Path, at: int) -> None:
        super().__init__(path)
        self.at = at
        self.written = 0

    def store_chunk(self, nodes, leaves) -> None:
        self.written += 1
        if self.written == self.at:
            raise Crash
        super().store_chunk(nodes, leaves)


async def test_a_sync_that_crashed_among_its_chunks_resumes_where_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    first = Net({HONEST: server(source.store).answer})
    dest = CrashOnChunk(tmp_path / "b", at=4)
    with pytest.raises(Crash):
        await first.sync(dest)
    dest.close()
    whole = Net({HONEST: server(source.store).answer})
    assert await whole.sync(ChainStore(tmp_path / "c")) == 40

    dest = ChainStore(tmp_path / "b")
    assert dest.sync_target() is not None and dest.sync_target().height == 40
    again = Net({HONEST: server(source.store).answer})
    assert await again.sync(dest) == 40
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
    # The target came from the store: no offer was asked for, no record fetched, and
    # the three chunks kept before the crash were not fetched again.
    assert again.asked[HONEST, SnapshotRequest] == again.asked[HONEST, EpochsRequest] == 0
    assert again.asked[HONEST, ChunkRequest] == whole.asked[HONEST, ChunkRequest] - 3


async def test_a_resumed_sync_over_a_damaged_node_of_its_target_fetches_it_and_ends(
    tmp_path, monkeypatch, caplog
):
    # A bit flipped on disk in a node the sync stored for its target: the resumed walk
    # raised StorageError out of the syncer, so the node failed to start at every
    # restart until its data was wiped. The node is dropped, fetched again, and logged.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    dest = CrashOnChunk(tmp_path / "b", at=4)
    with pytest.raises(Crash):
        await Net({HONEST: server(source.store).answer}).sync(dest)
    dest.close()
    with ChainStore(tmp_path / "b") as closed:
        target = closed.sync_target()
        assert target is not None
        root = closed.get_node_bytes(sync_root(target))
    assert root is not None
    raw_write(
        tmp_path / "b" / TREE_DIR,
        {TREE_NODE + sync_root(target): root[:-1] + bytes([root[-1] ^ 1])},
    )
    dest = ChainStore(tmp_path / "b")
    with caplog.at_level("WARNING", logger="storage.chain_store"):
        assert await Net({HONEST: server(source.store).answer}).sync(dest) == 40
    assert "fetched again" in caplog.text
    assert dest.head_root == source.store.state_root(40)
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


class RotBeforeInstall(ChainStore):
    """A node of the synced tree rots on disk after the sync's last walk, just before each
    of its first ``times`` installs: ``which`` says which node (the root, or the root's
    left child, an inner node). Written garbled through the store's own chunk write, so
    the damage is on disk, as a flipped bit that LevelDB's checksums missed leaves it."""

    def __init__(self, path: Path, times: int, which: str) -> None:
        super().__init__(path)
        self.times = times
        self.which = which
        self.installs = 0

    def finish_sync(self, genesis_hash: bytes) -> int:
        self.installs += 1
        if self.installs <= self.times:
            target = self.sync_target()
            assert target is not None
            ref = sync_root(target)
            if self.which == "inner":
                root = self.get_node_bytes(ref)
                assert root is not None
                children = node_children(root)
                assert children is not None
                ref = children[0]
            good = self.get_node_bytes(ref)
            assert good is not None
            self.store_chunk({ref: good[:-1] + bytes([good[-1] ^ 1])}, [])
        return super().finish_sync(genesis_hash)


@pytest.mark.parametrize("which", ["root", "inner"])
async def test_a_node_damaged_after_the_last_walk_is_fetched_again_not_a_failed_start(
    tmp_path, monkeypatch, caplog, which
):
    # The install walks the tree once more and refuses a damaged node (right), but its
    # StorageError came out of the syncer, and out of the node's start: the node went
    # down, and came back only if something restarted it. The syncer walks again (which
    # drops the node), fetches it, and installs.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    dest = RotBeforeInstall(tmp_path / "b", times=2, which=which)
    net = Net({HONEST: server(source.store).answer})
    with caplog.at_level("WARNING", logger="node.statesync"):
        assert await net.sync(dest) == 40
    assert dest.installs == 3
    assert "found damaged since the last walk" in caplog.text
    assert dest.head_root == source.store.state_root(40)
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
    assert net.dropped == {}
    # The node installed is exactly what a sync with no damage installs.
    fresh = ChainStore(tmp_path / "c")
    assert await Net({HONEST: server(source.store).answer}).sync(fresh) == 40
    assert dict(dest.iter_state()) == dict(fresh.iter_state())


@pytest.mark.parametrize("which", ["root", "inner"])
async def test_a_damaged_node_is_fetched_again_without_what_is_stored_below_it(
    tmp_path, monkeypatch, which
):
    # A node of the target damaged on disk is dropped alone and its place fetched again.
    # Its chunk names the subtrees below it, all still stored: asked for again, one bit
    # flipped in the root fetched the whole state a second time (and each of the
    # INSTALL_TRIES installs again). Only what the store lacks is asked for.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    clean = Net({HONEST: server(source.store).answer})
    assert await clean.sync(ChainStore(tmp_path / "c")) == 40
    dest = RotBeforeInstall(tmp_path / "b", times=1, which=which)
    net = Net({HONEST: server(source.store).answer})
    assert await net.sync(dest) == 40
    assert dest.installs == 2
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
    # The damaged node's own chunk again, and nothing below it that is stored.
    assert net.asked[HONEST, ChunkRequest] == clean.asked[HONEST, ChunkRequest] + 1


async def test_an_install_damaged_again_and_again_stops_the_sync_saying_why(tmp_path, monkeypatch):
    # A disk that damages what was just fetched at every install: walking and fetching
    # for ever would hide it. After INSTALL_TRIES installs refused in a row the sync
    # stops, naming the damage, for the operator to see.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    dest = RotBeforeInstall(tmp_path / "b", times=1_000, which="inner")
    with pytest.raises(StorageError, match="times in a row") as raised:
        await Net({HONEST: server(source.store).answer}).sync(dest)
    assert dest.installs == statesync.INSTALL_TRIES
    assert "does not match its hash" in str(raised.value)
    assert not dest.initialized


async def test_a_resumed_sync_asks_for_what_it_lacks_left_to_right(tmp_path, monkeypatch):
    # The walk goes left to right, the order a move's kept subtrees rely on (a target
    # lives while its changes are fetched): a resume starts with the leftmost missing.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    dest = CrashOnChunk(tmp_path / "b", at=4)
    with pytest.raises(Crash):
        await Net({HONEST: server(source.store).answer}).sync(dest)
    dest.close()
    dest = ChainStore(tmp_path / "b")
    target = dest.sync_target()
    assert target is not None
    lacking = dest.missing_nodes(sync_root(target), 64)
    assert len(lacking) > 1
    serving = server(source.store)
    asked: list[tuple[int, bytes]] = []

    async def recording(msg: Wire) -> Wire | None:
        if isinstance(msg, ChunkRequest):
            asked.append((msg.depth, msg.path))
        return await serving.answer(msg)

    assert await Net({HONEST: recording}).sync(dest) == 40
    assert asked[0] == (lacking[0].depth, lacking[0].path)


async def test_a_sync_resumed_under_another_trust_point_starts_again_from_it(tmp_path, monkeypatch):
    # A sync to the latest snapshot (48) crashed among its chunks; the operator then
    # configured a trust point (block 40, say learned out of band after an incident).
    # The stored target is not that block: it is dropped, not resumed on its own word.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 48)
    trusted = source.store.get_block(40)
    assert trusted is not None
    dest = CrashOnChunk(tmp_path / "b", at=4)
    with pytest.raises(Crash):
        await Net({HONEST: server(source.store).answer}).sync(dest)
    dest.close()
    dest = ChainStore(tmp_path / "b")
    assert dest.sync_target() is not None and dest.sync_target().height == 48
    again = Net({HONEST: server(source.store).answer})
    assert await again.sync(dest, trust=trusted) == 40
    fresh = ChainStore(tmp_path / "c")
    assert await Net({HONEST: server(source.store).answer}).sync(fresh, trust=trusted) == 40
    assert dict(dest.iter_state()) == dict(fresh.iter_state())
    # The trust point itself is resumed as any stored target is.
    dest = CrashOnChunk(tmp_path / "d", at=4)
    with pytest.raises(Crash):
        await Net({HONEST: server(source.store).answer}).sync(dest, trust=trusted)
    dest.close()
    resumed = Net({HONEST: server(source.store).answer})
    assert await resumed.sync(ChainStore(tmp_path / "d"), trust=trusted) == 40
    assert resumed.asked[HONEST, SnapshotRequest] == 0


async def test_a_snapshot_no_peer_serves_any_more_is_left_for_a_newer_one(tmp_path, monkeypatch):
    # The only peer offered height 40, then pruned it: every chunk it is asked for is
    # "not served". The sync gives the snapshot up and takes the peer's newer one.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 48)
    honest = server(source.store)
    pruned_40 = offered_40_then_pruned(honest)

    net = Net({HONEST: pruned_40})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, request_timeout_s=0.5) == 48
    assert net.asked[HONEST, SnapshotRequest] == 2 and net.dropped == {}
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


async def test_a_peer_whose_offer_went_unserved_is_not_taken_first_again(tmp_path, monkeypatch):
    # The hostile peer offers the newest final block (44: real, certified, no snapshot
    # height), then serves none of its state, nor does the honest peer, which pruned it
    # (it keeps few states besides its snapshots). The highest offer first, the sync
    # took 44 again after each give-up, wiping what it had fetched, for ever. The
    # offers of a peer whose offer went unserved now come after the others': the
    # honest snapshot (40) is synced. (The hostile peer stops offering after a few
    # rounds, so that the sync ends either way: it takes 44 once, not again and again.)
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 44)
    honest = server(source.store)
    offers = [0]

    def not_served(msg: ChunkRequest) -> ChunkResponse:
        return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())

    async def pruned_44(msg: Wire) -> Wire | None:
        if isinstance(msg, ChunkRequest) and msg.height == 44:
            return not_served(msg)
        return await honest.answer(msg)

    async def newest(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            offers[0] += 1
            if offers[0] > 3:
                return SnapshotOffer(0, b"", b"")
            return await honest.answer(SnapshotRequest(44))
        if isinstance(msg, ChunkRequest):
            return not_served(msg)
        return await honest.answer(msg)

    net = Net({HONEST: pruned_44, HOSTILE: newest})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=20, request_timeout_s=0.5) == 40
    # Asked for offers twice: 44 was taken and went unserved, then 40 was taken.
    assert net.asked[HOSTILE, SnapshotRequest] == 2
    assert net.dropped == {}
    assert dest.state_root(40) == source.store.state_root(40)


async def test_a_snapshot_served_by_a_dripping_peer_alone_is_left_for_another(
    tmp_path, monkeypatch
):
    # The hostile peer offers the newest final block (44: real, certified, no snapshot
    # height), which only it serves, a node per answer just inside the request timeout:
    # its request always out, nobody else serving the height, the sync stayed on it for
    # ever at a node per timeout. A target kept slower than STALL_MIN_BYTES in
    # STALL_WINDOW_S is now left like one nobody serves: the honest snapshot (40) is
    # synced.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    monkeypatch.setattr(statesync, "STALL_WINDOW_S", 1.5)
    monkeypatch.setattr(statesync, "STALL_MIN_BYTES", 4096)
    source = make_chain(tmp_path / "a", 44)
    honest = server(source.store)

    async def pruned_44(msg: Wire) -> Wire | None:
        if isinstance(msg, ChunkRequest) and msg.height == 44:
            return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())
        return await honest.answer(msg)

    async def dripping(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return await honest.answer(SnapshotRequest(44))
        real = await honest.answer(msg)
        if isinstance(real, ChunkResponse):
            await asyncio.sleep(0.4)
            return dataclasses.replace(real, nodes=real.nodes[:1])
        return real

    net = Net({HONEST: pruned_44, HOSTILE: dripping})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=30, request_timeout_s=0.5) == 40
    assert dest.state_root(40) == source.store.state_root(40)
    # Slow is no proven fault: the dripping peer stays connected.
    assert net.dropped == {}


async def test_a_block_offered_by_one_peer_alone_comes_after_the_one_others_offer(
    tmp_path, monkeypatch
):
    # The hostile peer offers the newest final block (44: real, certified, no snapshot
    # height), which honest peers prune soon, and drips its state just above the stall
    # floor. Taken first as the highest, it held the sync for hours once it was the only
    # server. The two honest peers offer their snapshot (40): the block most peers offer
    # comes first, and the hostile peer is never asked for a chunk of 44.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    monkeypatch.setattr(statesync, "STALL_WINDOW_S", 1.5)
    monkeypatch.setattr(statesync, "STALL_MIN_BYTES", 4096)
    source = make_chain(tmp_path / "a", 44)
    honest = server(source.store)
    asked_44: list[ChunkRequest] = []

    async def pruned_44(msg: Wire) -> Wire | None:
        if isinstance(msg, ChunkRequest) and msg.height == 44:
            return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())
        return await honest.answer(msg)

    async def dripping(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return await honest.answer(SnapshotRequest(44))
        if isinstance(msg, ChunkRequest) and msg.height == 44:
            asked_44.append(msg)
            await asyncio.sleep(0.4)
            real = await honest.answer(msg)
            assert isinstance(real, ChunkResponse)
            return dataclasses.replace(real, nodes=real.nodes[:1])
        return await honest.answer(msg)

    net = Net({HONEST: pruned_44, b"\x03" * 32: pruned_44, HOSTILE: dripping})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, timeout=30, request_timeout_s=0.5) == 40
    assert dest.state_root(40) == source.store.state_root(40)
    assert asked_44 == []


def _shifted(records: tuple[bytes, ...], serving_records: dict[int, bytes], first: int):
    """Each record replaced with the next epoch's: well formed, signed, and wrong."""
    return tuple(serving_records.get(e + 1, r) for e, r in enumerate(records, start=first))


@pytest.mark.parametrize("lie", ["shifted records", "another page"])
async def test_a_peer_sending_false_epoch_records_is_refused_and_the_walk_goes_on(
    tmp_path, monkeypatch, lie
):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    honest = server(source.store)
    every = await honest.answer(EpochsRequest(1, 64))
    assert isinstance(every, EpochsResponse)
    by_epoch = dict(enumerate(every.records, start=1))
    lied: list[int] = []

    async def hostile(msg: Wire) -> Wire | None:
        answer = await honest.answer(msg)
        if isinstance(answer, EpochsResponse) and answer.records:
            lied.append(answer.first)
            if lie == "shifted records":
                return EpochsResponse(
                    answer.first, _shifted(answer.records, by_epoch, answer.first)
                )
            return EpochsResponse(answer.first + 1, answer.records[1:])
        return answer

    async def slower(msg: Wire) -> Wire | None:
        if isinstance(msg, EpochsRequest):
            # The lie comes first (an honest page first would leave it unread: records
            # of epochs verified already are not looked at).
            await asyncio.sleep(0.3)
        return await honest.answer(msg)

    net = Net({HOSTILE: hostile, HONEST: slower})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest) == 40
    assert lied and HOSTILE in net.dropped and HONEST not in net.dropped
    reason = net.dropped[HOSTILE]
    assert ("record" in reason) if lie == "shifted records" else ("asked" in reason)
    # Only verified records were kept.
    producers = ValidatorSet.of(v.public_key for v in GENESIS.validators)
    for epoch in range(1, 40 // EPOCH):
        raw = dest.get_epoch_record(epoch)
        assert raw == by_epoch[epoch]
        producers = verify_epoch_record(GENESIS, epoch, raw, producers)


async def test_a_chain_without_staking_syncs_under_its_genesis_producers(tmp_path, monkeypatch):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    genesis = make_genesis(validators=3, staking=False)
    chain = Chain(ChainStore(tmp_path / "a"), genesis, build_registry())
    for h in range(1, 17):
        proposer = BY_PUB[chain.validators_for(h).proposer(h, 0)]
        executed = chain.build([], proposer, genesis.genesis_time_ms + h * 1000)
        keys = [BY_PUB[k] for k in chain.validators_for(h).keys]
        chain.commit(executed, make_commit(keys, genesis.chain_id, h, 0, executed.block.hash))
    serving = SnapshotServer(
        lambda: chain.store,
        genesis,
        INTERVAL,
        budget=ReadBudget(1e6, 1e6),
        node_budget=ReadBudget(1e6, 1e6),
    )
    net = Net({HONEST: serving.answer})
    dest = ChainStore(tmp_path / "b")
    net.syncer = StateSyncer(dest, genesis, net, request_timeout_s=1.0)
    assert await asyncio.wait_for(net.syncer.run(), 30) == 16
    assert net.asked[HONEST, EpochsRequest] == 0
    assert dict(dest.iter_state()) == dict(chain.store.iter_state())


async def test_a_server_answers_only_state_sync_requests(tmp_path):
    serving = server(make_chain(tmp_path / "a", 8).store)
    assert await serving.answer(SnapshotOffer(0, b"", b"")) is None


def test_a_read_budget_needs_a_rate_and_room_for_one_read():
    for rate, burst in ((0.0, 8.0), (-1.0, 8.0), (4.0, 0.5)):
        with pytest.raises(ValueError, match="a read budget needs"):
            ReadBudget(rate, burst)


async def test_a_damaged_stored_epoch_record_is_fetched_again_and_written_over(
    tmp_path, monkeypatch
):
    # A sync stopped after keeping its epoch records (before it began on the state);
    # then one of them was damaged on disk. The restarted sync verifies the stored
    # ones up to it, fetches the rest, and writes the good record over the bad one:
    # kept, it would be served to joiners, which would refuse this node for it.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 40)
    where = str(tmp_path / "b")
    real_write = Database.write

    def crashing(db: Database, batch: WriteBatch) -> None:
        if db.path.startswith(where) and dest.get_epoch_record(1) is not None:
            raise Crash  # the write after the records: the sync target's
        real_write(db, batch)

    dest = ChainStore(tmp_path / "b")
    monkeypatch.setattr(Database, "write", crashing)
    with pytest.raises(Crash):
        await Net({HONEST: server(source.store).answer}).sync(dest)
    monkeypatch.setattr(Database, "write", real_write)
    good = dest.get_epoch_record(3)
    assert good is not None and dest.sync_target() is None
    dest.put_epoch_record(3, good[:-1] + bytes([good[-1] ^ 1]), dest.epoch_set(3) or b"")
    dest.close()

    dest = ChainStore(tmp_path / "b")
    net = Net({HONEST: server(source.store).answer})
    assert await net.sync(dest) == 40
    assert dest.get_epoch_record(3) == good
    assert net.asked[HONEST, EpochsRequest] >= 1 and net.dropped == {}


async def test_a_sync_cancelled_as_an_answer_arrives_stops(tmp_path):
    # A node stopped (SIGTERM) while syncing cancels the sync once. An answer that
    # arrives in the same moment must not swallow that cancellation (Python 3.11's
    # ``asyncio.wait_for`` did, where the awaited read had just completed): the sync
    # would go on, and the node with it.
    source = make_chain(tmp_path / "a", 40)
    serving = server(source.store)
    held: list[ChunkRequest] = []

    async def holding_chunks(msg: Wire) -> Wire | None:
        if isinstance(msg, ChunkRequest):
            held.append(msg)  # answered by the test, at the moment it chooses
            return None
        return await serving.answer(msg)

    net = Net({HONEST: holding_chunks})
    syncer = net.syncer = StateSyncer(
        ChainStore(tmp_path / "b"), GENESIS, net, request_timeout_s=30.0
    )
    task = asyncio.get_running_loop().create_task(syncer.run())
    try:
        async with asyncio.timeout(10):
            while not held:
                await asyncio.sleep(0.001)
        answer = await serving.answer(held[0])
        assert answer is not None
        # The answer lands, the sync's read of it completes, and then the stop comes.
        assert syncer.deliver(HONEST, answer)
        await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the sync did not stop"
        assert task.cancelled()
    finally:
        task.cancel()
        for pending in list(net.tasks):
            pending.cancel()


def moving_from_40(serving: SnapshotServer, chunks_of_40: int) -> tuple[Answer, Counter[int]]:
    """A peer that offers 40 and serves its first ``chunks_of_40`` chunks, then prunes
    it (every chunk of 40 "not served") and offers its newer snapshot (48); and the chunk
    requests it was sent, by height."""
    asked: Counter[int] = Counter()

    async def answer(msg: Wire) -> Wire | None:
        if isinstance(msg, SnapshotRequest):
            return await serving.answer(SnapshotRequest(40) if asked[40] == 0 else msg)
        if isinstance(msg, ChunkRequest):
            asked[msg.height] += 1
            if msg.height == 40 and asked[40] > chunks_of_40:
                return ChunkResponse(msg.height, msg.subtree, msg.depth, msg.path, ())
        return await serving.answer(msg)

    return answer, asked


async def test_a_sync_whose_snapshot_goes_keeps_what_it_fetched_for_the_newer_one(
    tmp_path, monkeypatch
):
    # A snapshot is served for one to two intervals: a sync slower than that moved to
    # the newer snapshot wiping what it had fetched, started over from nothing each
    # time, and never ended. The subtrees it holds whole are kept: the newer tree names
    # most of them (a few keys change between 40 and 48), and only the rest is asked for.
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 48)
    fresh = Net({HONEST: server(source.store, chunk_bytes=256).answer})
    assert await fresh.sync(ChainStore(tmp_path / "fresh")) == 48
    from_nothing = fresh.asked[HONEST, ChunkRequest]

    answer, asked = moving_from_40(server(source.store, chunk_bytes=256), from_nothing * 2 // 3)
    net = Net({HONEST: answer})
    dest = ChainStore(tmp_path / "b")
    assert await net.sync(dest, request_timeout_s=0.3) == 48
    assert net.dropped == {}
    assert asked[40] > from_nothing * 2 // 3  # the snapshot went before it was synced
    assert 0 < asked[48] < from_nothing
    assert dest.head_root == source.store.state_root(48)
    assert dict(dest.iter_state()) == dict(source.store.iter_state())


async def test_a_sync_that_moved_to_a_newer_snapshot_and_crashed_resumes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(statesync, "OFFER_SETTLE_S", 0.0)
    source = make_chain(tmp_path / "a", 48)
    fresh = Net({HONEST: server(source.store, chunk_bytes=256).answer})
    assert await fresh.sync(ChainStore(tmp_path / "fresh")) == 48
    from_nothing = fresh.asked[HONEST, ChunkRequest]

    kept = from_nothing * 2 // 3
    answer, asked = moving_from_40(server(source.store, chunk_bytes=256), kept)
    dest = CrashOnChunk(tmp_path / "b", at=kept + 3)  # two chunks of 48 kept
    with pytest.raises(Crash):
        await Net({HONEST: answer}).sync(dest, request_timeout_s=0.3)
    assert asked[48] == 3
    dest.close()

    dest = ChainStore(tmp_path / "b")
    target = dest.sync_target()
    assert target is not None and target.height == 48
    again = Net({HONEST: server(source.store, chunk_bytes=256).answer})
    assert await again.sync(dest) == 48
    assert again.asked[HONEST, SnapshotRequest] == 0
    assert 0 < again.asked[HONEST, ChunkRequest] < from_nothing - 3
    assert dict(dest.iter_state()) == dict(source.store.iter_state())
