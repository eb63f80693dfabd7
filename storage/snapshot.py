"""State-tree snapshots in chunks: served from any retained root, verified node by node.

A snapshot of the state at a final height is the state tree under that height's
root. It travels as *subtree chunks*: a request names one node reference (version
|| hash: the root first, by the snapshot's height and root hash, later the
subtrees still missing), and the answer is that subtree's nodes in pre-order
(node, left subtree, right subtree), cut after a byte budget. An internal node
holds its children's hashes, so a chunk is verified against the root alone,
without any proof beside it:

- the first node must hash to the requested hash;
- every following node must hash to the next hash the pre-order walk expects
  (the children of the nodes already verified, left before right, empty
  subtrees skipped);
- a child's version, which no hash covers, must not be above its parent's (a node
  is made no later than the nodes above it): the receiver keeps each node under
  the reference its parent names, so versions only say where nodes are stored;
- the references the walk still expects when the chunk ends are what is missing,
  and are asked for next (from any peer).

A chunk holding one wrong byte fails at that node, so a hostile peer is caught
on the chunk it sent, never later. What a verifier keeps is the walk's stack:
at most one pending right child per level of the requested subtree.

Serving reads the stored encodings as they are (no decoding), walking the same
pre-order, and stops at the budget: a request costs the server at most one
chunk of reads, whatever the requester asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.errors import DecodeError, Invalid, StorageError
from core.hashing import ZERO_HASH
from storage.state_tree import (
    REF_SIZE,
    VERSION_SIZE,
    ZERO_REF,
    LeafNode,
    internal_children,
    internal_node_hash,
    is_internal,
    key_path,
    leaf_hash,
    value_hash,
)

# Bytes of node encodings per chunk (a single leaf may exceed it: it is sent alone).
DEFAULT_CHUNK_BYTES = 1024 * 1024
# Nodes per chunk, whatever their size (the wire message's item bound).
MAX_CHUNK_NODES = 16384


class BadChunk(Invalid):
    """A chunk that does not belong to the tree it was asked from."""

    code = "bad_chunk"


def node_children(encoding: bytes) -> tuple[bytes, bytes] | None:
    """(left, right) references of an internal node's encoding; None for a leaf (or
    anything else). Read off the bytes: no decoding, no hashing."""
    return internal_children(encoding) if is_internal(encoding) else None


def serve_chunk(
    get_node: Callable[[bytes], bytes | None],
    subtree: bytes,
    max_bytes: int = DEFAULT_CHUNK_BYTES,
    max_nodes: int = MAX_CHUNK_NODES,
) -> list[bytes]:
    """The stored encodings of the subtree at reference ``subtree`` in pre-order, until
    ``max_bytes`` or ``max_nodes``.

    At least one node is returned when the subtree is stored at all; an empty list
    means this store does not hold it (pruned, or never had it). Raises
    ``StorageError`` if a node below a stored one is missing (a damaged store).
    """
    out: list[bytes] = []
    size = 0
    stack = [subtree]
    while stack and len(out) < max_nodes:
        ref = stack.pop()
        encoding = get_node(ref)
        if encoding is None:
            if not out:
                return []
            raise StorageError(f"state tree node {ref.hex()} is missing below a stored one")
        if out and size + len(encoding) > max_bytes:
            break
        out.append(encoding)
        size += len(encoding)
        children = node_children(encoding)
        if children is not None:
            left, right = children
            if right != ZERO_REF:
                stack.append(right)
            if left != ZERO_REF:
                stack.append(left)
    return out


@dataclass(frozen=True, slots=True)
class VerifiedChunk:
    """What a chunk proved: its nodes (reference -> encoding), the leaves among them as
    (key, value), and the references of the subtrees still missing below it, in walk
    order."""

    nodes: dict[bytes, bytes]
    leaves: list[tuple[bytes, bytes]]
    missing: list[bytes]


def node_hash_of(encoding: bytes) -> tuple[bytes, tuple[bytes, bytes] | None, LeafNode | None]:
    """(hash, children's references or None, leaf or None) of one node encoding;
    ``DecodeError`` if it is neither an internal node nor a canonical leaf."""
    if is_internal(encoding):
        return internal_node_hash(encoding), internal_children(encoding), None
    leaf = LeafNode.decode(encoding)
    return leaf_hash(key_path(leaf.key), value_hash(leaf.value)), None, leaf


def verify_chunk(subtree: bytes, encodings: list[bytes]) -> VerifiedChunk:
    """Check ``encodings`` as a pre-order prefix of the tree under the reference
    ``subtree``.

    Raises ``BadChunk`` naming the first node that does not fit. An empty chunk is
    refused too: whoever offered the snapshot must be able to serve it.
    """
    if len(subtree) != REF_SIZE or subtree[VERSION_SIZE:] == ZERO_HASH:
        raise BadChunk(f"no chunk can be asked for subtree {subtree.hex()}")
    if not encodings:
        raise BadChunk(f"empty chunk for subtree {subtree.hex()[:16]}")
    stack = [subtree]
    nodes: dict[bytes, bytes] = {}
    leaves: list[tuple[bytes, bytes]] = []
    for i, encoding in enumerate(encodings):
        if not stack:
            raise BadChunk(f"chunk has {len(encodings) - i} nodes beyond the subtree's end")
        expected = stack.pop()
        try:
            got, children, leaf = node_hash_of(encoding)
        except DecodeError as exc:
            raise BadChunk(f"chunk node {i} is not a tree node: {exc}") from exc
        if got != expected[VERSION_SIZE:]:
            raise BadChunk(
                f"chunk node {i} hashes to {got.hex()[:16]}, "
                f"expected {expected[VERSION_SIZE:].hex()[:16]}"
            )
        nodes[expected] = bytes(encoding)
        if children is not None:
            left, right = children
            if left == ZERO_REF and right == ZERO_REF:
                raise BadChunk(f"chunk node {i} is an internal node with no children")
            # Big-endian versions: the bytes compare as the numbers do.
            version = expected[:VERSION_SIZE]
            for child in (right, left):
                if child[VERSION_SIZE:] == ZERO_HASH:
                    if child != ZERO_REF:
                        raise BadChunk(f"chunk node {i} names an empty child with a version")
                    continue
                if child[:VERSION_SIZE] > version:
                    raise BadChunk(f"chunk node {i} names a child made after it")
                stack.append(child)
        else:
            assert leaf is not None
            leaves.append((leaf.key, leaf.value))
    stack.reverse()
    return VerifiedChunk(nodes, leaves, stack)


def walk_missing(
    get_node: Callable[[bytes], bytes | None], root: bytes, limit: int
) -> Iterator[bytes]:
    """References under the root reference ``root`` that the store lacks, reached
    through nodes it holds.

    Resuming a sync: what was stored before a restart is walked locally (each node
    checked against its hash again), and only the subtrees below it that never
    arrived are fetched. Stops after ``limit`` missing hashes (the caller fetches
    those, then walks again), so memory stays bounded.
    """
    found = 0
    stack = [root] if root != ZERO_REF else []
    while stack:
        ref = stack.pop()
        encoding = get_node(ref)
        if encoding is None:
            yield ref
            found += 1
            if found >= limit:
                return
            continue
        try:
            got, children, _ = node_hash_of(encoding)
        except DecodeError as exc:
            raise StorageError(f"stored state tree node {ref.hex()} is corrupt") from exc
        if got != ref[VERSION_SIZE:]:
            raise StorageError(f"stored state tree node {ref.hex()} does not match its hash")
        if children is not None:
            left, right = children
            if right != ZERO_REF:
                stack.append(right)
            if left != ZERO_REF:
                stack.append(left)
