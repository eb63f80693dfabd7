"""Merkle paths of list trees: every leaf's path leads to ``merkle_root``, and nothing else
does (another leaf, another place, a path of another shape)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    HASH_SIZE,
    ZERO_HASH,
    InvalidProof,
    MerkleTree,
    merkle_path_length,
    merkle_root,
    verify_merkle_path,
)

LEAVES = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@given(LEAVES)
def test_every_leaf_s_path_leads_to_the_list_s_root(leaves):
    tree = MerkleTree.of(leaves)
    root, count = merkle_root(leaves), len(leaves)
    assert tree.root == root and tree.count == count
    for index, leaf in enumerate(leaves):
        path = tree.path(index)
        assert len(path) == merkle_path_length(index, count)
        verify_merkle_path(root, leaf, index, count, path)


@given(st.lists(st.binary(max_size=8), min_size=2, max_size=70, unique=True), st.data())
def test_a_path_proves_its_leaf_at_its_place_only(leaves, data):
    tree = MerkleTree.of(leaves)
    count = len(leaves)
    index = data.draw(st.integers(0, count - 1))
    path = tree.path(index)
    # Another leaf at that place.
    other = data.draw(st.binary(max_size=8).filter(lambda x: x != leaves[index]))
    with pytest.raises(InvalidProof):
        verify_merkle_path(tree.root, other, index, count, path)
    # The leaf at another place of the same list, the path given or that place's own.
    elsewhere = data.draw(st.integers(0, count - 1).filter(lambda i: i != index))
    for wrong_path in (path, tree.path(elsewhere)):
        with pytest.raises(InvalidProof):
            verify_merkle_path(tree.root, leaves[index], elsewhere, count, wrong_path)


@given(LEAVES, st.data())
def test_a_path_of_another_shape_is_refused(leaves, data):
    tree = MerkleTree.of(leaves)
    count = len(leaves)
    index = data.draw(st.integers(0, count - 1))
    path = tree.path(index)
    leaf = leaves[index]
    # A hash too many or one too few.
    with pytest.raises(InvalidProof, match="path of"):
        verify_merkle_path(tree.root, leaf, index, count, [*path, ZERO_HASH])
    if path:
        with pytest.raises(InvalidProof, match="path of"):
            verify_merkle_path(tree.root, leaf, index, count, path[:-1])
        # A hash cut short or grown: the hex of an odd count of digits' worth of bytes.
        at = data.draw(st.integers(0, len(path) - 1))
        for bad in (path[at][:-1], path[at] + b"\x00"):
            odd = [*path[:at], bad, *path[at + 1 :]]
            with pytest.raises(InvalidProof, match=f"{HASH_SIZE} bytes"):
                verify_merkle_path(tree.root, leaf, index, count, odd)


def test_a_place_outside_the_list_is_refused():
    leaves = [b"a", b"b", b"c"]
    tree = MerkleTree.of(leaves)
    for index, count in ((3, 3), (0, 0), (-1, 3), (0, 2**64)):
        with pytest.raises(InvalidProof, match="no leaf"):
            verify_merkle_path(tree.root, b"a", index, count, [])
    with pytest.raises(IndexError):
        tree.path(3)


def test_an_empty_list_has_the_zero_root_and_no_paths():
    tree = MerkleTree.of([])
    assert tree.root == ZERO_HASH == merkle_root([]) and tree.count == 0 and tree.size == 0
    with pytest.raises(IndexError):
        tree.path(0)


def test_the_count_sets_the_shape_it_is_checked_with():
    """A promoted odd node keeps its hash, so the last leaf of three takes the same
    turns as the second of two: the root alone cannot tell the two places apart, and
    the count is the verifier's to know (``vm.verify_tx_inclusion`` documents it)."""
    leaves = [b"a", b"b", b"c"]
    tree = MerkleTree.of(leaves)
    path = tree.path(2)
    verify_merkle_path(tree.root, b"c", 2, 3, path)
    verify_merkle_path(tree.root, b"c", 1, 2, path)
    # With the count right, no other index passes.
    for index in (0, 1):
        with pytest.raises(InvalidProof):
            verify_merkle_path(tree.root, b"c", index, 3, path)
