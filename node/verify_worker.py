"""A signature-check worker process: frames in on stdin, verdicts out on stdout.

The node starts it as ``python -P -m node.verify_worker [module:function]``
(``node.worker_pipes``). Each request is one frame holding the msgpack array
``[raws, chain_id, max_tx_bytes]``; the answer, in request order, is one frame
holding ``[True, verdicts]`` (``None`` or ``[code, message]`` per transaction, as
``vm.check_envelopes`` gives them) or ``[False, message]`` when the check raised
(a bug, which the node reports to that call's callers alone).

A frame is a 4-byte big-endian length, then that many bytes. The worker exits
when its stdin closes: the node closed it, or died (no watcher thread needed).
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import msgpack

HEADER = struct.Struct(">I")
# A frame's length bound, either way: the largest batch a node verifies is far
# below it (its HTTP body and p2p frame limits), and a length past it is a broken pipe.
MAX_FRAME = 1 << 30
# The check a worker runs unless told another (tests name one that fails on purpose).
DEFAULT_CHECK = "vm:check_envelopes"


def frame_header(payload: bytes) -> bytes:
    """The length header that goes before ``payload``."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a frame holds at most {MAX_FRAME} bytes, got {len(payload)}")
    return HEADER.pack(len(payload))


def frame(payload: bytes) -> bytes:
    """``payload`` with its length header."""
    return frame_header(payload) + payload


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    if data is None or len(data) < n:
        return None
    return data


def serve(check: Callable[..., Any], source: BinaryIO, sink: BinaryIO) -> None:
    """Answer request frames from ``source`` on ``sink`` until ``source`` ends."""
    while True:
        head = _read_exactly(source, HEADER.size)
        if head is None:
            return
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            return  # not a frame of ours: nothing after it can be trusted
        body = _read_exactly(source, size)
        if body is None:
            return
        try:
            raws, chain_id, max_tx_bytes = msgpack.unpackb(body)
            answer: list[Any] = [True, check(raws, chain_id, max_tx_bytes)]
        except Exception as exc:  # a bug: the node fails this call's callers only
            answer = [False, f"{type(exc).__name__}: {exc}"]
        sink.write(frame(msgpack.packb(answer, use_bin_type=True)))
        sink.flush()


def load_check(target: str) -> Callable[..., Any]:
    """The function ``module:name`` names."""
    module, _, name = target.partition(":")
    check: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return check


def _answer_pipe() -> BinaryIO:
    """The pipe the node reads answers from, taken off fd 1, which then points at
    stderr: a line printed there by the check or a library it imports (Python or C)
    would be read as a frame header, and one announcing up to ``MAX_FRAME`` bytes left
    the node waiting for them for ever."""
    answers = os.fdopen(os.dup(1), "wb")
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr: what is printed goes nowhere
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    sys.stdout = sys.stderr
    return answers


def main(argv: list[str]) -> None:
    # Ctrl-C reaches the whole process group, and a service manager's SIGTERM every
    # process of the node: the node decides when workers stop (it may finish a block
    # first), and a worker exits at its stdin's end even when the node is killed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = _answer_pipe()
    check = load_check(argv[1] if len(argv) > 1 else DEFAULT_CHECK)
    # A worker allocates only short-lived objects: collect young garbage less often.
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    try:
        serve(check, sys.stdin.buffer, answers)
    except BrokenPipeError:
        pass  # the node is gone


if __name__ == "__main__":
    main(sys.argv)
