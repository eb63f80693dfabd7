"""Producer sets, schedules, block validation and finality (commit certificates)."""

from consensus.bft import (
    Application,
    BFTConfig,
    Clock,
    ConsensusEngine,
    LoopClock,
    Step,
    Synchrony,
    Transport,
    WallClock,
)
from consensus.election import record_missed
from consensus.governance import params_for_height
from consensus.messages import (
    ConsensusMessage,
    DuplicateVoteEvidence,
    FinalizedBlock,
    Proposal,
    SyncRequest,
)
from consensus.privval import DoubleSignRefused, PrivValidator
from consensus.staking import CONSENSUS_TX_TYPES, register_staking
from consensus.staking_genesis import GenesisStaking
from consensus.staking_state import (
    epoch_of,
    is_member,
    may_connect,
    members,
    producer_set,
    producers_for_height,
    staking_enabled,
)
from consensus.validation import validate_header, validate_tx_root
from consensus.validators import ValidatorSet, make_commit, verify_commit
from consensus.wal import WAL
from vm.registry import error_codes

# Every consensus transaction type, and the codes their receipts may carry.
TX_TYPES = CONSENSUS_TX_TYPES
ERROR_CODES = error_codes(TX_TYPES)

__all__ = [
    "Application",
    "BFTConfig",
    "Clock",
    "ConsensusEngine",
    "ConsensusMessage",
    "DoubleSignRefused",
    "ERROR_CODES",
    "DuplicateVoteEvidence",
    "FinalizedBlock",
    "GenesisStaking",
    "LoopClock",
    "WallClock",
    "PrivValidator",
    "Proposal",
    "Step",
    "Synchrony",
    "SyncRequest",
    "TX_TYPES",
    "Transport",
    "ValidatorSet",
    "WAL",
    "epoch_of",
    "is_member",
    "make_commit",
    "may_connect",
    "members",
    "params_for_height",
    "producer_set",
    "producers_for_height",
    "record_missed",
    "register_staking",
    "staking_enabled",
    "validate_header",
    "validate_tx_root",
    "verify_commit",
]
