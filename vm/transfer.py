"""The native ``transfer``: move tokens from the sender to another address.

The recipient may be any address but a module account (``Registry.module_accounts``):
those hold tokens for a module's own books, which a deposit from outside would break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.codec import UINT64_MAX, Wire, constructor, pack_raw
from core.types import Address
from vm.accounts import (
    ACCOUNT_PREFIX,
    Account,
    after_fee,
    move_tokens,
    new_account,
    shortfall,
    supply_fault,
)
from vm.context import BlockContext
from vm.prefixes import KeyPrefix
from vm.receipts import OK, Event, EventAttr, bound_message
from vm.registry import (
    NO_MODULE_ACCOUNTS,
    TxClass,
    TxFailed,
    TxInfo,
    TxTable,
    refuse_module_account,
)
from vm.state import Overlay

TRANSFER = "transfer"
# The vm's own transaction types (``default_registry`` registers them).
TX_TYPES = TxTable(TxClass.TRANSFER)
# Every transfer builds an event of three attributes: set the slots directly.
_attr = constructor(EventAttr)
_event = constructor(Event)


@dataclass(frozen=True, slots=True)
class Transfer(Wire):
    to: Address
    amount: int

    MAX_ENCODED = 64


def _check_transfer(payload: Transfer, module_accounts: Mapping[bytes, str]) -> None:
    """What fails a transfer before any balance is read."""
    amount = payload.amount
    # A zero transfer would only add noise to the chain.
    if amount <= 0:
        raise TxFailed(f"amount must be positive, got {amount}", "invalid_amount")
    # Only its module may move a module account's tokens, or its books stop adding up.
    refuse_module_account(module_accounts, payload.to, "recipient")


def _transfer_attrs(sender: bytes, recipient: bytes, amount: int) -> list[list[str]]:
    """The transfer event's attributes, ``[key, value]`` in order: its one definition,
    made into objects by ``apply_transfer`` and packed as they are by the fast path.
    Hex addresses and a uint64 in decimal are always within the attribute bounds."""
    return [["sender", sender.hex()], ["recipient", recipient.hex()], ["amount", str(amount)]]


def _transfer_event(sender: bytes, recipient: bytes, amount: int) -> Event:
    # Built directly rather than with Event.of: the bounds hold (``_transfer_attrs``).
    attrs = tuple(_attr(key, value) for key, value in _transfer_attrs(sender, recipient, amount))
    return _event(TRANSFER, attrs)


def execute_transfer(
    state: Overlay,
    tx: TxInfo,
    payload: Transfer,
    sender: Account,
    ctx: BlockContext,
    *,
    module_accounts: Mapping[bytes, str] = NO_MODULE_ACCOUNTS,
) -> bytes:
    """A transfer's whole execution (``TxType.fast_path``): what the executor's generic
    path does around ``apply_transfer``, in one function.

    ``sender`` is the sender's account before the fee. The generic path writes the
    sender three times (fee and nonce, then the debit; a payment to oneself also the
    credit), each a new record, a journal entry and a range check, inside a snapshot
    it may revert; here the sender's account is written once, with fee, nonce and
    amount, and the recipient's once. The failures are the handler's, checked first,
    so a failed transfer writes only the fee and nonce, as the generic path's revert
    leaves it. Same writes in the same order, same event, same receipt: returned
    encoded (``TxType.fast_path``).
    """
    key, balance, nonce = after_fee(state, tx, sender)
    fee = tx.fee
    address = tx.sender_address
    amount = payload.amount
    to = payload.to
    try:
        _check_transfer(payload, module_accounts)
        if balance < amount:
            raise shortfall(balance, amount)
    except TxFailed as exc:
        # Balance and nonce: the executor's inclusion check left the fee payable,
        # and the nonce is above 0, so the account is never empty.
        state.set_obj(key, new_account(balance, nonce))
        return pack_raw([tx.hash, exc.code, bound_message(exc.message), fee, []])
    if to == address:
        # The amount leaves and comes back: only the fee and nonce change.
        state.set_obj(key, new_account(balance, nonce))
    else:
        state.set_obj(key, new_account(balance - amount, nonce))
        to_key = ACCOUNT_PREFIX + to
        held = state.get_obj(to_key, Account)
        if held is None:
            state.set_obj(to_key, new_account(amount, 0))
        else:
            total = held.balance + amount
            if total > UINT64_MAX:
                raise supply_fault(to)
            state.set_obj(to_key, new_account(total, held.nonce))
    # The receipt's encoding (``Receipt.encode`` of what apply_transfer's path gives),
    # written directly: no event, attribute or receipt objects to build and dump.
    return pack_raw([tx.hash, OK, "", fee, [[TRANSFER, _transfer_attrs(address, to, amount)]]])


@TX_TYPES.declare(
    TRANSFER,
    Transfer,
    "move tokens from the sender to another address",
    codes={
        "invalid_amount": "an amount of 0",
        "insufficient_funds": "balance after the fee below the amount",
        "module_account": "a payment to a module account (a staking pool)",
    },
    events={TRANSFER},
    writes={KeyPrefix.ACCOUNT},
    view="Account",
    fast_path=execute_transfer,
)
def apply_transfer(
    state: Overlay,
    tx: TxInfo,
    payload: Transfer,
    ctx: BlockContext,
    *,
    module_accounts: Mapping[bytes, str] = NO_MODULE_ACCOUNTS,
) -> None:
    """Move ``payload.amount`` to ``payload.to``; ``default_registry`` binds ``module_accounts``."""
    _check_transfer(payload, module_accounts)
    # The fee is already paid, so the amount must come out of what is left.
    move_tokens(state, tx.sender_address, payload.to, payload.amount)
    state.emit(_transfer_event(tx.sender_address, payload.to, payload.amount))
