"""A thin wrapper over one LevelDB (plyvel) database, and its key spaces.

Every key starts with a one-byte prefix naming its key space; this table is the
only place prefixes are assigned (heights are 8-byte big-endian so keys sort by
height, positions 4-byte big-endian). A chain store (``storage.chain_store``) keeps
``TREE_NODE`` in a database of its own (``TREE_DIR``) and every other space in its
main one:

======  ==============  ======================================  ===========================
prefix  name            key after the prefix                    value
======  ==============  ======================================  ===========================
``m``   META            ASCII name (see below)                  genesis hash, heights, ...
``b``   BLOCK           height                                  ``Block`` encoding
``h``   BLOCK_HEIGHT    block hash (32)                         height
``c``   COMMIT          height                                  ``Commit`` finalizing it
``r``   RECEIPT         height, position                        receipt bytes (opaque)
``t``   TX_INDEX        tx hash (32)                            height, position
``s``   STATE           state key                               latest value (flat copy)
``n``   TREE_NODE       version (8) || node hash (32)           state tree node encoding
``n``   TREE_NODE       version (8) alone                       references (40 bytes each)
                                                                of the nodes it replaced
``R``   STATE_ROOT      height                                  the root's version || hash
``e``   BLOCK_EVENTS    height                                  begin-block events (opaque)
``E``   EPOCH           epoch                                   epoch record (opaque, node's)
``P``   EPOCH_SET       epoch                                   digest of its producer set
``C``   EPOCH_CHANGE    epoch whose digest differs from the     empty
                        one before (both indexed)
``G``   EPOCH_GAP       epoch without a digest whose            empty
                        predecessor has one, below the
                        highest indexed (``epoch_top``)
======  ==============  ======================================  ===========================

``META`` names: ``genesis`` (genesis hash), ``head`` (head height), ``block_base``
and ``state_base`` (lowest height whose block, resp. state, is kept: absent means
0, an archive), ``sync`` (the target of a state sync in progress: while it is
there the store has no head and nothing in it is state), ``tree_layout`` (one
byte, ``storage.state_tree.TREE_LAYOUT``: where the tree's keys and nodes sit and
how the records it holds are encoded; a store of another layout is refused),
``stale_from`` (the lowest version whose list of replaced nodes may still be stored:
pruning starts there; absent means 1), ``epoch_sets`` (present once every stored
epoch record's producer set is in the ``EPOCH_SET`` index: a store written before
the index is indexed once, when a node opens it), ``epoch_top`` (the highest epoch
in the ``EPOCH_SET`` index: past it nothing is indexed, and no marker says so); while
a state sync that moved to a new target is in progress (docs/state-sync.md, A new target): ``held/`` + hash (the reference of
a subtree held whole from a target it left), ``held_versions`` (8 bytes each: the
versions it holds nodes at), ``sweep`` (references: a tree that stays, then the roots
of what is still to be deleted) and ``flat_stale`` (the flat state is to be written
again from the tree at install).

The flat ``STATE`` space duplicates the latest leaves of the tree so that reads
of the current state are one LevelDB lookup instead of a walk of ~20 nodes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Final, Literal

import plyvel

from core.errors import StorageError
from core.files import make_durable_dir
from storage.table_reads import read_tables_without_mmap

META: Final = b"m"
BLOCK: Final = b"b"
BLOCK_HEIGHT: Final = b"h"
COMMIT: Final = b"c"
RECEIPT: Final = b"r"
TX_INDEX: Final = b"t"
STATE: Final = b"s"
TREE_NODE: Final = b"n"
STATE_ROOT: Final = b"R"
BLOCK_EVENTS: Final = b"e"
EPOCH: Final = b"E"
EPOCH_SET: Final = b"P"
EPOCH_CHANGE: Final = b"C"
EPOCH_GAP: Final = b"G"

HEIGHT_SIZE = 8
POSITION_SIZE = 4


def encode_height(height: int) -> bytes:
    return height.to_bytes(HEIGHT_SIZE, "big")


def decode_height(data: bytes) -> int:
    if len(data) != HEIGHT_SIZE:
        raise StorageError(f"stored height must be {HEIGHT_SIZE} bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def encode_position(position: int) -> bytes:
    return position.to_bytes(POSITION_SIZE, "big")


def _reason(exc: BaseException) -> str:
    # plyvel puts LevelDB's status message in args[0] as bytes.
    raw = exc.args[0] if exc.args else exc
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


class WriteBatch:
    """Puts and deletes that reach the disk together, or not at all."""

    __slots__ = ("_batch", "_size")

    def __init__(self, batch: plyvel.WriteBatch) -> None:
        self._batch = batch
        self._size = 0

    def put(self, key: bytes, value: bytes) -> None:
        self._batch.put(key, value)
        self._size += 1

    def delete(self, key: bytes) -> None:
        self._batch.delete(key)
        self._size += 1

    def put_many(self, prefix: bytes, items: Iterable[tuple[bytes, bytes]]) -> None:
        """``put(prefix + key, value)`` for each (key, value) of ``items``, in one call:
        a block writes tens of thousands of tree nodes, and a method call per node
        cost ~0.1 us each on top of LevelDB's own work."""
        put = self._batch.put
        count = 0
        for key, value in items:
            put(prefix + key, value)
            count += 1
        self._size += count

    def __len__(self) -> int:
        return self._size


class ReadView:
    """The database as it was when ``Database.snapshot`` made this view: reads through
    it (``Database.get``, ``Database.next_key`` with ``view``) agree with each other
    whatever is written meanwhile."""

    __slots__ = ("source",)

    def __init__(self, source: plyvel.Snapshot) -> None:
        self.source = source


class Database:
    """One LevelDB directory, opened exclusively by this process.

    LevelDB holds an fcntl lock on ``LOCK`` while open, so a second node on the
    same directory fails at open time with a clear message instead of sharing it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create_if_missing: bool = True,
        sync: bool = True,
        block_cache_bytes: int = 64 * 1024 * 1024,
        write_buffer_bytes: int = 32 * 1024 * 1024,
        compression: Literal["snappy"] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._sync = sync
        if create_if_missing:
            try:
                if sync:
                    # The directory's name durable too, and the tree's database's inside
                    # the chain's: LevelDB syncs its own directory, never the parent, so
                    # a power loss could keep the chain's head and lose the tree's whole
                    # database (the store then refuses to open) or the whole chain.
                    make_durable_dir(self.path)
                else:
                    os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                # A file where the directory goes, a read-only parent: the operator's to fix.
                raise StorageError(f"cannot create database at {self.path}: {exc}") from exc
        elif not os.path.exists(os.path.join(self.path, "CURRENT")):
            # Checked here: LevelDB would create the directory before failing.
            raise StorageError(f"no database at {self.path}")
        # Once per process, before LevelDB builds its environment (storage.table_reads).
        read_tables_without_mmap()
        try:
            self._db: plyvel.DB | None = plyvel.DB(
                self.path,
                create_if_missing=create_if_missing,
                lru_cache_size=block_cache_bytes,
                write_buffer_size=write_buffer_bytes,
                # Most state reads are point lookups, many for keys that do not exist
                # yet (new accounts): a bloom filter skips the table reads.
                bloom_filter_bits=10,
                # None, not LevelDB's snappy: most of what a node writes is hashes
                # (tree nodes, tx index, signatures), which do not compress, yet every
                # table write tried, and at a big state on random keys the compactions
                # took as much CPU as the blocks (docs/node.md, LevelDB compactions;
                # ``benches.compaction`` opens a "snappy" store as its baseline).
                # Tables written compressed before stay readable: each block says.
                compression=compression,
            )
        except plyvel.IOError as exc:
            reason = _reason(exc)
            # LevelDB's LockFile says "lock <file>: ..."; every IO error names its file,
            # so "lock" alone would match a LOCK it cannot open or a path such as
            # "/var/lib/blockchain".
            if reason.startswith("IO error: lock "):
                where = "this process" if "already held by process" in reason else "another process"
                raise StorageError(
                    f"database at {self.path} is in use by {where} ({reason})"
                ) from exc
            raise StorageError(f"cannot open database at {self.path}: {reason}") from exc
        except plyvel.CorruptionError as exc:
            raise StorageError(
                f"database at {self.path} is corrupt: {_reason(exc)}; "
                "restore it from a backup or resync the node"
            ) from exc
        except plyvel.Error as exc:
            raise StorageError(f"cannot open database at {self.path}: {_reason(exc)}") from exc

    @property
    def _handle(self) -> plyvel.DB:
        if self._db is None:
            raise StorageError(f"database at {self.path} is closed")
        return self._db

    def get(
        self,
        key: bytes,
        *,
        verify_checksums: bool = False,
        fill_cache: bool = True,
        view: ReadView | None = None,
    ) -> bytes | None:
        """``key``'s value, or None. With ``verify_checksums``, what is read from a table
        file is checked against LevelDB's checksums (a damaged one is a ``StorageError``).
        Without ``fill_cache``, the table blocks read are not kept in LevelDB's block
        cache (a read of something big and rarely read again). With ``view``, as the
        database was when it was made (``snapshot``)."""
        source = self._handle if view is None else view.source
        try:
            value: bytes | None = source.get(
                key, verify_checksums=verify_checksums, fill_cache=fill_cache
            )
        except plyvel.Error as exc:
            raise StorageError(f"read from {self.path} failed: {_reason(exc)}") from exc
        return value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key without the prefix, value) for every key under ``prefix``, in key order."""
        cut = len(prefix)
        try:
            for key, value in self._handle.iterator(prefix=prefix):
                yield key[cut:], value
        except plyvel.Error as exc:
            raise StorageError(f"scan of {self.path} failed: {_reason(exc)}") from exc

    def iterate_keys(self, prefix: bytes, *, snapshot: bool = False) -> Iterator[bytes]:
        """Keys (without the prefix) under ``prefix`` in key order. With ``snapshot``, as
        the database was when the scan began: later writes are not seen."""
        cut = len(prefix)
        handle = self._handle
        snap = handle.snapshot() if snapshot else None
        try:
            source = snap if snap is not None else handle
            for key in source.iterator(prefix=prefix, include_value=False):
                yield key[cut:]
        except plyvel.Error as exc:
            raise StorageError(f"scan of {self.path} failed: {_reason(exc)}") from exc
        finally:
            if snap is not None:
                snap.close()

    @contextmanager
    def snapshot(self) -> Iterator[ReadView]:
        """A view for reads that must agree with each other (``get`` and ``next_key``
        with ``view``) while other threads write: each read alone sees the database at
        its own moment."""
        try:
            snap = self._handle.snapshot()
        except plyvel.Error as exc:
            raise StorageError(f"snapshot of {self.path} failed: {_reason(exc)}") from exc
        try:
            yield ReadView(snap)
        finally:
            snap.close()

    def next_key(
        self, prefix: bytes, after: bytes, *, view: ReadView | None = None
    ) -> bytes | None:
        """The first key under ``prefix`` that sorts after ``prefix + after`` (without
        the prefix), or None: one seek, whatever the space holds. With ``view``, as the
        database was when it was made (``snapshot``)."""
        # The keys under ``prefix`` end before ``prefix`` with its last byte raised (the
        # prefixes are single bytes below 0xFF).
        stop = prefix[:-1] + bytes([prefix[-1] + 1])
        source = self._handle if view is None else view.source
        try:
            for key in source.iterator(
                start=prefix + after, stop=stop, include_start=False, include_value=False
            ):
                return bytes(key[len(prefix) :])
        except plyvel.Error as exc:
            raise StorageError(f"seek in {self.path} failed: {_reason(exc)}") from exc
        return None

    def new_batch(self, *, sync: bool | None = None) -> WriteBatch:
        # Nothing reaches the database before ``write``: a batch abandoned half-filled
        # (the caller raised) is simply dropped.
        # ``sync=False`` for writes whose loss in a crash is harmless (pruning's deletes,
        # a state sync's chunks): they are redone, and a later synced write to this
        # database (not another one) flushes them.
        return WriteBatch(self._handle.write_batch(sync=self._sync and sync is not False))

    def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` atomically; fsync it before returning unless opened with sync=False."""
        try:
            batch._batch.write()
        except plyvel.Error as exc:
            raise StorageError(f"write to {self.path} failed: {_reason(exc)}") from exc

    def compact(self) -> None:
        """Compact every key space into LevelDB's sorted tables.

        Opening replays the write log into memory first: a store written by one
        huge batch (a prebuilt big state) is compacted once, with this database's
        options (bloom filters in its tables), so that later opens find tables.
        """
        try:
            # Explicit bounds: plyvel's compact_range() without them leaves deletions on disk.
            self._handle.compact_range(start=b"\x00", stop=b"\xff" * 8)
        except plyvel.Error as exc:
            raise StorageError(f"compaction of {self.path} failed: {_reason(exc)}") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
