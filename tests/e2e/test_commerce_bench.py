"""``benches.commerce --executor`` in miniature (behaviour only; its figures are
printed, never asserted): every phase of a live session executes strictly, each
transaction succeeding, within the chain's block limits."""

from __future__ import annotations

import gc
import re

import pytest

from benches.commerce import main
from benches.common import main_process_us, own_work_per_signature, stage_table
from node.stage_cpu import STAGES


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


def test_the_main_process_figure_is_event_loop_and_consensus_per_transaction() -> None:
    # Two validators over two phases: each node's event loop and consensus thread
    # seconds, averaged over the nodes, per transaction of both phases together; the
    # workers and other threads are not counted, and a counter read a tick lower
    # after than before counts as nothing.
    zero = {"event_loop": 0.0, "consensus": 0.0, "other": 0.0, "workers": 0.0}
    node_a = {"event_loop": 0.004, "consensus": 0.006, "other": 1.0, "workers": 9.0}
    node_b = {"event_loop": 0.002, "consensus": 0.004, "other": 1.0, "workers": 9.0}
    later_a = {"event_loop": 0.014, "consensus": 0.026, "other": 3.0, "workers": 20.0}
    later_b = {"event_loop": 0.0019, "consensus": 0.024, "other": 3.0, "workers": 20.0}
    phases = [
        ("one", 1000, [zero, zero], [node_a, node_b]),
        ("two", 1000, [node_a, node_b], [later_a, later_b]),
    ]
    # Node a: 0.010 + 0.030 s; node b: 0.006 + 0.020 (its event loop went back: 0).
    assert main_process_us(phases) == pytest.approx((0.040 + 0.026) / 2 / 2000 * 1e6)
    assert main_process_us([]) == 0.0


def test_the_stage_table_is_each_stages_mean_per_transaction_and_the_rest() -> None:
    # Two validators: every stage's CPU averaged over the nodes, per transaction; the
    # rest is what their event loop and consensus thread spent outside the stages.
    zero = dict.fromkeys((*STAGES, "event_loop", "consensus", "workers"), 0.0)
    node_a = {**zero, "execute": 0.010, "tree": 0.004, "event_loop": 0.012, "consensus": 0.020}
    node_b = {**zero, "execute": 0.006, "tree": 0.002, "event_loop": 0.010, "consensus": 0.012}
    table = stage_table([("flood", 1000, [zero, zero], [node_a, node_b])])
    rows = dict((line.split()[0], line.split()[1]) for line in table.splitlines()[2:])
    assert list(rows) == [*STAGES, "rest"]
    assert float(rows["execute"]) == pytest.approx((10 + 6) / 2)
    assert float(rows["tree"]) == pytest.approx((4 + 2) / 2)
    assert float(rows["select"]) == 0.0
    # (32 + 22) / 2 us in the two threads, of which 11 in stages.
    assert float(rows["rest"]) == pytest.approx(27 - 11)
    # A node that reports no stages (an older build) leaves its cells empty...
    bare = {"event_loop": 0.0, "consensus": 0.0}
    old = stage_table([("flood", 1000, [bare], [{"event_loop": 0.5, "consensus": 0.5}])])
    assert {line.split()[1] for line in old.splitlines()[2:]} == {"-"}
    # ...and beside one that does, the means are over the nodes that reported them.
    mixed = stage_table([("flood", 1000, [zero, bare], [node_a, bare])])
    rows = dict((line.split()[0], line.split()[1]) for line in mixed.splitlines()[2:])
    assert float(rows["execute"]) == pytest.approx(10)
    assert float(rows["rest"]) == pytest.approx(32 - 14)
    # No phase at all: the header alone.
    assert len(stage_table([]).splitlines()) == 2 + len(STAGES) + 1


def test_the_own_work_per_signature_is_the_nodes_cpu_over_their_workers() -> None:
    zero = {"event_loop": 0.0, "consensus": 0.0, "other": 0.0, "workers": 0.0}
    node_a = {"event_loop": 0.2, "consensus": 0.2, "other": 0.1, "workers": 1.0}
    node_b = {"event_loop": 0.3, "consensus": 0.1, "other": 0.0, "workers": 0.5}
    phases = [("flood", 1000, [zero, zero], [node_a, node_b])]
    # (0.5 + 0.4) own seconds over 1.5 of the workers, whatever the transactions.
    assert own_work_per_signature(phases) == pytest.approx(0.9 / 1.5)
    # No worker CPU read (no /proc, or verification on threads): no figure.
    bare = {k: v for k, v in node_a.items() if k != "workers"}
    assert own_work_per_signature([("flood", 1000, [zero], [bare])]) is None
    assert own_work_per_signature([]) is None
