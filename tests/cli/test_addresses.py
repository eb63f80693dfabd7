"""The buyer's kept copies of its shipping addresses: private to its key, checked on use."""

from __future__ import annotations

import json
import stat

import pytest

from apps.commerce.sealing import commitment, encryption_keypair, seal_address
from cli.commerce.addresses import KEEP_DIR, keep_address, kept_address
from core import PrivateKey
from core.keystore import KeystoreError
from tests.fifos import fifo_holding

BUYER = PrivateKey(bytes([7]) * 32)


def _plaintext(text: str) -> bytes:
    _, merchant_public = encryption_keypair(bytes([9]) * 32)
    return seal_address(merchant_public, text)[2]


def test_a_kept_address_opens_with_its_key_only(tmp_path):
    plain = _plaintext("1 Main St, Springfield")
    path = keep_address(tmp_path, "shopper", BUYER, plain)
    assert kept_address(tmp_path, "shopper", BUYER, commitment(plain)) == plain
    # Sealed: the text is not in the file, which only its owner may read.
    assert b"Main St" not in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / KEEP_DIR).stat().st_mode) == 0o700
    # None kept for another order.
    assert kept_address(tmp_path, "shopper", BUYER, bytes(32)) is None
    with pytest.raises(KeystoreError, match="does not open"):
        kept_address(tmp_path, "shopper", PrivateKey.generate(), commitment(plain))


def _flip_last_byte(doc: dict) -> None:
    sealed = bytearray.fromhex(doc["sealed"])
    sealed[-1] ^= 1
    doc["sealed"] = sealed.hex()


@pytest.mark.parametrize(
    "tamper",
    [
        _flip_last_byte,
        lambda doc: doc.update(sealed="zz"),
        lambda doc: doc.pop("sealed"),
        lambda doc: doc.update(sealed=[1, 2]),
    ],
)
def test_a_tampered_copy_is_refused(tmp_path, tamper):
    plain = _plaintext("2 Elm St")
    path = keep_address(tmp_path, "shopper", BUYER, plain)
    doc = json.loads(path.read_text())
    tamper(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="does not open"):
        kept_address(tmp_path, "shopper", BUYER, commitment(plain))


def test_a_copy_of_another_order_is_refused(tmp_path):
    # The buyer's own, genuine copy of one order put where another order's copy goes.
    first, second = _plaintext("3 Oak St"), _plaintext("4 Pine St")
    source = keep_address(tmp_path, "shopper", BUYER, first)
    target = keep_address(tmp_path, "shopper", BUYER, second)
    target.write_bytes(source.read_bytes())
    with pytest.raises(KeystoreError, match="does not match the order's commitment"):
        kept_address(tmp_path, "shopper", BUYER, commitment(second))


def test_a_kept_address_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    # A FIFO where a kept copy goes would block every command that reads it, for ever.
    plain = _plaintext("5 Ash St")
    path = keep_address(tmp_path, "shopper", BUYER, plain)
    path.unlink()
    with fifo_holding(path, 64 * 1024 + 1):
        with pytest.raises(KeystoreError, match="is not a regular file but a FIFO"):
            kept_address(tmp_path, "shopper", BUYER, commitment(plain))
