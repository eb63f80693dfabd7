import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.codec import Wire, pack_raw
from core.errors import DecodeError, NodeFault
from vm import (
    ZERO_ACCOUNT,
    Account,
    KeyPrefix,
    Overlay,
    TxFailed,
    account_key,
    balance_key,
    credit,
    debit,
    get_account,
    move_tokens,
    put_account,
)

ADDR = bytes(range(20))
u64 = st.integers(0, 2**64 - 1)


def generic_decode(data):
    """What decoding must accept, written out: the canonical msgpack array of two u64s."""
    try:
        raw = msgpack.unpackb(data)
    except Exception as exc:
        raise DecodeError("not msgpack") from exc
    ok = type(raw) is list and len(raw) == 2 and all(type(v) is int for v in raw)
    if not ok or not all(0 <= v < 2**64 for v in raw) or pack_raw(raw) != data:
        raise DecodeError("not an account")
    return Account(*raw)


def test_account_key_is_prefixed_address():
    assert account_key(ADDR) == bytes([KeyPrefix.ACCOUNT]) + ADDR
    with pytest.raises(ValueError, match="20 bytes, got 19"):
        account_key(ADDR[:19])


def test_a_short_address_or_the_native_symbol_names_no_key():
    # A 19-byte address would read (and write) another key space's record.
    with pytest.raises(ValueError, match="20 bytes, got 21"):
        get_account({}, ADDR + b"x")
    with pytest.raises(ValueError, match="20 bytes, got 19"):
        get_account(Overlay({}), ADDR[:19])
    assert balance_key(ADDR, "USD") == bytes([KeyPrefix.BALANCE]) + ADDR + b"USD"
    with pytest.raises(ValueError, match="20 bytes, got 19"):
        balance_key(ADDR[:19], "USD")
    with pytest.raises(ValueError, match="native token's balance is the account's"):
        balance_key(ADDR, "")


def test_absent_account_is_zero_on_dicts_and_overlays():
    assert get_account({}, ADDR) == ZERO_ACCOUNT == Account(0, 0)
    assert get_account(Overlay({}), ADDR) == ZERO_ACCOUNT


def test_put_then_get_and_zero_account_is_stored_as_absence():
    o = Overlay({account_key(ADDR): Account(5, 0).encode()})
    put_account(o, ADDR, Account(9, 3))
    assert get_account(o, ADDR) == Account(9, 3)
    put_account(o, ADDR, Account(0, 0))
    assert o.changes() == {account_key(ADDR): None}
    with pytest.raises(ValueError):
        put_account(o, ADDR + b"x", Account(1, 1))


@given(u64, u64)
def test_an_account_is_the_msgpack_array_of_its_balance_and_nonce(balance, nonce):
    acct = Account(balance, nonce)
    assert acct.encode() == msgpack.packb([balance, nonce], use_bin_type=True)
    assert acct.encode() == Wire.encode(acct)
    assert Account.decode(acct.encode()) == acct


def test_encoding_an_out_of_range_account_is_a_node_fault():
    with pytest.raises(NodeFault):
        Account(-1, 0).encode()
    with pytest.raises(NodeFault):
        Account(0, 2**64).encode()


non_canonical = [
    b"\x92\xcc\x05\x00",  # 5 as uint8 instead of a fixint
    b"\xdc\x00\x02\x01\x02",  # array16 header for 2 items
    b"\x92\x01\x02\x00",  # trailing byte
    b"\x92\xff\x01",  # negative fixint
    b"\x93\x01\x02\x03",  # three fields
    b"\x92\xc2\x01",  # bool
    b"\x81\x01\x02",  # map
    pack_raw([1, 2]) * 2,
    b"",
]


@given(st.binary(max_size=24))
@example(b"\x92\x01\x02")
def test_fast_decoding_accepts_exactly_what_the_generic_codec_accepts(data):
    for raw in [data, *non_canonical]:
        try:
            expected = generic_decode(raw)
        except DecodeError:
            with pytest.raises(DecodeError):
                Account.decode(raw)
        else:
            assert Account.decode(raw) == expected


@given(u64, u64, st.integers(0, 18), st.integers(0, 255), st.booleans())
def test_fast_decoding_agrees_on_mutated_valid_encodings(balance, nonce, at, byte, cut):
    raw = bytearray(Account(balance, nonce).encode())
    if cut:
        del raw[at % len(raw) :]
    else:
        raw[at % len(raw)] = byte
    data = bytes(raw)
    try:
        expected = generic_decode(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            Account.decode(data)
    else:
        assert Account.decode(data) == expected


def test_non_canonical_account_encodings_are_refused():
    for raw in non_canonical:
        with pytest.raises(DecodeError):
            Account.decode(raw)


# --- moving tokens (the one way balances change, fees aside) ---

OTHER = bytes(range(20, 40))


def test_debit_short_fails_the_transaction_or_halts_on_a_checked_pool():
    o = Overlay({account_key(ADDR): Account(5, 2).encode()})
    with pytest.raises(TxFailed, match="balance 5 is less than the amount 6") as err:
        debit(o, ADDR, 6)
    assert err.value.code == "insufficient_funds"
    # A module pool the caller's books say holds the amount: a shortfall is a bug.
    with pytest.raises(NodeFault, match="holds 5, cannot pay 6"):
        debit(o, ADDR, 6, checked=True)
    debit(o, ADDR, 5)
    assert get_account(o, ADDR) == Account(0, 2)


def test_credit_past_the_supply_cap_is_a_node_fault():
    o = Overlay({account_key(ADDR): Account(2**64 - 2, 0).encode()})
    credit(o, ADDR, 1)
    assert get_account(o, ADDR).balance == 2**64 - 1
    with pytest.raises(NodeFault, match="supply invariant"):
        credit(o, ADDR, 1)


@given(a=st.integers(0, 10**6), b=st.integers(0, 10**6), amount=st.integers(0, 2 * 10**6))
def test_move_tokens_conserves_and_a_move_to_oneself_nets_zero(a, b, amount):
    o = Overlay(
        {account_key(ADDR): Account(a, 1).encode(), account_key(OTHER): Account(b, 0).encode()}
    )
    try:
        move_tokens(o, ADDR, OTHER, amount)
    except TxFailed as exc:
        assert exc.code == "insufficient_funds" and amount > a
        assert (get_account(o, ADDR).balance, get_account(o, OTHER).balance) == (a, b)
    else:
        assert get_account(o, ADDR) == Account(a - amount, 1)
        assert get_account(o, OTHER).balance == b + amount
    move_tokens(o, OTHER, OTHER, min(amount, get_account(o, OTHER).balance))
    assert get_account(o, ADDR).balance + get_account(o, OTHER).balance == a + b
