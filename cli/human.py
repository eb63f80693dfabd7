"""What people read and type: ``ll1…`` addresses, numbers, ISO times beside epoch
milliseconds, durations and ISO times as input, GTINs of any GS1 length.

The node speaks in exact machine forms (event attributes are strings: integers in
decimal, bytes in hex; times are epoch milliseconds). The CLI keeps those and adds
what a person needs beside them, so scripts keep working on the same fields:

- an event attribute of 20 bytes (40 hex characters) is an address: shown ``ll1…``,
  the form every command accepts;
- a JSON field or attribute ``<name>_ms`` holding a time gets ``<name>_iso`` beside it
  (UTC, ``2026-12-03T20:00:00Z``); durations (``*_ms`` below the year 2000) do not;
- an epoch-milliseconds number in an error message gets its ISO time in brackets.

Times typed by a person (``WHEN``): ``now``, ``in 5m`` (``in 1h30m``, ``in 2d``),
``5m ago``, an ISO 8601 time (``2026-12-03T20:00Z``; UTC unless it carries an
offset) or epoch milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import click

from core.keys import ADDRESS_SIZE, format_address

# Epoch milliseconds of 2000-01-01 and 2100-01-01: a ``*_ms`` value between them is a
# time; anything smaller is a duration (a deadline window, a timeout).
_TIME_LOW = 946_684_800_000
_TIME_HIGH = 4_102_444_800_000
_HEX_ADDRESS = re.compile(f"[0-9a-f]{{{2 * ADDRESS_SIZE}}}")
_EPOCH_MS_IN_TEXT = re.compile(r"(?<![\w.])(\d{12,13})(?![\w.])")
# Event attributes that carry text or a name, never a number (a tip's message may be
# "100": it stays text).
TEXT_ATTRS = frozenset(
    {"message", "reason", "state", "previous", "status", "title", "name", "text", "step"}
)
_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(?:(\d+)\s*([smhd])\s*)+")
_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")


# --- output ---


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time (milliseconds only when there are any)."""
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def is_time_ms(value: object) -> bool:
    return type(value) is int and _TIME_LOW <= value < _TIME_HIGH


def times_in(text: str) -> str:
    """``text`` with the ISO time after every epoch-milliseconds number in it."""
    return _EPOCH_MS_IN_TEXT.sub(
        lambda m: (
            f"{m.group(1)} ({iso(int(m.group(1)))})" if is_time_ms(int(m.group(1))) else m.group(1)
        ),
        text,
    )


def with_times(doc: Any) -> Any:
    """A JSON document with ``<name>_iso`` beside every ``<name>_ms`` that holds a time."""
    if isinstance(doc, list):
        return [with_times(x) for x in doc]
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out[key] = with_times(value)
        if key.endswith("_ms") and is_time_ms(value):
            out[key[:-3] + "_iso"] = iso(value)
    return out


def attrs(raw: dict[str, str]) -> dict[str, Any]:
    """Event attributes for people: addresses ``ll1…``, numbers as numbers, ISO times."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        shown: Any = value
        if _HEX_ADDRESS.fullmatch(value):
            shown = format_address(bytes.fromhex(value))
        elif key not in TEXT_ATTRS and value.isascii() and value.isdigit() and len(value) < 21:
            shown = int(value)
        out[key] = shown
        if key.endswith("_ms") and is_time_ms(shown):
            out[key[:-3] + "_iso"] = iso(shown)
    return out


def event_line(event: dict[str, Any]) -> str:
    """``kind key=value ...`` of a receipt's event (values with spaces JSON-quoted)."""
    parts = [event["kind"]]
    for key, value in attrs(event["attrs"]).items():
        text = str(value)
        if not text or any(c.isspace() for c in text) or '"' in text:
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def receipt(doc: dict[str, Any]) -> dict[str, Any]:
    """A receipt (``node.render.receipt_json``) with its events' attributes for people."""
    return {**doc, "events": [{**e, "attrs": attrs(e["attrs"])} for e in doc["events"]]}


# --- input: times ---


@dataclass(frozen=True, slots=True)
class When:
    """A time a person typed: absolute (epoch ms) or relative to "now" (ms)."""

    absolute_ms: int | None = None
    offset_ms: int = 0

    def resolve(self, now_ms: int) -> int:
        return self.absolute_ms if self.absolute_ms is not None else now_ms + self.offset_ms


def parse_duration(text: str) -> int | None:
    """``5m``, ``1h30m``, ``2d``, ``90s`` in milliseconds; None if ``text`` is not one."""
    text = text.strip().lower()
    if not text or not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_when(text: str) -> When:
    """``now``, ``in 5m``, ``5m ago``, ISO 8601 (UTC unless it has an offset), epoch ms."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return When()
    if lowered.startswith("in "):
        ahead = parse_duration(lowered[3:])
        if ahead is not None:
            return When(offset_ms=ahead)
    if lowered.endswith(" ago"):
        back = parse_duration(lowered[:-4])
        if back is not None:
            return When(offset_ms=-back)
    if value.isascii() and value.isdigit():
        return When(absolute_ms=int(value))
    try:
        # Python 3.11 reads "Z" and most ISO 8601 forms.
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 'now', 'in 5m', '5m ago', an ISO time such as "
            "2026-12-03T20:00Z, or epoch milliseconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return When(absolute_ms=int(parsed.timestamp() * 1000))


class WhenType(click.ParamType[When]):
    """A click parameter of ``parse_when``'s forms."""

    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> When:
        if isinstance(value, When):
            return value
        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


WHEN = WhenType()


# --- input: GTINs ---


def gtin14(text: str) -> str:
    """A GTIN-8, -12, -13 or -14 as the 14 digits the chain stores (zeros on the left
    keep the check digit valid). Raises ``click.BadParameter`` naming what is wrong."""
    from apps.commerce.provenance import gtin_check_digit

    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) not in (8, 12, 13, 14):
        raise click.BadParameter(
            f"GTIN {text!r} must be 8, 12, 13 or 14 digits (GTIN-8, UPC-A, EAN-13, GTIN-14)"
        )
    padded = digits.zfill(14)
    expected = gtin_check_digit(padded[:13])
    if int(padded[13]) != expected:
        raise click.BadParameter(
            f"GTIN {digits} ends in check digit {padded[13]}, its digits give {expected}"
        )
    return padded


class GtinType(click.ParamType[str]):
    name = "GTIN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return gtin14(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


GTIN = GtinType()
