"""``liveledger merchant|listing|live|order|item|review|tip|roles|enc-key``: commerce.

Every transaction command signs with a key of the keyring (``--keyring``,
``--from``), prints the transaction hash and, with ``--wait``, its height and
the events it emitted (ids of what it created), or fails with the error code.
Reads go to the node's commerce routes; an order is read with a request signed
by the viewer's key (``apps.commerce.http.sign_read_request``).

Merchants and auditors also hold an X25519 key (shipping addresses are sealed
to it). It lives beside the signing keys as ``<keyring>/x25519/<NAME>.<pub>.json``:
the seed is sealed with core.keystore's scheme (Argon2id + SecretBox, same
passphrase handling), and every key a merchant ever registered is kept, since
older orders stay sealed to older keys. The subdirectory keeps these files out
of ``keys list``.

One module for all of it: some forty flat commands, one per transaction or read,
sharing the option bundle and the key handling above them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import click
import nacl.utils

from apps.commerce import payloads as tx
from apps.commerce.http import sign_read_request, verify_item_proof
from apps.commerce.model import ItemId, Role
from apps.commerce.sealing import (
    encryption_keypair,
    open_address,
    open_plaintext,
    reseal,
    seal_address,
)
from cli.client import NodeClient, NodeError
from cli.keyring import Keyring, check_name, passphrase_from_env_or_prompt
from cli.light import producers_at
from cli.main import clear_errors, main, node_option, submit_tx
from consensus import verify_commit
from core import BlockHeader, Commit, format_address, parse_address
from core.keystore import KeystoreError, atomic_write, decrypt_seed, encrypt_seed
from genesis import Genesis, load_genesis

U64 = click.IntRange(0, 2**64 - 1)
ID = click.IntRange(1, 2**64 - 1)
AMOUNT = click.IntRange(1, 2**64 - 1)
BPS = click.IntRange(0, 10_000)

keyring_option = click.option(
    "--keyring",
    required=True,
    envvar="LIVELEDGER_KEYRING",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keyring directory (or set LIVELEDGER_KEYRING).",
)
from_option = click.option(
    "--from", "sender", required=True, help="Name of the signing key in the keyring."
)


# --- the node ---------------------------------------------------------------------------


class CommerceClient(NodeClient):
    """NodeClient plus signed reads, and the outcome of the last waited transaction."""

    last_committed: dict[str, Any] | None = None

    def wait_committed(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        doc = super().wait_committed(tx_hash, timeout)
        self.last_committed = doc
        return doc

    def get_signed(self, path: str, keyring: Path, name: str) -> Any:
        """GET ``path`` signed by key ``name`` (orders are private to their parties)."""
        key = Keyring(keyring).load(name, passphrase_from_env_or_prompt(confirm=False))
        chain_id = self.status()["chain_id"]
        headers = sign_read_request(key, chain_id, "GET", path)
        req = urllib.request.Request(self.url + path, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                doc = json.loads(raw)
                code, message = doc["code"], doc["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"HTTP {exc.code}: {raw[:200]!r}"
            raise NodeError(code, message, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise NodeError("unreachable", f"cannot reach node at {self.url}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TxOpts:
    """The options every transaction command shares."""

    keyring: Path
    sender: str
    fee: int | None
    nonce: int | None
    wait: bool
    node_url: str

    @property
    def client(self) -> CommerceClient:
        return CommerceClient(self.node_url)

    def send(self, tx_type: str, payload: Any, client: CommerceClient | None = None) -> None:
        """Sign, send and (with --wait) report the transaction and its events."""
        client = client or self.client
        submit_tx(
            client,
            self.keyring,
            self.sender,
            tx_type,
            payload.encode(),
            self.fee,
            self.nonce,
            self.wait,
        )
        if client.last_committed is not None:
            for event in client.last_committed["receipt"]["events"]:
                attrs = " ".join(f"{k}={v}" for k, v in event["attrs"].items())
                click.echo(f"{event['kind']} {attrs}")

    def address(self) -> bytes:
        return parse_address(Keyring(self.keyring).address(self.sender))


def tx_command(group: click.Group, name: str) -> Callable[[Callable[..., None]], click.Command]:
    """A transaction command of ``group``: the shared options arrive as one ``TxOpts``."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @wraps(fn)
        def run(
            keyring: Path,
            sender: str,
            fee: int | None,
            nonce: int | None,
            wait: bool,
            node_url: str,
            **kwargs: Any,
        ) -> None:
            fn(TxOpts(keyring, sender, fee, nonce, wait, node_url), **kwargs)

        cmd: Any = clear_errors(run)
        for option in (
            node_option,
            click.option(
                "--wait",
                is_flag=True,
                help="Return once committed; fail with the error code if it failed.",
            ),
            click.option("--nonce", type=U64, default=None, help="Default: the account's next."),
            click.option("--fee", type=U64, default=None, help="Default: the chain's minimum."),
            from_option,
            keyring_option,
        ):
            cmd = option(cmd)
        return group.command(name)(cmd)

    return decorate


def read_command(group: click.Group, name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A read command of ``group``: ``--node``, clear errors, the result printed as JSON."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        @wraps(fn)
        def run(**kwargs: Any) -> None:
            click.echo(json.dumps(fn(**kwargs), indent=2))

        return group.command(name)(node_option(clear_errors(run)))

    return decorate


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


def _hash_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, default="", help=help_text + " (32 bytes, hex; default none).")


def _hex32(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"{what} must be hex") from None
    if len(raw) not in (0, 32):
        raise click.BadParameter(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


# --- X25519 keys in the keyring ---------------------------------------------------------

ENC_DIR = "x25519"
ENC_VERSION = 1
_ENC_FIELDS = {"version", "kind", "name", "public_key", "sealed"}


def _enc_dir(keyring: Path) -> Path:
    return keyring / ENC_DIR


def enc_key_new(keyring: Path, name: str, passphrase: str) -> bytes:
    """Create an X25519 key for ``name`` (kept beside older ones); return its public key."""
    check_name(name)
    seed = nacl.utils.random(32)
    _, public = encryption_keypair(seed)
    # The seed is sealed exactly as a signing key is (core.keystore); the record's
    # own public key is the X25519 one, checked again after every decryption.
    doc = {
        "version": ENC_VERSION,
        "kind": "x25519",
        "name": name,
        "public_key": public.hex(),
        "sealed": encrypt_seed(seed, passphrase, name=name),
    }
    directory = _enc_dir(keyring)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.{public.hex()[:16]}.json"
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600, overwrite=False)
    return public


def _enc_read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes()[: 64 * 1024])
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read X25519 key file {path}: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != _ENC_FIELDS or doc["kind"] != "x25519":
        raise KeystoreError(f"{path} is not an X25519 key file")
    return doc


def enc_keys_of(keyring: Path, name: str) -> list[tuple[bytes, Path]]:
    """(public key, file) of every X25519 key of ``name``, newest first."""
    check_name(name)
    directory = _enc_dir(keyring)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob(f"{name}.*.json"):
        # A longer name sharing the prefix ("alice.x" vs "alice") is not this key.
        if path.name[len(name) + 1 : -len(".json")].isalnum():
            doc = _enc_read(path)
            if doc["name"] == name:
                found.append((path.stat().st_mtime_ns, bytes.fromhex(doc["public_key"]), path))
    return [(public, path) for _, public, path in sorted(found, reverse=True)]


def enc_private(keyring: Path, name: str, public: bytes) -> bytes:
    """The private X25519 key of ``name`` whose public key is ``public``."""
    for candidate, path in enc_keys_of(keyring, name):
        if candidate == public:
            doc = _enc_read(path)
            seed = decrypt_seed(doc["sealed"], passphrase_from_env_or_prompt(confirm=False))
            private, derived = encryption_keypair(seed)
            # The file's public key is what the chain holds: it must be this seed's.
            if derived != public:
                raise KeystoreError(f"X25519 key file {path} is corrupt: keys do not match")
            return private
    raise KeystoreError(f"no X25519 key of {name!r} in {_enc_dir(keyring)} matches {public.hex()}")


@main.group("enc-key")
def enc_key() -> None:
    """X25519 keys for sealed shipping addresses (merchants, auditors)."""


@enc_key.command("new")
@click.argument("name")
@keyring_option
@clear_errors
def enc_key_new_cmd(name: str, keyring: Path) -> None:
    """Create an X25519 key for NAME and print its public key (hex)."""
    click.echo(enc_key_new(keyring, name, passphrase_from_env_or_prompt(confirm=True)).hex())


@enc_key.command("show")
@click.argument("name")
@keyring_option
@clear_errors
def enc_key_show(name: str, keyring: Path) -> None:
    """Print NAME's X25519 public keys, newest first (no passphrase needed)."""
    for public, _ in enc_keys_of(keyring, name):
        click.echo(public.hex())


# --- roles ------------------------------------------------------------------------------


@main.group()
def roles() -> None:
    """Commerce roles (granted by a registrar)."""


def _role_mask(text: str) -> int:
    mask = 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.upper() not in Role.__members__ or part.upper() == "REGISTRAR":
            raise click.BadParameter(
                f"unknown role {part!r}: arbiter, maker, carrier, inspector, auditor"
            )
        mask |= Role[part.upper()]
    return mask


@tx_command(roles, "set")
@click.argument("address")
@click.option(
    "--roles", "names", required=True, help="Comma-separated, e.g. arbiter,maker ('' for none)."
)
@click.option("--enc-key", default="", help="The auditor's X25519 public key (hex).")
def roles_set(t: TxOpts, address: str, names: str, enc_key: str) -> None:
    """Set the full role mask of ADDRESS (registrar)."""
    t.send(
        tx.SET_ROLES,
        tx.SetRoles(parse_address(address), _role_mask(names), _hex32(enc_key, "--enc-key")),
    )


@read_command(roles, "show")
@click.argument("address")
def roles_show(address: str, node_url: str) -> Any:
    """Roles of ADDRESS."""
    return NodeClient(node_url).get(f"/v1/roles/{address}")


# --- merchants --------------------------------------------------------------------------


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


@tx_command(merchant, "update")
@click.option("--name", default=None)
@click.option("--profile", default=None)
@click.option("--new-enc-key", is_flag=True, help="Seal new orders' addresses to a new key.")
def merchant_update(t: TxOpts, name: str | None, profile: str | None, new_enc_key: bool) -> None:
    """Update the signer's merchant profile (unchanged fields stay)."""
    client = t.client
    address = Keyring(t.keyring).address(t.sender)
    current = client.get(f"/v1/merchants/{address}")["merchant"]
    if new_enc_key:
        public = enc_key_new(t.keyring, t.sender, passphrase_from_env_or_prompt(confirm=False))
        click.echo(f"created X25519 key {public.hex()}", err=True)
    else:
        public = bytes.fromhex(current["enc_key"])
    payload = tx.UpdateMerchant(
        current["name"] if name is None else name,
        current["profile"] if profile is None else profile,
        public,
    )
    t.send(tx.UPDATE_MERCHANT, payload, client)


@tx_command(merchant, "approve")
@click.argument("address")
@click.option("--suspend", is_flag=True, help="Suspend instead of approving.")
def merchant_approve(t: TxOpts, address: str, suspend: bool) -> None:
    """Approve (or suspend) the merchant at ADDRESS (registrar)."""
    t.send(tx.APPROVE_MERCHANT, tx.ApproveMerchant(parse_address(address), not suspend))


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
def listing_create(
    t: TxOpts, title: str, description: str, price: int, stock: int, media_hash: str
) -> None:
    """Create a listing (approved merchant)."""
    t.send(
        tx.CREATE_LISTING,
        tx.CreateListing(title, description, price, stock, _hex32(media_hash, "--media-hash")),
    )


@tx_command(listing, "update")
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
    """Publish a new version of a listing (unchanged fields stay)."""
    client = t.client
    cur = client.get(f"/v1/listings/{listing_id}")["listing"]
    payload = tx.UpdateListing(
        listing_id,
        cur["version"] if version is None else version,
        cur["title"] if title is None else title,
        cur["description"] if description is None else description,
        cur["price"] if price is None else price,
        _hex32(cur["media_hash"] if media_hash is None else media_hash, "--media-hash"),
    )
    t.send(tx.UPDATE_LISTING, payload, client)


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


# --- live sessions ----------------------------------------------------------------------


@main.group()
def live() -> None:
    """Live sessions, pinned listings and flash deals."""


@tx_command(live, "open")
@click.option("--host", required=True, help="Address of the host.")
@click.option("--host-bps", type=BPS, default=0, show_default=True, help="Host commission.")
@click.option("--title", required=True)
def live_open(t: TxOpts, host: str, host_bps: int, title: str) -> None:
    """Open a live session (approved merchant)."""
    t.send(tx.OPEN_SESSION, tx.OpenSession(parse_address(host), host_bps, title))


@tx_command(live, "pin")
@click.argument("session_id", type=ID)
@click.argument("listing_id", type=ID)
def live_pin(t: TxOpts, session_id: int, listing_id: int) -> None:
    """Pin a listing in a session (merchant or host)."""
    t.send(tx.PIN, tx.PinListing(session_id, listing_id))


@tx_command(live, "unpin")
@click.argument("session_id", type=ID)
@click.argument("listing_id", type=ID)
def live_unpin(t: TxOpts, session_id: int, listing_id: int) -> None:
    """Unpin a listing (merchant or host)."""
    t.send(tx.UNPIN, tx.PinListing(session_id, listing_id))


@tx_command(live, "deal")
@click.argument("session_id", type=ID)
@click.argument("listing_id", type=ID)
@click.option("--price", type=AMOUNT, required=True)
@click.option("--allocation", type=AMOUNT, required=True, help="Units set aside for the deal.")
@click.option("--per-buyer-cap", type=AMOUNT, default=1, show_default=True)
@click.option("--start-ms", type=U64, default=None, help="Block time it opens (default: now).")
@click.option("--minutes", type=click.IntRange(1, 24 * 60), default=10, show_default=True)
def live_deal(
    t: TxOpts,
    session_id: int,
    listing_id: int,
    price: int,
    allocation: int,
    per_buyer_cap: int,
    start_ms: int | None,
    minutes: int,
) -> None:
    """Open a flash deal in a session (merchant)."""
    client = t.client
    if start_ms is None:
        # The latest block time: the deal is live from the block that includes it.
        start_ms = client.status()["latest_block_time_ms"] or int(time.time() * 1000)
    payload = tx.OpenDeal(
        session_id,
        listing_id,
        price,
        allocation,
        per_buyer_cap,
        start_ms,
        start_ms + minutes * 60_000,
    )
    t.send(tx.OPEN_DEAL, payload, client)


@tx_command(live, "close-deal")
@click.argument("deal_id", type=ID)
def live_close_deal(t: TxOpts, deal_id: int) -> None:
    """Close a deal; its unsold units return to the listing (merchant or host)."""
    t.send(tx.CLOSE_DEAL, tx.DealRef(deal_id))


@tx_command(live, "close")
@click.argument("session_id", type=ID)
def live_close(t: TxOpts, session_id: int) -> None:
    """Close a session and its open deals (merchant or host)."""
    t.send(tx.CLOSE_SESSION, tx.SessionRef(session_id))


@read_command(live, "show")
@click.argument("session_id", type=ID)
def live_show(session_id: int, node_url: str) -> Any:
    """A session with its pinned listings and open deals (units left)."""
    return NodeClient(node_url).get(f"/v1/sessions/{session_id}")


@live.command("watch")
@click.argument("session_id", type=ID)
@click.option("--from", "start", default=None, help="Resume after <height>:<index> or <height>.")
@node_option
@clear_errors
def live_watch(session_id: int, start: str | None, node_url: str) -> None:
    """Print a session's events as JSON lines until it closes (Ctrl-C stops)."""
    import aiohttp

    url = node_url.rstrip("/") + f"/v1/sessions/{session_id}/events"
    if start:
        url += f"?from={start}"

    async def follow() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    click.echo(msg.data)
            if ws.close_code not in (None, 1000):
                raise NodeError("feed_closed", f"feed closed with code {ws.close_code}")

    try:
        asyncio.run(follow())
    except aiohttp.WSServerHandshakeError as exc:
        raise NodeError("http_error", f"feed refused: HTTP {exc.status}") from None
    except aiohttp.ClientError as exc:
        raise NodeError("unreachable", f"cannot reach node at {node_url}: {exc}") from None


@tx_command(main, "tip")
@click.argument("session_id", type=ID)
@click.argument("amount", type=AMOUNT)
@click.option("--message", default="")
def tip(t: TxOpts, session_id: int, amount: int, message: str) -> None:
    """Tip the host of an open session."""
    t.send(tx.TIP, tx.Tip(session_id, amount, message))


# --- orders -----------------------------------------------------------------------------


@main.group()
def order() -> None:
    """Place and settle orders."""


@tx_command(order, "place")
@click.argument("listing_id", type=ID)
@click.option("--quantity", type=AMOUNT, default=1, show_default=True)
@click.option(
    "--address", "ship_to", required=True, help="Shipping address (sealed to the merchant)."
)
@click.option("--session", "session_id", type=U64, default=0, help="Live session it is bought in.")
@click.option("--deal", "deal_id", type=U64, default=0, help="Flash deal (implies its session).")
def order_place(
    t: TxOpts, listing_id: int, quantity: int, ship_to: str, session_id: int, deal_id: int
) -> None:
    """Order from a listing, at its price or a deal's; the address is sealed client-side."""
    client = t.client
    cur = client.get(f"/v1/listings/{listing_id}")["listing"]
    price = cur["price"]
    if deal_id:
        deal = client.get(f"/v1/deals/{deal_id}")["deal"]
        price, session_id = deal["price"], deal["session_id"]
    seller = client.get(f"/v1/merchants/{cur['merchant']}")["merchant"]
    enc_key = bytes.fromhex(seller["enc_key"])
    ciphertext, commitment, _ = seal_address(enc_key, ship_to)
    payload = tx.PlaceOrder(
        listing_id,
        cur["version"],
        quantity,
        price,
        session_id,
        deal_id,
        enc_key,
        commitment,
        ciphertext,
    )
    t.send(tx.PLACE_ORDER, payload, client)


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
        raise click.BadParameter(f"items are GTIN:SERIAL, got {text!r}")
    return ItemId(gtin, serial)


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
        amount = client.get_signed(f"/v1/orders/{order_id}", t.keyring, t.sender)["order"]["escrow"]
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


@tx_command(order, "disclose")
@click.argument("order_id", type=ID)
@click.option("--auditor", required=True, help="Auditor's address (its X25519 key is on chain).")
def order_disclose(t: TxOpts, order_id: int, auditor: str) -> None:
    """Re-seal an order's address to an auditor (merchant, with its X25519 key)."""
    client = t.client
    view = client.get_signed(f"/v1/orders/{order_id}", t.keyring, t.sender)["order"]
    if view["sealed_address"] is None:
        raise NodeError("forbidden", "only the order's buyer and merchant hold the sealed address")
    private = enc_private(t.keyring, t.sender, bytes.fromhex(view["sealed_to"]))
    plaintext = open_plaintext(private, bytes.fromhex(view["sealed_address"]))
    auditor_key = bytes.fromhex(client.get(f"/v1/roles/{auditor}")["enc_key"])
    if len(auditor_key) != 32:
        raise NodeError("invalid_key", f"{auditor} has no registered auditor key")
    t.send(
        tx.DISCLOSE,
        tx.Disclose(order_id, parse_address(auditor), reseal(auditor_key, plaintext)),
        client,
    )


@order.command("show")
@click.argument("order_id", type=ID)
@keyring_option
@from_option
@node_option
@clear_errors
def order_show(order_id: int, keyring: Path, sender: str, node_url: str) -> None:
    """An order, read with a request signed by the viewer (parties, host, arbiters...)."""
    _echo_json(CommerceClient(node_url).get_signed(f"/v1/orders/{order_id}", keyring, sender))


@order.command("list")
@keyring_option
@from_option
@click.option(
    "--role", type=click.Choice(["buyer", "merchant"]), default="buyer", show_default=True
)
@click.option("--before", type=U64, default=0, help="Page on: the last order id seen.")
@click.option("--limit", type=click.IntRange(1, 200), default=50)
@node_option
@clear_errors
def order_list(
    keyring: Path, sender: str, role: str, before: int, limit: int, node_url: str
) -> None:
    """The signer's own orders, newest first."""
    path = f"/v1/orders?role={role}&before={before}&limit={limit}"
    _echo_json(CommerceClient(node_url).get_signed(path, keyring, sender))


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
    view = CommerceClient(node_url).get_signed(f"/v1/orders/{order_id}", keyring, sender)["order"]
    commitment = bytes.fromhex(view["address_commitment"])
    mine = {public for public, _ in enc_keys_of(keyring, sender)}
    copies = []
    if view["sealed_address"] is not None:
        copies.append((bytes.fromhex(view["sealed_to"]), bytes.fromhex(view["sealed_address"])))
    copies += [
        (bytes.fromhex(d["auditor_key"]), bytes.fromhex(d["ciphertext"]))
        for d in view["disclosures"]
    ]
    for public, ciphertext in copies:
        if public in mine:
            click.echo(open_address(enc_private(keyring, sender, public), ciphertext, commitment))
            return
    raise NodeError(
        "no_key", f"no copy of order {order_id}'s address is sealed to an X25519 key of {sender!r}"
    )


# --- provenance -------------------------------------------------------------------------


@main.group()
def item() -> None:
    """Serialized items: registration, EPCIS attestations, custody hand-offs."""


def _now_ms(client: NodeClient) -> int:
    # An event time may not be after the block time; the latest block's time is safe.
    return client.status()["latest_block_time_ms"] or int(time.time() * 1000)


item_args = [click.argument("gtin"), click.argument("serial")]


def _with_item(fn: Callable[..., Any]) -> Callable[..., Any]:
    for arg in reversed(item_args):
        fn = arg(fn)
    return fn


@tx_command(item, "register")
@_with_item
@click.option("--description", required=True)
@click.option("--read-point", required=True, help="Where it was commissioned (EPCIS readPoint).")
@click.option("--event-time-ms", type=U64, default=None, help="Default: the latest block time.")
def item_register(
    t: TxOpts, gtin: str, serial: str, description: str, read_point: str, event_time_ms: int | None
) -> None:
    """Register a serialized item (maker): GTIN-14 and serial."""
    client = t.client
    when = _now_ms(client) if event_time_ms is None else event_time_ms
    t.send(
        tx.REGISTER_ITEM,
        tx.RegisterItem(ItemId(gtin, serial), description, read_point, when),
        client,
    )


@tx_command(item, "attest")
@_with_item
@click.option(
    "--step", "biz_step", required=True, help="inspecting, packing, shipping, receiving, ..."
)
@click.option("--disposition", default="", help="EPCIS disposition, e.g. in_progress.")
@click.option("--read-point", default="")
@click.option("--location", "biz_location", default="", help="EPCIS bizLocation.")
@click.option("--event-time-ms", type=U64, default=None, help="Default: the latest block time.")
@_hash_option("--data-hash", "Hash of an off-chain document (report, photo)")
def item_attest(
    t: TxOpts,
    gtin: str,
    serial: str,
    biz_step: str,
    disposition: str,
    read_point: str,
    biz_location: str,
    event_time_ms: int | None,
    data_hash: str,
) -> None:
    """Attest an event of an item in the signer's custody (maker, carrier, inspector)."""
    client = t.client
    when = _now_ms(client) if event_time_ms is None else event_time_ms
    payload = tx.Attest(
        ItemId(gtin, serial),
        biz_step,
        disposition,
        read_point,
        biz_location,
        when,
        _hex32(data_hash, "--data-hash"),
    )
    t.send(tx.ATTEST, payload, client)


@tx_command(item, "handoff")
@_with_item
@click.option("--to", "to", required=True, help="Address of the next custodian.")
def item_handoff(t: TxOpts, gtin: str, serial: str, to: str) -> None:
    """Propose a custody hand-off; it takes effect when the receiver accepts."""
    t.send(tx.PROPOSE_CUSTODY, tx.ProposeCustody(ItemId(gtin, serial), parse_address(to)))


@tx_command(item, "accept")
@_with_item
def item_accept(t: TxOpts, gtin: str, serial: str) -> None:
    """Accept custody of an item handed to the signer."""
    t.send(tx.ACCEPT_CUSTODY, tx.ItemRef(ItemId(gtin, serial)))


@tx_command(item, "refuse")
@_with_item
def item_refuse(t: TxOpts, gtin: str, serial: str) -> None:
    """Refuse custody of an item handed to the signer."""
    t.send(tx.REFUSE_CUSTODY, tx.ItemRef(ItemId(gtin, serial)))


@item.command("history")
@_with_item
@click.option("--prove", is_flag=True, help="Verify the history against a finalized header.")
@click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trusted genesis.json (default: fetched from the node; its hash is printed).",
)
@node_option
@clear_errors
def item_history(
    gtin: str, serial: str, prove: bool, genesis_file: Path | None, node_url: str
) -> None:
    """An item's full provenance history (what the code on its package resolves to)."""
    client = NodeClient(node_url)
    doc = client.get(f"/v1/items/01/{gtin}/21/{serial}")
    out: dict[str, Any] = {"height": doc["height"], "item": doc["item"]}
    if prove:
        genesis = (
            load_genesis(genesis_file)
            if genesis_file
            else Genesis.from_json(client.genesis()["genesis"])
        )
        proof = doc["proof"]
        if proof["header"] is None or proof["commit"] is None:
            raise NodeError("no_commit", f"node has no certificate for height {proof['height']}")
        header = BlockHeader.decode(bytes.fromhex(proof["header"]))
        commit = Commit.decode(bytes.fromhex(proof["commit"]))
        validators = producers_at(client, genesis, proof["height"])
        # The header is final: more than 2/3 of that height's producers signed it ...
        verify_commit(commit, genesis.chain_id, proof["height"], header.hash, validators)
        # ... and every entry is this item's, proven against its state root.
        proven, events = verify_item_proof(gtin, serial, proof, header.state_root)
        if len(events) != len(doc["item"]["history"]):
            raise NodeError("proof_mismatch", "the node's history differs from the proven one")
        out["proof"] = {
            "verified": True,
            "height": proof["height"],
            "state_root": header.state_root.hex(),
            "events": len(events),
            "custodian": format_address(proven.custodian),
            "genesis_hash": genesis.hash.hex(),
        }
    _echo_json(out)


# --- reviews ----------------------------------------------------------------------------


@main.group()
def review() -> None:
    """Reviews of settled orders."""


@tx_command(review, "add")
@click.argument("order_id", type=ID)
@click.option("--rating", type=click.IntRange(1, 5), required=True)
@click.option("--text", default="")
def review_add(t: TxOpts, order_id: int, rating: int, text: str) -> None:
    """Review a settled order, or edit the review until the merchant replies (buyer)."""
    t.send(tx.REVIEW, tx.WriteReview(order_id, rating, text))


@tx_command(review, "reply")
@click.argument("order_id", type=ID)
@click.option("--text", required=True)
def review_reply(t: TxOpts, order_id: int, text: str) -> None:
    """Reply once to a review (merchant); the review is then final."""
    t.send(tx.REPLY_REVIEW, tx.ReplyReview(order_id, text))


__all__ = [
    "CommerceClient",
    "enc_key_new",
    "enc_keys_of",
    "enc_private",
    "tracking_hash",
]
