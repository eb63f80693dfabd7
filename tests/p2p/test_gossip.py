"""Transaction batching: few frames, every tx, never back to its origin."""

from __future__ import annotations

import asyncio

from core.keys import PrivateKey
from core.types import TxBody, sign_tx
from p2p import TxBatch, TxBatcher
from tests.p2p.helpers import Net, recv


class FakeTransport:
    def __init__(self, peers):
        self._peers = peers
        self.sent: list[tuple[bytes, TxBatch]] = []

    def peers(self):
        return list(self._peers)

    def send(self, peer, msg):
        self.sent.append((peer, msg))
        return True

    def broadcast(self, msg, exclude=()):
        targets = [p for p in self._peers if p not in set(exclude)]
        self.sent.extend((p, msg) for p in targets)
        return len(targets)


def _received(transport, peer):
    return [tx for p, batch in transport.sent if p == peer for tx in batch.txs]


async def test_batches_coalesce_and_skip_origin():
    t = FakeTransport([b"A", b"B", b"C"])
    batcher = TxBatcher(t, delay=0.01)
    for i in range(10):
        batcher.submit(b"own%d" % i)
    batcher.submit(b"fromB", origin=b"B")
    assert t.sent == []
    await asyncio.sleep(0.05)
    assert len([1 for p, _ in t.sent if p == b"A"]) == 1  # one batch per peer
    assert len(_received(t, b"A")) == 11
    assert b"fromB" not in _received(t, b"B") and len(_received(t, b"B")) == 10


async def test_full_batch_flushes_at_once_and_splits():
    t = FakeTransport([b"A"])
    batcher = TxBatcher(t, delay=10.0, max_items=4, max_bytes=100)
    for _ in range(4):
        batcher.submit(b"x" * 10)
    assert len(t.sent) == 1 and len(t.sent[0][1].txs) == 4
    for _ in range(5):
        # The 4th reaches 120 >= 100 bytes: flushed at once, split to stay under 100 bytes.
        batcher.submit(b"y" * 30)
    assert [len(b.txs) for _, b in t.sent[1:]] == [3, 1]
    batcher.submit(b"z")
    batcher.close()
    await asyncio.sleep(0)
    assert len(t.sent) == 3


async def test_batches_over_real_network():
    net = Net(3)
    await net.start()
    try:
        await net.wait_full_mesh()
        a, b, c = net.nodes
        batcher = TxBatcher(a.node, delay=0.005)
        key = PrivateKey.generate()
        txs = [sign_tx(key, "c", TxBody(i, 1, 10, "transfer", b"")).encode() for i in range(300)]
        for tx in txs:
            batcher.submit(tx)
        for m in (b, c):
            got = []
            batches = 0
            while len(got) < 300:
                peer, msg = await recv(m)
                assert peer == a.key.public_key and isinstance(msg, TxBatch)
                got.extend(msg.txs)
                batches += 1
            assert got == txs and batches <= 3
    finally:
        await net.stop()
