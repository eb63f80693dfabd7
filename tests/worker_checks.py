"""Checks for signature-check workers that misbehave on purpose (for
``tests/node/test_verifier.py``: a worker imports its check by name, ``module:function``)."""

from __future__ import annotations

import sys

from vm.executor import check_envelopes

POISON = b"\xc1bytes that hit a bug in the envelope checks"
POISONED = "tests.worker_checks:poisoned_check"
NOISY = "tests.worker_checks:noisy_check"


def poisoned_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """``check_envelopes``, but a call holding ``POISON`` raises, as a bug would."""
    if POISON in raws:
        raise RuntimeError("a bug hit by one caller's bytes")
    return check_envelopes(raws, chain_id, max_tx_bytes)  # type: ignore[return-value]  # verdicts


def noisy_check(raws: list[bytes], chain_id: str, max_tx_bytes: int) -> list[object]:
    """``check_envelopes``, after writing bytes of no frame to the answer pipe (as a
    library printing to stdout would)."""
    sys.stdout.buffer.write(b"junk printed by a library\n")
    return check_envelopes(raws, chain_id, max_tx_bytes)  # type: ignore[return-value]  # verdicts
