"""A type's fast path (``TxType.fast_path``) against the executor's generic path.

The executor runs ``transfer``'s fast path unless it checks declarations, which runs
the generic path (fee and nonce, snapshot, ``apply_transfer``, revert on failure).
Both must leave the same state, receipts and inclusion verdicts, whatever the block.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec import UINT64_MAX
from core.errors import InvalidBlock, NodeFault
from tests.vm.helpers import KEYS, PARAMS, Outcome, block_outcome, context, funded, transfer
from vm import (
    Account,
    BlockContext,
    Executor,
    Overlay,
    Registry,
    Transfer,
    TxInfo,
    VerifiedTx,
    account_key,
    default_registry,
)
from vm.transfer import TX_TYPES, execute_transfer

POOL = bytes([0xAB]) * 20
FRESH = bytes([0xCD]) * 20
SENDERS = 4
# Recipients: every key (senders and two that never send), a module account, an
# address nobody holds.
RECIPIENTS = [k.address for k in KEYS] + [POOL, FRESH]


def registry() -> Registry:
    r = default_registry()
    r.add_module_account(POOL, "pool")
    return r


def outcome(executor: Executor, state: dict[bytes, bytes], txs: list[VerifiedTx]) -> Outcome:
    return block_outcome(executor, state, txs, context())


tx_spec = st.tuples(
    st.integers(0, SENDERS - 1),  # sender
    st.sampled_from([0, 0, 0, 0, -1, 1]),  # nonce against the next expected one
    st.integers(0, len(RECIPIENTS) - 1),  # recipient
    st.one_of(st.integers(0, 3_000), st.just(UINT64_MAX)),  # amount
    st.sampled_from([10, 11, 500]),  # fee
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    balances=st.lists(
        st.one_of(st.integers(0, 5_000), st.just(UINT64_MAX // 2)),
        min_size=SENDERS + 2,
        max_size=SENDERS + 2,
    ),
    specs=st.lists(tx_spec, min_size=1, max_size=12),
)
def test_transfer_fast_path_matches_the_generic_path(
    balances: list[int], specs: list[tuple[int, int, int, int, int]]
) -> None:
    state = funded(*balances)
    nonces = [0] * SENDERS
    txs = []
    for sender, skew, to, amount, fee in specs:
        nonce = max(0, nonces[sender] + skew)
        nonces[sender] = nonce + 1
        txs.append(transfer(KEYS[sender], nonce, RECIPIENTS[to], amount, fee=fee))
    fast = outcome(Executor(registry()), state, txs)
    generic = outcome(Executor(registry(), check_declarations=True), state, txs)
    assert fast == generic


def counted_registry(calls: list[bytes]) -> Registry:
    def counting(
        state: Overlay,
        tx: TxInfo,
        payload: Transfer,
        sender: Account,
        ctx: BlockContext,
        **kwargs: Any,
    ) -> bytes:
        calls.append(tx.hash)
        return execute_transfer(state, tx, payload, sender, ctx, **kwargs)

    (decl,) = TX_TYPES
    r = Registry()
    r.register(replace(decl, fast_path=counting))
    return r


def test_the_executor_takes_the_fast_path_unless_it_checks_declarations() -> None:
    state = funded(1_000, 1_000)
    txs = [transfer(KEYS[0], 0, KEYS[1].address, 5), transfer(KEYS[1], 0, FRESH, 7)]
    calls: list[bytes] = []
    Executor(counted_registry(calls)).execute_block(state, txs, context(), strict=True)
    assert calls == [v.hash for v in txs]
    calls.clear()
    Executor(counted_registry(calls), check_declarations=True).execute_block(
        state, txs, context(), strict=True
    )
    assert calls == []


def test_a_bound_fast_path_refuses_the_module_account() -> None:
    # ``default_registry`` binds the live module-account view to both paths.
    state = funded(1_000)
    (receipt,) = (
        Executor(registry())
        .execute_block(state, [transfer(KEYS[0], 0, POOL, 5)], context(), strict=True)
        .receipts
    )
    assert receipt.code == "module_account"


@pytest.mark.parametrize("check", [False, True])
def test_a_credit_past_the_supply_cap_halts_either_path(check: bool) -> None:
    # Genesis caps the supply below 2**64, so this state cannot arise: if it does,
    # the invariant is broken and the node halts rather than write a wrapped balance.
    state = funded(1_000)
    state[account_key(FRESH)] = Account(UINT64_MAX - 3, 0).encode()
    tx = transfer(KEYS[0], 0, FRESH, 5)
    with pytest.raises(NodeFault):
        Executor(registry(), check_declarations=check).execute_block(
            state, [tx], context(), strict=True
        )


@pytest.mark.parametrize("check", [False, True])
def test_a_recipient_record_that_does_not_decode_halts_either_path(check: bool) -> None:
    # Corrupt state is a fault of this node: a DecodeError (an Invalid) let out of a
    # fast path would read as a bad block to a validator.
    state = funded(1_000)
    state[account_key(FRESH)] = b"\xc1"
    with pytest.raises(NodeFault):
        Executor(registry(), check_declarations=check).execute_block(
            state, [transfer(KEYS[0], 0, FRESH, 5)], context(), strict=True
        )


def test_a_nonce_past_u64_is_refused_alike_by_either_path() -> None:
    # No account gets there (genesis sets no nonces; it takes 2**64 transactions), but
    # if one did, its last nonce is left out by the inclusion checks, before either
    # path runs: never an account no node could read back, never a faulted block.
    state = funded(1_000, nonces=(UINT64_MAX,))
    tx = transfer(KEYS[0], UINT64_MAX, FRESH, 5)
    refusals = []
    for check in (False, True):
        executor = Executor(registry(), check_declarations=check)
        with pytest.raises(InvalidBlock) as info:
            executor.execute_block(state, [tx], context(), strict=True)
        built = executor.execute_block(state, [tx], context(), strict=False)
        refusals.append((info.value.message, [(v, e.code) for v, e in built.rejected]))
    assert refusals[0] == refusals[1]
    assert "nonce_exhausted" in refusals[0][0] and refusals[0][1] == [(tx, "nonce_exhausted")]


def test_fast_path_keeps_the_params_fee_floor() -> None:
    # The inclusion checks run before either path: a fee under the floor is left out.
    state = funded(1_000)
    low = transfer(KEYS[0], 0, FRESH, 5, fee=PARAMS.min_fee - 1)
    result = Executor(registry()).execute_block(state, [low], context(), strict=False)
    assert [e.code for _, e in result.rejected] == ["fee_too_low"]
