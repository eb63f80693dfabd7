"""The state tree against a from-the-spec reference, a dict model, and tampered proofs."""

from __future__ import annotations

import gc
import hashlib
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core.codec import pack_raw
from core.errors import DecodeError, InvalidProof, StorageError
from core.hashing import ZERO_HASH, Domain, hash_bytes
from storage.snapshot import find_subtree, root_subtree, serve_chunk, verify_chunk
from storage.state_tree import (
    GROUP_BYTES,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    REF_SIZE,
    VERSION_SIZE,
    ZERO_REF,
    InternalNode,
    LeafNode,
    MemoryNodeStore,
    ProofLeaf,
    StateProof,
    StateTree,
    TreeUpdate,
    internal_children,
    internal_hash,
    internal_node_hash,
    is_internal,
    key_group,
    key_path,
    leaf_hash,
    node_ref,
    state_root_of,
    value_hash,
    verify_proof,
)
from tests.storage.storage_chain_fixtures import too_deep_chain

# Small key alphabet so batches collide with earlier keys (updates, deletes): short
# keys (their own group), and records of a few owners and consecutive ids, whose
# groups put them deep in one subtree (``key_group``).
owned = st.builds(
    lambda prefix, owner, rest: bytes([prefix]) + bytes([owner]) * 20 + rest,
    st.integers(1, 3),
    st.integers(0, 2),
    st.binary(max_size=1),
)
numbered = st.builds(
    lambda prefix, n: bytes([prefix]) + n.to_bytes(8, "big"),
    st.integers(1, 2),
    st.integers(250, 262),
)
keys = st.binary(max_size=2) | owned | numbered
values = st.binary(max_size=6)
batches = st.dictionaries(keys, st.none() | values, max_size=24)
states = st.dictionaries(keys, values, max_size=40)


# --- reference: the tree shape written straight from the spec, no compression tricks --


def _bit(path: bytes, depth: int) -> int:
    return (path[depth // 8] >> (7 - depth % 8)) & 1


def ref_path(key: bytes) -> bytes:
    """The spec's rule: the key's hash, its first 16 bits from its group's hash."""
    whole = hash_bytes(Domain.STATE_KEY, key)
    if len(key) >= 21 and key[0] != 0x01:
        group = key[1:21]  # prefix || address || ...: the address (not an account)
    elif len(key) == 9:
        group = key[:8]  # prefix || u64 id: the id's upper 7 bytes
    else:
        return whole
    return hash_bytes(Domain.STATE_KEY, group)[:2] + whole[2:]


def ref_root(state: dict[bytes, bytes]) -> bytes:
    entries = [
        (
            ref_path(k),
            hash_bytes(Domain.STATE_VALUE, v),
        )
        for k, v in state.items()
    ]

    def subtree(es: list[tuple[bytes, bytes]], depth: int) -> bytes:
        if not es:
            return ZERO_HASH
        if len(es) == 1:
            return hash_bytes(Domain.STATE_LEAF, es[0][0] + es[0][1])
        left = [e for e in es if _bit(e[0], depth) == 0]
        right = [e for e in es if _bit(e[0], depth) == 1]
        return hash_bytes(Domain.STATE_NODE, subtree(left, depth + 1) + subtree(right, depth + 1))

    return subtree(entries, 0)


def build(
    state: dict[bytes, bytes], cache_size: int = 1024, version: int = 1
) -> tuple[StateTree, TreeUpdate]:
    """A tree holding ``state``, its nodes made at ``version`` and persisted: (tree,
    the update that made it; ``.ref`` to read it, ``.root`` its hash)."""
    store = MemoryNodeStore()
    tree = StateTree(store, cache_size=cache_size)
    update = tree.update(ZERO_REF, state, version=version)
    store.put_nodes(update.nodes)
    return tree, update


def reach(store: MemoryNodeStore, root: bytes) -> set[bytes]:
    """The references of every node of the tree at ``root``, read from the store."""
    found: set[bytes] = set()
    stack = [root]
    while stack:
        ref = stack.pop()
        if ref == ZERO_REF or ref in found:
            continue
        found.add(ref)
        data = store.nodes[ref]
        if is_internal(data):
            stack.extend(internal_children(data))
    return found


def check_stale(store: MemoryNodeStore, update: TreeUpdate) -> None:
    """``update.stale`` names each node of its base that its root no longer reaches,
    once, and nothing else (what pruning deletes by)."""
    assert update.base is not None
    assert len(set(update.stale)) == len(update.stale)
    assert set(update.stale) == reach(store, update.base) - reach(store, update.ref)


def apply_model(model: dict[bytes, bytes], batch: dict[bytes, bytes | None]) -> None:
    for k, v in batch.items():
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v


# --- encodings and hashing agree with core -------------------------------------------


def test_hash_helpers_match_core_hashing():
    left, right = bytes(range(32)), bytes(range(32, 64))
    assert key_path(b"k") == hash_bytes(Domain.STATE_KEY, b"k")
    assert value_hash(b"v") == hash_bytes(Domain.STATE_VALUE, b"v")
    assert leaf_hash(left, right) == hash_bytes(Domain.STATE_LEAF, left + right)
    assert internal_hash(left, right) == hash_bytes(Domain.STATE_NODE, left + right)


@given(key=st.binary(max_size=48))
def test_key_paths_follow_the_spec_group_rule(key):
    assert key_path(key) == ref_path(key)


def test_key_groups_are_owners_and_runs_of_ids():
    owner = bytes(range(20))
    account, party, balance = b"\x01" + owner, b"\x2b" + owner, b"\x02" + owner + b"USD"
    deal_count = b"\x29" + owner + (7).to_bytes(8, "big")
    assert {key_group(k) for k in (party, balance, deal_count)} == {owner}
    # The account, which every transaction writes, is its own group.
    assert key_group(account) == account
    order = [b"\x2a" + n.to_bytes(8, "big") for n in (0, 255, 256)]
    assert key_group(order[0]) == key_group(order[1]) == b"\x2a" + bytes(7)
    assert key_group(order[2]) == b"\x2a" + bytes(6) + b"\x01"
    for own in (b"", b"\x04", bytes(8), bytes(10), bytes(20), b"\x01" + bytes(30)):
        assert key_group(own) == own
    # One group shares the first 16 bits of its paths; the rest is each key's own.
    paths = [key_path(k) for k in (party, balance, deal_count)]
    assert len({p[:2] for p in paths}) == 1 and len({p[2:] for p in paths}) == 3
    assert key_path(account) == hash_bytes(Domain.STATE_KEY, account)
    assert key_path(order[0])[:2] == key_path(order[1])[:2] != key_path(order[2])[:2]


def test_records_of_one_owner_cost_one_path():
    # A tree of 4,000 owners' party records; one block writes three records for one
    # owner, the other three records for three owners. The first re-hashes one path
    # to the owner's subtree (plus a few nodes in it), the second three paths.
    rng = random.Random(3)
    owners = [rng.randbytes(20) for _ in range(4000)]
    state = {b"\x2b" + o: b"party" for o in owners}
    tree, built = build(state)
    root = built.ref

    def new_nodes(batch: dict[bytes, bytes]) -> int:
        return len(tree.update(root, batch).nodes)

    one = new_nodes({p + owners[0]: b"new" for p in (b"\x2b", b"\x2c", b"\x2d")})
    three = new_nodes({b"\x2b" + owners[i]: b"new" for i in (1, 2, 3)})
    assert one < three
    assert tree.get(tree.update(root, {b"\x2c" + owners[0]: b"p"}).ref, b"\x2c" + owners[0]) == b"p"


def test_grouped_roots_and_proofs_match_fixed_vectors():
    # Pins the group rule: owners with several records and runs of ids, beside keys
    # that are their own group.
    rng = random.Random(11)
    owners = [rng.randbytes(20) for _ in range(300)]
    state = {b"\x01" + o: b"a%d" % i for i, o in enumerate(owners)}
    state |= {b"\x2b" + o: b"p" for o in owners[:100]}
    state |= {b"\x29" + o + bytes(8): b"\x01" for o in owners[:50]}
    state |= {b"\x2a" + n.to_bytes(8, "big"): b"o%d" % n for n in range(1000)}
    state |= {bytes([9, n]): b"s" for n in range(40)}
    root = state_root_of(state)
    assert root == ref_root(state)
    assert root.hex() == "d8abd62217df419899e09516f469cf476622039e187393b5cc94a900448ae6fe"
    tree, built = build(state, cache_size=64)
    assert built.root == root
    present = hashlib.sha256(tree.prove(built.ref, b"\x2b" + owners[3]).encode()).hexdigest()
    absent = hashlib.sha256(tree.prove(built.ref, b"\x2b" + owners[200]).encode()).hexdigest()
    assert present == "f1dd098a4698b113c53c0dc38572b5196390710e4cfb587f5f18df59b6a231b7"
    assert absent == "8d140d833ecf24e136e8b47fff7184541e1b7d26ad618b462ed9d2cc9ff349e4"


@settings(max_examples=30, deadline=None)
@given(state=st.dictionaries(keys, values, min_size=2, max_size=12))
def test_stored_nodes_are_canonical_wire_encodings(state):
    update = StateTree(MemoryNodeStore()).update(ZERO_REF, state, version=7)
    kinds = defaultdict(int)
    for ref, data in update.nodes.items():
        assert len(ref) == REF_SIZE
        node_hash = ref[VERSION_SIZE:]
        if data[1] == 0:
            node = InternalNode.decode(data)
            assert node.encode() == data
            assert len(node.left) == len(node.right) == REF_SIZE
            assert internal_hash(node.left[VERSION_SIZE:], node.right[VERSION_SIZE:]) == node_hash
            # The byte-level readers agree with the codec.
            assert is_internal(data)
            assert internal_children(data) == (node.left, node.right)
            assert internal_node_hash(data) == node_hash
            kinds["internal"] += 1
        else:
            leaf = LeafNode.decode(data)
            assert leaf.encode() == data
            assert not is_internal(data)
            assert state[leaf.key] == leaf.value
            assert leaf_hash(key_path(leaf.key), value_hash(leaf.value)) == node_hash
            kinds["leaf"] += 1
    assert kinds["leaf"] == len(state)
    assert kinds["internal"] >= 1


def test_empty_and_single_key_roots():
    assert state_root_of({}) == ZERO_HASH
    # One key: the root is its leaf (compressed all the way up).
    assert state_root_of({b"a": b"1"}) == leaf_hash(key_path(b"a"), value_hash(b"1"))
    tree, built = build({b"a": b"1"})
    emptied = tree.update(built.ref, {b"a": None}, version=2)
    assert (emptied.root, emptied.ref) == (ZERO_HASH, ZERO_REF)


# --- root depends on the set only ----------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(state=states, noise=st.dictionaries(keys, values, max_size=10), seed=st.integers(0, 2**32))
def test_root_independent_of_order_and_history(state, noise, seed):
    rng = random.Random(seed)
    expected = ref_root(state)
    assert state_root_of(state) == expected
    # Same set via: noise first, then the set in random batches (overwriting), then
    # deleting the noise keys that are not in the set.
    store = MemoryNodeStore()
    tree = StateTree(store, cache_size=8)
    root, root_hash = ZERO_REF, ZERO_HASH
    items = list(state.items())
    rng.shuffle(items)
    steps: list[dict[bytes, bytes | None]] = [dict(noise)]
    while items:
        cut = rng.randint(1, len(items))
        steps.append(dict(items[:cut]))
        items = items[cut:]
    steps.append({k: None for k in noise if k not in state})
    for version, step in enumerate(steps, 1):
        update = tree.update(root, step, version=version)
        store.put_nodes(update.nodes)
        root, root_hash = update.ref, update.root
    assert root_hash == expected


@settings(max_examples=40, deadline=None)
@given(state=states, seed=st.integers(0, 2**32))
def test_one_key_at_a_time_equals_one_batch(state, seed):
    rng = random.Random(seed)
    store = MemoryNodeStore()
    tree = StateTree(store, cache_size=1024)
    update = TreeUpdate(ZERO_HASH, ZERO_REF, {})

    def step(change: dict[bytes, bytes | None]) -> TreeUpdate:
        # Each update persisted before the next builds on it, as the chain store does:
        # the cache holds only a bounded part of what earlier updates made.
        made = tree.update(update.ref, change)
        store.put_nodes(made.nodes)
        return made

    order = list(state.items())
    rng.shuffle(order)
    for k, v in order:
        update = step({k: v})
    assert update.root == build(state)[1].root
    # And deleting them one by one in another order collapses back to empty.
    rng.shuffle(order)
    for k, _ in order:
        update = step({k: None})
    assert (update.root, update.ref) == (ZERO_HASH, ZERO_REF)


# --- model-based: every version stays readable ---------------------------------------


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryNodeStore()
        # A tiny cache, so reads go back to the store and prove every node was persisted.
        self.tree = StateTree(self.store, cache_size=16)
        # The head's reference and hash; each update is made at the next version, as
        # the chain store makes each block's nodes at its height.
        self.root, self.root_hash = ZERO_REF, ZERO_HASH
        self.model: dict[bytes, bytes] = {}
        self.versions: list[tuple[bytes, bytes, dict[bytes, bytes]]] = [(ZERO_REF, ZERO_HASH, {})]

    def _commit(self, result: TreeUpdate, batch) -> None:
        assert result.base == self.root
        self.store.put_nodes(result.nodes)
        check_stale(self.store, result)
        apply_model(self.model, batch)
        self.root, self.root_hash = result.ref, result.root
        self.versions.append((self.root, self.root_hash, dict(self.model)))

    @rule(batch=batches)
    def update(self, batch):
        self._commit(self.tree.update(self.root, batch, version=len(self.versions)), batch)

    @rule(batch=batches, data=st.data())
    def update_knowing_old_values(self, batch, data):
        # What the caller says a key holds (``known``) may be right, wrong or
        # missing, also for keys the batch does not change: the result is the same.
        said = {k: data.draw(st.sampled_from([v, v + b"x", None])) for k, v in self.model.items()}
        version = len(self.versions)
        self._commit(self.tree.update(self.root, batch, said.get, version=version), batch)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_existing(self, data):
        doomed = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, unique=True))
        self.update({k: None for k in doomed})

    @rule(data=st.data(), key=keys)
    def read_any_version(self, data, key):
        root, root_hash, model = data.draw(st.sampled_from(self.versions))
        reader = StateTree(self.store, cache_size=2)
        assert reader.get(root, key) == model.get(key)
        value, proof = reader.get_with_proof(root, key)
        assert value == model.get(key)
        verify_proof(root_hash, key, value, proof)
        for other in list(model)[:3]:
            assert self.tree.get(root, other) == model[other]

    @invariant()
    def root_matches_spec(self):
        assert self.root_hash == ref_root(self.model)


TestTreeMachine = TreeMachine.TestCase
TestTreeMachine.settings = settings(max_examples=150, stateful_step_count=20, deadline=None)


def test_large_random_batches_match_spec():
    # Bigger trees than Hypothesis draws: depth ~12, batches mixing every case.
    rng = random.Random(7)
    store = MemoryNodeStore()
    tree = StateTree(store, cache_size=512)
    update, model = TreeUpdate(ZERO_HASH, ZERO_REF, {}), {}
    universe = [rng.randbytes(8) for _ in range(3000)]
    for version in range(1, 7):
        batch = {}
        for k in rng.sample(universe, 600):
            batch[k] = None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 20))
        update = tree.update(update.ref, batch, version=version)
        store.put_nodes(update.nodes)
        check_stale(store, update)  # slot levels included (the cache's upper 9)
        apply_model(model, batch)
        assert update.root == ref_root(model)
    for k in rng.sample(universe, 200):
        value, proof = tree.get_with_proof(update.ref, k)
        assert value == model.get(k)
        verify_proof(update.root, k, value, proof)


# --- proofs --------------------------------------------------------------------------


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _rejected(root, key, value, proof) -> bool:
    try:
        verify_proof(root, key, value, proof)
    except InvalidProof:
        return True
    return False


@settings(max_examples=100, deadline=None)
@given(
    state=st.dictionaries(keys, values, min_size=1, max_size=40), probes=st.lists(keys, max_size=3)
)
def test_proofs_verify_and_any_tampering_fails(state, probes):
    tree, built = build(state)
    root = built.root
    for key in list(state)[:3] + probes:
        value = state.get(key)
        proof = tree.prove(built.ref, key)
        assert StateProof.decode(proof.encode()) == proof
        verify_proof(root, key, value, proof)

        # Another value, or the opposite claim (present <-> absent).
        wrong_values = [b"x"] if value is None else [None, value + b"\x00", b"x" + value]
        for wrong in wrong_values:
            if wrong != value:
                assert _rejected(root, key, wrong, proof)

        # Another key: an inclusion proof never holds for it; an absence proof may,
        # but only when that key really is absent (soundness).
        other_keys = [_flip(key, i) for i in range(len(key))] + [key + b"\x00"]
        for other in other_keys:
            ok = not _rejected(root, other, value, proof)
            if value is not None:
                assert not ok
            elif ok:
                assert other not in state

        # Every byte of every sibling.
        for d, sibling in enumerate(proof.siblings):
            for i in range(32):
                siblings = list(proof.siblings)
                siblings[d] = _flip(sibling, i)
                assert _rejected(root, key, value, StateProof(tuple(siblings), proof.leaf))

        # The terminal: each byte, or swapped for empty / for a leaf.
        if proof.leaf is not None:
            for i in range(32):
                for leaf in (
                    ProofLeaf(_flip(proof.leaf.key_path, i), proof.leaf.value_hash),
                    ProofLeaf(proof.leaf.key_path, _flip(proof.leaf.value_hash, i)),
                ):
                    assert _rejected(root, key, value, StateProof(proof.siblings, leaf))
            assert _rejected(root, key, value, StateProof(proof.siblings, None))
        else:
            some = next(iter(state))
            fake = ProofLeaf(key_path(some), value_hash(state[some]))
            assert _rejected(root, key, value, StateProof(proof.siblings, fake))

        # Every byte of the root.
        for i in range(32):
            assert _rejected(_flip(root, i), key, value, proof)


def _keys_sharing_prefix(bits: int, count: int) -> list[bytes]:
    """Keys whose paths share their first ``bits`` bits (found by brute force)."""
    buckets: dict[int, list[bytes]] = defaultdict(list)
    i = 0
    while True:
        k = i.to_bytes(4, "big")
        bucket = buckets[int.from_bytes(key_path(k), "big") >> (256 - bits)]
        bucket.append(k)
        if len(bucket) == count:
            return bucket
        i += 1


GROUP_BITS = 8 * GROUP_BYTES


def _shared_bits(a: bytes, b: bytes) -> int:
    return 256 - (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_length()


def _records_sharing(owner: bytes, bits: int) -> bytes:
    """A balance-like record of ``owner`` whose path shares exactly ``bits`` bits with
    the owner's party record (found by brute force: 2^(bits - group bits) tries)."""
    anchor = key_path(b"\x2b" + owner)
    i = 0
    while _shared_bits(key_path(b"\x02" + owner + i.to_bytes(4, "big")), anchor) != bits:
        i += 1
    return b"\x02" + owner + i.to_bytes(4, "big")


# Owners whose groups share their prefix, an owner whose prefix a key of its own
# group (a short key) shares, records that leave their group's subtree at several
# depths, and runs of ids on both sides of a group edge: one-child chains of every
# length, collapsing and growing through each other.
# (B and C were found by counting up from 2^20 and 2^40 until the group prefixes met.)
_OWNER_A = bytes(19) + b"\x10"
_OWNER_B = (0x112319).to_bytes(20, "big")
_SHORT = b"short"
_OWNER_C = (0x10000019AD0).to_bytes(20, "big")
_DEEP_KEYS = [
    b"\x01" + _OWNER_A,
    b"\x2b" + _OWNER_A,
    *(_records_sharing(_OWNER_A, GROUP_BITS + extra) for extra in (0, 2, 6, 9)),
    b"\x2b" + _OWNER_B,
    *(_records_sharing(_OWNER_B, GROUP_BITS + extra) for extra in (1, 7)),
    b"\x2b" + _OWNER_C,
    _SHORT,
    _records_sharing(_OWNER_C, GROUP_BITS + 4),
    *(b"\x2a" + n.to_bytes(8, "big") for n in (0, 1, 255, 256, 257)),
    b"x",
    b"y",
]


def test_deep_key_alphabet_has_colliding_groups():
    assert _OWNER_A != _OWNER_B
    assert _shared_bits(key_path(b"\x2b" + _OWNER_A), key_path(b"\x2b" + _OWNER_B)) >= GROUP_BITS
    assert _shared_bits(key_path(b"\x2b" + _OWNER_C), key_path(_SHORT)) >= GROUP_BITS
    assert (
        max(
            _shared_bits(key_path(a), key_path(b)) for a in _DEEP_KEYS for b in _DEEP_KEYS if a != b
        )
        >= GROUP_BITS + 9
    )


def _synced_copy(
    store: MemoryNodeStore, root: bytes, budget: int, version: int
) -> tuple[MemoryNodeStore, bytes]:
    """The tree under ``root`` fetched as state sync does, in chunks of ``budget`` bytes,
    kept at ``version``: the copy and its root's reference there."""
    nodes: dict[bytes, bytes] = {}
    wanted = [root_subtree(root[VERSION_SIZE:])] if root != ZERO_REF else []
    while wanted:
        subtree = wanted.pop()
        at = find_subtree(store.get_node, root, subtree)
        assert at is not None
        served = serve_chunk(store.get_node, at, max_bytes=budget)
        chunk = verify_chunk(subtree, served, version)
        nodes.update(chunk.nodes)
        wanted.extend(reversed(chunk.missing))
    return MemoryNodeStore(nodes), node_ref(version, root[VERSION_SIZE:])


class DeepChainMachine(TreeMachine):
    """``TreeMachine`` over ``_DEEP_KEYS``, each update committed: every key proven at
    every version, and the tree synced in chunks and warmed elsewhere updating to the
    spec's root."""

    @rule(batch=st.dictionaries(st.sampled_from(_DEEP_KEYS), st.none() | values, max_size=8))
    def update(self, batch):
        super().update(batch)
        self.tree.committed(self.root)

    @rule(data=st.data())
    def prove_every_key(self, data):
        root, root_hash, model = data.draw(st.sampled_from(self.versions))
        reader = StateTree(self.store, cache_size=2)
        for key in _DEEP_KEYS:
            value, proof = reader.get_with_proof(root, key)
            assert value == model.get(key)
            verify_proof(root_hash, key, value, proof)

    @rule(
        budget=st.sampled_from([1, 200, 4096]),
        batch=st.dictionaries(st.sampled_from(_DEEP_KEYS), st.none() | values, max_size=4),
    )
    def sync_warm_and_update(self, budget, batch):
        synced_at = len(self.versions)
        copy, root = _synced_copy(self.store, self.root, budget, synced_at)
        tree = StateTree(copy, cache_size=64)
        pos = 1
        while pos:
            pos = tree.warm(root, pos, budget=5)
        expected = dict(self.model)
        apply_model(expected, batch)
        assert tree.update(root, batch, version=synced_at + 1).root == ref_root(expected)


TestDeepChainMachine = DeepChainMachine.TestCase
TestDeepChainMachine.settings = settings(max_examples=150, stateful_step_count=20, deadline=None)


def test_deep_shared_prefix_compresses_and_collapses():
    a, b, c = _keys_sharing_prefix(14, 3)
    state = {a: b"1", b: b"2", c: b"3", b"lonely": b"4"}
    tree, built = build(state)
    root = built.root
    assert root == ref_root(state)
    value, proof = tree.get_with_proof(built.ref, a)
    assert value == b"1"
    assert len(proof.siblings) > 14
    assert ZERO_HASH in proof.siblings  # the shared prefix is a chain of one-sided nodes
    verify_proof(root, a, b"1", proof)
    # Deleting down to one key of the cluster collapses the whole chain into its leaf.
    for doomed, rest in (
        ({a: None}, {b: b"2", c: b"3", b"lonely": b"4"}),
        ({a: None, b: None}, {c: b"3", b"lonely": b"4"}),
        ({a: None, b: None, b"lonely": None}, {c: b"3"}),
    ):
        update = tree.update(built.ref, doomed)
        assert update.root == ref_root(rest) == state_root_of(rest)
    # A key absent but on the chain proves absent through the empty side branches.
    for probe in range(200):
        k = b"probe" + bytes([probe])
        value, proof = tree.get_with_proof(built.ref, k)
        assert value is None
        verify_proof(root, k, None, proof)


def test_absence_proof_leaf_must_share_the_key_prefix():
    state = {bytes([i]): b"v" for i in range(30)}
    tree, built = build(state)
    root = built.root
    for probe in range(256):
        key = b"absent" + bytes([probe])
        proof = tree.prove(built.ref, key)
        if proof.leaf is not None and proof.siblings:
            break
    else:
        pytest.fail("no absence proof ending at a leaf")
    verify_proof(root, key, None, proof)
    depth = len(proof.siblings)
    own = int.from_bytes(key_path(key), "big")
    # A leaf path that differs from the key's within the first ``depth`` bits.
    off_path = (own ^ (1 << (256 - depth))).to_bytes(32, "big")
    forged = StateProof(proof.siblings, ProofLeaf(off_path, proof.leaf.value_hash))
    with pytest.raises(InvalidProof, match="prefix"):
        verify_proof(root, key, None, forged)
    own_leaf = StateProof(proof.siblings, ProofLeaf(key_path(key), proof.leaf.value_hash))
    with pytest.raises(InvalidProof, match="present"):
        verify_proof(root, key, None, own_leaf)


def test_non_canonical_and_oversized_proofs_are_refused():
    leaf = ProofLeaf(key_path(b"a"), value_hash(b"1"))
    lone = leaf_hash(leaf.key_path, leaf.value_hash)
    # A leaf next to an empty sibling is never produced: it would be compressed.
    root = (
        internal_hash(ZERO_HASH, lone) if _bit(leaf.key_path, 0) else internal_hash(lone, ZERO_HASH)
    )
    with pytest.raises(InvalidProof, match="non-canonical"):
        verify_proof(root, b"a", b"1", StateProof((ZERO_HASH,), leaf))
    with pytest.raises(InvalidProof, match="at most 256"):
        verify_proof(lone, b"a", b"1", StateProof((lone,) * 257, leaf))
    with pytest.raises(DecodeError):
        StateProof.decode(pack_raw([[lone] * 257, None]))
    with pytest.raises(InvalidProof, match="32 bytes"):
        verify_proof(lone[:31], b"a", b"1", StateProof((), leaf))
    with pytest.raises(InvalidProof, match="32 bytes"):
        verify_proof(lone, b"a", b"1", StateProof((lone[:5],), leaf))
    # A proof built from a client's JSON, not decoded: its leaf's hashes cut short.
    for short in (ProofLeaf(leaf.key_path[:31], leaf.value_hash), ProofLeaf(leaf.key_path, b"")):
        for value in (b"1", None):
            with pytest.raises(InvalidProof, match="terminal leaf hashes must be 32 bytes"):
                verify_proof(lone, b"a", value, StateProof((), short))
    verify_proof(lone, b"a", b"1", StateProof((), leaf))
    verify_proof(ZERO_HASH, b"a", None, StateProof((), None))


# --- faults ----------------------------------------------------------------------------


def test_missing_or_corrupt_nodes_are_storage_errors():
    state = {bytes([i]): bytes([i]) for i in range(20)}
    store = MemoryNodeStore()
    update = StateTree(store).update(ZERO_REF, state, version=1)
    store.put_nodes(update.nodes)
    with pytest.raises(StorageError, match="missing"):
        StateTree(store).get(b"\x01" * REF_SIZE, b"k")
    # The root's hash under another version is another reference: not stored.
    with pytest.raises(StorageError, match="missing"):
        StateTree(store).get(node_ref(2, update.root), b"k")
    root_node = store.nodes[update.ref]
    store.nodes[update.ref] = root_node[:-1] + bytes([root_node[-1] ^ 1])
    with pytest.raises(StorageError, match="does not match its hash"):
        StateTree(store).get(update.ref, b"k")
    store.nodes[update.ref] = b"\x93\x05garbage"
    with pytest.raises(StorageError, match="corrupt"):
        StateTree(store).get(update.ref, b"k")
    store.nodes[update.ref] = root_node
    # A leaf that decodes, of another value than the one its reference hashes.
    key = bytes([7])
    leaf_ref = node_ref(1, leaf_hash(key_path(key), value_hash(state[key])))
    assert LeafNode.decode(store.nodes[leaf_ref]).value == state[key]
    store.nodes[leaf_ref] = LeafNode(1, key, b"forged").encode()
    with pytest.raises(StorageError, match=f"node {leaf_ref.hex()} does not match its hash"):
        StateTree(store).get(update.ref, key)
    # A run of one-child nodes deeper than any path: hashes that chain, and no tree.
    deep, nodes = too_deep_chain(b"deep", 257)
    for read in (StateTree(MemoryNodeStore(nodes)).get, StateTree(MemoryNodeStore(nodes)).prove):
        with pytest.raises(StorageError, match="deeper than 256"):
            read(deep, b"deep")


def test_oversized_keys_and_values_are_refused():
    tree, built = build({})
    root = built.ref
    with pytest.raises(StorageError, match="state key"):
        tree.update(root, {b"k" * (MAX_KEY_SIZE + 1): b"v"})
    with pytest.raises(StorageError, match="state value"):
        tree.update(root, {b"k": b"v" * (MAX_VALUE_SIZE + 1)})


def test_new_nodes_are_cached_before_they_are_written():
    store = MemoryNodeStore()
    tree = StateTree(store)
    first = tree.update(ZERO_REF, {bytes([i]): b"a" for i in range(50)}, version=1)
    # Nothing persisted: the next block must still build on ``first.ref``.
    second = tree.update(first.ref, {bytes([i]): b"b" for i in range(0, 50, 3)}, version=2)
    assert second.base == first.ref
    expected = {bytes([i]): (b"b" if i % 3 == 0 else b"a") for i in range(50)}
    assert second.root == state_root_of(expected)
    assert tree.get(second.ref, bytes([3])) == b"b"
    unchanged = tree.update(second.ref, {}, version=3)
    assert (unchanged.root, unchanged.ref) == (second.root, second.ref)


def test_new_nodes_are_stored_at_the_update_version_and_untouched_ones_keep_theirs():
    # A tree made at version 1, then one key changed at version 258: the second
    # update's nodes are all stored under 258 (big-endian, first 8 bytes), and its new
    # internal nodes name the subtrees it did not touch by their version-1 references.
    v1, v258 = (1).to_bytes(VERSION_SIZE, "big"), bytes(6) + b"\x01\x02"
    state = {bytes([i]): b"a" for i in range(64)}
    tree, first = build(state, version=1)
    assert {ref[:VERSION_SIZE] for ref in first.nodes} == {v1}
    second = tree.update(first.ref, {bytes([5]): b"b"}, version=258)
    assert second.root == state_root_of(state | {bytes([5]): b"b"})
    assert second.ref == node_ref(258, second.root) == v258 + second.root
    assert second.nodes and {ref[:VERSION_SIZE] for ref in second.nodes} == {v258}
    kept = [
        child
        for data in second.nodes.values()
        if is_internal(data)
        for child in internal_children(data)
        if child not in second.nodes and child != ZERO_REF
    ]
    assert kept and all(child[:VERSION_SIZE] == v1 and child in first.nodes for child in kept)
    # The root's untouched half is the first tree's own node, under its old reference.
    old_halves = set(internal_children(first.nodes[first.ref]))
    assert len(old_halves & set(internal_children(second.nodes[second.ref]))) == 1
    assert tree.get(first.ref, bytes([5])) == b"a" and tree.get(second.ref, bytes([5])) == b"b"


def test_update_refuses_a_root_hash_where_a_reference_is_due():
    tree, built = build({b"a": b"1"})
    for wrong in (built.root, ZERO_HASH, built.ref + b"\x00"):
        for changes in ({b"a": b"2"}, {}):
            with pytest.raises(StorageError, match=f"root reference is {REF_SIZE} bytes"):
                tree.update(wrong, changes)
    for version in (-1, 2**64):
        with pytest.raises(StorageError, match=f"tree version {version} does not fit 8 bytes"):
            tree.update(built.ref, {b"a": b"2"}, version=version)


def test_an_update_leaves_nothing_for_the_cyclic_collector():
    # A node runs the cyclic GC rarely (node.run.tune_gc): an update whose working
    # set sat in a reference cycle held a big block's node dicts for several blocks.
    store = MemoryNodeStore()
    tree = StateTree(store)
    first = tree.update(ZERO_REF, {bytes([i, j]): b"a" for i in range(40) for j in range(5)})
    store.put_nodes(first.nodes)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        changes: dict[bytes, bytes | None] = {bytes([i, 0]): b"b" for i in range(0, 40, 3)}
        changes.update({bytes([i, 1]): None for i in range(0, 40, 4)})
        changes.update({bytes([i, 9]): b"new" for i in range(0, 40, 5)})
        second = tree.update(first.ref, changes)
        tree.update(second.ref, {bytes([7, 7]): b"one"})
        assert gc.collect() == 0
    finally:
        if was_enabled:
            gc.enable()


# --- the node cache: upper levels pinned, bounded, never changes an answer --------------


def test_roots_and_proofs_match_fixed_vectors():
    # Computed before the node cache was split (pinned upper levels): hashes, shape
    # and proof encodings must not move with any cache change.
    state = {hashlib.sha256(b"k%d" % i).digest()[:20]: b"v%d" % (i * 7) for i in range(3000)}
    root = state_root_of(state)
    assert root.hex() == "a933ed000fa96154da23248824832c044b96dd2370c8a51e70b50fe55b0418fa"
    tree, built = build(state, cache_size=64)
    assert built.root == root
    present = hashlib.sha256(tree.prove(built.ref, list(state)[17]).encode()).hexdigest()
    absent = hashlib.sha256(tree.prove(built.ref, b"absent").encode()).hexdigest()
    assert present == "09a0fc7259ee0e2d87457ffbb3ddcaf6d40bc44853ce3426e233f546256fd75f"
    assert absent == "d16f8a71cf2171224e94ec7a5a5befecc74fcc21639100fb4e705c3c06f0a11d"


class _CountingStore(MemoryNodeStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[bytes, int] = defaultdict(int)

    def get_node(self, ref: bytes) -> bytes | None:
        self.reads[ref] += 1
        return super().get_node(ref)


def _depths(store: MemoryNodeStore, root: bytes) -> dict[bytes, int]:
    """Depth of every internal node of the tree at the reference ``root``, by reference
    (read straight from the store)."""
    depths: dict[bytes, int] = {}
    stack = [(root, 0)]
    while stack:
        ref, depth = stack.pop()
        data = store.nodes.get(ref)
        if data is None or data[1] != 0:
            continue  # empty or a leaf
        node = InternalNode.decode(data)
        depths[ref] = depth
        stack.extend(((node.left, depth + 1), (node.right, depth + 1)))
    return depths


def _stored(seed: int, keys: int) -> tuple[_CountingStore, dict[bytes, bytes], bytes]:
    """A counting store holding a tree of ``keys`` random keys made at version 1:
    (store, model, root reference)."""
    rng = random.Random(seed)
    store = _CountingStore()
    model = {rng.randbytes(8): rng.randbytes(8) for _ in range(keys)}
    update = StateTree(store).update(ZERO_REF, model, version=1)
    store.put_nodes(update.nodes)
    return store, model, update.ref


def test_known_old_values_spare_the_reads_of_the_old_leaves():
    # A block's changed keys mostly exist already, and the caller has their values
    # (execution read them): the update does not read their old leaves from the
    # store, only the internal nodes above them, and makes the same tree.
    store, model, root = _stored(9, 4000)
    rng = random.Random(9)
    batch: dict[bytes, bytes | None] = {k: rng.randbytes(8) for k in rng.sample(list(model), 50)}
    old_leaves = {node_ref(1, leaf_hash(key_path(k), value_hash(model[k]))) for k in batch}
    assert old_leaves <= set(store.nodes)

    def reads_of(known) -> tuple[int, int, TreeUpdate]:
        before = dict(store.reads)
        update = StateTree(store, cache_size=512).update(root, batch, known)
        read = {h: n - before.get(h, 0) for h, n in store.reads.items() if n > before.get(h, 0)}
        return sum(read.values()), sum(read.get(h, 0) for h in old_leaves), update

    plain_reads, plain_leaf_reads, plain = reads_of(None)
    knowing_reads, knowing_leaf_reads, knowing = reads_of(model.get)
    assert plain_leaf_reads == len(batch) and knowing_leaf_reads == 0
    assert knowing_reads == plain_reads - len(batch)
    assert (knowing.root, knowing.ref, knowing.nodes) == (plain.root, plain.ref, plain.nodes)
    # Values that are not the keys' (stale, or another key's) spare nothing.
    wrong_reads, wrong_leaf_reads, wrong = reads_of(lambda k: model[k][::-1])
    assert (wrong_reads, wrong_leaf_reads) == (plain_reads, len(batch))
    assert (wrong.root, wrong.ref) == (plain.root, plain.ref)
    apply_model(model, batch)
    assert plain.root == ref_root(model)


def test_warming_reads_each_upper_node_once_and_then_nothing_reads_them():
    # A restarted node (empty caches, 9 slot levels) warms them in slices while a
    # block commits between two slices. Each upper node of the head is read at most
    # once, a second pass and a walk to every key read none of them again, and the
    # tree's answers are unchanged.
    store, model, root = _stored(5, 4000)
    rng = random.Random(5)
    tree = StateTree(store, cache_size=512)
    assert tree.warm(root, 1, budget=100) == 101
    assert tree.store_reads == 100  # 4,000 keys fill the first levels
    batch: dict[bytes, bytes | None] = {k: rng.randbytes(8) for k in rng.sample(list(model), 50)}
    update = tree.update(root, batch, version=2)
    store.put_nodes(update.nodes)
    tree.committed(update.ref)
    apply_model(model, batch)
    root = update.ref
    pos = 101
    while pos:
        pos = tree.warm(root, pos, budget=100)
    upper = [h for h, d in _depths(store, root).items() if d < 9]
    assert len(upper) > 400 and max(store.reads[h] for h in upper) == 1
    reads = dict(store.reads)
    assert tree.warm(root, 1, budget=1 << 9) == 0
    assert all(tree.get(root, k) == v for k, v in model.items())
    assert [h for h in upper if store.reads[h] != reads[h]] == []
    assert update.root == ref_root(model)
    # Nothing to do on an empty tree or past the slot levels.
    assert tree.warm(ZERO_REF) == 0
    assert tree.warm(root, 1 << 9) == 0
    # A small tree's warm-up ends below its last internal level, not at the last slot.
    small_store, small, small_root = _stored(16, 10)
    small_tree = StateTree(small_store, cache_size=512)
    past = 1 << (max(_depths(small_store, small_root).values()) + 2)
    assert past < 1 << 9
    assert small_tree.warm(small_root, 1, budget=past) == 0
    assert all(small_tree.get(small_root, k) == v for k, v in small.items())


def test_warming_fills_the_slots_of_upper_nodes_a_reader_cached_first():
    # A proof or read served before the warm-up reaches them leaves the upper nodes on
    # its path in the generational part (readers do not fill slots): warming still
    # puts them in their slots and goes on below them.
    store, model, root = _stored(6, 4000)
    tree = StateTree(store, cache_size=512)
    some = next(iter(model))
    assert tree.get(root, some) == model[some]
    pos = 1
    while pos:
        pos = tree.warm(root, pos, budget=100)
    upper = [h for h, d in _depths(store, root).items() if d < 9]
    reads = dict(store.reads)
    assert all(tree.get(root, k) == v for k, v in model.items())
    assert [h for h in upper if store.reads[h] != reads.get(h, 0)] == []


def test_warming_skips_a_node_it_cannot_read_and_the_read_that_needs_it_reports_it():
    store, model, root = _stored(7, 2000)
    lost = next(h for h, d in _depths(store, root).items() if d == 3)
    del store.nodes[lost]
    tree = StateTree(store, cache_size=512)
    pos = 1
    while pos:
        pos = tree.warm(root, pos, budget=64)
    # Everything else was warmed: a second pass reads nothing but the lost node's place.
    reads = tree.store_reads
    assert tree.warm(root, 1, budget=1 << 9) == 0
    assert tree.store_reads == reads + 1
    answers = []
    for key, value in model.items():
        try:
            answers.append(tree.get(root, key) == value)
        except StorageError:
            answers.append(None)
    # About an eighth of the keys sit under the lost node; the rest read as before.
    assert None in answers and False not in answers
    assert answers.count(True) > len(model) // 2


def test_upper_levels_stay_cached_while_big_blocks_rotate_the_rest():
    # cache_size 512 holds the 9 upper levels by position (2^9 <= 512). On 4,000 keys
    # a block of 500 changes makes ~3,000 new nodes, several times the cache, and the
    # small blocks between touch a few paths each: the deeper nodes come and go, but
    # an upper node this tree made once is never read from the store.
    rng = random.Random(3)
    store = _CountingStore()
    model = {rng.randbytes(8): rng.randbytes(8) for _ in range(4000)}
    update = StateTree(store).update(ZERO_REF, model, version=1)
    store.put_nodes(update.nodes)
    tree = StateTree(store, cache_size=512)  # a restarted node: empty cache
    root = update.ref
    depth_of = _depths(store, root)
    made: set[bytes] = set()
    for i in range(24):
        size = 500 if i % 6 == 0 else 30
        batch: dict[bytes, bytes | None] = {
            k: rng.randbytes(8) for k in rng.sample(list(model), size)
        }
        batch.update({rng.randbytes(8): rng.randbytes(8) for _ in range(size // 5)})
        update = tree.update(root, batch, version=i + 2)
        store.put_nodes(update.nodes)
        tree.committed(update.ref)
        made.update(update.nodes)
        apply_model(model, batch)
        root = update.ref
        depth_of.update(_depths(store, root))
    assert update.root == ref_root(model)
    upper_made = [h for h in made if depth_of.get(h, 99) < 9]
    assert upper_made
    assert not [h for h in upper_made if store.reads[h]]
    # Below the pinned levels, the blocks' own nodes were evicted and read back.
    assert [h for h in made if depth_of.get(h, 0) >= 11 and store.reads[h]]

    # A failed round: a big block prepared and never committed, then a rival block of
    # the same height. The rival finds the upper levels of the head whole.
    batch = {k: b"first" for k in rng.sample(list(model), 500)}
    tree.update(root, batch, version=26)
    reads_before = dict(store.reads)
    rival = tree.update(root, {k: b"rival" for k in batch}, version=26)
    upper_now = {h for h, d in _depths(store, root).items() if d < 9}
    assert not [h for h in upper_now if store.reads[h] != reads_before.get(h, 0)]
    apply_model(model, {k: b"rival" for k in batch})
    assert rival.root == ref_root(model)


@settings(max_examples=60, deadline=None)
@given(
    cache_size=st.sampled_from([16, 24, 64, 160]),
    state=st.dictionaries(st.binary(min_size=1, max_size=3), values, max_size=80),
    plan=st.lists(
        st.tuples(
            st.dictionaries(st.binary(min_size=1, max_size=3), st.none() | values, max_size=30),
            st.sampled_from(["commit", "discard", "rival"]),
        ),
        max_size=8,
    ),
    seed=st.integers(0, 2**16),
)
def test_rival_and_discarded_updates_with_small_caches(cache_size, state, plan, seed):
    # As on a validator whose rounds fail: updates of the same base that are never
    # committed (their nodes cached, never written), rival blocks of the same height,
    # reads of old versions, all through a cache a fraction of the tree's size.
    rng = random.Random(seed)
    store = MemoryNodeStore()
    tree = StateTree(store, cache_size=cache_size)
    first = tree.update(ZERO_REF, state, version=1)
    store.put_nodes(first.nodes)
    root, model = first.ref, dict(state)
    versions = [(root, first.root, dict(model))]
    for height, (batch, fate) in enumerate(plan, 2):
        update = tree.update(root, batch, version=height)
        assert update.base == root
        expected = dict(model)
        apply_model(expected, batch)
        assert update.root == ref_root(expected)
        if fate == "discard":
            continue
        if fate == "rival":
            # Another block of the same height wins: built on the same base.
            rival_batch = {k: None if v is None else v + b"r" for k, v in batch.items()}
            update = tree.update(root, rival_batch, version=height)
            batch = rival_batch
        store.put_nodes(update.nodes)
        tree.committed(update.ref)
        apply_model(model, batch)
        root = update.ref
        assert update.root == ref_root(model)
        versions.append((root, update.root, dict(model)))
        old_root, old_hash, old_model = rng.choice(versions)
        for key in list(old_model)[:5] + [b"\xff\xff\xff\xff"]:
            value, proof = tree.get_with_proof(old_root, key)
            assert value == old_model.get(key)
            verify_proof(old_hash, key, value, proof)
    for key in list(model)[:20]:
        assert tree.get(root, key) == model[key]


def test_a_cache_the_host_cannot_map_is_a_storage_error():
    # Slots are one anonymous map, sized by the cache (a node's storage.tree_cache);
    # a host that refuses it gets a StorageError naming the size, not a bare OSError.
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from core.errors import StorageError\n"
        "from storage import MemoryNodeStore, StateTree\n"
        "try:\n"
        "    StateTree(MemoryNodeStore(), cache_size=1 << 24)\n"
        "except StorageError as exc:\n"
        "    print('refused:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    # 2^24 slots of 126 bytes: a 40-byte reference and an 86-byte internal node.
    assert "refused: cannot map 2,113,929,216 bytes" in out.stdout
    assert "16,777,216 entries" in out.stdout


@settings(max_examples=150, deadline=None)
@given(
    state=st.dictionaries(keys, values, min_size=1, max_size=12),
    first=st.dictionaries(keys, st.none() | values, min_size=1, max_size=5),
    more=st.dictionaries(keys, st.none() | values, max_size=5),
    rewrite=st.booleans(),
)
def test_rival_updates_of_one_height_never_give_a_reference_two_encodings(
    state, first, more, rewrite
):
    # Two blocks of one height (a round's proposal, the next round's) are updates of
    # one base at one version; either may be committed. A reference names one node:
    # if the two made it with other children, the cache would keep whichever came last
    # and the committed tree would name children never written. Writes of the value a
    # key already has are the case that did (the leaf was made again).
    tree, built = build(state)
    if rewrite:
        first = {**first, **{k: v for k, v in list(state.items())[:3]}}
    u1 = tree.update(built.ref, first, version=2)
    u2 = tree.update(built.ref, {**first, **more}, version=2)
    assert [r for r in u1.nodes if r in u2.nodes and u1.nodes[r] != u2.nodes[r]] == []


def test_writing_the_values_keys_already_have_changes_nothing():
    state = {bytes([i]): b"v%d" % i for i in range(40)}
    tree, built = build(state)
    absent = [bytes([i, 1]) for i in range(40)]
    same = tree.update(built.ref, {**state, **dict.fromkeys(absent)}, version=2)
    assert (same.root, same.ref, same.nodes) == (built.root, built.ref, {})
