"""Transaction type declarations: what they accept, what is derived from them, and the
executor's check that holds each transaction to its type's declaration."""

import pytest

from core.errors import InvalidTransaction, NodeFault
from tests.vm.helpers import KEYS, context, funded, transfer
from vm import (
    TX_TYPES,
    Event,
    Executor,
    KeyPrefix,
    Registry,
    Transfer,
    TxClass,
    TxFailed,
    TxTable,
    TxType,
    default_registry,
    error_codes,
    feed_kinds,
    shared_codes,
)
from vm.transfer import apply_transfer

B = KEYS[1].address
ACCOUNT = KeyPrefix.ACCOUNT
OTHER = 0x7F


def noop(state, tx, payload, ctx):
    pass


def test_a_declaration_is_frozen_and_checked():
    decl = TxType("t", Transfer, noop, codes={"bad": "x"}, events=["e"], writes=[ACCOUNT])
    assert decl.events == frozenset({"e"}) and decl.writes == frozenset({ACCOUNT})
    with pytest.raises(TypeError):
        decl.codes["other"] = "y"  # type: ignore[index]  # deliberately writes a read-only view
    with pytest.raises(ValueError, match="executor's"):
        TxType("t", Transfer, noop, codes={"ok": "fine"})
    with pytest.raises(ValueError, match="executor's"):
        TxType("t", Transfer, noop, codes={"c" * 33: "too long for a receipt"})
    with pytest.raises(ValueError, match="not emitted"):
        TxType("t", Transfer, noop, events={"a"}, feed={"b"})
    with pytest.raises(ValueError, match="read-only or written"):
        TxType("t", Transfer, noop, reads={ACCOUNT}, writes={ACCOUNT})
    with pytest.raises(ValueError, match="read-only or written"):
        TxType("t", Transfer, noop, writes={256})


def test_a_table_declares_on_the_handler_and_keeps_it_callable():
    table = TxTable(TxClass.COMMERCE)

    @table.declare("t", Transfer, "does nothing", codes={"c": "a code"}, events={"e"})
    def handler(state, tx, payload, ctx):
        return None

    (decl,) = table
    assert (decl.name, decl.handler, decl.tx_class, decl.summary) == (
        "t",
        handler,
        TxClass.COMMERCE,
        "does nothing",
    )
    with pytest.raises(ValueError, match="declared twice"):
        table.declare("t", Transfer, "again", codes={}, events=set())


def test_the_registry_serves_the_declarations():
    r = default_registry()
    decl, *currency_types = r.declarations
    assert r.declaration("transfer") is decl and decl.name == "transfer"
    assert [t.name for t in currency_types] == [
        "currency.mint",
        "currency.burn",
        "currency.attest",
        "currency.transfer",
    ]
    # Registered bound to the registry's module accounts; the vm's own stays unbound.
    assert decl.handler is not apply_transfer and TX_TYPES[0].handler is apply_transfer
    assert r.tx_class("transfer") == TxClass.TRANSFER
    with pytest.raises(InvalidTransaction) as exc:
        r.declaration("mint")  # the currency types are named currency.*
    assert exc.value.code == "unknown_type"


def test_code_tables_and_feed_kinds_are_derived_and_consistent():
    a = TxType("a", Transfer, noop, codes={"x": "one", "y": "two"}, events={"f", "g"}, feed={"f"})
    b = TxType("b", Transfer, noop, codes={"y": "two", "z": "three"}, events={"f"}, feed={"f"})
    assert error_codes([a, b]) == {"x": "one", "y": "two", "z": "three"}
    assert list(error_codes([a, b])) == ["x", "y", "z"]
    assert feed_kinds([a, b]) == {"f"}
    with pytest.raises(ValueError, match="means"):
        error_codes([a, TxType("c", Transfer, noop, codes={"y": "other"})])
    with pytest.raises(ValueError, match="as not feed"):
        feed_kinds([a, TxType("c", Transfer, noop, events={"f"})])
    assert shared_codes({"x": "one", "y": "two"}, "y") == {"y": "two"}
    with pytest.raises(KeyError):
        shared_codes({"x": "one"}, "nope")


# --- the executor's check ---


def checking(**declared):
    """An executor that checks declarations, with one type "transfer" as declared."""
    registry = Registry()
    registry.register(TxType("transfer", Transfer, **declared))
    return Executor(registry, check_declarations=True)


def run(executor, amount=5):
    return executor.execute_block(
        funded(1_000), [transfer(KEYS[0], 0, B, amount)], context(), strict=True
    )


def test_a_transaction_within_its_declaration_passes_and_changes_nothing_of_the_result():
    declared = {
        "handler": apply_transfer,
        "codes": {"invalid_amount": "0", "insufficient_funds": "short"},
        "events": {"transfer"},
        "writes": {ACCOUNT},
    }
    plain = Registry()
    plain.register(TxType("transfer", Transfer, apply_transfer))
    for amount in (5, 0, 10**6):
        checked, unchecked = run(checking(**declared), amount), run(Executor(plain), amount)
        assert checked.receipts == unchecked.receipts and checked.changes == unchecked.changes
    # The executor's own fee and nonce write is not the handler's.
    assert run(checking(handler=noop)).receipts[0].ok


def strays(executor, amount=5):
    with pytest.raises(NodeFault, match="strays from its declaration") as info:
        run(executor, amount)
    return str(info.value)


def test_an_undeclared_write_read_code_or_event_is_caught():
    def writes(state, tx, payload, ctx):
        state.set(bytes([OTHER]) + b"k", b"v")

    def reads(state, tx, payload, ctx):
        state.get(bytes([OTHER]) + b"k")

    def fails(state, tx, payload, ctx):
        raise TxFailed("sold out: expected 1, got 0", "out_of_stock")

    def emits(state, tx, payload, ctx):
        state.emit(Event.of("surprise"))

    def writes_then_fails(state, tx, payload, ctx):
        writes(state, tx, payload, ctx)
        fails(state, tx, payload, ctx)

    assert "transfer wrote prefix 0x7f" in strays(checking(handler=writes, reads={OTHER}))
    assert "transfer read prefix 0x7f" in strays(checking(handler=reads))
    assert "gave code 'out_of_stock'" in strays(checking(handler=fails))
    assert "emitted 'surprise'" in strays(checking(handler=emits))
    # What a failed transaction touched before failing counts too (its keys conflict).
    declared = {"codes": {"out_of_stock": "none left"}, "reads": {OTHER}}
    assert "wrote prefix 0x7f" in strays(checking(handler=writes_then_fails, **declared))


def test_declared_reads_writes_codes_and_events_pass():
    def busy(state, tx, payload, ctx):
        state.get(bytes([OTHER]) + b"k")
        state.set(bytes([ACCOUNT]) + bytes(20), b"")
        state.delete(bytes([ACCOUNT]) + bytes(20))
        state.emit(Event.of("busy"))
        raise TxFailed("busy: expected calm, got busy", "busy")

    executor = checking(
        handler=busy, codes={"busy": "too busy"}, events={"busy"}, reads={OTHER}, writes={ACCOUNT}
    )
    assert run(executor).receipts[0].code == "busy"
