"""The codec accepts exactly one encoding per object and round-trips every object."""

from dataclasses import dataclass
from typing import Annotated

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import (
    Block,
    BlockHeader,
    Commit,
    CommitSig,
    DecodeError,
    Len,
    MaxItems,
    MaxLen,
    SignedTx,
    TxBody,
    Vote,
    Wire,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)
b64 = st.binary(min_size=64, max_size=64)


@dataclass(frozen=True, slots=True)
class Inner(Wire):
    flag: bool
    tag: Annotated[bytes, Len(4)]


@dataclass(frozen=True, slots=True)
class Sample(Wire):
    n: int
    name: Annotated[str, MaxLen(16)]
    blob: Annotated[bytes, MaxLen(8)]
    items: Annotated[tuple[Inner, ...], MaxItems(3)]
    maybe: int | None


inner = st.builds(Inner, st.booleans(), st.binary(min_size=4, max_size=4))
samples = st.builds(
    Sample,
    u64,
    st.text(max_size=4),
    st.binary(max_size=8),
    st.lists(inner, max_size=3).map(tuple),
    st.none() | u64,
)
signed_txs = st.builds(SignedTx, st.text(max_size=10), b32, st.binary(max_size=300), b64)
commits = st.builds(
    Commit, u64, u64, b32, st.lists(st.builds(CommitSig, b32, b64), max_size=4).map(tuple)
)
headers = st.builds(
    BlockHeader,
    st.text(max_size=10),
    u64,
    u64,
    u64,
    b32,
    b32,
    b32,
    b32,
    b32,
    b32,
    st.none() | commits,
)
blocks = st.builds(Block, headers, st.lists(signed_txs.map(SignedTx.encode), max_size=4).map(tuple))
bodies = st.builds(TxBody, u64, u64, u64, st.text(max_size=12), st.binary(max_size=64))


@given(st.one_of(samples, signed_txs, blocks, bodies))
def test_round_trip(obj):
    data = obj.encode()
    assert type(obj).decode(data) == obj
    assert type(obj).decode(data).encode() == data


@settings(max_examples=300)
@given(st.one_of(samples, signed_txs, blocks, bodies), st.data())
def test_any_mutation_is_rejected_or_is_another_canonical_object(obj, data):
    """Flip, drop or insert a byte: either decode fails, or the result re-encodes to the input."""
    enc = bytearray(obj.encode())
    pos = data.draw(st.integers(0, len(enc)))
    kind = data.draw(st.sampled_from(["flip", "drop", "insert"]))
    if kind == "flip" and pos < len(enc):
        enc[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "drop" and pos < len(enc):
        del enc[pos]
    else:
        enc.insert(pos, data.draw(st.integers(0, 255)))
    mutated = bytes(enc)
    try:
        decoded = type(obj).decode(mutated)
    except DecodeError:
        return
    assert decoded.encode() == mutated
    assert decoded != obj


@given(samples, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_rejected(obj, extra):
    with pytest.raises(DecodeError, match="trailing"):
        Sample.decode(obj.encode() + extra)


def test_non_minimal_integer_rejected():
    obj = Sample(5, "a", b"", (), None)
    canonical = obj.encode()
    # 5 as uint32 (0xce) instead of positive fixint
    wide = canonical.replace(b"\x05", b"\xce\x00\x00\x00\x05", 1)
    assert wide != canonical
    with pytest.raises(DecodeError, match="non-canonical"):
        Sample.decode(wide)


def test_non_minimal_length_header_rejected():
    obj = Sample(1, "ab", b"", (), None)
    canonical = obj.encode()
    # "ab" as str8 (0xd9 len) instead of fixstr
    wide = canonical.replace(b"\xa2ab", b"\xd9\x02ab", 1)
    with pytest.raises(DecodeError, match="non-canonical"):
        Sample.decode(wide)


@pytest.mark.parametrize(
    "raw, reason",
    [
        ([1, "a", b"", []], "expected 5 fields"),
        ([1, "a", b"", [], None, 7], "expected 5 fields"),
        ([-1, "a", b"", [], None], "out of range"),
        ([1.5, "a", b"", [], None], "expected int"),
        ([True, "a", b"", [], None], "expected int"),
        ([1, b"a", b"", [], None], "expected str"),
        ([1, "a", "x", [], None], "expected bytes"),
        ([1, "a", b"123456789", [], None], "at most 8 bytes"),
        ([1, "a" * 17, b"", [], None], "at most 16 bytes"),
        ([1, "a", b"", [[True, b"abc"]], None], "expected 4 bytes"),
        ([1, "a", b"", [[True, b"abcd"]] * 4, None], "at most 3 items"),
        ([1, "a", b"", [[1, b"abcd"]], None], "expected bool"),
        ([1, "a", b"", [], "x"], "expected int"),
        ({"n": 1}, "max_map_len"),
    ],
)
def test_wrong_shapes_rejected(raw, reason):
    data = msgpack.packb(raw, use_bin_type=True)
    with pytest.raises(DecodeError, match=reason):
        Sample.decode(data)


def test_maps_floats_and_ext_rejected():
    for raw in ([1, "a", b"", [], {"x": 1}], [1, "a", b"", [], msgpack.ExtType(1, b"x")]):
        with pytest.raises(DecodeError):
            Sample.decode(msgpack.packb(raw, use_bin_type=True))


def test_oversized_encoding_rejected_before_parsing():
    big = b"\x00" * (Vote.MAX_ENCODED + 1)
    with pytest.raises(DecodeError, match="too large"):
        Vote.decode(big)


def test_garbage_rejected():
    for junk in (b"", b"\xc1", b"\x93\x01", b"\xff" * 10, b"\x91\xc4\x05ab"):
        with pytest.raises(DecodeError):
            SignedTx.decode(junk)


def test_vote_checks_type_and_hash_length():
    with pytest.raises(DecodeError):
        Vote.decode(msgpack.packb([3, 1, 0, b"", b"k" * 32, b"s" * 64], use_bin_type=True))
    with pytest.raises(DecodeError):
        Vote.decode(msgpack.packb([1, 1, 0, b"x" * 5, b"k" * 32, b"s" * 64], use_bin_type=True))


@given(blocks)
def test_encode_block_from_encoded_txs_is_byte_identical(block):
    from core import encode_block

    assert encode_block(block.header, block.txs) == block.encode()


@given(blocks, st.data())
def test_a_block_hash_is_read_off_its_encoding_and_anything_else_refused(block, data):
    from core import encoded_block_hash

    encoded = block.encode()
    assert encoded_block_hash(encoded) == block.hash
    header = block.header.encode()
    txs = encoded[1 + len(header) :]
    for bad in (
        b"",
        b"\x92",
        b"\x92\xc1",
        encoded[: data.draw(st.integers(1, len(encoded) - 1), label="cut at")],
        encoded + b"\xc0",  # trailing bytes
        b"\x92" + header + bytes([txs[0] + 1]) + txs[1:],  # one transaction fewer than counted
        b"\x93" + encoded[1:],
        b"\x92" + header + b"\xc4\x01a",  # no array of transactions
        b"\x92" + header + b"\xdd\x00\x01\x86\xa1",  # 100,001 of them
    ):
        with pytest.raises(DecodeError, match="not a block"):
            encoded_block_hash(bad)


def test_array_header_matches_msgpack_at_size_boundaries():
    from core import array_header

    for n in (0, 1, 15, 16, 65535, 65536):
        packed = msgpack.packb([None] * n)
        assert packed.startswith(array_header(n))
        assert len(packed) == len(array_header(n)) + n


msgpack_items = st.recursive(
    st.integers(0, 2**64 - 1) | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
)


@given(st.lists(msgpack_items, max_size=40))
def test_pack_array_of_encoded_items_is_the_lists_encoding(items):
    from core import pack_array, pack_raw

    assert pack_array([pack_raw(item) for item in items]) == pack_raw(items)


def test_checked_encoding_refuses_what_decode_would():
    from dataclasses import dataclass
    from typing import Annotated

    from core.codec import MaxItems, Wire

    @dataclass(frozen=True, slots=True)
    class Tally(Wire):
        total: int
        items: Annotated[tuple[int, ...], MaxItems(2)]

    assert Tally.decode(Tally(5, (1, 2)).checked_encoding()) == Tally(5, (1, 2))
    for bad in (Tally(-1, ()), Tally(2**64, ()), Tally(1, (1, 2, 3))):
        with pytest.raises(DecodeError):
            bad.checked_encoding()
    with pytest.raises(DecodeError, match="3 bytes encoded, at most 2"):
        Tally(1, ()).checked_encoding(max_size=2)


def test_replace_is_dataclasses_replace():
    import dataclasses

    from core.codec import replace

    @dataclass(frozen=True, slots=True)
    class Order(Wire):
        id: int
        state: int
        host: bytes | None
        items: Annotated[tuple[int, ...], MaxItems(4)]

    order = Order(1, 1, None, (1, 2))
    changed = replace(order, state=3, host=b"h" * 20)
    assert changed == dataclasses.replace(order, state=3, host=b"h" * 20)
    assert type(changed) is Order and order == Order(1, 1, None, (1, 2))
    assert replace(order) == order
    with pytest.raises(TypeError, match="no field 'status'"):
        replace(order, status=3)


def test_replace_runs_a_class_own_check():
    from core.codec import replace

    @dataclass(frozen=True, slots=True)
    class Tagged(Wire):
        tag: int

        def __post_init__(self) -> None:
            if self.tag != 1:
                raise DecodeError(f"tag must be 1, got {self.tag}")

    assert replace(Tagged(1), tag=1) == Tagged(1)
    with pytest.raises(DecodeError, match="got 7"):
        replace(Tagged(1), tag=7)


def test_a_subclass_encodes_and_decodes_its_own_fields():
    @dataclass(frozen=True, slots=True)
    class Base(Wire):
        n: int

    @dataclass(frozen=True, slots=True)
    class Wider(Base):
        blob: Annotated[bytes, MaxLen(4)]

    # The parent's generated methods are in place before the subclass is used.
    assert Base.decode(Base(1).encode()) == Base(1)
    assert Wider(1, b"x").encode() == msgpack.packb([1, b"x"], use_bin_type=True)
    assert Wider.decode(Wider(1, b"x").encode()) == Wider(1, b"x")
    with pytest.raises(DecodeError):
        Base.decode(Wider(1, b"x").encode())


def test_a_field_type_the_codec_has_no_encoding_for_is_refused_at_first_use():
    # A declaration error (one place, one encoding per object): named at the first
    # encode or decode of the class, never an encoding picked for it.
    @dataclass(frozen=True, slots=True)
    class Floaty(Wire):
        x: float

    @dataclass(frozen=True, slots=True)
    class Pair(Wire):
        x: tuple[int, int]

    @dataclass(frozen=True, slots=True)
    class Either(Wire):
        x: int | str | None

    for make, message in [
        (lambda: Floaty(1.0).encode(), "unsupported field type <class 'float'>"),
        (lambda: Pair((1, 2)).encode(), r"only tuple\[X, ...\] is supported"),
        (lambda: Either.decode(b"\x91\x01"), "only X | None unions are supported"),
    ]:
        with pytest.raises(TypeError, match=message):
            make()
