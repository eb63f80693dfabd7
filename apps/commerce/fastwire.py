"""Fast encode/decode/replace for the flat state objects on the order path.

Block execution decodes and encodes commerce objects (orders, deals, counters,
index entries) several times per transaction; the generic codec walks them
field by field through per-field functions. ``fast_wire`` gives a flat ``Wire``
class (fields of int, bool, bounded bytes or str, ``X | None`` of those, and
tuples of them) an ``encode`` that packs its field tuple directly and a
``decode`` that checks the unpacked array in one tight loop, falling back to
the generic codec for anything unusual so that errors stay precise. The bytes
produced and the inputs accepted are exactly the generic codec's
(tests/apps/commerce/test_fastwire.py checks it, as tests/vm does for Account).

``fast_replace(obj, **changes)`` is ``dataclasses.replace`` without its
per-call field introspection.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from core.codec import ABSOLUTE_MAX_ENCODED, DEFAULT_MAX_BYTES, DEFAULT_MAX_STR, Len, MaxLen, Wire
from core.codec import MaxItems as _MaxItems

W = TypeVar("W", bound=Wire)

_packb = msgpack.packb
_unpackb = msgpack.unpackb
_generic_decode = Wire.decode.__func__  # type: ignore[attr-defined]  # a classmethod's function
_UINT64_MAX = 2**64 - 1

# Field kinds of the fast checker.
_INT, _BOOL, _BYTES, _STR, _TUPLE = range(5)


def _field_spec(hint: Any) -> tuple[int, bool, int | None, int, Any] | None:
    """(kind, optional, exact_len, max_len, item_spec) or None if not flat."""
    meta: tuple[Any, ...] = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        meta = tuple(rest)
    optional = False
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None
        optional = True
        hint = args[0]
        if typing.get_origin(hint) is typing.Annotated:
            hint, *rest = typing.get_args(hint)
            meta = meta + tuple(rest)
    exact = next((m.n for m in meta if isinstance(m, Len)), None)
    if hint is bool:
        return (_BOOL, optional, None, 0, None)
    if hint is int:
        return (_INT, optional, None, 0, None)
    if hint is bytes:
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)
        return (_BYTES, optional, exact, limit, None)
    if hint is str:
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
        return (_STR, optional, None, limit, None)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            return None
        item = _field_spec(args[0])
        if item is None or item[0] == _TUPLE or item[1]:
            return None
        limit = next((m.n for m in meta if isinstance(m, _MaxItems)), 1024)
        return (_TUPLE, optional, None, limit, item)
    return None


def _ok(spec: tuple[int, bool, int | None, int, Any], v: Any) -> bool:
    kind, optional, exact, limit, item = spec
    if v is None:
        return optional
    t = type(v)
    if kind == _INT:
        return t is int and 0 <= v <= _UINT64_MAX
    if kind == _BYTES:
        return t is bytes and (len(v) == exact if exact is not None else True) and len(v) <= limit
    if kind == _STR:
        return t is str and (len(v) * 4 <= limit or len(v.encode()) <= limit)
    if kind == _BOOL:
        return t is bool
    return t is list and len(v) <= limit and all(_ok(item, x) for x in v)


def fast_wire(cls: type[W]) -> type[W]:
    """Class decorator: fast ``encode`` and ``decode`` for a flat Wire dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # every Wire is a dataclass
    names = tuple(f.name for f in fields)
    specs = [_field_spec(hints[n]) for n in names]
    if any(s is None for s in specs):
        raise TypeError(f"{cls.__name__} is not flat; fast_wire does not apply")
    n_fields = len(names)
    getter = operator.attrgetter(*names)
    max_encoded = min(cls.MAX_ENCODED, ABSOLUTE_MAX_ENCODED)
    specs_t = tuple(specs)
    # The common case (no None in an optional field) is checked mostly in C: the
    # tuple of field types against ``sig``, then the bounds of each kind of field.
    base = {_INT: int, _BOOL: bool, _BYTES: bytes, _STR: str, _TUPLE: list}
    sig = tuple(base[s[0]] for s in specs_t)  # type: ignore[index]  # specs are tuples by construction
    int_idx = tuple(i for i, s in enumerate(specs_t) if s[0] == _INT)  # type: ignore[index]  # specs are tuples by construction
    exact_idx = tuple(
        i
        for i, s in enumerate(specs_t)
        if s[0] == _BYTES and s[2] is not None  # type: ignore[index]  # specs are tuples by construction
    )
    exact_lens = tuple(specs_t[i][2] for i in exact_idx)  # type: ignore[index]  # specs are tuples by construction
    bounded = tuple(
        (i, s[3])  # type: ignore[index]  # specs are tuples by construction
        for i, s in enumerate(specs_t)
        if (s[0] == _BYTES and s[2] is None) or s[0] == _STR  # type: ignore[index]  # specs are tuples by construction
    )
    tuple_specs = tuple((i, s) for i, s in enumerate(specs_t) if s[0] == _TUPLE)  # type: ignore[index]  # specs are tuples by construction
    tuple_fields = tuple(i for i, _ in tuple_specs)
    pick_ints = _picker(int_idx)
    pick_exact = _picker(exact_idx)

    def encode(self: W) -> bytes:
        values = getter(self)
        return _packb(values if n_fields > 1 else [values])

    def check(raw: list[Any]) -> bool:
        if tuple(map(type, raw)) != sig:
            # A None in an optional field, or a wrong type: field by field.
            return all(_ok(spec, v) for spec, v in zip(specs_t, raw, strict=True))  # type: ignore[arg-type]  # specs are tuples by construction
        if int_idx and min(pick_ints(raw)) < 0:
            return False
        if exact_idx and tuple(map(len, pick_exact(raw))) != exact_lens:
            return False
        for i, limit in bounded:
            v = raw[i]
            if len(v) > limit or (
                type(v) is str and len(v) * 4 > limit and len(v.encode()) > limit
            ):
                return False
        return all(_ok(spec, raw[i]) for i, spec in tuple_specs)  # type: ignore[arg-type]  # specs are tuples by construction

    def decode(klass: type[W], data: bytes) -> W:
        if type(data) is bytes and len(data) <= max_encoded:
            try:
                raw = _unpackb(data)
            except Exception:
                raw = None
            if type(raw) is list and len(raw) == n_fields and check(raw) and _packb(raw) == data:
                for i in tuple_fields:
                    if raw[i] is not None:
                        raw[i] = tuple(raw[i])
                return klass(*raw)
        # Anything unusual takes the generic path, which raises the precise error.
        return _generic_decode(klass, data)  # type: ignore[no-any-return]  # generic decode returns the class

    cls.encode = encode  # type: ignore[method-assign]  # fast paths installed on the class
    cls.decode = classmethod(decode)  # type: ignore[assignment, method-assign]  # fast paths installed on the class
    cls._fast_names = names  # type: ignore[attr-defined]  # fast paths installed on the class
    cls._fast_getter = getter  # type: ignore[attr-defined]  # fast paths installed on the class
    return cls


def _picker(indexes: tuple[int, ...]) -> Callable[[list[Any]], tuple[Any, ...]]:
    if len(indexes) == 1:
        only = indexes[0]
        return lambda raw: (raw[only],)
    if not indexes:
        return lambda raw: ()
    return operator.itemgetter(*indexes)  # type: ignore[return-value]  # generic decode returns the class


def fast_replace(obj: W, **changes: Any) -> W:
    """A copy of ``obj`` with ``changes`` (for ``fast_wire`` classes)."""
    cls = type(obj)
    names = cls._fast_names  # type: ignore[attr-defined]  # fast paths installed on the class
    values = list(cls._fast_getter(obj)) if len(names) > 1 else [cls._fast_getter(obj)]  # type: ignore[attr-defined]  # fast paths installed on the class
    index = _INDEX.get(cls)
    if index is None:
        index = _INDEX[cls] = {n: i for i, n in enumerate(names)}
    for name, value in changes.items():
        values[index[name]] = value
    return cls(*values)


_INDEX: dict[type, dict[str, int]] = {}
