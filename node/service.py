"""One validator node: store, chain, mempool, block production and the HTTP API.

Resources start and stop in one place (``Node.run``), in order, and stop in
reverse order; a block being committed when a stop arrives finishes first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apps.commerce import register as register_commerce
from consensus import register_staking
from core import Commit, PrivateKey
from core.keystore import load_key
from genesis import Genesis, load_genesis
from node.chain import Chain, ExecutedBlock
from node.config import GENESIS_FILE, NODE_KEY_FILE, NodeConfig, load_config
from node.mempool import Mempool, MempoolConfig
from node.metrics import NodeMetrics
from storage import ChainStore
from vm import Registry, default_registry

log = logging.getLogger("node.service")

PASSPHRASE_ENV = "LIVELEDGER_PASSPHRASE"


def build_registry() -> Registry:
    """Every transaction type this node executes, and the begin-block hooks."""
    registry = default_registry()
    register_staking(registry)
    register_commerce(registry)
    return registry


class Node:
    def __init__(
        self,
        home: Path,
        config: NodeConfig,
        genesis: Genesis,
        key: PrivateKey,
        registry: Registry | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.genesis = genesis
        self.key = key
        self.registry = registry or build_registry()
        self.metrics = NodeMetrics()
        self.store: ChainStore | None = None
        self.chain: Chain | None = None
        self.mempool: Mempool | None = None
        self._verify_pool: ThreadPoolExecutor | None = None
        # One worker thread: block execution and commit are strictly sequential.
        self._worker: ThreadPoolExecutor | None = None
        self._producer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._new_block = asyncio.Condition()
        self.block_listeners: list[Callable[[ExecutedBlock], None]] = []
        # Called with the height of each newly final block (apps' feeds).
        self.height_listeners: list[Callable[[int], None]] = []

    @classmethod
    def from_home(cls, home: Path, passphrase: str | None = None) -> Node:
        config = load_config(home)
        genesis = load_genesis(home / GENESIS_FILE)
        if passphrase is None:
            passphrase = os.environ.get(PASSPHRASE_ENV, "")
        key = load_key(home / NODE_KEY_FILE, passphrase)
        return cls(home, config, genesis, key)

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Open the store and build the in-memory parts (synchronous, before serving)."""
        self.store = ChainStore(self.home / self.config.data_dir)
        self.chain = Chain(self.store, self.genesis, self.registry)
        settings = self.config.mempool
        self._verify_pool = ThreadPoolExecutor(
            max_workers=settings.verify_threads, thread_name_prefix="verify"
        )
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="block")
        self.mempool = Mempool(
            chain_id=self.genesis.chain_id,
            registry=self.registry,
            executor=self.chain.executor,
            params=self.genesis.params,
            state=self.chain.state,
            height_fn=lambda: self.store.height if self.store else 0,
            config=MempoolConfig(
                shards=settings.shards,
                per_account_cap=settings.per_account_cap,
                per_shard_cap=settings.per_shard_cap,
                verify_threads=settings.verify_threads,
            ),
            verify_pool=self._verify_pool,
        )
        self.metrics.height.set(self.chain.height)
        self.metrics.finalized_height.set(self.chain.height)
        log.info("opened chain %s at height %d", self.genesis.chain_id, self.chain.height)

    def start_producing(self) -> None:
        self._producer = asyncio.get_running_loop().create_task(
            self._produce_loop(), name="producer"
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._producer is not None:
            try:
                await self._producer
            except Exception:
                log.exception("producer stopped with an error")
            self._producer = None
        if self._worker is not None:
            self._worker.shutdown(wait=True)
        if self._verify_pool is not None:
            self._verify_pool.shutdown(wait=True)
        if self.store is not None:
            self.store.close()
            self.store = None
        log.info("node stopped")

    # --- block production ------------------------------------------------------------

    async def _produce_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.block_interval_ms / 1000
        next_at = loop.time() + interval
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), max(0.0, next_at - loop.time()))
                break
            except TimeoutError:
                pass
            next_at = max(next_at + interval, loop.time())
            await self.produce_block()

    async def produce_block(self) -> ExecutedBlock:
        """Build, sign and commit one block from the mempool; then tell listeners."""
        assert self.chain is not None and self.mempool is not None and self._worker is not None
        params = self.chain.params
        txs = self.mempool.select(params.max_block_txs, params.max_block_bytes)
        time_ms = self.chain.next_block_time()
        loop = asyncio.get_running_loop()
        executed, commit, commit_seconds = await loop.run_in_executor(
            self._worker, self._build_and_commit, txs, time_ms
        )
        self._after_commit(executed, commit, commit_seconds)
        return executed

    def _build_and_commit(self, txs: list, time_ms: int) -> tuple[ExecutedBlock, Commit, float]:
        assert self.chain is not None
        executed = self.chain.build(txs, self.key, time_ms)
        commit = self.chain.sign_commit(executed.block, self.key)
        started = time.perf_counter()
        self.chain.commit(executed, commit)
        return executed, commit, time.perf_counter() - started

    def _after_commit(self, executed: ExecutedBlock, commit: Commit, commit_seconds: float) -> None:
        assert self.mempool is not None
        header = executed.block.header
        result = executed.result
        self.mempool.on_block_committed(
            [v.hash for v in result.included], [v.hash for v, _ in result.rejected]
        )
        m = self.metrics
        m.height.set(header.height)
        m.finalized_height.set(header.height)
        m.round.set(header.round)
        m.block_txs.observe(len(result.included))
        m.block_execution_seconds.observe(executed.execute_seconds)
        m.block_commit_seconds.observe(commit_seconds)
        m.txs_committed.inc(len(result.included))
        for shard, size in enumerate(self.mempool.shard_sizes()):
            m.mempool_size.labels(shard=str(shard)).set(size)
        if result.included:
            log.info(
                "committed block %d with %d txs (exec %.1f ms, commit %.1f ms)",
                header.height,
                len(result.included),
                executed.execute_seconds * 1000,
                commit_seconds * 1000,
            )
        for listener in self.block_listeners:
            try:
                listener(executed)
            except Exception:
                log.exception("block listener failed")
        for height_listener in list(self.height_listeners):
            try:
                height_listener(header.height)
            except Exception:
                log.exception("height listener failed")
