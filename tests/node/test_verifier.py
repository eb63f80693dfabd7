"""Signature checks in worker processes give every transaction the verdict the threads give."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvloop

from core import PrivateKey, SignedTx, TxBody, pack_raw, sign_tx, tx_hash
from core.keys import SignDomain
from node.mempool import Mempool, MempoolConfig
from node.verifier import COALESCE_BELOW, RESPAWN_S, PassedEnvelopes, ProcessVerifier, VerifierError
from tests import worker_checks
from vm import Account, ChainParams, Executor, Transfer, verify_signed_tx
from vm.accounts import account_key
from vm.executor import check_envelopes
from vm.registry import default_registry

CHAIN = "verifier-test"
PARAMS = ChainParams(min_fee=10, max_expiry_blocks=100, max_tx_bytes=1024)
KEYS = [PrivateKey(hashlib.sha256(b"verifier-%d" % i).digest()) for i in range(8)]


def _tx(k: PrivateKey, nonce: int = 0, **kw: object) -> bytes:
    body = TxBody(nonce, 10, 50, "transfer", Transfer(bytes(20), 1).encode())
    return sign_tx(k, str(kw.get("chain", CHAIN)), body).encode()


def _signed(k: PrivateKey, body: bytes, chain: str = CHAIN) -> bytes:
    """An envelope with a valid signature over arbitrary body bytes."""
    return SignedTx(chain, k.public_key, body, k.sign(SignDomain.TX, chain, body)).encode()


def corpus() -> list[bytes]:
    """One transaction for each verdict of ``verify_signed_tx``, valid ones between."""
    k = KEYS[0]
    good = _tx(k)
    bad_sig = bytearray(good)
    bad_sig[-1] ^= 1
    return [
        good,
        b"\x00" * 2000,  # too_large
        b"\xc1garbage",  # malformed envelope
        good + b"\x00",  # trailing bytes
        _tx(k, chain="other-chain"),  # wrong_chain
        bytes(bad_sig),  # bad_signature
        _signed(k, b"not a body"),  # malformed body
        _signed(k, TxBody(0, 10, 50, "no_such_type", b"").encode()),  # unknown_type
        _signed(k, TxBody(0, 10, 50, "transfer", b"\x92\x01").encode()),  # malformed payload
        _tx(KEYS[1], 3),
    ]


def _threads_verdict(raw: bytes) -> tuple[str, str] | None:
    try:
        verify_signed_tx(raw, CHAIN, default_registry(), PARAMS.max_tx_bytes)
    except Exception as exc:  # the verdict under test
        return (exc.code, exc.message)  # type: ignore[attr-defined]  # errors carry code
    return None


@pytest.fixture(scope="module")
def verifier():
    v = ProcessVerifier(2)
    v.start_workers()
    yield v
    v.close()


def test_corpus_covers_every_stateless_code():
    codes = {v[0] for v in map(_threads_verdict, corpus()) if v is not None}
    assert codes == {
        "too_large",
        "malformed",
        "wrong_chain",
        "bad_signature",
        "unknown_type",
    }


def test_envelope_checks_in_a_worker_match_the_first_stage(verifier):
    raws = corpus()
    got = asyncio.run(verifier.check(raws, CHAIN, PARAMS.max_tx_bytes))
    assert got == check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    assert verifier.check_sync(raws * 5, CHAIN, PARAMS.max_tx_bytes) == got * 5


def test_small_checks_of_one_turn_of_the_loop_share_one_worker_call():
    # One-tap buyers: many requests of one transaction each, admitted at once.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(1, remember=0)

    async def all_at_once() -> list[list[tuple[str, str] | None]]:
        return await asyncio.gather(
            *(v.check([raw], CHAIN, PARAMS.max_tx_bytes) for raw in raws),
            v.check(raws[:3], CHAIN, PARAMS.max_tx_bytes, _hashes(raws[:3])),
        )

    try:
        got = asyncio.run(all_at_once())
        assert got == [[verdict] for verdict in expected] + [expected[:3]]
        assert v.calls == 1
        # A check as big as COALESCE_BELOW goes at once, in a call of its own.
        big = [raws[0]] * COALESCE_BELOW
        assert asyncio.run(v.check(big, CHAIN, PARAMS.max_tx_bytes)) == [None] * len(big)
        assert v.calls == 2
    finally:
        v.close()


def test_a_batch_in_small_chunks_still_keeps_every_worker_busy():
    # The mempool cuts a batch of 100 into one chunk per worker, 50 each: both are
    # small checks, and one call for both would leave a worker idle.
    raws = (corpus() * 10)[:100]
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0)

    async def one_chunk_each() -> list[list[tuple[str, str] | None]]:
        return await asyncio.gather(
            v.check(raws[:50], CHAIN, PARAMS.max_tx_bytes),
            v.check(raws[50:], CHAIN, PARAMS.max_tx_bytes, _hashes(raws[50:])),
        )

    try:
        assert asyncio.run(one_chunk_each()) == [expected[:50], expected[50:]]
        assert v.calls == 2
    finally:
        v.close()


def test_a_shared_call_serves_each_chain_id_apart_and_a_caller_gone_takes_nothing():
    k = KEYS[2]
    here, there = _tx(k), _tx(k, chain="other-chain")
    v = ProcessVerifier(1, remember=0)

    async def scenario() -> tuple[list[object], int]:
        gone = asyncio.ensure_future(v.check([here], CHAIN, PARAMS.max_tx_bytes))
        both = asyncio.gather(
            v.check([here, there], CHAIN, PARAMS.max_tx_bytes),
            v.check([there], "other-chain", PARAMS.max_tx_bytes),
        )
        await asyncio.sleep(0)  # every check is waiting for its call now
        gone.cancel()
        return list(await both), v.calls

    try:
        got, calls = asyncio.run(scenario())
        [mine, theirs] = got
        assert mine == check_envelopes([here, there], CHAIN, PARAMS.max_tx_bytes)
        assert mine[0] is None and mine[1] is not None and mine[1][0] == "wrong_chain"
        assert theirs == [None]
        assert calls == 2  # one per chain id
    finally:
        v.close()


def test_a_call_failed_by_one_callers_bytes_fails_that_caller_alone():
    # A hostile client's bytes that made the envelope checks raise would otherwise
    # fail every honest request sharing its call, where alone they failed only its own.
    good = [_tx(k) for k in KEYS[:3]]
    v = ProcessVerifier(1, remember=0, check=worker_checks.POISONED)

    async def shared() -> list[object]:
        return await asyncio.gather(
            v.check([good[0]], CHAIN, PARAMS.max_tx_bytes),
            v.check([worker_checks.POISON], CHAIN, PARAMS.max_tx_bytes),
            v.check(good[1:], CHAIN, PARAMS.max_tx_bytes),
            return_exceptions=True,
        )

    try:
        first, poisoned, rest = asyncio.run(shared())
        assert (first, rest) == ([None], [None, None])
        assert isinstance(poisoned, VerifierError)
        assert "a bug hit by one caller's bytes" in str(poisoned)
    finally:
        v.close()


def test_every_caller_sharing_a_call_gets_its_failure():
    v = ProcessVerifier(1)
    v.close()

    async def closed() -> list[object]:
        return await asyncio.gather(
            *(v.check([_tx(k)], CHAIN, PARAMS.max_tx_bytes) for k in KEYS[:3]),
            return_exceptions=True,
        )

    failures = asyncio.run(closed())
    assert [type(f) for f in failures] == [RuntimeError] * 3
    assert all("closed" in str(f) for f in failures)


def test_a_loop_stopped_before_its_turn_ended_leaves_no_check_stuck_on_the_next():
    # A small check waits for the end of its loop's turn; that loop stops first (a
    # run_until_complete whose coroutine returned), so its flush never runs. The
    # next loop's checks must not wait for it.
    v = ProcessVerifier(1, remember=0)
    good = _tx(KEYS[3])

    async def leave_one_waiting() -> None:
        asyncio.ensure_future(v.check([good], CHAIN, PARAMS.max_tx_bytes))

    async def next_loop() -> list[tuple[str, str] | None]:
        # A bound on a hang, not on speed.
        return await asyncio.wait_for(v.check([good], CHAIN, PARAMS.max_tx_bytes), 30)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(leave_one_waiting())
        loop.close()
        assert asyncio.run(next_loop()) == [None]
        assert v.calls == 1
    finally:
        v.close()


def test_a_shared_call_cancelled_before_it_began_cancels_its_callers():
    # The loop's shutdown (or anything that cancels every task) may cancel the task of
    # a shared call before its first step: its callers must not wait for ever.
    v = ProcessVerifier(1, remember=0)

    async def scenario() -> bool:
        caller = asyncio.ensure_future(v.check([_tx(KEYS[4])], CHAIN, PARAMS.max_tx_bytes))
        await asyncio.sleep(0)  # the caller waits for the end of this turn
        await asyncio.sleep(0)  # the turn's flush made the call's task, not yet begun
        for task in asyncio.all_tasks() - {asyncio.current_task(), caller}:
            task.cancel()
        # A bound on a hang, not on speed.
        await asyncio.wait({caller}, timeout=30)
        return caller.cancelled()

    try:
        assert asyncio.run(scenario())
    finally:
        v.close()


class _Env:
    def __init__(
        self,
        verifier: ProcessVerifier | None,
        pool: ThreadPoolExecutor,
        state: dict[bytes, bytes] | None = None,
    ) -> None:
        if state is None:
            state = {account_key(k.address): Account(10**9, 0).encode() for k in KEYS}
        registry = default_registry()
        self.mempool = Mempool(
            CHAIN,
            registry,
            Executor(registry),
            PARAMS,
            type("S", (), {"get": staticmethod(state.get)})(),
            lambda: 1,
            MempoolConfig(),
            pool,
            verifier=verifier,
        )


def test_mempool_gives_the_same_results_with_workers_and_threads(verifier):
    raws = corpus()
    with ThreadPoolExecutor(2) as pool:
        with_workers = asyncio.run(_Env(verifier, pool).mempool.submit(raws))
        with_threads = asyncio.run(_Env(None, pool).mempool.submit(raws))
    assert with_workers == with_threads
    assert [r.code for r in with_workers][:1] == ["accepted"]
    # The stateless failures carry no hash; the stateful ones do.
    assert [r.hash is None for r in with_workers] == [
        v is not None for v in map(_threads_verdict, raws)
    ]


def test_with_workers_the_mempool_charges_decoding_to_a_stage_of_its_own(verifier):
    with ThreadPoolExecutor(2) as pool:
        mempool = _Env(verifier, pool).mempool
        results = asyncio.run(mempool.submit(corpus()))
    assert "accepted" in {r.code for r in results}
    totals = mempool.stages.totals()
    assert totals["admission_decode"] > 0 and totals["admission_checks"] > 0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (not gone, not a zombie left for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pids: set[int]) -> None:
    """Until the processes ``pids`` are gone: a worker the event loop killed is not
    waited for there (a bound on a hang, not on speed)."""
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(pid) for pid in pids)


def test_a_dead_worker_costs_no_verdicts():
    v = ProcessVerifier(2)
    try:
        raws = corpus()
        expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        workers = set(v.pids)
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        # The chunk in flight is checked here instead; the pool is replaced.
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        assert asyncio.run(v.check(raws, CHAIN, PARAMS.max_tx_bytes)) == expected
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        # Checks run in fresh workers again, not on a thread of this process for good.
        replaced = set(v.pids)
        assert replaced and replaced.isdisjoint(workers)
    finally:
        v.close()
    assert not v.pids
    _wait_gone(workers | replaced)


def test_workers_killed_under_a_shared_call_cost_its_callers_no_verdicts():
    # One-tap requests sharing a call when the workers die: each still gets its own
    # verdicts (checked on a thread here), and the pool is replaced.
    v = ProcessVerifier(2)
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)

    async def one_tap_each() -> list[list[tuple[str, str] | None]]:
        return await asyncio.gather(*(v.check([raw], CHAIN, PARAMS.max_tx_bytes) for raw in raws))

    try:
        assert asyncio.run(one_tap_each()) == [[verdict] for verdict in expected]
        workers = set(v.pids)
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert asyncio.run(one_tap_each()) == [[verdict] for verdict in expected]
        assert asyncio.run(one_tap_each()) == [[verdict] for verdict in expected]
        replaced = set(v.pids)
        assert replaced and replaced.isdisjoint(workers)
    finally:
        v.close()
    assert not v.pids
    _wait_gone(workers | replaced)


def test_workers_dying_on_every_call_are_replaced_at_a_bounded_rate():
    # Workers that die at once (a broken install, input that crashes them) would
    # otherwise cost a process start per check: replacements wait RESPAWN_S, and the
    # checks meanwhile run here and get their verdicts.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0, check=worker_checks.CRASHING)
    try:
        began = time.monotonic()
        for _ in range(40):
            assert asyncio.run(v.check(raws, CHAIN, PARAMS.max_tx_bytes)) == expected
            assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        rounds = (time.monotonic() - began) / RESPAWN_S + 1
        # The first two, then at most one round of two replacements per RESPAWN_S.
        assert v.started <= 2 + 2 * rounds
    finally:
        v.close()


def test_a_worker_answering_out_of_protocol_gives_no_verdict():
    # An answer of the wrong shape (passes, one verdict short): nothing the worker
    # says is taken (above all no pass), its calls are checked here, and it is replaced.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(1, remember=0, check=worker_checks.LYING)
    try:
        v.start_workers()
        first = set(v.pids)
        assert asyncio.run(v.check(raws, CHAIN, PARAMS.max_tx_bytes)) == expected
        _wait_gone(first)
        # Its replacement, used from a blocking thread, breaks the same way.
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
    finally:
        v.close()


def test_a_library_printing_in_a_worker_breaks_no_answer():
    # A line printed by a library the check uses must not reach the answer pipe: read
    # as a frame header, it announced hundreds of megabytes and the call waited for
    # them for ever.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(1, remember=0, check=worker_checks.CHATTY)

    async def check() -> list[object]:
        # A bound on a hang, not on speed.
        return await asyncio.wait_for(v.check(raws, CHAIN, PARAMS.max_tx_bytes), 60)

    try:
        v.start_workers()
        first = set(v.pids)
        assert asyncio.run(check()) == expected
        # From a blocking thread (no loop runs now), the worker read here.
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        # The same worker answered both: the printed line broke nothing.
        assert set(v.pids) == first
    finally:
        v.close()


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_check_bigger_than_a_pipe_buffer_gets_every_verdict(run):
    # Thousands of transactions are more than a pipe holds at once: the event loop
    # writes the request in pieces as the worker reads, and reads its answer whole;
    # small checks share a call meanwhile. On both loops (the node runs uvloop).
    raws = corpus() * 400
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0)

    async def big_and_small() -> list[object]:
        return await asyncio.gather(
            v.check(raws, CHAIN, PARAMS.max_tx_bytes),
            *(v.check([raw], CHAIN, PARAMS.max_tx_bytes) for raw in raws[:20]),
        )

    try:
        assert sum(map(len, raws)) > 256 * 1024
        big, *small = run(big_and_small())
        assert big == expected
        assert small == [[verdict] for verdict in expected[:20]]
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
    finally:
        v.close()


def test_check_sync_from_another_thread_shares_the_running_loops_workers():
    # The consensus thread checks a proposal's transactions while the event loop has
    # checks of its own in flight on every worker: both get their verdicts, from the
    # same workers (no new one starts), and neither waits for ever.
    raws = corpus() * 50
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0)
    pool = ThreadPoolExecutor(1)

    async def both() -> tuple[object, object]:
        loop = asyncio.get_running_loop()
        # A check first: the workers' loop is then this one, as a serving node's is.
        assert await v.check(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        mine = asyncio.gather(*(v.check(raws, CHAIN, PARAMS.max_tx_bytes) for _ in range(4)))
        theirs = loop.run_in_executor(pool, v.check_sync, raws, CHAIN, PARAMS.max_tx_bytes)
        # A bound on a hang, not on speed.
        return await asyncio.wait_for(asyncio.gather(mine, theirs), 60)

    try:
        v.start_workers()
        pids = set(v.pids)
        mine, theirs = asyncio.run(both())
        assert mine == [expected] * 4
        assert theirs == expected
        assert set(v.pids) == pids
    finally:
        pool.shutdown()
        v.close()


@contextlib.contextmanager
def _serving_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on a thread of its own, as a serving node's; stopped and closed after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _until_on(loop: asyncio.AbstractEventLoop, done: Callable[[], Awaitable[bool]]) -> None:
    """Until ``done()``, run on ``loop``, says so (a bound on a hang, not on speed)."""
    deadline = time.monotonic() + 60
    while not asyncio.run_coroutine_threadsafe(done(), loop).result():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_check_sync_through_a_loop_that_cancels_its_tasks_still_gets_verdicts(
    tmp_path, monkeypatch
):
    # The consensus thread, finding no idle worker, waits on the home loop's; that
    # loop's shutdown cancels every task it runs, this check's too: the consensus
    # thread gets its verdicts from elsewhere, as when that loop stops, not an
    # exception in the middle of a block. (The worker answers only once the loop has
    # cancelled the tasks.)
    raws = corpus() * 7
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    gate = tmp_path / "gate"
    monkeypatch.setenv(worker_checks.GATE_ENV, str(gate))
    v = ProcessVerifier(1, remember=0, check=worker_checks.GATED)

    async def start() -> None:
        v.start_workers()  # on the loop: it is the workers' home
        # A check of the loop's own holds the one worker (until the gate opens).
        asyncio.ensure_future(v.check(raws, CHAIN, PARAMS.max_tx_bytes))

    async def cancel_all() -> bool:
        """Cancel the loop's checks once the consensus thread's is among them."""
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if len(others) < 2:
            return False
        for task in others:
            task.cancel()
        return True

    with _serving_loop() as loop, ThreadPoolExecutor(1) as pool:
        try:
            asyncio.run_coroutine_threadsafe(start(), loop).result()
            consensus = pool.submit(v.check_sync, raws, CHAIN, PARAMS.max_tx_bytes)
            _until_on(loop, cancel_all)  # the consensus thread's check is on the loop
            gate.touch()
            assert consensus.result(timeout=60) == expected
        finally:
            gate.touch()
            v.close()


def test_check_sync_never_gives_a_dead_workers_chunk_the_home_loops_verdicts(tmp_path, monkeypatch):
    # The consensus thread's check in two chunks: the first to the one idle worker,
    # which dies on it; the second through the home loop, whose worker is busy. The
    # first chunk is checked here: it must not take the second's verdicts (all passes).
    bad = corpus()[1:9]  # refusals of every kind
    good = [_tx(k, nonce) for k in KEYS for nonce in range(3)][:20]
    raws = [worker_checks.DEADLY, *bad, *bad[:3], *good]
    assert len(raws) == 32  # two chunks of 16 over two workers
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    assert all(verdict is None for verdict in expected[16:])
    gate = tmp_path / "gate"
    monkeypatch.setenv(worker_checks.GATE_ENV, str(gate))
    v = ProcessVerifier(2, remember=0, check=worker_checks.GATED_OR_DYING)

    async def hold_one_worker() -> None:
        v.start_workers()  # on the loop: it is the workers' home
        # A check of the loop's own holds one worker until the gate opens.
        asyncio.ensure_future(v.check(good * 4, CHAIN, PARAMS.max_tx_bytes))
        await asyncio.sleep(0)  # the check's first step: its call is sent

    async def second_chunk_at_home() -> bool:
        # Its task beside the loop's own check: the first chunk went to the idle
        # worker before.
        return len(asyncio.all_tasks() - {asyncio.current_task()}) >= 2

    with _serving_loop() as loop, ThreadPoolExecutor(1) as pool:
        try:
            asyncio.run_coroutine_threadsafe(hold_one_worker(), loop).result()
            consensus = pool.submit(v.check_sync, raws, CHAIN, PARAMS.max_tx_bytes)
            _until_on(loop, second_chunk_at_home)
            gate.touch()
            assert consensus.result(timeout=60) == expected
        finally:
            gate.touch()
            v.close()


def test_check_sync_writes_to_an_idle_worker_itself():
    # While the home loop runs but has nothing in flight, the consensus thread's check
    # goes straight to the idle workers: no turn of the loop to wait for (the loop
    # here is blocked meanwhile, so a check through it would hang).
    raws = corpus() * 7
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0)
    pool = ThreadPoolExecutor(1)

    async def blocked_loop() -> object:
        v.start_workers()  # on the loop: it is the workers' home
        consensus = pool.submit(v.check_sync, raws, CHAIN, PARAMS.max_tx_bytes)
        return consensus.result(timeout=60)  # blocks the loop: a bound on a hang

    try:
        assert asyncio.run(blocked_loop()) == expected
    finally:
        pool.shutdown()
        v.close()


def test_a_worker_that_answered_is_not_killed_for_a_wedged_one_read_before_it():
    # check_sync reads its begun calls one after the other: the first worker is
    # wedged (stopped) and killed at its deadline; the second answered long before,
    # and its answer waits in the pipe, more than the pipe holds. Its deadline has
    # passed by then too, but through no fault of its own: it is read, not killed.
    raws = [b"\xc1garbage"] * 8000  # two requests a pipe holds, answers it does not
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0, deadline_s=1.0)
    try:
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected  # both warm
        wedged, healthy = v.pids
        os.kill(wedged, signal.SIGSTOP)
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        assert v.pids == [healthy]
        assert _alive(healthy)
    finally:
        v.close()


def test_check_sync_with_worker_pipes_past_the_first_1024_descriptors():
    # A node serving thousands of connections (max_connections is 8192) starts or
    # replaces a worker: its pipes get descriptors past 1024, which select() cannot
    # watch. The consensus thread's check must still get its verdicts, not a ValueError.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the open-file limit ({hard}) holds no descriptor past 1024 here")
    if soft != resource.RLIM_INFINITY and soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        v = ProcessVerifier(1, remember=0)
        try:
            assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
            assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        finally:
            v.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_wedged_worker_is_killed_past_its_deadline_and_its_checks_answered(tmp_path, monkeypatch):
    # A worker alive but not answering (stopped, stuck in the kernel) would hold its
    # callers for ever, the consensus thread among them: past its deadline it is killed
    # and its calls are checked here, from the event loop and from a blocking thread.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    monkeypatch.setenv(worker_checks.GATE_ENV, str(tmp_path / "never"))
    v = ProcessVerifier(1, remember=0, check=worker_checks.GATED, deadline_s=0.2)
    try:
        v.start_workers()
        wedged = set(v.pids)
        assert asyncio.run(v.check(raws, CHAIN, PARAMS.max_tx_bytes)) == expected
        _wait_gone(wedged)
        time.sleep(RESPAWN_S)  # so that the next check has a worker of its own again
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        assert v.started == 2
    finally:
        v.close()
    assert not v.pids


def test_closing_the_verifier_fails_its_checks_in_flight():
    raws = corpus() * 400
    v = ProcessVerifier(1, remember=0)

    async def close_meanwhile() -> object:
        check = asyncio.ensure_future(v.check(raws, CHAIN, PARAMS.max_tx_bytes))
        await asyncio.sleep(0.01)
        v.close()
        return await asyncio.gather(check, return_exceptions=True)

    (outcome,) = asyncio.run(close_meanwhile())  # type: ignore[misc]  # one result
    assert isinstance(outcome, RuntimeError) and "closed" in str(outcome)
    assert not v.pids


def test_workers_outlive_a_sigterm_to_the_process_group():
    # systemd (and kill -- -PGID) sends SIGTERM to every process of the node at once:
    # the node stops gracefully, finishing a block in flight, and its workers must
    # stay until it closes them, as with Ctrl-C, not die under that block's checks.
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    v = ProcessVerifier(2, remember=0)
    try:
        # Answered once: each worker runs its loop (a signal during start-up is not this).
        assert v.check_sync(raws * 10, CHAIN, PARAMS.max_tx_bytes) == expected * 10
        pids = set(v.pids)
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        assert v.check_sync(raws * 10, CHAIN, PARAMS.max_tx_bytes) == expected * 10
        assert asyncio.run(v.check(raws, CHAIN, PARAMS.max_tx_bytes)) == expected
        assert set(v.pids) == pids
    finally:
        v.close()
    assert not any(_alive(pid) for pid in pids)


def test_workers_exit_when_the_node_process_is_killed(tmp_path):
    # A node killed outright (SIGKILL, the OOM killer) shuts nothing down: its
    # workers see their stdin close and exit by themselves.
    script = (
        "import sys, time\n"
        "from node.verifier import ProcessVerifier\n"
        "v = ProcessVerifier(2)\n"
        "v.start_workers()\n"
        "print(' '.join(map(str, v.pids)), flush=True)\n"
        "time.sleep(600)\n"
    )
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        pids = [int(p) for p in node.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    finally:
        node.kill()
        node.wait()
    # A bound on a hang, not on speed.
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _hashes(raws: list[bytes]) -> list[bytes | None]:
    return [tx_hash(raw) for raw in raws]


def test_a_passed_envelope_is_not_checked_again():
    raws = corpus()
    expected = check_envelopes(raws, CHAIN, PARAMS.max_tx_bytes)
    passes = sum(v is None for v in expected)
    v = ProcessVerifier(1)
    try:
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes, _hashes(raws)) == expected
        assert (v.passed.checked, v.passed.reused) == (len(raws), 0)
        # Again, both ways: only the refusals go to a worker; the verdicts are the same.
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes, _hashes(raws)) == expected
        got = asyncio.run(v.check(raws, CHAIN, PARAMS.max_tx_bytes, _hashes(raws)))
        assert got == expected
        assert v.passed.checked == len(raws) + 2 * (len(raws) - passes)
        assert v.passed.reused == 2 * passes
        # Without hashes nothing is taken from memory.
        assert v.check_sync(raws, CHAIN, PARAMS.max_tx_bytes) == expected
        assert v.passed.reused == 2 * passes
    finally:
        v.close()


def test_a_remembered_pass_still_meets_the_size_limit_and_the_chain():
    good = [_tx(k) for k in KEYS[:3]]
    v = ProcessVerifier(1)
    try:
        assert v.check_sync(good, CHAIN, PARAMS.max_tx_bytes, _hashes(good)) == [None] * 3
        # A lower limit refuses what it refuses without memory.
        limit = len(good[0]) - 1
        smaller = v.check_sync(good, CHAIN, limit, _hashes(good))
        assert smaller == check_envelopes(good, CHAIN, limit)
        assert {verdict[0] for verdict in smaller if verdict is not None} == {"too_large"}
        # Another chain id forgets every pass (a node has one; a pass is for it only).
        other = v.check_sync(good, "other-chain", PARAMS.max_tx_bytes, _hashes(good))
        assert [verdict and verdict[0] for verdict in other] == ["wrong_chain"] * 3
        assert v.check_sync(good, CHAIN, PARAMS.max_tx_bytes, _hashes(good)) == [None] * 3
        assert v.passed.reused == 0
    finally:
        v.close()


def test_a_hash_list_of_another_length_is_refused():
    # A transaction without a hash of its own must never take another's pass.
    good = [_tx(k) for k in KEYS[:2]]
    memory = PassedEnvelopes()
    memory.merge(2, [0, 1], [None, None], _hashes(good), CHAIN)
    with pytest.raises(ValueError, match="3 transactions but 2 hashes"):
        memory.unknown([*good, b"garbage"], CHAIN, PARAMS.max_tx_bytes, _hashes(good))


def test_passes_checked_for_one_chain_are_not_kept_for_another():
    # Two callers interleaved: the first one's checks end after a call for another
    # chain id made the memory forget; they are not remembered under that chain.
    good = [_tx(k) for k in KEYS[:2]]
    memory = PassedEnvelopes()
    todo = memory.unknown(good, CHAIN, PARAMS.max_tx_bytes, _hashes(good))
    memory.unknown(good, "other-chain", PARAMS.max_tx_bytes, _hashes(good))
    memory.merge(2, todo, [None, None], _hashes(good), CHAIN)
    assert memory.unknown(good, "other-chain", PARAMS.max_tx_bytes, _hashes(good)) == [0, 1]


def test_the_oldest_passes_are_forgotten_past_the_bound():
    good = [_tx(k) for k in KEYS[:4]]
    v = ProcessVerifier(1, remember=3)
    try:
        v.check_sync(good, CHAIN, PARAMS.max_tx_bytes, _hashes(good))
        before = v.passed.checked
        assert v.check_sync(good, CHAIN, PARAMS.max_tx_bytes, _hashes(good)) == [None] * 4
        assert (v.passed.checked - before, v.passed.reused) == (1, 3)
    finally:
        v.close()


def test_a_copy_after_the_commit_is_refused_without_a_signature_check():
    # A node behind its peers: a transaction checked once (in a proposal, or in the
    # pool until its block committed) arrives again from a peer.
    v = ProcessVerifier(1)
    state = {account_key(k.address): Account(10**9, 0).encode() for k in KEYS}
    raws = [_tx(k) for k in KEYS]
    try:
        with ThreadPoolExecutor(2) as pool:
            env = _Env(v, pool, state)
            first = asyncio.run(env.mempool.submit(raws))
            assert [r.code for r in first] == ["accepted"] * len(raws)
            for k in KEYS:
                state[account_key(k.address)] = Account(10**9 - 60, 1).encode()
            env.mempool.on_block_committed(
                [r.hash for r in first], senders=[k.address for k in KEYS]
            )
            checked = v.passed.checked
            again = asyncio.run(env.mempool.submit(raws))
            fresh = asyncio.run(_Env(None, pool, state).mempool.submit(raws))
        assert again == fresh
        assert [r.code for r in again] == ["nonce_too_low"] * len(raws)
        assert v.passed.checked == checked
    finally:
        v.close()


def test_closed_verifier_refuses_work():
    v = ProcessVerifier(1)
    v.close()
    with pytest.raises(RuntimeError, match="closed"):
        v.check_sync([pack_raw([])], CHAIN, 100)


def _chain(tmp_path, name: str, genesis, verifier=None):
    from node.chain import Chain
    from node.service import build_registry
    from storage import ChainStore

    return Chain(ChainStore(tmp_path / name), genesis, build_registry(), verifier)


def test_chain_verifies_unknown_transactions_in_the_workers(tmp_path, verifier):
    from dataclasses import replace

    from core.keystore import load_key
    from genesis import GenesisAccount, create_localnet, load_genesis

    layout = create_localnet(tmp_path / "net", 1, "")
    g = load_genesis(layout.genesis_path)
    g = replace(g, accounts=g.accounts + tuple(GenesisAccount(k.address, 10**9) for k in KEYS))
    producer = load_key(layout.nodes[0].key_path, "")
    source = _chain(tmp_path, "a", g)
    fee = g.params.min_fee
    raws = [
        sign_tx(k, g.chain_id, TxBody(0, fee, 50, "transfer", Transfer(bytes(20), 1).encode()))
        for k in KEYS
    ]
    vtxs = [verify_signed_tx(t.encode(), g.chain_id, source.registry, 10**5) for t in raws]
    executed = source.build(vtxs, producer, source.next_block_time(int(time.time() * 1000)))
    block = executed.block
    with_workers = _chain(tmp_path, "b", g, verifier).verify(block)
    inline = _chain(tmp_path, "c", g).verify(block)
    assert with_workers.tree_update.root == inline.tree_update.root == block.header.state_root
    assert with_workers.receipts == inline.receipts == executed.receipts
    assert with_workers.result.included == inline.result.included
    # The same block again (a rival round's proposal, or another node's chain on this
    # verifier): its signatures passed once and are not checked again.
    checked = verifier.passed.checked
    again = _chain(tmp_path, "d", g, verifier).verify(block)
    assert again.receipts == executed.receipts
    assert verifier.passed.checked == checked


def test_chain_reports_the_first_bad_transaction_in_block_order(tmp_path, verifier):
    from dataclasses import replace

    from core import Block, Invalid, merkle_root
    from core.keystore import load_key
    from genesis import create_localnet, load_genesis

    layout = create_localnet(tmp_path / "net", 1, "")
    g = load_genesis(layout.genesis_path)
    k = KEYS[0]
    good = sign_tx(
        k, g.chain_id, TxBody(0, 10, 50, "transfer", Transfer(bytes(20), 1).encode())
    ).encode()
    bad_sig = bytearray(good)
    bad_sig[-1] ^= 1
    bad_body = _signed(k, TxBody(0, 10, 50, "no_such_type", b"").encode(), g.chain_id)
    producer = load_key(layout.nodes[0].key_path, "")
    for order in ([good, bad_body, bytes(bad_sig), good], [good, bytes(bad_sig), bad_body]):
        outcomes = []
        for v in (verifier, None):
            chain = _chain(tmp_path, f"x{len(outcomes)}{len(order)}", g, v)
            # A block a producer could have proposed, carrying ``order`` as its body.
            built = chain.build([], producer, chain.next_block_time(int(time.time() * 1000))).block
            header = replace(built.header, tx_root=merkle_root(order))
            with pytest.raises(Invalid) as info:
                chain.verify(Block(header, tuple(order)))
            outcomes.append((info.value.code, info.value.message))
        assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "bad_signature"
