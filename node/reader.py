"""Read access to the node's finalized chain for the apps' HTTP routes and feeds.

Apps sit below ``node`` in the layer order, so they describe what they need as a
Protocol (see ``apps.commerce.http_common.ChainReader``) and the node hands them this.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

import msgpack

from core import BlockHeader, Commit, DecodeError
from node.chain import Chain
from node.service import Node
from storage import StateProof
from vm import BlockEvents, Event, Receipt, StateView

BlockListener = Callable[[int], None]
# Headers kept by height: final headers never change, and the routes that judge a
# view at its block's time ask for the latest one on every request.
HEADER_CACHE = 256


def header_of_block(data: bytes) -> tuple[BlockHeader, int]:
    """A stored block's header and transaction count, without unpacking its transactions.

    The block is ``[header, [tx, ...]]``: the header is unpacked from a stream over
    the bytes (msgpack reads a few KiB of them), the list's length from its array
    header. Serving a header never costs decoding up to ``max_block_bytes``.
    """
    unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False, read_size=4096, max_map_len=0)
    try:
        if unpacker.read_array_header() != 2:
            raise DecodeError("a block is a 2-item array")
        header = BlockHeader.from_raw(unpacker.unpack())
        return header, unpacker.read_array_header()
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"stored block does not decode: {exc}") from exc


class NodeChainReader:
    def __init__(self, node: Node) -> None:
        self._node = node
        # Read from the event loop and from the feed's worker threads: each height's
        # header and transaction count, read together from the block's bytes.
        self._headers: OrderedDict[int, tuple[BlockHeader, int]] = OrderedDict()
        self._headers_lock = threading.Lock()

    def _chain(self) -> Chain:
        chain = self._node.chain
        if chain is None:
            raise RuntimeError("node is not open")
        return chain

    @property
    def chain_id(self) -> str:
        return self._node.genesis.chain_id

    @property
    def node_key(self) -> bytes:
        return self._node.key.public_key

    @property
    def height(self) -> int:
        """Latest final height."""
        return self._chain().height

    @property
    def state(self) -> StateView:
        """Latest final state."""
        return self._chain().state

    def prove(self, key: bytes, height: int) -> tuple[bytes | None, StateProof, bytes]:
        return self._chain().store.prove(key, height)

    def header(self, height: int) -> BlockHeader | None:
        known = self._header_and_count(height)
        return None if known is None else known[0]

    def tx_count(self, height: int) -> int | None:
        known = self._header_and_count(height)
        return None if known is None else known[1]

    def _header_and_count(self, height: int) -> tuple[BlockHeader, int] | None:
        with self._headers_lock:
            cached = self._headers.get(height)
        if cached is not None:
            return cached
        data = self._chain().store.get_block_bytes(height) if height > 0 else None
        if data is None:
            return None
        known = header_of_block(data)
        with self._headers_lock:
            self._headers[height] = known
            while len(self._headers) > HEADER_CACHE:
                self._headers.popitem(last=False)
        return known

    def commit(self, height: int) -> Commit | None:
        return self._chain().store.get_commit(height)

    def receipts(self, height: int) -> list[Receipt]:
        return [Receipt.decode(r) for r in self._chain().store.get_receipts(height)]

    def block_events(self, height: int) -> list[Event]:
        data = self._chain().store.get_block_events(height)
        return [] if data is None else list(BlockEvents.decode(data).events)

    def add_block_listener(self, listener: BlockListener) -> None:
        """Call ``listener(height)`` on the event loop after each block is final."""
        self._node.height_listeners.append(listener)

    def remove_block_listener(self, listener: BlockListener) -> None:
        if listener in self._node.height_listeners:
            self._node.height_listeners.remove(listener)
