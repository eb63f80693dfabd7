"""Transaction types: payload classes, handlers and begin-block hooks, and module accounts.

A handler is a plain function ``(state, tx, payload, ctx) -> None``. It either
returns (success), raises ``TxFailed`` (a deterministic execution failure: the
fee stays paid and the receipt carries the code), or raises anything else,
which is a bug and halts the node.

A module account is an address that holds tokens for an on-chain module's own
books (the staking pools, say): no key controls it and only its module moves
tokens in or out. Higher layers register theirs with ``add_module_account``;
handlers that pay a user-chosen recipient (``transfer``) are bound to the live
``module_accounts`` view when registered and refuse those addresses with
``module_account``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

from core.codec import Wire
from core.errors import InvalidTransaction
from core.keys import ADDRESS_SIZE, format_address
from core.types import TxBody
from vm.context import BlockContext
from vm.receipts import MAX_CODE, OK
from vm.state import Overlay

P = TypeVar("P", bound=Wire)

Handler = Callable[[Overlay, "TxInfo", Any, BlockContext], None]
BeginBlockHook = Callable[[Overlay, BlockContext], None]

# What a handler checks when no module accounts are bound to it.
NO_MODULE_ACCOUNTS: Mapping[bytes, str] = MappingProxyType({})


# Receipt code of a transaction whose writes no node could store or read back
# (an amount beyond u64, a record over its bounds): see ``Overlay.check_writes``.
STATE_LIMIT = "state_limit"


class TxClass(IntEnum):
    """A transaction type's priority class in block building (higher goes first).

    The chain's own upkeep (evidence, staking, governance) goes before commerce,
    commerce before plain transfers; each class also has a fair share of every
    block, so none starves (``node/mempool.py``, ``Mempool.select``).
    """

    TRANSFER = 0
    COMMERCE = 1
    CONSENSUS = 2


class TxFailed(InvalidTransaction):
    """A deterministic execution failure; raise it from a handler with a stable code."""

    code = "tx_failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        # The code goes into a receipt, whose decoding bounds it.
        if code is not None and len(code.encode()) > MAX_CODE:
            raise ValueError(f"error code {code[:64]!r} is over {MAX_CODE} bytes")
        # "ok" would make the failure read as a success in its receipt.
        if code == OK:
            raise ValueError("a failure cannot carry the success code 'ok'")
        super().__init__(message, code)


def refuse_module_account(module_accounts: Mapping[bytes, str], address: bytes, role: str) -> None:
    """``TxFailed`` (``module_account``) if a handler would pay ``address``, its ``role``,
    while it is a module account: only its module moves its tokens, or its books stop
    adding up."""
    if address in module_accounts:
        raise TxFailed(
            f"{role} must not be a module account, got {format_address(address)} "
            f"(the {module_accounts[address]} module account)",
            "module_account",
        )


@dataclass(frozen=True, slots=True)
class TxInfo:
    """The parts of a transaction a handler may look at besides its payload."""

    hash: bytes
    # Ed25519 public key of the signer.
    sender: bytes
    sender_address: bytes
    nonce: int
    fee: int


class Registry:
    """Maps transaction types to payload classes and handlers; knows the module accounts."""

    __slots__ = ("_types", "_classes", "_begin_block", "_module_accounts", "_module_view")

    def __init__(self) -> None:
        self._types: dict[str, tuple[type[Wire], Handler]] = {}
        self._classes: dict[str, TxClass] = {}
        self._begin_block: list[BeginBlockHook] = []
        self._module_accounts: dict[bytes, str] = {}
        self._module_view: Mapping[bytes, str] = MappingProxyType(self._module_accounts)

    def register(
        self,
        tx_type: str,
        payload_cls: type[P],
        handler: Callable[[Overlay, TxInfo, P, BlockContext], None],
        tx_class: TxClass = TxClass.TRANSFER,
    ) -> None:
        if tx_type in self._types:
            raise ValueError(f"transaction type {tx_type!r} is already registered")
        self._types[tx_type] = (payload_cls, handler)
        self._classes[tx_type] = tx_class

    def add_begin_block(self, fn: BeginBlockHook) -> None:
        """Run ``fn`` at the start of every block, after the hooks added before it."""
        self._begin_block.append(fn)

    @property
    def begin_block_hooks(self) -> tuple[BeginBlockHook, ...]:
        return tuple(self._begin_block)

    def add_module_account(self, address: bytes, name: str) -> None:
        """Mark ``address`` as module ``name``'s account: no user-chosen payment may reach it."""
        if len(address) != ADDRESS_SIZE:
            raise ValueError(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
        if address in self._module_accounts:
            raise ValueError(
                f"{address.hex()} is already the module account {self._module_accounts[address]!r}"
            )
        self._module_accounts[address] = name

    @property
    def module_accounts(self) -> Mapping[bytes, str]:
        """Module account address -> name: a live read-only view, so a handler bound to it
        at registration also sees the accounts registered after it."""
        return self._module_view

    @property
    def tx_types(self) -> tuple[str, ...]:
        return tuple(self._types)

    def lookup(self, tx_type: str) -> tuple[type[Wire], Handler]:
        """Payload class and handler of ``tx_type``; ``unknown_type`` if there is none."""
        entry = self._types.get(tx_type)
        if entry is None:
            raise InvalidTransaction(f"unknown transaction type {tx_type[:64]!r}", "unknown_type")
        return entry

    def tx_class(self, tx_type: str) -> TxClass:
        """The priority class of ``tx_type`` (``TRANSFER`` for an unknown type)."""
        return self._classes.get(tx_type, TxClass.TRANSFER)

    def decode_payload(self, body: TxBody) -> Wire:
        """Decode the payload of ``body`` (``unknown_type``, or DecodeError ``malformed``)."""
        payload_cls, _ = self.lookup(body.type)
        return payload_cls.decode(body.payload)


def default_registry() -> Registry:
    """A registry with the native transaction types (today: ``transfer``)."""
    # Imported here because the handlers import TxFailed and TxInfo from this module.
    from vm.transfer import TRANSFER, Transfer, apply_transfer

    registry = Registry()
    # Bound to the live view: the module accounts are registered by higher layers later.
    registry.register(
        TRANSFER, Transfer, partial(apply_transfer, module_accounts=registry.module_accounts)
    )
    return registry
