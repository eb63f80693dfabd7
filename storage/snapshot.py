"""State-tree snapshots in chunks: served from any retained root, verified node by node.

A snapshot of the state at a final height is the state tree under that height's
root. It travels as *subtree chunks*: a request names one subtree by where it sits
and what it hashes to (``Subtree``: its depth, the path bits leading there, its
hash; the root first, later the subtrees still missing), and the answer is that
subtree's nodes in pre-order (node, left subtree, right subtree), cut after a
byte budget. An internal node holds its children's hashes, so a chunk is
verified against the root alone, without any proof beside it:

- the first node must hash to the requested hash;
- every following node must hash to the next hash the pre-order walk expects
  (the children of the nodes already verified, left before right, empty
  subtrees skipped);
- the subtrees the walk still expects when the chunk ends are what is missing,
  and are asked for next (from any peer).

Where a server keeps a node (its reference: the version that made it, then its
hash) is its own business: it finds a requested subtree by walking from its root
along the path, and the children's versions in what it sends are covered by no
hash, so the receiver ignores them and keeps every node under its own reference,
the snapshot's height (``verify_chunk`` rewrites the encodings). Peers that made
or synced their nodes at other heights thus serve one joiner alike, and a hostile
server's versions cannot lead the joiner to ask for what no one else holds.

A chunk holding one wrong byte (but in the versions) fails at that node, so a
hostile peer is caught on the chunk it sent, never later. What a verifier keeps is
the walk's stack: at most one pending right child per level of the requested
subtree.

Serving reads the stored encodings as they are (no decoding), walking the same
pre-order, and stops at the budget: a request costs the server at most one
chunk of reads, whatever the requester asks.

A sync that moves to a new target keeps the subtrees it holds whole
(``held_subtrees``; docs/state-sync.md, A new target): ``verify_chunk`` names one
wherever the new tree names its hash instead of asking for it, and ``cross_links``
and ``stored_below`` find what a move deletes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.errors import DecodeError, Invalid, StorageError
from core.hashing import HASH_SIZE, ZERO_HASH
from storage.state_tree import (
    MAX_DEPTH,
    VERSION_SIZE,
    ZERO_REF,
    LeafNode,
    internal_children,
    internal_encoding,
    internal_node_hash,
    is_internal,
    key_path,
    leaf_hash,
    node_ref,
    value_hash,
)

# Bytes of node encodings per chunk (a single leaf may exceed it: it is sent alone).
DEFAULT_CHUNK_BYTES = 1024 * 1024
# Nodes per chunk, whatever their size (the wire message's item bound).
MAX_CHUNK_NODES = 16384


class BadChunk(Invalid):
    """A chunk that does not belong to the tree it was asked from."""

    code = "bad_chunk"


class DamagedTree(StorageError):
    """A stored state tree node that does not decode or does not match its hash, or one
    gone where the tree names it: damage on disk, which a state sync repairs by walking
    again (``ChainStore.missing_nodes`` drops it) and fetching it (docs/state-sync.md,
    Damage). Any other ``StorageError`` of a walk is a fault no fetch repairs."""


@dataclass(frozen=True, slots=True)
class Subtree:
    """Where a subtree of a snapshot sits: the node at ``depth`` reached by the first
    ``depth`` bits of ``path`` (the rest zero), whose hash is ``hash``. Built from a
    peer's request, so it checks itself (``DecodeError``)."""

    depth: int
    path: bytes
    hash: bytes

    def __post_init__(self) -> None:
        if len(self.path) != HASH_SIZE or len(self.hash) != HASH_SIZE:
            raise DecodeError(f"a subtree's path and hash are {HASH_SIZE} bytes each")
        # A leaf at depth 256 would take two keys whose paths share 255 bits: past the
        # 16 bits a group fixes, a 239-bit collision of their hashes. Below that, every
        # subtree sits at depth 255 at most. The path's bits past ``depth`` are zero,
        # so one place has one name.
        if not 0 <= self.depth < MAX_DEPTH:
            raise DecodeError(f"a subtree's depth is 0 to {MAX_DEPTH - 1}, got {self.depth}")
        bits = int.from_bytes(self.path, "big")
        if bits & ((1 << (MAX_DEPTH - self.depth)) - 1):
            raise DecodeError(f"path bits past depth {self.depth} must be zero")

    def child(self, right: bool, child_hash: bytes) -> Subtree:
        bits = int.from_bytes(self.path, "big")
        if right:
            bits |= 1 << (MAX_DEPTH - 1 - self.depth)
        return Subtree(self.depth + 1, bits.to_bytes(HASH_SIZE, "big"), child_hash)


def root_subtree(root_hash: bytes) -> Subtree:
    """The whole tree of a snapshot whose state root is ``root_hash``."""
    return Subtree(0, ZERO_HASH, root_hash)


def find_subtree(
    get_node: Callable[[bytes], bytes | None], root: bytes, subtree: Subtree
) -> bytes | None:
    """The reference, in the store ``get_node`` reads, of ``subtree`` under the root
    reference ``root``; None when the tree has no such node there. Reads at most
    ``subtree.depth`` nodes: the walk down the path."""
    ref = root
    bits = int.from_bytes(subtree.path, "big")
    for depth in range(subtree.depth):
        encoding = get_node(ref) if ref != ZERO_REF else None
        children = None if encoding is None else node_children(encoding)
        if children is None:
            return None
        left, right = children
        ref = right if (bits >> (MAX_DEPTH - 1 - depth)) & 1 else left
    return ref if ref[VERSION_SIZE:] == subtree.hash and ref != ZERO_REF else None


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
    """What a chunk proved: its nodes, as the receiver keeps them (reference at the
    snapshot's version -> encoding naming children at that version), the leaves among
    them as (key, value), and the subtrees still missing below it, in walk order."""

    nodes: dict[bytes, bytes]
    leaves: list[tuple[bytes, bytes]]
    missing: list[Subtree]


def node_hash_of(encoding: bytes) -> tuple[bytes, tuple[bytes, bytes] | None, LeafNode | None]:
    """(hash, children's references or None, leaf or None) of one node encoding;
    ``DecodeError`` if it is neither an internal node nor a canonical leaf."""
    if is_internal(encoding):
        return internal_node_hash(encoding), internal_children(encoding), None
    leaf = LeafNode.decode(encoding)
    return leaf_hash(key_path(leaf.key), value_hash(leaf.value)), None, leaf


def verify_chunk(
    subtree: Subtree,
    encodings: list[bytes],
    version: int,
    held: Callable[[bytes], bytes | None] | None = None,
) -> VerifiedChunk:
    """Check ``encodings`` as a pre-order prefix of the tree under ``subtree``, and give
    its nodes as a receiver keeps them at ``version`` (the snapshot's height).

    ``held`` gives, for the hash of a subtree the receiver already holds whole (fetched
    for an earlier target of the sync), the reference it keeps it under (else None): a
    node naming one is kept naming that reference, and the subtree is neither kept
    again nor missing. A node's hash covers its whole subtree, so what was verified under another
    root is the right subtree wherever this tree names its hash. The server does not
    know what the receiver holds: such a subtree's nodes in the chunk are verified (the
    walk must pass them to check what follows) and not kept.

    Raises ``BadChunk`` naming the first node that does not fit. An empty chunk is
    refused too: whoever offered the snapshot must be able to serve it.
    """
    if subtree.hash == ZERO_HASH:
        raise BadChunk("no chunk can be asked for an empty subtree")
    if not encodings:
        raise BadChunk(f"empty chunk for subtree {subtree.hash.hex()[:16]}")
    # The walk's stack: what the chunk must hold next, and whether it is kept (False
    # within a subtree held already).
    stack = [(subtree, True)]
    nodes: dict[bytes, bytes] = {}
    leaves: list[tuple[bytes, bytes]] = []
    for i, encoding in enumerate(encodings):
        if not stack:
            raise BadChunk(f"chunk has {len(encodings) - i} nodes beyond the subtree's end")
        expected, keep = stack.pop()
        try:
            got, children, leaf = node_hash_of(encoding)
        except DecodeError as exc:
            raise BadChunk(f"chunk node {i} is not a tree node: {exc}") from exc
        if got != expected.hash:
            raise BadChunk(
                f"chunk node {i} hashes to {got.hex()[:16]}, expected {expected.hash.hex()[:16]}"
            )
        if children is None:
            assert leaf is not None
            if keep:
                nodes[node_ref(version, got)] = bytes(encoding)
                leaves.append((leaf.key, leaf.value))
            continue
        left, right = children[0][VERSION_SIZE:], children[1][VERSION_SIZE:]
        if left == ZERO_HASH and right == ZERO_HASH:
            raise BadChunk(f"chunk node {i} is an internal node with no children")
        if expected.depth >= MAX_DEPTH - 1:
            raise BadChunk(f"chunk node {i} is an internal node at depth {expected.depth}")
        held_left = held_right = None
        if keep and held is not None:
            held_left = held(left) if left != ZERO_HASH else None
            held_right = held(right) if right != ZERO_HASH else None
        keep_left, keep_right = keep and held_left is None, keep and held_right is None
        if keep:
            # The sender's versions of the children are its own: ours are the
            # snapshot's, or those we hold a child's subtree under.
            nodes[node_ref(version, got)] = internal_encoding(
                held_left or node_ref(version, left), held_right or node_ref(version, right)
            )
        if right != ZERO_HASH:
            stack.append((expected.child(True, right), keep_right))
        if left != ZERO_HASH:
            stack.append((expected.child(False, left), keep_left))
    missing = [where for where, keep in reversed(stack) if keep]
    return VerifiedChunk(nodes, leaves, missing)


def walk_missing(
    get_node: Callable[[bytes], bytes | None],
    root: bytes,
    limit: int,
    visit: Callable[[bytes, LeafNode | None], None] | None = None,
    damaged: list[Subtree] | None = None,
) -> Iterator[Subtree]:
    """The subtrees under the root reference ``root`` that the store lacks, reached
    through nodes it holds.

    Resuming a sync: what was stored before a restart is walked locally (each node
    checked against its hash again), and only the subtrees below it that never
    arrived are fetched. Stops after ``limit`` missing subtrees (the caller fetches
    those, then walks again), so memory stays bounded. ``visit`` is called with each
    node's reference (and the leaf, for a leaf) once it is checked.

    With ``damaged``: a node that does not decode or does not match its hash (damage on
    disk), or one at another version than ``root``'s (held from a target the sync left)
    that is missing, is neither yielded nor an error: its place goes in ``damaged``
    (``damaged_paths``) and the walk goes on beside it, so that one walk finds every
    such place it reaches before ``limit``. A held node missing is not simply yielded:
    a fetch stores at the root's version, never again under the held reference its
    parent names, so it would be asked for again and again. Without ``damaged`` (the
    install's walk), each of those is a ``DamagedTree``.
    """
    found = 0
    version = root[:VERSION_SIZE]
    stack = [(root, root_subtree(root[VERSION_SIZE:]))] if root != ZERO_REF else []
    while stack:
        ref, where = stack.pop()
        encoding = get_node(ref)
        if encoding is None and (damaged is None or ref[:VERSION_SIZE] == version):
            yield where
            found += 1
            if found >= limit:
                return
            continue
        try:
            if encoding is None:
                raise DamagedTree(f"state tree node {ref.hex()} held is missing")
            _, children, leaf = _stored_node(ref, encoding)
        except DamagedTree:
            if damaged is None:
                raise
            damaged.append(where)
            continue
        if visit is not None:
            visit(ref, leaf)
        if children is not None:
            if where.depth >= MAX_DEPTH - 1:
                # Not damage: it matches its hash, as does every node above it to the
                # root, so no flipped bit made it. No chunk brings one (``verify_chunk``
                # refuses it), and fetched again its place would come as the same nodes,
                # refused, every peer serving it banned: a fault of this store (written
                # by something other than a sync) for the operator to see.
                raise StorageError(f"stored state tree node {ref.hex()} is too deep")
            left, right = children
            if right != ZERO_REF:
                stack.append((right, where.child(True, right[VERSION_SIZE:])))
            if left != ZERO_REF:
                stack.append((left, where.child(False, left[VERSION_SIZE:])))


def damaged_paths(
    get_node: Callable[[bytes], bytes | None], root: bytes, places: list[Subtree]
) -> tuple[list[bytes], dict[bytes, bytes]]:
    """What a sync drops for the damaged nodes held at ``places`` (``walk_missing``)
    under the root reference ``root``: (the references on each path from the nearest
    node at ``root``'s version above a place down to it, each after those below it, the
    subtrees beside those paths held whole, hash -> reference).

    The nodes held on a path are not whole any more, and are found by their hash
    (``verify_chunk``'s ``held``): they go, or the tree would name them again. The node
    of this target above them names the held reference: it goes too, so that it is
    fetched again and names what is held then (or asks for it). What hangs beside the
    paths is whole, held still: the walk goes through the same nodes, so the paths read
    as they did. Paths share their upper nodes (two places under one held node): each
    node is read once, and a node on one path is never beside another. A damaged node
    of this target's own is its own path: its parent names it by the reference a fetch
    stores it under, and what hung below it at this version comes again under the same
    references (its bytes, damaged, cannot say what that was).
    """
    children_of: dict[bytes, tuple[bytes, bytes] | None] = {}

    def children(ref: bytes) -> tuple[bytes, bytes] | None:
        if ref not in children_of:
            encoding = get_node(ref)
            children_of[ref] = None if encoding is None else node_children(encoding)
        return children_of[ref]

    version = root[:VERSION_SIZE]
    paths: list[list[bytes]] = []
    # Each node on a path by its depth: the deletes go deepest first.
    depth_of: dict[bytes, int] = {}
    for where in places:
        path = [root]
        bits = int.from_bytes(where.path, "big")
        for depth in range(where.depth):
            pair = children(path[-1])
            if pair is None:
                # Changed on disk since the walk, a moment ago: the next walk finds it.
                raise DamagedTree(f"state tree node {path[-1].hex()} is no longer on the walk")
            path.append(pair[(bits >> (MAX_DEPTH - 1 - depth)) & 1])
        top = max(i for i, ref in enumerate(path) if ref[:VERSION_SIZE] == version)
        paths.append(path[top:])
        depth_of.update((ref, top + i) for i, ref in enumerate(path[top:]))
    beside: dict[bytes, bytes] = {}
    for path in paths:
        for ref in path[1:-1]:
            for child in children(ref) or ():
                if child != ZERO_REF and child not in depth_of and get_node(child) is not None:
                    beside[child[VERSION_SIZE:]] = child
    return sorted(depth_of, key=depth_of.__getitem__, reverse=True), beside


def matches_hash(encoding: bytes, node_hash: bytes) -> bool:
    """Whether a stored node's ``encoding`` decodes and hashes to ``node_hash``."""
    try:
        return node_hash_of(encoding)[0] == node_hash
    except DecodeError:
        return False


def _stored_node(
    ref: bytes, encoding: bytes
) -> tuple[bytes, tuple[bytes, bytes] | None, LeafNode | None]:
    """``node_hash_of`` a stored node, which must hash to its reference's hash."""
    try:
        got, children, leaf = node_hash_of(encoding)
    except DecodeError as exc:
        raise DamagedTree(f"stored state tree node {ref.hex()} is corrupt") from exc
    if got != ref[VERSION_SIZE:]:
        raise DamagedTree(f"stored state tree node {ref.hex()} does not match its hash")
    return got, children, leaf


def ref_version(ref: bytes) -> int:
    """The version a node reference names."""
    return int.from_bytes(ref[:VERSION_SIZE], "big")


def held_subtrees(
    get_node: Callable[[bytes], bytes | None], root: bytes, linked_below: int, keep_below: int
) -> tuple[dict[bytes, bytes], set[bytes]]:
    """What a sync that moves to a target of version ``keep_below`` keeps of the tree it
    stored under the root reference ``root`` (its nodes at ``linked_below``, the old
    target's height): (hash -> reference of each largest subtree stored whole whose
    version is below ``keep_below``, references of the subtrees held from earlier
    targets that the tree names).

    A subtree is whole when every node below it is stored. A sync stores the nodes it
    fetches at its target's height, and names a subtree held from an earlier target
    (held whole, below that height) by the reference it is held under: so a reference
    below ``linked_below`` is whole if its node is there (else missing, as damage would
    leave it) and is not walked, unless its version is too high to keep. Every other node is walked and checked against its hash, and a subtree
    with anything missing below it is not whole: only its whole parts are kept, so a
    partly fetched subtree never passes as whole, nor one with a node that does not
    decode or match its hash (damage on disk). Nothing at a version from
    ``keep_below`` on is kept: the tree a sync installs holds only nodes made at its
    height or before, as a tree that a node built itself does (pruning goes by it).
    """
    held: dict[bytes, bytes] = {}
    linked: set[bytes] = set()
    if root == ZERO_REF:
        return held, linked
    # (whole, keepable) of each node visited whose parent is not done yet.
    done: dict[bytes, tuple[bool, bool]] = {}
    # A node to visit (children None), or one whose children were pushed above it.
    stack: list[tuple[bytes, list[bytes] | None]] = [(root, None)]
    while stack:
        ref, children = stack.pop()
        if children is None:
            version = ref_version(ref)
            encoding = get_node(ref)
            if version < linked_below and encoding is not None:
                linked.add(ref)
                if version < keep_below:
                    done[ref] = (True, True)
                    continue
            if encoding is None:
                done[ref] = (False, False)
                continue
            try:
                _, pair, _ = _stored_node(ref, encoding)
            except DamagedTree:
                # Damaged on disk: not whole, as if missing (the sweep deletes it with
                # the rest of the tree). Raised, the move failed at every restart.
                done[ref] = (False, False)
                continue
            below = [] if pair is None else [c for c in pair if c != ZERO_REF]
            stack.append((ref, below))
            stack.extend((child, None) for child in below)
            continue
        results = [done.pop(child) for child in children]
        whole = all(w for w, _ in results)
        keepable = whole and ref_version(ref) < keep_below
        if not keepable:
            for child, (_, child_keepable) in zip(children, results, strict=True):
                if child_keepable:
                    held[child[VERSION_SIZE:]] = child
        done[ref] = (whole, keepable)
    if done.pop(root)[1]:
        held[root[VERSION_SIZE:]] = root
    return held, linked


def stored_below(
    get_node: Callable[[bytes], bytes | None], root: bytes, kept: Callable[[bytes], bool]
) -> Iterator[bytes]:
    """The references of the nodes stored under ``root`` (itself included), each after
    every one below it, but for the subtrees ``kept`` names: what to delete, in an order
    where a crash part way leaves every node not deleted yet reachable from ``root``,
    so that the walk can be run again."""
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        ref, expanded = stack.pop()
        if expanded:
            yield ref
            continue
        if ref == ZERO_REF or kept(ref):
            continue
        encoding = get_node(ref)
        if encoding is None:
            continue
        stack.append((ref, True))
        children = node_children(encoding)
        if children is not None:
            stack.extend((child, False) for child in children)


def cross_links(get_node: Callable[[bytes], bytes | None], root: bytes) -> set[bytes]:
    """The references at other versions than ``root``'s that the nodes stored under
    ``root`` at its version name: where a sync's tree names subtrees held from earlier
    targets. Walks only the nodes at ``root``'s version."""
    links: set[bytes] = set()
    if root == ZERO_REF:
        return links
    version = root[:VERSION_SIZE]
    stack = [root]
    while stack:
        encoding = get_node(stack.pop())
        children = None if encoding is None else node_children(encoding)
        for child in children or ():
            if child == ZERO_REF:
                continue
            if child[:VERSION_SIZE] == version:
                stack.append(child)
            else:
                links.add(child)
    return links
