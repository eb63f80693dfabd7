"""``benches.prune`` in miniature (behaviour only; its figures are printed, never
asserted): blocks on a real store, a pass every interval past the window, each
letting go as many versions as the interval and deleting nodes."""

from __future__ import annotations

import re

import pytest

from benches.prune import main


def test_the_prune_bench_times_each_pass_past_the_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["--keys", "3000", "--changes", "200", "--blocks", "24", "--keep", "8", "--interval", "4"])
    out = capsys.readouterr().out
    passes = re.findall(r"^ +(\d+) \| +(\d+) \| +([\d,]+) \|", out, re.MULTILINE)
    assert [int(height) for height, _, _ in passes] == [12, 16, 20, 24], out
    # The first pass lets go of every version below the window, then one interval each.
    assert [int(let_go) for _, let_go, _ in passes] == [5, 4, 4, 4], out
    assert all(int(deleted.replace(",", "")) > 0 for _, _, deleted in passes), out
    assert re.search(
        r"^RESULT prune_ms_per_version=[\d.]+ commit_ms_per_block=[\d.]+ ratio=[\d.]+ "
        r"peak_rise_mb=\d+$",
        out,
        re.MULTILINE,
    ), out


def test_the_prune_bench_refuses_a_run_that_never_prunes() -> None:
    with pytest.raises(SystemExit):
        main(["--keys", "100", "--blocks", "5", "--keep", "5"])
