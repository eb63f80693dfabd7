"""Verify transactions, admit them to the mempool, and execute blocks.

Three stages, cheapest first (as in indy-plenum):

1. ``verify_signed_tx``: stateless (size, decoding, chain id, signature,
   payload). Runs in a thread pool; keeps no shared mutable state.
2. ``Executor.check_admission``: stateful checks against the latest state.
3. ``Executor.execute_block``: inclusion checks against the state as the block
   has changed it so far, then fee, nonce and the handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgpack

from core.codec import UINT64_MAX, Wire, constructor
from core.errors import DecodeError, Invalid, InvalidBlock, InvalidTransaction, NodeFault
from core.keys import address_of
from core.types import SignedTx, TxBody, check_signed, tx_hash
from vm.accounts import Account, credit, get_account, new_account, put_account
from vm.context import BlockContext
from vm.params import ChainParams
from vm.receipts import MAX_EVENTS, OK, Event, Receipt, bound_message, encode_receipt
from vm.registry import EXECUTION_CODES, STATE_LIMIT, Handler, Registry, TxFailed, TxInfo, TxType
from vm.state import Overlay, StateView, TracedOverlay


@dataclass(frozen=True, slots=True)
class VerifiedTx(TxInfo):
    """A transaction that passed every stateless check, with what they produced.

    It is also the ``TxInfo`` its handler sees (hash, sender key and address, nonce,
    fee): admission builds one object per transaction, not two.
    """

    # The envelope's chain id (checked against the block's at inclusion).
    chain_id: str
    body: TxBody
    payload: Wire
    # Length of the encoded SignedTx.
    size: int
    # The canonical encoding as received: blocks and tx roots reuse it as is.
    encoded: bytes

    @property
    def tx(self) -> SignedTx:
        """The envelope, decoded again from ``encoded`` (admission keeps its fields, not
        an object of it: one object fewer per pooled transaction)."""
        return SignedTx.decode(self.encoded)


# Admission builds one per transaction: set the slots directly.
_new_verified = constructor(VerifiedTx)
_unpackb = msgpack.unpackb


def verify_signed_tx(
    encoded: bytes,
    chain_id: str,
    registry: Registry,
    max_tx_bytes: int,
    hash_: bytes | None = None,
) -> VerifiedTx:
    """Every stateless check, cheapest first; raises ``Invalid`` with a stable code.
    ``hash_`` is ``tx_hash(encoded)`` if the caller has it."""
    _check_size(encoded, max_tx_bytes)
    encoded = bytes(encoded)
    tx = check_envelope(encoded, chain_id, max_tx_bytes)
    return complete_verified_tx(encoded, tx, registry, hash_)


def _check_size(encoded: bytes, max_tx_bytes: int) -> None:
    # Refuse oversized input before spending any work on it.
    if len(encoded) > max_tx_bytes:
        raise InvalidTransaction(
            f"transaction is {len(encoded)} bytes, the limit is {max_tx_bytes}", "too_large"
        )


def check_envelope(encoded: bytes, chain_id: str, max_tx_bytes: int) -> SignedTx:
    """The first stage of ``verify_signed_tx``: size, envelope, chain id and signature."""
    _check_size(encoded, max_tx_bytes)
    tx = SignedTx.decode(encoded)  # malformed
    check_signed(tx, chain_id)  # wrong_chain, bad_signature
    return tx


def complete_verified_tx(
    encoded: bytes, tx: SignedTx, registry: Registry, hash_: bytes | None = None
) -> VerifiedTx:
    """The second stage of ``verify_signed_tx``, for an envelope ``check_envelope`` passed:
    body, type and payload. ``hash_`` is ``tx_hash(encoded)`` if the caller has it."""
    return _complete(encoded, tx.chain_id, tx.sender, tx.body, registry, hash_)


def _complete(
    encoded: bytes,
    chain_id: str,
    sender: bytes,
    body_bytes: bytes,
    registry: Registry,
    hash_: bytes | None,
) -> VerifiedTx:
    """``complete_verified_tx`` from the envelope's fields."""
    body = TxBody.decode(body_bytes)  # malformed body
    payload = registry.decode_payload(body)  # unknown_type, malformed payload
    if hash_ is None:
        hash_ = tx_hash(encoded)
    return _new_verified(
        hash_,
        sender,
        address_of(sender),
        body.nonce,
        body.fee,
        chain_id,
        body,
        payload,
        len(encoded),
        encoded,
    )


def complete_checked(
    encoded: Sequence[bytes],
    verdicts: Sequence[tuple[str, str] | None],
    registry: Registry,
    hashes: Sequence[bytes | None],
) -> list[VerifiedTx | Invalid]:
    """The rest of ``verify_signed_tx`` after ``check_envelopes`` ran elsewhere (a
    verification worker): the worker's verdict where it refused, else body and payload
    checked here. The envelope's fields are taken without checking them again
    (its one canonical encoding was checked with the signature). ``hashes[i]`` is
    ``tx_hash(encoded[i])`` or None."""
    out: list[VerifiedTx | Invalid] = []
    for raw, verdict, hash_ in zip(encoded, verdicts, hashes, strict=True):
        if verdict is not None:
            code, message = verdict
            out.append(InvalidTransaction(message, code))
            continue
        chain_id, sender, body, _signature = _unpackb(raw)
        try:
            out.append(_complete(raw, chain_id, sender, body, registry, hash_))
        except Invalid as exc:
            out.append(exc)
    return out


def check_envelopes(
    encoded: Sequence[bytes], chain_id: str, max_tx_bytes: int
) -> list[tuple[str, str] | None]:
    """``check_envelope`` over many transactions: None where it passed, else (code, message).

    Plain data in and out, so it can run in another process.
    """
    out: list[tuple[str, str] | None] = []
    for raw in encoded:
        try:
            check_envelope(raw, chain_id, max_tx_bytes)
        except Invalid as exc:
            out.append((exc.code, exc.message))
        else:
            out.append(None)
    return out


@dataclass(slots=True)
class BlockResult:
    # Net state writes, encoded; None deletes the key.
    changes: dict[bytes, bytes | None]
    # One per included transaction, in block order, encoded: what the receipt root
    # and the store take. A fast path writes its receipt's encoding directly.
    encoded_receipts: list[bytes]
    included: list[VerifiedTx]
    # Only when building (strict=False): transactions left out, with the reason.
    rejected: list[tuple[VerifiedTx, InvalidTransaction]]
    # Events emitted by the begin-block hooks (deadlines and the like), encoded.
    encoded_begin_events: list[bytes] = field(default_factory=list)
    # The types of the included transactions: a node asks it of every block (does
    # it change membership?), which is cheaper to note here than to ask again.
    types: set[str] = field(default_factory=set)
    # The records among ``changes`` as the objects written (not encoded): what reads
    # the new state next (the mempool's refresh after the commit) need not decode them.
    records: dict[bytes, Wire] = field(default_factory=dict)

    @property
    def receipts(self) -> list[Receipt]:
        """The receipts, decoded (each access decodes them again)."""
        return [Receipt.decode(r) for r in self.encoded_receipts]

    @property
    def begin_events(self) -> list[Event]:
        """The begin-block hooks' events, decoded (each access decodes them again)."""
        return [Event.decode(e) for e in self.encoded_begin_events]


def _check_inclusion(
    vtx: VerifiedTx, account: Account, height: int, params: ChainParams, nonce_floor: int
) -> None:
    """Checks shared by admission and inclusion; ``height`` is the inclusion height."""
    body = vtx.body
    # Limits may have tightened since the tx was verified.
    if vtx.size > params.max_tx_bytes:
        raise InvalidTransaction(
            f"transaction is {vtx.size} bytes, the limit is {params.max_tx_bytes}", "too_large"
        )
    # expiry_height is the last height at which the tx may be included.
    if body.expiry_height < height:
        raise InvalidTransaction(
            f"transaction expired at height {body.expiry_height}, inclusion height is {height}",
            "expired",
        )
    # A signed tx may not be held back for long and submitted much later.
    if body.expiry_height > height + params.max_expiry_blocks:
        raise InvalidTransaction(
            f"expiry height {body.expiry_height} is more than {params.max_expiry_blocks} "
            f"blocks past inclusion height {height}",
            "expired",
        )
    # Every transaction pays at least the chain's minimum fee.
    if body.fee < params.min_fee:
        raise InvalidTransaction(
            f"fee {body.fee} is below the minimum fee {params.min_fee}", "fee_too_low"
        )
    nonce = body.nonce
    # One chained comparison for both bounds: this runs per transaction, twice.
    if not nonce_floor <= nonce < UINT64_MAX:
        # Nonces are strictly sequential: a used nonce is a replay.
        if nonce < nonce_floor:
            raise InvalidTransaction(
                f"expected nonce {nonce_floor} or higher, got {nonce}", "nonce_too_low"
            )
        # The sender's next nonce would be 2**64, which no account can hold: the fee
        # write would refuse it and fault the block, so the transaction is left out.
        raise InvalidTransaction(
            f"nonce {nonce} is the last one: the account's next nonce would pass 2**64-1",
            "nonce_exhausted",
        )
    # The fee is charged before the handler runs, so the balance must cover it.
    if account.balance < body.fee:
        raise InvalidTransaction(
            f"balance {account.balance} does not cover the fee {body.fee}", "insufficient_fee"
        )


def read_account(state: StateView, address: bytes) -> Account:
    """``get_account`` for a node reading its own committed state: an undecodable
    value there is corruption (``NodeFault``), never the client's ``malformed``."""
    try:
        return get_account(state, address)
    except DecodeError as exc:
        raise NodeFault(f"state holds an undecodable account: {exc}") from exc


class Executor:
    """Runs transactions of the types in ``registry``. Holds no per-block state.

    With ``check_declarations``, every transaction is held to its type's declaration
    (``TxType``): its receipt's code and events, and the key prefixes its handler read
    and wrote; a transaction that strays is a ``NodeFault`` naming what it did. Tests
    run with it; it slows execution, so nodes do not.
    """

    __slots__ = ("_registry", "_check")

    def __init__(self, registry: Registry, *, check_declarations: bool = False) -> None:
        self._registry = registry
        self._check = check_declarations

    @property
    def registry(self) -> Registry:
        return self._registry

    def check_admission(
        self,
        state: StateView,
        vtx: VerifiedTx,
        height: int,
        params: ChainParams,
        expected_nonce: int | None = None,
        account: Account | None = None,
    ) -> None:
        """Stateful mempool checks against the latest state (committed at ``height``).

        ``expected_nonce`` replaces the account's nonce as the lowest nonce
        accepted (for a caller that tracks it itself). Nonce gaps are allowed:
        the mempool queues them. ``account`` is the sender's account in
        ``state``, for a caller that has just read it.
        """
        # Reject types this node cannot execute (a registry other than the verifier's).
        self._registry.lookup(vtx.body.type)
        if account is None:
            account = read_account(state, vtx.sender_address)
        floor = account.nonce if expected_nonce is None else expected_nonce
        _check_inclusion(vtx, account, height + 1, params, floor)

    def execute_block(
        self,
        base: StateView,
        txs: Iterable[VerifiedTx],
        ctx: BlockContext,
        *,
        strict: bool,
        watch: Callable[[Overlay], None] | None = None,
        known: Mapping[bytes, Wire] | None = None,
    ) -> BlockResult:
        """Execute ``txs`` on top of ``base``; ``base`` itself is never written.

        strict=True validates a proposed block: any tx that may not be included,
        or a block over the limits, raises ``InvalidBlock``. strict=False builds
        a block: such txs go to ``rejected`` and adding stops at the limits, or
        when ``txs`` (which may be a lazy iterable) ends. ``watch`` gets the block's
        overlay before the first transaction runs (a proposer whose lazy ``txs``
        sizes the block by the state it writes; it must not write). ``known``:
        records ``base`` holds, as objects (``Overlay``'s), such as the previous
        block's ``BlockResult.records`` on the state that block made.
        """
        params = ctx.params
        if strict:
            txs = txs if isinstance(txs, Sequence) else list(txs)
            check_block_limits([vtx.size for vtx in txs], params)
        check = self._check
        state = TracedOverlay(base, known) if check else Overlay(base, known)
        if watch is not None:
            watch(state)
        for hook in self._registry.begin_block_hooks:
            try:
                hook(state, ctx)
            except Exception as exc:
                raise NodeFault(f"begin-block hook {hook!r} failed at {ctx.height}") from exc
        try:
            # Hooks are the chain's own logic: a write they make that no node could
            # store is a bug here, caught by name rather than deep in the block's commit.
            state.check_writes(0)
        except (DecodeError, NodeFault) as exc:
            raise NodeFault(f"begin-block hooks wrote bad state at {ctx.height}: {exc}") from exc
        begin_events = state.take_events()

        lookup = self._registry.lookup
        # Checking declarations traces the generic path; a fast path gives the same result.
        fast_paths = {} if check else self._registry.fast_paths
        receipts: list[bytes] = []
        included: list[VerifiedTx] = []
        rejected: list[tuple[VerifiedTx, InvalidTransaction]] = []
        max_txs = params.max_block_txs
        room = params.max_block_bytes
        fees = 0
        types: set[str] = set()
        for pos, vtx in enumerate(txs):
            if not strict and (len(included) >= max_txs or vtx.size > room):
                break
            tx_type = vtx.body.type
            try:
                _, handler = lookup(tx_type)
                sender = _check_tx(state, vtx, ctx)
            except DecodeError as exc:
                # Only reading state decodes here: an undecodable value is corruption.
                raise NodeFault(f"state holds an undecodable account: {exc}") from exc
            except InvalidTransaction as exc:
                if strict:
                    raise InvalidBlock(
                        f"tx {pos} ({vtx.hash.hex()}) may not be included: "
                        f"{exc.code}: {exc.message}"
                    ) from exc
                rejected.append((vtx, exc))
                continue
            types.add(tx_type)
            fast = fast_paths.get(tx_type)
            if fast is not None:
                try:
                    receipts.append(fast(state, vtx, vtx.payload, sender, ctx))
                except (TxFailed, NodeFault):
                    # As from ``_apply``: the fee write's refusal, a broken invariant.
                    raise
                except Exception as exc:
                    # As ``_apply`` has it for a handler (a state record that does not
                    # decode, say): a fault of this node. A DecodeError left as it is
                    # would be an ``Invalid``, which a validator takes for a bad proposal.
                    raise NodeFault(
                        f"fast path for {tx_type!r} raised {type(exc).__name__} "
                        f"on tx {vtx.hash.hex()}"
                    ) from exc
            elif check:
                receipts.append(self._apply_checked(state, vtx, sender, handler, ctx))
            else:
                receipts.append(_apply(state, vtx, sender, handler, ctx))
            state.forget_undo()
            included.append(vtx)
            room -= vtx.size
            fees += vtx.body.fee
        if fees:
            _credit(state, ctx.producer, fees)
        changes, records = state.net_writes()
        return BlockResult(changes, receipts, included, rejected, begin_events, types, records)

    def simulate(
        self,
        base: StateView,
        before: Sequence[VerifiedTx],
        vtx: VerifiedTx,
        ctx: BlockContext,
    ) -> Receipt:
        """The receipt ``vtx`` would get in a block at ``ctx`` on top of ``base``.

        ``before`` are the sender's pending transactions in nonce order: those below
        ``vtx``'s nonce run first, as a block would run them, so a client that sends
        several in a row sees each one after the others. Writes go to an ``Overlay``
        that is dropped: ``base`` is never written. Begin-block hooks (deadlines,
        epochs) do not run. Raises ``InvalidTransaction`` with the code a block
        builder would leave ``vtx`` out with (a nonce a block would not take next,
        a fee the balance cannot pay, expiry).
        """
        state = Overlay(base)
        try:
            for prior in before:
                nonce = prior.body.nonce
                if nonce >= vtx.body.nonce:
                    break
                # Committed since the caller read its pending list: the state has it.
                if nonce < get_account(state, prior.sender_address).nonce:
                    continue
                try:
                    _, handler = self._registry.lookup(prior.body.type)
                    sender = _check_tx(state, prior, ctx)
                except InvalidTransaction:
                    # A block would leave it out, and with it every later nonce.
                    break
                _apply(state, prior, sender, handler, ctx)
                state.forget_undo()
            _, handler = self._registry.lookup(vtx.body.type)
            sender = _check_tx(state, vtx, ctx)
        except DecodeError as exc:
            # Only reading state decodes here: an undecodable value is corruption.
            raise NodeFault(f"state holds an undecodable account: {exc}") from exc
        return Receipt.decode(_apply(state, vtx, sender, handler, ctx))

    def _apply_checked(
        self, state: Overlay, vtx: VerifiedTx, sender: Account, handler: Handler, ctx: BlockContext
    ) -> bytes:
        """``_apply``, then hold what the handler did to its type's declaration."""
        if not isinstance(state, TracedOverlay):
            raise TypeError("checking declarations needs a TracedOverlay")
        decl = self._registry.declaration(vtx.body.type)

        def traced(s: Overlay, info: TxInfo, payload: Wire, c: BlockContext) -> None:
            # From here on, what the handler touches (the fee and nonce are the executor's).
            state.reads.clear()
            state.writes.clear()
            handler(s, info, payload, c)

        receipt = _apply(state, vtx, sender, traced, ctx)
        strays = _strays(decl, Receipt.decode(receipt), state.reads, state.writes)
        if strays:
            raise NodeFault(f"tx {vtx.hash.hex()} strays from its declaration: {strays}")
        return receipt


def _strays(
    decl: TxType, receipt: Receipt, reads: Sequence[bytes], writes: Sequence[bytes]
) -> list[str]:
    """What a transaction did that ``decl`` does not declare (an empty list if nothing)."""
    out = []
    if receipt.code not in decl.codes and receipt.code not in EXECUTION_CODES:
        out.append(f"{decl.name} gave code {receipt.code!r}")
    out += [f"{decl.name} emitted {e.kind!r}" for e in receipt.events if e.kind not in decl.events]
    touched = decl.reads | decl.writes
    out += sorted({f"{decl.name} read prefix {k[0]:#04x}" for k in reads if k[0] not in touched})
    out += sorted(
        {f"{decl.name} wrote prefix {k[0]:#04x}" for k in writes if k[0] not in decl.writes}
    )
    return out


def _check_tx(state: Overlay, vtx: VerifiedTx, ctx: BlockContext) -> Account:
    """Inclusion checks against the block's state so far; returns the sender's account."""
    # The block's chain id is checked once per block, the tx's only at verification.
    if vtx.chain_id != ctx.chain_id:
        raise InvalidTransaction(
            f"transaction is for chain {vtx.chain_id!r}, this is {ctx.chain_id!r}",
            "wrong_chain",
        )
    account = get_account(state, vtx.sender_address)
    _check_inclusion(vtx, account, ctx.height, ctx.params, account.nonce)
    nonce = vtx.body.nonce
    # In a block the nonce must be exactly the next one: no gaps.
    if nonce > account.nonce:
        raise InvalidTransaction(f"expected nonce {account.nonce}, got {nonce}", "nonce_gap")
    return account


def check_block_limits(sizes: Sequence[int], params: ChainParams) -> None:
    """A block's transactions within ``params``' count and bytes, else ``InvalidBlock``.

    ``sizes``: each transaction's encoded size. Strict execution checks it, and a
    validator checks it before it verifies a block's signatures too
    (``node.chain.Chain.verify``): a proposal past the limits would otherwise cost every
    producer up to its whole frame's worth of signature checks before it is refused.
    """
    # Bounds the work and the size of every block.
    if len(sizes) > params.max_block_txs:
        raise InvalidBlock(
            f"block has {len(sizes)} transactions, the limit is {params.max_block_txs}"
        )
    total = sum(sizes)
    # Bounds the bandwidth and storage of every block.
    if total > params.max_block_bytes:
        raise InvalidBlock(
            f"block transactions take {total} bytes, the limit is {params.max_block_bytes}"
        )


def _apply(
    state: Overlay, vtx: VerifiedTx, sender: Account, handler: Handler, ctx: BlockContext
) -> bytes:
    """Charge the fee, bump the nonce, run the handler; undo only the handler on failure.
    Returns the receipt, encoded."""
    info: TxInfo = vtx
    fee = info.fee
    put_account(state, info.sender_address, new_account(sender.balance - fee, sender.nonce + 1))
    snapshot = state.snapshot()
    try:
        handler(state, info, vtx.payload, ctx)
    except TxFailed as exc:
        state.revert(snapshot)
        return encode_receipt(info.hash, exc.code, bound_message(exc.message), fee, ())
    except Exception as exc:
        # Only TxFailed is a verdict on the tx; anything else is a bug in this node.
        raise NodeFault(
            f"handler for {vtx.body.type!r} raised {type(exc).__name__} on tx {info.hash.hex()}"
        ) from exc
    try:
        # What the handler wrote must be storable and readable (u64 integers, bounded
        # sizes): checked here, in the transaction's failure boundary, so no transaction
        # can make building or validating its block raise.
        state.check_writes(snapshot)
    except DecodeError as exc:
        state.revert(snapshot)
        return encode_receipt(info.hash, STATE_LIMIT, bound_message(exc.message), fee, ())
    events = state.take_events()
    # Receipt decoding bounds the event count; handlers must stay under it.
    if len(events) > MAX_EVENTS:
        raise NodeFault(f"handler for {vtx.body.type!r} emitted {len(events)} events")
    return encode_receipt(info.hash, OK, "", fee, events)


def _credit(state: Overlay, address: bytes, amount: int) -> None:
    """Credit the block's fees to its producer, once, after the last transaction.

    One write per block instead of one per transaction; the producer can spend
    the fees from the next block on.
    """
    try:
        credit(state, address, amount)
    except DecodeError as exc:
        raise NodeFault(f"state holds an undecodable account: {exc}") from exc
