"""Checks for signature-check workers that misbehave on purpose (for
``tests/node/test_verifier.py``: a worker imports its check by name, ``module:function``)."""

from __future__ import annotations

from vm.executor import check_envelopes

POISON = b"\xc1bytes that hit a bug in the envelope checks"
POISONED = "tests.worker_checks:poisoned_check"
LYING = "tests.worker_checks:lying_check"
CHATTY = "tests.worker_checks:chatty_check"


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
