"""Double-sign evidence: anyone submits, the offender is slashed and jailed exactly once."""

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import GenesisStaking
from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.staking import UNBOND, Unbond
from consensus.staking_state import (
    COMMUNITY_POOL,
    EvidenceRecord,
    Unbonding,
    evidence_key,
    get_totals,
    producer_set,
    producers_for_height,
    read,
)
from core import Vote, VoteType
from tests.consensus.staking_helpers import (
    ADDR,
    CHAIN,
    KEYS,
    PARAMS,
    PUB,
    SELF_BOND,
    Chain,
    add_candidate,
    check_invariants,
    make_genesis,
)
from vm import Event

H1, H2, H3 = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


def pair(key=KEYS[1], height=2, round_=0, vote_type=VoteType.PREVOTE, a=H1, b=H2, chain_id=CHAIN):
    return SubmitEvidence(
        Vote.create(key, chain_id, vote_type, height, round_, a),
        Vote.create(key, chain_id, vote_type, height, round_, b),
    )


def test_evidence_slashes_bond_and_unbonding_and_jails():
    chain = Chain()
    assert chain.run(KEYS[1], UNBOND, Unbond(200)).ok  # height 1: bond 800, unbonding 200
    chain.advance_to(3)
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, pair())  # height 4, by a non-member
    assert receipt.ok, receipt
    # 10% of 800 and of 200.
    assert receipt.events == (
        Event.of(
            "double_sign",
            validator=PUB[1],
            height=2,
            round=0,
            vote_type=1,
            slashed=100,
            jailed_until=4 + PARAMS.jail_blocks,
            reporter=ADDR[7],
        ),
    )
    staker = chain.staker(ADDR[1])
    assert staker.bonded == 720
    assert staker.unbonding == (Unbonding(180, 1 + PARAMS.unbonding_blocks),)
    assert chain.candidate(PUB[1]).weight == 720
    cand = chain.candidate(PUB[1])
    assert cand.jailed and cand.jailed_until == 4 + PARAMS.jail_blocks
    assert chain.balance(COMMUNITY_POOL) == 100 == get_totals(chain.state).slashed
    record = read(chain.state, evidence_key(PUB[1], 2, 0, VoteType.PREVOTE), EvidenceRecord)
    assert record == EvidenceRecord(4, 100)
    check_invariants(chain.state, chain.genesis.total_supply)
    # The slashed unbonding entry pays out what is left, once the offender can no longer
    # be slashed: the election at height 4 ran before the evidence and kept it for epoch
    # 1, which it may sign up to its last height (8), evidence of which lands until 12.
    chain.advance_to(1 + PARAMS.unbonding_blocks)
    held = Event.of("unbonding_held", staker=ADDR[1], amount=180, release_height=13)
    assert held in chain.last.begin_events
    assert PARAMS.max_evidence_age_blocks == 4 and 13 == 2 * PARAMS.epoch_length + 4 + 1
    assert chain.staker(ADDR[1]).unbonding == (Unbonding(180, 13),)
    chain.advance_to(13)
    assert Event.of("unbonded", staker=ADDR[1], amount=180) in chain.last.begin_events
    assert chain.staker(ADDR[1]).unbonding == ()
    check_invariants(chain.state, chain.genesis.total_supply)


def test_the_same_offence_is_punished_once():
    chain = Chain()
    chain.advance_to(3)
    assert chain.run(KEYS[7], SUBMIT_EVIDENCE, pair()).ok
    message = f"offence of {PUB[1].hex()} at height 2 round 0 was already punished"
    # The same pair, the pair swapped, and another conflicting pair for the same step.
    evidence = (pair(), pair(a=H2, b=H1), pair(a=H3, b=H1))
    chain.block(*(chain.tx(KEYS[7], SUBMIT_EVIDENCE, e) for e in evidence))
    for receipt in chain.last.receipts:
        assert (receipt.code, receipt.message) == ("duplicate_evidence", message)
    assert chain.staker(ADDR[1]).bonded == 900
    # Another step is another offence.
    assert chain.run(KEYS[7], SUBMIT_EVIDENCE, pair(round_=1)).ok
    assert chain.staker(ADDR[1]).bonded == 810
    check_invariants(chain.state, chain.genesis.total_supply)


def test_nil_vote_against_a_block_vote_is_evidence():
    chain = Chain()
    chain.advance_to(3)
    assert chain.run(KEYS[7], SUBMIT_EVIDENCE, pair(vote_type=VoteType.PRECOMMIT, a=b"")).ok
    assert chain.candidate(PUB[1]).jailed


def _refused(chain, evidence):
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, evidence)
    return receipt.code, receipt.message


@pytest.mark.parametrize(
    "evidence, code, message",
    [
        (
            SubmitEvidence(
                Vote.create(KEYS[1], CHAIN, VoteType.PREVOTE, 2, 0, H1),
                Vote.create(KEYS[2], CHAIN, VoteType.PREVOTE, 2, 0, H2),
            ),
            "invalid_evidence",
            f"votes are by {PUB[1].hex()} and {PUB[2].hex()}, expected one validator",
        ),
        (
            SubmitEvidence(
                Vote.create(KEYS[1], CHAIN, VoteType.PREVOTE, 2, 0, H1),
                Vote.create(KEYS[1], CHAIN, VoteType.PRECOMMIT, 2, 0, H2),
            ),
            "invalid_evidence",
            "votes are for (height, round, type) (2, 0, 1) and (2, 0, 2), expected the same",
        ),
        (
            pair(b=H1),
            "invalid_evidence",
            f"both votes are for block {H1.hex()}, expected different blocks",
        ),
        (pair(height=0), "invalid_evidence", "vote height must be at least 1, got 0"),
        (pair(height=4), "future_evidence", "vote height 4, expected below the including height 4"),
        (pair(key=KEYS[5]), "not_a_producer", f"{PUB[5].hex()} was not a producer at height 2"),
        (
            pair(chain_id="other-chain"),
            "bad_evidence_signature",
            f"vote for block {H1.hex()} has a bad signature for chain 'staking-test'",
        ),
    ],
)
def test_evidence_refusals(evidence, code, message):
    chain = Chain()
    chain.advance_to(3)
    assert _refused(chain, evidence) == (code, message)
    assert not chain.candidate(PUB[1]).jailed
    assert chain.staker(ADDR[1]).bonded == SELF_BOND


def test_evidence_too_old():
    chain = Chain()
    chain.advance_to(2 + PARAMS.max_evidence_age_blocks)
    age = PARAMS.max_evidence_age_blocks + 1
    assert _refused(chain, pair()) == (
        "evidence_too_old",
        f"evidence is {age} blocks old, at most {PARAMS.max_evidence_age_blocks} accepted",
    )
    # One block younger is still accepted.
    chain2 = Chain()
    chain2.advance_to(1 + PARAMS.max_evidence_age_blocks)
    assert chain2.run(KEYS[7], SUBMIT_EVIDENCE, pair()).ok


def test_a_forged_second_vote_is_refused():
    chain = Chain()
    chain.advance_to(3)
    good = pair()
    forged = Vote(good.vote_b.type, 2, 0, H3, PUB[1], good.vote_b.signature)
    assert _refused(chain, SubmitEvidence(good.vote_a, forged)) == (
        "bad_evidence_signature",
        f"vote for block {H3.hex()} has a bad signature for chain 'staking-test'",
    )


def _minimal_bond_chain(bps: int = 500, self_bond: int = 1) -> Chain:
    """Default-like accountability: min_self_bond 1, genesis self-bond ``self_bond``."""
    params = PARAMS.replace(min_self_bond=1, slash_bps=bps)
    return Chain(replace(make_genesis(params=params), staking=GenesisStaking(self_bond)))


def test_slashing_rounds_up_so_a_minimal_bond_loses_something():
    # 5% of a bond of 1 rounded down was 0: double signing cost nothing.
    chain = _minimal_bond_chain()
    chain.advance_to(3)
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, pair())
    assert receipt.ok, receipt
    assert receipt.events[0].get("slashed") == "1"
    assert chain.staker(ADDR[1]).bonded == 0
    assert get_totals(chain.state).slashed == 1 == chain.balance(COMMUNITY_POOL)
    check_invariants(chain.state, chain.genesis.total_supply)


def test_slashing_takes_at_least_one_from_each_unbonding_entry():
    chain = _minimal_bond_chain(self_bond=20)
    assert chain.run(KEYS[1], UNBOND, Unbond(19)).ok  # bond 1, one entry of 19
    chain.advance_to(3)
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, pair())
    # ceil(5% of 1) + ceil(5% of 19) = 1 + 1.
    assert receipt.events[0].get("slashed") == "2"
    assert chain.staker(ADDR[1]).bonded == 0
    assert chain.staker(ADDR[1]).unbonding == (Unbonding(18, 1 + PARAMS.unbonding_blocks),)
    check_invariants(chain.state, chain.genesis.total_supply)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bps=st.integers(1, 10_000),
    self_bond=st.integers(1, 5_000),
    unbond=st.integers(0, 5_000),
)
def test_slashing_always_takes_a_positive_amount_no_more_than_held(bps, self_bond, unbond):
    chain = _minimal_bond_chain(bps=bps, self_bond=self_bond)
    unbond = min(unbond, self_bond)
    if unbond:
        assert chain.run(KEYS[1], UNBOND, Unbond(unbond)).ok
    chain.advance_to(3)
    before = chain.staker(ADDR[1])
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, pair())
    assert receipt.ok, receipt
    slashed = int(receipt.events[0].get("slashed"))
    held = before.bonded + before.unbonding_total
    assert 1 <= slashed <= held
    after = chain.staker(ADDR[1])
    assert after.bonded + after.unbonding_total == held - slashed
    check_invariants(chain.state, chain.genesis.total_supply)


def test_a_producer_unbonding_as_it_is_elected_is_slashed_for_its_epochs_last_block():
    # The worst timing for the chain: a producer unbonds its whole bond in the block
    # that elects it (height 4, after the election ran), produces the next epoch (5..8)
    # and double-signs in its last block; evidence comes at the oldest age accepted.
    # The release must come later (docs/staking.md, Accountability): with
    # unbonding_blocks at epoch_length + max_evidence_age_blocks or less, the bond had
    # left at height 4 + unbonding_blocks and the offence cost nothing.
    chain = Chain()
    chain.advance_to(3)
    assert chain.run(KEYS[1], UNBOND, Unbond(SELF_BOND)).ok  # height 4
    assert PUB[1] in producers_for_height(chain.state, 2 * PARAMS.epoch_length).keys
    offence = 2 * PARAMS.epoch_length
    chain.advance_to(offence + PARAMS.max_evidence_age_blocks - 1)
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, pair(height=offence))
    assert receipt.ok, receipt
    slashed = dict((a.key, a.value) for a in receipt.events[0].attrs)["slashed"]
    assert int(slashed) == SELF_BOND * PARAMS.slash_bps // 10_000
    check_invariants(chain.state, chain.genesis.total_supply)


def test_a_producer_carried_over_by_a_failed_election_stays_slashable():
    # Every producer unbonds its whole self-bond in block 1 (due at 10). No candidate is
    # eligible any more, so the elections at 4 and 8 carry the set over: they produce
    # epoch 2 (9..12) with their bonds on the way out. One double-signs at height 11.
    # Before the hold, the bonds were paid back at 10 and the evidence slashed nothing.
    e, age = PARAMS.epoch_length, PARAMS.max_evidence_age_blocks
    chain = Chain()
    chain.block(*(chain.tx(KEYS[i], UNBOND, Unbond(SELF_BOND)) for i in range(3)))
    due = 1 + PARAMS.unbonding_blocks
    chain.advance_to(due)
    assert producer_set(chain.state, 2).keys == tuple(sorted(PUB[:3]))
    assert chain.staker(ADDR[1]).unbonding_total == SELF_BOND
    # Their last term is epoch 2 (the set carried at 8): held until its last height + age.
    held = Event.of(
        "unbonding_held", staker=ADDR[1], amount=SELF_BOND, release_height=3 * e + age + 1
    )
    assert held in chain.last.begin_events
    chain.advance_to(11)
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, pair(height=11))
    assert receipt.ok, receipt
    assert receipt.events[0].get("slashed") == str(SELF_BOND * PARAMS.slash_bps // 10_000)
    check_invariants(chain.state, chain.genesis.total_supply)
    # A candidate with a self-bond comes: the next election elects it alone, and the old
    # producers' stake is paid back once their last carried epoch is out of evidence reach.
    add_candidate(chain, 3)
    election = (chain.height // e + 1) * e
    chain.advance_to(election)
    last_term = election // e - 1
    assert producer_set(chain.state, last_term + 1).keys == (PUB[3],)
    assert PUB[0] in producer_set(chain.state, last_term).keys
    release = (last_term + 1) * e + age + 1
    chain.advance_to(release - 1)
    assert chain.staker(ADDR[0]).unbonding == (Unbonding(SELF_BOND, release),)
    before = chain.balance(ADDR[0])
    chain.block()
    assert Event.of("unbonded", staker=ADDR[0], amount=SELF_BOND) in chain.last.begin_events
    assert chain.balance(ADDR[0]) == before + SELF_BOND
    assert chain.staker(ADDR[0]).unbonding == ()
    check_invariants(chain.state, chain.genesis.total_supply)
