"""Signature checks in worker processes.

Ed25519 in PyNaCl releases the GIL, so threads can verify in parallel, but each
thread must win the GIL back after every signature (and hold it to decode the
envelope). While the node's own threads run Python — admitting a batch,
building a block — a verification thread waits up to a switch interval for
each of those hand-backs: measured on two cores, the threads got about half a
core each while the machine sat a quarter idle. Worker processes have a GIL of
their own: they take a chunk of encoded transactions and return one compact
verdict per transaction, so the node pays one hand-off per chunk instead of one
per signature.

A worker runs ``vm.executor.check_envelopes``: size, envelope decoding, chain id
and signature, the checks that come before the body is decoded. The mempool
then decodes body and payload of the transactions that passed (``complete``
stage), in the same order of checks as ``verify_signed_tx``, so a transaction
gets the same verdict and error code either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

from vm import check_envelopes

log = logging.getLogger("node.verifier")

Verdict = tuple[str, str] | None

# Smaller chunks are not worth a hand-off of their own.
_MIN_CHUNK = 16
# How often a worker checks that the node that started it is still alive.
_PARENT_POLL_S = 1.0


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent:
            # The node died without shutting the pool down (SIGKILL): do not linger.
            os._exit(0)


def _init_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the node decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker allocates only short-lived objects: collect young garbage less often.
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _ready() -> int:
    return os.getpid()


class ProcessVerifier:
    """A pool of ``workers`` processes running ``check_envelopes``.

    Workers are spawned (never forked: the node has threads) by ``start_workers``
    or with the first chunk. If a worker dies the pool is replaced and
    the chunks it had are checked on a thread of this process instead, so no
    batch is lost to a broken pool.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"verifier needs at least 1 worker, got {workers}")
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("verifier is closed")
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def start_workers(self) -> None:
        """Spawn the workers now (in the background), so the first batch does not wait."""
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(_ready)

    async def check(self, raws: Sequence[bytes], chain_id: str, max_tx_bytes: int) -> list[Verdict]:
        """``check_envelopes(raws, ...)`` in a worker process."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        try:
            return await loop.run_in_executor(pool, check_envelopes, raws, chain_id, max_tx_bytes)
        except BrokenProcessPool:
            self._replace(pool)
            log.warning("a verification worker died; checking %d transactions here", len(raws))
            return await loop.run_in_executor(None, check_envelopes, raws, chain_id, max_tx_bytes)

    def check_sync(self, raws: Sequence[bytes], chain_id: str, max_tx_bytes: int) -> list[Verdict]:
        """``check`` for a thread that may block (the consensus thread), spread over
        every worker."""
        pool = self._executor()
        step = max(_MIN_CHUNK, -(-len(raws) // self.workers))
        try:
            futures = [
                pool.submit(check_envelopes, raws[k : k + step], chain_id, max_tx_bytes)
                for k in range(0, len(raws), step)
            ]
            return [verdict for future in futures for verdict in future.result()]
        except BrokenProcessPool:
            self._replace(pool)
            log.warning("a verification worker died; checking %d transactions here", len(raws))
            return check_envelopes(raws, chain_id, max_tx_bytes)

    def _replace(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
