"""Every command ends the same way when its output refuses a line: `liveledger ... |
head` exits 1 without a word once the reader went (nobody reads it), and a stdout on
a full disk exits 1 saying so; never a traceback, nor an "unexpected failure"."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from cli.keyring import Keyring
from tests.served import app_server

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def node_url() -> AsyncIterator[str]:
    """A node that answers its status."""

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"chain_id": "c", "height": 5, "latest_block_time_ms": None})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    server = app_server(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


# A command whose errors clear_errors reports, one (keys) with its own, and click's help.
COMMANDS = ["query status", "keys list", "help"]


def argv_of(command: str, node_url: str, keyring: Path) -> list[str]:
    if command == "help":
        return ["--help"]
    extra = ["--node", node_url] if command.startswith("query") else ["--keyring", str(keyring)]
    return [*command.split(), *extra]


def run_into(argv: list[str], stdout: int) -> tuple[int, str]:
    """The CLI with ``stdout`` as its output: its exit status and what it said on stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("LIVELEDGER_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        cwd=REPO,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        # A bound for a hang, not a timing.
        timeout=60,
    )
    return done.returncode, done.stderr.decode()


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    ring = tmp_path / "keyring"
    Keyring(ring).create("alice", "")
    return ring


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_closed_pipe_ends_any_command_quietly(node_url, keyring, command):
    argv = argv_of(command, node_url, keyring)
    read_end, write_end = os.pipe()
    # The reader went before the first line (`... | head -c 0`).
    os.close(read_end)
    try:
        code, said = await asyncio.to_thread(run_into, argv, write_end)
    finally:
        os.close(write_end)
    assert code == 1, said
    assert said == "", said


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_full_disk_ends_any_command_saying_why(node_url, keyring, command):
    argv = argv_of(command, node_url, keyring)
    with open("/dev/full", "wb") as full:
        code, said = await asyncio.to_thread(run_into, argv, full.fileno())
    assert code == 1, said
    assert said == "error: cannot print the output: [Errno 28] No space left on device\n", said


def test_only_an_oserror_raised_printing_is_the_output_s(tmp_path):
    # A file's (or a connection's) OSError is the command's failure, with its own
    # message; only one raised while click.echo writes is the output refusing a line.
    import errno
    import io

    import click

    from cli.send import output_refused

    with pytest.raises(OSError) as missing:
        (tmp_path / "missing").read_bytes()
    assert not output_refused(missing.value)

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as full:
        click.echo("a line", file=Full())
    assert output_refused(full.value)
    # Printed, then a file fails: the traceback of the file's error holds no echo.
    click.echo("printed", file=io.StringIO())
    with pytest.raises(OSError) as later:
        (tmp_path / "missing").read_bytes()
    assert not output_refused(later.value)
    assert not output_refused(ValueError("not an OSError"))


@pytest.mark.parametrize("exc", [BrokenPipeError(32, "Broken pipe"), OSError(28, "No space")])
def test_a_closed_stdout_ends_the_command_with_exit_1(tmp_path, monkeypatch, exc):
    # A closed stdout's fileno() raises ValueError, not OSError: the command still ends
    # with exit 1, and nothing else escapes.
    from cli.send import output_failed

    with open(tmp_path / "out", "w") as closed:
        pass
    monkeypatch.setattr(sys, "stdout", closed)
    with pytest.raises(SystemExit) as done:
        output_failed(exc)
    assert done.value.code == 1


def test_a_refused_stdout_leaves_no_descriptor_open(tmp_path, monkeypatch):
    # The stdout is pointed at /dev/null through a descriptor of its own: that one is
    # closed once it is copied.
    from cli.send import output_failed

    with open(tmp_path / "out", "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        before = sorted(os.listdir("/proc/self/fd"))
        with pytest.raises(SystemExit) as done:
            output_failed(BrokenPipeError(32, "Broken pipe"))
        assert done.value.code == 1
        assert sorted(os.listdir("/proc/self/fd")) == before


def test_a_closed_stderr_still_ends_the_command_with_exit_1(tmp_path, monkeypatch):
    # Why stdout refused cannot be said on a closed stderr either (ValueError there
    # too): the command ends with exit 1 all the same.
    from cli.send import output_failed

    with open(tmp_path / "out", "w") as closed:
        pass
    monkeypatch.setattr(sys, "stdout", closed)
    monkeypatch.setattr(sys, "stderr", closed)
    with pytest.raises(SystemExit) as done:
        output_failed(OSError(28, "No space left on device"))
    assert done.value.code == 1
