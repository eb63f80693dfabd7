"""What the commerce route modules (``apps.commerce.http``, ``http_items``) share: the
node's read hooks (``ChainReader``), the state at one final height (``StateAt``: every
response reads one, see ``apps.commerce.http``), the plumbing of an answer read at
that height, and the declarations every route uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from apps.read_slots import ReadSlots
from apps.routes import HEIGHT, Refusal, Schema, client_of, obj, unavailable
from core.errors import HttpError
from core.types import BlockHeader, Commit
from storage import StateProof
from vm import Event, Receipt

# --- what the node provides ---


class ChainReader(Protocol):
    """Read access to the node's finalized chain (``node.reader.NodeChainReader``)."""

    @property
    def chain_id(self) -> str:
        """The chain's id (from genesis): what a signed read is signed under."""
        ...

    @property
    def node_key(self) -> bytes:
        """This node's public key (its status's ``validator``): what a signed read is
        signed for, so that it is good on this node only."""
        ...

    @property
    def height(self) -> int:
        """Latest final height."""
        ...

    def prove(self, key: bytes, height: int) -> tuple[bytes | None, StateProof, bytes]:
        """(value or None, proof, state root) of ``key`` after block ``height``."""
        ...

    def header(self, height: int) -> BlockHeader | None: ...

    def tx_count(self, height: int) -> int | None:
        """Transactions in block ``height`` (None if it is not stored), without reading
        them or their receipts."""
        ...

    def commit(self, height: int) -> Commit | None: ...

    def receipts(self, height: int) -> list[Receipt]:
        """One receipt per transaction of block ``height``, in block order."""
        ...

    def block_events(self, height: int) -> list[Event]:
        """Events of block ``height``'s begin-block hooks."""
        ...

    def add_block_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(height)`` on the event loop after each block is final."""
        ...

    def remove_block_listener(self, listener: Callable[[int], None]) -> None: ...


READER: web.AppKey[ChainReader] = web.AppKey("commerce_reader", ChainReader)


class StateAt:
    """The state after block ``height``, read through the state tree (a ``StateView``).

    Reads through the tree rather than the flat latest copy so that every value a
    response shows is from one block (a block may commit while a view is read); it
    keeps each key's proof, which the item route hands out.
    """

    __slots__ = ("_reader", "height", "root", "_values", "proofs")

    def __init__(self, reader: ChainReader, height: int) -> None:
        self._reader = reader
        self.height = height
        self.root: bytes | None = None
        self._values: dict[bytes, bytes | None] = {}
        # key -> (value, proof), in the order first read.
        self.proofs: dict[bytes, tuple[bytes | None, StateProof]] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._values:
            return self._values[key]
        value, proof, root = self._reader.prove(key, self.height)
        self.root = root
        self._values[key] = value
        self.proofs[key] = (value, proof)
        return value


# --- plumbing ---


def reader_of(request: web.Request) -> ChainReader:
    """The node's ``ChainReader``, as ``add_routes`` put it in the app."""
    return request.app[READER]


def final_height(reader: ChainReader) -> int:
    """The latest final height; 503 ``unavailable`` while the node starts or stops."""
    try:
        return reader.height
    except RuntimeError:
        # The node is starting or stopping: its store is closed.
        raise unavailable() from None


# Commerce reads running at once (threads of their own), and how many more may wait; one
# address may hold a quarter of both (``apps.read_slots``). A view is a few tree reads
# per record (a page of 50 listings, one of 256 item events with their proofs): mostly
# Python, so two threads keep both cores' share of the GIL that HTTP may take, and 64
# waiting is a few hundred ms of them. Before, they ran in the default executor, where
# one address's 256 connections queued ahead of the feeds' block reads and state sync.
VIEW_READ_SLOTS = 2
VIEW_READ_QUEUE = 64
VIEW_READS: web.AppKey[ReadSlots] = web.AppKey("commerce_reads", ReadSlots)


async def in_thread(request: web.Request, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a view off the event loop (it reads LevelDB and walks the tree per key), in the
    commerce reads' threads, in the client's turn: 503 ``busy`` past their queue or the
    client address's share of it (``VIEW_READS``)."""
    return await request.app[VIEW_READS].run(client_of(request), fn, *args)


def not_found(what: str, height: int) -> HttpError:
    """404 ``not_found``: no ``what`` at the height read."""
    return HttpError(404, "not_found", f"no {what} at height {height}")


def doc_at(state: StateAt, **fields: Any) -> web.Response:
    """The JSON answer ``{"height", **fields}`` of a read at ``state``'s height."""
    return web.json_response({"height": state.height, **fields})


# --- what the routes document ---

MAX_ID = 2**64 - 1
UNAVAILABLE = Refusal(
    503,
    f"The node is starting or stopping (`unavailable`), or {VIEW_READ_SLOTS} reads run and "
    f"{VIEW_READ_QUEUE} wait, or the client's address holds a quarter of those (`busy`): "
    "retry after `Retry-After` seconds.",
    "unavailable",
    "busy",
)


def at_height(**fields: Any) -> Schema:
    """An answer ``{"height", **fields}`` (``doc_at``): every value read at that height."""
    return obj({"height": HEIGHT, **fields})


__all__ = [
    "MAX_ID",
    "READER",
    "UNAVAILABLE",
    "VIEW_READS",
    "VIEW_READ_QUEUE",
    "VIEW_READ_SLOTS",
    "ChainReader",
    "StateAt",
    "at_height",
    "doc_at",
    "final_height",
    "in_thread",
    "not_found",
    "reader_of",
]
