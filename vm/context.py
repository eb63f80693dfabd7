"""What a block hands to every transaction: where and when it executes."""

from __future__ import annotations

from dataclasses import dataclass

from core.keys import ADDRESS_SIZE
from vm.params import ChainParams


@dataclass(frozen=True, slots=True)
class BlockContext:
    chain_id: str
    height: int
    # Block time from the header; the only clock execution may read.
    time_ms: int
    # Address that receives the block's fees.
    producer: bytes
    params: ChainParams
    # Producers whose precommits the header's last_commit carries (missed-slot
    # accounting); None at height 1 and where no certificate is at hand.
    last_commit_signers: tuple[bytes, ...] | None = None
    # Round of that certificate: the schedule's proposer of that round at the certified
    # height delivered (or kept back) the block the precommits are for.
    last_commit_round: int = 0

    def __post_init__(self) -> None:
        if len(self.producer) != ADDRESS_SIZE:
            raise ValueError(
                f"producer must be a {ADDRESS_SIZE}-byte address, got {len(self.producer)} bytes"
            )
