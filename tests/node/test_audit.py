"""``node.audit``: a replay from genesis over a node home's store (the audit's
acceptance runs are the e2e and netns suites, through ``liveledger audit verify``)."""

from __future__ import annotations

import pytest

from consensus import make_commit
from core import StorageError
from core.keystore import load_key
from genesis import create_localnet, load_genesis
from node.audit import audit_home
from node.chain import Chain
from node.config import load_config
from node.service import build_registry


def _home_with_blocks(tmp_path, blocks: int):
    layout = create_localnet(tmp_path / "net", 1, "")
    node = layout.nodes[0]
    genesis = load_genesis(layout.genesis_path)
    producer = load_key(node.key_path, "")
    config = load_config(node.home)
    store = config.storage.open_store(node.home / config.data_dir)
    chain = Chain(store, genesis, build_registry())
    for h in range(1, blocks + 1):
        executed = chain.build([], producer, genesis.genesis_time_ms + h * 1_000)
        chain.commit(executed, make_commit([producer], genesis.chain_id, h, 0, executed.block.hash))
    return node.home, store


def test_an_archive_home_audits_from_genesis(tmp_path):
    home, store = _home_with_blocks(tmp_path, 4)
    store.close()
    report = audit_home(home)
    assert (report.height, report.txs, report.copied) == (4, 0, False)


@pytest.mark.parametrize("pruned", ["blocks", "states"])
def test_a_pruned_home_is_refused_up_front_as_pruned_not_as_damage(tmp_path, pruned):
    # A replay from genesis needs every block and the genesis state; a pruning node's
    # store lacks them by design, which must not read as a store missing what it should
    # hold ("block or commit 1 missing", "state at height 0 is pruned").
    home, store = _home_with_blocks(tmp_path, 4)
    if pruned == "blocks":
        store.prune_blocks(3)
    else:
        store.prune_states(3)
    store.close()
    with pytest.raises(StorageError) as info:
        audit_home(home)
    message = str(info.value)
    assert "pruned" in message and "archive" in message, message
    assert "missing" not in message, message
