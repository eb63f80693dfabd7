"""Shipping addresses: checked before they reach the chain, and kept for the buyer.

Checks (``checked_address``): the chain only ever sees the address sealed, so it can
refuse neither an empty one nor one that is too long in characters; the CLI does, with
the limit in characters a buyer can act on (the sealed box must fit the chain's
``sealed_address_max_bytes`` and the text ``MAX_ADDRESS_TEXT`` UTF-8 bytes).

Sealing (``proven_listing``/``auction_seller``, ``merchant_seal_key``,
``auditor_seal_key``): to the merchant's (or an auditor's) X25519 key as its record
proves it at a final height certified from the trusted genesis (``cli.trust``:
``--genesis``, else the one pinned in the keyring), the merchant being the one the
listing's (or the auction's session's) record proves; the box goes to the node (to simulate, then
to send), so a node that showed its own key, or named a merchant whose key it holds,
would open it. Without a trusted genesis, the merchant and the key as the node shows
them (the command warns that it takes the node's word).

Keeping (``keep_address``/``kept_address``): the buyer seals the address to the
merchant's X25519 key and cannot open that copy, yet buyer or merchant may disclose it
to an auditor (docs/commerce.md). So ``order place`` keeps the committed plaintext in
``<keyring>/addresses/<NAME>.<commitment hex>.json``, sealed with a SecretBox under a
secret derived from the buyer's signing key (``cli.keyring.local_secret``): whoever can
sign as the buyer can read it, nobody else. The order view's ``address_commitment``
finds the file, and the plaintext is checked against it before use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
import nacl.exceptions
import nacl.secret

from apps.commerce.keys import listing_key, merchant_key, role_key, session_key
from apps.commerce.model import Listing, Merchant, RoleRecord, Session
from apps.commerce.params import SEALED_CAP
from apps.commerce.sealing import MAX_ADDRESS_TEXT, ShippingAddress, commitment
from cli.client import NodeClient, NodeError, hex_field, int_field, object_field
from cli.keyring import check_name, local_secret
from cli.trust import Anchor
from core import PrivateKey, format_address, parse_address
from core.files import read_regular_file
from core.keystore import KeystoreError, atomic_write

KEEP_DIR = "addresses"
KEEP_VERSION = 1
_PURPOSE = b"ship-address"
# What a libsodium sealed box adds to its plaintext: an ephemeral key and a tag.
SEALED_OVERHEAD = 48


# A kept address's file is a few hundred bytes.
_MAX_FILE_BYTES = 64 * 1024


def max_address_chars(sealed_max_bytes: int) -> int:
    """The most UTF-8 bytes of address text whose sealed box fits ``sealed_max_bytes``."""
    for size in range(MAX_ADDRESS_TEXT, -1, -1):
        plain = ShippingAddress(bytes(32), "a" * size).encode()
        if len(plain) + SEALED_OVERHEAD <= sealed_max_bytes:
            return size
    return 0


def sealed_address_max_bytes(client: NodeClient) -> int:
    """The chain's ``sealed_address_max_bytes`` as the node states it (its commerce
    parameters in force)."""
    config = object_field(client.get("/v1/commerce"), "config", "commerce parameters")
    params = object_field(config, "params", "commerce parameters")
    # The chain's own range for it: no parameter can raise it past what the codec holds.
    return int_field(params, "sealed_address_max_bytes", "commerce parameters", 1, SEALED_CAP)


def checked_address(text: str, sealed_max_bytes: int) -> str:
    """``text`` stripped, if it is a shipping address the chain can hold; else a
    ``click.BadParameter`` that says how many characters fit."""
    address = text.strip()
    if not address:
        raise click.BadParameter("the shipping address is empty", param_hint="--address")
    room = max_address_chars(sealed_max_bytes)
    size = len(address.encode())
    if size > room:
        wide = "" if address.isascii() else " (letters outside ASCII count 2 to 4 each)"
        raise click.BadParameter(
            f"the shipping address is {len(address)} characters, at most {room} fit{wide}",
            param_hint="--address",
        )
    return address


def _path(keyring: Path, name: str, address_commitment: bytes) -> Path:
    return keyring / KEEP_DIR / f"{check_name(name)}.{address_commitment.hex()}.json"


def keep_address(keyring: Path, name: str, key: PrivateKey, plaintext: bytes) -> Path:
    """Keep the committed plaintext of an order's address for the buyer ``name``."""
    digest = commitment(plaintext)
    box = nacl.secret.SecretBox(local_secret(key, _PURPOSE))
    doc = {
        "version": KEEP_VERSION,
        "kind": "shipping-address",
        "name": name,
        "commitment": digest.hex(),
        "sealed": bytes(box.encrypt(plaintext)).hex(),
    }
    path = _path(keyring, name, digest)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)
    return path


def kept_address(
    keyring: Path, name: str, key: PrivateKey, address_commitment: bytes
) -> bytes | None:
    """The kept plaintext with this commitment, checked against it; None if none is kept."""
    path = _path(keyring, name, address_commitment)
    if not path.exists():
        return None
    # Bounded, and a FIFO or device refused unopened (a FIFO blocks for ever).
    data = read_regular_file(path, _MAX_FILE_BYTES, "kept address", KeystoreError)
    try:
        doc = json.loads(data)
        sealed = bytes.fromhex(doc["sealed"])
        plaintext = nacl.secret.SecretBox(local_secret(key, _PURPOSE)).decrypt(sealed)
    except (ValueError, KeyError, TypeError, nacl.exceptions.CryptoError):
        raise KeystoreError(
            f"kept address {path} does not open with the key of {name!r}: damaged, or another key's"
        ) from None
    # The copy is the one the order committed to, or it is of no use.
    if commitment(plaintext) != address_commitment:
        raise KeystoreError(f"kept address {path} does not match the order's commitment")
    return bytes(plaintext)


def proven_listing(client: NodeClient, listing_id: int, shown: str, anchor: Anchor) -> Listing:
    """Listing ``listing_id``'s record, proven at a final height certified from
    ``anchor``'s genesis, whose merchant the node named as ``shown`` (``_proven``): the
    merchant an order's address is sealed to, and the price, version and currency it
    signs."""
    raw = _proven(
        client,
        anchor,
        shown,
        listing_key(listing_id),
        lambda raw: Listing.decode(raw).merchant,
        f"listing {listing_id}",
    )
    return Listing.decode(raw)


def auction_seller(
    client: NodeClient, auction_id: int, session_id: int, shown: str, anchor: Anchor | None
) -> str:
    """The merchant (``ll1...``) of auction ``auction_id``, open in session
    ``session_id`` (the node's word), whose X25519 key a bid's address is sealed to:
    ``shown``, proven by ``_proven`` with an ``anchor`` (the node's word without). The
    auction's own record is private to its parties (the state route refuses it), so the
    proof is of its session's: an open auction is listed in its session's record, and
    sold by that session's merchant (a session's merchant never changes); a bid on an
    auction not open is refused."""

    def merchant_of(raw: bytes) -> bytes | None:
        session = Session.decode(raw)
        return session.merchant if auction_id in session.open_auctions else None

    if anchor is None:
        return shown
    what = f"auction {auction_id} (in session {session_id}, the node says)"
    _proven(client, anchor, shown, session_key(session_id), merchant_of, what)
    return shown


def _proven(
    client: NodeClient,
    anchor: Anchor,
    shown: str,
    record: bytes,
    merchant_of: Callable[[bytes], bytes | None],
    what: str,
) -> bytes:
    """``record``'s value proven at a final height certified from ``anchor``'s genesis,
    the merchant ``merchant_of`` reads from it (None: it names none) being ``shown``, the
    node's word: ``proof_mismatch`` if the node named another, before anything is sealed
    or sent. A node naming a merchant whose X25519 key it holds would open the address."""
    raw, height = anchor.prove(client, record)
    merchant = None if raw is None else merchant_of(raw)
    proven = "none" if merchant is None else format_address(merchant)
    # A listing's or a session's merchant never changes: another one is a lie.
    if raw is None or proven != shown:
        raise NodeError(
            "proof_mismatch",
            f"the node names {shown} as the merchant of {what}, the record at height "
            f"{height} names {proven}: nothing was sealed or sent",
        )
    return raw


def merchant_seal_key(client: NodeClient, merchant: str, anchor: Anchor | None) -> bytes:
    """The X25519 key to seal an address to for ``merchant`` (``ll1...``): the one the
    node shows, proven against the merchant's record when there is an ``anchor``."""
    record = merchant_key(parse_address(merchant))
    what = f"merchant {merchant}"
    record_shown = object_field(client.get(f"/v1/merchants/{merchant}"), "merchant", what)
    shown = hex_field(record_shown, "enc_key", what, (0, 32))
    key = _sealing_key(
        client, anchor, shown, record, lambda raw: Merchant.decode(raw).enc_key, merchant
    )
    if not key:
        raise NodeError("invalid_key", f"merchant {merchant} has no X25519 key to seal to")
    return key


def auditor_seal_key(client: NodeClient, auditor: bytes, anchor: Anchor | None) -> bytes:
    """The X25519 key ``auditor`` registered with its role (empty if none): the one the
    node shows, proven against its role record when there is an ``anchor``."""
    name = format_address(auditor)
    shown = hex_field(client.get(f"/v1/roles/{name}"), "enc_key", f"role of {name}", (0, 32))
    return _sealing_key(
        client,
        anchor,
        shown,
        role_key(auditor),
        lambda raw: RoleRecord.decode(raw).enc_key,
        name,
    )


def _sealing_key(
    client: NodeClient,
    anchor: Anchor | None,
    shown: bytes,
    record: bytes,
    key_of: Callable[[bytes], bytes],
    whose: str,
) -> bytes:
    """``shown`` (the node's word), or with ``anchor`` the key ``key_of`` reads from
    ``record`` proven at a final height certified from its genesis: ``proof_mismatch``
    if the node showed another, before anything is sealed or sent."""
    if anchor is None:
        return shown
    raw, height = anchor.prove(client, record)
    # Sealed to: a key its owner rotated away from (leaked, perhaps) must not be used.
    anchor.require_recent(f"{whose}'s key")
    # No record: no key (the caller refuses an empty one, as the node's word for it).
    proven = b"" if raw is None else key_of(raw)
    if proven != shown:
        raise NodeError(
            "proof_mismatch",
            f"the node shows {whose}'s key as {shown.hex()}, its record at height {height} "
            f"holds {proven.hex()}: nothing was sealed or sent",
        )
    return proven
