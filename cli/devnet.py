"""``liveledger devnet``: create (once) and run a local validator network on loopback.

One devnet process per directory: it holds an exclusive ``flock`` on the directory
itself for as long as it runs (the kernel drops it when the process dies, however it
dies), so a second ``devnet`` on a directory in use is refused before it touches
anything: it never starts nodes on the running devnet's data nor removes its
``devnet.json``. The directory rather than a file in it is locked because a new devnet
directory must be empty when its network is created; the lock covers the creation too.

The devnet's keyring has the genesis it was created with pinned (``cli.trust``): the
devnet made that genesis itself, so no node's word is taken for it, and every command
pointed at the devnet by ``devnet env`` proves and signs against it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click

from cli.trust import pin_genesis
from core.errors import StorageError
from genesis import create_localnet
from storage import ChainStore, OtherLayout

DEVNET_FILE = "devnet.json"
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class NodeProcess:
    home: Path
    url: str
    process: subprocess.Popen[bytes]


def _node_homes(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.glob("node*") if (p / "config.json").is_file()),
        key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 0,
    )


def _check_store(root: Path, home: Path) -> None:
    """Refuse, before any node starts, a devnet whose stores an older version wrote in a
    tree layout this one does not read: a devnet has no peer to sync from, so the way
    out is a new one. Any other trouble is the node's to report when it starts."""
    data = home / json.loads((home / "config.json").read_text()).get("data_dir", "data")
    if not (data / "CURRENT").is_file():
        return
    try:
        ChainStore(data, create=False).close()
    except OtherLayout as exc:
        raise click.ClickException(
            f"{root} holds a devnet an older version made: {exc}. A devnet has no peer to "
            f"sync from: remove {root} to start a new devnet"
        ) from None
    except StorageError:
        return


def _url_of(home: Path) -> str:
    config = json.loads((home / "config.json").read_text())
    return f"http://{config['http_host']}:{config['http_port']}"


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=1.0) as resp:
            status: int = resp.status
    except OSError:
        return False
    return status == 200


def _spawn(
    home: Path, env: dict[str, str], log_level: str, log_format: str = "text"
) -> subprocess.Popen[bytes]:
    log = open(home / "node.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "--log-level",
            log_level,
            "node",
            "start",
            "--home",
            str(home),
            "--log-format",
            log_format,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _stop_all(nodes: list[NodeProcess], timeout: float = 15.0) -> None:
    for n in nodes:
        if n.process.poll() is None:
            n.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for n in nodes:
        try:
            n.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            n.process.kill()
            n.process.wait()


def _lock(root: Path) -> int:
    """Create ``root`` if needed and lock it for this process; refuse if another holds it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise click.ClickException(f"cannot use {root} for a devnet: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise click.ClickException(
            f"the devnet in {root} is already running{_running_pid(root)}: stop it with "
            f"Ctrl-C where it runs, or give another --dir. `liveledger devnet env --dir "
            f"{root}` prints how to use the running one."
        ) from None
    return fd


def _running_pid(root: Path) -> str:
    try:
        pid = json.loads((root / DEVNET_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" (devnet process {pid})"


def devnet_env(root: Path) -> str:
    """Shell exports that point the CLI at the running devnet in ``root``."""
    try:
        doc = json.loads((root / DEVNET_FILE).read_text())
        url = doc["nodes"][0]["url"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise click.ClickException(
            f"no devnet is running in {root} (no {root / DEVNET_FILE}); start one with "
            f"`liveledger devnet --dir {root}`"
        ) from None
    keyring = (root / "keyring").resolve()
    lines = [
        f"export LIVELEDGER_NODE={shlex.quote(url)}",
        f"export LIVELEDGER_KEYRING={shlex.quote(str(keyring))}",
    ]
    if doc.get("empty_passphrase"):
        # Its keys have an empty passphrase (the devnet default): no prompt for them.
        lines.append("export LIVELEDGER_PASSPHRASE=")
    return "\n".join(lines)


def run_devnet(
    root: Path, validators: int, passphrase: str, log_level: str = "INFO", log_format: str = "text"
) -> None:
    lock = _lock(root)
    try:
        _run(root, validators, passphrase, log_level, log_format)
    finally:
        os.close(lock)


def _run(root: Path, validators: int, passphrase: str, log_level: str, log_format: str) -> None:
    if not (root / "genesis.json").is_file():
        if root.exists() and any(root.iterdir()):
            raise click.ClickException(f"{root} exists, is not empty and holds no devnet")
        layout = create_localnet(root, validators, passphrase)
        pin_genesis(layout.keyring_dir, layout.genesis)
        click.echo(f"created devnet in {root} with {validators} validator(s)")
        click.echo(f"pinned its genesis {layout.genesis.hash.hex()} in {layout.keyring_dir}")
    homes = _node_homes(root)
    if len(homes) != validators:
        raise click.ClickException(
            f"{root} holds a devnet of {len(homes)} validator(s), asked for {validators}; "
            f"use another --dir or --validators {len(homes)}"
        )
    for home in homes:
        _check_store(root, home)
    env = dict(os.environ, LIVELEDGER_PASSPHRASE=passphrase)
    stop_requested = False

    def _request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    nodes = [NodeProcess(h, _url_of(h), _spawn(h, env, log_level, log_format)) for h in homes]
    devnet_file = root / DEVNET_FILE
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pending = list(nodes)
        while pending and not stop_requested:
            for n in list(pending):
                if n.process.poll() is not None:
                    raise click.ClickException(
                        f"node in {n.home} exited with {n.process.returncode}; see {n.home / 'node.log'}"
                    )
                if _serving(n.url):
                    pending.remove(n)
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"nodes not serving after {STARTUP_TIMEOUT:.0f} s: {[str(n.home) for n in pending]}"
                )
            time.sleep(0.2)
        if stop_requested:
            return
        doc = {
            "pid": os.getpid(),
            "empty_passphrase": passphrase == "",
            "keyring": str((root / "keyring").resolve()),
            "nodes": [
                {"url": n.url, "home": str(n.home.resolve()), "pid": n.process.pid} for n in nodes
            ],
        }
        tmp = devnet_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(devnet_file)
        faucet = json.loads((root / "keyring" / "faucet.json").read_text())["address"]
        click.echo("devnet is up:")
        for n in nodes:
            click.echo(f"  {n.url}  home={n.home}  pid={n.process.pid}")
        click.echo(f"faucet key 'faucet' in {root / 'keyring'}: {faucet}")
        click.echo(f'point the CLI at it: eval "$(liveledger devnet env --dir {root})"')
        click.echo("Ctrl-C stops every node.")
        while not stop_requested:
            dead = [n for n in nodes if n.process.poll() is not None]
            if len(dead) == len(nodes):
                raise click.ClickException("every node has exited; see the node.log files")
            time.sleep(0.3)
    finally:
        click.echo("stopping devnet...")
        _stop_all(nodes)
        devnet_file.unlink(missing_ok=True)
