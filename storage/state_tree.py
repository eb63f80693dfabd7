"""The authenticated state tree: a binary sparse Merkle tree with path compression.

Shape (the binary form of Diem's sparse Merkle tree / the Jellyfish Merkle tree):

- a key lives at its ``key_path``: 256 bits, most significant bit of byte 0 first;
  bit ``d`` chooses the child at depth ``d`` (0 = left). The path is
  ``H(STATE_KEY, key)`` with its first ``GROUP_BYTES`` (16 bits) taken from
  ``H(STATE_KEY, key_group(key))`` instead (``key_group``: the records kept for
  one address, or 256 consecutive ids, share a group), so a group's keys sit in one
  subtree and a block writing several of them re-hashes one path, not one each;
- an empty subtree hashes to ``ZERO_HASH``;
- a leaf hashes to ``H(STATE_LEAF, key_path || H(STATE_VALUE, value))``;
- an internal node hashes to ``H(STATE_NODE, left || right)``;
- path compression: a subtree that holds exactly one leaf *is* that leaf, so a
  leaf sits at the shallowest depth where it is alone; a subtree of two or more
  leaves is an internal node (possibly with one empty child). Updates restore
  this form after every change, so the root depends only on the set of
  (key, value) pairs, never on insertion order or history.

Storage: a node is stored under its *reference*, the version that made it (the
height of its block, 8 bytes big-endian) followed by its hash, and an internal node
stores its children's references. Hashes, roots and proofs never see a version: it
says only where a node is kept. Nodes are never overwritten, so every old root
stays readable. A leaf stores the full key and value, so ``get`` and ``prove`` at
old roots need no separate value store. Why versions lead (the Jellyfish Merkle
tree's layout): each block's new nodes then sort after everything stored before
them, so LevelDB's compactions move their tables down instead of merging them into
tables that span the whole key space, as keys of random hashes made them do
(docs/node.md, Tree nodes stored by version). Pruning (``ChainStore``) deletes
what no kept root reaches.
"""

from __future__ import annotations

import mmap
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, cast

import msgpack

from core.codec import Len, MaxItems, MaxLen, Wire
from core.errors import DecodeError, InvalidProof, StorageError
from core.hashing import HASH_SIZE, ZERO_HASH, Domain, prefixed
from core.types import Hash32
from storage.cache import GenerationalCache

MAX_KEY_SIZE = 1024
MAX_VALUE_SIZE = 256 * 1024
MAX_DEPTH = 256
DEFAULT_TREE_CACHE_SIZE = 1 << 20

NODE_INTERNAL = 0
NODE_LEAF = 1

# Prefixed hashers, bound once: the update loop hashes tens of thousands of nodes per
# block (``core.hashing.prefixed``). Tests check the hashes against ``hash_bytes``.
_KEY_COPY = prefixed(Domain.STATE_KEY)
_VALUE_COPY = prefixed(Domain.STATE_VALUE)
_LEAF_COPY = prefixed(Domain.STATE_LEAF)
_NODE_COPY = prefixed(Domain.STATE_NODE)

# A node's reference: the version that made it, then its hash. The empty subtree's
# is all zero (version 0, ``ZERO_HASH``).
VERSION_SIZE = 8
REF_SIZE = VERSION_SIZE + HASH_SIZE
ZERO_REF = bytes(REF_SIZE)

# msgpack bytes of ``InternalNode(0, left, right)``: fixarray(3), 0, bin8(40) left,
# bin8(40) right, each a child's reference. Built by concatenation on the hot path;
# tests check it against the codec.
_INTERNAL_HEAD = b"\x93\x00\xc4\x28"
_BIN_REF = b"\xc4\x28"
_INTERNAL_SIZE = 86
_packb = msgpack.Packer(use_bin_type=True).pack


@dataclass(frozen=True, slots=True)
class InternalNode(Wire):
    """Stored form of an internal node: its children's references (version || hash).
    ``tag`` comes first so the kinds are told apart."""

    tag: int
    left: Annotated[bytes, Len(REF_SIZE)]
    right: Annotated[bytes, Len(REF_SIZE)]

    MAX_ENCODED = _INTERNAL_SIZE

    def __post_init__(self) -> None:
        if self.tag != NODE_INTERNAL:
            raise DecodeError(f"internal node tag must be {NODE_INTERNAL}, got {self.tag}")


@dataclass(frozen=True, slots=True)
class LeafNode(Wire):
    """Stored form of a leaf: the full key and value (hashes are recomputed on load)."""

    tag: int
    key: Annotated[bytes, MaxLen(MAX_KEY_SIZE)]
    value: Annotated[bytes, MaxLen(MAX_VALUE_SIZE)]

    MAX_ENCODED = MAX_KEY_SIZE + MAX_VALUE_SIZE + 16

    def __post_init__(self) -> None:
        if self.tag != NODE_LEAF:
            raise DecodeError(f"leaf node tag must be {NODE_LEAF}, got {self.tag}")


@dataclass(frozen=True, slots=True)
class ProofLeaf(Wire):
    """The leaf a proof ends at: the proven key's own, or another key sharing its prefix."""

    key_path: Hash32
    value_hash: Hash32


@dataclass(frozen=True, slots=True)
class StateProof(Wire):
    """A path from the root to where ``key`` is or would be.

    ``siblings[d]`` is the hash of the sibling at depth ``d`` (root-to-leaf order:
    ``siblings[0]`` is a child of the root). The terminal node sits at depth
    ``len(siblings)`` and is ``leaf``, or an empty subtree when ``leaf`` is None.
    """

    siblings: Annotated[tuple[Hash32, ...], MaxItems(MAX_DEPTH)]
    leaf: ProofLeaf | None

    MAX_ENCODED = MAX_DEPTH * (HASH_SIZE + 2) + 128


@dataclass(frozen=True, slots=True)
class TreeUpdate:
    """The result of a batch update: the new root, its reference and the new nodes to
    persist (reference -> encoding).

    ``base`` is the reference of the root the update was computed against, so a store
    can refuse to apply it on top of anything else. ``stale``: the references of the
    base's nodes that the new root no longer reaches (each once), so that a store can
    delete them once no version it keeps needs them, without walking whole trees.
    """

    root: bytes
    ref: bytes
    nodes: dict[bytes, bytes]
    base: bytes | None = None
    stale: Sequence[bytes] = ()


class NodeStore(Protocol):
    """Where encoded nodes live, addressed by node reference (version || hash)."""

    def get_node(self, ref: bytes) -> bytes | None: ...


class MemoryNodeStore:
    """A ``NodeStore`` in a dict, for audits, tests and recomputing roots."""

    def __init__(self, nodes: Mapping[bytes, bytes] | None = None) -> None:
        self.nodes: dict[bytes, bytes] = dict(nodes or {})

    def get_node(self, ref: bytes) -> bytes | None:
        return self.nodes.get(ref)

    def put_nodes(self, nodes: Mapping[bytes, bytes]) -> None:
        self.nodes.update(nodes)


# Cached node forms are flat bytes: the cache holds hundreds of thousands of
# nodes, and bytes objects are smaller than tuples and invisible to the cyclic
# GC (tuples made full collections cost ~60 ms per 10k-change block).
# - internal: its 86-byte encoding, first byte 0x93, children's references at
#   [4:44] and [46:86] (their hashes at [12:44] and [54:86]);
# - leaf: 0x01 || key_path || value_hash || value.
_Node = bytes
_INTERNAL_MARK = _INTERNAL_HEAD[0]
_LEAF_MARK = b"\x01"
_LEFT = slice(4, 44)
_RIGHT = slice(46, 86)
_LEFT_HASH = slice(12, 44)
_RIGHT_HASH = slice(54, 86)
_HASH = slice(VERSION_SIZE, REF_SIZE)
_PATH = slice(1, 33)
_DIGEST = slice(33, 65)
_VALUE_AT = 65


# How the state is stored, as a number a store records (``ChainStore``): 1 was the plain
# hashed path, 2 the grouped one with nodes keyed by hash, 3 the same tree with nodes
# keyed by reference (version || hash), 4 the same tree holding commerce party records
# that count the buyer's units in its last deal (``apps.commerce.model.Party``), 5 the
# same with the nodes in a database of their own (``storage.chain_store.TREE_DIR``), 6
# the same with each block's replaced nodes listed beside its own (``TreeUpdate.stale``,
# what pruning deletes by), 7 the same holding staking candidates that count each missed
# slot against the proposer that may have withheld the block too
# (``consensus.staking_state.Candidate.withheld_by``), 8 the same holding each
# producer's last term (``consensus.staking_state.ProducerTerm``, which holds back its
# unbonding) and governance proposals that record each approval's height
# (``consensus.governance.Proposal.voted_at``). A store of another layout holds nodes
# where this code never looks, records it cannot decode, or nodes no list names
# (pruning would never delete them), so it is refused rather than read wrong.
TREE_LAYOUT = 8

# A key's group fixes the first GROUP_BYTES of its path. Measured in docs/vm.md (where
# a key sits): a prefix deeper than the tree puts a group of two or more keys below a
# run of one-child nodes that every write walks again, so the prefix is short (a tree
# of 65k keys is 16 levels deep) and an account, which every transaction writes
# (its nonce), is its own group.
GROUP_BYTES = 2
# An owned record: prefix byte || the owner's 20-byte address || anything.
_OWNED = 21
# The account itself (``vm.prefixes.KeyPrefix.ACCOUNT``, checked by a test).
ACCOUNT_PREFIX = 0x01
# A numbered record: prefix byte || 8-byte big-endian id.
_NUMBERED = 9


def key_group(key: bytes) -> bytes:
    """The locality group of ``key``, from its layout alone (docs/vm.md, State keys).

    - a record kept for an address (``prefix || address || ...``, 21 bytes or more)
      other than its account (``0x01 || address``): the address, so its balances and
      every record an app keeps for it share a subtree;
    - a numbered record (``prefix || u64 id``, 9 bytes): the prefix and the id's
      upper 7 bytes, so 256 consecutive ids (the orders of one block) share one;
    - any other key, accounts included, is its own group.

    Only where keys sit depends on this, never what the tree holds or proves: the
    rest of the path is the key's own hash, which keeps paths unique.
    """
    size = len(key)
    if size >= _OWNED and key[0] != ACCOUNT_PREFIX:
        return key[1:_OWNED]
    if size == _NUMBERED:
        return key[: _NUMBERED - 1]
    return key


def key_path(key: bytes) -> bytes:
    h = _KEY_COPY()
    h.update(key)
    whole = h.digest()
    group = key_group(key)
    if len(group) == len(key):
        return whole
    h = _KEY_COPY()
    h.update(group)
    return h.digest()[:GROUP_BYTES] + whole[GROUP_BYTES:]


def value_hash(value: bytes) -> bytes:
    h = _VALUE_COPY()
    h.update(value)
    return h.digest()


def leaf_hash(path: bytes, value_digest: bytes) -> bytes:
    h = _LEAF_COPY()
    h.update(path)
    h.update(value_digest)
    return h.digest()


def internal_hash(left: bytes, right: bytes) -> bytes:
    h = _NODE_COPY()
    h.update(left)
    h.update(right)
    return h.digest()


def node_ref(version: int, node_hash: bytes) -> bytes:
    """The reference of the node ``node_hash`` made at ``version`` (the empty subtree's
    is ``ZERO_REF`` whatever the version)."""
    if node_hash == ZERO_HASH:
        return ZERO_REF
    return version.to_bytes(VERSION_SIZE, "big") + node_hash


def internal_encoding(left: bytes, right: bytes) -> bytes:
    """The encoding of the internal node whose children's references are ``left`` and
    ``right`` (``update`` builds the same bytes inline: a call per new node costs)."""
    return _INTERNAL_HEAD + left + _BIN_REF + right


def is_internal(encoding: bytes) -> bool:
    """Whether ``encoding`` has the shape of an internal node (every canonical
    ``InternalNode`` encoding has it, and only those)."""
    return (
        len(encoding) == _INTERNAL_SIZE
        and encoding[:4] == _INTERNAL_HEAD
        and encoding[44:46] == _BIN_REF
    )


def internal_children(encoding: bytes) -> tuple[bytes, bytes]:
    """The children's references of an internal node's encoding (``is_internal``)."""
    return encoding[_LEFT], encoding[_RIGHT]


def internal_node_hash(encoding: bytes) -> bytes:
    """The hash of an internal node from its encoding (``is_internal``)."""
    return internal_hash(encoding[_LEFT_HASH], encoding[_RIGHT_HASH])


def _decode_node(ref: bytes, data: bytes) -> _Node:
    """Decode a stored node and check that it hashes to the reference it was stored under."""
    if is_internal(data):
        if internal_node_hash(data) != ref[_HASH]:
            raise StorageError(f"state tree node {ref.hex()} does not match its hash")
        return bytes(data)
    try:
        leaf = LeafNode.decode(data)
    except DecodeError as exc:
        raise StorageError(f"state tree node {ref.hex()} is corrupt: {exc}") from exc
    path = key_path(leaf.key)
    digest = value_hash(leaf.value)
    if leaf_hash(path, digest) != ref[_HASH]:
        raise StorageError(f"state tree node {ref.hex()} does not match its hash")
    return _LEAF_MARK + path + digest + leaf.value


def _check_sizes(changes: Mapping[bytes, bytes | None]) -> None:
    for key, value in changes.items():
        if len(key) > MAX_KEY_SIZE:
            raise StorageError(f"state key is {len(key)} bytes, at most {MAX_KEY_SIZE} allowed")
        if value is not None and len(value) > MAX_VALUE_SIZE:
            raise StorageError(
                f"state value for key {key.hex()} is {len(value)} bytes, "
                f"at most {MAX_VALUE_SIZE} allowed"
            )


def _slot_depth(cache_size: int) -> int:
    """Levels held by position: ``2^d <= cache_size`` slots (none for tiny caches)."""
    return cache_size.bit_length() - 1 if cache_size >= 16 else 0


# A slot of the positional cache: the node's reference, then its 86-byte encoding.
_SLOT = REF_SIZE + _INTERNAL_SIZE
# Updates whose upper nodes wait for ``committed`` (older ones are forgotten).
_PENDING = 4


class StateTree:
    """Reads, proves and batch-updates trees in a ``NodeStore``, with a cache of decoded nodes.

    The tree itself never writes: ``update`` returns the new nodes and the owner
    persists them. New nodes go into the cache at once, so the next update can
    build on a root whose nodes are not written yet (the owner must still persist
    the nodes of every update it builds on: the cache is bounded).

    The cache has two parts. The upper ``slot_depth`` levels (``2^slot_depth <=
    cache_size``) are held *by position*: one slot per place in the tree (heap
    order: the root is 1, the children of p are 2p and 2p+1), holding the
    reference and encoding of an internal node that sits there in the committed
    version (or sat there in an earlier one). A lookup at a position hits only if
    the slot holds the very reference wanted, so a slot holding another version's
    node costs a miss, never a wrong node. Every path crosses these levels (a node
    at depth d is touched by changes / 2^d of a block's changes): they stay cached
    whatever else a block does, at 126 bytes a node in one flat buffer (a dict
    entry of bytes costs ~240). An update's new nodes go to a
    ``GenerationalCache`` of ``cache_size / 8`` entries, with leaves and deeper
    nodes; ``committed(root)`` then moves the new upper nodes of the update that
    made ``root`` into their slots. Until then the slots keep the base version,
    so another update of the same base (a failed round's block prepared again, a
    rival proposal) finds it whole. Below the slot levels a node at 1M keys is
    touched once in many blocks, so that part holds little more than the last
    blocks' new nodes.

    Roots are passed and returned as references (``TreeUpdate.ref``, ``node_ref``);
    the root hash is what a header holds and a proof checks against.

    Threads: one updating thread plus any number of readers (``get``, ``prove``).
    A cached node never changes for a given reference, so a race can only cost a
    cache hit, never return a wrong node. Only the updating thread writes slots;
    readers read a slot in one slice (hash and encoding together).
    """

    def __init__(self, store: NodeStore, cache_size: int = DEFAULT_TREE_CACHE_SIZE) -> None:
        self._store = store
        self._slot_depth = _slot_depth(cache_size)
        # Anonymous memory: pages are zero and take no RAM until a slot in them is
        # written (a small tree touches a few). Private: a forked child gets a copy,
        # never writes into this process's slots.
        size = max(1, 1 << self._slot_depth) * _SLOT
        try:
            self._slots = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        except OSError as exc:
            # A host with strict overcommit refuses a big map at once (a node's
            # ``storage.tree_cache`` may ask for up to 2.1 GB): say which setting.
            raise StorageError(
                f"cannot map {size:,} bytes for a state tree cache of {cache_size:,} entries: {exc}"
            ) from exc
        self._cache: GenerationalCache[bytes, _Node] = GenerationalCache(max(2, cache_size // 8))
        # New upper nodes of the latest updates (ref -> encoding, ref -> position), by
        # the root reference they made: at most _PENDING updates (rival blocks of one
        # height) wait for ``committed``.
        self._pending: dict[bytes, tuple[dict[bytes, bytes], dict[bytes, int]]] = {}
        # Nodes read from the store (cache misses) since creation: for benches and metrics.
        self.store_reads = 0
        # ``warm``: whether the level it is in has an internal node so far.
        self._warm_found = False

    def _load(self, ref: bytes, depth: int, pos: int, fill: bool) -> _Node:
        """The node ``ref`` at position ``pos`` (``depth``): from the cache or the store.

        ``fill``: put an internal node read at a slot level into its slot (the
        updating thread only); otherwise it goes to the generational part.
        """
        slotted = depth < self._slot_depth
        if slotted:
            offset = pos * _SLOT
            slot = self._slots[offset : offset + _SLOT]
            if slot[:REF_SIZE] == ref:
                return slot[REF_SIZE:]
        node = self._cache.get(ref)
        if node is not None:
            return node
        data = self._store.get_node(ref)
        self.store_reads += 1
        if data is None:
            raise StorageError(f"state tree node {ref.hex()} is missing from the store")
        node = _decode_node(ref, data)
        if slotted and fill and node[0] == _INTERNAL_MARK:
            self._slots[offset : offset + _SLOT] = ref + node
        else:
            self._cache.put(ref, node)
        return node

    def update(
        self,
        root: bytes,
        changes: Mapping[bytes, bytes | None],
        known: Callable[[bytes], bytes | None] | None = None,
        *,
        version: int = 0,
    ) -> TreeUpdate:
        """Apply ``changes`` (None deletes) to the tree at reference ``root`` in one
        pass; the new nodes are made at ``version`` (a store passes the height of the
        block, so its new nodes sort after every older one).

        The changes are sorted by key path and pushed down the tree together,
        split by one bit per level, so every touched node is loaded and re-hashed
        once however many changes pass through it; untouched subtrees keep their
        hash and are not visited. Below the point where a change is alone, its
        path is walked in a loop rather than by recursion.

        ``known(key)``: the value ``key`` has at ``root`` if the caller has it at hand
        (a flat copy of the state, never a read of its own), else None. A walk about
        to read a node from the store first compares its hash with the key's leaf as
        that value makes it, and on a match builds the leaf instead of reading it: a
        changed key's old leaf, one of the few nodes below the cached levels that a
        walk in a big tree reads and the dearest to check, then costs two hashes
        rather than a read, a decode and three or four. A wrong value only misses
        the match (its leaf hash is another), so the result never depends on it.
        """
        if len(root) != REF_SIZE:
            raise StorageError(f"a root reference is {REF_SIZE} bytes, got {len(root)}")
        if not changes:
            return TreeUpdate(root[_HASH], root, {}, root)
        _check_sizes(changes)
        if not 0 <= version < 1 << (8 * VERSION_SIZE):
            raise StorageError(f"tree version {version} does not fit {VERSION_SIZE} bytes")
        made = version.to_bytes(VERSION_SIZE, "big")
        value_copy, leaf_copy, node_copy = _VALUE_COPY, _LEAF_COPY, _NODE_COPY
        # Parallel lists sorted by path, not a list of tuples: thousands of live
        # tuples would wake the cyclic GC during the update.
        by_path: dict[int, bytes] = {}
        for key in changes:
            by_path[int.from_bytes(key_path(key), "big")] = key
        paths = sorted(by_path)
        keys = [by_path[p] for p in paths]
        values = [changes[k] for k in keys]
        # New internal nodes, ref -> encoding (which is also their cached form), at
        # the slot levels (with their positions, for ``committed``) and below them.
        slot_depth = self._slot_depth
        slots = self._slots
        upper: dict[bytes, bytes] = {}
        upper_at: dict[bytes, int] = {}
        internals: dict[bytes, bytes] = {}
        # New leaves: ref -> cached form, and ref -> encoding.
        leaves: dict[bytes, bytes] = {}
        leaf_codes: dict[bytes, bytes] = {}
        # Nodes below the slot levels that this update replaces (for the cache), and
        # every node of the base that the new root does not reach (for the store).
        replaced: list[bytes] = []
        stale: list[bytes] = []
        cache_get = self._cache.get
        slow_load = self._load
        # The change whose path ``single`` walks (-1: none), and its current leaf as
        # ``known`` makes it, (hash, cached form), once a read asked for it: (b"", b"")
        # when ``known`` has no value for the key.
        walking = -1
        expected: tuple[bytes, bytes] | None = None

        def load(ref: bytes, depth: int, pos: int) -> _Node:
            nonlocal expected
            # Slots are written by this thread only: the two slices see one node.
            if depth < slot_depth:
                offset = pos * _SLOT
                if slots[offset : offset + REF_SIZE] == ref:
                    return slots[offset + REF_SIZE : offset + _SLOT]
            node = cache_get(ref)
            if node is not None:
                return node
            node = internals.get(ref) or upper.get(ref) or leaves.get(ref)
            if node is not None:
                return node
            if walking >= 0 and known is not None:
                if expected is None:
                    expected = known_leaf(walking)
                if expected[0] == ref[VERSION_SIZE:]:
                    return expected[1]
            return slow_load(ref, depth, pos, True)

        def known_leaf(i: int) -> tuple[bytes, bytes]:
            assert known is not None
            old = known(keys[i])
            if old is None:
                return b"", b""
            # Off the hot path (a store read was coming): the module's helpers do.
            kp = paths[i].to_bytes(HASH_SIZE, "big")
            vh = value_hash(old)
            return leaf_hash(kp, vh), _LEAF_MARK + kp + vh + old

        def new_leaf(i: int) -> bytes:
            value = values[i]
            assert value is not None, "a deletion makes no leaf"
            kp = paths[i].to_bytes(HASH_SIZE, "big")
            h = value_copy()
            h.update(value)
            vh = h.digest()
            h = leaf_copy()
            h.update(kp)
            h.update(vh)
            ref = made + h.digest()
            leaf_codes[ref] = _packb([NODE_LEAF, keys[i], value])
            leaves[ref] = _LEAF_MARK + kp + vh + value
            return ref

        def new_internal(left: bytes, right: bytes, depth: int, pos: int) -> bytes:
            # ``left`` and ``right`` are references: the hash covers their hashes only.
            # The encoding is ``internal_encoding``'s, inline.
            h = node_copy()
            h.update(left[VERSION_SIZE:])
            h.update(right[VERSION_SIZE:])
            ref = made + h.digest()
            if depth < slot_depth:
                upper[ref] = _INTERNAL_HEAD + left + _BIN_REF + right
                upper_at[ref] = pos
            else:
                internals[ref] = _INTERNAL_HEAD + left + _BIN_REF + right
            return ref

        def build(
            depth: int, pos: int, entries: list[tuple[int, bytes]], lo: int, hi: int
        ) -> bytes:
            # Canonical subtree over leaves that exist already (sorted by path).
            if hi - lo == 1:
                return entries[lo][1]
            shift = 255 - depth
            mid = bisect_left(entries, (((entries[lo][0] >> shift) | 1) << shift,), lo, hi)
            # Two or more leaves: an internal node even if one side is empty.
            left = build(depth + 1, 2 * pos, entries, lo, mid) if mid > lo else ZERO_REF
            right = build(depth + 1, 2 * pos + 1, entries, mid, hi) if hi > mid else ZERO_REF
            return new_internal(left, right, depth, pos)

        def fresh(
            depth: int, pos: int, lo: int, hi: int, keep: tuple[int, bytes] | None, skip: int = -1
        ) -> bytes:
            # Subtree of the inserts among changes lo..hi (but ``skip``) plus one existing
            # leaf ``keep``.
            entries = [
                (paths[i], new_leaf(i))
                for i in range(lo, hi)
                if values[i] is not None and i != skip
            ]
            if keep is not None:
                insort(entries, keep)
            return build(depth, pos, entries, 0, len(entries)) if entries else ZERO_REF

        # From here on a node is named by its reference (``..._hash`` names included).
        def single(node_hash: bytes, top: int, pos: int, i: int) -> bytes:
            # One change below ``node_hash`` (the common case in the lower levels).
            nonlocal walking, expected
            path = paths[i]
            value = values[i]
            siblings: list[bytes] = []
            walked: list[bytes] = []
            h = node_hash
            depth = top
            node = b""
            walking, expected = i, None
            while h != ZERO_REF:
                node = load(h, depth, pos)
                if node[0] != _INTERNAL_MARK:
                    break
                walked.append(h)
                if (path >> (255 - depth)) & 1:
                    siblings.append(node[_LEFT])
                    h = node[_RIGHT]
                    pos = 2 * pos + 1
                else:
                    siblings.append(node[_RIGHT])
                    h = node[_LEFT]
                    pos = 2 * pos
                depth += 1
            walking = -1
            is_leaf = True
            if h == ZERO_REF:
                if value is None:
                    return node_hash  # deleting a key that is not there
                new = new_leaf(i)
            elif int.from_bytes(node[_PATH], "big") == path:
                if value is None:
                    new, is_leaf = ZERO_REF, False
                elif node[_VALUE_AT:] == value:
                    return node_hash
                else:
                    new = new_leaf(i)
                walked.append(h)
            else:
                if value is None:
                    return node_hash
                # Another key's leaf sits here: both move one level down or deeper.
                other = (int.from_bytes(node[_PATH], "big"), h)
                new, is_leaf = fresh(depth, pos, i, i + 1, other), False
            # Every node walked is now replaced (walked[j] sat at depth top + j);
            # re-hash back up, restoring the compressed form on the way. The nodes it
            # keeps (a sibling, a leaf moved down or up) were not walked.
            replaced.extend(walked[slot_depth - top :] if top < slot_depth else walked)
            stale.extend(walked)
            while depth > top:
                depth -= 1
                pos >>= 1
                bit = (path >> (255 - depth)) & 1
                sibling = siblings[depth - top]
                if sibling == ZERO_REF:
                    if is_leaf or new == ZERO_REF:
                        continue  # a lone leaf (or nothing) moves up a level
                elif (
                    new == ZERO_REF
                    and load(sibling, depth + 1, 2 * pos + 1 - bit)[0] != _INTERNAL_MARK
                ):
                    new, is_leaf = sibling, True
                    continue
                if bit:
                    new = new_internal(sibling, new, depth, pos)
                else:
                    new = new_internal(new, sibling, depth, pos)
                is_leaf = False
            return new

        def apply(node_hash: bytes, depth: int, pos: int, lo: int, hi: int) -> bytes:
            # Changes lo..hi share the first ``depth`` bits, the position ``pos`` of
            # ``node_hash``.
            if hi - lo == 1:
                return single(node_hash, depth, pos, lo)
            if node_hash == ZERO_REF:
                return fresh(depth, pos, lo, hi, None)
            node = load(node_hash, depth, pos)
            if node[0] != _INTERNAL_MARK:
                lpath = int.from_bytes(node[_PATH], "big")
                i = bisect_left(paths, lpath, lo, hi)
                if i < hi and paths[i] == lpath:
                    if values[i] != node[_VALUE_AT:]:
                        replaced.append(node_hash)
                        stale.append(node_hash)
                        return fresh(depth, pos, lo, hi, None)
                    # Written with the value it has: the leaf stays as it is. Made again
                    # at this version, it would be a second reference to one hash, and
                    # two updates of one base (rival blocks of a height) could then make
                    # one reference with two encodings (children of other versions).
                    return fresh(depth, pos, lo, hi, (lpath, node_hash), i)
                return fresh(depth, pos, lo, hi, (lpath, node_hash))
            left, right = node[_LEFT], node[_RIGHT]
            shift = 255 - depth
            mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
            # A subtree whose changes are all no-ops comes back as the very reference
            # it had (``single`` returns it, a kept leaf is kept, an unchanged node
            # returns itself), and any real change makes another hash: so an update
            # never makes a node again that its base holds (rival updates of one base
            # at one version then agree on every node both make).
            new_left = apply(left, depth + 1, 2 * pos, lo, mid) if mid > lo else left
            new_right = apply(right, depth + 1, 2 * pos + 1, mid, hi) if hi > mid else right
            if new_left == left and new_right == right:
                return node_hash
            if depth >= slot_depth:
                replaced.append(node_hash)
            stale.append(node_hash)
            # Collapse: a subtree left with a single leaf becomes that leaf.
            if new_left == ZERO_REF:
                if new_right == ZERO_REF:
                    return ZERO_REF
                if load(new_right, depth + 1, 2 * pos + 1)[0] != _INTERNAL_MARK:
                    return new_right
            elif new_right == ZERO_REF and load(new_left, depth + 1, 2 * pos)[0] != _INTERNAL_MARK:
                return new_left
            return new_internal(new_left, new_right, depth, pos)

        try:
            new_root = apply(root, 0, 1, 0, len(paths))
        finally:
            # ``apply`` and ``build`` call themselves, so each sits in a reference
            # cycle with its closure cell, and the cycles hold this update's lists and
            # node dicts (tens of MB for a big block) until the cyclic GC runs, which
            # a node makes rare (``node.run.tune_gc``): several blocks' worth piled
            # up. Rebinding the two names breaks both cycles, so reference counting
            # frees the update's working set on return.
            apply = build = cast(Any, None)
        cache = self._cache
        # Replaced nodes serve only old roots (and another update of the same base),
        # so they are demoted: kept for now, the first to go. The slots' own stay
        # until ``committed``.
        cache.demote_many(replaced)
        cache.put_many(upper)
        cache.put_many(internals)
        cache.put_many(leaves)
        pending = self._pending
        if upper_at:
            pending.pop(new_root, None)
            if len(pending) >= _PENDING:
                del pending[next(iter(pending))]
            pending[new_root] = (upper, upper_at)
        internals.update(upper)
        internals.update(leaf_codes)
        return TreeUpdate(new_root[_HASH], new_root, internals, root, stale)

    def committed(self, root: bytes) -> None:
        """The update that made the root reference ``root`` is persisted and is the new
        head: its new upper nodes take their slots (replacing the version before's).

        Updates of other roots still waiting are dropped: they built on a base that
        is no longer the head. A root no update made (or made long ago) is ignored.
        """
        made = self._pending.pop(root, None)
        self._pending.clear()
        if made is None:
            return
        upper, upper_at = made
        slots = self._slots
        for ref, node in upper.items():
            offset = upper_at[ref] * _SLOT
            slots[offset : offset + _SLOT] = ref + node

    def warm(self, root: bytes, start: int = 1, budget: int = 1 << 13) -> int:
        """Load ``root``'s internal nodes at the slot levels into their slots, in level
        order from position ``start``, at most ``budget`` positions at a time; returns
        the position to go on from, or 0 once every slot level is done. Updating
        thread only; ``root`` is the committed head (it may change between calls: the
        slots behind ``start`` then hold it, ``committed`` saw to that).

        A restarted node's slots are empty: until blocks have crossed every upper
        node again, each fresh key's path reads up to ``slot_depth`` more nodes from
        the store (at 1M keys the first blocks of a storm took three to four times
        as long). A child is found through its parent's slot, filled earlier in the
        same order, so each node is read once, at ~7 us.
        """
        end = 1 << self._slot_depth
        if root == ZERO_REF or not 1 <= start < end:
            return 0
        slots = self._slots
        stop = min(end, start + budget)
        for pos in range(start, stop):
            if pos & (pos - 1) == 0:
                # A new level: if the one above held no internal node, neither does
                # any below (a small state stops after a few levels, not 2^19 places).
                if pos > 1 and not self._warm_found:
                    return 0
                self._warm_found = False
            if pos == 1:
                ref = root
            else:
                offset = (pos >> 1) * _SLOT
                parent = slots[offset : offset + _SLOT]
                # An empty slot (all zero): the parent is a leaf, empty or not loaded.
                if parent[REF_SIZE] != _INTERNAL_MARK:
                    continue
                child = _RIGHT if pos & 1 else _LEFT
                ref = parent[REF_SIZE:][child]
                if ref == ZERO_REF:
                    continue
            try:
                node = self._load(ref, pos.bit_length() - 1, pos, True)
            except StorageError:
                # The parent's slot is an older version's node (a deletion turned its
                # place into a leaf; ``committed`` leaves such slots), whose child may
                # be pruned: nothing below here is the head's. A missing node of the
                # head is reported by the block that needs it.
                offset = pos * _SLOT
                slots[offset : offset + _SLOT] = bytes(_SLOT)
                continue
            if node[0] == _INTERNAL_MARK:
                self._warm_found = True
                # Also when it came from the generational part, where a reader's walk
                # (which fills no slot) left it: its children are found through here.
                offset = pos * _SLOT
                slots[offset : offset + _SLOT] = ref + node
        return 0 if stop >= end else stop

    def _walk(self, root: bytes, path: bytes, siblings: list[bytes] | None) -> _Node | None:
        """Follow ``path`` from the root reference ``root`` to a leaf (returned) or an
        empty subtree (None); ``siblings`` gets the siblings' hashes."""
        bits = int.from_bytes(path, "big")
        ref = root
        depth = 0
        pos = 1
        while ref != ZERO_REF:
            node = self._load(ref, depth, pos, False)
            if node[0] != _INTERNAL_MARK:
                return node
            if depth >= MAX_DEPTH:
                raise StorageError(f"state tree under root {root.hex()} is deeper than 256")
            if (bits >> (255 - depth)) & 1:
                sibling, ref = node[_LEFT_HASH], node[_RIGHT]
                pos = 2 * pos + 1
            else:
                sibling, ref = node[_RIGHT_HASH], node[_LEFT]
                pos = 2 * pos
            if siblings is not None:
                siblings.append(sibling)
            depth += 1
        return None

    def get(self, root: bytes, key: bytes) -> bytes | None:
        """The value of ``key`` in the tree at reference ``root`` (any root ever built),
        or None."""
        path = key_path(key)
        leaf = self._walk(root, path, None)
        return leaf[_VALUE_AT:] if leaf is not None and leaf[_PATH] == path else None

    def get_with_proof(self, root: bytes, key: bytes) -> tuple[bytes | None, StateProof]:
        """The value of ``key`` at reference ``root`` and the proof of it (or of its
        absence), against the root's hash."""
        path = key_path(key)
        siblings: list[bytes] = []
        leaf = self._walk(root, path, siblings)
        terminal = None if leaf is None else ProofLeaf(leaf[_PATH], leaf[_DIGEST])
        value = leaf[_VALUE_AT:] if leaf is not None and leaf[_PATH] == path else None
        return value, StateProof(tuple(siblings), terminal)

    def prove(self, root: bytes, key: bytes) -> StateProof:
        return self.get_with_proof(root, key)[1]


def state_root_of(state: Mapping[bytes, bytes]) -> bytes:
    """The root of a tree holding exactly ``state``, computed from scratch in memory."""
    return StateTree(MemoryNodeStore(), cache_size=2).update(ZERO_REF, state).root


def _shares_prefix(a: bytes, b: bytes, bits: int) -> bool:
    if bits == 0:
        return True
    diff = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return diff >> (256 - bits) == 0


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> None:
    """Check that ``key`` has ``value`` (or is absent, if None) in the tree at ``root``.

    Raises ``InvalidProof`` with the reason. Besides recomputing the root, it
    refuses proofs that are not the one canonical proof the tree would give: an
    empty sibling next to the terminal (that subtree would have been compressed)
    and an absence proof ending at a leaf off the key's path.
    """
    siblings = proof.siblings
    depth = len(siblings)
    if len(root) != HASH_SIZE:
        raise InvalidProof(f"state root must be {HASH_SIZE} bytes, got {len(root)}")
    if depth > MAX_DEPTH:
        raise InvalidProof(f"proof has {depth} siblings, a path has at most {MAX_DEPTH}")
    path = key_path(key)
    leaf = proof.leaf
    if leaf is not None and (len(leaf.key_path) != HASH_SIZE or len(leaf.value_hash) != HASH_SIZE):
        raise InvalidProof("terminal leaf hashes must be 32 bytes")
    if value is None:
        if leaf is None:
            node = ZERO_HASH
        elif leaf.key_path == path:
            raise InvalidProof("proof ends at the key's own leaf: the key is present")
        elif not _shares_prefix(leaf.key_path, path, depth):
            raise InvalidProof(
                f"terminal leaf at depth {depth} does not share the key's {depth}-bit prefix"
            )
        else:
            node = leaf_hash(leaf.key_path, leaf.value_hash)
    else:
        if leaf is None:
            raise InvalidProof("proof shows the key absent, but a value was claimed")
        if leaf.key_path != path:
            raise InvalidProof(f"proof is for key path {leaf.key_path.hex()}, not {path.hex()}")
        if leaf.value_hash != value_hash(value):
            raise InvalidProof(
                f"value hashes to {value_hash(value).hex()}, proof holds {leaf.value_hash.hex()}"
            )
        node = leaf_hash(path, leaf.value_hash)
    if depth and siblings[-1] == ZERO_HASH:
        raise InvalidProof("non-canonical proof: the terminal's sibling is empty")
    bits = int.from_bytes(path, "big")
    for d in range(depth - 1, -1, -1):
        sibling = siblings[d]
        if len(sibling) != HASH_SIZE:
            raise InvalidProof(f"sibling {d} must be {HASH_SIZE} bytes, got {len(sibling)}")
        if (bits >> (255 - d)) & 1:
            node = internal_hash(sibling, node)
        else:
            node = internal_hash(node, sibling)
    if node != root:
        raise InvalidProof(f"proof leads to root {node.hex()}, expected {root.hex()}")
