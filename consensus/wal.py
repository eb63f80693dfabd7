"""Write-ahead log of the consensus messages accepted at the current height.

The privval file alone keeps a restarted validator safe (it never contradicts what
it signed, and keeps its lock). It does not keep the chain live: the proposals and
votes a node had seen are gone, and with them the proof of lock that other
validators need to unlock, or even the only copy of a locked block. As in
cometbft, every accepted proposal and vote is appended here before it is acted
on, the log is fsynced before this node signs anything, and a restart replays the
log of its height.

Format: records of ``u32 length || u32 crc32 || payload``. The first payload is a
``WalHeader``; the rest are ``ConsensusMessage`` encodings. A torn or corrupt tail
(a crash in the middle of a write) ends the replay and is cut off. One file holds
one height: entering a new height replaces it atomically.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from consensus.messages import ConsensusMessage, Message
from core import DecodeError, MaxLen, StorageError, Wire
from core.files import fsync_dir, make_durable_dir

log = logging.getLogger("consensus.wal")

WAL_FILE = "consensus.wal"
_HEAD = struct.Struct(">II")
# No single record can be larger than the biggest consensus message.
_MAX_RECORD = ConsensusMessage.MAX_ENCODED


@dataclass(frozen=True, slots=True)
class WalHeader(Wire):
    chain_id: Annotated[str, MaxLen(64)]
    height: int

    MAX_ENCODED = 128


class WAL:
    """The log of one validator's consensus inputs; one owner, not thread-safe."""

    def __init__(self, state_dir: Path, chain_id: str) -> None:
        self.chain_id = chain_id
        self._dir = Path(state_dir)
        try:
            # Its name durable too, as the log's own (it holds the privval state as well).
            make_durable_dir(self._dir)
        except OSError as exc:
            raise StorageError(f"cannot create consensus WAL directory {self._dir}: {exc}") from exc
        self._path = self._dir / WAL_FILE
        self._fd: int | None = None
        self._dirty = False
        self.height = 0
        # Bytes known to be on disk (after the last fsync); the simulation uses it
        # to model a power loss that drops the unsynced tail.
        self.synced_size = 0
        self._size = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size(self) -> int:
        """Bytes of the log, appended ones included (synced or not)."""
        return self._size

    def start_height(self, height: int) -> list[Message]:
        """Switch to ``height``; return the messages logged for it before a restart."""
        self.close()
        replay, good_size = self._read(height)
        if replay is None:
            self._create(height)
            return []
        # Keep what was logged; drop a torn tail so later appends stay readable.
        try:
            fd = os.open(self._path, os.O_WRONLY)
            try:
                os.ftruncate(fd, good_size)
                os.lseek(fd, good_size, os.SEEK_SET)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise StorageError(f"cannot reopen consensus WAL {self._path}: {exc}") from exc
        self._fd = fd
        self.height = height
        self._size = self.synced_size = good_size
        log.info("replaying %d consensus messages of height %d", len(replay), height)
        return replay

    def append(self, msg: Message) -> None:
        """Log an accepted message (buffered by the OS until ``sync``)."""
        if self._fd is None:
            raise StorageError("consensus WAL is not open")
        record = _record(ConsensusMessage.wrap(msg).encode())
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise StorageError(f"cannot append to consensus WAL {self._path}: {exc}") from exc
        self._size += len(record)
        self._dirty = True

    def sync(self) -> None:
        """Make everything appended so far durable (called before signing anything)."""
        if self._fd is None or not self._dirty:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise StorageError(f"cannot fsync consensus WAL {self._path}: {exc}") from exc
        self._dirty = False
        self.synced_size = self._size

    def rewrite(self, msgs: Iterable[Message]) -> None:
        """Replace the log of the current height with ``msgs`` (what is still worth
        replaying, in the order to replay it), synced, in one atomic switch: a crash
        leaves the old log or the new one. The engine drops the proposals of old rounds
        (``BFTConfig.kept_proposal_rounds``), and a height of many rounds otherwise
        logged every one of them: gigabytes to read back at a restart after a day."""
        if self._fd is None:
            raise StorageError("consensus WAL is not open")
        height = self.height
        self.close()
        self._create(height, msgs)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- internals -------------------------------------------------------------------

    def _read(self, height: int) -> tuple[list[Message] | None, int]:
        """Messages of ``height`` and the size of the intact prefix; None if the file
        is missing or holds another height (or chain)."""
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return None, 0
        except OSError as exc:
            raise StorageError(f"cannot read consensus WAL {self._path}: {exc}") from exc
        records = _split(data)
        if not records:
            return None, 0
        try:
            header = WalHeader.decode(records[0][0])
        except DecodeError:
            return None, 0
        if header.chain_id != self.chain_id or header.height != height:
            return None, 0
        msgs: list[Message] = []
        good = records[0][1]
        for payload, end in records[1:]:
            try:
                msgs.append(ConsensusMessage.decode(payload).unwrap())
            except DecodeError:
                # A record with a valid checksum that does not decode: written by a
                # different version. Stop there rather than guess, and cut the log
                # there too: appends behind it would never be replayed.
                log.warning("consensus WAL %s: undecodable record, replay stops", self._path)
                break
            good = end
        return msgs, good

    def _create(self, height: int, msgs: Iterable[Message] = ()) -> None:
        tmp = self._path.with_suffix(".tmp")
        header = _record(WalHeader(self.chain_id, height).encode())
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                records = (_record(ConsensusMessage.wrap(m).encode()) for m in msgs)
                for record in itertools.chain([header], records):
                    view = memoryview(record)
                    while view:
                        view = view[os.write(fd, view) :]
                    size += len(record)
                os.fsync(fd)
                # Atomic switch: a crash leaves the old height's log or the new one.
                os.replace(tmp, self._path)
                fsync_dir(self._dir)
                os.lseek(fd, 0, os.SEEK_END)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise StorageError(f"cannot create consensus WAL {self._path}: {exc}") from exc
        self._fd = fd
        self.height = height
        self._size = self.synced_size = size
        self._dirty = False


def _record(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _split(data: bytes) -> list[tuple[bytes, int]]:
    """Intact records from the start of ``data``, each with the offset where it ends."""
    out: list[tuple[bytes, int]] = []
    pos = 0
    while pos + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if length > _MAX_RECORD or end > len(data):
            break
        payload = data[pos + _HEAD.size : end]
        if zlib.crc32(payload) != crc:
            break
        out.append((payload, end))
        pos = end
    return out
