"""``liveledger node start`` on a home whose ports another process holds."""

from __future__ import annotations

import json
import socket

import pytest

from genesis import create_localnet
from tests.e2e.helpers import run_cli


@pytest.mark.parametrize(("kind", "setting"), [("HTTP", "http_port"), ("p2p", "p2p_port")])
def test_a_port_in_use_is_named_with_the_setting_that_moves_it(tmp_path, kind, setting):
    # A second node on one machine, or any program on 26657: an operator's everyday
    # mistake, to be told which port and where to change it, not "unexpected failure".
    create_localnet(tmp_path, 1, "")
    home = tmp_path / "node0"
    config = json.loads((home / "config.json").read_text())
    host, port = config["http_host" if kind == "HTTP" else "p2p_host"], config[setting]
    with socket.socket() as taken:
        taken.bind((host, port))
        taken.listen()
        result = run_cli("node", "start", "--home", str(home))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen for {kind} on {host}:{port}"), result.stderr
    assert f"{setting} in {home / 'config.json'}" in last, last
    assert "unexpected failure" not in result.stderr
