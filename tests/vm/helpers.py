"""Shared builders for the vm tests: keys, funded states, signed transfers."""

from __future__ import annotations

from core.codec import Wire
from core.keys import PrivateKey
from core.types import TxBody, sign_tx
from vm import (
    Account,
    BlockContext,
    ChainParams,
    Executor,
    Transfer,
    VerifiedTx,
    account_key,
    default_registry,
    verify_signed_tx,
)

CHAIN = "vm-test"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(6)]
PRODUCER = bytes([0xEE]) * 20
PARAMS = ChainParams(min_fee=10, max_expiry_blocks=100)
REGISTRY = default_registry()


def funded(*balances: int, nonces: tuple[int, ...] = ()) -> dict[bytes, bytes]:
    """A dict state where KEYS[i] holds balances[i] (and nonces[i])."""
    state = {}
    for i, balance in enumerate(balances):
        nonce = nonces[i] if i < len(nonces) else 0
        state[account_key(KEYS[i].address)] = Account(balance, nonce).encode()
    return state


def signed(
    key: PrivateKey,
    nonce: int,
    payload: Wire | bytes,
    *,
    fee: int = 10,
    expiry: int = 50,
    tx_type: str = "transfer",
    chain: str = CHAIN,
) -> bytes:
    raw = payload if isinstance(payload, bytes) else payload.encode()
    return sign_tx(key, chain, TxBody(nonce, fee, expiry, tx_type, raw)).encode()


def transfer(
    key: PrivateKey, nonce: int, to: bytes, amount: int, *, chain: str = CHAIN, **kw: int
) -> VerifiedTx:
    """A verified transfer (fee and expiry as keyword arguments)."""
    raw = signed(key, nonce, Transfer(to, amount), chain=chain, **kw)
    return verify_signed_tx(raw, chain, REGISTRY, PARAMS.max_tx_bytes)


def context(
    height: int = 1, params: ChainParams = PARAMS, producer: bytes = PRODUCER
) -> BlockContext:
    return BlockContext(CHAIN, height, 1_700_000_000_000 + height, producer, params)


def balance(state: dict[bytes, bytes], address: bytes) -> int:
    raw = state.get(account_key(address))
    return 0 if raw is None else Account.decode(raw).balance


def apply_changes(base: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# What a block's execution shows a peer: its changes in order, its receipts' bytes,
# and which transactions went in or were left out (with why).
Outcome = tuple[
    list[tuple[bytes, bytes | None]], list[bytes], list[bytes], list[tuple[bytes, str, str]]
]


def block_outcome(
    executor: Executor, state: dict[bytes, bytes], txs: list[VerifiedTx], ctx: BlockContext
) -> Outcome:
    """The block built from ``txs`` on ``state`` (``strict=False``, as a producer builds):
    for holding two execution paths to each other."""
    result = executor.execute_block(state, txs, ctx, strict=False)
    return (
        list(result.changes.items()),
        result.encoded_receipts,
        [v.hash for v in result.included],
        [(v.hash, e.code, e.message) for v, e in result.rejected],
    )
