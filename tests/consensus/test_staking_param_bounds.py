"""Parameter bounds that keep governance from weakening the chain (docs/staking.md,
"Parameter bounds"): what a change may not do that genesis may."""

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consensus import producer_set, producers_for_height
from consensus.election import least_epoch_charge, least_offline_charge
from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.governance import PROPOSE_PARAM_CHANGE, ProposeParamChange
from consensus.staking import UNJAIL, Unjail
from consensus.staking_state import active_params
from core import Vote, VoteType
from genesis import InvalidGenesis
from tests.consensus.staking_helpers import (
    CHAIN,
    KEYS,
    PARAMS,
    PUB,
    Chain,
    make_genesis,
    pass_proposal,
    set_params,
)
from vm import ChainParams


def propose_param(chain: Chain, name: str, value: int) -> tuple[str, str]:
    receipt = chain.run(KEYS[0], PROPOSE_PARAM_CHANGE, ProposeParamChange(name, value))
    return receipt.code, receipt.message


def elect_next(chain: Chain) -> tuple[bytes, ...]:
    """Run to the next election once every scheduled change applied; the set it elects."""
    chain.advance_to(chain.height + chain.params().param_change_delay_blocks)
    height = (chain.height // PARAMS.epoch_length + 1) * PARAMS.epoch_length
    chain.advance_to(height)
    record = producer_set(chain.state, height // PARAMS.epoch_length)
    assert record is not None
    return record.keys


# --- max_producers: never lowered under four ---


def test_governance_cannot_shrink_the_producer_set_below_four():
    # Four producers tolerate one fault; three need every one of them, so one offline
    # producer would halt the chain for good: no block, no missed-slot jailing, and
    # no vote to raise the limit again.
    chain = Chain(make_genesis(validators=4, params=PARAMS.replace(max_producers=4)))
    assert propose_param(chain, "max_producers", 3) == (
        "invalid_param",
        "max_producers = 3: max_producers may not be lowered below 4 (a smaller set "
        "tolerates no fault), got 3",
    )
    assert propose_param(chain, "max_producers", 1)[0] == "invalid_param"
    assert len(elect_next(chain)) == 4


def test_a_larger_set_may_still_shrink_to_four():
    chain = Chain(make_genesis(validators=5, params=PARAMS.replace(max_producers=5)))
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_producers", 4))
    assert len(elect_next(chain)) == 4


def test_genesis_may_run_a_small_set_which_governance_may_grow_but_not_shrink():
    # A devnet's or a test's single producer is a valid genesis.
    chain = Chain(make_genesis(validators=1, params=PARAMS.replace(max_producers=1)))
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_producers", 2))
    chain.advance_to(chain.height + PARAMS.param_change_delay_blocks)
    assert active_params(chain.state).max_producers == 2
    assert propose_param(chain, "max_producers", 1) == (
        "invalid_param",
        "max_producers = 1: max_producers may not be lowered below 2 (a smaller set "
        "tolerates no fault), got 1",
    )
    # Other parameters still change on a set under four.
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 20))


# --- jail_blocks: a jail outlasts the next election ---


def test_jail_blocks_under_an_epoch_is_refused_at_genesis_and_by_governance():
    # Jailed just after an election, an offender could unjail before the next one and
    # so never leave the producer set: jailing would take nobody out.
    with pytest.raises(InvalidGenesis, match=r"jail_blocks must be in epoch_length \(4\)"):
        make_genesis(params=PARAMS.replace(jail_blocks=PARAMS.epoch_length - 1))
    assert propose_param(Chain(), "jail_blocks", PARAMS.epoch_length - 1) == (
        "invalid_param",
        "jail_blocks = 3: jail_blocks must be in epoch_length (4)..4294967296, got 3",
    )


@pytest.mark.parametrize("offset", range(PARAMS.epoch_length))
def test_a_jailed_producer_that_unjails_at_once_still_misses_the_next_election(offset):
    # Jailed (double signing) at any block of an epoch, from its election block on, and
    # unjailed at the first height it may: the next election still leaves it out, and
    # the one after takes it back.
    e = PARAMS.epoch_length
    chain = Chain()
    offender, key = PUB[1], KEYS[1]
    chain.advance_to(e - 1 + offset)
    height = chain.height + 1
    votes = [
        Vote.create(key, CHAIN, VoteType.PREVOTE, height - 1, 0, bytes([b]) * 32) for b in (1, 2)
    ]
    assert chain.run(KEYS[7], SUBMIT_EVIDENCE, SubmitEvidence(*votes)).ok
    until = chain.candidate(offender).jailed_until
    assert until == height + PARAMS.jail_blocks
    chain.advance_to(until - 1)
    assert chain.run(key, UNJAIL, Unjail()).ok
    assert chain.height == until
    election = (height // e + 1) * e
    chain.advance_to(election)
    assert offender not in producer_set(chain.state, election // e).keys
    chain.advance_to(election + e)
    assert offender in producer_set(chain.state, election // e + 1).keys


# --- max_missed_slots: an offline producer is jailed within the epoch ---


def offline_epoch(chain: Chain, offline: bytes) -> None:
    """Run epoch 0 to its election with ``offline`` signing nothing and everyone else
    signing every block: its rounds fail, the next producer proposes those heights."""
    producers = producers_for_height(chain.state, 1)
    online = tuple(k for k in producers.keys if k != offline)
    chain.block()
    round_ = 0
    while chain.height < chain.params().epoch_length:
        height = chain.height + 1
        committed_in, round_ = round_, 1 if producers.proposer(height, 0) == offline else 0
        chain.block(
            signers=online, proposer=producers.proposer(height, round_), commit_round=committed_in
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(4, 8), epoch=st.integers(5, 60), place=st.integers(0, 7))
def test_an_offline_producer_is_charged_at_least_the_least_offline_charge(size, epoch, place):
    # The bound on max_missed_slots rests on this figure: with the threshold just below
    # it, a producer offline from the first block is jailed within the epoch, wherever
    # it sits in the schedule, and the election that ends it leaves it out.
    least = least_offline_charge(size, epoch - 1)
    assume(least >= 1)
    chain = Chain(make_genesis(validators=size, params=set_params(size, epoch, least - 1)))
    offline = sorted(PUB[:size])[place % size]
    offline_epoch(chain, offline)
    assert chain.candidate(offline).jailed
    assert offline not in producer_set(chain.state, 1).keys


def test_the_defaults_jail_an_offline_producer_within_an_epoch():
    params = ChainParams()
    charge = least_epoch_charge(params)
    assert charge is not None and params.max_missed_slots < charge
    assert least_offline_charge(4, params.epoch_length - 1) == charge == 24


FOUR = set_params(producers=4, epoch_length=12, max_missed_slots=1)


def test_governance_cannot_raise_max_missed_slots_so_far_an_offline_producer_stays():
    # With four producers and epochs of 12 blocks, an offline producer is charged as
    # few as 2 misses (11 certificates can lack it): at a threshold of 2 or more it is
    # never jailed, stays in the set, and the next crash halts the chain.
    chain = Chain(make_genesis(validators=4, params=FOUR))
    assert propose_param(chain, "max_missed_slots", 2) == (
        "invalid_param",
        "max_missed_slots = 2: max_missed_slots must be below 2, the fewest misses "
        "charged in an epoch of 12 blocks to a producer offline in a set of 4..4, got 2",
    )
    assert propose_param(chain, "max_missed_slots", 2**64 - 1)[0] == "invalid_param"
    # It would have been kept: at 2, this offline producer (its place in the schedule
    # charges it the least) is not jailed in its epoch.
    free = Chain(make_genesis(validators=4, params=FOUR.replace(max_missed_slots=2)))
    offline = sorted(PUB[:4])[2]
    offline_epoch(free, offline)
    assert not free.candidate(offline).jailed
    assert offline in producer_set(free.state, 1).keys
    # Below the bound it is jailed and left out.
    offline_epoch(chain, offline)
    assert chain.candidate(offline).jailed
    assert offline not in producer_set(chain.state, 1).keys


def test_a_larger_set_must_keep_the_bound_and_a_chain_past_it_may_only_come_back():
    chain = Chain(make_genesis(validators=4, params=FOUR))
    # Five producers are charged at least 3 of 11 certificates, so five keep the bound;
    # seven are charged as few as 1, so a threshold of 1 no longer jails them.
    pass_proposal(chain, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_producers", 5))
    assert propose_param(chain, "max_producers", 7) == (
        "invalid_param",
        "max_producers = 7: max_missed_slots must be below 1, the fewest misses "
        "charged in an epoch of 12 blocks to a producer offline in a set of 4..7, got 1",
    )
    # A genesis past the bound (a devnet's short epochs) may come back, not go further.
    past = Chain(make_genesis(validators=4, params=FOUR.replace(max_missed_slots=5)))
    assert propose_param(past, "max_missed_slots", 6)[0] == "invalid_param"
    assert propose_param(past, "max_producers", 5)[0] == "invalid_param"
    pass_proposal(past, PROPOSE_PARAM_CHANGE, ProposeParamChange("max_missed_slots", 3))
    pass_proposal(past, PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 20))
