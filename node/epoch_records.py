"""Epoch records: what proves each epoch's producers, and how a state sync gets them.

Step 2 of a state sync (docs/state-sync.md; ``node.statesync``). The record of epoch
``e`` (``EpochRecord``) is the last header of epoch ``e - 1``, its certificate, and the
producer set of epoch ``e`` proven against that header's state root. Every node keeps
the records for good (``keep_epoch_record``: at each epoch's last block, and before
pruning drops it) and serves them (``epoch_record``, through
``node.statesync.SnapshotServer``). A joining node derives the producers of an offered
snapshot's height from genesis's set, record by record (``verify_epoch_record``), as
the light client does (cli/light.py).

Each record is stored with the hash of the set it proves, indexed so that a light
client's "next change of producers after epoch e" (``GET /v1/epochs/{e}/next-change``)
is two seeks (``ChainStore.next_set_change``); ``index_epoch_sets`` indexes, once, a
store written before the index.

``EpochPages`` is that walk inside ``node.statesync.StateSyncer`` (one of its bases):
pages of records asked of every usable peer, the fastest first, verified in a worker
thread, and kept a page per synced write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from consensus import ValidatorSet, epoch_of, verify_commit
from consensus.staking_state import ProducerSet, producer_set_key
from core import BlockHeader, Commit, DecodeError, Invalid, MaxLen, Wire
from genesis import Genesis
from node.sync_rates import PeerRates
from p2p import EpochsRequest, EpochsResponse
from p2p.messages import MAX_COMMIT_BYTES, MAX_EPOCHS_PER_RESPONSE
from storage import ChainStore, Pruned, StateProof
from storage import verify_proof as verify_state_proof

if TYPE_CHECKING:
    from node.statesync import SyncPeers

# The state sync's logger: what this module logs is a step of the sync.
log = logging.getLogger("node.statesync")


class Unheld(Exception):
    """No usable peer holds the epoch records an offer needs. No fault of the offer's
    sender: connected, it would have been refused for its short page; it went away."""


@dataclass(frozen=True, slots=True)
class EpochRecord(Wire):
    """What proves the producers of epoch ``e``: the last header of epoch ``e - 1``
    (height ``e * epoch_length``), its certificate, and the producer set of epoch
    ``e`` with its proof against that header's state root. Kept for good by every
    node (a few KiB per epoch), so pruned and state-synced nodes serve them too."""

    header: Annotated[bytes, MaxLen(64 * 1024)]
    commit: Annotated[bytes, MaxLen(MAX_COMMIT_BYTES)]
    producers: Annotated[bytes, MaxLen(16 * 1024)]
    proof: Annotated[bytes, MaxLen(StateProof.MAX_ENCODED)]

    MAX_ENCODED = 64 * 1024 + MAX_COMMIT_BYTES + 16 * 1024 + StateProof.MAX_ENCODED + 64


def make_epoch_record(store: ChainStore, epoch: int, epoch_length: int) -> EpochRecord | None:
    """The record of ``epoch`` from the stored block and state at its boundary (None if
    this store no longer or never held them)."""
    boundary = epoch * epoch_length
    block = store.get_block(boundary)
    commit = store.get_commit(boundary)
    if block is None or commit is None or boundary < store.state_base:
        return None
    value, proof, _ = store.prove(producer_set_key(epoch), boundary)
    if value is None:
        return None
    return EpochRecord(block.header.encode(), commit.encode(), value, proof.encode())


def epoch_record(store: ChainStore, epoch: int, epoch_length: int) -> bytes | None:
    """The encoded record of ``epoch``: kept, or made from the block and state."""
    stored = store.get_epoch_record(epoch)
    if stored is not None:
        return stored
    try:
        record = make_epoch_record(store, epoch, epoch_length)
    except Pruned:
        record = None
    if record is None:
        # Pruning keeps the record before it drops the block and state it is made of: a
        # pass since the look above kept it. A joiner refuses a server whose page lacks
        # a record its own offer needs.
        return store.get_epoch_record(epoch)
    return record.encode()


def record_set_hash(raw: bytes) -> bytes:
    """The hash of the producer set an encoded record proves (``ValidatorSet.hash``, as
    headers name it): what the store indexes, so that ``next_set_change`` is a seek.
    Raises ``DecodeError`` for a record that does not decode."""
    record = EpochRecord.decode(raw)
    return ProducerSet.decode(record.producers).validator_set().hash


def keep_epoch_record(store: ChainStore, epoch: int, epoch_length: int) -> None:
    """Store the record of ``epoch`` for good, unless it is stored or cannot be made."""
    if store.get_epoch_record(epoch) is None:
        record = make_epoch_record(store, epoch, epoch_length)
        if record is not None:
            producers = ProducerSet.decode(record.producers).validator_set()
            store.put_epoch_record(epoch, record.encode(), producers.hash)


# Records indexed per synced write when a store written before the index is opened.
_INDEX_PAGE = 4096


def index_epoch_sets(store: ChainStore, genesis: Genesis) -> int:
    """Index the producer set of every stored record, once, for a store written before
    the index existed (then mark it done); and epoch 0's, genesis's, in any store. One
    pass over the records (a few KiB each: a year of 50 s epochs, ~2 GB read once);
    returns how many were indexed. A record that does not decode is left out: its epoch
    stays a gap, which ``next_set_change`` answers with that epoch (the route then says
    the record is damaged)."""
    if genesis.staking is None:
        return 0  # no epoch records: one set for good
    if store.epoch_set(0) is None:
        store.put_epoch_sets(0, [ValidatorSet.of(v.public_key for v in genesis.validators).hash])
    if store.epoch_sets_indexed:
        return 0
    count = 0
    page: dict[int, bytes] = {}

    def flush() -> None:
        # One write per run of consecutive epochs in the page.
        epochs = sorted(page)
        start = 0
        for i in range(1, len(epochs) + 1):
            if i == len(epochs) or epochs[i] != epochs[i - 1] + 1:
                run = epochs[start:i]
                store.put_epoch_sets(run[0], [page[e] for e in run])
                start = i
        page.clear()

    for epoch, raw in store.iter_epoch_records():
        try:
            page[epoch] = record_set_hash(raw)
        except (DecodeError, ValueError) as exc:
            log.warning("stored record of epoch %d does not decode, not indexed: %s", epoch, exc)
            continue
        count += 1
        if len(page) >= _INDEX_PAGE:
            flush()
    flush()
    store.mark_epoch_sets_indexed()
    return count


def verify_epoch_record(
    genesis: Genesis, epoch: int, raw: bytes, validators: ValidatorSet
) -> ValidatorSet:
    """Check the record of ``epoch`` under the producers of epoch ``epoch - 1``;
    return the producers of ``epoch``. Raises ``Invalid`` (a bad record)."""
    record = EpochRecord.decode(raw)
    header = BlockHeader.decode(record.header)
    commit = Commit.decode(record.commit)
    boundary = epoch * genesis.params.epoch_length
    # The last block of the previous epoch, of this chain.
    if header.height != boundary or header.chain_id != genesis.chain_id:
        raise Invalid(f"epoch {epoch} record holds header {header.height}, expected {boundary}")
    # It names the set that signed it (docs/state-sync.md, Trust model: Rule S).
    if header.producer_set_hash != validators.hash:
        raise Invalid(
            f"epoch {epoch} record's header names producer set "
            f"{header.producer_set_hash.hex()}, expected {validators.hash.hex()}"
        )
    # Final: more than 2/3 of the producers of that height signed this header.
    verify_commit(commit, genesis.chain_id, boundary, header.hash, validators)
    # The next set is what that header's state holds under its key.
    verify_state_proof(
        header.state_root,
        producer_set_key(epoch),
        record.producers,
        StateProof.decode(record.proof),
    )
    return ProducerSet.decode(record.producers).validator_set()


# Epoch records asked for ahead of the first one not verified yet, in pages: what a sync
# holds unverified (at most this many records; a few KiB each from honest peers, at most
# ``MAX_EPOCH_RECORD_BYTES`` from hostile ones).
_EPOCHS_AHEAD = 4 * MAX_EPOCHS_PER_RESPONSE


def _verify_records(
    genesis: Genesis, first: int, raws: list[bytes], validators: ValidatorSet
) -> tuple[list[ValidatorSet], Invalid | None]:
    """Verify the records of the epochs from ``first`` in order, each under the set
    before it (``validators`` for the first); return the set after each one that
    verified, and why the next one failed, if one did. Runs in a worker thread: a
    record's certificate is up to ``MAX_VALIDATORS`` signatures, and a month of records
    took the loop a minute."""
    sets: list[ValidatorSet] = []
    for epoch, raw in enumerate(raws, start=first):
        try:
            after = verify_epoch_record(genesis, epoch, raw, validators)
        except Invalid as exc:
            return sets, exc
        # Equal consecutive sets are one object (a month of epochs, a few sets).
        validators = validators if after == validators else after
        sets.append(validators)
    return sets, None


def _verify_each(
    genesis: Genesis, records: list[tuple[int, bytes, ValidatorSet]]
) -> tuple[int, Invalid] | None:
    """Verify each (epoch, record, producers of the epoch before) on its own; the first
    epoch whose record fails, and why. In a worker thread, as ``_verify_records``."""
    for epoch, raw, validators in records:
        try:
            verify_epoch_record(genesis, epoch, raw, validators)
        except Invalid as exc:
            return epoch, exc
    return None


@dataclass
class _PageAsk:
    """A request for the epoch records ``first`` .. ``first + count - 1``."""

    first: int
    count: int
    sent: float


@dataclass
class _Page:
    """A page of records answered, held until all of it verified: its sender is rated
    by it then, and refused if any record of it fails."""

    peer: bytes
    first: int
    records: tuple[bytes, ...]
    seconds: float
    # The epochs whose record of this page is the one kept in ``got`` (verified in
    # order there); the others came second and are verified on their own (``checked``).
    kept: set[int]
    checked: set[int]

    @property
    def end(self) -> int:
        return self.first + len(self.records)


class EpochPages(ABC):
    """The epoch-record part of ``node.statesync.StateSyncer`` (one of its bases): the
    producer sets of the heights offered, verified epoch by epoch from genesis's.

    ``_producers_at(height)`` gives the producers of a height, walking only the epochs
    past those verified so far: first the records an earlier attempt of this sync
    stored, then pages fetched from peers (``_fetch_epochs``). ``_late_page`` judges a
    page that comes while no offer is being checked.

    What it uses of the sync it is part of: the attributes declared below, and the
    abstract methods (asking a peer, refusing one, the usable peers, the next answer).
    """

    genesis: Genesis
    store: ChainStore
    peers: SyncPeers
    timeout: float
    rates: PeerRates
    _answers: asyncio.Queue[tuple[bytes, Wire, float]]
    _failures: int
    _offered: dict[bytes, int]

    def __init__(self) -> None:
        # Epoch pages out, kept across offers: a page asked while checking one offer
        # may be answered while checking the next.
        self._pages: dict[bytes, _PageAsk] = {}
        # Pages out to peers seen gone: a server's handler runs to its end and answers on
        # the peer's next connection, so such a page may still be answered. Its peer is
        # not asked for another until then (or the timeout): an answer always meets the
        # one request it answers, never a later one it would be judged against.
        self._lost: dict[bytes, _PageAsk] = {}
        # The producer sets verified so far, by epoch (0: genesis's): every offer checked
        # after the first walks only the epochs past them. Equal consecutive sets are
        # one object.
        self._sets: list[ValidatorSet] = []

    @abstractmethod
    def _ask(self, peer: bytes, msg: Wire, answer: type[Wire]) -> bool:
        """Send a request; its answer (of type ``answer``) is owed from then on."""

    @abstractmethod
    def _refuse(self, peer: bytes, reason: str, *, silent: bool = False) -> None:
        """Drop and ban ``peer`` for the rest of the sync (``silent``: for no answer,
        which proves no fault: it is asked again when no other peer is left)."""

    @abstractmethod
    def _forgive_silent(self) -> bool:
        """Take back the peers given up only for silence; whether there were any."""

    @abstractmethod
    def _usable(self) -> list[bytes]:
        """The connected peers not refused."""

    @abstractmethod
    async def _next_answer(self, wait_s: float) -> tuple[bytes, Wire, float] | None:
        """The next answer queued, or None after ``wait_s``."""

    async def _producers_at(self, height: int) -> ValidatorSet:
        genesis = self.genesis
        if not self._sets:
            self._sets.append(ValidatorSet.of(v.public_key for v in genesis.validators))
        if genesis.staking is None:
            return self._sets[0]
        # epoch_length is not governable: genesis's value holds for the whole chain.
        last = epoch_of(height, genesis.params.epoch_length)
        # Each offer checked walked every stored record again, on the event loop: with a
        # month of records (~50k), a hostile peer's offers froze the loop for a minute
        # each. Sets verified in this sync are kept; every record is verified once, in a
        # worker thread.
        if last >= len(self._sets):
            await self._verify_stored(last)
        if last >= len(self._sets):
            await self._fetch_epochs(last)
        return self._sets[last]

    def _keep_sets(self, first: int, sets: list[ValidatorSet]) -> None:
        assert len(self._sets) == first, "epoch records are verified in order"
        self._sets.extend(sets)

    async def _verify_stored(self, last: int) -> None:
        """Verify the records an earlier attempt of this sync kept (verified then, but the
        sets are not kept across restarts), up to ``last`` or the first one missing."""
        loop = asyncio.get_running_loop()
        while (first := len(self._sets)) <= last:
            end = min(last, first + MAX_EPOCHS_PER_RESPONSE - 1)
            raws = await loop.run_in_executor(None, self._stored_records, first, end)
            if not raws:
                return
            sets, error = await loop.run_in_executor(
                None, _verify_records, self.genesis, first, raws, self._sets[-1]
            )
            self._keep_sets(first, sets)
            if error is not None:
                # A page is written whole once verified: only a damaged disk gets here.
                # Peers' records, once verified, write over it.
                log.warning("state sync: stored epoch record %d fails: %s", len(self._sets), error)
                return

    def _stored_records(self, first: int, last: int) -> list[bytes]:
        raws: list[bytes] = []
        for epoch in range(first, last + 1):
            raw = self.store.get_epoch_record(epoch)
            if raw is None:
                break
            raws.append(raw)
        return raws

    async def _fetch_epochs(self, last: int) -> None:
        """Fetch, verify and keep the records from the first epoch not verified yet to
        ``last``; ``Unheld`` if no usable peer holds them."""
        # Records fetched, not verified yet: epoch -> (record, who sent it).
        got: dict[int, tuple[bytes, bytes]] = {}
        # Pages answered, not all verified yet (``_check_pages``).
        pages: list[_Page] = []
        # Peers that answered fewer records than asked: peer -> the first they lack. No
        # fault of theirs unless their offer needs the ones they lack (checked as they
        # answer); asked again when another peer fails, or once when none is left.
        lacking: dict[bytes, int] = {}
        failures = self._failures
        retried = False
        # Peers given up for silence were taken back before setting the offer aside, since
        # the last records verified: once (``StateSyncer._fetch``, the same for chunks).
        forgave = False
        while (epoch := len(self._sets)) <= last:
            run = list(itertools.takewhile(lambda e: e in got, range(epoch, last + 1)))
            if run:
                await self._verify_page(epoch, run[:MAX_EPOCHS_PER_RESPONSE], got, pages)
                await self._check_pages(pages, got)
                retried = forgave = False
                continue
            if self._failures != failures:
                failures = self._failures
                lacking.clear()
            self._ask_pages(epoch, last, got, lacking)
            usable = self._usable()
            if usable and all(lacking.get(p, last + 1) <= epoch for p in usable):
                if retried:
                    if forgave or not self._forgive_silent():
                        raise Unheld(f"no peer holds the epoch records from {epoch} to {last}")
                    forgave = True
                lacking.clear()
                retried = True
                continue
            answer = await self._next_answer(0.5)
            if answer is not None:
                self._take_page(answer, epoch, got, lacking, pages)
                await self._check_pages(pages, got)
            if self._answers.empty():
                self._expire_pages(time.monotonic())

    def _ask_pages(
        self, epoch: int, last: int, got: dict[int, tuple[bytes, bytes]], lacking: dict[bytes, int]
    ) -> None:
        """Give each idle peer a page: the first one not verified if only slower peers
        hold it, else the next not asked for, else one a slower peer holds."""
        usable = self._usable()
        idle = [p for p in usable if p not in self._pages and p not in self._lost]
        end = min(last, epoch + _EPOCHS_AHEAD - 1)
        ready = self.rates.order(idle, usable, anyone=not self._pages)
        # Split between the peers asked now while there are fewer than a page each.
        size = max(1, min(MAX_EPOCHS_PER_RESPONSE, -(-(end - epoch + 1) // max(1, len(ready)))))
        # The epochs some page out covers, kept up to date as pages are asked below.
        asked = {e for a in self._pages.values() for e in range(a.first, a.first + a.count)}
        for peer in ready:
            holds = lacking.get(peer, last + 1)
            page: tuple[int, int] | None = None
            blocking = [p for p, a in self._pages.items() if a.first <= epoch < a.first + a.count]
            if blocking and epoch < holds and all(self.rates.outpaces(peer, p) for p in blocking):
                held = self._pages[blocking[0]]
                page = (epoch, held.first + held.count - epoch)
            else:
                first = next(
                    (e for e in range(epoch, end + 1) if e not in got and e not in asked), None
                )
                if first is not None and first < holds:
                    count = 1
                    while (
                        count < size
                        and first + count <= min(end, holds - 1)
                        and first + count not in got
                        and first + count not in asked
                    ):
                        count += 1
                    page = (first, count)
                else:
                    # Only a page with a record the sync lacks and this peer holds: a
                    # peer that had answered all it holds of a page out to a silent one
                    # was asked for it again as each answer came, hundreds of times a
                    # second until that one's timeout.
                    behind = sorted(
                        (a.first, p)
                        for p, a in self._pages.items()
                        if any(
                            epoch <= e < holds and e not in got
                            for e in range(a.first, a.first + a.count)
                        )
                        and self.rates.outpaces(peer, p)
                    )
                    if behind:
                        held = self._pages[behind[0][1]]
                        page = (held.first, held.count)
            if page is not None and self._ask(peer, EpochsRequest(*page), EpochsResponse):
                self._pages[peer] = _PageAsk(page[0], page[1], time.monotonic())
                asked.update(range(page[0], page[0] + page[1]))

    def _take_page(
        self,
        answer: tuple[bytes, Wire, float],
        epoch: int,
        got: dict[int, tuple[bytes, bytes]],
        lacking: dict[bytes, int],
        pages: list[_Page],
    ) -> None:
        """Judge a page's shape, keep in ``got`` its records of epochs no other page
        brought yet, and hold it in ``pages`` until all of it verified (it is rated by
        then only: see ``_check_pages``)."""
        peer, msg, arrived = answer
        if not isinstance(msg, EpochsResponse):
            return
        ask = self._pages.pop(peer, None) or self._lost.pop(peer, None)
        if ask is None:
            return  # a late answer to a request given up (its peer stayed away)
        records = msg.records
        if msg.first != ask.first or len(records) > ask.count:
            self._refuse(
                peer,
                f"{len(records)} epoch records from {msg.first}, asked {ask.count} from {ask.first}",
            )
            return
        if len(records) < ask.count:
            # An honest server sends every record asked that it holds (up to the page
            # bound, which the count asked never exceeds), and a peer holds the records
            # its own offer needs: fewer than those is a trickle, not a lack.
            offered = self._offered.get(peer, 0)
            needs = epoch_of(offered, self.genesis.params.epoch_length) if offered else 0
            if ask.first + len(records) <= needs:
                self._refuse(
                    peer,
                    f"{len(records)} of the {ask.count} epoch records from {ask.first}, "
                    f"though its offer at height {offered} needs them up to epoch {needs}",
                )
                return
            lacking[peer] = ask.first + len(records)
        if not records:
            return  # "I hold none" is no measure of speed
        page = _Page(peer, ask.first, records, arrived - ask.sent, set(), set())
        for e, raw in enumerate(records, start=ask.first):
            if e >= epoch and e not in got:
                got[e] = (raw, peer)
                page.kept.add(e)
        pages.append(page)

    async def _check_pages(self, pages: list[_Page], got: dict[int, tuple[bytes, bytes]]) -> None:
        """Verify on its own each record of ``pages`` that another page's copy stood for,
        once the producers before it are verified; rate a page's sender once all of the
        page verified; refuse the sender of a record that fails, and drop what else it sent.

        A page counted as it came made a peer sending garbage fast the fastest, the
        honest ones "slow" beside it; where another page's records were kept (a hedge
        lost, or records verified already) its own were never even checked. Not compared
        with the copy kept: honest nodes may hold other certificates of one block."""
        loop = asyncio.get_running_loop()
        for page in list(pages):
            if page not in pages:
                continue  # dropped with its sender below
            verified = len(self._sets)
            spares = [
                (e, raw, self._sets[e - 1])
                for e, raw in enumerate(page.records, start=page.first)
                if e < verified and e not in page.kept and e not in page.checked
            ]
            if spares:
                failed = await loop.run_in_executor(None, _verify_each, self.genesis, spares)
                if failed is not None:
                    self._refuse(page.peer, f"epoch {failed[0]} record: {failed[1]}")
                    self._drop_sender(page.peer, got, pages)
                    continue
                page.checked.update(e for e, _, _ in spares)
            if page.end <= len(self._sets):
                # Its kept records verified in order (or their sender was refused, and
                # this page dropped with it).
                pages.remove(page)
                self.rates.answered(page.peer, sum(len(r) for r in page.records), page.seconds)

    @staticmethod
    def _drop_sender(peer: bytes, got: dict[int, tuple[bytes, bytes]], pages: list[_Page]) -> None:
        for e in [e for e, (_, p) in got.items() if p == peer]:
            del got[e]
        pages[:] = [page for page in pages if page.peer != peer]

    async def _late_page(self, answer: tuple[bytes, Wire, float]) -> None:
        """A page that comes while no offer is being checked (asked to check one before,
        then not needed): judged as any, its records of verified epochs checked, the
        others not kept (nor the page rated)."""
        if isinstance(answer[1], EpochsResponse):
            pages: list[_Page] = []
            self._take_page(answer, len(self._sets), {}, {}, pages)
            await self._check_pages(pages, {})

    async def _verify_page(
        self,
        epoch: int,
        run: list[int],
        got: dict[int, tuple[bytes, bytes]],
        pages: list[_Page],
    ) -> None:
        """Verify the fetched records of ``run`` (from ``epoch``, in order) in a worker
        thread and keep those that verify in one synced write; refuse the sender of the
        first that does not, and drop what else it sent."""
        loop = asyncio.get_running_loop()
        raws = [got[e][0] for e in run]
        sets, error = await loop.run_in_executor(
            None, _verify_records, self.genesis, epoch, raws, self._sets[-1]
        )
        if sets:
            # Kept only once verified, a page in one write: after a crash the store
            # holds verified pages from epoch 1 on, and the next attempt resumes there.
            digests = [v.hash for v in sets]
            await loop.run_in_executor(
                None, self.store.put_epoch_records, epoch, raws[: len(sets)], digests
            )
            self._keep_sets(epoch, sets)
        for e in run[: len(sets)]:
            del got[e]
        if error is not None:
            bad = got[epoch + len(sets)][1]
            self._refuse(bad, f"epoch {epoch + len(sets)} record: {error}")
            self._drop_sender(bad, got, pages)

    def _expire_pages(self, now: float) -> None:
        connected = set(self.peers.peers())
        for peer, ask in list(self._pages.items()):
            if peer not in connected:
                del self._pages[peer]
                self._lost[peer] = ask
            elif now - ask.sent > self.timeout:
                del self._pages[peer]
                self._refuse(peer, f"no epoch records within {self.timeout:g} s", silent=True)
        for peer, ask in list(self._lost.items()):
            if now - ask.sent > self.timeout:
                del self._lost[peer]  # no answer now: the peer may be asked again
