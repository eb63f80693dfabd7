"""One validator node: store, chain, mempool, p2p, consensus and the HTTP API's backing.

Resources open in one place (``open`` then ``start``) and close in reverse order
(``stop``); a block being committed when a stop arrives finishes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from apps.commerce import register as register_commerce
from consensus import (
    BFTConfig,
    ConsensusMessage,
    PrivValidator,
    WallClock,
    may_connect,
    members,
    register_staking,
    staking_enabled,
)
from consensus.governance import VOTE_PROPOSAL
from consensus.staking import SET_MEMBER_ADDRESS
from consensus.staking_state import member_address
from core import Commit, InvalidTransaction, PrivateKey, TxBody, sign_tx
from core.keystore import load_key
from core.netaddr import InvalidNetAddress, parse_net_address
from genesis import Genesis, load_genesis
from node.chain import Chain, ExecutedBlock
from node.config import GENESIS_FILE, NODE_KEY_FILE, ConfigError, NodeConfig, load_config
from node.consensus import ConsensusSeams, ConsensusService, LoopLink, MainLoopTxSource
from node.epoch_records import index_epoch_sets, keep_epoch_record
from node.mempool import Mempool, SubmitResult
from node.metrics import NodeMetrics
from node.stage_cpu import StageCpu
from node.statesync import SnapshotServer, StateSyncer, prune
from node.verifier import ProcessVerifier
from p2p import (
    ChunkRequest,
    ChunkResponse,
    EpochsRequest,
    EpochsResponse,
    MessageRegistry,
    P2PNode,
    PeerAddress,
    SnapshotOffer,
    SnapshotRequest,
    TxBatch,
    TxBatcher,
)
from storage import ChainStore
from vm import Registry, default_registry, get_account

log = logging.getLogger("node.service")
# How often the main loop's lateness is sampled (``Node._watch_loop``).
LOOP_WATCH_S = 0.1

PASSPHRASE_ENV = "LIVELEDGER_PASSPHRASE"
CONSENSUS_MESSAGE_TYPE = 0x20
# Transactions after which the members' on-chain addresses are read again
# (``dial_members``): an address set, or a vote that may remove a member.
ADDRESS_TX_TYPES = frozenset({SET_MEMBER_ADDRESS, VOTE_PROPOSAL})
# Verdicts on a gossiped transaction that only a faulty or malicious peer causes.
PEER_FAULT_CODES = frozenset({"malformed", "bad_signature", "wrong_chain"})
# Refusals of the node's own transaction that blocks lift as they drain the pool (room,
# the sender's queue or nonce window): it is signed again after a block interval.
OWN_TX_RETRY_CODES = frozenset({"mempool_full", "account_queue_full", "nonce_gap"})
# Blocks over which an own transaction is retried; also how far ahead it expires.
OWN_TX_RETRY_BLOCKS = 100


def build_registry() -> Registry:
    """Every transaction type this node executes, and the begin-block hooks."""
    registry = default_registry()
    register_staking(registry)
    register_commerce(registry)
    return registry


def message_registry() -> MessageRegistry:
    registry = MessageRegistry()
    registry.register(CONSENSUS_MESSAGE_TYPE, ConsensusMessage)
    return registry


class Node:
    def __init__(
        self,
        home: Path,
        config: NodeConfig,
        genesis: Genesis,
        key: PrivateKey,
        registry: Registry | None = None,
        seams: ConsensusSeams | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.genesis = genesis
        self.key = key
        self.registry = registry or build_registry()
        # Wrappers around the consensus engine's surroundings: tests only (see
        # ConsensusSeams); a node started from its home never has any.
        self.seams = seams
        # The one wall clock of this node: block times (consensus) and simulations.
        self.wall = WallClock(config.test_clock_offset_ms)
        if config.test_clock_offset_ms:
            log.warning(
                "TEST ONLY: this node's clock is offset by %+d ms (test_clock_offset_ms "
                "in config.json); remove the setting outside tests",
                config.test_clock_offset_ms,
            )
        self.metrics = NodeMetrics()
        self.store: ChainStore | None = None
        self.chain: Chain | None = None
        self.mempool: Mempool | None = None
        self.p2p: P2PNode | None = None
        self.consensus: ConsensusService | None = None
        # What stopped the consensus engine, if anything did; ``faulted`` is set then.
        self.fault: BaseException | None = None
        self.faulted = asyncio.Event()
        # The node's own transactions are signed and admitted one at a time (submit_own_tx).
        self._own_tx_lock = asyncio.Lock()
        # Their tasks, held here: the loop keeps only weak references to tasks, and one
        # waiting out a retry could be collected mid-way. Cancelled at ``stop``.
        self._own_tx_tasks: set[asyncio.Task[None]] = set()
        self._batcher: TxBatcher | None = None
        self._verify_pool: ThreadPoolExecutor | None = None
        self._verifier: ProcessVerifier | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_watch: asyncio.Task[None] | None = None
        # State sync: serving peers, and (a new node) syncing from them.
        self.snapshots = SnapshotServer(
            lambda: self.store,
            genesis,
            config.snapshot_interval,
            None if seams is None else seams.snapshot_chunk,
            config.snapshot_chunk_bytes,
        )
        self.syncer: StateSyncer | None = None
        # Pruning runs in its own thread, one pass at a time; stop() ends it first.
        self._prune_pool: ThreadPoolExecutor | None = None
        self._prune_stop = threading.Event()
        self._pruning = False
        self._observer_keys = frozenset(bytes.fromhex(k) for k in config.observers)
        # Peers dialed at the address their member set on chain, and the config's own.
        self._chain_peers: dict[bytes, PeerAddress] = {}
        self._config_peers = {
            bytes.fromhex(p.public_key): PeerAddress(bytes.fromhex(p.public_key), p.host, p.port)
            for p in config.peers
        }
        # Called with the height of each newly final block (apps' feeds).
        self.height_listeners: list[Callable[[int], None]] = []

    @classmethod
    def from_home(
        cls,
        home: Path,
        passphrase: str | None = None,
        *,
        seams: ConsensusSeams | None = None,
        observer: bool = False,
        state_sync: bool = False,
    ) -> Node:
        config = load_config(home)
        if observer:
            config = dataclasses.replace(config, observer=True)
        if state_sync:
            sync = dataclasses.replace(config.state_sync, enabled=True)
            config = dataclasses.replace(config, state_sync=sync)
        if not (home / GENESIS_FILE).exists():
            # genesis.json is the last file install writes (genesis.home.install_genesis).
            raise ConfigError(
                f"no {GENESIS_FILE} in {home}: install the chain's genesis (liveledger "
                "genesis install); an install that stopped half-way completes when run again"
            )
        genesis = load_genesis(home / GENESIS_FILE)
        if passphrase is None:
            passphrase = os.environ.get(PASSPHRASE_ENV, "")
        key = load_key(home / NODE_KEY_FILE, passphrase)
        return cls(home, config, genesis, key, seams=seams)

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Open the store and build the in-memory parts (synchronous, before serving)."""
        settings = self.config.mempool
        if settings.verify_processes:
            # No process starts before ``start_workers`` below, when all else opened.
            verifier = self._verifier = ProcessVerifier(settings.verify_threads)
            self.metrics.signature_checks.track(
                lambda: (verifier.passed.checked, verifier.passed.reused)
            )
        self.store = self.config.storage.open_store(self.home / self.config.data_dir)
        # Once for a store written before the producer-set index (docs/node.md, Storage).
        if indexed := index_epoch_sets(self.store, self.genesis):
            log.info("indexed the producer sets of %d stored epoch records", indexed)
        self._verify_pool = ThreadPoolExecutor(
            max_workers=settings.verify_threads, thread_name_prefix="verify"
        )
        if not self.needs_state_sync:
            self._open_chain()
        if self._verifier is not None:
            self._verifier.start_workers()

    @property
    def needs_state_sync(self) -> bool:
        """An empty store with state sync on, or a sync interrupted by a restart."""
        store = self.store
        assert store is not None
        if store.initialized:
            return False
        return self.config.state_sync.enabled or store.sync_target() is not None

    def _open_chain(self) -> None:
        """The chain and mempool over the store (from genesis, or as state sync left it)."""
        assert self.store is not None
        settings = self.config.mempool
        stages = StageCpu()
        self.metrics.stage_cpu.track(stages)
        self.chain = Chain(self.store, self.genesis, self.registry, self._verifier, stages)
        self.mempool = Mempool(
            chain_id=self.genesis.chain_id,
            registry=self.registry,
            executor=self.chain.executor,
            params=self.chain.params,
            state=self.chain.state,
            height_fn=lambda: self.store.height if self.store else 0,
            config=settings,
            verify_pool=self._verify_pool,
            verifier=self._verifier,
            stages=stages,
        )
        self.metrics.height.set(self.chain.height)
        self.metrics.finalized_height.set(self.chain.height)
        log.info(
            "opened chain %s at height %d",
            self.genesis.chain_id,
            self.chain.height,
            extra={"chain_id": self.genesis.chain_id, "height": self.chain.height},
        )

    async def start(self) -> None:
        """Start p2p and consensus (after ``open``, on the serving event loop); a node
        that joins by state sync syncs first (the HTTP API serves once it is done)."""
        self._loop = asyncio.get_running_loop()
        self._loop_watch = self._loop.create_task(self._watch_loop())
        self.metrics.thread_cpu.track("event_loop", threading.get_native_id())
        cfg = self.config
        self.p2p = P2PNode(
            self.key,
            cfg.p2p_host,
            cfg.p2p_port,
            list(self._config_peers.values()),
            self.is_member,
            self._on_peer_message,
            chain_id=self.genesis.chain_id,
            genesis_hash=self.genesis.hash,
            registry=message_registry(),
            on_connect=lambda _peer: self.metrics.peers.set(len(self._peers())),
            on_disconnect=lambda _peer: self.metrics.peers.set(len(self._peers())),
        )
        await self.p2p.start()
        if self.chain is None:
            assert self.store is not None
            sync = cfg.state_sync
            self.syncer = StateSyncer(
                self.store,
                self.genesis,
                self.p2p,
                trust_height=sync.trust_height,
                trust_hash=bytes.fromhex(sync.trust_hash),
                request_timeout_s=sync.request_timeout_s,
            )
            await self.syncer.run()
            self._open_chain()
        assert self.chain is not None
        self.dial_members()
        self._prune_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prune")
        self._batcher = TxBatcher(self.p2p)
        # An observer never signs: no private validator at all (the engine then
        # only follows certificates), and no transaction of its own.
        privval = (
            None
            if cfg.observer
            else PrivValidator(self.key, self.genesis.chain_id, self.home / "consensus")
        )
        bft = BFTConfig(
            timeout_commit_ms=cfg.block_interval_ms,
            timeout_propose_ms=cfg.timeout_propose_ms,
        )
        assert self.mempool is not None
        main = LoopLink(self._loop)
        self.consensus = ConsensusService(
            self.chain,
            bft,
            privval,
            key=self.key,
            wal_dir=self.home / "consensus",
            # A build that outlasts the others' timeout_propose loses the round whatever
            # the setting says: at most two thirds of it (the rest carries the proposal).
            build_budget_ms=min(cfg.build_budget_ms, cfg.timeout_propose_ms * 2 // 3),
            main=main,
            txs=MainLoopTxSource(main, self.mempool),
            peers=self.p2p,
            committed=self.after_commit,
            submit_tx=self.submit_own_tx,
            metrics=self.metrics,
            seams=self.seams,
            wall=self.wall,
            halted=self._consensus_halted,
        )
        self.consensus.start()

    def _consensus_halted(self, fault: BaseException) -> None:
        """The engine stopped on a fault (a failed write, a bug): it will not advance
        again in this process, so the process should end (``run_node`` exits) and be
        started again, recovering from its WAL, rather than serve a frozen head."""
        log.critical(
            "consensus halted (%s: %s); the node stops so that it can be restarted",
            type(fault).__name__,
            fault,
        )
        self.fault = fault
        self.faulted.set()

    async def _watch_loop(self) -> None:
        """How late the main loop runs a timer, into ``liveledger_event_loop_stall_seconds``.

        The loop carries p2p (proposals and votes in and out), HTTP and admission: a
        long synchronous step there delays every vote behind it (docs/node.md, A batch
        is admitted in chunks). Ten wake-ups a second cost nothing an idle node notices.
        """
        loop = asyncio.get_running_loop()
        observe = self.metrics.loop_stall_seconds.observe
        while True:
            due = loop.time() + LOOP_WATCH_S
            await asyncio.sleep(LOOP_WATCH_S)
            observe(max(0.0, loop.time() - due))

    async def stop(self) -> None:
        for task in list(self._own_tx_tasks):
            task.cancel()
        if self._loop_watch is not None:
            self._loop_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_watch
            self._loop_watch = None
        self._prune_stop.set()
        if self._prune_pool is not None:
            # A pass in progress stops at its next batch; the store closes after it.
            await asyncio.get_running_loop().run_in_executor(None, self._prune_pool.shutdown)
            self._prune_pool = None
        if self.consensus is not None:
            # Joins the consensus thread: a commit in flight finishes first.
            await asyncio.get_running_loop().run_in_executor(None, self.consensus.stop)
            self.consensus = None
        if self.p2p is not None:
            await self.p2p.stop()
            self.p2p = None
        if self._verify_pool is not None:
            self._verify_pool.shutdown(wait=True)
        if self._verifier is not None:
            self._verifier.close()
        if self.store is not None:
            self.store.close()
            self.store = None
        log.info("node stopped")

    # --- membership and peers --------------------------------------------------------

    def is_member(self, public_key: bytes) -> bool:
        """Only members' nodes and the running producers may connect (``may_connect``),
        and the observers this node's config lists. Before the chain is open (state
        sync) the configured peers and genesis's validators: the state that says who
        is a member is what is being fetched."""
        if public_key in self._observer_keys:
            return True
        chain = self.chain
        if chain is None:
            return public_key in self._bootstrap_keys()
        if staking_enabled(chain.state):
            return may_connect(chain.state, public_key, chain.height + 1)
        return public_key in chain.genesis_validators

    def dial_members(self) -> None:
        """Dial every other member at the address it set on chain (``set_member_address``).

        The chain's address replaces the config's for that member (it is the member's
        own, latest word); config peers stay the rest, and the first peers a new node
        dials. One address per member, at most ``MAX_MEMBERS`` of them; TLS pins each
        member's key, so an address pointing at another machine gets failed handshakes
        and nothing else. An observer dials only its config's peers: members that do
        not list it would refuse it.
        """
        p2p, chain = self.p2p, self.chain
        if p2p is None or chain is None or self.config.observer:
            return
        state = chain.state
        if not staking_enabled(state):
            return
        wanted: dict[bytes, PeerAddress] = {}
        for key in members(state):
            text = member_address(state, key)
            if key == self.key.public_key or text is None:
                continue
            try:
                host, port = parse_net_address(text)
            except InvalidNetAddress:
                # The chain checks it on entry; a state that holds another is not ours to fix.
                log.warning("member %s has an unusable address %r", key.hex()[:12], text[:80])
                continue
            wanted[key] = PeerAddress(key, host, port)
        for key, peer in wanted.items():
            if self._chain_peers.get(key) != peer:
                log.info(
                    "dialing member %s at %s:%d (on chain)", key.hex()[:12], peer.host, peer.port
                )
                p2p.add_peer(peer)
        for key in self._chain_peers.keys() - wanted.keys():
            # Its member left: back to the config's address, if it has one.
            configured = self._config_peers.get(key)
            if configured is not None:
                p2p.add_peer(configured)
            else:
                p2p.remove_peer(key)
        self._chain_peers = wanted

    def _bootstrap_keys(self) -> set[bytes]:
        keys = {bytes.fromhex(p.public_key) for p in self.config.peers}
        return keys | {v.public_key for v in self.genesis.validators}

    def _peers(self) -> list[bytes]:
        return [] if self.p2p is None else list(self.p2p.peers())

    def peers(self) -> list[str]:
        return [p.hex() for p in self._peers()]

    async def _on_peer_message(self, peer: bytes, msg: object) -> None:
        if isinstance(msg, ConsensusMessage):
            if self.consensus is not None:
                await self.consensus.deliver(msg.unwrap(), peer)
            return
        if isinstance(msg, SnapshotRequest | EpochsRequest | ChunkRequest):
            answer = await self.snapshots.answer(msg, peer)
            if answer is not None and self.p2p is not None:
                self.p2p.send(peer, answer)
            return
        if isinstance(msg, SnapshotOffer | EpochsResponse | ChunkResponse):
            if self.syncer is not None and self.chain is None:
                self.syncer.deliver(peer, msg)
            return
        if isinstance(msg, TxBatch):
            if self.mempool is None:
                return  # still syncing
            results = await self.mempool.submit(list(msg.txs), origin=peer)
            bad = next((r for r in results if r.code in PEER_FAULT_CODES), None)
            if bad is not None:
                raise InvalidTransaction(
                    f"peer gossiped a bad transaction: {bad.message}", bad.code
                )
            return

    # --- transactions ----------------------------------------------------------------

    async def submit(self, raw_txs: Sequence[bytes], *, own: bool = False) -> list[SubmitResult]:
        """Admit transactions from a client (or this node: ``own``) and gossip the accepted
        ones to the producers."""
        assert self.mempool is not None
        results = await self.mempool.submit(raw_txs, client=not own, own=own)
        batcher = self._batcher
        if batcher is not None and self.p2p is not None and self.p2p.peers():
            for raw, result in zip(raw_txs, results, strict=True):
                if result.code == "accepted":
                    batcher.submit(bytes(raw))
        return results

    def submit_own_tx(self, tx_type: str, payload: bytes) -> None:
        """Sign a transaction with the node key (e.g. evidence) and submit it."""
        assert self.chain is not None and self.mempool is not None
        if self.config.observer:
            log.info("observer: not signing a %s transaction", tx_type)
            return
        task = asyncio.get_running_loop().create_task(self._submit_own_tx(tx_type, payload))
        self._own_tx_tasks.add(task)
        task.add_done_callback(self._own_tx_tasks.discard)

    async def _submit_own_tx(self, tx_type: str, payload: bytes) -> None:
        # One at a time: the next nonce is read from the mempool, which holds the
        # previous own transaction only once admission (which verifies off the loop)
        # is done. Signed at once, pieces of evidence released together
        # (``EvidencePool.committed``) all took one nonce and only the first was kept:
        # the other offenders went unpunished, since the pool submits a piece once.
        # For the same reason a refusal that passes (a pool full under load) is retried:
        # given up at once, it let a double signer go free.
        async with self._own_tx_lock:
            assert self.chain is not None
            give_up = self.chain.height + OWN_TX_RETRY_BLOCKS
            while True:
                result = await self._sign_and_submit_own(tx_type, payload)
                if result.code not in OWN_TX_RETRY_CODES or self.chain.height >= give_up:
                    break
                await asyncio.sleep(self.config.block_interval_ms / 1000)
        log.info(
            "own %s transaction: %s %s",
            tx_type,
            result.code,
            result.message,
            extra={"tx_hash": result.hash, "tx_type": tx_type, "code": result.code},
        )

    async def _sign_and_submit_own(self, tx_type: str, payload: bytes) -> SubmitResult:
        assert self.chain is not None and self.mempool is not None
        address = self.key.address
        nonce = self.mempool.next_nonce(address)
        if nonce is None:
            nonce = get_account(self.chain.state, address).nonce
        params = self.chain.params
        body = TxBody(
            nonce=nonce,
            fee=params.min_fee,
            expiry_height=self.chain.height + min(OWN_TX_RETRY_BLOCKS, params.max_expiry_blocks),
            type=tx_type,
            payload=payload,
        )
        raw = sign_tx(self.key, self.genesis.chain_id, body).encode()
        (result,) = await self.submit([raw], own=True)
        return result

    # --- after a block is final (main loop) ------------------------------------------

    def after_commit(self, executed: ExecutedBlock, commit: Commit, commit_seconds: float) -> None:
        assert self.chain is not None and self.mempool is not None
        header = executed.block.header
        result = executed.result
        # Governance may have changed fees or limits for the next block.
        self.mempool.set_params(self.chain.params)
        self.mempool.on_block_committed(
            (), included=result.included, result=result, result_height=header.height
        )
        if self.p2p is not None:
            # Membership may have changed (governance): drop peers that left.
            self.p2p.check_members()
            if not result.types.isdisjoint(ADDRESS_TX_TYPES):
                self.dial_members()
        m = self.metrics
        m.height.set(header.height)
        m.finalized_height.set(header.height)
        m.commit_round.set(commit.round)
        if header.last_commit is not None and header.height > 1:
            signed = {s.validator for s in header.last_commit.signatures}
            for producer in self.chain.validators_for(header.height - 1).keys:
                if producer not in signed:
                    m.missed_slots.labels(validator=producer.hex()[:16]).inc()
        m.block_txs.observe(len(result.included))
        m.block_execution_seconds.observe(executed.execute_seconds)
        m.block_commit_seconds.observe(commit_seconds)
        m.txs_committed.inc(len(result.included))
        for shard, size in enumerate(self.mempool.shard_sizes()):
            m.mempool_size.labels(shard=str(shard)).set(size)
        stats = self.mempool.stats()
        m.mempool_pending.set(stats.pending)
        m.mempool_queued.set(stats.queued)
        if result.included:
            log.info(
                "finalized block %d round %d with %d txs "
                "(exec %.1f ms, of it tree and encoding %.1f ms, commit %.1f ms)",
                header.height,
                commit.round,
                len(result.included),
                executed.execute_seconds * 1000,
                executed.after_seconds * 1000,
                commit_seconds * 1000,
                extra={
                    "height": header.height,
                    "round": commit.round,
                    "block_hash": executed.block.hash,
                    "txs": len(result.included),
                },
            )
        self._after_commit_storage(header.height)
        for height_listener in list(self.height_listeners):
            try:
                height_listener(header.height)
            except Exception:
                log.exception("height listener failed")

    def _after_commit_storage(self, height: int) -> None:
        """Keep the epoch record at an epoch's last block; start a pruning pass when due."""
        store = self.store
        assert store is not None
        length = self.genesis.params.epoch_length
        if self.genesis.staking is not None and height % length == 0:
            keep_epoch_record(store, height // length, length)
        pruning = self.config.pruning
        if pruning.archive or height % pruning.interval or self._pruning:
            return
        if self._prune_pool is None or self._prune_stop.is_set():
            return  # stopping: the pool may be shutting down, and refuses new passes
        self._pruning = True
        future = self._prune_pool.submit(self._prune, height)
        future.add_done_callback(self._pruned)

    def _prune(self, height: int) -> None:
        """One pruning pass below the retention window of ``height`` (prune thread)."""
        store = self.store
        assert store is not None
        keep = frozenset(self.snapshots.snapshot_heights(height))
        deleted = prune(store, self.genesis, self.config.pruning, height, keep, self._prune_stop)
        log.info(
            "pruned at %d: blocks kept from %d, states from %d (+ snapshots %s), %d nodes deleted",
            height,
            store.block_base,
            store.state_base,
            sorted(keep),
            deleted,
        )

    def _pruned(self, future: Future[None]) -> None:
        self._pruning = False
        exc = future.exception()
        if exc is not None:
            log.error("pruning failed: %s", exc, exc_info=exc)


# The node in its HTTP app (``node.api.create_app``), where every route reads it.
NODE: web.AppKey[Node] = web.AppKey("node", Node)
