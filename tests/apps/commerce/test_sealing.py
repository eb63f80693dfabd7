"""Sealed shipping addresses: what opens, and what the order's commitment refuses.

The commitment is what makes a disclosure trustworthy: an auditor handed a re-sealed
address by a merchant (or a merchant handed one by a buyer) must be able to tell
whether it is the address the order committed to, not merely an address.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.commerce.sealing import (
    MAX_ADDRESS_TEXT,
    SealError,
    ShippingAddress,
    commitment,
    encryption_keypair,
    open_address,
    open_plaintext,
    reseal,
    seal_address,
)

MERCHANT_PRIVATE, MERCHANT_PUBLIC = encryption_keypair(b"\x01" * 32)
AUDITOR_PRIVATE, AUDITOR_PUBLIC = encryption_keypair(b"\x02" * 32)


def test_a_sealed_address_opens_for_its_key_and_its_disclosure_for_the_auditor():
    sealed, committed, plain = seal_address(MERCHANT_PUBLIC, "1 Alice Lane")
    assert open_address(MERCHANT_PRIVATE, sealed, committed) == "1 Alice Lane"
    # The merchant discloses the very plaintext it opened: the commitment still holds.
    disclosed = reseal(AUDITOR_PUBLIC, open_plaintext(MERCHANT_PRIVATE, sealed))
    assert open_address(AUDITOR_PRIVATE, disclosed, committed) == "1 Alice Lane"
    assert open_plaintext(MERCHANT_PRIVATE, sealed) == plain


def test_another_key_or_altered_bytes_do_not_open():
    sealed, committed, _ = seal_address(MERCHANT_PUBLIC, "1 Alice Lane")
    with pytest.raises(SealError, match="does not open with this key"):
        open_address(AUDITOR_PRIVATE, sealed, committed)
    with pytest.raises(SealError, match="does not open with this key"):
        open_plaintext(AUDITOR_PRIVATE, sealed)
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealError, match="does not open with this key"):
        open_address(MERCHANT_PRIVATE, altered, committed)


def test_a_disclosure_of_another_address_is_refused_by_the_order_commitment():
    # A merchant shows an auditor some other address, sealed properly to the auditor:
    # it opens, but it is not what the buyer committed to.
    sealed, committed, _ = seal_address(MERCHANT_PUBLIC, "1 Alice Lane")
    _, _, other_plain = seal_address(MERCHANT_PUBLIC, "9 Elsewhere Road")
    forged = reseal(AUDITOR_PUBLIC, other_plain)
    with pytest.raises(SealError, match="does not match the order's commitment"):
        open_address(AUDITOR_PRIVATE, forged, committed)
    # The same address under another salt is another commitment too.
    _, _, resalted = seal_address(MERCHANT_PUBLIC, "1 Alice Lane", salt=b"\x09" * 32)
    with pytest.raises(SealError, match="does not match"):
        open_address(AUDITOR_PRIVATE, reseal(AUDITOR_PUBLIC, resalted), committed)


def test_a_committed_plaintext_that_is_no_address_is_refused():
    # A client may commit to any bytes: what opens and matches must still be an address.
    for junk in (b"not msgpack at all", ShippingAddress(b"\x00" * 32, "x").encode() + b"\x00"):
        with pytest.raises(SealError, match="is not a ShippingAddress") as refused:
            open_address(MERCHANT_PRIVATE, reseal(MERCHANT_PUBLIC, junk), commitment(junk))
        assert refused.value.code == "bad_sealed_address"


def test_a_key_pair_needs_a_32_byte_seed():
    for seed in (b"", b"\x01" * 31, b"\x01" * 33):
        with pytest.raises(ValueError, match="seed must be 32 bytes"):
            encryption_keypair(seed)
    assert encryption_keypair(b"\x01" * 32) == (MERCHANT_PRIVATE, MERCHANT_PUBLIC)


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=MAX_ADDRESS_TEXT // 4), salt=st.binary(min_size=32, max_size=32))
def test_any_address_round_trips_and_its_commitment_binds_salt_and_text(text, salt):
    sealed, committed, plain = seal_address(MERCHANT_PUBLIC, text, salt=salt)
    assert open_address(MERCHANT_PRIVATE, sealed, committed) == text
    assert committed == commitment(plain) == commitment(ShippingAddress(salt, text).encode())
    other_salt = bytes([salt[0] ^ 1]) + salt[1:]
    assert seal_address(MERCHANT_PUBLIC, text, salt=other_salt)[1] != committed
