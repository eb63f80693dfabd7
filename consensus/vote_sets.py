"""Vote sets: the prevotes and precommits of one height, counted per block."""

from __future__ import annotations

from consensus.messages import DuplicateVoteEvidence, Proposal
from consensus.validators import ValidatorSet
from core import Commit, CommitSig, Invalid, NodeFault, Vote, VoteType

NIL = b""
"""The block hash of a vote for nil."""


def one_third_plus(n: int) -> int:
    """Smallest number of votes that is more than 1/3 of ``n``: at least one is honest."""
    return n // 3 + 1


MAX_VOTES_PER_VALIDATOR = 3
"""Distinct votes kept per validator in one vote set: its first, and a few conflicting
ones. Only a faulty validator ever has more than one; the cap bounds its memory use."""


class VoteSet:
    """The votes of one (height, round, type), counted per block.

    As in the paper, "+2/3 PREVOTE for id(v)" counts distinct validators that sent a
    prevote for v. An equivocating validator's conflicting votes therefore each count
    for their own value: otherwise nodes that saw its votes in different orders
    would see different polkas and could stay split forever (a locked minority
    waiting for a proof of lock the others never count). Safety is unaffected: with
    at most f faulty validators no two values can both reach +2/3.

    The first conflict of a validator is returned once as ``DuplicateVoteEvidence``.
    Signatures are checked unless the caller says it already verified the vote; an
    identical repeat is recognised without any signature work.
    """

    def __init__(
        self,
        chain_id: str,
        height: int,
        round_: int,
        vote_type: VoteType,
        validators: ValidatorSet,
    ) -> None:
        self.chain_id = chain_id
        self.height = height
        self.round = round_
        self.type = VoteType(vote_type)
        self.validators = validators
        # First vote of each validator: what "+2/3 for anything" counts.
        self._first: dict[bytes, Vote] = {}
        self._by_block: dict[bytes, dict[bytes, Vote]] = {}
        self._extra: dict[bytes, int] = {}
        self._majority: bytes | None = None
        self.conflicting_majority: bytes | None = None

    def add(
        self, vote: Vote, *, verified: bool = False
    ) -> tuple[bool, DuplicateVoteEvidence | None]:
        """Add ``vote``; return (counted, evidence). Raises ``Invalid`` for a vote that
        does not belong here or does not verify."""
        # The set is for one step of one round of one height.
        if (vote.type, vote.height, vote.round) != (self.type, self.height, self.round):
            raise Invalid(
                f"vote {vote.type}/{vote.height}/{vote.round} added to set "
                f"{int(self.type)}/{self.height}/{self.round}",
                "wrong_vote_set",
            )
        # Only producers of this height vote.
        if vote.validator not in self.validators:
            raise Invalid(f"vote from non-producer {vote.validator.hex()}", "unknown_validator")
        for_block = self._by_block.get(vote.block_hash)
        if for_block is not None and vote.validator in for_block:
            # A repeat (gossip, rebroadcast): nothing new, no signature work.
            return False, None
        first = self._first.get(vote.validator)
        evidence = None
        if first is not None:
            extra = self._extra.get(vote.validator, 0)
            if extra + 1 >= MAX_VOTES_PER_VALIDATOR:
                return False, None
            # Verify before accusing: a forged vote must never become evidence.
            if not verified:
                vote.verify(self.chain_id)
            self._extra[vote.validator] = extra + 1
            if extra == 0:
                evidence = DuplicateVoteEvidence.of(first, vote)
        else:
            if not verified:
                vote.verify(self.chain_id)
            self._first[vote.validator] = vote
        votes = self._by_block.setdefault(vote.block_hash, {})
        votes[vote.validator] = vote
        if len(votes) >= self.validators.quorum:
            if self._majority is None:
                self._majority = vote.block_hash
            elif self._majority != vote.block_hash:
                # Only possible with more than 1/3 faulty; the caller decides what to do.
                self.conflicting_majority = vote.block_hash
        return True, evidence

    def majority(self) -> bytes | None:
        """The block hash (``NIL`` for nil) with more than 2/3 of the votes, if any."""
        return self._majority

    def has_two_thirds_any(self) -> bool:
        """More than 2/3 of the producers voted, for anything."""
        return len(self._first) >= self.validators.quorum

    def count(self, block_hash: bytes) -> int:
        return len(self._by_block.get(block_hash, ()))

    def get(self, validator: bytes) -> Vote | None:
        """The first vote this validator sent here."""
        return self._first.get(validator)

    def __len__(self) -> int:
        return len(self._first)

    def votes_for(self, block_hash: bytes) -> list[Vote]:
        """The votes for one block (or nil), e.g. the proof of lock of a proposal."""
        return list(self._by_block.get(block_hash, {}).values())

    def all_votes(self) -> list[Vote]:
        """Every distinct vote held, conflicting ones included (for relaying)."""
        return [v for votes in self._by_block.values() for v in votes.values()]

    def make_commit(self) -> Commit:
        """The certificate: every precommit for the majority block, sorted by validator."""
        if self.type != VoteType.PRECOMMIT or not self._majority:
            raise NodeFault(f"no +2/3 precommits for a block at {self.height}/{self.round}")
        votes = self._by_block[self._majority]
        sigs = tuple(CommitSig(k, votes[k].signature) for k in sorted(votes))
        return Commit(self.height, self.round, self._majority, sigs)


class HeightVoteSet:
    """All prevotes and precommits of one height, by round."""

    def __init__(self, chain_id: str, height: int, validators: ValidatorSet) -> None:
        self.chain_id = chain_id
        self.height = height
        self.validators = validators
        self._sets: dict[tuple[int, VoteType], VoteSet] = {}
        self._voters: dict[int, set[bytes]] = {}
        self._rounds_of: dict[bytes, set[int]] = {}
        # First round seen with +2/3 precommits for one block: the block is decided.
        self.commit_round: int | None = None

    def get(self, round_: int, vote_type: VoteType) -> VoteSet | None:
        return self._sets.get((round_, vote_type))

    def majority(self, round_: int, vote_type: VoteType) -> bytes | None:
        vs = self._sets.get((round_, vote_type))
        return None if vs is None else vs.majority()

    def two_thirds_any(self, round_: int, vote_type: VoteType) -> bool:
        vs = self._sets.get((round_, vote_type))
        return vs is not None and vs.has_two_thirds_any()

    def add(
        self, vote: Vote, *, verified: bool = False
    ) -> tuple[bool, DuplicateVoteEvidence | None]:
        key = (vote.round, VoteType(vote.type))
        vs = self._sets.get(key)
        if vs is None:
            vs = VoteSet(self.chain_id, self.height, vote.round, key[1], self.validators)
        added, evidence = vs.add(vote, verified=verified)
        # Only keep a new set once a valid vote is in it, so junk cannot allocate rounds.
        self._sets.setdefault(key, vs)
        if added:
            self._voters.setdefault(vote.round, set()).add(vote.validator)
            self._rounds_of.setdefault(vote.validator, set()).add(vote.round)
            if key[1] == VoteType.PRECOMMIT:
                self._check_decided(vs)
        return added, evidence

    def _check_decided(self, vs: VoteSet) -> None:
        decided = vs.majority()
        if not decided:
            return
        if self.commit_round is None:
            self.commit_round = vs.round
            return
        first = self.majority(self.commit_round, VoteType.PRECOMMIT)
        # Two blocks with +2/3 precommits at one height: more than 1/3 are faulty.
        if decided != first or vs.conflicting_majority:
            raise NodeFault(
                f"height {self.height}: +2/3 precommits for two blocks "
                f"({first.hex() if first else '?'} and {decided.hex()}); refusing to go on"
            )

    def voters(self, round_: int) -> int:
        """Distinct producers with any vote in ``round_``."""
        return len(self._voters.get(round_, ()))

    def rounds_of(self, validator: bytes) -> set[int]:
        return self._rounds_of.get(validator, set())

    def rounds(self) -> list[int]:
        return sorted(self._voters)


def pol_votes(votes: HeightVoteSet, p: Proposal) -> list[Vote]:
    """The prevotes that justify a re-proposal (its proof of lock)."""
    if p.pol_round is None:
        return []
    vs = votes.get(p.pol_round, VoteType.PREVOTE)
    return [] if vs is None else vs.votes_for(p.block.hash)
