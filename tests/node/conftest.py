"""A real node (real LevelDB, real HTTP socket on 127.0.0.1) inside the test process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core import PrivateKey
from core.keystore import load_key
from genesis import create_localnet
from node.service import Node
from tests.served import node_server
from vm import ChainParams


def make_home(tmp_path: Path, params: ChainParams | None = None, **config_overrides: object):
    """A one-validator localnet (of ``params``, else the defaults) and its node's home,
    its config.json overridden (blocks every 50 ms unless said otherwise)."""
    layout = create_localnet(tmp_path / "net", 1, "", params=params)
    home = layout.nodes[0].home
    config_path = home / "config.json"
    config = json.loads(config_path.read_text())
    config.update({"block_interval_ms": 50, **config_overrides})
    config_path.write_text(json.dumps(config))
    return layout, home


def refusals(metrics: str, reason: str, bound: str) -> float:
    """``liveledger_http_refused_total{reason, bound}`` in the ``/metrics`` text
    ``metrics``; every series is there from the start, so a missing one fails."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "liveledger_http_refused_total" and sample.labels == {
                "reason": reason,
                "bound": bound,
            }:
                return sample.value
    raise AssertionError(f"no liveledger_http_refused_total of {reason}, {bound}")


async def until(done: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait (polling) for ``done()`` to hold; fail after ``timeout`` seconds."""

    async def poll() -> None:
        while not done():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@contextlib.asynccontextmanager
async def served_node(
    tmp_path: Path, **config_overrides: object
) -> AsyncIterator[tuple[TestClient, Node, PrivateKey]]:
    """(client, node, faucet key) for a single-validator node serving on a real socket,
    its config overridden as ``make_home`` does."""
    layout, home = make_home(tmp_path, **config_overrides)
    node = Node.from_home(home, "")
    client = TestClient(node_server(node))
    await client.start_server()
    faucet = load_key(layout.faucet_key_path, "")
    try:
        yield client, node, faucet
    finally:
        await client.close()


@pytest.fixture
async def node_client(tmp_path):
    """(client, node, faucet key) for a single-validator node serving on a real socket."""
    async with served_node(tmp_path, max_request_bytes=256 * 1024) as served:
        yield served
