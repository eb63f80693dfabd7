"""A real node (real LevelDB, real HTTP socket on 127.0.0.1) inside the test process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.keystore import load_key
from genesis import create_localnet
from node.run import build_app
from node.service import Node


def make_home(tmp_path: Path, **config_overrides: object):
    layout = create_localnet(tmp_path / "net", 1, "")
    home = layout.nodes[0].home
    config_path = home / "config.json"
    config = json.loads(config_path.read_text())
    config.update({"block_interval_ms": 50, **config_overrides})
    config_path.write_text(json.dumps(config))
    return layout, home


@pytest.fixture
async def node_client(tmp_path):
    """(client, node, faucet key) for a single-validator node serving on a real socket."""
    layout, home = make_home(tmp_path, max_request_bytes=256 * 1024)
    node = Node.from_home(home, "")
    server = TestServer(build_app(node), host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    faucet = load_key(layout.faucet_key_path, "")
    try:
        yield client, node, faucet
    finally:
        await client.close()
