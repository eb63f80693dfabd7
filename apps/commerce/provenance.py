"""Provenance: GS1-style serialized items, EPCIS-shaped events, custody hand-offs.

An item is a GTIN-14 plus a serial (GS1 application identifiers 01 and 21),
registered by its maker, who is its first custodian. Its history is an
append-only list of ``ProvenanceEvent``s (``COMMERCE_ITEM_EVENT || ref || seq``):
only the current custodian, holding an attestor role, may attest events; a
custody hand-off is proposed by the custodian and takes effect only when the
receiver accepts it (or is dropped when the receiver refuses). Shipping an
order locks its items to the order; settling the order hands them to the buyer, and
an order that ends giving the buyer back all it paid sends them back to the merchant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from apps.commerce import events as ev
from apps.commerce import keys
from apps.commerce.codes import shared
from apps.commerce.keys import CommercePrefix as P
from apps.commerce.model import (
    ATTESTOR,
    Item,
    ItemId,
    ItemStatus,
    Listing,
    ListingStatus,
    Order,
    ProvenanceEvent,
    Role,
)
from apps.commerce.params import MAX_SEQ
from apps.commerce.payloads import (
    ACCEPT_CUSTODY,
    ATTEST,
    PROPOSE_CUSTODY,
    REFUSE_CUSTODY,
    REGISTER_ITEM,
    Attest,
    ItemRef,
    ProposeCustody,
    RegisterItem,
)
from apps.commerce.store import (
    addr,
    config,
    load,
    require_item,
    require_role,
    require_text,
    roles_of,
)
from core.codec import replace
from core.errors import NodeFault
from vm.context import BlockContext
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay, StateView

# EPCIS / CBV business steps an attestor may record; commissioning is recorded by
# registration, shipping/receiving by hand-offs and retail_selling by settlement.
ATTEST_STEPS = frozenset(
    {
        "inspecting",
        "packing",
        "shipping",
        "receiving",
        "storing",
        "repairing",
        "decommissioning",
    }
)

# Declared on their handlers below; ``apps.commerce`` registers them.
TX_TYPES = TxTable(TxClass.COMMERCE)
# GS1 AI (21) serials: up to 20 characters of GS1 character set 82.
_SERIAL = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}")
_FIELD = re.compile(r"[\x21-\x7e]*")


def gtin_check_digit(first13: str) -> int:
    """GS1 mod-10 check digit over the first 13 digits of a GTIN-14."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(first13)))
    return (10 - total % 10) % 10


def valid_gtin(gtin: str) -> bool:
    return (
        len(gtin) == 14
        and gtin.isascii()
        and gtin.isdigit()
        and gtin_check_digit(gtin[:13]) == int(gtin[13])
    )


def item_label(item: ItemId) -> str:
    """The GS1 element string form, ``(01)gtin(21)serial``."""
    return f"(01){item.gtin}(21){item.serial}"


def _require_valid_id(item: ItemId) -> None:
    # GTIN-14: fourteen digits with a valid GS1 check digit.
    if not valid_gtin(item.gtin):
        raise TxFailed(
            f"GTIN must be 14 digits with a valid check digit, got {item.gtin!r}", "invalid_gtin"
        )
    # Serial: 1..20 characters of GS1 character set 82.
    if not _SERIAL.fullmatch(item.serial):
        raise TxFailed(
            f"serial must be 1..20 GS1 CSET-82 characters, got {item.serial!r}", "invalid_serial"
        )


def _require_custodian(item: Item, signer: bytes, label: str) -> None:
    # Only the item's current custodian speaks for it.
    if item.custodian != signer:
        raise TxFailed(
            f"item {label} is in the custody of {addr(item.custodian)}, signer is {addr(signer)}",
            "not_custodian",
        )


def _require_owner(item: Item, signer: bytes, label: str) -> None:
    # An item sold on chain is its owner's to sell (None: never sold, its holder's).
    if item.owner is not None and item.owner != signer:
        raise TxFailed(
            f"item {label} is owned by {addr(item.owner)}, signer is {addr(signer)}",
            "not_owner",
        )


def _require_owner_to_end(item: Item, signer: bytes, label: str) -> None:
    # Decommissioning ends an item for good, so it is for whom the item belongs to: its
    # owner, or its maker until it is first sold on chain. A carrier or an inspector
    # holding someone else's item records what it sees (inspecting, damaged), never its end.
    belongs_to = item.maker if item.owner is None else item.owner
    if signer != belongs_to:
        whose = "was never sold on chain, its maker" if item.owner is None else "is owned by"
        raise TxFailed(
            f"item {label} {whose} {addr(belongs_to)}: only they may decommission it, "
            f"signer is {addr(signer)}",
            "not_owner",
        )


def _offering(state: StateView, item: Item) -> int:
    """The resale listing that offers ``item`` (0: none): the one it names, until that
    listing has sold its one unit (a sold unit never comes back), or is delisted with the
    unit held by no order, deal or auction."""
    if not item.listing_id:
        return 0
    listing = load(state, keys.listing_key(item.listing_id), Listing)
    if listing is None:
        raise NodeFault(f"item {item.ref.hex()} names listing {item.listing_id}, which is missing")
    return listing.id if offers_item(listing) else 0


def offers_item(listing: Listing) -> bool:
    """Whether a resale listing still offers (or holds for a buyer) its item."""
    return not listing.sold and (listing.status == ListingStatus.ACTIVE or listing.reserved > 0)


def _require_not_offered(state: StateView, item: Item, label: str, listing_id: int) -> None:
    # One listing offers an item at a time, so one buyer's escrow at most waits for it.
    offering = _offering(state, item)
    if offering and offering != listing_id:
        expected = f"listing {listing_id}'s" if listing_id else "no listing's"
        raise TxFailed(
            f"item {label} is offered by listing {offering}, expected {expected} (delist it first)",
            "item_listed",
        )


def require_resellable(state: Overlay, item_id: ItemId, signer: bytes) -> bytes:
    """The ref of an item ``signer`` may list for resale: active, owned and held by the
    signer, not travelling in an order nor in a hand-off, offered by no other listing."""
    ref = keys.item_ref(item_id.gtin, item_id.serial)
    label = item_label(item_id)
    item = require_item(state, ref, label)
    _require_active(item, label)
    # Only an owner resells. An item never sold on chain has none yet, and its holder may
    # be a carrier: its supply chain sells it through an ordinary listing.
    if item.owner is None:
        raise TxFailed(
            f"item {label} has never been sold on chain: only an owner resells", "not_owner"
        )
    _require_owner(item, signer, label)
    # A resale is shipped by the seller, who must hold the item.
    _require_custodian(item, signer, label)
    # An item travelling (in an order or a hand-off) cannot be offered.
    if item.order_id or item.pending_to is not None:
        raise TxFailed(f"item {label} ships in an order or a hand-off", "item_locked")
    _require_not_offered(state, item, label, 0)
    return ref


def offer_item(state: Overlay, ref: bytes, listing_id: int) -> None:
    """``listing_id`` now offers the item (checked by ``require_resellable``)."""
    item = load(state, keys.item_key(ref), Item)
    if item is None:
        raise NodeFault(f"listing {listing_id} offers a missing item {ref.hex()}")
    state.set_obj(keys.item_key(ref), replace(item, listing_id=listing_id))


def _require_active(item: Item, label: str) -> None:
    # A decommissioned item has no future.
    if item.status != ItemStatus.ACTIVE:
        raise TxFailed(f"item {label} is decommissioned, expected active", "item_decommissioned")


def _require_field(value: str, limit: int, what: str) -> None:
    require_text(value, limit, what)
    # EPCIS vocabulary values and identifiers are printable ASCII without spaces.
    if not _FIELD.fullmatch(value):
        raise TxFailed(
            f"{what} must be printable ASCII without spaces, got {value!r}", "invalid_text"
        )


def _append(
    state: Overlay,
    item: Item,
    event: ProvenanceEvent,
    *,
    settlement: bool = False,
    **changes: object,
) -> Item:
    """Append ``event`` to the item's history (append-only: seq = event_count).

    ``settlement``: the event of the item passing to its buyer (``hand_to_buyer``),
    which a begin-block hook may append: while an item ships in an order every other
    event leaves it the last place, so that it never finds the history full (a
    failure in a hook halts the chain). An item returning from an order has no
    settlement to wait for."""
    # Event keys carry a 4-byte seq; shipping checks there is room for the settlement.
    travelling = item.order_id and item.return_to is None
    limit = MAX_SEQ if settlement or not travelling else MAX_SEQ - 1
    if item.event_count >= limit:
        raise TxFailed(
            f"item {item.ref.hex()} has {item.event_count} events, the maximum is {MAX_SEQ}",
            "too_many_events",
        )
    if event.seq != item.event_count:
        raise NodeFault(f"item event seq {event.seq}, expected {item.event_count}")
    state.set_obj(keys.item_event_key(item.ref, event.seq), event)
    updated = replace(item, event_count=item.event_count + 1, **changes)
    state.set_obj(keys.item_key(item.ref), updated)
    state.emit(
        ev.make(
            ev.ITEM_EVENT,
            item=item.ref,
            seq=event.seq,
            biz_step=event.biz_step,
            disposition=event.disposition,
        )
    )
    return updated


def _event(
    item: Item,
    ctx: BlockContext,
    attestor: bytes,
    tx_hash: bytes,
    *,
    action: str = "OBSERVE",
    biz_step: str,
    disposition: str,
    read_point: str = "",
    biz_location: str = "",
    event_time_ms: int | None = None,
    source: bytes | None = None,
    destination: bytes | None = None,
    data_hash: bytes = b"",
) -> ProvenanceEvent:
    return ProvenanceEvent(
        item.event_count,
        action,
        biz_step,
        disposition,
        read_point,
        biz_location,
        ctx.time_ms if event_time_ms is None else event_time_ms,
        ctx.time_ms,
        ctx.height,
        attestor,
        source,
        destination,
        data_hash,
        tx_hash,
    )


# --- handlers ---


@TX_TYPES.declare(
    REGISTER_ITEM,
    RegisterItem,
    "maker: register an item (custodian = maker, commissioning event)",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "invalid_text",
            "text_too_long",
            "invalid_time",
            "too_many_events",
        ),
        "item_exists": "the item (GTIN + serial) is already registered",
        "invalid_gtin": "not 14 digits with a valid GS1 check digit",
        "invalid_serial": "not 1..20 GS1 CSET-82 characters",
    },
    events={ev.ITEM_EVENT, ev.ITEM_REGISTERED},
    reads={P.CONFIG, P.ROLE},
    writes={P.ITEM, P.ITEM_EVENT},
    view="ItemView",
)
def process_register_item(state: Overlay, tx: TxInfo, p: RegisterItem, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    require_role(state, signer, Role.MAKER, "registering an item")
    _require_valid_id(p.item)
    require_text(p.description, params.title_max_bytes, "item description")
    _require_field(p.read_point, params.field_max_bytes, "read point")
    # Events cannot be dated in the future of the block that records them.
    if p.event_time_ms > ctx.time_ms:
        raise TxFailed(
            f"event time {p.event_time_ms} is after the block time {ctx.time_ms}", "invalid_time"
        )
    ref = keys.item_ref(p.item.gtin, p.item.serial)
    label = item_label(p.item)
    # A serialized item exists once.
    if load(state, keys.item_key(ref), Item) is not None:
        raise TxFailed(f"item {label} is already registered", "item_exists")
    item = Item(
        ref,
        p.item.gtin,
        p.item.serial,
        signer,
        signer,
        None,
        ItemStatus.ACTIVE,
        0,
        0,
        ctx.time_ms,
        p.description,
    )
    event = _event(
        item,
        ctx,
        signer,
        tx.hash,
        action="ADD",
        biz_step="commissioning",
        disposition="active",
        read_point=p.read_point,
        event_time_ms=p.event_time_ms,
        destination=signer,
    )
    state.emit(
        ev.make(ev.ITEM_REGISTERED, item=ref, gtin=p.item.gtin, serial=p.item.serial, maker=signer)
    )
    _append(state, item, event)


@TX_TYPES.declare(
    ATTEST,
    Attest,
    "attestor who is the custodian: append an EPCIS ObjectEvent",
    codes={
        **shared(
            "commerce_disabled",
            "missing_role",
            "invalid_text",
            "text_too_long",
            "invalid_hash",
            "unknown_item",
            "invalid_time",
            "not_custodian",
            "item_decommissioned",
            "item_locked",
            "item_listed",
            "not_owner",
            "too_many_events",
        ),
        "invalid_step": "a business step that attestations may not record",
    },
    events={ev.ITEM_EVENT},
    reads={P.CONFIG, P.ROLE, P.LISTING},
    writes={P.ITEM, P.ITEM_EVENT},
    view="ItemView",
)
def process_attest(state: Overlay, tx: TxInfo, p: Attest, ctx: BlockContext) -> None:
    params = config(state).params
    signer = tx.sender_address
    require_role(state, signer, ATTESTOR, "attesting an item event")
    ref = keys.item_ref(p.item.gtin, p.item.serial)
    label = item_label(p.item)
    item = require_item(state, ref, label)
    _require_active(item, label)
    _require_custodian(item, signer, label)
    # Commissioning, hand-offs and sales are recorded by their own transactions.
    if p.biz_step not in ATTEST_STEPS:
        raise TxFailed(
            f"business step must be one of {', '.join(sorted(ATTEST_STEPS))}, got {p.biz_step!r}",
            "invalid_step",
        )
    _require_field(p.disposition, params.field_max_bytes, "disposition")
    _require_field(p.read_point, params.field_max_bytes, "read point")
    _require_field(p.biz_location, params.field_max_bytes, "business location")
    # Events cannot be dated in the future of the block that records them.
    if p.event_time_ms > ctx.time_ms:
        raise TxFailed(
            f"event time {p.event_time_ms} is after the block time {ctx.time_ms}", "invalid_time"
        )
    # Hashes are 32 bytes; anything shorter is not one.
    if len(p.data_hash) not in (0, 32):
        raise TxFailed(f"data hash must be 0 or 32 bytes, got {len(p.data_hash)}", "invalid_hash")
    decommission = p.biz_step == "decommissioning"
    # An item travelling in an order (or back from one) cannot leave existence meanwhile.
    if decommission and item.order_id:
        raise TxFailed(f"item {label} ships in order {item.order_id}", "item_locked")
    if decommission:
        _require_owner_to_end(item, signer, label)
        # A listing that offers it would take a buyer's escrow for an item that is no
        # more, held until the ship deadline: the owner delists first.
        _require_not_offered(state, item, label, 0)
    event = _event(
        item,
        ctx,
        signer,
        tx.hash,
        action="DELETE" if decommission else "OBSERVE",
        biz_step=p.biz_step,
        disposition=p.disposition,
        read_point=p.read_point,
        biz_location=p.biz_location,
        event_time_ms=p.event_time_ms,
        data_hash=p.data_hash,
    )
    if decommission:
        _append(state, item, event, status=int(ItemStatus.DECOMMISSIONED), pending_to=None)
    else:
        _append(state, item, event)


@TX_TYPES.declare(
    PROPOSE_CUSTODY,
    ProposeCustody,
    "custodian: propose a hand-off (shipping event); while the item ships in an order, to "
    "a carrier, its buyer or its merchant (returning from one: a carrier or its merchant); "
    "never while a resale listing offers it",
    codes=shared(
        "commerce_disabled",
        "self_dealing",
        "unknown_item",
        "not_custodian",
        "item_decommissioned",
        "item_locked",
        "item_listed",
        "too_many_events",
    ),
    events={ev.CUSTODY_PROPOSED, ev.ITEM_EVENT},
    reads={P.CONFIG, P.ORDER, P.ROLE, P.LISTING},
    writes={P.ITEM, P.ITEM_EVENT},
    view="ItemView",
)
def process_propose_custody(
    state: Overlay, tx: TxInfo, p: ProposeCustody, ctx: BlockContext
) -> None:
    config(state)
    signer = tx.sender_address
    ref = keys.item_ref(p.item.gtin, p.item.serial)
    label = item_label(p.item)
    item = require_item(state, ref, label)
    _require_active(item, label)
    _require_custodian(item, signer, label)
    # Handing an item to its own custodian changes nothing.
    if p.to == signer:
        raise TxFailed(f"item {label} is already in the custody of {addr(signer)}", "self_dealing")
    # An item shipping in an order is the buyer's on its way: it goes on to a carrier or
    # the buyer, or back to the merchant (a return), never to a third party.
    if item.order_id:
        _require_on_the_way(state, item, p.to, label)
    # A listing that offers it would take a buyer's escrow for an item its seller no
    # longer holds, unshippable, the money back only at the ship deadline: the seller
    # keeps it until the listing's order ships it (the unit sold, the listing offers it
    # no more), or delists first. A hand-off pending before the listing cannot be
    # accepted after it: listing an item with one pending is refused (item_locked).
    _require_not_offered(state, item, label, 0)
    event = _event(
        item,
        ctx,
        signer,
        tx.hash,
        biz_step="shipping",
        disposition="in_transit",
        source=signer,
        destination=p.to,
    )
    _append(state, item, event, pending_to=p.to)
    state.emit(ev.make(ev.CUSTODY_PROPOSED, item=ref, to=p.to))


def _require_on_the_way(state: Overlay, item: Item, to: bytes, label: str) -> None:
    if item.return_to is not None:
        # Back from an order that returned the buyer all it paid: to the merchant, by
        # carriers if need be, never to the buyer nor a third party.
        if to == item.return_to or roles_of(state, to).roles & Role.CARRIER:
            return
        raise TxFailed(
            f"item {label} goes back to its merchant {addr(item.return_to)} (order "
            f"{item.order_id} returned all it held): it goes to a carrier or the merchant, "
            f"not {addr(to)}",
            "item_locked",
        )
    order = load(state, keys.order_key(item.order_id), Order)
    if order is None:
        raise NodeFault(f"item {label} is locked to order {item.order_id}, which is missing")
    if to in (order.buyer, order.merchant) or roles_of(state, to).roles & Role.CARRIER:
        return
    raise TxFailed(
        f"item {label} ships in order {order.id}: it goes to a carrier, the buyer or the "
        f"merchant, not {addr(to)}",
        "item_locked",
    )


def _withdrawable(state: Overlay, p: ItemRef, signer: bytes) -> Item | None:
    """The item, if ``signer`` holds it with a hand-off of its own pending."""
    item = load(state, keys.item_key(keys.item_ref(p.item.gtin, p.item.serial)), Item)
    if item is None or item.custodian != signer or item.pending_to is None:
        return None
    return item


def _pending_for(state: Overlay, p: ItemRef, signer: bytes) -> tuple[Item, str]:
    ref = keys.item_ref(p.item.gtin, p.item.serial)
    label = item_label(p.item)
    item = require_item(state, ref, label)
    # Only the named receiver of a pending hand-off may answer it.
    if item.pending_to != signer:
        raise TxFailed(
            f"item {label} has no hand-off pending to {addr(signer)} "
            f"(pending to {addr(item.pending_to)})",
            "no_pending_handoff",
        )
    return item, label


@TX_TYPES.declare(
    ACCEPT_CUSTODY,
    ItemRef,
    "the pending receiver: accept a hand-off; custodian changes (receiving event)",
    codes=shared("commerce_disabled", "unknown_item", "too_many_events", "no_pending_handoff"),
    events={ev.CUSTODY_ACCEPTED, ev.ITEM_EVENT},
    reads={P.CONFIG},
    writes={P.ITEM, P.ITEM_EVENT},
    view="ItemView",
)
def process_accept_custody(state: Overlay, tx: TxInfo, p: ItemRef, ctx: BlockContext) -> None:
    config(state)
    signer = tx.sender_address
    item, _ = _pending_for(state, p, signer)
    event = _event(
        item,
        ctx,
        signer,
        tx.hash,
        biz_step="receiving",
        disposition="in_progress",
        source=item.custodian,
        destination=signer,
    )
    order_id, return_to = _lock_after(item, signer)
    _append(
        state,
        item,
        event,
        custodian=signer,
        pending_to=None,
        order_id=order_id,
        return_to=return_to,
    )
    state.emit(
        ev.make(ev.CUSTODY_ACCEPTED, item=item.ref, previous=item.custodian, custodian=signer)
    )


@TX_TYPES.declare(
    REFUSE_CUSTODY,
    ItemRef,
    "the pending receiver: refuse a hand-off, or the custodian: withdraw its own; the "
    "proposal is dropped",
    codes=shared("commerce_disabled", "unknown_item", "too_many_events", "no_pending_handoff"),
    events={ev.CUSTODY_REFUSED, ev.ITEM_EVENT},
    reads={P.CONFIG},
    writes={P.ITEM, P.ITEM_EVENT},
    view="ItemView",
)
def process_refuse_custody(state: Overlay, tx: TxInfo, p: ItemRef, ctx: BlockContext) -> None:
    config(state)
    signer = tx.sender_address
    item = _withdrawable(state, p, signer)
    if item is not None:
        # The custodian takes its own proposal back: a receiver that never answered left
        # it pending for good, and with it an item returning from an order locked in its
        # merchant's hands (proposing to itself is self-dealing).
        step, disposition, to = "shipping", "cancelled", item.pending_to
    else:
        item, _ = _pending_for(state, p, signer)
        step, disposition, to = "receiving", "refused", signer
    event = _event(
        item,
        ctx,
        signer,
        tx.hash,
        biz_step=step,
        disposition=disposition,
        source=item.custodian,
        destination=to,
    )
    order_id, return_to = _lock_after(item, item.custodian)
    _append(state, item, event, pending_to=None, order_id=order_id, return_to=return_to)
    state.emit(ev.make(ev.CUSTODY_REFUSED, item=item.ref, custodian=item.custodian, by=signer))


def _lock_after(item: Item, custodian: bytes) -> tuple[int, bytes | None]:
    """The item's lock (``order_id``, ``return_to``) once ``custodian`` holds it with no
    hand-off pending: an item going back is unlocked when its merchant has it again."""
    if item.return_to is not None and custodian == item.return_to:
        return 0, None
    return item.order_id, item.return_to


# --- orders and items (called by apps.commerce.orders) ---


def lock_for_order(state: Overlay, order: Order, items: Sequence[ItemId]) -> tuple[bytes, ...]:
    """Check and lock the shipped items to ``order``; returns their refs."""
    refs: list[bytes] = []
    for item_id in items:
        ref = keys.item_ref(item_id.gtin, item_id.serial)
        label = item_label(item_id)
        # Each item ships once per parcel.
        if ref in refs:
            raise TxFailed(f"item {label} is listed twice", "duplicate_item")
        item = require_item(state, ref, label)
        _require_active(item, label)
        # The merchant ships only what it holds...
        if item.custodian != order.merchant:
            raise TxFailed(
                f"item {label} is in the custody of {addr(item.custodian)}, expected the "
                f"merchant {addr(order.merchant)}",
                "not_custodian",
            )
        # ...and, once an item has been sold on chain, only what it owns: a custodian
        # (an inspector, a carrier) holds a collector's item, it cannot sell it.
        _require_owner(item, order.merchant, label)
        # Its settlement appends an event, which must fit in the history.
        if item.event_count >= MAX_SEQ:
            raise TxFailed(
                f"item {label} has {item.event_count} events, the maximum is {MAX_SEQ}",
                "too_many_events",
            )
        # An item travels in one order at a time.
        if item.order_id:
            raise TxFailed(f"item {label} already ships in order {item.order_id}", "item_locked")
        # A pending hand-off would race the shipment.
        if item.pending_to is not None:
            raise TxFailed(
                f"item {label} has a hand-off pending to {addr(item.pending_to)}", "item_locked"
            )
        # An item a resale listing offers ships in that listing's order only.
        _require_not_offered(state, item, label, order.listing_id)
        state.set_obj(keys.item_key(ref), replace(item, order_id=order.id))
        refs.append(ref)
    return tuple(refs)


def return_items(state: Overlay, order: Order) -> None:
    """The order ended giving its buyer back all it paid (a refund, or a ruling of the
    whole escrow to the buyer): its items stay the merchant's and go back to it. One the
    merchant holds is unlocked, with no hand-off pending or one to the buyer (dropped);
    any other stays locked to the order, returning to the merchant (``Item.return_to``),
    until the merchant holds it again (``accept_custody``, or ``refuse_custody`` of the
    merchant's own proposal to a carrier)."""
    for ref in order.items:
        item = load(state, keys.item_key(ref), Item)
        if item is None or item.order_id != order.id:
            raise NodeFault(f"order {order.id} refers to an item not locked to it")
        # The merchant's own hand-off to the buyer lapses: the buyer, refunded, is not
        # whom the item goes to, and kept pending it left the item locked in the
        # merchant's hands until the buyer (who owes nothing) answered it, the merchant
        # unable to withdraw it (proposing to itself is refused) or to re-propose to any
        # but a carrier.
        if item.custodian == order.merchant and item.pending_to in (None, order.buyer):
            state.set_obj(keys.item_key(ref), replace(item, order_id=0, pending_to=None))
        else:
            state.set_obj(keys.item_key(ref), replace(item, return_to=order.merchant))


def hand_to_buyer(state: Overlay, order: Order, ctx: BlockContext, tx_hash: bytes) -> None:
    """The order settled: each of its items passes to the buyer (recorded in its history)."""
    for ref in order.items:
        item = load(state, keys.item_key(ref), Item)
        if item is None:
            raise NodeFault(f"order {order.id} refers to a missing item")
        event = _event(
            item,
            ctx,
            order.merchant,
            tx_hash,
            biz_step="retail_selling",
            disposition="retail_sold",
            source=item.custodian,
            destination=order.buyer,
        )
        # The buyer is its owner now, and holds it: a resale starts from here.
        _append(
            state,
            item,
            event,
            settlement=True,
            custodian=order.buyer,
            owner=order.buyer,
            pending_to=None,
            order_id=0,
            listing_id=0,
        )
