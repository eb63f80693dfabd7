"""Proofs that a transaction is in a block, and what its receipt there says.

A block header commits to its transactions (``tx_root``) and to their receipts, one
per transaction in the same order (``receipt_root``), each a ``core.merkle_root``. A
node proves a transaction's inclusion and outcome with the transaction and receipt
encodings and their Merkle paths (``GET /v1/txs/{hash}/proof``, docs/node.md); a
client checks them here against a header it certified itself (``cli.light``), taking
nothing else from the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import DecodeError, InvalidProof
from core.hashing import merkle_path_length, verify_merkle_path
from core.types import MAX_BLOCK_TXS, BlockHeader, SignedTx, tx_hash
from vm.receipts import Receipt

# The longest path of a block's transaction or receipt: a tree over MAX_BLOCK_TXS leaves.
MAX_TX_PATH = merkle_path_length(0, MAX_BLOCK_TXS)


@dataclass(frozen=True, slots=True)
class TxInclusion:
    """A node's claim that ``tx`` is transaction ``index`` of the ``count`` in block
    ``height``, and ``receipt`` its receipt there, with the paths that prove it."""

    height: int
    index: int
    count: int
    # The transaction's canonical ``SignedTx`` encoding, as the block carries it.
    tx: bytes
    # Its ``Receipt`` encoding, as the receipt root commits to it.
    receipt: bytes
    # ``MerkleTree.path``: siblings from the leaves up, to the tx root and receipt root.
    tx_path: Sequence[bytes]
    receipt_path: Sequence[bytes]


def verify_tx_inclusion(
    header: BlockHeader, hash_: bytes, proof: TxInclusion
) -> tuple[SignedTx, Receipt]:
    """The transaction whose hash is ``hash_`` and its receipt, once ``proof`` shows
    both in the block of ``header``. Raises ``InvalidProof`` (or ``DecodeError`` for an
    encoding that is none).

    ``header`` must be one the caller trusts (its certificate checked against the
    producers derived from genesis) and ``hash_`` the hash the caller asked about,
    never the node's word. The header does not commit to its block's transaction count:
    ``index`` is proven for the ``count`` stated, and a node could state another pair
    whose paths take the same turns (``core.verify_merkle_path``). The transaction's
    inclusion and that the receipt is its own hold whatever the pair.
    """
    # The block the caller certified, not another one.
    if proof.height != header.height:
        raise InvalidProof(
            f"the proof is of block {proof.height}, the certified header of {header.height}"
        )
    # A position in a block: a block holds 1..MAX_BLOCK_TXS transactions.
    if not 0 <= proof.index < proof.count <= MAX_BLOCK_TXS:
        raise InvalidProof(
            f"transaction {proof.index} of {proof.count} is no place in a block "
            f"(at most {MAX_BLOCK_TXS} transactions)"
        )
    # Bounded before any hashing: a path is at most as long as a full block's.
    for name, path in (("transaction", proof.tx_path), ("receipt", proof.receipt_path)):
        if len(path) > MAX_TX_PATH:
            raise InvalidProof(
                f"the {name} path has {len(path)} hashes, a block's has at most {MAX_TX_PATH}"
            )
    # The transaction asked about, not another one of the block.
    if tx_hash(proof.tx) != hash_:
        raise InvalidProof(
            f"the proof is of transaction {tx_hash(proof.tx).hex()}, not {hash_.hex()}"
        )
    # It is leaf ``index`` of the block's transactions ...
    verify_merkle_path(header.tx_root, proof.tx, proof.index, proof.count, proof.tx_path)
    # ... and the receipt leaf ``index`` of its receipts: the same place in a tree of as
    # many leaves (the executor writes one receipt per transaction, in block order).
    verify_merkle_path(
        header.receipt_root, proof.receipt, proof.index, proof.count, proof.receipt_path
    )
    receipt = Receipt.decode(proof.receipt)
    # And the receipt names it, as every receipt names its transaction.
    if receipt.tx_hash != hash_:
        raise InvalidProof(
            f"the receipt is of transaction {receipt.tx_hash.hex()}, not {hash_.hex()}"
        )
    try:
        tx = SignedTx.decode(proof.tx)
    except DecodeError as exc:
        # A certified block holds only decodable transactions (block validation).
        raise InvalidProof(f"the proven transaction does not decode: {exc.message}") from None
    return tx, receipt
