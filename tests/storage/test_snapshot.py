"""State snapshots in verified chunks, resumable state sync, and pruning, on real LevelDB."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from core.errors import DecodeError, StorageError
from core.hashing import ZERO_HASH
from storage import (
    TREE_DIR,
    ZERO_REF,
    BadChunk,
    ChainStore,
    DamagedTree,
    Database,
    MemoryNodeStore,
    Pruned,
    Subtree,
    SyncTarget,
    root_subtree,
    serve_chunk,
    state_root_of,
    sync_root,
    verify_chunk,
    verify_proof,
)
from storage.db import META, STATE, TREE_NODE, encode_height
from storage.snapshot import damaged_paths, walk_missing
from storage.state_tree import (
    TREE_LAYOUT,
    LeafNode,
    internal_children,
    internal_encoding,
    internal_node_hash,
    is_internal,
    node_ref,
)
from tests.storage.storage_chain_fixtures import (
    GENESIS_HASH,
    apply_changes,
    changes_for,
    genesis_state,
    make_block,
    raw_write,
    too_deep_chain,
)


def build_chain(store: ChainStore, blocks: int) -> dict[int, dict[bytes, bytes]]:
    """Commit ``blocks`` blocks; the state after each height."""
    model = genesis_state()
    store.initialize(GENESIS_HASH, model)
    states = {0: dict(model)}
    prev = GENESIS_HASH
    for height in range(1, blocks + 1):
        changes = changes_for(height, count=120)
        update = store.prepare_state(changes)
        block, commit, receipts = make_block(height, prev, update.root, 3)
        store.commit_block(block, commit, receipts, changes, update)
        apply_changes(model, changes)
        states[height] = dict(model)
        prev = block.hash
    return states


def target_of(store: ChainStore, height: int) -> SyncTarget:
    block = store.get_block(height)
    commit = store.get_commit(height)
    assert block is not None and commit is not None
    return SyncTarget(height, block.header.state_root, block.encode(), commit.encode())


def sync_from(
    source: ChainStore | list[ChainStore],
    dest: ChainStore,
    target: SyncTarget,
    max_bytes: int,
    limit: int | None = None,
) -> int:
    """Drive a whole sync (or its first ``limit`` chunks) by chunks of ``max_bytes``,
    asking the sources in turn; the number of chunks it took."""
    sources = source if isinstance(source, list) else [source]
    dest.begin_sync(target)
    held = dest.held_lookup()
    wanted = dest.missing_nodes(sync_root(target), 1 << 20)
    chunks = 0
    while wanted and (limit is None or chunks < limit):
        subtree = wanted.pop()
        served = sources[chunks % len(sources)].snapshot_chunk(target.height, subtree, max_bytes)
        chunk = verify_chunk(subtree, served, target.height, held)
        dest.store_chunk(chunk.nodes, chunk.leaves)
        wanted.extend(reversed(chunk.missing))
        chunks += 1
    return chunks


def test_state_syncs_by_small_chunks_and_reads_like_the_source(tmp_path):
    with ChainStore(tmp_path / "src") as source, ChainStore(tmp_path / "dst") as dest:
        states = build_chain(source, 12)
        target = target_of(source, 9)
        chunks = sync_from(source, dest, target, max_bytes=4096)
        assert chunks > 10  # really cut into pieces
        assert not dest.initialized  # nothing is state before the last batch
        assert dest.finish_sync(GENESIS_HASH) == 9
        assert dest.height == 9 and dest.head_root == state_root_of(states[9])
        assert dict(dest.iter_state()) == states[9]
        key = next(iter(states[9]))
        value, proof, root = dest.prove(key)
        verify_proof(root, key, value, proof)
        # History below the synced height was never here: a clear refusal, not a 404.
        assert dest.block_base == dest.state_base == 9
        with pytest.raises(Pruned):
            dest.require_block(8)
        with pytest.raises(Pruned):
            dest.state_root(8)


def test_every_kind_of_bad_chunk_is_refused_at_its_node(tmp_path):
    with ChainStore(tmp_path / "src") as source:
        build_chain(source, 3)
        root = root_subtree(source.head_root)
        good = source.snapshot_chunk(3, root, 2048)
        assert len(good) > 3
        verify_chunk(root, good, 3)
        flipped = bytearray(good[2])
        flipped[-1] ^= 1
        bad_chunks = {
            "a flipped byte": [*good[:2], bytes(flipped), *good[3:]],
            "reordered": [good[0], good[2], good[1], *good[3:]],
            "another tree": source.snapshot_chunk(1, root_subtree(source.state_root(1)), 2048),
            "empty": [],
            "garbage": [b"\x93\x00"],
        }
        for what, chunk in bad_chunks.items():
            with pytest.raises(BadChunk):
                verify_chunk(root, chunk, 3)
            assert what  # each case named for the reader
        # Down to a leaf, a node at a time: a chunk that goes on past the subtree's last
        # node (a leaf has no children) is refused.
        where = root
        while (step := verify_chunk(where, source.snapshot_chunk(3, where, 1), 3)).missing:
            where = step.missing[0]
        leaf = source.snapshot_chunk(3, where, 1)
        with pytest.raises(BadChunk):
            verify_chunk(where, [*leaf, *leaf], 3)
        # Asked for at a place where the tree has no such subtree: nothing is served.
        elsewhere = Subtree(1, (1 << 255).to_bytes(32, "big"), where.hash)
        assert where.depth > 1 and source.snapshot_chunk(3, elsewhere, 2048) == []
        assert serve_chunk(source.get_node_bytes, b"\x01" * 40) == []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """An honest server's store of 6 blocks (a few hundred keys) and its states."""
    with ChainStore(tmp_path_factory.mktemp("served") / "src") as source:
        yield source, build_chain(source, 6)


# What a hostile server may do to the honest chunk it was asked for (before its own
# choice of where to cut it): what a chunk ends up holding is checked by hashes alone.
_TAMPERING = ["none", "flip", "drop", "duplicate", "swap", "foreign", "append", "other height"]


def _tampered(source: ChainStore, nodes: list[bytes], how: str, data: st.DataObject) -> list[bytes]:
    if how == "other height":
        return source.snapshot_chunk(3, root_subtree(source.state_root(3)), 4096)
    # Nodes of another height's tree: real nodes, with real hashes, of other states.
    foreign = source.snapshot_chunk(2, root_subtree(source.state_root(2)), 4096)
    out = list(nodes)
    at = data.draw(st.integers(0, max(0, len(out) - 1)))
    if how == "flip" and out:
        node = bytearray(out[at])
        node[data.draw(st.integers(0, len(node) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        out[at] = bytes(node)
    elif how == "drop" and out:
        del out[at]
    elif how == "duplicate" and out:
        out.insert(at, out[data.draw(st.integers(0, len(out) - 1))])
    elif how == "swap" and len(out) > 1:
        other = data.draw(st.integers(0, len(out) - 1))
        out[at], out[other] = out[other], out[at]
    elif how == "foreign":
        out.insert(at, data.draw(st.sampled_from(foreign)))
    elif how == "append":
        out.extend(data.draw(st.lists(st.sampled_from(foreign), min_size=1, max_size=3)))
    return out[: data.draw(st.integers(0, len(out)))] if data.draw(st.booleans()) else out


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_no_chunk_a_hostile_server_makes_up_installs_any_state_but_the_snapshots(served, data):
    # Each chunk is the hostile server's: the honest one tampered anyhow (a byte, a node
    # dropped, duplicated, swapped, another state's node or tree, cut anywhere), a move
    # to another target part way or not. Whatever verifies is kept, whatever does not is
    # asked again of an honest server; installed, the store holds the snapshot's state:
    # no key added, removed or changed, in the flat state (what execution and the read
    # models read) as in the tree (what proofs read).
    source, states = served
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp, ChainStore(Path(tmp)) as dest:
        moved_from = data.draw(st.sampled_from([None, 3, 6]), label="moved from")
        for height in ([] if moved_from is None else [moved_from]) + [5]:
            target = target_of(source, height)
            dest.begin_sync(target)
            held = dest.held_lookup()
            wanted = dest.missing_nodes(sync_root(target), 1 << 20)
            budget = data.draw(st.integers(1, 30)) if height == moved_from else None
            while wanted and (budget is None or budget > 0):
                subtree = wanted.pop()
                honest = source.snapshot_chunk(
                    height, subtree, data.draw(st.sampled_from([4096, 300, 1]))
                )
                how = data.draw(st.sampled_from(_TAMPERING))
                try:
                    chunk = verify_chunk(
                        subtree, _tampered(source, honest, how, data), height, held
                    )
                except BadChunk:
                    chunk = verify_chunk(subtree, honest, height, held)
                dest.store_chunk(chunk.nodes, chunk.leaves)
                wanted.extend(reversed(chunk.missing))
                if budget is not None:
                    budget -= 1
            if not wanted:
                wanted = dest.missing_nodes(sync_root(target), 1 << 20)
            assert height == moved_from or not wanted
        assert dest.finish_sync(GENESIS_HASH) == 5
        assert dict(dest.iter_state()) == states[5]
        assert dest.head_root == source.state_root(5)
        for key in list(states[5])[:: max(1, len(states[5]) // 20)] + [b"k/absent"]:
            value, proof, _ = dest.prove(key)
            assert value == states[5].get(key)
            verify_proof(dest.head_root, key, value, proof)


def test_a_request_for_a_place_the_tree_does_not_reach_is_answered_empty(tmp_path):
    # A peer names the subtree it wants by depth, path and hash: one whose path runs
    # into a leaf (or an empty subtree) above its depth is simply not served, and one
    # whose path or hash is not 32 bytes is no request at all.
    with ChainStore(tmp_path / "src") as source:
        build_chain(source, 3)
        where = root_subtree(source.head_root)
        while (step := verify_chunk(where, source.snapshot_chunk(3, where, 1), 3)).missing:
            where = step.missing[0]
        assert source.snapshot_chunk(3, where, 1) != []  # a leaf, at depth where.depth
        below = Subtree(where.depth + 5, where.path, where.hash)
        assert source.snapshot_chunk(3, below, 2048) == []
        assert source.snapshot_chunk(3, Subtree(255, where.path, where.hash), 2048) == []
        for path, hash_ in ((where.path[:31], where.hash), (where.path, where.hash + b"\x00")):
            with pytest.raises(DecodeError, match="32 bytes each"):
                Subtree(where.depth, path, hash_)


def test_chunks_no_tree_holds_are_refused_even_when_their_hashes_chain(tmp_path):
    # What a chunk holds is checked against the hashes it must have, and against the
    # shape every tree has: no chunk for an empty subtree, no internal node without
    # children, none as deep as a leaf must sit (hashes alone would pass all three).
    with pytest.raises(BadChunk, match="empty subtree"):
        verify_chunk(root_subtree(ZERO_HASH), [b"\x93\x00"], 1)
    childless = internal_encoding(ZERO_REF, ZERO_REF)
    with pytest.raises(BadChunk, match="chunk node 0 is an internal node with no children"):
        verify_chunk(root_subtree(internal_node_hash(childless)), [childless], 1)
    root, nodes = too_deep_chain(b"deep", 256)
    chunk, ref = [], root
    while ref != ZERO_REF:
        chunk.append(nodes[ref])
        ref = max(internal_children(nodes[ref])) if is_internal(nodes[ref]) else ZERO_REF
    assert len(chunk) == 257
    with pytest.raises(BadChunk, match="chunk node 255 is an internal node at depth 255"):
        verify_chunk(root_subtree(root[8:]), chunk, 1)
    # Stored so (damage), a resumed walk refuses it too, as the node's fault: not as
    # damage a fetch repairs (every node hashes right: fetched again, the same nodes
    # would come, refused), neither at the install nor at a walk that drops damage.
    for damaged in (None, []):
        with pytest.raises(StorageError, match="too deep") as raised:
            list(walk_missing(nodes.get, root, 10, damaged=damaged))
        assert not isinstance(raised.value, DamagedTree)


def test_a_joiner_keeps_nodes_at_its_own_version_whatever_servers_say(tmp_path):
    # Where a server keeps a node (the versions its parents name) is covered by no
    # hash. The joiner keeps every node at the snapshot's height, so servers that made
    # or synced their nodes at other heights serve one sync alike, and versions a
    # hostile server makes up change nothing it stores.
    with ChainStore(tmp_path / "archive") as archive:
        states = build_chain(archive, 12)
        target = target_of(archive, 9)
        with ChainStore(tmp_path / "synced") as synced:
            sync_from(archive, synced, target, 4096)
            synced.finish_sync(GENESIS_HASH)
            root = root_subtree(target.state_root)
            by_archive = archive.snapshot_chunk(9, root, 1 << 20)
            by_synced = synced.snapshot_chunk(9, root, 1 << 20)
            assert by_archive != by_synced  # other versions inside, same nodes
            # A server making up its children's versions (internal nodes: tag 0).
            made_up = [
                n[:4] + b"\x7f" * 8 + n[12:46] + b"\x01" * 8 + n[54:] if n[1] == 0 else n
                for n in by_archive
            ]
            assert made_up != by_archive
            kept = verify_chunk(root, by_archive, 9)
            assert kept == verify_chunk(root, by_synced, 9) == verify_chunk(root, made_up, 9)
            assert {ref[:8] for ref in kept.nodes} == {(9).to_bytes(8, "big")}
            with ChainStore(tmp_path / "joiner") as joiner:
                sync_from([archive, synced], joiner, target, 2048)
                assert joiner.finish_sync(GENESIS_HASH) == 9
                assert dict(joiner.iter_state()) == states[9]


def test_interrupted_sync_resumes_and_another_target_starts_over(tmp_path):
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 10)
        target = target_of(source, 10)
        other = target_of(source, 5)
        with ChainStore(tmp_path / "dst") as dest:
            dest.begin_sync(other)
            first = dest.missing_nodes(sync_root(other), 1)[0]
            chunk = verify_chunk(first, source.snapshot_chunk(5, first, 2048), 5)
            dest.store_chunk(chunk.nodes, chunk.leaves)
            with pytest.raises(DamagedTree, match="incomplete"):
                dest.finish_sync(GENESIS_HASH)  # incomplete: refused, nothing installed
            assert not dest.initialized
        # "Crash" and restart with the same target: resumed where it stopped.
        with ChainStore(tmp_path / "dst") as dest:
            assert dest.sync_target() == other
            assert not dest.initialized
            assert dest.begin_sync(other) is True
            assert first not in dest.missing_nodes(sync_root(other), 100)
            # A newer target: what the old one left is wiped, never mixed in.
            assert dest.begin_sync(target) is False
            assert dest.missing_nodes(sync_root(target), 100) == [root_subtree(target.state_root)]
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, target, 8192)
            dest.finish_sync(GENESIS_HASH)
            assert dict(dest.iter_state()) == states[10]


def test_sync_steps_out_of_order_or_for_a_mismatched_target_install_nothing(tmp_path):
    with ChainStore(tmp_path / "src") as source:
        build_chain(source, 9)
        target = target_of(source, 9)
        with pytest.raises(StorageError, match="already holds a chain"):
            source.begin_sync(target)
        with pytest.raises(StorageError, match="no state sync in progress"):
            source.store_chunk({}, [(b"k", b"v")])
        with pytest.raises(StorageError, match="no state sync in progress"):
            source.finish_sync(GENESIS_HASH)
        with ChainStore(tmp_path / "dst") as dest:
            with pytest.raises(StorageError, match="no state sync in progress"):
                dest.store_chunk({}, [(b"k", b"v")])
            with pytest.raises(StorageError, match="no state sync in progress"):
                dest.finish_sync(GENESIS_HASH)
            assert list(dest.iter_state()) == []
            # Every node of the target's state is there; the block stored with it is
            # block 8, not the block whose state root the target names.
            block8 = source.get_block(8)
            assert block8 is not None
            mismatched = SyncTarget(9, target.state_root, block8.encode(), target.commit)
            sync_from(source, dest, mismatched, 4096)
            with pytest.raises(StorageError, match="genesis hash must be 32 bytes, got 31"):
                dest.finish_sync(GENESIS_HASH[:31])
            with pytest.raises(StorageError, match="does not match its height and state root") as e:
                dest.finish_sync(GENESIS_HASH)
            # No fetch repairs the target's own record: not damage the syncer fetches again.
            assert not isinstance(e.value, DamagedTree)
            assert not dest.initialized and dest.sync_target() == mismatched


def test_a_crash_between_a_chunks_leaves_and_its_nodes_fetches_them_again(tmp_path, monkeypatch):
    # A chunk's flat state is written before its nodes (two databases): a crash
    # between them loses the nodes, so the resumed walk asks for them again and their
    # leaves are written again. The other order would keep nodes whose flat state is
    # gone, which no walk ever fetches again.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 8)
        target = target_of(source, 8)
        with ChainStore(tmp_path / "dst") as dest:
            dest.begin_sync(target)
            wanted = dest.missing_nodes(sync_root(target), 1 << 20)
            for _ in range(3):  # a few chunks stored whole
                subtree = wanted.pop()
                chunk = verify_chunk(subtree, source.snapshot_chunk(8, subtree, 2048), 8)
                dest.store_chunk(chunk.nodes, chunk.leaves)
                wanted.extend(reversed(chunk.missing))
            subtree = wanted.pop()
            chunk = verify_chunk(subtree, source.snapshot_chunk(8, subtree, 2048), 8)
            real_write = Database.write
            written: list[str] = []

            def crash_on_the_second_write(db: Database, batch) -> None:
                written.append(Path(db.path).name)
                if len(written) == 2:
                    raise OSError("killed")
                real_write(db, batch)

            monkeypatch.setattr(Database, "write", crash_on_the_second_write)
            with pytest.raises(OSError, match="killed"):
                dest.store_chunk(chunk.nodes, chunk.leaves)
            monkeypatch.undo()
            assert written == ["dst", TREE_DIR]
        with ChainStore(tmp_path / "dst") as dest:
            assert dest.begin_sync(target) is True
            assert subtree in dest.missing_nodes(sync_root(target), 1 << 20)
            sync_from(source, dest, target, 2048)
            assert dest.finish_sync(GENESIS_HASH) == 8
            assert dict(dest.iter_state()) == states[8]
            assert dest.head_root == state_root_of(states[8])


def tree_nodes(path: Path) -> int:
    """Tree nodes (and lists of replaced ones) in the closed store at ``path``."""
    with Database(path / TREE_DIR) as db:
        return sum(1 for _ in db.iterate_keys(TREE_NODE))


def synced_fresh(source: ChainStore, target: SyncTarget, path: Path) -> int:
    """Chunks of 2048 bytes a sync from nothing to ``target`` takes (installed at ``path``)."""
    with ChainStore(path) as fresh:
        chunks = sync_from(source, fresh, target, 2048)
        fresh.finish_sync(GENESIS_HASH)
        return chunks


def test_a_sync_moved_to_a_new_target_keeps_what_it_held_whole(tmp_path):
    # A snapshot is served for one or two intervals: a sync slower than that moves to a
    # newer target, and wiping what it had fetched each time, it never ended. Subtrees
    # held whole are kept: the new tree names most of them (120 of ~1,000 keys change
    # a block), so it takes fewer chunks than from nothing, and installs no node, key or
    # value that its tree does not hold.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 10)
        old, new = target_of(source, 9), target_of(source, 10)
        fresh = synced_fresh(source, new, tmp_path / "fresh")
        with ChainStore(tmp_path / "dst") as dest:
            assert sync_from(source, dest, old, 2048, limit=fresh * 2 // 3) == fresh * 2 // 3
            assert dest.begin_sync(new) is False
            assert dest.held_refs()
            assert dest.missing_nodes(sync_root(new), 100) == [root_subtree(new.state_root)]
            again = sync_from(source, dest, new, 2048)
            assert 0 < again < fresh
            assert dest.finish_sync(GENESIS_HASH) == 10
            assert dict(dest.iter_state()) == states[10]
            assert dest.missing_nodes(dest.head_ref, 1) == []
            assert dest.held_refs() == {}
    # The same nodes as a sync from nothing (at other versions): nothing of the old
    # target's tree that the new one does not hold was left behind.
    assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")


def test_a_sync_moved_again_and_again_holds_at_most_about_two_trees(tmp_path):
    # Each move keeps what the tree it leaves holds whole, and deletes the rest, with
    # what earlier targets left that this tree did not name: whatever the number of
    # moves, the store holds about a tree's worth of nodes kept plus the one fetched.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 12)
        fresh = synced_fresh(source, target_of(source, 12), tmp_path / "fresh")
        whole = tree_nodes(tmp_path / "fresh")
        heights = [6, 8, 7, 9, 11, 10, 12, 5, 12]
        for i, height in enumerate(heights):
            with ChainStore(tmp_path / "dst") as dest:
                target = target_of(source, height)
                if i < len(heights) - 1:
                    sync_from(source, dest, target, 2048, limit=fresh // 2)
                    continue
                sync_from(source, dest, target, 2048)
                assert dest.finish_sync(GENESIS_HASH) == 12
                assert dict(dest.iter_state()) == states[12]
            assert tree_nodes(tmp_path / "dst") <= 2 * whole
    assert tree_nodes(tmp_path / "dst") == whole


def test_a_sync_moved_to_a_lower_target_keeps_no_node_made_above_it(tmp_path):
    # A node's version is when it was made: pruning deletes a replaced node by it. A
    # tree installed at 8 holding nodes kept under version 10 would lose them to the
    # pruning of later blocks' replaced nodes, so what a move to a lower target keeps is
    # what earlier targets below it left.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 10)
        fresh = synced_fresh(source, target_of(source, 8), tmp_path / "fresh")
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, target_of(source, 7), 2048, limit=fresh // 2)
            sync_from(source, dest, target_of(source, 10), 2048, limit=fresh // 2)
            dest.begin_sync(target_of(source, 8))
            held = dest.held_refs()
            assert held and all(int.from_bytes(ref[:8], "big") == 7 for ref in held.values())
            sync_from(source, dest, target_of(source, 8), 2048)
            assert dest.finish_sync(GENESIS_HASH) == 8
            assert dict(dest.iter_state()) == states[8]
            versions = set()
            walk = walk_missing(
                dest.get_node_bytes, dest.head_ref, 1, lambda r, _: versions.add(r[:8])
            )
            assert list(walk) == []
            assert versions == {(7).to_bytes(8, "big"), (8).to_bytes(8, "big")}
    assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")


def move_killed_at(
    tmp_path: Path,
    monkeypatch,
    crash: int,
    source: ChainStore,
    states: dict[int, dict[bytes, bytes]],
    old: SyncTarget,
    new: SyncTarget,
) -> bool:
    """Copy ``base`` (a sync to ``old`` part way), move it to ``new`` killed at its
    ``crash``-th write, restart and finish it; whether the move ran to its end."""
    shutil.copytree(tmp_path / "base", tmp_path / "dst")
    with ChainStore(tmp_path / "dst") as dest:
        with monkeypatch.context() as patch:
            patch.setattr(Database, "write", killed_at(crash))
            try:
                dest.begin_sync(new)
                moved = True
            except OSError:
                moved = False
    with ChainStore(tmp_path / "dst") as dest:
        target = dest.sync_target()
        assert target in (old, new)
        sync_from(source, dest, target, 2048)
        height = dest.finish_sync(GENESIS_HASH)
        assert dict(dest.iter_state()) == states[height]
    with ChainStore(tmp_path / "check") as check:
        sync_from(source, check, target, 2048)
        check.finish_sync(GENESIS_HASH)
    assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "check")
    shutil.rmtree(tmp_path / "dst")
    shutil.rmtree(tmp_path / "check")
    return moved


def half_synced_at_9(
    source: ChainStore, tmp_path: Path
) -> tuple[dict[int, dict[bytes, bytes]], SyncTarget, SyncTarget]:
    """A chain of 10 blocks in ``source`` (its states by height), a store at
    ``tmp_path / "base"`` that synced half a fresh sync's chunks towards height 9, and
    the targets 9 and 10; ``tmp_path / "fresh"`` holds a sync of 10 from nothing."""
    states = build_chain(source, 10)
    old, new = target_of(source, 9), target_of(source, 10)
    fresh = synced_fresh(source, new, tmp_path / "fresh")
    with ChainStore(tmp_path / "base") as dest:
        sync_from(source, dest, old, 2048, limit=fresh // 2)
    return states, old, new


def test_a_crash_anywhere_in_a_move_to_a_new_target_resumes_and_installs_it(tmp_path, monkeypatch):
    # The new target, with what it keeps, is one synced write, after the nodes held
    # whole are durable; the deletes that follow are recorded with it and redone on
    # restart, each node after those below it. Killed at each write of the move, the
    # store resumes one target or the other and installs it whole, with nothing left over.
    with ChainStore(tmp_path / "src") as source:
        states, old, new = half_synced_at_9(source, tmp_path)
        crash = 1
        while not move_killed_at(tmp_path, monkeypatch, crash, source, states, old, new):
            crash += 1
        assert crash > 3


class _Writes:
    """Each batch written: (database directory's name, synced, ops). A synced write
    makes earlier unsynced ones durable in its own database only: what the power-loss
    tests below check is the order of synced writes across the two."""

    def __init__(self, monkeypatch) -> None:
        self.log: list[tuple[str, bool, int]] = []
        synced: dict[int, bool] = {}
        real_new, real_write = Database.new_batch, Database.write

        def new_batch(db: Database, *, sync: bool | None = None):
            batch = real_new(db, sync=sync)
            synced[id(batch)] = sync is not False
            return batch

        def write(db: Database, batch) -> None:
            self.log.append((Path(db.path).name, synced.pop(id(batch)), len(batch)))
            real_write(db, batch)

        monkeypatch.setattr(Database, "new_batch", new_batch)
        monkeypatch.setattr(Database, "write", write)


def test_a_crash_anywhere_in_installing_a_moved_sync_installs_it_on_restart(tmp_path, monkeypatch):
    # Installing a sync that moved deletes the subtrees held that its tree does not
    # name and writes the flat state again from the tree: killed at each write, the
    # restarted store installs the same state and nodes as a sync from nothing.
    with ChainStore(tmp_path / "src") as source:
        states, old, new = half_synced_at_9(source, tmp_path)
        with ChainStore(tmp_path / "base") as dest:
            sync_from(source, dest, new, 2048)
        crash, installed = 1, False
        while not installed:
            shutil.copytree(tmp_path / "base", tmp_path / "dst")
            with ChainStore(tmp_path / "dst") as dest:
                with monkeypatch.context() as patch:
                    patch.setattr(Database, "write", killed_at(crash))
                    try:
                        dest.finish_sync(GENESIS_HASH)
                        installed = True
                    except OSError:
                        pass
            with ChainStore(tmp_path / "dst") as dest:
                if not installed:
                    assert dest.begin_sync(new) is True
                    assert dest.missing_nodes(sync_root(new), 1) == []
                    assert dest.finish_sync(GENESIS_HASH) == 10
                assert dict(dest.iter_state()) == states[10]
            assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")
            shutil.rmtree(tmp_path / "dst")
            crash += 1
        assert crash > 4


def test_a_held_node_gone_from_the_store_is_fetched_again_at_the_next_move(tmp_path):
    # A node held from an earlier target and named by the tree being fetched is taken
    # to be there whole; were it lost (damage), taking its parent's subtree as whole at
    # the next move would name a node no fetch ever stores again, and the sync would ask
    # for it for ever. The move sees it missing: the parent is fetched again.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 11)
        fresh = synced_fresh(source, target_of(source, 11), tmp_path / "fresh")
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, target_of(source, 9), 2048)
            sync_from(source, dest, target_of(source, 10), 2048, limit=10)
            linked: list[bytes] = []
            walk = walk_missing(
                dest.get_node_bytes,
                sync_root(target_of(source, 10)),
                1 << 20,
                lambda ref, _: linked.append(ref) if ref[:8] == (9).to_bytes(8, "big") else None,
            )
            assert list(walk) and linked
        raw_write(tmp_path / "dst" / TREE_DIR, {}, [TREE_NODE + linked[0]])
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, target_of(source, 11), 2048, limit=4 * fresh)
            assert dest.finish_sync(GENESIS_HASH) == 11
            assert dict(dest.iter_state()) == states[11]
    assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_a_held_node_damaged_after_the_move_is_fetched_again_not_asked_for_for_ever(
    tmp_path, damage
):
    # Between a move and the walk of the new tree, a node of a subtree held whole is
    # lost or damaged. Its parent names it at the version it is held at, while a fetch
    # stores at the target's height: the walk asked for it, it came, and the walk asked
    # for it again, until the next move (for ever, for a trusted target); a damaged one
    # stopped the sync at each walk. The held nodes above it go, with the node of this
    # target naming them, and that part is fetched again: one more pass, not a loop.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 10)
        old, new = target_of(source, 9), target_of(source, 10)
        synced_fresh(source, new, tmp_path / "fresh")
        in_new: set[bytes] = set()
        list(
            walk_missing(
                source.get_node_bytes, source.state_ref(10), 1, lambda r, _: in_new.add(r[8:])
            )
        )
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, old, 2048)
            assert dest.begin_sync(new) is False
            # Held nodes the new tree names, below the top: a leaf, or an inner node.
            named: list[tuple[bytes, bool]] = []

            def held(ref: bytes, leaf: object) -> None:
                if ref[8:] in in_new and ref != sync_root(old):
                    named.append((ref, leaf is not None))

            list(walk_missing(dest.get_node_bytes, sync_root(old), 1, held))
        ref = next(r for r, is_leaf in reversed(named) if is_leaf == (damage == "corrupt"))
        assert ref[:8] == (9).to_bytes(8, "big")
        if damage == "deleted":
            raw_write(tmp_path / "dst" / TREE_DIR, {}, [TREE_NODE + ref])
        else:
            raw_write(tmp_path / "dst" / TREE_DIR, {TREE_NODE + ref: b"\x93\x05garbage"})
        with ChainStore(tmp_path / "dst") as dest:
            for _ in range(3):  # as the syncer does: walk, fetch what it lacks, again
                if not dest.missing_nodes(sync_root(new), 1 << 20):
                    break
                sync_from(source, dest, new, 2048)
            assert dest.missing_nodes(sync_root(new), 1) == []
            assert dest.finish_sync(GENESIS_HASH) == 10
            assert dict(dest.iter_state()) == states[10]
    assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")


def test_a_held_node_garbled_since_the_move_is_not_named_by_a_chunk_but_fetched(tmp_path):
    # ``held_lookup`` named a subtree held wherever a node was stored under its hash:
    # one garbled on disk since the move was named all the same, the next walk found it
    # damaged and dropped it with the node of the target naming it, and both were
    # fetched again, a round more. Checked against its hash, it is fetched at once, and
    # the damaged node deleted (nothing names it after that: no walk would find it).
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 10)
        old, new = target_of(source, 9), target_of(source, 10)
        synced_fresh(source, new, tmp_path / "fresh")
        in_new: set[bytes] = set()
        list(
            walk_missing(
                source.get_node_bytes, source.state_ref(10), 1, lambda r, _: in_new.add(r[8:])
            )
        )
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, old, 2048)
            assert dest.begin_sync(new) is False
            # Where the new tree names a part held: its top, below a node it changed.
            visited: list[bytes] = []
            list(
                walk_missing(dest.get_node_bytes, sync_root(old), 1, lambda r, _: visited.append(r))
            )
            named: list[bytes] = []
            for ref in visited:
                encoding = dest.get_node_bytes(ref)
                if ref[8:] not in in_new and encoding is not None and is_internal(encoding):
                    children = internal_children(encoding)
                    named += [c for c in children if c != ZERO_REF and c[8:] in in_new]
            assert len(named) > 2
        garbled, whole = named[0], named[1]
        raw_write(tmp_path / "dst" / TREE_DIR, {TREE_NODE + garbled: b"\x93\x05garbage"})
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, new, 2048)
            assert dest.missing_nodes(sync_root(new), 1) == []  # no round more
            # Nothing names it any more, so no walk would find it: it went there.
            assert dest.get_node_bytes(garbled) is None
            lookup = dest.held_lookup()
            assert lookup is not None
            assert lookup(garbled[8:]) is None and lookup(whole[8:]) == whole
            assert dest.finish_sync(GENESIS_HASH) == 10
            assert dict(dest.iter_state()) == states[10]
    assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")


def damaged_after_the_move(
    source: ChainStore, tmp_path: Path
) -> tuple[dict[int, dict[bytes, bytes]], SyncTarget]:
    """A chain of 10 blocks in ``source`` (its states by height), a fresh sync of height
    10 at ``tmp_path / "fresh"``, and at ``tmp_path / "base"`` a sync to 9 moved to 10
    and fetched whole, then damaged: a third of the leaves held (from 9) that the tree
    of 10 names are lost or garbled, side by side under the same parents, a fifth of
    the inner nodes held are lost and a tenth garbled (what is below them cannot be
    reached through them); (states, target 10)."""
    states = build_chain(source, 10)
    old, new = target_of(source, 9), target_of(source, 10)
    synced_fresh(source, new, tmp_path / "fresh")
    with ChainStore(tmp_path / "base") as dest:
        sync_from(source, dest, old, 2048)
        sync_from(source, dest, new, 2048)
        named: list[tuple[bytes, bool]] = []

        def held(ref: bytes, leaf: object) -> None:
            if ref[:8] == (9).to_bytes(8, "big"):
                named.append((ref, leaf is not None))

        assert list(walk_missing(dest.get_node_bytes, sync_root(new), 1, held)) == []
    leaves = [ref for ref, is_leaf in named if is_leaf]
    inner = [ref for ref, is_leaf in named if not is_leaf]
    assert len(leaves) > 200 and len(inner) > 20
    raw_write(
        tmp_path / "base" / TREE_DIR,
        {TREE_NODE + ref: b"\x93\x05garbage" for ref in [*leaves[1::6], *inner[2::10]]},
        [TREE_NODE + ref for ref in [*leaves[0::6], *inner[::5]]],
    )
    return states, new


def sync_to_the_end(
    source: ChainStore, dest: ChainStore, target: SyncTarget, states: dict[int, dict[bytes, bytes]]
) -> None:
    """As the syncer does: fetch what the store lacks, walk, again; then install. A
    damaged node below one lost is found once the part above is fetched again and
    names it, so this takes a few rounds, each a fetch of what the last walk dropped."""
    rounds = 0
    while dest.missing_nodes(sync_root(target), 1) and rounds < 10:
        sync_from(source, dest, target, 2048)
        rounds += 1
    assert dest.missing_nodes(sync_root(target), 1) == []
    assert dest.finish_sync(GENESIS_HASH) == target.height
    assert dict(dest.iter_state()) == states[target.height]


def test_many_held_nodes_damaged_after_the_move_are_dropped_after_one_walk(tmp_path, monkeypatch):
    # Each damaged held node cost a whole walk from the root (every node read and
    # hashed) and a scan of what is held: the walk ended at the first one, dropped it,
    # and began again, so K damaged nodes took K walks, in the executor while the
    # syncer waited (a review measured 315 walks for 785 leaves lost). One walk now
    # finds them all and one batch drops them, nodes held under one parent included.
    with ChainStore(tmp_path / "src") as source:
        states, new = damaged_after_the_move(source, tmp_path)
        stored = tree_nodes(tmp_path / "base")
        with ChainStore(tmp_path / "base") as dest:
            reads = _TreeReads(monkeypatch)
            assert dest.missing_nodes(sync_root(new), 1 << 20)
            monkeypatch.undo()
            # A walk reads each node it reaches once: two walks at most (the one that
            # finds the damage, the one that answers), and the paths down to it. Before,
            # a walk per damaged part: some 9,800 reads here, against 2,250 nodes.
            assert reads.count < 2 * stored, (reads.count, stored)
            sync_to_the_end(source, dest, new, states)
    # Nothing is left over: what hung below an inner node lost or garbled is still
    # stored at the held version, and the chunk that brings the part above again
    # names it by its hash (``held_lookup``), so it is part of the tree again.
    assert tree_nodes(tmp_path / "base") == tree_nodes(tmp_path / "fresh")


def test_a_drop_of_damaged_held_nodes_killed_part_way_is_found_again_and_redone(
    tmp_path, monkeypatch
):
    # The drop writes what is held (synced), then deletes the nodes (unsynced, so a
    # power loss may undo them alone): killed at either, the damage is still there for
    # the next walk to find, and the sync ends with the tree a fresh one installs.
    with ChainStore(tmp_path / "src") as source:
        states, new = damaged_after_the_move(source, tmp_path)
        crash = 1
        while True:
            shutil.copytree(tmp_path / "base", tmp_path / "dst")
            with ChainStore(tmp_path / "dst") as dest:
                with monkeypatch.context() as patch:
                    patch.setattr(Database, "write", killed_at(crash))
                    try:
                        dest.missing_nodes(sync_root(new), 1 << 20)
                        done = True
                    except OSError:
                        done = False
            with ChainStore(tmp_path / "dst") as dest:
                sync_to_the_end(source, dest, new, states)
            assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")
            shutil.rmtree(tmp_path / "dst")
            if done:
                break
            crash += 1
        assert crash == 3  # the held list, the nodes, then nothing more


def synced_then_damaged(
    source: ChainStore, tmp_path: Path, place: str
) -> tuple[dict[int, dict[bytes, bytes]], SyncTarget, list[bytes]]:
    """A chain of 8 blocks in ``source`` (its states by height), a fresh sync of 8 at
    ``tmp_path / "fresh"``, and at ``tmp_path / "base"`` a sync to 8 fetched whole, then
    damaged in nodes of that target's own (as a bit flipped on disk leaves them): at
    ``place`` "root garbled" its root no longer decodes, at "root hashing wrong" it
    names its children the other way round, "below" a fifth of the inner nodes and a
    sixth of the leaves under it, each of the two ways; (states, target 8, the
    references damaged)."""
    states = build_chain(source, 8)
    target = target_of(source, 8)
    synced_fresh(source, target, tmp_path / "fresh")
    root = sync_root(target)
    nodes: dict[bytes, bytes] = {}
    with ChainStore(tmp_path / "base") as dest:
        sync_from(source, dest, target, 2048)
        visited: list[bytes] = []
        assert (
            list(walk_missing(dest.get_node_bytes, root, 1, lambda r, _: visited.append(r))) == []
        )
        for ref in visited:
            encoding = dest.get_node_bytes(ref)
            assert encoding is not None
            nodes[ref] = encoding
    assert {ref[:8] for ref in nodes} == {(8).to_bytes(8, "big")}

    def hashing_wrong(encoding: bytes) -> bytes:
        if is_internal(encoding):
            left, right = internal_children(encoding)
            return internal_encoding(right, left)
        leaf = LeafNode.decode(encoding)
        return dataclasses.replace(leaf, value=leaf.value + b"!").encode()

    if place == "root garbled":
        damage = {root: b"\x93\x05garbage"}
    elif place == "root hashing wrong":
        damage = {root: hashing_wrong(nodes[root])}
    else:
        inner = [r for r, e in nodes.items() if is_internal(e) and r != root]
        leaves = [r for r, e in nodes.items() if not is_internal(e)]
        assert len(inner) > 20 and len(leaves) > 100
        chosen = [*inner[1::5], *leaves[2::6]]
        damage = {
            ref: b"\x93\x05garbage" if i % 2 else hashing_wrong(nodes[ref])
            for i, ref in enumerate(chosen)
        }
    raw_write(tmp_path / "base" / TREE_DIR, {TREE_NODE + ref: bad for ref, bad in damage.items()})
    return states, target, list(damage)


@pytest.mark.parametrize("place", ["root garbled", "root hashing wrong", "below"])
def test_a_damaged_node_of_the_target_is_dropped_and_fetched_again(tmp_path, caplog, place):
    # Resuming, the walk reads back what earlier runs stored. A node of the target's own
    # that does not decode, or that hashes to something else, stopped the sync with a
    # StorageError at every walk and every restart, until the operator wiped the node's
    # data by hand. It is now dropped and asked for again, as a damaged held node is:
    # its parent names it by the reference a fetch stores it under. The install still
    # refuses a tree with such a node in it.
    with ChainStore(tmp_path / "src") as source:
        states, target, damaged = synced_then_damaged(source, tmp_path, place)
        root = sync_root(target)
        with ChainStore(tmp_path / "base") as dest:
            # Refused as damage, which the syncer walks and fetches again for.
            with pytest.raises(DamagedTree, match="is corrupt|does not match its hash"):
                dest.finish_sync(GENESIS_HASH)
            assert not dest.initialized
            with caplog.at_level(logging.WARNING, logger="storage.chain_store"):
                missing = dest.missing_nodes(root, 1 << 20)
            assert "damaged" in caplog.text and "fetched again" in caplog.text
            # What the walk reached of the damage is missing now, and nothing else is.
            assert missing and {s.hash for s in missing} <= {ref[8:] for ref in damaged}
            assert all(dest.get_node_bytes(node_ref(8, s.hash)) is None for s in missing)
            if place != "below":
                assert missing == [root_subtree(target.state_root)]
            sync_to_the_end(source, dest, target, states)
            assert dest.head_root == state_root_of(states[8])
    # The damaged nodes' parts came again under the same references: nothing left over.
    assert tree_nodes(tmp_path / "base") == tree_nodes(tmp_path / "fresh")


def test_a_path_gone_between_the_walk_and_the_drop_is_damage_to_walk_again(tmp_path):
    # The drop reads the path down to each damaged place the walk found a moment ago. A
    # node on it gone since (the disk failing meanwhile) is damage like the rest, which
    # the syncer walks again and fetches, not a fault that stops the node.
    with ChainStore(tmp_path / "src") as source:
        _, target, _ = synced_then_damaged(source, tmp_path, "below")
        root = sync_root(target)
        with ChainStore(tmp_path / "base") as dest:
            places: list[Subtree] = []
            list(walk_missing(dest.get_node_bytes, root, 1 << 20, damaged=places))
            assert places and all(where.depth > 0 for where in places)

            def root_gone(ref: bytes) -> bytes | None:
                return None if ref == root else dest.get_node_bytes(ref)

            with pytest.raises(DamagedTree, match="no longer on the walk"):
                damaged_paths(root_gone, root, places)


def test_a_drop_of_damaged_nodes_of_the_target_killed_part_way_is_found_again(
    tmp_path, monkeypatch
):
    # The drop deletes the damaged nodes (unsynced, so a power loss may undo it): killed
    # there, the damage is still there for the next walk to find, and the sync ends with
    # the tree a fresh one installs.
    with ChainStore(tmp_path / "src") as source:
        states, target, _ = synced_then_damaged(source, tmp_path, "below")
        crash = 1
        while True:
            shutil.copytree(tmp_path / "base", tmp_path / "dst")
            with ChainStore(tmp_path / "dst") as dest:
                with monkeypatch.context() as patch:
                    patch.setattr(Database, "write", killed_at(crash))
                    try:
                        dest.missing_nodes(sync_root(target), 1 << 20)
                        done = True
                    except OSError:
                        done = False
            with ChainStore(tmp_path / "dst") as dest:
                sync_to_the_end(source, dest, target, states)
            assert tree_nodes(tmp_path / "dst") == tree_nodes(tmp_path / "fresh")
            shutil.rmtree(tmp_path / "dst")
            if done:
                break
            crash += 1
        assert crash == 2  # the nodes, then nothing more (nothing held changes)


@pytest.mark.parametrize("damage", ["garbled", "hashing wrong"])
def test_a_move_over_a_damaged_node_of_the_target_it_leaves_goes_on(tmp_path, damage):
    # The move reads the tree it leaves to keep what it holds whole: a node of it that
    # does not decode or does not match its hash raised StorageError out of begin_sync.
    # Resumed, the walk would repair it, but a sync that must move (an operator's new
    # trust point, say) failed so at every restart. The damaged node is not whole: the
    # move keeps what is whole beside it, and deletes it with the rest.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 10)
        old, new = target_of(source, 9), target_of(source, 10)
        fresh = synced_fresh(source, new, tmp_path / "fresh")
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, old, 2048, limit=fresh // 2)
            inner: list[bytes] = []

            def visit(ref: bytes, leaf: object) -> None:
                encoding = dest.get_node_bytes(ref)
                if leaf is None and ref != sync_root(old) and encoding is not None:
                    inner.append(ref)

            list(walk_missing(dest.get_node_bytes, sync_root(old), 1 << 20, visit))
            ref = inner[len(inner) // 2]
            encoding = dest.get_node_bytes(ref)
            assert encoding is not None
        left, right = internal_children(encoding)
        bad = b"\x93\x05garbage" if damage == "garbled" else internal_encoding(right, left)
        raw_write(tmp_path / "dst" / TREE_DIR, {TREE_NODE + ref: bad})
        with ChainStore(tmp_path / "dst") as dest:
            assert dest.begin_sync(new) is False
            assert dest.held_refs()
            assert dest.get_node_bytes(ref) is None
            sync_to_the_end(source, dest, new, states)


class _TreeReads:
    """Counts the reads of the state tree's database (``Database.get`` on ``TREE_DIR``)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        real_get = Database.get

        def get(db: Database, key: bytes, *args, **kwargs):
            if Path(db.path).name == TREE_DIR:
                self.count += 1
            return real_get(db, key, *args, **kwargs)

        monkeypatch.setattr(Database, "get", get)


def killed_at(crash: int):
    """``Database.write`` that raises at its ``crash``-th call, writing nothing of it."""
    real_write = Database.write
    writes: list[int] = []

    def write(db: Database, batch) -> None:
        writes.append(len(batch))
        if len(writes) == crash:
            raise OSError("killed")
        real_write(db, batch)

    return write


def test_nodes_a_chunk_holds_within_a_subtree_held_are_verified_all_the_same(tmp_path):
    # The server does not know what the joiner holds, so a chunk runs on through held
    # subtrees: their nodes are not kept, but a wrong byte in any of them still fails
    # the chunk (and gets its sender refused), as it fails a chunk from nothing.
    with ChainStore(tmp_path / "src") as source:
        build_chain(source, 10)
        old, new = target_of(source, 9), target_of(source, 10)
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, old, 2048)
            dest.begin_sync(new)
            held = dest.held_lookup()
            root = root_subtree(new.state_root)
            served = source.snapshot_chunk(10, root, 1 << 20)
            kept = verify_chunk(root, served, 10, held)
            assert len(kept.nodes) < len(served) // 2 and not kept.missing
            for i in range(len(served)):
                tampered = list(served)
                tampered[i] = served[i][:-1] + bytes([served[i][-1] ^ 1])
                with pytest.raises(BadChunk):
                    verify_chunk(root, tampered, 10, held)


def test_another_certificate_of_the_same_block_keeps_every_node(tmp_path):
    # Peers hold different certificates of one final block (other sets of precommits):
    # a sync given up and taken again from another peer's offer of the same snapshot
    # has the very tree it was fetching.
    with ChainStore(tmp_path / "src") as source:
        build_chain(source, 9)
        target = target_of(source, 9)
        other = SyncTarget(9, target.state_root, target.block, target.commit + b"\x00")
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, target, 2048, limit=10)
            missing = dest.missing_nodes(sync_root(target), 1 << 20)
            assert dest.begin_sync(other) is True
            assert dest.sync_target() == other
            assert dest.missing_nodes(sync_root(other), 1 << 20) == missing


def test_what_a_new_target_keeps_is_durable_before_the_target(tmp_path, monkeypatch):
    # The chunks' nodes are unsynced writes; the new target, saying which subtrees are
    # held whole, is a synced write to the chain's database, which makes nothing of the
    # tree's durable. A power loss could then keep it over subtrees half gone, which
    # the new tree would name and never fetch. Likewise the record of what is left to
    # delete goes only once the deletes are durable.
    with ChainStore(tmp_path / "src") as source:
        build_chain(source, 6)
        old, new = target_of(source, 5), target_of(source, 6)
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, old, 2048, limit=20)
            writes = _Writes(monkeypatch)
            assert dest.begin_sync(new) is False
            monkeypatch.undo()
    log = writes.log
    chain_writes = [i for i, (name, _, _) in enumerate(log) if name == "dst"]
    assert len(chain_writes) == 2 and all(log[i][1] for i in chain_writes), log
    target, swept = chain_writes
    assert log[0] == (TREE_DIR, True, 0)  # before the target
    deletes = [i for i, (name, _, ops) in enumerate(log) if name == TREE_DIR and ops]
    assert deletes and target < min(deletes) and max(deletes) < swept - 1
    assert log[swept - 1] == (TREE_DIR, True, 0)


def test_a_pass_forgets_its_roots_durably_before_its_sweep_deletes_nodes(tmp_path, monkeypatch):
    # The sweep's deletes become durable with the tree's next synced write (a commit's
    # nodes); roots forgotten unsynced could come back after a power loss over nodes
    # that are gone (a proof below the window would then fail, not say pruned).
    with ChainStore(tmp_path / "db") as store:
        build_chain(store, 12)
        writes = _Writes(monkeypatch)
        assert store.prune_states(8) > 0
        monkeypatch.undo()
    first_sweep = min(i for i, (name, _, _) in enumerate(writes.log) if name == TREE_DIR)
    assert ("db", True) in [(name, synced) for name, synced, _ in writes.log[:first_sweep]]


def test_the_pruning_mark_moves_only_after_the_tree_database_is_synced(tmp_path, monkeypatch):
    # Lists deleted by a pass whose closing fsync failed look gone to the next pass,
    # which then deletes nothing: were the mark to move without a sync, a power loss
    # could bring those lists back below it, never read again (from a review).
    with ChainStore(tmp_path / "db") as store:
        build_chain(store, 8)
        real_write = Database.write
        failed: list[bool] = []

        def failing_sync(db: Database, batch) -> None:
            if Path(db.path).name == TREE_DIR and len(batch) == 0 and not failed:
                failed.append(True)
                raise StorageError(f"write to {db.path} failed: IO error")
            real_write(db, batch)

        monkeypatch.setattr(Database, "write", failing_sync)
        with pytest.raises(StorageError, match="IO error"):
            store.prune_states(6)
        monkeypatch.undo()
        writes = _Writes(monkeypatch)
        assert store.prune_states(6) == 0
        monkeypatch.undo()
        assert all(store.missing_nodes(store.state_ref(h), 1) == [] for h in range(6, 9))
    log = writes.log
    mark = len(log) - 1
    assert log[mark][:2] == ("db", False), log  # the mark, unsynced
    assert any(name == TREE_DIR and synced for name, synced, _ in log[:mark]), log


def test_a_sync_begun_by_another_tree_layout_is_refused_and_a_finished_one_reopens(tmp_path):
    # A sync begun by code of the plain-hashed layout holds nodes of that layout's tree
    # (META has no tree_layout): resuming it would mix layouts, so the store is refused.
    with ChainStore(tmp_path / "src") as source:
        states = build_chain(source, 4)
        target = target_of(source, 4)
        with ChainStore(tmp_path / "old") as dest:
            dest.begin_sync(target)
        with Database(tmp_path / "old") as db:
            batch = db.new_batch()
            batch.delete(META + b"tree_layout")
            db.write(batch)
        with pytest.raises(StorageError, match=f"layout 1 .*this node builds layout {TREE_LAYOUT}"):
            ChainStore(tmp_path / "old")
        with ChainStore(tmp_path / "dst") as dest:
            sync_from(source, dest, target, 4096)
            dest.finish_sync(GENESIS_HASH)
    # A synced store reopens as a chain of this layout.
    with ChainStore(tmp_path / "dst") as dest:
        assert dest.height == 4
        assert dict(dest.iter_state()) == states[4]


def test_pruning_keeps_a_window_and_snapshot_heights_and_drops_the_rest(tmp_path):
    with ChainStore(tmp_path / "db") as store:
        states = build_chain(store, 30)
        old_roots = {h: store.state_ref(h) for h in range(31)}
        old_block = store.get_block(5)
        assert old_block is not None
        stopped = threading.Event()
        stopped.set()
        assert store.prune_blocks(20, stop=stopped) == 0  # stopped before its first batch
        assert store.get_block(5) == old_block
        assert store.prune_blocks(20) == 20
        deleted = store.prune_states(25, keep=frozenset({10}))
        assert deleted > 0
        # Blocks: the window is served, below it a clear refusal.
        assert store.block_base == 20
        assert store.get_block(20) is not None and store.get_block(19) is None
        with pytest.raises(Pruned):
            store.require_block(19)
        assert store.height_of(old_block.hash) is None
        assert store.get_receipts(5) == []
        # States: the window and the kept snapshot height prove; the rest is refused.
        assert store.retained_state_heights() == [10, *range(25, 31)]
        for height in (10, 25, 30):
            key = next(iter(states[height]))
            value, proof, root = store.prove(key, height)
            assert value == states[height][key]
            verify_proof(root, key, value, proof)
            # The whole tree is still there.
            assert store.missing_nodes(store.state_ref(height), 10) == []
        with pytest.raises(Pruned):
            store.prove(b"acct/0001", 24)
        # Old versions' nodes are really gone: their roots can no longer be read.
        kept = {old_roots[h] for h in (10, *range(25, 31))}
        gone = [old_roots[h] for h in range(1, 25) if old_roots[h] not in kept]
        assert gone and all(store.missing_nodes(r, 1) == [root_subtree(r[8:])] for r in gone)
        # Pruning goes on from where it stopped, and commits continue after it.
        prev = store.get_block(30)
        assert prev is not None
        changes = changes_for(31, count=50)
        update = store.prepare_state(changes)
        block, commit, receipts = make_block(31, prev.hash, update.root, 2)
        store.commit_block(block, commit, receipts, changes, update)
        store.prune_states(31)
        assert store.retained_state_heights() == [31]
        assert store.missing_nodes(store.head_ref, 10) == []
        assert store.missing_nodes(ZERO_REF, 10) == []


def test_a_pass_reads_the_lists_of_what_it_lets_go_and_never_the_tree(tmp_path, monkeypatch):
    # A pass every `interval` blocks: walking the live tree to find what is garbage
    # cost tens of seconds of CPU and hundreds of MB at a big state. A pass reads only
    # the lists of replaced nodes of the versions the window lets go (a key of the
    # version alone, 9 bytes), a list that a kept height holds only once while it
    # holds it, and nothing at all when nothing goes.
    with ChainStore(tmp_path / "db") as store:
        build_chain(store, 12)
        real_get = Database.get
        reads: list[bytes] = []

        def counting_get(db: Database, key: bytes) -> bytes | None:
            if Path(db.path).name == TREE_DIR:
                reads.append(key)
            return real_get(db, key)

        monkeypatch.setattr(Database, "get", counting_get)
        assert store.prune_states(-88) == 0  # a window longer than the chain
        assert reads == []
        assert store.prune_states(5, keep=frozenset(range(5))) == 0  # all kept
        assert sorted(reads) == [TREE_NODE + encode_height(v) for v in range(1, 6)]
        reads.clear()
        assert store.prune_states(5, keep=frozenset(range(5))) == 0  # held as they were
        assert reads == []
        # A pass stopped before it deleted leaves the lists to the next one.
        old = store.state_ref(2)
        stopped = threading.Event()
        stopped.set()
        assert store.prune_states(5, stop=stopped) == 0
        assert store.missing_nodes(old, 1) == []  # still there
        assert store.prune_states(5) > 0
        assert store.missing_nodes(old, 1) == [root_subtree(old[8:])]
        reads.clear()
        assert store.prune_states(8) > 0
        assert sorted(reads) == [TREE_NODE + encode_height(v) for v in range(6, 9)]
        monkeypatch.undo()
        assert store.retained_state_heights() == list(range(8, 13))
        assert all(store.missing_nodes(store.state_ref(h), 1) == [] for h in range(8, 13))


def test_a_corrupt_list_of_replaced_nodes_stops_a_pass_and_the_head_still_reads(tmp_path):
    # A list whose length is no multiple of a reference would be cut into references
    # to nodes no one made: the pass stops there (the node's fault) and deletes none.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        states = build_chain(store, 8)
        listed = store.get_node_bytes(encode_height(3))
        assert listed is not None and len(listed) % 40 == 0
    raw_write(path / TREE_DIR, {TREE_NODE + encode_height(3): listed + b"\x01"})
    with ChainStore(path) as store:
        with pytest.raises(StorageError, match="list of nodes replaced at 3 is corrupt"):
            store.prune_states(5)
        assert all(store.missing_nodes(store.state_ref(h), 1) == [] for h in range(5, 9))
        key = next(iter(states[8]))
        value, proof, root = store.prove(key)
        assert value == states[8][key]
        verify_proof(root, key, value, proof)


def test_a_big_pass_and_a_big_wipe_delete_in_bounded_batches(tmp_path, monkeypatch):
    # Deletes go in batches of about 10,000 (memory stays bounded, and a commit never
    # waits long behind one): a pass over versions that replaced 7,301 nodes each, and
    # a new target's wipe of 10,001 keys, each take more than one batch.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        state = {b"k/%05d" % i: b"v0" for i in range(3000)}
        store.initialize(GENESIS_HASH, state)
        prev, lists = GENESIS_HASH, []
        for height in (1, 2, 3):
            changes: dict[bytes, bytes | None] = {k: b"v%d" % height for k in state}
            update = store.prepare_state(changes)
            block, commit, receipts = make_block(height, prev, update.root, 1)
            store.commit_block(block, commit, receipts, changes, update)
            prev = block.hash
            lists.append(len(update.stale))
        writes = _Writes(monkeypatch)
        assert store.prune_states(3) == sum(lists)
        monkeypatch.undo()
        sweeps = [ops for name, synced, ops in writes.log if name == TREE_DIR and ops]
        assert len(sweeps) >= 2 and sum(sweeps) == sum(lists) + 3  # with the lists' keys
        assert max(sweeps) < 10_000 + max(lists)
        assert store.missing_nodes(store.head_ref, 1) == []
    # A sync's wipe of what a store without a target holds (from an earlier version's
    # wipe that crashed, say).
    ChainStore(tmp_path / "dst").close()
    raw_write(tmp_path / "dst", {STATE + b"k/%05d" % i: b"v" for i in range(10_001)})
    with ChainStore(tmp_path / "dst") as dest:
        writes = _Writes(monkeypatch)
        dest.begin_sync(SyncTarget(2, bytes(32), b"", b""))
        monkeypatch.undo()
        wipes = [ops for name, synced, ops in writes.log if name == "dst" and not synced and ops]
        assert len(wipes) >= 2 and sum(wipes) == 10_001 and max(wipes) <= 10_000
        assert list(dest.iter_state()) == []
    with Database(tmp_path / "dst") as db:
        assert list(db.iterate_keys(STATE)) == []


def test_pruning_beside_commits_never_takes_a_node_the_head_needs(tmp_path):
    # The node prunes on a thread of its own while blocks commit. Whatever the order,
    # every kept version's tree stays whole and the head reads as the model says.
    with ChainStore(tmp_path / "db") as store:
        states = build_chain(store, 20)
        model = dict(states[20])
        done = threading.Event()

        def prune() -> None:
            while not done.is_set():
                store.prune_states(store.height - 1)

        pruner = threading.Thread(target=prune)
        pruner.start()
        try:
            prev = store.get_block(20)
            assert prev is not None
            for height in range(21, 61):
                changes = changes_for(height, count=120)
                update = store.prepare_state(changes)
                block, commit, receipts = make_block(height, prev.hash, update.root, 2)
                store.commit_block(block, commit, receipts, changes, update)
                apply_changes(model, changes)
                prev = block
        finally:
            done.set()
            pruner.join()
        store.prune_states(store.height)
        for height in store.retained_state_heights():
            assert store.missing_nodes(store.state_ref(height), 10) == []
        assert state_root_of(model) == store.head_root
        assert all(store.tree.get(store.head_ref, k) == v for k, v in model.items())


# --- pruning by lists of replaced nodes, against the live trees themselves -----------

_UNIVERSE = [b"k/%02d" % i for i in range(48)] + [b"acct/%04d" % i for i in range(0, 100, 7)]


class PruningMachine(RuleBasedStateMachine):
    """Blocks, passes with any window, kept heights and stops, and restarts: after
    every pass every node a kept version reaches is stored, and after a pass that was
    not stopped no other node is (what a walk of every kept tree would keep)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="prune-"))
        self.store = ChainStore(self.dir / "db")
        self.store.initialize(GENESIS_HASH, genesis_state())
        # Every node ever committed (reference -> encoding), to walk any root.
        self.nodes = MemoryNodeStore()
        self.nodes.put_nodes(self._genesis_nodes())
        self.prev = GENESIS_HASH

    def _genesis_nodes(self) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        stack = [self.store.head_ref]
        while stack:
            ref = stack.pop()
            if ref == ZERO_REF or ref in found:
                continue
            data = self.store.get_node_bytes(ref)
            assert data is not None
            found[ref] = data
            if is_internal(data):
                stack.extend(internal_children(data))
        return found

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _live(self) -> set[bytes]:
        live: set[bytes] = set()
        for height in self.store.retained_state_heights():
            stack = [self.store.state_ref(height)]
            while stack:
                ref = stack.pop()
                if ref == ZERO_REF or ref in live:
                    continue
                live.add(ref)
                data = self.nodes.nodes[ref]
                if is_internal(data):
                    stack.extend(internal_children(data))
        return live

    def _stored(self) -> set[bytes]:
        return {ref for ref in self.nodes.nodes if self.store.get_node_bytes(ref) is not None}

    @rule(
        changes=st.dictionaries(
            st.sampled_from(_UNIVERSE), st.none() | st.binary(max_size=4), max_size=12
        )
    )
    def commit(self, changes: dict[bytes, bytes | None]) -> None:
        update = self.store.prepare_state(changes)
        block, commit, receipts = make_block(self.store.height + 1, self.prev, update.root, 1)
        self.store.commit_block(block, commit, receipts, changes, update)
        self.nodes.put_nodes(update.nodes)
        self.prev = block.hash

    @rule(window=st.integers(0, 6), data=st.data(), stopped=st.booleans())
    def prune(self, window: int, data: st.DataObject, stopped: bool) -> None:
        below = self.store.height - window
        retained = self.store.retained_state_heights(below)
        keep = frozenset(
            data.draw(st.lists(st.sampled_from(retained), unique=True)) if retained else ()
        )
        stop = threading.Event()
        if stopped:
            stop.set()
        self.store.prune_states(below, keep, stop)
        live, stored = self._live(), self._stored()
        assert live <= stored
        if not stopped:
            assert stored == live

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = ChainStore(self.dir / "db")


TestPruningMachine = PruningMachine.TestCase
TestPruningMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
