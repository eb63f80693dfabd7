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
import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgpack

from node.verify_worker import DEFAULT_CHECK
from node.worker_pipes import WorkerGone, WorkerProcess, running_loop
from vm import check_envelopes

log = logging.getLogger("node.verifier")

Verdict = tuple[str, str] | None

# Below this many transactions per chunk the hand-off costs more than the parallel
# verification saves (``chunk_step``).
_MIN_CHUNK = 16
# Envelopes that passed, remembered by transaction hash (``ProcessVerifier``): about
# 145 bytes each where the memory holds a hash's last reference, so some 19 MB. A node of a four-validator flood checks some 7,500 a second,
# and a gossip copy came up to 10-20 s after the proposal that held its transaction:
# with 65,536 remembered, 0.6-4.5% of a node's checks were of passes already forgotten.
REMEMBERED_PASSES = 1 << 17
# A check of fewer transactions than this waits one turn of the event loop for other
# small checks to share its worker call (``ProcessVerifier.check``): a call costs
# about 55 µs of CPU beyond its signatures (the node's write and read, the worker's
# wake-up and frames), about a lone transaction's signature, and one-tap buyers send
# one transaction per request.
COALESCE_BELOW = 64
# Transactions of small checks that wait for the end of a turn at most: past it,
# they go at once.
COALESCE_MAX = 1024
# A worker not answering its oldest call within this (plus ``worker_pipes.PER_TX_S``
# a transaction) is killed and its calls checked elsewhere (``WorkerProcess``).
CALL_DEADLINE_S = 30.0
# Seconds between two rounds of replacements for dead workers at least.
RESPAWN_S = 1.0
# How often ``check_sync``, waiting on the home loop, checks that it still runs.
_HOME_POLL_S = 0.5


def chunk_step(n: int, workers: int) -> int:
    """Transactions per chunk when ``n`` are spread over ``workers``: one chunk per
    worker at most, and none smaller than ``_MIN_CHUNK`` (a lone chunk may be)."""
    return -(-n // max(1, min(workers, n // _MIN_CHUNK)))


class PassedEnvelopes:
    """The hashes of the last ``size`` transaction envelopes that passed the checks,
    so that the same bytes are not checked twice (``ProcessVerifier``).

    Each transaction reaches a node at least twice: from a client or a peer into the
    mempool, and inside a proposal, where the mempool's copy is reused only while the
    pool still holds it. A node that falls behind receives proposals before the
    gossip of their transactions, and the gossip again after the commit, when the
    pool no longer holds them: in a four-validator flood such a node checked 60%
    more signatures than there were transactions.

    A pass depends on the bytes (which the hash names), the chain id and the size
    limit: the chain id is the same for every call of a node (another one forgets
    every pass), and the size is checked again on every reuse. Refusals are never
    remembered, so a change of rules cannot turn one into a pass.

    Thread-safe: the event loop (the mempool) and the consensus thread (proposals)
    both ask. ``checked``: envelopes left to check since creation; ``reused``:
    passes given from memory (for metrics and benches).
    """

    def __init__(self, size: int = REMEMBERED_PASSES) -> None:
        if size < 0:
            raise ValueError(f"cannot remember {size} passes")
        self._size = size
        # The hashes, and the same in the order they came (oldest first), for ``_chain``.
        # Not one dict in insertion order: deleting its oldest entries leaves holes that
        # every later walk from its start steps over, which cost the event loop 2 us a
        # transaction in a flood.
        self._passed: set[bytes] = set()
        self._order: collections.deque[bytes] = collections.deque()
        self._chain: str | None = None
        self._lock = threading.Lock()
        self.checked = 0
        self.reused = 0

    def unknown(
        self,
        raws: Sequence[bytes],
        chain_id: str,
        max_tx_bytes: int,
        hashes: Sequence[bytes | None] | None,
    ) -> list[int]:
        """The indexes of ``raws`` left to check: all but remembered passes that still
        fit ``max_tx_bytes``. ``hashes[i]``, if given, is ``tx_hash(raws[i])`` or None.

        A pass is given on the hash's word: a caller must hash the very bytes it gives
        (both come from one list, where the bytes enter). Lists of two lengths are
        refused, so no transaction goes without a hash that names it."""
        if hashes is not None and len(hashes) != len(raws):
            raise ValueError(f"{len(raws)} transactions but {len(hashes)} hashes")
        with self._lock:
            if chain_id != self._chain:
                self._passed.clear()
                self._order.clear()
                self._chain = chain_id
            passed = self._passed
            if hashes is None or not passed:
                todo = list(range(len(raws)))
            else:
                todo = [
                    i
                    for i, h in enumerate(hashes)
                    if h is None or h not in passed or len(raws[i]) > max_tx_bytes
                ]
            self.checked += len(todo)
            self.reused += len(raws) - len(todo)
        return todo

    def merge(
        self,
        n: int,
        todo: Sequence[int],
        got: Sequence[Verdict],
        hashes: Sequence[bytes | None] | None,
        chain_id: str,
    ) -> list[Verdict]:
        """The verdicts of all ``n`` transactions, from ``got`` (the checks of ``todo``,
        as ``unknown`` gave it for ``chain_id``) and passes elsewhere; the new passes
        are remembered, unless a call for another chain id came in between."""
        if len(todo) == n:
            verdicts = list(got)
        else:
            verdicts = [None] * n
            for i, verdict in zip(todo, got, strict=True):
                verdicts[i] = verdict
        if hashes is None or not self._size:
            return verdicts
        with self._lock:
            if chain_id != self._chain:
                return verdicts
            passed, order = self._passed, self._order
            for i, verdict in zip(todo, got, strict=True):
                h = hashes[i]
                if verdict is None and h is not None and h not in passed:
                    passed.add(h)
                    order.append(h)
            for _ in range(len(order) - self._size):
                passed.discard(order.popleft())
        return verdicts

    def close(self) -> None:
        """Forget every pass and remember none from now on."""
        with self._lock:
            self._passed.clear()
            self._order.clear()
            self._size = 0


@dataclass(slots=True)
class _Waiting:
    """A small check waiting to share a worker call (``ProcessVerifier.check``)."""

    raws: Sequence[bytes]
    hashes: Sequence[bytes | None] | None
    chain_id: str
    max_tx_bytes: int
    verdicts: asyncio.Future[list[Verdict]]


@dataclass(slots=True)
class _Turn:
    """The small checks made in one turn of one event loop (``ProcessVerifier.check``).

    Its own object, not the verifier's fields: a loop stopped before its turn ended
    leaves its flush unrun, and the checks of the next loop must neither wait for
    that flush nor share a call with futures of a loop that is gone.
    """

    loop: asyncio.AbstractEventLoop
    waiting: list[_Waiting] = field(default_factory=list)
    txs: int = 0
    flushed: bool = False


class VerifierError(RuntimeError):
    """A worker's check raised (a bug that some transaction's bytes hit); its message
    names the worker's exception."""


def _request(raws: Sequence[bytes], chain_id: str, max_tx_bytes: int) -> bytes:
    payload: bytes = msgpack.packb([list(raws), chain_id, max_tx_bytes], use_bin_type=True)
    return payload


def _answer(payload: bytes, n: int) -> list[Verdict]:
    """The verdicts of a worker's answer to a request of ``n`` transactions. Raises
    ``VerifierError`` if its check raised, ``ValueError`` if the answer has another
    shape (a broken worker: no verdict of it is taken, above all no pass)."""
    answer = msgpack.unpackb(payload)
    if type(answer) is not list or len(answer) != 2:
        raise ValueError("a worker's answer is not [ok, body]")
    ok, body = answer
    if ok is False and type(body) is str:
        raise VerifierError(f"verification worker: {body}")
    if ok is not True or type(body) is not list or len(body) != n:
        raise ValueError(f"a worker answered other than {n} verdicts")
    out: list[Verdict] = []
    for verdict in body:
        if verdict is None:
            out.append(None)
        elif (
            type(verdict) is list
            and len(verdict) == 2
            and type(verdict[0]) is str
            and type(verdict[1]) is str
        ):
            out.append((verdict[0], verdict[1]))
        else:
            raise ValueError("a worker's verdict is neither None nor [code, message]")
    return out


class ProcessVerifier:
    """``workers`` processes running ``check_envelopes`` (``node.worker_pipes``).

    Workers start with ``start_workers`` or the first check. A check from an event
    loop writes to a worker's pipe from that loop; ``check_sync`` (the consensus
    thread) writes to idle workers itself, and sends the chunks left through the
    loop of the latest check while it runs (a worker has one owner at a time). If a
    worker dies, its calls in flight are checked on a thread of this process
    instead, so no batch is lost, and the next check starts a new worker.

    ``check``: the worker's check as ``module:function`` (tests name one that
    fails on purpose). ``deadline_s``: how long a worker may take to answer a call
    (plus ``worker_pipes.PER_TX_S`` a transaction) before it is taken for wedged.

    The same bytes are not checked twice: a caller that gives the transactions'
    hashes gets a pass without a worker's check for those in ``passed``, the last
    ``remember`` that passed (``PassedEnvelopes``).
    """

    def __init__(
        self,
        workers: int,
        remember: int = REMEMBERED_PASSES,
        *,
        check: str = DEFAULT_CHECK,
        deadline_s: float = CALL_DEADLINE_S,
    ) -> None:
        if workers < 1:
            raise ValueError(f"verifier needs at least 1 worker, got {workers}")
        if not deadline_s > 0:
            raise ValueError(f"a worker's deadline must be positive, got {deadline_s}")
        self._deadline_s = deadline_s
        self.workers = workers
        self.passed = PassedEnvelopes(remember)
        # Calls made to the workers (for benches and tests: how well small checks share).
        self.calls = 0
        self._check = check
        self._procs: list[WorkerProcess] = []
        # Workers started so far (for tests and operators), and when the last
        # replacements started (``_live``).
        self.started = 0
        self._respawned = 0.0
        # The loop of the latest check: ``check_sync`` from another thread goes through it.
        self._home: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._closed = False
        # The small checks waiting for the current turn of the event loop to end (``check``).
        self._turn: _Turn | None = None
        self._serving: set[asyncio.Task[None]] = set()

    def _live(self) -> list[WorkerProcess]:
        """The workers, each gone one replaced by a new one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("verifier is closed")
            gone = [w for w in self._procs if w.gone]
            live = [w for w in self._procs if not w.gone]
            now = time.monotonic()
            # Replacements wait RESPAWN_S after the last: workers that die as they start
            # (a broken install) or on some input would otherwise cost a process start
            # per check under a flood. Meanwhile the checks run on threads here.
            if len(live) < self.workers and (
                not self.started or now - self._respawned >= RESPAWN_S
            ):
                if self.started:
                    self._respawned = now
                try:
                    while len(live) < self.workers:
                        live.append(WorkerProcess(self._check, self._deadline_s))
                        self.started += 1
                except OSError as exc:
                    # No process to be had (a full process table, no memory): the
                    # checks run on threads here until one starts, never fail for it.
                    log.error("cannot start a verification worker: %s", exc)
            self._procs = live
        for w in gone:
            # Ended already, unless its loop closed with calls in flight: end it now,
            # without waiting here (maybe the event loop) for the process to go.
            w.stop(WorkerGone("replaced"), wait=0)
        return live

    def start_workers(self) -> None:
        """Start the workers now, so the first batch does not wait for them."""
        self._live()
        loop = running_loop()
        if loop is not None:
            self._home = loop

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers (for tests and operators)."""
        with self._lock:
            return [w.pid for w in self._procs if not w.gone]

    async def check(
        self,
        raws: Sequence[bytes],
        chain_id: str,
        max_tx_bytes: int,
        hashes: Sequence[bytes | None] | None = None,
    ) -> list[Verdict]:
        """``check_envelopes(raws, ...)`` in a worker process. ``hashes[i]``, if given,
        is ``tx_hash(raws[i])`` or None: an envelope that passed before under its hash
        is not checked again.

        Event-loop thread only. A check of fewer than ``COALESCE_BELOW`` transactions
        shares worker calls with the other small checks made in the same turn of the
        loop (up to ``COALESCE_MAX`` transactions; one call per worker at most, and
        one while they are fewer than ``2 * _MIN_CHUNK``): requests of one
        transaction each, many at once, then cost one call between them, at the price
        of one turn of the loop. Each caller gets its own verdicts, or the call's exception.
        """
        if len(raws) >= COALESCE_BELOW or not raws:
            return await self._check_now(raws, chain_id, max_tx_bytes, hashes)
        # Refused before it waits (``PassedEnvelopes.unknown`` refuses the rest): a
        # caller's bad arguments must not fail the call it would share.
        if hashes is not None and len(hashes) != len(raws):
            raise ValueError(f"{len(raws)} transactions but {len(hashes)} hashes")
        loop = asyncio.get_running_loop()
        turn = self._turn
        if turn is None or turn.flushed or turn.loop is not loop:
            turn = self._turn = _Turn(loop)
            loop.call_soon(self._flush, turn)
        waiting = _Waiting(raws, hashes, chain_id, max_tx_bytes, loop.create_future())
        turn.waiting.append(waiting)
        turn.txs += len(raws)
        if turn.txs >= COALESCE_MAX:
            self._flush(turn)
        return await waiting.verdicts

    def _flush(self, turn: _Turn) -> None:
        """Send every small check of ``turn``, one call per (chain id, size limit)."""
        if turn.flushed:
            return  # COALESCE_MAX sent it before the turn ended
        turn.flushed = True
        if self._turn is turn:
            self._turn = None
        groups: dict[tuple[str, int], list[_Waiting]] = {}
        for w in turn.waiting:
            groups.setdefault((w.chain_id, w.max_tx_bytes), []).append(w)
        for (chain_id, max_tx_bytes), group in groups.items():
            task = turn.loop.create_task(self._serve(group, chain_id, max_tx_bytes))
            # Held until done: the loop keeps only a weak reference to a task.
            self._serving.add(task)
            task.add_done_callback(functools.partial(self._served, group))

    def _served(self, group: list[_Waiting], task: asyncio.Task[None]) -> None:
        """A shared call's task is over: a caller it did not answer is cancelled. The
        task may have been cancelled before its first step (the loop's shutdown),
        and then ``_serve``'s own handlers never ran."""
        self._serving.discard(task)
        for w in group:
            if not w.verdicts.done():
                w.verdicts.cancel()

    async def _serve(self, group: list[_Waiting], chain_id: str, max_tx_bytes: int) -> None:
        """``group``'s checks in one call per worker at most, and in one call while they
        are fewer than two chunks of ``_MIN_CHUNK``; each waiter gets its share of the
        verdicts."""
        raws = [raw for w in group for raw in w.raws]
        hashes: list[bytes | None] = []
        for w in group:
            hashes.extend(w.hashes if w.hashes is not None else [None] * len(w.raws))
        # Spread over the workers as a batch's chunks are (``Mempool._verify``): a batch
        # of fewer than ``workers`` times COALESCE_BELOW transactions comes in small
        # chunks, and one call for them all would leave every worker but one idle.
        n = len(raws)
        step = chunk_step(n, self.workers)
        try:
            parts = await asyncio.gather(
                *(
                    self._check_now(
                        raws[k : k + step], chain_id, max_tx_bytes, hashes[k : k + step]
                    )
                    for k in range(0, n, step)
                )
            )
        except Exception as exc:
            if len(group) > 1:
                # One caller's bytes may be what failed the call (check_envelopes raises
                # only on a bug, which a client or peer could hit): each caller is
                # checked alone, so a failure stays with its cause, as without sharing.
                await self._serve_alone(group, chain_id, max_tx_bytes)
                return
            if not group[0].verdicts.done():
                group[0].verdicts.set_exception(exc)
            return
        verdicts = [verdict for part in parts for verdict in part]
        start = 0
        for w in group:
            end = start + len(w.raws)
            # A waiter whose request went away (cancelled) takes nothing.
            if not w.verdicts.done():
                w.verdicts.set_result(verdicts[start:end])
            start = end

    async def _serve_alone(self, group: list[_Waiting], chain_id: str, max_tx_bytes: int) -> None:
        """Each of ``group``'s checks in a call of its own: its verdicts or its failure."""
        for w in group:
            if w.verdicts.done():
                continue  # its caller went away
            try:
                verdicts = await self._check_now(w.raws, chain_id, max_tx_bytes, w.hashes)
            except Exception as exc:
                if not w.verdicts.done():
                    w.verdicts.set_exception(exc)
            else:
                if not w.verdicts.done():
                    w.verdicts.set_result(verdicts)

    async def _check_now(
        self,
        raws: Sequence[bytes],
        chain_id: str,
        max_tx_bytes: int,
        hashes: Sequence[bytes | None] | None,
    ) -> list[Verdict]:
        """``check`` in one call of its own."""
        todo = self.passed.unknown(raws, chain_id, max_tx_bytes, hashes)
        if not todo:
            return [None] * len(raws)
        loop = asyncio.get_running_loop()
        procs = self._live()
        self._home = loop
        sent = raws if len(todo) == len(raws) else [raws[i] for i in todo]
        with self._lock:
            self.calls += 1
        got = await self._call(loop, procs, sent, chain_id, max_tx_bytes)
        return self.passed.merge(len(raws), todo, got, hashes, chain_id)

    async def _call(
        self,
        loop: asyncio.AbstractEventLoop,
        procs: list[WorkerProcess],
        sent: Sequence[bytes],
        chain_id: str,
        max_tx_bytes: int,
    ) -> list[Verdict]:
        """``check_envelopes(sent, ...)`` in the least loaded worker this loop may use,
        or on a thread here if none may or it dies first."""
        payload = _request(sent, chain_id, max_tx_bytes)
        taken: tuple[WorkerProcess, asyncio.Future[bytes]] | None = None
        for w in sorted(procs, key=lambda w: w.load):
            future = w.call(loop, payload, len(sent))
            if future is not None:
                taken = (w, future)
                break
        # Not held while the worker works: it keeps what the pipe has not taken.
        del payload
        if taken is not None:
            w, future = taken
            try:
                return _answer(await future, len(sent))
            except WorkerGone:
                if self._closed:
                    raise RuntimeError("verifier is closed") from None
                log.warning("a verification worker died; checking %d transactions here", len(sent))
            except ValueError:
                log.error("verification worker %d answered out of protocol; replacing it", w.pid)
                w.stop(WorkerGone("out of protocol"), wait=0)
        return await loop.run_in_executor(None, check_envelopes, sent, chain_id, max_tx_bytes)

    def check_sync(
        self,
        raws: Sequence[bytes],
        chain_id: str,
        max_tx_bytes: int,
        hashes: Sequence[bytes | None] | None = None,
    ) -> list[Verdict]:
        """``check`` for a thread that may block (the consensus thread), spread over
        every worker."""
        todo = self.passed.unknown(raws, chain_id, max_tx_bytes, hashes)
        if not todo:
            return [None] * len(raws)
        sent = raws if len(todo) == len(raws) else [raws[i] for i in todo]
        procs = self._live()
        step = max(_MIN_CHUNK, -(-len(sent) // self.workers))
        chunks = [sent[k : k + step] for k in range(0, len(sent), step)]
        with self._lock:
            self.calls += len(chunks)
        # Idle workers first, written to from here: no turn of the event loop to wait
        # for, twice (a proposal's check is on the way to the node's prevote). The
        # chunks left, if any, queue at the home loop's workers meanwhile.
        begun = self._begin_idle(procs, chunks, chain_id, max_tx_bytes)
        left = [chunk for w, chunk in zip(begun, chunks, strict=True) if w is None]
        from_home: list[Verdict] | None = None
        failure: BaseException | None = None
        if left:
            try:
                from_home = self._through_home(left, chain_id, max_tx_bytes)
            except BaseException as exc:  # the begun calls are read before it goes up
                failure = exc
        answers = self._end_begun(begun, chunks)
        if failure is not None:
            raise failure
        got: list[Verdict] = []
        at = 0
        for w, answer, chunk in zip(begun, answers, chunks, strict=True):
            # The home loop's verdicts are the chunks' no idle worker took, in order,
            # never a begun chunk's whose worker died (checked here instead).
            if w is None and from_home is not None:
                answer = from_home[at : at + len(chunk)]
                at += len(chunk)
            if answer is None:
                answer = check_envelopes(chunk, chain_id, max_tx_bytes)
            got.extend(answer)
        return self.passed.merge(len(raws), todo, got, hashes, chain_id)

    def _through_home(
        self, chunks: list[Sequence[bytes]], chain_id: str, max_tx_bytes: int
    ) -> list[Verdict] | None:
        """The chunks' verdicts from the home loop's workers, if that loop runs on
        another thread (else None). None too if it stops before it answers, or
        cancels the call (its shutdown cancels every task it runs)."""
        home = self._home
        if home is None or home is running_loop() or not home.is_running():
            return None

        async def calls() -> list[Verdict]:
            loop = asyncio.get_running_loop()
            procs = self._live()
            parts = await asyncio.gather(
                *(self._call(loop, procs, chunk, chain_id, max_tx_bytes) for chunk in chunks)
            )
            return [verdict for part in parts for verdict in part]

        try:
            future = asyncio.run_coroutine_threadsafe(calls(), home)
        except RuntimeError:
            return None  # the loop closed meanwhile
        while True:
            try:
                return future.result(timeout=_HOME_POLL_S)
            except concurrent.futures.CancelledError:
                if self._closed:
                    raise RuntimeError("verifier is closed") from None
                return None
            except concurrent.futures.TimeoutError:
                if home.is_closed() or not home.is_running():
                    future.cancel()
                    return None

    def _begin_idle(
        self,
        procs: list[WorkerProcess],
        chunks: list[Sequence[bytes]],
        chain_id: str,
        max_tx_bytes: int,
    ) -> list[WorkerProcess | None]:
        """Each chunk sent to an idle worker, as long as there is one: the worker
        that took it, or None."""
        free = iter(procs)
        begun: list[WorkerProcess | None] = []
        for chunk in chunks:
            payload = _request(chunk, chain_id, max_tx_bytes)
            begun.append(next((w for w in free if w.begin_blocking(payload, len(chunk))), None))
        return begun

    def _end_begun(
        self, begun: list[WorkerProcess | None], chunks: list[Sequence[bytes]]
    ) -> list[list[Verdict] | None]:
        """The answers of ``_begin_idle``'s calls, waited for here: each chunk's
        verdicts, or None where no worker took it or its worker died (to check
        elsewhere). Every begun call is read to its end, whatever an earlier one gave;
        then a worker's ``VerifierError`` is raised."""
        out: list[list[Verdict] | None] = []
        error: VerifierError | None = None
        closed = False
        for w, chunk in zip(begun, chunks, strict=True):
            answer: list[Verdict] | None = None
            if w is not None:
                try:
                    answer = _answer(w.end_blocking(), len(chunk))
                except WorkerGone:
                    closed = closed or self._closed
                    log.warning(
                        "a verification worker died; checking %d transactions here", len(chunk)
                    )
                except VerifierError as exc:
                    error = error or exc
                except ValueError:
                    log.error("verification worker %d answered out of protocol", w.pid)
                    w.stop(WorkerGone("out of protocol"))
            out.append(answer)
        if closed:
            raise RuntimeError("verifier is closed")
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        """Stop the workers; checks in flight fail with ``RuntimeError`` and so does
        every later one."""
        with self._lock:
            self._closed = True
            procs, self._procs = self._procs, []
        # Nothing is answered from memory either: a closed verifier refuses work.
        self.passed.close()
        for w in procs:
            w.stop(RuntimeError("verifier is closed"))
