"""Live-session commerce throughput beside plain transfers, measured in the same run.

    .venv/bin/python -m benches.commerce [--buyers 2000] [--repeat 5]

Executor level for now: blocks are executed with ``Executor.execute_block``
(strict) over a dict state, on transactions verified once beforehand. The
commerce mix is a live session's traffic: every buyer orders one unit from a
flash deal and tips the host; the merchant ships every order; every buyer
confirms delivery and writes a review. The transfer run sends the same number
of transactions from the same accounts. Last line:

    RESULT commerce_tps=<n> transfer_tps=<n> ratio=<commerce/transfer>

The workload is built by ``live_session_workload``, which returns pre-signed
``SignedTx`` lists per phase for funded keys, so a node-level bench can submit
the same transactions over HTTP.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from apps.commerce import CommerceGenesis, commerce_genesis_state, register
from apps.commerce import payloads as tx
from apps.commerce.sealing import encryption_keypair, seal_address
from core.keys import PrivateKey
from core.types import SignedTx, TxBody, sign_tx
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

CHAIN = "bench-commerce"
FEE = 1_000
DEAL_PRICE = 5_000
MIN = 60_000


@dataclass
class Actors:
    registrar: PrivateKey
    merchant: PrivateKey
    host: PrivateKey
    buyers: list[PrivateKey]
    # The merchant's X25519 public key (buyers seal addresses to it).
    enc_public: bytes


@dataclass
class Workload:
    """Pre-signed transactions, phase by phase (each phase may span several blocks)."""

    # Register and approve the merchant, list, open the session, pin, open the deal.
    setup: list[list[SignedTx]]
    # Every buyer: an order into the deal and a tip.
    orders: list[SignedTx]
    # The merchant ships every order.
    ships: list[SignedTx]
    # Every buyer: confirm delivery, then a review.
    settle: list[SignedTx]

    @property
    def mix(self) -> list[SignedTx]:
        return self.orders + self.ships + self.settle


def make_actors(buyers: int, seed: int = 1) -> Actors:
    def key(i: int) -> PrivateKey:
        return PrivateKey((seed * 1_000_003 + i).to_bytes(32, "big"))

    _, enc_public = encryption_keypair(bytes([7]) * 32)
    return Actors(key(0), key(1), key(2), [key(10 + i) for i in range(buyers)], enc_public)


def commerce_genesis(actors: Actors, treasury: bytes = bytes(20)) -> CommerceGenesis:
    return CommerceGenesis((actors.registrar.address,), treasury)


def live_session_workload(
    actors: Actors,
    chain_id: str,
    start_ms: int,
    *,
    nonces: dict[bytes, int] | None = None,
    expiry_height: int = 1_000,
    fee: int = FEE,
) -> Workload:
    """Signed transactions of one live session on a chain with fresh commerce state.

    Ids are those a fresh chain hands out (listing 1, session 1, deal 1, orders
    1..N in buyer order). ``start_ms`` is a block time at or before the setup's
    last block: the deal runs from then for 50 minutes. ``nonces`` gives each
    account's next nonce (default 0); it is updated.
    """
    nonces = {} if nonces is None else nonces

    def sign(key: PrivateKey, tx_type: str, payload: object) -> SignedTx:
        nonce = nonces.get(key.address, 0)
        nonces[key.address] = nonce + 1
        body = TxBody(nonce, fee, expiry_height, tx_type, payload.encode())  # type: ignore[attr-defined]
        return sign_tx(key, chain_id, body)

    m, n = actors.merchant, len(actors.buyers)
    setup = [
        [sign(m, tx.REGISTER_MERCHANT, tx.RegisterMerchant("Bench", "", actors.enc_public))],
        [sign(actors.registrar, tx.APPROVE_MERCHANT, tx.ApproveMerchant(m.address, True))],
        [
            sign(m, tx.CREATE_LISTING, tx.CreateListing("Item", "", 9_000, n, b"")),
            sign(m, tx.OPEN_SESSION, tx.OpenSession(actors.host.address, 1_000, "live")),
            sign(m, tx.PIN, tx.PinListing(1, 1)),
            sign(
                m, tx.OPEN_DEAL, tx.OpenDeal(1, 1, DEAL_PRICE, n, 1, start_ms, start_ms + 50 * MIN)
            ),
        ],
    ]
    ciphertext, commitment, _ = seal_address(actors.enc_public, "1 Bench Road", salt=bytes(32))
    order = tx.PlaceOrder(1, 1, 1, DEAL_PRICE, 1, 1, actors.enc_public, commitment, ciphertext)
    orders, ships, settle = [], [], []
    for b in actors.buyers:
        orders.append(sign(b, tx.PLACE_ORDER, order))
        orders.append(sign(b, tx.TIP, tx.Tip(1, 100, "")))
    for order_id in range(1, n + 1):
        ships.append(
            sign(m, tx.SHIP_ORDER, tx.ShipOrder(order_id, order_id.to_bytes(32, "big"), ()))
        )
    for order_id, b in enumerate(actors.buyers, start=1):
        settle.append(sign(b, tx.CONFIRM_DELIVERY, tx.OrderRef(order_id)))
        settle.append(sign(b, tx.REVIEW, tx.WriteReview(order_id, 5, "great stream deal")))
    return Workload(setup, orders, ships, settle)


def transfer_workload(
    actors: Actors, chain_id: str, count: int, *, nonces: dict[bytes, int] | None = None
) -> list[SignedTx]:
    """``count`` transfers from the buyers (round robin) to the host."""
    nonces = {} if nonces is None else nonces
    out = []
    for i in range(count):
        b = actors.buyers[i % len(actors.buyers)]
        nonce = nonces.get(b.address, 0)
        nonces[b.address] = nonce + 1
        body = TxBody(nonce, FEE, 1_000, "transfer", Transfer(actors.host.address, 100).encode())
        out.append(sign_tx(b, chain_id, body))
    return out


# --- the executor-level run ---


def _state(actors: Actors) -> dict[bytes, bytes]:
    accounts = [actors.registrar, actors.merchant, actors.host, *actors.buyers]
    state = {account_key(k.address): Account(10**12, 0).encode() for k in accounts}
    state.update(commerce_genesis_state(commerce_genesis(actors)))
    return state


def _apply(state: dict[bytes, bytes], changes: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
    out = dict(state)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _verify(txs: list[SignedTx], registry: object, params: ChainParams) -> list[VerifiedTx]:
    return [verify_signed_tx(t.encode(), CHAIN, registry, params.max_tx_bytes) for t in txs]  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buyers", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    registry = default_registry()
    register(registry)
    executor = Executor(registry)
    params = ChainParams(max_block_txs=100_000, max_block_bytes=64 * 1024 * 1024)
    actors = make_actors(args.buyers)
    t0_ms = 1_700_000_000_000
    workload = live_session_workload(actors, CHAIN, t0_ms + 3_000)

    # Setup blocks, once.
    state = _state(actors)
    height = 0
    for block in workload.setup:
        height += 1
        ctx = BlockContext(CHAIN, height, t0_ms + 1_000 * height, bytes(20), params)
        result = executor.execute_block(state, _verify(block, registry, params), ctx, strict=True)
        assert all(r.ok for r in result.receipts), [r.message for r in result.receipts]
        state = _apply(state, result.changes)

    started = time.perf_counter()
    phases = [
        ("orders + tips", _verify(workload.orders, registry, params)),
        ("ships", _verify(workload.ships, registry, params)),
        ("confirms + reviews", _verify(workload.settle, registry, params)),
    ]
    verify_s = time.perf_counter() - started
    n_commerce = sum(len(v) for _, v in phases)
    transfers = _verify(transfer_workload(actors, CHAIN, n_commerce), registry, params)

    # One pass to get each phase's pre-state (and to check everything succeeds).
    pre_states = []
    s = state
    commerce_keys = 0
    for i, (name, vtxs) in enumerate(phases):
        ctx = BlockContext(CHAIN, height + 1 + i, t0_ms + 10_000 + i * 1_000, bytes(20), params)
        pre_states.append((s, vtxs, ctx))
        result = executor.execute_block(s, vtxs, ctx, strict=True)
        bad = [r for r in result.receipts if not r.ok]
        assert not bad, f"{name}: {bad[0].code}: {bad[0].message}"
        commerce_keys += len(result.changes)
        s = _apply(s, result.changes)
    transfer_ctx = BlockContext(CHAIN, height + 1, t0_ms + 10_000, bytes(20), params)
    transfer_keys = len(executor.execute_block(state, transfers, transfer_ctx, strict=True).changes)

    def best(fn: object) -> float:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - t)
        return min(times)

    phase_secs = []
    for name, (pre, vtxs, ctx) in zip((p[0] for p in phases), pre_states, strict=True):
        secs = best(
            lambda pre=pre, vtxs=vtxs, ctx=ctx: executor.execute_block(pre, vtxs, ctx, strict=True)
        )
        phase_secs.append((name, len(vtxs), secs))
    transfer_s = best(lambda: executor.execute_block(state, transfers, transfer_ctx, strict=True))
    commerce_s = sum(secs for _, _, secs in phase_secs)
    commerce_tps = n_commerce / commerce_s
    transfer_tps = len(transfers) / transfer_s
    # With one-thread verification added to each side (the node verifies each tx once).
    per_verify = verify_s / n_commerce
    commerce_pipe = 1 / (1 / commerce_tps + per_verify)
    transfer_pipe = 1 / (1 / transfer_tps + per_verify)

    print(f"{'phase':<22} {'txs':>7} {'us/tx':>8} {'tx/s':>9}")
    for name, count, secs in phase_secs:
        print(f"{name:<22} {count:>7} {secs / count * 1e6:>8.1f} {count / secs:>9.0f}")
    print(f"{'commerce mix':<22} {n_commerce:>7} {1e6 / commerce_tps:>8.1f} {commerce_tps:>9.0f}")
    print(f"{'transfers':<22} {len(transfers):>7} {1e6 / transfer_tps:>8.1f} {transfer_tps:>9.0f}")
    print(
        f"{'verify_signed_tx':<22} {n_commerce:>7} {per_verify * 1e6:>8.1f} {1 / per_verify:>9.0f}"
    )
    print(
        f"\nwith 1-thread verification: commerce {commerce_pipe:.0f} tx/s, "
        f"transfers {transfer_pipe:.0f} tx/s, ratio {commerce_pipe / transfer_pipe:.2f}"
    )
    print(
        f"state keys written per tx (the state tree's cost at node level): commerce "
        f"{commerce_keys / n_commerce:.2f}, transfers {transfer_keys / len(transfers):.2f}"
    )
    print(f"{args.buyers} buyers, execute_block strict, best of {args.repeat}")
    print("command: " + " ".join([".venv/bin/python -m benches.commerce", *sys.argv[1:]]))
    print(
        f"RESULT commerce_tps={commerce_tps:.0f} transfer_tps={transfer_tps:.0f} "
        f"ratio={commerce_tps / transfer_tps:.2f}"
    )


if __name__ == "__main__":
    main()
