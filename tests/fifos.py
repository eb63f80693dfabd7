"""A FIFO that a reader must refuse unread, for the tests of every file a command reads."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def fifo_holding(path: Path, size: int) -> Iterator[Path]:
    """A FIFO at ``path`` that a writer holds open with ``size`` bytes queued.

    Nobody writing to a FIFO makes a reader that opened it wait for ever; here a reader
    that opened it would read at once (one past a reader's bound is the size to give),
    so a test of the refusal fails on a reader without one instead of hanging. On
    exit, checks that the bytes are all still queued: nothing read them."""
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        # A pipe holds 64 KiB unless asked for more (up to 1 MiB unprivileged).
        fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, max(size, 4096))
        assert os.write(writer, b" " * size) == size
        yield path
        try:
            left = len(os.read(writer, size + 1))
        except BlockingIOError:
            left = 0
        assert left == size, f"a reader took {size - left} of the {size} bytes queued"
    finally:
        os.close(writer)
