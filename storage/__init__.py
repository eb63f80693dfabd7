"""LevelDB key spaces, atomic block commit, block and tx stores, the state tree and proofs."""

from storage.cache import GenerationalCache
from storage.chain_store import (
    DEFAULT_STATE_CACHE_SIZE,
    ChainStore,
    Pruned,
    SyncTarget,
    sync_root,
)
from storage.db import Database, WriteBatch
from storage.snapshot import BadChunk, VerifiedChunk, serve_chunk, verify_chunk
from storage.state_tree import (
    DEFAULT_TREE_CACHE_SIZE,
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    REF_SIZE,
    ZERO_REF,
    InternalNode,
    LeafNode,
    MemoryNodeStore,
    NodeStore,
    ProofLeaf,
    StateProof,
    StateTree,
    TreeUpdate,
    node_ref,
    state_root_of,
    verify_proof,
)

__all__ = [
    "DEFAULT_STATE_CACHE_SIZE",
    "DEFAULT_TREE_CACHE_SIZE",
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "REF_SIZE",
    "ZERO_REF",
    "BadChunk",
    "ChainStore",
    "Database",
    "GenerationalCache",
    "InternalNode",
    "LeafNode",
    "MemoryNodeStore",
    "NodeStore",
    "ProofLeaf",
    "Pruned",
    "StateProof",
    "StateTree",
    "SyncTarget",
    "TreeUpdate",
    "VerifiedChunk",
    "WriteBatch",
    "node_ref",
    "serve_chunk",
    "state_root_of",
    "sync_root",
    "verify_chunk",
    "verify_proof",
]
