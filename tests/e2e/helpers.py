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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core import PrivateKey, TxBody, format_address, sign_tx
from core.keystore import load_key
from tests.netns.netfault import control
from vm import Transfer

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
        host = config.get("http_host", "127.0.0.1")
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.url = f"http://{host}:{config['http_port']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv = ["-m", "cli", "node", "start", "--home", str(home)]
        # Put before the command line: ["ip", "netns", "exec", NAME] runs the node on
        # its own network host (tests/netns).
        self.prefix: list[str] = []

    def byzantine(self, behaviour: str, *extra: str) -> None:
        """From the next launch on, run through the test-only entry point
        (``tests/e2e/byzantine.py``) with ``behaviour``."""
        self.argv = ["-m", "tests.e2e.byzantine", "--home", str(self.home)]
        self.argv += ["--behaviour", behaviour, *extra]

    def start(self, timeout: float = 30.0) -> None:
        """Launch and wait until it serves HTTP; one that does not is stopped (no caller
        holds it yet to stop it)."""
        self.launch()
        try:
            self.wait_serving(timeout)
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Spawn the node process without waiting for it (start several at once)."""
        with open(self.home / "test-node.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, *self.argv],
                env=cli_env(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_serving(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
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

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def height(self) -> int:
        return int(self.status()["height"])

    def log_tail(self, chars: int = 4000) -> str:
        path = self.home / "test-node.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


class FaultProxyProcess:
    """The fault proxy (``tests/netns/netfault.py``) in a process of its own: ``listen``
    forwarded to ``target``, its faults set at run time through its ``control`` port.
    ``prefix`` runs it on a network host (tests/netns). A context manager: it stops on
    exit."""

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        control: tuple[str, int],
        log: Path,
        prefix: Sequence[str] = (),
    ) -> None:
        self.listen = listen
        self.target = target
        self.control_at = control
        self.log = log
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FaultProxyProcess:
        self.launch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def launch(self) -> None:
        argv = [sys.executable, "-m", "tests.netns.netfault"]
        for flag, (host, port) in (
            ("--listen", self.listen),
            ("--target", self.target),
            ("--control", self.control_at),
        ):
            argv += [flag, f"{host}:{port}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *argv], env=cli_env(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )

    def up(self) -> bool:
        """Whether it answers on its control port (RuntimeError once it exited)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"fault proxy exited: {self.log.read_text(errors='replace')}")
        try:
            self.set()
        except OSError:
            return False
        return True

    def set(self, **settings: Any) -> Any:
        """Replace its settings (``default``, ``by_source``, ``blocked``: see netfault;
        none: no faults); its stats."""
        return control(self.control_at, settings)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- multi-node networks (consensus end-to-end tests) ---------------------------------


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout.

    Connection errors count as "not yet" (a node may be starting or catching up).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except OSError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from (
                last_error
            )
        time.sleep(interval)


class Cluster:
    """The validator processes of a localnet; every process is stopped on exit.

    On an exception the tail of every node's log is printed (pytest shows it
    with the failure), so a failing end-to-end test explains itself.
    """

    def __init__(self, homes: Sequence[Path], **config: Any) -> None:
        for home in homes:
            if config:
                set_config(home, **config)
        self.nodes = [NodeProcess(home) for home in homes]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for node in self.nodes:
            if node.alive:
                node.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]  # started above
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(20)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
        if exc_type is not None:
            for node in self.nodes:
                print(f"===== {node.home.name} =====\n{node.log_tail()}")

    def __getitem__(self, index: int) -> NodeProcess:
        return self.nodes[index]

    def start(self, indexes: Iterable[int] | None = None, timeout: float = 60.0) -> None:
        """Start the given nodes (all by default) at once and wait until each serves HTTP."""
        chosen = [self.nodes[i] for i in (range(len(self.nodes)) if indexes is None else indexes)]
        for node in chosen:
            node.launch()
        for node in chosen:
            node.wait_serving(timeout)

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.alive]

    def heights(self, nodes: Sequence[NodeProcess] | None = None) -> list[int]:
        return [n.height() for n in (self.live() if nodes is None else nodes)]

    def wait_height(
        self, height: int, nodes: Sequence[NodeProcess] | None = None, timeout: float = 60.0
    ) -> list[int]:
        """Wait until every given node (the live ones by default) reached ``height``."""
        chosen = self.live() if nodes is None else list(nodes)
        return wait_until(
            lambda: (hs := self.heights(chosen)) and min(hs) >= height and hs,
            timeout,
            f"height {height} on {[n.home.name for n in chosen]}",
        )


def halted_heights(
    heights: Callable[[], list[int]], settle_s: float, watch_s: float, tries: int = 5
) -> list[int]:
    """The ``heights`` of nodes without a quorum, once settled (unchanged over
    ``settle_s``), checked unchanged over ``watch_s``.

    A block certified before the quorum went may still land after it, at most one
    height past the highest node's then; on a busy machine that can take more than one
    ``settle_s``, so settling gets ``tries`` spells before it counts as moving.
    """
    at_loss = heights()
    before = at_loss
    for _ in range(tries):
        time.sleep(settle_s)
        settled = heights()
        if settled == before:
            break
        before = settled
    else:
        raise AssertionError(f"heights kept moving without a quorum: {at_loss} -> {before}")
    assert max(before) <= max(at_loss) + 1, (
        f"moved more than a block in flight without a quorum: {at_loss} -> {before}"
    )
    time.sleep(watch_s)
    after = heights()
    assert after == before, f"moved without a quorum: {before} -> {after}"
    return after


def header(url: str, height: int) -> dict[str, Any]:
    """The header of block ``height`` as a node serves it (KeyError if it has none)."""
    doc = http_json(f"{url}/v1/blocks/{height}?txs=false")
    if "header" not in doc:
        raise KeyError(f"{url} has no block {height}: {doc}")
    return doc["header"]


def block_hashes(url: str, upto: int, start: int = 1) -> list[str]:
    """Hashes of blocks start..upto on one node."""
    return [header(url, h)["hash"] for h in range(start, upto + 1)]


def held_hashes(url: str, start: int, upto: int) -> dict[int, str]:
    """Hashes of blocks start..upto on one node, by height, but for those it pruned
    meanwhile (a pruning node's window moves while it is read)."""
    out = {}
    for height in range(start, upto + 1):
        doc = http_json(f"{url}/v1/blocks/{height}?txs=false")
        if doc.get("code") == "pruned":
            continue
        if "header" not in doc:
            raise KeyError(f"{url} has no block {height}: {doc}")
        out[height] = doc["header"]["hash"]
    return out


def assert_one_chain(nodes: Sequence[NodeProcess]) -> dict[str, int]:
    """Every node's blocks agree with every other's at every height both hold (no fork).

    Returns each node's height. Heights are read first, so blocks committed
    while comparing are not looked at. A node that state-synced or pruned holds
    blocks from its ``retained.blocks_from`` on.
    """
    statuses = {n.url: http_json(f"{n.url}/v1/status") for n in nodes}
    heights = {url: int(s["height"]) for url, s in statuses.items()}
    chains = {}
    for url, s in statuses.items():
        first = max(1, int(s.get("retained", {}).get("blocks_from", 1)))
        chains[url] = held_hashes(url, first, heights[url])
    for url, hashes in chains.items():
        for other, theirs in chains.items():
            for h in hashes.keys() & theirs.keys():
                assert hashes[h] == theirs[h], (
                    f"fork at height {h}: {url} has {hashes[h]}, {other} has {theirs[h]}"
                )
    return heights


def audit_homes(homes: Sequence[Path], timeout: float = 180) -> None:
    """``liveledger audit verify`` on each of ``homes`` (archives), two at a time: each
    must verify its chain from genesis."""
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(lambda h: run_cli("audit", "verify", "--home", str(h), timeout=timeout), homes)
        )
    for home, done in zip(homes, results, strict=True):
        assert done.returncode == 0, f"audit of {home}: {done.stdout}\n{done.stderr}"
        assert "verified height" in done.stdout, f"audit of {home}: {done.stdout}"


def faucet_key(net_dir: Path) -> PrivateKey:
    return load_key(net_dir / "keyring" / "faucet.json", "")


class Signer:
    """Signs transactions of one key with sequential nonces (the caller keeps them in order)."""

    def __init__(self, key: PrivateKey, chain_id: str, nonce: int = 0, fee: int = 1000) -> None:
        self.key = key
        self.chain_id = chain_id
        self.nonce = nonce
        self.fee = fee

    @property
    def address(self) -> str:
        return format_address(self.key.address)

    def sync_nonce(self, url: str) -> None:
        self.nonce = http_json(f"{url}/v1/accounts/{self.address}")["nonce"]

    def sign(self, tx_type: str, payload: bytes, expiry_height: int = 3000) -> bytes:
        body = TxBody(self.nonce, self.fee, expiry_height, tx_type, payload)
        self.nonce += 1
        return sign_tx(self.key, self.chain_id, body).encode()

    def transfer(self, to: bytes, amount: int) -> bytes:
        return self.sign("transfer", Transfer(to, amount).encode())


def submit(url: str, raw: bytes) -> str:
    """POST one transaction; its hash, or AssertionError with the node's refusal."""
    doc = http_json(f"{url}/v1/txs", json.dumps({"tx": raw.hex()}).encode())
    assert "hash" in doc, f"{url} refused the transaction: {doc}"
    return doc["hash"]


def tx_status(url: str, tx_hash: str) -> dict[str, Any] | None:
    doc = http_json(f"{url}/v1/txs/{tx_hash}")
    return doc if doc.get("status") == "committed" else None


def wait_tx(url: str, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until ``url`` reports the transaction committed; its document (height, receipt)."""
    return wait_until(lambda: tx_status(url, tx_hash), timeout, f"tx {tx_hash} on {url}")


def http_text(url: str) -> tuple[str, str]:
    """GET ``url``: (content type, body as text)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.headers["Content-Type"], resp.read().decode()
