"""Accounts: a balance and the next expected nonce, keyed by address."""

from __future__ import annotations

from dataclasses import dataclass

from core.codec import UINT64_MAX, Wire, constructor, encoder
from core.errors import NodeFault
from core.keys import ADDRESS_SIZE
from vm.prefixes import KeyPrefix
from vm.registry import STATE_LIMIT, TxFailed, TxInfo
from vm.state import Overlay, StateView, read_obj

ACCOUNT_PREFIX = bytes([KeyPrefix.ACCOUNT])


@dataclass(frozen=True, slots=True)
class Account(Wire):
    balance: int
    # The nonce the account's next transaction must carry (starts at 0).
    nonce: int

    MAX_ENCODED = 64
    # ``put_account``, the one way accounts are written, checks that both fields are
    # integers in range: all that decoding would check. ``Overlay.check_writes`` skips them.
    WRITE_CHECKED = True

    def encode(self) -> bytes:
        balance = self.balance
        nonce = self.nonce
        # A negative or oversized value here is a bug in a handler, not an input.
        if not (0 <= balance <= UINT64_MAX and 0 <= nonce <= UINT64_MAX):
            raise NodeFault(f"account out of range: balance {balance}, nonce {nonce}")
        return _encode(self)


_encode = encoder(Account)
# Execution builds several accounts per transaction: set the slots directly.
new_account = constructor(Account)
ZERO_ACCOUNT = Account(0, 0)


def account_key(address: bytes) -> bytes:
    """``0x01 || address``."""
    if len(address) != ADDRESS_SIZE:
        raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    return ACCOUNT_PREFIX + address


def get_account(state: StateView, address: bytes) -> Account:
    """The account at ``address``; an absent account is the zero account."""
    # account_key inlined: this runs several times per transaction.
    if len(address) != ADDRESS_SIZE:
        raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    key = ACCOUNT_PREFIX + address
    if isinstance(state, Overlay):
        account = state.get_obj(key, Account)
    else:
        raw = state.get(key)
        account = None if raw is None else Account.decode(raw)
    return ZERO_ACCOUNT if account is None else account


def put_account(state: Overlay, address: bytes, account: Account) -> None:
    """Store ``account``; the zero account is stored as absence, so state holds no empties."""
    if len(address) != ADDRESS_SIZE:
        raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    key = ACCOUNT_PREFIX + address
    balance = account.balance
    nonce = account.nonce
    # Unchecked arithmetic in a handler fails its transaction, never the block's encoding.
    # The exact type too: a float (true division) or a bool would pass the range and be
    # committed as an account no node could read again.
    if not (
        type(balance) is int
        and type(nonce) is int
        and 0 <= balance <= UINT64_MAX
        and 0 <= nonce <= UINT64_MAX
    ):
        raise TxFailed(
            f"account {address.hex()} would hold balance {balance}, nonce {nonce}: "
            f"both must be in 0..{UINT64_MAX}, as integers",
            STATE_LIMIT,
        )
    if balance or nonce:
        state.set_obj(key, account)
    else:
        state.delete(key)


# --- balances in issued currencies (vm/currency.py issues them) ---

# The native token: fees, staking, and every payment that names no currency.
NATIVE = ""
_BALANCE_PREFIX = bytes([KeyPrefix.BALANCE])


@dataclass(frozen=True, slots=True)
class Balance(Wire):
    """An address's balance in one issued currency (the native one is ``Account.balance``)."""

    amount: int

    MAX_ENCODED = 16


def balance_key(address: bytes, currency: str) -> bytes:
    """``0x02 || address || symbol``: all of an address's currencies share a key prefix."""
    if len(address) != ADDRESS_SIZE:
        raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    if not currency:
        raise ValueError("the native token's balance is the account's, not a currency balance")
    return _BALANCE_PREFIX + address + currency.encode()


def get_balance(state: StateView, address: bytes, currency: str = NATIVE) -> int:
    """``address``'s balance in ``currency`` (the native token by default); 0 if absent."""
    # Tested as a plain name: tests/test_tx_declarations.py prunes the native calls'
    # branch, so a native payment declares the account prefix only.
    if currency:
        record = read_obj(state, balance_key(address, currency), Balance)
        return 0 if record is None else record.amount
    return get_account(state, address).balance


def _held(state: StateView, address: bytes, currency: str) -> tuple[int, int]:
    """``address``'s balance in ``currency`` and, for the native token, its account's
    nonce (else 0), for ``_set_balance``: a native change reads the account once."""
    if currency:
        return get_balance(state, address, currency), 0
    account = get_account(state, address)
    return account.balance, account.nonce


def _set_balance(state: Overlay, address: bytes, currency: str, amount: int, nonce: int) -> None:
    """Write a balance ``debit`` or ``credit`` computed; a native one is the account's,
    written with ``nonce``, the one ``_held`` read with the balance."""
    if currency:
        key = balance_key(address, currency)
        # Like an empty account, an empty balance is stored as absence.
        if amount:
            state.set_obj(key, Balance(amount))
        else:
            state.delete(key)
        return
    put_account(state, address, new_account(amount, nonce))


# --- moving tokens: every balance change but the fee goes through these ---


def debit(
    state: Overlay,
    address: bytes,
    amount: int,
    *,
    checked: bool = False,
    currency: str = NATIVE,
) -> None:
    """Take ``amount`` of ``currency`` (the native token by default) from ``address``.

    A shortfall fails the transaction (``insufficient_funds``), unless ``checked``:
    the caller made sure the account holds it (a module pool, by its own books), so
    a shortfall is a broken invariant and halts the node rather than hide in a receipt.
    """
    have, nonce = _held(state, address, currency)
    if have < amount:
        if checked:
            raise NodeFault(f"account {address.hex()} holds {have}, cannot pay {amount}")
        raise shortfall(have, amount, currency)
    _set_balance(state, address, currency, have - amount, nonce)


def shortfall(have: int, amount: int, currency: str = NATIVE) -> TxFailed:
    """The failure of a payment of ``amount`` from a balance of ``have`` (``insufficient_funds``)."""
    unit = f" {currency}" if currency else ""
    return TxFailed(
        f"balance {have}{unit} is less than the amount {amount}{unit}", "insufficient_funds"
    )


def credit(state: Overlay, address: bytes, amount: int, *, currency: str = NATIVE) -> None:
    """Add ``amount`` of ``currency`` to ``address``. Genesis caps the native supply below
    2**64 and minting caps each currency's (vm/currency.py), so a balance past it is a
    broken invariant (``NodeFault``), never a user's error."""
    if amount == 0:
        return
    have, nonce = _held(state, address, currency)
    if have + amount > UINT64_MAX:
        raise supply_fault(address)
    _set_balance(state, address, currency, have + amount, nonce)


def supply_fault(address: bytes) -> NodeFault:
    """A credit that would take ``address`` past 2**64-1: the supply invariant is broken."""
    return NodeFault(f"balance of {address.hex()} would exceed 2**64-1: supply invariant")


def after_fee(state: Overlay, tx: TxInfo, sender: Account) -> tuple[bytes, int, int]:
    """A fast path's first step (``TxType.fast_path``): the sender's account key, its
    balance after the fee and its next nonce, as the executor's generic path would
    write them; the fast path writes the account once, with what else it changes.

    Nothing is written here, except that a nonce past u64 is refused as the generic
    path's fee write refuses it, from the same function (the inclusion checks leave
    out nonce 2**64-1 first, ``nonce_exhausted``: a defence only)."""
    balance = sender.balance - tx.fee
    nonce = sender.nonce + 1
    if nonce > UINT64_MAX:
        put_account(state, tx.sender_address, new_account(balance, nonce))
    return ACCOUNT_PREFIX + tx.sender_address, balance, nonce


def move_tokens(
    state: Overlay,
    source: bytes,
    dest: bytes,
    amount: int,
    *,
    checked: bool = False,
    currency: str = NATIVE,
) -> None:
    """Move ``amount`` of ``currency`` from ``source`` to ``dest`` (``debit`` then
    ``credit``; the credit reads after the debit, so a move to oneself nets to zero).

    A failure (``TxFailed``) comes before anything is written: fast paths, which have
    no snapshot to revert, rely on it (``apps.commerce.sessions.execute_tip``)."""
    if amount == 0:
        return
    debit(state, source, amount, checked=checked, currency=currency)
    credit(state, dest, amount, currency=currency)
