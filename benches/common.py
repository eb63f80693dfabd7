"""Shared pieces of the benchmarks: the verification ceiling and a devnet under test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from core import PrivateKey, SignDomain, verify
from genesis import Genesis, GenesisAccount, load_genesis, save_genesis


def verify_ceiling(samples: int = 20_000, threads: int = 2) -> float:
    """Ed25519 verifications per second with ``threads`` threads (PyNaCl releases the GIL)."""
    key = PrivateKey.generate()
    msgs = [i.to_bytes(8, "big") * 12 for i in range(samples)]
    sigs = [key.sign(SignDomain.TX, "bench", m) for m in msgs]
    pub = key.public_key

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            verify(pub, SignDomain.TX, "bench", msgs[i], sigs[i])

    step = samples // threads
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(lambda i: run(i * step, (i + 1) * step), range(threads)))
        elapsed = time.perf_counter() - started
    return step * threads / elapsed


def fund_accounts(root: Path, keys: list[PrivateKey], balance: int) -> None:
    """Add funded accounts to a freshly created devnet's genesis (before its first start)."""
    genesis = load_genesis(root / "genesis.json")
    extra = tuple(GenesisAccount(k.address, balance) for k in keys)
    updated: Genesis = replace(genesis, accounts=genesis.accounts + extra)
    for path in [root / "genesis.json", *root.glob("node*/genesis.json")]:
        path.unlink()
        save_genesis(path, updated)


class Devnet:
    """``liveledger devnet`` as a subprocess; ``nodes`` are read from devnet.json."""

    def __init__(self, root: Path, validators: int, log_level: str = "INFO") -> None:
        self.root = root
        self.log_level = log_level
        self.validators = validators
        self.process: subprocess.Popen[bytes] | None = None
        self.nodes: list[dict] = []

    def start(self, timeout: float = 90.0) -> None:
        env = dict(os.environ, LIVELEDGER_PASSPHRASE="")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "--log-level",
                self.log_level,
                "devnet",
                "--dir",
                str(self.root),
                "--validators",
                str(self.validators),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        path = self.root / "devnet.json"
        while not path.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"devnet exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("devnet did not come up")
            time.sleep(0.2)
        self.nodes = json.loads(path.read_text())["nodes"]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
