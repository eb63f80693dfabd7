"""Log output for operators: text lines, or JSON lines (``liveledger node start --log-format json``).

A JSON line holds ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
``message``, and every field a log call passed with ``extra=``: the node's calls
pass the values operators grep for where they are at hand (``height``, ``round``,
``peer``, ``tx_hash``, ``txs``...). Bytes become hex; an exception its traceback
under ``exc``. Field names never hold secrets, and neither do the values: keys are
logged by their public half only.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the record's ``extra`` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in out:
                out[name] = _plain(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# The interval of a ``ThrottledLog``: at most a line every this many seconds.
THROTTLE_S = 10.0


class ThrottledLog(logging.LoggerAdapter[logging.Logger]):
    """``logger`` at most once per ``interval_s`` at INFO and above (DEBUG lines pass as
    they are), the next line saying how many were left out since the last.

    For the lines a client's input logs as often as the client likes: aiohttp logs an
    error and its traceback for every malformed request (~2 KB each), and the node a
    line for every connection reset because its client stopped reading. An attacker
    opening connections as fast as it could filled the operator's disk. The log samples
    them (the resets are all counted: ``liveledger_http_connections_stalled_total``).

    One per kind of event: a throttle shared by two kinds would hide the rarer. A logger
    that logs other kinds too (aiohttp's logs a handler's unexpected exception with the
    same words as a malformed request) is given ``only``: the lines it says are of the
    kind, by the exception they carry (None for none), are throttled; the others pass.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = THROTTLE_S,
        clock: Callable[[], float] = time.monotonic,
        only: Callable[[BaseException | None], bool] | None = None,
    ) -> None:
        super().__init__(logger, {})
        self.interval_s = interval_s
        self._clock = clock
        self._only = only
        # When the next line may be logged, and the lines left out since the last.
        self._next = -float("inf")
        self._left_out = 0

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if (
            level < logging.INFO
            or not self.isEnabledFor(level)
            or (self._only is not None and not self._only(_exception(kwargs.get("exc_info"))))
        ):
            super().log(level, msg, *args, **kwargs)
            return
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        self._next = now + self.interval_s
        if self._left_out:
            # A message without arguments is not %-formatted: its own % signs stay.
            text = str(msg) if args else str(msg).replace("%", "%%")
            msg = text + " (and %d more like it since the last such line, not logged)"
            args = (*args, self._left_out)
            self._left_out = 0
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        # No extra fields of the adapter's own: the caller's pass as they are.
        return msg, kwargs


def _exception(exc_info: object) -> BaseException | None:
    """The exception a log call's ``exc_info`` names: given, as ``sys.exc_info()``'s
    tuple, or ``True`` for the one being handled."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else None


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at ``level`` as ``fmt`` (``text`` or ``json``) lines."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # asyncio's debug chatter is noise at INFO.
    logging.getLogger("asyncio").setLevel(logging.WARNING)
