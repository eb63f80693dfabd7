"""``benches.flashdeal`` in miniature (behaviour only; its figures are printed, never
asserted): four validators over a prebuilt state, a session's flash deals, transfers
and orders spread over every node, all final, every order sold once."""

from __future__ import annotations

import asyncio
import re

import pytest

from benches.flashdeal import cut, parse_args, round_order, run


def test_a_tiny_flash_deal_storm_sells_every_order_and_finalizes_every_transaction(
    capsys: pytest.CaptureFixture[str],
) -> None:
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
    # Each side in two parts, alternating: transfers, orders, orders, transfers.
    out = capsys.readouterr().out
    parts = re.findall(r"^(transfers|orders \+ tips): ([\d,]+) final in", out, re.M)
    assert parts == [
        ("transfers", "120"),
        ("orders + tips", "120"),
        ("orders + tips", "120"),
        ("transfers", "120"),
    ], out
    # Each phase's CPU, read for every part of every validator (threads, workers).
    for name in ("transfers", "orders + tips"):
        row = re.search(rf"^  {re.escape(name)} +(\S+)  (\S+)  (\S+)  (\S+)   \(", out, re.M)
        assert row is not None, out
        assert all(re.fullmatch(r"(\d+\.\d/){3}\d+\.\d", cell) for cell in row.groups()), row[0]
    # Each validator's resident set at the end, anonymous and file-backed.
    split = re.search(r"^RSS at the end, anonymous / file-backed .*: (.*)$", out, re.M)
    assert split is not None, out
    pairs = re.findall(r"([\d,]+) / ([\d,]+) MB", split[1])
    assert len(pairs) == 4 and all(int(a.replace(",", "")) > 0 for a, _ in pairs)
    # The peak of each part, sampled while the devnet ran: at least the end's.
    peaks = re.search(r"^peak RSS sampled every 0.25 s, anonymous / file-backed: (.*)$", out, re.M)
    assert peaks is not None, out
    highs = re.findall(r"([\d,]+) / ([\d,]+) MB", peaks[1])
    assert len(highs) == 4
    for (end_anon, _), (peak_anon, _) in zip(pairs, highs, strict=True):
        assert int(peak_anon.replace(",", "")) >= int(end_anon.replace(",", "")) > 0


def test_the_sides_alternate_in_equal_parts_that_cover_every_transaction() -> None:
    assert round_order(["t", "o"], 3) == [["t", "o"], ["o", "t"], ["t", "o"]]
    txs = [bytes([i]) for i in range(7)]
    for parts in (1, 2, 3, 7):
        pieces = cut(txs, parts)
        assert len(pieces) == parts
        assert [tx for piece in pieces for tx in piece] == txs
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
