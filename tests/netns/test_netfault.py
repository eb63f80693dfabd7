"""The fault proxy on loopback (no namespaces needed): order, delay, partitions, cuts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from genesis.localnet import free_ports
from tests.netns.netfault import FaultProxy, Settings, control


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def running_proxy() -> AsyncIterator[tuple[FaultProxy, tuple[str, int], tuple[str, int]]]:
    """A proxy in front of an echo server, answering on its control port: (proxy,
    listen address, control address). Both stop on exit."""
    target_port, listen_port, control_port = free_ports(3)
    listen, ctl = ("127.0.0.1", listen_port), ("127.0.0.1", control_port)
    server = await asyncio.start_server(echo, "127.0.0.1", target_port)
    proxy = FaultProxy(listen, ("127.0.0.1", target_port), seed=1)
    task = asyncio.create_task(proxy.serve(ctl))
    try:
        for _ in range(100):
            if task.done():
                task.result()  # it could not listen: say why
            try:
                await asyncio.to_thread(control, ctl, {})
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("the proxy did not answer on its control port")
        yield proxy, listen, ctl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()


async def test_delays_every_chunk_each_way_and_keeps_their_order():
    async with running_proxy() as (proxy, listen, ctl):
        await asyncio.to_thread(
            control, ctl, {"default": {"latency_ms": 30, "jitter_ms": 20, "loss": 0.3}}
        )
        reader, writer = await asyncio.open_connection(*listen)
        sent = b"".join(i.to_bytes(2, "big") for i in range(200))
        started = time.monotonic()
        for i in range(0, len(sent), 40):
            writer.write(sent[i : i + 40])
            await writer.drain()
            await asyncio.sleep(0.002)
        got = await asyncio.wait_for(reader.readexactly(len(sent)), 10)
        # Out and back: at least the smallest delay (30 - 20 ms) twice.
        assert time.monotonic() - started >= 0.02
        assert got == sent
        assert proxy.stats.lost > 0 and proxy.stats.chunks >= 10
        writer.close()


async def test_a_partition_cuts_and_refuses_and_heals():
    async with running_proxy() as (proxy, listen, ctl):
        reader, writer = await asyncio.open_connection(*listen)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        await asyncio.to_thread(control, ctl, {"blocked": ["127.0.0.1"]})
        # The connection in progress is cut...
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        # ...and a new one is closed at once.
        reader, writer = await asyncio.open_connection(*listen)
        writer.write(b"ping")
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await asyncio.wait_for(reader.readexactly(4), 5)
        assert proxy.stats.refused >= 1 and proxy.stats.cut >= 1
        # Healed: connections go through again.
        await asyncio.to_thread(control, ctl, {})
        reader, writer = await asyncio.open_connection(*listen)
        writer.write(b"pong")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"pong"
        writer.close()


async def test_a_cut_resets_the_connection():
    async with running_proxy() as (proxy, listen, ctl):
        await asyncio.to_thread(control, ctl, {"by_source": {"127.0.0.1": {"cut": 1}}})
        reader, writer = await asyncio.open_connection(*listen)
        writer.write(b"ping")
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await asyncio.wait_for(reader.readexactly(4), 5)
        assert proxy.stats.cut == 1


@pytest.mark.parametrize(
    "doc",
    [
        {"default": {"latency_ms": 10, "jitter_ms": 20}},
        {"default": {"loss": 2}},
        {"default": {"latency": 5}},
        {"blocked": ["not-an-ip"]},
        {"partition": []},
        {"default": {"latency_ms": True}},
    ],
)
def test_settings_refuse_what_they_cannot_mean(doc):
    with pytest.raises(ValueError):
        Settings.from_json(doc)
