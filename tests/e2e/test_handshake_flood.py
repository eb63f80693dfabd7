"""Strangers holding every validator's p2p handshake slots cannot halt a network (issue 10).

Two of four validators restart while strangers (other 127.0.0.x addresses)
hold unfinished handshakes open against every validator's p2p port: the
restarted ones must get their connections back, or there is no quorum and
no transfer commits. Subprocesses import the worktree's code (helpers set
PYTHONPATH to this repository).
"""

from __future__ import annotations

import json
import time

from core import PrivateKey
from genesis import create_localnet
from tests.e2e.helpers import Cluster, Signer, faucet_key, submit, wait_tx
from tests.p2p.flood import HandshakeFlood, HandshakeFloodThread

SOURCES = [f"127.0.0.{i}" for i in range(2, 6)]
# 48 per port: more than the 32 slots main had, from only four addresses.
PER_SOURCE = 12


def test_transfer_commits_while_strangers_flood_every_p2p_port(tmp_path):
    layout = create_localnet(tmp_path / "net", 4, "", block_interval_ms=250)
    homes = [n.home for n in layout.nodes]
    ports = [json.loads((home / "config.json").read_text())["p2p_port"] for home in homes]
    with Cluster(homes, timeout_propose_ms=600) as net:
        net.start()
        net.wait_height(2, timeout=60)
        faucet = Signer(faucet_key(layout.dir), layout.chain_id)
        faucet.sync_nonce(net[0].url)
        # Two validators go down: no quorum until they reconnect, through the flood.
        net[2].kill()
        net[3].kill()
        flood = HandshakeFlood(ports, SOURCES, PER_SOURCE, retry=0.1)
        with HandshakeFloodThread(flood):
            net.start([2, 3])
            start = time.monotonic()
            tx_hash = submit(net[0].url, faucet.transfer(PrivateKey.generate().address, 77))
            # The flood lasts the whole wait: the restarted validators must get their
            # connections back through it, or there is no quorum and nothing commits.
            # How long it took is printed, not asserted (~2.5 s with the gate).
            doc = wait_tx(net[0].url, tx_hash, timeout=40)
            elapsed = time.monotonic() - start
            stats = flood.stats
        assert doc["receipt"]["code"] == "ok"
    print(
        f"\ntransfer committed {elapsed:.2f} s after two validators restarted into the flood; "
        f"strangers made {stats.connects} connections ({stats.refused} refused on sight, "
        f"at most {stats.peak_open} open at once)"
    )
