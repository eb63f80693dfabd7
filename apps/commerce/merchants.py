"""Roles and merchants: registrar grants, merchant registration, profile, approval."""

from __future__ import annotations

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import GRANTABLE, Merchant, MerchantStatus, Role, RoleRecord, role_names
from apps.commerce.payloads import (
    APPROVE_MERCHANT,
    REGISTER_MERCHANT,
    SET_ROLES,
    UPDATE_MERCHANT,
    ApproveMerchant,
    RegisterMerchant,
    SetRoles,
    UpdateMerchant,
)
from apps.commerce.store import (
    addr,
    config,
    get_merchant,
    refuse_registrar,
    require_merchant,
    require_role,
    require_text,
    roles_of,
)
from core.codec import replace
from vm.context import BlockContext
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)


@TX_TYPES.declare(
    SET_ROLES,
    SetRoles,
    "registrar: set the role mask of an address (an auditor needs a 32-byte key)",
    codes={
        **shared("commerce_disabled", "missing_role"),
        "invalid_roles": "a role mask with bits outside the grantable roles",
        "invalid_key": "an encryption key that is not 32 bytes (or missing for an auditor)",
    },
    events={ev.ROLES_SET},
    reads={P.CONFIG},
    writes={P.ROLE},
)
def process_set_roles(state: Overlay, tx: TxInfo, p: SetRoles, ctx: BlockContext) -> None:
    config(state)
    require_role(state, tx.sender_address, Role.REGISTRAR, "setting roles")
    current = roles_of(state, p.address)
    # Only known role bits, and never the registrar role (genesis alone grants it).
    if p.roles & ~int(GRANTABLE):
        raise TxFailed(
            f"roles {p.roles:#x} include bits outside the grantable set {int(GRANTABLE):#x}",
            "invalid_roles",
        )
    # An auditor's disclosures are sealed to its key, so it must have one (32 bytes).
    if p.roles & Role.AUDITOR and len(p.enc_key) != 32:
        raise TxFailed(
            f"the auditor role needs a 32-byte encryption key, got {len(p.enc_key)} bytes",
            "invalid_key",
        )
    # Any other key length is not an X25519 key.
    if len(p.enc_key) not in (0, 32):
        raise TxFailed(f"encryption key must be 0 or 32 bytes, got {len(p.enc_key)}", "invalid_key")
    roles = (current.roles & Role.REGISTRAR) | p.roles
    key = keys.role_key(p.address)
    if roles == 0 and not p.enc_key:
        state.delete(key)
    else:
        state.set_obj(key, RoleRecord(roles, p.enc_key))
    state.emit(ev.make(ev.ROLES_SET, address=p.address, roles=role_names(roles)))


@TX_TYPES.declare(
    REGISTER_MERCHANT,
    RegisterMerchant,
    "anyone but a registrar: register as a merchant, pending approval",
    codes={
        **shared("commerce_disabled", "invalid_text", "text_too_long", "registrar_party"),
        "merchant_exists": "the signer is already a registered merchant",
    },
    events={ev.MERCHANT_REGISTERED},
    reads={P.CONFIG},
    writes={P.MERCHANT},
    view="MerchantView",
)
def process_register_merchant(
    state: Overlay, tx: TxInfo, p: RegisterMerchant, ctx: BlockContext
) -> None:
    cfg = config(state)
    params = cfg.params
    signer = tx.sender_address
    existing = get_merchant(state, signer)
    # One merchant record per key.
    if existing is not None:
        raise TxFailed(f"{addr(signer)} is already a registered merchant", "merchant_exists")
    # A merchant is a party to its orders, to which a registrar may not be one.
    refuse_registrar(cfg, signer, "sell")
    require_text(p.name, params.name_max_bytes, "name")
    require_text(p.profile, params.profile_max_bytes, "profile")
    # A name is how shoppers recognise the merchant.
    if not p.name.strip():
        raise TxFailed("merchant name must not be blank", "invalid_text")
    merchant = Merchant(
        signer,
        p.name,
        p.profile,
        p.enc_key,
        MerchantStatus.PENDING,
        ctx.time_ms,
        ctx.time_ms,
        0,
        0,
        0,
    )
    state.set_obj(keys.merchant_key(signer), merchant)
    state.emit(ev.make(ev.MERCHANT_REGISTERED, merchant=signer, name=p.name[:64]))


@TX_TYPES.declare(
    UPDATE_MERCHANT,
    UpdateMerchant,
    "merchant: new name, profile and encryption key",
    codes=shared("commerce_disabled", "missing_role", "invalid_text", "text_too_long"),
    events={ev.MERCHANT_UPDATED},
    reads={P.CONFIG},
    writes={P.MERCHANT},
    view="MerchantView",
)
def process_update_merchant(
    state: Overlay, tx: TxInfo, p: UpdateMerchant, ctx: BlockContext
) -> None:
    params = config(state).params
    merchant = require_merchant(state, tx.sender_address)
    require_text(p.name, params.name_max_bytes, "name")
    require_text(p.profile, params.profile_max_bytes, "profile")
    # A name is how shoppers recognise the merchant.
    if not p.name.strip():
        raise TxFailed("merchant name must not be blank", "invalid_text")
    updated = replace(
        merchant, name=p.name, profile=p.profile, enc_key=p.enc_key, updated_ms=ctx.time_ms
    )
    state.set_obj(keys.merchant_key(merchant.address), updated)
    state.emit(ev.make(ev.MERCHANT_UPDATED, merchant=merchant.address, enc_key=p.enc_key))


@TX_TYPES.declare(
    APPROVE_MERCHANT,
    ApproveMerchant,
    "registrar: approve a merchant, or suspend it (open orders continue)",
    codes={
        **shared("commerce_disabled", "missing_role"),
        "unknown_merchant": "no merchant registered at that address",
    },
    events={ev.MERCHANT_STATUS},
    reads={P.CONFIG, P.ROLE},
    writes={P.MERCHANT},
    view="MerchantView",
)
def process_approve_merchant(
    state: Overlay, tx: TxInfo, p: ApproveMerchant, ctx: BlockContext
) -> None:
    config(state)
    require_role(state, tx.sender_address, Role.REGISTRAR, "approving merchants")
    merchant = get_merchant(state, p.merchant)
    # Only a registered merchant can be approved or suspended.
    if merchant is None:
        raise TxFailed(f"{addr(p.merchant)} is not a registered merchant", "unknown_merchant")
    status = MerchantStatus.APPROVED if p.approved else MerchantStatus.SUSPENDED
    updated = replace(merchant, status=int(status), updated_ms=ctx.time_ms)
    state.set_obj(keys.merchant_key(merchant.address), updated)
    state.emit(ev.make(ev.MERCHANT_STATUS, merchant=p.merchant, status=status.name.lower()))
