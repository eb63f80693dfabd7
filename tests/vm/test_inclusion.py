"""A transaction's inclusion and receipt, checked against a header: an honest proof is
taken at every place of blocks of every size, and every answer a hostile node could
make of it (another place, another transaction's path or receipt, a path of another
shape or size, a header of another block) is refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import BlockHeader, InvalidProof, MerkleTree, merkle_root, tx_hash
from core.types import MAX_BLOCK_TXS
from tests.vm.helpers import CHAIN, KEYS, signed
from vm import MAX_TX_PATH, Receipt, Transfer, TxInclusion, verify_tx_inclusion


def block(count: int, receipt_of=None) -> tuple[BlockHeader, list[bytes], list[bytes]]:
    """A header over ``count`` signed transfers and their receipts (the third a failure;
    ``receipt_of(i)``: the transaction receipt ``i`` names, by default its own)."""
    txs = [signed(KEYS[i % 6], i, Transfer(KEYS[0].address, i + 1)) for i in range(count)]
    which = receipt_of or (lambda i: i)
    receipts = [
        Receipt(
            tx_hash(txs[which(i)]), "ok" if i != 2 else "insufficient_funds", "", 10, ()
        ).encode()
        for i in range(count)
    ]
    producer = KEYS[5].public_key
    roots = (merkle_root(txs), bytes(32), merkle_root(receipts))
    header = BlockHeader(CHAIN, 7, 0, 1, bytes(32), *roots, producer, bytes(32), None)
    return header, txs, receipts


def proof_of(txs: list[bytes], receipts: list[bytes], index: int) -> TxInclusion:
    tx_tree, receipt_tree = MerkleTree.of(txs), MerkleTree.of(receipts)
    return TxInclusion(
        7,
        index,
        len(txs),
        txs[index],
        receipts[index],
        tuple(tx_tree.path(index)),
        tuple(receipt_tree.path(index)),
    )


@given(st.integers(1, 40), st.data())
def test_an_honest_proof_gives_the_transaction_and_its_receipt(count, data):
    header, txs, receipts = block(count)
    index = data.draw(st.integers(0, count - 1))
    tx, receipt = verify_tx_inclusion(header, tx_hash(txs[index]), proof_of(txs, receipts, index))
    assert tx.encode() == txs[index]
    assert receipt.tx_hash == tx_hash(txs[index])
    assert receipt.code == ("insufficient_funds" if index == 2 else "ok")


HEADER, TXS, RECEIPTS = block(11)
ASKED = tx_hash(TXS[5])
HONEST = proof_of(TXS, RECEIPTS, 5)
OTHER = proof_of(TXS, RECEIPTS, 4)


@pytest.mark.parametrize(
    ("lie", "says"),
    [
        # Another place for the asked transaction, its own paths kept or the place's.
        ({"index": 4}, "root"),
        ({"index": 4, "tx_path": OTHER.tx_path, "receipt_path": OTHER.receipt_path}, "root"),
        # Another transaction of the block, with its own valid paths.
        (dataclasses.asdict(OTHER), "is of transaction"),
        # The asked transaction with another one's path.
        ({"tx_path": OTHER.tx_path}, "root"),
        # Another transaction's receipt, with its path (at its place or at this one).
        ({"receipt": OTHER.receipt, "receipt_path": OTHER.receipt_path}, "root"),
        ({"receipt": OTHER.receipt}, "root"),
        # Paths of another shape: a hash more, a hash less, one cut short (odd length).
        ({"tx_path": (*HONEST.tx_path, bytes(32))}, "path of"),
        ({"receipt_path": HONEST.receipt_path[:-1]}, "path of"),
        ({"tx_path": (HONEST.tx_path[0][:31], *HONEST.tx_path[1:])}, "32 bytes"),
        # Paths longer than any block's, refused before anything is hashed.
        ({"tx_path": (bytes(32),) * (MAX_TX_PATH + 1)}, "at most"),
        ({"receipt_path": (bytes(32),) * 1_000_000}, "at most"),
        # A place no block has; the proof of another block than the certified header's.
        ({"count": MAX_BLOCK_TXS + 1}, "no place"),
        ({"index": 11}, "no place"),
        ({"height": 8}, "of block 8"),
    ],
    ids=[
        "wrong-index",
        "wrong-index-its-paths",
        "another-tx",
        "another-tx-path",
        "another-receipt",
        "another-receipt-here",
        "path-too-long",
        "path-too-short",
        "hash-odd-length",
        "oversized-path",
        "huge-path",
        "count-over-block",
        "index-past-count",
        "another-height",
    ],
)
def test_a_hostile_answer_is_refused(lie, says):
    verify_tx_inclusion(HEADER, ASKED, HONEST)
    with pytest.raises(InvalidProof, match=says):
        verify_tx_inclusion(HEADER, ASKED, dataclasses.replace(HONEST, **lie))


def test_another_count_cannot_show_the_receipt_of_another_transaction():
    """The header does not commit to the block's count: with a count of its choosing a
    node may name another index whose paths take the same turns (the last of 3 is shaped
    as the second of 2), but the transaction and its receipt stay the pair at one place
    of two trees of one shape, so the receipt is still the transaction's own."""
    header, txs, receipts = block(3)
    honest = proof_of(txs, receipts, 2)
    moved = dataclasses.replace(honest, index=1, count=2)
    tx, receipt = verify_tx_inclusion(header, tx_hash(txs[2]), moved)
    assert receipt.tx_hash == tx_hash(txs[2]) and receipt.code == "insufficient_funds"
    # Another transaction's receipt never passes, whatever the count.
    for index, count in ((2, 3), (1, 2)):
        lie = dataclasses.replace(
            honest,
            index=index,
            count=count,
            receipt=receipts[1],
            receipt_path=tuple(MerkleTree.of(receipts).path(1)),
        )
        with pytest.raises(InvalidProof):
            verify_tx_inclusion(header, tx_hash(txs[2]), lie)


def test_a_receipt_that_names_another_transaction_is_refused():
    """A block (a header its producers would never certify, built here) whose receipt at
    a transaction's place names another: the paths check out, the receipt's hash does not."""
    header, txs, receipts = block(4, receipt_of=lambda i: 3 - i)
    with pytest.raises(InvalidProof, match="receipt is of transaction"):
        verify_tx_inclusion(header, tx_hash(txs[1]), proof_of(txs, receipts, 1))
