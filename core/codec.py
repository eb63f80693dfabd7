"""The canonical codec: frozen dataclasses as fixed-order msgpack arrays.

Every wire and state object has exactly one encoding. ``decode`` accepts only
that encoding: exact field count, exact types, bounded sizes, no maps, no
floats, no extension types, no trailing bytes, and the bytes must re-encode to
themselves (this rejects non-minimal integer and length headers).

Field types are declared with annotations::

    @dataclass(frozen=True, slots=True)
    class Transfer(Wire):
        to: Annotated[bytes, Len(20)]
        amount: int                      # unsigned, < 2**64
        memo: Annotated[str, MaxLen(64)]

Supported: ``int`` (uint64), ``bool``, ``bytes`` and ``str`` (bounded),
nested ``Wire`` classes, ``tuple[X, ...]`` (bounded by ``MaxItems``) and
``X | None``.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import sys
import textwrap
import threading
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import msgpack

from core.errors import DecodeError, Invalid

UINT64_MAX = 2**64 - 1
DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_STR = 1024
DEFAULT_MAX_ITEMS = 1024
# Hard ceiling for any single decode call; classes may set a lower MAX_ENCODED.
ABSOLUTE_MAX_ENCODED = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Len:
    """Exact length of a ``bytes`` field."""

    n: int


@dataclass(frozen=True, slots=True)
class MaxLen:
    """Maximum length of a ``bytes`` field or of a ``str`` field in UTF-8 bytes."""

    n: int


@dataclass(frozen=True, slots=True)
class MaxItems:
    """Maximum number of items of a ``tuple[X, ...]`` field."""

    n: int


T = TypeVar("T")
W = TypeVar("W", bound="Wire")
_Raw = Any
_Check = Callable[[_Raw, str], Any]
_Dump = Callable[[Any], _Raw]


class Wire:
    """Base for every wire and state object. Subclasses are frozen dataclasses."""

    __slots__ = ()
    # Upper bound on the encoded size accepted by ``decode``.
    MAX_ENCODED: ClassVar[int] = 1024 * 1024
    # True for a state record whose one writer checks everything decoding would (see
    # vm's ``Overlay.check_writes``); it is then not checked again.
    WRITE_CHECKED: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Building a class's codec puts its generated methods on the class itself (no
        # dispatch per call). Until then each is this base's, set on the class so that a
        # subclass never inherits its parent's generated ones.
        for name in _GENERATED_METHODS:
            if name not in cls.__dict__:
                setattr(cls, name, Wire.__dict__[name])

    def encode(self) -> bytes:
        return _codec_for(type(self)).encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        obj: Self = _codec_for(cls).decode(data)
        return obj

    def checked_encoding(self, max_size: int = ABSOLUTE_MAX_ENCODED) -> bytes:
        """The encoding, checked as ``decode`` checks it: integers in u64, sizes and item
        counts within their bounds, ``MAX_ENCODED``, and at most ``max_size`` bytes
        (checked first: a huge value is refused before the cost of decoding it).
        ``encode`` alone checks none of it (it trusts its caller); code that stores what
        a transaction built calls this, so a value that could not be read back fails
        there, not on the next read. Messages are the project's own (they end up in
        receipts, which are consensus data), never a library's."""
        cls = type(self)
        codec = _codec_for(cls)
        try:
            fields = codec.dump(self)
            raw = _packb(fields)
        except (OverflowError, ValueError, TypeError) as exc:
            raise DecodeError(f"{cls.__name__} holds a value outside its encoding's range") from exc
        if len(raw) > max_size:
            raise DecodeError(f"{cls.__name__} is {len(raw)} bytes encoded, at most {max_size}")
        # The dumped fields are what decoding checks once it has unpacked: checking them
        # as they are spares an unpack and a re-encoding per write (block execution's
        # hot path). Anything the fast check refuses takes the whole decode, which has
        # the last word and the precise error.
        if len(raw) <= codec.max_encoded:
            try:
                checked = codec.fast_check(fields)
            except Exception:
                checked = _FAIL
            if checked is not _FAIL:
                return raw
        cls.decode(raw)
        return raw

    def fits(self, max_size: int = ABSOLUTE_MAX_ENCODED, since: Wire | None = None) -> bool:
        """True when ``checked_encoding(max_size)`` is sure to succeed, found without
        encoding: every field holds a value of its declared type within its bounds, and
        the largest encoding the field bounds allow (``max_encoded_size``) is within
        ``MAX_ENCODED`` and ``max_size``. False means "not shown", never "invalid": the
        caller then runs ``checked_encoding``, which decides and names the error.

        ``since``, if of this very class, is an object that ``checked_encoding(max_size)``
        accepted (one this one was made from): fields that still hold the very object
        ``since`` holds there are taken as accepted, not looked at again (a record that
        every transaction rewrites mostly changes a field or two)."""
        return _codec_for(type(self)).fits(self, max_size, since)

    def to_raw(self) -> list[Any]:
        """The msgpack-ready list form (used to embed objects in other encodings)."""
        return _codec_for(type(self)).dump(self)

    @classmethod
    def from_raw(cls, raw: Any) -> Self:
        """Check and build from an already unpacked list form."""
        obj: Self = _codec_for(cls).check(raw, cls.__name__)
        return obj


class _Codec:
    __slots__ = (
        "cls",
        "names",
        "dumps",
        "checks",
        "max_encoded",
        "limits",
        "hints",
        "index",
        "get",
        "make",
        "copy",
        "dump",
        "encode",
        "decode",
        "fast_check",
        "valid",
        "fits",
        "bound",
    )

    def __init__(self, cls: type[Wire]) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # every Wire is a dataclass
        self.names = tuple(f.name for f in fields)
        pairs = [_compile(hints[f.name]) for f in fields]
        self.dumps = tuple(p[0] for p in pairs)
        self.checks = tuple(p[1] for p in pairs)
        self.max_encoded = min(cls.MAX_ENCODED, ABSOLUTE_MAX_ENCODED)
        # The largest encoding the field bounds allow. Over MAX_ENCODED the bound shows
        # nothing (decode may refuse a valid-looking object), so ``fits`` is never True.
        self.bound = _max_size(hints, self.names)
        fits_limit = self.bound if self.bound <= self.max_encoded else sys.maxsize
        # Straight-line code for this class (see ``_Generated``): same results as the
        # generic field-by-field path, several times faster.
        self.hints = tuple(hints[n] for n in self.names)
        # For ``replace``: every field at once (a tuple, also for one field), by name.
        self.index = {n: i for i, n in enumerate(self.names)}
        getter = operator.attrgetter(*self.names) if self.names else (lambda obj: ())
        self.get: Callable[[Any], tuple[Any, ...]] = (
            (lambda obj: (getter(obj),)) if len(self.names) == 1 else getter
        )
        self.make: Callable[..., Any] = constructor(cls)
        # For ``replace`` too: a copy as the class's mutable twin, or None without one.
        self.copy: Callable[[Any], Any] | None = _twin_copier(cls)
        gen = _Generated(cls, self.names, list(self.hints), fits_limit, self.decode_generic)
        self.dump: Callable[[Wire], list[Any]] = gen.dump
        self.encode: Callable[[Wire], bytes] = gen.encode
        self.decode: Callable[[Any], Any] = gen.decode
        self.fast_check: Callable[[Any], Any] = gen.check
        self.valid: Callable[[Any], bool] = gen.valid
        self.fits: Callable[[Any, int, Any], bool] = gen.fits
        # The class's own methods from now on: a call goes straight to generated code.
        _install(cls, "encode", gen.encode)
        _install(cls, "decode", staticmethod(gen.decode))
        _install(cls, "fits", gen.fits)

    def dump_generic(self, obj: Wire) -> list[Any]:
        return [d(getattr(obj, n)) for n, d in zip(self.names, self.dumps, strict=True)]

    def check(self, raw: Any, where: str) -> Any:
        try:
            obj = self.fast_check(raw)
        except Exception:
            obj = _FAIL
        return self.check_generic(raw, where) if obj is _FAIL else obj

    def check_generic(self, raw: Any, where: str) -> Any:
        if type(raw) is not list:
            raise DecodeError(f"{where}: expected array, got {type(raw).__name__}")
        if len(raw) != len(self.names):
            raise DecodeError(f"{where}: expected {len(self.names)} fields, got {len(raw)}")
        values = [c(v, n) for c, v, n in zip(self.checks, raw, self.names, strict=True)]
        try:
            return self.cls(*values)
        except DecodeError:
            raise
        except Invalid as exc:
            # A class's own check (``__post_init__``) may raise its own kind of Invalid
            # (a genesis validator's name, say); to a decoder it is malformed input, and
            # callers of ``decode`` catch DecodeError (a peer's frame, a client's body).
            raise DecodeError(f"{where}: {exc.message}") from exc

    def decode_generic(self, data: bytes) -> Any:
        if type(data) is not bytes:
            if isinstance(data, bytearray | memoryview):
                data = bytes(data)
            else:
                raise DecodeError(f"expected bytes, got {type(data).__name__}")
        if len(data) > self.max_encoded:
            raise DecodeError(
                f"{self.cls.__name__}: encoding too large: "
                f"max {self.max_encoded} bytes, got {len(data)}"
            )
        raw = unpack_raw(data)
        obj = self.check_generic(raw, self.cls.__name__)
        if msgpack.packb(raw, use_bin_type=True) != data:
            raise DecodeError(f"{self.cls.__name__}: non-canonical encoding")
        return obj


# "Not accepted by the fast path": the generic check decides (and names the error).
_FAIL: Any = object()


class _Unusual(Exception):
    """Raised inside a generated ``decode`` to hand the input to the generic decode."""


# With the default options maps, floats and extension types come out as dicts, floats
# and ExtType objects, which no fast check accepts: the generic path refuses them.
_unpackb = msgpack.unpackb
# One reusable Packer per thread: ``msgpack.packb`` builds a new Packer (and its buffer)
# on every call, which costs more than packing a small object.
_packers = threading.local()


def _packb(raw: Any) -> bytes:
    try:
        pack = _packers.pack
    except AttributeError:
        pack = _new_packer()
    out: bytes = pack(raw)
    return out


def _new_packer() -> Callable[[Any], bytes]:
    pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
    _packers.pack = pack
    return pack


def _split_meta(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        return hint, tuple(rest)
    return hint, ()


def constructor(cls: type[T]) -> Callable[..., T]:
    """A function building ``cls`` from all its fields, positionally, like ``cls(...)``.

    A frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``. For a slotted one without ``__post_init__`` this
    builds the object as an instance of a mutable twin of ``cls`` (the base its
    layout comes from, the same slots: the same memory layout), stores the fields
    as plain attribute writes, which the interpreter specialises to a slot store,
    then makes the object a ``cls``: three to four times as fast for a record of
    many fields, with the same result (equal, same hash, ``type(o) is cls``, still
    frozen). Where the twin is not possible (a base that is itself a frozen
    dataclass) each slot is set through its descriptor. Anything else gets ``cls``
    itself. For hot paths that build many small objects (decoding, execution).
    """
    names = _slot_fields(cls)
    if names is None:
        return cls
    args = ", ".join(f"v{i}" for i in range(len(names)))
    twin = _mutable_twin(cls, names)
    if twin is not None:
        ns: dict[str, Any] = {"NEW": object.__new__, "TWIN": twin, "CLS": cls}
        body = "".join(f"    o.{n} = v{i}\n" for i, n in enumerate(names))
        src = f"def make({args}):\n    o = NEW(TWIN)\n{body}    o.__class__ = CLS\n    return o\n"
    else:
        ns = {"NEW": object.__new__, "CLS": cls}
        body = "".join(f"    S{i}(o, v{i})\n" for i in range(len(names)))
        for i, n in enumerate(names):
            ns[f"S{i}"] = getattr(cls, n).__set__  # a slot's descriptor (``_slot_fields``)
        src = f"def make({args}):\n    o = NEW(CLS)\n{body}    return o\n"
    exec(src, ns)  # from field names only
    make: Callable[..., T] = ns["make"]
    return make


def _slot_fields(cls: type) -> list[str] | None:
    """``cls``'s field names when ``constructor`` may build it without its ``__init__``:
    a dataclass without ``__post_init__`` whose fields all go through ``__init__`` and
    sit in slots; else None (``cls(...)`` builds it)."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    fields = dataclasses.fields(cls)
    if any(
        not f.init or type(getattr(cls, f.name, None)) is not types.MemberDescriptorType
        for f in fields
    ):
        return None
    return [f.name for f in fields]


# ``_mutable_twin``'s answers: one twin a class, however often ``constructor`` is asked
# (each class's codec asks twice, and modules once more for their hot paths).
_TWINS: dict[type, type | None] = {}


def _mutable_twin(cls: type, names: list[str]) -> type | None:
    """A class laid out as ``cls`` (its layout base and its ``__slots__``) whose
    instances take plain attribute writes, for ``constructor``; None if ``cls`` has
    fewer than two fields (the class switch costs more than it saves) or no such twin
    exists."""
    if cls not in _TWINS:
        _TWINS[cls] = _make_twin(cls, names)
    return _TWINS[cls]


def _make_twin(cls: type, names: list[str]) -> type | None:
    slots = cls.__dict__.get("__slots__")
    if len(names) < 2 or not isinstance(slots, tuple) or sorted(slots) != sorted(names):
        return None
    # The one base the layout comes from (``__base__``; any other adds no slots, or the
    # probe below refuses): making a class runs each base's ``__init_subclass__``, and
    # the twin is no class of theirs (``Generic`` refuses a plain subclass, a registry of
    # subclasses would list it).
    base = cls.__base__
    # A base's own ``__setattr__`` (a frozen dataclass parent) would refuse the writes.
    # Checked before the twin is made: it would stay listed among the parent's
    # subclasses, as one more dataclass.
    if base is None or base.__setattr__ is not object.__setattr__:  # type: ignore[comparison-overlap]  # a slot wrapper
        return None
    try:
        twin = type(f"{cls.__name__}Builder", (base,), {"__slots__": slots})
        probe: Any = object.__new__(twin)
        probe.__class__ = cls
    except Exception:
        # A base that refuses the twin, or layouts the interpreter does not take as the
        # same: the slots are set through their descriptors.
        return None
    return twin


def _twin_copier(cls: type) -> Callable[[Any], Any] | None:
    """A function copying a ``cls`` object's fields into a new instance of the class's
    mutable twin (``constructor``), for ``replace`` to change and make a ``cls``; None
    where ``constructor`` makes no twin (a ``__post_init__``, a frozen parent)."""
    names = _slot_fields(cls)
    if names is None:
        return None
    twin = _mutable_twin(cls, names)
    if twin is None:
        return None
    body = "".join(f"    o.{n} = obj.{n}\n" for n in names)
    ns: dict[str, Any] = {"NEW": object.__new__, "TWIN": twin}
    exec(f"def copy(obj):\n    o = NEW(TWIN)\n{body}    return o\n", ns)  # field names only
    copy: Callable[[Any], Any] = ns["copy"]
    return copy


def replace(obj: W, **changes: Any) -> W:
    """``dataclasses.replace`` for a ``Wire`` object: a copy with ``changes``, built
    like ``constructor`` builds (so a class's ``__post_init__`` still runs), without
    ``dataclasses.replace``'s per-call field introspection. For hot paths that rebuild
    state records."""
    cls = type(obj)
    codec = _codec_for(cls)
    index = codec.index
    copy = codec.copy
    if copy is not None:
        # Copied into the class's mutable twin, changed there, then made a ``cls``:
        # no tuple of every field, no call with all of them.
        new = copy(obj)
        for name, value in changes.items():
            if name not in index:
                raise TypeError(f"{cls.__name__} has no field {name!r}")
            setattr(new, name, value)
        new.__class__ = cls
        made: W = new
        return made
    values = list(codec.get(obj))
    for name, value in changes.items():
        i = index.get(name)
        if i is None:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        values[i] = value
    built: W = codec.make(*values)
    return built


class _Generated:
    """Straight-line ``check``, ``dump``, ``encode``, ``decode`` and ``fits`` for one
    class, made with ``exec``.

    ``check(raw)`` returns the object when the generic check would accept ``raw``
    (building the same object from the same values), else ``_FAIL``: it never
    accepts anything the generic check refuses, so it only ever saves time. The
    conditions on primitive fields are inlined; nested objects and tuples go
    through small helper functions. ``dump(obj)`` builds exactly the list the
    generic dump builds, nested objects written out inline; ``encode`` packs it and
    ``decode`` is unpack, ``check`` and the re-encoding check, with the generic
    decode for anything else. ``fits`` is ``Wire.fits``.
    tests/core/test_codec_fast.py checks them against the generic path for every
    ``Wire`` class, tests/core/test_codec_fits.py ``fits`` against ``checked_encoding``.
    """

    def __init__(
        self,
        cls: type[Wire],
        names: tuple[str, ...],
        hints: list[Any],
        fits_limit: int,
        decode_generic: Callable[[Any], Any],
    ) -> None:
        self._ns: dict[str, Any] = {
            "FAIL": _FAIL,
            "MAKE": constructor(cls),
            "CLS": cls,
            "LIMIT": fits_limit,
            "ABSOLUTE": ABSOLUTE_MAX_ENCODED,
            "MAX_ENCODED": min(cls.MAX_ENCODED, ABSOLUTE_MAX_ENCODED),
            "UNPACK": _unpackb,
            "PACKERS": _packers,
            "NEW_PACKER": _new_packer,
            "DECODE_GENERIC": decode_generic,
            "UNUSUAL": _Unusual,
        }
        self._count = 0
        conds: list[str] = []
        convs: list[tuple[str, str]] = []
        dumps: list[str] = []
        for i, hint in enumerate(hints):
            var = f"v{i}"
            cond = self._cond(hint, var)
            if cond is not None:
                conds.append(cond)
            else:
                convs.append((var, self._bind(self._conv(hint))))
            dumps.append(self._dump_expr(hint, f"obj.{names[i]}", 0))
        n = len(names)
        args = ", ".join(f"v{i}" for i in range(n))

        def checks(fail: str) -> str:
            """``check``'s steps, flat at one indent, each refusal being ``fail``."""
            out = f"if type(raw) is not list or len(raw) != {n}:\n    {fail}\n"
            if n:
                out += f"{args}, = raw\n"
            if conds:
                out += f"if not ({' and '.join(conds)}):\n    {fail}\n"
            for var, conv in convs:
                out += f"{var} = {conv}({var})\nif {var} is FAIL:\n    {fail}\n"
            return out

        lines = ["def check(raw):\n", textwrap.indent(checks("return FAIL"), "    ")]
        lines.append(f"    return MAKE({args})\n")
        dump = f"[{', '.join(dumps)}]"
        lines.append(f"def dump(obj):\n    return {dump}\n")
        # The per-thread packer (see ``_packb``), looked up inline: encoding and
        # decoding are the hottest calls of block execution.
        packer = (
            "    try:\n        pack = PACKERS.pack\n"
            "    except AttributeError:\n        pack = NEW_PACKER()\n"
        )
        lines.append(f"def encode(obj):\n{packer}    return pack({dump})\n")
        # Anything unusual (not bytes, bad msgpack, a failed check, a non-canonical
        # encoding) takes the generic decode, which decides and names the error.
        # ``check`` is written out inline (a call less per decode, the hottest call of
        # admission and execution), flat: a refusal raises, so however many fields a
        # class has, the code stays at one depth.
        body = checks("raise UNUSUAL") + textwrap.dedent(packer)
        body += f"if pack(raw) == data:\n    return MAKE({args})\n"
        lines.append(
            "def decode(data):\n"
            "    if type(data) is bytes and len(data) <= MAX_ENCODED:\n"
            "        try:\n"
            "            raw = UNPACK(data)\n"
            f"{textwrap.indent(body, '            ')}"
            "        except Exception:\n"
            "            pass\n"
            "    return DECODE_GENERIC(data)\n"
        )
        lines.append(self._valid_source(cls, names, hints))
        exec("".join(lines), self._ns)  # generated from type hints only
        self.check: Callable[[Any], Any] = self._ns["check"]
        self.dump: Callable[[Any], list[Any]] = self._ns["dump"]
        self.encode: Callable[[Any], bytes] = self._ns["encode"]
        self.decode: Callable[[Any], Any] = self._ns["decode"]
        self.valid: Callable[[Any], bool] = self._ns["valid"]
        self.fits: Callable[[Any, int, Any], bool] = self._ns["fits"]

    def _valid_source(self, cls: type[Wire], names: tuple[str, ...], hints: list[Any]) -> str:
        """``valid(obj)``: True only if ``check(dump(obj))`` accepts and returns an object
        equal to ``obj``, found on the fields as they are (nothing dumped or built). It
        may say False for something check accepts (a list in a tuple field); callers
        then take the slow path. ``fits``: ``Wire.fits`` for this class, the same check
        with the size bound and ``since``."""
        if hasattr(cls, "__post_init__"):
            # Decoding runs the class's own check, which only building can show.
            return (
                "def valid(obj):\n    return False\n"
                "def fits(obj, max_size=ABSOLUTE, since=None):\n    return False\n"
            )
        conds = [self._valid(hint, f"v{i}") for i, hint in enumerate(hints)]
        # Each field read once into a local (slot reads are the cheapest way in).
        body = "".join(f"v{i} = obj.{name}\n" for i, name in enumerate(names))
        ints = [i for i, hint in enumerate(hints) if hint is int]
        if len(ints) >= 3:
            # Several integer fields are checked together in C: packing them as uint64
            # refuses anything outside 0..2**64-1 or not an integer, and the tuple of
            # their types refuses a bool or an int subclass.
            self._ns["PACK_INTS"] = struct.Struct(f"<{len(ints)}Q").pack
            self._ns["INTS"] = (int,) * len(ints)
            body += f"PACK_INTS({', '.join(f'v{i}' for i in ints)})\n"
            body += f"if ({', '.join(f'type(v{i})' for i in ints)},) != INTS:\n"
            body += "    return False\n"
            conds = [c for i, c in enumerate(conds) if i not in ints]
        body += f"return {' and '.join(conds) or 'True'}\n"
        # Fields that hold the very object ``since`` holds cost two reads each.
        since = "".join(
            f"if obj.{name} is not since.{name}:\n"
            f"    v{i} = obj.{name}\n"
            f"    if not {self._valid(hint, f'v{i}')}:\n        return False\n"
            for i, (name, hint) in enumerate(zip(names, hints, strict=True))
        )
        return (
            "def valid(obj):\n"
            f"    try:\n{textwrap.indent(body, '        ')}"
            "    except Exception:\n        return False\n"
            "def fits(obj, max_size=ABSOLUTE, since=None):\n"
            "    if max_size < LIMIT:\n        return False\n"
            "    try:\n"
            "        if type(since) is CLS:\n"
            f"{textwrap.indent(since, '            ')}"
            "            return True\n"
            f"{textwrap.indent(body, '        ')}"
            # Out of range for PACK_INTS, or a str that cannot be encoded (a lone
            # surrogate): checked_encoding names it.
            "    except Exception:\n        return False\n"
        )

    def _valid(self, hint: Any, v: str) -> str:
        """An expression true only if field value ``v`` (as held by an object) dumps to
        something ``check`` accepts as that same value."""
        bare, meta = _split_meta(hint)
        if typing.get_origin(bare) in (types.UnionType, typing.Union):
            return f"({v} is None or {self._valid(_optional_inner(bare, meta), v)})"
        cond = self._cond(hint, v)
        if cond is not None:
            return cond
        if typing.get_origin(bare) is tuple:
            return f"{self._bind(self._valid_tuple(bare, meta))}({v})"
        if isinstance(bare, type) and issubclass(bare, Wire):
            cls = bare

            def valid_wire(o: Any) -> bool:
                return type(o) is cls and _codec_for(cls).valid(o)

            return f"{self._bind(valid_wire)}({v})"
        raise TypeError(f"unsupported field type {hint!r}")

    def _valid_tuple(self, hint: Any, meta: tuple[Any, ...]) -> Callable[[Any], bool]:
        item = typing.get_args(hint)[0]
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        bare, item_meta = _split_meta(item)
        exact = next((m.n for m in item_meta if isinstance(m, Len)), None)
        item_limit = next((m.n for m in item_meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)
        head = f"def valid_tuple(v):\n    if type(v) is not tuple or len(v) > {limit}:\n"
        head += "        return False\n"
        # The two common item kinds are checked in C, whatever the length.
        if bare is int:
            body = (
                "    return not v or (set(map(type, v)) == INT "
                f"and min(v) >= 0 and max(v) <= {UINT64_MAX})\n"
            )
        elif bare is bytes and exact is not None and exact <= item_limit:
            body = (
                "    return not v or (set(map(type, v)) == BYTES "
                f"and set(map(len, v)) == {{{exact}}})\n"
            )
        else:
            cond = self._valid(item, "x")
            body = f"    for x in v:\n        if not {cond}:\n            return False\n"
            body += "    return True\n"
        ns = dict(self._ns)
        ns["INT"] = frozenset({int})
        ns["BYTES"] = frozenset({bytes})
        exec(head + body, ns)  # generated from type hints only
        valid_tuple: Callable[[Any], bool] = ns["valid_tuple"]
        return valid_tuple

    def _bind(self, value: Any) -> str:
        name = f"_h{self._count}"
        self._count += 1
        self._ns[name] = value
        return name

    def _cond(self, hint: Any, v: str) -> str | None:
        """An expression true iff the generic check accepts ``v`` as it is; None when
        the field needs a helper (nested objects, tuples)."""
        hint, meta = _split_meta(hint)
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            inner = _optional_inner(hint, meta)
            cond = self._cond(inner, v)
            return None if cond is None else f"({v} is None or {cond})"
        if hint is bool:
            return f"type({v}) is bool"
        if hint is int:
            return f"(type({v}) is int and 0 <= {v} <= {UINT64_MAX})"
        if hint is bytes:
            exact = next((m.n for m in meta if isinstance(m, Len)), None)
            limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)
            if exact is not None and exact <= limit:
                return f"(type({v}) is bytes and len({v}) == {exact})"
            size = f" and len({v}) == {exact}" if exact is not None else ""
            return f"(type({v}) is bytes{size} and len({v}) <= {limit})"
        if hint is str:
            limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
            # ASCII text is one byte per character; anything else is measured encoded.
            return (
                f"(type({v}) is str and (({v}.isascii() and len({v}) <= {limit}) "
                f"or len({v}.encode()) <= {limit}))"
            )
        return None

    def _conv(self, hint: Any) -> Callable[[Any], Any]:
        """A function returning the checked value of a non-primitive field, or FAIL."""
        hint, meta = _split_meta(hint)
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            inner = self._conv(_optional_inner(hint, meta))

            def conv_opt(v: Any) -> Any:
                return None if v is None else inner(v)

            return conv_opt
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
            cond = self._cond(item, "x")
            if cond is not None:
                src = (
                    "def conv_tuple(v):\n"
                    f"    if type(v) is not list or len(v) > {limit}:\n        return FAIL\n"
                    f"    for x in v:\n        if not {cond}:\n            return FAIL\n"
                    "    return tuple(v)\n"
                )
            else:
                conv = self._bind(self._conv(item))
                src = (
                    "def conv_tuple(v):\n"
                    f"    if type(v) is not list or len(v) > {limit}:\n        return FAIL\n"
                    f"    out = [{conv}(x) for x in v]\n"
                    "    return FAIL if FAIL in out else tuple(out)\n"
                )
            ns = dict(self._ns)
            exec(src, ns)  # generated from type hints only
            conv_tuple: Callable[[Any], Any] = ns["conv_tuple"]
            return conv_tuple
        if isinstance(hint, type) and issubclass(hint, Wire):
            cls = hint

            def conv_wire(v: Any) -> Any:
                return _codec_for(cls).fast_check(v)

            return conv_wire
        raise TypeError(f"unsupported field type {hint!r}")

    def _dump_expr(self, hint: Any, expr: str, depth: int) -> str:
        """An expression for the dump of the field value ``expr`` (which it may read more
        than once): nested objects and tuples of them are written out inline."""
        hint, meta = _split_meta(hint)
        if typing.get_origin(hint) in (types.UnionType, typing.Union):
            inner = self._dump_expr(_optional_inner(hint, meta), expr, depth)
            return expr if inner == expr else f"(None if {expr} is None else {inner})"
        if typing.get_origin(hint) is tuple:
            x = f"x{depth}"
            item = self._dump_expr(typing.get_args(hint)[0], x, depth + 1)
            return f"list({expr})" if item == x else f"[{item} for {x} in {expr}]"
        if isinstance(hint, type) and issubclass(hint, Wire):
            codec = _codec_for(hint)
            fields = zip(codec.names, codec.hints, strict=True)
            return f"[{', '.join(self._dump_expr(h, f'{expr}.{n}', depth + 1) for n, h in fields)}]"
        return expr


def encoder(cls: type[W]) -> Callable[[W], bytes]:
    """The generated ``encode`` of ``cls``, for a class whose own ``encode`` checks
    something first and then encodes as every class does."""
    return _codec_for(cls).encode


def max_encoded_size(cls: type[Wire]) -> int:
    """The largest encoding of ``cls`` that its field bounds allow (every integer at
    2**64-1, every string, bytes and tuple at its bound), computed from the type hints."""
    return _codec_for(cls).bound


def _max_size(hints: dict[str, Any], names: tuple[str, ...]) -> int:
    return _array_header_size(len(names)) + sum(_field_max_size(hints[n]) for n in names)


def _array_header_size(n: int) -> int:
    return 1 if n < 16 else 3 if n < 1 << 16 else 5


def _field_max_size(hint: Any) -> int:
    """Most bytes one field of type ``hint`` encodes to (msgpack's header sizes)."""
    hint, meta = _split_meta(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return max(1, _field_max_size(_optional_inner(hint, meta)))
    if hint is bool:
        return 1
    if hint is int:
        return 9  # 0xcf and 8 bytes
    if hint is bytes:
        n = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)
        exact = next((m.n for m in meta if isinstance(m, Len)), None)
        if exact is not None:
            n = min(n, exact)
        return (2 if n < 1 << 8 else 3 if n < 1 << 16 else 5) + n
    if hint is str:
        n = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)
        return (1 if n < 32 else 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5) + n
    if typing.get_origin(hint) is tuple:
        n = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        return _array_header_size(n) + n * _field_max_size(typing.get_args(hint)[0])
    if isinstance(hint, type) and issubclass(hint, Wire):
        return _codec_for(hint).bound
    raise TypeError(f"unsupported field type {hint!r}")


def _optional_inner(hint: Any, meta: tuple[Any, ...]) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"only X | None unions are supported, got {hint}")
    inner = args[0]
    return typing.Annotated[inner, *meta] if meta else inner


def unpack_raw(data: bytes) -> Any:
    """Unpack msgpack bytes with every unsupported construct refused."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_map_len=0,
            max_ext_len=0,
        )
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after object") from exc
    except (ValueError, TypeError, msgpack.UnpackException, UnicodeDecodeError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from exc


def pack_raw(raw: Any) -> bytes:
    return _packb(raw)


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items (as ``packb`` writes it).

    Lets a container of already-encoded objects be written by concatenation,
    byte-identical to packing the whole structure again.
    """
    if n < 16:
        return _FIXARRAY[n]
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_FIXARRAY = tuple(bytes((0x90 | n,)) for n in range(16))


def pack_array(encoded: Sequence[bytes]) -> bytes:
    """The encoding of a list whose items are given already encoded: the bytes
    ``pack_raw`` makes of the list of the items themselves. For hot paths that keep
    parts encoded (a receipt built from its events' encodings)."""
    return array_header(len(encoded)) + b"".join(encoded)


_CODECS: dict[type, _Codec] = {}
# Methods a class's codec replaces with generated ones (see ``Wire.__init_subclass__``).
_GENERATED_METHODS = ("encode", "decode", "fits")


def _install(cls: type[Wire], name: str, fn: Any) -> None:
    """Put a generated method on ``cls``, unless the class defines its own."""
    if cls.__dict__.get(name) is Wire.__dict__[name]:
        setattr(cls, name, fn)


def _codec_for(cls: type[Wire]) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _Codec(cls)
    return codec


def _identity(v: Any) -> Any:
    return v


def _compile(hint: Any) -> tuple[_Dump, _Check]:
    """Build (dump, check) functions for one annotated field type."""
    hint, meta = _split_meta(hint)
    origin = typing.get_origin(hint)

    if origin in (types.UnionType, typing.Union):
        dump_inner, check_inner = _compile(_optional_inner(hint, meta))

        def dump_opt(v: Any) -> Any:
            return None if v is None else dump_inner(v)

        def check_opt(v: Any, where: str) -> Any:
            return None if v is None else check_inner(v, where)

        return dump_opt, check_opt

    if hint is bool:

        def check_bool(v: Any, where: str) -> bool:
            if type(v) is not bool:
                raise DecodeError(f"{where}: expected bool, got {type(v).__name__}")
            return v

        return _identity, check_bool

    if hint is int:

        def check_int(v: Any, where: str) -> int:
            if type(v) is not int:
                raise DecodeError(f"{where}: expected int, got {type(v).__name__}")
            if v < 0 or v > UINT64_MAX:
                raise DecodeError(f"{where}: integer {v} out of range 0..2**64-1")
            return v

        return _identity, check_int

    if hint is bytes:
        exact = next((m.n for m in meta if isinstance(m, Len)), None)
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_BYTES)

        def check_bytes(v: Any, where: str) -> bytes:
            if type(v) is not bytes:
                raise DecodeError(f"{where}: expected bytes, got {type(v).__name__}")
            if exact is not None and len(v) != exact:
                raise DecodeError(f"{where}: expected {exact} bytes, got {len(v)}")
            if len(v) > limit:
                raise DecodeError(f"{where}: at most {limit} bytes, got {len(v)}")
            return v

        return _identity, check_bytes

    if hint is str:
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), DEFAULT_MAX_STR)

        def check_str(v: Any, where: str) -> str:
            if type(v) is not str:
                raise DecodeError(f"{where}: expected str, got {type(v).__name__}")
            size = len(v.encode())
            if size > limit:
                raise DecodeError(f"{where}: at most {limit} bytes, got {size}")
            return v

        return _identity, check_str

    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, got {hint}")
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), DEFAULT_MAX_ITEMS)
        dump_item, check_item = _compile(args[0])

        def dump_tuple(v: Any) -> Any:
            return [dump_item(x) for x in v]

        def check_tuple(v: Any, where: str) -> tuple[Any, ...]:
            if type(v) is not list:
                raise DecodeError(f"{where}: expected array, got {type(v).__name__}")
            if len(v) > limit:
                raise DecodeError(f"{where}: at most {limit} items, got {len(v)}")
            return tuple(check_item(x, where) for x in v)

        return dump_tuple, check_tuple

    if isinstance(hint, type) and issubclass(hint, Wire):
        cls = hint

        def dump_wire(v: Any) -> Any:
            return _codec_for(cls).dump(v)

        def check_wire(v: Any, where: str) -> Any:
            return _codec_for(cls).check(v, f"{where}.{cls.__name__}")

        return dump_wire, check_wire

    raise TypeError(f"unsupported field type {hint!r}")
