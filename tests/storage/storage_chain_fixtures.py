"""Deterministic blocks and state changes for the chain store tests.

Run as a script (``python storage_chain_fixtures.py write DB``) it commits blocks
to ``DB`` forever, printing each committed height: the crash test kills it.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping, Sequence

from core.codec import pack_raw
from core.hashing import ZERO_HASH, Domain, hash_bytes, merkle_root
from core.types import Block, BlockHeader, Commit, SignedTx

CHAIN_ID = "storage-test"
GENESIS_HASH = hash_bytes(Domain.GENESIS, b"storage tests")
PRODUCER = bytes(range(32))


def genesis_state() -> dict[bytes, bytes]:
    return {b"acct/%04d" % i: b"%d" % (1000 + i) for i in range(100)}


def changes_for(height: int, count: int = 300) -> dict[bytes, bytes | None]:
    """The state changes of block ``height``: updates, inserts and deletes."""
    rng = random.Random(height)
    changes: dict[bytes, bytes | None] = {}
    for _ in range(count):
        key = b"k/%05d" % rng.randrange(3000)
        changes[key] = None if rng.random() < 0.2 else rng.randbytes(rng.randint(1, 40))
    return changes


def apply_changes(state: dict[bytes, bytes], changes: Mapping[bytes, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


def make_block(
    height: int, prev_hash: bytes, state_root: bytes, n_txs: int = 20
) -> tuple[Block, Commit, list[bytes]]:
    """A block with fake (unsigned) transactions, its commit, and one receipt per tx."""
    txs = tuple(
        SignedTx(CHAIN_ID, bytes([height % 256]) * 32, pack_raw([height, i]), bytes(64)).encode()
        for i in range(n_txs)
    )
    header = BlockHeader(
        chain_id=CHAIN_ID,
        height=height,
        round=0,
        time_ms=height * 1000,
        prev_hash=prev_hash,
        tx_root=merkle_root(txs),
        state_root=state_root,
        receipt_root=ZERO_HASH,
        producer=PRODUCER,
        producer_set_hash=ZERO_HASH,
        last_commit=None,
    )
    block = Block(header, txs)
    commit = Commit(height, 0, block.hash, ())
    receipts = [pack_raw([height, i, "ok"]) for i in range(n_txs)]
    return block, commit, receipts


def raw_write(
    path: str | os.PathLike[str], puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()
) -> None:
    """Write straight into a closed store's database at ``path``, as damage would."""
    from storage.db import Database

    with Database(path, create_if_missing=False) as db:
        batch = db.new_batch()
        for key, value in puts.items():
            batch.put(key, value)
        for key in deletes:
            batch.delete(key)
        db.write(batch)


def too_deep_chain(key: bytes, internal: int) -> tuple[bytes, dict[bytes, bytes]]:
    """(root reference, nodes) of a run of ``internal`` internal nodes down the path of
    ``key``, each with one child, ending at ``key``'s leaf: every node hashes right,
    but no tree ever has one deeper than 255 (what a store never writes, nor a chunk
    may hold)."""
    from storage.state_tree import (
        NODE_LEAF,
        ZERO_REF,
        LeafNode,
        internal_encoding,
        internal_hash,
        key_path,
        leaf_hash,
        node_ref,
        value_hash,
    )

    path = int.from_bytes(key_path(key), "big")
    child = leaf_hash(key_path(key), value_hash(b"v"))
    nodes = {node_ref(1, child): LeafNode(NODE_LEAF, key, b"v").encode()}
    for depth in reversed(range(internal)):
        right = depth < 256 and (path >> (255 - depth)) & 1
        ref = node_ref(1, child)
        left_ref, right_ref = (ZERO_REF, ref) if right else (ref, ZERO_REF)
        child = internal_hash(left_ref[8:], right_ref[8:])
        nodes[node_ref(1, child)] = internal_encoding(left_ref, right_ref)
    return node_ref(1, child), nodes


def write_forever(path: str) -> None:
    from storage.chain_store import ChainStore

    with ChainStore(path) as store:
        store.initialize(GENESIS_HASH, genesis_state())
        head = store.get_block(store.height)
        prev = GENESIS_HASH if head is None else head.hash
        while True:
            height = store.height + 1
            changes = changes_for(height)
            update = store.prepare_state(changes)
            block, commit, receipts = make_block(height, prev, update.root)
            store.commit_block(block, commit, receipts, changes, update)
            print(height, flush=True)
            prev = block.hash


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write_forever(sys.argv[2])
