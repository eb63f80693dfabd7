"""Producer sets, schedules, block validation and finality (commit certificates)."""

from consensus.validation import validate_header, validate_tx_root
from consensus.validators import ValidatorSet, make_commit, verify_commit

__all__ = ["ValidatorSet", "make_commit", "validate_header", "validate_tx_root", "verify_commit"]
