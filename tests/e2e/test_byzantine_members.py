"""Byzantine members and producers in real processes cannot halt the honest validators.

Each misbehaving node runs through the test-only entry point ``tests/e2e/byzantine.py``
(no config key makes a node misbehave):

- a member (admitted by governance, not a producer) relays every proposal with a
  transaction removed and answers every node that is behind with tampered
  ``FinalizedBlock``s; an honest validator restarted while it runs catches up anyway;
- a producer dates its blocks a day ahead, or at 2**64 - 1.

In both the honest validators keep finalizing, never halt, and ``audit verify`` passes
on every honest home.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from consensus.governance import ProposeAdmitMember, VoteProposal
from core import PrivateKey
from core.keystore import load_key
from genesis import create_localnet
from tests.e2e.helpers import (
    Cluster,
    NodeProcess,
    Signer,
    assert_one_chain,
    faucet_key,
    header,
    http_json,
    run_cli,
    set_config,
    submit,
    wait_tx,
    wait_until,
)

INTERVAL_MS = 200
# The chain's time_precision_ms: no final block time is further ahead of a clock.
PRECISION_MS = 500


def audit_all(homes: list[Path]) -> None:
    for home in homes:
        audited = run_cli("audit", "verify", "--home", str(home), timeout=120)
        assert audited.returncode == 0, f"{home}: {audited.stdout}\n{audited.stderr}"
        assert "verified height" in audited.stdout


def keep_rising(net: Cluster, nodes: list[NodeProcess], blocks: int, timeout: float) -> None:
    """Every node in ``nodes`` is alive and finalizes ``blocks`` more blocks."""
    start = max(net.heights(nodes))
    net.wait_height(start + blocks, nodes, timeout=timeout)
    dead = [n.home.name for n in nodes if not n.alive]
    assert not dead, f"honest nodes exited: {dead}"


def log_lines(node: NodeProcess, marker: str) -> int:
    path = node.home / "test-node.log"
    return path.read_text(errors="replace").count(marker) if path.exists() else 0


class Feeder:
    """Submits a transfer every few blocks in the background, so blocks have bodies."""

    def __init__(self, signer: Signer, url: str) -> None:
        self.signer = signer
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(INTERVAL_MS / 2000):
            try:
                doc = http_json(
                    f"{self.url}/v1/txs",
                    json.dumps(
                        {"tx": self.signer.transfer(PrivateKey.generate().address, 1).hex()}
                    ).encode(),
                )
                if "hash" not in doc:
                    self.signer.sync_nonce(self.url)
            except OSError:
                # The node is busy or restarting: the next round trip resyncs.
                continue


def test_tampering_member_cannot_halt_a_catching_up_validator(tmp_path):
    layout = create_localnet(tmp_path / "net", 4, "", block_interval_ms=INTERVAL_MS)
    # The tampering member: its own key and ports, the network's genesis.
    extra = create_localnet(tmp_path / "extra", 1, "", block_interval_ms=INTERVAL_MS).nodes[0]
    (extra.home / "genesis.json").write_bytes(layout.genesis_path.read_bytes())
    honest = [n.home for n in layout.nodes]
    set_config(
        extra.home,
        moniker="tamper",
        peers=[
            {"public_key": n.public_key.hex(), "host": "127.0.0.1", "port": n.p2p_port}
            for n in layout.nodes
        ],
    )
    for node in layout.nodes:
        peers = json.loads(node.config_path.read_text())["peers"]
        peers.append(
            {"public_key": extra.public_key.hex(), "host": "127.0.0.1", "port": extra.p2p_port}
        )
        set_config(node.home, peers=peers)

    with Cluster([*honest, extra.home], timeout_propose_ms=500) as net:
        validators, tamper = net.nodes[:4], net[4]
        tamper.byzantine("tamper-relay")
        net.start(range(4))
        net.wait_height(1, validators, timeout=60)
        url = validators[0].url

        # Governance admits the tamperer as a member (it never becomes a producer).
        signers = [Signer(load_key(n.key_path, ""), layout.chain_id) for n in layout.nodes]
        for s in signers:
            s.sync_nonce(url)
        admit = ProposeAdmitMember(extra.public_key, "tamper").encode()
        doc = wait_tx(url, submit(url, signers[0].sign("propose_admit_member", admit)))
        assert doc["receipt"]["code"] == "ok", doc
        (created,) = [e for e in doc["receipt"]["events"] if e["kind"] == "proposal_created"]
        approve = VoteProposal(int(created["attrs"]["proposal_id"])).encode()
        votes = [submit(url, s.sign("vote_proposal", approve)) for s in signers[:3]]
        docs = [wait_tx(url, v) for v in votes]
        assert any(e["kind"] == "member_admitted" for d in docs for e in d["receipt"]["events"])

        faucet = Signer(faucet_key(layout.dir), layout.chain_id)
        faucet.sync_nonce(url)
        with Feeder(faucet, url):
            net.start([4])
            # It relays tampered proposals to the validators.
            wait_until(
                lambda: log_lines(tamper, "byzantine: tampered proposal") >= 3,
                30,
                "tampered proposals relayed",
            )
            keep_rising(net, validators, 5, timeout=30)

            # A validator restarts while the tamperer answers every node that is behind
            # with tampered finalized blocks, faster than any honest peer does.
            victim = validators[3]
            victim.stop()
            others = validators[:3]
            keep_rising(net, others, 10, timeout=30)
            served_before = log_lines(tamper, "byzantine: tampered finalized block")
            victim.start()
            wait_until(
                lambda: log_lines(tamper, "byzantine: tampered finalized block") > served_before,
                30,
                "tampered finalized blocks sent to the restarted validator",
            )
            target = max(net.heights(others))
            wait_until(lambda: victim.height() >= target, 45, "the victim to catch up")
            keep_rising(net, validators, 5, timeout=30)
        assert tamper.alive, "the tamperer itself kept running"
        assert_one_chain(validators)

    audit_all(honest)


@pytest.mark.parametrize("ahead", ["86400000", "max"])
def test_producer_dating_blocks_ahead_cannot_move_the_chain_clock(tmp_path, ahead):
    layout = create_localnet(tmp_path / "net", 4, "", block_interval_ms=INTERVAL_MS)
    homes = [n.home for n in layout.nodes]
    with Cluster(homes, timeout_propose_ms=500) as net:
        validators, future = net.nodes[:3], net[3]
        future.byzantine("future-time", "--ahead-ms", ahead)
        net.start()
        # Its turn comes every fourth height: several of them pass.
        keep_rising(net, validators, 12, timeout=60)
        wait_until(lambda: log_lines(future, "byzantine: proposing") >= 2, 30, "future proposals")
        keep_rising(net, validators, 4, timeout=30)
        top = min(net.heights(validators))
        now_ms = time.time() * 1000
        times = [header(validators[0].url, h)["time_ms"] for h in range(1, top + 1)]
        # No block is dated ahead of this (honest) clock by more than the precision.
        assert max(times) <= now_ms + PRECISION_MS, (max(times) - now_ms, times)
        assert times == sorted(times)
        assert_one_chain(validators)
    audit_all(homes[:3])
