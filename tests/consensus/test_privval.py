"""The double-sign guard: durable before returning, refuses conflicts, also after reopening."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus.privval import STATE_FILE, DoubleSignRefused, PrivValidator, SignStep
from core import PrivateKey, StorageError, VoteType
from tests.consensus.helpers import (
    CHAIN,
    ME,
    ToyApp,
    make_block,
    make_engine,
    proposer,
    sign_proposal,
)
from tests.fsyncs import dir_id, fsynced_dirs

PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
A = b"\xaa" * 32
B = b"\xbb" * 32


def open_pv(tmp_path, **kw) -> PrivValidator:
    return PrivValidator(ME, CHAIN, tmp_path, **kw)


def test_signed_votes_verify_and_are_persisted(tmp_path):
    pv = open_pv(tmp_path)
    v = pv.sign_vote(PV, 5, 2, A)
    v.verify(CHAIN)
    assert pv.last_signed == (5, 2, SignStep.PREVOTE)
    assert open_pv(tmp_path).last_signed == (5, 2, SignStep.PREVOTE)
    # Nothing half-written is left behind.
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]


def test_state_is_fsynced_before_the_signature_is_returned(tmp_path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("rename"), real_replace(a, b))[1])
    pv = open_pv(tmp_path)
    calls.clear()
    pv.sign_vote(PC, 1, 0, A)
    # File data, then the atomic rename, then the directory entry.
    assert calls == ["fsync", "rename", "fsync"]


@pytest.mark.parametrize("existed", [False, True])
def test_the_state_directory_itself_is_durable(tmp_path, monkeypatch, existed):
    # A power loss that drops the directory's name drops the state inside with it: the
    # guard would reopen as "never signed". Also when the directory was there already:
    # a process killed right after creating it left the name in the page cache only.
    home = tmp_path / "home"
    home.mkdir()
    state_dir = home / "consensus"
    if existed:
        state_dir.mkdir()
    synced = fsynced_dirs(monkeypatch)
    PrivValidator(ME, CHAIN, state_dir).sign_vote(PV, 1, 0, A)
    assert dir_id(home) in synced and dir_id(state_dir) in synced


HOLD_GUARD = """
import sys
from pathlib import Path
from consensus.privval import PrivValidator
from tests.consensus.helpers import CHAIN, ME
guard = PrivValidator(ME, CHAIN, Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(state_dir) -> Iterator[None]:
    root = Path(__file__).resolve().parents[2]
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_GUARD, str(state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == b"held\n"
        yield
    finally:
        other.kill()
        other.wait()


def test_a_second_process_on_the_same_state_is_refused(tmp_path):
    # Each process reads the state once and signs from memory: two of them on one
    # directory would each sign what the other already had.
    with held_by_another_process(tmp_path):
        with pytest.raises(StorageError, match="in use by another process"):
            open_pv(tmp_path)
    # Its end, even killed, lets the next process in.
    pv = open_pv(tmp_path)
    pv.sign_vote(PV, 1, 0, A)
    # A reopen in the same process shares the lock (and the state on disk).
    again = open_pv(tmp_path)
    assert again.last_signed == (1, 0, SignStep.PREVOTE)
    # Once the last guard of this process on it is gone, another process may hold it.
    del pv, again
    gc.collect()
    with held_by_another_process(tmp_path):
        pass


def test_conflicting_vote_at_same_step_is_refused(tmp_path):
    pv = open_pv(tmp_path)
    pv.sign_vote(PV, 3, 1, A)
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(PV, 3, 1, B)
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(PV, 3, 1, b"")


def test_conflict_is_refused_across_a_reopen(tmp_path):
    first = open_pv(tmp_path).sign_vote(PC, 9, 4, A)
    reopened = open_pv(tmp_path)
    with pytest.raises(DoubleSignRefused):
        reopened.sign_vote(PC, 9, 4, B)
    # The identical vote is fine and comes back with the same signature.
    again = reopened.sign_vote(PC, 9, 4, A)
    assert again == first


def test_identical_resign_returns_same_signature(tmp_path):
    pv = open_pv(tmp_path)
    v1 = pv.sign_vote(PV, 2, 0, A)
    assert pv.sign_vote(PV, 2, 0, A) == v1


@pytest.mark.parametrize(
    ("height", "round_", "vote_type"),
    [(4, 2, PV), (4, 1, PC), (3, 9, PC)],
    ids=["earlier-step", "earlier-round", "earlier-height"],
)
def test_going_back_is_refused(tmp_path, height, round_, vote_type):
    pv = open_pv(tmp_path)
    pv.sign_vote(PC, 4, 2, A)
    with pytest.raises(DoubleSignRefused):
        pv.sign_vote(vote_type, height, round_, A)


def test_later_steps_rounds_and_heights_are_allowed(tmp_path):
    pv = open_pv(tmp_path)
    pv.sign_vote(PV, 1, 0, A)
    pv.sign_vote(PC, 1, 0, A)
    pv.sign_vote(PV, 1, 1, B)
    pv.sign_vote(PV, 2, 0, b"")
    assert pv.last_signed == (2, 0, SignStep.PREVOTE)


def test_conflicting_proposal_is_refused(tmp_path):
    app = ToyApp()
    key = proposer(1, 3)
    assert key == ME
    pv = open_pv(tmp_path)
    b1 = make_block(app, 1, 3, ME)
    b2 = make_block(app, 1, 3, ME, salt=1)
    p = pv.sign_proposal(1, 3, None, b1)
    p.verify(CHAIN)
    assert open_pv(tmp_path).sign_proposal(1, 3, None, b1) == p
    with pytest.raises(DoubleSignRefused):
        open_pv(tmp_path).sign_proposal(1, 3, None, b2)
    # A different proof-of-lock round is a different proposal too.
    with pytest.raises(DoubleSignRefused):
        pv.sign_proposal(1, 3, 1, b1)
    # Proposing then voting in the same round is the normal order.
    pv.sign_vote(PV, 1, 3, b1.hash)


def test_lock_is_persisted_with_the_precommit(tmp_path):
    pv = open_pv(tmp_path)
    assert pv.lock(7) is None
    pv.sign_vote(PC, 7, 1, A)
    pv.sign_vote(PV, 7, 2, b"")
    pv.sign_vote(PC, 7, 2, b"")  # nil precommit keeps the lock
    lock = open_pv(tmp_path).lock(7)
    assert (lock.height, lock.round, lock.block_hash) == (7, 1, A)
    pv.sign_vote(PC, 7, 3, B)  # relock
    assert open_pv(tmp_path).lock(7).block_hash == B
    assert open_pv(tmp_path).lock(8) is None


def test_last_vote_is_rebuilt_from_disk(tmp_path):
    v = open_pv(tmp_path).sign_vote(PC, 11, 2, A)
    assert open_pv(tmp_path).last_vote() == v
    pv = open_pv(tmp_path)
    pv.sign_proposal(12, 0, None, make_block(ToyApp(), 1, 0, ME))
    assert pv.last_vote() is None


def test_corrupt_state_refuses_to_start(tmp_path):
    open_pv(tmp_path).sign_vote(PV, 1, 0, A)
    path = tmp_path / STATE_FILE
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(StorageError):
        open_pv(tmp_path)


def test_state_of_another_key_or_chain_refuses_to_start(tmp_path):
    open_pv(tmp_path).sign_vote(PV, 1, 0, A)
    with pytest.raises(StorageError):
        PrivValidator(PrivateKey(b"\x09" * 32), CHAIN, tmp_path)
    with pytest.raises(StorageError):
        PrivValidator(ME, "other-chain", tmp_path)


def unwritable(state_dir) -> None:
    """Make the next persist fail as a full or failing disk would: its temp file's path
    is taken by a directory (a read-only mode would not stop root)."""
    (state_dir / STATE_FILE).with_suffix(".tmp").mkdir()


def test_a_signature_that_cannot_be_persisted_is_not_returned(tmp_path):
    pv = open_pv(tmp_path)
    pv.sign_vote(PV, 5, 0, A)
    unwritable(tmp_path)
    with pytest.raises(StorageError, match="cannot persist"):
        pv.sign_vote(PC, 5, 0, A)
    # Nothing of the failed signature counts: not in memory, not on disk.
    assert pv.last_signed == (5, 0, SignStep.PREVOTE) and pv.lock(5) is None
    assert open_pv(tmp_path).last_signed == (5, 0, SignStep.PREVOTE)


def test_the_engine_halts_rather_than_send_a_vote_it_could_not_persist(tmp_path):
    h = make_engine(tmp_path)
    unwritable(tmp_path / "privval")
    key = proposer(1, 0)
    block = make_block(h.app, 1, 0, key, time_ms=h.clock.time_ms())
    with pytest.raises(StorageError):
        h.deliver(sign_proposal(key, 1, 0, block))
    assert h.engine.halted is not None
    assert h.transport.votes(PV) == []
