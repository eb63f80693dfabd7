"""ChainStore on a real LevelDB: commit, reopen, checks, locking, and crash safety."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import StorageError
from core.hashing import ZERO_HASH
from core.types import Commit, tx_hash
from storage import TREE_DIR, ChainStore, Pruned, state_root_of, verify_proof
from storage.db import (
    BLOCK,
    COMMIT,
    META,
    STATE,
    STATE_ROOT,
    TREE_NODE,
    TX_INDEX,
    Database,
    encode_height,
)
from storage.state_tree import TreeUpdate
from tests.fsyncs import dir_id, fsynced_dirs
from tests.storage.storage_chain_fixtures import (
    GENESIS_HASH,
    apply_changes,
    changes_for,
    genesis_state,
    make_block,
    raw_write,
)

FIXTURES = Path(__file__).with_name("storage_chain_fixtures.py")
REPO = Path(__file__).resolve().parents[2]


def commit_next(store: ChainStore, changes, n_txs: int = 5):
    update = store.prepare_state(changes)
    head = store.get_block(store.height)
    prev = GENESIS_HASH if head is None else head.hash
    block, commit, receipts = make_block(store.height + 1, prev, update.root, n_txs)
    store.commit_block(block, commit, receipts, changes, update)
    return block, commit, receipts


def test_the_store_directories_are_durable_in_their_parents(tmp_path, monkeypatch):
    # LevelDB syncs the directory it writes in, never the parent: a power loss could
    # otherwise keep the chain's head and lose the tree's database (a store that
    # refuses to open), or lose the whole data directory of a node that ran.
    home = tmp_path / "home"
    home.mkdir()
    synced = fsynced_dirs(monkeypatch)
    with ChainStore(home / "data") as store:
        store.initialize(GENESIS_HASH, genesis_state())
    assert dir_id(home) in synced and dir_id(home / "data") in synced


def test_commit_reopen_and_read_everything_back(tmp_path):
    path = tmp_path / "db"
    model = genesis_state()
    history = []
    with ChainStore(path) as store:
        assert not store.initialized
        genesis_root = store.initialize(GENESIS_HASH, model)
        assert genesis_root == state_root_of(model)
        assert store.height == 0
        assert store.height_of(GENESIS_HASH) == 0
        assert store.get_block(0) is None
        for height in range(1, 6):
            changes = changes_for(height, count=50)
            block, commit, receipts = commit_next(store, changes)
            apply_changes(model, changes)
            history.append((block, commit, receipts, dict(model)))
            assert store.height == height
            for key, value in changes.items():
                assert store.state_get(key) == value

    with ChainStore(path) as store:
        assert store.genesis_hash == GENESIS_HASH
        assert store.height == 5
        assert store.initialize(GENESIS_HASH, genesis_state()) == genesis_root
        assert store.state_root(0) == genesis_root
        for height, (block, commit, receipts, state) in enumerate(history, start=1):
            assert store.get_block(height) == block
            assert store.get_block_bytes(height) == block.encode()
            assert store.height_of(block.hash) == height
            assert store.get_commit(height) == commit
            assert store.get_receipts(height) == receipts
            assert store.state_root(height) == block.header.state_root
            for position, tx in enumerate(block.txs):
                assert store.tx_location(tx_hash(tx)) == (height, position)
                assert store.get_receipt(tx_hash(tx)) == receipts[position]
            # Old heights stay provable against their header's state root.
            for key in list(state)[:10] + [b"k/99999", b"never"]:
                value, proof, root = store.prove(key, height)
                assert root == block.header.state_root
                assert value == state.get(key)
                verify_proof(root, key, value, proof)
        final = history[-1][3]
        assert dict(store.iter_state()) == final
        assert dict(store.iter_state(b"acct/")) == {
            k: v for k, v in final.items() if k.startswith(b"acct/")
        }
        for key in list(final)[:20] + [b"k/99999"]:
            assert store.state_get(key) == final.get(key)
        value, proof, root = store.prove(b"acct/0001")
        assert root == store.head_root == store.state_root(5)
        verify_proof(root, b"acct/0001", value, proof)
        assert store.get_block(6) is None
        assert store.get_commit(6) is None
        assert store.get_receipts(6) == []
        assert store.tx_location(b"\x00" * 32) is None
        assert store.get_receipt(b"\x00" * 32) is None
        assert store.height_of(b"\x00" * 32) is None
        with pytest.raises(StorageError, match="no state root for height 6"):
            store.prove(b"acct/0001", 6)


def test_state_cache_follows_commits(tmp_path):
    with ChainStore(tmp_path / "db") as store:
        store.initialize(GENESIS_HASH, {b"a": b"1"})
        assert store.state_get(b"b") is None  # cached as absent
        commit_next(store, {b"b": b"2", b"a": None})
        assert store.state_get(b"b") == b"2"
        assert store.state_get(b"a") is None
        commit_next(store, {b"b": None, b"a": b"3"})
        assert store.state_get(b"b") is None
        assert store.state_get(b"a") == b"3"
        assert store.head_root == state_root_of({b"a": b"3"})


def test_reader_racing_a_commit_never_caches_a_stale_value(tmp_path, monkeypatch):
    with ChainStore(tmp_path / "db") as store:
        store.initialize(GENESIS_HASH, {b"k": b"old"})
        real_get = Database.get
        raced = []

        def racing_get(db, key, **options):
            value = real_get(db, key, **options)
            if key == STATE + b"k" and not raced:
                # A reader thread read the old value; a commit lands before it caches it.
                raced.append(True)
                commit_next(store, {b"k": b"new"})
            return value

        monkeypatch.setattr(Database, "get", racing_get)
        assert store.state_get(b"k") == b"old"
        assert raced
        assert store.state_get(b"k") == b"new"


def test_initialize_refuses_another_genesis(tmp_path):
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
    with ChainStore(path) as store:
        with pytest.raises(StorageError, match="belongs to the chain with genesis"):
            store.initialize(b"\x01" * 32, genesis_state())


def test_a_store_of_another_tree_layout_is_refused(tmp_path):
    # A store written before key groups holds leaves at plain hashed paths, where
    # this code never looks: updating it would build a tree no other node has.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        commit_next(store, changes_for(1))
    with ChainStore(path) as store:
        assert store.height == 1

    def refused(layout: bytes | None, message: str) -> None:
        with Database(path) as db:
            batch = db.new_batch()
            if layout is None:
                batch.delete(META + b"tree_layout")
            else:
                batch.put(META + b"tree_layout", layout)
            db.write(batch)
        with pytest.raises(StorageError, match=message):
            ChainStore(path)

    refused(None, "layout 1 .*this node builds layout 8")
    # Layout 2 was the same tree with its nodes keyed by hash alone: not where this
    # code looks for them.
    refused(b"\x02", "layout 2 .*keyed by hash.*builds layout 8")
    # Layout 3 held commerce party records of an older encoding.
    refused(b"\x03", "layout 3 .*party records.*builds layout 8")
    # Layout 4 kept the tree's nodes in the chain's own database, where this code
    # no longer looks; refused before the tree's database is made beside it.
    for entry in (path / TREE_DIR).iterdir():
        entry.unlink()
    (path / TREE_DIR).rmdir()
    refused(b"\x04", "layout 4 .*chain's database.*builds layout 8")
    assert not (path / TREE_DIR).exists()
    # Layout 5 listed no replaced nodes: pruning would never delete its old ones.
    refused(b"\x05", "layout 5 .*no lists of replaced nodes.*builds layout 8")
    # Layout 6 held staking candidates of an older encoding.
    refused(b"\x06", "layout 6 .*withheld blocks.*builds layout 8")
    # Layout 7 held no producer terms and proposals of an older encoding.
    refused(b"\x07", "layout 7 .*no producer terms.*builds layout 8")


def test_each_blocks_tree_nodes_are_stored_after_every_older_versions(tmp_path):
    # Nodes are keyed by the height that made them, so a block's writes sort after
    # everything stored before it (what keeps LevelDB's compactions cheap), and the
    # tree reads them back through its parents' references at every height.
    path = tmp_path / "db"
    model = genesis_state()
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, model)
        for height in range(1, 6):
            changes = changes_for(height)
            commit_next(store, changes)
            apply_changes(model, changes)
            assert store.state_ref(height)[:8] == encode_height(height)
    with Database(path / TREE_DIR) as db:
        versions = [int.from_bytes(key[:8], "big") for key in db.iterate_keys(TREE_NODE)]
    assert versions == sorted(versions)
    assert set(versions) == set(range(6))
    # In a database of their own: none among the chain's random-keyed records (tx
    # index, flat state), with which every table would span the whole key space.
    with Database(path) as db:
        assert list(db.iterate_keys(TREE_NODE)) == []
        assert len(list(db.iterate_keys(STATE))) == len(model)
    with ChainStore(path) as store:
        assert state_root_of(model) == store.head_root
        assert all(store.tree.get(store.head_ref, k) == v for k, v in model.items())


def test_a_chain_without_its_tree_database_is_refused(tmp_path):
    # A copy of the store's top directory alone (an old backup script, a partial
    # restore) would otherwise open with an empty tree and fail at the first block.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        commit_next(store, changes_for(1))
    for entry in (path / TREE_DIR).iterdir():
        entry.unlink()
    (path / TREE_DIR).rmdir()
    with pytest.raises(StorageError, match=f"no database at {path / TREE_DIR}"):
        ChainStore(path)
    assert not (path / TREE_DIR).exists()
    with Database(path):
        pass  # the chain's database was let go


def test_corrupt_records_are_storage_errors_never_wrong_answers(tmp_path):
    # A damaged value is the node's fault: a read that decoded it anyway (or read a
    # tx's location off a short entry) would serve a wrong block, height or root.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        commit_next(store, changes_for(1))
        block2, _, _ = commit_next(store, changes_for(2))
    tx = tx_hash(block2.txs[0])
    raw_write(
        path,
        {
            BLOCK + encode_height(1): b"\xc1",
            COMMIT + encode_height(1): b"\x93\x01",
            TX_INDEX + tx: encode_height(2) + b"\x00",
            STATE_ROOT + encode_height(1): b"\x00" * 39,
        },
    )
    with ChainStore(path) as store:
        with pytest.raises(StorageError, match=f"stored block 1 in {path} is corrupt"):
            store.get_block(1)
        with pytest.raises(StorageError, match=f"stored commit 1 in {path} is corrupt"):
            store.get_commit(1)
        with pytest.raises(StorageError, match=f"tx index entry for {tx.hex()} is corrupt"):
            store.tx_location(tx)
        with pytest.raises(StorageError, match=f"tx index entry for {tx.hex()} is corrupt"):
            store.get_receipt(tx)  # not "no such receipt": the transaction is committed
        with pytest.raises(StorageError, match="stored state root for height 1 .* is corrupt"):
            store.state_root(1)
        with pytest.raises(StorageError, match="stored state root for height 1 .* is corrupt"):
            store.prove(b"acct/0001", 1)
        # The rest of the store still reads.
        assert store.get_block(2) == block2
        assert store.tx_location(tx_hash(block2.txs[1])) == (2, 1)
        assert store.get_receipt(tx_hash(block2.txs[1])) == store.get_receipts(2)[1]
        assert store.state_root(2) == block2.header.state_root


def test_a_store_whose_head_does_not_read_is_refused_and_let_go(tmp_path):
    # Refused at open, both databases released: the node can be pointed elsewhere (or
    # the store repaired) without restarting the process that tried.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        commit_next(store, changes_for(1))
        root = store.state_ref(1)
    cases = [
        ({STATE_ROOT + encode_height(1): root[:-1]}, (), "state root for height 1 .* is corrupt"),
        ({META + b"block_base": b"\x01"}, (), "stored height must be 8 bytes, got 1"),
        ({}, (STATE_ROOT + encode_height(1),), "no state root for height 1"),
        ({}, (META + b"head",), "has a genesis hash or a head, not both"),
    ]
    for puts, deletes, message in cases:
        raw_write(path, puts, deletes)
        with pytest.raises(StorageError, match=message) as refused:
            ChainStore(path)
        # Released by the store itself, not by the collector: the error (a log's
        # traceback) still holds the half-opened store here.
        with Database(path), Database(path / TREE_DIR):
            assert refused.value.__traceback__ is not None
        raw_write(
            path,
            {STATE_ROOT + encode_height(1): root, META + b"head": encode_height(1)},
            (META + b"block_base",),
        )
    with ChainStore(path) as store:
        assert store.height == 1 and store.state_ref(1) == root


def test_initialize_refuses_a_bad_genesis_and_writes_nothing(tmp_path):
    path = tmp_path / "db"
    with ChainStore(path) as store:
        with pytest.raises(StorageError, match="genesis hash must be 32 bytes, got 31"):
            store.initialize(GENESIS_HASH[:31], genesis_state())
        with pytest.raises(StorageError, match="must be bytes, not None"):
            store.initialize(GENESIS_HASH, {b"a": b"1", b"b": None})
        assert not store.initialized
    with ChainStore(path) as store:
        assert not store.initialized
    with Database(path / TREE_DIR) as nodes:
        assert list(nodes.iterate_keys(TREE_NODE)) == []


def test_a_proof_of_a_height_pruned_while_it_is_read_says_pruned(tmp_path, monkeypatch):
    # The window moved between the read of the height's root and the walk of its
    # nodes: a client asking for an old height is told Pruned (410), not a node fault.
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        for height in range(1, 6):
            commit_next(store, changes_for(height))
    with ChainStore(path) as store:  # nothing cached: the walk reads the store
        real_get = Database.get
        pruned: list[int] = []

        def pruning_meanwhile(db: Database, key: bytes) -> bytes | None:
            value = real_get(db, key)
            if key == STATE_ROOT + encode_height(2) and not pruned:
                pruned.append(store.prune_states(4))
            return value

        monkeypatch.setattr(Database, "get", pruning_meanwhile)
        with pytest.raises(Pruned, match="state at height 2 was pruned while being read"):
            store.prove(b"acct/0001", 2)
        monkeypatch.undo()
        assert pruned and pruned[0] > 0
        value, proof, root = store.prove(b"acct/0001", 4)
        verify_proof(root, b"acct/0001", value, proof)
        head = store.head_ref
    # A node missing from the head's tree is damage, whatever the height asked.
    with Database(path / TREE_DIR) as nodes:
        batch = nodes.new_batch()
        batch.delete(TREE_NODE + head)
        nodes.write(batch)
    with ChainStore(path) as store:
        for height in (None, 5):
            with pytest.raises(StorageError, match="missing from the store"):
                store.prove(b"acct/0001", height)


def test_compaction_moves_both_databases_into_tables(tmp_path):
    # A store written in a few big batches holds them in its logs until compacted:
    # ``compact`` moves both databases' into tables, and the store reads the same.
    path = tmp_path / "db"
    model = genesis_state()
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, model)
        commit_next(store, changes_for(1))
        apply_changes(model, changes_for(1))
        assert not list(path.glob("*.ldb")) and not list((path / TREE_DIR).glob("*.ldb"))
        store.compact()
        assert list(path.glob("*.ldb")) and list((path / TREE_DIR).glob("*.ldb"))
    with ChainStore(path) as store:
        assert dict(store.iter_state()) == model
        assert all(store.tree.get(store.head_ref, k) == v for k, v in model.items())


def test_uninitialized_store_says_so(tmp_path):
    with ChainStore(tmp_path / "db") as store:
        assert store.genesis_hash is None
        with pytest.raises(StorageError, match="not initialized"):
            _ = store.height
        with pytest.raises(StorageError, match="not initialized"):
            store.prepare_state({b"a": b"1"})


def test_a_block_is_its_nodes_then_one_write_of_the_rest(tmp_path, monkeypatch):
    # Everything but the tree's nodes in one batch is what makes a crash leave all or
    # nothing; the nodes go first, so no stored root ever lacks its nodes.
    with ChainStore(tmp_path / "db") as store:
        store.initialize(GENESIS_HASH, genesis_state())
        writes = []
        real_write = Database.write

        def spy(db, batch):
            writes.append((Path(db.path).name, len(batch)))
            real_write(db, batch)

        monkeypatch.setattr(Database, "write", spy)
        changes = changes_for(1, count=50)
        update = store.prepare_state(changes)
        block, _, _ = commit_next(store, changes, n_txs=4)
        assert [name for name, _ in writes] == [TREE_DIR, "db"]
        # The new nodes and, beside them, the list of the nodes they replace.
        assert update.stale
        assert writes[0][1] == len(update.nodes) + 1
        # block, hash index, commit, 2 per tx, state changes, root, head
        assert writes[1][1] == 3 + 2 * len(block.txs) + len(changes) + 2


def test_a_crash_between_the_nodes_and_the_block_leaves_the_head_whole(tmp_path, monkeypatch):
    path = tmp_path / "db"
    model = genesis_state()
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, model)
        commit_next(store, changes_for(1))
        apply_changes(model, changes_for(1))
        real_write = Database.write

        def crash_after_the_nodes(db, batch):
            real_write(db, batch)
            if Path(db.path).name == TREE_DIR:
                raise OSError("killed")

        monkeypatch.setattr(Database, "write", crash_after_the_nodes)
        with pytest.raises(OSError, match="killed"):
            commit_next(store, changes_for(2))
        monkeypatch.undo()
    with ChainStore(path) as store:
        # Block 2's nodes are stored, nothing else of it: the head is block 1, whole.
        assert store.height == 1
        assert store.get_block(2) is None
        assert dict(store.iter_state()) == model
        assert store.head_root == state_root_of(model)
        # The same block commits again over its stored nodes.
        commit_next(store, changes_for(2))
        apply_changes(model, changes_for(2))
        assert store.height == 2
        assert store.head_root == state_root_of(model)
        assert all(store.tree.get(store.head_ref, k) == v for k, v in model.items())


# Commits genesis and block 1, then block 2 under a file size limit (RLIMIT_FSIZE,
# SIGXFSZ ignored: write() fails with EFBIG, as on a full disk) that the tree's
# database's log passes ("tree") or that only the chain's passes ("chain").
_FULL_DISK = """
import glob, os, resource, signal, sys
from core.errors import StorageError
from storage import TREE_DIR, ChainStore
from tests.fsyncs import dir_id, fsynced_dirs
from tests.storage.storage_chain_fixtures import (
    GENESIS_HASH, changes_for, genesis_state, make_block,
)

path, failing = sys.argv[1], sys.argv[2]
tree = os.path.join(path, TREE_DIR)

def logs(where):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(where, "*.log")))

with ChainStore(path) as store:
    store.initialize(GENESIS_HASH, genesis_state())
    prev = GENESIS_HASH
    for height, n_txs in ((1, 5), (2, 3000)):
        changes = changes_for(height)
        update = store.prepare_state(changes)
        block, commit, receipts = make_block(height, prev, update.root, n_txs)
        if height == 2:
            nodes = sum(len(k) + len(v) + 16 for k, v in update.nodes.items())
            limit = logs(tree) + (1024 if failing == "tree" else nodes + 8192)
            assert failing == "tree" or logs(path) + len(block.encode()) > limit
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            store.commit_block(block, commit, receipts, changes, update)
        except StorageError as exc:
            print("refused at head", store.height, "by", exc)
        prev = block.hash
"""


@pytest.mark.parametrize("failing", ["tree", "chain"])
def test_a_write_the_disk_refuses_is_a_storage_error_and_the_head_stays_whole(tmp_path, failing):
    # A full disk fails one of a block's two writes: the commit raises StorageError
    # (the node's fault) with the head still block 1, and the store reopens there,
    # whole, and takes block 2 again (over the nodes it may have kept).
    path = tmp_path / "db"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path), failing],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    where = path / TREE_DIR if failing == "tree" else path
    assert f"refused at head 1 by write to {where} failed: IO error:" in done.stdout
    assert "File too large" in done.stdout
    model = genesis_state()
    apply_changes(model, changes_for(1))
    with ChainStore(path) as store:
        assert store.height == 1
        assert store.get_block(2) is None
        assert dict(store.iter_state()) == model
        assert store.head_root == state_root_of(model)
        commit_next(store, changes_for(2))
    _check_consistent(path, 2)


def test_open_options(tmp_path):
    with pytest.raises(StorageError, match="no database at"):
        ChainStore(tmp_path / "missing", create=False)
    # sync=False (throwaway stores) commits the same way, only without fsync.
    with ChainStore(tmp_path / "scratch", sync=False) as store:
        store.initialize(GENESIS_HASH, {b"a": b"1"})
        commit_next(store, {b"a": b"2"})
    with ChainStore(tmp_path / "scratch", create=False) as store:
        assert store.height == 1
        assert store.state_get(b"a") == b"2"


def test_commit_refuses_inconsistent_input_and_writes_nothing(tmp_path):
    with ChainStore(tmp_path / "db") as store:
        store.initialize(GENESIS_HASH, genesis_state())
        changes = {b"x": b"1"}
        update = store.prepare_state(changes)
        block, commit, receipts = make_block(1, GENESIS_HASH, update.root, 3)
        cases = [
            (make_block(2, GENESIS_HASH, update.root, 3), "does not follow head"),
            (make_block(1, GENESIS_HASH, ZERO_HASH, 3), "state root"),
            ((block, Commit(1, 0, b"\x02" * 32, ()), receipts), "commit is for block"),
            ((block, Commit(2, 0, block.hash, ()), receipts), "commit is for block"),
            ((block, commit, receipts[:2]), "receipts"),
        ]
        for (b, c, r), reason in cases:
            with pytest.raises(StorageError, match=reason):
                store.commit_block(b, c, r, changes, update)
        hashes = [tx_hash(raw) for raw in block.txs]
        with pytest.raises(StorageError, match="3 txs, 2 hashes"):
            store.commit_block(block, commit, receipts, changes, update, tx_hashes=hashes[:2])
        # A replaced node's reference cut short: refused before either write.
        cut = TreeUpdate(update.root, update.ref, update.nodes, update.base, [b"\x01" * 39])
        with pytest.raises(StorageError, match="reference is not 40 bytes"):
            store.commit_block(block, commit, receipts, changes, cut)
        assert store.height == 0
        assert store.get_block(1) is None
        assert store.state_get(b"x") is None

        store.commit_block(block, commit, receipts, changes, update)
        # An update prepared on an older head is refused even if the root matches.
        stale = TreeUpdate(update.root, update.ref, {}, update.base)
        block2, commit2, receipts2 = make_block(2, block.hash, stale.root, 0)
        with pytest.raises(StorageError, match="prepared on root"):
            store.commit_block(block2, commit2, receipts2, {}, stale)
        assert store.height == 1


def test_open_while_locked_by_another_process(tmp_path):
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, {})
        probe = (
            "import sys\n"
            "from storage import ChainStore\n"
            "from core.errors import StorageError\n"
            "try:\n"
            "    ChainStore(sys.argv[1])\n"
            "except StorageError as exc:\n"
            "    print(exc)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert f"database at {path} is in use by another process" in out.stdout, out
        with pytest.raises(StorageError, match="in use by this process"):
            ChainStore(path)


def test_corrupt_database_is_reported(tmp_path):
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, {b"a": b"1"})
    current = (path / "CURRENT").read_text()
    (path / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(StorageError, match="corrupt"):
        ChainStore(path)
    # The tree's database too, and the chain's is let go again.
    (path / "CURRENT").write_text(current)
    (path / TREE_DIR / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(StorageError, match=f"{TREE_DIR} is corrupt"):
        ChainStore(path)
    with Database(path):
        pass


def _check_consistent(path: Path, at_least: int) -> int:
    """Every block up to head is whole, and the state matches a replay of the changes."""
    with ChainStore(path) as store:
        head = store.height
        assert head >= at_least, "a block reported as committed was lost"
        model = genesis_state()
        prev = GENESIS_HASH
        for height in range(1, head + 1):
            block = store.get_block(height)
            assert block is not None, f"block {height} missing below head {head}"
            assert block.header.height == height
            assert block.header.prev_hash == prev
            assert store.height_of(block.hash) == height
            assert store.get_commit(height).block_hash == block.hash
            assert store.state_root(height) == block.header.state_root
            assert len(store.get_receipts(height)) == len(block.txs)
            for position, tx in enumerate(block.txs):
                assert store.tx_location(tx_hash(tx)) == (height, position)
            apply_changes(model, changes_for(height))
            prev = block.hash
        assert store.get_block(head + 1) is None
        flat = dict(store.iter_state())
        assert flat == model
        assert state_root_of(flat) == store.state_root(head)
        for key in list(flat)[:50]:
            value, proof, root = store.prove(key)
            assert value == flat[key]
            verify_proof(root, key, value, proof)
        return head


def test_sigkill_while_committing_leaves_a_consistent_store(tmp_path):
    path = tmp_path / "db"
    rng = random.Random(2024)
    reported = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, str(FIXTURES), "write", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        try:
            start = reported
            while reported < start + 3:
                line = proc.stdout.readline()
                if not line:
                    pytest.fail(f"writer died: {proc.stderr.read().decode()}")
                reported = int(line)
            # Kill at a random moment: most of the writer's time is inside commits.
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for line in proc.stdout.read().split():
            reported = int(line)
        proc.stdout.close()
        proc.stderr.close()
        head = _check_consistent(path, reported)
        reported = head
    assert reported >= 36


def test_a_block_read_as_stored_is_checked_against_its_certificate(tmp_path):
    # Sent to peers as it is stored (never decoded): a damaged block or certificate
    # must not go out as if valid, and is the node's fault (a StorageError).
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        blocks = [commit_next(store, changes_for(h)) for h in (1, 2, 3, 4)]
        for height, (block, commit, _) in enumerate(blocks, 1):
            assert store.get_encoded_block(height) == (block.encode(), commit.encode())
        assert store.get_encoded_block(5) is None
    raw_write(
        path,
        {
            BLOCK + encode_height(1): blocks[1][0].encode(),  # height 2's block
            BLOCK + encode_height(2): b"\xc1",
            COMMIT + encode_height(3): b"\x93\x01",
            COMMIT + encode_height(4): blocks[2][1].encode(),  # height 3's certificate
        },
    )
    with ChainStore(path) as store:
        with pytest.raises(StorageError, match="stored block 1 .* certificate is for block"):
            store.get_encoded_block(1)
        with pytest.raises(StorageError, match="stored block 2 .* not a block"):
            store.get_encoded_block(2)
        with pytest.raises(StorageError, match=f"stored commit 3 in {path} is corrupt"):
            store.get_encoded_block(3)
        with pytest.raises(StorageError, match="stored block 4 .* at height 3"):
            store.get_encoded_block(4)


def test_a_block_damaged_on_disk_is_not_read(tmp_path):
    # A flipped bit in a transaction's signature still decodes: only LevelDB's checksums
    # tell. Blocks are read with them verified (sent on as they are, never decoded).
    # (Block 2 of 3 big ones: alone in its table block, which no read at opening
    # put in LevelDB's cache unverified.)
    path = tmp_path / "db"
    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        block = [commit_next(store, changes_for(h), n_txs=100)[0] for h in (1, 2, 3)][1]
        store.compact()
    encoded = block.encode()
    damaged = [f for f in path.iterdir() if f.suffix == ".ldb" and encoded in f.read_bytes()]
    assert len(damaged) == 1
    data = damaged[0].read_bytes()
    at = data.index(encoded) + encoded.index(block.txs[0][-64:])
    damaged[0].write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])
    with ChainStore(path) as store:
        with pytest.raises(StorageError, match="read from .* failed: Corruption"):
            store.get_encoded_block(2)
        with pytest.raises(StorageError, match="read from .* failed: Corruption"):
            store.get_block(2)
