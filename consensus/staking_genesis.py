"""The staking section of genesis and the state it seeds.

With the section present, every genesis validator becomes a consortium member
and a candidate, its own account (the address of its node key) bonds
``self_bond`` and approves itself, and the validators form the producer set of
epoch 0 (their first term, ``ProducerTerm``). The bonds are minted into the
bonded pool: they are part of the genesis supply. The chain parameters are
written to state, where governance changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consensus.staking_state import (
    ACTIVE_PARAMS_KEY,
    BONDED_POOL,
    CANDIDATE_LIST_KEY,
    MAX_MEMBERS,
    MEMBER_LIST_KEY,
    MODULE_ACCOUNTS,
    TOTALS_KEY,
    Candidate,
    KeyList,
    Member,
    ProducerSet,
    ProducerTerm,
    Staker,
    Totals,
    candidate_key,
    check_staking_params,
    member_key,
    producer_set_key,
    producer_term_key,
    staker_key,
)
from core.codec import Wire
from core.errors import DecodeError
from core.keys import address_of
from vm.accounts import Account, account_key
from vm.params import ChainParams


@dataclass(frozen=True, slots=True)
class GenesisStaking(Wire):
    # Bonded by each genesis validator's own account, minted into the bonded pool.
    self_bond: int

    MAX_ENCODED = 16


def check_genesis_staking(
    staking: GenesisStaking,
    params: ChainParams,
    validator_keys: Sequence[bytes],
    account_addresses: Iterable[bytes],
) -> None:
    """Raise ``DecodeError`` naming what makes this staking section unusable."""
    check_staking_params(params)
    # A validator below the minimum could never be re-elected after epoch 0.
    if staking.self_bond < params.min_self_bond:
        raise DecodeError(
            f"self_bond must be at least min_self_bond ({params.min_self_bond}), "
            f"got {staking.self_bond}"
        )
    # Epoch 0's producers are the validators, and no later set can be larger.
    if len(validator_keys) > min(params.max_producers, MAX_MEMBERS):
        raise DecodeError(
            f"at most max_producers ({params.max_producers}) validators, got {len(validator_keys)}"
        )
    taken = set(MODULE_ACCOUNTS).intersection(account_addresses)
    # Module account balances are set by staking state alone.
    if taken:
        raise DecodeError(f"accounts may not fund a module account, got {sorted(taken)[0].hex()}")


def genesis_bonded(staking: GenesisStaking, validator_count: int) -> int:
    """Tokens minted into the bonded pool (part of the total supply)."""
    return staking.self_bond * validator_count


def staking_genesis_state(
    staking: GenesisStaking, params: ChainParams, validators: Sequence[tuple[str, bytes]]
) -> dict[bytes, bytes]:
    """The staking entries of the state before block 1; ``validators`` is (name, key)."""
    bond = staking.self_bond
    keys = tuple(sorted(key for _, key in validators))
    state: dict[bytes, bytes] = {
        ACTIVE_PARAMS_KEY: params.encode(),
        MEMBER_LIST_KEY: KeyList(keys).encode(),
        CANDIDATE_LIST_KEY: KeyList(keys).encode(),
        TOTALS_KEY: Totals(bond * len(keys), 0, 0).encode(),
        producer_set_key(0): ProducerSet(0, 0, keys, (bond,) * len(keys)).encode(),
    }
    if bond:
        state[account_key(BONDED_POOL)] = Account(bond * len(keys), 0).encode()
    for name, key in validators:
        state[member_key(key)] = Member(name, 0).encode()
        state[candidate_key(key)] = Candidate(0, bond, False, 0, 0, ()).encode()
        state[staker_key(address_of(key))] = Staker(bond, (key,), ()).encode()
        # Epoch 0 is each validator's first term (``store_producer_set`` for later ones).
        state[producer_term_key(address_of(key))] = ProducerTerm(0).encode()
    return state
