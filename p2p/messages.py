"""Wire messages of the p2p layer and the registry that maps type bytes to classes.

Every frame carries one type byte and the canonical encoding of one ``Wire``
object. The p2p layer owns the type bytes below ``FIRST_APP_TYPE``: the
handshake and keepalive messages it handles itself, and the transaction gossip
and state sync messages it defines for the node (docs/state-sync.md). The node registers its own
kinds (proposals, votes, ...) from ``FIRST_APP_TYPE`` up, so p2p never imports
consensus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from core.codec import Len, MaxItems, MaxLen, Wire
from core.errors import DecodeError
from core.types import Block, SignedTx
from p2p.limits import ITEM_OBJECT_BYTES

# 2: state roots place keys by group (``storage.state_tree.key_group``, tree layout 2):
# a node of version 1 computes other roots for every block, so the two never connect.
# 3: state sync names a subtree by its place as well as its hash (``ChunkRequest``,
# ``ChunkResponse``): a server keeps tree nodes by version (tree layout 3) and finds
# one by walking to it. Roots are unchanged.
# 4: a buyer's units in its last deal are counted in its commerce party record, not a
# record of their own (``apps.commerce.model.Party``, two fields more): every block with
# an order makes other state roots (tree layout 4).
# 5: a missed slot is also counted against the proposer that may have withheld the
# block (``consensus.staking_state.Candidate.withheld_by``, one field more): every block
# that records a miss makes other state roots (tree layout 7).
# 6: producers' unbonding is held while they can be slashed (``ProducerTerm``, a key
# space of its own, written from genesis on), approvals carry their height
# (``consensus.governance.Proposal.voted_at``) and removed members' candidacies leave
# the candidate list: other state roots from the genesis state on (tree layout 8).
# 7: a registrar may not buy, bid or sell (``registrar_party``), each deadline kind
# takes its share of a block's deadline budget first and a settlement counts its items
# against it, and deal ends are closed a budget per block (``DEAL_ENDS_PER_BLOCK``):
# other receipts and state after such transactions or under a backlog; what state holds
# is unchanged (tree layout 8 still).
# 8: a host's auction may not go below the listing's price (``below_listing_price``):
# another receipt for such a start; what state holds is unchanged (tree layout 8 still).
# 9: passed parameter changes due at one height apply in the order they passed, not by
# proposal id (``consensus.governance._execute``): another schedule (``PendingParams``)
# and other parameters after such blocks; and unbonding releases run after the election
# in a block's begin hooks (``consensus.staking.register``), so an entry due at an
# election height of a staker elected there is held (tree layout 8 still).
# 10: an election takes in at most ``(n - 1) // 3`` producers not in the outgoing
# set (``consensus.election.elect``): stake could elect dormant members, a third of the
# set, and stop the chain for good; other sets after such elections (tree layout 8
# still).
# 11: an election takes in one newcomer (``NEWCOMERS_PER_ELECTION``); governance may
# not shrink the set below four, raise ``max_missed_slots`` or ``max_producers`` past
# ``least_epoch_charge``, and ``jail_blocks`` is at least ``epoch_length``
# (``governance.check_param_change``); approvals of a proposal about a member count
# from that member's last admission or removal (``MemberRemoved``, prefix 0x1B); an
# item names the resale listing that offers it (``apps.commerce.model.Item.listing_id``,
# one field more), only its owner (or its maker before a sale) decommissions it, and a
# locked item is handed only along its order's way: other receipts, sets and state
# (tree layout 8 still).
# 12: an election drops the producer sets evidence can no longer name
# (``consensus.staking_state.drop_old_producer_sets``, a first-kept mark at 0x17 05),
# and evidence naming a dropped one fails ``evidence_too_old``; an order that gives its
# buyer back all it paid sends its items back to the merchant (``Item.return_to``, one
# field more), a listed item is not decommissioned (``item_listed``), and a custodian
# withdraws its own pending hand-off with ``refuse_custody``; a listed item is not
# handed off (``item_listed``) and a disclosure names the key it is sealed to
# (``Disclose.sealed_to``, one field more, ``stale_key``): other state, payloads and
# receipts (tree layout 8 still).
PROTOCOL_VERSION = 12

# --- type bytes owned by p2p ---
# Sent in clear before TLS (see p2p/tls.py); never valid after the handshake.
CERT_OFFER_TYPE = 0x00
HELLO_TYPE = 0x01
PING_TYPE = 0x02
PONG_TYPE = 0x03
TX_BATCH_TYPE = 0x10
# State sync (0x11..0x16). 0x11/0x12 were a bulk block sync that nothing used (blocks
# follow through consensus catch-up); those bytes now mean these.
SNAPSHOT_REQUEST_TYPE = 0x11
SNAPSHOT_OFFER_TYPE = 0x12
EPOCHS_REQUEST_TYPE = 0x13
EPOCHS_RESPONSE_TYPE = 0x14
CHUNK_REQUEST_TYPE = 0x15
CHUNK_RESPONSE_TYPE = 0x16
# The node's own message kinds start here.
FIRST_APP_TYPE = 0x20

# A DER Ed25519 certificate of ours is about 400 bytes; room for a few extensions.
MAX_CERT_BYTES = 2048
# Transaction gossip: a batch holds at most this many encoded SignedTx, and the
# batcher keeps their total size under TX_BATCH_MAX_BYTES.
TX_BATCH_MAX_ITEMS = 1024
TX_BATCH_MAX_BYTES = 1024 * 1024
# The largest commit certificate: MAX_VALIDATORS signatures of ~100 bytes.
MAX_COMMIT_BYTES = 64 * 1024
# State sync: epoch records per answer, nodes per chunk, bytes of nodes per chunk
# (a leaf holds at most 256 KiB of value: a chunk of one leaf always fits).
MAX_EPOCHS_PER_RESPONSE = 64
MAX_EPOCH_RECORD_BYTES = 2 * MAX_COMMIT_BYTES + 64 * 1024
MAX_CHUNK_NODES = 16384
MAX_CHUNK_BYTES = 4 * 1024 * 1024


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

    def held_items(self) -> int:
        """Objects decoding made beside the bytes (``held_bytes``)."""
        return len(self.txs)


def held_bytes(msg: Wire, size: int) -> int:
    """About the memory ``msg``, decoded from ``size`` bytes, holds, and the work its
    decoding took: a peer chooses how many items (transactions) its bytes make, and 1024
    of two bytes hold some 16 times their size on the wire. A message class with items
    says how many with ``held_items()`` (``TxBatch``, a consensus message's block)."""
    held_items = getattr(msg, "held_items", None)
    return size if held_items is None else size + ITEM_OBJECT_BYTES * held_items()


@dataclass(frozen=True, slots=True)
class SnapshotRequest(Wire):
    """Ask a peer which snapshot it serves: at ``height``, or its latest when 0."""

    height: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class SnapshotOffer(Wire):
    """A snapshot the sender serves: the final block at ``height`` and its certificate,
    both encoded; ``height`` 0 (and empty bytes) when it has none to offer."""

    height: int
    block: Annotated[bytes, MaxLen(Block.MAX_ENCODED)]
    commit: Annotated[bytes, MaxLen(MAX_COMMIT_BYTES)]

    MAX_ENCODED = Block.MAX_ENCODED + MAX_COMMIT_BYTES + 64


@dataclass(frozen=True, slots=True)
class EpochsRequest(Wire):
    """Ask for the records of epochs ``first`` .. ``first + count - 1``."""

    first: int
    count: int

    MAX_ENCODED = 32


@dataclass(frozen=True, slots=True)
class EpochsResponse(Wire):
    """Epoch records from ``first`` on (opaque here; the node encodes and checks them).
    Fewer than asked (or none) when the sender holds no more."""

    first: int
    records: Annotated[
        tuple[Annotated[bytes, MaxLen(MAX_EPOCH_RECORD_BYTES)], ...],
        MaxItems(MAX_EPOCHS_PER_RESPONSE),
    ]

    MAX_ENCODED = MAX_EPOCHS_PER_RESPONSE * (MAX_EPOCH_RECORD_BYTES + 8) + 64


@dataclass(frozen=True, slots=True)
class ChunkRequest(Wire):
    """Ask for the state tree nodes under ``subtree`` (its hash) in the snapshot at
    ``height``: the node at ``depth`` reached by the first ``depth`` bits of ``path``
    (``storage.Subtree``; the root is depth 0, path all zero)."""

    height: int
    subtree: Annotated[bytes, Len(32)]
    depth: int
    path: Annotated[bytes, Len(32)]

    MAX_ENCODED = 96


@dataclass(frozen=True, slots=True)
class ChunkResponse(Wire):
    """Nodes of ``subtree`` in pre-order, cut at the sender's budget (storage.snapshot);
    none when it does not serve that snapshot. The receiver verifies every node."""

    height: int
    subtree: Annotated[bytes, Len(32)]
    depth: int
    path: Annotated[bytes, Len(32)]
    nodes: Annotated[
        tuple[Annotated[bytes, MaxLen(MAX_CHUNK_BYTES)], ...], MaxItems(MAX_CHUNK_NODES)
    ]

    MAX_ENCODED = MAX_CHUNK_BYTES + 5 * MAX_CHUNK_NODES + 128

    def held_items(self) -> int:
        """Objects decoding made beside the bytes (``held_bytes``): 16,384 one-byte
        nodes are 49 KB on the wire and 2 ms of the event loop to decode, and one sent
        unasked (a synced node drops it unread) was charged its bytes alone."""
        return len(self.nodes)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message of registered class ``cls`` given as its encoding, ``payload``: sent as
    it is (``P2PNode.send``). For bytes a node already holds in canonical form (a stored
    block), which decoding only to encode again would cost for nothing. The sender
    vouches that ``payload`` is what ``cls.decode`` accepts; the frame cap still holds."""

    cls: type[Wire]
    payload: bytes


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
    """Type byte <-> Wire class. Starts with the p2p-defined gossip and state sync messages."""

    def __init__(self) -> None:
        self._by_id: dict[int, MessageKind] = {}
        self._by_cls: dict[type[Wire], MessageKind] = {}
        self._add(MessageKind(TX_BATCH_TYPE, TxBatch, TxBatch.MAX_ENCODED, droppable=True))
        for type_id, cls in (
            (SNAPSHOT_REQUEST_TYPE, SnapshotRequest),
            (SNAPSHOT_OFFER_TYPE, SnapshotOffer),
            (EPOCHS_REQUEST_TYPE, EpochsRequest),
            (EPOCHS_RESPONSE_TYPE, EpochsResponse),
            (CHUNK_REQUEST_TYPE, ChunkRequest),
            (CHUNK_RESPONSE_TYPE, ChunkResponse),
        ):
            self._add(MessageKind(type_id, cls, cls.MAX_ENCODED, droppable=False))

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
