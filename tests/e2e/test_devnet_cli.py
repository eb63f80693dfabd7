"""The README's user path with real processes: devnet, keys, transfer, proven query, audit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from genesis import load_genesis
from tests.e2e.helpers import REPO, cli_env, run_cli


def test_devnet_transfer_query_prove_and_audit(tmp_path):
    root = tmp_path / "devnet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "devnet", "--dir", str(root), "--validators", "1"],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (root / "devnet.json").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "devnet did not come up"
            time.sleep(0.2)
        nodes = json.loads((root / "devnet.json").read_text())["nodes"]
        assert len(nodes) == 1
        url, home, pid = nodes[0]["url"], nodes[0]["home"], nodes[0]["pid"]
        os.kill(pid, 0)  # the reported process exists
        keyring = str(root / "keyring")

        made = run_cli("keys", "new", "alice", "--keyring", keyring)
        assert made.returncode == 0, made.stderr
        alice = made.stdout.strip().splitlines()[-1]
        shown = run_cli("keys", "show", "alice", "--keyring", keyring)
        assert shown.stdout.strip() == alice

        sent = run_cli(
            "tx",
            "transfer",
            "--keyring",
            keyring,
            "--from",
            "faucet",
            "--to",
            alice,
            "--amount",
            "777000",
            "--node",
            url,
            "--wait",
        )
        assert sent.returncode == 0, sent.stderr
        tx_hash = sent.stdout.split()[0]
        assert len(tx_hash) == 64

        queried = run_cli("query", "account", alice, "--node", url, "--prove")
        assert queried.returncode == 0, queried.stderr
        doc = json.loads(queried.stdout)
        assert doc["balance"] == 777000
        assert doc["proof"]["verified"] is True

        # Overspending fails in execution: non-zero exit with the error code.
        broke = run_cli(
            "tx",
            "transfer",
            "--keyring",
            keyring,
            "--from",
            "alice",
            "--to",
            alice,
            "--amount",
            "1000000",
            "--node",
            url,
            "--wait",
        )
        assert broke.returncode != 0
        assert "insufficient_funds" in broke.stderr

        # Audit of a running node works on a copy.
        audited = run_cli("audit", "verify", "--home", home)
        assert audited.returncode == 0, audited.stderr
        assert "verified height" in audited.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    audited = run_cli("audit", "verify", "--home", str(root / "node0"))
    assert audited.returncode == 0, audited.stderr

    # A second run resumes the same chain.
    again = subprocess.Popen(
        [sys.executable, "-m", "cli", "devnet", "--dir", str(root), "--validators", "1"],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (root / "devnet.json").exists():
            assert again.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.2)
        url = json.loads((root / "devnet.json").read_text())["nodes"][0]["url"]
        queried = run_cli("query", "account", alice, "--node", url)
        min_fee = load_genesis(root / "genesis.json").params.min_fee
        # The failed transfer paid its fee and nothing else.
        assert json.loads(queried.stdout)["balance"] == 777000 - min_fee
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(30)
