"""Offline audit: re-verify a node's whole chain from a genesis document alone.

The audit trusts nothing the node computed. It replays every stored block into a
fresh chain built from ``genesis.json`` through the same validation a node
applies to a block it receives: header linkage, producer schedule, commit
certificates, transaction signatures, tx root, strict re-execution to the same
state and receipt roots. Then it checks the node's stored roots and receipts
against the replay.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from consensus import ValidatorSet, verify_commit
from consensus.staking_state import ProducerSet
from core import DecodeError, Invalid, InvalidBlock, StorageError
from genesis import Genesis, load_genesis
from node.chain import Chain
from node.config import GENESIS_FILE, StorageConfig, load_config
from node.epoch_records import EpochRecord, make_epoch_record, verify_epoch_record
from node.service import build_registry
from storage import TREE_DIR, ChainStore

log = logging.getLogger("node.audit")


@dataclass(frozen=True, slots=True)
class AuditReport:
    height: int
    genesis_hash: bytes
    state_root: bytes
    txs: int
    copied: bool


def _snapshot(data_dir: Path, dest: Path) -> None:
    """A crash-consistent copy of a live store's two LevelDB directories.

    Table files (.ldb/.sst) are immutable once written, so they are hard-linked
    (a link keeps a table alive even if a compaction deletes it meanwhile); the
    files LevelDB appends to (log, MANIFEST, CURRENT) are copied. The copy then
    recovers like a node after a crash: a consistent prefix of the chain. The
    chain's database is copied before the tree's: a block's nodes are written
    before the block, so the tree's copy holds every node the chain's copy needs
    (an audit's source is an archive, which deletes no nodes).
    """
    _copy_db(data_dir, dest)
    if (data_dir / TREE_DIR).is_dir():
        _copy_db(data_dir / TREE_DIR, dest / TREE_DIR)


def _copy_db(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.name == "LOCK" or not entry.is_file():
            continue
        target = dest / entry.name
        if entry.suffix in (".ldb", ".sst"):
            try:
                os.link(entry, target)
                continue
            except OSError:
                pass  # another filesystem: fall back to a copy
        shutil.copy2(entry, target)


def _open_source(data_dir: Path, scratch: Path, caches: StorageConfig) -> tuple[ChainStore, bool]:
    """Open the node's store; if the node is running (locked), audit a snapshot of it."""
    try:
        return caches.open_store(data_dir, create=False), False
    except StorageError as exc:
        if "in use" not in str(exc):
            raise
    last_error: Exception | None = None
    # A compaction racing the snapshot can remove a table between listing and
    # linking it; such a snapshot fails to open, and a new one is taken.
    for attempt in range(5):
        copy = scratch / f"source-{attempt}"
        try:
            _snapshot(data_dir, copy)
            return caches.open_store(copy, create=False), True
        except (OSError, StorageError) as exc:
            last_error = exc
            log.info("snapshot attempt %d of a live store failed: %s", attempt + 1, exc)
    raise StorageError(f"could not snapshot the running node's store at {data_dir}: {last_error}")


def _show(entry: tuple[object, ...] | None) -> str:
    """An index entry for a message: bytes as hex (long values cut), ints as they are."""
    if entry is None:
        return "nothing"
    parts = []
    for part in entry:
        if isinstance(part, bytes):
            text = part.hex()
            parts.append(text if len(text) <= 80 else f"{text[:80]}... ({len(part)} bytes)")
        else:
            parts.append(str(part))
    return "(" + ", ".join(parts) + ")"


def _same_entries(
    what: str,
    stored: Iterator[tuple[bytes, *tuple[object, ...]]],
    replayed: Iterator[tuple[bytes, *tuple[object, ...]]],
) -> None:
    """Walk two key-ordered scans of one index (key first in each entry) side by side;
    raise ``InvalidBlock`` at the first entry where the node's differs from the
    replay's: one the replay has not, one the node lacks, or another value."""
    held, made = next(stored, None), next(replayed, None)
    while held is not None or made is not None:
        if held is not None and (made is None or held[0] < made[0]):
            raise InvalidBlock(
                f"the node's {what} holds {_show(held)}, which no verified block made"
            )
        if made is not None and (held is None or made[0] < held[0]):
            raise InvalidBlock(
                f"the node's {what} lacks {_show(made)}, which the verified blocks made"
            )
        if held != made:
            raise InvalidBlock(
                f"the node's {what} holds {_show(held)}, the verified blocks made {_show(made)}"
            )
        held, made = next(stored, None), next(replayed, None)


def _check_epoch_records(
    source: ChainStore, replayed: ChainStore, genesis: Genesis, head: int
) -> None:
    """Each epoch record the node keeps (``GET /v1/epochs/{e}``, a joining node's walk)
    must be the one the replayed chain makes: the verified boundary header, the producer
    set in its state and that set's proof, and a certificate of that header by the
    producers who made it (the replay's, or another: ``_certified_otherwise``)."""
    length = genesis.params.epoch_length
    for epoch in range(1, head // length + 1):
        stored = source.get_epoch_record(epoch)
        if stored is None:
            continue  # not kept yet: the node makes it from the block and state when asked
        record = make_epoch_record(replayed, epoch, length)
        if record is None or (
            stored != record.encode()
            and not _certified_otherwise(stored, record, genesis, epoch, replayed)
        ):
            raise InvalidBlock(
                f"the node's record of epoch {epoch} is not the one block {epoch * length} "
                "and its state make"
            )


def _certified_otherwise(
    stored: bytes, record: EpochRecord, genesis: Genesis, epoch: int, replayed: ChainStore
) -> bool:
    """Whether ``stored`` is the replay's ``record`` but for its certificate, another of
    the same block that verifies. Certificates of one block differ from node to node
    (each holds the precommits it saw): a record a state sync fetched from a peer, kept
    before the sync began, carries the peer's, and a node that then replayed from genesis
    instead keeps it, beside the certificate it was sent the block with."""
    try:
        held = EpochRecord.decode(stored)
    except DecodeError:
        return False
    if (held.header, held.producers, held.proof) != (record.header, record.producers, record.proof):
        return False
    # Signed by the producers of the epoch its block closes: the record before's set.
    if epoch == 1:
        validators = ValidatorSet.of(v.public_key for v in genesis.validators)
    else:
        before = make_epoch_record(replayed, epoch - 1, genesis.params.epoch_length)
        if before is None:
            return False
        validators = ProducerSet.decode(before.producers).validator_set()
    try:
        verify_epoch_record(genesis, epoch, stored, validators)
    except (Invalid, DecodeError):
        return False
    return True


def audit_home(
    home: Path,
    progress: Callable[[int], None] | None = None,
    genesis: Genesis | None = None,
) -> AuditReport:
    """Replay ``home``'s chain from ``genesis``: the auditor's own copy of the document.
    None takes the one installed in ``home``, which is the node operator's word: a
    hostile one installs a genesis of its own making (same chain id, its own keys as the
    validators) and a chain it signed alone replays clean from it."""
    config = load_config(home)
    if genesis is None:
        genesis = load_genesis(home / GENESIS_FILE)
    data_dir = home / config.data_dir
    if not data_dir.exists():
        raise StorageError(f"no chain data at {data_dir}")
    with tempfile.TemporaryDirectory(prefix="liveledger-audit-") as tmp:
        scratch = Path(tmp)
        # Beside a running node, within the memory its operator gave it.
        source, copied = _open_source(data_dir, scratch, config.storage)
        try:
            return _replay(source, genesis, scratch, copied, config.storage, progress)
        finally:
            source.close()


def _replay(
    source: ChainStore,
    genesis: Genesis,
    scratch: Path,
    copied: bool,
    caches: StorageConfig,
    progress: Callable[[int], None] | None,
) -> AuditReport:
    if source.genesis_hash != genesis.hash:
        raise InvalidBlock(
            f"store was made from genesis {source.genesis_hash.hex() if source.genesis_hash else None}, "
            f"the genesis audited against hashes to {genesis.hash.hex()}"
        )
    # A replay from genesis needs the genesis state and every block: a pruning or
    # state-synced node's store lacks them by design, which is no damage (and must not
    # read as a store missing what it should hold).
    if source.block_base > 1 or source.state_base > 0:
        raise StorageError(
            f"this store is pruned (blocks kept from height {max(source.block_base, 1)}, "
            f"state from height {source.state_base}): an audit replays every block from "
            "genesis, so it needs an archive node's home (pruning off, not state-synced)"
        )
    replay_store = caches.open_store(scratch / "replay", sync=False)
    try:
        chain = Chain(replay_store, genesis, build_registry())
        # The genesis state itself must match.
        if replay_store.state_root(0) != source.state_root(0):
            raise InvalidBlock("genesis state root differs from the one the node stored")
        head = source.height
        txs = 0
        for height in range(1, head + 1):
            block = source.get_block(height)
            commit = source.get_commit(height)
            if block is None or commit is None:
                raise InvalidBlock(f"block or commit {height} missing from the store")
            executed = chain.verify(block)
            # The certificate for the block (the next header carries it again).
            verify_commit(commit, genesis.chain_id, height, block.hash, chain.validators)
            chain.commit(executed, commit)
            if source.state_root(height) != block.header.state_root:
                raise InvalidBlock(f"height {height}: stored state root differs from the header")
            if source.get_receipts(height) != executed.receipts:
                raise InvalidBlock(f"height {height}: stored receipts differ from re-execution")
            if source.get_block_events(height) != executed.block_events:
                raise InvalidBlock(f"height {height}: stored block events differ from re-execution")
            txs += len(block.txs)
            if progress is not None:
                progress(height)
        # What the node answers from beside the blocks, unproven (GET /v1/txs/{hash},
        # accounts and currencies without proofs, its own execution), against what the
        # replay of the verified blocks wrote: the same code writes both, so an honest
        # archive store holds exactly the replay's entries, and any other is a lie.
        _same_entries("tx index", source.iter_tx_index(), replay_store.iter_tx_index())
        _same_entries("block index", source.iter_block_index(), replay_store.iter_block_index())
        _same_entries("flat state", source.iter_state(), replay_store.iter_state())
        _check_epoch_records(source, replay_store, genesis, head)
        root = replay_store.state_root(head)
        return AuditReport(head, genesis.hash, root, txs, copied)
    finally:
        replay_store.close()
