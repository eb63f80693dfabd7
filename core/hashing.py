"""Domain-separated BLAKE2b-256, binary Merkle roots over lists and their paths."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from core.errors import InvalidProof

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)


class Domain(IntEnum):
    """One-byte prefix per kind of hashed object; values are part of the protocol."""

    TX = 0x01
    HEADER = 0x02
    VOTE = 0x03
    GENESIS = 0x04
    ADDRESS = 0x05
    LIST_LEAF = 0x10
    LIST_NODE = 0x11
    STATE_KEY = 0x20
    STATE_VALUE = 0x21
    STATE_LEAF = 0x22
    STATE_NODE = 0x23
    RECEIPT = 0x30
    PRODUCER_SET = 0x40


# A hasher that has taken in each prefix byte, to be copied and continued: a quarter
# cheaper than a new hasher over ``prefix + data`` (keyword parsing, a copy of the
# data). Indexed by the byte: a list index reads an IntEnum's value in C, where an
# enum dict key would cost a Python-level __hash__ per call.
_PREFIXED = [hashlib.blake2b(bytes([v]), digest_size=HASH_SIZE) for v in range(256)]


def prefixed(domain: Domain) -> Callable[[], hashlib.blake2b]:
    """A maker of BLAKE2b-256 hashers that have taken in ``domain``'s prefix: update
    one with the data and take its digest (``hash_bytes`` inlined, for hot loops)."""
    return _PREFIXED[domain].copy


def hash_bytes(domain: Domain, data: bytes) -> bytes:
    """BLAKE2b-256 of ``domain || data``."""
    h = _PREFIXED[domain].copy()
    h.update(data)
    return h.digest()


def _merkle_levels(leaves: Sequence[bytes]) -> Iterator[list[bytes]]:
    """Each level of the tree over ``leaves`` (at least one), from the leaves' hashes up
    to the root alone: ``merkle_root`` takes the last, ``MerkleTree`` keeps them all."""
    # A block hashes two trees of tens of thousands of leaves: ``prefixed`` hashers.
    level: list[bytes] = []
    append = level.append
    leaf = _PREFIXED[Domain.LIST_LEAF].copy
    for x in leaves:
        h = leaf()
        h.update(x)
        append(h.digest())
    yield level
    node = _PREFIXED[Domain.LIST_NODE].copy
    while len(level) > 1:
        nxt: list[bytes] = []
        append = nxt.append
        pairs = iter(level)
        for left, right in zip(pairs, pairs, strict=False):  # an odd last one waits
            h = node()
            h.update(left)
            h.update(right)
            append(h.digest())
        if len(level) % 2:
            append(level[-1])
        level = nxt
        yield level


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root over already-encoded items.

    Leaves are hashed with ``LIST_LEAF``, inner nodes with ``LIST_NODE``; an odd
    node at the end of a level is promoted unchanged (no duplication, so no
    CVE-2012-2459-style second preimage). The root of an empty list is zero.
    """
    if not leaves:
        return ZERO_HASH
    (top,) = deque(_merkle_levels(leaves), maxlen=1)
    return top[0]


@dataclass(frozen=True, slots=True)
class MerkleTree:
    """Every level of ``merkle_root``'s tree over a list, to take leaves' paths from.

    ``levels[0]`` holds the leaves' hashes, each level the next one's, the last the
    root alone; each level's hashes are joined in one bytes object (32 bytes each), a
    third of the memory of a list of them.
    """

    levels: tuple[bytes, ...]

    @classmethod
    def of(cls, leaves: Sequence[bytes]) -> MerkleTree:
        """The tree of ``merkle_root(leaves)`` (no level at all for an empty list)."""
        if not leaves:
            return cls(())
        return cls(tuple(b"".join(level) for level in _merkle_levels(leaves)))

    @property
    def count(self) -> int:
        """How many leaves the tree is over."""
        return len(self.levels[0]) // HASH_SIZE if self.levels else 0

    @property
    def root(self) -> bytes:
        """``merkle_root`` of the leaves (zero for none)."""
        return self.levels[-1] if self.levels else ZERO_HASH

    @property
    def size(self) -> int:
        """Bytes of hashes held (for a cache's bound)."""
        return sum(map(len, self.levels))

    def path(self, index: int) -> list[bytes]:
        """The path of leaf ``index``: its sibling at each level, from the leaves up,
        where it has one (an odd last node is promoted unchanged, with none)."""
        if not 0 <= index < self.count:
            raise IndexError(f"leaf {index} of a tree of {self.count}")
        out = []
        for level in self.levels[:-1]:
            sibling = (index ^ 1) * HASH_SIZE
            if sibling < len(level):
                out.append(level[sibling : sibling + HASH_SIZE])
            index //= 2
        return out


def merkle_path_length(index: int, count: int) -> int:
    """How many siblings the path of leaf ``index`` of ``count`` leaves holds: one per
    level at which its node is not the odd last one (``0 <= index < count``)."""
    length = 0
    while count > 1:
        if index % 2 or index + 1 < count:
            length += 1
        index, count = index // 2, (count + 1) // 2
    return length


def verify_merkle_path(
    root: bytes, leaf: bytes, index: int, count: int, path: Sequence[bytes]
) -> None:
    """Check that ``leaf`` (its encoding) is leaf ``index`` of a list of ``count`` whose
    ``merkle_root`` is ``root``, by ``path`` (``MerkleTree.path``). Raises ``InvalidProof``.

    The shape of a tree with promoted odd nodes depends on ``count``: only a path of
    exactly the siblings that ``index`` and ``count`` call for is taken, so leaf
    ``index`` of ``count`` is proven only where it is. ``count`` itself is the caller's
    to know; a root over lists of other lengths can show the same leaf at another
    ``(index, count)`` whose path has the same turns (docs/node.md, HTTP API).
    """
    if len(root) != HASH_SIZE:
        raise InvalidProof(f"root must be {HASH_SIZE} bytes, got {len(root)}")
    # A leaf of the list, of a list of at most u64 leaves.
    if not 0 <= index < count < 2**64:
        raise InvalidProof(f"leaf {index} of {count} is no leaf of a list")
    # Exactly the siblings the tree's shape calls for: none missing, none over.
    expected = merkle_path_length(index, count)
    if len(path) != expected:
        raise InvalidProof(
            f"leaf {index} of {count} has a path of {expected} hashes, the proof has {len(path)}"
        )
    # Each a hash (not a short or long string that would hash all the same).
    for sibling in path:
        if len(sibling) != HASH_SIZE:
            raise InvalidProof(f"a path's hashes are {HASH_SIZE} bytes, one is {len(sibling)}")
    node = hash_bytes(Domain.LIST_LEAF, leaf)
    siblings = iter(path)
    while count > 1:
        if index % 2:
            node = hash_bytes(Domain.LIST_NODE, next(siblings) + node)
        elif index + 1 < count:
            node = hash_bytes(Domain.LIST_NODE, node + next(siblings))
        index, count = index // 2, (count + 1) // 2
    if node != root:
        raise InvalidProof(f"the path leads to root {node.hex()}, not {root.hex()}")
