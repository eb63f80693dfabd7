"""Checks for signature-check workers that misbehave on purpose (for
``tests/node/test_verifier.py``: a worker imports its check by name, ``module:function``)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from vm.executor import check_envelopes

POISON = b"\xc1bytes that hit a bug in the envelope checks"
POISONED = "tests.worker_checks:poisoned_check"
LYING = "tests.worker_checks:lying_check"
CHATTY = "tests.worker_checks:chatty_check"
GATED = "tests.worker_checks:gated_check"
CRASHING = "tests.worker_checks:crashing_check"
GATED_OR_DYING = "tests.worker_checks:gated_or_dying_check"
# A chunk holding this kills the worker of ``gated_or_dying_check``.
DEADLY = b"\xc1bytes that crash a worker"
# The file whose existence opens ``gated_check``.
GATE_ENV = "LIVELEDGER_TEST_WORKER_GATE"


def poisoned_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """``check_envelopes``, but a call holding ``POISON`` raises, as a bug would."""
    if POISON in raws:
        raise RuntimeError("a bug hit by one caller's bytes")
    return check_envelopes(raws, chain_id, max_tx_bytes)  # type: ignore[return-value]  # verdicts


def lying_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """A pass for every transaction but the last, whatever its bytes: an answer of
    the wrong length, in a well-formed frame."""
    return [None] * (len(raws) - 1)


def chatty_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """``check_envelopes``, after printing a line as a library might: its first four
    bytes (b"0 wa") read as a frame header announce some 800 MB, within the bound."""
    print("0 warnings", flush=True)
    return check_envelopes(raws, chain_id, max_tx_bytes)  # type: ignore[return-value]  # verdicts


def gated_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """``check_envelopes`` once the file ``$GATE_ENV`` names exists: a worker wedged
    until then (two minutes at most, so that it outlives no test for long)."""
    gate = Path(os.environ[GATE_ENV])
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check_envelopes(raws, chain_id, max_tx_bytes)  # type: ignore[return-value]  # verdicts


def crashing_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """The worker dies on every call (as on input that crashes it, or a broken install)."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("killed")


def gated_or_dying_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """``crashing_check`` for a chunk holding ``DEADLY``, else ``gated_check``."""
    if DEADLY in raws:
        crashing_check(raws, chain_id, max_tx_bytes)
    return gated_check(raws, chain_id, max_tx_bytes)
