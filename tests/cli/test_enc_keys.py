"""A merchant's X25519 key files: found by name, refused when they are not files."""

from __future__ import annotations

import pytest

import cli.main  # noqa: F401  # first: the command modules import cli.main
from cli.commerce.enc_keys import enc_key_new, enc_keys_of
from core.keystore import KeystoreError
from tests.fifos import fifo_holding


def test_a_key_file_is_found_by_its_name(tmp_path):
    public = enc_key_new(tmp_path, "shop", "pass phrase")
    assert [found for found, _ in enc_keys_of(tmp_path, "shop")] == [public]
    assert enc_keys_of(tmp_path, "other") == []


def test_a_key_file_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    # A FIFO among the key files would block every command that lists them, for ever.
    enc_key_new(tmp_path, "shop", "pass phrase")
    [(_, path)] = enc_keys_of(tmp_path, "shop")
    fifo = path.with_name("shop.0123456789abcdef.json")
    with fifo_holding(fifo, 64 * 1024 + 1):
        with pytest.raises(KeystoreError, match="is not a regular file but a FIFO"):
            enc_keys_of(tmp_path, "shop")
