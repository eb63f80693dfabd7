"""LevelDB key spaces, atomic block commit, block and tx stores, the state tree and proofs."""

from storage.cache import GenerationalCache
from storage.chain_store import ChainStore
from storage.db import Database, WriteBatch
from storage.state_tree import (
    MAX_KEY_SIZE,
    MAX_VALUE_SIZE,
    InternalNode,
    LeafNode,
    MemoryNodeStore,
    NodeStore,
    ProofLeaf,
    StateProof,
    StateTree,
    TreeUpdate,
    state_root_of,
    verify_proof,
)

__all__ = [
    "MAX_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "ChainStore",
    "Database",
    "GenerationalCache",
    "InternalNode",
    "LeafNode",
    "MemoryNodeStore",
    "NodeStore",
    "ProofLeaf",
    "StateProof",
    "StateTree",
    "TreeUpdate",
    "WriteBatch",
    "state_root_of",
    "verify_proof",
]
