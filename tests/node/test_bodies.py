"""The batch body parsers against the reference decoders, on any bytes a client sends.

``split_msgpack_batch`` walks msgpack headers by hand (it never unpacks the items) and
``parse_json_txs`` counts separators before ``json.loads``; both take a client's bytes
as they come. On anything, each returns exactly what the reference decoder reads there,
or refuses with ``BodyError``: never another exception (which would be a 500 and a
logged fault), never items the reference would not read.
"""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.bodies import BodyError, parse_json_txs, split_msgpack_batch

MAX_ITEMS = 64
# Items as transactions are: bin of 0 to a few hundred bytes (both bin8 and bin16 sizes).
items_st = st.lists(st.binary(max_size=300), max_size=20)


def _reference_msgpack(body: bytes) -> list[bytes] | None:
    """What msgpack reads as an array of bin items and nothing after, else None."""
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return None
    if not isinstance(value, list) or not all(type(v) is bytes for v in value):
        return None
    return value


@settings(max_examples=300, deadline=None)
@given(items=items_st)
def test_a_packed_batch_splits_into_its_items(items):
    assert split_msgpack_batch(msgpack.packb(items, use_bin_type=True), MAX_ITEMS) == items


@settings(max_examples=600, deadline=None)
@given(
    items=items_st,
    cut=st.integers(0, 50),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    tail=st.binary(max_size=4),
)
def test_any_damaged_batch_is_split_as_msgpack_reads_it_or_refused(items, cut, flips, tail):
    body = bytearray(msgpack.packb(items, use_bin_type=True))
    for at, byte in flips:
        if body:
            body[at % len(body)] = byte
    body = bytes(body[: max(0, len(body) - cut)] + tail) if cut else bytes(body) + tail
    expected = _reference_msgpack(body)
    try:
        got = split_msgpack_batch(body, MAX_ITEMS)
    except BodyError as exc:
        assert exc.code in ("malformed", "too_large")
        # Refused only what msgpack would not read as a batch of bin items, or one over
        # the cap.
        assert expected is None or len(expected) > MAX_ITEMS
        return
    assert got == expected


def test_the_item_count_is_refused_from_the_header_alone():
    # An array32 header claiming four billion items, and nothing after it.
    with pytest.raises(BodyError) as refused:
        split_msgpack_batch(b"\xdd\xff\xff\xff\xff", MAX_ITEMS)
    assert refused.value.code == "too_large"
    for truncated in (b"\xdc\x00", b"\xdd\x00\x00", b"\x91\xc5\x01", b"\x91\xc4\x05ab"):
        with pytest.raises(BodyError, match="ends inside a header|ends before|runs past"):
            split_msgpack_batch(truncated, MAX_ITEMS)


@settings(max_examples=400, deadline=None)
@given(
    doc=st.one_of(
        st.builds(lambda h: {"tx": h}, st.text(max_size=40)),
        st.builds(lambda hs: {"txs": hs}, st.lists(st.text(max_size=20), max_size=8)),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    ),
    noise=st.binary(max_size=3),
)
def test_any_json_body_gives_hex_transactions_or_a_refusal(doc, noise):
    body = json.dumps(doc).encode() + noise
    try:
        raws, batch = parse_json_txs(body, MAX_ITEMS)
    except BodyError as exc:
        assert exc.code in ("malformed", "too_large")
        return
    # Accepted: it was one of the two documented shapes, each item's hex decoded.
    parsed = json.loads(body)
    hexes = parsed["txs"] if batch else [parsed["tx"]]
    assert raws == [bytes.fromhex(h) for h in hexes]
