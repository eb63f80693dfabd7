"""Accounts: a balance and the next expected nonce, keyed by address."""

from __future__ import annotations

from dataclasses import dataclass

from core.codec import UINT64_MAX, Wire, constructor, encoder
from core.errors import NodeFault
from core.keys import ADDRESS_SIZE
from vm.prefixes import KeyPrefix
from vm.registry import STATE_LIMIT, TxFailed
from vm.state import Overlay, StateView

_ACCOUNT_PREFIX = bytes([KeyPrefix.ACCOUNT])


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
    return _ACCOUNT_PREFIX + address


def get_account(state: StateView, address: bytes) -> Account:
    """The account at ``address``; an absent account is the zero account."""
    # account_key inlined: this runs several times per transaction.
    if len(address) != ADDRESS_SIZE:
        raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    key = _ACCOUNT_PREFIX + address
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
    key = _ACCOUNT_PREFIX + address
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


# --- moving tokens: every balance change but the fee goes through these ---


def debit(state: Overlay, address: bytes, amount: int, *, checked: bool = False) -> None:
    """Take ``amount`` from ``address``.

    A shortfall fails the transaction (``insufficient_funds``), unless ``checked``:
    the caller made sure the account holds it (a module pool, by its own books), so
    a shortfall is a broken invariant and halts the node rather than hide in a receipt.
    """
    account = get_account(state, address)
    if account.balance < amount:
        if checked:
            raise NodeFault(f"account {address.hex()} holds {account.balance}, cannot pay {amount}")
        raise TxFailed(
            f"balance {account.balance} is less than the amount {amount}", "insufficient_funds"
        )
    put_account(state, address, new_account(account.balance - amount, account.nonce))


def credit(state: Overlay, address: bytes, amount: int) -> None:
    """Add ``amount`` to ``address``. Genesis caps the supply below 2**64, so a balance
    past it is a broken invariant (``NodeFault``), never a user's error."""
    if amount == 0:
        return
    account = get_account(state, address)
    if account.balance + amount > UINT64_MAX:
        raise NodeFault(f"balance of {address.hex()} would exceed 2**64-1: supply invariant")
    put_account(state, address, new_account(account.balance + amount, account.nonce))


def move_tokens(
    state: Overlay, source: bytes, dest: bytes, amount: int, *, checked: bool = False
) -> None:
    """Move ``amount`` from ``source`` to ``dest`` (``debit`` then ``credit``; the credit
    reads after the debit, so a move to oneself nets to zero)."""
    if amount == 0:
        return
    debit(state, source, amount, checked=checked)
    credit(state, dest, amount)
