"""The node's chain database: blocks, certificates, receipts, tx index and state.

Two LevelDB databases: the state tree's nodes in their own (``TREE_DIR``, a
subdirectory of the store's), everything else in the store's directory. Nodes are
keyed by the version that made them, so each block's sort after everything stored
before them and LevelDB's compactions of that database are moves of whole tables
(but where pruning deletes old nodes); in one database with the keys of
random hashes (tx index, flat state) every table spanned the whole key space and
each compaction rewrote the level below (docs/node.md, Tree nodes in a database of
their own).

A block's tree nodes are written first (with the list of the older nodes its root
no longer reaches, which pruning deletes by), then everything else it changes with
the head pointer, each write with ``sync=True``: after a crash at any point the
store holds either the whole block or none of it, at worst with nodes no stored
root reaches, which the block's commit writes again (never a root whose nodes are
missing). A
synced write makes earlier unsynced ones durable in its own database only, so
wherever unsynced deletes in one database must not outlive what the other says
(pruning's forgotten roots, a state sync's wipe), that database's write is synced
first. Key spaces are listed in ``storage.db``.

Retention (docs/node.md, Pruning): ``prune_blocks`` and ``prune_states`` drop what
lies below a height; the lowest kept heights (``block_base``, ``state_base``) are
stored, so a read below them is told apart from a read of something that never
existed (``Pruned``, HTTP 410). State sync (docs/state-sync.md): a store can start
at a final height instead of genesis: ``begin_sync``, ``store_chunk`` for each
verified chunk, ``finish_sync`` in one synced batch. Until that last batch the
store has no head, so nothing half-synced is ever read as state.

Threads: one writer (the thread that prepares and commits blocks) and any
number of readers (API, mempool). The latest-state cache is guarded by a lock so
that a reader can never put back a value that a commit has just replaced; tree
nodes are immutable per reference, so the tree's cache needs no lock.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, TypeVar

from core.codec import Len, MaxLen, Wire
from core.errors import DecodeError, Invalid, StorageError
from core.hashing import HASH_SIZE
from core.types import Block, Commit, encoded_block_hash, tx_hash
from storage import db as spaces
from storage.cache import GenerationalCache
from storage.db import Database, decode_height, encode_height, encode_position
from storage.snapshot import (
    DEFAULT_CHUNK_BYTES,
    DamagedTree,
    Subtree,
    cross_links,
    damaged_paths,
    find_subtree,
    held_subtrees,
    matches_hash,
    serve_chunk,
    stored_below,
    walk_missing,
)
from storage.state_tree import (
    DEFAULT_TREE_CACHE_SIZE,
    REF_SIZE,
    TREE_LAYOUT,
    VERSION_SIZE,
    ZERO_REF,
    LeafNode,
    StateProof,
    StateTree,
    TreeUpdate,
    node_ref,
)

log = logging.getLogger("storage.chain_store")

_GENESIS = spaces.META + b"genesis"
_HEAD = spaces.META + b"head"
_BLOCK_BASE = spaces.META + b"block_base"
_STATE_BASE = spaces.META + b"state_base"
_SYNC = spaces.META + b"sync"
# A state sync's largest subtrees held whole from the targets it left: hash -> reference.
_HELD = spaces.META + b"held/"
# The versions a state sync's nodes held from the targets it left may be at (8 bytes
# each): every node stored at one of them roots a subtree stored whole.
_HELD_VERSIONS = spaces.META + b"held_versions"
# What a state sync still has to delete (references, one after another): first the root
# of a tree whose nodes stay (ZERO_REF for none), then the roots of what goes.
_SWEEP = spaces.META + b"sweep"
# Present when a state sync's flat state may hold keys its tree does not: rebuilt from
# the tree when the sync is installed.
_FLAT_STALE = spaces.META + b"flat_stale"
_LAYOUT = spaces.META + b"tree_layout"
_STALE_FROM = spaces.META + b"stale_from"
# Present once every stored epoch record's set is indexed (``index_epoch_sets``).
_EPOCH_SETS = spaces.META + b"epoch_sets"
# The highest epoch whose set is indexed: ``EPOCH_GAP`` marks holes below it only.
_EPOCH_TOP = spaces.META + b"epoch_top"
_LAYOUT_VALUE = bytes([TREE_LAYOUT])
# Deletes per write batch while pruning: bounded memory, and a commit is never held
# up for long behind one batch.
_PRUNE_BATCH = 10_000
_LOCATION_SIZE = spaces.HEIGHT_SIZE + spaces.POSITION_SIZE
DEFAULT_STATE_CACHE_SIZE = 1 << 17

# The state tree's database, in the store's directory (LevelDB ignores a
# subdirectory). Each gets half the write buffer that one database had
# (storage.db.Database's defaults) and LevelDB's default block cache of 8 MB: tables
# are read with pread through it (storage.table_reads), the kernel's page cache
# behind it holds the rest, and the node's own tree and state caches the hot part.
# On benches.flashdeal, 8 MB each against 32 MB: peak RSS 876-911 MB per validator
# against 922-990, the same rates.
TREE_DIR = "tree"
_CACHE_BYTES = 8 * 1024 * 1024
_WRITE_BUFFER_BYTES = 16 * 1024 * 1024


def open_store_db(
    path: str | os.PathLike[str], *, create: bool = True, sync: bool = True
) -> Database:
    """One of a ``ChainStore``'s two databases (the chain's or the tree's), opened with
    its share of the memory (``benches.compaction`` opens its side's the same way)."""
    return Database(
        path,
        create_if_missing=create,
        sync=sync,
        block_cache_bytes=_CACHE_BYTES,
        write_buffer_bytes=_WRITE_BUFFER_BYTES,
    )


_MISSING = object()
W = TypeVar("W", bound=Wire)


class OtherLayout(StorageError):
    """A store whose state tree another version of the node wrote, in a layout this
    one does not read (``storage.state_tree.TREE_LAYOUT``)."""


class Pruned(Invalid):
    """A block or state version below what this node keeps (its retention settings)."""

    code = "pruned"
    status = 410


@dataclass(frozen=True, slots=True)
class SyncTarget(Wire):
    """What a state sync in progress installs: the final block at ``height`` (whose
    header's state root the chunks are verified against) and its certificate."""

    height: int
    state_root: Annotated[bytes, Len(HASH_SIZE)]
    block: Annotated[bytes, MaxLen(Block.MAX_ENCODED)]
    commit: Annotated[bytes, MaxLen(64 * 1024)]

    MAX_ENCODED = Block.MAX_ENCODED + 64 * 1024 + 128


def sync_root(target: SyncTarget) -> bytes:
    """The reference a state sync keeps its root under: a synced store keeps every
    node at the target's height, whatever versions the serving nodes made them at
    (``storage.snapshot.verify_chunk``)."""
    return node_ref(target.height, target.state_root)


class _DbNodes:
    """The tree's ``NodeStore`` over the ``TREE_NODE`` key space of its database."""

    __slots__ = ("_get",)

    def __init__(self, db: Database) -> None:
        self._get = db.get

    def get_node(self, ref: bytes) -> bytes | None:
        return self._get(spaces.TREE_NODE + ref)


def _epoch_markers(
    older: bytes | None, this: bytes | None, epoch: int, top: int | None
) -> tuple[bool, bool]:
    """Whether ``epoch`` has an ``EPOCH_CHANGE`` and an ``EPOCH_GAP`` marker, given the
    digests of the epoch before it and its own (None: not indexed) and the highest epoch
    indexed: a change between two indexed sets; a hole after an indexed epoch, below the
    top (past the top nothing is indexed, which ``next_set_change`` knows from the top:
    a marker there would move with every epoch written, a delete each time)."""
    change = older is not None and this is not None and older != this
    gap = older is not None and this is None and top is not None and epoch < top
    return change, gap


class ChainStore:
    """Blocks, commits, receipts, the tx index and the state (flat and as a tree)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        sync: bool = True,
        tree_cache_size: int = DEFAULT_TREE_CACHE_SIZE,
        state_cache_size: int = DEFAULT_STATE_CACHE_SIZE,
    ) -> None:
        """Open (by default creating) the store at ``path``.

        ``create=False`` refuses a directory that holds no database (audits of an
        existing node). ``sync=False`` skips the fsync of each commit: only for
        throwaway stores such as an audit's replay, never for a node's chain.
        """
        self._db = open_store_db(path, create=create, sync=sync)
        self.path = self._db.path
        try:
            self._genesis_hash = self._db.get(_GENESIS)
            head = self._db.get(_HEAD)
            if (head is None) != (self._genesis_hash is None):
                raise StorageError(
                    f"database at {self.path} has a genesis hash or a head, not both"
                )
            if head is not None or self._db.get(_SYNC) is not None:
                # Before the tree's database opens: a store of an older layout keeps
                # its nodes elsewhere, and gets no empty database beside them.
                self._check_layout()
            self._nodes = open_store_db(
                os.path.join(self.path, TREE_DIR),
                # A chain's nodes are there, or it is refused (a copy of the top
                # directory alone would otherwise open with an empty tree).
                create=create and head is None,
                sync=sync,
            )
        except BaseException:
            self._db.close()
            raise
        try:
            self._tree = StateTree(_DbNodes(self._nodes), tree_cache_size)
            # Latest value (or None for absent) per key; filled by reads and commits.
            self._state_cache: GenerationalCache[bytes, bytes | None] = GenerationalCache(
                state_cache_size
            )
            self._state_lock = threading.Lock()
            # Bumped by every commit: a reader caches what it read from the database
            # only if no commit happened meanwhile.
            self._state_epoch = 0
            # (height, state root, its reference) of the head, swapped as one object
            # so readers never see the height of one block with the root of another.
            self._head: tuple[int, bytes, bytes] | None = None
            self._block_base = self._meta_height(_BLOCK_BASE)
            self._state_base = self._meta_height(_STATE_BASE)
            # Pruning (``prune_states``): the lowest version that may still have a list
            # of replaced nodes (genesis, version 0, replaces nothing), and the versions
            # whose lists a kept height holds (version -> that height), so that a pass
            # does not read them again while it stays kept.
            self._stale_from = max(1, self._meta_height(_STALE_FROM))
            self._held: dict[int, int] = {}
            # The epoch set index is read, then written, around each epoch written: the
            # commit thread and a pruning pass both keep records.
            self._epoch_lock = threading.Lock()
            if head is not None:
                height = decode_height(head)
                ref = self.state_ref(height)
                self._head = (height, ref[VERSION_SIZE:], ref)
        except BaseException:
            self.close()
            raise

    def _check_layout(self) -> None:
        raw = self._db.get(_LAYOUT)
        if raw != _LAYOUT_VALUE:
            found = {
                None: "1 (plain hashed key paths)",
                b"\x02": "2 (tree nodes keyed by hash)",
                b"\x03": "3 (party records without deal counts)",
                b"\x04": "4 (tree nodes in the chain's database)",
                b"\x05": "5 (no lists of replaced nodes)",
                b"\x06": "6 (candidates without counts of withheld blocks)",
                b"\x07": "7 (no producer terms, approvals without heights)",
            }.get(raw, "0x" + (raw or b"").hex())
            raise OtherLayout(
                f"database at {self.path} holds a state tree of layout {found}; this node "
                f"builds layout {TREE_LAYOUT} (grouped key paths, docs/vm.md; nodes keyed by "
                "version in a database of their own, docs/node.md; party records counting a "
                "buyer's last deal, docs/commerce.md; candidates counting withheld blocks, "
                "producer terms and approvals with heights, docs/staking.md): start it on "
                "an empty data directory and let it sync"
            )

    def _meta_height(self, key: bytes) -> int:
        raw = self._db.get(key)
        return 0 if raw is None else decode_height(raw)

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()
        self._nodes.close()

    def compact(self) -> None:
        """Compact both databases (``Database.compact``): a store written in one huge
        batch (a prebuilt big state) then opens from tables, not by replaying its log."""
        self._db.compact()
        self._nodes.compact()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def initialize(self, genesis_hash: bytes, state: Mapping[bytes, bytes]) -> bytes:
        """Write the genesis state (height 0) once; return its state root.

        On a store that is already initialized this only checks that it belongs to
        the same chain (the genesis hash commits to the genesis state) and returns
        the stored height-0 root.
        """
        if len(genesis_hash) != HASH_SIZE:
            raise StorageError(f"genesis hash must be {HASH_SIZE} bytes, got {len(genesis_hash)}")
        if self._genesis_hash is not None:
            if self._genesis_hash != genesis_hash:
                raise StorageError(
                    f"database at {self.path} belongs to the chain with genesis "
                    f"{self._genesis_hash.hex()}, not {genesis_hash.hex()}"
                )
            return self.state_root(0)
        if any(value is None for value in state.values()):
            raise StorageError("genesis state values must be bytes, not None")
        update = self._tree.update(ZERO_REF, state, version=0)
        zero = encode_height(0)
        # The nodes first (see the module's docstring): a crash before the second
        # write leaves an uninitialized store, initialized again the same way.
        self._write_nodes(update.nodes)
        batch = self._db.new_batch()
        for key, value in state.items():
            batch.put(spaces.STATE + key, value)
        batch.put(spaces.STATE_ROOT + zero, update.ref)
        # The genesis hash indexes as height 0, so height 1's parent resolves too.
        batch.put(spaces.BLOCK_HEIGHT + genesis_hash, zero)
        batch.put(_GENESIS, genesis_hash)
        batch.put(_LAYOUT, _LAYOUT_VALUE)
        batch.put(_HEAD, zero)
        self._db.write(batch)
        self._tree.committed(update.ref)
        self._genesis_hash = genesis_hash
        self._head = (0, update.root, update.ref)
        with self._state_lock:
            self._state_epoch += 1
            self._state_cache.clear()
        return update.root

    @property
    def initialized(self) -> bool:
        return self._genesis_hash is not None

    @property
    def genesis_hash(self) -> bytes | None:
        """The genesis hash this store was initialized with, None before ``initialize``."""
        return self._genesis_hash

    def _require_head(self) -> tuple[int, bytes, bytes]:
        head = self._head
        if head is None:
            raise StorageError(f"database at {self.path} is not initialized with a genesis")
        return head

    @property
    def height(self) -> int:
        """Height of the head block (0 right after genesis)."""
        return self._require_head()[0]

    @property
    def head_root(self) -> bytes:
        """State root after the head block."""
        return self._require_head()[1]

    @property
    def head_ref(self) -> bytes:
        """The tree's reference to the head state's root (what ``tree`` reads take)."""
        return self._require_head()[2]

    @property
    def tree(self) -> StateTree:
        """The state tree over this store's nodes: read or prove at any stored root."""
        return self._tree

    # --- state -----------------------------------------------------------------------

    def state_get(self, key: bytes) -> bytes | None:
        """Latest value of ``key``: one lookup in the flat state, no tree walk."""
        with self._state_lock:
            cached = self._state_cache.get(key, _MISSING)
            epoch = self._state_epoch
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]  # past the sentinel: bytes | None
        value = self._db.get(spaces.STATE + key)
        with self._state_lock:
            if self._state_epoch == epoch:
                self._state_cache.put(key, value)
        return value

    def iter_state(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Latest (key, value) pairs whose key starts with ``prefix``, in key order."""
        for rest, value in self._db.iterate(spaces.STATE + prefix):
            yield prefix + rest, value

    def state_root(self, height: int) -> bytes:
        """The state root after block ``height`` (a header's ``state_root``)."""
        return self.state_ref(height)[VERSION_SIZE:]

    def state_ref(self, height: int) -> bytes:
        """The tree's reference to the state root after block ``height`` (the version
        that made the root, then its hash): what ``tree`` reads take."""
        root = self._db.get(spaces.STATE_ROOT + encode_height(height))
        if root is None:
            if height < self._state_base:
                raise Pruned(
                    f"state at height {height} is pruned: this node keeps state from "
                    f"height {self._state_base} (and snapshot heights)"
                )
            raise StorageError(
                f"no state root for height {height} in {self.path} "
                f"(head is {None if self._head is None else self._head[0]})"
            )
        if len(root) != REF_SIZE:
            raise StorageError(f"stored state root for height {height} in {self.path} is corrupt")
        return root

    def prepare_state(self, changes: Mapping[bytes, bytes | None]) -> TreeUpdate:
        """The tree update for ``changes`` on top of the head state. Writes nothing.

        The head values that the state cache holds (the block's execution has just
        read most of them) let the tree skip reading the changed keys' old leaves.
        """
        height, _, ref = self._require_head()
        # New nodes are made at the height of the block they are for.
        return self._tree.update(ref, changes, self._cached_value, version=height + 1)

    def _cached_value(self, key: bytes) -> bytes | None:
        """The head value of ``key`` if the state cache holds it: never a read."""
        with self._state_lock:
            return self._state_cache.get(key)

    def warm_tree(self, start: int = 1, budget: int = 1 << 13) -> int:
        """``StateTree.warm`` on the head state: from ``start``, at most ``budget`` slot
        positions; returns where to go on from, 0 when done. The updating thread only."""
        return self._tree.warm(self.head_ref, start, budget)

    def prove(
        self, key: bytes, height: int | None = None
    ) -> tuple[bytes | None, StateProof, bytes]:
        """(value or None, proof, state root) of ``key`` after block ``height`` (default head)."""
        root = self.head_ref if height is None else self.state_ref(height)
        try:
            value, proof = self._tree.get_with_proof(root, key)
        except StorageError:
            # Pruned while we read (the height fell out of the window meanwhile).
            if height is not None and height < self._state_base:
                raise Pruned(f"state at height {height} was pruned while being read") from None
            raise
        return value, proof, root[VERSION_SIZE:]

    # --- blocks ----------------------------------------------------------------------

    def commit_block(
        self,
        block: Block,
        commit: Commit,
        receipts: Sequence[bytes],
        changes: Mapping[bytes, bytes | None],
        tree_update: TreeUpdate,
        *,
        block_bytes: bytes | None = None,
        tx_hashes: Sequence[bytes] | None = None,
        block_events: bytes | None = None,
    ) -> None:
        """Persist a finalized block and everything it changed in one synced batch.

        ``block_bytes`` and ``tx_hashes`` (the block's encoding and its
        transactions' hashes) save work the caller already did; they must be
        exactly what ``block.encode()`` and ``tx_hash`` of each of ``block.txs`` give.

        ``changes`` must be the mapping ``tree_update`` was prepared from (via
        ``prepare_state`` on the current head). Any mismatch found here is a bug in
        the caller, so it raises ``StorageError`` and writes nothing.
        """
        header = block.header
        head_height, _, head_ref = self._require_head()
        height = head_height + 1
        block_hash = block.hash
        if header.height != height:
            raise StorageError(f"block height {header.height} does not follow head {head_height}")
        if tree_update.base is not None and tree_update.base != head_ref:
            raise StorageError(
                f"state update was prepared on root {tree_update.base.hex()}, "
                f"head root is {head_ref.hex()}"
            )
        if header.state_root != tree_update.root:
            raise StorageError(
                f"block {height} state root is {header.state_root.hex()}, "
                f"the state update gives {tree_update.root.hex()}"
            )
        if commit.height != height or commit.block_hash != block_hash:
            raise StorageError(
                f"commit is for block {commit.block_hash.hex()} at height {commit.height}, "
                f"expected {block_hash.hex()} at height {height}"
            )
        if len(receipts) != len(block.txs):
            raise StorageError(
                f"block {height} has {len(block.txs)} txs but {len(receipts)} receipts"
            )
        at = encode_height(height)
        batch = self._db.new_batch()
        if tx_hashes is None:
            tx_hashes = [tx_hash(raw) for raw in block.txs]
        if len(tx_hashes) != len(block.txs):
            raise StorageError(f"block {height}: {len(block.txs)} txs, {len(tx_hashes)} hashes")
        batch.put(spaces.BLOCK + at, block.encode() if block_bytes is None else block_bytes)
        batch.put(spaces.BLOCK_HEIGHT + block_hash, at)
        batch.put(spaces.COMMIT + at, commit.encode())
        for position, (hash_, receipt) in enumerate(zip(tx_hashes, receipts, strict=True)):
            location = at + encode_position(position)
            batch.put(spaces.RECEIPT + location, receipt)
            batch.put(spaces.TX_INDEX + hash_, location)
        for key, value in changes.items():
            if value is None:
                batch.delete(spaces.STATE + key)
            else:
                batch.put(spaces.STATE + key, value)
        batch.put(spaces.STATE_ROOT + at, tree_update.ref)
        if block_events is not None:
            batch.put(spaces.BLOCK_EVENTS + at, block_events)
        batch.put(_HEAD, at)
        # The nodes first, synced: the root the second write stores is then whole
        # whenever that write survives a crash. With them, atomically, the list of
        # the nodes this block replaced, which pruning deletes by.
        self._write_nodes(tree_update.nodes, stale=tree_update.stale, at=at)
        self._db.write(batch)
        self._tree.committed(tree_update.ref)
        with self._state_lock:
            self._state_epoch += 1
            put = self._state_cache.put
            for key, value in changes.items():
                put(key, value)
        self._head = (height, tree_update.root, tree_update.ref)

    def _write_nodes(
        self,
        nodes: Mapping[bytes, bytes],
        *,
        sync: bool = True,
        stale: Sequence[bytes] = (),
        at: bytes = b"",
    ) -> None:
        """Write tree nodes (reference -> encoding) in one batch of the tree's database,
        synced unless ``sync`` is False; with them the list of the ``stale`` references
        (those the version ``at`` replaced) under ``at``, if there are any."""
        batch = self._nodes.new_batch(sync=sync)
        batch.put_many(spaces.TREE_NODE, nodes.items())
        if stale:
            listed = b"".join(stale)
            if len(listed) != REF_SIZE * len(stale):
                raise StorageError(f"a replaced node's reference is not {REF_SIZE} bytes")
            # The version alone, before its nodes' keys: the list sorts with the
            # version's nodes, so LevelDB still moves the tables of this database whole.
            batch.put(spaces.TREE_NODE + at, listed)
        self._nodes.write(batch)

    def get_block_events(self, height: int) -> bytes | None:
        """The begin-block events stored with block ``height`` (opaque bytes), if any."""
        return self._db.get(spaces.BLOCK_EVENTS + encode_height(height))

    def get_block_bytes(self, height: int) -> bytes | None:
        """Block ``height``'s encoding as stored. Blocks and certificates are read with
        LevelDB's checksums verified (damage on disk is a ``StorageError``): they are
        sent on as they are (catch-up, state sync), and a flipped bit in a signature
        still decodes."""
        return self._read_whole(spaces.BLOCK + encode_height(height))

    def _read_whole(self, key: bytes) -> bytes | None:
        """A block or a certificate: checksums verified (see ``get_block_bytes``), and
        kept out of LevelDB's block cache. Blocks are read for peers catching up (up to
        32 MiB a peer an interval), for state sync and for clients, each mostly once:
        cached, they would push out the tables of state records and the indexes that
        execution and admission read again and again."""
        return self._db.get(key, verify_checksums=True, fill_cache=False)

    def get_block(self, height: int) -> Block | None:
        data = self.get_block_bytes(height)
        return None if data is None else self._decode(Block, data, f"block {height}")

    def get_encoded_block(self, height: int) -> tuple[bytes, bytes] | None:
        """Block ``height`` and its certificate as stored, their canonical encodings, to
        send on as they are (``get_block`` and ``get_commit`` decode them); None when
        either is not held (pruned).

        Checked without decoding the block: both are read with LevelDB's checksums
        verified (``get_block_bytes``: damage on disk, anywhere in them), and the
        block's header must be the one the certificate, decoded (small), signs at this
        height. A block or certificate that fails is corrupt (``StorageError``), never
        served: the receiver would drop the sender for it. What stays unchecked is
        damage the checksums do not see (in memory, a bug that wrote other bytes, a
        table block that a read of a neighbouring key put in LevelDB's cache
        unverified); the receiver checks the whole block against the certificate.
        """
        at = encode_height(height)
        block = self._read_whole(spaces.BLOCK + at)
        data = self._read_whole(spaces.COMMIT + at)
        if block is None or data is None:
            return None
        commit = self._decode(Commit, data, f"commit {height}")
        try:
            block_hash = encoded_block_hash(block)
        except DecodeError as exc:
            raise StorageError(f"stored block {height} in {self.path} is corrupt: {exc}") from exc
        if commit.height != height or commit.block_hash != block_hash:
            raise StorageError(
                f"stored block {height} in {self.path} is corrupt: its hash is "
                f"{block_hash.hex()}, its certificate is for block {commit.block_hash.hex()} "
                f"at height {commit.height}"
            )
        return block, data

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of a committed block (0 for the genesis hash), or None."""
        data = self._db.get(spaces.BLOCK_HEIGHT + block_hash)
        return None if data is None else decode_height(data)

    def get_commit(self, height: int) -> Commit | None:
        """The certificate that finalized block ``height``."""
        data = self._read_whole(spaces.COMMIT + encode_height(height))
        return None if data is None else self._decode(Commit, data, f"commit {height}")

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, position in block) of a committed transaction, or None."""
        data = self._tx_index(tx_hash)
        if data is None:
            return None
        return decode_height(data[: spaces.HEIGHT_SIZE]), int.from_bytes(
            data[spaces.HEIGHT_SIZE :], "big"
        )

    def get_receipt(self, tx_hash: bytes) -> bytes | None:
        data = self._tx_index(tx_hash)
        return None if data is None else self._db.get(spaces.RECEIPT + data)

    def _tx_index(self, tx_hash: bytes) -> bytes | None:
        """A committed transaction's index entry (its height and position), checked."""
        data = self._db.get(spaces.TX_INDEX + tx_hash)
        if data is not None and len(data) != _LOCATION_SIZE:
            raise StorageError(f"tx index entry for {tx_hash.hex()} is corrupt")
        return data

    def iter_tx_index(self) -> Iterator[tuple[bytes, int, int]]:
        """Every tx index entry as (tx hash, height, position), in hash order: what
        ``tx_location`` and ``get_receipt`` answer from (an audit compares them with
        the blocks it verified)."""
        for hash_, data in self._db.iterate(spaces.TX_INDEX):
            if len(data) != _LOCATION_SIZE:
                raise StorageError(f"tx index entry for {hash_.hex()} is corrupt")
            yield (
                hash_,
                decode_height(data[: spaces.HEIGHT_SIZE]),
                int.from_bytes(data[spaces.HEIGHT_SIZE :], "big"),
            )

    def iter_block_index(self) -> Iterator[tuple[bytes, int]]:
        """Every (block hash, height) entry ``height_of`` answers from, in hash order
        (the genesis hash at height 0 among them)."""
        for hash_, data in self._db.iterate(spaces.BLOCK_HEIGHT):
            yield hash_, decode_height(data)

    def get_receipts(self, height: int) -> list[bytes]:
        """Receipts of block ``height`` in transaction order (empty if none or no block)."""
        return [value for _, value in self._db.iterate(spaces.RECEIPT + encode_height(height))]

    def _decode(self, cls: type[W], data: bytes, what: str) -> W:
        try:
            return cls.decode(data)
        except DecodeError as exc:
            raise StorageError(f"stored {what} in {self.path} is corrupt: {exc}") from exc

    # --- retention -------------------------------------------------------------------

    @property
    def block_base(self) -> int:
        """Lowest height whose block this store keeps (0: every block since genesis)."""
        return self._block_base

    @property
    def state_base(self) -> int:
        """Lowest height whose state this store keeps, besides kept snapshot heights."""
        return self._state_base

    def retained_state_heights(self, below: int | None = None) -> list[int]:
        """Heights (below ``below``, default all) whose state root is stored, ascending."""
        out = []
        for rest in self._db.iterate_keys(spaces.STATE_ROOT):
            height = decode_height(rest)
            if below is not None and height >= below:
                break
            out.append(height)
        return out

    def require_block(self, height: int) -> None:
        """Raise ``Pruned`` if block ``height`` was (or, for a synced store, never was) kept."""
        if 0 < height < self._block_base and self.get_block_bytes(height) is None:
            raise Pruned(
                f"block {height} is pruned: this node keeps blocks from height {self._block_base}"
            )

    def put_epoch_record(self, epoch: int, record: bytes, producers: bytes) -> None:
        """Keep one epoch's record (opaque to the store: the node defines it) for good,
        with the digest of the producer set it proves (``put_epoch_records``)."""
        self.put_epoch_records(epoch, [record], [producers])

    def put_epoch_records(
        self, first: int, records: Sequence[bytes], producers: Sequence[bytes]
    ) -> None:
        """Keep the records of the epochs from ``first`` on, in one synced write: a
        crash keeps all of them or none (a state sync keeps verified pages whole, and
        resumes after the last). ``producers[i]`` is the digest of the set
        ``records[i]`` proves, indexed in the same write (``next_set_change``)."""
        if len(records) != len(producers):
            raise ValueError(f"{len(records)} epoch records, {len(producers)} set digests")
        with self._epoch_lock:
            batch = self._db.new_batch()
            for epoch, record in enumerate(records, start=first):
                batch.put(spaces.EPOCH + encode_height(epoch), record)
            self._index_epoch_sets(batch, first, producers)
            self._db.write(batch)

    def put_epoch_sets(self, first: int, producers: Sequence[bytes]) -> None:
        """Index the set digests of the epochs from ``first`` on without a record: epoch
        0's (genesis's set), and the records of a store written before the index."""
        with self._epoch_lock:
            batch = self._db.new_batch()
            self._index_epoch_sets(batch, first, producers)
            self._db.write(batch)

    def _index_epoch_sets(
        self, batch: spaces.WriteBatch, first: int, producers: Sequence[bytes]
    ) -> None:
        """Write the digests, the highest epoch indexed (META ``epoch_top``), and keep
        ``EPOCH_CHANGE`` and ``EPOCH_GAP`` true around each epoch written: epochs come
        in any order (pruning keeps one a crash missed, after later ones; a state sync
        writes pages). A marker is put only where it was not and deleted only where it
        was: each delete leaves LevelDB a tombstone that every seek of
        ``next_set_change`` steps over until a compaction, and an epoch written after
        the top (the commit thread's every epoch) then deletes nothing."""
        if not producers:
            return
        raw_top = self._db.get(_EPOCH_TOP)
        top = None if raw_top is None else decode_height(raw_top)
        last = first + len(producers) - 1
        new_top = last if top is None else max(top, last)
        new = dict(enumerate(producers, start=first))
        stored: dict[int, bytes | None] = {}

        def before(epoch: int) -> bytes | None:
            # Nothing is indexed past the top: no read for the epochs after it.
            if epoch < 0 or top is None or epoch > top:
                return None
            if epoch not in stored:
                stored[epoch] = self._db.get(spaces.EPOCH_SET + encode_height(epoch))
            return stored[epoch]

        def after(epoch: int) -> bytes | None:
            return new[epoch] if epoch in new else before(epoch)

        # The markers that can change: around each epoch written, and the epoch after
        # the old top, a hole once the top is beyond it.
        around = {e + d for e in new for d in (0, 1)}
        if top is not None:
            around.add(top + 1)
        for epoch in sorted(around):
            key = encode_height(epoch)
            was = _epoch_markers(before(epoch - 1), before(epoch), epoch, top)
            now = _epoch_markers(after(epoch - 1), after(epoch), epoch, new_top)
            for space, had, has in zip(
                (spaces.EPOCH_CHANGE, spaces.EPOCH_GAP), was, now, strict=True
            ):
                if has and not had:
                    batch.put(space + key, b"")
                elif had and not has:
                    batch.delete(space + key)
        for epoch, digest in new.items():
            if before(epoch) != digest:
                batch.put(spaces.EPOCH_SET + encode_height(epoch), digest)
        if new_top != top:
            batch.put(_EPOCH_TOP, encode_height(new_top))

    def epoch_set(self, epoch: int) -> bytes | None:
        """The indexed digest of ``epoch``'s producer set, or None."""
        return self._db.get(spaces.EPOCH_SET + encode_height(epoch))

    def next_set_change(self, epoch: int) -> int:
        """The first epoch after ``epoch`` whose indexed set differs from ``epoch``'s, or
        that is not indexed (so no one can say it does not differ): two seeks, never a
        scan. ``epoch + 1`` if ``epoch``'s own set is not indexed. Epochs past the
        highest indexed are not indexed: the answer is never beyond it plus one."""
        after = encode_height(epoch)
        # One view for the reads: the commit thread or a pruning pass may write
        # between them, and a pass keeping a missed record (a change) after the first
        # seek and before the second made the answer skip that change (its hole gone,
        # its change marker not seen), a record honest clients refuse.
        with self._db.snapshot() as view:
            if self._db.get(spaces.EPOCH_SET + after, view=view) is None:
                return epoch + 1
            raw_top = self._db.get(_EPOCH_TOP, view=view)
            # No top beside an indexed set: not a store this code wrote. The next epoch
            # is the answer no record can make wrong (its record is signed by this set).
            if raw_top is None or decode_height(raw_top) <= epoch:
                return epoch + 1
            # Past the top nothing is indexed: its next epoch bounds the answer.
            found = [decode_height(raw_top) + 1]
            for space in (spaces.EPOCH_CHANGE, spaces.EPOCH_GAP):
                if (key := self._db.next_key(space, after, view=view)) is not None:
                    found.append(decode_height(key))
        return min(found)

    @property
    def epoch_sets_indexed(self) -> bool:
        """Whether every stored record's set is indexed (``mark_epoch_sets_indexed``)."""
        return self._db.get(_EPOCH_SETS) is not None

    def mark_epoch_sets_indexed(self) -> None:
        """Say that the records stored before the index are indexed (once, at open):
        every record written since is indexed as it is written."""
        batch = self._db.new_batch()
        batch.put(_EPOCH_SETS, b"\x01")
        self._db.write(batch)

    def iter_epoch_records(self) -> Iterator[tuple[int, bytes]]:
        """(epoch, record) for every stored record, in epoch order."""
        for key, record in self._db.iterate(spaces.EPOCH):
            yield decode_height(key), record

    def get_epoch_record(self, epoch: int) -> bytes | None:
        return self._db.get(spaces.EPOCH + encode_height(epoch))

    def prune_blocks(self, below: int, stop: threading.Event | None = None) -> int:
        """Delete blocks, certificates, receipts, tx index entries and begin-block events
        of heights below ``below`` (never the head); return the new ``block_base``.

        Each batch moves ``block_base`` with its deletes, so a crash leaves a store
        whose base says exactly what is gone; a later call carries on from there.
        The base in memory moves first (as ``prune_states``'s): a reader that misses a
        deleted block or tx index entry then sees the base above it, so says
        ``maybe_pruned``/``Pruned``, never "not found" or a corrupt store. A failed
        write puts it back: its blocks are all still there, and the next pass starts
        from the base.
        """
        below = min(below, self.height)
        height = max(self._block_base, 1)
        while height < below:
            if stop is not None and stop.is_set():
                break
            batch = self._db.new_batch(sync=False)
            end = height
            while end < below and len(batch) < _PRUNE_BATCH:
                self._delete_block(batch, end)
                end += 1
            batch.put(_BLOCK_BASE, encode_height(end))
            before, self._block_base = self._block_base, end
            try:
                self._db.write(batch)
            except BaseException:
                self._block_base = before
                raise
            height = end
        return self._block_base

    def _delete_block(self, batch: spaces.WriteBatch, height: int) -> None:
        at = encode_height(height)
        data = self.get_block_bytes(height)
        if data is not None:
            block = self._decode(Block, data, f"block {height}")
            batch.delete(spaces.BLOCK_HEIGHT + block.hash)
            for raw in block.txs:
                batch.delete(spaces.TX_INDEX + tx_hash(raw))
        batch.delete(spaces.BLOCK + at)
        batch.delete(spaces.COMMIT + at)
        batch.delete(spaces.BLOCK_EVENTS + at)
        for rest in self._db.iterate_keys(spaces.RECEIPT + at):
            batch.delete(spaces.RECEIPT + at + rest)

    def prune_states(
        self, below: int, keep: frozenset[int] = frozenset(), stop: threading.Event | None = None
    ) -> int:
        """Forget the state versions below ``below`` except the heights in ``keep``
        (snapshots being served), then delete the tree nodes no kept version needs.
        Returns the number of nodes deleted.

        Nodes are shared between versions (a kept root reaches nodes made at any
        version before it), so they go by the version that replaced them, not the one
        that made them: each commit lists, under its height, the nodes of the version
        before that its root no longer reaches (``TreeUpdate.stale``). A node made at
        ``w`` and listed at ``v`` is in the trees of versions ``w`` to ``v - 1`` and of
        no other, since an update builds on its base's nodes and its own: a replaced
        node never comes back. Once the window starts at ``below``, a node listed at
        ``v <= below`` goes, unless a kept height ``k`` has ``w <= k < v``; its list
        then stays, with such nodes only, until that height goes. A pass reads the
        lists the window let go, never the live tree: its cost is what it deletes,
        not the state's size (docs/node.md, Pruning).

        It runs beside commits without a lock: a commit lists nodes at a later height
        than any this pass reads, and builds on none listed here (its base, the head,
        is kept). What a stopped pass left goes with the next one.
        """
        below = min(below, self.height)
        # Synced: the deletes of nodes become durable with the tree database's next
        # synced write (a commit's nodes), which says nothing of this database; roots
        # forgotten without fsync could come back after a power loss, over nodes that
        # are gone.
        batch = self._db.new_batch()
        for height in self.retained_state_heights(below):
            if height not in keep:
                batch.delete(spaces.STATE_ROOT + encode_height(height))
        new_base = max(self._state_base, below)
        batch.put(_STATE_BASE, encode_height(new_base))
        # The base moves first: reads below it are refused from now on.
        self._state_base = new_base
        self._db.write(batch)
        # Below the base (which a shorter window than the last pass's does not move
        # back), the roots left are those kept by this pass or an earlier one.
        try:
            return self._delete_stale(new_base, self.retained_state_heights(new_base), stop)
        except BaseException:
            # A held list whose rewrite was not written would be skipped while its
            # holder stays kept: the next pass reads every list again.
            self._held.clear()
            raise

    def _delete_stale(self, below: int, kept: list[int], stop: threading.Event | None) -> int:
        # The lists of versions up to ``below``; ``kept``: the heights below it whose
        # roots stay, ascending.
        nodes = self._nodes
        held = self._held
        deleted = 0
        batch = nodes.new_batch(sync=False)
        version = self._stale_from
        while version <= below:
            if stop is not None and stop.is_set():
                break
            holder = held.get(version)
            if holder is not None and holder in kept:
                version += 1  # its nodes are still held as they were
                continue
            held.pop(version, None)
            key = spaces.TREE_NODE + encode_height(version)
            listed = nodes.get(key)
            if listed is not None:
                if len(listed) % REF_SIZE:
                    raise StorageError(f"the list of nodes replaced at {version} is corrupt")
                refs = [listed[i : i + REF_SIZE] for i in range(0, len(listed), REF_SIZE)]
                # The highest kept height below ``version`` holds every listed node made
                # at or below it (w <= k < v), and no other kept height holds any other.
                at = bisect_left(kept, version)
                goes, stays = refs, []
                if at:
                    cut = encode_height(kept[at - 1])
                    stays = [ref for ref in refs if ref[:VERSION_SIZE] <= cut]
                    goes = [ref for ref in refs if ref[:VERSION_SIZE] > cut]
                for ref in goes:
                    batch.delete(spaces.TREE_NODE + ref)
                deleted += len(goes)
                if not stays:
                    batch.delete(key)
                else:
                    if len(stays) < len(refs):
                        batch.put(key, b"".join(stays))
                    held[version] = kept[at - 1]
                if len(batch) >= _PRUNE_BATCH:
                    nodes.write(batch)
                    batch = nodes.new_batch(sync=False)
            version += 1
        if len(batch):
            nodes.write(batch)
        first = min(min(held, default=version), version)
        if deleted or first != self._stale_from:
            # Durable (a synced write flushes the unsynced ones before it) before the
            # mark below says these lists are gone: a later synced write to the chain's
            # database must never make the mark durable without them. Also when this
            # pass deleted nothing: an earlier one that failed before its sync may have.
            self._write_nodes({})
        if first != self._stale_from:
            mark = self._db.new_batch(sync=False)
            mark.put(_STALE_FROM, encode_height(first))
            self._db.write(mark)
            self._stale_from = first
        return deleted

    # --- state sync ------------------------------------------------------------------

    def get_node_bytes(self, ref: bytes) -> bytes | None:
        """A stored tree node's encoding by its reference, as stored (serving snapshot
        chunks)."""
        return self._nodes.get(spaces.TREE_NODE + ref)

    def snapshot_chunk(
        self, height: int, subtree: Subtree, max_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> list[bytes]:
        """The chunk of the snapshot at ``height`` under ``subtree``, found by its place
        in this store's tree (``storage.snapshot.serve_chunk``); empty when the tree
        has no such subtree there. ``Pruned`` or ``StorageError`` when this store has
        no state at ``height``."""
        ref = find_subtree(self.get_node_bytes, self.state_ref(height), subtree)
        return [] if ref is None else serve_chunk(self.get_node_bytes, ref, max_bytes)

    def sync_target(self) -> SyncTarget | None:
        """The target of the state sync in progress, if any."""
        raw = self._db.get(_SYNC)
        return None if raw is None else self._decode(SyncTarget, raw, "sync target")

    def begin_sync(self, target: SyncTarget) -> bool:
        """Start (or resume) a state sync to ``target``; True when resuming the same one
        (or the same state under another certificate of its block).

        A sync that moves from another target keeps every subtree it holds whole
        (``held_refs``): a later tree that names one of their hashes names that very
        subtree, wherever it sits (``storage.snapshot.verify_chunk``). The rest of what
        the old target fetched is deleted (``_move_sync``). A store left by no target
        (fresh, or by a wipe of an earlier version that crashed) is wiped.
        """
        if self.initialized:
            raise StorageError(f"database at {self.path} already holds a chain")
        current = self.sync_target()
        if current is not None:
            # What a move that crashed part way had left to delete.
            self._finish_sweep()
        if current == target:
            return True
        if current is not None and (current.height, current.state_root) == (
            target.height,
            target.state_root,
        ):
            # Another certificate of the same block: every node stored is this tree's.
            batch = self._db.new_batch()
            batch.put(_SYNC, target.encode())
            self._db.write(batch)
            return True
        if current is not None:
            self._move_sync(current, target)
            return False
        self._wipe(self._db, spaces.STATE)
        self._wipe(self._db, _HELD)
        self._wipe(self._nodes, spaces.TREE_NODE)
        # The wipe of the nodes durable before the new target is: a synced write to
        # this database flushes the flat state's wipe, never the tree's. Otherwise a
        # power loss could keep nodes over a wiped flat state, and the walk would not
        # fetch them.
        self._write_nodes({})
        batch = self._db.new_batch()
        batch.delete(_SWEEP)
        batch.delete(_FLAT_STALE)
        batch.delete(_HELD_VERSIONS)
        batch.put(_SYNC, target.encode())
        batch.put(_LAYOUT, _LAYOUT_VALUE)
        self._db.write(batch)
        return False

    def _move_sync(self, current: SyncTarget, target: SyncTarget) -> None:
        """Move the sync in progress from ``current`` to ``target``, keeping what it holds
        whole (docs/state-sync.md, A new target).

        Kept: the largest subtrees the old target's tree holds whole, at versions below
        the new target's height (``storage.snapshot.held_subtrees``). Deleted: the rest
        of that tree (nodes above what is missing, and what is made too late), and the
        subtrees held from earlier targets that it did not name, which a later tree is
        not likely to (their places changed). So what is held never outgrows one tree's
        worth of whole subtrees plus the tree being fetched, however often the target
        moves. The flat state is left as it is, to be rebuilt from the tree at install
        (a leaf held may be one the new tree drops).
        """
        old_root = sync_root(current)
        held, linked = held_subtrees(self.get_node_bytes, old_root, current.height, target.height)
        before = self.held_refs()
        drops = [ref for ref in before.values() if ref not in linked]
        versions = sorted({*self.held_versions(), current.height} - {target.height})
        # What is held whole is durable before the target that relies on it (the chunks'
        # nodes were written unsynced).
        self._write_nodes({})
        batch = self._db.new_batch()
        for node_hash in before:
            if node_hash not in held:
                batch.delete(_HELD + node_hash)
        for node_hash, ref in held.items():
            batch.put(_HELD + node_hash, ref)
        # Nothing at the new target's version or above is held (``held_subtrees``).
        batch.put(_HELD_VERSIONS, b"".join(encode_height(v) for v in versions if v < target.height))
        batch.put(_SWEEP, b"".join([ZERO_REF, *drops, old_root]))
        batch.put(_FLAT_STALE, b"")
        batch.put(_SYNC, target.encode())
        batch.put(_LAYOUT, _LAYOUT_VALUE)
        self._db.write(batch)
        self._finish_sweep()

    def _finish_sweep(self) -> None:
        """Delete what a state sync left (``_SWEEP``): the nodes stored under each root
        listed there, but the subtrees held and the tree kept. Run again from the start
        after a crash part way: each node goes after those below it, so what is left is
        still reached, and what stays is found from what the sweep never deletes."""
        listed = self._db.get(_SWEEP)
        if listed is None:
            return
        if len(listed) % REF_SIZE or not listed:
            raise StorageError(
                f"the list of subtrees a state sync deletes is corrupt in {self.path}"
            )
        # What stays: the subtrees held, the tree kept, and wherever they name subtrees
        # held from earlier targets (a root listed may hold some of those inside: the
        # largest subtrees held by one tree are apart, but a later tree may name a part).
        held = set(self.held_refs().values())
        kept_refs = set(held)
        for root in [*held, listed[:REF_SIZE]]:
            kept_refs |= cross_links(self.get_node_bytes, root)
        batch = self._nodes.new_batch(sync=False)
        for i in range(REF_SIZE, len(listed), REF_SIZE):
            root = listed[i : i + REF_SIZE]
            for ref in stored_below(self.get_node_bytes, root, kept_refs.__contains__):
                batch.delete(spaces.TREE_NODE + ref)
                if len(batch) >= _PRUNE_BATCH:
                    self._nodes.write(batch)
                    batch = self._nodes.new_batch(sync=False)
        self._nodes.write(batch)
        # The deletes durable before the record that they are due goes.
        self._write_nodes({})
        done = self._db.new_batch()
        done.delete(_SWEEP)
        # Versions no node is held at any more are not looked in again.
        versions = [v for v in self.held_versions() if self._holds_version(v)]
        done.put(_HELD_VERSIONS, b"".join(encode_height(v) for v in versions))
        self._db.write(done)

    def _holds_version(self, version: int) -> bool:
        for _ in self._nodes.iterate_keys(spaces.TREE_NODE + encode_height(version)):
            return True
        return False

    def held_versions(self) -> list[int]:
        """The versions the state sync in progress holds nodes at from the targets it
        left (``held_lookup``)."""
        raw = self._db.get(_HELD_VERSIONS) or b""
        if len(raw) % spaces.HEIGHT_SIZE:
            raise StorageError(f"the versions a state sync holds are corrupt in {self.path}")
        step = spaces.HEIGHT_SIZE
        return [decode_height(raw[i : i + step]) for i in range(0, len(raw), step)]

    def held_lookup(self) -> Callable[[bytes], bytes | None] | None:
        """For ``storage.snapshot.verify_chunk``: the reference of a subtree the state
        sync in progress holds whole from the targets it left, by its hash (None when
        it holds none). A node stored at any of those versions is whole (a move keeps
        only whole subtrees, ``_move_sync``), so any part of a subtree held counts, not
        only its top: a new tree changes the nodes above a changed leaf, not beside.

        The node found must hash to its hash: one damaged on disk since the move is not
        named, so the chunk's nodes for that place are kept instead, and it is deleted
        there (unsynced: lost, it is only dead weight), since nothing would name it
        again for a walk to find. Named, the next walk found it damaged and dropped it
        with the node of the target naming it, and both were fetched again: a round more
        for each. It costs one hash per subtree named, once per chunk that names it."""
        versions = sorted(self.held_versions(), reverse=True)
        if not versions:
            return None
        get = self._nodes.get

        def lookup(node_hash: bytes) -> bytes | None:
            for version in versions:
                ref = node_ref(version, node_hash)
                encoding = get(spaces.TREE_NODE + ref)
                if encoding is None:
                    continue
                if matches_hash(encoding, node_hash):
                    return ref
                log.warning(
                    "state sync: held state tree node %s in %s is damaged: deleted, "
                    "to be fetched again",
                    ref.hex(),
                    self.path,
                )
                batch = self._nodes.new_batch(sync=False)
                batch.delete(spaces.TREE_NODE + ref)
                self._nodes.write(batch)
            return None

        return lookup

    def _wipe(self, db: Database, space: bytes) -> None:
        """Delete every key under ``space``, unsynced: as the scan goes (it reads a
        snapshot), a batch at a time, since they may be the whole state."""
        batch = db.new_batch(sync=False)
        for rest in db.iterate_keys(space, snapshot=True):
            batch.delete(space + rest)
            if len(batch) >= _PRUNE_BATCH:
                db.write(batch)
                batch = db.new_batch(sync=False)
        db.write(batch)

    def held_refs(self) -> dict[bytes, bytes]:
        """The subtrees the state sync in progress holds whole from the targets it left:
        hash -> the reference they are kept under (``storage.snapshot.verify_chunk``
        names them so instead of asking for them)."""
        out: dict[bytes, bytes] = {}
        for node_hash, ref in self._db.iterate(_HELD):
            if (
                len(node_hash) != HASH_SIZE
                or len(ref) != REF_SIZE
                or ref[VERSION_SIZE:] != node_hash
            ):
                raise StorageError(f"a subtree a state sync holds is corrupt in {self.path}")
            out[node_hash] = ref
        return out

    def missing_nodes(self, root: bytes, limit: int) -> list[Subtree]:
        """The subtrees under the root reference ``root`` not stored yet, reached
        through stored nodes.

        The nodes held from targets the sync left that are gone or do not match their
        hash (damage since the move) are dropped with what names them down from the
        nearest nodes of this target (``storage.snapshot.damaged_paths``), and the walk
        goes again: those parts are asked for afresh. Left there, a parent named the held
        reference, which a fetch never stores (it stores at the target's height), and the
        sync asked for it again and again, until its next move or for ever (a trusted
        target does not move). A node of this target's own that does not decode or does
        not match its hash (a bit flipped on disk) is dropped alone and asked for again:
        it used to stop the sync at every walk, restarts included, until the node's data
        was wiped by hand. One walk finds every damaged node it reaches and one batch
        drops them all: the walk reads and hashes every node stored, and it runs in the
        executor while the syncer waits. ``finish_sync`` still refuses a damaged node
        (``DamagedTree``, after which the syncer walks here again).
        """
        while True:
            damaged: list[Subtree] = []
            missing = list(walk_missing(self.get_node_bytes, root, limit, damaged=damaged))
            if not damaged:
                return missing
            self._drop_damaged(root, damaged)

    def _drop_damaged(self, root: bytes, places: list[Subtree]) -> None:
        path, beside = damaged_paths(self.get_node_bytes, root, places)
        # Damage on disk is the operator's to know of (a failing disk does it again).
        log.warning(
            "state sync: %d damaged state tree node(s) found in %s (the first at depth %d, "
            "hash %s): %d node(s) dropped, to be fetched again",
            len(places),
            self.path,
            places[0].depth,
            places[0].hash.hex()[:16],
            len(path),
        )
        # What hangs beside is held on its own (so the install's sweep deletes what the
        # final tree does not name), before the nodes above it go: a crash between
        # finds the damage again and does this again. The nodes go each after those
        # below it, so a crash part way leaves the damage below what is left.
        held = self.held_refs()
        batch = self._db.new_batch()
        for ref in path:
            if held.get(ref[VERSION_SIZE:]) == ref:
                batch.delete(_HELD + ref[VERSION_SIZE:])
        for node_hash, ref in beside.items():
            batch.put(_HELD + node_hash, ref)
        if len(batch):
            self._db.write(batch)
        nodes = self._nodes.new_batch(sync=False)
        for ref in path:
            nodes.delete(spaces.TREE_NODE + ref)
            if len(nodes) >= _PRUNE_BATCH:
                self._nodes.write(nodes)
                nodes = self._nodes.new_batch(sync=False)
        self._nodes.write(nodes)

    def store_chunk(
        self, nodes: Mapping[bytes, bytes], leaves: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """Write one verified chunk: its nodes and, for its leaves, the flat state.

        Inert until ``finish_sync``: the store has no head, so nothing reads them
        as state; after a crash they are walked again (``missing_nodes``).
        """
        if self.initialized or self._db.get(_SYNC) is None:
            raise StorageError(f"no state sync in progress in {self.path}")
        # The leaves' flat state first, synced, then the nodes: nodes lost in a crash
        # are fetched again with their leaves, while nodes kept without their flat
        # state would never be (the walk finds them present).
        batch = self._db.new_batch()
        for key, value in leaves:
            batch.put(spaces.STATE + key, value)
        self._db.write(batch)
        self._write_nodes(nodes, sync=False)

    def finish_sync(self, genesis_hash: bytes) -> int:
        """Install the synced state as the head, in one synced batch; return its height.

        Walks the whole tree once more first: every node present and matching its
        hash, or this raises and nothing is installed: ``DamagedTree`` for a node gone or
        damaged since the last walk (``missing_nodes`` drops it, and it is fetched again),
        a plain ``StorageError`` for what no fetch repairs.
        """
        target = self.sync_target()
        if target is None:
            raise StorageError(f"no state sync in progress in {self.path}")
        if len(genesis_hash) != HASH_SIZE:
            raise StorageError(f"genesis hash must be {HASH_SIZE} bytes, got {len(genesis_hash)}")
        block = self._decode(Block, target.block, "synced block")
        if block.header.height != target.height or block.header.state_root != target.state_root:
            raise StorageError("sync target's block does not match its height and state root")
        root = sync_root(target)
        self._finish_sweep()
        held = self.held_refs()
        rebuild = self._db.get(_FLAT_STALE) is not None
        if rebuild:
            # Keys of subtrees left behind may be there: the flat state is written again
            # from the tree (the flag goes only with the install, so a crash redoes it).
            self._wipe(self._db, spaces.STATE)
        reached: set[bytes] = set()
        flat = self._db.new_batch(sync=False)

        def visit(ref: bytes, leaf: LeafNode | None) -> None:
            nonlocal flat
            if held.get(ref[VERSION_SIZE:]) == ref:
                reached.add(ref)
            if rebuild and leaf is not None:
                flat.put(spaces.STATE + leaf.key, leaf.value)
                if len(flat) >= _PRUNE_BATCH:
                    self._db.write(flat)
                    flat = self._db.new_batch(sync=False)

        missing = list(walk_missing(self.get_node_bytes, root, 1, visit))
        self._db.write(flat)
        if missing:
            # The walks before found it: it went since (the syncer fetches it again).
            raise DamagedTree(f"state sync incomplete: node {missing[0].hash.hex()} is missing")
        if held:
            # The subtrees held that the tree does not name go (but the parts of them it
            # names); those it names are simply part of it now.
            forget = self._db.new_batch()
            for node_hash in held:
                forget.delete(_HELD + node_hash)
            gone = [ref for ref in held.values() if ref not in reached]
            forget.put(_SWEEP, b"".join([root, *gone]))
            self._db.write(forget)
            self._finish_sweep()
        # The chunks' nodes were written without fsync: a synced (empty) write makes
        # them durable before the head that needs them is.
        self._write_nodes({})
        at = encode_height(target.height)
        batch = self._db.new_batch()
        batch.put(spaces.BLOCK + at, target.block)
        batch.put(spaces.BLOCK_HEIGHT + block.hash, at)
        batch.put(spaces.COMMIT + at, target.commit)
        batch.put(spaces.STATE_ROOT + at, root)
        batch.put(_GENESIS, genesis_hash)
        batch.put(_LAYOUT, _LAYOUT_VALUE)
        batch.put(_HEAD, at)
        batch.put(_BLOCK_BASE, at)
        batch.put(_STATE_BASE, at)
        # The synced nodes are listed nowhere: the first list is the next block's.
        batch.put(_STALE_FROM, encode_height(target.height + 1))
        batch.delete(_FLAT_STALE)
        batch.delete(_HELD_VERSIONS)
        batch.delete(_SYNC)
        self._db.write(batch)
        self._genesis_hash = genesis_hash
        self._block_base = self._state_base = target.height
        self._stale_from = target.height + 1
        self._head = (target.height, target.state_root, root)
        with self._state_lock:
            self._state_epoch += 1
            self._state_cache.clear()
        return target.height
