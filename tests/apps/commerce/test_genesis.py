"""The commerce section of genesis: parameters, JSON form, validation, genesis state."""

import copy
import json
from dataclasses import replace

import pytest

from apps.commerce import CommerceGenesis, CommerceParams, keys
from apps.commerce.model import Role, RoleRecord
from core import DecodeError, PrivateKey, format_address
from genesis import Genesis, GenesisAccount, GenesisValidator, InvalidGenesis, genesis_state
from vm.params import ChainParams

KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(4)]
TREASURY = bytes([0x7E]) * 20


def commerce(**params):
    return CommerceGenesis((KEYS[0].address,), TREASURY, CommerceParams(**params))


def sample(section=None):
    return Genesis(
        chain_id="liveledger-test",
        genesis_time_ms=1_700_000_000_000,
        params=ChainParams.default(),
        accounts=(GenesisAccount(KEYS[1].address, 10**12),),
        validators=(GenesisValidator("node0", KEYS[2].public_key, 1),),
        commerce=section,
    )


def test_round_trips():
    g = sample(commerce())
    assert Genesis.decode(g.encode()) == g
    assert Genesis.from_json(json.loads(json.dumps(g.to_json()))) == g
    doc = g.to_json()["commerce"]
    assert doc["registrars"] == [format_address(KEYS[0].address)]
    assert doc["params"]["accept_window_ms"] == CommerceParams().accept_window_ms


def test_section_is_optional_and_changes_the_hash():
    plain = sample()
    assert "commerce" not in plain.to_json()
    assert Genesis.from_json(plain.to_json()) == plain
    assert sample(commerce()).hash != plain.hash
    assert sample(commerce(fee_bps=101)).hash != sample(commerce()).hash


def test_genesis_state_holds_config_and_registrar_roles():
    g = sample(commerce())
    state = genesis_state(g)
    assert CommerceGenesis.decode(state[keys.CONFIG_KEY]) == g.commerce
    role = RoleRecord.decode(state[keys.role_key(KEYS[0].address)])
    assert role.roles == int(Role.REGISTRAR)
    assert keys.CONFIG_KEY not in genesis_state(sample())


def _bad(mutate):
    doc = copy.deepcopy(sample(commerce()).to_json())
    mutate(doc["commerce"])
    return doc


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.pop("treasury"), r"commerce: missing field\(s\): treasury"),
        (lambda c: c.update(extra=1), r"commerce: unknown field\(s\): extra"),
        (lambda c: c["params"].pop("fee_bps"), r"commerce.params: missing field\(s\): fee_bps"),
        (
            lambda c: c["params"].update(fee_bps=True),
            "commerce.params.fee_bps: expected an integer",
        ),
        (lambda c: c["params"].update(fee_bps=9_000), "fee_bps \\+ max_commission_bps"),
        (lambda c: c["params"].update(dispute_window_ms=10**12), "dispute_window_ms must be in"),
        (lambda c: c["params"].update(accept_window_ms=0), "accept_window_ms must be in 1.."),
        (
            lambda c: c["params"].update(ship_window_ms=2**60),
            "ship_window_ms must be in 1..9007199254740991",
        ),
        (lambda c: c["params"].update(review_max_bytes=10**6), "review_max_bytes must be in"),
        (lambda c: c["params"].update(max_deal_ms=10**12), "max_deal_ms must be in"),
        (
            lambda c: c["params"].update(bid_increment_steps=[1, 2]),
            "bid_increment_steps needs 7 steps for 6 bounds, got 2",
        ),
        (
            lambda c: c["params"].update(bid_increment_bounds=[50, 30, 100, 300, 1000, 2000]),
            "bid_increment_bounds must increase",
        ),
        (
            lambda c: c["params"].update(bid_increment_steps=[1, 2, 3, 5, 10, 20, 0]),
            "bid_increment_steps must be in 1..",
        ),
        (
            lambda c: c["params"].update(bid_increment_steps=5),
            "commerce.params.bid_increment_steps: expected a list",
        ),
        (
            lambda c: c["params"].update(auction_max_lead_ms=10**10),
            "auction_max_lead_ms \\+ auction_max_ms",
        ),
        (lambda c: c["params"].update(auction_min_ms=10**6), "auction_min_ms .* at most"),
        # A begin-block hook's budget: at least one, at most what a block's events hold.
        (
            lambda c: c["params"].update(max_deadlines_per_block=0),
            "max_deadlines_per_block must be in 1..100000, got 0",
        ),
        (
            lambda c: c["params"].update(max_deadlines_per_block=10**7),
            "max_deadlines_per_block must be in 1..100000, got 10000000",
        ),
        (
            lambda c: c["params"].update(max_auction_ends_per_block=10**6),
            "max_auction_ends_per_block must be in 1..100000, got 1000000",
        ),
        (lambda c: c.update(registrars=[]), "at least one registrar"),
        (lambda c: c.update(registrars=c["registrars"] * 2), "must be distinct"),
        (lambda c: c.update(treasury="ll1nope"), r"commerce.treasury: bad address"),
        (lambda c: c.update(registrars="x"), "expected a list"),
    ],
)
def test_validation_errors(mutate, message):
    with pytest.raises(InvalidGenesis, match=message) as info:
        Genesis.from_json(_bad(mutate))
    assert info.value.code == "invalid_genesis"


def test_hook_budgets_up_to_their_cap_are_valid():
    # 10x and 100x the defaults: a genesis may raise them far before they are refused.
    section = commerce(max_deadlines_per_block=100_000, max_auction_ends_per_block=100_000)
    assert Genesis.from_json(sample(section).to_json()).commerce == section


def test_params_checked_on_decode_too():
    with pytest.raises(DecodeError):
        CommerceParams(fee_bps=5_000, max_commission_bps=5_001)
    g = sample(commerce())
    assert replace(g.commerce.params, fee_bps=1).fee_bps == 1
