"""Parameter bounds that keep governance from weakening the chain (docs/staking.md,
"Parameter bounds"): what a change may not do that genesis may."""

import pytest

from consensus import producer_set
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
)


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
