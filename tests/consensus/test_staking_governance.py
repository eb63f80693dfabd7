"""Consortium governance: admit, remove, change a parameter; more than 2/3 of producers decide."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consensus import (
    epoch_of,
    governance,
    is_member,
    may_connect,
    members,
    params_for_height,
    producer_set,
    producers_for_height,
)
from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.governance import (
    PROPOSE_ADMIT_MEMBER,
    PROPOSE_PARAM_CHANGE,
    PROPOSE_REMOVE_MEMBER,
    VOTE_PROPOSAL,
    ProposeAdmitMember,
    ProposeParamChange,
    ProposeRemoveMember,
    VoteProposal,
    get_proposal,
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
from consensus.staking_state import (
    GOVERNABLE_PARAMS,
    MAX_OPEN_PROPOSALS,
    MIN_FAULT_TOLERANT_PRODUCERS,
    active_params,
    candidates,
    get_candidate,
)
from core import Vote, VoteType
from tests.consensus.staking_helpers import (
    CHAIN,
    KEYS,
    PARAMS,
    PUB,
    Chain,
    check_invariants,
    make_genesis,
    pass_proposal,
)
from vm import Event


def propose(chain, payload, tx_type=PROPOSE_ADMIT_MEMBER, key=KEYS[0]):
    receipt = chain.run(key, tx_type, payload)
    assert receipt.ok, receipt
    return int(receipt.events[0].get("proposal_id"))


def vote(chain, key, pid):
    return chain.run(key, VOTE_PROPOSAL, VoteProposal(pid))


def test_admit_needs_more_than_two_thirds_of_three():
    chain = Chain()
    pid = propose(chain, ProposeAdmitMember(PUB[4], "shop-4"))
    proposal = get_proposal(chain.state, pid)
    assert (
        proposal.created_height == 1
        and proposal.deadline_height == 1 + PARAMS.proposal_voting_blocks
    )
    assert vote(chain, KEYS[0], pid).ok
    r2 = vote(chain, KEYS[1], pid)
    # 2 of 3 is exactly 2/3: not enough.
    assert r2.ok and r2.events[0].get("approvals") == "2" and r2.events[0].get("passed") == "0"
    assert not is_member(chain.state, PUB[4])
    r3 = vote(chain, KEYS[2], pid)
    assert r3.ok
    assert r3.events == (
        Event.of("member_admitted", member=PUB[4], name="shop-4"),
        Event.of(VOTE_PROPOSAL, proposal_id=pid, voter=PUB[2], approvals=3, producers=3, passed=1),
    )
    assert is_member(chain.state, PUB[4]) and PUB[4] in members(chain.state)
    assert get_proposal(chain.state, pid).passed_height == chain.height
    # The new member may now stand for election and propose.
    assert chain.run(KEYS[4], REGISTER_CANDIDATE, RegisterCandidate()).ok
    propose(chain, ProposeAdmitMember(PUB[5], "shop-5"), key=KEYS[4])


def test_exactly_two_thirds_of_six_fails_and_five_passes():
    chain = Chain(make_genesis(validators=6, params=PARAMS.replace(max_producers=6)))
    pid = propose(chain, ProposeAdmitMember(PUB[7], "m7"))
    for i in range(4):
        receipt = vote(chain, KEYS[i], pid)
        assert receipt.ok and receipt.events[-1].get("passed") == "0"
    assert not is_member(chain.state, PUB[7])
    receipt = vote(chain, KEYS[4], pid)
    assert receipt.events[-1].get("approvals") == "5" and receipt.events[-1].get("passed") == "1"
    assert is_member(chain.state, PUB[7])
    receipt = vote(chain, KEYS[5], pid)
    assert receipt.code == "proposal_closed"
    assert receipt.message == f"proposal {pid} passed at height {chain.height - 1}"


def test_remove_member():
    chain = Chain()
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[2]))
    assert not is_member(chain.state, PUB[2])
    assert members(chain.state) == tuple(sorted(PUB[:2]))
    # A removed member may no longer propose.
    receipt = chain.run(KEYS[2], PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[5], "x"))
    assert (receipt.code, receipt.message) == (
        "not_member",
        f"{PUB[2].hex()} is not a consortium member",
    )


def test_the_last_member_cannot_be_removed():
    chain = Chain(make_genesis(validators=1))
    receipt = chain.run(KEYS[0], PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[0]))
    assert (receipt.code, receipt.message) == (
        "last_member",
        "cannot remove the last member, members 1",
    )


@pytest.mark.parametrize(
    "key, tx_type, payload, code, message",
    [
        (
            KEYS[5],
            PROPOSE_ADMIT_MEMBER,
            ProposeAdmitMember(PUB[6], "m6"),
            "not_member",
            f"{PUB[5].hex()} is not a consortium member",
        ),
        (
            KEYS[0],
            PROPOSE_ADMIT_MEMBER,
            ProposeAdmitMember(PUB[6], "bad name"),
            "invalid_name",
            "member name must match [A-Za-z0-9_.-]{1,64}, got 'bad name'",
        ),
        (
            KEYS[0],
            PROPOSE_ADMIT_MEMBER,
            ProposeAdmitMember(PUB[1], "again"),
            "already_member",
            f"{PUB[1].hex()} is already a member",
        ),
        (
            KEYS[0],
            PROPOSE_REMOVE_MEMBER,
            ProposeRemoveMember(PUB[6]),
            "unknown_member",
            f"{PUB[6].hex()} is not a member",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("epoch_length", 10),
            "param_not_governable",
            "parameter 'epoch_length' is not governable",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("no_such_param", 10),
            "param_not_governable",
            "parameter 'no_such_param' is not governable",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("slash_bps", 10_001),
            "invalid_param",
            "slash_bps = 10001: slash_bps must be in 1..10000, got 10001",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("slash_bps", 0),
            "invalid_param",
            "slash_bps = 0: slash_bps must be in 1..10000, got 0",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            # An offence in the last block of an epoch its producer began unbonding in
            # must be punishable before the release.
            ProposeParamChange(
                "max_evidence_age_blocks", PARAMS.unbonding_blocks - PARAMS.epoch_length
            ),
            "invalid_param",
            "max_evidence_age_blocks = 5: max_evidence_age_blocks must be in "
            "1..unbonding_blocks-epoch_length-1 (4), got 5",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("min_fee", 2**63),
            "invalid_param",
            "min_fee = 9223372036854775808: min_fee must be at most 1000000, got 9223372036854775808",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("max_tx_bytes", 100),
            "invalid_param",
            "max_tx_bytes = 100: max_tx_bytes must be at least 4096, got 100",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("jail_blocks", 2**64 - 1),
            "invalid_param",
            "jail_blocks = 18446744073709551615: jail_blocks must be in epoch_length (4)..4294967296, got 18446744073709551615",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("unbonding_blocks", 2**64 - 1),
            "invalid_param",
            "unbonding_blocks = 18446744073709551615: unbonding_blocks must be in 1..4294967296, got 18446744073709551615",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("proposal_voting_blocks", 2**64 - 1),
            "invalid_param",
            "proposal_voting_blocks = 18446744073709551615: proposal_voting_blocks must be in epoch_length (4)..4294967296, got 18446744073709551615",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("proposal_voting_blocks", 3),
            "invalid_param",
            "proposal_voting_blocks = 3: proposal_voting_blocks must be in epoch_length (4)..4294967296, got 3",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("param_change_delay_blocks", 100_001),
            "invalid_param",
            "param_change_delay_blocks = 100001: param_change_delay_blocks must be in 1..100000, got 100001",
        ),
        (
            KEYS[0],
            PROPOSE_PARAM_CHANGE,
            ProposeParamChange("max_block_txs", 0),
            "invalid_param",
            "max_block_txs = 0: max_block_txs must be at least 1, got 0",
        ),
    ],
)
def test_proposal_refusals(key, tx_type, payload, code, message):
    chain = Chain()
    receipt = chain.run(key, tx_type, payload)
    assert (receipt.code, receipt.message) == (code, message)


def test_vote_refusals():
    chain = Chain()
    receipt = vote(chain, KEYS[0], 99)
    assert (receipt.code, receipt.message) == ("unknown_proposal", "no proposal 99")
    pid = propose(chain, ProposeAdmitMember(PUB[4], "m4"))
    receipt = vote(chain, KEYS[5], pid)
    assert (receipt.code, receipt.message) == (
        "not_producer",
        f"{PUB[5].hex()} is not an active producer",
    )
    assert vote(chain, KEYS[0], pid).ok
    receipt = vote(chain, KEYS[0], pid)
    assert (receipt.code, receipt.message) == (
        "already_voted",
        f"{PUB[0].hex()} already voted on {pid}",
    )
    deadline = get_proposal(chain.state, pid).deadline_height
    chain.advance_to(deadline - 1)
    assert vote(chain, KEYS[1], pid).ok  # at the deadline: still open
    chain.advance_to(deadline)
    receipt = vote(chain, KEYS[2], pid)
    assert (receipt.code, receipt.message) == (
        "proposal_expired",
        f"proposal {pid} closed at height {deadline}, this is height {deadline + 1}",
    )
    assert not is_member(chain.state, PUB[4])


def test_a_passing_vote_rechecks_the_action():
    chain = Chain()
    first = propose(chain, ProposeAdmitMember(PUB[4], "m4"))
    second = propose(chain, ProposeAdmitMember(PUB[4], "m4-again"))
    for k in KEYS[:3]:
        assert vote(chain, k, first).ok
    assert vote(chain, KEYS[0], second).ok and vote(chain, KEYS[1], second).ok
    receipt = vote(chain, KEYS[2], second)
    assert (receipt.code, receipt.message) == (
        "already_member",
        f"{PUB[4].hex()} is already a member",
    )
    # The failed vote is not recorded, and the proposal stays open.
    assert get_proposal(chain.state, second).voters == tuple(sorted(PUB[:2]))


def test_param_change_applies_from_its_effective_height():
    chain = Chain()
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 20))
    passed = chain.height
    effective = passed + PARAMS.param_change_delay_blocks
    assert (
        Event.of("param_change_scheduled", name="min_fee", value=20, effective_height=effective)
        in chain.last.receipts[0].events
    )
    assert params_for_height(chain.state, effective - 1).min_fee == 10
    assert params_for_height(chain.state, effective).min_fee == 20
    assert active_params(chain.state).min_fee == 10
    chain.advance_to(effective - 1)
    assert chain.params().min_fee == 20
    chain.block()
    assert Event.of("param_changed", name="min_fee", value=20) in chain.last.begin_events
    assert active_params(chain.state) == PARAMS.replace(min_fee=20)
    assert params_for_height(chain.state, effective + 1) == PARAMS.replace(min_fee=20)


def test_param_change_of_a_staking_parameter_takes_effect():
    # From five to four (governance never lowers it under four: check_param_change).
    chain = Chain(make_genesis(validators=5, params=PARAMS.replace(max_producers=5)))
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_producers", 4))
    chain.advance_to(chain.height + PARAMS.param_change_delay_blocks)
    height = (chain.height // PARAMS.epoch_length + 1) * PARAMS.epoch_length
    chain.advance_to(height)
    from consensus import producer_set

    assert len(producer_set(chain.state, height // PARAMS.epoch_length).keys) == 4


def test_a_change_is_checked_against_the_scheduled_parameters():
    chain = Chain()
    # unbonding_blocks 8 is invalid now (epoch_length and max_evidence_age_blocks are 4) ...
    receipt = chain.run(KEYS[0], PROPOSE_PARAM_CHANGE, ProposeParamChange("unbonding_blocks", 8))
    assert receipt.message == (
        "unbonding_blocks = 8: max_evidence_age_blocks must be in "
        "1..unbonding_blocks-epoch_length-1 (3), got 4"
    )
    # ... but valid once a passed change to max_evidence_age_blocks applies.
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_evidence_age_blocks", 3))
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("unbonding_blocks", 8))
    chain.advance_to(chain.height + PARAMS.param_change_delay_blocks)
    params = active_params(chain.state)
    assert (params.max_evidence_age_blocks, params.unbonding_blocks) == (3, 8)


def last_producing_height(chain, key):
    """Last height of the last elected epoch whose producers include ``key``."""
    epoch = 0
    while (record := producer_set(chain.state, epoch + 1)) is not None and key in record.keys:
        epoch += 1
    return (epoch + 1) * PARAMS.epoch_length


def test_a_removed_producer_stays_connected_until_its_last_epoch_ends():
    chain = Chain()
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[2]))
    assert not is_member(chain.state, PUB[2])
    # It still produces this epoch (and the next one, if elected before the removal).
    assert PUB[2] in producers_for_height(chain.state, chain.height + 1)
    end = last_producing_height(chain, PUB[2])
    while chain.height < end:
        assert may_connect(chain.state, PUB[2], chain.height + 1), chain.height
        chain.block()
    # Its precommit for the last block it produced goes into the next one's certificate.
    assert PUB[2] not in producers_for_height(chain.state, end + 1)
    assert may_connect(chain.state, PUB[2], end + 1)
    chain.block()
    assert not may_connect(chain.state, PUB[2], end + 2)
    assert may_connect(chain.state, PUB[0], end + 2)


def test_removing_every_producing_member_keeps_the_producers_connected():
    chain = Chain()
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[3], "m3"))
    for i in range(3):
        pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[i]), KEYS[3])
    assert members(chain.state) == (PUB[3],)
    # No member is a candidate now: the election carries the set over, never empty.
    election = (chain.height // PARAMS.epoch_length + 1) * PARAMS.epoch_length
    chain.advance_to(election)
    epoch = election // PARAMS.epoch_length
    assert Event.of("election_failed", epoch=epoch) in chain.last.begin_events
    chain.advance_to(election + PARAMS.epoch_length)
    producers = producers_for_height(chain.state, chain.height + 1).keys
    assert producers and set(producers) <= set(PUB[:3])
    assert all(may_connect(chain.state, k, chain.height + 1) for k in producers)
    # The removed producers still govern: they admit a member back.
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[0], "back"), KEYS[3])
    assert is_member(chain.state, PUB[0])


ODD_VALUES = st.one_of(
    st.integers(0, 8),
    st.sampled_from([2**32, 2**32 + 1, 10**6 + 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(GOVERNABLE_PARAMS), value=ODD_VALUES)
def test_no_parameter_change_governance_accepts_halts_the_chain(name, value):
    """Whatever value passes, blocks keep executing and governance can still undo it."""
    chain = Chain()
    receipt = chain.run(KEYS[0], PROPOSE_PARAM_CHANGE, ProposeParamChange(name, value))
    if not receipt.ok:
        assert receipt.code == "invalid_param", receipt
        return
    pid = int(receipt.events[0].get("proposal_id"))
    for key in KEYS[:3]:
        assert chain.run(key, VOTE_PROPOSAL, VoteProposal(pid)).ok
    chain.advance_to(chain.height + chain.params().param_change_delay_blocks)
    assert getattr(active_params(chain.state), name) == value
    # Every path that adds a parameter to a height, one transaction per block.
    votes = [
        Vote.create(KEYS[1], CHAIN, VoteType.PREVOTE, chain.height, 0, bytes([b]) * 32)
        for b in (1, 2)
    ]
    assert chain.run(KEYS[7], SUBMIT_EVIDENCE, SubmitEvidence(*votes)).ok
    assert chain.run(KEYS[2], UNBOND, Unbond(1)).ok
    chain.block(signers=(PUB[0], PUB[1]))
    # The change can be undone: proposal, votes and the scheduled change all go through.
    # (max_producers goes back only as far as four: governance never lowers it under.)
    back = getattr(PARAMS, name)
    if name == "max_producers":
        back = max(back, min(MIN_FAULT_TOLERANT_PRODUCERS, value))
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange(name, back))
    (scheduled,) = [e for e in chain.last.receipts[0].events if e.kind == "param_change_scheduled"]
    effective = int(scheduled.get("effective_height"))
    assert getattr(params_for_height(chain.state, effective), name) == back
    chain.advance_to((chain.height // PARAMS.epoch_length + 2) * PARAMS.epoch_length)


def test_open_proposals_are_bounded_per_member():
    chain = Chain(make_genesis(params=PARAMS.replace(proposal_voting_blocks=100)))
    ids = [propose(chain, ProposeAdmitMember(PUB[4], f"m{i}")) for i in range(MAX_OPEN_PROPOSALS)]
    receipt = chain.run(KEYS[0], PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[4], "one-more"))
    assert (receipt.code, receipt.message) == (
        "too_many_proposals",
        f"at most {MAX_OPEN_PROPOSALS} open proposals per member, got {MAX_OPEN_PROPOSALS}",
    )
    # Another member is not held back by this one's proposals.
    propose(chain, ProposeAdmitMember(PUB[5], "m5"), key=KEYS[1])
    # A passed proposal frees its slot ...
    for key in KEYS[:3]:
        assert vote(chain, key, ids[0]).ok
    propose(chain, ProposeAdmitMember(PUB[6], "m6"))
    receipt = chain.run(KEYS[0], PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[7], "m7"))
    assert receipt.code == "too_many_proposals"
    # ... and so does an expired one.
    chain.advance_to(get_proposal(chain.state, ids[1]).deadline_height)
    propose(chain, ProposeAdmitMember(PUB[7], "m7"))


def _long_epochs():
    # Long enough that a removed producer still produces while it is admitted again.
    params = PARAMS.replace(
        epoch_length=40, proposal_voting_blocks=200, unbonding_blocks=45, jail_blocks=40
    )
    return Chain(make_genesis(params=params))


def test_a_removed_members_proposals_are_dropped_also_when_it_is_admitted_again():
    chain = _long_epochs()
    old = propose(chain, ProposeAdmitMember(PUB[6], "m6"), key=KEYS[2])
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[2]))
    message = f"proposal {old}: the membership of its proposer {PUB[2].hex()} that made it ended"
    receipt = vote(chain, KEYS[0], old)
    assert (receipt.code, receipt.message) == ("proposer_removed", message)
    # Admitted again, it starts with no proposals: the old one stays dropped, and does
    # not take one of its MAX_OPEN_PROPOSALS either.
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[2], "v2-again"))
    assert is_member(chain.state, PUB[2])
    for key in KEYS[:3]:
        receipt = vote(chain, key, old)
        assert (receipt.code, receipt.message) == ("proposer_removed", message)
    assert not is_member(chain.state, PUB[6])
    for i in range(MAX_OPEN_PROPOSALS):
        propose(chain, ProposeAdmitMember(PUB[7], f"m7-{i}"), key=KEYS[2])


def test_a_vote_counts_only_in_the_membership_it_was_cast_in():
    chain = _long_epochs()
    pid = propose(chain, ProposeAdmitMember(PUB[5], "m5"))
    assert vote(chain, KEYS[2], pid).ok
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[2]))
    # Removed, it still produces this epoch, and its vote still counts.
    assert PUB[2] in producers_for_height(chain.state, chain.height + 1)
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[2], "v2-again"))
    # Admitted again, it starts with no votes: its approval of before the removal does
    # not count, and it may approve again.
    receipt = vote(chain, KEYS[0], pid)
    assert receipt.ok and receipt.events[-1].get("approvals") == "1"
    receipt = vote(chain, KEYS[1], pid)
    assert receipt.ok and receipt.events[-1].get("approvals") == "2"
    assert not is_member(chain.state, PUB[5])
    receipt = vote(chain, KEYS[2], pid)
    assert receipt.ok and receipt.events[-1].get("passed") == "1"
    assert is_member(chain.state, PUB[5])
    proposal = get_proposal(chain.state, pid)
    assert proposal.voters == tuple(sorted(PUB[:3]))
    assert proposal.voted_at[proposal.voters.index(PUB[2])] == chain.height


def test_a_removed_producers_vote_counts_while_it_produces():
    chain = _long_epochs()
    pid = propose(chain, ProposeAdmitMember(PUB[5], "m5"))
    assert vote(chain, KEYS[2], pid).ok
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[2]))
    receipt = vote(chain, KEYS[0], pid)
    assert receipt.ok and receipt.events[-1].get("approvals") == "2"
    receipt = vote(chain, KEYS[2], pid)
    assert (receipt.code, receipt.message) == (
        "already_voted",
        f"{PUB[2].hex()} already voted on {pid}",
    )


member_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["admit", "remove", "register"]), st.integers(0, 6)),
        st.tuples(st.just("back"), st.integers(7, 9), st.sets(st.integers(0, 6), max_size=3)),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(member_ops)
def test_members_come_and_go_and_the_candidate_list_stays_bounded_and_tallies_exact(ops):
    """Admissions, removals, candidacies and ballots in any order: the list holds the
    members' candidacies and those of producers of this, the last or the next epoch,
    every candidate's tally stays the sum of the bonds that approve it, and a member
    admitted again can always stand again."""
    chain = Chain()
    e = PARAMS.epoch_length
    for op in ops:
        kind, i = op[0], op[1]
        member = is_member(chain.state, PUB[i])
        if kind == "admit" and not member:
            within_an_epoch(chain)
            pass_proposal(
                chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[i], f"m{i}"), proposer(chain)
            )
        elif kind == "remove" and member and len(members(chain.state)) > 1:
            within_an_epoch(chain)
            pass_proposal(
                chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[i]), proposer(chain)
            )
        elif kind == "register" and member:
            receipt = chain.run(KEYS[i], REGISTER_CANDIDATE, RegisterCandidate())
            listed = PUB[i] in candidates(chain.state)
            assert receipt.ok or (receipt.code == "already_candidate" and listed), receipt
        elif kind == "back":
            ballot = tuple(sorted(PUB[c] for c in op[2] if get_candidate(chain.state, PUB[c])))
            chain.block(
                chain.tx(KEYS[i], BOND, Bond(100)),
                chain.tx(KEYS[i], VOTE_PRODUCERS, VoteProducers(ballot)),
            )
            assert all(r.ok for r in chain.last.receipts), chain.last.receipts
        else:
            chain.block()
        check_invariants(chain.state, chain.genesis.total_supply)
        epoch = epoch_of(chain.height + 1, e)
        producing = set()
        for n in range(max(epoch - 1, 0), epoch + 2):
            record = producer_set(chain.state, n)
            producing.update(() if record is None else record.keys)
        for key in candidates(chain.state):
            assert is_member(chain.state, key) or key in producing, key.hex()


def within_an_epoch(chain):
    """Run to the last block of an epoch, so that a proposal and the votes of its (at most
    three) producers fall in the next one: a set that shrinks under a proposal leaves it
    waiting for a vote nobody is left to cast."""
    chain.advance_to(chain.height + (-chain.height) % PARAMS.epoch_length)


def proposer(chain):
    """A member's key to propose with."""
    return next(k for k in KEYS if is_member(chain.state, k.public_key))


def test_changes_due_at_different_heights_apply_each_at_its_own():
    # Both scheduled at once: the first one due is applied, the other stays scheduled
    # (and is applied at its own height, not lost with the first).
    chain = Chain(make_genesis(params=PARAMS.replace(param_change_delay_blocks=10)))
    first = pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 20))
    first_due = chain.height + 10
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_block_txs", 77))
    second_due = chain.height + 10
    assert first and first_due < second_due
    chain.advance_to(first_due)
    assert Event.of("param_changed", name="min_fee", value=20) in chain.last.begin_events
    assert (active_params(chain.state).min_fee, active_params(chain.state).max_block_txs) == (
        20,
        PARAMS.max_block_txs,
    )
    assert params_for_height(chain.state, second_due).max_block_txs == 77
    chain.advance_to(second_due)
    assert Event.of("param_changed", name="max_block_txs", value=77) in chain.last.begin_events
    assert active_params(chain.state) == PARAMS.replace(
        param_change_delay_blocks=10, min_fee=20, max_block_txs=77
    )


def test_a_change_landing_before_the_one_it_relies_on_is_skipped_deterministically():
    # unbonding_blocks 8 is valid only once max_evidence_age_blocks is 3 (as above).
    # Passed while that change waits out a delay of 20 blocks, after the delay itself
    # became 1, it lands first: applied there, the set would be invalid (evidence would
    # outlive the unbonding it must slash), so it is skipped, with an event, and the
    # change it relied on still applies at its own height.
    chain = Chain(make_genesis(params=PARAMS.replace(param_change_delay_blocks=20)))
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("param_change_delay_blocks", 1))
    short_delay_from = chain.height + 20
    chain.block()
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_evidence_age_blocks", 3))
    evidence_due = chain.height + 20
    chain.advance_to(short_delay_from - 1)
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("unbonding_blocks", 8))
    unbonding_due = chain.height + 1
    assert unbonding_due < evidence_due
    chain.advance_to(unbonding_due)
    assert (
        Event.of("param_change_skipped", name="unbonding_blocks", value=8)
        in chain.last.begin_events
    )
    assert active_params(chain.state).unbonding_blocks == PARAMS.unbonding_blocks
    chain.advance_to(evidence_due)
    params = active_params(chain.state)
    assert (params.max_evidence_age_blocks, params.unbonding_blocks) == (3, PARAMS.unbonding_blocks)


def test_members_are_bounded(monkeypatch):
    # The member list is one state value (MAX_VALIDATORS keys); a lower bound shows the
    # refusal without hundreds of admissions.
    monkeypatch.setattr(governance, "MAX_MEMBERS", 3)
    chain = Chain()
    receipt = chain.run(KEYS[0], PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[7], "m7"))
    assert (receipt.code, receipt.message) == ("too_many_members", "at most 3 members, got 3")
    assert not is_member(chain.state, PUB[7])


def test_scheduled_changes_are_bounded(monkeypatch):
    # The schedule is one state value (256 changes at most); a lower bound shows the
    # refusal, at proposing and again when a proposal would pass.
    monkeypatch.setattr(governance, "MAX_PENDING_PARAMS", 1)
    params = PARAMS.replace(param_change_delay_blocks=50, proposal_voting_blocks=20)
    chain = Chain(make_genesis(params=params))
    waiting = propose(chain, ProposeParamChange("max_block_txs", 77), PROPOSE_PARAM_CHANGE)
    for key in KEYS[:2]:
        assert vote(chain, key, waiting).ok
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 20))
    receipt = chain.run(KEYS[0], PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 30))
    assert (receipt.code, receipt.message) == (
        "too_many_pending",
        "at most 1 scheduled changes, got 1",
    )
    assert vote(chain, KEYS[2], waiting).code == "too_many_pending"
    assert params_for_height(chain.state, chain.height + 100).max_block_txs == PARAMS.max_block_txs


def test_changes_passed_in_one_block_apply_in_the_order_they_passed():
    # A change is checked against the schedule as it stands when it passes, so it must
    # apply after every change already scheduled for its height, whatever its id. Here
    # the evidence age 10 (proposal 1) is valid only with unbonding_blocks 20 back
    # (proposal 3, passed just before it in the same block). Ordered by id, the age
    # came first, was invalid there, and was skipped: a passed change silently lost.
    params = PARAMS.replace(unbonding_blocks=20, proposal_voting_blocks=40)
    chain = Chain(make_genesis(params=params))
    age = propose(chain, ProposeParamChange("max_evidence_age_blocks", 10), PROPOSE_PARAM_CHANGE)
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("unbonding_blocks", 9))
    chain.advance_to(chain.height + params.param_change_delay_blocks)
    assert active_params(chain.state).unbonding_blocks == 9
    back = propose(chain, ProposeParamChange("unbonding_blocks", 20), PROPOSE_PARAM_CHANGE)
    assert back > age
    votes = [chain.tx(k, VOTE_PROPOSAL, VoteProposal(pid)) for pid in (back, age) for k in KEYS[:3]]
    result = chain.block(*votes)
    assert all(r.ok for r in result.receipts), [r.code for r in result.receipts]
    assert get_proposal(chain.state, back).passed_height == chain.height
    assert get_proposal(chain.state, age).passed_height == chain.height
    chain.advance_to(chain.height + params.param_change_delay_blocks)
    assert [e.kind for e in chain.last.begin_events if e.kind.startswith("param_")] == [
        "param_changed",
        "param_changed",
    ]
    applied = active_params(chain.state)
    assert (applied.unbonding_blocks, applied.max_evidence_age_blocks) == (20, 10)


DEPENDENT_CHANGE = st.one_of(
    st.tuples(st.just("unbonding_blocks"), st.integers(6, 24)),
    st.tuples(st.just("max_evidence_age_blocks"), st.integers(1, 19)),
    st.tuples(st.just("max_tx_bytes"), st.sampled_from([4096, 8192, 16384])),
    st.tuples(st.just("max_block_bytes"), st.sampled_from([4096, 8192, 16384])),
)
GOVERNANCE_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("propose"), DEPENDENT_CHANGE),
        # Approvals of open proposals (by index, any producer), all in one block.
        st.tuples(
            st.just("votes"),
            st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2)), min_size=1, max_size=9),
        ),
        st.tuples(st.just("wait"), st.integers(1, 3)),
    ),
    min_size=2,
    max_size=14,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GOVERNANCE_STEPS)
# The age (1) waits while unbonding_blocks goes to 9 (2) and back to 20 (3), which passes
# just before the age, in one block (test_changes_passed_in_one_block_apply_in_...).
@example(
    [
        ("propose", ("max_evidence_age_blocks", 10)),
        ("propose", ("unbonding_blocks", 9)),
        ("votes", [(1, 0), (1, 1), (1, 2)]),
        ("wait", 2),
        ("propose", ("unbonding_blocks", 20)),
        ("votes", [(2, 0), (2, 1), (2, 2), (0, 0), (0, 1), (0, 2)]),
    ]
)
def test_with_the_delay_unchanged_no_passed_change_is_skipped(steps):
    """Changes that depend on each other (the evidence age on unbonding_blocks, a block
    on its largest transaction), proposed, passed and applied in any order, several in
    one block: each was checked against the schedule when it passed, so each applies
    (only a shortened delay can land a change before one it relies on)."""
    params = PARAMS.replace(unbonding_blocks=20, max_block_bytes=16384, proposal_voting_blocks=100)
    chain = Chain(make_genesis(params=params))
    proposed: list[int] = []
    for kind, arg in [*steps, ("wait", params.param_change_delay_blocks)]:
        if kind == "propose":
            receipt = chain.run(proposer(chain), PROPOSE_PARAM_CHANGE, ProposeParamChange(*arg))
            if receipt.ok:
                proposed.append(int(receipt.events[0].get("proposal_id")))
        elif kind == "votes":
            chosen = [(proposed[i % len(proposed)], KEYS[k]) for i, k in arg if proposed]
            chain.block(*(chain.tx(key, VOTE_PROPOSAL, VoteProposal(pid)) for pid, key in chosen))
        else:
            for _ in range(arg):
                chain.block()
        assert not any(e.kind == "param_change_skipped" for e in chain.last.begin_events)


def test_a_stale_removal_does_not_pass_on_approvals_from_a_past_membership():
    # Two of three approve removing m5 (not enough); the consortium removes it by
    # another proposal, then admits it again. The first proposal's approvals were
    # given about the membership that ended: one more approval passed it, so a single
    # producer could undo a re-admission more than 2/3 had just voted for.
    chain = _long_epochs()
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[5], "m5"))
    stale = propose(chain, ProposeRemoveMember(PUB[5]), PROPOSE_REMOVE_MEMBER)
    assert vote(chain, KEYS[0], stale).ok and vote(chain, KEYS[1], stale).ok
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[5]))
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[5], "m5-again"))
    receipt = vote(chain, KEYS[2], stale)
    assert receipt.ok and receipt.events[-1].get("approvals") == "1", receipt
    assert is_member(chain.state, PUB[5])
    # Approvals given in the membership of now count, the earlier voters' again included.
    assert vote(chain, KEYS[0], stale).ok
    receipt = vote(chain, KEYS[1], stale)
    assert receipt.events[-1].get("passed") == "1"
    assert not is_member(chain.state, PUB[5])


def test_a_stale_admission_does_not_pass_on_approvals_from_before_a_removal():
    chain = _long_epochs()
    stale = propose(chain, ProposeAdmitMember(PUB[5], "m5"))
    assert vote(chain, KEYS[0], stale).ok and vote(chain, KEYS[1], stale).ok
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[5], "m5-other"))
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[5]))
    receipt = vote(chain, KEYS[2], stale)
    assert receipt.ok and receipt.events[-1].get("approvals") == "1", receipt
    assert not is_member(chain.state, PUB[5])
