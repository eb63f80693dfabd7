"""``benches.commerce --executor`` in miniature (behaviour only; its figures are
printed, never asserted): every phase of a live session executes strictly, each
transaction succeeding, within the chain's block limits."""

from __future__ import annotations

import gc
import re

import pytest

from benches.commerce import main


def test_the_executor_level_commerce_bench_runs_every_phase_within_the_block_limits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    main(["--executor", "--buyers", "40", "--repeat", "1"])
    # It ran with the node's GC tuning, and left this process's as it was.
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)
    out = capsys.readouterr().out
    for phase in ("orders + tips", "ships", "confirms + reviews", "bids, one auction"):
        assert phase in out
    result = re.search(r"^RESULT commerce_tps=(\d+) transfer_tps=(\d+) ", out, re.MULTILINE)
    assert result is not None and int(result[1]) > 0 and int(result[2]) > 0
