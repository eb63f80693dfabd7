"""Prometheus metrics of one node, in a registry of its own (several nodes may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("liveledger_height", "Height of the latest committed block", registry=r)
        self.finalized_height = Gauge(
            "liveledger_finalized_height", "Height of the latest final block", registry=r
        )
        self.round = Gauge(
            "liveledger_round", "Consensus round in progress at the current height", registry=r
        )
        self.commit_round = Gauge(
            "liveledger_commit_round", "Round in which the latest block was finalized", registry=r
        )
        self.votes = Counter(
            "liveledger_votes_received", "Consensus votes received from peers", ["type"], registry=r
        )
        self.missed_slots = Counter(
            "liveledger_missed_slots",
            "Producers absent from a block's certificate of its parent",
            ["validator"],
            registry=r,
        )
        self.block_txs = Histogram(
            "liveledger_block_txs",
            "Transactions per block",
            buckets=(0, 1, 10, 100, 1000, 5000, 10000, 20000, 50000),
            registry=r,
        )
        self.block_execution_seconds = Histogram(
            "liveledger_block_execution_seconds",
            "Time to execute a block and compute its state root",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.block_commit_seconds = Histogram(
            "liveledger_block_commit_seconds",
            "Time to write a block batch to disk (fsync included)",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2),
            registry=r,
        )
        self.txs_committed = Counter(
            "liveledger_txs_committed", "Transactions committed in blocks", registry=r
        )
        self.txs_rejected = Counter(
            "liveledger_txs_rejected", "Transactions refused at submission", ["code"], registry=r
        )
        self.mempool_size = Gauge(
            "liveledger_mempool_size",
            "Pending transactions per mempool shard",
            ["shard"],
            registry=r,
        )
        self.mempool_pending = Gauge(
            "liveledger_mempool_pending",
            "Transactions the next blocks can include (each sender's run from its nonce)",
            registry=r,
        )
        self.mempool_queued = Gauge(
            "liveledger_mempool_queued",
            "Transactions held above a missing nonce of their sender",
            registry=r,
        )
        self.peers = Gauge("liveledger_peers", "Connected peers", registry=r)
        self.state_tree_loaded = Gauge(
            "liveledger_state_tree_loaded",
            "1 once the state tree's upper levels are in memory after the start (until "
            "then each fresh key reads more tree nodes from disk), else 0",
            registry=r,
        )
        self.loop_stall_seconds = Histogram(
            "liveledger_event_loop_stall_seconds",
            "How late the main event loop (p2p, HTTP, admission) ran a timer due every 0.1 s",
            buckets=(0.01, 0.05, 0.1, 0.3, 1, 3),
            registry=r,
        )
