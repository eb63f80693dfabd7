"""A node killed with SIGKILL under load keeps every transaction it reported committed."""

from __future__ import annotations

import random
import threading
import time

from benches.common import fund_accounts
from core import PrivateKey, TxBody, format_address, pack_raw, sign_tx
from genesis import create_localnet
from node.run import EXIT_CONSENSUS_HALTED
from tests.e2e.helpers import NodeProcess, http_json, run_cli, set_config
from vm import Transfer


class Loader(threading.Thread):
    """Sends nonce-ordered transfers from many accounts until stopped."""

    def __init__(self, url: str, keys: list[PrivateKey], chain_id: str, nonces: dict[bytes, int]):
        super().__init__(daemon=True)
        self.url, self.keys, self.chain_id, self.nonces = url, keys, chain_id, nonces
        self.halt = threading.Event()

    def run(self) -> None:
        sink = self.keys[0].address
        while not self.halt.is_set():
            raws = []
            for key in self.keys:
                n = self.nonces[key.public_key]
                body = TxBody(n, 1000, 3000, "transfer", Transfer(sink, 1).encode())
                raws.append(sign_tx(key, self.chain_id, body).encode())
            try:
                doc = http_json(self.url + "/v1/txs", pack_raw(raws), "application/msgpack")
            except OSError:
                return  # the node died
            for key, result in zip(self.keys, doc.get("results", []), strict=False):
                if result["code"] == "accepted":
                    self.nonces[key.public_key] += 1
            time.sleep(0.05)


def committed_txs(url: str, upto: int) -> dict[str, int]:
    """Every tx hash in blocks 1..upto, with its height (as the node reports them)."""
    seen = {}
    for height in range(1, upto + 1):
        block = http_json(f"{url}/v1/blocks/{height}")
        for tx in block["txs"]:
            seen[tx["hash"]] = height
    return seen


def test_sigkill_under_load_loses_nothing_and_audit_passes(tmp_path):
    layout = create_localnet(tmp_path / "net", 1, "")
    keys = [PrivateKey.generate() for _ in range(40)]
    fund_accounts(layout.dir, keys, 10**9)
    home = layout.nodes[0].home
    set_config(home, block_interval_ms=100)
    node = NodeProcess(home)
    rng = random.Random(7)
    reported: dict[str, int] = {}
    nonces = {k.public_key: 0 for k in keys}

    for cycle in range(3):
        node.start()
        chain_id = node.status()["chain_id"]
        # After a restart the next nonces are what the chain committed.
        for key in keys:
            acct = http_json(f"{node.url}/v1/accounts/{format_address(key.address)}")
            nonces[key.public_key] = acct["nonce"]
        # Everything reported committed before the last kill is still there, at the same height.
        if reported:
            now = committed_txs(node.url, node.status()["height"])
            missing = {h: ht for h, ht in reported.items() if now.get(h) != ht}
            assert not missing, f"cycle {cycle}: {len(missing)} committed txs lost"
        loader = Loader(node.url, keys, chain_id, nonces)
        loader.start()
        time.sleep(1.5 + rng.random() * 1.5)
        height = node.status()["height"]
        reported = committed_txs(node.url, height)
        node.kill()
        loader.halt.set()
        loader.join(10)
        assert reported, "no transactions were committed under load"

    node.start()
    before = node.status()["height"]
    now = committed_txs(node.url, before)
    assert all(now.get(h) == ht for h, ht in reported.items())
    deadline = time.monotonic() + 10
    while node.status()["height"] <= before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.status()["height"] > before + 2, "chain did not continue after restart"
    assert node.stop() == 0

    result = run_cli("audit", "verify", "--home", str(home))
    assert result.returncode == 0, result.stderr
    assert "verified height" in result.stdout


def test_a_node_whose_commit_fails_exits_and_restarts_from_its_wal(tmp_path):
    """A failed write halts the consensus engine; the process must end with
    ``EXIT_CONSENSUS_HALTED`` rather than serve a head that never moves again, and a
    restart (a supervisor's) must go on from where it stopped."""
    fault_height = 12
    layout = create_localnet(tmp_path / "net", 1, "")
    home = layout.nodes[0].home
    set_config(home, block_interval_ms=100)
    node = NodeProcess(home)
    node.byzantine("io-fault", "--at-height", str(fault_height))
    node.start()
    assert node.proc is not None
    assert node.proc.wait(60) == EXIT_CONSENSUS_HALTED
    log = (home / "test-node.log").read_text()
    assert "consensus halted" in log and "No space left on device (injected)" in log
    node.argv = ["-m", "cli", "node", "start", "--home", str(home)]
    node.start()
    try:
        deadline = time.monotonic() + 30
        while node.height() < fault_height + 5:
            assert time.monotonic() < deadline, "no blocks after the restart"
            time.sleep(0.2)
    finally:
        node.stop()
