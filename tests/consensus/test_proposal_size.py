"""The largest block governance may allow still travels: its proposal fits one p2p frame."""

from __future__ import annotations

from consensus.messages import Proposal
from core.hashing import ZERO_HASH
from core.types import MAX_BLOCK_TXS, MAX_VALIDATORS, Block, BlockHeader, Commit, CommitSig
from p2p.node import P2PConfig
from vm.params import MAX_BLOCK_BYTES, ChainParams


def test_a_proposal_of_the_largest_allowed_block_fits_one_frame():
    # The most transactions core allows, filling the largest max_block_bytes, behind a
    # certificate of the most producers: the most a proposer may legitimately send.
    params = ChainParams(max_block_txs=MAX_BLOCK_TXS, max_block_bytes=MAX_BLOCK_BYTES)
    size = params.max_block_bytes // params.max_block_txs
    txs = tuple(i.to_bytes(4, "big") * (size // 4) for i in range(params.max_block_txs))
    sigs = tuple(CommitSig(bytes([i % 256]) * 32, bytes(64)) for i in range(MAX_VALIDATORS))
    header = BlockHeader(
        chain_id="c" * 64,
        height=2,
        round=0,
        time_ms=1,
        prev_hash=ZERO_HASH,
        tx_root=ZERO_HASH,
        state_root=ZERO_HASH,
        receipt_root=ZERO_HASH,
        producer=bytes(32),
        producer_set_hash=ZERO_HASH,
        last_commit=Commit(1, 0, ZERO_HASH, sigs),
    )
    proposal = Proposal(2, 0, None, Block(header, txs), bytes(32), bytes(64))
    assert sum(map(len, txs)) <= MAX_BLOCK_BYTES
    assert len(proposal.encode()) < P2PConfig().max_frame_size
