"""Real node processes for end-to-end tests (loopback only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    return dict(os.environ, LIVELEDGER_PASSPHRASE="", PYTHONPATH=str(REPO))


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def set_config(home: Path, **values: Any) -> None:
    path = home / "config.json"
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config))


def http_json(url: str, data: bytes | None = None, ctype: str = "application/json") -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


class NodeProcess:
    def __init__(self, home: Path) -> None:
        self.home = home
        config = json.loads((home / "config.json").read_text())
        self.url = f"http://127.0.0.1:{config['http_port']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.home / "test-node.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "node", "start", "--home", str(self.home)],
            env=cli_env(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"node exited: {(self.home / 'test-node.log').read_text()[-3000:]}"
                )
            try:
                self.status()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("node did not start serving")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/v1/status", timeout=2) as resp:
            return json.loads(resp.read())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
