"""The consensus WAL: replay of one height, torn tails, switching heights atomically."""

from __future__ import annotations

import struct
import zlib

from consensus.messages import SyncRequest
from consensus.wal import WAL, WAL_FILE
from core import VoteType
from tests.consensus.helpers import (
    CHAIN,
    KEYS,
    ToyApp,
    make_block,
    sign_proposal,
    vote,
)
from tests.fsyncs import dir_id, fsynced_dirs


def msgs():
    b = make_block(ToyApp(), 3, 0, KEYS[0])
    return [
        sign_proposal(KEYS[0], 3, 0, b),
        vote(KEYS[1], VoteType.PREVOTE, 3, 0, b.hash),
        vote(KEYS[2], VoteType.PRECOMMIT, 3, 0, b""),
    ]


def test_new_log_is_empty_and_replays_what_was_appended(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    assert wal.start_height(3) == []
    for m in msgs():
        wal.append(m)
    wal.sync()
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(3) == msgs()


def test_a_new_log_directory_is_durable_in_its_parent(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    synced = fsynced_dirs(monkeypatch)
    WAL(home / "consensus", CHAIN).start_height(3)
    assert dir_id(home) in synced and dir_id(home / "consensus") in synced


def test_appends_after_a_replay_are_kept(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(3)
    wal.append(msgs()[0])
    wal.close()
    wal = WAL(tmp_path, CHAIN)
    assert len(wal.start_height(3)) == 1
    wal.append(msgs()[1])
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(3) == msgs()[:2]


def test_a_rewritten_log_replays_what_it_was_given_then_later_appends(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(3)
    for m in msgs():
        wal.append(m)
    before = wal.size
    wal.rewrite(msgs()[1:])
    assert wal.size < before and wal.synced_size == wal.size
    wal.append(msgs()[0])
    wal.sync()
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(3) == [*msgs()[1:], msgs()[0]]


def test_torn_tail_is_cut_off(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(3)
    for m in msgs():
        wal.append(m)
    wal.close()
    path = tmp_path / WAL_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    wal = WAL(tmp_path, CHAIN)
    assert wal.start_height(3) == msgs()[:2]
    wal.append(msgs()[2])
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(3) == msgs()


def test_corrupt_record_ends_replay(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(3)
    for m in msgs():
        wal.append(m)
    wal.close()
    path = tmp_path / WAL_FILE
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert WAL(tmp_path, CHAIN).start_height(3) == msgs()[:2]


def test_other_height_or_chain_starts_fresh(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(3)
    wal.append(msgs()[0])
    wal.close()
    assert WAL(tmp_path, "other").start_height(3) == []
    wal = WAL(tmp_path, CHAIN)
    assert wal.start_height(4) == []
    wal.append(SyncRequest(1, b""))  # any message kind round-trips
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(4) == [SyncRequest(1, b"")]
    # Moving to another height replaces the log.
    assert WAL(tmp_path, CHAIN).start_height(5) == []
    assert WAL(tmp_path, CHAIN).start_height(4) == []


def test_synced_size_tracks_fsync(tmp_path):
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(1)
    base = wal.synced_size
    wal.append(msgs()[1])
    assert wal.synced_size == base
    wal.sync()
    assert (
        wal.synced_size > base == len((tmp_path / WAL_FILE).read_bytes()) - (wal.synced_size - base)
    )
    wal.close()


def test_garbage_file_starts_fresh(tmp_path):
    (tmp_path / WAL_FILE).write_bytes(b"\x00\x00\x00\x05garbage")
    assert WAL(tmp_path, CHAIN).start_height(1) == []


def _framed(payload: bytes) -> bytes:
    """One record as the module docstring lays it out: length, crc32, payload."""
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


def test_appends_after_an_undecodable_record_are_replayed_at_the_next_restart(tmp_path):
    # A record whose checksum holds but which does not decode (another version wrote
    # it) ends the replay. What this run appends must not land behind it, where every
    # later replay of the height would stop before reaching it.
    wal = WAL(tmp_path, CHAIN)
    wal.start_height(3)
    wal.append(msgs()[0])
    wal.close()
    path = tmp_path / WAL_FILE
    path.write_bytes(path.read_bytes() + _framed(b"\xc1 not a message"))
    wal = WAL(tmp_path, CHAIN)
    assert wal.start_height(3) == msgs()[:1]
    wal.append(msgs()[1])
    wal.sync()
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(3) == msgs()[:2]


def test_a_header_that_does_not_decode_starts_the_height_fresh(tmp_path):
    (tmp_path / WAL_FILE).write_bytes(_framed(b"\x92\xa1x") + _framed(b"\x01"))
    wal = WAL(tmp_path, CHAIN)
    assert wal.start_height(1) == []
    wal.append(msgs()[1])
    wal.close()
    assert WAL(tmp_path, CHAIN).start_height(1) == msgs()[1:2]
