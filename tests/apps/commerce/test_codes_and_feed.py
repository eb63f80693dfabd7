"""Every code raised in the package is one its types declare, and each is documented; feed
events are picked out by session. (tests/test_tx_declarations.py holds each type's
declaration to what its own handler can raise.)"""

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    assert make("commerce.x", **attrs) == Event.of("commerce.x", **attrs).encode()


attr_values = st.one_of(
    st.integers(0, 2**64 - 1),
    # Past u64, and negative: decimal texts near and over the 256-byte bound.
    st.integers(10**60, 10**300),
    st.integers(-(10**300), -(10**60)),
    st.binary(max_size=40),
    # 128 bytes are 256 hex digits: the bound.
    st.binary(min_size=120, max_size=136),
    st.text(max_size=80),
    # Around the bound: 128 two-byte or 64 four-byte characters fit, more do not.
    st.text("é", min_size=120, max_size=136),
    st.text("\U0001f600", min_size=60, max_size=68),
)
attr_keys = st.one_of(
    st.text("abcdefghij_", min_size=1, max_size=12),
    # Around the key's 64-byte bound, in one- and four-byte characters.
    st.text("k", min_size=60, max_size=70),
    st.text("\U0001f600", min_size=14, max_size=18),
)


@given(
    st.one_of(
        st.sampled_from(["commerce.tip", "commerce.order_placed", "k" * 64, "k" * 65]),
        st.text("\U0001f600é", min_size=14, max_size=40),
    ),
    st.dictionaries(attr_keys, attr_values, max_size=33),
)
def test_make_encodes_what_event_of_builds(kind, attrs):
    """Packed from the values, the event is the bytes of the object ``Event.of`` builds,
    and ``make`` refuses what it refuses (a kind, key or value over its bound, a value
    of another type, too many attributes)."""
    try:
        expected = Event.of(kind, **attrs)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)):
            make(kind, **attrs)
        return
    encoded = make(kind, **attrs)
    assert encoded == expected.encode()
    assert Event.decode(encoded) == expected


def test_make_refuses_what_event_of_refuses_by_type():
    with pytest.raises(TypeError):
        make("commerce.x", flag=True)


def test_make_refuses_more_attributes_than_a_receipt_decodes():
    with pytest.raises(ValueError, match="attributes"):
        make("commerce.x", **{f"a{i}": i for i in range(33)})


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
