"""A validator that was down while the others moved 50+ blocks ahead catches up to the same state.

The epoch is short, so catching up crosses several elections (each block's
producer set comes from the state the node rebuilt itself). Afterwards every
home passes the offline audit.
"""

from __future__ import annotations

import dataclasses

from core import PrivateKey
from genesis import create_localnet
from tests.e2e.helpers import (
    Cluster,
    Signer,
    assert_one_chain,
    faucet_key,
    header,
    run_cli,
    submit,
    wait_tx,
    wait_until,
)
from vm import ChainParams

AHEAD = 50


def test_restarted_validator_catches_up_to_same_state_root_and_audits_pass(tmp_path):
    params = dataclasses.replace(ChainParams.default(), epoch_length=16)
    layout = create_localnet(tmp_path / "net", 4, "", params=params, block_interval_ms=200)
    homes = [n.home for n in layout.nodes]
    with Cluster(homes, timeout_propose_ms=500) as net:
        net.start()
        net.wait_height(3, timeout=60)
        faucet = Signer(faucet_key(layout.dir), layout.chain_id)
        faucet.sync_nonce(net[0].url)

        # Node 3 stops cleanly; the others go on, with transactions, 50+ blocks.
        net[3].stop()
        stopped_at = max(net.heights())
        sent = []
        for i in range(6):
            sent.append(
                submit(net[i % 3].url, faucet.transfer(PrivateKey.generate().address, i + 1))
            )
        net.wait_height(stopped_at + AHEAD + 2, timeout=120)
        for tx_hash in sent:
            assert wait_tx(net[0].url, tx_hash)["receipt"]["code"] == "ok"
        ahead = min(net.heights())
        assert ahead - stopped_at >= AHEAD

        # It restarts and catches up to the others' tip (which keeps moving).
        net.start([3])
        wait_until(lambda: net[3].height() >= ahead, 90, f"node3 to catch up to {ahead}")
        net.wait_height(ahead + 2, timeout=30)
        common = min(net.heights())
        headers = [header(n.url, common) for n in net.nodes]
        assert len({h["hash"] for h in headers}) == 1, headers
        assert len({h["state_root"] for h in headers}) == 1, headers
        # It took part again: it signs commits once it has caught up.
        key3 = layout.nodes[3].public_key.hex()
        wait_until(
            lambda: (
                key3
                in {
                    s["validator"]
                    for s in header(net[0].url, net[0].height())["last_commit"]["signatures"]
                }
            ),
            30,
            "node3's precommit in a commit certificate",
        )
        assert_one_chain(net.nodes)

    # Everything stopped: every home passes the offline audit from genesis.
    for node in layout.nodes:
        audited = run_cli("audit", "verify", "--home", str(node.home), timeout=180)
        assert audited.returncode == 0, f"{node.home}: {audited.stdout}\n{audited.stderr}"
        assert "verified height" in audited.stdout
