"""Prometheus metrics of one node, in a registry of its own (several nodes may share a process in tests)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from node.stage_cpu import StageCpu

# What refuses an HTTP client for now (503 ``busy``, or a feed socket closed with 1013),
# the ``reason`` of ``liveledger_http_refused_total``: the connection gate's caps, the
# bodies' and answers' budgets, each ``ReadSlots`` that refuses, the feeds' socket caps,
# the submissions' budget of transactions refused by their checks (``node.bodies.CheckBudget``).
# A fixed set, never a value from a request: a label per client would grow without end.
HTTP_REFUSERS = (
    "connections",
    "bodies",
    "answers",
    "commerce_reads",
    "block_reads",
    "simulations",
    "feeds",
    "unpaid_checks",
)
# Which of a refuser's bounds was full: the node's, or the client address's share.
REFUSAL_BOUNDS = ("total", "per_address")

# Clock ticks per second of /proc's CPU times.
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(path: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user + system) from a ``/proc`` ``stat`` file (a
    process's or a thread's); None where there is no such file (not Linux, gone)."""
    try:
        with open(path, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces), from field 3 on.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


class ThreadCpu(Collector):
    """``liveledger_thread_cpu_seconds_total{thread}``: CPU time of the node's own threads
    by role, and of the rest of its process.

    Which part of a loaded node is busy: its event loop (p2p, HTTP, admission), its
    consensus thread (blocks: execution, the state tree, commits) or the rest, which
    is mostly LevelDB's compactions (docs/node.md, LevelDB compactions). The signature
    workers are processes of their own and not counted. Read from ``/proc`` at each
    scrape, so nothing is spent between scrapes; absent where there is no ``/proc``.
    """

    def __init__(self) -> None:
        self._threads: dict[str, int] = {}

    def track(self, role: str, native_id: int) -> None:
        """Count thread ``native_id`` (``threading.get_native_id()``) as ``role``."""
        self._threads[role] = native_id

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "liveledger_thread_cpu_seconds",
            "CPU seconds of the node's event loop and consensus threads, and of the "
            "process's other threads (LevelDB's compactions among them)",
            labels=["thread"],
        )
        known = 0.0
        for role, native_id in self._threads.items():
            stat = proc_stat(f"/proc/self/task/{native_id}/stat")
            if stat is not None:
                family.add_metric([role], stat[1])
                known += stat[1]
        if family.samples:
            times = os.times()
            # Rounded to the clock tick both sides count in (0.01 s), not to float noise.
            other = round(times.user + times.system - known, 2)
            family.add_metric(["other"], max(0.0, other))
            yield family


class SignatureChecks(Collector):
    """``liveledger_signature_checks_total{by}``: transaction envelopes (signatures
    among their checks) checked by the verification workers (``workers``), and passes
    reused from their memory of what passed before (``memory``): the first over the
    transactions committed says how often the node checks one transaction, which is
    once when it keeps up and more when it falls behind (``node.verifier``). Read at
    each scrape; absent where the node verifies on threads."""

    def __init__(self) -> None:
        self._source: Callable[[], tuple[int, int]] | None = None

    def track(self, source: Callable[[], tuple[int, int]]) -> None:
        """Read (checked, reused) from ``source`` at each scrape."""
        self._source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self._source is None:
            return
        checked, reused = self._source()
        family = CounterMetricFamily(
            "liveledger_signature_checks",
            "Transaction envelopes checked by the signature workers (workers) and passes "
            "reused from their memory (memory)",
            labels=["by"],
        )
        family.add_metric(["workers"], checked)
        family.add_metric(["memory"], reused)
        yield family


class StageCpuSeconds(Collector):
    """``liveledger_stage_cpu_seconds_total{stage}``: the CPU seconds each stage of the
    node's transaction pipeline spent (``node.stage_cpu``), over all its threads.
    Read at each scrape; absent until a chain is open."""

    def __init__(self) -> None:
        self._source: StageCpu | None = None

    def track(self, source: StageCpu) -> None:
        """Read the stages' totals from ``source`` at each scrape."""
        self._source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self._source is None:
            return
        family = CounterMetricFamily(
            "liveledger_stage_cpu_seconds",
            "CPU seconds by stage of the transaction pipeline: admission, block "
            "selection, execution, state tree, roots, commit, the mempool after a commit",
            labels=["stage"],
        )
        for stage, seconds in self._source.totals().items():
            family.add_metric([stage], seconds)
        yield family


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
        self.http_connections = Gauge(
            "liveledger_http_connections",
            "Open HTTP connections (WebSockets among them)",
            registry=r,
        )
        self.http_refused = Counter(
            "liveledger_http_connections_refused",
            "HTTP connections refused at once, over the node's cap (total) or the address's",
            ["reason"],
            registry=r,
        )
        self.http_stalled = Counter(
            "liveledger_http_connections_stalled",
            "HTTP connections aborted because their client stopped reading, or did not take "
            "an answer within its deadline",
            registry=r,
        )
        self.http_evicted = Counter(
            "liveledger_http_connections_evicted",
            "HTTP connections reset at the total cap to make room for an address holding fewer",
            registry=r,
        )
        self.http_refusals = Counter(
            "liveledger_http_refused",
            "HTTP requests, connections and feed sockets refused for now (503 busy, a "
            "feed's 1013), by what refused them and whether the node's bound (total) or "
            "the client address's share (per_address) was full",
            ["reason", "bound"],
            registry=r,
        )
        # Every series from the start (at 0): a rate over a series that appears with its
        # first refusal misses that refusal.
        for reason in HTTP_REFUSERS:
            for bound in REFUSAL_BOUNDS:
                self.http_refusals.labels(reason, bound)
        self.thread_cpu = ThreadCpu()
        r.register(self.thread_cpu)
        self.signature_checks = SignatureChecks()
        r.register(self.signature_checks)
        self.stage_cpu = StageCpuSeconds()
        r.register(self.stage_cpu)

    def count_refusals(self, reason: str) -> Callable[[str], None]:
        """The ``on_refused(bound)`` callback of refuser ``reason`` (one of
        ``HTTP_REFUSERS``): counts each refusal in its series, looked up here once, so
        a refusal costs an increment and nothing else costs anything."""
        if reason not in HTTP_REFUSERS:
            raise ValueError(f"unknown HTTP refuser {reason!r}; known: {HTTP_REFUSERS}")
        series = {bound: self.http_refusals.labels(reason, bound) for bound in REFUSAL_BOUNDS}

        def refused(bound: str) -> None:
            series[bound].inc()

        return refused
