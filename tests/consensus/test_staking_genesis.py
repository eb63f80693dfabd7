"""The genesis staking section: JSON form, hash, validation and the state it seeds."""

import json
from dataclasses import replace

import pytest

from consensus import GenesisStaking, producers_for_height
from consensus.staking_state import BONDED_POOL, COMMUNITY_POOL, active_params
from consensus.validators import ValidatorSet
from core.codec import UINT64_MAX
from genesis import Genesis, GenesisAccount, InvalidGenesis, genesis_state
from genesis.document import genesis_json_bytes, parse_json
from tests.consensus.staking_helpers import PARAMS, PUB, SELF_BOND, check_invariants, make_genesis


def test_json_round_trip_with_staking():
    g = make_genesis()
    doc = g.to_json()
    assert doc["staking"] == {"self_bond": SELF_BOND}
    assert list(doc)[-1] == "staking"
    assert Genesis.from_json(doc) == g
    assert Genesis.from_json(parse_json(genesis_json_bytes(g))) == g
    assert Genesis.decode(g.encode()) == g


def test_without_staking_the_section_is_absent():
    g = make_genesis(staking=False)
    assert "staking" not in g.to_json()
    assert Genesis.from_json(g.to_json()).staking is None
    assert g.hash != make_genesis().hash
    assert (
        make_genesis().hash != replace(make_genesis(), staking=GenesisStaking(SELF_BOND + 1)).hash
    )


def test_staking_json_is_strict():
    doc = make_genesis().to_json()
    doc["staking"]["extra"] = 1
    with pytest.raises(InvalidGenesis, match="staking: unknown field"):
        Genesis.from_json(doc)
    doc = make_genesis().to_json()
    doc["staking"] = {}
    with pytest.raises(InvalidGenesis, match="staking: missing field"):
        Genesis.from_json(doc)
    doc = make_genesis().to_json()
    doc["staking"]["self_bond"] = "1"
    with pytest.raises(InvalidGenesis, match="staking.self_bond: expected an integer"):
        Genesis.from_json(json.loads(json.dumps(doc)))


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"staking": GenesisStaking(PARAMS.min_self_bond - 1)},
            "staking: self_bond must be at least min_self_bond (100), got 99",
        ),
        (
            {"params": PARAMS.replace(max_producers=2)},
            "staking: at most max_producers (2) validators, got 3",
        ),
        (
            # Heights map to epochs by division: 0 would fail every block that asks.
            {"params": PARAMS.replace(epoch_length=0, proposal_voting_blocks=6)},
            "staking: epoch_length must be at least 1, got 0",
        ),
        (
            # A candidate with no self-bond would have nothing to lose.
            {"params": PARAMS.replace(min_self_bond=0)},
            "staking: min_self_bond must be at least 1, got 0",
        ),
        (
            {"params": PARAMS.replace(slash_bps=10_001)},
            "staking: slash_bps must be in 1..10000, got 10001",
        ),
        (
            {
                "params": PARAMS.replace(
                    max_evidence_age_blocks=PARAMS.unbonding_blocks - PARAMS.epoch_length
                )
            },
            "staking: max_evidence_age_blocks must be in 1..unbonding_blocks-epoch_length-1",
        ),
        (
            {"accounts": (GenesisAccount(COMMUNITY_POOL, 5),)},
            f"staking: accounts may not fund a module account, got {COMMUNITY_POOL.hex()}",
        ),
        (
            {"accounts": (GenesisAccount(BONDED_POOL, UINT64_MAX - 2 * SELF_BOND),)},
            "total supply",
        ),
    ],
)
def test_invalid_staking_sections(changes, message):
    g = make_genesis()
    with pytest.raises(InvalidGenesis, match=message.replace("(", r"\(").replace(")", r"\)")):
        Genesis(
            **{
                **{
                    f: getattr(g, f)
                    for f in (
                        "chain_id",
                        "genesis_time_ms",
                        "params",
                        "accounts",
                        "validators",
                        "staking",
                    )
                },
                **changes,
            }
        )


def test_genesis_state_conserves_the_supply():
    g = make_genesis()
    state = genesis_state(g)
    check_invariants(state, g.total_supply)
    assert active_params(state) == PARAMS
    assert producers_for_height(state, 1) == ValidatorSet.of(PUB[:3])
    # The section only adds entries: the accounts are written as before.
    plain = genesis_state(make_genesis(staking=False))
    assert all(state[k] == v for k, v in plain.items())
