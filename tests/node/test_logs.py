"""JSON log lines: the message, the level and every ``extra=`` field, one object per line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from node.logs import JsonFormatter, ThrottledLog, configure_logging


def test_a_record_becomes_one_json_line_with_its_extra_fields():
    record = logging.getLogger("node.service").makeRecord(
        "node.service",
        logging.INFO,
        __file__,
        1,
        "finalized block %d round %d",
        (7, 1),
        None,
        extra={"height": 7, "round": 1, "peer": b"\xab" * 4, "votes": (b"\x01", b"\x02")},
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "finalized block 7 round 1"
    assert (doc["level"], doc["logger"]) == ("INFO", "node.service")
    assert (doc["height"], doc["round"], doc["peer"]) == (7, 1, "abababab")
    assert doc["votes"] == ["01", "02"]
    assert doc["time"].endswith("Z")
    # Only what the call passed: none of the LogRecord's own attributes.
    assert set(doc) == {"time", "level", "logger", "message", "height", "round", "peer", "votes"}


def test_an_exception_is_one_field():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.node.logs")
    log.addHandler(handler)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"tx_hash": b"\x00" * 2})
    finally:
        log.removeHandler(handler)
    doc = json.loads(out.getvalue())
    assert doc["tx_hash"] == "0000" and "ValueError: boom" in doc["exc"]


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")


def test_a_throttled_log_keeps_one_line_an_interval_and_says_how_many_it_left_out(caplog):
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("node.http"), 10.0, lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="node.http"):
        for i in range(5):
            throttled.info("reset a connection from %s", f"10.0.0.{i}")
        # Debug lines are no operator's disk: they pass as they are.
        throttled.debug("refused a connection")
        now[0] = 10.0
        throttled.warning("reset a connection from %s", "10.0.0.9", extra={"peer": b"\x01"})
        now[0] = 25.0
        throttled.info("100% of a body unread")
    assert [r.getMessage() for r in caplog.records] == [
        "reset a connection from 10.0.0.0",
        "refused a connection",
        "reset a connection from 10.0.0.9 (and 4 more like it since the last such line, "
        "not logged)",
        "100% of a body unread",
    ]
    # The caller's extra fields are the record's.
    assert caplog.records[2].peer == b"\x01"


def test_a_throttled_log_given_a_kind_lets_other_lines_pass(caplog):
    # aiohttp's logger says "Error handling request" for a malformed request and for a
    # handler's unexpected exception alike: only the first kind is the client's.
    throttled = ThrottledLog(
        logging.getLogger("aiohttp.server"), 10.0, lambda: 0.0, only=lambda e: e is None
    )
    with caplog.at_level(logging.INFO, logger="aiohttp.server"):
        for _ in range(3):
            throttled.error("a malformed request")
        throttled.error("a fault", exc_info=KeyError("given"))
        try:
            raise ValueError("handled")
        except ValueError as exc:
            throttled.exception("a fault")
            throttled.error("a fault", exc_info=(type(exc), exc, exc.__traceback__))
    assert [r.getMessage() for r in caplog.records] == ["a malformed request"] + ["a fault"] * 3
    assert [type(r.exc_info[1]) for r in caplog.records[1:]] == [KeyError, ValueError, ValueError]
