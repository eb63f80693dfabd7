"""Block reads and proofs under a hostile reader, on a real node over real HTTP: one
address's slow block reads take their share of the queue (503 ``busy`` beyond, its
proofs included), and another address's block read is served in its turn, ahead of
the hostile reads still waiting.

Block reads are made slow by holding the store's read of one block in its thread until
the test lets it go (``tests.apps.commerce.test_http_reads.Holds``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from core import format_address
from node.chain_api import BLOCK_READ_QUEUE, BLOCK_READ_SLOTS, BLOCK_READS
from tests.apps.commerce.test_http_reads import WAIT, Holds, busy, get_from, until
from tests.node.conftest import refusals

HOSTILE_READS = 12


async def test_one_address_slow_block_reads_get_busy_beyond_its_share(node_client, monkeypatch):
    client, node, faucet = node_client
    await until(lambda: node.chain.height >= 2, "two blocks")
    store = node.chain.store
    held = Holds()
    get_block_bytes = store.get_block_bytes

    def slow_block(height: int) -> Any:
        if height == 1:
            held.hold()
        return get_block_bytes(height)

    monkeypatch.setattr(store, "get_block_bytes", slow_block)
    base = str(client.make_url("/v1/"))
    reads = client.server.app[BLOCK_READS]
    share = (BLOCK_READ_SLOTS + BLOCK_READ_QUEUE) // 4
    hostile: list[asyncio.Task[Any]] = []
    try:
        # Concurrent reads of one uncached block: each renders it (none is kept yet).
        hostile = [
            asyncio.create_task(get_from(base + "blocks/1", "127.0.0.1"))
            for _ in range(HOSTILE_READS)
        ]
        await until(lambda: held.entered >= BLOCK_READ_SLOTS, "reads running")
        await until(lambda: sum(t.done() for t in hostile) >= HOSTILE_READS - share, "refusals")
        refused = [t.result() for t in hostile if t.done()]
        assert len(refused) == HOSTILE_READS - share
        assert all(busy(answer) for answer in refused), refused[0]
        # Proofs share the bound: the address's share is taken.
        proof = f"accounts/{format_address(faucet.address)}?proof=true"
        assert busy(await get_from(base + proof, "127.0.0.1"))
        # Another address: in its turn, ahead of the hostile reads still waiting.
        other = asyncio.create_task(get_from(base + "blocks/2", "127.0.0.2"))
        await until(lambda: reads.held("127.0.0.2") == 1, "the other address waiting")
        held.let_go(2)
        status, doc, _ = await asyncio.wait_for(other, WAIT)
        assert (status, doc["header"]["height"]) == (200, 2), doc
        assert sum(not t.done() for t in hostile) >= share - 2
    finally:
        held.open()
        await asyncio.gather(*hostile, return_exceptions=True)
    assert {t.result()[0] for t in hostile} == {200, 503}
    # Every refusal counted, each by the address's share (the queue never filled).
    metrics = await (await client.get("/metrics")).text()
    assert refusals(metrics, "block_reads", "per_address") == HOSTILE_READS - share + 1
    assert refusals(metrics, "block_reads", "total") == 0
