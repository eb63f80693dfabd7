"""Crash faults with real processes: SIGKILL one validator, then two, then bring them back.

With n = 4 the quorum is 3: one crash costs only the crashed proposer's rounds,
two crashes halt the chain, and the halt must not fork it.
"""

from __future__ import annotations

from core import PrivateKey
from genesis import create_localnet
from tests.e2e.helpers import (
    Cluster,
    Signer,
    assert_one_chain,
    faucet_key,
    halted_heights,
    http_json,
    submit,
    wait_tx,
)


def test_one_crash_keeps_finality_two_halt_without_fork_and_recovery(tmp_path):
    layout = create_localnet(tmp_path / "net", 4, "", block_interval_ms=250)
    homes = [n.home for n in layout.nodes]
    # A crashed proposer's round times out sooner than the default 3 s.
    with Cluster(homes, timeout_propose_ms=600) as net:
        net.start()
        net.wait_height(3, timeout=60)

        # One validator killed: the other three keep finalizing, transfers included.
        net[3].kill()
        start = max(net.heights())
        net.wait_height(start + 8, timeout=40)
        faucet = Signer(faucet_key(layout.dir), layout.chain_id)
        faucet.sync_nonce(net[0].url)
        dest = PrivateKey.generate()
        tx_hash = submit(net[1].url, faucet.transfer(dest.address, 55))
        for node in net.live():
            assert wait_tx(node.url, tx_hash)["receipt"]["code"] == "ok"
        assert_one_chain(net.live())

        # Two killed: no quorum. After the block in flight (if any), no height moves.
        net[2].kill()
        halted = halted_heights(net.heights, settle_s=2.0, watch_s=5.0)
        # The two live nodes agree on every block they hold: a halt, not a fork.
        heights = assert_one_chain(net.live())
        assert max(heights.values()) - min(heights.values()) <= 1, heights

        # One of them returns: the chain continues from where it stopped, on the same blocks.
        net.start([2])
        net.wait_height(max(halted) + 5, timeout=60)
        heights = assert_one_chain(net.live())
        assert len(heights) == 3
        dest2 = PrivateKey.generate()
        tx_hash = submit(net[2].url, faucet.transfer(dest2.address, 66))
        for node in net.live():
            assert wait_tx(node.url, tx_hash)["receipt"]["code"] == "ok"

        # And the last one catches up too; all four hold one chain.
        net.start([3])
        target = max(net.heights()) + 3
        net.wait_height(target, timeout=60)
        heights = assert_one_chain(net.nodes)
        assert len(heights) == 4
        for node in net.nodes:
            acct = http_json(f"{node.url}/v1/accounts/{Signer(dest2, '').address}")
            assert acct["balance"] == 66
    # Validators killed mid-vote and restarted never signed two things at one step.
    for home in homes:
        log = (home / "test-node.log").read_text()
        assert "conflicting votes" not in log, f"{home.name} saw a double sign"
