"""``benches.order_keys`` in miniature (behaviour only; its figures are printed, never
asserted): both kinds of block are timed, for any set of an order's keys."""

from __future__ import annotations

import re

import pytest

from benches.order_keys import main


@pytest.mark.parametrize("parts", ["account", "account,party,deal_count,order"])
def test_the_order_keys_bench_times_orders_and_transfers(
    parts: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--accounts", "3000", "--buyers", "100", "--blocks", "2", "--parts", parts])
    out = capsys.readouterr().out
    for kind in ("orders", "transfers"):
        assert re.search(rf"^{kind} +[\d.]+ +[\d.]+ +[\d.]+$", out, re.MULTILINE), out
    assert f"order parts: {parts}" in out
    assert re.search(r"^RESULT order_us=[\d.]+ transfer_us=[\d.]+ ratio=[\d.]+$", out, re.M), out


@pytest.mark.parametrize(
    "argv",
    [["--parts", "account,nonce"], ["--accounts", "799", "--buyers", "100", "--blocks", "2"]],
)
def test_the_order_keys_bench_refuses_unknown_parts_and_too_few_accounts(argv: list[str]) -> None:
    # Too few accounts: every buyer and sender would not be a fresh one.
    with pytest.raises(SystemExit):
        main(argv)
