"""Commerce reads on a real node under a hostile reader: one address's slow reads take
their share of the reads' queue and are refused beyond it (503 ``busy``), another
address is served in its turn, and neither the live feed nor the other reads wait
behind them; an item page at an old height reads its header off the event loop.

Reads are made slow by holding them in their thread (a patched view or reader method
that waits for the test to let it go), so nothing here depends on how fast a read is.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from apps.commerce import views
from apps.commerce.feed import REPLAY_SLOTS
from apps.commerce.http_common import VIEW_READ_QUEUE, VIEW_READ_SLOTS, VIEW_READS
from node.reader import NodeChainReader
from tests.apps.commerce.test_http import GTIN, make_item, running_driver
from tests.apps.commerce.test_http_feed import connect
from tests.node.conftest import refusals

WAIT = 10.0
# The longest a held read waits for the test (a failing test's threads end after it).
HOLD_S = 30.0
HOSTILE_READS = 40


@pytest.fixture
async def driver(tmp_path):
    async with running_driver(tmp_path) as d:
        yield d


class Holds:
    """Reads held in their threads until the test lets them go, one at a time or all."""

    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self.entered = 0
        self._cond = threading.Condition()
        self._tickets = 0
        self._open = False

    def hold(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.wait_for(lambda: self._open or self._tickets > 0, self.hold_s)
            if self._tickets:
                self._tickets -= 1

    def let_go(self, count: int = 1) -> None:
        with self._cond:
            self._tickets += count
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (polling the loop, never a thread) until ``check()`` holds."""
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.01)


async def get_from(url: str, source: str) -> tuple[int, dict[str, Any], str | None]:
    """(status, JSON body, Retry-After) of a GET from loopback address ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")


def busy(answer: tuple[int, dict[str, Any], str | None]) -> bool:
    status, doc, retry_after = answer
    return status == 503 and doc["code"] == "busy" and retry_after is not None


async def test_one_address_slow_reads_get_busy_beyond_its_share_and_starve_no_one(
    driver, monkeypatch
):
    """An address asking for slow views (and replaying feeds slowly) holds a quarter of
    the reads' slots and queue, and is refused beyond; another address's view is served
    in its turn, ahead of the hostile reads still waiting, and a live feed still gets its
    blocks. In Python's default executor (main before this) the 40 reads queued whole,
    and with the replays took every thread the feed hub reads with."""
    d = driver
    views_held, replays_held = Holds(), Holds()
    listing_view = views.listing_view

    def slow_view(state: Any, listing_id: int) -> Any:
        if listing_id == 1:
            views_held.hold()
        return listing_view(state, listing_id)

    monkeypatch.setattr(views, "listing_view", slow_view)
    await until(lambda: d.node.chain.height >= 3, "three blocks")
    replayed_to = d.node.chain.height
    tx_count = NodeChainReader.tx_count

    def slow_count(self: NodeChainReader, height: int) -> int | None:
        if height <= replayed_to:
            replays_held.hold()
        return tx_count(self, height)

    monkeypatch.setattr(NodeChainReader, "tx_count", slow_count)
    feeds: list[aiohttp.ClientWebSocketResponse] = []
    hostile: list[asyncio.Task[Any]] = []
    url = str(d.client.make_url("/v1/listings/")) + "{}"
    reads = d.client.server.app[VIEW_READS]
    try:
        # Replays of the stored blocks, each read held (the slots replays may take).
        for _ in range(REPLAY_SLOTS + 2):
            feeds.append(await d.client.ws_connect("/v1/blocks/ws?from=0"))
        hostile = [
            asyncio.create_task(get_from(url.format(1), "127.0.0.1")) for _ in range(HOSTILE_READS)
        ]
        await until(lambda: views_held.entered >= VIEW_READ_SLOTS, "reads running")
        share = (VIEW_READ_SLOTS + VIEW_READ_QUEUE) // 4
        await until(lambda: sum(t.done() for t in hostile) >= HOSTILE_READS - share, "refusals")
        refused = [t.result() for t in hostile if t.done()]
        assert len(refused) == HOSTILE_READS - share
        assert all(busy(answer) for answer in refused), refused[0]
        # Each refusal counted, by the address's share (the queue never filled).
        metrics = await (await d.client.get("/metrics")).text()
        assert refusals(metrics, "commerce_reads", "per_address") == HOSTILE_READS - share
        assert refusals(metrics, "commerce_reads", "total") == 0
        # Another address: in its turn, ahead of the hostile reads still waiting.
        other = asyncio.create_task(get_from(url.format(2), "127.0.0.2"))
        await until(lambda: reads.held("127.0.0.2") == 1, "the other address waiting")
        # Two slots free: the next address in turn takes one, then the other address.
        views_held.let_go(2)
        status, doc, _ = await asyncio.wait_for(other, WAIT)
        assert (status, doc["code"]) == (404, "not_found")
        assert sum(not t.done() for t in hostile) >= share - 2
        # The live feed reads each final block in a thread no reader can take.
        ws, _, ready = await connect(d, "/v1/blocks/ws")
        feeds.append(ws)
        msg = json.loads((await ws.receive(timeout=WAIT)).data)
        assert msg["type"] == "block" and msg["height"] > ready
    finally:
        views_held.open()
        replays_held.open()
        for ws in feeds:
            await ws.close()
        await asyncio.gather(*hostile, return_exceptions=True)
    # Once let go, the held reads end as their reads do: nothing was lost on the way.
    assert {t.result()[0] for t in hostile} <= {404, 503}


async def test_an_item_page_at_an_old_height_reads_its_block_off_the_event_loop(
    driver, monkeypatch
):
    """The header and commit of an old height come from its whole stored block (up to 8
    MiB): read in the reads' threads, the event loop answers others meanwhile."""
    d = driver
    await make_item(d, "SN-1", 1)
    old = d.node.chain.height
    await until(lambda: d.node.chain.height > old + 2, "later blocks")
    # On the event loop (main before this), the hold stops the loop until it times out.
    held = Holds(WAIT)
    header = NodeChainReader.header

    def slow_header(self: NodeChainReader, height: int) -> Any:
        if height == old and not held.entered:
            held.hold()
        return header(self, height)

    monkeypatch.setattr(NodeChainReader, "header", slow_header)
    item = asyncio.create_task(d.get(f"/v1/items/01/{GTIN}/21/SN-1?height={old}"))
    try:
        await until(lambda: held.entered > 0, "the header read")
        status, _ = await d.get("/v1/commerce")
        assert status == 200
        # Answered while the item's header read was still held: not on the event loop.
        assert not item.done()
    finally:
        held.open()
    status, doc = await asyncio.wait_for(item, WAIT)
    assert status == 200 and doc["height"] == old, doc
    assert doc["proof"]["header"] is not None and doc["proof"]["commit"] is not None
