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
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import msgpack

from core.errors import DecodeError

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


_Raw = Any
_Check = Callable[[_Raw, str], Any]
_Dump = Callable[[Any], _Raw]


class Wire:
    """Base for every wire and state object. Subclasses are frozen dataclasses."""

    __slots__ = ()
    # Upper bound on the encoded size accepted by ``decode``.
    MAX_ENCODED: ClassVar[int] = 1024 * 1024

    def encode(self) -> bytes:
        return _codec_for(type(self)).encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return _codec_for(cls).decode(data)

    def to_raw(self) -> list[Any]:
        """The msgpack-ready list form (used to embed objects in other encodings)."""
        return _codec_for(type(self)).dump(self)

    @classmethod
    def from_raw(cls, raw: Any) -> Self:
        """Check and build from an already unpacked list form."""
        return _codec_for(cls).check(raw, cls.__name__)


class _Codec:
    __slots__ = ("cls", "names", "dumps", "checks", "max_encoded", "limits")

    def __init__(self, cls: type[Wire]) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        self.names = tuple(f.name for f in fields)
        pairs = [_compile(hints[f.name]) for f in fields]
        self.dumps = tuple(p[0] for p in pairs)
        self.checks = tuple(p[1] for p in pairs)
        self.max_encoded = min(cls.MAX_ENCODED, ABSOLUTE_MAX_ENCODED)

    def dump(self, obj: Wire) -> list[Any]:
        return [d(getattr(obj, n)) for n, d in zip(self.names, self.dumps, strict=True)]

    def encode(self, obj: Wire) -> bytes:
        return msgpack.packb(self.dump(obj), use_bin_type=True)

    def check(self, raw: Any, where: str) -> Any:
        if type(raw) is not list:
            raise DecodeError(f"{where}: expected array, got {type(raw).__name__}")
        if len(raw) != len(self.names):
            raise DecodeError(f"{where}: expected {len(self.names)} fields, got {len(raw)}")
        values = [c(v, n) for c, v, n in zip(self.checks, raw, self.names, strict=True)]
        return self.cls(*values)

    def decode(self, data: bytes) -> Any:
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
        obj = self.check(raw, self.cls.__name__)
        if msgpack.packb(raw, use_bin_type=True) != data:
            raise DecodeError(f"{self.cls.__name__}: non-canonical encoding")
        return obj


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
    return msgpack.packb(raw, use_bin_type=True)


def array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` items (as ``packb`` writes it).

    Lets a container of already-encoded objects be written by concatenation,
    byte-identical to packing the whole structure again.
    """
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


_CODECS: dict[type, _Codec] = {}


def _codec_for(cls: type[Wire]) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _Codec(cls)
    return codec


def _identity(v: Any) -> Any:
    return v


def _compile(hint: Any) -> tuple[_Dump, _Check]:
    """Build (dump, check) functions for one annotated field type."""
    meta: tuple[Any, ...] = ()
    if typing.get_origin(hint) is typing.Annotated:
        hint, *rest = typing.get_args(hint)
        meta = tuple(rest)
    origin = typing.get_origin(hint)

    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only X | None unions are supported, got {hint}")
        inner = args[0]
        if meta:
            inner = typing.Annotated[inner, *meta]
        dump_inner, check_inner = _compile(inner)

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
