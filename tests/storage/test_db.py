"""The LevelDB wrapper and the node cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import StorageError
from storage import db as spaces
from storage.cache import GenerationalCache
from storage.db import Database, decode_height, encode_height
from storage.table_reads import read_tables_without_mmap

REPO = Path(__file__).resolve().parents[2]


def test_key_spaces_are_distinct_single_bytes():
    prefixes = [
        spaces.META,
        spaces.BLOCK,
        spaces.BLOCK_HEIGHT,
        spaces.COMMIT,
        spaces.RECEIPT,
        spaces.TX_INDEX,
        spaces.STATE,
        spaces.TREE_NODE,
        spaces.STATE_ROOT,
    ]
    assert all(len(p) == 1 for p in prefixes)
    assert len(set(prefixes)) == len(prefixes)


def test_heights_sort_as_keys():
    heights = [0, 1, 255, 256, 70_000, 2**40]
    assert sorted(encode_height(h) for h in heights) == [encode_height(h) for h in heights]
    assert [decode_height(encode_height(h)) for h in heights] == heights
    with pytest.raises(StorageError):
        decode_height(b"\x00")


def test_batch_is_written_only_on_write(tmp_path):
    with Database(tmp_path / "db") as db:
        batch = db.new_batch()
        batch.put(b"sa", b"1")
        batch.put(b"sb", b"2")
        batch.put(b"tx", b"3")
        batch.delete(b"sb")
        assert len(batch) == 4
        assert db.get(b"sa") is None
        db.write(batch)
        assert db.get(b"sa") == b"1"
        assert db.get(b"sb") is None
        assert list(db.iterate(b"s")) == [(b"a", b"1")]
        abandoned = db.new_batch()
        abandoned.put(b"sz", b"9")
    with Database(tmp_path / "db", create_if_missing=False) as db:
        assert db.get(b"sz") is None
        assert db.get(b"tx") == b"3"
    assert db.closed
    with pytest.raises(StorageError, match="closed"):
        db.get(b"sa")


def test_put_many_writes_each_item_under_the_prefix(tmp_path):
    with Database(tmp_path / "db") as db:
        batch = db.new_batch()
        batch.put(b"sa", b"0")
        batch.put_many(b"n", ((b"a", b"1"), (b"b", b"2")))
        batch.put_many(b"n", iter(()))
        assert len(batch) == 3
        db.write(batch)
        assert list(db.iterate(b"n")) == [(b"a", b"1"), (b"b", b"2")]
        assert db.get(b"sa") == b"0"


def test_tables_are_written_uncompressed(tmp_path):
    # What a node writes is mostly hashes; compressing them cost more CPU in
    # compactions than the blocks took (storage/db.py). Values that snappy would
    # shrink to a few percent take their full size in the tables.
    value = bytes(1000)
    with Database(tmp_path / "db") as db:
        batch = db.new_batch()
        for i in range(2000):
            batch.put(b"s" + encode_height(i), value)
        db.write(batch)
        db.compact()
        assert db.get(b"s" + encode_height(1999)) == value
    tables = sum(p.stat().st_size for p in (tmp_path / "db").glob("*.ldb"))
    assert tables >= 2000 * len(value)


def test_missing_database_without_create(tmp_path):
    with pytest.raises(StorageError, match="no database at"):
        Database(tmp_path / "nothing", create_if_missing=False)
    assert not (tmp_path / "nothing").exists()


def test_an_io_error_at_open_is_not_taken_for_a_lock_held_elsewhere(tmp_path):
    # LevelDB names the file in each IO error: a data directory whose path holds
    # "lock" ("blockchain", "blocks") or a LOCK file it cannot open is no lock that
    # another process holds, and the operator is told what failed instead.
    path = tmp_path / "blockchain"
    Database(path).close()
    (path / "CURRENT").rename(path / "CURRENT.bak")
    (path / "CURRENT").mkdir()
    with pytest.raises(StorageError, match="cannot open database at .*CURRENT: Is a directory"):
        Database(path)
    (path / "CURRENT").rmdir()
    (path / "CURRENT.bak").rename(path / "CURRENT")
    (path / "LOCK").unlink()
    (path / "LOCK").mkdir()
    with pytest.raises(StorageError, match="cannot open database at .*LOCK: Is a directory"):
        Database(path)
    (path / "LOCK").rmdir()
    with Database(path, create_if_missing=False) as db:
        assert db.get(b"a") is None


def test_a_database_gone_between_the_check_and_the_open_is_a_storage_error(tmp_path, monkeypatch):
    # The check for CURRENT comes before LevelDB opens: a directory emptied in between
    # (an operator's restore script) is LevelDB's "invalid argument", told as ours.
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: str(p).endswith("CURRENT") or real_exists(p))
    with pytest.raises(StorageError, match="cannot open database at .*does not exist"):
        Database(tmp_path / "gone", create_if_missing=False)


def test_a_table_that_no_longer_reads_is_a_storage_error_on_every_read(tmp_path):
    # A damaged disk: reads fail as the node's fault (StorageError), never as a
    # library's exception that a caller could take for a verdict on its input.
    path = tmp_path / "db"
    with Database(path) as db:
        batch = db.new_batch()
        for i in range(1000):
            batch.put(b"s%05d" % i, b"v" * 100)
        db.write(batch)
        db.compact()
    (table,) = path.glob("*.ldb")
    damaged = bytearray(table.read_bytes())
    for i in range(4000):
        damaged[i] ^= 0xFF
    table.write_bytes(bytes(damaged))
    with Database(path, create_if_missing=False) as db:
        with pytest.raises(StorageError, match=f"read from {path} failed: Corruption"):
            db.get(b"s00001")
        with pytest.raises(StorageError, match=f"scan of {path} failed: Corruption"):
            list(db.iterate(b"s"))
        for snapshot in (False, True):
            with pytest.raises(StorageError, match=f"scan of {path} failed: Corruption"):
                list(db.iterate_keys(b"s", snapshot=snapshot))


def test_cache_is_bounded_and_keeps_what_is_used():
    cache: GenerationalCache[int, bytes] = GenerationalCache(10)
    for i in range(5):
        cache.put(i, b"%d" % i)
    for i in range(5, 100):
        assert cache.get(0) == b"0"  # used all along: survives every rotation
        cache.put(i, b"%d" % i)
        assert len(cache) <= 11
    assert cache.get(1) is None
    assert cache.get(1, b"dflt") == b"dflt"
    assert 99 in cache


def test_cache_demotion_keeps_entries_until_the_next_rotation():
    cache: GenerationalCache[int, bytes] = GenerationalCache(100)
    cache.put_many({i: b"x" for i in range(10)})
    cache.demote_many([1, 2, 77])
    assert cache.get(1) == b"x"  # still there, and promoted again by the hit
    cache.demote_many([2])
    cache.put_many({i: b"y" for i in range(100, 150)})  # rotation: old generation goes
    assert 2 not in cache
    assert cache.get(3) == b"x"


_CACHE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 40), st.binary(max_size=3)),
        st.tuples(st.just("put_many"), st.dictionaries(st.integers(0, 40), st.binary(max_size=3))),
        st.tuples(st.just("demote"), st.lists(st.integers(0, 40))),
        st.tuples(st.just("get"), st.integers(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(2, 24), ops=_CACHE_OPS)
def test_cache_is_bounded_and_returns_what_was_put_or_nothing(capacity, ops):
    cache: GenerationalCache[int, bytes] = GenerationalCache(capacity)
    latest: dict[int, bytes] = {}
    biggest_batch = 0
    for op in ops:
        if op[0] == "put":
            cache.put(op[1], op[2])
            latest[op[1]] = op[2]
            assert cache.get(op[1]) == op[2]  # just put: always there
        elif op[0] == "put_many":
            cache.put_many(op[1])
            latest.update(op[1])
            biggest_batch = max(biggest_batch, len(op[1]))
        elif op[0] == "demote":
            cache.demote_many(op[1])
        else:
            assert cache.get(op[1]) in (latest.get(op[1]), None)
        # A batch stays whole (a tree's unwritten nodes), so it may overshoot once.
        assert len(cache) <= capacity + biggest_batch
    for key in range(41):
        assert cache.get(key) in (latest.get(key), None)
        assert cache.get(key, b"dflt") in (latest.get(key), b"dflt")


def test_tables_are_read_through_the_block_cache_not_mapped(tmp_path):
    """Reads and compactions leave no table file mapped into the process: their pages
    would count in its resident set (storage.table_reads)."""
    db = Database(tmp_path / "db")
    assert read_tables_without_mmap()
    keys = [i.to_bytes(8, "big") * 4 for i in range(40_000)]
    for start in range(0, len(keys), 10_000):
        batch = db.new_batch(sync=False)
        for key in keys[start : start + 10_000]:
            batch.put(key, key * 3)
        db.write(batch)
    db.compact()
    assert all(db.get(key) == key * 3 for key in keys)
    tables = list((tmp_path / "db").glob("*.ldb"))
    assert tables, "the data did not reach a table file"
    with open("/proc/self/maps") as maps:
        mapped = [line for line in maps if line.rstrip().endswith(".ldb")]
    db.close()
    assert mapped == []


def test_a_store_opened_after_leveldb_built_its_environment_is_not_patched(tmp_path):
    """Once LevelDB has built its environment (any database opened, destroyed or
    repaired before), its mmap limit was read: the patch must say it did nothing."""
    script = (
        "import plyvel, sys, tempfile\n"
        "plyvel.destroy_db(tempfile.mkdtemp())\n"
        "from storage.table_reads import read_tables_without_mmap\n"
        "sys.exit(0 if read_tables_without_mmap() is False else 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "environment is built already" in done.stderr
