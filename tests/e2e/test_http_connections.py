"""A node's descriptors against idle HTTP clients: a real node process started under
a soft open-file limit of 1,024 (``prlimit``), as many systems give a service; and
its connection caps, in the process ``liveledger start`` runs."""

from __future__ import annotations

import resource
import shutil
import socket
import time
import urllib.parse

import pytest

from genesis import create_localnet
from tests.e2e.helpers import NodeProcess, set_config

HARD = 4096
IDLE = 1100


def _open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc/<pid>/limits")


def test_idle_http_connections_beyond_the_soft_limit_neither_refuse_clients_nor_halt_consensus(
    tmp_path,
):
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE + 200:
        if hard != resource.RLIM_INFINITY and hard < IDLE + 200:
            pytest.skip(f"this process may open only {hard} files")
        # The test's own client sockets; given back at the end (this worker runs on).
        resource.setrlimit(resource.RLIMIT_NOFILE, (IDLE + 200, hard))
    layout = create_localnet(tmp_path / "net", 1, "")
    home = layout.nodes[0].home
    # Room for all of them from one address: the open-file limit is what is tested.
    set_config(home, block_interval_ms=100, http={"max_per_address": 4 * IDLE})
    node = NodeProcess(home)
    node.prefix = ["prlimit", f"--nofile=1024:{HARD}", "--"]
    idle: list[socket.socket] = []
    node.start()
    try:
        assert node.proc is not None
        # The node asked for its hard limit.
        assert _open_files_limit(node.proc.pid) == (HARD, HARD)
        url = urllib.parse.urlsplit(node.url)
        for _ in range(IDLE):
            idle.append(socket.create_connection((url.hostname, url.port), timeout=5))
        before = node.height()
        deadline = time.monotonic() + 15
        while node.height() < before + 5:
            assert node.alive
            assert time.monotonic() < deadline, "no new blocks while clients sat idle"
            time.sleep(0.2)
    finally:
        for s in idle:
            s.close()
        node.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_node_process_refuses_connections_over_the_address_cap(tmp_path):
    layout = create_localnet(tmp_path / "net", 1, "")
    home = layout.nodes[0].home
    set_config(home, block_interval_ms=100, http={"max_per_address": 4})
    node = NodeProcess(home)
    held: list[socket.socket] = []
    node.start()
    try:
        url = urllib.parse.urlsplit(node.url)
        address = (url.hostname, url.port)
        for _ in range(4):
            held.append(socket.create_connection(address, timeout=10))
        extra = socket.create_connection(address, timeout=10)
        answer = _answer(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
        assert b'"busy"' in answer
        # Another address is served meanwhile.
        other = socket.create_connection(address, timeout=10, source_address=("127.0.0.2", 0))
        other.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(other).startswith(b"HTTP/1.1 200")
        other.close()
    finally:
        for s in held:
            s.close()
        node.stop()
