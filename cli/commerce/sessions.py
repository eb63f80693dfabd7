"""``liveledger live`` and ``liveledger tip``: live sessions, pinned listings, flash deals."""

from __future__ import annotations

from typing import Any

import click

from apps.commerce import payloads as tx
from cli.client import NodeClient
from cli.commerce.commands import (
    AMOUNT,
    BPS,
    ID,
    U64,
    TxOpts,
    _now_ms,
    _when,
    read_command,
    tx_command,
)
from cli.commerce.watch import watch_session
from cli.human import WHEN, When, iso, parse_duration
from cli.main import clear_errors, main, node_option


@main.group()
def live() -> None:
    """Live sessions, pinned listings and flash deals."""


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
        closes = WHEN.convert(end, None, None).resolve(_now_ms(client))
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
    """Close a session and its open deals (merchant or host)."""
    t.send(tx.CLOSE_SESSION, tx.SessionRef(session_id))


@read_command(live, "show")
@click.argument("session_id", type=ID)
def live_show(session_id: int, node_url: str) -> Any:
    """A session with its pinned listings and open deals (units left; sold out or not)."""
    doc = NodeClient(node_url).get(f"/v1/sessions/{session_id}")
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


@tx_command(main, "tip")
@click.argument("session_id", type=ID)
@click.argument("amount", type=AMOUNT)
@click.option("--message", default="")
@click.option("--currency", default="", help="Tip in this issued currency (default: native).")
def tip(t: TxOpts, session_id: int, amount: int, message: str, currency: str) -> None:
    """Tip the host of an open session."""
    t.send(tx.TIP, tx.Tip(session_id, amount, message, currency))
