"""``liveledger devnet`` on a directory an older version left."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import main
from genesis import create_localnet
from storage import ChainStore, Database
from storage.db import META


def test_a_devnet_an_older_version_made_is_refused_with_the_way_out(tmp_path):
    # Its stores hold a tree layout this node does not read, and a devnet has no peer
    # to sync from: the command says so before any node starts, and how to go on.
    root = tmp_path / "devnet"
    create_localnet(root, 1, "devnet")
    data = root / "node0" / "data"
    with ChainStore(data) as store:
        store.initialize(b"\x07" * 32, {b"k": b"v"})
    with Database(data) as db:
        batch = db.new_batch()
        batch.put(META + b"tree_layout", b"\x02")
        db.write(batch)
    result = CliRunner().invoke(main, ["devnet", "--dir", str(root), "--validators", "1"])
    assert result.exit_code != 0
    assert "layout 2" in result.output and f"remove {root} to start a new devnet" in result.output
    assert not (root / "node0" / "node.log").exists()  # no node was started
