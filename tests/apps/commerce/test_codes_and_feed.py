"""Every code raised in the package is one its types declare, and each is documented; feed
events are picked out by session. (tests/test_tx_declarations.py holds each type's
declaration to what its own handler can raise.)"""

import ast
from pathlib import Path

import apps.commerce
from apps.commerce import ERROR_CODES, FEED_KINDS, feed_events, session_of
from apps.commerce.events import make
from vm import Event

SOURCE = Path(apps.commerce.__file__).parent
DOC = Path(apps.commerce.__file__).parents[2] / "docs" / "commerce.md"


# Helpers of the vm that raise one code of their own for the handler that calls them.
VM_REFUSALS = {
    "refuse_module_account": "module_account",
    "checked_add": "u64_overflow",
    "debit": "insufficient_funds",
    "require_currency": "unknown_currency",
    "require_priceable": "currency_revoked",
}


def codes_in_source():
    found = set()
    for path in SOURCE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None)
            if (
                name == "TxFailed"
                and len(node.args) == 2
                and isinstance(node.args[1], ast.Constant)
            ):
                found.add(node.args[1].value)
            elif name in VM_REFUSALS:
                found.add(VM_REFUSALS[name])
                if name == "require_priceable":
                    found.add("unknown_currency")
    return found


def test_every_code_raised_is_declared():
    used = codes_in_source()
    assert used, "no TxFailed codes found"
    # ERROR_CODES is the union of the commerce types' declared codes.
    assert used <= set(ERROR_CODES), used - set(ERROR_CODES)
    # And every documented code is raised somewhere (no stale entries).
    assert set(ERROR_CODES) <= used, set(ERROR_CODES) - used


def test_every_code_is_in_the_docs():
    text = DOC.read_text()
    assert [c for c in ERROR_CODES if f"`{c}`" not in text] == []


def test_make_is_event_of():
    attrs = {"session": 3, "order": b"\x01\xff", "state": "placed", "long": "é" * 100}
    assert make("commerce.x", **attrs) == Event.of("commerce.x", **attrs)


def test_feed_events_by_session():
    events = [
        Event.of("commerce.tip", session=1, amount=5),
        Event.of("commerce.order_state", order=1, state="accepted"),
        Event.of("commerce.stock_left", session=2, left=3),
        Event.of("transfer", sender=b"\x01"),
        Event.of("commerce.deal_closed", session=1, deal=1),
    ]
    assert [e.kind for e in feed_events(events, 1)] == ["commerce.tip", "commerce.deal_closed"]
    assert len(list(feed_events(events))) == 3
    assert session_of(events[1]) is None and session_of(events[2]) == 2
    assert "commerce.order_placed" in FEED_KINDS
