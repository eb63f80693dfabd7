"""The fast codec of the commerce state objects is the generic codec, only faster."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.commerce import model
from apps.commerce.fastwire import _BOOL, _BYTES, _INT, _STR, _TUPLE, _field_spec, fast_replace
from core.codec import Wire
from core.errors import DecodeError

FAST = [
    cls
    for cls in vars(model).values()
    if isinstance(cls, type) and issubclass(cls, Wire) and hasattr(cls, "_fast_names")
]


def generic_decode(cls, data):
    return Wire.decode.__func__(cls, data)


def strategy_for(spec):
    kind, optional, exact, limit, item = spec
    if kind == _INT:
        s = st.integers(0, 2**64 - 1)
    elif kind == _BOOL:
        s = st.booleans()
    elif kind == _BYTES:
        s = st.binary(min_size=exact or 0, max_size=exact if exact is not None else min(limit, 40))
    elif kind == _STR:
        s = st.text(max_size=min(limit // 4, 30))
    else:
        assert kind == _TUPLE
        s = st.lists(strategy_for(item), max_size=min(limit, 4)).map(tuple)
    return st.none() | s if optional else s


def instances(cls):
    import typing

    hints = typing.get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)
    return st.tuples(*(strategy_for(_field_spec(hints[f.name])) for f in fields)).map(
        lambda values: cls(*values)
    )


def test_every_hot_class_is_fast():
    names = {cls.__name__ for cls in FAST}
    assert {"Order", "Deal", "Listing", "Count", "Party", "Deadline", "QueueMeta"} <= names


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_fast_encoding_and_decoding_are_the_generic_ones(cls, data):
    obj = data.draw(instances(cls))
    encoded = obj.encode()
    assert encoded == Wire.encode(obj)
    assert cls.decode(encoded) == generic_decode(cls, encoded) == obj
    # Any single-byte change or truncation: both accept it (equally) or both refuse it.
    raw = bytearray(encoded)
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.booleans())
    mutated = bytes(raw[:at] if cut else raw)
    try:
        expected = generic_decode(cls, mutated)
    except DecodeError:
        with pytest.raises(DecodeError):
            cls.decode(mutated)
    else:
        assert cls.decode(mutated) == expected


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\x90", b"\xc0", b"\x91\xff", b"\x91\xca\x00\x00\x00\x00", b"\x91\x01\x00"],
)
def test_odd_inputs_are_refused_like_the_generic_codec(data):
    for cls in (model.Count, model.Counter):
        with pytest.raises(DecodeError):
            generic_decode(cls, data)
        with pytest.raises(DecodeError):
            cls.decode(data)


def test_fast_replace_is_replace():
    order = model.Order(
        *(1, b"a" * 20, b"b" * 20, 1, 1, 2, 5, 10, 10, 0, 1, 0, 0, 9, 0, 0, 0, None, 0, b"", ()),
        *(0, b"k" * 32, b"c" * 32, b"sealed", 0, 0),
    )
    assert fast_replace(order, state=3, host=b"h" * 20) == dataclasses.replace(
        order, state=3, host=b"h" * 20
    )
    assert fast_replace(model.Count(1), n=2) == model.Count(2)
