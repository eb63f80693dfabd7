"""``liveledger_thread_cpu_seconds_total``: CPU time by thread role, read from /proc."""

from __future__ import annotations

import re
import sys
import threading
import time

import pytest
from prometheus_client import generate_latest

from node.metrics import NodeMetrics
from node.stage_cpu import STAGES, StageCpu

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _cpu(text: str, thread: str) -> float:
    found = re.search(
        rf'^liveledger_thread_cpu_seconds_total{{thread="{thread}"}} ([0-9.e+-]+)$',
        text,
        re.MULTILINE,
    )
    assert found is not None, text
    return float(found[1])


def test_a_tracked_threads_cpu_is_its_own_and_the_rest_is_other():
    metrics = NodeMetrics()
    # Nothing tracked yet: no family at all rather than a process total as "other".
    assert "liveledger_thread_cpu_seconds" not in generate_latest(metrics.registry).decode()
    spun = threading.Event()
    stop = threading.Event()

    def spin() -> None:
        metrics.thread_cpu.track("consensus", threading.get_native_id())
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun.set()
        stop.wait()

    metrics.thread_cpu.track("event_loop", threading.get_native_id())
    before = generate_latest(metrics.registry).decode()
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        # Waited for without polling, so this thread stays idle however long a loaded
        # machine takes to give the other one its 0.3 s.
        spun.wait()
        text = generate_latest(metrics.registry).decode()
        assert _cpu(text, "consensus") >= 0.25
        # This thread slept: the spinning is counted once, as the consensus
        # thread's, not as this one's or the process's other threads'.
        assert _cpu(text, "event_loop") - _cpu(before, "event_loop") < 0.2
        assert _cpu(text, "other") - _cpu(before, "other") < 0.2
    finally:
        stop.set()
        worker.join()
    # The thread is gone: its label goes, and its CPU counts as the process's other.
    # join() returns once Python is done with the thread; the kernel drops its task a
    # moment later (a clean clone's suite once scraped in between).
    deadline = time.monotonic() + 10
    while True:
        text = generate_latest(metrics.registry).decode()
        if 'thread="consensus"' not in text or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert 'thread="consensus"' not in text
    assert _cpu(text, "other") >= 0.25


def test_the_stages_cpu_is_a_counter_per_stage_once_tracked():
    metrics = NodeMetrics()
    # No chain open yet (state sync, say): no family rather than zeros that mean nothing.
    assert "liveledger_stage_cpu_seconds" not in generate_latest(metrics.registry).decode()
    stages = StageCpu()
    metrics.stage_cpu.track(stages)
    stages.add("execute", 1.5)
    stages.add("after_commit", 0.25)
    text = generate_latest(metrics.registry).decode()
    found = dict(
        re.findall(
            r'^liveledger_stage_cpu_seconds_total\{stage="(\w+)"\} ([0-9.e+-]+)$', text, re.M
        )
    )
    assert list(found) == list(STAGES)
    assert (float(found["execute"]), float(found["after_commit"]), float(found["tree"])) == (
        1.5,
        0.25,
        0.0,
    )
