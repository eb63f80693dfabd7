"""Live commerce on chain: merchants, listings, live sessions and flash deals, escrowed
orders with deadlines and disputes, provenance, reviews, tips, sealed addresses.

``register(registry)`` adds every commerce transaction type and the begin-block
hooks (deal ends, order deadlines) to a vm ``Registry``. Handlers read their
parameters and roles from state written at genesis (``commerce_genesis_state``);
on a chain without a commerce section they fail with ``commerce_disabled``.
State machines, invariants, key layout and error codes: docs/commerce.md.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from apps.commerce import keys, views
from apps.commerce import payloads as tx
from apps.commerce.codes import ERROR_CODES
from apps.commerce.events import FEED_KINDS, feed_events, session_of
from apps.commerce.invariants import check_invariants
from apps.commerce.listings import (
    process_create_listing,
    process_delist,
    process_restock,
    process_update_listing,
    process_withdraw_stock,
)
from apps.commerce.merchants import (
    process_approve_merchant,
    process_register_merchant,
    process_set_roles,
    process_update_merchant,
)
from apps.commerce.model import (
    OPEN_STATES,
    SETTLED_STATES,
    TERMINAL_STATES,
    ItemId,
    OrderState,
    Role,
    RoleRecord,
)
from apps.commerce.orders import (
    process_accept_order,
    process_cancel_order,
    process_confirm_delivery,
    process_decline_order,
    process_disclose,
    process_open_dispute,
    process_place_order,
    process_refund,
    process_rule,
    process_ship_order,
    run_deadlines,
)
from apps.commerce.params import CommerceGenesis, CommerceParams, InvalidCommerceGenesis
from apps.commerce.provenance import (
    process_accept_custody,
    process_attest,
    process_propose_custody,
    process_refuse_custody,
    process_register_item,
)
from apps.commerce.reviews import process_reply_review, process_review
from apps.commerce.sessions import (
    end_deals,
    process_close_deal,
    process_close_session,
    process_open_deal,
    process_open_session,
    process_pin,
    process_tip,
    process_unpin,
)
from vm.registry import Registry, TxClass

# type name -> (payload class, handler)
HANDLERS: dict[str, tuple[type[Any], Callable[..., None]]] = {
    tx.SET_ROLES: (tx.SetRoles, process_set_roles),
    tx.REGISTER_MERCHANT: (tx.RegisterMerchant, process_register_merchant),
    tx.UPDATE_MERCHANT: (tx.UpdateMerchant, process_update_merchant),
    tx.APPROVE_MERCHANT: (tx.ApproveMerchant, process_approve_merchant),
    tx.CREATE_LISTING: (tx.CreateListing, process_create_listing),
    tx.UPDATE_LISTING: (tx.UpdateListing, process_update_listing),
    tx.RESTOCK: (tx.StockChange, process_restock),
    tx.WITHDRAW_STOCK: (tx.StockChange, process_withdraw_stock),
    tx.DELIST: (tx.ListingRef, process_delist),
    tx.OPEN_SESSION: (tx.OpenSession, process_open_session),
    tx.PIN: (tx.PinListing, process_pin),
    tx.UNPIN: (tx.PinListing, process_unpin),
    tx.OPEN_DEAL: (tx.OpenDeal, process_open_deal),
    tx.CLOSE_DEAL: (tx.DealRef, process_close_deal),
    tx.CLOSE_SESSION: (tx.SessionRef, process_close_session),
    tx.TIP: (tx.Tip, process_tip),
    tx.PLACE_ORDER: (tx.PlaceOrder, process_place_order),
    tx.CANCEL_ORDER: (tx.OrderRef, process_cancel_order),
    tx.DECLINE_ORDER: (tx.OrderRef, process_decline_order),
    tx.ACCEPT_ORDER: (tx.OrderRef, process_accept_order),
    tx.SHIP_ORDER: (tx.ShipOrder, process_ship_order),
    tx.CONFIRM_DELIVERY: (tx.OrderRef, process_confirm_delivery),
    tx.REFUND: (tx.Refund, process_refund),
    tx.OPEN_DISPUTE: (tx.OpenDispute, process_open_dispute),
    tx.RULE: (tx.Rule, process_rule),
    tx.DISCLOSE: (tx.Disclose, process_disclose),
    tx.REGISTER_ITEM: (tx.RegisterItem, process_register_item),
    tx.ATTEST: (tx.Attest, process_attest),
    tx.PROPOSE_CUSTODY: (tx.ProposeCustody, process_propose_custody),
    tx.ACCEPT_CUSTODY: (tx.ItemRef, process_accept_custody),
    tx.REFUSE_CUSTODY: (tx.ItemRef, process_refuse_custody),
    tx.REVIEW: (tx.WriteReview, process_review),
    tx.REPLY_REVIEW: (tx.ReplyReview, process_reply_review),
}


def register(registry: Registry) -> None:
    """Add every commerce transaction type and the begin-block hooks to ``registry``.

    Hooks run in this order at the start of every block: deals whose end time
    passed are closed (unsold stock returns to the listing), then order
    deadlines due at the block time are enforced.

    ``open_session`` is bound to the registry's live module accounts: a session
    host receives tips and commission, so it may not be one.
    """
    handlers = dict(HANDLERS)
    handlers[tx.OPEN_SESSION] = (
        tx.OpenSession,
        partial(process_open_session, module_accounts=registry.module_accounts),
    )
    for tx_type, (payload_cls, handler) in handlers.items():
        registry.register(tx_type, payload_cls, handler, TxClass.COMMERCE)
    registry.add_begin_block(end_deals)
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
    "HANDLERS",
    "OPEN_STATES",
    "SETTLED_STATES",
    "TERMINAL_STATES",
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
