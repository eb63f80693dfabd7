"""Block execution: inclusion rules, strict vs building, fees, failures, determinism."""

from dataclasses import dataclass
from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec import MaxItems, MaxLen, Wire
from core.errors import InvalidBlock, InvalidTransaction, NodeFault
from storage import MAX_KEY_SIZE, MAX_VALUE_SIZE
from tests.vm.helpers import (
    CHAIN,
    KEYS,
    PARAMS,
    PRODUCER,
    REGISTRY,
    apply_changes,
    balance,
    context,
    funded,
    signed,
    transfer,
)
from vm import (
    Account,
    ChainParams,
    Event,
    Executor,
    KeyPrefix,
    Registry,
    Transfer,
    TxFailed,
    TxType,
    account_key,
    default_registry,
    get_account,
    put_account,
    verify_signed_tx,
)
from vm.receipts import MAX_EVENTS
from vm.transfer import apply_transfer

EXECUTOR = Executor(REGISTRY)
A, B, C = (k.address for k in KEYS[:3])


def build(state, vtxs, ctx=None, executor=EXECUTOR):
    return executor.execute_block(state, vtxs, ctx or context(), strict=False)


def validate(state, vtxs, ctx=None, executor=EXECUTOR):
    return executor.execute_block(state, vtxs, ctx or context(), strict=True)


def test_empty_block_changes_nothing():
    result = validate(funded(5), [])
    assert (result.changes, result.receipts, result.included, result.rejected) == ({}, [], [], [])


def test_base_state_is_never_written():
    state = funded(1_000)
    before = dict(state)
    validate(state, [transfer(KEYS[0], 0, B, 5)])
    assert state == before


def test_a_failed_tx_pays_its_fee_bumps_its_nonce_and_gets_its_code():
    vtxs = [transfer(KEYS[0], 0, B, 10**6, fee=25), transfer(KEYS[0], 1, B, 7, fee=10)]
    result = validate(funded(1_000), vtxs)
    codes = [r.code for r in result.receipts]
    assert codes == ["insufficient_funds", "ok"]
    assert result.receipts[0].fee == 25 and result.receipts[0].events == ()
    # The fee is paid before the handler runs, so it sees 975 left.
    assert result.receipts[0].message == "balance 975 is less than the amount 1000000"
    assert result.changes[account_key(A)] == Account(1_000 - 25 - 10 - 7, 2).encode()
    assert balance(result.changes, PRODUCER) == 35


def test_replay_of_an_old_nonce_is_rejected():
    vtx = transfer(KEYS[0], 0, B, 5)
    state = apply_changes(funded(1_000), validate(funded(1_000), [vtx]).changes)
    # In the next block, the same signed tx again:
    with pytest.raises(InvalidBlock, match="nonce_too_low"):
        validate(state, [vtx], context(2))
    result = build(state, [vtx], context(2))
    assert result.included == [] and result.rejected[0][1].code == "nonce_too_low"
    with pytest.raises(InvalidTransaction) as exc:
        EXECUTOR.check_admission(state, vtx, 1, PARAMS)
    assert exc.value.code == "nonce_too_low"
    # And twice within one block.
    with pytest.raises(InvalidBlock, match="tx 1 .*nonce_too_low"):
        validate(funded(1_000), [vtx, vtx])


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda: transfer(KEYS[0], 1, B, 5), "nonce_gap"),
        (lambda: transfer(KEYS[0], 0, B, 5, expiry=0), "expired"),
        (lambda: transfer(KEYS[0], 0, B, 5, expiry=1 + PARAMS.max_expiry_blocks + 1), "expired"),
        (lambda: transfer(KEYS[0], 0, B, 5, fee=9), "fee_too_low"),
        (lambda: transfer(KEYS[2], 0, B, 5), "insufficient_fee"),
        (lambda: transfer(KEYS[0], 0, B, 5, chain="other"), "wrong_chain"),
    ],
)
def test_strict_raises_and_building_skips(make, code):
    bad = make()
    good = [transfer(KEYS[1], 0, C, 5), transfer(KEYS[1], 1, C, 5)]
    txs = [good[0], bad, good[1]]
    with pytest.raises(InvalidBlock) as exc:
        validate(funded(1_000, 1_000), txs)
    assert f"tx 1 ({bad.hash.hex()})" in exc.value.message and code in exc.value.message
    assert exc.value.__cause__.code == code
    result = build(funded(1_000, 1_000), txs)
    assert result.included == good
    assert [(v, e.code) for v, e in result.rejected] == [(bad, code)]
    assert len(result.receipts) == 2


_LAST_NONCE = 2**64 - 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast_path", "generic"])
def test_a_sender_at_the_last_nonce_is_left_out_not_a_fault(fast):
    """The sender's next nonce would be 2**64, which no account holds: the builder leaves
    the transaction out and a validator refuses a block with it (``InvalidBlock``);
    neither raises anything else, on the transfer's fast path or the generic one."""
    if fast:
        executor = EXECUTOR
    else:
        registry = Registry()
        registry.register(TxType("transfer", Transfer, apply_transfer))
        executor = Executor(registry)
    state = funded(1_000, 1_000, nonces=(_LAST_NONCE,))
    bad = transfer(KEYS[0], _LAST_NONCE, B, 5)
    good = transfer(KEYS[1], 0, C, 5)
    result = build(state, [bad, good], executor=executor)
    assert result.included == [good]
    assert [(v, e.code) for v, e in result.rejected] == [(bad, "nonce_exhausted")]
    with pytest.raises(InvalidBlock, match="nonce_exhausted"):
        validate(state, [bad, good], executor=executor)


def test_an_expiry_at_the_block_height_is_still_valid():
    result = validate(funded(1_000), [transfer(KEYS[0], 0, B, 5, expiry=7)], context(7))
    assert result.receipts[0].ok


def test_unknown_type_in_a_block():
    vtx = transfer(KEYS[0], 0, B, 5)
    with pytest.raises(InvalidBlock, match="unknown_type"):
        validate(funded(1_000), [vtx], executor=Executor(Registry()))
    result = build(funded(1_000), [vtx], executor=Executor(Registry()))
    assert result.rejected[0][1].code == "unknown_type"


def test_a_block_names_the_types_it_included_not_those_it_left_out():
    registry = default_registry()
    registry.register(TxType("other", Transfer, apply_transfer))
    vtxs = [
        transfer(KEYS[0], 0, B, 5),
        verify_signed_tx(
            signed(KEYS[1], 0, Transfer(C, 5), tx_type="other", fee=9),
            CHAIN,
            registry,
            PARAMS.max_tx_bytes,
        ),
    ]
    result = build(funded(1_000, 1_000), vtxs, executor=Executor(registry))
    assert result.types == {"transfer"} and [e.code for _, e in result.rejected] == ["fee_too_low"]
    assert build(funded(1_000), [], executor=Executor(registry)).types == set()


def test_a_later_nonce_of_a_rejected_sender_is_a_gap_not_too_low():
    vtxs = [transfer(KEYS[0], 0, B, 5, fee=9), transfer(KEYS[0], 1, B, 5)]
    result = build(funded(1_000), vtxs)
    assert [e.code for _, e in result.rejected] == ["fee_too_low", "nonce_gap"]


def test_block_tx_count_limit():
    params = ChainParams(min_fee=10, max_block_txs=2, max_expiry_blocks=100)
    vtxs = [transfer(KEYS[0], n, B, 5) for n in range(3)]
    with pytest.raises(InvalidBlock, match="3 transactions, the limit is 2"):
        validate(funded(1_000), vtxs, context(params=params))
    result = build(funded(1_000), vtxs, context(params=params))
    # Building stops: the third is neither included nor rejected (it stays in the mempool).
    assert result.included == vtxs[:2] and result.rejected == []


def test_block_byte_limit():
    vtxs = [transfer(KEYS[0], n, B, 5) for n in range(3)]
    size = vtxs[0].size
    params = ChainParams(
        min_fee=10, max_block_bytes=2 * size + 1, max_tx_bytes=size + 1, max_expiry_blocks=100
    )
    with pytest.raises(InvalidBlock, match="the limit is"):
        validate(funded(1_000), vtxs, context(params=params))
    result = build(funded(1_000), vtxs, context(params=params))
    assert result.included == vtxs[:2] and result.rejected == []


def test_rejected_txs_do_not_use_block_room():
    params = ChainParams(min_fee=10, max_block_txs=1, max_expiry_blocks=100)
    vtxs = [transfer(KEYS[0], 5, B, 5), transfer(KEYS[1], 0, B, 5)]
    result = build(funded(1_000, 1_000), vtxs, context(params=params))
    assert result.included == vtxs[1:] and len(result.rejected) == 1


def test_tx_over_the_current_size_limit():
    vtx = transfer(KEYS[0], 0, B, 5)
    params = ChainParams(min_fee=10, max_tx_bytes=vtx.size - 1, max_expiry_blocks=100)
    with pytest.raises(InvalidBlock, match="too_large"):
        validate(funded(1_000), [vtx], context(params=params))


def test_fees_go_to_the_producer_once_per_block():
    vtxs = [transfer(KEYS[0], 0, B, 5, fee=10), transfer(KEYS[1], 0, A, 5, fee=30)]
    result = validate(funded(1_000, 1_000), vtxs)
    assert balance(result.changes, PRODUCER) == 40
    assert get_account(apply_changes({}, result.changes), PRODUCER) == Account(40, 0)


def test_a_producer_that_sends_gets_its_fees_after_the_block():
    ctx = context(producer=A)
    result = validate(funded(1_000), [transfer(KEYS[0], 0, B, 100, fee=10)], ctx)
    assert result.changes[account_key(A)] == Account(900, 1).encode()
    # Fees are credited after the last tx: a producer cannot spend this block's fees in it.
    vtxs = [transfer(KEYS[0], 0, B, 5, fee=10), transfer(KEYS[0], 1, B, 5, fee=10)]
    with pytest.raises(InvalidBlock, match="insufficient_fee"):
        validate(funded(19), vtxs, ctx)


def _failing_registry(exc):
    registry = Registry()

    def handler(state, tx, payload, ctx):
        put_account(state, tx.sender_address, Account(0, 99))
        state.emit(Event.of("never"))
        raise exc

    registry.register(TxType("transfer", Transfer, handler))
    return registry


def test_tx_failed_reverts_the_handler_but_not_the_fee():
    registry = _failing_registry(TxFailed("sold out: expected stock >= 1, got 0", "out_of_stock"))
    result = validate(funded(1_000), [transfer(KEYS[0], 0, B, 5)], executor=Executor(registry))
    (receipt,) = result.receipts
    assert (receipt.code, receipt.events, receipt.fee) == ("out_of_stock", (), 10)
    assert result.changes[account_key(A)] == Account(990, 1).encode()


def test_long_failure_messages_are_bounded():
    registry = _failing_registry(TxFailed("x" * 10_000, "long"))
    result = validate(funded(1_000), [transfer(KEYS[0], 0, B, 5)], executor=Executor(registry))
    assert len(result.receipts[0].message) == 256


@pytest.mark.parametrize("exc", [KeyError("bug"), ValueError("bug"), NodeFault("disk")])
def test_any_other_handler_exception_halts(exc):
    executor = Executor(_failing_registry(exc))
    for strict in (True, False):
        with pytest.raises(NodeFault, match="raised") as info:
            executor.execute_block(
                funded(1_000), [transfer(KEYS[0], 0, B, 5)], context(), strict=strict
            )
        assert info.value.__cause__ is exc


@dataclass(frozen=True, slots=True)
class _NotWire:
    """A record class a handler might write by mistake: a dataclass, but no ``Wire``."""

    total: int


@pytest.mark.parametrize("obj", [_NotWire(1), {"total": 1}, 7, Account])
def test_a_handler_writing_a_non_wire_object_halts_naming_key_and_class(obj):
    registry = Registry()

    def handler(state, tx, payload, ctx):
        state.set_obj(b"\x7ftally", obj)

    registry.register(TxType("transfer", Transfer, handler))
    for strict in (True, False):
        with pytest.raises(NodeFault) as info:
            Executor(registry).execute_block(
                funded(1_000), [transfer(KEYS[0], 0, B, 5)], context(), strict=strict
            )
        assert b"\x7ftally".hex() in str(info.value)
        assert type(obj).__name__ in str(info.value)


def test_a_begin_block_hook_writing_a_non_wire_object_halts_naming_key_and_class():
    registry = Registry()
    registry.add_begin_block(lambda state, ctx: state.set_obj(b"\x7ftally", _NotWire(1)))
    with pytest.raises(NodeFault, match="begin-block hooks wrote bad state at 1") as info:
        validate({}, [], executor=Executor(registry))
    assert b"\x7ftally".hex() in str(info.value) and "_NotWire" in str(info.value)


@dataclass(frozen=True, slots=True)
class _Bucket(Wire):
    """A growing state record, as a deal bucket or a release queue is."""

    items: Annotated[tuple[bytes, ...], MaxItems(4)]


_BIG = bytes(MAX_VALUE_SIZE + 1)


@dataclass(frozen=True, slots=True)
class _Tally(Wire):
    """A record whose largest encoding is far under the cap: only its fields are checked."""

    total: int
    seen: Annotated[tuple[int, ...], MaxItems(2)]


@dataclass(frozen=True, slots=True)
class _Tight(Wire):
    """A record whose own MAX_ENCODED is under what its fields allow."""

    blob: Annotated[bytes, MaxLen(100)]

    MAX_ENCODED = 40


@dataclass(frozen=True, slots=True)
class _Ledger(Wire):
    """A record that nests others (an order its terms, a bucket its entries)."""

    tally: _Tally
    more: Annotated[tuple[_Tally, ...], MaxItems(2)]


@pytest.mark.parametrize(
    "record",
    [
        _Ledger({"total": 1, "seen": ()}, ()),
        _Ledger(_NotWire(1), ()),
        _Ledger(_Tally(1, ()), ("x",)),
        _Ledger(Account(1, 1), ()),
    ],
    ids=["dict", "other class", "str in tuple", "other record"],
)
def test_a_record_nesting_a_non_record_halts_naming_key_and_class(record):
    # As a top-level value that is no record: the handler's bug, told as this node's
    # fault with the key and the class, not an AttributeError out of the encoder.
    registry = Registry()
    registry.register(
        TxType("transfer", Transfer, lambda state, tx, p, ctx: state.set_obj(b"\x7fl", record))
    )
    with pytest.raises(NodeFault) as info:
        validate(funded(1_000), [transfer(KEYS[0], 0, B, 5)], executor=Executor(registry))
    assert b"\x7fl".hex() in str(info.value) and "_Ledger" in str(info.value)


@pytest.mark.parametrize(
    "write, message",
    [
        # Over the state tree's value cap (a record grown by many transactions).
        (lambda s: s.set(b"\x7f" + b"big", _BIG), "at most"),
        (lambda s: s.set_obj(b"\x7fbucket", _Bucket((_BIG,))), "at most"),
        # More items than the record's own bound: it could not be read back.
        (lambda s: s.set_obj(b"\x7fbucket", _Bucket((b"x",) * 5)), "at most 4 items"),
        # Over a record's own MAX_ENCODED, though within its fields' bounds.
        (lambda s: s.set_obj(b"\x7ftight", _Tight(b"x" * 60)), "encoding too large"),
        # Out of range or of the wrong type in a record that is otherwise small.
        (lambda s: s.set_obj(b"\x7ftally", _Tally(2**64, ())), "outside its encoding's range"),
        (lambda s: s.set_obj(b"\x7ftally", _Tally(-1, ())), "out of range"),
        (lambda s: s.set_obj(b"\x7ftally", _Tally(True, ())), "expected int, got bool"),
        (lambda s: s.set_obj(b"\x7ftally", _Tally(1, (1, 2, 3))), "at most 2 items"),
        # An amount past u64, and one below zero (unchecked arithmetic in a handler).
        (lambda s: put_account(s, C, Account(2**64, 0)), "must be in 0.."),
        (lambda s: put_account(s, C, Account(-1, 0)), "must be in 0.."),
        # In range but not an integer (true division, a comparison): no node could read
        # the account back, and accounts are not checked again after ``put_account``.
        (lambda s: put_account(s, C, Account(1.5, 0)), "as integers"),
        (lambda s: put_account(s, C, Account(True, 0)), "as integers"),
        (lambda s: put_account(s, C, Account(1, False)), "as integers"),
        # A key longer than the state tree takes.
        (lambda s: s.set(bytes(MAX_KEY_SIZE + 1), b"v"), "state key is"),
    ],
)
def test_a_write_no_node_could_store_fails_its_tx_not_the_block(write, message):
    registry = Registry()

    def handler(state, tx, payload, ctx):
        if payload.amount == 1:
            write(state)
            state.emit(Event.of("never"))
        else:
            apply_transfer(state, tx, payload, ctx)

    registry.register(TxType("transfer", Transfer, handler))
    executor = Executor(registry)
    vtxs = [transfer(KEYS[0], 0, B, 1), transfer(KEYS[0], 1, B, 5)]
    built = build(funded(1_000), vtxs, executor=executor)
    bad, good = built.receipts
    assert (bad.code, bad.fee, bad.events) == ("state_limit", 10, ())
    assert message in bad.message
    assert good.code == "ok" and balance(built.changes, B) == 5
    # Nothing of the failed write reaches the block's changes, which all decode.
    assert all(len(k) <= MAX_KEY_SIZE for k in built.changes)
    assert all(v is None or len(v) <= MAX_VALUE_SIZE for v in built.changes.values())
    # Validating the block gives the same receipts and changes.
    checked = validate(funded(1_000), built.included, executor=executor)
    assert checked.receipts == built.receipts and checked.changes == built.changes


def test_a_record_rewritten_by_each_transaction_is_checked_in_what_each_changes():
    """Later writes of a record are checked against the last one found storable: each
    transaction's change is looked at, whatever the one before it did."""
    key = b"\x7ftally"
    registry = Registry()

    def handler(state, tx, payload, ctx):
        old = state.get_obj(key, _Tally) or _Tally(0, ())
        amount = payload.amount
        if amount == 1:
            # Past u64: the transaction fails, the record keeps its last good value.
            state.set_obj(key, _Tally(old.total + 2**64, old.seen))
        elif amount == 2:
            # Two writes in one transaction, the first bad; the second keeps its bad field.
            bad = _Tally(2**64, old.seen)
            state.set_obj(key, bad)
            state.set_obj(key, _Tally(bad.total, (7,)))
        elif amount == 3:
            state.set_obj(key, _Tally(old.total, (*old.seen, 9)))  # a third item: over
        else:
            state.set_obj(key, _Tally(old.total + amount, old.seen))

    registry.register(TxType("transfer", Transfer, handler))
    executor = Executor(registry)
    amounts = [5, 1, 6, 2, 3, 4]
    vtxs = [transfer(KEYS[0], n, B, a) for n, a in enumerate(amounts)]
    base = funded(1_000)
    base[key] = _Tally(100, (1, 2)).encode()
    built = build(base, vtxs, executor=executor)
    codes = ["ok", "state_limit", "ok", "state_limit", "state_limit", "ok"]
    assert [r.code for r in built.receipts] == codes
    assert _Tally.decode(built.changes[key]) == _Tally(115, (1, 2))
    checked = validate(base, built.included, executor=executor)
    assert checked.receipts == built.receipts and checked.changes == built.changes


def test_begin_block_hooks_run_first_in_order_and_their_events_are_kept():
    registry = Registry()
    registry.register(TxType("transfer", Transfer, apply_transfer))
    seen = []

    def grant(state, ctx):
        seen.append(("grant", ctx.height))
        put_account(state, A, Account(500, 0))
        state.emit(Event.of("grant", height=ctx.height))

    def second(state, ctx):
        seen.append(("second", get_account(state, A).balance))

    registry.add_begin_block(grant)
    registry.add_begin_block(second)
    # A holds nothing in the base state: only the hook's grant pays for this tx.
    result = validate({}, [transfer(KEYS[0], 0, B, 5)], context(3), executor=Executor(registry))
    assert seen == [("grant", 3), ("second", 500)]
    assert result.begin_events == [Event.of("grant", height=3)]
    assert result.receipts[0].events == (Event.of("transfer", sender=A, recipient=B, amount=5),)


def test_a_failing_begin_block_hook_halts():
    registry = Registry()
    registry.add_begin_block(lambda state, ctx: 1 / 0)
    with pytest.raises(NodeFault, match="begin-block hook"):
        validate({}, [], executor=Executor(registry))


def test_a_begin_block_hook_that_writes_what_no_node_could_store_halts():
    # A hook is the chain's own logic: its bad write is this node's bug, never the
    # block's (a DecodeError let out would read as an invalid proposal).
    registry = Registry()
    registry.register(TxType("transfer", Transfer, apply_transfer))
    registry.add_begin_block(lambda state, ctx: state.set(b"\x7fbig", _BIG))
    for strict in (True, False):
        with pytest.raises(NodeFault, match="begin-block hooks wrote bad state at 1") as info:
            Executor(registry).execute_block({}, [], context(), strict=strict)
        assert "at most" in str(info.value)


def test_a_handler_past_the_receipt_event_bound_halts():
    # A receipt decodes with at most MAX_EVENTS events: one with more would be
    # committed and then unreadable by every node, so the node stops at once.
    registry = Registry()

    def chatty(state, tx, payload, ctx):
        for i in range(payload.amount):
            state.emit(Event.of("tick", i=i))

    registry.register(TxType("transfer", Transfer, chatty))
    executor = Executor(registry)
    fine = validate(funded(1_000), [transfer(KEYS[0], 0, B, MAX_EVENTS)], executor=executor)
    assert len(fine.receipts[0].events) == MAX_EVENTS
    with pytest.raises(NodeFault, match=f"emitted {MAX_EVENTS + 1} events"):
        validate(funded(1_000), [transfer(KEYS[0], 0, B, MAX_EVENTS + 1)], executor=executor)


def test_a_producer_account_that_does_not_decode_halts_at_the_fee_credit():
    # The fees are credited after the last transaction: corrupt state there is this
    # node's fault too, whichever path the transactions took.
    state = funded(1_000)
    state[account_key(PRODUCER)] = b"\xc1"
    for check in (False, True):
        with pytest.raises(NodeFault, match="undecodable account"):
            validate(
                state,
                [transfer(KEYS[0], 0, B, 5)],
                executor=Executor(REGISTRY, check_declarations=check),
            )
    # No fees, no credit: a block of none reads nothing of the producer's.
    assert validate(state, []).changes == {}


def test_corrupt_account_state_is_a_node_fault():
    state = funded(1_000)
    state[account_key(A)] = b"\xc1"
    vtx = transfer(KEYS[0], 0, B, 5)
    with pytest.raises(NodeFault, match="undecodable"):
        validate(state, [vtx])
    with pytest.raises(NodeFault, match="undecodable"):
        EXECUTOR.check_admission(state, vtx, 0, PARAMS)


def test_same_inputs_give_the_same_changes_and_receipts():
    vtxs = [
        transfer(KEYS[0], 0, B, 5),
        transfer(KEYS[1], 0, C, 10**9),
        transfer(KEYS[0], 1, C, 7, fee=99),
        transfer(KEYS[2], 0, A, 1),
    ]
    state = funded(1_000, 1_000, 50)
    first = build(state, vtxs)
    again = build(dict(state), list(vtxs))
    assert list(first.changes.items()) == list(again.changes.items())
    assert [r.encode() for r in first.receipts] == [r.encode() for r in again.receipts]
    # Validating the built block reproduces it exactly.
    checked = validate(state, first.included)
    assert checked.changes == first.changes and checked.receipts == first.receipts


# --- property: tokens are conserved, no balance goes negative ---

SENDERS = KEYS[:4]
ADDRESSES = [k.address for k in SENDERS] + [KEYS[4].address, PRODUCER]
_SIGNED: dict = {}


def _vtx(key_i, nonce, to_i, amount, fee, expiry):
    # Signing is the slow part; the same tx recurs across examples.
    k = (key_i, nonce, to_i, amount, fee, expiry)
    if k not in _SIGNED:
        raw = signed(
            SENDERS[key_i], nonce, Transfer(ADDRESSES[to_i], amount), fee=fee, expiry=expiry
        )
        _SIGNED[k] = verify_signed_tx(raw, "vm-test", REGISTRY, PARAMS.max_tx_bytes)
    return _SIGNED[k]


tx_specs = st.tuples(
    st.integers(0, 3),  # sender
    st.integers(0, 4),  # nonce (often wrong)
    st.integers(0, 5),  # recipient (includes the producer)
    st.sampled_from([0, 1, 50, 400, 2**63]),  # amount
    st.sampled_from([0, 10, 11, 300, 2**40]),  # fee
    st.sampled_from([0, 1, 5, 500]),  # expiry
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    balances=st.lists(st.sampled_from([0, 5, 100, 1_000, 2**62]), min_size=4, max_size=4),
    specs=st.lists(tx_specs, max_size=12),
    producer_i=st.integers(0, 5),
)
def test_random_blocks_conserve_tokens(balances, specs, producer_i):
    base = funded(*balances)
    supply = sum(balances)
    ctx = context(height=1, producer=ADDRESSES[producer_i])
    vtxs = [_vtx(*s) for s in specs]
    result = build(base, vtxs, ctx)
    after = apply_changes(base, result.changes)
    # Encoding would have failed on a negative balance; check the decoded values too.
    accounts = [Account.decode(v) for v in after.values()]
    assert all(a.balance >= 0 for a in accounts)
    assert sum(a.balance for a in accounts) == supply
    # Every balance moved exactly by the fees and the transfer events.
    delta = dict.fromkeys(ADDRESSES, 0)
    for vtx, receipt in zip(result.included, result.receipts, strict=True):
        delta[vtx.sender_address] -= receipt.fee
        delta[ctx.producer] += receipt.fee
        for event in receipt.events:
            amount = int(event.get("amount"))
            delta[bytes.fromhex(event.get("sender"))] -= amount
            delta[bytes.fromhex(event.get("recipient"))] += amount
    for address in ADDRESSES:
        assert balance(after, address) - balance(base, address) == delta[address]
    assert len(result.included) + len(result.rejected) == len(vtxs)
    for vtx in result.included:
        assert get_account(after, vtx.sender_address).nonce > vtx.body.nonce
    # Each included tx has one receipt; validating the built block agrees.
    assert [r.tx_hash for r in result.receipts] == [v.hash for v in result.included]
    checked = validate(base, result.included, ctx)
    assert checked.changes == result.changes and checked.receipts == result.receipts
    # Transfers and fees write account keys only.
    assert all(k[:1] == bytes([KeyPrefix.ACCOUNT]) for k in result.changes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    balances=st.lists(st.sampled_from([0, 5, 100, 1_000, 2**62]), min_size=4, max_size=4),
    first=st.lists(tx_specs, max_size=10),
    second=st.lists(tx_specs, max_size=10),
)
def test_the_previous_blocks_records_stand_for_the_state_they_were_written_to(
    balances, first, second
):
    """A block's records (the objects it wrote) are what its changes encode, and the
    next block run with them as known gives what it gives reading state."""
    base = funded(*balances)
    one = build(base, [_vtx(*s) for s in first], context(height=1))
    for key, record in one.records.items():
        assert record.encode() == one.changes[key]
    assert set(one.records) == {k for k, v in one.changes.items() if v is not None}
    after = apply_changes(base, one.changes)
    vtxs = [_vtx(*s) for s in second]
    plain = build(after, vtxs, context(height=2))
    seeded = EXECUTOR.execute_block(after, vtxs, context(height=2), strict=False, known=one.records)
    assert seeded.changes == plain.changes
    assert seeded.encoded_receipts == plain.encoded_receipts
    assert seeded.included == plain.included
    assert [(v, e.code) for v, e in seeded.rejected] == [(v, e.code) for v, e in plain.rejected]
    checked = EXECUTOR.execute_block(
        after, plain.included, context(height=2), strict=True, known=one.records
    )
    assert checked.changes == plain.changes


# --- simulation: a receipt without a block ---


def test_simulation_gives_the_receipt_a_block_would_and_writes_nothing():
    state = funded(1_000)
    before = dict(state)
    vtx = transfer(KEYS[0], 0, B, 10**6, fee=25)
    receipt = EXECUTOR.simulate(state, [], vtx, context())
    assert receipt == validate(funded(1_000), [vtx]).receipts[0]
    assert (receipt.code, receipt.fee) == ("insufficient_funds", 25)
    assert EXECUTOR.simulate(state, [], transfer(KEYS[0], 0, B, 5), context()).code == "ok"
    assert state == before


def test_simulation_runs_the_senders_pending_transactions_first():
    state = funded(1_000)
    pending = [transfer(KEYS[0], 0, B, 900), transfer(KEYS[0], 1, B, 10)]
    # Alone it would pass; after the pending 900 (and two fees) it cannot.
    later = transfer(KEYS[0], 2, B, 100)
    assert EXECUTOR.simulate(state, [], transfer(KEYS[0], 0, B, 100), context()).code == "ok"
    assert EXECUTOR.simulate(state, pending, later, context()).code == "insufficient_funds"
    # A replacement of a pending nonce runs after the lower ones only.
    assert EXECUTOR.simulate(state, pending, transfer(KEYS[0], 1, B, 50), context()).code == "ok"
    # Pending transactions the state already holds (committed since) are skipped.
    committed = apply_changes(state, validate(state, pending[:1]).changes)
    assert EXECUTOR.simulate(committed, pending, later, context()).code == "insufficient_funds"


def test_simulation_stops_at_a_pending_transaction_no_block_would_include():
    # The expired nonce 0 would be left out of any block, and with it every later
    # nonce: what is simulated after it is a gap, as a block builder would find.
    state = funded(1_000)
    pending = [transfer(KEYS[0], 0, B, 5, expiry=0), transfer(KEYS[0], 1, B, 5)]
    with pytest.raises(InvalidTransaction) as gap:
        EXECUTOR.simulate(state, pending, transfer(KEYS[0], 2, B, 5), context())
    assert gap.value.code == "nonce_gap"
    assert gap.value.message == "expected nonce 0, got 2"


def test_simulation_on_corrupt_account_state_is_a_node_fault():
    state = funded(1_000)
    state[account_key(A)] = b"\xc1"
    for pending in ([], [transfer(KEYS[0], 0, B, 5)]):
        with pytest.raises(NodeFault, match="undecodable account"):
            EXECUTOR.simulate(state, pending, transfer(KEYS[0], 1, B, 5), context())


def test_simulation_refuses_what_no_block_would_include_next():
    state = funded(1_000, nonces=(3,))
    with pytest.raises(InvalidTransaction) as low:
        EXECUTOR.simulate(state, [], transfer(KEYS[0], 2, B, 5), context())
    with pytest.raises(InvalidTransaction) as gap:
        EXECUTOR.simulate(state, [], transfer(KEYS[0], 4, B, 5), context())
    with pytest.raises(InvalidTransaction) as fee:
        EXECUTOR.simulate(funded(5), [], transfer(KEYS[0], 0, B, 1, fee=10), context())
    assert (low.value.code, gap.value.code, fee.value.code) == (
        "nonce_too_low",
        "nonce_gap",
        "insufficient_fee",
    )
