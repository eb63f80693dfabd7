"""Receipt codes that several commerce transaction types share, with their meanings.

A type's declaration picks the shared codes it may give with ``shared`` and adds
its own beside its handler; ``apps.commerce.ERROR_CODES``, the table of every
commerce code, is derived from the declarations. Clients may branch on codes; they
never change meaning. The message beside a code names expected and actual values
and is for people.
"""

from __future__ import annotations

from vm.currency import CODES as CURRENCY_CODES
from vm.registry import shared_codes

SHARED: dict[str, str] = {
    "commerce_disabled": "the chain's genesis has no commerce section",
    "missing_role": "the signer lacks the role the action needs (the message names it)",
    "not_authorized": "the signer is not the party the action needs (buyer, merchant, host)",
    "merchant_not_approved": "the merchant is pending or suspended",
    "invalid_text": "a blank name, title or reply, or a field with spaces or non-ASCII",
    "text_too_long": "a text or blob over its genesis limit",
    "invalid_hash": "a hash that is neither empty nor 32 bytes",
    "unknown_listing": "no such listing",
    "listing_inactive": "the listing is delisted",
    "stale_version": "the listing changed since the version the tx names",
    "invalid_price": "a price of 0",
    "invalid_quantity": "a quantity of 0 or over the maximum",
    "insufficient_stock": "not enough available (unreserved) stock",
    "unknown_session": "no such session",
    "session_closed": "the session is closed",
    "not_pinned": "the listing is not pinned in the session",
    "unknown_deal": "no such deal",
    "deal_closed": "the deal is closed",
    "self_dealing": "buying one's own listing, tipping oneself, handing an item to oneself",
    "registrar_party": "a registrar as buyer, bidder or merchant: it rules escalated "
    "disputes, and may not rule an order it is a party to",
    "invalid_sealed_address": "a sealed box too short to hold anything",
    "stale_key": "the address is sealed to a key that is not the merchant's current one (a "
    "disclosure: the auditor's)",
    "insufficient_funds": "balance (after the fee) below the amount",
    "invalid_amount": "an amount of 0, over what is held, or overflowing uint64",
    "u64_overflow": "a running total (tips, ratings, order counts, ids) would pass 2**64-1",
    "unknown_order": "no such order",
    "bad_state": "the order is not in a state that allows the action",
    "deadline_passed": "the order's deadline passed (the next block start enforces it)",
    "unknown_item": "no such item",
    "invalid_time": "an event time after the block time",
    "not_custodian": "the signer (or merchant) is not the item's custodian",
    "not_owner": "the signer (or merchant) is not the owner of an item sold on chain (or, "
    "decommissioning an item never sold, its maker)",
    "item_decommissioned": "the item was decommissioned",
    "item_locked": "the item ships in an order or has a pending hand-off (or, shipping in an "
    "order, is handed to other than a carrier, its buyer or merchant)",
    "item_listed": "the item is offered by another resale listing (active, its unit unsold), "
    "or by any when handing it off or decommissioning it: delist it first",
    "too_many_events": "the item's history holds 2**32-1 events",
    "no_pending_handoff": "no hand-off of the item is pending to the signer",
    # What vm/currency.py's checks give, meaning what they mean there.
    "unknown_currency": CURRENCY_CODES["unknown_currency"],
    "currency_revoked": CURRENCY_CODES["currency_revoked"],
}


def shared(*codes: str) -> dict[str, str]:
    """The shared ``codes`` with their meanings, for a declaration."""
    return shared_codes(SHARED, *codes)
