"""Live commerce on chain: merchants, listings, live sessions, flash deals and auctions, escrowed
orders with deadlines and disputes, provenance, reviews, tips, sealed addresses.

Each transaction type is declared on its handler (payload, codes, events, key
prefixes, read model; collected in ``txtypes.TX_TYPES``); ``register(registry)``
adds them all and the begin-block hooks (deal ends, order deadlines) to a vm
``Registry``. Handlers read their
parameters and roles from state written at genesis (``commerce_genesis_state``);
on a chain without a commerce section they fail with ``commerce_disabled``.
State machines, invariants, key layout and error codes: docs/commerce.md.
"""

from __future__ import annotations

from apps.commerce import keys, views
from apps.commerce import payloads as tx
from apps.commerce.auctions import end_auctions
from apps.commerce.invariants import check_invariants
from apps.commerce.model import (
    OPEN_STATES,
    SETTLED_STATES,
    TERMINAL_STATES,
    ItemId,
    OrderState,
    Role,
    RoleRecord,
)
from apps.commerce.orders import run_deadlines
from apps.commerce.params import CommerceGenesis, CommerceParams, InvalidCommerceGenesis
from apps.commerce.sessions import end_deals
from apps.commerce.txtypes import ERROR_CODES, FEED_KINDS, TX_TYPES, feed_events, session_of
from vm.registry import Registry


def register(registry: Registry) -> None:
    """Add every commerce transaction type and the begin-block hooks to ``registry``.

    Hooks run in this order at the start of every block: deals whose end time
    passed are closed (unsold stock returns to the listing), auctions whose end
    time passed end (won: the winner's order; else the unit returns to stock),
    then order deadlines due at the block time are enforced.

    ``open_session`` is bound to the registry's live module accounts: a session
    host receives tips and commission, so it may not be one.
    """
    for decl in TX_TYPES:
        if decl.name == tx.OPEN_SESSION:
            decl = decl.bind(module_accounts=registry.module_accounts)
        registry.register(decl)
    registry.add_begin_block(end_deals)
    registry.add_begin_block(end_auctions)
    registry.add_begin_block(run_deadlines)


def commerce_genesis_state(cfg: CommerceGenesis) -> dict[bytes, bytes]:
    """State entries the commerce section of genesis puts before block 1."""
    state = {keys.CONFIG_KEY: cfg.encode()}
    for registrar in cfg.registrars:
        state[keys.role_key(registrar)] = RoleRecord(int(Role.REGISTRAR), b"").encode()
    return state


__all__ = [
    "ERROR_CODES",
    "FEED_KINDS",
    "OPEN_STATES",
    "SETTLED_STATES",
    "TERMINAL_STATES",
    "TX_TYPES",
    "CommerceGenesis",
    "CommerceParams",
    "InvalidCommerceGenesis",
    "ItemId",
    "OrderState",
    "Role",
    "check_invariants",
    "commerce_genesis_state",
    "feed_events",
    "register",
    "session_of",
    "tx",
    "views",
]
