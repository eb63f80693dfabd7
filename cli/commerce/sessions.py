"""``liveledger live`` and ``liveledger tip``: live sessions, pinned listings, flash deals."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from apps.commerce import payloads as tx
from cli.client import NodeClient, NodeError
from cli.commerce.commands import AMOUNT, BPS, ID, U64, TxOpts, _now_ms, read_command, tx_command
from cli.main import clear_errors, main, node_option
from core import parse_address


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
        start_ms = _now_ms(client)
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
