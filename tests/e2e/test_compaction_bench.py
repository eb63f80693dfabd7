"""``benches.compaction`` in miniature (behaviour only; its figures are printed, never
asserted): each side writes its store in a child process and reports its figures."""

from __future__ import annotations

import re

import pytest

from benches.compaction import main


def test_the_compaction_bench_measures_every_side(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--base", "2000", "--mb", "1", "--per-block", "500"])
    out = capsys.readouterr().out
    for side in ("node", "one", "hash", "snappy"):
        assert re.search(rf"^{side} +\d+\.\d\d ", out, re.MULTILINE), out
    result = re.search(
        r"^RESULT node_cpu_s=([\d.]+) one_cpu_s=([\d.]+) hash_cpu_s=([\d.]+) "
        r"snappy_cpu_s=([\d.]+) ratio=([\d.]+)$",
        out,
        re.MULTILINE,
    )
    assert result is not None, out
