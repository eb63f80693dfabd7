"""The transfer handler, executed through blocks."""

from core.keys import format_address
from tests.vm.helpers import KEYS, PRODUCER, balance, context, funded, transfer
from vm import (
    Account,
    Event,
    Executor,
    Registry,
    Transfer,
    TxType,
    account_key,
    apply_transfer,
    default_registry,
)

EXECUTOR = Executor(default_registry())
A, B = KEYS[0].address, KEYS[1].address


def run(state, *vtxs):
    return EXECUTOR.execute_block(state, list(vtxs), context(), strict=True)


def test_transfer_moves_tokens_and_emits_an_event():
    result = run(funded(1_000, 50), transfer(KEYS[0], 0, B, 300, fee=10))
    (receipt,) = result.receipts
    assert receipt.ok and receipt.fee == 10 and receipt.message == ""
    assert receipt.events == (Event.of("transfer", sender=A, recipient=B, amount=300),)
    assert result.changes == {
        account_key(A): Account(690, 1).encode(),
        account_key(B): Account(350, 0).encode(),
        account_key(PRODUCER): Account(10, 0).encode(),
    }


def test_transfer_to_a_new_account_creates_it():
    new = KEYS[5].address
    result = run(funded(1_000), transfer(KEYS[0], 0, new, 1))
    assert result.changes[account_key(new)] == Account(1, 0).encode()


def test_transfer_to_oneself_only_costs_the_fee():
    result = run(funded(1_000), transfer(KEYS[0], 0, A, 400))
    assert result.receipts[0].ok
    assert result.changes[account_key(A)] == Account(990, 1).encode()


def test_invalid_amount():
    result = run(funded(1_000), transfer(KEYS[0], 0, B, 0))
    (receipt,) = result.receipts
    assert (receipt.code, receipt.message) == ("invalid_amount", "amount must be positive, got 0")
    assert receipt.events == ()


def test_insufficient_funds_after_the_fee():
    # 100 covers the fee (10) but not the fee and the amount.
    result = run(funded(100), transfer(KEYS[0], 0, B, 95))
    (receipt,) = result.receipts
    assert receipt.code == "insufficient_funds"
    assert receipt.message == "balance 90 is less than the amount 95"
    state = result.changes
    assert state[account_key(A)] == Account(90, 1).encode()
    assert account_key(B) not in state


def test_spending_everything_leaves_the_nonce():
    result = run(funded(100), transfer(KEYS[0], 0, B, 90))
    assert result.receipts[0].ok
    assert balance(result.changes, A) == 0
    assert result.changes[account_key(A)] == Account(0, 1).encode()


# --- module accounts ---

POOL = bytes([0xAB]) * 20


def module_executor() -> Executor:
    """The default registry with POOL registered after it, as a higher layer would."""
    registry = default_registry()
    registry.add_module_account(POOL, "test_pool")
    return Executor(registry)


def test_transfer_to_a_module_account_is_refused_and_pays_the_fee():
    state = funded(1_000)
    state[account_key(POOL)] = Account(70, 0).encode()
    result = module_executor().execute_block(
        state, [transfer(KEYS[0], 0, POOL, 300, fee=10)], context(), strict=True
    )
    (receipt,) = result.receipts
    assert (receipt.code, receipt.fee, receipt.events) == ("module_account", 10, ())
    assert receipt.message == (
        f"recipient must not be a module account, got {format_address(POOL)} "
        "(the test_pool module account)"
    )
    # Only the fee moved: the sender paid it (and its nonce), the producer got it.
    assert result.changes == {
        account_key(A): Account(990, 1).encode(),
        account_key(PRODUCER): Account(10, 0).encode(),
    }


def test_transfer_next_to_a_module_account_still_works():
    result = module_executor().execute_block(
        funded(1_000, 50), [transfer(KEYS[0], 0, B, 300, fee=10)], context(), strict=True
    )
    assert result.receipts[0].ok
    assert balance(result.changes, A) == 690 and balance(result.changes, B) == 350


def test_apply_transfer_alone_knows_no_module_accounts():
    # Registered without the registry's binding, the handler has nothing to refuse.
    registry = Registry()
    registry.register(TxType("transfer", Transfer, apply_transfer))
    registry.add_module_account(POOL, "test_pool")
    result = Executor(registry).execute_block(
        funded(1_000), [transfer(KEYS[0], 0, POOL, 300)], context(), strict=True
    )
    assert result.receipts[0].ok and balance(result.changes, POOL) == 300
