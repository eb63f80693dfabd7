"""Thread CPU time by stage of a node's transaction pipeline.

``liveledger_thread_cpu_seconds_total`` says which of a loaded node's threads is
busy; this says at what, stage by stage, as the node runs (``benches`` print it per
transaction). Each stage is timed around a whole batch, chunk or block with the
calling thread's CPU clock (``time.thread_time``, about half a microsecond a read),
never around one transaction, so keeping the account costs a flood nothing it
would notice.

The stages, in a transaction's order:

- ``admission_decode``: body and payload decoded after the signature workers
  passed the envelopes (with worker processes; threads decode as they verify);
- ``admission_checks``: the mempool's stateful checks and queueing;
- ``select``: picking the transactions of a block to propose;
- ``block_txs``: a proposal's transactions looked up in the mempool by hash, and
  those it lacks verified, before its execution;
- ``execute``: a block's transactions executed (built or verified);
- ``tree``: the state tree updated with the block's writes;
- ``roots``: the transaction and receipt roots and the block's encoding (a
  proposal's transaction root is checked where it enters the consensus engine,
  outside the stages: ``Chain.verify(..., body_matched=True)`` does not check it
  again);
- ``commit``: the finalized block's certificate checked and the block written;
- ``after_commit``: the mempool forgetting what the block included and re-reading
  the senders it touched (and, on a proposer, dropping what its build left out as
  not includable).

Signatures checked in worker processes are no stage's
(``liveledger_signature_checks_total`` counts them), nor are those the verify
threads check at admission without workers (``mempool.verify_processes: false``).
Those the event loop or the consensus thread checks itself are its stage's: the
transactions a proposal brings that the node lacks, when just one or without
workers (``block_txs``), and a finalized block's certificate (``commit``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = (
    "admission_decode",
    "admission_checks",
    "select",
    "block_txs",
    "execute",
    "tree",
    "roots",
    "commit",
    "after_commit",
)


class StageCpu:
    """CPU seconds spent so far in each of ``STAGES``, summed over the node's threads.

    Thread-safe: the event loop (admission, selection) and the consensus thread
    (blocks) both add to it, and a metrics scrape reads it.
    """

    def __init__(self) -> None:
        self._seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Charge ``seconds`` of CPU to ``stage`` (one of ``STAGES``)."""
        self._check(stage)
        if seconds < 0:
            raise ValueError(f"a stage cannot be charged {seconds} seconds")
        with self._lock:
            self._seconds[stage] += seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Charge ``stage`` the calling thread's CPU over the ``with`` block, also when
        it raises (a refused proposal's checks cost what they cost).

        An unknown stage is refused before the block runs. Once it ran, the account
        never raises: it wraps block validation and admission, whose own outcome (a
        refused proposal's ``Invalid``) must come out as it is, never masked by the
        accounting's error from a ``finally``; a CPU clock that reads back (Python
        does not promise ``thread_time`` never does) charges nothing.
        """
        self._check(stage)
        cpu = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - cpu
            with self._lock:
                self._seconds[stage] += max(0.0, spent)

    def _check(self, stage: str) -> None:
        if stage not in self._seconds:
            raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")

    def totals(self) -> dict[str, float]:
        """Every stage's CPU seconds so far, in ``STAGES`` order."""
        with self._lock:
            return dict(self._seconds)
