"""``benches.pipeline`` in miniature (behaviour only; its figures are printed, never
asserted): the transfer flood, the flash-deal and the commerce comparisons each run
their blocks through a real store, every transaction included and successful."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest

from benches.pipeline import COMMERCE_BLOCKS, STAGES, main, run_commerce, run_flashdeal


def test_the_flash_deal_comparison_times_every_stage_of_both_sides(tmp_path: Path) -> None:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    figures = run_flashdeal(tmp_path, accounts=40, blocks=2, batch=50, state_accounts=3000, deals=2)
    # It ran with the node's GC tuning, and left this process's as it was (later
    # tests in this worker see the GC they expect).
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)
    for side in (figures.transfers, figures.orders):
        assert set(side) == set(STAGES)
        assert all(seconds >= 0 for seconds in side.values())
    # Two transfers from each fresh sender write its account; an order and a tip
    # from each fresh buyer write its account, its party record and the order. Each
    # block also writes a few shared keys (the producer's fees, the sink or the deals,
    # the session, the escrow...): ~10 over a block of 80 transactions here.
    assert 0.5 <= figures.transfer_keys < 0.6
    assert 1.5 <= figures.order_keys < 1.7


def test_the_command_prints_a_result_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--flashdeal", "--state-accounts", "2000", "--accounts", "20", "--blocks", "2"])
    out = capsys.readouterr().out
    result = re.search(r"^RESULT order_us=(\S+) transfer_us=(\S+) ratio=(\S+)$", out, re.M)
    assert result is not None, out
    assert all(float(v) > 0 for v in result.groups())
    main(["--accounts", "30", "--blocks", "2"])
    out = capsys.readouterr().out
    assert re.search(r"^total +\d+\.\d+$", out, re.M), out
    assert gc.get_freeze_count() == 0


def test_the_commerce_comparison_runs_every_phase_beside_its_transfers(tmp_path: Path) -> None:
    # run_commerce refuses any block that leaves a transaction out or fails one: the
    # shipments and settlements name the ids the block of orders handed out.
    figures = run_commerce(tmp_path, buyers=30, groups=2, batch=50)
    assert list(figures) == list(COMMERCE_BLOCKS)
    for stages in figures.values():
        assert set(stages) == set(STAGES)
        assert all(seconds >= 0 for seconds in stages.values())


def test_the_commerce_command_prints_a_result_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--commerce", "--accounts", "20", "--blocks", "2"])
    out = capsys.readouterr().out
    result = re.search(r"^RESULT commerce_us=(\S+) transfer_us=(\S+) ratio=(\S+)$", out, re.M)
    assert result is not None, out
    assert all(float(v) > 0 for v in result.groups())
