"""Receipts and events: what a transaction did, committed in the block's receipt root.

Receipts are consensus data (every node must produce the same bytes), so event
values are plain strings made deterministically: integers in decimal, bytes
(addresses, hashes) in lowercase hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Self

from core.codec import Len, MaxItems, MaxLen, Wire, array_header, pack_array, pack_raw

MAX_EVENT_KIND = 64
MAX_ATTR_KEY = 64
MAX_ATTR_VALUE = 256
MAX_ATTRS = 32
MAX_EVENTS = 64
MAX_CODE = 32
MAX_MESSAGE = 256

OK = "ok"


@dataclass(frozen=True, slots=True)
class EventAttr(Wire):
    key: Annotated[str, MaxLen(MAX_ATTR_KEY)]
    value: Annotated[str, MaxLen(MAX_ATTR_VALUE)]


@dataclass(frozen=True, slots=True)
class Event(Wire):
    kind: Annotated[str, MaxLen(MAX_EVENT_KIND)]
    attrs: Annotated[tuple[EventAttr, ...], MaxItems(MAX_ATTRS)]

    @classmethod
    def of(cls, kind: str, **attrs: str | int | bytes) -> Self:
        """``Event.of("transfer", sender=addr, amount=5)``, attributes in the order given.

        Integers become decimal, bytes lowercase hex. Checks the bounds that
        decoding enforces, because ``encode`` does not: an oversized event
        would produce a receipt no node could decode.
        """
        # A UTF-8 character is at most 4 bytes, so short strings need no encoding to check.
        if len(kind) * 4 > MAX_EVENT_KIND and len(kind.encode()) > MAX_EVENT_KIND:
            raise ValueError(f"event kind {kind[:64]!r} is over {MAX_EVENT_KIND} bytes")
        if len(attrs) > MAX_ATTRS:
            raise ValueError(f"event {kind!r} has {len(attrs)} attributes, max {MAX_ATTRS}")
        items = []
        for key, value in attrs.items():
            if isinstance(value, bytes):
                text = value.hex()
            elif isinstance(value, str):
                text = value
            elif type(value) is int:
                text = str(value)
            else:
                raise TypeError(f"event attribute {key!r}: str, int or bytes, got {value!r}")
            if len(text) * 4 > MAX_ATTR_VALUE and len(text.encode()) > MAX_ATTR_VALUE:
                raise ValueError(f"event attribute {key!r}: value over {MAX_ATTR_VALUE} bytes")
            if len(key) * 4 > MAX_ATTR_KEY and len(key.encode()) > MAX_ATTR_KEY:
                raise ValueError(f"event attribute key {key[:64]!r} is over {MAX_ATTR_KEY} bytes")
            items.append(EventAttr(key, text))
        return cls(kind, tuple(items))

    def get(self, key: str) -> str | None:
        """The value of the first attribute named ``key``."""
        for attr in self.attrs:
            if attr.key == key:
                return attr.value
        return None


@dataclass(frozen=True, slots=True)
class Receipt(Wire):
    tx_hash: Annotated[bytes, Len(32)]
    # "ok" on success, else a stable error code.
    code: Annotated[str, MaxLen(MAX_CODE)]
    message: Annotated[str, MaxLen(MAX_MESSAGE)]
    fee: int
    events: Annotated[tuple[Event, ...], MaxItems(MAX_EVENTS)]

    @property
    def ok(self) -> bool:
        return self.code == OK


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    """A receipt's JSON form, as the node's API answers it (``node.render.RECEIPT``)
    and a client prints one it proved (``liveledger query tx --prove``)."""
    return {
        "tx_hash": receipt.tx_hash.hex(),
        "code": receipt.code,
        "message": receipt.message,
        "fee": receipt.fee,
        "events": [
            {"kind": e.kind, "attrs": {a.key: a.value for a in e.attrs}} for e in receipt.events
        ],
    }


def encode_receipt(
    tx_hash: bytes, code: str, message: str, fee: int, events: Sequence[bytes]
) -> bytes:
    """``Receipt(tx_hash, code, message, fee, events).encode()`` with the events given
    encoded (``Event.encode``'s bytes, as ``Overlay`` keeps them): execution writes a
    receipt's bytes without building its event objects. ``message`` within bounds
    (``bound_message``), as for a ``Receipt``."""
    # The four plain fields packed as one array of four (one call, not four), its
    # header made a five's: msgpack writes an array as its header and its items.
    head = pack_raw([tx_hash, code, message, fee])
    return _RECEIPT_HEAD + head[1:] + pack_array(events)


# ``array_header(5)``; the four fields' array starts with ``array_header(4)``, one byte.
_RECEIPT_HEAD = array_header(5)
assert array_header(4) == b"\x94" and len(_RECEIPT_HEAD) == 1


def bound_message(message: str) -> str:
    """Cut ``message`` to MAX_MESSAGE UTF-8 bytes without splitting a character."""
    if len(message) * 4 <= MAX_MESSAGE:
        return message
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE:
        return message
    return raw[:MAX_MESSAGE].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class BlockEvents(Wire):
    """Events of a block's begin-block hooks (deadlines and the like), in order.

    Stored beside the block so feeds can replay them; deterministic, so an audit
    re-derives and compares them like receipts.
    """

    events: Annotated[tuple[Event, ...], MaxItems(1 << 20)]

    MAX_ENCODED = 64 * 1024 * 1024


def encode_block_events(events: Sequence[bytes]) -> bytes:
    """``BlockEvents(events).encode()`` with the events given encoded."""
    return pack_array((pack_array(events),))
