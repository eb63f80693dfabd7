"""The codec's generated fast path accepts and builds exactly what the generic path does.

For every ``Wire`` class in the project: raw values drawn from the field types (valid
ones, boundary sizes, wrong types, wrong shapes) go through the fast check and the
generic check, and the outcomes must be equal (the same object, or the same error);
encodings and mutations of them go through both decoders; every built object dumps to
the same list both ways.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import pickle
import sys
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import apps.commerce
import consensus
import core
import genesis
import node.chain
import p2p
import storage
import vm
from core.codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STR,
    UINT64_MAX,
    Len,
    MaxItems,
    MaxLen,
    Wire,
    _codec_for,
    constructor,
    replace,
)

# Imported for their Wire classes.
assert apps.commerce and consensus and core and genesis and node.chain and p2p and storage and vm


def _wire_classes() -> list[type[Wire]]:
    seen: list[type[Wire]] = []
    todo = list(Wire.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if dataclasses.is_dataclass(cls) and cls not in seen:
            seen.append(cls)
    return sorted(seen, key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = _wire_classes()
# Some sizes are drawn at their limits; keep huge limits from making huge examples.
BIG = 300

junk = st.one_of(
    st.none(),
    st.floats(allow_nan=False),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.binary(max_size=3),
    st.text(max_size=3),
)


def _split(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        hint, *meta = typing.get_args(hint)
        return hint, tuple(meta)
    return hint, ()


def _sizes(limit: int, exact: int | None = None) -> st.SearchStrategy[int]:
    if exact is not None:
        return st.sampled_from(sorted({exact, max(0, exact - 1), exact + 1}))
    small = st.integers(min_value=0, max_value=min(limit, 8))
    if limit > BIG:
        return small
    return st.one_of(small, st.sampled_from([limit, limit + 1]))


def _text_of_utf8_size(size: int) -> st.SearchStrategy[str]:
    # ASCII, two-byte and four-byte characters adding up to about ``size`` UTF-8 bytes.
    return st.sampled_from(["a", "é", "😀"]).map(lambda c: c * max(0, size // len(c.encode())))


_cache: dict[Any, st.SearchStrategy[Any]] = {}


def raw_for(hint: Any) -> st.SearchStrategy[Any]:
    """Raw (unpacked) values for a field of type ``hint``: mostly plausible, some not."""
    key = repr(hint)
    if key not in _cache:
        _cache[key] = st.deferred(lambda: st.one_of(_plausible(hint), junk))
    return _cache[key]


def _plausible(hint: Any) -> st.SearchStrategy[Any]:
    hint, meta = _split(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | raw_for(typing.Annotated[inner, *meta] if meta else inner)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.one_of(
            st.integers(min_value=0, max_value=UINT64_MAX),
            st.sampled_from([0, 1, 2, UINT64_MAX, UINT64_MAX + 1, -1]),
        )
    if hint is bytes:
        exact = next((m.n for m in meta if isinstance(m, Len)), None)
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)
        return _sizes(limit, exact).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    if hint is str:
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
        edges = [] if limit > BIG else [_text_of_utf8_size(limit), _text_of_utf8_size(limit + 1)]
        return st.one_of(st.text(max_size=8), *edges)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        sizes = st.integers(min_value=0, max_value=min(limit, 3))
        if limit <= 8:
            sizes = st.one_of(sizes, st.just(limit + 1))
        return sizes.flatmap(lambda n: st.lists(raw_for(item), min_size=n, max_size=n))
    if isinstance(hint, type) and issubclass(hint, Wire):
        return raw_object(hint)
    raise AssertionError(f"no strategy for {hint!r}")


def raw_object(cls: type[Wire]) -> st.SearchStrategy[list[Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [raw_for(hints[f.name]) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]  # every Wire is a dataclass
    exact = st.tuples(*fields).map(list)
    # Also a field too many or too few.
    return st.one_of(exact, exact.map(lambda r: r[:-1]), exact.map(lambda r: [*r, 0]))


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the error itself is part of the outcome
        return type(exc).__name__, str(exc)


def _check_raw(cls: type[Wire], raw: Any) -> None:
    codec = _codec_for(cls)
    generic = outcome(codec.check_generic, raw, cls.__name__)
    fast = outcome(codec.check, raw, cls.__name__)
    assert fast == generic
    if generic[0] == "ok":
        obj = generic[1]
        # Valid input never falls off the fast path (else it would only be slow).
        assert codec.fast_check(raw) == obj
        assert codec.dump(obj) == codec.dump_generic(obj)
        data = codec.encode(obj)
        assert data == msgpack.packb(codec.dump_generic(obj), use_bin_type=True)
        # The class's own methods are the generated ones (or its own, same bytes).
        assert obj.encode() == data
        assert outcome(codec.decode, data) == outcome(codec.decode_generic, data)
        assert outcome(cls.decode, data) == outcome(codec.decode_generic, data)
    data = msgpack.packb(raw, use_bin_type=True) if _packable(raw) else None
    if data is not None:
        assert outcome(codec.decode, data) == outcome(codec.decode_generic, data)
        assert outcome(cls.decode, data) == outcome(codec.decode_generic, data)


def _packable(raw: Any) -> bool:
    try:
        msgpack.packb(raw, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_check_matches_generic(cls, data):
    _check_raw(cls, data.draw(st.one_of(raw_object(cls), junk)))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_decode_matches_generic_on_mutated_bytes(cls, data):
    codec = _codec_for(cls)
    raw = data.draw(raw_object(cls))
    if not _packable(raw):
        return
    encoded = bytearray(msgpack.packb(raw, use_bin_type=True))
    mutation = data.draw(st.sampled_from(["flip", "cut", "append", "insert"]))
    at = data.draw(st.integers(min_value=0, max_value=max(0, len(encoded) - 1)))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    if mutation == "flip" and encoded:
        encoded[at] ^= byte or 1
    elif mutation == "cut":
        del encoded[at:]
    elif mutation == "append":
        encoded.append(byte)
    else:
        encoded.insert(at, byte)
    blob = bytes(encoded)
    assert outcome(codec.decode, blob) == outcome(codec.decode_generic, blob)
    assert outcome(cls.decode, blob) == outcome(codec.decode_generic, blob)


def test_every_wire_class_is_covered():
    names = {c.__name__ for c in CLASSES}
    assert {"SignedTx", "TxBody", "Block", "BlockHeader", "Vote", "Commit", "Transfer"} <= names
    assert len(CLASSES) > 40


def test_non_bytes_input_takes_the_generic_path():
    codec = _codec_for(core.SignedTx)
    tx = core.SignedTx("c", bytes(32), b"body", bytes(64))
    data = tx.encode()
    assert codec.decode(bytearray(data)) == tx
    assert codec.decode(memoryview(data)) == tx
    assert outcome(codec.decode, "text") == outcome(codec.decode_generic, "text")


def test_non_canonical_integer_falls_back_and_is_refused():
    # 5 written as uint16: the fast path unpacks it fine, the re-encoding check refuses it.
    data = b"\x95" + b"\xcd\x00\x05" + b"\x01\x02\xa8transfer\xc4\x00"
    assert outcome(core.TxBody.decode, data) == outcome(
        _codec_for(core.TxBody).decode_generic, data
    )
    with pytest.raises(core.DecodeError, match="non-canonical"):
        core.TxBody.decode(data)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_constructor_builds_what_the_class_builds(cls, data):
    codec = _codec_for(cls)
    raw = data.draw(raw_object(cls))
    try:
        obj = codec.check_generic(raw, cls.__name__)
    except core.DecodeError:
        return
    values = [getattr(obj, n) for n in codec.names]
    made = constructor(cls)(*values)
    assert type(made) is cls
    assert made == obj and hash(made) == hash(obj) and repr(made) == repr(obj)
    # Built as another class and switched to ``cls``: nothing of that may show.
    assert sys.getsizeof(made) == sys.getsizeof(obj)
    assert gc.is_tracked(made) == gc.is_tracked(obj)
    assert copy.copy(made) == obj and copy.deepcopy(made) == obj
    # Pickled by name: not a class that ``dataclass(slots=True)`` replaced.
    if getattr(sys.modules[cls.__module__], cls.__qualname__, None) is cls:
        assert pickle.loads(pickle.dumps(made)) == obj
    for name, value in zip(codec.names, values, strict=True):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, name, value)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_replace_builds_what_dataclasses_replace_builds(cls, data):
    codec = _codec_for(cls)
    objs = []
    for _ in range(2):
        try:
            objs.append(codec.check_generic(data.draw(raw_object(cls)), cls.__name__))
        except core.DecodeError:
            return
    old, other = objs
    if not codec.names:
        assert replace(old) == old
        return
    # Any set of fields changed, to another object's values (valid for the class).
    names = data.draw(st.sets(st.sampled_from(codec.names)))
    changes = {n: getattr(other, n) for n in names}
    before = repr(old)
    try:
        expected = dataclasses.replace(old, **changes)
    except Exception as exc:
        # A class's own check (``__post_init__``) refusing the mix: refused alike.
        with pytest.raises(type(exc)):
            replace(old, **changes)
        return
    made = replace(old, **changes)
    assert type(made) is cls
    assert made == expected and hash(made) == hash(expected) and repr(made) == repr(expected)
    assert repr(old) == before  # the original is left as it was
    for name in codec.names:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, name, getattr(old, name))
    with pytest.raises(TypeError, match="no field"):
        replace(old, no_such_field=1)


def test_constructor_keeps_post_init_checks():
    # InternalNode validates its tag in __post_init__: the class itself is returned.
    assert constructor(storage.state_tree.InternalNode) is storage.state_tree.InternalNode
    with pytest.raises(core.DecodeError):
        constructor(storage.state_tree.InternalNode)(7, bytes(40), bytes(40))
    assert constructor(int) is int


@dataclasses.dataclass(frozen=True, slots=True)
class _Parent(Wire):
    a: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Child(_Parent):
    b: int
    c: bytes


def test_constructor_of_a_class_under_a_frozen_parent():
    # The parent's frozen ``__setattr__`` would refuse plain writes: the constructor
    # sets the slots another way, with the same result.
    made = constructor(_Child)(1, 2, b"x")
    assert type(made) is _Child and made == _Child(1, 2, b"x")
    assert hash(made) == hash(_Child(1, 2, b"x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.a = 5  # type: ignore[misc]  # the point: frozen


def test_a_class_with_many_checked_fields_still_gets_a_decoder():
    # Each field checked by a helper (a tuple) was one more nested block in the
    # generated decode: 120 of them passed Python's indentation limit and the class
    # could not be defined at all.
    fields = [(f"f{i}", tuple[int, ...]) for i in range(120)]
    big = dataclasses.make_dataclass("Big", fields, bases=(Wire,), frozen=True, slots=True)
    obj = big(*[(i, i + 1) for i in range(120)])
    assert big.decode(obj.encode()) == obj
    with pytest.raises(core.DecodeError):
        big.decode(obj.encode()[:-1])


_P = typing.TypeVar("_P")


@dataclasses.dataclass(frozen=True, slots=True)
class _Generic(Wire, typing.Generic[_P]):
    a: int
    b: bytes


def test_a_generic_class_gets_a_codec():
    # Making the constructor's builder class from every base ran ``Generic``'s
    # ``__init_subclass__``, which refuses a plain subclass: the class had no codec.
    obj = _Generic(1, b"x")
    assert _Generic.decode(obj.encode()) == obj
    made = constructor(_Generic)(1, b"x")
    assert type(made) is _Generic and made == obj and hash(made) == hash(obj)


class _Registry:
    """A base that lists its subclasses, as a registry of message types would."""

    __slots__ = ()
    listed: typing.ClassVar[list[str]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _Registry.listed.append(cls.__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Listed(Wire, _Registry):
    a: int
    b: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Kind(Wire):
    """A frozen parent with no fields of its own."""


@dataclasses.dataclass(frozen=True, slots=True)
class _OfKind(_Kind):
    a: int
    b: int


def test_building_records_makes_no_class_a_base_sees():
    # The builder class is the constructor's own: a base's ``__init_subclass__`` must
    # not list it, and a class under a frozen parent (which gets none) makes none, that
    # would show among the parent's subclasses as one more dataclass (the classes
    # tests walk as every Wire class).
    made = constructor(_Listed)(1, 2)
    assert made == _Listed(1, 2) and _Listed.decode(made.encode()) == made
    assert set(_Registry.listed) == {"_Listed"}
    assert constructor(_OfKind)(1, 2) == _OfKind(1, 2)
    assert {c.__name__ for c in _Kind.__subclasses__()} == {"_OfKind"}


def test_building_a_class_again_makes_no_more_classes():
    # ``constructor`` asked again and again for one class (every codec asks, and
    # modules once more) makes its builder once: no class per call piles up.
    before = len(Wire.__subclasses__())
    makers = [constructor(_Listed) for _ in range(50)]
    assert all(m(1, 2) == _Listed(1, 2) for m in makers)
    assert len(Wire.__subclasses__()) - before <= 1
