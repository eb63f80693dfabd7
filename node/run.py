"""Process entry point of a validator: the node's resources live in the app's cleanup context."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvloop
from aiohttp import web

from core.errors import CannotListen, NodeFault
from node.api import create_app
from node.consensus import ConsensusSeams
from node.http_server import HttpServer, serve_until_signalled
from node.logs import configure_logging
from node.service import NODE, Node
from storage import raise_open_file_limit

log = logging.getLogger("node.run")

# The GIL switch interval when signatures are checked on threads of the node
# (``verify_processes: false``); with worker processes CPython's default (5 ms).
THREAD_VERIFY_SWITCH_INTERVAL_S = 0.0005
# Exit status of a node whose consensus engine halted on a fault (EX_SOFTWARE): its
# supervisor restarts it, and the WAL restores where it was.
EXIT_CONSENSUS_HALTED = 70
# Young-generation threshold of the cyclic GC (CPython's default is 700).
GC_GEN0_THRESHOLD = 400_000


def tune_gc() -> None:
    """Make the cyclic GC cheap for a node that holds many long-lived objects.

    Every admitted transaction is several GC-tracked objects that live until its
    block commits, and a block allocates tens of thousands more. With the
    default thresholds the collector runs every 700 allocations and its older
    generations keep re-scanning the mempool: measured, a 10k-transfer block
    built in 35-45 us per transaction instead of 24. Startup objects (modules,
    genesis, caches) are moved out of the collector's sight with ``gc.freeze``
    and young collections run every 400,000 net allocations of tracked objects;
    the older generations keep their default ratios, so memory held by garbage
    cycles stays bounded (a young collection is at most a few hundred ms). A
    young collection scans every tracked object still alive, and a loaded node
    keeps each transaction's objects alive for seconds (mempool, then the block
    until it commits): the rarer the collections, the more of them die unseen.
    Measured on four loaded validators over 100k transactions: 0.7-1.6 s of GC
    per node at 100,000, 0.1-0.5 s at 400,000 (at 10,000 a single validator
    also re-scanned its mempool in a middle collection every ~25k transactions).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    log.info("cyclic GC: startup objects frozen, young generation every %d", GC_GEN0_THRESHOLD)


async def _node_context(app: web.Application) -> AsyncIterator[None]:
    """Open the node before serving; stop it (finishing any block in flight) after."""
    node = app[NODE]
    node.open()
    try:
        # A start that fails or is cancelled (a signal during state sync) still
        # stops what it started.
        await node.start()
        yield
    finally:
        await node.stop()


async def _gc_context(app: web.Application) -> AsyncIterator[None]:
    tune_gc()
    yield


def build_app(node: Node) -> web.Application:
    app = create_app(node)
    app.cleanup_ctx.append(_node_context)
    return app


def http_server(node: Node, app: web.Application, fd_limit: int | None = None) -> HttpServer:
    """``app`` on the node's HTTP address behind its connection gate, counted in its
    metrics; ``fd_limit`` (the process's open-file limit) caps the connections too."""
    metrics = node.metrics
    refused = metrics.count_refusals("connections")

    def on_refused(reason: str) -> None:
        metrics.http_refused.labels(reason).inc()
        refused(reason)

    server = HttpServer(
        app,
        node.config.http_host,
        node.config.http_port,
        node.config.http,
        fd_limit=fd_limit,
        on_refused=on_refused,
        on_stalled=metrics.http_stalled.inc,
        on_evicted=metrics.http_evicted.inc,
    )
    metrics.http_connections.set_function(lambda: server.gate.connections if server.gate else 0)
    return server


def run_node(
    home: Path,
    passphrase: str | None = None,
    *,
    seams: ConsensusSeams | None = None,
    observer: bool = False,
    state_sync: bool = False,
) -> None:
    """Run one validator until SIGINT or SIGTERM, or until its consensus engine halts
    on a fault (then exit with ``EXIT_CONSENSUS_HALTED``). ``seams`` is for tests only (the
    ``liveledger`` command never passes it): see ``ConsensusSeams``. ``observer`` and
    ``state_sync`` turn those settings on over what the config says."""
    # Before the store opens: LevelDB sizes its budget of table files from it.
    fd_limit = raise_open_file_limit()
    node = Node.from_home(home, passphrase, seams=seams, observer=observer, state_sync=state_sync)
    if not node.config.mempool.verify_processes:
        # Signature threads drop the GIL for every verification and must win it back;
        # with the default 5 ms switch interval a CPU-bound block build starves them
        # (a convoy). With worker processes there is no such thread, and a short
        # interval only has the event loop and the consensus thread hand the GIL to
        # each other thousands of times a second.
        sys.setswitchinterval(THREAD_VERIFY_SWITCH_INTERVAL_S)
    app = build_app(node)
    # After the node opened (cleanup contexts start in order): this process only.
    app.cleanup_ctx.append(_gc_context)
    server = http_server(node, app, fd_limit)
    log.info(
        "node %s starting, HTTP on http://%s:%d (open-file limit %d)",
        node.config.moniker,
        node.config.http_host,
        node.config.http_port,
        fd_limit,
        extra={"moniker": node.config.moniker, "node_key": node.key.public_key},
    )
    try:
        serve_until_signalled(uvloop.new_event_loop(), server, until=node.faulted)
    except CannotListen as exc:
        setting = "http_port" if exc.what == "HTTP" else "p2p_port"
        raise NodeFault(
            f"{exc}: is another node or program using it? Stop it, or change {setting} in "
            f"{home / 'config.json'}"
        ) from exc
    if node.fault is not None:
        log.critical("exiting with status %d: consensus halted", EXIT_CONSENSUS_HALTED)
        raise SystemExit(EXIT_CONSENSUS_HALTED)


__all__ = [
    "EXIT_CONSENSUS_HALTED",
    "build_app",
    "configure_logging",
    "http_server",
    "run_node",
]
