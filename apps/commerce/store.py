"""Typed access to commerce state, token moves, and the checks every handler shares.

Reads go through ``Overlay.get_obj`` when executing (a key touched many times
in a block is decoded once) and through plain ``get`` + decode for read models
over committed state. Helpers named ``require_*`` raise ``TxFailed`` with a
stable code and a message naming expected and actual values.
"""

from __future__ import annotations

from apps.commerce import keys
from apps.commerce.model import (
    Auction,
    Counter,
    Deal,
    DealClock,
    Escrow,
    Item,
    Listing,
    Merchant,
    MerchantStatus,
    Order,
    RoleRecord,
    Session,
    role_names,
)
from apps.commerce.params import CommerceGenesis
from core.codec import constructor
from core.errors import NodeFault
from core.keys import format_address
from vm.accounts import NATIVE
from vm.amounts import checked_add
from vm.amounts import checked_mul as vm_checked_mul
from vm.registry import TxFailed
from vm.state import Overlay, StateView, read_obj

_ZERO_ESCROW = Escrow(0, 0)
# Every order and settlement writes an escrow total, every order an id counter: built
# slot by slot (``constructor``), not through the dataclass's ``__init__``.
_new_escrow = constructor(Escrow)
_new_counter = constructor(Counter)
# A libsodium sealed box adds a 32-byte ephemeral key and a 16-byte tag.
SEALED_OVERHEAD = 48
_NO_ROLES = RoleRecord(0, b"")


# The commerce modules' name for it: the object under a key (None when absent),
# decoded once per block in an overlay.
load = read_obj


def addr(address: bytes | None) -> str:
    """An address for messages (bech32m); only ever formatted on failure paths."""
    return "none" if address is None else format_address(address)


# --- configuration and roles ---


def config(state: StateView) -> CommerceGenesis:
    """The commerce configuration written at genesis; ``commerce_disabled`` without one."""
    cfg = load(state, keys.CONFIG_KEY, CommerceGenesis)
    # Commerce runs only on chains whose genesis configures it.
    if cfg is None:
        raise TxFailed("this chain's genesis has no commerce section", "commerce_disabled")
    return cfg


def roles_of(state: StateView, address: bytes) -> RoleRecord:
    record = load(state, keys.role_key(address), RoleRecord)
    return _NO_ROLES if record is None else record


def require_role(state: StateView, address: bytes, role: int, what: str) -> RoleRecord:
    """Raise ``missing_role`` unless ``address`` holds one of the bits of ``role``."""
    record = roles_of(state, address)
    # The signer must hold the role the action needs.
    if not record.roles & role:
        raise TxFailed(
            f"{what} requires role {role_names(role)}; signer {addr(address)} has "
            f"{role_names(record.roles)}",
            "missing_role",
        )
    return record


def refuse_registrar(cfg: CommerceGenesis, address: bytes, what: str) -> None:
    """``registrar_party`` if ``address`` is a registrar (genesis names them all, for
    good): a registrar rules escalated disputes, which have no deadline, and may not
    rule an order it is a party to, so with the chain's only registrar a party nobody
    could, and the order's escrow would wait on the merchant's refund for good."""
    # A registrar is no party to any order: buyer, bidder or merchant (nor host).
    if address in cfg.registrars:
        raise TxFailed(
            f"{addr(address)} is a registrar, who rules escalated disputes, and cannot {what}",
            "registrar_party",
        )


def require_text(text: str, limit: int, what: str) -> None:
    size = len(text.encode()) if len(text) * 4 > limit else len(text)
    # Texts are bounded by the chain's parameters (the codec's cap is only a ceiling).
    if size > limit:
        raise TxFailed(f"{what} is {size} bytes, the limit is {limit}", "text_too_long")


def require_sealed(ciphertext: bytes, limit: int, what: str) -> None:
    # A sealed box is at least its overhead plus one byte of plaintext.
    if len(ciphertext) <= SEALED_OVERHEAD:
        raise TxFailed(
            f"{what} is {len(ciphertext)} bytes, a sealed box is more than {SEALED_OVERHEAD}",
            "invalid_sealed_address",
        )
    # Bounded by the chain's parameters.
    if len(ciphertext) > limit:
        raise TxFailed(f"{what} is {len(ciphertext)} bytes, the limit is {limit}", "text_too_long")


# --- objects that must exist ---


def get_merchant(state: StateView, address: bytes) -> Merchant | None:
    return load(state, keys.merchant_key(address), Merchant)


def require_merchant(state: StateView, address: bytes) -> Merchant:
    merchant = get_merchant(state, address)
    # Only a registered merchant can act as one.
    if merchant is None:
        raise TxFailed(
            f"{addr(address)} is not a registered merchant (role merchant missing)",
            "missing_role",
        )
    return merchant


def require_approved(state: StateView, address: bytes) -> Merchant:
    merchant = require_merchant(state, address)
    # Selling needs a registrar's approval (and no suspension since).
    if merchant.status != MerchantStatus.APPROVED:
        raise TxFailed(
            f"merchant {addr(address)} is {MerchantStatus(merchant.status).name.lower()}, "
            "expected approved (role approved merchant missing)",
            "merchant_not_approved",
        )
    return merchant


def require_listing(state: StateView, listing_id: int) -> Listing:
    listing = load(state, keys.listing_key(listing_id), Listing)
    # The listing must exist.
    if listing is None:
        raise TxFailed(f"no listing {listing_id}", "unknown_listing")
    return listing


def require_session(state: StateView, session_id: int) -> Session:
    session = load(state, keys.session_key(session_id), Session)
    # The session must exist.
    if session is None:
        raise TxFailed(f"no session {session_id}", "unknown_session")
    return session


def require_deal(state: StateView, deal_id: int) -> Deal:
    deal = load(state, keys.deal_key(deal_id), Deal)
    # The deal must exist.
    if deal is None:
        raise TxFailed(f"no deal {deal_id}", "unknown_deal")
    return deal


def require_order(state: StateView, order_id: int) -> Order:
    order = load(state, keys.order_key(order_id), Order)
    # The order must exist.
    if order is None:
        raise TxFailed(f"no order {order_id}", "unknown_order")
    return order


def require_auction(state: StateView, auction_id: int) -> Auction:
    auction = load(state, keys.auction_key(auction_id), Auction)
    # The auction must exist.
    if auction is None:
        raise TxFailed(f"no auction {auction_id}", "unknown_auction")
    return auction


def require_item(state: StateView, ref: bytes, label: str) -> Item:
    item = load(state, keys.item_key(ref), Item)
    # The item must have been registered.
    if item is None:
        raise TxFailed(f"no item {label}", "unknown_item")
    return item


# --- ids ---


def next_id(state: Overlay, kind: int) -> int:
    """Hand out the next id of ``kind`` (1, 2, ...)."""
    key = keys.counter_key(kind)
    counter = state.get_obj(key, Counter)
    value = 1 if counter is None else counter.next
    state.set_obj(key, _new_counter(checked_add(value, 1, "id counter")))
    return value


def peek_next_id(state: StateView, kind: int) -> int:
    counter = load(state, keys.counter_key(kind), Counter)
    return 1 if counter is None else counter.next


# --- end clocks (deal ends, auction ends): buckets found without a range scan ---


def schedule_bucket(state: Overlay, clock_key: bytes, bucket: int) -> None:
    """Make sure the clock at ``clock_key`` reaches ``bucket`` (its bucket key already
    holds the deal or auction that ends in it)."""
    clock = load(state, clock_key, DealClock)
    if clock is None:
        state.set_obj(clock_key, DealClock(bucket, bucket))
    elif bucket < clock.next:
        # The hook moved past an emptied current bucket; an end may fall in it again.
        state.set_obj(clock_key, DealClock(bucket, clock.last))
    elif bucket > clock.last:
        state.set_obj(clock_key, DealClock(clock.next, bucket))


# --- tokens ---


def escrow(state: StateView, currency: str = NATIVE) -> Escrow:
    """What the escrow of ``currency`` holds (one record per currency)."""
    held = load(state, keys.escrow_key(currency), Escrow)
    return _ZERO_ESCROW if held is None else held


def escrow_in(
    state: Overlay, amount: int, opens_order: bool = True, currency: str = NATIVE
) -> None:
    """Add ``amount`` (already debited from its payer in ``currency``) to the escrow of
    that currency: a new open order's, or, without ``opens_order``, a live auction bid's
    (``escrow_open_order`` makes it an order's when the auction is won)."""
    held = escrow(state, currency)
    total = checked_add(held.held, amount, "escrow held")
    orders = checked_add(held.open_orders, 1, "open orders") if opens_order else held.open_orders
    state.set_obj(keys.escrow_key(currency), _new_escrow(total, orders))


def escrow_open_order(state: Overlay, currency: str = NATIVE) -> None:
    """A won auction's bid, already held in ``currency``, becomes an open order's escrow."""
    held = escrow(state, currency)
    state.set_obj(keys.escrow_key(currency), _new_escrow(held.held, held.open_orders + 1))


def escrow_out(state: Overlay, amount: int, closes_order: bool, currency: str = NATIVE) -> None:
    """Take ``amount`` out of the escrow of ``currency`` (to be credited by the caller)."""
    held = escrow(state, currency)
    # Escrow equals the sum of open orders, so it always covers one of them.
    if held.held < amount or (closes_order and held.open_orders < 1):
        raise NodeFault(
            f"escrow {held} {currency} cannot pay out {amount}: escrow invariant broken"
        )
    left = _new_escrow(held.held - amount, held.open_orders - int(closes_order))
    # An empty escrow is stored as absence, like an empty account.
    if left.held == 0 and left.open_orders == 0:
        state.delete(keys.escrow_key(currency))
    else:
        state.set_obj(keys.escrow_key(currency), left)


def checked_mul(a: int, b: int, what: str) -> int:
    """``a * b``, refused as ``invalid_amount`` past 2**64-1 (amounts are u64 on chain)."""
    return vm_checked_mul(a, b, what, "invalid_amount")
