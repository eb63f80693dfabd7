"""Checks on a block that do not need execution: linkage, producer, roots, certificates.

Used alike by a node that receives a block and by an offline audit; every check
is one line with its reason and names expected and actual values.
"""

from __future__ import annotations

from consensus.validators import ValidatorSet, verify_commit
from core import MAX_TIME_MS, Block, BlockHeader, InvalidBlock, merkle_root


def validate_header(
    header: BlockHeader,
    *,
    chain_id: str,
    prev: BlockHeader | None,
    genesis_hash: bytes,
    genesis_time_ms: int,
    validators: ValidatorSet,
    prev_validators: ValidatorSet | None = None,
) -> None:
    """Check ``header`` against its parent (``prev`` is None for height 1).

    ``validators`` are the producers of ``header.height``; ``prev_validators``
    those of the parent, who signed its certificate (the same set by default:
    they differ across an epoch boundary).
    """
    expected_height = 1 if prev is None else prev.height + 1
    prev_hash = genesis_hash if prev is None else prev.hash
    prev_time = genesis_time_ms if prev is None else prev.time_ms
    # A block belongs to exactly one chain.
    if header.chain_id != chain_id:
        raise InvalidBlock(f"block chain id {header.chain_id!r}, expected {chain_id!r}")
    # Heights are consecutive.
    if header.height != expected_height:
        raise InvalidBlock(f"block height {header.height}, expected {expected_height}")
    # Each block commits to its parent (the genesis hash for the first).
    if header.prev_hash != prev_hash:
        raise InvalidBlock(
            f"height {header.height}: prev hash {header.prev_hash.hex()}, expected {prev_hash.hex()}"
        )
    # Block time moves forward, so deadlines enforced from it are monotonic.
    if header.time_ms <= prev_time:
        raise InvalidBlock(
            f"height {header.height}: time {header.time_ms} ms, expected after {prev_time} ms"
        )
    # Deadlines are block time plus a window: both bounded, so they never overflow u64.
    # (How far ahead of real time a block may be is the engine's timeliness rule.)
    if header.time_ms > MAX_TIME_MS:
        raise InvalidBlock(
            f"height {header.height}: time {header.time_ms} ms, expected at most {MAX_TIME_MS} ms"
        )
    # The header names the producer set it was made under.
    if header.producer_set_hash != validators.hash:
        raise InvalidBlock(
            f"height {header.height}: producer set {header.producer_set_hash.hex()}, "
            f"expected {validators.hash.hex()}"
        )
    # Only the scheduled proposer of (height, round) may produce.
    scheduled = validators.proposer(header.height, header.round)
    if header.producer != scheduled:
        raise InvalidBlock(
            f"height {header.height} round {header.round}: producer {header.producer.hex()}, "
            f"expected {scheduled.hex()}"
        )
    # The parent's certificate travels in the child, so the chain verifies offline.
    if prev is None:
        if header.last_commit is not None:
            raise InvalidBlock("height 1 must not carry a previous commit")
    else:
        if header.last_commit is None:
            raise InvalidBlock(f"height {header.height}: missing commit of height {prev.height}")
        signers = validators if prev_validators is None else prev_validators
        verify_commit(header.last_commit, chain_id, prev.height, prev.hash, signers)


def validate_tx_root(block: Block) -> None:
    """The header's tx root must commit to exactly the carried transactions."""
    root = merkle_root(block.txs)
    if block.header.tx_root != root:
        raise InvalidBlock(
            f"height {block.header.height}: tx root {block.header.tx_root.hex()}, "
            f"computed {root.hex()}"
        )
