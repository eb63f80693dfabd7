import pytest

from core.errors import DecodeError, InvalidTransaction
from core.types import TxBody
from vm import Registry, Transfer, TxFailed, TxType, default_registry


def test_default_registry_has_transfer():
    r = default_registry()
    assert r.tx_types == (
        "transfer",
        "currency.mint",
        "currency.burn",
        "currency.attest",
        "currency.transfer",
    )
    body = TxBody(0, 1, 1, "transfer", Transfer(bytes(20), 5).encode())
    assert r.decode_payload(body) == Transfer(bytes(20), 5)


def test_unknown_type_and_malformed_payload():
    r = default_registry()
    with pytest.raises(InvalidTransaction) as exc:
        r.decode_payload(TxBody(0, 1, 1, "mint", b""))
    assert exc.value.code == "unknown_type"
    with pytest.raises(DecodeError) as exc2:
        r.decode_payload(TxBody(0, 1, 1, "transfer", b"\x92\x01"))
    assert exc2.value.code == "malformed"


def test_a_type_registers_once():
    r = Registry()
    r.register(TxType("t", Transfer, lambda *a: None))
    with pytest.raises(ValueError, match="already registered"):
        r.register(TxType("t", Transfer, lambda *a: None))


def test_begin_block_hooks_keep_registration_order():
    r = Registry()
    first, second = (lambda s, c: None), (lambda s, c: None)
    r.add_begin_block(first)
    r.add_begin_block(second)
    assert r.begin_block_hooks == (first, second)


def test_tx_failed_carries_its_code_and_bounds_it():
    exc = TxFailed("no stock left: expected 1, got 0", "out_of_stock")
    assert isinstance(exc, InvalidTransaction)
    assert (exc.code, exc.message) == ("out_of_stock", "no stock left: expected 1, got 0")
    assert TxFailed("x").code == "tx_failed"
    with pytest.raises(ValueError, match="over 32 bytes"):
        TxFailed("x", "c" * 33)
    with pytest.raises(ValueError, match="success code"):
        TxFailed("x", "ok")


def test_module_accounts_are_a_live_read_only_view():
    r = Registry()
    view = r.module_accounts
    assert dict(view) == {}
    r.add_module_account(bytes([1]) * 20, "pool")
    # A handler bound to the view at registration sees accounts added afterwards.
    assert dict(view) == {bytes([1]) * 20: "pool"}
    with pytest.raises(TypeError):
        view[bytes([2]) * 20] = "other"  # type: ignore[index]  # deliberately writes a read-only view


def test_a_module_account_registers_once_and_is_an_address():
    r = Registry()
    r.add_module_account(bytes([1]) * 20, "pool")
    with pytest.raises(ValueError, match="already the module account 'pool'"):
        r.add_module_account(bytes([1]) * 20, "other")
    with pytest.raises(ValueError, match="must be 20 bytes, got 19"):
        r.add_module_account(bytes(19), "short")
