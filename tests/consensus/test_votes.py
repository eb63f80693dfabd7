"""Vote sets: quorum math, duplicates, equivocation and evidence, certificates."""

from __future__ import annotations

import pytest

from consensus import ValidatorSet, verify_commit
from consensus.bft import MAX_VOTES_PER_VALIDATOR, NIL, HeightVoteSet, VoteSet, one_third_plus
from consensus.messages import DuplicateVoteEvidence, InvalidEvidence
from core import Invalid, InvalidSignature, NodeFault, PrivateKey, Vote, VoteType
from tests.consensus.helpers import CHAIN, KEYS, VALIDATORS, vote

PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
A = b"\xaa" * 32
B = b"\xbb" * 32


def vs(vote_type=PV, round_=0) -> VoteSet:
    return VoteSet(CHAIN, 1, round_, vote_type, VALIDATORS)


@pytest.mark.parametrize("n", range(1, 11))
def test_quorum_is_the_smallest_count_above_two_thirds(n):
    vset = ValidatorSet.of(bytes([i]) * 32 for i in range(n))
    q = vset.quorum
    assert 3 * q > 2 * n and 3 * (q - 1) <= 2 * n
    w = one_third_plus(n)
    assert 3 * w > n and 3 * (w - 1) <= n
    # Two quorums always share more than 1/3: at least one honest validator.
    assert 2 * q - n >= w


def test_majority_needs_a_quorum_for_one_value():
    s = vs()
    s.add(vote(KEYS[0], PV, 1, 0, A))
    s.add(vote(KEYS[1], PV, 1, 0, A))
    s.add(vote(KEYS[2], PV, 1, 0, NIL))
    assert s.majority() is None and s.has_two_thirds_any()
    s.add(vote(KEYS[3], PV, 1, 0, A))
    assert s.majority() == A and s.count(A) == 3


def test_majority_for_nil():
    s = vs()
    for k in KEYS[:3]:
        s.add(vote(k, PV, 1, 0, NIL))
    assert s.majority() == NIL


def test_repeats_count_once_without_signature_work(monkeypatch):
    s = vs()
    v = vote(KEYS[0], PV, 1, 0, A)
    assert s.add(v) == (True, None)
    monkeypatch.setattr(Vote, "verify", lambda self, chain: pytest.fail("verified a repeat"))
    assert s.add(v) == (False, None)
    assert s.count(A) == 1 and len(s) == 1


def test_conflicting_vote_gives_evidence_once_and_counts_for_its_value():
    s = vs()
    first = vote(KEYS[0], PV, 1, 0, A)
    second = vote(KEYS[0], PV, 1, 0, B)
    s.add(first)
    added, ev = s.add(second)
    assert added and ev == DuplicateVoteEvidence.of(first, second)
    ev.verify(CHAIN, VALIDATORS)
    # "+2/3 for anything" still counts the validator once.
    assert len(s) == 1 and s.get(KEYS[0].public_key) == first
    # As in the paper, each value counts the validators that voted for it.
    assert s.count(A) == 1 and s.count(B) == 1
    assert s.add(vote(KEYS[0], PV, 1, 0, NIL))[1] is None


def test_conflicting_votes_per_validator_are_capped():
    s = vs()
    hashes = [bytes([i]) * 32 for i in range(1, MAX_VOTES_PER_VALIDATOR + 3)]
    for h in hashes:
        s.add(vote(KEYS[0], PV, 1, 0, h))
    assert sum(s.count(h) for h in hashes) == MAX_VOTES_PER_VALIDATOR


def test_forged_conflicting_vote_is_not_evidence():
    s = vs()
    s.add(vote(KEYS[0], PV, 1, 0, A))
    real = vote(KEYS[1], PV, 1, 0, B)
    forged = Vote(real.type, 1, 0, B, KEYS[0].public_key, real.signature)
    with pytest.raises(InvalidSignature):
        s.add(forged)


def test_bad_signature_and_strangers_are_rejected():
    s = vs()
    stranger = PrivateKey(b"\x77" * 32)
    with pytest.raises(Invalid) as exc:
        s.add(vote(stranger, PV, 1, 0, A))
    assert exc.value.code == "unknown_validator"
    good = vote(KEYS[1], PV, 1, 0, A)
    with pytest.raises(InvalidSignature):
        s.add(Vote(good.type, 1, 0, A, KEYS[2].public_key, good.signature))
    with pytest.raises(Invalid):
        s.add(vote(KEYS[1], PC, 1, 0, A))  # wrong type for this set
    assert len(s) == 0


def test_commit_is_sorted_and_verifies():
    s = vs(PC, 2)
    for k in reversed(KEYS):
        s.add(vote(k, PC, 1, 2, A if k != KEYS[0] else NIL))
    commit = s.make_commit()
    signers = [x.validator for x in commit.signatures]
    assert signers == sorted(signers) and len(signers) == 3
    assert (commit.height, commit.round, commit.block_hash) == (1, 2, A)
    verify_commit(commit, CHAIN, 1, A, VALIDATORS)


def test_no_commit_without_block_majority():
    s = vs(PC)
    for k in KEYS[:3]:
        s.add(vote(k, PC, 1, 0, NIL))
    with pytest.raises(NodeFault):
        s.make_commit()


def test_height_vote_set_tracks_rounds_and_decision():
    hv = HeightVoteSet(CHAIN, 1, VALIDATORS)
    hv.add(vote(KEYS[0], PV, 1, 3, NIL))
    hv.add(vote(KEYS[0], PC, 1, 3, NIL))
    hv.add(vote(KEYS[1], PV, 1, 3, NIL))
    assert hv.voters(3) == 2 and hv.rounds() == [3]
    assert hv.rounds_of(KEYS[0].public_key) == {3}
    assert hv.commit_round is None
    for k in KEYS[:3]:
        hv.add(vote(k, PC, 1, 1, A))
    assert hv.commit_round == 1


def test_two_decided_blocks_are_a_fault():
    hv = HeightVoteSet(CHAIN, 1, VALIDATORS)
    for k in KEYS[:3]:
        hv.add(vote(k, PC, 1, 0, A))
    with pytest.raises(NodeFault):
        for k in KEYS[1:]:
            hv.add(vote(k, PC, 1, 1, B))


# --- evidence ------------------------------------------------------------------------


def test_evidence_is_canonical_whatever_the_order():
    a, b = vote(KEYS[1], PC, 4, 2, A), vote(KEYS[1], PC, 4, 2, NIL)
    e1, e2 = DuplicateVoteEvidence.of(a, b), DuplicateVoteEvidence.of(b, a)
    assert e1 == e2 and e1.encode() == e2.encode()
    assert DuplicateVoteEvidence.decode(e1.encode()) == e1
    assert (e1.validator, e1.height) == (KEYS[1].public_key, 4)


def test_evidence_shape_is_checked():
    a = vote(KEYS[1], PC, 4, 2, A)
    with pytest.raises(Invalid):
        DuplicateVoteEvidence(a, a)  # same vote
    with pytest.raises(Invalid):
        DuplicateVoteEvidence.of(a, vote(KEYS[2], PC, 4, 2, B))  # two validators
    with pytest.raises(Invalid):
        DuplicateVoteEvidence.of(a, vote(KEYS[1], PC, 4, 3, B))  # two rounds
    with pytest.raises(Invalid):
        DuplicateVoteEvidence.of(a, vote(KEYS[1], PV, 4, 2, B))  # two types


def test_evidence_with_forged_vote_or_stranger_does_not_verify():
    a = vote(KEYS[1], PC, 4, 2, A)
    donor = vote(KEYS[2], PC, 4, 2, B)
    forged = Vote(donor.type, 4, 2, B, KEYS[1].public_key, donor.signature)
    with pytest.raises(InvalidEvidence):
        DuplicateVoteEvidence.of(a, forged).verify(CHAIN, VALIDATORS)
    stranger = PrivateKey(b"\x55" * 32)
    ev = DuplicateVoteEvidence.of(vote(stranger, PC, 4, 2, A), vote(stranger, PC, 4, 2, B))
    with pytest.raises(InvalidEvidence):
        ev.verify(CHAIN, VALIDATORS)
    with pytest.raises(InvalidEvidence):
        DuplicateVoteEvidence.of(a, vote(KEYS[1], PC, 4, 2, B)).verify("other", VALIDATORS)


@pytest.mark.parametrize(
    "change",
    [
        {"signature": bytes(64)},
        {"round": 1},
        {"height": 2},
        {"type": int(PC)},
        {"block_hash": B},
        {"validator": KEYS[1].public_key},
        # Equal to the verified vote's fields under ==, but signed bytes differ.
        {"height": 1.0},
        {"height": True},
        {"round": -0.0},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}"[:24],
)
def test_a_vote_that_verified_vouches_for_no_other(change):
    # Votes that verified once are not checked again; every field and the chain id
    # decide whether a vote is that same vote.
    good = vote(KEYS[0], PV, 1, 0, A)
    good.verify(CHAIN)
    good.verify(CHAIN)
    other = Vote(**{**{f: getattr(good, f) for f in Vote.__dataclass_fields__}, **change})
    with pytest.raises(InvalidSignature):
        other.verify(CHAIN)
    with pytest.raises(InvalidSignature):
        good.verify(CHAIN + "-other")
