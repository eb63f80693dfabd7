"""Transaction types: their declarations, the registry, begin-block hooks, module accounts.

A transaction type is declared once, on its handler, in the package that owns
its state (``TxTable.declare``): name, payload class, priority class, the codes
its receipts may carry, the events it may emit (and which of them feed a live
session), the key prefixes it reads and writes, and its read model. The
registry, the error-code tables, the feed selection and the OpenAPI document are
derived from those declarations; ``Executor(check_declarations=True)`` holds
every executed transaction to its declaration (tests run with it).

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

from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
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

Handler = Callable[[Overlay, "TxInfo", Any, BlockContext], None]
# A type's whole execution in one call (see ``TxType.fast_path``): state, the
# transaction, its payload, the sender's account as read before the fee (typed
# loosely: vm.accounts imports this module), the block; returns the receipt encoded.
FastPath = Callable[[Overlay, "TxInfo", Any, Any, BlockContext], bytes]
H = TypeVar("H", bound=Callable[..., None])
BeginBlockHook = Callable[[Overlay, BlockContext], None]

# What a handler checks when no module accounts are bound to it.
NO_MODULE_ACCOUNTS: Mapping[bytes, str] = MappingProxyType({})


# Receipt code of a transaction whose writes no node could store or read back
# (an amount beyond u64, a record over its bounds): see ``Overlay.check_writes``.
STATE_LIMIT = "state_limit"

# Receipt codes the executor gives a transaction of any type: no declaration lists them.
EXECUTION_CODES: Mapping[str, str] = MappingProxyType(
    {
        OK: "executed",
        STATE_LIMIT: "a write no node could store: a record over its bounds, an amount beyond u64",
        "tx_failed": "a handler's failure without a code of its own",
    }
)


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


@dataclass(frozen=True, slots=True)
class TxType:
    """One transaction type, declared beside its handler (``TxTable.declare``).

    ``codes``: every failure code its receipts may carry, with what it means (the
    executor's ``EXECUTION_CODES`` aside). ``events``: the kinds it may emit; ``feed``:
    those of them its package's live feed sends (commerce: a live session's feed).
    ``reads``: the key prefixes it only reads; ``writes``: those it may write (and
    read). The key sets are per prefix, in the Sawtooth and Sealevel habit, so
    execution can go parallel later. ``view``: the OpenAPI schema of the read model
    that shows its effect, or "" if none.

    ``fast_path``, for a type a flood is made of (``transfer``; a flash sale's
    ``commerce.tip``): the executor's generic path around ``handler`` (fee and nonce,
    a snapshot, the handler, the write check, the receipt) done in one function, with
    what the type's handler needs inline. It must give the same writes, events,
    receipt and exceptions as that path; the executor runs it unless it checks
    declarations, which runs the generic path (tests/vm/test_fast_path.py and
    tests/apps/commerce/test_tip_fast_path.py hold the two to each other).

    ``private_outcome``: a simulation of it (``POST /v1/txs/simulate``) answers its
    receipt without events. They, free before the transaction is sent, would tell what
    only a committed one should: a bid's give the price it sets, one increment above the
    leader's secret maximum. Its failure messages must tell nothing of the kind (a
    failure's receipt is public once sent, and its simulation says it too).
    """

    name: str
    payload: type[Wire]
    handler: Handler
    tx_class: TxClass = TxClass.TRANSFER
    summary: str = ""
    codes: Mapping[str, str] = field(default_factory=dict)
    events: AbstractSet[str] = frozenset()
    feed: AbstractSet[str] = frozenset()
    reads: AbstractSet[int] = frozenset()
    writes: AbstractSet[int] = frozenset()
    view: str = ""
    fast_path: FastPath | None = None
    private_outcome: bool = False

    def __post_init__(self) -> None:
        # Frozen copies: a declaration is shared by every node part that reads it.
        object.__setattr__(self, "codes", MappingProxyType(dict(self.codes)))
        for name in ("events", "feed", "reads", "writes"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        # A receipt holds at most MAX_CODE bytes of code, and never "ok" for a failure.
        bad = [c for c in self.codes if c in EXECUTION_CODES or not 0 < len(c) <= MAX_CODE]
        if bad:
            raise ValueError(f"{self.name}: codes {bad} are the executor's or not 1..{MAX_CODE}")
        if not self.feed <= self.events:
            raise ValueError(f"{self.name}: feed events {set(self.feed - self.events)} not emitted")
        # A prefix is read-only or written, never both: the scheduler reads one answer.
        if self.reads & self.writes or not all(0 < p < 256 for p in self.reads | self.writes):
            raise ValueError(f"{self.name}: key prefixes must be bytes, read-only or written")

    def bind(self, **kwargs: Any) -> TxType:
        """This declaration with keyword arguments bound to its handler and its fast path
        (at registration)."""
        fast = self.fast_path
        return replace(
            self,
            handler=partial(self.handler, **kwargs),
            fast_path=None if fast is None else partial(fast, **kwargs),
        )


class TxTable:
    """A module's transaction types, declared on their handlers, in declaration order."""

    def __init__(self, tx_class: TxClass) -> None:
        self.tx_class = tx_class
        self.types: list[TxType] = []

    def __iter__(self) -> Iterator[TxType]:
        return iter(self.types)

    def declare(
        self,
        name: str,
        payload: type[Wire],
        summary: str,
        *,
        codes: Mapping[str, str],
        events: AbstractSet[str],
        feed: AbstractSet[str] = frozenset(),
        reads: AbstractSet[int] = frozenset(),
        writes: AbstractSet[int] = frozenset(),
        view: str = "",
        fast_path: FastPath | None = None,
        private_outcome: bool = False,
    ) -> Callable[[H], H]:
        """Declare the decorated handler as transaction type ``name`` (see ``TxType``)."""
        if any(t.name == name for t in self.types):
            raise ValueError(f"transaction type {name!r} declared twice")

        def declare(handler: H) -> H:
            self.types.append(
                TxType(
                    name,
                    payload,
                    handler,
                    self.tx_class,
                    summary,
                    codes,
                    events,
                    feed,
                    reads,
                    writes,
                    view,
                    fast_path,
                    private_outcome,
                )
            )
            return handler

        return declare


def error_codes(types: Iterable[TxType]) -> dict[str, str]:
    """Every code ``types`` declare, with its meaning, in declaration order: a package's
    error-code table. One code means one thing: a second meaning is a ``ValueError``."""
    table: dict[str, str] = {}
    for t in types:
        for code, meaning in t.codes.items():
            if table.setdefault(code, meaning) != meaning:
                raise ValueError(f"code {code!r} means {table[code]!r} and {meaning!r} ({t.name})")
    return table


def feed_kinds(types: Iterable[TxType]) -> frozenset[str]:
    """Every event kind ``types`` declare as ``feed``. A kind feeds a live session or it
    does not: one type emitting it as feed and another as not is a ``ValueError``."""
    types = tuple(types)
    feed = frozenset().union(*(t.feed for t in types))
    for t in types:
        stray = (t.events - t.feed) & feed
        if stray:
            raise ValueError(f"{t.name} emits feed kinds {sorted(stray)} as not feed")
    return feed


def shared_codes(table: Mapping[str, str], *codes: str) -> dict[str, str]:
    """``codes`` with their meanings in ``table``: the codes that several of a package's
    types share, picked for one declaration (a code missing from ``table`` is a KeyError)."""
    return {code: table[code] for code in codes}


class Registry:
    """Maps transaction types to payload classes and handlers; knows the module accounts."""

    __slots__ = (
        "_types",
        "_declared",
        "_fast_paths",
        "_begin_block",
        "_module_accounts",
        "_module_view",
    )

    def __init__(self) -> None:
        # (payload class, handler) by type: what the executor looks up per transaction.
        self._types: dict[str, tuple[type[Wire], Handler]] = {}
        self._declared: dict[str, TxType] = {}
        self._fast_paths: dict[str, FastPath] = {}
        self._begin_block: list[BeginBlockHook] = []
        self._module_accounts: dict[bytes, str] = {}
        self._module_view: Mapping[bytes, str] = MappingProxyType(self._module_accounts)

    def register(self, decl: TxType) -> None:
        """Execute transactions of type ``decl.name`` as ``decl`` declares."""
        if decl.name in self._types:
            raise ValueError(f"transaction type {decl.name!r} is already registered")
        self._types[decl.name] = (decl.payload, decl.handler)
        self._declared[decl.name] = decl
        if decl.fast_path is not None:
            self._fast_paths[decl.name] = decl.fast_path

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
    def fast_paths(self) -> Mapping[str, FastPath]:
        """Type -> its fast path (``TxType.fast_path``), for the types that have one."""
        return MappingProxyType(self._fast_paths)

    @property
    def module_accounts(self) -> Mapping[bytes, str]:
        """Module account address -> name: a live read-only view, so a handler bound to it
        at registration also sees the accounts registered after it."""
        return self._module_view

    @property
    def tx_types(self) -> tuple[str, ...]:
        return tuple(self._types)

    @property
    def declarations(self) -> tuple[TxType, ...]:
        """Every registered type's declaration, in registration order."""
        return tuple(self._declared.values())

    def declaration(self, tx_type: str) -> TxType:
        """The declaration of ``tx_type``; ``unknown_type`` if there is none."""
        decl = self._declared.get(tx_type)
        if decl is None:
            raise InvalidTransaction(f"unknown transaction type {tx_type[:64]!r}", "unknown_type")
        return decl

    def lookup(self, tx_type: str) -> tuple[type[Wire], Handler]:
        """Payload class and handler of ``tx_type``; ``unknown_type`` if there is none."""
        entry = self._types.get(tx_type)
        if entry is None:
            raise InvalidTransaction(f"unknown transaction type {tx_type[:64]!r}", "unknown_type")
        return entry

    def tx_class(self, tx_type: str) -> TxClass:
        """The priority class of ``tx_type`` (``TRANSFER`` for an unknown type)."""
        decl = self._declared.get(tx_type)
        return TxClass.TRANSFER if decl is None else decl.tx_class

    def decode_payload(self, body: TxBody) -> Wire:
        """Decode the payload of ``body`` (``unknown_type``, or DecodeError ``malformed``)."""
        payload_cls, _ = self.lookup(body.type)
        return payload_cls.decode(body.payload)


def default_registry() -> Registry:
    """A registry with the native transaction types: ``transfer`` and the currency types."""
    # Imported here because the handlers import TxFailed and TxInfo from this module.
    from vm.currency import APPLY_MODULE_CHECK
    from vm.currency import TX_TYPES as CURRENCY_TYPES
    from vm.transfer import TX_TYPES

    registry = Registry()
    for decl in TX_TYPES:
        # Bound to the live view: the module accounts are registered by higher layers later.
        registry.register(decl.bind(module_accounts=registry.module_accounts))
    for decl in CURRENCY_TYPES:
        if decl.name in APPLY_MODULE_CHECK:
            decl = decl.bind(module_accounts=registry.module_accounts)
        registry.register(decl)
    return registry
