"""State sync: a new node starts from a peer's snapshot instead of replaying from genesis.

Protocol and trust model: docs/state-sync.md. In short:

1. **Offer.** Every connected peer is asked which snapshot it serves
   (``SnapshotRequest``); it answers with the final block at a snapshot height and
   that block's certificate (``SnapshotOffer``).
2. **Producers.** The producers of that height are derived as the light client
   does (cli/light.py): from genesis's set, epoch by epoch, each epoch's last
   header checked against its certificate under the set known so far and the next
   set proven against that header's state root (``EpochsRequest`` / epoch records,
   ``node.epoch_records``).
3. **Anchor.** The offered block's certificate must verify under those producers
   (and the block must be the operator's trusted one, when a trusted height and
   hash are configured). Its header's state root is the root every chunk is
   checked against.
4. **Chunks.** Subtrees of the state tree are fetched from any peer serving that
   snapshot and verified node by node (storage.snapshot); a peer whose chunk fails
   is dropped and banned, and its request goes to another peer.
5. **Install.** The last batch makes the block the store's head; then the node
   follows blocks through the consensus catch-up like any node that was away.

Everything a peer sends is checked before it is kept; the store holds nothing that
counts as state until step 5, and a restart resumes at the missing subtrees.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from consensus import validate_tx_root, verify_commit
from core import Block, Commit, DecodeError, Invalid, LiveLedgerError, StorageError, Wire
from genesis import Genesis
from node.config import PruningConfig
from node.epoch_records import EpochPages, Unheld, epoch_record, keep_epoch_record
from node.sync_rates import PeerRates
from p2p import (
    ChunkRequest,
    ChunkResponse,
    EpochsRequest,
    EpochsResponse,
    SnapshotOffer,
    SnapshotRequest,
)
from p2p.messages import MAX_EPOCHS_PER_RESPONSE
from storage import (
    BadChunk,
    ChainStore,
    DamagedTree,
    Subtree,
    SyncTarget,
    VerifiedChunk,
    node_ref,
    sync_root,
    verify_chunk,
)
from storage.snapshot import DEFAULT_CHUNK_BYTES

log = logging.getLogger("node.statesync")

# Missing subtrees looked up at once when resuming; the walk repeats if there are more.
_RESUME_BATCH = 1 << 16
# Installs refused in a row for damage found since the last walk (each followed by a
# walk and a fetch) before the sync gives up: a disk damaging what was just fetched, at
# every attempt, is the operator's to see, not to be hidden by fetching for ever.
INSTALL_TRIES = 5
# Before the first request for offers, the time given to the peers whose handshakes are
# still under way once one is up: a node starting asks all it can reach, not the first.
OFFER_SETTLE_S = 1.5
# A target whose chunks kept come slower than STALL_MIN_BYTES in STALL_WINDOW_S is left
# as one nobody serves (``_Stale``): a member offering a real block above every honest
# peer's snapshot, served by it alone a node per request timeout, held the sync on it
# for ever (its request always out, nobody else serving it). An honest server sends a
# chunk of ``snapshot_chunk_bytes`` (1 MiB by default) per request.
STALL_WINDOW_S = 60.0
STALL_MIN_BYTES = 256 * 1024
# Answers of one peer held unread at once. Each must be owed (one per request), but a
# request given up stays owed (a late answer is still drained): a peer silent on offers
# while the sync waited for a usable one was owed one more each round, and could send
# them all at once (up to a 16 MiB frame each) while the sync walked or installed its
# tree, reading none. An honest peer has one chunk, one page and one offer out at most.
MAX_QUEUED_ANSWERS = 4


class _Stale(Exception):
    """No peer serves the snapshot being synced any more, or too slowly to count
    (``STALL_MIN_BYTES``): move to another one (keeping what is held whole,
    ``ChainStore.begin_sync``)."""


def prune(
    store: ChainStore,
    genesis: Genesis,
    pruning: PruningConfig,
    height: int,
    keep: frozenset[int],
    stop: threading.Event | None = None,
) -> int:
    """One pruning pass at ``height`` (docs/node.md, Pruning): blocks and states below
    their windows, but the states of the heights in ``keep``; returns the tree nodes
    deleted.

    First the record of every epoch whose last block goes is kept: usually it was when
    that block committed, but not if the node stopped in between, nor for the block a
    state sync installed, and once its block or state is gone it can never be made.
    """
    blocks_below = height - pruning.keep_blocks + 1
    states_below = height - pruning.keep_states + 1
    if genesis.staking is not None:
        length = genesis.params.epoch_length
        # Epochs whose last block lies from the lowest kept height to the cut.
        first = max(store.block_base, store.state_base, 1)
        for epoch in range(-(-first // length), -(-max(blocks_below, states_below) // length)):
            keep_epoch_record(store, epoch, length)
    store.prune_blocks(blocks_below, stop)
    return store.prune_states(states_below, keep, stop)


class SyncPeers(Protocol):
    """What the syncer needs from p2p."""

    def peers(self) -> list[bytes]: ...

    def send(self, peer: bytes, msg: Wire) -> bool: ...

    def drop_peer(self, peer: bytes, reason: str, *, ban: bool = True) -> None: ...


# --- serving -----------------------------------------------------------------------


class ReadBudget:
    """Reads each peer may have: ``rate`` a second, ``burst`` at once (a token bucket),
    each worth up to ``read_bytes`` of answer.

    ``wait_s(peer)`` takes a read and says how long to wait before serving it: 0 within
    the budget, else until the peer's bucket holds it again. A serving node waits that
    long before it answers, and p2p hands it one message of a peer at a time, so a peer
    asking faster is slowed to the rate, whatever it asks; other peers are not.
    ``charge(peer, nbytes)`` then takes the reads an answer's bytes make beyond the
    first: a peer is sent at most ``rate * read_bytes`` a second, whatever it asks for.
    Buckets of peers idle long enough to have refilled are forgotten as others come.
    """

    # Peers kept before idle ones are forgotten.
    KEEP = 64

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        read_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if rate <= 0 or burst < 1 or read_bytes < 1:
            raise ValueError(
                f"a read budget needs rate > 0, burst >= 1 and read_bytes >= 1, "
                f"got {rate}, {burst}, {read_bytes}"
            )
        self.rate, self.burst, self.read_bytes = rate, burst, read_bytes
        self._clock = clock
        # Peer -> (tokens, when they were counted); tokens below 0 are reads owed.
        self._buckets: dict[object, tuple[float, float]] = {}

    def wait_s(self, peer: object) -> float:
        return self._take(peer, 1)

    def charge(self, peer: object, nbytes: int) -> None:
        """Take the reads that an answer of ``nbytes`` sent to ``peer`` makes beyond the
        one ``wait_s`` took: its next read waits for them."""
        extra = -(-nbytes // self.read_bytes) - 1
        if extra > 0:
            self._take(peer, extra)

    def _take(self, peer: object, reads: int) -> float:
        now = self._clock()
        tokens, then = self._buckets.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate) - reads
        if len(self._buckets) >= self.KEEP and peer not in self._buckets:
            # Only a bucket that has refilled (debt paid) is as good as a new one.
            self._buckets = {
                p: (t, at)
                for p, (t, at) in self._buckets.items()
                if (now - at) * self.rate < self.burst - t
            }
        self._buckets[peer] = (tokens, now)
        return 0.0 if tokens >= 0 else -tokens / self.rate


class SnapshotServer:
    """Answers peers' state sync requests from the store (reads run in a worker thread;
    p2p hands one message of a peer at a time, so a peer costs one read at a time, and
    at most ``READERS`` reads run at once, whichever peers ask). A peer gets at most
    ``PEER_READS_PER_S`` reads a second (``PEER_READS_BURST`` at once): a chunk's read
    walks ~1 MiB of tree nodes in Python (~60 ms at 200k keys), and a request of ~100
    bytes asked again and again would otherwise keep a reader busy at no cost. A read is
    worth a chunk's bytes (1 MiB at least): an answer bigger than that costs the reads
    its bytes make (``ReadBudget.charge``). An offer is a whole block, up to
    ``max_block_bytes`` (8 MiB), at any height the store holds: counted as one read, a
    member asking for offers in a loop was sent 32 MiB a second (64 MiB at once), where
    a joiner takes one offer a peer per attempt.

    All peers together get at most ``NODE_READS_PER_S`` reads a second
    (``NODE_READS_BURST`` at once), taken once a peer's own budget lets its read go:
    each peer's budget bounds what it costs, but not what several cost together, and
    reads hold the GIL the consensus thread needs (several members asking at their
    rate kept both readers busy: two threads of Python beside the chain's)."""

    # Reads at once: they share the loop's default executor with the HTTP routes and
    # the feeds, which many peers asking together must not crowd out. A peer waiting
    # for a reader is not read from meanwhile (TCP backpressure).
    READERS = 2
    # A joiner of a 1M-key state (~200 chunks) asking one peer takes ~50 s at this rate;
    # it asks every peer that offered the snapshot.
    PEER_READS_PER_S = 4.0
    PEER_READS_BURST = 8.0
    # Every peer's reads together: twice one peer's, so that one member asking at its
    # rate leaves as much again to the others (a joiner asks every peer that offered).
    NODE_READS_PER_S = 8.0
    NODE_READS_BURST = 16.0

    def __init__(
        self,
        store: Callable[[], ChainStore | None],
        genesis: Genesis,
        snapshot_interval: int,
        chunk_filter: Callable[[list[bytes]], list[bytes]] | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        budget: ReadBudget | None = None,
        node_budget: ReadBudget | None = None,
    ) -> None:
        self._store = store
        self._chunk_bytes = chunk_bytes
        self._genesis = genesis
        self._interval = snapshot_interval
        # Tests only (a hostile server): see ConsensusSeams.snapshot_chunk.
        self._chunk_filter = chunk_filter
        self._readers = asyncio.Semaphore(self.READERS)
        self.budget = budget or ReadBudget(
            self.PEER_READS_PER_S,
            self.PEER_READS_BURST,
            read_bytes=max(chunk_bytes, DEFAULT_CHUNK_BYTES),
        )
        # One bucket (key None) for every peer's reads.
        self.node_budget = node_budget or ReadBudget(
            self.NODE_READS_PER_S,
            self.NODE_READS_BURST,
            read_bytes=max(chunk_bytes, DEFAULT_CHUNK_BYTES),
        )

    def snapshot_heights(self, head: int) -> tuple[int, ...]:
        """The snapshot heights a node at ``head`` serves (and pruning keeps): the two
        latest multiples of the snapshot interval."""
        latest = head // self._interval * self._interval
        return tuple(h for h in (latest, latest - self._interval) if h > 0)

    async def answer(self, msg: object, peer: object = None) -> Wire | None:
        """The answer to a state sync request (None for any other message), after the
        wait ``peer``'s read budget asks for.

        Never raises: what this store cannot serve (it is syncing itself, or the height
        was pruned while being read) is answered "none", which is no fault of the asker
        (an ``Invalid`` would get it dropped) nor silence (it would give up on us).
        """
        read: Callable[[ChainStore], Wire]
        none: Wire
        if isinstance(msg, SnapshotRequest):
            read, none = partial(self._offer, height=msg.height), SnapshotOffer(0, b"", b"")
        elif isinstance(msg, EpochsRequest):
            read, none = partial(self._epochs, req=msg), EpochsResponse(msg.first, ())
        elif isinstance(msg, ChunkRequest):
            none = _answer(msg, ())
            try:
                place = _place(msg)
            except DecodeError:
                return none  # a place no tree has: nothing there, and nothing to log
            read = partial(self._chunk, req=msg, place=place)
        else:
            return None
        wait_s = self.budget.wait_s(peer)
        if wait_s:
            await asyncio.sleep(wait_s)
        # Taken only now that the peer's own budget lets the read go: a peer asking
        # past its budget does not hold the node's reads while it waits for its own.
        wait_s = self.node_budget.wait_s(None)
        if wait_s:
            await asyncio.sleep(wait_s)
        store = self._store()
        if store is None or not store.initialized:
            return none
        try:
            async with self._readers:
                answer = await asyncio.get_running_loop().run_in_executor(None, read, store)
        except LiveLedgerError as exc:
            log.warning("state sync: not serving %s: %s", type(msg).__name__, exc)
            return none
        nbytes = answer_bytes(answer)
        self.budget.charge(peer, nbytes)
        self.node_budget.charge(None, nbytes)
        return answer

    def _offer(self, store: ChainStore, height: int) -> SnapshotOffer:
        heights = self.snapshot_heights(store.height) if height == 0 else (height,)
        for h in heights:
            if 0 < h <= store.height and self._servable(store, h):
                # As stored, checked against each other (a damaged one is not served).
                try:
                    found = store.get_encoded_block(h)
                except StorageError as exc:
                    # The older snapshot may still be whole: offer it rather than none.
                    log.error("state sync: snapshot block %d not offered: %s", h, exc)
                    continue
                if found is not None:
                    return SnapshotOffer(h, *found)
        return SnapshotOffer(0, b"", b"")

    def _servable(self, store: ChainStore, height: int) -> bool:
        try:
            store.state_root(height)
        except LiveLedgerError:
            return False
        return True

    def _epochs(self, store: ChainStore, req: EpochsRequest) -> EpochsResponse:
        length = self._genesis.params.epoch_length
        records: list[bytes] = []
        count = min(req.count, MAX_EPOCHS_PER_RESPONSE)
        for epoch in range(max(req.first, 1), max(req.first, 1) + count):
            if epoch * length > store.height:
                break
            raw = epoch_record(store, epoch, length)
            if raw is None:
                break
            records.append(raw)
        return EpochsResponse(req.first, tuple(records))

    def _chunk(self, store: ChainStore, req: ChunkRequest, place: Subtree) -> ChunkResponse:
        if not self._servable(store, req.height):
            return _answer(req, ())
        nodes = store.snapshot_chunk(req.height, place, self._chunk_bytes)
        if self._chunk_filter is not None:
            nodes = self._chunk_filter(nodes)
        return _answer(req, tuple(nodes))


def answer_bytes(answer: Wire) -> int:
    """The bytes a state sync answer carries (what ``ReadBudget.charge`` counts)."""
    if isinstance(answer, SnapshotOffer):
        return len(answer.block) + len(answer.commit)
    if isinstance(answer, EpochsResponse):
        return sum(len(r) for r in answer.records)
    if isinstance(answer, ChunkResponse):
        return sum(len(n) for n in answer.nodes)
    return 0


def _place(msg: ChunkRequest) -> Subtree:
    return Subtree(msg.depth, msg.path, msg.subtree)


def _answer(req: ChunkRequest, nodes: tuple[bytes, ...]) -> ChunkResponse:
    return ChunkResponse(req.height, req.subtree, req.depth, req.path, nodes)


# --- syncing -----------------------------------------------------------------------


@dataclass
class _ChunkAsk:
    """A chunk request out to a peer. ``live`` until another peer's answer to the same
    subtree was kept: the later answer is then not needed (a hedge lost the race)."""

    subtree: Subtree
    sent: float
    live: bool = True


class StateSyncer(EpochPages):
    """Runs one state sync to completion on the node's loop (``run``); p2p hands it the
    answers (``deliver``).

    Against slow and hostile peers (docs/state-sync.md, Slow and hostile peers): every
    usable peer has a request out (epoch pages and chunks alike), the fastest are asked
    first (``PeerRates``), an idle peer asks again what a slower one holds (the first
    answer wins), a peer that said it serves nothing is asked again later, and what a
    peer provably did wrong gets it refused (dropped and banned)."""

    def __init__(
        self,
        store: ChainStore,
        genesis: Genesis,
        peers: SyncPeers,
        *,
        trust_height: int = 0,
        trust_hash: bytes = b"",
        request_timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.peers = peers
        self.trust_height = trust_height
        self.trust_hash = trust_hash
        self.timeout = request_timeout_s
        # (peer, answer, when it arrived): a peer is judged by when its answer came, not
        # by when the sync, busy with its own work meanwhile, got to it.
        self._answers: asyncio.Queue[tuple[bytes, Wire, float]] = asyncio.Queue()
        # Answers owed, per (peer, answer type): one per request sent. Only those are
        # queued, so what a peer can make us hold is bounded by what we asked it, and by
        # ``MAX_QUEUED_ANSWERS`` at once (``_queued``, per peer).
        self._owed: dict[tuple[bytes, type[Wire]], int] = {}
        self._queued: dict[bytes, int] = {}
        # Peers refused: caught sending something wrong (never asked again during this
        # sync), or given up for silence.
        self.refused: set[bytes] = set()
        # Those given up only for silence, which proves no fault (the link or the server
        # stalled; a stall of our own link times every peer out at once): asked again
        # when no other peer is left or serves (``_forgive_silent``).
        self._silent: set[bytes] = set()
        # Peers refused or given up so far: each gives the peers that said they hold
        # nothing another chance.
        self._failures = 0
        self.rates = PeerRates()
        # The highest snapshot each peer offered: it must hold the epoch records up to
        # there (it made their last block's state, or kept them since).
        self._offered: dict[bytes, int] = {}
        # Peers whose snapshot offer went unserved (given up when no peer served it any
        # more), and those that made the offer being synced: an offer of the former is
        # tried after every other's. Else one that offers the newest final block (no
        # snapshot height: the others prune it soon) and serves none of it was taken
        # first again after each give-up, wiping what was fetched, for ever.
        self._unserved: set[bytes] = set()
        self._offerers: set[bytes] = set()
        # Epoch pages out and the producer sets verified so far (``EpochPages``).
        super().__init__()
        # The subtrees held whole from the targets this sync left, by hash: a chunk
        # naming one names the subtree held (``verify_chunk``).
        self._held: Callable[[bytes], bytes | None] | None = None
        self.chunks = 0
        self.chunk_bytes = 0

    def deliver(self, peer: bytes, msg: Wire) -> bool:
        """Queue an answer of ``peer`` for the sync; False (dropped) if none was owed, or
        if ``MAX_QUEUED_ANSWERS`` of its answers are queued unread already."""
        key = (peer, type(msg))
        owed = self._owed.get(key, 0)
        if owed == 0:
            return False
        if owed == 1:
            del self._owed[key]
        else:
            self._owed[key] = owed - 1
        queued = self._queued.get(peer, 0)
        if queued >= MAX_QUEUED_ANSWERS:
            return False
        self._queued[peer] = queued + 1
        self._answers.put_nowait((peer, msg, time.monotonic()))
        return True

    def _ask(self, peer: bytes, msg: Wire, answer: type[Wire]) -> bool:
        """Send a request; its answer (of type ``answer``) is owed from then on."""
        if not self.peers.send(peer, msg):
            return False
        key = (peer, answer)
        self._owed[key] = self._owed.get(key, 0) + 1
        self.rates.asked(peer)
        return True

    def _refuse(self, peer: bytes, reason: str, *, silent: bool = False) -> None:
        if peer in self.refused:
            return
        log.warning("state sync: peer %s refused: %s", peer.hex()[:12], reason)
        self.refused.add(peer)
        if silent:
            self._silent.add(peer)
        self._failures += 1
        self.peers.drop_peer(peer, f"state sync: {reason}", ban=True)

    def _usable(self) -> list[bytes]:
        usable = [p for p in self.peers.peers() if p not in self.refused]
        if not usable and self._forgive_silent():
            usable = [p for p in self.peers.peers() if p not in self.refused]
        return usable

    def _forgive_silent(self) -> bool:
        """Take back the connected peers given up only for silence; whether there were
        any. Called when no other peer is left, or none of those left serves what the
        sync needs: refused for the rest of the sync, one stall past the request timeout
        left it waiting for ever, with its peers back and serving."""
        back = [p for p in self.peers.peers() if p in self._silent]
        if back:
            log.info("state sync: asking again %d peer(s) given up for silence", len(back))
            self._silent.difference_update(back)
            self.refused.difference_update(back)
        return bool(back)

    async def _next_answer(self, wait_s: float) -> tuple[bytes, Wire, float] | None:
        """The next answer queued, or None after ``wait_s``."""
        # Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that comes
        # as the read completes, and a node stopped while syncing would sync on.
        try:
            async with asyncio.timeout(wait_s):
                answer = await self._answers.get()
        except TimeoutError:
            return None
        peer = answer[0]
        if self._queued[peer] == 1:
            del self._queued[peer]
        else:
            self._queued[peer] -= 1
        return answer

    async def run(self) -> int:
        """Sync, install, return the height synced to."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        target = self.store.sync_target()
        if target is not None and not self._trusted(target):
            # Configured since the sync began (an operator's answer to an incident, say):
            # the stored target is no longer taken on its own word. ``begin_sync`` keeps
            # only the subtrees it holds whole: each is checked by its hash wherever the
            # trusted tree names it, and the install walks the whole tree again.
            log.warning(
                "state sync: the sync in progress is to height %d, not the trusted %d/%s; "
                "starting again from the trusted block",
                target.height,
                self.trust_height,
                self.trust_hash.hex()[:16],
            )
            target = None
        if target is not None:
            log.info("state sync: resuming the sync to height %d", target.height)
        damaged = 0  # DamagedTree met in a row, by a fetch's walk or the install
        while True:
            if target is None:
                target = await self._choose_target()
                await loop.run_in_executor(None, self.store.begin_sync, target)
                held = await loop.run_in_executor(None, self.store.held_refs)
                if held:
                    log.info(
                        "state sync: moved to height %d keeping %d subtree(s) held whole",
                        target.height,
                        len(held),
                    )
            try:
                await self._fetch(target)
                height = await loop.run_in_executor(None, self.store.finish_sync, self.genesis.hash)
                break
            except _Stale as exc:
                log.warning(
                    "state sync: %s", exc or f"no peer serves height {target.height} any more"
                )
                self._unserved |= self._offerers
                target = None
            except DamagedTree as exc:
                # A node damaged (or gone) since the last walk: the install refuses it
                # (or the drop finds its path changed), and the next walk drops it to be
                # fetched again. Raised, it took the node down at start, up again only
                # if something restarted it.
                damaged += 1
                if damaged >= INSTALL_TRIES:
                    raise StorageError(
                        f"state sync: the state tree in {self.store.path} was found damaged "
                        f"since the last walk {damaged} times in a row, walked and fetched "
                        f"again after each; the disk may be failing (the last: {exc})"
                    ) from exc
                log.warning(
                    "state sync: the state tree was found damaged since the last walk "
                    "(%s); walking and fetching again",
                    exc,
                )
        log.info(
            "state sync: installed height %d (%d chunks, %d bytes) in %.1f s",
            height,
            self.chunks,
            self.chunk_bytes,
            time.monotonic() - started,
        )
        return height

    async def _wait_peers(self, settle_s: float = 0.0) -> list[bytes]:
        """The usable peers, once there is one; ``settle_s`` more for the handshakes
        still under way (asked for offers, every peer counts: the best height, and one
        hostile peer's answer is not the only one)."""
        while not self._usable():
            await asyncio.sleep(0.2)
        if settle_s:
            await asyncio.sleep(settle_s)
        return self._usable()

    async def _collect(
        self, kind: type[Wire], asked: set[bytes], timeout: float
    ) -> list[tuple[bytes, Wire]]:
        """Answers of ``kind`` from the peers in ``asked`` until each answered or ``timeout``."""
        got: list[tuple[bytes, Wire]] = []
        deadline = time.monotonic() + timeout
        while asked and (left := deadline - time.monotonic()) > 0:
            answer = await self._next_answer(left)
            if answer is None:
                break
            peer, msg, _ = answer
            await self._late_page(answer)
            if isinstance(msg, kind) and peer in asked:
                asked.discard(peer)
                got.append((peer, msg))
        return got

    async def _choose_target(self) -> SyncTarget:
        settle_s = OFFER_SETTLE_S
        while True:
            peers = await self._wait_peers(settle_s)
            settle_s = 0.0
            for peer in peers:
                self._ask(peer, SnapshotRequest(self.trust_height), SnapshotOffer)
            offers: list[tuple[bytes, SnapshotOffer]] = []
            for peer, offer in await self._collect(SnapshotOffer, set(peers), self.timeout):
                if isinstance(offer, SnapshotOffer) and offer.height > 0:
                    offers.append((peer, offer))
                    self._offered[peer] = max(self._offered.get(peer, 0), offer.height)
            # The block most peers offer first, the highest of those, and after every
            # other those of peers whose offer went unserved in this sync. Honest peers
            # offer their latest snapshot height, the same block: a member offering a
            # higher block no other offers (real, certified, which honest peers prune
            # within their keep_states) was taken first, and once it was the only
            # server, could drip its state just above STALL_MIN_BYTES for hours.
            offered = Counter(o.block for _, o in offers)
            for peer, offer in sorted(
                offers,
                key=lambda po: (po[0] in self._unserved, -offered[po[1].block], -po[1].height),
            ):
                if peer in self.refused:
                    continue  # caught checking a higher offer
                try:
                    target = await self._check_offer(peer, offer)
                except Unheld as exc:
                    log.info("state sync: offer at %d set aside: %s", offer.height, exc)
                except Invalid as exc:
                    self._refuse(peer, f"snapshot offer at {offer.height}: {exc}")
                else:
                    self._offerers = {p for p, o in offers if o.block == offer.block}
                    return target
            log.info("state sync: no usable snapshot offered yet; asking again")
            self._forgive_silent()
            await asyncio.sleep(1.0)

    def _trusted(self, target: SyncTarget) -> bool:
        """Whether ``target`` (a stored sync's) is the configured trust point, if any."""
        if not self.trust_height:
            return True
        try:
            block_hash = Block.decode(target.block).hash
        except DecodeError:
            return False
        return target.height == self.trust_height and block_hash == self.trust_hash

    async def _check_offer(self, peer: bytes, offer: SnapshotOffer) -> SyncTarget:
        block = Block.decode(offer.block)
        commit = Commit.decode(offer.commit)
        header = block.header
        if header.height != offer.height or header.chain_id != self.genesis.chain_id:
            raise Invalid(f"offered block is {header.chain_id}/{header.height}")
        if self.trust_height and (
            offer.height != self.trust_height or block.hash != self.trust_hash
        ):
            raise Invalid(
                f"offered block {offer.height}/{block.hash.hex()[:16]} is not the trusted "
                f"{self.trust_height}/{self.trust_hash.hex()[:16]}"
            )
        validate_tx_root(block)
        producers = await self._producers_at(offer.height)
        verify_commit(commit, self.genesis.chain_id, offer.height, block.hash, producers)
        log.info(
            "state sync: snapshot at height %d (block %s) certified; fetching its state",
            offer.height,
            block.hash.hex()[:16],
        )
        return SyncTarget(offer.height, header.state_root, offer.block, offer.commit)

    # --- chunks ----------------------------------------------------------------------

    async def _fetch(self, target: SyncTarget) -> None:
        loop = asyncio.get_running_loop()
        # Subtrees held whole from the targets this sync left: not asked for again.
        self._held = await loop.run_in_executor(None, self.store.held_lookup)
        wanted = await self._lacking(target)
        pending: dict[bytes, _ChunkAsk] = {}
        # Peers that answered this snapshot with nothing: peer -> when. Asked again
        # after the request timeout, at once when another peer fails, or when no other
        # is left; with nothing stored since their second "nothing", they count as not
        # serving it (``strikes``), and when no peer serves it the sync moves on.
        empty: dict[bytes, float] = {}
        strikes: dict[bytes, int] = {}
        # Peers given up for silence were taken back before giving the snapshot up, since
        # the last chunk kept: once, or one silent for ever (and back at once each time)
        # would keep the sync on a snapshot nobody serves.
        forgave = False
        failures = self._failures
        # The bytes kept since the stall window began (``STALL_MIN_BYTES``).
        window_from, window_base = time.monotonic(), self.chunk_bytes
        while wanted or any(a.live for a in pending.values()):
            now = time.monotonic()
            if now - window_from >= STALL_WINDOW_S:
                kept = self.chunk_bytes - window_base
                if kept < STALL_MIN_BYTES:
                    raise _Stale(
                        f"height {target.height} served at {kept} bytes in "
                        f"{now - window_from:.0f} s; trying another snapshot"
                    )
                window_from, window_base = now, self.chunk_bytes
            if self._failures != failures:
                failures = self._failures
                empty.clear()
            self._ask_chunks(target.height, wanted, pending, empty, now)
            usable = self._usable()
            if wanted and not pending and usable and all(p in empty for p in usable):
                if all(strikes.get(p, 0) >= 2 for p in usable):
                    if forgave or not self._forgive_silent():
                        raise _Stale
                    forgave = True
                empty.clear()
                continue
            answer = await self._next_answer(0.5)
            if answer is not None:
                peer, msg, arrived = answer
                await self._late_page(answer)
                ask = pending.get(peer)
                # Anything else is a late answer to an earlier request: ignored.
                if (
                    ask is not None
                    and isinstance(msg, ChunkResponse)
                    and msg.height == target.height
                    and (msg.subtree, msg.depth, msg.path)
                    == (ask.subtree.hash, ask.subtree.depth, ask.subtree.path)
                ):
                    del pending[peer]
                    if not msg.nodes:
                        if ask.live:
                            empty[peer] = time.monotonic()
                            strikes[peer] = strikes.get(peer, 0) + 1
                            self._give_back(ask, wanted, pending)
                    elif await self._take_chunk(target, peer, ask, msg, arrived, wanted, pending):
                        strikes.clear()
                        forgave = False
                        if not wanted and not any(a.live for a in pending.values()):
                            # The walk may have been cut at _RESUME_BATCH: look again.
                            wanted = await self._lacking(target)
                            # Our own walk is not the servers' time.
                            window_from = time.monotonic()
            if self._answers.empty():
                self._expire_chunks(wanted, pending, time.monotonic())

    async def _lacking(self, target: SyncTarget) -> list[Subtree]:
        """Up to ``_RESUME_BATCH`` subtrees the store lacks, as ``wanted`` takes them: a
        stack, so the leftmost last (the walk goes left to right, which a move's kept
        subtrees rely on: docs/state-sync.md, A new target)."""
        lacking = await asyncio.get_running_loop().run_in_executor(
            None, self.store.missing_nodes, sync_root(target), _RESUME_BATCH
        )
        lacking.reverse()
        return lacking

    def _ask_chunks(
        self,
        height: int,
        wanted: list[Subtree],
        pending: dict[bytes, _ChunkAsk],
        empty: dict[bytes, float],
        now: float,
    ) -> None:
        """Give each idle peer, fastest first, a subtree wanted, or when none is left the
        oldest one a slower peer holds (the first answer is kept)."""
        usable = self._usable()
        idle = [
            p
            for p in usable
            if p not in pending and (p not in empty or now - empty[p] >= self.timeout)
        ]
        for peer in self.rates.order(idle, usable, anyone=not pending):
            hedge = not wanted
            if wanted:
                subtree = wanted.pop()
            else:
                held = sorted(
                    (a.sent, a.subtree.depth, p)
                    for p, a in pending.items()
                    if a.live and self.rates.outpaces(peer, p)
                )
                if not held:
                    continue
                subtree = pending[held[0][2]].subtree
            ask_for = ChunkRequest(height, subtree.hash, subtree.depth, subtree.path)
            if self._ask(peer, ask_for, ChunkResponse):
                empty.pop(peer, None)
                pending[peer] = _ChunkAsk(subtree, time.monotonic())
            elif not hedge:
                wanted.append(subtree)

    def _give_back(
        self, ask: _ChunkAsk, wanted: list[Subtree], pending: dict[bytes, _ChunkAsk]
    ) -> None:
        """An unanswered subtree is wanted again, unless another peer still has it."""
        if not any(a.live and a.subtree == ask.subtree for a in pending.values()):
            wanted.append(ask.subtree)

    async def _take_chunk(
        self,
        target: SyncTarget,
        peer: bytes,
        ask: _ChunkAsk,
        msg: ChunkResponse,
        arrived: float,
        wanted: list[Subtree],
        pending: dict[bytes, _ChunkAsk],
    ) -> bool:
        """Verify a chunk, rate its sender by it, and keep it if no other answer to its
        subtree was kept first; True if kept (``wanted`` takes what it lacks).

        The sender is rated by what verified only, an answer to a lost hedge included
        (verified for that alone): a rating taken on the bytes as they came made a peer
        sending garbage fast the fastest, and the honest peers "slow" beside it, asked
        once in 16 answers; where its answers were not used (a hedge another peer won)
        it was never even caught. A chunk that fails gets its sender refused, used or
        not: it answers our request with nodes that are not the subtree we named."""
        loop = asyncio.get_running_loop()
        try:
            chunk = await loop.run_in_executor(
                None, verify_chunk, ask.subtree, list(msg.nodes), target.height, self._held
            )
        except BadChunk as exc:
            if ask.live:
                self._give_back(ask, wanted, pending)
            self._refuse(peer, str(exc))
            return False
        self.rates.answered(peer, sum(len(n) for n in msg.nodes), arrived - ask.sent)
        if not ask.live:
            return False
        for other in pending.values():
            if other.subtree == ask.subtree:
                other.live = False
        missing = await loop.run_in_executor(None, self._keep, target.height, chunk)
        self.chunks += 1
        self.chunk_bytes += sum(len(n) for n in msg.nodes)
        wanted.extend(reversed(missing))
        return True

    def _keep(self, height: int, chunk: VerifiedChunk) -> list[Subtree]:
        """Store a verified chunk of the snapshot at ``height``; return the subtrees it
        leaves missing whose top the store lacks (in the chunk's order).

        A top stored already is not asked for: a damaged node of the target, dropped and
        fetched again, names the subtrees below it, which are still there (the root's
        names the whole state, fetched a second time at each repair). Whatever is missing
        below such a top is found by the walk once nothing is wanted (``_lacking``), as
        after a restart: a node stored at the target's height has its leaves' flat state
        stored before it (``ChainStore.store_chunk``)."""
        self.store.store_chunk(chunk.nodes, chunk.leaves)
        get = self.store.get_node_bytes
        return [w for w in chunk.missing if get(node_ref(height, w.hash)) is None]

    def _expire_chunks(
        self, wanted: list[Subtree], pending: dict[bytes, _ChunkAsk], now: float
    ) -> None:
        """A peer that went away or stays silent: its request goes elsewhere. Judged only
        with no answer queued (one that came in time waited behind our own work)."""
        connected = set(self.peers.peers())
        for peer, ask in list(pending.items()):
            gone = peer not in connected
            if gone or now - ask.sent > self.timeout:
                del pending[peer]
                if ask.live:
                    self._give_back(ask, wanted, pending)
                if not gone:
                    self._refuse(peer, f"no chunk within {self.timeout:g} s", silent=True)
