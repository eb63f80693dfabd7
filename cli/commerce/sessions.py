"""``liveledger live``, ``bid`` and ``tip``: live sessions, pinned listings, flash deals,
auctions."""

from __future__ import annotations

from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.model import AuctionMode
from apps.commerce.sealing import seal_address
from cli.client import NodeClient, address_field, int_field, object_field, reading_answer
from cli.commerce.addresses import (
    auction_seller,
    checked_address,
    keep_address,
    merchant_seal_key,
    sealed_address_max_bytes,
)
from cli.commerce.commands import (
    AMOUNT,
    BPS,
    ID,
    U64,
    TxOpts,
    _when,
    read_command,
    tx_command,
)
from cli.commerce.watch import watch_session
from cli.human import WHEN, When, iso, parse_duration
from cli.main import clear_errors, main, node_option


@main.group()
def live() -> None:
    """Live sessions, pinned listings, flash deals and auctions."""


@tx_command(live, "open")
@click.option("--host", required=True, help="The host: an ll1... address or a key's name.")
@click.option("--host-bps", type=BPS, default=0, show_default=True, help="Host commission.")
@click.option("--title", required=True)
def live_open(t: TxOpts, host: str, host_bps: int, title: str) -> None:
    """Open a live session (approved merchant)."""
    t.send(tx.OPEN_SESSION, tx.OpenSession(t.resolve(host), host_bps, title))


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
@click.option(
    "--start",
    type=WHEN,
    default=None,
    help="When it opens: 'now' (the default: the latest block time), 'in 5m', or ISO "
    "(2026-12-03T20:00Z, UTC unless an offset is given).",
)
@click.option("--start-ms", type=U64, default=None, help="The same as epoch milliseconds.")
@click.option(
    "--end",
    default=None,
    help="When it ends: a duration after the start ('30m', '1h30m'), 'in 2h', or ISO.",
)
@click.option(
    "--minutes",
    type=click.IntRange(1, 24 * 60),
    default=None,
    help="Minutes it runs (without --end: 10).",
)
def live_deal(
    t: TxOpts,
    session_id: int,
    listing_id: int,
    price: int,
    allocation: int,
    per_buyer_cap: int,
    start: When | None,
    start_ms: int | None,
    end: str | None,
    minutes: int | None,
) -> None:
    """Open a flash deal in a session (merchant)."""
    client = t.client
    # "now" is the latest block time: the deal is live from the block that includes it.
    opens = _when(client, start, start_ms, "start")
    if end is not None and minutes is not None:
        raise click.UsageError("give --end or --minutes, not both")
    if end is None:
        closes = opens + (10 if minutes is None else minutes) * 60_000
    elif (length := parse_duration(end)) is not None:
        closes = opens + length
    else:
        closes = _when(client, WHEN.convert(end, None, None), None, "end")
    if closes <= opens:
        raise click.BadParameter(
            f"the deal would end at {iso(closes)}, not after its start {iso(opens)}",
            param_hint="--end",
        )
    payload = tx.OpenDeal(session_id, listing_id, price, allocation, per_buyer_cap, opens, closes)
    t.send(tx.OPEN_DEAL, payload, client)


@tx_command(live, "close-deal")
@click.argument("deal_id", type=ID)
def live_close_deal(t: TxOpts, deal_id: int) -> None:
    """Close a deal; its unsold units return to the listing (merchant or host)."""
    t.send(tx.CLOSE_DEAL, tx.DealRef(deal_id))


@tx_command(live, "close")
@click.argument("session_id", type=ID)
def live_close(t: TxOpts, session_id: int) -> None:
    """Close a session and its open deals, once its auctions ended (merchant or host)."""
    t.send(tx.CLOSE_SESSION, tx.SessionRef(session_id))


@read_command(live, "show")
@click.argument("session_id", type=ID)
def live_show(session_id: int, node_url: str) -> Any:
    """A session with its pinned listings and open deals (units left; sold out or not)."""
    doc = NodeClient(node_url).get(f"/v1/sessions/{session_id}")
    with reading_answer(f"session {session_id}"):
        for deal in doc["session"]["deals"]:
            deal["sold_out"] = deal["left"] == 0
    return doc


@live.command("watch")
@click.argument("session_id", type=ID)
@click.option(
    "--from",
    "start",
    default=None,
    metavar="POS",
    help="Resume after POS: <height>:<index> (an event's) or <height> (after that block). "
    "Default: from the next block.",
)
@click.option(
    "--retry-for",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to keep reconnecting after the node goes away.",
)
@node_option
@clear_errors
def live_watch(session_id: int, start: str | None, retry_for: float, node_url: str) -> None:
    """Print a session's events as JSON lines until it closes (Ctrl-C stops).

    Reconnects after a node restart and resumes after the last event printed: no event
    is missed or printed twice.
    """
    if start is not None:
        height, sep, index = start.partition(":")
        if not height.isdigit() or (sep and not index.isdigit()):
            raise click.BadParameter(
                f"{start!r} is not a position: <height>:<index> or <height>", param_hint="--from"
            )
    watch_session(node_url, session_id, start, retry_for)


@live.group()
def auction() -> None:
    """Live auctions: one unit of a listing, by ascending bids (``bid`` places one)."""


@tx_command(auction, "start")
@click.argument("session_id", type=ID)
@click.argument("listing_id", type=ID)
@click.option("--start-price", type=AMOUNT, required=True)
@click.option(
    "--duration",
    default="30s",
    show_default=True,
    help="How long it runs from its start: '30s', '2m' (within the chain's bounds).",
)
@click.option("--reserve", type=U64, default=0, help="Lowest price it sells at (0: none).")
@click.option(
    "--sudden-death",
    is_flag=True,
    help="No extension: the clock never resets (default: a late bid resets it).",
)
@click.option(
    "--start",
    type=WHEN,
    default=None,
    help="When bidding closes its pre-bids and the clock starts: 'now' (the default), "
    "'in 10m', or ISO. Bids before it are pre-bids.",
)
def auction_start(
    t: TxOpts,
    session_id: int,
    listing_id: int,
    start_price: int,
    duration: str,
    reserve: int,
    sudden_death: bool,
    start: When | None,
) -> None:
    """Auction one unit of a listing in an open session (merchant or host)."""
    length = parse_duration(duration)
    if length is None:
        raise click.BadParameter(f"{duration!r} is not a duration", param_hint="--duration")
    # 0 asks for the block time: the auction runs from the block that includes it.
    opens = 0 if start is None else _when(t.client, start, None, "start")
    mode = AuctionMode.SUDDEN_DEATH if sudden_death else AuctionMode.TIMED
    payload = tx.StartAuction(
        session_id, listing_id, start_price, reserve, opens, length, int(mode)
    )
    t.send(tx.START_AUCTION, payload)


@tx_command(auction, "cancel")
@click.argument("auction_id", type=ID)
def auction_cancel(t: TxOpts, auction_id: int) -> None:
    """Cancel an auction that has no bid; its unit returns to stock (merchant or host)."""
    t.send(tx.CANCEL_AUCTION, tx.AuctionRef(auction_id))


@read_command(auction, "show")
@click.argument("auction_id", type=ID)
def auction_show(auction_id: int, node_url: str) -> Any:
    """An auction: price, the next bid it accepts, leader's tag, bids, end, status."""
    return NodeClient(node_url).get(f"/v1/auctions/{auction_id}")


@tx_command(main, "bid", seals=True)
@click.argument("auction_id", type=ID)
@click.argument("maximum", type=AMOUNT)
@click.option(
    "--address", "ship_to", required=True, help="Shipping address (sealed to the merchant)."
)
def bid(t: TxOpts, auction_id: int, maximum: int, ship_to: str) -> None:
    """Bid up to MAXIMUM on an auction: the chain bids for you by increments (proxy).

    The price you pay is held from your balance; the proxy draws more as it raises,
    up to MAXIMUM and as far as your balance goes. Outbid, you get it back at once. If
    you win, your order carries this address, sealed client-side and kept as for
    ``order place`` (to the key of the auction's merchant, both as their records prove
    them against the trusted genesis: --genesis, else the pinned one; with neither, the
    node's word for them).
    """
    client = t.client
    ship_to = checked_address(ship_to, sealed_address_max_bytes(client))
    what = f"auction {auction_id}"
    lot = object_field(client.get(f"/v1/auctions/{auction_id}"), "auction", what)
    shown = address_field(lot, "merchant", what)
    session_id = int_field(lot, "session_id", what)
    merchant = auction_seller(client, auction_id, session_id, shown, t.anchor)
    enc_key = merchant_seal_key(client, merchant, t.anchor)
    ciphertext, commitment, plaintext = seal_address(enc_key, ship_to)
    key = t.signing_key()
    t.send(tx.BID, tx.Bid(auction_id, maximum, enc_key, commitment, ciphertext), client, key)
    keep_address(t.keyring, t.sender, key, plaintext)


@tx_command(main, "tip")
@click.argument("session_id", type=ID)
@click.argument("amount", type=AMOUNT)
@click.option("--message", default="")
@click.option("--currency", default="", help="Tip in this issued currency (default: native).")
def tip(t: TxOpts, session_id: int, amount: int, message: str, currency: str) -> None:
    """Tip the host of an open session."""
    t.send(tx.TIP, tx.Tip(session_id, amount, message, currency))
