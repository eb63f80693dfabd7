"""``Wire.fits`` shows storability without encoding, and is never wrong when it says so.

``fits(max_size, since)`` lets a writer skip ``checked_encoding``; it may say False for a
storable object (the writer then encodes), never True for one ``checked_encoding``
refuses. Its size half rests on ``max_encoded_size``, computed from the field bounds:
the tests below build, for every ``Wire`` class, the largest object those bounds allow
and compare.
"""

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import DecodeError
from core.codec import (
    ABSOLUTE_MAX_ENCODED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STR,
    UINT64_MAX,
    Len,
    MaxItems,
    MaxLen,
    Wire,
    constructor,
    max_encoded_size,
)
from tests.core.test_codec_fast import CLASSES, raw_for

# Classes whose largest object is built here: every class whose largest encoding a
# decoder could accept (items are shared, so memory is about the encoding's size).
BUILDABLE = 2 * ABSOLUTE_MAX_ENCODED
# Strings and bytes are drawn at their bound up to this size (past it, a state record
# could not be stored anyway).
AT_LIMIT = 1024 * 1024


def _split(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        hint, *meta = typing.get_args(hint)
        return hint, tuple(meta)
    return hint, ()


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (types.UnionType, typing.Union)


def _inner(hint: Any, meta: tuple[Any, ...]) -> Any:
    (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.Annotated[inner, *meta] if meta else inner


def _bytes_len(meta: tuple[Any, ...]) -> tuple[int | None, int]:
    exact = next((m.n for m in meta if isinstance(m, Len)), None)
    return exact, next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)


def _hints(cls: type[Wire]) -> list[Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [hints[f.name] for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # every Wire is a dataclass


def largest_raw(hint: Any) -> Any:
    """The unpacked form of the longest encoding a field of type ``hint`` may have."""
    hint, meta = _split(hint)
    if _is_optional(hint):
        return largest_raw(_inner(hint, meta))
    if hint is bool:
        return True
    if hint is int:
        return UINT64_MAX
    if hint is bytes:
        exact, limit = _bytes_len(meta)
        return b"x" * (limit if exact is None else min(exact, limit))
    if hint is str:
        return "x" * next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
    if typing.get_origin(hint) is tuple:
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        return [largest_raw(typing.get_args(hint)[0])] * limit
    if isinstance(hint, type) and issubclass(hint, Wire):
        return [largest_raw(h) for h in _hints(hint)]
    raise AssertionError(f"no largest value for {hint!r}")


def valid_value(hint: Any) -> st.SearchStrategy[Any]:
    """Field values (as an object holds them) that decoding could have produced."""
    hint, meta = _split(hint)
    if _is_optional(hint):
        return st.none() | valid_value(_inner(hint, meta))
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(min_value=0, max_value=UINT64_MAX)
    if hint is bytes:
        exact, limit = _bytes_len(meta)
        if exact is not None:
            return st.binary(min_size=exact, max_size=exact)
        small = st.binary(max_size=min(limit, 40))
        return small | st.just(b"x" * limit) if limit <= AT_LIMIT else small
    if hint is str:
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
        text = st.text(max_size=8).filter(lambda s: len(s.encode()) <= limit)
        return text | st.just("é" * (limit // 2)) if limit <= AT_LIMIT else text
    if typing.get_origin(hint) is tuple:
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        item = valid_value(typing.get_args(hint)[0])
        return st.lists(item, max_size=min(limit, 3)).map(tuple)
    if isinstance(hint, type) and issubclass(hint, Wire):
        return valid_object(hint)
    raise AssertionError(f"no strategy for {hint!r}")


def valid_object(cls: type[Wire]) -> st.SearchStrategy[Any]:
    return st.tuples(*(valid_value(h) for h in _hints(cls))).map(lambda vs: cls(*vs))


class _Small(enum.IntEnum):
    ONE = 1


def bad_value(hint: Any) -> st.SearchStrategy[Any]:
    """What a handler might wrongly put in a field: out of range, over a bound, a wrong
    type (a bool or a float for an int, a list for a tuple), unencodable text."""
    return st.one_of(
        raw_for(hint),
        st.sampled_from([True, 1.0, -1, UINT64_MAX + 1, _Small.ONE, "\ud800", None, [1], (1,)]),
        valid_value(hint).map(lambda v: list(v) if type(v) is tuple else v),
    )


def _without_own_checks(cls: type[Wire]) -> bool:
    """No ``__post_init__`` in the class or any class nested in its fields."""
    if hasattr(cls, "__post_init__"):
        return False
    todo = list(_hints(cls))
    while todo:
        hint, meta = _split(todo.pop())
        if _is_optional(hint):
            todo.append(_inner(hint, meta))
        elif typing.get_origin(hint) is tuple:
            todo.append(typing.get_args(hint)[0])
        elif isinstance(hint, type) and issubclass(hint, Wire) and not _without_own_checks(hint):
            return False
    return True


def storable(obj: Wire, max_size: int) -> bool:
    try:
        data = obj.checked_encoding(max_size)
    except DecodeError:
        return False
    assert type(obj).decode(data) == obj
    return True


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_max_encoded_size_is_the_largest_encoding_the_field_bounds_allow(cls):
    bound = max_encoded_size(cls)
    if bound > BUILDABLE:
        # Larger than anything decode accepts: never shown to fit, so not built.
        assert bound > min(cls.MAX_ENCODED, ABSOLUTE_MAX_ENCODED)
        return
    largest = [largest_raw(h) for h in _hints(cls)]
    assert len(msgpack.packb(largest, use_bin_type=True)) == bound


def test_max_encoded_size_follows_the_declared_bounds():
    @dataclass(frozen=True, slots=True)
    class Narrow(Wire):
        blob: Annotated[bytes, MaxLen(10)]
        n: int

    @dataclass(frozen=True, slots=True)
    class Wide(Wire):
        blob: Annotated[bytes, MaxLen(300)]
        n: int
        items: Annotated[tuple[Narrow, ...], MaxItems(20)]

    # array header 1 + bin8 header 2 + 10 + uint64 9
    assert max_encoded_size(Narrow) == 22
    # 1 + (3 + 300) + 9 + (3 + 20 * 22): bin16 and array16 headers past their short forms
    assert max_encoded_size(Wide) == 756
    narrow = Narrow(b"x" * 10, UINT64_MAX)
    assert len(Wide(b"x" * 300, UINT64_MAX, (narrow,) * 20).encode()) == 756


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fits_never_accepts_what_checked_encoding_refuses(cls, data):
    if not _without_own_checks(cls):
        # Only building runs a class's own check: such objects are never shown to fit.
        assert not object.__new__(cls).fits()
        return
    good = data.draw(valid_object(cls))
    bound = max_encoded_size(cls)
    max_size = data.draw(st.sampled_from([bound, bound - 1, 2**18, 64 * 1024 * 1024]))
    # A valid object is shown to fit whenever its bounds allow (else it would only be slow).
    assert good.fits(max_size) == (bound <= min(max_size, cls.MAX_ENCODED, ABSOLUTE_MAX_ENCODED))
    assert good.fits(max_size, good) == good.fits(max_size)
    if good.fits(max_size):
        assert storable(good, max_size)
    # One field changed to something a handler might wrongly compute.
    hints = _hints(cls)
    values = [getattr(good, f.name) for f in dataclasses.fields(cls)]
    if values:
        i = data.draw(st.integers(min_value=0, max_value=len(values) - 1))
        values[i] = data.draw(bad_value(hints[i]))
    bad = constructor(cls)(*values)
    for since in (None, good):
        if bad.fits(max_size, since):
            assert storable(bad, max_size)


def test_fits_looks_again_at_every_field_that_changed():
    @dataclass(frozen=True, slots=True)
    class Tally(Wire):
        total: int
        flag: bool
        items: Annotated[tuple[int, ...], MaxItems(2)]

    good = Tally(5, False, (1, 2))
    assert good.fits() and good.fits(since=good)
    for bad in (
        Tally(2**64, False, (1, 2)),
        Tally(-1, False, (1, 2)),
        Tally(True, False, (1, 2)),
        Tally(5, 1, (1, 2)),
        Tally(5, False, (1, 2, 3)),
        Tally(5, False, (1, -2)),
        Tally(5, False, [1, 2]),
    ):
        assert not bad.fits()
        assert not bad.fits(since=good)

    # Another class, or None, is no reference: every field is looked at.
    @dataclass(frozen=True, slots=True)
    class Other(Wire):
        total: int

    assert not Tally(2**64, False, ()).fits(since=Other(2**64))
    # Fields that hold the very object the reference holds are taken as it was taken.
    shared = Tally(7, True, good.items)
    assert shared.fits(since=good)


def test_fits_needs_the_bound_within_max_encoded_and_max_size():
    @dataclass(frozen=True, slots=True)
    class Tight(Wire):
        blob: Annotated[bytes, MaxLen(100)]

        MAX_ENCODED = 40

    @dataclass(frozen=True, slots=True)
    class Loose(Wire):
        blob: Annotated[bytes, MaxLen(100)]

    # Tight's field bound (103 bytes) exceeds its MAX_ENCODED: the bound shows nothing.
    assert not Tight(b"x").fits()
    assert storable(Tight(b"x" * 30), 2**20)
    assert not storable(Tight(b"x" * 60), 2**20)
    assert Loose(b"x").fits(104) and Loose(b"x").fits(103)
    assert not Loose(b"x").fits(102)


def test_a_subclass_gets_its_own_generated_methods():
    @dataclass(frozen=True, slots=True)
    class Base(Wire):
        n: int

    @dataclass(frozen=True, slots=True)
    class Wider(Base):
        blob: Annotated[bytes, MaxLen(4)]

    assert Base(1).fits()
    assert not Wider(1, b"x" * 5).fits()
    assert Wider(1, b"x").fits()
    assert max_encoded_size(Wider) == 1 + 9 + 2 + 4
