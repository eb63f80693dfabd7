"""A worker process spoken to over its stdin and stdout, from an event loop or a thread.

``node.verifier`` runs its signature checks in these. A call through
``concurrent.futures.ProcessPoolExecutor`` crossed two threads of the node (the
executor's manager and its queue feeder) and pickled both ways: measured alone, one
call of one transaction cost the node 165 µs of CPU and the worker 115, against 30
and 85 here, where the event loop writes the request to the worker's pipe itself and
reads the answer when the pipe is readable (/work/runs/s49/ipc.py's figures are in
docs/node.md). A one-tap buyer's request makes such a call.

A worker answers its requests in order (``node.verify_worker``), so each answer goes
to the oldest call not yet answered. At any time a worker is used by one owner:
the event loop that has calls in flight on it (its pipe is registered with that loop
only while it does), or one blocking caller (``call_blocking``), never both.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.verify_worker import HEADER, MAX_FRAME, frame_header

log = logging.getLogger("node.verifier")

# Where the ``node`` package is: the worker imports the very code the node runs,
# whatever the working directory (``-P`` keeps the latter off its path).
_ROOT = str(Path(__file__).resolve().parent.parent)
# Bytes read from a worker's pipe at once.
_READ = 1 << 20
# A worker that does not answer its oldest call within ``deadline_s`` plus this per
# transaction of it (about 80 times a signature check) is taken for wedged (stopped,
# stuck in the kernel): it is killed and its calls go elsewhere, so that no check,
# the consensus thread's above all, waits for ever.
PER_TX_S = 0.005
# How often the loop looks at the age of a worker's oldest call.
_WATCH_S = 1.0


class WorkerGone(Exception):
    """The worker died, or was stopped, before it answered a call."""


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[bytes]
    # Transactions in the call: what the worker still has to do (``load``).
    size: int


def _settle(future: asyncio.Future[bytes], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` on ``loop``'s thread: now if this is it, else soon (from any thread)."""
    if running_loop() is loop:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)


def _fail(future: asyncio.Future[bytes], exc: BaseException) -> None:
    """Fail ``future`` from any thread (its loop's own, or another)."""
    loop = future.get_loop()
    if not loop.is_closed():  # else nobody waits on it any more
        _on_loop(loop, _settle, future, exc)


class WorkerProcess:
    """One worker process running ``python -P -m node.verify_worker check``."""

    def __init__(self, check: str, deadline_s: float) -> None:
        self._deadline_s = deadline_s
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "node.verify_worker", check],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._wfd = self._proc.stdin.fileno()
        self._rfd = self._proc.stdout.fileno()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self._lock = threading.Lock()
        # The owner: the loop with calls in flight here, or a blocking caller.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blocking = False
        self._calls: collections.deque[_Call] = collections.deque()
        # What the pipe has not taken yet, in order: views of the requests' own bytes,
        # not copies (a flood has many requests waiting for their worker).
        self._out: collections.deque[memoryview] = collections.deque()
        self._in = bytearray()
        self._gone = False
        # Transactions sent and not yet answered (to spread calls over workers).
        self.load = 0
        # Since when (the owning loop's clock) the oldest call is the worker's to answer,
        # and the timer that watches it.
        self._since = 0.0
        self._watch: asyncio.TimerHandle | None = None
        # A blocking call's deadline (``time.monotonic``).
        self._until = 0.0

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def gone(self) -> bool:
        """Dead, stopped, or left owned by a loop that closed with calls in flight
        (their answers would come to the next owner): never to be used again."""
        loop = self._loop
        return self._gone or (loop is not None and loop.is_closed())

    # --- from an event loop ------------------------------------------------------------

    def call(
        self, loop: asyncio.AbstractEventLoop, payload: bytes, size: int
    ) -> asyncio.Future[bytes] | None:
        """Send one request of ``size`` transactions from ``loop`` (on its thread); the
        future gets the answer's payload, or ``WorkerGone``. None if the worker is not
        ``loop``'s to use now (gone, or owned by a blocking caller or another loop). A
        caller that stops waiting cancels the future; the answer then goes nowhere."""
        # Framed first: a payload no frame holds raises here, before a call is queued
        # that no answer would come for (the next answer would go to it instead).
        header = frame_header(payload)
        with self._lock:
            if self.gone or self._blocking or self._loop not in (None, loop):
                return None
            if self._loop is None:
                loop.add_reader(self._rfd, self._readable)
                self._watch = loop.call_later(_WATCH_S, self._watched)
                self._loop = loop
        future: asyncio.Future[bytes] = loop.create_future()
        if not self._calls:
            self._since = loop.time()
        self._calls.append(_Call(future, size))
        self.load += size
        if self._out:
            # The writer callback sends it after what waits.
            self._out.extend((memoryview(header), memoryview(payload)))
            return future
        try:
            sent = os.writev(self._wfd, (header, payload))
        except BlockingIOError:
            sent = 0
        except OSError:
            self._die()
            return future
        if sent < len(header):
            self._out.extend((memoryview(header)[sent:], memoryview(payload)))
        elif sent < len(header) + len(payload):
            self._out.append(memoryview(payload)[sent - len(header) :])
        if self._out:
            loop.add_writer(self._wfd, self._writable)
        return future

    def _writable(self) -> None:
        out = self._out
        try:
            sent = os.write(self._wfd, out[0])
        except BlockingIOError:
            return
        except OSError:
            self._die()
            return
        if sent < len(out[0]):
            out[0] = out[0][sent:]
        else:
            out.popleft()
        if not out and self._loop is not None:
            self._loop.remove_writer(self._wfd)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._rfd, _READ)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._die()  # end of file: the worker exited
            return
        buf = self._in
        buf += chunk
        start = 0
        while len(buf) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, start)
            end = start + HEADER.size + size
            if size > MAX_FRAME or not self._calls:
                self._die()  # not an answer to anything sent: the pipe is broken
                return
            if len(buf) < end:
                break
            call = self._calls.popleft()
            self.load -= call.size
            if not call.future.done():
                call.future.set_result(bytes(buf[start + HEADER.size : end]))
            start = end
            if self._loop is not None:
                self._since = self._loop.time()
        del buf[:start]
        if not self._calls:
            self._release()

    def _watched(self) -> None:
        """The loop's look at the oldest call: killed past its deadline, else again later."""
        loop = self._loop
        if loop is None or not self._calls:
            return
        size = self._calls[0].size
        if loop.time() - self._since > self._deadline_s + PER_TX_S * size:
            log.error(
                "verification worker %d did not answer a call of %d transactions in time; "
                "killing it",
                self.pid,
                size,
            )
            self._die()
            return
        self._watch = loop.call_later(_WATCH_S, self._watched)

    def _release(self) -> None:
        """No call in flight: the loop lets the worker go (a blocking caller may take it).
        Its pipes are unregistered and its buffers emptied first: the next owner finds
        nothing of this one's."""
        loop = self._loop
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._rfd)
            if self._out:
                loop.remove_writer(self._wfd)
        self._out.clear()
        self._in.clear()
        with self._lock:
            self._loop = None

    def _die(self) -> None:
        """The worker is dead or its pipe is broken: every call in flight fails with
        ``WorkerGone`` (on the owning loop's thread)."""
        self._gone = True
        calls = list(self._calls)
        self._close_pipes()
        self._end_process(wait=0)
        for call in calls:
            _settle(call.future, WorkerGone(f"verification worker {self.pid} died"))

    # --- from a thread that may block --------------------------------------------------

    def begin_blocking(self, payload: bytes, size: int) -> bool:
        """Send one request of ``size`` transactions from a thread that may block, if no
        loop has calls here (else False: the caller goes another way). ``end_blocking``
        must follow a True."""
        header = frame_header(payload)
        with self._lock:
            if self.gone or self._blocking or self._loop is not None:
                return False
            self._blocking = True
        self._until = time.monotonic() + self._deadline_s + PER_TX_S * size
        try:
            self._write_all(header)
            self._write_all(payload)
        except (OSError, WorkerGone):
            self._broken()
            with self._lock:
                self._blocking = False
            return False
        return True

    def end_blocking(self) -> bytes:
        """The answer to ``begin_blocking``'s request. Raises ``WorkerGone``."""
        try:
            (size,) = HEADER.unpack(self._read_exactly(HEADER.size))
            if size > MAX_FRAME:
                raise WorkerGone(f"verification worker {self.pid} sent a frame of {size} bytes")
            return self._read_exactly(size)
        except (OSError, WorkerGone):
            self._broken()
            raise WorkerGone(f"verification worker {self.pid} died") from None
        finally:
            with self._lock:
                self._blocking = False

    def _broken(self) -> None:
        self._gone = True
        self._close_pipes()
        # Not waited for on the caller's thread (the consensus thread): a process stuck
        # in the kernel is reaped later, by ``stop``.
        self._end_process(wait=0)

    def _wait(self, fd: int, event: int) -> None:
        """Until pipe ``fd`` is ready for ``event`` (``select.POLLIN``, ``POLLOUT``), or
        ``WorkerGone`` if it is not by the blocking call's deadline. Past it, the pipe
        is still looked at once: an answer waiting there came in time, while its reader
        was away (reading another worker's answer, or waiting on the home loop), and the
        worker is not wedged for that. ``poll``, not ``select``: a node with thousands of
        connections starts workers whose pipes are past the 1,024 descriptors
        ``select`` can watch."""
        left = max(0.0, self._until - time.monotonic())
        poller = select.poll()
        poller.register(fd, event)
        if not poller.poll(math.ceil(left * 1000)):
            log.error("verification worker %d did not answer in time; killing it", self.pid)
            raise WorkerGone(f"verification worker {self.pid} did not answer in time")

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._wfd, select.POLLOUT)
            try:
                sent = os.write(self._wfd, view)
            except BlockingIOError:
                continue
            view = view[sent:]

    def _read_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            self._wait(self._rfd, select.POLLIN)
            try:
                chunk = os.read(self._rfd, n - len(out))
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerGone(f"verification worker {self.pid} exited")
            out += chunk
            # The worker answers: the rest of an answer bigger than the pipe comes as
            # it is read, whatever time its reader took to come back for it.
            self._until = max(self._until, time.monotonic() + self._deadline_s)
        return bytes(out)

    # --- ending ------------------------------------------------------------------------

    def _end_process(self, wait: float = 5.0) -> None:
        """Kill the process and reap it, waiting ``wait`` seconds at most (0 on the
        event loop: a process stuck in the kernel is reaped later, by ``stop``)."""
        with contextlib.suppress(OSError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=wait)

    def stop(self, reason: BaseException, wait: float = 5.0) -> None:
        """Kill the worker; its calls in flight fail with ``reason`` (from any thread).
        ``wait``: for its process to end, at most (0 on the event loop)."""
        self._gone = True
        self._end_process(wait)
        calls = list(self._calls)
        loop = self._loop
        for call in calls:
            _fail(call.future, reason)
        if loop is not None and not loop.is_closed():
            _on_loop(loop, self._close_pipes)
        else:
            self._close_pipes()

    def _close_pipes(self) -> None:
        """Unregister the pipes from the owning loop (on its thread) and close them."""
        self._calls.clear()
        self.load = 0
        self._release()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
