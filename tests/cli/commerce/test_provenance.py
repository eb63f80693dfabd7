"""`liveledger item history` pages through a long history at one height and proves it
(against a real node whose pages hold two events, as 257 would take as many
transactions), and refuses a node whose pages do not make one history."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from apps.commerce import http_items
from cli.client import NodeClient
from cli.main import main
from core import format_address
from tests.apps.commerce.test_http import GTIN, Driver, make_item, running_driver

PATH = f"/v1/items/01/{GTIN}/21/SN-9"


@pytest.fixture
async def driver(tmp_path, monkeypatch):
    """A node whose item pages hold at most two events."""
    limit = dataclasses.replace(http_items.ITEM_LIMIT, high=2, default=2)
    monkeypatch.setattr(http_items, "ITEM_LIMIT", limit)
    async with running_driver(tmp_path) as d:
        yield d


def node_url(d: Driver) -> str:
    return str(d.client.make_url("")).rstrip("/")


async def history(d: Driver, *args: str) -> Result:
    """`item history GTIN SN-9 ARGS` against the node under test, off the event loop."""
    argv = ["item", "history", GTIN, "SN-9", "--node", node_url(d), *args]
    return await asyncio.to_thread(CliRunner().invoke, main, argv)


def node_answers(monkeypatch, change: Callable[[str], str]) -> list[str]:
    """Send every request the CLI makes to ``change(path)`` instead; the paths asked."""
    asked: list[str] = []
    get = NodeClient.get

    def spy(self: NodeClient, path: str) -> Any:
        asked.append(path)
        return get(self, change(path))

    monkeypatch.setattr(NodeClient, "get", spy)
    return asked


async def test_a_long_history_is_fetched_a_page_at_a_time_and_proven(driver, monkeypatch):
    d = driver
    maker = await make_item(d, "SN-9", 5)
    asked = node_answers(monkeypatch, lambda path: path)
    done = await history(d, "--prove")
    assert done.exit_code == 0, (done.stdout, done.stderr)
    out = json.loads(done.stdout)
    height = out["height"]
    assert [e["seq"] for e in out["item"]["history"]] == [0, 1, 2, 3, 4]
    assert [e["read_point"] for e in out["item"]["history"]][1:] == [
        "urn:r1",
        "urn:r2",
        "urn:r3",
        "urn:r4",
    ]
    assert out["proof"]["verified"] is True
    assert (out["proof"]["height"], out["proof"]["events"], out["proof"]["pages"]) == (height, 5, 3)
    assert out["proof"]["custodian"] == format_address(maker.address)
    # Every page after the first is asked for at the first page's height.
    pages = [p for p in asked if p.startswith(PATH)]
    assert pages == [
        PATH,
        f"{PATH}?from_seq=2&height={height}",
        f"{PATH}?from_seq=4&height={height}",
    ]
    # Without --prove, the same history as the node tells it.
    done = await history(d)
    assert done.exit_code == 0, done.stderr
    assert [e["seq"] for e in json.loads(done.stdout)["item"]["history"]] == [0, 1, 2, 3, 4]


async def test_the_bound_on_events_fetched_is_in_help_and_kept(driver):
    d = driver
    await make_item(d, "SN-9", 5)
    for prove in (("--prove",), ()):
        done = await history(d, "--max-events", "4", *prove)
        assert done.exit_code != 0 and done.stdout == ""
        assert "over_max_events: the item has 5 events, more than --max-events 4" in done.stderr
    done = await asyncio.to_thread(CliRunner().invoke, main, ["item", "history", "--help"])
    words = " ".join(done.stdout.split())
    assert "--max-events" in words and "default: 10000" in words


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        # A skip: asked for events from 2, the node answers from 4.
        (lambda path, h: path.replace("from_seq=2", "from_seq=4"), "bad_proof: entry 1"),
        # A repeat: the first page again.
        (lambda path, h: path.replace("from_seq=2", "from_seq=0"), "bad_proof: entry 1"),
        # Another block's page: the history as it is a few blocks later.
        (lambda path, h: path.replace(f"&height={h}", ""), "proof_mismatch: page at height"),
    ],
    ids=["skip", "repeat", "other-height"],
)
async def test_pages_that_do_not_make_one_history_are_refused(driver, monkeypatch, forge, says):
    d = driver
    await make_item(d, "SN-9", 5)

    def change(path: str) -> str:
        if not path.startswith(PATH + "?"):
            return path
        # Blocks come every 50 ms: the latest height is past the first page's by now.
        time.sleep(0.2)
        return forge(path, path.rsplit("height=", 1)[1])

    node_answers(monkeypatch, change)
    done = await history(d, "--prove")
    assert done.exit_code != 0 and done.stdout == "", done.stdout
    assert says in done.stderr, done.stderr
