"""Authenticated transport between member nodes: mutual TLS 1.3 pinned to node keys,
length-prefixed frames, per-peer limits, transaction gossip in batches, state sync messages.

See docs/p2p.md.
"""

from p2p.connection import Handler, PeerStats
from p2p.frames import ProtocolViolation, encode_frame
from p2p.gossip import TxBatcher
from p2p.limits import OutboundQueue, QueueOverflow, TokenBucket
from p2p.messages import (
    FIRST_APP_TYPE,
    PROTOCOL_VERSION,
    TX_BATCH_MAX_BYTES,
    TX_BATCH_MAX_ITEMS,
    ChunkRequest,
    ChunkResponse,
    Encoded,
    EpochsRequest,
    EpochsResponse,
    Hello,
    MessageKind,
    MessageRegistry,
    SnapshotOffer,
    SnapshotRequest,
    TxBatch,
)
from p2p.node import P2PConfig, P2PNode, PeerAddress
from p2p.tls import NodeIdentity, PeerRejected, certificate_public_key, make_certificate

__all__ = [
    "FIRST_APP_TYPE",
    "PROTOCOL_VERSION",
    "TX_BATCH_MAX_BYTES",
    "TX_BATCH_MAX_ITEMS",
    "ChunkRequest",
    "ChunkResponse",
    "Encoded",
    "EpochsRequest",
    "EpochsResponse",
    "Handler",
    "Hello",
    "MessageKind",
    "MessageRegistry",
    "NodeIdentity",
    "OutboundQueue",
    "P2PConfig",
    "P2PNode",
    "PeerAddress",
    "PeerRejected",
    "PeerStats",
    "ProtocolViolation",
    "QueueOverflow",
    "SnapshotOffer",
    "SnapshotRequest",
    "TokenBucket",
    "TxBatch",
    "TxBatcher",
    "certificate_public_key",
    "encode_frame",
    "make_certificate",
]
