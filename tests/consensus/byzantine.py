"""Byzantine behaviours at the consensus engine's seams, for tests only.

Production code has no switch that makes a validator misbehave: the privval never
lets a conflicting signature out and the engine never sends one. A test that needs a
Byzantine producer signs with the producer's key directly and wraps the engine's
``Transport`` (the simulation in ``tests/sim``, the end-to-end entry point
``tests/e2e/byzantine.py``).
"""

from __future__ import annotations

from consensus import Transport
from consensus.bft import NIL, Peer
from consensus.messages import Message, Outgoing, Proposal, proposal_signing_body
from core import Block, Domain, PrivateKey, SignDomain, Vote, VoteType, hash_bytes


def conflicting_vote(key: PrivateKey, chain_id: str, vote: Vote) -> Vote:
    """A second vote of ``key`` at the step of ``vote``, for something else: nil for a
    block, a made-up block for nil. Together they are ``DuplicateVoteEvidence``."""
    other = NIL if vote.block_hash else hash_bytes(Domain.VOTE, b"equivocation" + vote.encode())
    return Vote.create(key, chain_id, VoteType(vote.type), vote.height, vote.round, other)


def sign_proposal(
    key: PrivateKey, chain_id: str, height: int, round_: int, pol_round: int | None, block: Block
) -> Proposal:
    """A proposal signed with ``key`` without the double-sign guard (a second proposal
    for a round is what an equivocating proposer sends)."""
    body = proposal_signing_body(height, round_, pol_round, block.hash)
    sig = key.sign(SignDomain.PROPOSAL, chain_id, body)
    return Proposal(height, round_, pol_round, block, key.public_key, sig)


class EquivocatingVotes:
    """A ``Transport`` that sends a conflicting twin after each own vote's first broadcast.

    The twin goes out once per vote (re-sends of the vote go alone), right after the
    vote itself; the engine never sees it, as a Byzantine producer's own engine would
    not. Twins are remembered for the highest height seen only.
    """

    def __init__(self, inner: Transport, key: PrivateKey, chain_id: str) -> None:
        self.inner = inner
        self.key = key
        self.chain_id = chain_id
        self._twinned: set[Vote] = set()
        self._height = 0

    def broadcast(self, msg: Message) -> None:
        self.inner.broadcast(msg)
        if not isinstance(msg, Vote) or msg.validator != self.key.public_key:
            return
        if msg.height > self._height:
            self._height = msg.height
            self._twinned.clear()
        if msg.height < self._height or msg in self._twinned:
            return
        self._twinned.add(msg)
        self.inner.broadcast(conflicting_vote(self.key, self.chain_id, msg))

    def send(self, peer: Peer, msg: Outgoing) -> None:
        self.inner.send(peer, msg)
