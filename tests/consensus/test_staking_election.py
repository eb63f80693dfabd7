"""Elections at epoch boundaries and missed-slot jailing."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import producer_set, producers_for_height, record_missed
from consensus.election import NEWCOMERS_PER_ELECTION, elect, rank_candidates
from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.governance import (
    PROPOSE_ADMIT_MEMBER,
    PROPOSE_PARAM_CHANGE,
    PROPOSE_REMOVE_MEMBER,
    ProposeAdmitMember,
    ProposeParamChange,
    ProposeRemoveMember,
)
from consensus.staking import (
    BOND,
    REGISTER_CANDIDATE,
    UNBOND,
    VOTE_PRODUCERS,
    Bond,
    RegisterCandidate,
    Unbond,
    VoteProducers,
)
from consensus.staking_state import MAX_SETS_DROPPED_PER_ELECTION, Candidate, candidate_key
from consensus.validators import ValidatorSet
from core import Vote, VoteType
from tests.consensus.staking_helpers import (
    CHAIN,
    KEYS,
    PARAMS,
    PUB,
    SELF_BOND,
    Chain,
    add_candidate,
    check_invariants,
    make_genesis,
    pass_proposal,
    set_candidate,
    set_params,
)
from vm import Event, Overlay

E = PARAMS.epoch_length


def next_election(chain: Chain) -> int:
    """Run blocks through the next election height; returns the epoch it elected."""
    height = (chain.height // E + 1) * E
    chain.advance_to(height)
    return height // E


def elected(chain: Chain, epoch: int) -> tuple[bytes, ...]:
    record = producer_set(chain.state, epoch)
    assert record is not None
    return record.keys


def test_unchanged_votes_reelect_the_genesis_producers():
    chain = Chain()
    epoch = next_election(chain)
    assert epoch == 1
    assert elected(chain, 1) == tuple(sorted(PUB[:3]))
    event = Event.of(
        "producers_elected", epoch=1, producers=3, set_hash=ValidatorSet.of(PUB[:3]).hash
    )
    assert event in chain.last.begin_events
    record = producer_set(chain.state, 1)
    assert record.elected_height == E and record.weights == (SELF_BOND,) * 3
    # The first block of epoch 1 is answerable from the state after the last of epoch 0.
    assert producers_for_height(chain.state, E + 1) == ValidatorSet.of(PUB[:3])


def test_top_n_with_ties_broken_by_lower_key():
    chain = Chain()
    for i in (3, 4):
        add_candidate(chain, i)
    # Five candidates, all with weight SELF_BOND: the lowest keys win, but of a set of
    # three at most one newcomer (``NEWCOMERS_PER_ELECTION``): a second gives its place to
    # the outgoing producer with the lowest key left out.
    ranked = rank_candidates(chain.state, chain.params())
    assert [k for k, _ in ranked] == sorted(PUB[:5])
    incumbents = [k for k in sorted(PUB[:5]) if k in PUB[:3]]
    newcomers = [k for k in sorted(PUB[:5]) if k not in PUB[:3]]
    top = sorted(PUB[:5])[:3]
    new_in_top = [k for k in top if k in newcomers]
    expected = top if len(new_in_top) <= 1 else [*new_in_top[:1], *incumbents[:2]]
    epoch = next_election(chain)
    assert elected(chain, epoch) == tuple(sorted(expected))
    check_invariants(chain.state, chain.genesis.total_supply)


def test_an_election_takes_in_no_more_newcomers_than_the_set_tolerates_faults():
    # Stake could elect members that registered, bonded and went dormant: with a third
    # of the set theirs, no quorum, no block, no missed-slot jailing, the chain stopped
    # for good. Of a set of three, one newcomer an election: the outgoing producers keep
    # their quorum, and the newcomers outranking them come in one by one.
    chain = Chain()
    # Members 3 and 4 bond the minimum: ranked below every genesis producer.
    add_candidate(chain, 3, self_bond=PARAMS.min_self_bond)
    add_candidate(chain, 4, self_bond=PARAMS.min_self_bond)
    whale = KEYS[6]
    chain.block(
        chain.tx(whale, BOND, Bond(100 * SELF_BOND)),
        chain.tx(whale, VOTE_PRODUCERS, VoteProducers(tuple(sorted(PUB[3:5])))),
    )
    assert all(r.ok for r in chain.last.receipts), chain.last.receipts
    # Both now outrank every genesis producer: before, both entered at one election.
    ranked = [k for k, _ in rank_candidates(chain.state, chain.params())]
    assert set(ranked[:2]) == set(PUB[3:5])
    before = set(producers_for_height(chain.state, chain.height + 1).keys)
    assert before.isdisjoint(PUB[3:5])
    epoch = next_election(chain)
    got = set(elected(chain, epoch))
    assert len(got) == 3 and len(got - before) == 1
    epoch = next_election(chain)
    assert set(elected(chain, epoch)) >= set(PUB[3:5])


def test_votes_move_the_producer_set_at_the_next_epoch():
    chain = Chain()
    for i in (3, 4):
        add_candidate(chain, i)
    outsider = max(PUB[:5])
    assert outsider not in elected(chain, next_election(chain))
    assert chain.run(KEYS[6], BOND, Bond(5_000)).ok
    assert chain.run(KEYS[6], VOTE_PRODUCERS, VoteProducers((outsider,))).ok
    epoch = next_election(chain)
    assert outsider in elected(chain, epoch)
    assert producer_set(chain.state, epoch).weights[elected(chain, epoch).index(outsider)] == 6_000
    # The set takes over with the epoch's first block, not before.
    first = epoch * E + 1
    assert outsider not in producers_for_height(chain.state, first - 1)
    assert outsider in producers_for_height(chain.state, first)
    # A ballot cast in the election block itself counts at the following election.
    chain.advance_to((epoch + 1) * E - 1)
    chain.block(chain.tx(KEYS[6], VOTE_PRODUCERS, VoteProducers(())))
    assert outsider in elected(chain, epoch + 1)
    assert outsider not in elected(chain, next_election(chain))


def test_ineligible_candidates_are_skipped():
    chain = Chain()
    for i in (3, 4, 5):
        add_candidate(chain, i, self_bond=2 * SELF_BOND)
    # 3: jailed; 4: below the minimum self-bond; 5: no longer a member.
    set_candidate(chain.state, PUB[3], jailed=True, jailed_until=10**6)
    assert chain.run(KEYS[4], UNBOND, Unbond(2 * SELF_BOND - PARAMS.min_self_bond + 1)).ok
    assert chain.run(KEYS[6], BOND, Bond(10 * SELF_BOND)).ok
    assert chain.run(KEYS[6], VOTE_PRODUCERS, VoteProducers(tuple(sorted(PUB[3:6])))).ok
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[5]))
    epoch = next_election(chain)
    assert elected(chain, epoch) == tuple(sorted(PUB[:3]))


def test_candidates_without_approval_are_not_elected():
    chain = Chain()
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[3], "m3"))
    assert chain.run(KEYS[3], REGISTER_CANDIDATE, RegisterCandidate()).ok
    assert chain.run(KEYS[3], BOND, Bond(SELF_BOND)).ok
    # Only two genesis producers are left eligible; the weightless candidate stays out.
    set_candidate(chain.state, PUB[0], jailed=True, jailed_until=10**6)
    epoch = next_election(chain)
    assert elected(chain, epoch) == tuple(sorted(PUB[1:3]))


def test_no_eligible_candidate_carries_the_set_over():
    chain = Chain()
    for i in range(3):
        set_candidate(chain.state, PUB[i], jailed=True, jailed_until=10**6)
    epoch = next_election(chain)
    assert elected(chain, epoch) == tuple(sorted(PUB[:3]))
    assert Event.of("election_failed", epoch=epoch) in chain.last.begin_events


# --- missed slots ---


def test_record_missed_counts_and_jails_over_the_limit():
    chain = Chain()
    chain.advance_to(E)  # the producers of epoch 1 are elected
    state = Overlay(chain.state)
    expected = PUB[:3]
    # Three producers: a quorum is all of them, so every proposer's omissions count.
    for height, proposer in ((2, PUB[0]), (3, PUB[1])):
        assert record_missed(state, height, expected, {PUB[0], PUB[1]}, proposer, PARAMS) == []
    assert record_missed(state, 4, expected, {PUB[0], PUB[1]}, PUB[0], PARAMS) == [PUB[2]]
    events = [Event.decode(e) for e in state.take_events()]
    assert events[-2:] == [
        Event.of("missed_slot", candidate=PUB[2], height=3, proposer=PUB[0], charged=3),
        Event.of(
            "jailed",
            candidate=PUB[2],
            reason="missed_slots",
            missed=3,
            charged=3,
            jailed_until=4 + PARAMS.jail_blocks,
        ),
    ]
    cand = state.get_obj(candidate_key(PUB[2]), Candidate)
    # Counted per proposer, in the order of the sorted producer set.
    rows = {k: i for i, k in enumerate(sorted(expected))}
    assert cand.missed_by[rows[PUB[0]]] == 2 and cand.missed_by[rows[PUB[1]]] == 1
    # A new epoch restarts the counts; a jailed producer is counted, not jailed again.
    assert record_missed(state, E + 1, expected, set(), PUB[0], PARAMS) == []
    cands = [state.get_obj(candidate_key(k), Candidate) for k in expected]
    assert [(c.jailed, c.missed_epoch, c.missed) for c in cands] == [
        (False, 1, 1),
        (False, 1, 1),
        (True, 1, 1),
    ]


def test_missed_slot_hook_jails_before_the_election():
    chain = Chain()
    chain.block()
    for _ in range(E - 1):
        # Blocks 2..E carry commits without PUB[2]'s precommit.
        chain.block(signers=(PUB[0], PUB[1]))
    cand = chain.candidate(PUB[2])
    assert (cand.jailed, cand.missed, cand.jailed_until) == (True, 3, E + PARAMS.jail_blocks)
    assert chain.candidate(PUB[0]).missed == 0
    # Jailed in the election block's begin-block, so left out of epoch 1.
    assert elected(chain, 1) == tuple(sorted(PUB[:2]))


def test_missed_slots_restart_each_epoch():
    chain = Chain()
    chain.block()
    all3 = tuple(PUB[:3])
    # Misses of heights 1, 2 (epoch 0), then 5, 6 (epoch 1): at most 2 per epoch.
    for signers in [PUB[:2], PUB[:2], all3, all3, PUB[:2], PUB[:2]]:
        chain.block(signers=tuple(signers))
    cand = chain.candidate(PUB[2])
    assert (cand.jailed, cand.missed_epoch, cand.missed) == (False, 1, 2)


def test_missed_slot_hook_without_signers_does_nothing():
    chain = Chain()
    chain.advance_to(E)
    assert all(chain.candidate(k).missed == 0 for k in PUB[:3])


# --- missed slots: what a proposer can do with the certificate it carries ---

FOUR = set_params(producers=4, epoch_length=12, max_missed_slots=2)


def test_a_proposer_omitting_an_honest_producer_cannot_get_it_jailed():
    chain = Chain(make_genesis(validators=4, params=FOUR))
    byzantine, victim = PUB[0], PUB[3]
    everyone_else = tuple(sorted(set(PUB[:4]) - {victim}))
    chain.block()
    # It proposes every block (far more than its round-robin share) for three epochs
    # and leaves the victim's precommit out of every certificate.
    for _ in range(3 * FOUR.epoch_length):
        chain.block(signers=everyone_else, proposer=byzantine)
        assert not chain.candidate(victim).jailed
        # Each omission is on record, and charged to nobody.
        missed = Event.of(
            "missed_slot", candidate=victim, height=chain.height - 1, proposer=byzantine, charged=0
        )
        assert missed in chain.last.begin_events
    # Every miss is on record against the one proposer that left it out.
    cand = chain.candidate(victim)
    assert cand.missed >= 1
    assert cand.missed_by == tuple(cand.missed if k == byzantine else 0 for k in sorted(PUB[:4]))
    assert victim in elected(chain, chain.height // FOUR.epoch_length)


def test_an_offline_producer_is_still_jailed():
    chain = Chain(make_genesis(validators=4, params=FOUR))
    offline = PUB[3]
    online = tuple(sorted(set(PUB[:4]) - {offline}))
    chain.block()
    round_ = 0
    while not chain.candidate(offline).jailed:
        height = chain.height + 1
        # Charged a quarter of an epoch's blocks with four producers (docs/staking.md),
        # so jailed within its first whole epoch (epoch 0 has no certificate at height 1).
        assert height <= 2 * FOUR.epoch_length, "jailed within its first whole epoch"
        producers = producers_for_height(chain.state, height)
        # Its own proposals never come: round 1's proposer builds (and commits) those
        # heights, so the next certificate is of round 1.
        committed_in, round_ = round_, 1 if producers.proposer(height, 0) == offline else 0
        chain.block(
            signers=online, proposer=producers.proposer(height, round_), commit_round=committed_in
        )
    chain.advance_to(2 * FOUR.epoch_length)
    assert offline not in elected(chain, 2)


SEVEN = set_params(producers=7, epoch_length=56, max_missed_slots=12)


def test_a_coalition_withholding_its_proposals_cannot_get_an_honest_producer_jailed():
    """Two faulty producers of seven (under a third) frame an honest one. Each keeps
    its proposals from the victim, so the victim never precommits those blocks and
    the next, honest, proposer's certificate lacks it; and each leaves the victim out
    of the certificates it carries itself. Charged to the proposer that carried the
    certificate alone, the withheld blocks' misses landed on honest proposers, and
    the victim was jailed every epoch."""
    chain = Chain(make_genesis(validators=7, params=SEVEN))
    keys = sorted(PUB[:7])
    victim, faulty = keys[0], {keys[1], keys[4]}
    chain.block()
    for _ in range(2 * SEVEN.epoch_length):
        height = chain.height + 1
        proposer = producers_for_height(chain.state, height).proposer(height, 0)
        # The proposer of the block whose certificate this one carries (round 0).
        previous = producers_for_height(chain.state, height - 1).proposer(height - 1, 0)
        left_out = proposer in faulty or previous in faulty
        chain.block(signers=tuple(k for k in keys if not (left_out and k == victim)))
        assert not chain.candidate(victim).jailed, chain.height
    assert victim in elected(chain, 2)


def test_an_offline_producer_of_seven_is_still_jailed():
    chain = Chain(make_genesis(validators=7, params=SEVEN))
    keys = sorted(PUB[:7])
    offline = keys[0]
    online = tuple(keys[1:])
    chain.block()
    round_ = 0
    while not chain.candidate(offline).jailed:
        height = chain.height + 1
        assert height <= SEVEN.epoch_length, "jailed within its epoch"
        producers = producers_for_height(chain.state, height)
        committed_in, round_ = round_, 1 if producers.proposer(height, 0) == offline else 0
        chain.block(
            signers=online, proposer=producers.proposer(height, round_), commit_round=committed_in
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_coalition_under_a_third_gets_an_honest_producer_jailed(data):
    """Faulty proposers leave out any precommits they like, as often as they like
    (even every block), and keep the proposals of the rounds they commit from any
    producers they like (which then have nothing to precommit); faulty producers
    also withhold their own precommits. Honest producers always sign in time and
    honest proposers carry every precommit. No honest producer is ever jailed,
    whatever the jailing threshold."""
    n = data.draw(st.integers(4, 7), label="producers")
    params = set_params(producers=n, epoch_length=5, max_missed_slots=0)
    chain = Chain(make_genesis(validators=n, params=params))
    keys = sorted(PUB[:n])
    faulty_bound = n - (2 * n // 3 + 1)
    faulty = data.draw(st.sets(st.sampled_from(keys), max_size=faulty_bound), label="faulty")
    honest = [k for k in keys if k not in faulty]
    chain.block()
    for _ in range(data.draw(st.integers(1, 3 * params.epoch_length), label="blocks")):
        height = chain.height + 1
        producers = producers_for_height(chain.state, height).keys
        proposer = data.draw(st.sampled_from(producers), label="proposer")
        # The round the previous block was committed in, and who proposed in it.
        commit_round = data.draw(st.integers(0, n - 1), label="commit round")
        previous = producers_for_height(chain.state, height - 1).proposer(height - 1, commit_round)
        withheld = data.draw(st.sets(st.sampled_from(sorted(faulty) or keys), max_size=len(faulty)))
        signed = [k for k in keys if k not in (withheld & faulty)]
        if previous in faulty:
            kept_from = data.draw(st.sets(st.sampled_from(keys), max_size=n), label="kept from")
            room = len(signed) - (2 * n // 3 + 1)
            signed = [k for k in signed if k not in sorted(kept_from)[:room]]
        if proposer in faulty:
            left_out = data.draw(st.sets(st.sampled_from(keys), max_size=faulty_bound))
            room = len(signed) - (2 * n // 3 + 1)
            signed = [k for k in signed if k not in sorted(left_out)[:room]]
        chain.block(signers=tuple(signed), proposer=proposer, commit_round=commit_round)
        for key in honest:
            assert not chain.candidate(key).jailed, key.hex()


# Ten genesis producers: each a member and a candidate that bonded SELF_BOND.
TEN = Chain(make_genesis(validators=10, params=PARAMS.replace(max_producers=10)))


def test_a_set_of_seven_takes_in_one_newcomer_however_many_outrank_it():
    # Two newcomers (the faults a set of seven tolerates) dormant together, with keys
    # next to each other in the schedule, were each charged too few misses in their
    # first epoch to be jailed (docs/staking.md, Missed slots): in two elections stake
    # held a third of the set. One at a time, a dormant newcomer is jailed within it.
    state = dict(TEN.state)
    outgoing = frozenset(PUB[:7])
    for i in range(10):
        set_candidate(state, PUB[i], weight=5 if i >= 7 else 1)
    params = PARAMS.replace(max_producers=7)
    got = [key for key, _ in elect(state, params, outgoing)]
    assert len(got) == 7
    assert len([key for key in got if key not in outgoing]) == 1


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(0, 3), min_size=10, max_size=10),
    jailed=st.lists(st.booleans(), min_size=10, max_size=10),
    outgoing=st.sets(st.integers(0, 9), min_size=1, max_size=10),
    size=st.integers(1, 10),
)
def test_an_election_keeps_the_newcomer_bound_and_is_the_best_such_set(
    weights, jailed, outgoing, size
):
    # For any ranking (ties included), eligibility and outgoing set: the set is the
    # largest that takes in no more than ``NEWCOMERS_PER_ELECTION`` newcomers, made of the
    # best ranked newcomers of the top ``max_producers`` and the best ranked
    # incumbents, best first; with no eligible incumbent, the top ``max_producers``.
    state = dict(TEN.state)
    for i in range(10):
        set_candidate(state, PUB[i], weight=weights[i], jailed=jailed[i])
    params = PARAMS.replace(max_producers=size)
    out = frozenset(PUB[i] for i in outgoing)
    ranked = rank_candidates(state, params)
    got = elect(state, params, out)
    assert got == sorted(got, key=lambda kw: (-kw[1], kw[0]))
    assert len(got) <= size and (len(got) > 0) == (len(ranked) > 0)
    keep = [kw for kw in ranked if kw[0] in out]
    if not keep:
        assert got == ranked[:size]
        return
    new = [kw for kw in ranked if kw[0] not in out]
    top_new = len([kw for kw in ranked[:size] if kw[0] not in out])
    # Brute force: of the sets of the best k newcomers and best j incumbents that fit
    # and keep the bound, the largest, then the one with the most newcomers.
    n, k = max(
        (j + k, k)
        for k in range(top_new + 1)
        for j in range(len(keep) + 1)
        if j + k <= size and k <= NEWCOMERS_PER_ELECTION
    )
    assert sorted(got) == sorted(new[:k] + keep[: n - k])
    # From four producers up, the incumbents kept make a quorum on their own.
    if n >= 4:
        assert n - k >= ValidatorSet.of([key for key, _ in got]).quorum


def kept_sets(chain: Chain) -> list[int]:
    """The epochs whose producer set the state holds, up to the next one."""
    last = chain.height // E + 1
    return [e for e in range(last + 1) if producer_set(chain.state, e) is not None]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epoch_length=st.integers(1, 6),
    evidence_age=st.integers(1, 20),
    height=st.integers(1, 90),
)
def test_producer_sets_are_kept_while_evidence_can_name_their_heights(
    epoch_length, evidence_age, height
):
    params = PARAMS.replace(
        epoch_length=epoch_length,
        proposal_voting_blocks=max(epoch_length, PARAMS.proposal_voting_blocks),
        jail_blocks=epoch_length,
        max_evidence_age_blocks=evidence_age,
        unbonding_blocks=epoch_length + evidence_age + 1,
    )
    chain = Chain(make_genesis(params=params))
    chain.advance_to(height)
    # The next block's evidence may name any height from ``height + 1 - age``; the
    # state must answer for each of them, and for the next block itself.
    for named in range(max(1, height + 1 - evidence_age), height + 2):
        assert producers_for_height(chain.state, named) == ValidatorSet.of(PUB[:3])
    # And holds no more: the sets of the heights evidence can name, and the next epoch's.
    kept = [e for e in range(height // epoch_length + 2) if producer_set(chain.state, e)]
    assert len(kept) <= evidence_age // epoch_length + 3, kept


def test_an_election_block_still_takes_evidence_as_old_as_the_age_allows():
    # Height 12 elects epoch 3; evidence in it may name height 12 - 4 = 8, the last of
    # epoch 1, whose set the election must therefore not drop.
    chain = Chain()
    chain.advance_to(3 * E - 1)
    vote = Vote.create
    evidence = SubmitEvidence(
        vote(KEYS[1], CHAIN, VoteType.PREVOTE, 2 * E, 0, bytes([1]) * 32),
        vote(KEYS[1], CHAIN, VoteType.PREVOTE, 2 * E, 0, bytes([2]) * 32),
    )
    assert PARAMS.max_evidence_age_blocks == E
    assert chain.run(KEYS[7], SUBMIT_EVIDENCE, evidence).ok
    assert chain.height == 3 * E
    assert producer_set(chain.state, 0) is None and producer_set(chain.state, 1) is not None


def test_a_set_dropped_stays_dropped_when_the_evidence_age_is_raised():
    params = PARAMS.replace(unbonding_blocks=40)
    chain = Chain(make_genesis(params=params))
    chain.advance_to(6 * E)
    assert producer_set(chain.state, 3) is None
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_evidence_age_blocks", 30))
    chain.advance_to(chain.height + params.param_change_delay_blocks)
    assert chain.params().max_evidence_age_blocks == 30
    # Height 14 is within the new age, but its set (epoch 3) is gone: a receipt, no fault.
    evidence = SubmitEvidence(
        Vote.create(KEYS[1], CHAIN, VoteType.PREVOTE, 14, 0, bytes([1]) * 32),
        Vote.create(KEYS[1], CHAIN, VoteType.PREVOTE, 14, 0, bytes([2]) * 32),
    )
    receipt = chain.run(KEYS[7], SUBMIT_EVIDENCE, evidence)
    assert (receipt.code, receipt.message) == (
        "evidence_too_old",
        "the producers of height 14 are no longer kept, so its evidence is too old",
    )
    # The sets from the raise on are kept for the new age.
    chain.advance_to(chain.height + 8 * E)
    assert len(kept_sets(chain)) >= 30 // E


def test_a_backlog_of_sets_is_dropped_over_several_elections():
    age = 80 * E
    params = PARAMS.replace(max_evidence_age_blocks=age, unbonding_blocks=age + E + 1)
    chain = Chain(make_genesis(params=params))
    chain.advance_to(age + E)
    before = kept_sets(chain)
    assert before[0] == 0 and len(before) > MAX_SETS_DROPPED_PER_ELECTION + 4
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_evidence_age_blocks", E))
    chain.advance_to(chain.height + params.param_change_delay_blocks)
    assert chain.params().max_evidence_age_blocks == E
    first = kept_sets(chain)[0]
    next_election(chain)
    # One election drops at most its share, the oldest first.
    assert kept_sets(chain)[0] == first + MAX_SETS_DROPPED_PER_ELECTION
    next_election(chain)
    assert len(kept_sets(chain)) <= 3
