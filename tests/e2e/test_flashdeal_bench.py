"""``benches.flashdeal`` in miniature (behaviour only; its figures are printed, never
asserted): four validators over a prebuilt state, a session's flash deals, transfers
and orders spread over every node, all final, every order sold once."""

from __future__ import annotations

import asyncio

from benches.flashdeal import parse_args, run


def test_a_tiny_flash_deal_storm_sells_every_order_and_finalizes_every_transaction():
    args = parse_args(
        ["--buyers", "120", "--state-accounts", "2000", "--deals", "3", "--latency-orders", "60"]
    )
    result = asyncio.run(run(args))
    # 120 storm buyers and 30 latency buyers (orders and tips alternate), one unit each.
    assert sum(result.sold) == 150 and len(result.sold) == 3
    assert all(s > 0 for s in result.sold)
    assert len(result.latencies_ms) == result.latency_txs == 60
    assert result.order_tps > 0 and result.transfer_tps > 0
    assert len(result.rss_mb) == 4 and all(r > 0 for r in result.rss_mb)
