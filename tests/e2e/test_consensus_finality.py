"""Four validator processes run by `liveledger devnet` finalize one chain.

Transfers sent to any node are final on every node, and all nodes hold the
same block (hash and state root) at each height. The same devnet serves the
Prometheus check.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import PrivateKey, format_address
from genesis import create_localnet
from tests.e2e.helpers import (
    REPO,
    Signer,
    assert_one_chain,
    cli_env,
    faucet_key,
    header,
    http_json,
    http_text,
    run_cli,
    submit,
    tx_status,
    wait_until,
)

VALIDATORS = 4


@dataclass
class Devnet:
    dir: Path
    urls: list[str]
    homes: list[Path]


class _Url:
    """What ``assert_one_chain`` needs of a node: its URL and its height."""

    def __init__(self, url: str) -> None:
        self.url = url

    def height(self) -> int:
        return int(http_json(self.url + "/v1/status")["height"])


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    root = tmp_path_factory.mktemp("consensus") / "devnet"
    # Made here with a short block interval; `devnet` runs an existing network as it is.
    create_localnet(root, VALIDATORS, "", block_interval_ms=250)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "devnet", "--dir", str(root), "--validators", "4"],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: proc.poll() is None and (root / "devnet.json").exists(),
            90,
            "the devnet to come up",
        )
        nodes = json.loads((root / "devnet.json").read_text())["nodes"]
        assert len(nodes) == VALIDATORS
        yield Devnet(root, [n["url"] for n in nodes], [Path(n["home"]) for n in nodes])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            print(out.decode(errors="replace"))
            for home in sorted(root.glob("node*")):
                log = (home / "node.log").read_text(errors="replace")[-3000:]
                print(f"===== {home.name} =====\n{log}")
    assert proc.returncode == 0, "devnet did not stop cleanly on SIGINT"


def test_transfers_to_any_node_are_final_on_all_with_one_state_root(devnet: Devnet) -> None:
    urls = devnet.urls
    # Every validator runs, sees the other three, and the four are the producers.
    statuses = wait_until(
        lambda: (
            (s := [http_json(u + "/v1/status") for u in urls])
            and all(x["height"] >= 2 and len(x["peers"]) == VALIDATORS - 1 for x in s)
            and s
        ),
        60,
        "four connected validators finalizing",
    )
    keys = sorted(s["validator"] for s in statuses)
    for s in statuses:
        assert sorted(s["producers"]) == keys
        assert s["finalized_height"] == s["height"]
    chain_id = statuses[0]["chain_id"]

    # One transfer through the CLI, sent to the last node.
    cli_dest = PrivateKey.generate()
    sent = run_cli(
        "tx",
        "transfer",
        "--keyring",
        str(devnet.dir / "keyring"),
        "--from",
        "faucet",
        "--to",
        format_address(cli_dest.address),
        "--amount",
        "4242",
        "--node",
        urls[-1],
        "--wait",
    )
    assert sent.returncode == 0, sent.stderr
    expected = {cli_dest.address: 4242}
    hashes = [sent.stdout.split()[0]]

    # Then transfers with consecutive nonces, round-robin over the nodes: each node
    # gets nonces the others hold, so gossip must bring them together.
    faucet = Signer(faucet_key(devnet.dir), chain_id)
    faucet.sync_nonce(urls[0])
    for i in range(16):
        dest = PrivateKey.generate()
        amount = 1000 + i
        hashes.append(submit(urls[i % len(urls)], faucet.transfer(dest.address, amount)))
        expected[dest.address] = amount

    # Every transfer is final on every node, at the same height, and succeeded.
    def final_everywhere() -> dict[str, int] | None:
        where = {}
        for tx_hash in hashes:
            docs = [tx_status(u, tx_hash) for u in urls]
            if not all(docs):
                return None
            assert len({d["height"] for d in docs}) == 1, f"{tx_hash} at different heights: {docs}"
            assert docs[0]["receipt"]["code"] == "ok", docs[0]
            where[tx_hash] = docs[0]["height"]
        return where

    where = wait_until(final_everywhere, 60, "every transfer final on every node")
    for address, amount in expected.items():
        for u in urls:
            acct = http_json(f"{u}/v1/accounts/{format_address(address)}")
            assert acct["balance"] == amount, (u, acct)

    # Same block hash and state root on every node at a common height past the transfers.
    target = max(where.values()) + 1
    wait_until(
        lambda: min(http_json(u + "/v1/status")["height"] for u in urls) >= target,
        30,
        f"height {target} everywhere",
    )
    headers = [header(u, target) for u in urls]
    assert len({h["hash"] for h in headers}) == 1, headers
    assert len({h["state_root"] for h in headers}) == 1, headers
    # Blocks are produced by the whole set, not by one node.
    producers = {header(urls[0], h)["producer"] for h in range(1, target + 1)}
    assert len(producers) >= 3, producers
    # And no node disagrees with another at any height.
    assert_one_chain([_Url(u) for u in urls])


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_metrics_expose_heights_rounds_peers_mempool_shards_and_block_time(devnet: Devnet) -> None:
    urls = devnet.urls
    wait_until(
        lambda: min(http_json(u + "/v1/status")["height"] for u in urls) >= 3,
        60,
        "a few blocks everywhere",
    )
    for url, home in zip(urls, devnet.homes, strict=True):
        shards = json.loads((home / "config.json").read_text())["mempool"]["shards"]
        status = http_json(url + "/v1/status")
        ctype, text = http_text(url + "/metrics")
        assert ctype.startswith("text/plain"), ctype
        metrics = _samples(text)

        def value(name: str, metrics: dict = metrics, url: str = url) -> float:
            assert name in metrics, f"{url}/metrics has no {name}: {sorted(metrics)}"
            return metrics[name][0][1]

        # Heights: the metrics follow the chain (a block may land between the two reads).
        assert 3 <= value("liveledger_height") <= status["height"] + 5
        assert value("liveledger_finalized_height") >= 3
        assert value("liveledger_round") >= 0
        assert value("liveledger_peers") == VALIDATORS - 1
        by_shard = {labels["shard"]: v for labels, v in metrics["liveledger_mempool_size"]}
        assert sorted(by_shard) == [str(i) for i in range(shards)], by_shard
        assert all(v >= 0 for v in by_shard.values())
        assert value("liveledger_block_execution_seconds_count") >= 3
        assert value("liveledger_block_execution_seconds_sum") > 0

    # Heights keep moving in the metrics too (waited for, not slept on: a loaded
    # machine may take longer than a block interval).
    def metric_height() -> float:
        return _samples(http_text(urls[0] + "/metrics")[1])["liveledger_height"][0][1]

    first = metric_height()
    wait_until(lambda: metric_height() > first, 30, "the height metric to move")
