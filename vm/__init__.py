"""The native transaction executor: state overlay, accounts, fees, receipts, handlers.

Tokens move only through ``debit``, ``credit`` and ``move_tokens`` (vm/accounts.py);
the executor charges fees.
"""

from vm.accounts import (
    NATIVE,
    ZERO_ACCOUNT,
    Account,
    Balance,
    account_key,
    balance_key,
    credit,
    debit,
    get_account,
    get_balance,
    move_tokens,
    put_account,
)
from vm.amounts import U64_OVERFLOW, checked_add, checked_mul
from vm.context import BlockContext
from vm.currency import TX_TYPES as _CURRENCY_TYPES
from vm.currency import (
    Currency,
    CurrencyList,
    currency_key,
    currency_symbols,
    get_currency,
)
from vm.executor import (
    BlockResult,
    Executor,
    VerifiedTx,
    check_block_limits,
    check_envelopes,
    complete_checked,
    read_account,
    verify_signed_tx,
)
from vm.inclusion import MAX_TX_PATH, TxInclusion, verify_tx_inclusion
from vm.params import ChainParams
from vm.prefixes import PREFIX_RANGES, KeyPrefix, PrefixRange, prefix_owner
from vm.receipts import (
    OK,
    BlockEvents,
    Event,
    EventAttr,
    Receipt,
    encode_block_events,
    encode_receipt,
    receipt_json,
)
from vm.registry import (
    EXECUTION_CODES,
    BeginBlockHook,
    Handler,
    Registry,
    TxClass,
    TxFailed,
    TxInfo,
    TxTable,
    TxType,
    default_registry,
    error_codes,
    feed_kinds,
    shared_codes,
)
from vm.state import Overlay, StateView
from vm.transfer import TRANSFER, Transfer, apply_transfer
from vm.transfer import TX_TYPES as _TRANSFER_TYPES

# The vm's own transaction types, and the codes their receipts may carry.
TX_TYPES: tuple[TxType, ...] = (*_TRANSFER_TYPES, *_CURRENCY_TYPES)
ERROR_CODES: dict[str, str] = error_codes(TX_TYPES)

__all__ = [
    "BlockEvents",
    "ERROR_CODES",
    "EXECUTION_CODES",
    "OK",
    "PREFIX_RANGES",
    "TRANSFER",
    "TX_TYPES",
    "U64_OVERFLOW",
    "ZERO_ACCOUNT",
    "Account",
    "Balance",
    "Currency",
    "CurrencyList",
    "NATIVE",
    "BeginBlockHook",
    "BlockContext",
    "BlockResult",
    "ChainParams",
    "Event",
    "EventAttr",
    "Executor",
    "MAX_TX_PATH",
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
    "TxInclusion",
    "TxInfo",
    "TxTable",
    "TxType",
    "VerifiedTx",
    "account_key",
    "balance_key",
    "currency_key",
    "currency_symbols",
    "get_balance",
    "get_currency",
    "apply_transfer",
    "checked_add",
    "checked_mul",
    "check_block_limits",
    "check_envelopes",
    "complete_checked",
    "credit",
    "debit",
    "encode_block_events",
    "encode_receipt",
    "receipt_json",
    "error_codes",
    "feed_kinds",
    "default_registry",
    "get_account",
    "move_tokens",
    "prefix_owner",
    "put_account",
    "read_account",
    "shared_codes",
    "verify_signed_tx",
    "verify_tx_inclusion",
]
