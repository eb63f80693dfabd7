"""Issued currencies against state no honest chain holds: the invariants the handlers
and the audit check (issuing, transferring and redeeming through governance are in
tests/consensus/test_currency_governance.py)."""

from __future__ import annotations

import pytest

from core.errors import NodeFault
from tests.vm.helpers import CHAIN, KEYS, PARAMS, REGISTRY, context, funded, signed
from vm import (
    Balance,
    Currency,
    CurrencyList,
    Executor,
    Overlay,
    balance_key,
    currency_key,
    verify_signed_tx,
)
from vm.currency import BURN, CURRENCY_LIST_KEY, Burn, check_grant, check_supply, revoke_all_of

ISSUER = KEYS[1].address
HOLDERS = [k.address for k in KEYS[:3]]


def usd(minted: int, burned: int) -> Currency:
    return Currency("USD", 2, ISSUER, False, minted, burned, 0, bytes(32), 0, 1)


def with_currencies(
    *records: Currency, listed: tuple[str, ...] | None = None, **balances: int
) -> dict[bytes, bytes]:
    """A funded state listing ``listed`` (default: the records' symbols, sorted), with
    the records and KEYS[0]'s balance in each currency named in ``balances``."""
    state = funded(1_000, 1_000, 1_000)
    symbols = tuple(sorted(c.symbol for c in records)) if listed is None else listed
    state[CURRENCY_LIST_KEY] = CurrencyList(symbols).encode()
    for record in records:
        state[currency_key(record.symbol)] = record.encode()
    for symbol, amount in balances.items():
        state[balance_key(KEYS[0].address, symbol)] = Balance(amount).encode()
    return state


def burn(state: dict[bytes, bytes], amount: int):
    raw = signed(KEYS[0], 0, Burn("USD", amount, b"ref"), tx_type=BURN)
    vtx = verify_signed_tx(raw, CHAIN, REGISTRY, PARAMS.max_tx_bytes)
    return Executor(REGISTRY).execute_block(state, [vtx], context(), strict=True)


def test_a_burn_past_what_was_minted_halts_instead_of_counting_it():
    # Balances sum to at most minted - burned, so a holder never burns past minted; a
    # state where it could (a balance no mint made) is a broken invariant.
    assert burn(with_currencies(usd(10, 0), USD=10), 10).receipts[0].code == "ok"
    with pytest.raises(NodeFault) as info:
        burn(with_currencies(usd(10, 5), USD=10), 10)
    assert "USD: burned 15 over minted 10" in str(info.value.__cause__)


def test_a_listed_currency_without_its_record_halts_grants_and_revocations():
    state = with_currencies(usd(10, 0), listed=("EUR", "USD"))
    with pytest.raises(NodeFault, match="currency EUR is listed but has no record"):
        check_grant(state, "GBP", 2, ISSUER, PARAMS.max_currencies)
    with pytest.raises(NodeFault, match="currency EUR is listed but has no record"):
        revoke_all_of(Overlay(state), ISSUER)


def test_the_supply_audit_names_each_broken_invariant():
    assert check_supply(with_currencies(usd(10, 3), USD=7), HOLDERS) == []
    # What escrows hold in it counts with the balances.
    assert check_supply(with_currencies(usd(10, 3), USD=5), HOLDERS, {"USD": 2}) == []
    assert check_supply(with_currencies(usd(10, 3), USD=5), HOLDERS) == [
        "USD not conserved: minted 10 - burned 3 != balances 5 + escrow 0"
    ]
    # More burned than minted, though balances and escrow make up the difference.
    assert check_supply(with_currencies(usd(3, 5)), HOLDERS, {"USD": -2}) == [
        "USD not conserved: minted 3 - burned 5 != balances 0 + escrow -2"
    ]
    unlisted = with_currencies(usd(10, 3), listed=("USD", "EUR", "USD"), USD=7)
    assert check_supply(unlisted, HOLDERS) == [
        "currency list ('USD', 'EUR', 'USD') is not sorted and unique",
        "currency EUR is listed but has no record",
    ]
