"""A small commerce chain for tests: genesis, signed txs, blocks through the real executor.

Every block goes through ``Executor.execute_block`` (strict) on the state so
far, then the invariants of apps.commerce are checked. Steps are recorded as
test vectors (pre state, signed txs, block context, post state, receipts) in the
consensus-specs manner; ``LIVELEDGER_VECTORS=dir`` writes them out (format in
tests/apps/commerce/VECTORS.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from apps.commerce import (
    CommerceGenesis,
    CommerceParams,
    check_invariants,
    commerce_genesis_state,
    register,
)
from apps.commerce import payloads as tx
from apps.commerce.model import ItemId
from apps.commerce.provenance import gtin_check_digit
from apps.commerce.sealing import encryption_keypair, seal_address
from core.codec import Wire
from core.keys import PrivateKey
from core.types import TxBody, sign_tx
from vm import (
    NATIVE,
    Account,
    BlockContext,
    BlockResult,
    ChainParams,
    Currency,
    CurrencyList,
    Event,
    Executor,
    Receipt,
    Registry,
    VerifiedTx,
    account_key,
    currency_key,
    currency_symbols,
    default_registry,
    get_account,
    get_balance,
    get_currency,
    verify_signed_tx,
)
from vm.currency import CURRENCY_LIST_KEY

CHAIN = "commerce-test"
T0 = 1_700_000_000_000
FEE = 10
CHAIN_PARAMS = ChainParams(min_fee=FEE, max_expiry_blocks=1_000)
MIN = 60_000
# Short windows so tests move through deadlines with a few block-time jumps.
TEST_PARAMS = CommerceParams(
    accept_window_ms=10 * MIN,
    ship_window_ms=20 * MIN,
    confirm_window_ms=30 * MIN,
    dispute_window_ms=20 * MIN,
    ruling_window_ms=15 * MIN,
    fee_bps=200,
    max_commission_bps=2_000,
    max_deal_ms=60 * MIN,
    deal_bucket_ms=MIN,
)
PRODUCER = bytes([0xEE]) * 20
TREASURY = bytes([0x7E]) * 20


def make_registry():
    registry = default_registry()
    register(registry)
    return registry


REGISTRY = make_registry()
# Every transaction is held to its type's declaration (codes, events, key prefixes).
EXECUTOR = Executor(REGISTRY, check_declarations=True)


def key(name: str) -> PrivateKey:
    """A deterministic key per name."""
    import hashlib

    return PrivateKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


def enc_keys(name: str) -> tuple[bytes, bytes]:
    """A deterministic X25519 (private, public) pair per name."""
    import hashlib

    return encryption_keypair(hashlib.blake2b(b"enc" + name.encode(), digest_size=32).digest())


def gtin(prefix13: str) -> str:
    return prefix13 + str(gtin_check_digit(prefix13))


def item(serial: str, base: str = "0950600013435") -> ItemId:
    return ItemId(gtin(base), serial)


@dataclass
class Vector:
    """One step: ``pre`` state, the block's txs and context, ``post`` state, receipts."""

    name: str
    pre: dict[bytes, bytes]
    txs: list[bytes]
    ctx: BlockContext
    post: dict[bytes, bytes]
    receipts: list[Receipt]
    begin_events: list[Event]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "context": {"height": self.ctx.height, "time_ms": self.ctx.time_ms},
            "pre": {k.hex(): v.hex() for k, v in sorted(self.pre.items())},
            "txs": [t.hex() for t in self.txs],
            "post": {k.hex(): v.hex() for k, v in sorted(self.post.items())},
            "receipts": [r.encode().hex() for r in self.receipts],
        }


@dataclass
class Chain:
    """Genesis plus blocks; ``state`` is the committed state after the last block."""

    balances: dict[str, int]
    params: CommerceParams = TEST_PARAMS
    registrars: tuple[str, ...] = ("registrar",)
    commerce: bool = True
    check: bool = True
    # Signs and executes with this registry (default: vm + commerce, as REGISTRY).
    registry: Registry = REGISTRY
    executor: Executor = field(init=False)
    state: dict[bytes, bytes] = field(init=False)
    height: int = field(init=False, default=0)
    time_ms: int = field(init=False, default=T0)
    nonces: dict[bytes, int] = field(init=False, default_factory=dict)
    vectors: list[Vector] = field(init=False, default_factory=list)
    supply: int = field(init=False)

    def __post_init__(self) -> None:
        self.executor = (
            EXECUTOR
            if self.registry is REGISTRY
            else Executor(self.registry, check_declarations=True)
        )
        self.state = {
            account_key(key(n).address): Account(b, 0).encode() for n, b in self.balances.items()
        }
        if self.commerce:
            cfg = CommerceGenesis(
                tuple(key(r).address for r in self.registrars), TREASURY, self.params
            )
            self.state.update(commerce_genesis_state(cfg))
        self.supply = sum(self.balances.values())

    # --- addresses ---

    def addr(self, name: str) -> bytes:
        return key(name).address

    def balance(self, name_or_addr: str | bytes, currency: str = NATIVE) -> int:
        a = self.addr(name_or_addr) if isinstance(name_or_addr, str) else name_or_addr
        return get_balance(self.state, a, currency)

    def add_currency(self, symbol: str, issuer: str, *, decimals: int = 2) -> None:
        """An issued currency as governance grants it (consensus is not in this chain:
        tests/consensus/test_currency_governance.py drives the grant itself)."""
        currency = Currency(symbol, decimals, self.addr(issuer), False, 0, 0, 0, bytes(32), 0, 0)
        self.state[currency_key(symbol)] = currency.encode()
        self.state[CURRENCY_LIST_KEY] = CurrencyList(
            tuple(sorted((*currency_symbols(self.state), symbol)))
        ).encode()

    def revoke_currency(self, symbol: str) -> None:
        """The issuer role revoked, as a passed governance proposal leaves it."""
        currency = get_currency(self.state, symbol)
        assert currency is not None
        self.state[currency_key(symbol)] = replace(currency, revoked=True).encode()

    @property
    def accounts(self) -> list[bytes]:
        return [self.addr(n) for n in self.balances] + [PRODUCER, TREASURY]

    # --- transactions and blocks ---

    def sign(self, who: str, tx_type: str, payload: Wire | bytes, fee: int = FEE) -> VerifiedTx:
        k = key(who)
        nonce = self.nonces.get(k.address, 0)
        self.nonces[k.address] = nonce + 1
        raw = payload if isinstance(payload, bytes) else payload.encode()
        body = TxBody(nonce, fee, self.height + 500, tx_type, raw)
        encoded = sign_tx(k, CHAIN, body).encode()
        return verify_signed_tx(encoded, CHAIN, self.registry, CHAIN_PARAMS.max_tx_bytes)

    def block(
        self, *txs: VerifiedTx, advance_ms: int = 1_000, name: str = "", strict: bool = True
    ) -> BlockResult:
        """Execute one block ``advance_ms`` after the last one and commit it.

        ``strict=False`` builds the block as a producer does: a transaction that may
        not be included (say its sender can no longer pay the fee) is left out, and
        every signer's next nonce is read back from the state.
        """
        self.height += 1
        self.time_ms += advance_ms
        ctx = BlockContext(CHAIN, self.height, self.time_ms, PRODUCER, CHAIN_PARAMS)
        pre = self.state
        result = self.executor.execute_block(pre, list(txs), ctx, strict=strict)
        post = dict(pre)
        for k, v in result.changes.items():
            if v is None:
                post.pop(k, None)
            else:
                post[k] = v
        self.state = post
        if not strict:
            self.nonces = {a: get_account(post, a).nonce for a in self.nonces}
        self.vectors.append(
            Vector(
                name or f"block{self.height}",
                pre,
                [v.tx.encode() for v in txs],
                ctx,
                post,
                result.receipts,
                result.begin_events,
            )
        )
        if self.check:
            problems = check_invariants(post, self.accounts, self.supply)
            assert problems == [], problems
        return result

    def wait(self, ms: int) -> BlockResult:
        """An empty block ``ms`` later (deadlines and deal ends run at its start)."""
        return self.block(advance_ms=ms)

    def run(self, who: str, tx_type: str, payload: Wire, **kw: int) -> Receipt:
        """One tx in its own block; returns its receipt."""
        (receipt,) = self.block(self.sign(who, tx_type, payload), **kw).receipts
        return receipt

    def ok(self, who: str, tx_type: str, payload: Wire, **kw: int) -> Receipt:
        receipt = self.run(who, tx_type, payload, **kw)
        assert receipt.ok, (receipt.code, receipt.message)
        return receipt

    def fails(self, who: str, tx_type: str, payload: Wire, code: str) -> Receipt:
        """The tx is included, pays its fee, changes nothing else, and carries ``code``."""
        before = dict(self.state)
        payer = self.addr(who)
        receipt = self.run(who, tx_type, payload)
        assert receipt.code == code, (receipt.code, receipt.message)
        assert receipt.events == ()
        changed = {k for k in set(before) | set(self.state) if before.get(k) != self.state.get(k)}
        assert changed <= {account_key(payer), account_key(PRODUCER)}, "a failed tx wrote state"
        return receipt

    def write_vectors(self, directory: Path, prefix: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(self.vectors):
            path = directory / f"{prefix}-{i:03d}-{v.name}.json"
            path.write_text(json.dumps(v.to_json(), indent=1))


def maybe_write_vectors(chain: Chain, prefix: str) -> None:
    out = os.environ.get("LIVELEDGER_VECTORS")
    if out:
        chain.write_vectors(Path(out) / "commerce", prefix)


# --- a merchant with a listing and a live session, ready to sell ---

PRICE = 1_000
STOCK = 50


@dataclass
class Shop:
    chain: Chain
    merchant: str = "merchant"
    host: str = "host"
    enc_private: bytes = b""
    enc_public: bytes = b""
    listing: int = 0
    session: int = 0
    # The listing's currency ("" native).
    currency: str = NATIVE

    def order(
        self,
        buyer: str,
        quantity: int = 1,
        *,
        deal: int = 0,
        session: int | None = None,
        price: int | None = None,
        version: int = 1,
        listing: int | None = None,
        address: str = "1 Main St, Springfield",
        currency: str | None = None,
    ) -> tx.PlaceOrder:
        ciphertext, commitment, _ = seal_address(self.enc_public, address)
        return tx.PlaceOrder(
            self.listing if listing is None else listing,
            version,
            quantity,
            PRICE if price is None else price,
            self.session if session is None else session,
            deal,
            self.enc_public,
            commitment,
            ciphertext,
            self.currency if currency is None else currency,
        )


def open_shop(
    chain: Chain,
    *,
    host_bps: int = 1_000,
    stock: int = STOCK,
    pin: bool = True,
    currency: str = NATIVE,
) -> Shop:
    """Registered and approved merchant, one listing (priced in ``currency``), one open
    session (listing pinned)."""
    shop = Shop(chain, currency=currency)
    shop.enc_private, shop.enc_public = enc_keys(shop.merchant)
    chain.ok(
        shop.merchant,
        tx.REGISTER_MERCHANT,
        tx.RegisterMerchant("Acme", "acme.example", shop.enc_public),
    )
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr(shop.merchant), True))
    chain.ok(
        shop.merchant,
        tx.CREATE_LISTING,
        tx.CreateListing("Tea pot", "Cast iron, 1 l", PRICE, stock, b"", currency),
    )
    shop.listing = 1
    chain.ok(
        shop.merchant,
        tx.OPEN_SESSION,
        tx.OpenSession(chain.addr(shop.host), host_bps, "Tuesday tea live"),
    )
    shop.session = 1
    if pin:
        chain.ok(shop.host, tx.PIN, tx.PinListing(shop.session, shop.listing))
    return shop


def new_chain(*extra: str, balance: int = 10**9, **kw: object) -> Chain:
    names = ("registrar", "merchant", "host", "alice", "bob", "carol", "arbiter", "maker")
    names += ("carrier", "inspector", "auditor", "stranger", *extra)
    return Chain({n: balance for n in dict.fromkeys(names)}, **kw)  # type: ignore[arg-type]  # names as addresses in the toy chain
