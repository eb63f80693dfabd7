"""WebSocket feeds: a live session's events, and the finalized blocks, in block order.

``/v1/sessions/{id}/events`` sends the session's feed events (``txtypes.FEED_KINDS``)
once the block that carries them is final; ``/v1/blocks/ws`` sends one message
per finalized block. Protocol (docs/commerce.md, Interfaces):

- Every event has a position ``(height, index)``: ``index`` counts all events of
  the block, begin-block events first, then each receipt's events in transaction
  order. Positions only grow along a feed.
- ``?from=<height>:<index>`` resumes after that position; ``?from=<height>``
  after the whole block (what a client that read a snapshot at that height
  wants). Events already stored are replayed first, then a ``ready`` message
  gives the height up to which the replay went, then live events follow. Without
  ``from`` the feed starts at the next block.
- A client whose queue of unsent messages grows past ``max_queue_bytes`` is
  closed with code 4008 (it reconnects with its last position); the session feed
  closes with 1000 after ``session_closed``; a stopping server closes with 1001.
  A message (or close) that cannot be handed to the socket within
  ``SEND_DEADLINE_S`` means the client stopped reading: its connection is
  dropped without a close frame, which its full buffer would not take.
- Bounds (``FeedLimits``): connections per node and per client address (over
  either, the socket is closed at once with 1013, try again later), block reads
  of replays at once (others wait their turn), blocks a replay may go back, and
  messages a client may send per second (client messages mean nothing; a flood
  is closed with 1008, policy violation).

One ``FeedHub`` per app reads each finalized block once (off the event loop)
and fans its events out; new clients register with the hub before replaying,
and the hub's delivered height splits replay from live, so nothing is missed
or sent twice. Only session listeners need a block's receipts read and decoded;
for block listeners alone the hub reads the header and the transaction count.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from apps.commerce import events as ev
from apps.commerce.txtypes import FEED_KINDS, session_of
from apps.read_slots import ReadSlots
from apps.routes import HASH, STR, UINT, Component, client_of, described, obj
from core.sockets import reset

if TYPE_CHECKING:
    from apps.commerce.http_common import ChainReader
    from vm import Event

log = logging.getLogger("apps.commerce.feed")

# Unsent bytes a client may have queued before it is dropped (a flash deal of
# thousands of orders in one block is a few MB of events).
MAX_QUEUE_BYTES = 8 * 1024 * 1024
# How far back a reconnecting client may resume; older clients re-read a snapshot.
# About 8 minutes of an idle chain's 500 ms blocks: a dropped phone reconnects well inside it,
# and one replay costs at most this many block reads.
MAX_REPLAY_BLOCKS = 1_000
# Replays reading a block at once, in threads of their own (``FeedHub.replays``); each
# reads up to MAX_REPLAY_BLOCKS blocks. Later ones wait, by client address in turn. In
# Python's default executor, 4 of its 6 threads (on two cores) went to replays, ahead
# of the live feed's reads, state sync served to peers and epoch-record checks; now
# none do, and two threads bound what replays take of the cores beside the node's work.
REPLAY_SLOTS = 2
# Longest a send (or close) may wait for the client's socket to take it. A client that
# stops reading (a zero TCP window) would hold its task, queue and connection forever;
# a reading phone on a poor link takes a few MB of replay well within it.
SEND_DEADLINE_S = 10.0
# Parsed blocks kept for clients replaying the same recent blocks, bounded in count
# and in bytes (one flash-deal block can carry megabytes of events).
CACHE_BLOCKS = 64
CACHE_BYTES = 32 * 1024 * 1024
HEARTBEAT_S = 20.0
# Application close code (4000-4999): the client read too slowly and was dropped.
CLOSE_SLOW_CONSUMER = 4008
# Over the node's or the address's connection cap: reconnect later (RFC 6455 1013).
CLOSE_TRY_AGAIN_LATER = int(WSCloseCode.TRY_AGAIN_LATER)
# The client sent messages faster than allowed (RFC 6455 1008, policy violation).
CLOSE_POLICY_VIOLATION = int(WSCloseCode.POLICY_VIOLATION)
# Sorts after every index of a block: "after the whole block".
WHOLE_BLOCK = 2**63

Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """What one node's feeds serve at most (the node's ``feeds`` config section)."""

    # Open feed sockets on the node, and from one client address: a WebSocket costs a
    # socket, buffers and a task for as long as the client wants, so without a cap one
    # client holds them all.
    max_connections: int = 1024
    # Phones behind one carrier NAT share an address: room for many, not for all.
    max_per_address: int = 32
    max_replay_blocks: int = MAX_REPLAY_BLOCKS
    # Client messages are ignored by the protocol (aiohttp answers pings itself); a
    # few are tolerated, a flood is closed. Burst: as many as one second's worth.
    max_client_messages_per_s: int = 10


@dataclass(frozen=True, slots=True)
class FeedItem:
    position: Position
    kind: str
    # The message as sent (JSON text), serialized once for every client.
    text: str


@dataclass(frozen=True, slots=True)
class BlockFeed:
    """One finalized block as the feeds send it."""

    height: int
    block: FeedItem
    sessions: dict[int, list[FeedItem]] = field(default_factory=dict)
    # Bytes of message text it holds (for the cache bound).
    size: int = 0
    # Whether ``sessions`` was read (False: the block message alone).
    events: bool = True


def read_block_feed(reader: ChainReader, height: int, events: bool = True) -> BlockFeed | None:
    """The feed messages of block ``height`` (None if it is not stored); without
    ``events``, the block message alone, which needs no receipt read or decoded (a
    block of a flash sale's orders holds thousands). The count of transactions comes
    with the header, from the block itself, either way."""
    header, num_txs = reader.header(height), reader.tx_count(height)
    if header is None or num_txs is None:
        return None
    sessions = _session_items(reader, height, header.time_ms) if events else {}
    block = json.dumps(
        {
            "type": "block",
            "height": height,
            "hash": header.hash.hex(),
            "time_ms": header.time_ms,
            "num_txs": num_txs,
        }
    )
    size = len(block) + sum(len(i.text) for items in sessions.values() for i in items)
    return BlockFeed(height, FeedItem((height, 0), "block", block), sessions, size, events)


def _session_items(reader: ChainReader, height: int, time_ms: int) -> dict[int, list[FeedItem]]:
    """The feed messages of block ``height``'s events (begin events, then each
    receipt's), in order, by session."""
    receipts = reader.receipts(height)
    in_order: Iterable[Event] = chain(
        reader.block_events(height), (e for r in receipts for e in r.events)
    )
    sessions: dict[int, list[FeedItem]] = {}
    for index, event in enumerate(in_order):
        session_id = session_of(event)
        if session_id is None:
            continue
        text = json.dumps(
            {
                "type": "event",
                "height": height,
                "index": index,
                "time_ms": time_ms,
                "session": session_id,
                "kind": event.kind,
                "attrs": {a.key: a.value for a in event.attrs},
            }
        )
        sessions.setdefault(session_id, []).append(FeedItem((height, index), event.kind, text))
    return sessions


# The feed's messages (built above and in ``serve_feed``) and its rules, as the OpenAPI
# document states them beside the feed routes (``apps.commerce.http``).
FEED_EVENT = Component(
    "FeedEvent",
    obj(
        {
            "type": {"const": "event"},
            "height": UINT,
            "index": described(UINT, "position of the event in its block (all events counted)"),
            "time_ms": described(UINT, "block time"),
            "session": UINT,
            "kind": {"type": "string", "enum": sorted(FEED_KINDS)},
            "attrs": {"type": "object", "additionalProperties": STR},
        },
        description="A session's feed event; `(height, index)` is its position.",
    ),
)
FEED_BLOCK = Component(
    "FeedBlock",
    obj(
        {
            "type": {"const": "block"},
            "height": UINT,
            "hash": HASH,
            "time_ms": UINT,
            "num_txs": UINT,
        },
        description="One finalized block.",
    ),
)
FEED_READY = Component(
    "FeedReady",
    obj(
        {"type": {"const": "ready"}, "height": UINT},
        description="End of the replay: events up to `height` came from storage, later "
        "ones are live.",
    ),
)
_LIMITS = FeedLimits()
FEED_RULES = (
    f"Replay of the stored blocks after `from` (at most {_LIMITS.max_replay_blocks:,} "
    'blocks back by default) ends with `{"type": "ready", "height": H}`; live messages '
    "follow as each block becomes final. A client keeps the position of the last message "
    "it handled and reconnects with it: nothing missed, nothing twice. Close codes: "
    "**1000** after `commerce.session_closed` (session feed), **1001** when the server "
    f"stops, **{CLOSE_SLOW_CONSUMER}** when a client's unsent messages pass "
    f"{MAX_QUEUE_BYTES // 2**20} MiB (resume from the last position), "
    f"**{CLOSE_TRY_AGAIN_LATER}** at once when the node already serves "
    f"{_LIMITS.max_connections:,} feed sockets or the client's address "
    f"{_LIMITS.max_per_address} (node config `feeds`; reconnect later), "
    f"**{CLOSE_POLICY_VIOLATION}** when a client sends more than "
    f"{_LIMITS.max_client_messages_per_s} messages a second. A client that reads "
    f"nothing for {SEND_DEADLINE_S:g} s while a message waits for it is disconnected "
    "without a close frame (its buffer is full); it resumes from its last position. At "
    f"most {REPLAY_SLOTS} replays read a block at once; a later one waits its turn (by "
    "client address in turn). The "
    f"server pings every {HEARTBEAT_S:g} s; client messages are ignored."
)
CLOSE_CODES = {
    "1000": "the session closed (session feed)",
    "1001": "the server is stopping",
    str(CLOSE_SLOW_CONSUMER): "the client read too slowly; resume from its position",
    str(CLOSE_TRY_AGAIN_LATER): "too many feed connections on the node or from the "
    "client's address; reconnect later",
    str(CLOSE_POLICY_VIOLATION): "the client sent messages too fast",
}


class Subscriber:
    """One client's queue of live messages, bounded in bytes.

    Queued a block's messages at a time (``push_all``): the list the hub holds for the
    block, shared by every subscriber, not copied. Publishing a block costs the hub a
    few operations per subscriber whatever the block holds; item by item, a flash
    deal's 40,000 events to the 1,024 sockets a node allows cost it ~10 s of the event
    loop in one go (a review in session 51).
    """

    __slots__ = ("after", "max_bytes", "overflow", "wake", "_queue", "_bytes")

    def __init__(self, after: Position, max_bytes: int) -> None:
        # Messages at or before this position were seen or replayed: never queued.
        self.after = after
        self.max_bytes = max_bytes
        self.overflow = False
        self.wake = asyncio.Event()
        self._queue: deque[Sequence[FeedItem]] = deque()
        self._bytes = 0

    def push(self, item: FeedItem) -> None:
        self.push_all((item,), len(item.text))

    def push_all(self, items: Sequence[FeedItem], size: int) -> None:
        """Queue ``items`` (in position order, ``size`` bytes of text), but those at or
        before ``after``."""
        if self.overflow or not items or items[-1].position <= self.after:
            return
        if items[0].position <= self.after:
            # Replayed into this block: the rest only (a subscriber's first block).
            items = [i for i in items if i.position > self.after]
            size = sum(len(i.text) for i in items)
        if self._bytes + size > self.max_bytes:
            # Buffering on would hold memory without limit for a client that may
            # never catch up; it is dropped and resumes from its last position.
            self.overflow = True
            self._queue.clear()
            self._bytes = 0
        else:
            self._queue.append(items)
            self._bytes += size
        self.wake.set()

    def take(self) -> list[FeedItem]:
        items = [item for part in self._queue for item in part]
        self._queue.clear()
        self._bytes = 0
        return items


class FeedHub:
    """Reads each finalized block once and hands its messages to the subscribers."""

    def __init__(
        self,
        reader: ChainReader,
        *,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        limits: FeedLimits | None = None,
        send_deadline_s: float = SEND_DEADLINE_S,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.reader = reader
        self.max_queue_bytes = max_queue_bytes
        self.send_deadline_s = send_deadline_s
        self.limits = limits or FeedLimits()
        self.max_replay_blocks = self.limits.max_replay_blocks
        # Called with "total" or "per_address" for each socket refused at a cap (the
        # node counts them in ``liveledger_http_refused_total``).
        self.on_refused = on_refused
        # Open sockets by client address (their sum is the node's count).
        self._per_address: dict[str, int] = {}
        self._connections = 0
        # Replays' block reads: never refused (feed sockets are capped per address and
        # per node), taken by address in turn. The live feed reads in a thread of its
        # own, so no replay, view or peer's state sync delays a final block's messages.
        self.replays = ReadSlots("feed replay", REPLAY_SLOTS, None)
        self._live_reads = ThreadPoolExecutor(1, thread_name_prefix="feed-live")
        # Last height whose messages went to the subscribers (None: not started).
        self._delivered: int | None = None
        self._sessions: dict[int, set[Subscriber]] = {}
        self._blocks: set[Subscriber] = set()
        self._cache: OrderedDict[int, BlockFeed] = OrderedDict()
        self._cache_bytes = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.websockets: set[web.WebSocketResponse] = set()

    # --- lifecycle ---

    def on_block(self, height: int) -> None:
        """Block listener: a block became final (called on the event loop)."""
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump(), name="commerce-feed")
        self.reader.add_block_listener(self.on_block)

    async def stop(self) -> None:
        self.reader.remove_block_listener(self.on_block)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.replays.close()
        self._live_reads.shutdown(wait=False, cancel_futures=True)

    async def close_all(self) -> None:
        """Close every feed socket (server shutdown): clients reconnect elsewhere or later.

        All at once, each within the send deadline. aiohttp waits up to 10 s for a client
        to answer a close (a socket with no read pending: its replay under way), and for
        as long as the client keeps its window shut if the close frame does not fit; one
        socket after another, a few clients that never answer (phones gone out of
        coverage, or on purpose) held the node's stop, which comes after this, for
        minutes. A socket whose close outlives the deadline is closed by aiohttp, and
        ``serve_feed`` resets it if bytes are left unsent.
        """
        await asyncio.gather(*(self._going_away(ws) for ws in list(self.websockets)))

    async def _going_away(self, ws: web.WebSocketResponse) -> None:
        try:
            await _within(
                self.send_deadline_s,
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"),
            )
        except (_Stalled, ConnectionError):
            pass  # the client stopped reading or is gone

    # --- connections ---

    def admit(self, address: str) -> str | None:
        """Count a new socket from ``address``; the reason it is refused, if it is."""
        if self._connections >= self.limits.max_connections:
            if self.on_refused is not None:
                self.on_refused("total")
            return f"the node serves at most {self.limits.max_connections} feed connections"
        if self._per_address.get(address, 0) >= self.limits.max_per_address:
            if self.on_refused is not None:
                self.on_refused("per_address")
            return f"at most {self.limits.max_per_address} feed connections per address"
        self._connections += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """Uncount a socket ``admit`` counted."""
        self._connections -= 1
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]

    # --- subscriptions ---

    def delivered(self) -> int:
        """The height up to which live subscribers were served; replay up to here."""
        if self._delivered is None:
            # First use (the node is open by now): nothing was delivered before.
            self._delivered = self.reader.height
        return self._delivered

    def subscribe(self, session_id: int | None, sub: Subscriber) -> int:
        """Register ``sub`` for live messages after the returned height (replay up to it).

        Synchronous on purpose: no block can be published between reading the
        delivered height and registering, so replay and live meet exactly.
        """
        delivered = self.delivered()
        if session_id is None:
            self._blocks.add(sub)
        else:
            self._sessions.setdefault(session_id, set()).add(sub)
        return delivered

    def unsubscribe(self, session_id: int | None, sub: Subscriber) -> None:
        if session_id is None:
            self._blocks.discard(sub)
            return
        subs = self._sessions.get(session_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._sessions[session_id]

    async def block_feed(
        self, height: int, events: bool = True, replay_for: str | None = None
    ) -> BlockFeed | None:
        """Block ``height``'s messages; ``events``: its sessions' too (reading and
        decoding its receipts), else the block message alone may come back. Read for
        the live feed, or in the replays' threads in the turn of client address
        ``replay_for``."""
        cached = self._cache.get(height)
        if cached is not None and (cached.events or not events):
            return cached
        # Decoding a block's receipts is CPU work: keep it off the event loop.
        if replay_for is None:
            feed = await asyncio.get_running_loop().run_in_executor(
                self._live_reads, read_block_feed, self.reader, height, events
            )
        else:
            feed = await self.replays.run(replay_for, read_block_feed, self.reader, height, events)
        if feed is not None:
            held = self._cache.get(height)
            if held is None or (feed.events and not held.events):
                if held is not None:
                    self._cache_bytes -= held.size
                self._cache[height] = feed
                self._cache_bytes += feed.size
            while len(self._cache) > CACHE_BLOCKS or self._cache_bytes > CACHE_BYTES:
                self._cache_bytes -= self._cache.popitem(last=False)[1].size
        return feed

    # --- the pump ---

    async def _pump(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing is marked delivered that was not sent: the next block retries.
                log.exception("commerce feed failed to publish a block")

    async def _catch_up(self) -> None:
        while True:
            try:
                target = self.reader.height
            except RuntimeError:
                return  # the node is stopping
            delivered = self.delivered()
            if delivered >= target:
                return
            if not self._sessions and not self._blocks:
                # Nobody listens: skip the reading, not the bookkeeping.
                self._delivered = target
                return
            height = delivered + 1
            # With block subscribers alone, no receipt is read (one decode per
            # transaction per node, for a message that holds only their count).
            feed = await self.block_feed(height, events=bool(self._sessions))
            if feed is None:
                return
            if self._sessions and not feed.events:
                # A session subscribed during the read: it waits for this block's events.
                continue
            # Publish and mark delivered with no await in between (see subscribe).
            for sub in self._blocks:
                sub.push(feed.block)
            for session_id, items in feed.sessions.items():
                subs = self._sessions.get(session_id)
                if subs:
                    size = sum(len(i.text) for i in items)
                    for sub in subs:
                        sub.push_all(items, size)
            self._delivered = height


HUB: web.AppKey[FeedHub] = web.AppKey("commerce_feed", FeedHub)


def parse_from(text: str | None) -> Position | None:
    """``"12:3"`` -> (12, 3); ``"12"`` -> after the whole block 12; None -> None.

    Raises ``ValueError`` for anything else.
    """
    if text is None:
        return None
    height_text, sep, index_text = text.partition(":")
    if not (height_text.isascii() and height_text.isdigit()) or len(height_text) > 19:
        raise ValueError(f"bad height in {text[:40]!r}")
    if not sep:
        return int(height_text), WHOLE_BLOCK
    if not (index_text.isascii() and index_text.isdigit()) or len(index_text) > 19:
        raise ValueError(f"bad index in {text[:40]!r}")
    return int(height_text), int(index_text)


class _Stalled(Exception):
    """A send or close outlived the deadline: the client stopped reading."""


_SLOW = b"slow consumer"


async def _within(deadline: float, sending: Awaitable[object]) -> None:
    """Await ``sending`` (a send or close on the socket); ``_Stalled`` past ``deadline``."""
    try:
        async with asyncio.timeout(deadline):
            await sending
    except TimeoutError:
        raise _Stalled from None


async def serve_feed(
    request: web.Request,
    hub: FeedHub,
    session_id: int | None,
    start: Position | None,
    *,
    ended_at: Callable[[int], bool] | None = None,
) -> web.WebSocketResponse:
    """Replay stored messages after ``start``, then live ones, on one WebSocket.

    ``session_id`` None serves the blocks feed. ``ended_at(height)`` tells whether
    the session was closed in the state at that height: then nothing live is to
    come, and the feed closes after the replay. It reads state, so it runs in the
    replays' threads (``FeedHub.replays``, in the client address's turn), never on
    the event loop.
    """
    # No permessage-deflate, which every browser offers: a compressor per socket (about
    # 100 KB with the client's, times 1,024 feeds) and each message compressed again for
    # every subscriber on the event loop, for small JSON messages.
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=4096, compress=False)
    await ws.prepare(request)
    transport = request.transport
    # An IPv6 client's /64 counts as one address, as for HTTP connections.
    address = client_of(request)
    refused = hub.admit(address)
    if refused is not None:
        # Closed with a code a browser can read (an HTTP refusal of the upgrade is not),
        # within the send deadline like every other close of a feed: the close waits
        # for the client's answer (aiohttp's own timeout) and for its window if the
        # frame does not fit, and a client that never reads held this handler and its
        # connection, which no feed cap counts, for as long as aiohttp let it.
        try:
            await _within(
                hub.send_deadline_s,
                ws.close(code=CLOSE_TRY_AGAIN_LATER, message=refused.encode()[:120]),
            )
        except (_Stalled, ConnectionError):
            pass  # the client stopped reading or is gone
        finally:
            _drop_unsent(transport)
        return ws
    hub.websockets.add(ws)
    try:
        await _serve(ws, hub, address, session_id, start, ended_at, lambda: _gone(request, ws))
    except (_Stalled, ConnectionError):
        pass  # the client stopped reading or is gone
    finally:
        hub.websockets.discard(ws)
        hub.release(address)
        _drop_unsent(transport)
    return ws


def _drop_unsent(transport: asyncio.Transport | None) -> None:
    """Reset the connection of a feed that ended with bytes unsent.

    They are for a client that stopped reading (a send or close outlived its deadline,
    or the heartbeat gave up on it). Closing the transport would wait for them to
    flush, which such a client never lets happen, keeping the socket and buffer
    uncounted: reset the connection instead (no orphan).
    """
    if transport is not None and transport.get_write_buffer_size():
        reset(transport)


def _gone(request: web.Request, ws: web.WebSocketResponse) -> bool:
    """Whether the feed's client is gone: its connection lost or closing (or the socket
    closed, the server stopping)."""
    transport = request.transport
    return ws.closed or transport is None or transport.is_closing()


async def _serve(
    ws: web.WebSocketResponse,
    hub: FeedHub,
    address: str,
    session_id: int | None,
    start: Position | None,
    ended_at: Callable[[int], bool] | None,
    gone: Callable[[], bool],
) -> None:
    sub = Subscriber((0, 0), hub.max_queue_bytes)
    deadline = hub.send_deadline_s
    try:
        delivered = hub.subscribe(session_id, sub)
        # Before any await: a live message at or before the start is never queued.
        after = (delivered, WHOLE_BLOCK) if start is None else start
        sub.after = after
        # Judged at exactly the subscription's height, whose state is fixed: the read
        # (state, so off the event loop) waits its turn in the replays' threads while
        # later live messages queue, as during a replay. Never refused: the socket is
        # open and counted already (the cap refused before, with 1013).
        ended = ended_at is not None and await hub.replays.run(address, ended_at, delivered)
        # Replay what is stored: the blocks after the start, up to the delivered height.
        first = after[0] if after[1] < WHOLE_BLOCK else after[0] + 1
        for height in range(max(first, 1), delivered + 1):
            # aiohttp cancels no handler whose client left, and nothing here notices it
            # but a send: a session feed whose session had no events in the range read
            # every block of it (up to max_replay_blocks, receipts decoded), in the
            # replays' threads ahead of other clients, for nobody. A client that opens
            # replays and hangs up at once costs a read each, not a thousand.
            if sub.overflow or gone():
                break
            # A replay slot is held for the read alone; held across a send, clients that
            # stop reading would keep every later one from resuming.
            feed = await hub.block_feed(height, session_id is not None, address)
            if feed is None:
                continue
            items = [feed.block] if session_id is None else feed.sessions.get(session_id, [])
            for item in items:
                if sub.overflow:
                    break
                if item.position > after:
                    await _within(deadline, ws.send_str(item.text))
                    ended = ended or item.kind == ev.SESSION_CLOSED
        if gone():
            return
        if sub.overflow:
            # Live messages piled up past the cap while the replay went out: the rest of
            # the replay would only delay the close.
            await _within(deadline, ws.close(code=CLOSE_SLOW_CONSUMER, message=_SLOW))
            return
        ready = json.dumps({"type": "ready", "height": delivered})
        await _within(deadline, ws.send_str(ready))
        if ended:
            await _within(deadline, ws.close(code=WSCloseCode.OK, message=b"session closed"))
            return
        await _live(ws, sub, hub.limits.max_client_messages_per_s, deadline)
    finally:
        hub.unsubscribe(session_id, sub)


async def _live(ws: web.WebSocketResponse, sub: Subscriber, per_s: int, deadline: float) -> None:
    """Send live messages as they come while reading the client (pings, close).

    Client messages are not part of the protocol and are ignored, up to ``per_s``
    a second (a token bucket of one second's worth); beyond, the client is closed
    with 1008. The pending read is cancelled before the server closes: aiohttp's
    close from beside a pending read drops the connection without the closing
    handshake.
    """
    loop = asyncio.get_running_loop()
    reading: asyncio.Task[Any] = loop.create_task(ws.receive())
    waking: asyncio.Task[Any] | None = None
    close: tuple[int, bytes] | None = None
    tokens, refilled = float(per_s), loop.time()
    try:
        while close is None:
            waking = loop.create_task(sub.wake.wait())
            done, _ = await asyncio.wait({reading, waking}, return_when=asyncio.FIRST_COMPLETED)
            if reading in done:
                waking.cancel()
                if reading.result().type in _ENDED:
                    return
                now = loop.time()
                tokens = min(float(per_s), tokens + (now - refilled) * per_s) - 1
                refilled = now
                if tokens < 0:
                    close = (CLOSE_POLICY_VIOLATION, b"too many client messages")
                    break
                reading = loop.create_task(ws.receive())
                continue
            sub.wake.clear()
            for item in sub.take():
                # The queue may overflow while a send waits: no use sending the rest.
                if sub.overflow:
                    break
                await _within(deadline, ws.send_str(item.text))
                if item.kind == ev.SESSION_CLOSED:
                    close = (WSCloseCode.OK, b"session closed")
                    break
            if sub.overflow and close is None:
                close = (CLOSE_SLOW_CONSUMER, _SLOW)
    finally:
        # Neither helper task may outlive the connection (a handler cancelled by a
        # dropped connection would leave them pending).
        if waking is not None and not waking.done():
            waking.cancel()
        if not reading.done():
            reading.cancel()
            try:
                await reading
            except asyncio.CancelledError:
                pass
    await _within(deadline, ws.close(code=close[0], message=close[1]))


_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR})


def install_hub(
    app: web.Application, reader: ChainReader, limits: FeedLimits | None = None
) -> FeedHub:
    """One hub per app, started and stopped with it; sockets closed at shutdown."""
    hub = FeedHub(reader, limits=limits)
    app[HUB] = hub

    async def hub_context(_app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    async def on_shutdown(_app: web.Application) -> None:
        await hub.close_all()

    app.cleanup_ctx.append(hub_context)
    app.on_shutdown.append(on_shutdown)
    return hub


__all__ = [
    "CLOSE_CODES",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TRY_AGAIN_LATER",
    "FEED_BLOCK",
    "FEED_EVENT",
    "FEED_READY",
    "FEED_RULES",
    "HUB",
    "MAX_QUEUE_BYTES",
    "MAX_REPLAY_BLOCKS",
    "REPLAY_SLOTS",
    "SEND_DEADLINE_S",
    "BlockFeed",
    "FeedHub",
    "FeedItem",
    "FeedLimits",
    "Subscriber",
    "install_hub",
    "parse_from",
    "read_block_feed",
    "serve_feed",
]
