"""The chain as one node sees it: execute, build, validate and commit blocks.

Single writer: every method that changes the store runs on one thread at a time
(the consensus thread: ``build``, ``verify`` and ``commit`` are called by the engine's
application); readers use the store's own read paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from consensus import (
    ValidatorSet,
    params_for_height,
    producers_for_height,
    staking_enabled,
    validate_header,
    validate_tx_root,
    verify_commit,
)
from core import (
    Block,
    BlockHeader,
    Commit,
    Invalid,
    InvalidBlock,
    NodeFault,
    PrivateKey,
    Wire,
    address_of,
    encode_block,
    merkle_root,
    tx_hash,
)
from genesis import Genesis, genesis_state
from node.stage_cpu import StageCpu
from node.verifier import ProcessVerifier
from storage import ChainStore, TreeUpdate
from vm import (
    BlockContext,
    BlockResult,
    ChainParams,
    Executor,
    Overlay,
    Registry,
    VerifiedTx,
    check_block_limits,
    complete_checked,
    encode_block_events,
    verify_signed_tx,
)

log = logging.getLogger("node.chain")


class _StoreView:
    """The latest committed state, as the executor's ``StateView``."""

    __slots__ = ("get",)

    def __init__(self, store: ChainStore) -> None:
        self.get = store.state_get


@dataclass(frozen=True, slots=True)
class ExecutedBlock:
    """A block with everything needed to commit it in one batch."""

    block: Block
    result: BlockResult
    receipts: list[bytes]
    tree_update: TreeUpdate
    # The whole block's execution; of it, what came after the last transaction ran
    # (receipts, the state tree update, roots and encoding).
    execute_seconds: float
    after_seconds: float
    # The block's encoding and tx hashes, built from the encodings already held.
    block_bytes: bytes
    tx_hashes: list[bytes]

    @property
    def block_events(self) -> bytes:
        return encode_block_events(self.result.encoded_begin_events)


class BuildCost:
    """What a block costs after its last transaction ran (receipts, the state tree
    update, roots and the block's encoding), in seconds per state key the block
    writes, learned from recent blocks: an exponentially weighted average over every
    block this node builds or verifies.

    A proposer's budget covers its whole build, but execution is the only part it can
    watch as it goes: the rest is predicted from this and the keys written so far. On
    a big state the tree update costs more than execution (about 21 levels per fresh
    key at 1M accounts), and it goes by the keys a block writes, not by its
    transactions: a flash-deal order writes four fresh keys (its buyer's account,
    party record and deal count, the order), a transfer one. Learned per transaction,
    the cost of a transfer storm made the first order block ten times its budget and
    lost its rounds.

    The cost is learned as if the node had its cores to itself: each block's cost is
    divided by its *contention*, how much longer its execution took on the wall clock
    than on the thread's CPU clock (other processes on the same cores, the event loop
    holding the GIL, a disk), and a build's prediction is multiplied by its own
    contention so far. Without it, blocks verified while other validators verified
    them too on the same two cores taught ~1.5x the cost of the proposer's own build,
    alone on the cores, and its blocks came out a third smaller than its budget allowed.
    """

    # Blocks with fewer transactions teach nothing: their fixed costs (begin-block
    # writes, the root path) would read as a high cost per key.
    MIN_TXS = 256
    # Weight of the newest block: a few blocks follow a change of load or state size.
    WEIGHT = 0.25
    # Contention measured over less CPU time than this is noise: taken as none.
    MIN_CPU_S = 0.005
    # A thread that got an eighth of a core or less tells little about the next block.
    MAX_CONTENTION = 8.0
    # Until a block teaches better: about the work after execution per key at 1M
    # accounts with cold caches. On a big state the first block of a storm would
    # otherwise take everything pending (its execution alone fits the budget) and
    # then several times its budget, and its memory, in the tree update; on a small
    # one it costs the first big block a part of what would have fitted.
    PRIOR_S = 0.0001

    def __init__(self, per_key_s: float | None = None) -> None:
        # None: nothing learned yet, the prior stands until the first block.
        self.learned = per_key_s is not None
        self.per_key_s = self.PRIOR_S if per_key_s is None else per_key_s

    @classmethod
    def contention(cls, wall_s: float, cpu_s: float) -> float:
        """Wall time over the thread's CPU time for the same work, in 1..MAX_CONTENTION."""
        if cpu_s < cls.MIN_CPU_S:
            return 1.0
        return min(cls.MAX_CONTENTION, max(1.0, wall_s / cpu_s))

    def observe(self, txs: int, keys: int, seconds: float, contention: float = 1.0) -> None:
        """A block of ``txs`` transactions writing ``keys`` state keys took ``seconds``
        after its execution, whose contention was ``contention``."""
        if txs < self.MIN_TXS or keys < 1:
            return
        rate = seconds / keys / contention
        if not self.learned:
            self.per_key_s = rate
            self.learned = True
        else:
            self.per_key_s += self.WEIGHT * (rate - self.per_key_s)

    def predict(self, keys: int, contention: float = 1.0) -> float:
        """Seconds after execution for a block writing ``keys`` keys under ``contention``."""
        return self.per_key_s * keys * contention


class Chain:
    def __init__(
        self,
        store: ChainStore,
        genesis: Genesis,
        registry: Registry,
        verifier: ProcessVerifier | None = None,
        stages: StageCpu | None = None,
    ) -> None:
        self.store = store
        # CPU by stage (``node.stage_cpu``): a block's checks, execution, tree, roots
        # and commit are charged here.
        self.stages = StageCpu() if stages is None else stages
        # Worker processes for the signatures of transactions a block brings that
        # this node has not verified yet (without them: here, one by one).
        self.verifier = verifier
        self.genesis = genesis
        # Hashing genesis encodes the whole document (every account): once, not per use.
        self.genesis_hash = genesis.hash
        self.chain_id = genesis.chain_id
        self.registry = registry
        self.executor = Executor(registry)
        self.genesis_validators = ValidatorSet.of(v.public_key for v in genesis.validators)
        # The proposer's prediction of each block's work after execution (``build``).
        self.build_cost = BuildCost()
        self._view = _StoreView(store)
        if store.genesis_hash is None:
            store.initialize(self.genesis_hash, genesis_state(genesis))
        elif store.genesis_hash != self.genesis_hash:
            raise NodeFault(
                f"store holds chain with genesis {store.genesis_hash.hex()}, "
                f"this genesis is {self.genesis_hash.hex()}"
            )
        self._head: BlockHeader | None = None
        # The last block this chain committed, by height, and the records it wrote.
        self._known: tuple[int, Mapping[bytes, Wire]] = (-1, {})
        if store.height > 0:
            block = store.get_block(store.height)
            if block is None:
                raise NodeFault(f"head block {store.height} missing from the store")
            self._head = block.header

    @property
    def height(self) -> int:
        return self.store.height

    @property
    def head(self) -> BlockHeader | None:
        return self._head

    @property
    def state(self) -> _StoreView:
        return self._view

    @property
    def params(self) -> ChainParams:
        """Parameters of the next block (governance may have changed genesis's)."""
        return self.params_for(self.height + 1)

    def params_for(self, height: int) -> ChainParams:
        return params_for_height(self._view, height, self.genesis.params)

    def validators_for(self, height: int) -> ValidatorSet:
        """Producers of block ``height``: elected by stake, or genesis's without staking.

        Answerable for any height up to head + 1 from the latest state.
        """
        if staking_enabled(self._view):
            return producers_for_height(self._view, height)
        return self.genesis_validators

    @property
    def validators(self) -> ValidatorSet:
        """Producers of the next block."""
        return self.validators_for(self.height + 1)

    def context(
        self, height: int, time_ms: int, producer: bytes, last_commit: Commit | None
    ) -> BlockContext:
        return BlockContext(
            chain_id=self.chain_id,
            height=height,
            time_ms=time_ms,
            producer=address_of(producer),
            params=self.params_for(height),
            last_commit_signers=(
                None if last_commit is None else tuple(s.validator for s in last_commit.signatures)
            ),
            last_commit_round=0 if last_commit is None else last_commit.round,
        )

    def next_block_time(self, now_ms: int) -> int:
        """The time of a block built now: ``now_ms`` (the node's wall clock,
        ``WallClock``), or the parent's time + 1 if that is later."""
        now = now_ms
        prev = self._head.time_ms if self._head else self.genesis.genesis_time_ms
        return max(now, prev + 1)

    def _execute(
        self,
        ctx: BlockContext,
        txs: Iterable[VerifiedTx],
        *,
        strict: bool,
        watch: Callable[[Overlay], None] | None = None,
    ) -> tuple[BlockResult, list[bytes], TreeUpdate, float, float]:
        """Execute (``watch``: see ``Executor.execute_block``) and prepare the state
        tree update; also gives the ``perf_counter`` time at which the last transaction
        had run and the contention of the execution (``BuildCost.contention``)."""
        started, cpu = time.perf_counter(), time.thread_time()
        # The records the last committed block wrote are what its state holds: its
        # senders' accounts, read again by their next transactions, are not decoded.
        known_height, known = self._known
        with self.stages.timed("execute"):
            result = self.executor.execute_block(
                self._view,
                txs,
                ctx,
                strict=strict,
                watch=watch,
                known=known if known_height == self.height else None,
            )
        ran = time.perf_counter()
        contention = BuildCost.contention(ran - started, time.thread_time() - cpu)
        receipts = result.encoded_receipts
        with self.stages.timed("tree"):
            tree_update = self.store.prepare_state(result.changes)
        return result, receipts, tree_update, ran, contention

    def build(
        self,
        txs: Sequence[VerifiedTx],
        key: PrivateKey,
        time_ms: int,
        round_: int = 0,
        last_commit: Commit | None = None,
        budget_s: float | None = None,
    ) -> ExecutedBlock:
        """Execute ``txs`` (skipping those that may not be included) into a new block.

        ``last_commit`` is the head's certificate to carry (default: the stored one);
        a proposer passes one with every precommit it has seen. With ``budget_s``,
        transactions stop being added before the block would take longer than that to
        build: execution as far as it went, at its pace for the next chunk, and the
        work after it as ``build_cost`` predicts for every transaction offered so far
        (the rest wait for a later block). Which transactions a proposer includes is
        its choice; execution itself never sees the clock.
        """
        height = self.height + 1
        if last_commit is None and self._head is not None:
            last_commit = self.store.get_commit(self._head.height)
        if self._head is not None and last_commit is None:
            raise NodeFault(f"commit of head block {self._head.height} missing")
        ctx = self.context(height, time_ms, key.public_key, last_commit)
        started, cpu_started = time.perf_counter(), time.thread_time()
        if budget_s is None:
            result, receipts, tree_update, ran, contention = self._execute(ctx, txs, strict=False)
        else:
            within = _Within(txs, started, cpu_started, budget_s, self.build_cost)
            result, receipts, tree_update, ran, contention = self._execute(
                ctx, within, strict=False, watch=within.watch
            )
        with self.stages.timed("roots"):
            encoded = [v.encoded for v in result.included]
            header = BlockHeader(
                chain_id=self.chain_id,
                height=height,
                round=round_,
                time_ms=time_ms,
                prev_hash=self.genesis_hash if self._head is None else self._head.hash,
                tx_root=merkle_root(encoded),
                state_root=tree_update.root,
                receipt_root=merkle_root(receipts),
                producer=key.public_key,
                producer_set_hash=self.validators_for(height).hash,
                last_commit=last_commit,
            )
            block = Block(header, tuple(encoded))
            block_bytes = encode_block(header, encoded)
        return self._finish(
            block, result, receipts, tree_update, block_bytes, started, ran, contention
        )

    def _finish(
        self,
        block: Block,
        result: BlockResult,
        receipts: list[bytes],
        tree_update: TreeUpdate,
        block_bytes: bytes,
        started: float,
        ran: float,
        contention: float,
    ) -> ExecutedBlock:
        done = time.perf_counter()
        txs = len(result.included)
        self.build_cost.observe(txs, len(result.changes), done - ran, contention)
        log.debug(
            "block %d: %d txs, executed in %.1f ms (contention %.2f), %.1f ms after "
            "(%.1f us per key learned)",
            block.header.height,
            txs,
            (ran - started) * 1000,
            contention,
            (done - ran) * 1000,
            self.build_cost.per_key_s * 1e6,
        )
        return ExecutedBlock(
            block,
            result,
            receipts,
            tree_update,
            done - started,
            done - ran,
            block_bytes,
            [v.hash for v in result.included],
        )

    def verify(
        self,
        block: Block,
        known: Callable[[bytes], VerifiedTx | None] | None = None,
        *,
        body_matched: bool = False,
    ) -> ExecutedBlock:
        """Fully validate a block from elsewhere against the head, executing it strictly.

        Transactions already verified by this node (``known(tx_hash)`` finds them,
        e.g. the mempool's ``get``) are not verified again. ``body_matched`` says the
        caller already checked the transactions against the header's tx root (the
        consensus engine does, where a block enters), so it is not computed twice.
        """
        height = block.header.height
        validate_header(
            block.header,
            chain_id=self.chain_id,
            prev=self._head,
            genesis_hash=self.genesis_hash,
            genesis_time_ms=self.genesis.genesis_time_ms,
            validators=self.validators_for(height),
            prev_validators=self.validators_for(height - 1) if height > 1 else None,
        )
        stages = self.stages
        if not body_matched:
            with stages.timed("roots"):
                validate_tx_root(block)
        encoded = block.txs
        params = self.params_for(height)
        # Before any signature: a proposal past the limits costs nothing to refuse.
        check_block_limits([len(raw) for raw in encoded], params)
        with stages.timed("block_txs"):
            verified = self._verify_txs(encoded, known or _nothing_known, params.max_tx_bytes)
        header = block.header
        ctx = self.context(height, header.time_ms, header.producer, header.last_commit)
        started = time.perf_counter()
        result, receipts, tree_update, ran, contention = self._execute(ctx, verified, strict=True)
        with stages.timed("roots"):
            check_roots(header, tree_update.root, receipts)
            block_bytes = encode_block(header, encoded)
        return self._finish(
            block, result, receipts, tree_update, block_bytes, started, ran, contention
        )

    def _verify_txs(
        self,
        encoded: Sequence[bytes],
        known: Callable[[bytes], VerifiedTx | None],
        max_tx_bytes: int,
    ) -> list[VerifiedTx]:
        """The block's transactions verified: reused from ``known``, else checked now.

        Raises the first failure in block order, with the code ``verify_signed_tx``
        gives it.
        """
        hashes = [tx_hash(raw) for raw in encoded]
        out: list[VerifiedTx | None] = [known(h) for h in hashes]
        todo = [i for i, vtx in enumerate(out) if vtx is None]
        if self.verifier is not None and len(todo) > 1:
            # Envelopes and signatures in the workers; body and payload here.
            raws = [encoded[i] for i in todo]
            todo_hashes = [hashes[i] for i in todo]
            verdicts = self.verifier.check_sync(raws, self.chain_id, max_tx_bytes, todo_hashes)
            checked = complete_checked(raws, verdicts, self.registry, todo_hashes)
            for i, vtx in zip(todo, checked, strict=True):
                if isinstance(vtx, Invalid):
                    raise vtx
                out[i] = vtx
        else:
            for i in todo:
                out[i] = verify_signed_tx(
                    encoded[i], self.chain_id, self.registry, max_tx_bytes, hashes[i]
                )
        return out  # type: ignore[return-value]  # every slot filled above

    def commit(self, executed: ExecutedBlock, commit: Commit) -> None:
        """Persist a block and its certificate atomically (one synced write batch)."""
        block = executed.block
        with self.stages.timed("commit"):
            validators = self.validators_for(block.header.height)
            verify_commit(commit, self.chain_id, block.header.height, block.hash, validators)
            self.store.commit_block(
                block,
                commit,
                executed.receipts,
                executed.result.changes,
                executed.tree_update,
                block_bytes=executed.block_bytes,
                tx_hashes=executed.tx_hashes,
                block_events=executed.block_events,
            )
        self._head = block.header
        self._known = (block.header.height, executed.result.records)


class _Within:
    """``txs`` in order, chunk by chunk, while the block would still be built within
    ``budget_s`` of ``started`` (a ``perf_counter`` time) with the next chunk: its
    execution at the pace so far, and what ``cost`` predicts after it for the keys
    the block would write at the rate so far, under the contention seen so far. The
    first chunk always goes in. ``watch`` is the executor's hook: it shows the
    block's overlay, whose written keys are counted.
    """

    def __init__(
        self,
        txs: Sequence[VerifiedTx],
        started: float,
        cpu_started: float,
        budget_s: float,
        cost: BuildCost,
    ) -> None:
        self._txs = txs
        self._started = started
        # The thread's CPU clock (``time.thread_time``) at ``started``: execution runs
        # on the thread that made this.
        self._cpu_started = cpu_started
        self._budget_s = budget_s
        self._cost = cost
        self._state: Overlay | None = None

    def watch(self, state: Overlay) -> None:
        self._state = state

    def __iter__(self) -> Iterator[VerifiedTx]:
        txs, started, budget_s, cost = self._txs, self._started, self._budget_s, self._cost
        clock, cpu_clock, cpu_started = time.perf_counter, time.thread_time, self._cpu_started
        state = self._state
        # The begin-block hooks ran before the first transaction: their time and
        # writes are spent once, only the transactions' part grows with the block.
        first = clock()
        hooks_s = first - started
        hook_keys = 0 if state is None else state.written()
        step = _BUDGET_STEP
        for start in range(0, len(txs), step):
            if start:
                more = start + step
                now = clock()
                contention = BuildCost.contention(now - started, cpu_clock() - cpu_started)
                # Without the overlay (an executor that did not call watch): one key
                # per transaction.
                tx_keys = start if state is None else state.written() - hook_keys
                after = cost.predict(hook_keys + tx_keys * more // start, contention)
                if hooks_s + (now - first) * more / start + after > budget_s:
                    return
            yield from txs[start : start + step]


# Transactions executed between two looks at the clock while building.
_BUDGET_STEP = 256


def _nothing_known(_tx_hash: bytes) -> VerifiedTx | None:
    return None


def check_roots(header: BlockHeader, state_root: bytes, receipts: list[bytes]) -> None:
    """Execution must reproduce the header's state and receipt roots."""
    # Re-execution reaches the state the producer committed to.
    if state_root != header.state_root:
        raise InvalidBlock(
            f"height {header.height}: state root {header.state_root.hex()}, "
            f"re-execution gives {state_root.hex()}"
        )
    # Receipts (codes, fees, events) are part of consensus too.
    receipt_root = merkle_root(receipts)
    if receipt_root != header.receipt_root:
        raise InvalidBlock(
            f"height {header.height}: receipt root {header.receipt_root.hex()}, "
            f"re-execution gives {receipt_root.hex()}"
        )
