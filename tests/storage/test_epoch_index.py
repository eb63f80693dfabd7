"""The store's index of producer-set changes (``ChainStore.next_set_change``): records
written in any order, some never, answer as a scan over every epoch would."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import ValidatorSet
from consensus.staking_state import ProducerSet
from core import PrivateKey
from genesis import create_localnet
from node.epoch_records import EpochRecord, index_epoch_sets
from storage import ChainStore
from storage.chain_store import open_store_db
from storage.db import (
    EPOCH,
    EPOCH_CHANGE,
    EPOCH_GAP,
    EPOCH_SET,
    Database,
    WriteBatch,
    encode_height,
)
from vm import ChainParams

SETS = [bytes([i]) * 32 for i in range(3)]


def reference(digests: dict[int, bytes], epoch: int) -> int:
    """The first epoch after ``epoch`` whose set differs or is unknown, by a scan."""
    if epoch not in digests:
        return epoch + 1
    later = epoch + 1
    while digests.get(later) == digests[epoch]:
        later += 1
    return later


INDEX = (EPOCH_SET, EPOCH_CHANGE, EPOCH_GAP)


@contextmanager
def index_deletes(patch: pytest.MonkeyPatch) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """Every key of the index a write deletes, and those of them the database did not
    hold when it was written (nor the batch put before): a delete leaves LevelDB a
    tombstone that each seek of ``next_set_change`` steps over until a compaction."""
    deleted: list[bytes] = []
    absent: list[bytes] = []
    ops: dict[int, list[tuple[bool, bytes]]] = {}
    new_batch, write = Database.new_batch, Database.write
    put, delete = WriteBatch.put, WriteBatch.delete

    def fresh_batch(self: Database, **kwargs: Any) -> WriteBatch:
        batch = new_batch(self, **kwargs)
        ops[id(batch)] = []  # an id a batch dropped unwritten had is reused
        return batch

    def recording_put(self: WriteBatch, key: bytes, value: bytes) -> None:
        ops.setdefault(id(self), []).append((True, key))
        put(self, key, value)

    def recording_delete(self: WriteBatch, key: bytes) -> None:
        ops.setdefault(id(self), []).append((False, key))
        delete(self, key)

    def checked_write(self: Database, batch: WriteBatch) -> None:
        earlier: set[bytes] = set()
        for is_put, key in ops.pop(id(batch), []):
            if is_put:
                earlier.add(key)
            elif key[:1] in INDEX:
                deleted.append(key)
                if key not in earlier and self.get(key) is None:
                    absent.append(key)
        write(self, batch)

    patch.setattr(Database, "new_batch", fresh_batch)
    patch.setattr(WriteBatch, "put", recording_put)
    patch.setattr(WriteBatch, "delete", recording_delete)
    patch.setattr(Database, "write", checked_write)
    yield deleted, absent


# Epoch -> set (a few sets: changes are rare), the epochs written (a subset, some never),
# in which order, as pages of consecutive epochs or alone.
chains = st.lists(st.sampled_from(SETS), min_size=1, max_size=40).flatmap(
    lambda sets: st.tuples(
        st.just(sets),
        st.permutations(range(len(sets))),
        st.sets(st.integers(0, len(sets) - 1)),
        st.lists(st.integers(1, 4), min_size=len(sets), max_size=len(sets)),
    )
)


@settings(max_examples=60, deadline=None)
@given(chain=chains)
def test_next_set_change_answers_as_a_scan_whatever_the_order_written(chain):
    sets, order, never, pages = chain
    with (
        tempfile.TemporaryDirectory() as where,
        pytest.MonkeyPatch.context() as patch,
        index_deletes(patch) as (_, absent),
    ):
        store = ChainStore(where)
        written: dict[int, bytes] = {}
        for first, size in zip(order, pages, strict=True):
            # A page of consecutive epochs from ``first`` up to one never written (some
            # written before: a state sync writes over them).
            page = []
            for epoch in range(first, min(first + size, len(sets))):
                if epoch in never:
                    break
                page.append(epoch)
            if not page:
                continue
            digests = [sets[e] for e in page]
            if page[0] == 0:
                store.put_epoch_sets(0, digests)  # epoch 0's is genesis's: no record
            else:
                store.put_epoch_records(page[0], [b"record %d" % e for e in page], digests)
            written.update(zip(page, digests, strict=True))
            for epoch in range(len(sets) + 2):
                assert store.next_set_change(epoch) == reference(written, epoch), (epoch, written)
            # A marker is deleted only where it is: no tombstone for the seeks to cross.
            assert absent == [], (page, written)
        store.close()
        # Kept across a reopen.
        store = ChainStore(where)
        for epoch in range(len(sets) + 2):
            assert store.next_set_change(epoch) == reference(written, epoch)
        store.close()


def test_epochs_written_in_order_delete_nothing_from_the_index(tmp_path):
    """The commit thread writes each epoch after the last: 300,000 in six months of 50 s
    epochs. Each deleted the gap marker after the last epoch (to put one after the new
    one) and a change marker that was never there, and ``next_set_change(0)``, what a
    client on a chain whose set never changed asks, stepped over all their tombstones
    until LevelDB compacted them (a review measured 9.3 ms at 300,000 epochs), on the
    event loop."""
    a, b = SETS[0], SETS[1]
    store = ChainStore(tmp_path / "store")
    with pytest.MonkeyPatch.context() as patch, index_deletes(patch) as (deleted, _):
        store.put_epoch_sets(0, [a])
        for epoch in range(1, 40):
            store.put_epoch_record(epoch, b"%d" % epoch, a if epoch < 30 else b)
        store.put_epoch_records(40, [b"40", b"41"], [b, a])  # a page, as a state sync's
    assert deleted == []
    answers = [30, 30, 41, 41, 41, 42, 43]
    assert [store.next_set_change(e) for e in (0, 29, 30, 39, 40, 41, 42)] == answers
    # A hole below the last epoch (a record a crash missed) is one, and its filling
    # deletes its marker alone.
    store.put_epoch_record(44, b"44", a)
    assert [store.next_set_change(e) for e in (41, 42, 44, 45)] == [42, 43, 45, 46]
    with pytest.MonkeyPatch.context() as patch, index_deletes(patch) as (deleted, _):
        store.put_epoch_records(42, [b"42", b"43"], [a, a])
    assert deleted == [EPOCH_GAP + encode_height(42)]
    assert [store.next_set_change(e) for e in (40, 41, 44)] == [41, 45, 45]
    store.close()


def test_a_store_without_the_highest_epoch_answers_the_next_epoch(tmp_path):
    """Sets indexed without the highest epoch indexed beside them (not a store this
    code writes): the answer is the next epoch, whose record is signed by the epoch's
    own set, so that no client is sent past a change."""
    db = open_store_db(tmp_path / "store")
    batch = db.new_batch()
    for epoch in range(5):
        batch.put(EPOCH_SET + encode_height(epoch), SETS[0])
    db.write(batch)
    db.close()
    store = ChainStore(tmp_path / "store")
    assert [store.next_set_change(e) for e in range(7)] == [1, 2, 3, 4, 5, 6, 7]
    store.close()


def test_a_store_written_before_the_index_is_indexed_once_at_open(tmp_path):
    """Records as a node wrote them before the index (the record alone, keyed by epoch):
    a node's open indexes them (``node.epoch_records.index_epoch_sets``)."""
    params = ChainParams.default().replace(epoch_length=3)
    genesis = create_localnet(tmp_path / "net", 1, "", params=params).genesis
    first = [v.public_key for v in genesis.validators]
    second = [PrivateKey.generate().public_key]
    keys = {1: first, 2: first, 3: second, 4: second, 5: first}
    db = open_store_db(tmp_path / "old")
    batch = db.new_batch()
    for epoch, producers in keys.items():
        value = ProducerSet(epoch, epoch * 3, tuple(sorted(producers)), (1,)).encode()
        batch.put(EPOCH + encode_height(epoch), EpochRecord(b"", b"", value, b"").encode())
    db.write(batch)
    db.close()

    store = ChainStore(tmp_path / "old")
    assert not store.epoch_sets_indexed and store.next_set_change(0) == 1
    assert index_epoch_sets(store, genesis) == 5
    assert store.epoch_sets_indexed
    assert store.epoch_set(3) == ValidatorSet.of(second).hash
    assert [store.next_set_change(e) for e in range(7)] == [3, 3, 3, 5, 5, 6, 7]
    # Once: the records are not read again.
    assert index_epoch_sets(store, genesis) == 0
    store.close()


def test_an_answer_is_the_index_before_or_after_a_write_never_half_of_each(tmp_path, monkeypatch):
    """The route reads the index on the event loop while the commit thread or a pruning
    pass writes it: a pass keeping the record a crash missed (epoch 3, where the set
    changed), after later ones, between the answer's two seeks made it skip that change
    (the first seek before the write found no change, the second after it found the
    hole gone) and answer epoch 7, whose record honest clients refuse (its header names
    epoch 6's set, not epoch 0's)."""
    a, b = SETS[0], SETS[1]
    store = ChainStore(tmp_path / "store")
    store.put_epoch_sets(0, [a])
    store.put_epoch_records(1, [b"1", b"2"], [a, a])
    store.put_epoch_records(4, [b"4", b"5", b"6"], [b, b, b])
    # Before the write: the hole at 3 (no one can say it did not change); after: the change.
    assert store.next_set_change(0) == 3

    seek = Database.next_key
    writes: list[int] = []

    def seek_then_write(self: Database, *args: Any, **kwargs: Any) -> bytes | None:
        found = seek(self, *args, **kwargs)
        if not writes:
            # Between this seek and the next: the pruning pass keeps epoch 3's record.
            writes.append(3)
            store.put_epoch_record(3, b"3", b)
        return found

    monkeypatch.setattr(Database, "next_key", seek_then_write)
    assert store.next_set_change(0) == 3
    assert writes == [3]
    store.close()


class Crash(Exception):
    """The process stopping between two of the rebuild's writes."""


# A store written before the index: per epoch from 1, the set (an index into KEYS) or
# None for a record that does not decode; and after how many index writes a crash
# stops the first open's rebuild (None: none does).
KEYS = [(bytes([1]) * 32,), (bytes([2]) * 32,), (bytes([1]) * 32, bytes([3]) * 32)]
old_stores = st.tuples(
    st.lists(st.one_of(st.none(), st.integers(0, len(KEYS) - 1)), min_size=1, max_size=30),
    st.one_of(st.none(), st.integers(0, 6)),
)


@settings(max_examples=40, deadline=None)
@given(old=old_stores)
def test_the_rebuild_at_open_answers_as_a_scan_after_a_crash_anywhere(old):
    """``index_epoch_sets`` on a store written before the index (records that do not
    decode among them), stopped by a crash after any of its writes, then run again at
    the next open: the index answers as a scan of the records would."""
    sets, crash_after = old
    with tempfile.TemporaryDirectory() as where:
        genesis = create_localnet(
            f"{where}/net", 1, "", params=ChainParams.default().replace(epoch_length=3)
        ).genesis
        db = open_store_db(f"{where}/old")
        batch = db.new_batch()
        digests = {0: ValidatorSet.of(v.public_key for v in genesis.validators).hash}
        for epoch, which in enumerate(sets, start=1):
            if which is None:
                raw = b"\x93junk"
            else:
                value = ProducerSet(epoch, epoch * 3, KEYS[which], (1,) * len(KEYS[which]))
                raw = EpochRecord(b"", b"", value.encode(), b"").encode()
                digests[epoch] = ValidatorSet(KEYS[which]).hash
            batch.put(EPOCH + encode_height(epoch), raw)
        db.write(batch)
        db.close()

        if crash_after is not None:
            store = ChainStore(f"{where}/old")
            write = ChainStore.put_epoch_sets
            done: list[int] = []

            def crashing(self: ChainStore, first: int, producers: Any) -> None:
                if len(done) == crash_after:
                    raise Crash
                done.append(first)
                write(self, first, producers)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(ChainStore, "put_epoch_sets", crashing)
                try:
                    index_epoch_sets(store, genesis)
                except Crash:
                    assert not store.epoch_sets_indexed
            store.close()

        store = ChainStore(f"{where}/old")
        index_epoch_sets(store, genesis)
        assert store.epoch_sets_indexed
        for epoch in range(len(sets) + 2):
            assert store.next_set_change(epoch) == reference(digests, epoch), (epoch, digests)
        store.close()
