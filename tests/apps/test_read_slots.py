"""``ReadSlots``: reads in threads of their own, a bounded queue, a quarter of it per
client address, the waiting reads taken by address in turn, and a slot held until its
thread is done whoever still waits for it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from apps.read_slots import ReadSlots
from core import HttpError

WAIT = 5.0


class Gate:
    """Reads that record their order and wait until the test opens the gate."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.opened = threading.Event()

    def read(self, name: str) -> str:
        self.order.append(name)
        self.opened.wait(WAIT)
        return name


async def until(check) -> None:
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.005)


async def test_waiting_reads_are_taken_by_address_in_turn():
    slots, gate = ReadSlots("test", 1, 16), Gate()
    first = asyncio.create_task(slots.run("a", gate.read, "a1"))
    await until(lambda: gate.order == ["a1"])
    rest = [asyncio.create_task(slots.run("a", gate.read, f"a{i}")) for i in (2, 3, 4)]
    rest.append(asyncio.create_task(slots.run("b", gate.read, "b1")))
    await until(lambda: slots.waiting == 4)
    gate.opened.set()
    assert await asyncio.gather(first, *rest) == ["a1", "a2", "a3", "a4", "b1"]
    # Address b asked last and was served second: one read of a's, not three, ran first.
    assert gate.order == ["a1", "a2", "b1", "a3", "a4"]
    assert (slots.running, slots.waiting, slots.held("a"), slots.held("b")) == (0, 0, 0, 0)
    slots.close()


async def test_past_its_share_or_the_queue_a_read_is_busy():
    bounds: list[str] = []
    slots, gate = ReadSlots("test", 2, 6, on_refused=bounds.append), Gate()
    assert slots.per_client == 2
    held = [asyncio.create_task(slots.run("a", gate.read, "a")) for _ in range(2)]
    await until(lambda: slots.running == 2)
    with pytest.raises(HttpError) as refused:
        await slots.run("a", gate.read, "a")
    assert (refused.value.status, refused.value.code) == (503, "busy")
    assert refused.value.headers is not None and "Retry-After" in refused.value.headers
    # Others wait, up to the queue, each within its own share.
    held += [asyncio.create_task(slots.run(c, gate.read, c)) for c in "bbccd"]
    await until(lambda: slots.waiting == 5)
    held.append(asyncio.create_task(slots.run("e", gate.read, "e")))
    await until(lambda: slots.waiting == 6)
    with pytest.raises(HttpError, match="2 test reads run and 6 wait"):
        await slots.run("f", gate.read, "f")
    # Each refusal told which bound refused it; the reads taken, nothing.
    assert bounds == ["per_address", "total"]
    gate.opened.set()
    await asyncio.gather(*held)
    assert (slots.running, slots.waiting) == (0, 0)
    slots.close()


async def test_a_caller_that_goes_away_frees_its_slot_when_its_read_ends():
    """Cancelled while its read runs, a caller keeps the slot until the thread is done
    (else hanging up and asking again would pile work behind the threads); cancelled
    while it waits, it leaves the queue and its share."""
    slots, gate = ReadSlots("test", 1, 8), Gate()
    running = asyncio.create_task(slots.run("a", gate.read, "a1"))
    await until(lambda: gate.order == ["a1"])
    waiting = asyncio.create_task(slots.run("a", gate.read, "a2"))
    later = asyncio.create_task(slots.run("b", gate.read, "b1"))
    await until(lambda: slots.waiting == 2)
    running.cancel()
    waiting.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert (slots.running, slots.waiting, slots.held("a"), slots.held("b")) == (1, 1, 1, 1)
    assert gate.order == ["a1"]
    gate.opened.set()
    assert await later == "b1"
    assert gate.order == ["a1", "b1"]
    assert (slots.running, slots.waiting, slots.held("a")) == (0, 0, 0)
    slots.close()


async def test_without_a_queue_bound_nothing_is_refused():
    slots, gate = ReadSlots("test", 1, None), Gate()
    reads = [asyncio.create_task(slots.run("a", gate.read, str(i))) for i in range(20)]
    await until(lambda: slots.waiting == 19)
    gate.opened.set()
    assert await asyncio.gather(*reads) == [str(i) for i in range(20)]
    slots.close()
