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
        # The devnet pinned the genesis it made in its keyring: the transfer is signed for
        # that chain id, not the one the node states.
        assert "node's word" not in sent.stderr

        queried = run_cli("query", "account", alice, "--node", url, "--prove")
        assert queried.returncode == 0, queried.stderr
        doc = json.loads(queried.stdout)
        assert doc["balance"] == 777000
        assert doc["proof"]["verified"] is True
        # With the keyring, the proof is checked against the pinned genesis.
        pinned = run_cli("query", "account", alice, "--node", url, "--prove", "--keyring", keyring)
        assert pinned.returncode == 0 and "node's word" not in pinned.stderr, pinned.stderr
        genesis_hash = load_genesis(root / "genesis.json").hash.hex()
        assert json.loads(pinned.stdout)["proof"]["genesis_hash"] == genesis_hash

        # Overspending would fail in execution: the simulation refuses it, nothing is sent ...
        overspend = ["tx", "transfer", "--keyring", keyring, "--from", "alice", "--to", alice]
        overspend += ["--amount", "1000000", "--node", url, "--wait"]
        refused = run_cli(*overspend)
        assert refused.returncode == 3 and "insufficient_funds" in refused.stderr
        assert "nothing was sent" in refused.stderr and refused.stdout == ""
        # ... unless asked to: then it fails in its block, with the same code.
        broke = run_cli(*overspend, "--no-simulate")
        assert broke.returncode == 3
        assert "insufficient_funds" in broke.stderr

        # A second devnet on the directory in use is refused up front and harms nothing.
        second = run_cli("devnet", "--dir", str(root), "--validators", "1")
        assert second.returncode != 0 and "already running" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert (root / "devnet.json").exists() and proc.poll() is None
        assert json.loads(run_cli("query", "status", "--node", url).stdout)["height"] >= 1
        # The exports point every command at the running devnet.
        env = run_cli("devnet", "env", "--dir", str(root))
        assert env.returncode == 0, env.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines()
        )
        assert exports["LIVELEDGER_NODE"] == url
        assert exports["LIVELEDGER_KEYRING"] == str((root / "keyring").resolve())
        assert exports["LIVELEDGER_PASSPHRASE"] == ""

        # Audit of a running node works on a copy.
        audited = run_cli("audit", "verify", "--home", home)
        assert audited.returncode == 0, audited.stderr
        assert "verified height" in audited.stdout
        bad = run_cli("audit", "verify", "--home", str(root / "keyring"))
        assert bad.returncode != 0 and bad.stderr.startswith("error: ")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    # Stopped: nothing to point at.
    gone = run_cli("devnet", "env", "--dir", str(root))
    assert gone.returncode != 0 and "no devnet is running" in gone.stderr
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
