"""The double-sign guard: a validator key that never signs two different things at one step.

Every signature first passes a check against the last signed (height, round, step)
and is written to disk (temp file, fsync, rename, fsync of the directory) before
it is returned, so the caller can only send what has been made durable. After a
crash the reopened guard refuses anything that conflicts with what was signed
before. Re-signing the identical message is allowed and returns the same
signature, so a restarted node can re-send its last vote.

The same write also records the lock: a precommit for a block at (height, round)
locks the validator on that block. Tendermint's safety relies on honest
validators keeping their lock; persisting it with the precommit that creates it
is what lets a restarted node keep it (cometbft restores it from its WAL).
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated

from consensus.messages import Proposal, proposal_signing_body
from core import (
    Block,
    DecodeError,
    LiveLedgerError,
    MaxLen,
    PrivateKey,
    SignDomain,
    StorageError,
    Vote,
    VoteType,
    Wire,
    unpack_raw,
    vote_signing_body,
)
from core.files import fsync_dir, make_durable_dir

STATE_FILE = "privval_state.bin"


class _DirLock:
    """The flock on a state directory: a flock belongs to one open file, so every guard
    of this process on that directory (a reopen) shares one, released (its descriptor
    closed) when the last of them goes."""

    __slots__ = ("__weakref__",)

    def __init__(self, fd: int) -> None:
        weakref.finalize(self, os.close, fd)


# The directories this process holds, by (device, inode).
_held_dirs: weakref.WeakValueDictionary[tuple[int, int], _DirLock] = weakref.WeakValueDictionary()
_held_dirs_lock = threading.Lock()


class SignStep(IntEnum):
    """Order of signing steps inside one round; values are persisted."""

    NONE = 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


_STEP_OF_VOTE = {VoteType.PREVOTE: SignStep.PREVOTE, VoteType.PRECOMMIT: SignStep.PRECOMMIT}


class DoubleSignRefused(LiveLedgerError):
    """Signing this would conflict with something already signed. Expected after a restart."""


@dataclass(frozen=True, slots=True)
class SignState(Wire):
    """What is on disk: the last signature and the lock (both per height)."""

    chain_id: Annotated[str, MaxLen(64)]
    public_key: Annotated[bytes, MaxLen(32)]
    height: int
    round: int
    step: int
    # The exact signed body and its signature, to recognise and repeat an identical request.
    body: Annotated[bytes, MaxLen(256)]
    signature: Annotated[bytes, MaxLen(64)]
    lock_height: int
    lock_round: int
    lock_hash: Annotated[bytes, MaxLen(32)]

    MAX_ENCODED = 1024


@dataclass(frozen=True, slots=True)
class Lock:
    """The block this validator precommitted last at ``height`` (in ``round``)."""

    height: int
    round: int
    block_hash: bytes


def _hold(directory: Path) -> _DirLock:
    """Lock ``directory`` for this process, or raise ``StorageError`` if another holds it.

    Two processes of one node (started twice on one home, the second with another data
    directory so that the database's own lock does not stop it) each read the state
    once and then sign from memory: each would sign what the other already had.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise StorageError(f"cannot open privval state directory {directory}: {exc}") from exc
    st = os.fstat(fd)
    with _held_dirs_lock:
        held = _held_dirs.get((st.st_dev, st.st_ino))
        if held is not None:
            os.close(fd)
            return held
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StorageError(
                f"privval state {directory} is in use by another process: a second node "
                "with this key would sign what the first one signed"
            ) from exc
        held = _held_dirs[(st.st_dev, st.st_ino)] = _DirLock(fd)
        return held


class PrivValidator:
    """Signs proposals and votes for one validator key, guarded by a state file.

    It has no switch to let a conflicting signature out: tests that need a
    validator to equivocate sign with the key directly (``tests/consensus/byzantine.py``).
    """

    def __init__(self, key: PrivateKey, chain_id: str, state_dir: Path) -> None:
        self._key = key
        self.chain_id = chain_id
        self._dir = Path(state_dir)
        self._path = self._dir / STATE_FILE
        try:
            # The directory's own name durable too: lost in a power loss with the state
            # inside, the guard would read "never signed" and sign again.
            make_durable_dir(self._dir)
        except OSError as exc:
            raise StorageError(f"cannot create privval state directory {self._dir}: {exc}") from exc
        # Held as long as this guard is.
        self._dir_lock = _hold(self._dir)
        self._state = self._load()

    @property
    def public_key(self) -> bytes:
        return self._key.public_key

    @property
    def last_signed(self) -> tuple[int, int, SignStep]:
        """(height, round, step) of the last signature; (0, 0, NONE) when nothing was signed."""
        s = self._state
        return s.height, s.round, SignStep(s.step)

    def lock(self, height: int) -> Lock | None:
        """The persisted lock at ``height``, if this validator precommitted a block there."""
        s = self._state
        if s.lock_height != height or not s.lock_hash:
            return None
        return Lock(s.lock_height, s.lock_round, s.lock_hash)

    def last_vote(self) -> Vote | None:
        """The last signed vote, rebuilt from disk (None if the last signature was not a vote)."""
        s = self._state
        if s.step not in (SignStep.PREVOTE, SignStep.PRECOMMIT):
            return None
        # The body is exactly vote_signing_body(type, height, round, block_hash).
        vote_type, height, round_, block_hash = unpack_raw(s.body)
        return Vote(vote_type, height, round_, block_hash, self.public_key, s.signature)

    # --- signing ---------------------------------------------------------------------

    def sign_vote(self, vote_type: VoteType, height: int, round_: int, block_hash: bytes) -> Vote:
        """Sign a prevote or precommit; raise ``DoubleSignRefused`` if it conflicts."""
        body = vote_signing_body(vote_type, height, round_, block_hash)
        step = _STEP_OF_VOTE[VoteType(vote_type)]
        # A precommit for a block is the moment the lock changes (paper lines 36-41).
        lock = (
            Lock(height, round_, block_hash) if step == SignStep.PRECOMMIT and block_hash else None
        )
        sig = self._sign(height, round_, step, SignDomain.VOTE, body, lock)
        return Vote(int(vote_type), height, round_, block_hash, self.public_key, sig)

    def sign_proposal(
        self, height: int, round_: int, pol_round: int | None, block: Block
    ) -> Proposal:
        """Sign a proposal of ``block``; raise ``DoubleSignRefused`` if it conflicts."""
        body = proposal_signing_body(height, round_, pol_round, block.hash)
        sig = self._sign(height, round_, SignStep.PROPOSE, SignDomain.PROPOSAL, body, None)
        return Proposal(height, round_, pol_round, block, self.public_key, sig)

    def _sign(
        self,
        height: int,
        round_: int,
        step: SignStep,
        domain: SignDomain,
        body: bytes,
        lock: Lock | None,
    ) -> bytes:
        s = self._state
        new_hrs = (height, round_, int(step))
        last_hrs = (s.height, s.round, s.step)
        if s.step != SignStep.NONE and new_hrs == last_hrs:
            # The very same message again (e.g. re-sent after a restart): same signature.
            if body == s.body:
                return s.signature
            raise DoubleSignRefused(f"conflicting {step.name} at height {height} round {round_}")
        if s.step != SignStep.NONE and new_hrs < last_hrs:
            # Going back would let us sign something that contradicts a later vote.
            raise DoubleSignRefused(
                f"{step.name} at {height}/{round_} is before last signed "
                f"{SignStep(s.step).name} at {s.height}/{s.round}"
            )
        sig = self._key.sign(domain, self.chain_id, body)
        if lock is None:
            # Keep the lock already held.
            lock_height, lock_round, lock_hash = s.lock_height, s.lock_round, s.lock_hash
        else:
            lock_height, lock_round, lock_hash = lock.height, lock.round, lock.block_hash
        new = SignState(
            chain_id=self.chain_id,
            public_key=self.public_key,
            height=height,
            round=round_,
            step=int(step),
            body=body,
            signature=sig,
            lock_height=lock_height,
            lock_round=lock_round,
            lock_hash=lock_hash,
        )
        # Durable before anyone else can see the signature.
        self._persist(new)
        self._state = new
        return sig

    # --- storage ---------------------------------------------------------------------

    def _load(self) -> SignState:
        if not self._path.exists():
            return SignState(self.chain_id, self.public_key, 0, 0, 0, b"", b"", 0, 0, b"")
        try:
            state = SignState.decode(self._path.read_bytes())
        except (OSError, DecodeError) as exc:
            # Refuse to run rather than sign without knowing what was signed before.
            raise StorageError(f"privval state {self._path} is unreadable: {exc}") from exc
        if state.chain_id != self.chain_id or state.public_key != self.public_key:
            raise StorageError(
                f"privval state {self._path} belongs to chain {state.chain_id!r} key "
                f"{state.public_key.hex()}, expected {self.chain_id!r} {self.public_key.hex()}"
            )
        return state

    def _persist(self, state: SignState) -> None:
        tmp = self._path.with_suffix(".tmp")
        data = state.encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename is atomic: a crash leaves either the old or the new state, never half.
            os.replace(tmp, self._path)
            # The rename itself is durable only once the directory entry is synced.
            fsync_dir(self._dir)
        except OSError as exc:
            raise StorageError(f"cannot persist privval state to {self._path}: {exc}") from exc
