"""The active producer set, its hash, the proposer schedule and commit certificates."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core import (
    Commit,
    CommitSig,
    Domain,
    InvalidBlock,
    InvalidSignature,
    PrivateKey,
    Vote,
    VoteType,
    hash_bytes,
    pack_raw,
)


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """Producers of one epoch, each with one equal vote, in a canonical (sorted) order."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a validator set needs at least one producer")
        if list(self.keys) != sorted(set(self.keys)):
            raise ValueError("validator keys must be unique and sorted")

    @classmethod
    def of(cls, keys: Iterable[bytes]) -> ValidatorSet:
        return cls(tuple(sorted(set(keys))))

    @property
    def hash(self) -> bytes:
        return hash_bytes(Domain.PRODUCER_SET, pack_raw(list(self.keys)))

    @property
    def quorum(self) -> int:
        """Smallest number of votes that is more than 2/3 of the set."""
        return len(self.keys) * 2 // 3 + 1

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def proposer(self, height: int, round_: int) -> bytes:
        """Deterministic round-robin schedule over the sorted set."""
        return self.keys[(height + round_) % len(self.keys)]


def make_commit(
    keys: Iterable[PrivateKey], chain_id: str, height: int, round_: int, block_hash: bytes
) -> Commit:
    """A certificate signed by the given producers (a single validator signs its own)."""
    sigs = []
    for key in sorted(keys, key=lambda k: k.public_key):
        vote = Vote.create(key, chain_id, VoteType.PRECOMMIT, height, round_, block_hash)
        sigs.append(CommitSig(vote.validator, vote.signature))
    return Commit(height, round_, block_hash, tuple(sigs))


def verify_commit(
    commit: Commit, chain_id: str, height: int, block_hash: bytes, validators: ValidatorSet
) -> None:
    """Check that ``commit`` finalizes ``block_hash`` at ``height`` under ``validators``."""
    # The certificate must be for this block, not another one at the same height.
    if commit.height != height:
        raise InvalidBlock(f"commit is for height {commit.height}, expected {height}")
    if commit.block_hash != block_hash:
        raise InvalidBlock(
            f"commit is for block {commit.block_hash.hex()}, expected {block_hash.hex()}"
        )
    # Signers in canonical order, so a certificate has exactly one encoding.
    signers = [s.validator for s in commit.signatures]
    if signers != sorted(set(signers)):
        raise InvalidBlock("commit signers must be unique and sorted")
    for sig in commit.signatures:
        # Only producers of this epoch count towards finality.
        if sig.validator not in validators:
            raise InvalidBlock(f"commit signed by non-producer {sig.validator.hex()}")
    # More than 2/3 of the producers must have precommitted.
    if len(signers) < validators.quorum:
        raise InvalidBlock(
            f"commit has {len(signers)} precommits, expected at least {validators.quorum}"
        )
    for vote in commit.votes():
        try:
            vote.verify(chain_id)
        except InvalidSignature as exc:
            raise InvalidBlock(
                f"bad precommit signature from {vote.validator.hex()} at height {height}"
            ) from exc
