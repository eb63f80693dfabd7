"""The tip's fast path (``apps.commerce.sessions.execute_tip``) against the generic path.

The executor runs a type's fast path unless it checks declarations, which runs the
generic path (fee and nonce, snapshot, ``process_tip``, the write check, revert on
failure). Both must leave the same state, receipts and inclusion verdicts, whatever
the block: native and issued-currency tips, every failure, in any mix.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.commerce import keys
from apps.commerce import payloads as tx
from apps.commerce.model import Session
from core.codec import UINT64_MAX
from core.errors import NodeFault
from tests.apps.commerce.helpers import (
    CHAIN,
    CHAIN_PARAMS,
    PRODUCER,
    REGISTRY,
    Chain,
    new_chain,
    open_shop,
)
from tests.vm.helpers import Outcome, block_outcome
from vm import Account, BlockContext, Executor, Receipt, VerifiedTx, account_key
from vm.currency import MINT, Mint

USD = "USD"
TIPPERS = ("alice", "bob", "stranger", "host", "issuer")
MESSAGES = ("", "great show", "x" * 140, "x" * 141, "é" * 70, "é" * 71)


def _chain() -> Chain:
    """Session 1 open (hosted by ``host``), session 2 closed; USD issued, alice holds
    some."""
    chain = new_chain("issuer", balance=10**6)
    chain.add_currency(USD, "issuer")
    chain.ok("issuer", MINT, Mint(USD, chain.addr("alice"), 5_000))
    shop = open_shop(chain)
    chain.ok(shop.merchant, tx.OPEN_SESSION, tx.OpenSession(chain.addr("bob"), 0, "second"))
    chain.ok(shop.merchant, tx.CLOSE_SESSION, tx.SessionRef(2))
    return chain


CHAIN_AT = _chain()
# ``stranger`` holds next to nothing.
STATE = {**CHAIN_AT.state, account_key(CHAIN_AT.addr("stranger")): Account(40, 0).encode()}


def _with_tips_total(state: dict[bytes, bytes], total: int) -> dict[bytes, bytes]:
    key = keys.session_key(1)
    session = Session.decode(state[key])
    return {**state, key: replace(session, tips_total=total).encode()}


def _next_block() -> BlockContext:
    return BlockContext(
        CHAIN, CHAIN_AT.height + 1, CHAIN_AT.time_ms + 1_000, PRODUCER, CHAIN_PARAMS
    )


def _outcome(executor: Executor, state: dict[bytes, bytes], txs: list[VerifiedTx]) -> Outcome:
    return block_outcome(executor, state, txs, _next_block())


tip_spec = st.tuples(
    st.sampled_from(("alice", *TIPPERS)),  # alice holds USD: twice the odds
    st.sampled_from([1, 1, 1, 1, 2, 3]),  # session (3 does not exist)
    # Amounts about the stranger's balance after each fee (40 - 30, 40 - 11, 40 - 10).
    st.integers(0, 1_200) | st.sampled_from([0, 1, 9, 10, 11, 29, 30, 31, 10**6, UINT64_MAX]),
    st.sampled_from(MESSAGES),
    st.sampled_from(["", "", USD, USD, "EUR"]),  # currency (EUR was never issued)
    st.sampled_from([0, 0, 0, 1]),  # nonce skew: 1 leaves a gap
    st.sampled_from([10, 11, 30]),  # fee
)


def _tips(specs: list[tuple[str, int, int, str, str, int, int]]) -> list[VerifiedTx]:
    """Signed tips, one per (tipper, session, amount, message, currency, nonce skew,
    fee); a skew of 1 leaves a gap in the tipper's nonces."""
    nonces = {name: CHAIN_AT.nonces.get(CHAIN_AT.addr(name), 0) for name in TIPPERS}
    signer = Chain({}, commerce=False)
    txs = []
    for who, session, amount, message, currency, skew, fee in specs:
        address = CHAIN_AT.addr(who)
        signer.nonces[address] = nonces[who] + skew
        nonces[who] += skew + 1
        txs.append(signer.sign(who, tx.TIP, tx.Tip(session, amount, message, currency), fee=fee))
    return txs


def _both_paths_agree(state: dict[bytes, bytes], txs: list[VerifiedTx]) -> Outcome:
    fast = _outcome(Executor(REGISTRY), state, txs)
    assert fast == _outcome(Executor(REGISTRY, check_declarations=True), state, txs)
    return fast


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(tip_spec, min_size=1, max_size=10),
    tips_total=st.sampled_from([0, UINT64_MAX - 1_000, UINT64_MAX - 1]),
    commerce=st.sampled_from([True, True, True, False]),
    host_absent=st.booleans(),
)
def test_tip_fast_path_matches_the_generic_path(
    specs: list[tuple[str, int, int, str, str, int, int]],
    tips_total: int,
    commerce: bool,
    host_absent: bool,
) -> None:
    state = _with_tips_total(STATE, tips_total)
    if not commerce:
        del state[keys.CONFIG_KEY]
    if host_absent:
        # A host needs no account: its first tip makes one.
        del state[account_key(CHAIN_AT.addr("host"))]
    _both_paths_agree(state, _tips(specs))


@pytest.mark.parametrize("fee", [10, 11, 30])
@pytest.mark.parametrize("over", [-1, 0, 1])
def test_a_tip_of_the_whole_balance_after_the_fee(fee: int, over: int) -> None:
    # The stranger holds 40: a tip of 40 - fee empties it, one more is short.
    amount = 40 - fee + over
    state = _with_tips_total(STATE, 0)
    _, receipts, _, _ = _both_paths_agree(state, _tips([("stranger", 1, amount, "", "", 0, fee)]))
    code = Receipt.decode(receipts[0]).code
    assert code == ("insufficient_funds" if over > 0 else "ok")


@pytest.mark.parametrize("currency", ["", USD])
def test_a_tip_makes_an_absent_host_account(currency: str) -> None:
    host = account_key(CHAIN_AT.addr("host"))
    state = {k: v for k, v in STATE.items() if k != host}
    changes, _, _, _ = _both_paths_agree(state, _tips([("alice", 1, 7, "hi", currency, 0, 10)]))
    written = dict(changes)
    if currency:
        assert host not in written  # the host's USD balance record holds the tip
    else:
        assert Account.decode(written[host]) == Account(7, 0)


@pytest.mark.parametrize("check", [False, True])
def test_a_session_record_that_does_not_decode_halts_either_path(check: bool) -> None:
    # Corrupt state is a fault of this node, never a verdict on the block.
    state = {**STATE, keys.session_key(1): b"\xc1"}
    with pytest.raises(NodeFault):
        Executor(REGISTRY, check_declarations=check).execute_block(
            state, _tips([("alice", 1, 5, "", "", 0, 10)]), _next_block(), strict=True
        )


def test_the_fast_path_runs_and_tips_the_host() -> None:
    chain = _chain()
    chain.executor = Executor(REGISTRY)  # the fast path (the helpers check declarations)
    before = chain.balance("host")
    receipt = chain.ok("alice", tx.TIP, tx.Tip(1, 250, "great show"))
    assert [(e.kind, e.get("amount")) for e in receipt.events] == [("commerce.tip", "250")]
    assert chain.balance("host") == before + 250
    assert Session.decode(chain.state[keys.session_key(1)]).tips_total == 250


@pytest.mark.parametrize("check", [False, True])
def test_a_tip_past_the_supply_cap_halts_either_path(check: bool) -> None:
    # The supply is capped below 2**64: a host balance past it is a broken invariant.
    host = account_key(CHAIN_AT.addr("host"))
    state = {**STATE, host: Account(UINT64_MAX - 3, 5).encode()}
    signer = Chain({}, commerce=False)
    signer.nonces[CHAIN_AT.addr("alice")] = CHAIN_AT.nonces.get(CHAIN_AT.addr("alice"), 0)
    tip = signer.sign("alice", tx.TIP, tx.Tip(1, 5, ""))
    with pytest.raises(NodeFault):
        Executor(REGISTRY, check_declarations=check).execute_block(
            state, [tip], _next_block(), strict=True
        )
