"""``StageCpu``: CPU seconds by stage of the transaction pipeline, as the node charges them."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import InvalidBlock
from node.stage_cpu import STAGES, StageCpu


def test_every_stage_starts_at_zero_in_pipeline_order() -> None:
    totals = StageCpu().totals()
    assert list(totals) == list(STAGES)
    assert set(totals.values()) == {0.0}


def test_charges_add_up_per_stage_and_a_read_is_a_copy() -> None:
    stages = StageCpu()
    stages.add("execute", 0.25)
    stages.add("execute", 0.5)
    stages.add("commit", 0.125)
    totals = stages.totals()
    assert (totals["execute"], totals["commit"], totals["tree"]) == (0.75, 0.125, 0.0)
    totals["execute"] = 99.0
    assert stages.totals()["execute"] == 0.75


@pytest.mark.parametrize(("stage", "seconds"), [("signatures", 1.0), ("execute", -0.001)])
def test_an_unknown_stage_or_a_negative_charge_is_refused(stage: str, seconds: float) -> None:
    stages = StageCpu()
    with pytest.raises(ValueError, match=stage if seconds >= 0 else "-0.001"):
        stages.add(stage, seconds)
    assert set(stages.totals().values()) == {0.0}


def test_a_timed_block_is_charged_its_threads_cpu_also_when_it_raises() -> None:
    stages = StageCpu()
    with stages.timed("execute"):
        sum(range(100_000))
    spent = stages.totals()["execute"]
    assert spent > 0
    with pytest.raises(ZeroDivisionError), stages.timed("execute"):
        sum(range(100_000)) / 0
    assert stages.totals()["execute"] > spent
    with pytest.raises(ValueError, match="unknown stage"), stages.timed("signatures"):
        pass


def test_an_unknown_stage_is_refused_before_the_timed_block_runs() -> None:
    # A misnamed stage is the caller's bug, found before any work: the work never runs
    # only to have its outcome replaced by the accounting's error.
    ran: list[bool] = []
    with pytest.raises(ValueError, match="unknown stage"), StageCpu().timed("signatures"):
        ran.append(True)
    assert ran == []


def test_a_clock_reading_back_never_masks_what_the_timed_block_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Timed blocks wrap block validation: a refused proposal's Invalid must come out
    # as it is (the consensus service turns it into a "no" vote), whatever the clock.
    readings = iter([10.0, 9.0, 10.0, 9.0])
    monkeypatch.setattr(time, "thread_time", lambda: next(readings))
    stages = StageCpu()
    with pytest.raises(InvalidBlock, match="bad root"), stages.timed("roots"):
        raise InvalidBlock("bad root")
    with stages.timed("execute"):
        pass
    assert set(stages.totals().values()) == {0.0}


def test_charges_from_several_threads_are_all_counted() -> None:
    # The event loop and the consensus thread charge one StageCpu at once.
    stages = StageCpu()

    def charge(stage: str) -> None:
        for _ in range(20_000):
            stages.add(stage, 1.0)

    threads = [threading.Thread(target=charge, args=(s,)) for s in ("select", "select", "tree")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = stages.totals()
    assert (totals["select"], totals["tree"]) == (40_000.0, 20_000.0)
