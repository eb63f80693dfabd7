"""Transaction gossip in batches.

Sending each transaction in its own frame costs a frame header, a handler
call and a TLS record per transaction per peer. ``TxBatcher`` collects the
transactions submitted within ``delay`` seconds (a few milliseconds) and sends
each peer one ``TxBatch`` (or a few, when the batch is full), leaving out the
transactions that peer sent us.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from core.codec import Wire
from p2p.messages import TX_BATCH_MAX_BYTES, TX_BATCH_MAX_ITEMS, TxBatch


class Transport(Protocol):
    """What the batcher needs from ``P2PNode``."""

    def peers(self) -> list[bytes]: ...

    def send(self, peer: bytes, msg: Wire) -> bool: ...

    def broadcast(self, msg: Wire, exclude: Iterable[bytes] = ()) -> int: ...


class TxBatcher:
    """Coalesce encoded ``SignedTx`` bytes into ``TxBatch`` messages, one stream per peer.

    ``submit`` never blocks and never encodes: it appends and, for the first
    transaction of a batch, schedules a flush ``delay`` seconds later. A batch
    that reaches ``max_items`` or ``max_bytes`` is flushed at once. Gossip is
    best effort: ``TxBatch`` is a droppable kind, so a slow peer loses batches
    rather than holding up consensus messages.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        delay: float = 0.005,
        max_items: int = TX_BATCH_MAX_ITEMS,
        max_bytes: int = TX_BATCH_MAX_BYTES,
    ) -> None:
        if not 1 <= max_items <= TX_BATCH_MAX_ITEMS:
            raise ValueError(f"max_items must be in 1..{TX_BATCH_MAX_ITEMS}, got {max_items}")
        if not 1 <= max_bytes <= TX_BATCH_MAX_BYTES:
            raise ValueError(f"max_bytes must be in 1..{TX_BATCH_MAX_BYTES}, got {max_bytes}")
        self.transport = transport
        self.delay = delay
        self.max_items = max_items
        self.max_bytes = max_bytes
        # (encoded tx, the peer it came from or None if it is our own)
        self._pending: list[tuple[bytes, bytes | None]] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, tx: bytes, origin: bytes | None = None) -> None:
        """Gossip one encoded SignedTx to every peer except ``origin`` (the peer it came from)."""
        self._pending.append((tx, origin))
        self._pending_bytes += len(tx)
        if len(self._pending) >= self.max_items or self._pending_bytes >= self.max_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self.flush)

    def flush(self) -> None:
        """Send what is pending now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if not pending:
            return
        origins = {origin for _, origin in pending if origin is not None}
        # Peers that sent none of these transactions all get the same batches:
        # encode them once and broadcast.
        for batch in self._chunks([tx for tx, _ in pending]):
            self.transport.broadcast(batch, exclude=origins)
        connected = set(self.transport.peers())
        for peer in origins & connected:
            txs = [tx for tx, origin in pending if origin != peer]
            for batch in self._chunks(txs):
                self.transport.send(peer, batch)

    def close(self) -> None:
        """Drop what is pending and cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending, self._pending_bytes = [], 0

    def _chunks(self, txs: list[bytes]) -> Iterable[TxBatch]:
        chunk: list[bytes] = []
        size = 0
        for tx in txs:
            if chunk and (len(chunk) >= self.max_items or size + len(tx) > self.max_bytes):
                yield TxBatch(tuple(chunk))
                chunk, size = [], 0
            chunk.append(tx)
            size += len(tx)
        if chunk:
            yield TxBatch(tuple(chunk))
