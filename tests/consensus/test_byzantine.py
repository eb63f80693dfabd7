"""The test-side equivocation (``tests/consensus/byzantine.py``): what it sends is
evidence the engine and staking accept, once per vote."""

from __future__ import annotations

from consensus.bft import NIL
from consensus.messages import DuplicateVoteEvidence
from core import VoteType
from tests.consensus.byzantine import EquivocatingVotes
from tests.consensus.helpers import CHAIN, ME, OTHERS, VALIDATORS, RecordingTransport, vote

PV = VoteType.PREVOTE
BLOCK = b"\x07" * 32


def test_each_own_vote_gets_one_conflicting_twin_that_is_evidence():
    inner = RecordingTransport()
    transport = EquivocatingVotes(inner, ME, CHAIN)
    for block_hash in (BLOCK, NIL):
        own = vote(ME, PV, 1, 0 if block_hash else 1, block_hash)
        transport.broadcast(own)
        # A re-send of the same vote goes alone.
        transport.broadcast(own)
        sent = [m for _, m in inner.sent[-3:]]
        assert sent[0] == own and sent[2] == own
        twin = sent[1]
        assert (twin.type, twin.height, twin.round) == (own.type, own.height, own.round)
        assert twin.block_hash != own.block_hash
        DuplicateVoteEvidence.of(own, twin).verify(CHAIN, VALIDATORS)


def test_others_votes_and_older_heights_get_no_twin():
    inner = RecordingTransport()
    transport = EquivocatingVotes(inner, ME, CHAIN)
    transport.broadcast(vote(OTHERS[0], PV, 2, 0, BLOCK))
    transport.broadcast(vote(ME, PV, 3, 0, BLOCK))
    transport.broadcast(vote(ME, PV, 2, 0, BLOCK))
    assert len(inner.sent) == 4
