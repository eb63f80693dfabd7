"""``liveledger order``: placing orders, escrow, shipping, disputes, sealed addresses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from apps.commerce import payloads as tx
from apps.commerce.keys import deal_key
from apps.commerce.model import Deal, ItemId
from apps.commerce.sealing import open_address, open_plaintext, reseal, seal_address
from cli.client import (
    NodeClient,
    NodeError,
    address_field,
    answer_field,
    hex_field,
    int_field,
    list_field,
    object_field,
    str_field,
)
from cli.commerce.addresses import (
    auditor_seal_key,
    checked_address,
    keep_address,
    kept_address,
    merchant_seal_key,
    proven_listing,
    sealed_address_max_bytes,
)
from cli.commerce.client import CommerceClient
from cli.commerce.commands import (
    AMOUNT,
    BPS,
    ID,
    ORDERED,
    U64,
    TxOpts,
    _echo_json,
    from_option,
    keyring_option,
    tx_command,
)
from cli.commerce.enc_keys import enc_keys_of, enc_private
from cli.human import gtin14
from cli.keyring import Keyring
from cli.main import clear_errors, main, node_option
from cli.trust import Anchor, command_anchor
from core import format_address

# The order reads are signed: for the pinned genesis's chain id, else the node's.
READ_SIGNED_FOR = "the chain id this read request is signed for"


@main.group()
def order() -> None:
    """Place and settle orders."""


@tx_command(order, "place", seals=True, unanchored=ORDERED)
@click.argument("listing_id", type=ID)
@click.option("--quantity", type=AMOUNT, default=1, show_default=True)
@click.option(
    "--address", "ship_to", required=True, help="Shipping address (sealed to the merchant)."
)
@click.option("--session", "session_id", type=U64, default=0, help="Live session it is bought in.")
@click.option("--deal", "deal_id", type=U64, default=0, help="Flash deal (implies its session).")
@click.option(
    "--currency",
    default=None,
    help=(
        "The currency you agree to pay in (default: the listing's, as its record proves "
        "it against the trusted genesis; with none, as the node shows it)."
    ),
)
def order_place(
    t: TxOpts,
    listing_id: int,
    quantity: int,
    ship_to: str,
    session_id: int,
    deal_id: int,
    currency: str | None,
) -> None:
    """Order from a listing, at its price or a deal's; the address is sealed client-side.

    The address is checked first (not empty, not over what the chain holds), and kept,
    sealed to the signer's key, in the keyring: the buyer can disclose it later. It is
    sealed to the X25519 key of the listing's merchant, both as their records prove them
    against the trusted genesis (--genesis, else the one pinned in the keyring); the
    price, version and currency signed are the listing's record's (with --deal, the
    price and session the deal's; a deal of another listing, or of a session other than
    a --session given, is refused unsigned). With
    neither, they are the node's word: a node that lies about them could open what it
    is sent, or have the order fail for its fee.
    """
    client = t.client
    ship_to = checked_address(ship_to, sealed_address_max_bytes(client))
    what = f"listing {listing_id}"
    cur = object_field(client.get(f"/v1/listings/{listing_id}"), "listing", what)
    shown = address_field(cur, "merchant", what)
    if t.anchor is None:
        merchant = shown
        price, version = int_field(cur, "price", what), int_field(cur, "version", what)
        if currency is None:
            currency = str_field(cur, "currency", what)
    else:
        # The merchant decides whose key the address is sealed to (a deal sells the
        # listing's merchant's units, so the listing names it). The price, version and
        # currency signed are the record's too: the chain refuses an order naming others
        # than the listing's, yet charges its fee (DESIGN: a failed transaction pays
        # it), and a node lying about them would simulate the order as fine.
        listing = proven_listing(client, listing_id, shown, t.anchor)
        merchant = format_address(listing.merchant)
        price, version = listing.price, listing.version
        if currency is None:
            currency = listing.currency
    if deal_id:
        deal_listing, price, deal_session = _deal_terms(client, deal_id, t.anchor)
        # A deal sells one listing: the chain refuses an order naming another, yet
        # charges its fee (DESIGN: a failed transaction pays it).
        if deal_listing != listing_id:
            raise NodeError(
                "deal_mismatch",
                f"deal {deal_id} sells listing {deal_listing}, not listing {listing_id}: "
                "nothing was signed or sent",
            )
        # The order is signed with the deal's session: a --session naming another one
        # is a mistake the buyer would not see in what is sent, so it is refused rather
        # than replaced.
        if session_id and session_id != deal_session:
            raise NodeError(
                "deal_mismatch",
                f"deal {deal_id} is in session {deal_session}, not session {session_id}: "
                "nothing was signed or sent",
            )
        session_id = deal_session
    enc_key = merchant_seal_key(client, merchant, t.anchor)
    ciphertext, commitment, plaintext = seal_address(enc_key, ship_to)
    payload = tx.PlaceOrder(
        listing_id,
        version,
        quantity,
        price,
        session_id,
        deal_id,
        enc_key,
        commitment,
        ciphertext,
        currency,
    )
    key = t.signing_key()
    t.send(tx.PLACE_ORDER, payload, client, key)
    # Only once the node took it: a refused order leaves nothing behind.
    keep_address(t.keyring, t.sender, key, plaintext)


def _deal_terms(client: NodeClient, deal_id: int, anchor: Anchor | None) -> tuple[int, int, int]:
    """Deal ``deal_id``'s listing, price and session, from its record proven with an
    ``anchor`` (deals are public state), the node's word without."""
    what = f"deal {deal_id}"
    if anchor is None:
        deal = object_field(client.get(f"/v1/deals/{deal_id}"), "deal", what)
        return (
            int_field(deal, "listing_id", what),
            int_field(deal, "price", what),
            int_field(deal, "session_id", what),
        )
    proven = anchor.prove_record(client, deal_key(deal_id), Deal, f"{what} has no record")
    return proven.listing_id, proven.price, proven.session_id


def _order_ref_command(name: str, tx_type: str, doc: str) -> None:
    def command(t: TxOpts, order_id: int) -> None:
        t.send(tx_type, tx.OrderRef(order_id))

    command.__doc__ = doc
    command.__name__ = f"order_{name}"
    tx_command(order, name)(click.argument("order_id", type=ID)(command))


_order_ref_command("cancel", tx.CANCEL_ORDER, "Cancel an order not yet accepted (buyer).")
_order_ref_command("accept", tx.ACCEPT_ORDER, "Accept an order (merchant).")
_order_ref_command("decline", tx.DECLINE_ORDER, "Decline an order, refunding it (merchant).")
_order_ref_command(
    "confirm", tx.CONFIRM_DELIVERY, "Confirm delivery, releasing the escrow (buyer)."
)


def tracking_hash(reference: str) -> bytes:
    """What the chain stores of a carrier's tracking reference (it stays off chain)."""
    return hashlib.blake2b(reference.encode(), digest_size=32, person=b"ll-tracking-ref").digest()


def _item_id(text: str) -> ItemId:
    gtin, sep, serial = text.partition(":")
    if not sep:
        raise click.BadParameter(f"items are GTIN:SERIAL, got {text!r}", param_hint="--item")
    return ItemId(gtin14(gtin), serial)


@tx_command(order, "ship")
@click.argument("order_id", type=ID)
@click.option("--tracking", required=True, help="Carrier's tracking reference (stored hashed).")
@click.option("--item", "items", multiple=True, help="Serialized item in the parcel, GTIN:SERIAL.")
def order_ship(t: TxOpts, order_id: int, tracking: str, items: tuple[str, ...]) -> None:
    """Ship an accepted order (merchant)."""
    t.send(
        tx.SHIP_ORDER, tx.ShipOrder(order_id, tracking_hash(tracking), tuple(map(_item_id, items)))
    )


@tx_command(order, "refund")
@click.argument("order_id", type=ID)
@click.option("--amount", type=AMOUNT, default=None, help="Partial refund (default: all of it).")
def order_refund(t: TxOpts, order_id: int, amount: int | None) -> None:
    """Refund an order, in part or in full (merchant)."""
    client = t.client
    if amount is None:
        what = f"order {order_id}"
        view = object_field(t.get_signed(f"/v1/orders/{order_id}", client), "order", what)
        # Nothing held is nothing to refund (an amount of 0 is no refund).
        amount = int_field(view, "escrow", what, low=1)
    t.send(tx.REFUND, tx.Refund(order_id, amount), client)


@tx_command(order, "dispute")
@click.argument("order_id", type=ID)
@click.option("--reason", required=True)
def order_dispute(t: TxOpts, order_id: int, reason: str) -> None:
    """Dispute a shipped order within the window (buyer or merchant)."""
    t.send(tx.OPEN_DISPUTE, tx.OpenDispute(order_id, reason))


@tx_command(order, "rule")
@click.argument("order_id", type=ID)
@click.option("--buyer-bps", type=BPS, required=True, help="Buyer's share of the escrow.")
def order_rule(t: TxOpts, order_id: int, buyer_bps: int) -> None:
    """Rule a disputed (arbiter) or escalated (registrar) order."""
    t.send(tx.RULE, tx.Rule(order_id, buyer_bps))


@tx_command(order, "disclose", seals=True)
@click.argument("order_id", type=ID)
@click.option("--auditor", required=True, help="The auditor: an ll1... address or a key's name.")
def order_disclose(t: TxOpts, order_id: int, auditor: str) -> None:
    """Re-seal an order's address to an auditor (its buyer or merchant).

    The merchant opens its sealed copy with its X25519 key; the buyer uses the copy its
    CLI kept at `order place` (in the keyring it placed the order from). The auditor's
    key is the one its role record proves against the trusted genesis (--genesis, else
    the pinned one; with neither, the node's word).
    """
    client = t.client
    what = f"order {order_id}"
    view = object_field(t.get_signed(f"/v1/orders/{order_id}", client), "order", what)
    if answer_field(view, "sealed_address", what) is None:
        raise NodeError("forbidden", "only the order's buyer and merchant hold the sealed address")
    auditor_address = t.resolve(auditor)
    auditor_key = auditor_seal_key(client, auditor_address, t.anchor)
    if len(auditor_key) != 32:
        raise NodeError("invalid_key", f"{auditor} has no registered auditor key")
    key = t.signing_key()
    signer = format_address(key.address)
    if signer == str_field(view, "merchant", what):
        private = enc_private(t.keyring, t.sender, hex_field(view, "sealed_to", what, (32,)))
        plaintext = open_plaintext(private, hex_field(view, "sealed_address", what))
    else:
        commitment = hex_field(view, "address_commitment", what, (32,))
        kept = kept_address(t.keyring, t.sender, key, commitment)
        if kept is None:
            raise NodeError(
                "no_copy",
                f"keyring {t.keyring} keeps no copy of order {order_id}'s address: the CLI "
                "keeps it where the order was placed (its addresses/ directory); disclose "
                "from that keyring, or ask the merchant to",
            )
        plaintext = kept
    t.send(
        tx.DISCLOSE,
        tx.Disclose(order_id, auditor_address, auditor_key, reseal(auditor_key, plaintext)),
        client,
        key,
    )


@order.command("show")
@click.argument("order_id", type=ID)
@keyring_option
@from_option
@node_option
@clear_errors
def order_show(order_id: int, keyring: Path, sender: str, node_url: str) -> None:
    """An order, read with a request signed by the viewer (parties, host, arbiters...)."""
    anchor = command_anchor(keyring, None, READ_SIGNED_FOR)
    path = f"/v1/orders/{order_id}"
    _echo_json(CommerceClient(node_url).get_signed(path, keyring, sender, anchor))


@order.command("list")
@keyring_option
@from_option
@click.option(
    "--role",
    type=click.Choice(["buyer", "merchant"]),
    default=None,
    help="Orders the signer placed (buyer) or sells (merchant). Default: merchant for a "
    "registered merchant, else buyer.",
)
@click.option("--before", type=U64, default=0, help="Page on: the last order id seen.")
@click.option("--limit", type=click.IntRange(1, 200), default=50)
@node_option
@clear_errors
def order_list(
    keyring: Path, sender: str, role: str | None, before: int, limit: int, node_url: str
) -> None:
    """The signer's own orders, newest first."""
    client = CommerceClient(node_url)
    anchor = command_anchor(keyring, None, READ_SIGNED_FOR)
    if role is None:
        role = "merchant" if _is_merchant(client, Keyring(keyring).address(sender)) else "buyer"
        other = "buyer" if role == "merchant" else "merchant"
        click.echo(
            f"orders where {sender!r} is the {role} (--role {other} for the others)", err=True
        )
    path = f"/v1/orders?role={role}&before={before}&limit={limit}"
    _echo_json(client.get_signed(path, keyring, sender, anchor))


def _is_merchant(client: CommerceClient, address: str) -> bool:
    try:
        client.get(f"/v1/merchants/{address}")
    except NodeError as exc:
        if exc.code == "not_found":
            return False
        raise
    return True


@order.command("address")
@click.argument("order_id", type=ID)
@keyring_option
@from_option
@node_option
@clear_errors
def order_address(order_id: int, keyring: Path, sender: str, node_url: str) -> None:
    """Open an order's sealed shipping address with the signer's X25519 key.

    The merchant opens the order's copy; an auditor opens the copy disclosed to it.
    The address is checked against the commitment the buyer put on chain.
    """
    anchor = command_anchor(keyring, None, READ_SIGNED_FOR)
    client = CommerceClient(node_url)
    what = f"order {order_id}"
    doc = client.get_signed(f"/v1/orders/{order_id}", keyring, sender, anchor)
    view = object_field(doc, "order", what)
    commitment = hex_field(view, "address_commitment", what, (32,))
    mine = {public for public, _ in enc_keys_of(keyring, sender)}
    copies = []
    if answer_field(view, "sealed_address", what) is not None:
        sealed_to = hex_field(view, "sealed_to", what, (32,))
        copies.append((sealed_to, hex_field(view, "sealed_address", what)))
    copies += [
        (
            hex_field(d, "auditor_key", f"{what}'s disclosure", (32,)),
            hex_field(d, "ciphertext", what),
        )
        for d in list_field(view, "disclosures", what)
    ]
    for public, ciphertext in copies:
        if public in mine:
            click.echo(open_address(enc_private(keyring, sender, public), ciphertext, commitment))
            return
    raise NodeError(
        "no_key", f"no copy of order {order_id}'s address is sealed to an X25519 key of {sender!r}"
    )
