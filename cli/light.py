"""Light-client checks: trust only the genesis document, verify everything else.

A header is final when it names a producer set the client derived and more than 2/3
of that set signed it (Rule S, docs/state-sync.md, Trust model: whatever epoch the set
was derived for). Epoch 0's producers are in genesis; every later set is in the state,
elected in the begin-block of the previous epoch's last block, and proven by the
node's record of that epoch (``GET /v1/epochs/{e}``: the boundary header, its
certificate, the set and its proof), which every node keeps for good however much it
prunes. The producers of a height are reached one change of producers at a time:
``GET /v1/epochs/{k}/next-change`` gives the record of the next epoch whose set differs
from epoch ``k``'s, checked with ``k``'s set; no change up to the height's epoch leaves
``k``'s set, which the header of that height must name (``certified_header``), so a
node that hid a change is refused there. A node without that route is walked epoch
by epoch.

A transaction's inclusion and receipt are proven the same way (``proven_tx``): the
node's Merkle paths are checked against the tx root and receipt root of a header
certified by the producers so derived (``vm.verify_tx_inclusion``).

A walk may start from a ``Checkpoint`` instead of genesis: a set this client verified
before, kept by a ``CheckpointStore`` (the CLI's is ``cli.trust.ProducerCache``). A
final block is never reverted, so a set once derived from genesis stays the set of
its epoch; the store only saves the walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cli.client import (
    NodeClient,
    NodeError,
    answer_field,
    int_field,
    list_field,
    reading_answer,
)
from consensus import ValidatorSet, epoch_of, verify_commit
from consensus.staking_state import ProducerSet, producer_set_key
from core import BlockHeader, Commit, InvalidBlock, InvalidProof, SignedTx
from core.types import MAX_BLOCK_TXS
from genesis import Genesis
from storage import StateProof, verify_proof
from vm import MAX_TX_PATH, Receipt, TxInclusion, verify_tx_inclusion


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Epoch ``epoch``'s producers, proven in the state of the certified header at
    ``height`` (the last block of epoch ``epoch - 1``, ``epoch * epoch_length``); the
    header's hash and state root are the proof point."""

    epoch: int
    height: int
    header_hash: bytes
    state_root: bytes
    producers: ProducerSet


class CheckpointStore(Protocol):
    """Where a light client keeps the highest producer set it verified for a genesis."""

    def load(self, genesis: Genesis) -> Checkpoint | None:
        """The kept checkpoint of ``genesis``'s chain; None if there is none (or it is
        unusable: then the walk starts from genesis again)."""
        ...

    def save(self, genesis: Genesis, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` (verified from ``genesis``) in place of the one kept."""
        ...


def _height(value: object) -> int:
    """A block height as a node states it: an int from 1 (not 5.0, "5" or true)."""
    if type(value) is not int or value < 1:
        raise ValueError(f"height {value!r} is not a block height")
    return value


def certified_header(
    genesis: Genesis,
    height: int,
    header_hex: str | None,
    commit_hex: str | None,
    validators: ValidatorSet,
) -> BlockHeader:
    """The encoded header of ``height``, once its encoded certificate checks out."""
    if header_hex is None or commit_hex is None:
        raise NodeError("no_commit", f"node has no certificate for height {height}")
    with reading_answer(f"header of height {height}"):
        header = BlockHeader.decode(bytes.fromhex(header_hex))
    # The header asked for, of this chain (as web/src/lib/light.js checkHeader checks).
    if header.height != height:
        raise InvalidBlock(f"the node's header is of height {header.height}, expected {height}")
    if header.chain_id != genesis.chain_id:
        raise InvalidBlock(
            f"the node's header is of chain {header.chain_id!r}, expected {genesis.chain_id!r}"
        )
    with reading_answer(f"certificate of height {height}"):
        commit = Commit.decode(bytes.fromhex(commit_hex))
    # It names the set it is checked against: a set derived for an earlier epoch
    # certifies a later header only then (Rule S, docs/state-sync.md, Trust model); a
    # node that hid a change of producers is refused here.
    if header.producer_set_hash != validators.hash:
        raise InvalidBlock(
            f"the node's header of height {height} names producer set "
            f"{header.producer_set_hash.hex()}, the proven one is {validators.hash.hex()}"
        )
    # More than 2/3 of that set signed this very header.
    verify_commit(commit, genesis.chain_id, height, header.hash, validators)
    return header


def fetch_certified_header(
    client: NodeClient, genesis: Genesis, height: int, validators: ValidatorSet
) -> BlockHeader:
    """The header at ``height`` from the node, with its certificate checked."""
    doc = client.block(f"{height}?txs=false")
    with reading_answer(f"block {height}"):
        commit = doc["commit"]
        header_hex = doc["header"]["encoded"]
        commit_hex = None if commit is None else commit["encoded"]
    return certified_header(genesis, height, header_hex, commit_hex, validators)


def fetch_epoch(
    client: NodeClient, genesis: Genesis, epoch: int, validators: ValidatorSet, height: int
) -> Checkpoint:
    """Epoch ``epoch``'s producers from the node's record of it (``GET /v1/epochs``, one
    read): the header of its boundary, certified by ``validators`` (epoch ``epoch - 1``'s),
    and the set proven against that header's state root. ``height`` is the one whose
    producers the walk is for (for the error when the node has no record)."""
    boundary = epoch * genesis.params.epoch_length
    try:
        doc = client.get(f"/v1/epochs/{epoch}")
    except NodeError as exc:
        if exc.code != "not_found":
            raise
        # Said alone, "no record of epoch 3" puzzles someone who asked about today's state.
        raise NodeError(
            "no_epoch_record",
            f"cannot prove the producers of height {height}: the walk from genesis needs "
            f"the record of epoch {epoch} (block {boundary}, the last of epoch {epoch - 1}, "
            f"and the set it elected) and {client.url} has none ({exc.message}); prove "
            "against another node",
            exc.status,
        ) from None
    return checked_record(genesis, epoch, doc, validators)


def checked_record(genesis: Genesis, epoch: int, doc: Any, validators: ValidatorSet) -> Checkpoint:
    """Epoch ``epoch``'s producers from a node's record of it (``doc``, as
    ``GET /v1/epochs/{epoch}`` answers): its boundary header names ``validators`` and more
    than 2/3 of them certified it, and the set is proven in that header's state."""
    with reading_answer(f"record of epoch {epoch}"):
        header_hex, commit_hex = doc["header"], doc["commit"]
        value = bytes.fromhex(doc["producers"])
        proof = StateProof.decode(bytes.fromhex(doc["proof"]))
    boundary = epoch * genesis.params.epoch_length
    header = certified_header(genesis, boundary, header_hex, commit_hex, validators)
    # The next set is what that header's state holds under its key.
    verify_proof(header.state_root, producer_set_key(epoch), value, proof)
    producers = ProducerSet.decode(value)
    return Checkpoint(epoch, boundary, header.hash, header.state_root, producers)


def fetch_next_change(
    client: NodeClient, genesis: Genesis, epoch: int, validators: ValidatorSet
) -> Checkpoint | None:
    """The first epoch after ``epoch`` whose producers differ from ``validators``
    (epoch ``epoch``'s), from the node's record of it
    (``GET /v1/epochs/{epoch}/next-change``), checked with ``validators`` (Rule S: its
    boundary header names them); None when the node says none did up to its head.

    Neither answer is taken on the node's word: a change hidden (None, or a later one)
    leaves ``validators`` for a height whose header names another set, and that header
    is refused (``certified_header``); a record past a change it skipped names another
    set too. Raises a 404 ``NodeError`` from a node without the route (its
    ``not_found``, or a proxy's page)."""
    try:
        doc = client.get(f"/v1/epochs/{epoch}/next-change")
    except NodeError as exc:
        if exc.code == "no_set_change":
            return None
        raise
    # Strictly later: a walk always moves on.
    change = int_field(doc, "epoch", f"next change after epoch {epoch}", low=epoch + 1)
    return checked_record(genesis, change, doc, validators)


def proven_state(
    client: NodeClient, genesis: Genesis, key: bytes, store: CheckpointStore | None = None
) -> tuple[bytes | None, int]:
    """The value of ``key`` (None: absent) at the node's latest final height, and that
    height: proven against the height's header, whose certificate is checked against
    the producers derived from ``genesis`` (from ``store``'s checkpoint on). Nothing the
    node says is taken on its word."""
    value, header = proven_value(client, genesis, key, store)
    return value, header.height


def proven_value(
    client: NodeClient,
    genesis: Genesis,
    key: bytes,
    store: CheckpointStore | None = None,
    at: BlockHeader | None = None,
) -> tuple[bytes | None, BlockHeader]:
    """``proven_state``'s value of ``key``, and the certified header it is proven against.
    ``at``: a header this function returned before for ``genesis``: the value at its
    height, proven against it, with neither the header nor its certificate fetched again
    (the proof is checked against its state root all the same)."""
    path = f"/v1/state/{key.hex()}" + ("" if at is None else f"?height={at.height}")
    doc = client.get(path)
    with reading_answer(f"state answer for key {key.hex()}"):
        height = _height(doc["height"])
        value = bytes.fromhex(doc["value"]) if doc["value"] is not None else None
        proof = StateProof.decode(bytes.fromhex(doc["proof"]))
    if at is None:
        validators = producers_at(client, genesis, height, store)
        header = fetch_certified_header(client, genesis, height, validators)
    elif height != at.height:
        raise NodeError(
            "proof_mismatch",
            f"asked for key {key.hex()} at height {at.height}, the node answered at {height}",
        )
    else:
        header = at
    verify_proof(header.state_root, key, value, proof)
    return value, header


@dataclass(frozen=True, slots=True)
class ProvenTx:
    """A transaction and its receipt, proven in the block of ``header`` (certified)."""

    header: BlockHeader
    proof: TxInclusion
    tx: SignedTx
    receipt: Receipt


def _path(doc: object, name: str, what: str) -> tuple[bytes, ...]:
    """A Merkle path as the node writes it (hex hashes), refused past a block's longest
    before any of it is read; each hash's size is the verifier's to check."""
    hashes = list_field(doc, name, what)
    if len(hashes) > MAX_TX_PATH:
        raise InvalidProof(
            f"the node's {name} has {len(hashes)} hashes, a block's path at most {MAX_TX_PATH}"
        )
    with reading_answer(what):
        return tuple(bytes.fromhex(h) for h in hashes)


def proven_tx(
    client: NodeClient, genesis: Genesis, tx_hash: bytes, store: CheckpointStore | None = None
) -> ProvenTx:
    """The transaction ``tx_hash`` and its receipt, from the node's proof
    (``GET /v1/txs/{hash}/proof``): its paths checked against the tx root and receipt
    root of the header of the block it names, whose certificate is checked against
    the producers derived from ``genesis`` (from ``store``'s checkpoint on)."""
    doc = client.get(f"/v1/txs/{tx_hash.hex()}/proof")
    what = f"proof of transaction {tx_hash.hex()}"
    height = int_field(doc, "height", what, low=1)
    count = int_field(doc, "count", what, low=1, high=MAX_BLOCK_TXS)
    index = int_field(doc, "index", what, high=count - 1)
    with reading_answer(what):
        tx, receipt = bytes.fromhex(doc["tx"]), bytes.fromhex(doc["receipt"])
    proof = TxInclusion(
        height,
        index,
        count,
        tx,
        receipt,
        _path(doc, "tx_path", what),
        _path(doc, "receipt_path", what),
    )
    # The header is final: more than 2/3 of that height's producers signed it ...
    validators = producers_at(client, genesis, height, store)
    header_hex, commit_hex = answer_field(doc, "header", what), answer_field(doc, "commit", what)
    header = certified_header(genesis, height, header_hex, commit_hex, validators)
    # ... and the transaction asked about and its receipt are in its block.
    signed, proven = verify_tx_inclusion(header, tx_hash, proof)
    return ProvenTx(header, proof, signed, proven)


def producers_at(
    client: NodeClient, genesis: Genesis, height: int, store: CheckpointStore | None = None
) -> ValidatorSet:
    """The producers of block ``height``, derived from genesis through proofs only: the
    set of the last change of producers at or before its epoch, one record read per
    change (``fetch_next_change``), not one per epoch.

    What it returns is proven for ``height`` only with the header it certifies: a node
    that hid a change makes it the set of an earlier epoch, which ``certified_header``
    refuses for a header naming another set. Callers check headers with it there.

    With ``store``, the walk starts at its checkpoint when that is not beyond
    ``height``'s epoch, and each change of producers verified above the kept one is
    kept there as it is verified: a walk that a busy or slow node interrupts resumes
    from it, not from genesis. A node without the next-change route (an older one) is
    walked epoch by epoch.
    """
    # Callers pass the height a node's answer is at.
    with reading_answer("height"):
        height = _height(height)
    validators = ValidatorSet.of(v.public_key for v in genesis.validators)
    if genesis.staking is None:
        return validators
    # epoch_length is not governable, so genesis's value holds for the whole chain.
    length = genesis.params.epoch_length
    target = epoch_of(height, length)
    kept = store.load(genesis) if store is not None else None
    highest = 0 if kept is None else kept.epoch

    def keep(reached: Checkpoint) -> None:
        # Only ever forward: a walk below the kept epoch (an old height) keeps the higher.
        nonlocal highest
        if store is not None and reached.epoch > highest:
            store.save(genesis, reached)
            highest = reached.epoch

    at = 0
    if kept is not None and kept.epoch <= target:
        validators, at = kept.producers.validator_set(), kept.epoch
    while at < target:
        try:
            change = fetch_next_change(client, genesis, at, validators)
        except NodeError as exc:
            # Any 404 but "no change" (answered inside): the node's not_found, or the
            # page of a proxy in front of an older node (as the browser's walk takes it).
            if exc.status != 404:
                raise
            # No route (an older node), or no record of the change: one epoch at a time,
            # kept at each change (a write per epoch would cost more than its read).
            for epoch in range(at + 1, target + 1):
                reached = fetch_epoch(client, genesis, epoch, validators, height)
                if reached.producers.validator_set() != validators or epoch == target:
                    keep(reached)
                validators = reached.producers.validator_set()
            break
        if change is None:
            break
        # Verified (with the set before it): kept even past the target, as the highest.
        keep(change)
        if change.epoch > target:
            break
        validators, at = change.producers.validator_set(), change.epoch
    return validators
