import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.codec import Wire
from vm import OK, BlockEvents, Event, EventAttr, Receipt, encode_block_events, encode_receipt
from vm.receipts import MAX_ATTR_VALUE, MAX_ATTRS, MAX_MESSAGE, bound_message


def test_event_of_converts_values_and_keeps_order():
    e = Event.of("transfer", sender=b"\x01\xab", amount=12, note="hi")
    assert e == Event(
        "transfer",
        (EventAttr("sender", "01ab"), EventAttr("amount", "12"), EventAttr("note", "hi")),
    )
    assert e.get("amount") == "12" and e.get("missing") is None
    assert Event.decode(e.encode()) == e


def test_event_of_refuses_what_a_receipt_could_not_decode():
    with pytest.raises(ValueError, match="over"):
        Event.of("k", v="x" * (MAX_ATTR_VALUE + 1))
    with pytest.raises(ValueError, match="over"):
        Event.of("k", v="é" * (MAX_ATTR_VALUE // 2 + 1))
    with pytest.raises(ValueError, match="kind"):
        Event.of("k" * 65)
    with pytest.raises(ValueError, match="attributes"):
        Event.of("k", **{f"a{i}": 1 for i in range(MAX_ATTRS + 1)})
    with pytest.raises(TypeError, match="str, int or bytes"):
        Event.of("k", v=1.5)  # type: ignore[arg-type]  # deliberately the wrong type


def test_receipt_round_trip():
    r = Receipt(bytes(32), OK, "", 10, (Event.of("x", a=1),))
    assert r.ok
    assert Receipt.decode(r.encode()) == r
    assert not Receipt(bytes(32), "insufficient_funds", "m", 10, ()).ok


def test_bound_message_cuts_on_a_character_boundary():
    assert bound_message("short") == "short"
    cut = bound_message("é" * MAX_MESSAGE)
    assert len(cut.encode()) <= MAX_MESSAGE
    assert cut == "é" * (MAX_MESSAGE // 2)
    assert bound_message("a" + "é" * MAX_MESSAGE) == "a" + "é" * ((MAX_MESSAGE - 1) // 2)


# At most 4 UTF-8 bytes per character: 8 characters fit every bound.
texts = st.text(max_size=8)
events = st.builds(
    Event,
    texts,
    st.lists(st.builds(EventAttr, texts, texts), max_size=4).map(tuple),
)
receipts = st.builds(
    Receipt,
    st.binary(min_size=32, max_size=32),
    texts,
    texts,
    st.integers(0, 2**64 - 1),
    st.lists(events, max_size=4).map(tuple),
)


@given(receipts)
def test_fast_receipt_encoding_is_the_generic_encoding(receipt):
    assert receipt.encode() == Wire.encode(receipt)
    assert Receipt.decode(receipt.encode()) == receipt


# Past 15 items msgpack writes a longer array header: the concatenation must follow.
many_events = st.lists(events, max_size=20).map(tuple)


@given(receipts, many_events)
def test_receipt_from_encoded_events_is_the_receipts_encoding(receipt, more):
    receipt = Receipt(receipt.tx_hash, receipt.code, receipt.message, receipt.fee, more)
    encoded = [e.encode() for e in receipt.events]
    assert encode_receipt(
        *(receipt.tx_hash, receipt.code, receipt.message, receipt.fee), encoded
    ) == (receipt.encode())


@given(many_events)
def test_block_events_from_encoded_events_is_their_encoding(events_):
    assert encode_block_events([e.encode() for e in events_]) == BlockEvents(events_).encode()
