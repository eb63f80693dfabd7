"""``liveledger live watch``: a session's feed as JSON lines, across node restarts.

The feed (``apps.commerce.feed``) gives every event a position ``(height, index)`` and
resumes after a position given as ``?from=``. The watcher keeps the position of the
last event it printed, and after a ``ready`` (every event up to that height was sent)
the height itself; when the connection drops (the node restarts, is too slow, or
closes with 1001), it reconnects from there: nothing is missed and nothing printed
twice. It stops when the session closes (close code 1000), and gives up when it could
not reconnect for ``retry_for`` seconds.

Its output is its own: once stdout cannot take a line (the reader went, as in
``live watch 7 | head``), the watch ends, quietly for a reader gone; it is never taken
for the feed's loss (it reconnected and failed again at every event).

Each line is the feed's message for people: attributes as numbers and ``ll1…``
addresses, ``time_iso`` beside the block time, and ``"sold_out": true`` on the stock
left of a deal that has none.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from cli import human
from cli.client import NodeClient, NodeError, reading_answer
from cli.send import output_failed

STOCK_LEFT = "commerce.stock_left"
# Close codes after which the watcher reconnects: the server stopping, a slow reader,
# too many sockets for now (apps.commerce.feed.CLOSE_CODES).
RESUMABLE = frozenset({1001, 1006, 1011, 1012, 1013, 4008})


def present(doc: dict[str, Any]) -> dict[str, Any]:
    """A feed event as the watcher prints it."""
    out: dict[str, Any] = human.with_times({k: v for k, v in doc.items() if k != "attrs"})
    attrs = human.attrs(doc["attrs"])
    if doc["kind"] == STOCK_LEFT and attrs.get("deal") and attrs.get("left") == 0:
        attrs["sold_out"] = True
    out["attrs"] = attrs
    return out


class _OutputFailed(Exception):
    """Stdout refused a line (``error`` says why): the watch's own end, not the feed's."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def watch_session(node_url: str, session_id: int, start: str | None, retry_for: float) -> None:
    """Print the session's events from ``start`` (or the next block) until it closes."""
    client = NodeClient(node_url)
    # An unknown session is refused with the node's own sentence ("no session 999 ...").
    client.get(f"/v1/sessions/{session_id}")
    try:
        asyncio.run(_follow(client.url, session_id, start, retry_for))
    except _OutputFailed as exc:
        output_failed(exc.error, "the feed's events")


def _print(line: str) -> None:
    # An OSError here is stdout's (a closed pipe, a full disk), never the connection's.
    try:
        click.echo(line)
    except OSError as exc:
        raise _OutputFailed(exc) from exc


async def _follow(base: str, session_id: int, position: str | None, retry_for: float) -> None:
    import aiohttp

    ws_base = "ws" + base[len("http") :] + f"/v1/sessions/{session_id}/events"
    lost_since: float | None = None
    delay = 0.2
    while True:
        url = ws_base + (f"?from={position}" if position else "")
        reason = "connection lost"
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
                if lost_since is not None:
                    click.echo(f"reconnected; resuming after {position}", err=True)
                    lost_since, delay = None, 0.2
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    # A message of any shape can come: a wrong one is the node's fault.
                    with reading_answer("feed message"):
                        doc = json.loads(msg.data)
                        if doc["type"] == "event":
                            position = f"{doc['height']}:{doc['index']}"
                            _print(json.dumps(present(doc)))
                        elif doc["type"] == "ready":
                            # Every event up to this height was sent: resume after it.
                            position = str(doc["height"])
                code = ws.close_code
            if code == 1000:
                click.echo(f"session {session_id} closed", err=True)
                return
            if code is not None and code not in RESUMABLE:
                raise NodeError("feed_closed", f"the node closed the feed with code {code}")
            reason = f"feed closed with code {code}" if code else "connection lost"
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 400:
                raise NodeError(
                    "replay_too_long",
                    f"the node cannot resume the feed after {position} (malformed, or too "
                    "far back): `liveledger live show` gives a height to resume from",
                ) from None
            if exc.status == 404:
                raise NodeError("not_found", f"no session {session_id}") from None
            reason = f"HTTP {exc.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or "connection lost"
        now = time.monotonic()
        if lost_since is None:
            lost_since = now
            click.echo(f"feed lost ({reason}); reconnecting for up to {retry_for:g} s", err=True)
        elif now - lost_since > retry_for:
            raise NodeError("unreachable", f"feed lost for {retry_for:g} s: {reason}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
