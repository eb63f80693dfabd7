"""The feed hub over a scripted chain reader: block listeners alone cost no receipt
read, and a session that subscribes while a block is being read without its events
still gets that block's events, with the block message sent once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from apps.commerce import events as ev
from apps.commerce.feed import WHOLE_BLOCK, FeedHub, FeedItem, Subscriber
from core import BlockHeader
from vm import Event, Receipt

WAIT = 5.0


class ScriptedReader:
    """A chain of ``height`` blocks of one transaction each, whose receipt carries an
    order event of session 7. ``tx_count`` waits on ``gate`` (a read in progress)."""

    def __init__(self) -> None:
        self.height = 0
        self.gate = threading.Event()
        self.gate.set()
        self.reads: list[tuple[str, int]] = []
        self.counting = threading.Event()

    def header(self, height: int) -> BlockHeader | None:
        if not 1 <= height <= self.height:
            return None
        return BlockHeader(
            chain_id="test",
            height=height,
            round=0,
            time_ms=1_000 * height,
            prev_hash=bytes(32),
            tx_root=bytes(32),
            state_root=bytes(32),
            receipt_root=bytes(32),
            producer=bytes(32),
            producer_set_hash=bytes(32),
            last_commit=None,
        )

    def tx_count(self, height: int) -> int | None:
        self.reads.append(("count", height))
        self.counting.set()
        self.gate.wait(WAIT)
        return 1 if 1 <= height <= self.height else None

    def receipts(self, height: int) -> list[Receipt]:
        self.reads.append(("receipts", height))
        event = Event.of(ev.ORDER_PLACED, session=7, order=height)
        return [Receipt(bytes(32), "ok", "", 1, (event,))]

    def block_events(self, height: int) -> list[Event]:
        return []

    def add_block_listener(self, listener: Callable[[int], None]) -> None:
        pass

    def remove_block_listener(self, listener: Callable[[int], None]) -> None:
        pass


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@asynccontextmanager
async def hub_with_block_listener(
    reader: ScriptedReader,
) -> AsyncIterator[tuple[FeedHub, Subscriber]]:
    """A started hub over ``reader``, with one block listener subscribed."""
    hub = FeedHub(reader)  # type: ignore[arg-type]  # the reader's protocol, scripted
    await hub.start()
    try:
        blocks = Subscriber((0, 0), 1 << 20)
        hub.subscribe(None, blocks)
        yield hub, blocks
    finally:
        await hub.stop()


async def test_block_listeners_alone_read_no_receipts() -> None:
    reader = ScriptedReader()
    async with hub_with_block_listener(reader) as (hub, blocks):
        reader.height = 2
        hub.on_block(2)
        await until(lambda: hub.delivered() == 2)
        sent = [json.loads(item.text) for item in blocks.take()]
        assert [(b["height"], b["num_txs"]) for b in sent] == [(1, 1), (2, 1)]
        assert [kind for kind, _ in reader.reads] == ["count", "count"]


async def test_a_session_subscribing_during_a_block_read_gets_that_blocks_events() -> None:
    reader = ScriptedReader()
    async with hub_with_block_listener(reader) as (hub, blocks):
        # Block 1 is read for its block listener alone, and held there...
        reader.gate.clear()
        reader.height = 1
        hub.on_block(1)
        await until(reader.counting.is_set)
        # ...while a session subscribes: it waits for block 1 live.
        session = Subscriber((0, 0), 1 << 20)
        delivered = hub.subscribe(7, session)
        session.after = (delivered, WHOLE_BLOCK)
        assert delivered == 0
        reader.gate.set()
        await until(lambda: hub.delivered() == 1)
        assert [item.kind for item in session.take()] == [ev.ORDER_PLACED]
        assert [json.loads(item.text)["height"] for item in blocks.take()] == [1]
        assert ("receipts", 1) in reader.reads


class PrunedReceiptsReader(ScriptedReader):
    """Its blocks' receipts are gone (pruned while the header stayed cached)."""

    def receipts(self, height: int) -> list[Receipt]:
        self.reads.append(("receipts", height))
        return []


async def test_the_block_message_counts_transactions_from_the_block_itself() -> None:
    # Read with its events or without, a block's message gives the same count: the
    # block's own, not the number of receipts a read found.
    reader = PrunedReceiptsReader()
    async with hub_with_block_listener(reader) as (hub, blocks):
        hub.subscribe(7, Subscriber((0, 0), 1 << 20))
        reader.height = 1
        hub.on_block(1)
        await until(lambda: hub.delivered() == 1)
        assert [json.loads(item.text)["num_txs"] for item in blocks.take()] == [1]
        assert ("receipts", 1) in reader.reads


async def test_a_blocks_messages_are_queued_at_once_from_a_subscribers_position() -> None:
    # A block's messages go to each subscriber as one shared list (publishing costs the
    # hub a few operations a subscriber, not one per message); a subscriber that
    # replayed into the block gets the rest of it only, in order, and one whose queue
    # would pass its bound is dropped whole, as item by item.
    items = [FeedItem((5, i), "commerce.order_placed", "x" * 10) for i in range(4)]
    caught_up = Subscriber((4, WHOLE_BLOCK), 1 << 20)
    replayed = Subscriber((5, 1), 1 << 20)
    tight = Subscriber((4, WHOLE_BLOCK), 35)
    for sub in (caught_up, replayed, tight):
        sub.push_all(items, 40)
    assert caught_up.take() == items and caught_up.take() == []
    assert replayed.take() == items[2:]
    assert tight.overflow and tight.take() == []
    seen = Subscriber((5, 3), 1 << 20)
    seen.push_all(items, 40)
    assert seen.take() == [] and not seen.wake.is_set()
