"""The native ``transfer``: move tokens from the sender to another address.

The recipient may be any address but a module account (``Registry.module_accounts``):
those hold tokens for a module's own books, which a deposit from outside would break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.codec import Wire, constructor
from core.types import Address
from vm.accounts import move_tokens
from vm.context import BlockContext
from vm.prefixes import KeyPrefix
from vm.receipts import Event, EventAttr
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
    amount = payload.amount
    # A zero transfer would only add noise to the chain.
    if amount <= 0:
        raise TxFailed(f"amount must be positive, got {amount}", "invalid_amount")
    # Only its module may move a module account's tokens, or its books stop adding up.
    refuse_module_account(module_accounts, payload.to, "recipient")
    # The fee is already paid, so the amount must come out of what is left.
    move_tokens(state, tx.sender_address, payload.to, amount)
    # Built directly rather than with Event.of (the hot path): hex addresses and a
    # uint64 in decimal are always within the attribute bounds.
    attrs = (
        _attr("sender", tx.sender_address.hex()),
        _attr("recipient", payload.to.hex()),
        _attr("amount", str(amount)),
    )
    state.emit(_event(TRANSFER, attrs))
