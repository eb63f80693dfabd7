"""The node's chain database: blocks, certificates, receipts, tx index and state.

Everything a block changes is written in one LevelDB batch with ``sync=True``,
so after a crash at any point the store holds either the whole block (with its
state, tree nodes and the head pointer) or none of it. Key spaces are listed in
``storage.db``.

Threads: one writer (the thread that prepares and commits blocks) and any
number of readers (API, mempool). The latest-state cache is guarded by a lock so
that a reader can never put back a value that a commit has just replaced; tree
nodes are immutable per hash, so the tree's cache needs no lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

from core.codec import Wire
from core.errors import DecodeError, StorageError
from core.hashing import HASH_SIZE, ZERO_HASH
from core.types import Block, Commit, tx_hash
from storage import db as spaces
from storage.cache import GenerationalCache
from storage.db import Database, decode_height, encode_height, encode_position
from storage.state_tree import DEFAULT_CACHE_SIZE, StateProof, StateTree, TreeUpdate

_GENESIS = spaces.META + b"genesis"
_HEAD = spaces.META + b"head"
_LOCATION_SIZE = spaces.HEIGHT_SIZE + spaces.POSITION_SIZE
DEFAULT_STATE_CACHE_SIZE = 1 << 17

_MISSING = object()
W = TypeVar("W", bound=Wire)


class _DbNodes:
    """The tree's ``NodeStore`` over the ``TREE_NODE`` key space."""

    __slots__ = ("_get",)

    def __init__(self, db: Database) -> None:
        self._get = db.get

    def get_node(self, node_hash: bytes) -> bytes | None:
        return self._get(spaces.TREE_NODE + node_hash)


class ChainStore:
    """Blocks, commits, receipts, the tx index and the state (flat and as a tree)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        sync: bool = True,
        tree_cache_size: int = DEFAULT_CACHE_SIZE,
        state_cache_size: int = DEFAULT_STATE_CACHE_SIZE,
    ) -> None:
        """Open (by default creating) the store at ``path``.

        ``create=False`` refuses a directory that holds no database (audits of an
        existing node). ``sync=False`` skips the fsync of each commit: only for
        throwaway stores such as an audit's replay, never for a node's chain.
        """
        self._db = Database(path, create_if_missing=create, sync=sync)
        self.path = self._db.path
        try:
            self._tree = StateTree(_DbNodes(self._db), tree_cache_size)
            # Latest value (or None for absent) per key; filled by reads and commits.
            self._state_cache: GenerationalCache[bytes, bytes | None] = GenerationalCache(
                state_cache_size
            )
            self._state_lock = threading.Lock()
            # Bumped by every commit: a reader caches what it read from the database
            # only if no commit happened meanwhile.
            self._state_epoch = 0
            self._genesis_hash = self._db.get(_GENESIS)
            # (height, state root) of the head, swapped as one object so readers
            # never see the height of one block with the root of another.
            self._head: tuple[int, bytes] | None = None
            head = self._db.get(_HEAD)
            if (head is None) != (self._genesis_hash is None):
                raise StorageError(
                    f"database at {self.path} has a genesis hash or a head, not both"
                )
            if head is not None:
                height = decode_height(head)
                self._head = (height, self.state_root(height))
        except BaseException:
            self._db.close()
            raise

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

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
        update = self._tree.update(ZERO_HASH, state)
        zero = encode_height(0)
        batch = self._db.new_batch()
        for key, value in state.items():
            batch.put(spaces.STATE + key, value)
        for node_hash, node in update.nodes.items():
            batch.put(spaces.TREE_NODE + node_hash, node)
        batch.put(spaces.STATE_ROOT + zero, update.root)
        # The genesis hash indexes as height 0, so height 1's parent resolves too.
        batch.put(spaces.BLOCK_HEIGHT + genesis_hash, zero)
        batch.put(_GENESIS, genesis_hash)
        batch.put(_HEAD, zero)
        self._db.write(batch)
        self._genesis_hash = genesis_hash
        self._head = (0, update.root)
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

    def _require_head(self) -> tuple[int, bytes]:
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
        root = self._db.get(spaces.STATE_ROOT + encode_height(height))
        if root is None:
            raise StorageError(
                f"no state root for height {height} in {self.path} "
                f"(head is {None if self._head is None else self._head[0]})"
            )
        return root

    def prepare_state(self, changes: Mapping[bytes, bytes | None]) -> TreeUpdate:
        """The tree update for ``changes`` on top of the head state. Writes nothing."""
        return self._tree.update(self.head_root, changes)

    def prove(
        self, key: bytes, height: int | None = None
    ) -> tuple[bytes | None, StateProof, bytes]:
        """(value or None, proof, state root) of ``key`` after block ``height`` (default head)."""
        root = self.head_root if height is None else self.state_root(height)
        value, proof = self._tree.get_with_proof(root, key)
        return value, proof, root

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
        head_height, head_root = self._require_head()
        height = head_height + 1
        block_hash = block.hash
        if header.height != height:
            raise StorageError(f"block height {header.height} does not follow head {head_height}")
        if tree_update.base is not None and tree_update.base != head_root:
            raise StorageError(
                f"state update was prepared on root {tree_update.base.hex()}, "
                f"head root is {head_root.hex()}"
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
        for node_hash, node in tree_update.nodes.items():
            batch.put(spaces.TREE_NODE + node_hash, node)
        batch.put(spaces.STATE_ROOT + at, tree_update.root)
        if block_events is not None:
            batch.put(spaces.BLOCK_EVENTS + at, block_events)
        batch.put(_HEAD, at)
        self._db.write(batch)
        with self._state_lock:
            self._state_epoch += 1
            put = self._state_cache.put
            for key, value in changes.items():
                put(key, value)
        self._head = (height, tree_update.root)

    def get_block_events(self, height: int) -> bytes | None:
        """The begin-block events stored with block ``height`` (opaque bytes), if any."""
        return self._db.get(spaces.BLOCK_EVENTS + encode_height(height))

    def get_block_bytes(self, height: int) -> bytes | None:
        return self._db.get(spaces.BLOCK + encode_height(height))

    def get_block(self, height: int) -> Block | None:
        data = self.get_block_bytes(height)
        return None if data is None else self._decode(Block, data, f"block {height}")

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of a committed block (0 for the genesis hash), or None."""
        data = self._db.get(spaces.BLOCK_HEIGHT + block_hash)
        return None if data is None else decode_height(data)

    def get_commit(self, height: int) -> Commit | None:
        """The certificate that finalized block ``height``."""
        data = self._db.get(spaces.COMMIT + encode_height(height))
        return None if data is None else self._decode(Commit, data, f"commit {height}")

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, position in block) of a committed transaction, or None."""
        data = self._db.get(spaces.TX_INDEX + tx_hash)
        if data is None:
            return None
        if len(data) != _LOCATION_SIZE:
            raise StorageError(f"tx index entry for {tx_hash.hex()} is corrupt")
        return decode_height(data[: spaces.HEIGHT_SIZE]), int.from_bytes(
            data[spaces.HEIGHT_SIZE :], "big"
        )

    def get_receipt(self, tx_hash: bytes) -> bytes | None:
        data = self._db.get(spaces.TX_INDEX + tx_hash)
        return None if data is None else self._db.get(spaces.RECEIPT + data)

    def get_receipts(self, height: int) -> list[bytes]:
        """Receipts of block ``height`` in transaction order (empty if none or no block)."""
        return [value for _, value in self._db.iterate(spaces.RECEIPT + encode_height(height))]

    def _decode(self, cls: type[W], data: bytes, what: str) -> W:
        try:
            return cls.decode(data)
        except DecodeError as exc:
            raise StorageError(f"stored {what} in {self.path} is corrupt: {exc}") from exc
