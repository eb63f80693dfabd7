"""Validators on separate network hosts: Linux network namespaces on one bridge.

``Hosts`` makes N namespaces, each with one address on a private /24 (a veth pair
whose outer end is on a bridge); the root namespace gets an address on the bridge
too, so the test process reaches every node's HTTP API. Names carry the process id
(unique per run); everything is deleted on exit, on failure and on Ctrl-C alike, and
debris of runs killed outright (SIGKILL) is swept when the next run starts.

``NetnsNetwork`` runs a localnet on them: node i's genesis address is its host's
address; its p2p listener is on the namespace's loopback behind a fault proxy
(``tests/netns/netfault.py``) that listens on the public address, so faults between
hosts are set at run time: latency, jitter, loss, cuts and partitions. Extra hosts
(``extra_hosts``) get their address and proxy too but no genesis validator: a test
puts a member that joins later, an observer or a pruned node there (``add_node``).

Needs root and ``ip`` (iproute2); ``unavailable()`` says why not, so tests skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from genesis import create_localnet
from genesis.localnet import LocalnetLayout
from tests.e2e.helpers import (
    Cluster,
    FaultProxyProcess,
    NodeProcess,
    audit_homes,
    halted_heights,
    set_config,
    wait_until,
)
from vm import ChainParams

PREFIX = "llnet"
HTTP_PORT = 8100
P2P_PORT = 9100
CONTROL_PORT = 9900
_NAME = re.compile(rf"^{PREFIX}(\d+)h\d+$")
_BRIDGE = re.compile(rf"^{PREFIX}br(\d+)\b")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root, as CI does)"
    if shutil.which("ip") is None:
        return "no `ip` command: install iproute2 (`make system-deps` as root)"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip() or made.returncode}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(name: str) -> None:
    """Kill what still runs on the host (a node or proxy orphaned by a killed run),
    then delete it."""
    for pid in _ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


def sweep_stale() -> None:
    """Delete namespaces (and what runs in them) and bridges left by runs whose
    process is gone (killed with SIGKILL: nothing of theirs could clean up)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if (m := _NAME.match(name)) and not _alive(int(m.group(1))):
            _delete_namespace(name)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if (m := _BRIDGE.match(name)) and not _alive(int(m.group(1))):
            _ip("link", "del", name, check=False)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Hosts:
    """N network namespaces on one bridge; a context manager that always cleans up."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 200:
            raise ValueError(f"1..200 hosts, got {count}")
        pid = os.getpid()
        self.count = count
        self.bridge = f"{PREFIX}br{pid}"
        self.names = [f"{PREFIX}{pid}h{i}" for i in range(count)]
        # A /24 of its own per run (by pid), so concurrent runs do not share routes.
        self.subnet = f"10.{100 + (pid >> 8) % 150}.{pid & 0xFF}"
        self.addresses = [f"{self.subnet}.{i + 1}" for i in range(count)]
        self.root_address = f"{self.subnet}.254"
        self._previous_sigterm: Any = None

    def prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program on host ``i``."""
        return ["ip", "netns", "exec", self.names[i]]

    def __enter__(self) -> Hosts:
        sweep_stale()
        # SIGTERM (a CI runner's stop, ``kill``) ends the run through the exception
        # path, so everything below is torn down as on Ctrl-C; SIGKILL leaves debris
        # for the next run's sweep.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        pid = os.getpid()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.root_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            outer, inner = f"llv{pid}h{i}", f"llp{pid}h{i}"
            _ip("netns", "add", name)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", name)
            _ip("link", "set", outer, "master", self.bridge, "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", name, "link", "set", inner, "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def close(self) -> None:
        # The veth pairs first: deleting one end deletes the pair at once, whereas a
        # deleted namespace takes its end with it only when the kernel gets round to
        # it, and the next network of this process reuses the names.
        for i in range(self.count):
            _ip("link", "del", f"llv{os.getpid()}h{i}", check=False)
        for name in self.names:
            _delete_namespace(name)
        _ip("link", "del", self.bridge, check=False)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def __exit__(self, *exc: object) -> None:
        self.close()


class NetnsNetwork:
    """A localnet of ``count`` validators, one per host, each behind a fault proxy,
    and ``extra_hosts`` more hosts (indexes ``count`` on) with a proxy and no node yet.

    Every validator keeps every block (archive pruning), so ``audit`` can check them
    all. ``params`` are genesis's chain parameters; ``config`` goes into every
    validator's config.json (it may be changed before the network is entered, e.g. to
    list observers made on the extra hosts); ``per_node`` (index -> settings) into
    one node's. Use as a context manager: nodes, proxies and namespaces stop on exit,
    and on failure the tail of every node's log is printed.
    """

    def __init__(
        self,
        root: Path,
        count: int = 4,
        *,
        extra_hosts: int = 0,
        params: ChainParams | None = None,
        block_interval_ms: int = 250,
        per_node: dict[int, dict[str, Any]] | None = None,
        **config: Any,
    ) -> None:
        self.root = root
        self.count = count
        self.hosts = Hosts(count + extra_hosts)
        self.params = params
        self.block_interval_ms = block_interval_ms
        self.config = {"timeout_propose_ms": 1000, "pruning": {"archive": True}, **config}
        self.per_node = per_node or {}
        self.layout: LocalnetLayout | None = None
        self.cluster: Cluster | None = None
        self.proxies: list[FaultProxyProcess] = []

    def __enter__(self) -> NetnsNetwork:
        self.hosts.__enter__()
        try:
            self._start()
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def _start(self) -> None:
        hosts = self.hosts
        self.layout = create_localnet(
            self.root / "net",
            self.count,
            "",
            base_http_port=HTTP_PORT,
            base_p2p_port=P2P_PORT,
            params=self.params,
            block_interval_ms=self.block_interval_ms,
            external_hosts=hosts.addresses[: self.count],
        )
        homes = [n.home for n in self.layout.nodes]
        for i, home in enumerate(homes):
            # A node's own settings win over the network's.
            settings = {**self.config, **self.per_node.get(i, {})}
            set_config(home, http_host=hosts.addresses[i], **settings)
        self.cluster = Cluster(homes)
        for i, node in enumerate(self.cluster.nodes):
            node.prefix = hosts.prefix(i)
        for i in range(hosts.count):
            port = self.p2p_port(i)
            proxy = FaultProxyProcess(
                (hosts.addresses[i], port),
                ("127.0.0.1", port),
                (hosts.addresses[i], CONTROL_PORT),
                self.root / f"proxy{i}.log",
                hosts.prefix(i),
            )
            self.proxies.append(proxy)
            proxy.launch()
        for i, proxy in enumerate(self.proxies):
            wait_until(proxy.up, 30, f"fault proxy on host {i}")
        self.cluster.start(timeout=60)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self.cluster is not None:
                self.cluster.__exit__(exc_type, exc, tb)
        finally:
            for proxy in self.proxies:
                proxy.stop()
            self.hosts.close()

    # --- the network ---------------------------------------------------------------

    @property
    def nodes(self) -> list[NodeProcess]:
        assert self.cluster is not None
        return self.cluster.nodes

    def __getitem__(self, i: int) -> NodeProcess:
        return self.nodes[i]

    def p2p_port(self, host: int) -> int:
        """The p2p port of ``host``'s node: on the namespace's loopback, and on the
        host's address where its proxy listens."""
        return P2P_PORT + host

    def http_port(self, host: int) -> int:
        return HTTP_PORT + host

    def add_node(self, home: Path, host: int, timeout: float = 90) -> NodeProcess:
        """Start the node of ``home`` (made for an extra host: p2p on the loopback at
        ``p2p_port(host)``, published and proxied at the host's address) on ``host``;
        it joins ``nodes``, so it stops with the others and its log shows on failure."""
        assert self.cluster is not None
        if not self.count <= host < self.hosts.count:
            raise ValueError(f"host {host} is not an extra host")
        node = NodeProcess(home)
        node.prefix = self.hosts.prefix(host)
        self.cluster.nodes.append(node)
        node.start(timeout=timeout)
        return node

    def faults(self, hosts: Iterable[int] | None = None, **settings: Any) -> list[Any]:
        """Give the proxies of ``hosts`` (all by default) these settings (replacing any
        held): ``default`` (faults for every source), ``by_source``, ``blocked``
        (see ``netfault``). No settings: no faults. Returns each proxy's stats."""
        chosen = range(self.hosts.count) if hosts is None else hosts
        return [self.proxies[i].set(**settings) for i in chosen]

    def partition(self, *groups: Sequence[int], **faults: Any) -> None:
        """Cut the hosts into ``groups``: between groups nothing connects, and every
        connection between them is cut now. ``faults`` (``default=...``) stay on."""
        for group in groups:
            others = [self.hosts.addresses[j] for j in range(self.hosts.count) if j not in group]
            self.faults(group, blocked=others, **faults)

    def heal(self, **faults: Any) -> None:
        """No partition any more; ``faults`` (``default=...``) stay on."""
        self.faults(**faults)

    def heights(self, indexes: Iterable[int] | None = None) -> list[int]:
        chosen = range(len(self.nodes)) if indexes is None else indexes
        return [self.nodes[i].height() for i in chosen]

    def wait_height(
        self, height: int, indexes: Iterable[int] | None = None, timeout: float = 60
    ) -> list[int]:
        assert self.cluster is not None
        chosen = [self.nodes[i] for i in (range(len(self.nodes)) if indexes is None else indexes)]
        return self.cluster.wait_height(height, chosen, timeout)

    def audit_all(self, more: Iterable[Path] = ()) -> None:
        """``liveledger audit verify`` on every validator's home (all archive) and on
        the ``more`` archive homes, a few at a time."""
        assert self.layout is not None
        audit_homes([n.home for n in self.layout.nodes] + list(more))


def still(net: NetnsNetwork, indexes: Sequence[int], settle_s: float, watch_s: float) -> list[int]:
    """Heights of ``indexes`` once settled, checked unchanged over ``watch_s``
    (``halted_heights``)."""
    return halted_heights(lambda: net.heights(indexes), settle_s, watch_s)
