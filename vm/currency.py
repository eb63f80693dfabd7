"""Issued currencies: stable tokens a consortium member issues beside the native token.

The native token stays the fee and staking token. Governance grants a member the
issuer role for one currency (consensus/governance.py: ``propose_grant_issuer``,
``propose_revoke_issuer``), which calls ``grant_issuer`` / ``revoke_issuer`` here.
The issuer mints to an address and attests its reserves; any holder transfers,
and burns on redemption (the issuer pays out off chain, against the event).
Balances are ``Balance`` records beside the accounts (vm/accounts.py), moved only
by ``debit`` / ``credit`` / ``move_tokens`` with ``currency=``; the native
account record and its key are unchanged.

Each ``Currency`` counts what was minted and burned, so conservation holds per
currency: ``minted - burned`` equals the sum of its balances and of what
escrows (commerce) hold in it. ``minted`` is checked against 2**64-1
(``u64_overflow``), which makes every credit of the currency overflow-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated

from core.codec import MaxItems, MaxLen, Wire
from core.errors import NodeFault
from core.types import Address, Hash32
from vm.accounts import NATIVE, credit, debit, get_balance, move_tokens
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.params import MAX_CURRENCIES
from vm.prefixes import KeyPrefix
from vm.receipts import MAX_EVENTS, Event
from vm.registry import (
    NO_MODULE_ACCOUNTS,
    TxClass,
    TxFailed,
    TxInfo,
    TxTable,
    refuse_module_account,
    shared_codes,
)
from vm.state import Overlay, StateView, read_obj

MINT = "currency.mint"
BURN = "currency.burn"
ATTEST = "currency.attest"
CURRENCY_TRANSFER = "currency.transfer"
TX_TYPES = TxTable(TxClass.TRANSFER)
# The types that pay a chosen address: ``default_registry`` binds the module accounts.
APPLY_MODULE_CHECK = frozenset({MINT, CURRENCY_TRANSFER})

SYMBOL_CAP = 8
MAX_DECIMALS = 18
# Removing a member revokes all it issues in the governance vote that passes the removal:
# one event each, beside that vote's own two (vote_proposal, member_removed), in a receipt
# of at most MAX_EVENTS.
MAX_ISSUED_PER_MEMBER = MAX_EVENTS - 2
# Canonical symbols only: 2-8 characters, ASCII upper case and digits, a letter first.
# Nothing is normalized anywhere, so "usd", "USD " or a Cyrillic "USD" is simply no
# currency (``unknown_currency``), never an alias of one.
SYMBOL_PATTERN = re.compile(r"[A-Z][A-Z0-9]{1,7}", re.ASCII)

Symbol = Annotated[str, MaxLen(SYMBOL_CAP)]

# Codes several packages' types give through these functions (one meaning each).
CODES: dict[str, str] = {
    "unknown_currency": "no issued currency has that symbol (symbols are exact: upper case)",
    "currency_revoked": "the currency's issuer role is revoked: nothing new in it",
    "not_issuer": "the signer is not the currency's issuer",
    "invalid_symbol": "a symbol that is not 2-8 upper-case letters and digits, a letter first",
    "invalid_decimals": "decimals outside 0..18, or not the revoked currency's own",
    "currency_exists": "a currency with that symbol has an active issuer",
    "too_many_currencies": (
        "the chain already has max_currencies currencies, "
        f"or the member already issues {MAX_ISSUED_PER_MEMBER}"
    ),
    "invalid_amount": "an amount of 0",
    "insufficient_funds": "balance after the fee below the amount",
    "module_account": "a payment to a module account (a staking pool)",
    "u64_overflow": "the currency's minted total would pass 2**64-1",
}


def currency_codes(*codes: str) -> dict[str, str]:
    """``codes`` with their meanings, for a declaration that reaches these functions."""
    return shared_codes(CODES, *codes)


@dataclass(frozen=True, slots=True)
class Currency(Wire):
    symbol: Symbol
    # Display only: amounts on chain are integers of the smallest unit.
    decimals: int
    # The member's address (of its node key), which signs mints and attestations.
    issuer: Address
    # Revoked by governance: no mints, attestations or new listings; holders still
    # transfer, pay open orders out and redeem.
    revoked: bool
    minted: int
    burned: int
    # The issuer's latest attestation of the reserves backing it (in the smallest
    # unit), the hash of its report, and when it was recorded; 0 / zeros before one.
    reserves: int
    report_hash: Hash32
    attested_height: int
    granted_height: int

    MAX_ENCODED = 256

    @property
    def supply(self) -> int:
        """What is outstanding: held in balances and escrows."""
        return self.minted - self.burned


@dataclass(frozen=True, slots=True)
class CurrencyList(Wire):
    symbols: Annotated[tuple[Symbol, ...], MaxItems(MAX_CURRENCIES)]

    MAX_ENCODED = MAX_CURRENCIES * (SYMBOL_CAP + 1) + 8


CURRENCY_LIST_KEY = bytes([KeyPrefix.CURRENCY_LIST])
_CURRENCY_PREFIX = bytes([KeyPrefix.CURRENCY])
_NO_REPORT = bytes(32)


def currency_key(symbol: str) -> bytes:
    """``0x03 || symbol``."""
    return _CURRENCY_PREFIX + symbol.encode()


def get_currency(state: StateView, symbol: str) -> Currency | None:
    return read_obj(state, currency_key(symbol), Currency) if symbol else None


def currency_symbols(state: StateView) -> tuple[str, ...]:
    """Every issued currency's symbol, sorted (revoked ones included)."""
    found = read_obj(state, CURRENCY_LIST_KEY, CurrencyList)
    return () if found is None else found.symbols


def _currencies(state: StateView) -> list[Currency]:
    """Every listed currency's record."""
    found = []
    for symbol in currency_symbols(state):
        currency = get_currency(state, symbol)
        if currency is None:
            raise NodeFault(f"currency {symbol} is listed but has no record")
        found.append(currency)
    return found


def require_currency(state: StateView, symbol: str) -> Currency:
    """The currency ``symbol`` (exactly as stored); ``unknown_currency`` if none."""
    currency = get_currency(state, symbol)
    # Only issued currencies move; the native token is named by the empty symbol.
    if currency is None:
        raise TxFailed(f"no currency {symbol[:SYMBOL_CAP]!r}", "unknown_currency")
    return currency


def require_active(currency: Currency) -> None:
    # A revoked issuer's currency takes nothing new; what is held stays spendable.
    if currency.revoked:
        raise TxFailed(f"currency {currency.symbol} is revoked", "currency_revoked")


def require_priceable(state: StateView, symbol: str) -> None:
    """A price may be set in ``symbol``: the native token, or an active currency."""
    if symbol != NATIVE:
        require_active(require_currency(state, symbol))


def _require_issuer(state: StateView, tx: TxInfo, symbol: str) -> Currency:
    currency = require_currency(state, symbol)
    require_active(currency)
    # Only the member governance granted the role signs for the currency.
    if tx.sender_address != currency.issuer:
        raise TxFailed(
            f"currency {symbol} is issued by {currency.issuer.hex()}, "
            f"signer is {tx.sender_address.hex()}",
            "not_issuer",
        )
    return currency


# --- the issuer role: governance calls these (consensus/governance.py) ---


def check_grant(
    state: StateView, symbol: str, decimals: int, issuer: bytes, max_currencies: int
) -> Currency | None:
    """Raise unless ``symbol`` may be granted to ``issuer`` (an address); returns the
    revoked currency it re-grants."""
    # Symbols are canonical so that no two can look alike (no case or Unicode tricks).
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise TxFailed(
            f"symbol must be 2-8 of A-Z and 0-9, a letter first, got {symbol[:SYMBOL_CAP]!r}",
            "invalid_symbol",
        )
    # Decimals are for display; 18 is the most any wallet shows.
    if not 0 <= decimals <= MAX_DECIMALS:
        raise TxFailed(f"decimals must be in 0..{MAX_DECIMALS}, got {decimals}", "invalid_decimals")
    existing = get_currency(state, symbol)
    if existing is not None:
        # One issuer at a time: a symbol is re-granted only once revoked.
        if not existing.revoked:
            raise TxFailed(f"currency {symbol} has an active issuer", "currency_exists")
        # Balances carry over, so their unit cannot change.
        if existing.decimals != decimals:
            raise TxFailed(
                f"currency {symbol} has {existing.decimals} decimals, got {decimals}",
                "invalid_decimals",
            )
    else:
        count = len(currency_symbols(state))
        # The list is one state value, and every account read lists each currency.
        if count >= max_currencies:
            raise TxFailed(
                f"at most {max_currencies} currencies (max_currencies), got {count}",
                "too_many_currencies",
            )
    issued = sum(1 for c in _currencies(state) if c.issuer == issuer and not c.revoked)
    # Its member's removal must revoke them all in one receipt (MAX_ISSUED_PER_MEMBER).
    if issued >= MAX_ISSUED_PER_MEMBER:
        raise TxFailed(
            f"a member issues at most {MAX_ISSUED_PER_MEMBER} currencies, "
            f"{issuer.hex()} issues {issued}",
            "too_many_currencies",
        )
    return existing


def grant_issuer(
    state: Overlay, symbol: str, decimals: int, issuer: bytes, ctx: BlockContext
) -> None:
    """Make ``issuer`` the issuer of ``symbol``: a new currency, or a revoked one re-granted."""
    existing = check_grant(state, symbol, decimals, issuer, ctx.params.max_currencies)
    if existing is None:
        currency = Currency(symbol, decimals, issuer, False, 0, 0, 0, _NO_REPORT, 0, ctx.height)
        symbols = tuple(sorted((*currency_symbols(state), symbol)))
        state.set_obj(CURRENCY_LIST_KEY, CurrencyList(symbols))
    else:
        currency = replace(existing, issuer=issuer, revoked=False, granted_height=ctx.height)
    state.set_obj(currency_key(symbol), currency)
    state.emit(Event.of("issuer_granted", currency=symbol, issuer=issuer, decimals=decimals))


def check_revoke(state: StateView, symbol: str) -> Currency:
    currency = require_currency(state, symbol)
    require_active(currency)
    return currency


def revoke_issuer(state: Overlay, symbol: str) -> None:
    currency = check_revoke(state, symbol)
    state.set_obj(currency_key(symbol), replace(currency, revoked=True))
    state.emit(Event.of("issuer_revoked", currency=symbol, issuer=currency.issuer))


def revoke_all_of(state: Overlay, issuer: bytes) -> None:
    """Revoke every active currency ``issuer`` issues (its member was removed)."""
    for currency in _currencies(state):
        if currency.issuer == issuer and not currency.revoked:
            revoke_issuer(state, currency.symbol)


# --- transactions ---


@dataclass(frozen=True, slots=True)
class Mint(Wire):
    currency: Symbol
    to: Address
    amount: int

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class Burn(Wire):
    """Redeem: the holder's ``amount`` leaves circulation; the issuer pays out off chain."""

    currency: Symbol
    amount: int
    # The holder's reference for the payout (a hash of bank details sent off chain).
    reference: Annotated[bytes, MaxLen(32)]

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class Attest(Wire):
    currency: Symbol
    # Reserves held off chain, in the currency's smallest unit.
    reserves: int
    # Hash of the attestation report (an auditor's letter, a bank statement).
    report_hash: Hash32

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class CurrencyTransfer(Wire):
    currency: Symbol
    to: Address
    amount: int

    MAX_ENCODED = 64


# What a type moving a currency writes. The account prefix is there because
# ``debit`` / ``credit`` serve the native token too, and tests/test_tx_declarations.py
# cannot tell that the symbol is never empty here (the fee writes the account anyway).
_PAYS = {KeyPrefix.ACCOUNT, KeyPrefix.BALANCE, KeyPrefix.CURRENCY}


def _require_positive(amount: int) -> None:
    # A zero amount would only add noise to the chain.
    if amount <= 0:
        raise TxFailed(f"amount must be positive, got {amount}", "invalid_amount")


@TX_TYPES.declare(
    MINT,
    Mint,
    "the issuer mints an amount of its currency to an address",
    codes=currency_codes(
        "unknown_currency",
        "currency_revoked",
        "not_issuer",
        "invalid_amount",
        "module_account",
        "u64_overflow",
    ),
    events={"currency.minted"},
    writes=_PAYS,
    view="Currency",
)
def apply_mint(
    state: Overlay,
    tx: TxInfo,
    p: Mint,
    ctx: BlockContext,
    *,
    module_accounts: Mapping[bytes, str] = NO_MODULE_ACCOUNTS,
) -> None:
    currency = _require_issuer(state, tx, p.currency)
    _require_positive(p.amount)
    refuse_module_account(module_accounts, p.to, "recipient")
    # Every credit of the currency stays in u64 because the minted total does.
    minted = checked_add(currency.minted, p.amount, f"{currency.symbol} minted")
    state.set_obj(currency_key(currency.symbol), replace(currency, minted=minted))
    credit(state, p.to, p.amount, currency=currency.symbol)
    state.emit(Event.of("currency.minted", currency=currency.symbol, to=p.to, amount=p.amount))


@TX_TYPES.declare(
    BURN,
    Burn,
    "a holder burns an amount of a currency to redeem it with the issuer",
    codes=currency_codes("unknown_currency", "invalid_amount", "insufficient_funds"),
    events={"currency.burned"},
    writes=_PAYS,
    view="Currency",
)
def apply_burn(state: Overlay, tx: TxInfo, p: Burn, ctx: BlockContext) -> None:
    # A revoked currency is still redeemed: the issuer owes what it issued.
    currency = require_currency(state, p.currency)
    _require_positive(p.amount)
    debit(state, tx.sender_address, p.amount, currency=currency.symbol)
    # burned <= minted: the amount was in a balance, and balances sum to at most that.
    burned = currency.burned + p.amount
    if burned > currency.minted:
        raise NodeFault(f"{currency.symbol}: burned {burned} over minted {currency.minted}")
    state.set_obj(currency_key(currency.symbol), replace(currency, burned=burned))
    state.emit(
        Event.of(
            "currency.burned",
            currency=currency.symbol,
            holder=tx.sender_address,
            amount=p.amount,
            reference=p.reference,
        )
    )


@TX_TYPES.declare(
    ATTEST,
    Attest,
    "the issuer records its attestation of the reserves backing its currency",
    codes=currency_codes("unknown_currency", "currency_revoked", "not_issuer"),
    events={"currency.attested"},
    writes={KeyPrefix.CURRENCY},
    view="Currency",
)
def apply_attest(state: Overlay, tx: TxInfo, p: Attest, ctx: BlockContext) -> None:
    currency = _require_issuer(state, tx, p.currency)
    state.set_obj(
        currency_key(currency.symbol),
        replace(
            currency, reserves=p.reserves, report_hash=p.report_hash, attested_height=ctx.height
        ),
    )
    state.emit(
        Event.of(
            "currency.attested",
            currency=currency.symbol,
            reserves=p.reserves,
            supply=currency.supply,
            report_hash=p.report_hash,
        )
    )


@TX_TYPES.declare(
    CURRENCY_TRANSFER,
    CurrencyTransfer,
    "move an amount of an issued currency from the sender to another address",
    codes=currency_codes(
        "unknown_currency", "invalid_amount", "insufficient_funds", "module_account"
    ),
    events={CURRENCY_TRANSFER},
    reads={KeyPrefix.CURRENCY},
    writes={KeyPrefix.ACCOUNT, KeyPrefix.BALANCE},
    view="Account",
)
def apply_currency_transfer(
    state: Overlay,
    tx: TxInfo,
    p: CurrencyTransfer,
    ctx: BlockContext,
    *,
    module_accounts: Mapping[bytes, str] = NO_MODULE_ACCOUNTS,
) -> None:
    # A revoked currency still moves: holders keep what they hold.
    currency = require_currency(state, p.currency)
    _require_positive(p.amount)
    refuse_module_account(module_accounts, p.to, "recipient")
    move_tokens(state, tx.sender_address, p.to, p.amount, currency=currency.symbol)
    state.emit(
        Event.of(
            CURRENCY_TRANSFER,
            currency=currency.symbol,
            sender=tx.sender_address,
            recipient=p.to,
            amount=p.amount,
        )
    )


# --- invariants (tests, audits) ---


def check_supply(
    state: StateView, accounts: Iterable[bytes], held: Mapping[str, int] | None = None
) -> list[str]:
    """Per currency, ``minted - burned`` equals the balances of ``accounts`` (every
    holder) plus what ``held`` says escrows hold in it; each difference as a sentence."""
    problems = []
    addresses = set(accounts)
    symbols = currency_symbols(state)
    if list(symbols) != sorted(set(symbols)):
        problems.append(f"currency list {symbols} is not sorted and unique")
    for symbol in symbols:
        currency = get_currency(state, symbol)
        if currency is None:
            problems.append(f"currency {symbol} is listed but has no record")
            continue
        balances = sum(get_balance(state, a, symbol) for a in addresses)
        escrowed = (held or {}).get(symbol, 0)
        if currency.burned > currency.minted or balances + escrowed != currency.supply:
            problems.append(
                f"{symbol} not conserved: minted {currency.minted} - burned {currency.burned} "
                f"!= balances {balances} + escrow {escrowed}"
            )
    return problems
