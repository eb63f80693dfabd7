"""Staking transactions: register, bond, unbond, vote, unjail; genesis state and releases."""

import pytest

from consensus import epoch_of, members, producers_for_height, staking
from consensus.governance import (
    PROPOSE_ADMIT_MEMBER,
    PROPOSE_REMOVE_MEMBER,
    ProposeAdmitMember,
    ProposeRemoveMember,
)
from consensus.staking import (
    BOND,
    REGISTER_CANDIDATE,
    UNBOND,
    UNJAIL,
    VOTE_PRODUCERS,
    Bond,
    RegisterCandidate,
    Unbond,
    Unjail,
    VoteProducers,
)
from consensus.staking_state import (
    BONDED_POOL,
    CANDIDATE_LIST_KEY,
    COMMUNITY_POOL,
    MAX_CANDIDATES,
    MAX_UNBONDING_ENTRIES,
    UNBONDING_POOL,
    Candidate,
    KeyList,
    StakingError,
    Unbonding,
    candidate_key,
    candidates,
    get_candidate,
    producer_set,
)
from consensus.validators import ValidatorSet
from core.keys import format_address
from tests.consensus.staking_helpers import (
    ADDR,
    FUNDS,
    KEYS,
    PARAMS,
    PRODUCER,
    PUB,
    REGISTRY,
    SELF_BOND,
    Chain,
    check_invariants,
    make_genesis,
    pass_proposal,
    set_candidate,
)
from vm import TRANSFER, Event, Transfer, account_key


def admit(chain: Chain, index: int) -> None:
    """Make KEYS[index] a member through governance."""
    pass_proposal(chain, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(PUB[index], f"m{index}"))


def test_genesis_state_seeds_members_candidates_bonds_and_producers():
    chain = Chain()
    state = chain.state
    genesis_keys = tuple(sorted(PUB[:3]))
    assert members(state) == candidates(state) == genesis_keys
    for i in range(3):
        assert chain.staker(ADDR[i]).bonded == SELF_BOND
        assert chain.staker(ADDR[i]).votes == (PUB[i],)
        assert chain.candidate(PUB[i]).weight == SELF_BOND
    assert chain.balance(BONDED_POOL) == 3 * SELF_BOND
    assert chain.genesis.total_supply == 10 * FUNDS + 3 * SELF_BOND
    for h in range(1, PARAMS.epoch_length + 1):
        assert producers_for_height(state, h) == ValidatorSet(genesis_keys)
    # The next epoch is not elected before the last block of this one.
    with pytest.raises(StakingError, match="no producer set for height 5"):
        producers_for_height(state, PARAMS.epoch_length + 1)
    check_invariants(state, chain.genesis.total_supply)


def test_epoch_of():
    assert [epoch_of(h, 4) for h in range(1, 10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert epoch_of(7, 1) == 6
    with pytest.raises(ValueError):
        epoch_of(0, 4)


# --- register_candidate ---


def test_register_candidate():
    chain = Chain()
    admit(chain, 4)
    receipt = chain.run(KEYS[4], REGISTER_CANDIDATE, RegisterCandidate())
    assert receipt.ok
    assert receipt.events == (Event.of(REGISTER_CANDIDATE, candidate=PUB[4]),)
    assert PUB[4] in candidates(chain.state)
    assert chain.candidate(PUB[4]).weight == 0


def test_register_candidate_refusals():
    chain = Chain()
    receipt = chain.run(KEYS[4], REGISTER_CANDIDATE, RegisterCandidate())
    assert (receipt.code, receipt.message) == (
        "not_member",
        f"{PUB[4].hex()} is not a consortium member",
    )
    receipt = chain.run(KEYS[0], REGISTER_CANDIDATE, RegisterCandidate())
    assert (receipt.code, receipt.message) == (
        "already_candidate",
        f"{PUB[0].hex()} is already a candidate",
    )


def test_a_removed_members_candidacy_leaves_the_list_and_comes_back_as_it_was():
    chain = Chain()
    admit(chain, 3)
    chain.block(
        chain.tx(KEYS[3], REGISTER_CANDIDATE, RegisterCandidate()),
        chain.tx(KEYS[3], BOND, Bond(SELF_BOND)),
        chain.tx(KEYS[3], VOTE_PRODUCERS, VoteProducers((PUB[3],))),
        chain.tx(KEYS[6], BOND, Bond(500)),
        chain.tx(KEYS[6], VOTE_PRODUCERS, VoteProducers((PUB[3],))),
    )
    assert all(r.ok for r in chain.last.receipts)
    # Jailed (as for missed slots): it is not elected, and must not shed the jail below.
    set_candidate(chain.state, PUB[3], jailed=True, jailed_until=10**6)
    pass_proposal(chain, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(PUB[3]))
    assert PUB[3] not in producers_for_height(chain.state, chain.height + 1)
    # Off the list, so departed members cannot fill it; the record and its tally stay,
    # since ballots still name it.
    assert PUB[3] not in candidates(chain.state)
    assert chain.candidate(PUB[3]).weight == SELF_BOND + 500
    assert chain.run(KEYS[6], BOND, Bond(100)).ok
    assert chain.candidate(PUB[3]).weight == SELF_BOND + 600
    check_invariants(chain.state, chain.genesis.total_supply)
    # Admitted again, it stands again with the record it had: tally and jail.
    admit(chain, 3)
    receipt = chain.run(KEYS[3], REGISTER_CANDIDATE, RegisterCandidate())
    assert receipt.ok, receipt
    assert PUB[3] in candidates(chain.state)
    cand = chain.candidate(PUB[3])
    assert cand.weight == SELF_BOND + 600 and cand.jailed and cand.jailed_until == 10**6
    receipt = chain.run(KEYS[3], REGISTER_CANDIDATE, RegisterCandidate())
    assert receipt.code == "already_candidate"
    check_invariants(chain.state, chain.genesis.total_supply)


def test_departed_members_cannot_fill_the_candidate_list_for_good():
    chain = Chain()
    admit(chain, 4)
    # The list as 1,021 members admitted, registered and removed over the chain's life
    # left it before: every one still listed, none a member or a producer any more.
    departed = [bytes([0xD0, i >> 8, i & 0xFF]) * 10 + b"\xd0\xd0" for i in range(1021)]
    for key in departed:
        chain.state[candidate_key(key)] = Candidate(1, 0, False, 0, 0, ()).encode()
    full = tuple(sorted((*PUB[:3], *departed)))
    assert len(full) == MAX_CANDIDATES
    chain.state[CANDIDATE_LIST_KEY] = KeyList(full).encode()
    receipt = chain.run(KEYS[4], REGISTER_CANDIDATE, RegisterCandidate())
    assert receipt.code == "too_many_candidates"
    # The next election takes them off the list (their records stay): room again.
    chain.advance_to((chain.height // PARAMS.epoch_length + 1) * PARAMS.epoch_length)
    assert candidates(chain.state) == tuple(sorted(PUB[:3]))
    assert get_candidate(chain.state, departed[0]) is not None
    assert chain.run(KEYS[4], REGISTER_CANDIDATE, RegisterCandidate()).ok
    assert candidates(chain.state) == tuple(sorted((*PUB[:3], PUB[4])))


def test_staking_disabled_without_a_genesis_section():
    chain = Chain(make_genesis(staking=False))
    for tx_type, payload in [
        (REGISTER_CANDIDATE, RegisterCandidate()),
        (BOND, Bond(5)),
        (UNBOND, Unbond(5)),
        (VOTE_PRODUCERS, VoteProducers(())),
        (UNJAIL, Unjail()),
    ]:
        receipt = chain.run(KEYS[0], tx_type, payload)
        assert receipt.code == "staking_disabled", tx_type
    # The hooks do nothing without staking state.
    chain.advance_to(2 * PARAMS.epoch_length)


# --- bond ---


def test_bond_moves_tokens_into_the_pool_and_adds_weight():
    chain = Chain()
    receipt = chain.run(KEYS[0], BOND, Bond(500))
    assert receipt.ok
    assert receipt.events == (Event.of(BOND, staker=ADDR[0], amount=500, bonded=SELF_BOND + 500),)
    assert chain.balance(ADDR[0]) == FUNDS - 10 - 500
    assert chain.balance(BONDED_POOL) == 3 * SELF_BOND + 500
    assert chain.staker(ADDR[0]).bonded == SELF_BOND + 500
    # KEYS[0] approves itself (genesis), so the bond counts for it at once.
    assert chain.candidate(PUB[0]).weight == SELF_BOND + 500
    check_invariants(chain.state, chain.genesis.total_supply)


def test_bond_refusals():
    chain = Chain()
    receipt = chain.run(KEYS[5], BOND, Bond(0))
    assert (receipt.code, receipt.message) == ("invalid_amount", "amount must be positive, got 0")
    receipt = chain.run(KEYS[5], BOND, Bond(FUNDS))
    assert receipt.code == "insufficient_funds"
    assert receipt.message == f"balance {FUNDS - 20} is less than the amount {FUNDS}"
    assert chain.staker(ADDR[5]).bonded == 0


# --- the pools are module accounts ---


def test_register_staking_registers_the_pools_as_module_accounts():
    assert dict(REGISTRY.module_accounts) == {
        BONDED_POOL: "bonded_pool",
        UNBONDING_POOL: "unbonding_pool",
        COMMUNITY_POOL: "community_pool",
    }


@pytest.mark.parametrize(
    ("pool", "name"),
    [
        (BONDED_POOL, "bonded_pool"),
        (UNBONDING_POOL, "unbonding_pool"),
        (COMMUNITY_POOL, "community_pool"),
    ],
    ids=["bonded_pool", "unbonding_pool", "community_pool"],
)
def test_a_transfer_into_a_pool_is_refused_and_only_pays_its_fee(pool, name):
    chain = Chain()
    # Something in every pool, so "unchanged" is not just "still zero".
    assert chain.run(KEYS[1], UNBOND, Unbond(300)).ok
    before = dict(chain.state)
    receipt = chain.run(KEYS[5], TRANSFER, Transfer(pool, 500))
    assert (receipt.code, receipt.fee, receipt.events) == ("module_account", 10, ())
    assert receipt.message == (
        f"recipient must not be a module account, got {format_address(pool)} "
        f"(the {name} module account)"
    )
    assert chain.balance(ADDR[5]) == FUNDS - 10
    assert chain.balance(BONDED_POOL) == 3 * SELF_BOND - 300
    assert chain.balance(UNBONDING_POOL) == 300
    assert chain.balance(COMMUNITY_POOL) == 0
    # Nothing else changed: the sender's account (fee, nonce) and the producer's fees.
    changed = {k for k in before.keys() | chain.state.keys() if before.get(k) != chain.state.get(k)}
    assert changed == {account_key(ADDR[5]), account_key(PRODUCER)}
    check_invariants(chain.state, chain.genesis.total_supply)


def test_a_transfer_between_stakers_still_works():
    chain = Chain()
    receipt = chain.run(KEYS[5], TRANSFER, Transfer(ADDR[6], 500))
    assert receipt.ok
    assert chain.balance(ADDR[5]) == FUNDS - 10 - 500
    assert chain.balance(ADDR[6]) == FUNDS + 500
    check_invariants(chain.state, chain.genesis.total_supply)


# --- unbond and release ---


def test_unbond_holds_tokens_until_the_release_height():
    # A voter of producer 0, not a producer itself: nothing holds its entry back.
    chain = Chain()
    chain.block(
        chain.tx(KEYS[5], BOND, Bond(SELF_BOND)),
        chain.tx(KEYS[5], VOTE_PRODUCERS, VoteProducers((PUB[0],))),
    )
    receipt = chain.run(KEYS[5], UNBOND, Unbond(300))
    assert receipt.ok
    release = 2 + PARAMS.unbonding_blocks
    assert receipt.events == (
        Event.of(
            UNBOND, staker=ADDR[5], amount=300, bonded=SELF_BOND - 300, release_height=release
        ),
    )
    assert chain.staker(ADDR[5]).unbonding == (Unbonding(300, release),)
    assert chain.balance(UNBONDING_POOL) == 300
    assert chain.balance(BONDED_POOL) == 4 * SELF_BOND - 300
    assert chain.candidate(PUB[0]).weight == 2 * SELF_BOND - 300
    check_invariants(chain.state, chain.genesis.total_supply)
    chain.advance_to(release - 1)
    funds = FUNDS - 30 - SELF_BOND
    assert chain.balance(ADDR[5]) == funds
    chain.block()
    assert chain.balance(ADDR[5]) == funds + 300
    assert Event.of("unbonded", staker=ADDR[5], amount=300) in chain.last.begin_events
    assert chain.staker(ADDR[5]).unbonding == ()
    assert chain.balance(UNBONDING_POOL) == 0
    check_invariants(chain.state, chain.genesis.total_supply)


def test_unbond_twice_in_a_block_merges_and_everything_can_leave():
    chain = Chain()
    chain.block(chain.tx(KEYS[1], UNBOND, Unbond(400)), chain.tx(KEYS[1], UNBOND, Unbond(600)))
    assert all(r.ok for r in chain.last.receipts)
    staker = chain.staker(ADDR[1])
    assert staker.bonded == 0 and staker.unbonding == (
        Unbonding(1000, 1 + PARAMS.unbonding_blocks),
    )
    chain.advance_to(1 + PARAMS.unbonding_blocks)
    # Only the ballot is left of the staker.
    assert chain.staker(ADDR[1]).unbonding == () and chain.staker(ADDR[1]).votes == (PUB[1],)
    assert chain.balance(ADDR[1]) == FUNDS - 20 + SELF_BOND
    check_invariants(chain.state, chain.genesis.total_supply)


def test_unbond_refusals():
    chain = Chain()
    receipt = chain.run(KEYS[0], UNBOND, Unbond(0))
    assert receipt.code == "invalid_amount"
    receipt = chain.run(KEYS[0], UNBOND, Unbond(SELF_BOND + 1))
    assert (receipt.code, receipt.message) == (
        "insufficient_bond",
        f"bonded {SELF_BOND} is less than the amount {SELF_BOND + 1}",
    )
    receipt = chain.run(KEYS[5], UNBOND, Unbond(1))
    assert (receipt.code, receipt.message) == (
        "insufficient_bond",
        "bonded 0 is less than the amount 1",
    )


def test_too_many_unbonding_entries():
    params = PARAMS.replace(unbonding_blocks=50, max_evidence_age_blocks=4)
    chain = Chain(make_genesis(params=params))
    for _ in range(MAX_UNBONDING_ENTRIES):
        assert chain.run(KEYS[0], UNBOND, Unbond(1)).ok
    receipt = chain.run(KEYS[0], UNBOND, Unbond(1))
    assert (receipt.code, receipt.message) == (
        "too_many_unbonding",
        f"at most {MAX_UNBONDING_ENTRIES} pending unbondings, got {MAX_UNBONDING_ENTRIES}",
    )
    check_invariants(chain.state, chain.genesis.total_supply)


def test_a_full_release_queue_refuses_the_unbond_and_leaves_the_staker_as_it_was(monkeypatch):
    # 100,000 stakers released at one height is the bound (one begin-block runs them
    # all); a lower bound shows the refusal without 100,000 stakers.
    monkeypatch.setattr(staking, "MAX_RELEASES_PER_HEIGHT", 2)
    chain = Chain()
    chain.block(*(chain.tx(KEYS[i], UNBOND, Unbond(1)) for i in range(3)))
    receipts = chain.last.receipts
    assert [r.code for r in receipts] == ["ok", "ok", "release_queue_full"]
    release = 1 + PARAMS.unbonding_blocks
    assert receipts[2].message == f"at most 2 releases at height {release}, got 2"
    assert chain.staker(ADDR[2]).bonded == SELF_BOND and chain.staker(ADDR[2]).unbonding == ()
    check_invariants(chain.state, chain.genesis.total_supply)
    # The next height has its own queue.
    assert chain.run(KEYS[2], UNBOND, Unbond(1)).ok


# --- vote_producers ---


def test_vote_moves_the_whole_bond_to_each_approved_candidate():
    chain = Chain()
    assert chain.run(KEYS[5], BOND, Bond(700)).ok
    receipt = chain.run(KEYS[5], VOTE_PRODUCERS, VoteProducers(tuple(sorted(PUB[:2]))))
    assert receipt.ok
    assert receipt.events == (Event.of(VOTE_PRODUCERS, staker=ADDR[5], count=2, weight=700),)
    assert chain.candidate(PUB[0]).weight == SELF_BOND + 700
    assert chain.candidate(PUB[1]).weight == SELF_BOND + 700
    assert chain.candidate(PUB[2]).weight == SELF_BOND
    # A new ballot replaces the old one.
    assert chain.run(KEYS[5], VOTE_PRODUCERS, VoteProducers((PUB[2],))).ok
    assert [chain.candidate(PUB[i]).weight for i in range(3)] == [
        SELF_BOND,
        SELF_BOND,
        SELF_BOND + 700,
    ]
    # Bonding more adds to the approved candidates; unbonding takes it away.
    assert chain.run(KEYS[5], BOND, Bond(50)).ok
    assert chain.candidate(PUB[2]).weight == SELF_BOND + 750
    assert chain.run(KEYS[5], UNBOND, Unbond(750)).ok
    assert chain.candidate(PUB[2]).weight == SELF_BOND
    # An empty ballot is always allowed, even with nothing bonded.
    assert chain.run(KEYS[5], VOTE_PRODUCERS, VoteProducers(())).ok
    assert chain.staker(ADDR[5]).votes == ()
    check_invariants(chain.state, chain.genesis.total_supply)


def test_vote_refusals():
    chain = Chain()
    assert chain.run(KEYS[5], BOND, Bond(700)).ok
    low, high = sorted(PUB[:2])
    for ballot in [(high, low), (low, low)]:
        receipt = chain.run(KEYS[5], VOTE_PRODUCERS, VoteProducers(ballot))
        assert (receipt.code, receipt.message) == (
            "invalid_votes",
            "candidates must be unique and in ascending order",
        )
    admit(chain, 4)
    assert chain.run(KEYS[4], REGISTER_CANDIDATE, RegisterCandidate()).ok
    four = tuple(sorted([*PUB[:3], PUB[4]]))
    receipt = chain.run(KEYS[5], VOTE_PRODUCERS, VoteProducers(four))
    assert (receipt.code, receipt.message) == (
        "too_many_votes",
        "at most 3 candidates per ballot, got 4",
    )
    receipt = chain.run(KEYS[5], VOTE_PRODUCERS, VoteProducers((PUB[7],)))
    assert (receipt.code, receipt.message) == (
        "unknown_candidate",
        f"{PUB[7].hex()} is not a candidate",
    )
    receipt = chain.run(KEYS[6], VOTE_PRODUCERS, VoteProducers((PUB[0],)))
    assert (receipt.code, receipt.message) == (
        "no_stake",
        "bonded 0, expected a bond before voting",
    )
    check_invariants(chain.state, chain.genesis.total_supply)


# --- unjail ---


def test_unjail():
    chain = Chain()
    set_candidate(chain.state, PUB[1], jailed=True, jailed_until=3, missed_by=(3, 4, 0))
    receipt = chain.run(KEYS[1], UNJAIL, Unjail())
    assert (receipt.code, receipt.message) == (
        "still_jailed",
        "jailed until height 3, this is height 1",
    )
    chain.block()
    receipt = chain.run(KEYS[1], UNJAIL, Unjail())
    assert receipt.ok and receipt.events == (Event.of(UNJAIL, candidate=PUB[1]),)
    cand = chain.candidate(PUB[1])
    assert (cand.jailed, cand.jailed_until, cand.missed) == (False, 0, 0)


def test_unjail_refusals():
    chain = Chain()
    receipt = chain.run(KEYS[1], UNJAIL, Unjail())
    assert (receipt.code, receipt.message) == ("not_jailed", f"{PUB[1].hex()} is not jailed")
    receipt = chain.run(KEYS[6], UNJAIL, Unjail())
    assert (receipt.code, receipt.message) == (
        "not_candidate",
        f"{PUB[6].hex()} is not a candidate",
    )


def test_producer_sets_are_kept_with_their_epoch_while_evidence_can_name_them():
    chain = Chain()
    chain.advance_to(3 * PARAMS.epoch_length)
    for epoch in range(1, 4):
        record = producer_set(chain.state, epoch)
        assert record is not None and record.epoch == epoch
        assert record.elected_height == epoch * PARAMS.epoch_length
    # Evidence from height 13 on names height 9 (epoch 2) at the oldest.
    assert producer_set(chain.state, 0) is None


def test_a_producers_own_unbonding_is_held_while_it_produces_and_nobody_elses():
    e, age = PARAMS.epoch_length, PARAMS.max_evidence_age_blocks
    chain = Chain()
    chain.block(
        chain.tx(KEYS[5], BOND, Bond(500)),
        chain.tx(KEYS[5], VOTE_PRODUCERS, VoteProducers((PUB[1],))),
        chain.tx(KEYS[6], BOND, Bond(500)),
    )
    # Producer 1 unbonds part of its bond; its voter and a stranger unbond in the same
    # block, so all three entries are due at the same height, in one queue.
    chain.block(
        chain.tx(KEYS[1], UNBOND, Unbond(300)),
        chain.tx(KEYS[5], UNBOND, Unbond(500)),
        chain.tx(KEYS[6], UNBOND, Unbond(500)),
    )
    due = 2 + PARAMS.unbonding_blocks
    chain.advance_to(due)
    # The voter and the stranger are paid on time: only a producer's own account is
    # slashed for its votes, so only it is held.
    assert Event.of("unbonded", staker=ADDR[5], amount=500) in chain.last.begin_events
    assert Event.of("unbonded", staker=ADDR[6], amount=500) in chain.last.begin_events
    # Producer 1 keeps 700, is re-elected every epoch, and is held while it is.
    epoch = epoch_of(due, e)
    held = (epoch + 1) * e + age + 1
    assert (
        Event.of("unbonding_held", staker=ADDR[1], amount=300, release_height=held)
        in chain.last.begin_events
    )
    chain.advance_to(held)
    again = (epoch_of(held, e) + 1) * e + age + 1
    assert (
        Event.of("unbonding_held", staker=ADDR[1], amount=300, release_height=again)
        in chain.last.begin_events
    )
    # It leaves: without a self-bond it is not elected again, and once its last epoch
    # is out of evidence reach both entries are paid, each at its own height.
    assert chain.run(KEYS[1], UNBOND, Unbond(SELF_BOND - 300)).ok
    chain.advance_to((chain.height // e + 1) * e)
    last_epoch = epoch_of(chain.height, e)
    assert PUB[1] in producer_set(chain.state, last_epoch).keys
    assert PUB[1] not in producer_set(chain.state, last_epoch + 1).keys
    chain.advance_to((last_epoch + 1) * e + age)
    assert chain.staker(ADDR[1]).unbonding_total == SELF_BOND
    while chain.staker(ADDR[1]).unbonding:
        chain.block()
        for event in chain.last.begin_events:
            assert event.kind != "unbonding_held"
    assert chain.balance(ADDR[1]) == FUNDS - 20 + SELF_BOND
    check_invariants(chain.state, chain.genesis.total_supply)
