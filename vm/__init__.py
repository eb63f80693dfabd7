"""The native transaction executor: state overlay, accounts, fees, receipts, handlers.

Tokens move only through ``debit``, ``credit`` and ``move_tokens`` (vm/accounts.py);
the executor charges fees.
"""

from vm.accounts import (
    ZERO_ACCOUNT,
    Account,
    account_key,
    credit,
    debit,
    get_account,
    move_tokens,
    put_account,
)
from vm.amounts import U64_OVERFLOW, checked_add, checked_mul
from vm.context import BlockContext
from vm.executor import (
    BlockResult,
    Executor,
    VerifiedTx,
    check_envelopes,
    complete_checked,
    read_account,
    verify_signed_tx,
)
from vm.params import ChainParams
from vm.prefixes import PREFIX_RANGES, KeyPrefix, PrefixRange, prefix_owner
from vm.receipts import OK, BlockEvents, Event, EventAttr, Receipt
from vm.registry import (
    BeginBlockHook,
    Handler,
    Registry,
    TxClass,
    TxFailed,
    TxInfo,
    default_registry,
)
from vm.state import Overlay, StateView
from vm.transfer import TRANSFER, Transfer, apply_transfer

__all__ = [
    "BlockEvents",
    "OK",
    "PREFIX_RANGES",
    "TRANSFER",
    "U64_OVERFLOW",
    "ZERO_ACCOUNT",
    "Account",
    "BeginBlockHook",
    "BlockContext",
    "BlockResult",
    "ChainParams",
    "Event",
    "EventAttr",
    "Executor",
    "Handler",
    "KeyPrefix",
    "Overlay",
    "PrefixRange",
    "Receipt",
    "Registry",
    "StateView",
    "Transfer",
    "TxClass",
    "TxFailed",
    "TxInfo",
    "VerifiedTx",
    "account_key",
    "apply_transfer",
    "checked_add",
    "checked_mul",
    "check_envelopes",
    "complete_checked",
    "credit",
    "debit",
    "default_registry",
    "get_account",
    "move_tokens",
    "prefix_owner",
    "put_account",
    "read_account",
    "verify_signed_tx",
]
