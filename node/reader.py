"""Read access to the node's finalized chain for the apps' HTTP routes and feeds.

Apps sit below ``node`` in the layer order, so they describe what they need as a
Protocol (see ``apps.commerce.http.ChainReader``) and the node hands them this.
"""

from __future__ import annotations

from collections.abc import Callable

from core import BlockHeader, Commit, unpack_raw
from node.chain import Chain
from node.service import Node
from storage import StateProof
from vm import BlockEvents, Event, Receipt, StateView

BlockListener = Callable[[int], None]


class NodeChainReader:
    def __init__(self, node: Node) -> None:
        self._node = node

    def _chain(self) -> Chain:
        chain = self._node.chain
        if chain is None:
            raise RuntimeError("node is not open")
        return chain

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
        data = self._chain().store.get_block_bytes(height) if height > 0 else None
        return None if data is None else BlockHeader.from_raw(unpack_raw(data)[0])

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
