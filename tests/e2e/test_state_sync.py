"""Joining by state sync, hostile chunk servers, pruned nodes and observers, as real processes.

A fifth node starts from the genesis document alone: it syncs the state of a
snapshot height from the running validators (chunks verified against the state
root of a header whose certificate it checked), then follows blocks. Members let
it in as their observer (``observers`` in their config): see docs/node.md.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
from contextlib import ExitStack
from pathlib import Path

from core import PrivateKey
from core.keystore import save_key
from genesis import create_localnet
from genesis.localnet import LOCAL_HOST, free_ports, write_node_config
from tests.e2e.helpers import (
    Cluster,
    FaultProxyProcess,
    NodeProcess,
    Signer,
    faucet_key,
    header,
    http_json,
    set_config,
    submit,
    wait_tx,
    wait_until,
)
from vm import ChainParams, account_key

SNAPSHOT_INTERVAL = 20


def make_net(tmp_path: Path, joiner: PrivateKey):
    params = dataclasses.replace(ChainParams.default(), epoch_length=16)
    layout = create_localnet(tmp_path / "net", 4, "", params=params, block_interval_ms=200)
    homes = [n.home for n in layout.nodes]
    config = {
        "timeout_propose_ms": 500,
        "snapshot_interval": SNAPSHOT_INTERVAL,
        # Small chunks: the devnet's state takes many of them, from several peers.
        "snapshot_chunk_bytes": 2048,
        "observers": [joiner.public_key.hex()],
    }
    return layout, homes, config


def joiner_home(
    layout, root: Path, key: PrivateKey, peers: list[tuple[bytes, str, int]] | None = None, **config
) -> Path:
    """A new node's home: the genesis document, its own key, the members as peers
    (``peers``: (key, host, port) of each, where it dials them)."""
    home = root / "joiner"
    home.mkdir(mode=0o700)
    shutil.copy(layout.nodes[0].home / "genesis.json", home / "genesis.json")
    save_key(home / "node_key.json", key, "", "joiner")
    http_port, p2p_port = free_ports(2)
    write_node_config(
        home,
        moniker="joiner",
        http_port=http_port,
        p2p_port=p2p_port,
        block_interval_ms=200,
        peers=peers or [(n.public_key, LOCAL_HOST, n.p2p_port) for n in layout.nodes],
    )
    set_config(home, timeout_propose_ms=500, **config)
    return home


def load_chain(net: Cluster, layout) -> None:
    """A few transfers, so the state is more than genesis."""
    faucet = Signer(faucet_key(layout.dir), layout.chain_id)
    faucet.sync_nonce(net[0].url)
    sent = [
        submit(net[i % 4].url, faucet.transfer(PrivateKey.generate().address, 10 + i))
        for i in range(8)
    ]
    for tx_hash in sent:
        assert wait_tx(net[0].url, tx_hash)["receipt"]["code"] == "ok"


def assert_follows(joiner: NodeProcess, net: Cluster, synced_at: int) -> int:
    """The joiner reaches the others' tip and holds the same blocks from its sync on."""
    tip = max(net.heights())
    wait_until(lambda: joiner.height() >= tip + 3, 90, f"joiner to follow past {tip + 3}")
    common = min(joiner.height(), *net.heights())
    for height in (synced_at, synced_at + 1, common):
        assert header(joiner.url, height)["hash"] == header(net[0].url, height)["hash"]
    return common


def test_new_node_state_syncs_from_the_devnet_then_follows_and_serves_as_observer(tmp_path):
    key = PrivateKey.generate()
    layout, homes, config = make_net(tmp_path, key)
    with Cluster(homes, **config) as net:
        net.start()
        load_chain(net, layout)
        net.wait_height(2 * SNAPSHOT_INTERVAL + 5, timeout=120)

        home = joiner_home(layout, tmp_path, key, observer=True, state_sync={"enabled": True})
        joiner = NodeProcess(home)
        net.nodes.append(joiner)
        joiner.start(timeout=120)
        status = joiner.status()
        synced_at = status["retained"]["blocks_from"]
        # A snapshot height, and a recent one: no replay from genesis happened.
        assert synced_at % SNAPSHOT_INTERVAL == 0 and synced_at >= 2 * SNAPSHOT_INTERVAL
        assert status["retained"]["states_from"] == synced_at
        assert status["observer"] is True
        common = assert_follows(joiner, net, synced_at)

        # The same state, with proofs, as the validators serve it.
        faucet = Signer(faucet_key(layout.dir), layout.chain_id).key.address
        path = f"/v1/state/{account_key(faucet).hex()}?height={common}"
        ours, theirs = http_json(joiner.url + path), http_json(net[0].url + path)
        assert ours == theirs and ours["value"] is not None
        # Before its snapshot the joiner never held anything: a clear, stable refusal.
        for path in (
            f"/v1/blocks/{synced_at - 1}",
            f"/v1/state/{account_key(faucet).hex()}?height=3",
        ):
            assert http_json(joiner.url + path)["code"] == "pruned"
        # It never signed: no certificate it followed carries its key.
        for height in range(synced_at + 1, common + 1):
            doc = http_json(f"{joiner.url}/v1/blocks/{height}?txs=false")
            assert key.public_key.hex() not in {s["validator"] for s in doc["commit"]["signatures"]}
        # And it serves transactions like any node: submitted there, final everywhere.
        sender = Signer(faucet_key(layout.dir), layout.chain_id)
        sender.sync_nonce(joiner.url)
        tx_hash = submit(joiner.url, sender.transfer(PrivateKey.generate().address, 5))
        assert wait_tx(net[1].url, tx_hash)["receipt"]["code"] == "ok"


def test_peer_serving_corrupted_chunks_is_refused_and_sync_completes_from_others(tmp_path):
    key = PrivateKey.generate()
    layout, homes, config = make_net(tmp_path, key)
    # The joiner reaches the honest validators only through fault proxies that refuse it
    # until it has asked the hostile one (node 0) for a chunk and refused it: a syncer
    # asks only as many peers as it has subtrees wanted, so with every peer open it
    # could finish from the others before ever asking node 0.
    honest = layout.nodes[1:]
    ports = free_ports(2 * len(honest))
    gates = [
        FaultProxyProcess(
            (LOCAL_HOST, ports[2 * i]),
            (LOCAL_HOST, node.p2p_port),
            (LOCAL_HOST, ports[2 * i + 1]),
            tmp_path / f"gate{i + 1}.log",
        )
        for i, node in enumerate(honest)
    ]
    with Cluster(homes, **config) as net, ExitStack() as stack:
        for gate in gates:
            stack.enter_context(gate)
        net[0].byzantine("bad-chunks")
        net.start()
        for gate in gates:
            wait_until(gate.up, 30, "a fault proxy")
            gate.set(blocked=[LOCAL_HOST])
        load_chain(net, layout)
        net.wait_height(SNAPSHOT_INTERVAL + 5, timeout=120)

        hostile = layout.nodes[0]
        peers = [(hostile.public_key, LOCAL_HOST, hostile.p2p_port)] + [
            (node.public_key, LOCAL_HOST, gate.listen[1])
            for node, gate in zip(honest, gates, strict=True)
        ]
        home = joiner_home(
            layout, tmp_path, key, peers, observer=True, state_sync={"enabled": True}
        )
        joiner = NodeProcess(home)
        net.nodes.append(joiner)
        joiner.launch()
        refused = f"state sync: peer {hostile.public_key.hex()[:12]} refused: chunk node"
        wait_until(
            lambda: refused in joiner.log_tail(200_000),
            120,
            "the joiner to refuse the hostile peer's chunk",
        )
        for gate in gates:
            gate.set()
        joiner.wait_serving(120)
        synced_at = joiner.status()["retained"]["blocks_from"]
        assert_follows(joiner, net, synced_at)
        # The hostile validator did serve corrupted chunks, and was caught at them.
        assert "byzantine: corrupted chunk" in net[0].log_tail(200_000)
        log = joiner.log_tail(200_000)
        assert refused in log, log[-3000:]


def test_pruned_node_serves_recent_reads_and_refuses_old_ones_with_a_stable_code(tmp_path):
    params = dataclasses.replace(ChainParams.default(), epoch_length=16)
    layout = create_localnet(tmp_path / "net", 4, "", params=params, block_interval_ms=100)
    homes = [n.home for n in layout.nodes]
    pruning = {"keep_blocks": 40, "keep_states": 10, "interval": 10}
    with Cluster(homes, timeout_propose_ms=500, snapshot_interval=50, pruning=pruning) as net:
        net.start()
        faucet = Signer(faucet_key(layout.dir), layout.chain_id)
        faucet.sync_nonce(net[0].url)
        early = submit(net[0].url, faucet.transfer(PrivateKey.generate().address, 7))
        assert wait_tx(net[0].url, early)["height"] < 40
        net.wait_height(130, timeout=240)

        node = net[1]
        retained = wait_until(
            lambda: (r := node.status()["retained"])["blocks_from"] >= 80 and r,
            60,
            "a pruning pass past height 80",
        )
        head = node.height()
        # The window: at most keep_blocks + interval blocks and keep_states + interval states.
        assert head - retained["blocks_from"] <= 40 + 10 + 1
        assert head - retained["states_from"] <= 10 + 10 + 1
        # Recent reads work, with proofs.
        faucet_state = account_key(faucet.key.address).hex()
        recent = http_json(f"{node.url}/v1/state/{faucet_state}?height={head - 2}")
        assert recent["value"] is not None
        assert header(node.url, head - 5)["height"] == head - 5
        # Old ones are gone, each with the same stable code.
        for path in ("/v1/blocks/1", "/v1/blocks/30", f"/v1/state/{faucet_state}?height=20"):
            doc = http_json(node.url + path)
            assert doc["code"] == "pruned", (path, doc)
        # A transaction of a pruned block is no longer indexed: the node says it may
        # have been in a block it pruned, not that it was never included.
        assert http_json(f"{node.url}/v1/txs/{early}")["code"] == "maybe_pruned"
        # The kept snapshot height still proves (a joining node may be syncing from it).
        snapshot = head // 50 * 50
        if snapshot >= retained["states_from"] - 50 and snapshot > 0:
            kept = http_json(f"{node.url}/v1/state/{faucet_state}?height={snapshot}")
            assert kept.get("value") is not None, kept
        # The chain went on finalizing through every pruning pass.
        net.wait_height(head + 5, timeout=30)
        assert json.dumps(node.status()["retained"])


def test_a_node_stops_on_sigterm_while_it_waits_to_state_sync(tmp_path):
    """A state sync waits for peers for as long as it takes: a signal meanwhile must stop
    the node at once (cleanly, status 0), not after a sync that may never come."""
    key = PrivateKey.generate()
    layout, _homes, _config = make_net(tmp_path, key)
    # Nobody to sync from: the members are not running.
    home = joiner_home(layout, tmp_path, key, observer=True, state_sync={"enabled": True})
    joiner = NodeProcess(home)
    joiner.launch()
    assert joiner.proc is not None
    log = home / "test-node.log"
    wait_until(lambda: b"p2p listening" in log.read_bytes(), 30, "the joiner to start its sync")
    joiner.proc.send_signal(signal.SIGTERM)
    assert joiner.proc.wait(15) == 0
    assert b"node stopped" in log.read_bytes()
