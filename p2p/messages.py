"""Wire messages of the p2p layer and the registry that maps type bytes to classes.

Every frame carries one type byte and the canonical encoding of one ``Wire``
object. The p2p layer owns the type bytes below ``FIRST_APP_TYPE``: the
handshake and keepalive messages it handles itself, and the transaction gossip
and block sync messages it defines for the node. The node registers its own
kinds (proposals, votes, ...) from ``FIRST_APP_TYPE`` up, so p2p never imports
consensus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from core.codec import Len, MaxItems, MaxLen, Wire
from core.errors import DecodeError
from core.types import Block, Commit, SignedTx

PROTOCOL_VERSION = 1

# --- type bytes owned by p2p ---
# Sent in clear before TLS (see p2p/tls.py); never valid after the handshake.
CERT_OFFER_TYPE = 0x00
HELLO_TYPE = 0x01
PING_TYPE = 0x02
PONG_TYPE = 0x03
TX_BATCH_TYPE = 0x10
SYNC_REQUEST_TYPE = 0x11
SYNC_RESPONSE_TYPE = 0x12
# The node's own message kinds start here.
FIRST_APP_TYPE = 0x20

# A DER Ed25519 certificate of ours is about 400 bytes; room for a few extensions.
MAX_CERT_BYTES = 2048
# Transaction gossip: a batch holds at most this many encoded SignedTx, and the
# batcher keeps their total size under TX_BATCH_MAX_BYTES.
TX_BATCH_MAX_ITEMS = 1024
TX_BATCH_MAX_BYTES = 1024 * 1024
# Block sync: blocks per response.
SYNC_MAX_BLOCKS = 256
# The largest commit certificate: MAX_VALIDATORS signatures of ~100 bytes.
MAX_COMMIT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class CertOffer(Wire):
    """The sender's DER certificate, sent in clear so the other side can pin it in TLS."""

    cert: Annotated[bytes, MaxLen(MAX_CERT_BYTES)]

    MAX_ENCODED = MAX_CERT_BYTES + 16


@dataclass(frozen=True, slots=True)
class Hello(Wire):
    """First message inside TLS, both ways: peers on another chain part at once."""

    protocol: int
    chain_id: Annotated[str, MaxLen(64)]
    genesis_hash: Annotated[bytes, Len(32)]

    MAX_ENCODED = 256


@dataclass(frozen=True, slots=True)
class Ping(Wire):
    nonce: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class Pong(Wire):
    nonce: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class TxBatch(Wire):
    """Encoded ``SignedTx`` objects gossiped together; the receiver verifies each one."""

    txs: Annotated[
        tuple[Annotated[bytes, MaxLen(SignedTx.MAX_ENCODED)], ...], MaxItems(TX_BATCH_MAX_ITEMS)
    ]

    # Item headers (5 bytes each) and the array header on top of the tx bytes.
    MAX_ENCODED = TX_BATCH_MAX_BYTES + 5 * TX_BATCH_MAX_ITEMS + 16


@dataclass(frozen=True, slots=True)
class SyncRequest(Wire):
    """Ask a peer for finalized blocks ``from_height`` onwards."""

    from_height: int
    max_blocks: int

    MAX_ENCODED = 32


@dataclass(frozen=True, slots=True)
class SyncBlock(Wire):
    """One finalized block and the commit certificate that finalized it, both encoded."""

    block: Annotated[bytes, MaxLen(Block.MAX_ENCODED)]
    commit: Annotated[bytes, MaxLen(MAX_COMMIT_BYTES)]


@dataclass(frozen=True, slots=True)
class SyncResponse(Wire):
    """Consecutive blocks from ``from_height``; ``tip_height`` is the sender's finalized tip.

    An empty ``blocks`` means the sender has nothing from ``from_height``. The
    receiver decodes and verifies every block and commit before applying it;
    p2p only checks the envelope.
    """

    from_height: int
    tip_height: int
    blocks: Annotated[tuple[SyncBlock, ...], MaxItems(SYNC_MAX_BLOCKS)]

    # Bounded in practice by the frame cap (P2PConfig.max_frame_size).
    MAX_ENCODED = Block.MAX_ENCODED


def build_sync_response(
    from_height: int,
    tip_height: int,
    items: Iterable[tuple[bytes, bytes]],
    max_bytes: int,
) -> SyncResponse:
    """Take (encoded block, encoded commit) pairs in height order while they fit ``max_bytes``.

    At least one block is always taken, so a block larger than ``max_bytes``
    is sent alone (and the receiver's frame cap decides whether it passes).
    """
    blocks: list[SyncBlock] = []
    # Array headers and the two integers; 32 bytes covers their msgpack form.
    size = 32
    for block, commit in items:
        # Per item: a 1-byte array header and two bin headers of at most 5 bytes.
        item_size = len(block) + len(commit) + 11
        if blocks and (size + item_size > max_bytes or len(blocks) >= SYNC_MAX_BLOCKS):
            break
        blocks.append(SyncBlock(block, commit))
        size += item_size
    return SyncResponse(from_height, tip_height, tuple(blocks))


def decode_sync_block(item: SyncBlock) -> tuple[Block, Commit]:
    """Decode one synced block and its commit (raises ``DecodeError``); verification is the node's."""
    return Block.decode(item.block), Commit.decode(item.commit)


@dataclass(frozen=True, slots=True)
class MessageKind:
    """What p2p knows about one message type."""

    type_id: int
    cls: type[Wire]
    # Largest accepted frame payload for this type (also capped by the node's config).
    max_size: int
    # Droppable messages may be discarded when a peer's outbound queue is full
    # (gossip is best effort); the others are never dropped: if they do not
    # fit, the slow peer is disconnected instead.
    droppable: bool


class MessageRegistry:
    """Type byte <-> Wire class. Starts with the p2p-defined gossip and sync messages."""

    def __init__(self) -> None:
        self._by_id: dict[int, MessageKind] = {}
        self._by_cls: dict[type[Wire], MessageKind] = {}
        self._add(MessageKind(TX_BATCH_TYPE, TxBatch, TxBatch.MAX_ENCODED, droppable=True))
        self._add(MessageKind(SYNC_REQUEST_TYPE, SyncRequest, SyncRequest.MAX_ENCODED, False))
        self._add(MessageKind(SYNC_RESPONSE_TYPE, SyncResponse, SyncResponse.MAX_ENCODED, False))

    def register(
        self,
        type_id: int,
        cls: type[Wire],
        *,
        max_size: int | None = None,
        droppable: bool = False,
    ) -> MessageKind:
        """Add a node message kind. ``max_size`` defaults to ``cls.MAX_ENCODED``."""
        if not FIRST_APP_TYPE <= type_id <= 0xFF:
            raise ValueError(
                f"type id must be in {FIRST_APP_TYPE:#x}..0xff (below is p2p's), got {type_id:#x}"
            )
        kind = MessageKind(type_id, cls, max_size or cls.MAX_ENCODED, droppable)
        self._add(kind)
        return kind

    def _add(self, kind: MessageKind) -> None:
        if kind.type_id in self._by_id:
            raise ValueError(f"type id {kind.type_id:#x} is already {self._by_id[kind.type_id]}")
        if kind.cls in self._by_cls:
            raise ValueError(f"{kind.cls.__name__} is already registered")
        self._by_id[kind.type_id] = kind
        self._by_cls[kind.cls] = kind

    def by_id(self, type_id: int) -> MessageKind | None:
        return self._by_id.get(type_id)

    def kind_of(self, msg: Wire) -> MessageKind:
        return self.kind_of_class(type(msg))

    def kind_of_class(self, cls: type[Wire]) -> MessageKind:
        kind = self._by_cls.get(cls)
        if kind is None:
            raise ValueError(f"{cls.__name__} is not a registered message kind")
        return kind

    def decode(self, type_id: int, payload: bytes) -> Wire:
        kind = self._by_id.get(type_id)
        if kind is None:
            raise DecodeError(f"unknown message type {type_id:#x}")
        return kind.cls.decode(payload)

    def max_size(self) -> int:
        return max(k.max_size for k in self._by_id.values())
