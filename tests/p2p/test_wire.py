"""Frames, message registry, token buckets and the outbound queue."""

from __future__ import annotations

import asyncio
import sys

import pytest

from core.errors import DecodeError
from core.keys import PrivateKey
from core.types import SignedTx, TxBody, sign_tx
from p2p import (
    FIRST_APP_TYPE,
    MessageRegistry,
    OutboundQueue,
    QueueOverflow,
    SnapshotRequest,
    TokenBucket,
    TxBatch,
)
from p2p.frames import ProtocolViolation, encode_frame, read_frame, read_header
from p2p.limits import ITEM_OBJECT_BYTES
from tests.p2p.helpers import Chat


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


async def test_frame_round_trip_and_caps():
    frame = encode_frame(0x21, b"abc")
    assert frame == b"\x00\x00\x00\x04\x21abc"
    assert await read_header(_reader(frame)) == (0x21, 3)
    assert await read_frame(_reader(frame), 0x21, 3) == b"abc"
    with pytest.raises(ProtocolViolation, match="too large"):
        await read_frame(_reader(frame), 0x21, 2)
    with pytest.raises(ProtocolViolation, match="expected message type"):
        await read_frame(_reader(frame), 0x22, 10)
    with pytest.raises(ProtocolViolation, match="length 0"):
        await read_header(_reader(b"\x00\x00\x00\x00\x21"))
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(_reader(frame[:-1]), 0x21, 10)


def test_registry():
    reg = MessageRegistry()
    kind = reg.register(FIRST_APP_TYPE, Chat)
    assert reg.by_id(FIRST_APP_TYPE) is kind and reg.kind_of(Chat(1, b"")) is kind
    assert reg.kind_of(TxBatch(())).droppable and not reg.kind_of(SnapshotRequest(1)).droppable
    msg = Chat(5, b"x")
    assert reg.decode(FIRST_APP_TYPE, msg.encode()) == msg
    with pytest.raises(ValueError, match="below is p2p's"):
        reg.register(0x10, Chat)
    with pytest.raises(ValueError, match="already"):
        reg.register(FIRST_APP_TYPE, SnapshotRequest)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(FIRST_APP_TYPE + 1, Chat)
    with pytest.raises(DecodeError, match="unknown message type"):
        reg.decode(0x99, b"")
    with pytest.raises(ValueError, match="not a registered"):
        reg.kind_of(PrivateKey)  # type: ignore[arg-type]  # deliberately the wrong type


def test_tx_batch_holds_signed_txs():
    key = PrivateKey.generate()
    txs = tuple(sign_tx(key, "c", TxBody(i, 1, 10, "transfer", b"")).encode() for i in range(3))
    batch = TxBatch.decode(TxBatch(txs).encode())
    assert [SignedTx.decode(t).body for t in batch.txs] == [SignedTx.decode(t).body for t in txs]


def test_token_bucket_allows_burst_then_rate_and_debt():
    now = [0.0]
    bucket = TokenBucket(10.0, 5.0, clock=lambda: now[0])
    assert [bucket.take(1) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1) == pytest.approx(0.1)
    now[0] += 0.1
    assert bucket.take(0) == 0.0
    # A request larger than the burst waits for its debt, never forever.
    assert bucket.take(20) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


async def test_outbound_queue_drops_oldest_droppable_then_refuses_essential():
    each = ITEM_OBJECT_BYTES  # what a queued frame holds beside its bytes
    q = OutboundQueue(100 + 2 * each)
    assert q.put(b"d" * 40, True) and q.put(b"e" * 40, False)
    # Room is made by dropping the oldest droppable frame.
    assert q.put(b"D" * 40, True) and q.dropped == 1 and q.size == 80 + 2 * each
    # A droppable frame that still does not fit is dropped itself.
    assert not q.put(b"x" * 70, True) and q.dropped == 3
    with pytest.raises(QueueOverflow):
        q.put(b"E" * 70, False)
    assert await q.get_batch(1000) == [b"e" * 40]
    assert q.size == 0


def test_outbound_queue_counts_what_tiny_frames_hold():
    # A peer that sends Pings and never reads makes us queue a Pong frame each: tiny
    # frames, each a bytes object in a deque. The bound is on what they hold.
    limit = 100_000
    q = OutboundQueue(limit)
    frame = b"p" * 12
    queued = 0
    with pytest.raises(QueueOverflow):
        while True:
            q.put(frame, False)
            queued += 1
    held = queued * (sys.getsizeof(frame) + 8)
    assert held <= limit, (queued, held)


async def test_outbound_queue_essential_first_and_batch_limit():
    q = OutboundQueue(1000)
    q.put(b"d1", True)
    q.put(b"e1", False)
    q.put(b"e2", False)
    assert await q.get_batch(4) == [b"e1", b"e2"]
    assert await q.get_batch(1) == [b"d1"]  # at least one frame even over the limit
    waiter = asyncio.create_task(q.get_batch(10))
    await asyncio.sleep(0)
    assert not waiter.done()
    q.put(b"late", True)
    assert await waiter == [b"late"]
