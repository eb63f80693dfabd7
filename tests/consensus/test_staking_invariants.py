"""Property: any sequence of staking operations conserves tokens and keeps every pool exact.

After every block: the sum of all balances is the genesis supply; the bonded pool
holds exactly the sum of bonds, the unbonding pool the sum of pending entries,
the community pool what was slashed; every candidate's tally is the sum of the
bonds that approve it.
"""

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consensus import epoch_of, producer_set, producers_for_height
from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.staking import (
    BOND,
    UNBOND,
    UNJAIL,
    VOTE_PRODUCERS,
    Bond,
    Unbond,
    Unjail,
    VoteProducers,
)
from core import Vote, VoteType, address_of
from tests.consensus.staking_helpers import (
    ADDR,
    CHAIN,
    KEYS,
    PARAMS,
    PUB,
    Chain,
    check_invariants,
)

STAKERS = 6
amounts = st.integers(min_value=0, max_value=3_000)
ops = st.one_of(
    st.tuples(st.just("bond"), st.integers(0, STAKERS - 1), amounts),
    st.tuples(st.just("unbond"), st.integers(0, STAKERS - 1), amounts),
    st.tuples(st.just("vote"), st.integers(0, STAKERS - 1), st.sets(st.integers(0, 2), max_size=3)),
    st.tuples(st.just("evidence"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("unjail"), st.integers(0, 2), st.just(0)),
)
blocks = st.lists(
    st.tuples(st.lists(ops, max_size=4), st.sets(st.integers(0, 2)), st.integers(0, 2)),
    min_size=1,
    max_size=16,
)


def build_tx(chain: Chain, op):
    kind, who, arg = op
    key = KEYS[who]
    if kind == "bond":
        return chain.tx(key, BOND, Bond(arg))
    if kind == "unbond":
        return chain.tx(key, UNBOND, Unbond(arg))
    if kind == "vote":
        return chain.tx(key, VOTE_PRODUCERS, VoteProducers(tuple(sorted(PUB[i] for i in arg))))
    if kind == "unjail":
        return chain.tx(key, UNJAIL, Unjail())
    # Conflicting prevotes at the last executed height (refused at height 0).
    height, round_ = chain.height, arg
    votes = [
        Vote.create(key, CHAIN, VoteType.PREVOTE, height, round_, bytes([b]) * 32) for b in (1, 2)
    ]
    return chain.tx(KEYS[7], SUBMIT_EVIDENCE, SubmitEvidence(*votes))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks)
def test_staking_conserves_tokens_and_pools(plan):
    chain = Chain()
    supply = chain.genesis.total_supply
    for block_ops, signer_ids, proposer in plan:
        txs = [build_tx(chain, op) for op in block_ops]
        producers = producers_for_height(chain.state, chain.height + 1).keys
        chain.block(
            *txs,
            signers=tuple(PUB[i] for i in sorted(signer_ids)),
            proposer=producers[proposer % len(producers)],
        )
        check_invariants(chain.state, supply)


# Producers 0..2 and stakers 3..5: unbond a share of the bond (100: all of it), bond, vote.
hold_ops = st.one_of(
    st.tuples(st.just("unbond"), st.integers(0, STAKERS - 1), st.sampled_from([1, 50, 100])),
    st.tuples(st.just("bond"), st.integers(0, STAKERS - 1), st.integers(1, 1_500)),
    st.tuples(st.just("vote"), st.integers(0, STAKERS - 1), st.sets(st.integers(0, 2), max_size=3)),
)
hold_plans = st.lists(st.lists(hold_ops, max_size=3), min_size=1, max_size=28)
KEY_OF_ADDRESS = {address_of(PUB[i]): PUB[i] for i in range(STAKERS)}


def hold_tx(chain: Chain, op):
    kind, who, arg = op
    if kind == "unbond":
        return chain.tx(
            KEYS[who], UNBOND, Unbond(max(1, chain.staker(ADDR[who]).bonded * arg // 100))
        )
    return build_tx(chain, op)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hold_plans)
# Every producer leaves in block 1: elections fail and carry them over, bonds unbonding.
@example([[("unbond", 0, 100), ("unbond", 1, 100), ("unbond", 2, 100)]])
def test_no_producer_is_paid_back_while_it_can_be_slashed(plan):
    """A producer's own unbonding is paid only after the evidence age has passed since
    the last height of every epoch it produced, elected or carried over."""
    chain = Chain()
    e, age = PARAMS.epoch_length, PARAMS.max_evidence_age_blocks
    for block_ops in [*plan, *[[]] * (4 * e)]:
        chain.block(*(hold_tx(chain, op) for op in block_ops))
        check_invariants(chain.state, chain.genesis.total_supply)
        for event in chain.last.begin_events:
            if event.kind != "unbonded":
                continue
            key = KEY_OF_ADDRESS.get(bytes.fromhex(event.get("staker")))
            for epoch in range(epoch_of(chain.height, e) + 2):
                record = producer_set(chain.state, epoch)
                if record is not None and key in record.keys:
                    # Evidence of its last vote of that epoch is no longer accepted.
                    assert (epoch + 1) * e + age < chain.height, (key, epoch, chain.height)
