"""Transaction types of the commerce app and their payloads.

Type names are ``commerce.<verb>``; a payload is a frozen ``Wire`` dataclass
whose codec bounds every field (texts to the hard caps in ``params``; genesis
parameters may set lower limits, checked by the handlers). Ids are uint64,
``0`` meaning "none" where a field is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from apps.commerce.model import EncKey, Field, ItemId, OptEncKey, OptHash, Text
from apps.commerce.params import (
    DESCRIPTION_CAP,
    MAX_ITEMS_CAP,
    NAME_CAP,
    PROFILE_CAP,
    SEALED_CAP,
    TIP_CAP,
    TITLE_CAP,
)
from core.codec import MaxItems, MaxLen, Wire
from core.types import Address, Hash32
from vm.accounts import NATIVE
from vm.currency import Symbol

SET_ROLES = "commerce.set_roles"
REGISTER_MERCHANT = "commerce.register_merchant"
UPDATE_MERCHANT = "commerce.update_merchant"
APPROVE_MERCHANT = "commerce.approve_merchant"
CREATE_LISTING = "commerce.create_listing"
UPDATE_LISTING = "commerce.update_listing"
RESTOCK = "commerce.restock"
WITHDRAW_STOCK = "commerce.withdraw_stock"
DELIST = "commerce.delist"
OPEN_SESSION = "commerce.open_session"
PIN = "commerce.pin"
UNPIN = "commerce.unpin"
OPEN_DEAL = "commerce.open_deal"
CLOSE_DEAL = "commerce.close_deal"
CLOSE_SESSION = "commerce.close_session"
TIP = "commerce.tip"
PLACE_ORDER = "commerce.place_order"
CANCEL_ORDER = "commerce.cancel_order"
DECLINE_ORDER = "commerce.decline_order"
ACCEPT_ORDER = "commerce.accept_order"
SHIP_ORDER = "commerce.ship_order"
CONFIRM_DELIVERY = "commerce.confirm_delivery"
REFUND = "commerce.refund"
OPEN_DISPUTE = "commerce.open_dispute"
RULE = "commerce.rule"
DISCLOSE = "commerce.disclose"
REGISTER_ITEM = "commerce.register_item"
ATTEST = "commerce.attest"
PROPOSE_CUSTODY = "commerce.propose_custody"
ACCEPT_CUSTODY = "commerce.accept_custody"
REFUSE_CUSTODY = "commerce.refuse_custody"
REVIEW = "commerce.review"
REPLY_REVIEW = "commerce.reply_review"
START_AUCTION = "commerce.start_auction"
CANCEL_AUCTION = "commerce.cancel_auction"
BID = "commerce.bid"


# --- roles and merchants ---


@dataclass(frozen=True, slots=True)
class SetRoles(Wire):
    """Registrar: set the full role mask of ``address`` (see model.Role)."""

    address: Address
    roles: int
    # X25519 key, required with the auditor role (disclosures are sealed to it).
    enc_key: OptEncKey


@dataclass(frozen=True, slots=True)
class RegisterMerchant(Wire):
    name: Annotated[str, MaxLen(NAME_CAP)]
    profile: Annotated[str, MaxLen(PROFILE_CAP)]
    enc_key: EncKey


@dataclass(frozen=True, slots=True)
class UpdateMerchant(Wire):
    name: Annotated[str, MaxLen(NAME_CAP)]
    profile: Annotated[str, MaxLen(PROFILE_CAP)]
    enc_key: EncKey


@dataclass(frozen=True, slots=True)
class ApproveMerchant(Wire):
    merchant: Address
    # False suspends: no new listings, sessions, deals or orders.
    approved: bool


# --- listings ---


@dataclass(frozen=True, slots=True)
class CreateListing(Wire):
    title: Annotated[str, MaxLen(TITLE_CAP)]
    description: Annotated[str, MaxLen(DESCRIPTION_CAP)]
    price: int
    stock: int
    media_hash: OptHash
    # "" the native token, else an active issued currency (fixed for the listing's life).
    currency: Symbol = NATIVE
    # Resale: the one item the listing sells, owned and held by the signer (stock 1).
    item: ItemId | None = None


@dataclass(frozen=True, slots=True)
class UpdateListing(Wire):
    listing_id: int
    # The version being replaced (refused if another update got there first).
    version: int
    title: Annotated[str, MaxLen(TITLE_CAP)]
    description: Annotated[str, MaxLen(DESCRIPTION_CAP)]
    price: int
    media_hash: OptHash


@dataclass(frozen=True, slots=True)
class StockChange(Wire):
    """Restock (adds to total and available) or withdraw (removes available stock)."""

    listing_id: int
    quantity: int


@dataclass(frozen=True, slots=True)
class ListingRef(Wire):
    listing_id: int


# --- live sessions, deals, tips ---


@dataclass(frozen=True, slots=True)
class OpenSession(Wire):
    host: Address
    host_bps: int
    title: Annotated[str, MaxLen(TITLE_CAP)]


@dataclass(frozen=True, slots=True)
class PinListing(Wire):
    session_id: int
    listing_id: int


@dataclass(frozen=True, slots=True)
class OpenDeal(Wire):
    session_id: int
    listing_id: int
    price: int
    allocation: int
    per_buyer_cap: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class DealRef(Wire):
    deal_id: int


@dataclass(frozen=True, slots=True)
class SessionRef(Wire):
    session_id: int


@dataclass(frozen=True, slots=True)
class Tip(Wire):
    session_id: int
    amount: int
    message: Annotated[str, MaxLen(TIP_CAP)]
    # "" the native token, else an issued currency's symbol.
    currency: Symbol = NATIVE


# --- live auctions ---


@dataclass(frozen=True, slots=True)
class StartAuction(Wire):
    session_id: int
    listing_id: int
    start_price: int
    # 0: no reserve; otherwise at least the start price.
    reserve: int
    # 0: at the block time; a later start lets bidders place pre-bids.
    start_ms: int
    duration_ms: int
    # model.AuctionMode: 1 timed (anti-snipe), 2 sudden death.
    mode: int


@dataclass(frozen=True, slots=True)
class AuctionRef(Wire):
    auction_id: int


@dataclass(frozen=True, slots=True)
class Bid(Wire):
    """A maximum bid: the chain bids for the bidder by increments up to ``max_amount``.

    The address is that of ``PlaceOrder``, sealed to the merchant's current key: the
    winner's order carries it.
    """

    auction_id: int
    max_amount: int
    sealed_to: EncKey
    address_commitment: Hash32
    sealed_address: Annotated[bytes, MaxLen(SEALED_CAP)]


# --- orders ---


@dataclass(frozen=True, slots=True)
class PlaceOrder(Wire):
    listing_id: int
    # The version the buyer saw; refused if the listing changed since.
    listing_version: int
    quantity: int
    # The unit price the buyer agrees to (listing or deal price).
    unit_price: int
    # 0: not through a live session (a deal implies its session).
    session_id: int
    deal_id: int
    # The merchant key the address was sealed to (must be the current one).
    sealed_to: EncKey
    address_commitment: Hash32
    sealed_address: Annotated[bytes, MaxLen(SEALED_CAP)]
    # The currency the buyer pays in: must be the listing's (the buyer agrees to it
    # as to the price).
    currency: Symbol = NATIVE


@dataclass(frozen=True, slots=True)
class OrderRef(Wire):
    """Cancel, decline, accept, confirm delivery."""

    order_id: int


@dataclass(frozen=True, slots=True)
class ShipOrder(Wire):
    order_id: int
    # Hash of the carrier's tracking reference (the reference itself stays off chain).
    tracking_hash: Hash32
    # Serialized items in the parcel, in the merchant's custody.
    items: Annotated[tuple[ItemId, ...], MaxItems(MAX_ITEMS_CAP)]


@dataclass(frozen=True, slots=True)
class Refund(Wire):
    order_id: int
    # The whole escrow ends the order (REFUNDED); less is a partial refund.
    amount: int


@dataclass(frozen=True, slots=True)
class OpenDispute(Wire):
    order_id: int
    reason: Text


@dataclass(frozen=True, slots=True)
class Rule(Wire):
    order_id: int
    # The buyer's share of the escrow; the rest is released to the merchant side.
    buyer_bps: int


@dataclass(frozen=True, slots=True)
class Disclose(Wire):
    order_id: int
    auditor: Address
    # The auditor's key the copy is sealed to: its current one, or refused (stale_key).
    sealed_to: EncKey
    # The address re-sealed to the auditor's registered key.
    ciphertext: Annotated[bytes, MaxLen(SEALED_CAP)]


# --- provenance ---


@dataclass(frozen=True, slots=True)
class RegisterItem(Wire):
    item: ItemId
    description: Annotated[str, MaxLen(TITLE_CAP)]
    read_point: Field
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class Attest(Wire):
    item: ItemId
    biz_step: Field
    disposition: Field
    read_point: Field
    biz_location: Field
    event_time_ms: int
    data_hash: OptHash


@dataclass(frozen=True, slots=True)
class ProposeCustody(Wire):
    item: ItemId
    to: Address


@dataclass(frozen=True, slots=True)
class ItemRef(Wire):
    """Accept or refuse a proposed custody hand-off."""

    item: ItemId


# --- reviews ---


@dataclass(frozen=True, slots=True)
class WriteReview(Wire):
    order_id: int
    rating: int
    text: Text


@dataclass(frozen=True, slots=True)
class ReplyReview(Wire):
    order_id: int
    text: Text
