"""Reading the files a person hands a command or a node: key files, genesis and
contribution files, evidence, the node's config, the CLI's trust cache.

One bounded read of a regular file (``read_regular_file``), whose refusals name the
file and what is wrong with it; one duplicate-key hook for the strict JSON readers of
those files (``reject_duplicate_keys``), each of which words the refusal its own way.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import Invalid, LiveLedgerError

# What a refusal raises: the caller's own error class, given the message.
ErrorOf = Callable[[str], LiveLedgerError]

_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_regular_file(path: Path | str, limit: int, what: str, error: ErrorOf) -> bytes:
    """The bytes of the ``what`` file ``path``; ``error`` naming it if it does not exist,
    cannot be read, is not a regular file, or holds more than ``limit`` bytes (never more
    than that is read)."""
    return read_regular_file_and_mode(path, limit, what, error)[0]


def read_regular_file_and_mode(
    path: Path | str, limit: int, what: str, error: ErrorOf
) -> tuple[bytes, int]:
    """``read_regular_file``, and the ``st_mode`` of the file it read."""
    path = Path(path)
    with open_regular_file(path, what, error) as fh:
        mode = os.fstat(fh.fileno()).st_mode
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit} bytes")
    return data, mode


def open_regular_file(path: Path | str, what: str, error: ErrorOf) -> io.BufferedReader:
    """The ``what`` file ``path`` opened for reading (binary); ``error`` naming it if it
    does not exist, cannot be opened or is not a regular file. For a file read in
    blocks (a report of any size); ``read_regular_file`` reads a bounded one whole."""
    path = Path(path)
    try:
        # A FIFO blocks open() until a writer comes and read() until it leaves (for ever,
        # if none does); a terminal or device is no document either. Refused before it is
        # opened, and again on what was opened (O_NONBLOCK: a FIFO swapped in between
        # does not block the open).
        _check_regular(os.stat(path).st_mode, path, what, error)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise error(f"cannot read {what} {path}: it does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    fh = open(fd, "rb")  # handed to the caller, who closes it
    try:
        _check_regular(os.fstat(fd).st_mode, path, what, error)
    except BaseException:
        fh.close()
        raise
    return fh


def fsync_dir(directory: Path | str) -> None:
    """Make the entries of ``directory`` (names created, renamed or removed in it) durable.
    Raises ``OSError``."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable_dir(path: Path | str, mode: int = 0o777) -> None:
    """Create the directory ``path`` and its missing parents so that each survives a power
    loss: a directory's name is durable only once its parent is fsynced, and what is
    written inside it (fsynced files, even a synced directory) does not do that. The
    parent of ``path`` is fsynced also when ``path`` already exists: an earlier process
    that was killed after its ``mkdir`` left the name in the page cache only. ``mode``
    is ``path``'s if it is created (as ``Path.mkdir``: not its parents'). Raises
    ``OSError``."""
    path = Path(path)
    parents = {path.parent}
    missing = path
    while not missing.exists() and missing.parent != missing:
        parents.add(missing.parent)
        missing = missing.parent
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(parent)


def _check_regular(mode: int, path: Path, what: str, error: ErrorOf) -> None:
    if stat.S_ISDIR(mode):
        # In the words reading one would have given ("Is a directory").
        raise error(f"cannot read {what} {path}: {os.strerror(errno.EISDIR)}")
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "another kind of file")
        raise error(f"{what} {path} is not a regular file but {kind}: give the file itself")


class DuplicateJsonKey(Invalid):
    """A JSON object that gives the key ``key`` twice (``reject_duplicate_keys``)."""

    code = "duplicate_key"

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate JSON key {key!r}")
        self.key = key


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` ``object_pairs_hook``: the object, or ``DuplicateJsonKey``."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        # json.loads would keep the last one silently: which one did the writer mean?
        if key in out:
            raise DuplicateJsonKey(key)
        out[key] = value
    return out


__all__ = [
    "DuplicateJsonKey",
    "ErrorOf",
    "fsync_dir",
    "make_durable_dir",
    "open_regular_file",
    "read_regular_file",
    "read_regular_file_and_mode",
    "reject_duplicate_keys",
]
