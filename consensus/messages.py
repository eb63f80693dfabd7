"""Wire messages of BFT finality: proposals, sync messages, evidence and their envelope.

Votes are ``core.types.Vote``. Every message is a frozen ``Wire`` dataclass, so it
has exactly one encoding; what a signature covers is spelled out next to each type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from consensus.validators import ValidatorSet
from core import (
    Block,
    Commit,
    DecodeError,
    Invalid,
    InvalidSignature,
    MaxLen,
    PublicKey,
    Signature,
    SignDomain,
    Vote,
    Wire,
    array_header,
    pack_raw,
    verify,
)

# A proposal carries a whole block; leave room for the fields around it.
_MAX_BLOCK = Block.MAX_ENCODED
_ENVELOPE_SLACK = 64 * 1024


def proposal_signing_body(
    height: int, round_: int, pol_round: int | None, block_hash: bytes
) -> bytes:
    """What a proposer signs (after ``SignDomain.PROPOSAL || chain id``).

    The block is named by its hash, which commits to the header and so to the
    transactions through the tx root; ``None`` (msgpack nil) stands for "no
    proof-of-lock round" (-1 in the paper), so it can never collide with round 0.
    """
    return pack_raw([height, round_, pol_round, block_hash])


@dataclass(frozen=True, slots=True)
class Proposal(Wire):
    """The block the scheduled proposer of (height, round) puts forward.

    ``pol_round`` is the round of the proof of lock (+2/3 prevotes) the proposer
    saw for this block, or ``None`` for a fresh block (the paper's -1).
    """

    height: int
    round: int
    pol_round: int | None
    block: Block
    proposer: PublicKey
    signature: Signature

    MAX_ENCODED = _MAX_BLOCK + _ENVELOPE_SLACK

    def __post_init__(self) -> None:
        # A proof of lock always comes from an earlier round of the same height.
        if self.pol_round is not None and self.pol_round >= self.round:
            raise DecodeError(f"proposal pol_round {self.pol_round} must be < round {self.round}")

    @property
    def pol(self) -> int:
        """The proof-of-lock round with the paper's -1 for "none"."""
        return -1 if self.pol_round is None else self.pol_round

    @property
    def block_hash(self) -> bytes:
        return self.block.hash

    def signing_body(self) -> bytes:
        return proposal_signing_body(self.height, self.round, self.pol_round, self.block.hash)

    def verify(self, chain_id: str) -> None:
        """Raise ``InvalidSignature`` unless the proposer signed exactly this proposal."""
        verify(self.proposer, SignDomain.PROPOSAL, chain_id, self.signing_body(), self.signature)


@dataclass(frozen=True, slots=True)
class FinalizedBlock(Wire):
    """A committed block with its certificate, sent to a peer that is behind.

    ``latest`` is the sender's own last committed height, so the receiver knows
    whether to ask for the next one.
    """

    block: Block
    commit: Commit
    latest: int

    MAX_ENCODED = _MAX_BLOCK + _ENVELOPE_SLACK


@dataclass(frozen=True, slots=True)
class EncodedFinalizedBlock:
    """A ``FinalizedBlock`` as its sender holds it: the block and its certificate in
    their canonical encodings, as the store keeps them. Send-only: it goes on the wire
    as those bytes, so serving a stored block costs a read and a copy, not a decode
    and an encode (``encode_message``); the receiver decodes a ``FinalizedBlock``.
    The sender vouches that the bytes are the canonical encodings of a block and the
    certificate for it (``storage.ChainStore.get_encoded_block`` checks them)."""

    block: bytes
    commit: bytes
    latest: int

    def encode(self) -> bytes:
        """What ``FinalizedBlock(Block.decode(block), Commit.decode(commit), latest)``
        encodes to (a fixed-order array: its fields' encodings in a row)."""
        return b"".join((array_header(3), self.block, self.commit, pack_raw(self.latest)))


@dataclass(frozen=True, slots=True)
class SyncRequest(Wire):
    """Ask a peer for the finalized block at ``height`` (or, at its current height,
    for the proposal of ``block_hash`` when that is not empty)."""

    height: int
    block_hash: Annotated[bytes, MaxLen(32)]

    MAX_ENCODED = 128


class InvalidEvidence(Invalid):
    code = "invalid_evidence"


@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence(Wire):
    """Two votes by one validator for different blocks at one (height, round, type).

    The pair is stored in a canonical order (``vote_a.block_hash < vote_b.block_hash``,
    nil sorting first) so the same misbehaviour has exactly one encoding and hash,
    whichever order a node saw the votes in.
    """

    vote_a: Vote
    vote_b: Vote

    MAX_ENCODED = 1024

    def __post_init__(self) -> None:
        a, b = self.vote_a, self.vote_b
        if (a.validator, a.type, a.height, a.round) != (b.validator, b.type, b.height, b.round):
            raise DecodeError("evidence votes must share validator, type, height and round")
        if not a.block_hash < b.block_hash:
            raise DecodeError("evidence votes must differ and be ordered by block hash")

    @classmethod
    def of(cls, first: Vote, second: Vote) -> DuplicateVoteEvidence:
        """Build the canonical evidence from two conflicting votes in any order."""
        a, b = sorted((first, second), key=lambda v: v.block_hash)
        return cls(a, b)

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height

    def verify(self, chain_id: str, validators: ValidatorSet) -> None:
        """Raise ``InvalidEvidence`` unless this proves a producer of ``validators`` equivocated."""
        # Only a producer of that height can be held to account for its votes.
        if self.validator not in validators:
            raise InvalidEvidence(f"evidence names non-producer {self.validator.hex()}")
        for vote in (self.vote_a, self.vote_b):
            try:
                vote.verify(chain_id)
            except InvalidSignature as exc:
                # Forged votes must never get an honest producer slashed.
                raise InvalidEvidence(
                    f"evidence vote for {vote.block_hash.hex() or 'nil'} does not verify"
                ) from exc


Message = Proposal | Vote | FinalizedBlock | SyncRequest
# What the engine sends: a message, or a finalized block it holds encoded.
Outgoing = Message | EncodedFinalizedBlock


@dataclass(frozen=True, slots=True)
class ConsensusMessage(Wire):
    """The one frame type consensus puts on the network: exactly one field is set."""

    proposal: Proposal | None = None
    vote: Vote | None = None
    finalized: FinalizedBlock | None = None
    sync_request: SyncRequest | None = None

    MAX_ENCODED = _MAX_BLOCK + 2 * _ENVELOPE_SLACK

    def __post_init__(self) -> None:
        # Exactly one payload, so an envelope has one meaning and one encoding.
        present = sum(
            x is not None for x in (self.proposal, self.vote, self.finalized, self.sync_request)
        )
        if present != 1:
            raise DecodeError(f"consensus message must carry exactly one payload, got {present}")

    @classmethod
    def wrap(cls, msg: Message) -> ConsensusMessage:
        if isinstance(msg, Proposal):
            return cls(proposal=msg)
        if isinstance(msg, Vote):
            return cls(vote=msg)
        if isinstance(msg, FinalizedBlock):
            return cls(finalized=msg)
        if isinstance(msg, SyncRequest):
            return cls(sync_request=msg)
        raise TypeError(f"not a consensus message: {type(msg).__name__}")

    def held_items(self) -> int:
        """Objects decoding made beside the bytes: a block's transactions, of a number
        the sender chose (``p2p.messages.held_bytes``)."""
        block = (
            self.proposal.block
            if self.proposal is not None
            else self.finalized.block
            if self.finalized is not None
            else None
        )
        return 0 if block is None else len(block.txs)

    def unwrap(self) -> Message:
        for msg in (self.proposal, self.vote, self.finalized, self.sync_request):
            if msg is not None:
                return msg
        raise AssertionError("unreachable: __post_init__ guarantees one payload")


# ``ConsensusMessage`` carrying a finalized block: its array header and the nil
# payloads around the block's (proposal and vote before it, the request after it).
_NIL = pack_raw(None)
_FINALIZED_HEAD = array_header(4) + _NIL + _NIL


def encode_message(msg: Outgoing) -> bytes:
    """The ``ConsensusMessage`` encoding of ``msg``: what goes on the wire. A finalized
    block held encoded goes in as its bytes are (they are what ``ConsensusMessage.wrap``
    of its decoded form encodes to)."""
    if isinstance(msg, EncodedFinalizedBlock):
        return b"".join((_FINALIZED_HEAD, msg.encode(), _NIL))
    return ConsensusMessage.wrap(msg).encode()
