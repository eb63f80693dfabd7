"""``benches.onetap`` in miniature (behaviour only; its figures are printed, never
asserted): every buyer's one-transaction request is accepted and becomes final."""

from __future__ import annotations

import re

import pytest

from benches.common import mean_us_per_tx
from benches.onetap import main


def test_every_one_tap_request_is_accepted_and_final(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--requests", "40", "--concurrency", "4"])
    out = capsys.readouterr().out
    assert "statuses {200: 40}; 40 final" in out
    result = re.search(r"^RESULT rps=(\d+) cpu_us=(\d+) event_loop_us=(\d+)$", out, re.MULTILINE)
    assert result is not None and int(result[1]) > 0
    # The stage table came with it (the node reports its stages).
    assert re.search(r"^  admission_checks +\d", out, re.MULTILINE)


def test_cpu_per_request_is_the_validators_mean_by_part() -> None:
    zero = {"event_loop": 0.0, "consensus": 0.0, "other": 0.0, "workers": 0.0}
    a = {"event_loop": 0.2, "consensus": 0.1, "other": 0.0, "workers": 0.3}
    b = {"event_loop": 0.4, "consensus": 0.1, "other": 0.1, "workers": 0.1}
    us = mean_us_per_tx(("one tap", 1000, [zero, zero], [a, b]))
    assert us == pytest.approx(
        {"event_loop": 300.0, "consensus": 100.0, "other": 50.0, "workers": 200.0}
    )
