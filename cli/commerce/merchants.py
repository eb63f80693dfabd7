"""``liveledger merchant`` and ``liveledger listing``: merchants and what they sell."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.keys import listing_key, listing_version_key, merchant_key
from apps.commerce.model import ItemId, Listing, ListingTerms, Merchant
from cli.client import NodeClient, NodeError, hex_field, int_field, object_field, str_field
from cli.commerce.commands import (
    AMOUNT,
    ID,
    U64,
    TxOpts,
    _hash_option,
    _hex32,
    read_command,
    tx_command,
)
from cli.commerce.enc_keys import enc_key_new, enc_keys_of
from cli.human import GTIN
from cli.keyring import passphrase_from_env_or_prompt
from cli.main import main
from cli.trust import Anchor
from core import format_address


@main.group()
def merchant() -> None:
    """Register and manage merchants."""


@tx_command(merchant, "register")
@click.option("--name", required=True)
@click.option("--profile", default="")
def merchant_register(t: TxOpts, name: str, profile: str) -> None:
    """Register the signer as a merchant (a registrar approves it).

    Uses the signer's newest X25519 key in the keyring, creating one if there is none.
    """
    existing = enc_keys_of(t.keyring, t.sender)
    if existing:
        public = existing[0][0]
    else:
        public = enc_key_new(t.keyring, t.sender, passphrase_from_env_or_prompt(confirm=False))
        click.echo(f"created X25519 key {public.hex()}", err=True)
    t.send(tx.REGISTER_MERCHANT, tx.RegisterMerchant(name, profile, public))


@tx_command(merchant, "update", keeps=True)
@click.option("--name", default=None)
@click.option("--profile", default=None)
@click.option("--new-enc-key", is_flag=True, help="Seal new orders' addresses to a new key.")
def merchant_update(t: TxOpts, name: str | None, profile: str | None, new_enc_key: bool) -> None:
    """Update the signer's merchant profile (unchanged fields stay).

    The unchanged fields are re-signed as the merchant's record proves them against the
    trusted genesis (--genesis, else the one pinned in the keyring); with neither, as
    the node states them.
    """
    client = t.client
    current = _current_merchant(client, t.address(), t.anchor)
    public = current.enc_key
    if new_enc_key:
        public = enc_key_new(t.keyring, t.sender, passphrase_from_env_or_prompt(confirm=False))
        click.echo(f"created X25519 key {public.hex()}", err=True)
    payload = tx.UpdateMerchant(
        current.name if name is None else name,
        current.profile if profile is None else profile,
        public,
    )
    t.send(tx.UPDATE_MERCHANT, payload, client)


def _current_merchant(
    client: NodeClient, address: bytes, anchor: Anchor | None
) -> tx.UpdateMerchant:
    """The update that changes nothing: the merchant's fields as they are, proven with an
    ``anchor`` (the node's word without). Re-signing a node's word would let it choose
    the key new orders are sealed to, or the name buyers see."""
    what = f"merchant {format_address(address)}"
    if anchor is not None:
        record = anchor.prove_record(
            client, merchant_key(address), Merchant, f"{what} has no record"
        )
        # Re-signed as it stands: a key rotated away from must not come back.
        anchor.require_recent(f"{what}'s record")
        return tx.UpdateMerchant(record.name, record.profile, record.enc_key)
    path = f"/v1/merchants/{format_address(address)}"
    current = object_field(client.get(path), "merchant", what)
    return tx.UpdateMerchant(
        str_field(current, "name", what),
        str_field(current, "profile", what),
        hex_field(current, "enc_key", what, (0, 32)),
    )


@tx_command(merchant, "approve")
@click.argument("address")
@click.option("--suspend", is_flag=True, help="Suspend instead of approving.")
def merchant_approve(t: TxOpts, address: str, suspend: bool) -> None:
    """Approve (or suspend) the merchant at ADDRESS (an ll1... address or a key's name)."""
    t.send(tx.APPROVE_MERCHANT, tx.ApproveMerchant(t.resolve(address), not suspend))


@read_command(merchant, "show")
@click.argument("address")
def merchant_show(address: str, node_url: str) -> Any:
    """A merchant with its rating."""
    return NodeClient(node_url).get(f"/v1/merchants/{address}")


@read_command(merchant, "reviews")
@click.argument("address")
@click.option("--before", type=U64, default=0, help="Page on: the last order id seen.")
@click.option("--limit", type=click.IntRange(1, 200), default=50)
def merchant_reviews(address: str, before: int, limit: int, node_url: str) -> Any:
    """Reviews of a merchant, newest first."""
    return NodeClient(node_url).get(
        f"/v1/merchants/{address}/reviews?before={before}&limit={limit}"
    )


# --- listings ---------------------------------------------------------------------------


@main.group()
def listing() -> None:
    """Create and manage listings."""


@tx_command(listing, "create")
@click.option("--title", required=True)
@click.option("--description", default="")
@click.option("--price", type=AMOUNT, required=True)
@click.option("--stock", type=U64, required=True)
@_hash_option("--media-hash", "Hash of off-chain media")
@click.option(
    "--currency",
    default="",
    help="Price in this issued currency (its exact symbol, e.g. USD); default: the native token.",
)
@click.option(
    "--resell",
    nargs=2,
    type=(GTIN, str),
    default=None,
    metavar="GTIN SERIAL",
    help="Resell this item, which you own and hold (--stock 1).",
)
def listing_create(
    t: TxOpts,
    title: str,
    description: str,
    price: int,
    stock: int,
    media_hash: str,
    currency: str,
    resell: tuple[str, str] | None,
) -> None:
    """Create a listing (approved merchant), priced in the native token or a currency;
    with --resell, the resale of one item you own (its history stays with it)."""
    media = _hex32(media_hash, "--media-hash")
    item = None if resell is None else ItemId(*resell)
    t.send(
        tx.CREATE_LISTING,
        tx.CreateListing(title, description, price, stock, media, currency, item),
    )


@tx_command(listing, "update", keeps=True)
@click.argument("listing_id", type=ID)
@click.option("--title", default=None)
@click.option("--description", default=None)
@click.option("--price", type=AMOUNT, default=None)
@click.option("--media-hash", default=None, help="32 bytes, hex ('' for none).")
@click.option(
    "--version", type=U64, default=None, help="Version being replaced (default: current)."
)
def listing_update(
    t: TxOpts,
    listing_id: int,
    title: str | None,
    description: str | None,
    price: int | None,
    media_hash: str | None,
    version: int | None,
) -> None:
    """Publish a new version of a listing (unchanged fields stay).

    The unchanged fields are re-signed as the listing's records prove them against the
    trusted genesis (--genesis, else the one pinned in the keyring); with neither, as
    the node states them.
    """
    client = t.client
    current = _current_listing(client, listing_id, t.anchor)
    payload = replace(
        current,
        version=current.version if version is None else version,
        title=current.title if title is None else title,
        description=current.description if description is None else description,
        price=current.price if price is None else price,
        media_hash=current.media_hash if media_hash is None else _hex32(media_hash, "--media-hash"),
    )
    t.send(tx.UPDATE_LISTING, payload, client)


def _current_listing(
    client: NodeClient, listing_id: int, anchor: Anchor | None
) -> tx.UpdateListing:
    """The update that changes nothing: listing ``listing_id``'s current version and its
    terms, proven with an ``anchor`` (the node's word without). Re-signing a node's word
    would let it set the price, or the title, a merchant sells at."""
    what = f"listing {listing_id}"
    if anchor is not None:
        key = listing_key(listing_id)
        version = anchor.prove_record(client, key, Listing, f"{what} has no record").version
        # A version's terms are never rewritten: a later height holds the same ones.
        terms = anchor.prove_record(
            client,
            listing_version_key(listing_id, version),
            ListingTerms,
            f"{what} has no terms of version {version}",
        )
        return tx.UpdateListing(
            listing_id, version, terms.title, terms.description, terms.price, terms.media_hash
        )
    cur = object_field(client.get(f"/v1/listings/{listing_id}"), "listing", what)
    media = hex_field(cur, "media_hash", what)
    if len(media) not in (0, 32):
        raise NodeError(
            "bad_answer", f"the node's {what} states a media_hash of {len(media)} bytes"
        )
    return tx.UpdateListing(
        listing_id,
        int_field(cur, "version", what),
        str_field(cur, "title", what),
        str_field(cur, "description", what),
        int_field(cur, "price", what, low=1),
        media,
    )


@tx_command(listing, "restock")
@click.argument("listing_id", type=ID)
@click.argument("quantity", type=AMOUNT)
def listing_restock(t: TxOpts, listing_id: int, quantity: int) -> None:
    """Add QUANTITY units to a listing's stock."""
    t.send(tx.RESTOCK, tx.StockChange(listing_id, quantity))


@tx_command(listing, "withdraw")
@click.argument("listing_id", type=ID)
@click.argument("quantity", type=AMOUNT)
def listing_withdraw(t: TxOpts, listing_id: int, quantity: int) -> None:
    """Remove QUANTITY available units from a listing's stock."""
    t.send(tx.WITHDRAW_STOCK, tx.StockChange(listing_id, quantity))


@tx_command(listing, "delist")
@click.argument("listing_id", type=ID)
def listing_delist(t: TxOpts, listing_id: int) -> None:
    """Delist a listing for good (no open deals)."""
    t.send(tx.DELIST, tx.ListingRef(listing_id))


@read_command(listing, "show")
@click.argument("listing_id", type=ID)
def listing_show(listing_id: int, node_url: str) -> Any:
    """A listing's current terms and stock."""
    return NodeClient(node_url).get(f"/v1/listings/{listing_id}")


@read_command(listing, "list")
@click.option("--start", type=ID, default=1)
@click.option("--limit", type=click.IntRange(1, 200), default=50)
def listing_list(start: int, limit: int, node_url: str) -> Any:
    """Listings by id."""
    return NodeClient(node_url).get(f"/v1/listings?start={start}&limit={limit}")


@read_command(listing, "reviews")
@click.argument("listing_id", type=ID)
@click.option("--before", type=U64, default=0, help="Page on: the last order id seen.")
@click.option("--limit", type=click.IntRange(1, 200), default=50)
def listing_reviews(listing_id: int, before: int, limit: int, node_url: str) -> Any:
    """Reviews of a listing, newest first."""
    return NodeClient(node_url).get(
        f"/v1/listings/{listing_id}/reviews?before={before}&limit={limit}"
    )
