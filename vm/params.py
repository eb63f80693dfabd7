"""Chain parameters: the consensus-critical limits every node must agree on.

They live in genesis (and later in state, under governance). Every field has a
default so that later issues can append fields without touching callers; the
encoding is a fixed-order array, so new fields go at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Self

from core.codec import Wire
from core.errors import DecodeError
from core.types import MAX_BLOCK_TXS, SignedTx

# Bounds for the block-time rule's parameters. Below 100 ms no two machines' clocks
# agree reliably, and a proposal (built, sent, decoded) takes about a second under
# load: smaller values halt the chain, and genesis cannot be changed afterwards.
# Above a minute of clock spread or ten minutes of delay the bound means nothing.
MIN_TIME_PRECISION_MS = 100
MAX_TIME_PRECISION_MS = 60_000
MIN_MESSAGE_DELAY_MS = 1_000
MAX_MESSAGE_DELAY_MS = 600_000
# Upper bound of ``max_currencies``: the list of currencies is one state value.
MAX_CURRENCIES = 256
# Upper bound of ``max_block_bytes``. A proposal carries its whole block in one p2p
# frame (16 MiB by default, node config): a block whose transactions filled more
# could never be proposed, and a governance change that allowed it would halt the
# chain with no vote left to undo it. The rest of the frame holds the header, the
# last commit and per-transaction framing (~3 bytes each).
MAX_BLOCK_BYTES = 12 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChainParams(Wire):
    # Smallest fee a transaction may offer, in base token units.
    min_fee: int = 1_000
    # With 1 s blocks this caps a chain at this many tx/s however fast its nodes are:
    # 20k capped one validator on a 2-core machine at 20k tx/s while it could do ~25k.
    # What a block really holds is the proposer's build budget's choice (node config);
    # 40k transfers (~171 bytes each) fit max_block_bytes.
    max_block_txs: int = 40_000
    # Sum of the encoded sizes of a block's transactions; far under the p2p frame limit.
    max_block_bytes: int = 8 * 1024 * 1024
    max_tx_bytes: int = 16 * 1024
    # A tx's expiry_height may be at most (inclusion height + this): a signed tx
    # cannot be held back and submitted arbitrarily late.
    max_expiry_blocks: int = 3_600
    # --- staking, election, jailing and governance (consensus; docs/staking.md) ---
    # Blocks per epoch; the producer set is fixed within one. Not governable.
    epoch_length: int = 100
    # Producers elected per epoch (N), each with one equal vote.
    max_producers: int = 21
    # Candidates one staker may approve (K); its whole bond counts for each.
    max_votes: int = 30
    # Blocks an unbonded amount waits before it is paid back.
    unbonding_blocks: int = 1_000
    # Self-bond a candidate needs to be elected.
    min_self_bond: int = 1
    # Share of a double signer's bond slashed, in basis points (1/10000).
    slash_bps: int = 500
    # Charged missed commit signatures per epoch a producer may have without being
    # jailed (misses the producers with the most of them to their name could have
    # caused are not charged). Below consensus.election.least_epoch_charge (24 with
    # these defaults), or some offline producer is never jailed; governance keeps it
    # there (docs/staking.md, Missed slots).
    max_missed_slots: int = 20
    # Blocks a jailed candidate must wait before it may unjail.
    jail_blocks: int = 200
    # Oldest evidence accepted, in blocks behind the including block (below
    # unbonding_blocks - epoch_length: docs/staking.md, Accountability).
    max_evidence_age_blocks: int = 800
    # Blocks a governance proposal stays open for votes.
    proposal_voting_blocks: int = 1_000
    # Blocks between a parameter change passing and taking effect.
    param_change_delay_blocks: int = 10
    # --- block time (proposer-based timestamps; docs/consensus.md, "Block time") ---
    # Fixed in genesis, not governable: a precision below the real spread of honest
    # clocks halts the chain, and then no change could be voted back.
    # Honest producers' clocks differ by less than this; a block time is never more
    # than this ahead of the clock of an honest producer that prevoted it.
    time_precision_ms: int = 500
    # How long a new proposal may take from its block time to a producer (building
    # included); grows by a tenth per round. Only bounds how far back a block is dated.
    time_message_delay_ms: int = 10_000
    # --- issued currencies (vm/currency.py; docs/vm.md, Currencies) ---
    # Currencies governance may create (revoked ones count): every account read lists
    # each, so the number is bounded.
    max_currencies: int = 16

    MAX_ENCODED = 4096

    def __post_init__(self) -> None:
        # A block must be able to hold at least one transaction.
        if self.max_block_txs < 1:
            raise DecodeError(f"max_block_txs must be at least 1, got {self.max_block_txs}")
        # Block decoding refuses more transactions than core allows.
        if self.max_block_txs > MAX_BLOCK_TXS:
            raise DecodeError(
                f"max_block_txs must be at most {MAX_BLOCK_TXS}, got {self.max_block_txs}"
            )
        # A larger limit could never be reached: SignedTx decoding caps it first.
        if self.max_tx_bytes > SignedTx.MAX_ENCODED:
            raise DecodeError(
                f"max_tx_bytes must be at most {SignedTx.MAX_ENCODED}, got {self.max_tx_bytes}"
            )
        # The largest allowed transaction must fit in a block.
        if self.max_block_bytes < self.max_tx_bytes:
            raise DecodeError(
                f"max_block_bytes must be at least max_tx_bytes ({self.max_tx_bytes}), "
                f"got {self.max_block_bytes}"
            )
        # A proposal of a full block must fit one p2p frame (see MAX_BLOCK_BYTES).
        if self.max_block_bytes > MAX_BLOCK_BYTES:
            raise DecodeError(
                f"max_block_bytes must be at most {MAX_BLOCK_BYTES}, got {self.max_block_bytes}"
            )
        # Honest clocks are never exactly equal; a minute apart is not a clock.
        if not MIN_TIME_PRECISION_MS <= self.time_precision_ms <= MAX_TIME_PRECISION_MS:
            raise DecodeError(
                f"time_precision_ms must be in {MIN_TIME_PRECISION_MS}..{MAX_TIME_PRECISION_MS}, "
                f"got {self.time_precision_ms}"
            )
        # A proposal needs some time to travel; without a bound, any date in the past passes.
        if not MIN_MESSAGE_DELAY_MS <= self.time_message_delay_ms <= MAX_MESSAGE_DELAY_MS:
            raise DecodeError(
                f"time_message_delay_ms must be in {MIN_MESSAGE_DELAY_MS}..{MAX_MESSAGE_DELAY_MS}, "
                f"got {self.time_message_delay_ms}"
            )
        # The currency list is one state value of at most MAX_CURRENCIES symbols.
        if not 0 <= self.max_currencies <= MAX_CURRENCIES:
            raise DecodeError(
                f"max_currencies must be in 0..{MAX_CURRENCIES}, got {self.max_currencies}"
            )
        # Expiry 0 blocks ahead would make every tx expire before it is included.
        if self.max_expiry_blocks < 1:
            raise DecodeError(f"max_expiry_blocks must be at least 1, got {self.max_expiry_blocks}")

    @classmethod
    def default(cls) -> Self:
        return cls()

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (and checked again)."""
        return replace(self, **changes)
