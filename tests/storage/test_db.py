"""The LevelDB wrapper and the node cache."""

from __future__ import annotations

import logging
import os
import resource
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
from storage.table_reads import (
    OPEN_FILES_WANTED,
    raise_open_file_limit,
    read_tables_without_mmap,
)

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


def test_a_database_path_that_cannot_be_made_is_a_storage_error(tmp_path):
    # A file where the directory goes: the operator reads why, not an OSError's traceback.
    (tmp_path / "taken").write_bytes(b"not a directory")
    for path in (tmp_path / "taken", tmp_path / "taken" / "db"):
        with pytest.raises(StorageError, match="cannot create database at"):
            Database(path)


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


# Loads a copy of the LevelDB library that plyvel uses (with the libraries beside it,
# which it needs), as another build would be: stripped of its symbol table, replaced
# on disk since it was loaded, or loaded beside plyvel's own (the copy keeps the
# library's soname, so plyvel loaded after it uses it). Then the patch, then a
# database: LevelDB must be left as it is, and still work.
_OTHER_BUILD = """
import ctypes, os, shutil, struct, sys
case, where, lib = sys.argv[1], sys.argv[2], sys.argv[3]
siblings = sys.argv[4:]
for path in siblings:
    shutil.copy(path, where)
copy = os.path.join(where, "libleveldb-other.so")
shutil.copy(lib, copy)
if case == "stripped":
    image = bytearray(open(copy, "rb").read())
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    for i in range(shnum):
        if struct.unpack_from("<I", image, shoff + i * shentsize + 4)[0] == 2:  # SHT_SYMTAB
            struct.pack_into("<I", image, shoff + i * shentsize + 4, 0)
    open(copy, "wb").write(bytes(image))
if case == "beside":
    import plyvel  # its own library first
for path in siblings:
    ctypes.CDLL(os.path.join(where, os.path.basename(path)), mode=ctypes.RTLD_GLOBAL)
ctypes.CDLL(copy)
if case == "replaced":
    shutil.copy(siblings[0], copy + ".new")
    os.replace(copy + ".new", copy)
from storage import Database, read_tables_without_mmap
print("patched:", read_tables_without_mmap(), read_tables_without_mmap())
with Database(os.path.join(where, "db")) as db:
    batch = db.new_batch()
    batch.put(b"k", b"v")
    db.write(batch)
    print("reads:", db.get(b"k"))
"""


@pytest.mark.parametrize(
    "case, reason",
    [
        ("stripped", "no _ZN7leveldb12_GLOBAL__N_127g_open_read_only_file_limitE of an int"),
        # The file named in the process's maps is gone (an upgrade renamed another
        # over it): nothing of the new one is read.
        ("replaced", "No such file or directory: '{where}/libleveldb-other.so (deleted)'"),
        ("beside", "2 LevelDB libraries loaded"),
    ],
)
def test_a_leveldb_library_the_patch_cannot_trust_is_left_as_it_is(tmp_path, case, reason):
    # Each surprise is a place where writing 0 could land on anything but LevelDB's
    # limit: the patch says why it did nothing, LevelDB maps its tables as it always
    # did, and the database works.
    with open("/proc/self/maps") as maps:
        mapped = {
            line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line
        }
    (lib,) = [path for path in mapped if Path(path).name.startswith("libleveldb")]
    siblings = sorted(path for path in mapped if Path(path).parent == Path(lib).parent)
    siblings.remove(lib)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_BUILD, case, str(tmp_path), lib, *siblings],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "patched: False False" in done.stdout
    assert "reads: b'v'" in done.stdout
    assert "LevelDB keeps reading tables through mmap" in done.stderr
    assert reason.format(where=tmp_path) in done.stderr


def test_the_open_file_limit_goes_to_the_hard_one_or_stays_with_a_warning(monkeypatch, caplog):
    # LevelDB sizes its table descriptors by the limit it finds; a node's HTTP clients,
    # WAL and signer need theirs beside (storage.table_reads). Nothing here changes the
    # limits of the process that runs the test.
    asked: list[tuple[int, int]] = []
    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda which, pair: asked.append(pair))
    assert raise_open_file_limit() == 4096
    limits["now"] = (1024, resource.RLIM_INFINITY)
    assert raise_open_file_limit() == OPEN_FILES_WANTED
    limits["now"] = (4096, 4096)
    assert raise_open_file_limit() == 4096  # there already: nothing asked
    assert asked == [(4096, 4096), (OPEN_FILES_WANTED, resource.RLIM_INFINITY)]

    def refused(which: int, pair: tuple[int, int]) -> None:
        raise ValueError("not allowed to raise the maximum limit")

    limits["now"] = (1024, 1 << 30)  # above the kernel's nr_open, say
    monkeypatch.setattr(resource, "setrlimit", refused)
    with caplog.at_level(logging.WARNING, logger="storage.table_reads"):
        assert raise_open_file_limit() == 1024
    assert f"cannot raise the open-file limit from 1024 to {1 << 30}" in caplog.text
