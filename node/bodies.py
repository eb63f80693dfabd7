"""Bounds before parsing: the transactions of a ``POST /v1/txs`` body, split without
materialising anything a hostile body could inflate.

A 32 MiB msgpack body of one-byte items unpacks into a list of 32 million objects
(hundreds of MB, about a second of the event loop) before its length can be
checked; a JSON body of nested brackets makes ``json.loads`` recurse until it
fails. So the item count is read from the msgpack array header, and each item is
sliced as a ``bin`` without unpacking anything else; a JSON body's list length and
nesting are bounded by counting its structural bytes (C-speed ``bytes.count``)
before ``json.loads`` runs. Every refusal is ``BodyError`` with a stable code.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from apps.routes import client_of
from core import HttpError, Invalid

# msgpack array headers: fixarray 0x90-0x9f (count in the low nibble), array 16 and 32.
_FIXARRAY, _ARRAY16, _ARRAY32 = 0x90, 0xDC, 0xDD
# msgpack bin headers (a SignedTx encoding is always a bin).
_BIN8, _BIN16, _BIN32 = 0xC4, 0xC5, 0xC6


class BodyError(Invalid):
    """A body refused before parsing: ``code`` is ``malformed`` or ``too_large``. Part
    of the one error tree, so the API's middleware renders it as any ``Invalid`` (400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


# A compressed body may decode to at most this many times its size on the wire:
# signed transactions barely compress, and without a bound 26 KB of gzip decode to
# 25 MiB held in the body budget.
MAX_DECODE_RATIO = 8


class BodyBudget:
    """Bytes of request bodies being read, over all connections and per client, and
    their caps.

    ``max_request_bytes`` bounds one body; without this, every client could hold
    that much at once: 16 uploads of 31 MiB stalled before their end took a node
    from 70 to 695 MB, which it kept after they closed (freed memory is not given
    back). A body is charged as its bytes arrive and credited once it is read. One
    client address (``core.netaddr.client_key``) may hold a quarter of the budget,
    so a few stalled uploads from one place do not refuse everyone else's.
    ``on_refused`` is told which bound refused each ``take`` that fails: ``"total"``
    or ``"per_address"`` (the node counts them in ``liveledger_http_refused_total``).
    """

    __slots__ = ("capacity", "per_client", "held", "on_refused", "_clients")

    def __init__(self, capacity: int, on_refused: Callable[[str], None] | None = None) -> None:
        self.capacity = capacity
        self.per_client = max(1, capacity // 4)
        self.held = 0
        self.on_refused = on_refused
        self._clients: dict[str, int] = {}

    def take(self, client: str, size: int) -> bool:
        """Charge ``size`` bytes to ``client``; False (nothing charged) past the budget
        or the client's quarter of it."""
        mine = self._clients.get(client, 0)
        if self.held + size > self.capacity or mine + size > self.per_client:
            if self.on_refused is not None:
                self.on_refused("total" if self.held + size > self.capacity else "per_address")
            return False
        self.held += size
        self._clients[client] = mine + size
        return True

    def give(self, client: str, size: int) -> None:
        if not size:
            return
        self.held -= size
        left = self._clients[client] - size
        if left:
            self._clients[client] = left
        else:
            del self._clients[client]


BODY_BUDGET: web.AppKey[BodyBudget] = web.AppKey("body_budget", BodyBudget)
# The same accounting for answers being sent (``node.api.answers_middleware``): an
# answer is handed to the socket whole, and a client that asks and never reads kept it
# in the node's memory (60 KB of batch asked for a 2.6 MB answer; 256 connections from
# one address held 670 MB). Charged from the answer's handing over until the socket
# took it (or closed); over the budget, or a quarter of it from one address, ``busy``.
ANSWER_BUDGET: web.AppKey[BodyBudget] = web.AppKey("answer_budget", BodyBudget)
# Answers up to this size are not counted: the socket's buffers take them at once.
SMALL_ANSWER_BYTES = 16 * 1024


# Client addresses whose unpaid refusals are remembered; past it the least recently
# charged one is forgotten (it starts again with a full budget, as any new address).
MAX_CHECK_BUDGETS = 4096


class CheckBudget:
    """Per client address, a budget of submitted transactions refused once checked, for
    what they are (``node.mempool.SubmitResult.unpaid``: bytes that are no transaction, a
    bad signature, another chain's, a copy of a spent one, an unfunded sender, a fee
    below the minimum, a nonce past the window): ``rate`` a second, ``burst`` saved up.
    Each cost the node a check (a decode, a signature check, an account read) and its
    sender nothing; refusals for what the mempool holds (full, a queued nonce) are free,
    since honest wallets meet them.

    The mempool refuses a client's transactions beyond its window before any check, but
    bytes that fail their checks leave the window as soon as they are checked: without
    a bound, one client sending batches of 20,000 bad signatures, which cost it nothing
    to make (a ~1 s check of the workers' each), kept the signature workers busy and
    the window full of its own, and honest submissions waited behind them or were
    refused ``mempool_full``. The peers' gossip had such a budget; clients had none.
    A batch is charged whole before any of it is checked (so that concurrent batches
    cannot all pass while the budget still holds) and credited back what did not fail
    unpaid; an address in debt is refused (503 ``busy``), its body unread, until it has
    saved up again.
    """

    __slots__ = ("rate", "burst", "on_refused", "_clock", "_tokens")

    def __init__(
        self,
        rate: float,
        burst: float,
        on_refused: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.on_refused = on_refused
        self._clock = clock
        # client -> (tokens, when), least recently charged first.
        self._tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _left(self, client: str, now: float) -> float:
        held = self._tokens.get(client)
        if held is None:
            return self.burst
        tokens, then = held
        return min(self.burst, tokens + (now - then) * self.rate)

    def take(self, client: str, count: int) -> float:
        """Charge ``count`` transactions to ``client`` (none: only ask) and return 0, or,
        while it is in debt, charge nothing and return the seconds until it is out of it."""
        now = self._clock()
        left = self._left(client, now)
        if left <= 0:
            if self.on_refused is not None:
                self.on_refused("per_address")
            return max(-left / self.rate, 1 / self.rate)
        if count > 0:
            self._set(client, left - count, now)
        return 0.0

    def give(self, client: str, count: int) -> None:
        """Credit back ``count`` transactions of a batch ``take`` charged."""
        if count > 0:
            now = self._clock()
            self._set(client, min(self.burst, self._left(client, now) + count), now)

    def _set(self, client: str, tokens: float, now: float) -> None:
        self._tokens[client] = (tokens, now)
        self._tokens.move_to_end(client)
        if len(self._tokens) > MAX_CHECK_BUDGETS:
            self._tokens.popitem(last=False)


CHECK_BUDGET: web.AppKey[CheckBudget] = web.AppKey("check_budget", CheckBudget)


def _too_large(message: str) -> HttpError:
    return HttpError(400, "too_large", message, {"Connection": "close"})


async def read_body(request: web.Request, max_bytes: int, timeout_ms: int) -> bytes:
    """The request's body, or ``request_timeout`` (408) if it is not all in within
    ``timeout_ms`` (the node's ``body_timeout_ms``): a client that trickles a body holds a
    connection and a buffer, so a slow upload ends instead of lasting forever.

    Its decoded size is bounded by ``max_bytes``, the node's ``max_request_bytes``
    (``too_large``, from ``Content-Length`` before a byte is read), and a compressed
    body's by ``MAX_DECODE_RATIO`` times its ``Content-Length``, which it must then
    have. The bytes bodies being read hold, in all and per client, are bounded by the
    app's ``BodyBudget``: over it the request is ``busy`` (503, ``Retry-After``). A
    body that does not decode as its ``Content-Encoding`` says, or ends with its
    connection, is ``malformed`` (400): the client's fault, not a 500 logged as the
    node's bug."""
    limit = max_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(f"the body is {declared} bytes, over the node's {limit}")
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        if declared is None:
            raise HttpError(
                400,
                "malformed",
                "a body with a Content-Encoding needs a Content-Length",
                {"Connection": "close"},
            )
        limit = min(limit, MAX_DECODE_RATIO * declared)
    budget = request.app[BODY_BUDGET]
    client = client_of(request)
    chunks: list[bytes] = []
    held = 0
    # A body already in whole (a small one comes with its headers) cannot trickle: it
    # is read without arming a timer (4 µs a request, a one-tap buyer's every tap).
    whole = request.content.is_eof()
    try:
        async with contextlib.nullcontext() if whole else asyncio.timeout(timeout_ms / 1000):
            # Decoded bytes as they arrive (after any Content-Encoding).
            async for chunk in request.content.iter_any():
                if not budget.take(client, len(chunk)):
                    raise HttpError(
                        503,
                        "busy",
                        "the node holds as many request bodies as it allows; retry later",
                        {"Retry-After": "1", "Connection": "close"},
                    )
                held += len(chunk)
                chunks.append(chunk)
                if held > limit:
                    raise _too_large(f"the body decodes to more than {limit} bytes")
    except TimeoutError:
        raise HttpError(
            408,
            "request_timeout",
            f"the body did not arrive within {timeout_ms} ms",
            {"Connection": "close"},
        ) from None
    except (web.RequestPayloadError, ConnectionResetError):
        # The client's fault, and its connection cannot carry another request: closed
        # after the answer (if anyone is left to read it).
        raise HttpError(
            400,
            "malformed",
            "the body does not decode as its Content-Encoding, or ended with its connection",
            {"Connection": "close"},
        ) from None
    finally:
        budget.give(client, held)
    return b"".join(chunks)


def _uint(body: bytes, pos: int, size: int) -> int:
    if pos + size > len(body):
        raise BodyError("malformed", f"msgpack body ends inside a header at byte {pos}")
    return int.from_bytes(body[pos : pos + size], "big")


def split_msgpack_batch(body: bytes, max_items: int) -> list[bytes]:
    """The ``bin`` items of a msgpack array, its length checked from the header first.

    Anything but an array of ``bin`` items with no trailing bytes is ``malformed``;
    more than ``max_items`` items is ``too_large`` before a single item is read.
    """
    if not body:
        raise BodyError("malformed", "empty request body")
    tag = body[0]
    if _FIXARRAY <= tag <= _FIXARRAY + 15:
        count, pos = tag - _FIXARRAY, 1
    elif tag == _ARRAY16:
        count, pos = _uint(body, 1, 2), 3
    elif tag == _ARRAY32:
        count, pos = _uint(body, 1, 4), 5
    else:
        raise BodyError("malformed", "msgpack body must be an array of bin items")
    if count > max_items:
        raise BodyError("too_large", f"at most {max_items} transactions per batch, got {count}")
    items = []
    end = len(body)
    for index in range(count):
        if pos >= end:
            raise BodyError("malformed", f"msgpack body ends before item {index} of {count}")
        tag = body[pos]
        # The two sizes a transaction takes, read inline (a batch has up to 20,000).
        if tag == _BIN8 and pos + 1 < end:
            size, pos = body[pos + 1], pos + 2
        elif tag == _BIN16 and pos + 2 < end:
            size, pos = body[pos + 1] << 8 | body[pos + 2], pos + 3
        elif tag == _BIN8:
            size, pos = _uint(body, pos + 1, 1), pos + 2
        elif tag == _BIN16:
            size, pos = _uint(body, pos + 1, 2), pos + 3
        elif tag == _BIN32:
            size, pos = _uint(body, pos + 1, 4), pos + 5
        else:
            raise BodyError("malformed", f"msgpack item {index} is not bin (type byte {tag:#04x})")
        if pos + size > end:
            raise BodyError("malformed", f"msgpack item {index} runs past the end of the body")
        items.append(body[pos : pos + size])
        pos += size
    if pos != end:
        raise BodyError("malformed", f"{end - pos} trailing bytes after the msgpack array")
    return items


def parse_json_txs(body: bytes, max_items: int) -> tuple[list[bytes], bool]:
    """The transactions of ``{"tx": hex}`` or ``{"txs": [hex, ...]}`` and whether it was a batch.

    Before ``json.loads``: a valid body has at most two brackets or braces (no
    recursion to exhaust) and one comma per item after the first (a list of
    millions of empty strings is refused from its comma count).
    """
    if not body:
        raise BodyError("malformed", "empty request body")
    # Hex strings hold no structural characters, so these counts bound a valid body.
    if body.count(b",") >= max_items:
        raise BodyError(
            "too_large", f"at most {max_items} transactions per batch, got more separators"
        )
    if body.count(b"[") + body.count(b"{") > 2:
        raise BodyError(
            "malformed", 'body must be {"tx": "<hex>"} or {"txs": ["<hex>", ...]} (too nested)'
        )
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        # ValueError also covers integers over Python's digit limit.
        raise BodyError("malformed", f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict) or len(doc) != 1 or not ({"tx", "txs"} & doc.keys()):
        raise BodyError("malformed", 'body must be {"tx": "<hex>"} or {"txs": ["<hex>", ...]}')
    batch = "txs" in doc
    items = doc["txs"] if batch else [doc["tx"]]
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise BodyError("malformed", "transactions must be hex strings")
    try:
        return [binascii.unhexlify(x) for x in items], batch
    except (binascii.Error, ValueError) as exc:
        raise BodyError("malformed", f"transaction is not valid hex: {exc}") from None


__all__ = [
    "ANSWER_BUDGET",
    "BODY_BUDGET",
    "CHECK_BUDGET",
    "MAX_CHECK_BUDGETS",
    "MAX_DECODE_RATIO",
    "SMALL_ANSWER_BYTES",
    "BodyBudget",
    "CheckBudget",
    "BodyError",
    "parse_json_txs",
    "read_body",
    "split_msgpack_batch",
]
