"""Shared pieces of the benchmarks: the verification ceiling and a devnet under test."""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from core import PrivateKey, SignDomain, verify
from genesis import Genesis, GenesisAccount, genesis_state, load_genesis, save_genesis
from node.metrics import proc_stat
from node.run import tune_gc
from node.stage_cpu import STAGES
from storage import ChainStore
from vm import Account, account_key


@contextmanager
def node_gc() -> Iterator[None]:
    """The cyclic GC tuned as a node tunes it (``node.run.tune_gc``) inside the block,
    then as it was: an in-process benchmark of node work then measures what the node
    pays. With Python's default thresholds a young collection every 700 allocations
    scans what the benchmark holds (its state, its blocks), which a node's tuning
    spares it: at executor level that was half of a transfer's figure."""
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def verify_ceiling(samples: int = 20_000, threads: int = 2) -> float:
    """Ed25519 verifications per second with ``threads`` threads (PyNaCl releases the GIL)."""
    key = PrivateKey.generate()
    msgs = [i.to_bytes(8, "big") * 12 for i in range(samples)]
    sigs = [key.sign(SignDomain.TX, "bench", m) for m in msgs]
    pub = key.public_key

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            verify(pub, SignDomain.TX, "bench", msgs[i], sigs[i])

    step = samples // threads
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(lambda i: run(i * step, (i + 1) * step), range(threads)))
        elapsed = time.perf_counter() - started
    return step * threads / elapsed


# A node's CPU by part (``Devnet.cpu_seconds``): its event loop (p2p, HTTP, admission),
# its consensus thread (blocks), its other threads (LevelDB's compactions) and its
# signature workers.
CPU_PARTS = ("event_loop", "consensus", "other", "workers")
# The parts that run Python under the node's one GIL (``main_process_us``).
GIL_PARTS = ("event_loop", "consensus")


def children_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) of the live child processes of ``pid``, from
    ``/proc``; None where there is no ``/proc``."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    stats = (proc_stat(f"/proc/{entry}/stat") for entry in entries if entry.isdigit())
    # A process gone meanwhile has no stat: skipped.
    return sum(cpu for parent, cpu in filter(None, stats) if parent == pid)


_CHECKS = re.compile(
    r'^liveledger_signature_checks_total\{by="(\w+)"\} ([0-9.e+-]+)$', re.MULTILINE
)
_THREAD_CPU = re.compile(
    r'^liveledger_thread_cpu_seconds_total\{thread="(\w+)"\} ([0-9.e+-]+)$', re.MULTILINE
)
_STAGE_CPU = re.compile(
    r'^liveledger_stage_cpu_seconds_total\{stage="(\w+)"\} ([0-9.e+-]+)$', re.MULTILINE
)
_COMMITTED = re.compile(r"^liveledger_txs_committed_total ([0-9.e+-]+)$", re.MULTILINE)


def _metrics_text(url: str, timeout: float) -> str | None:
    """The node's ``GET /metrics`` page, or None if it did not answer in ``timeout``."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout) as resp:
            text: str = resp.read().decode()
            return text
    except OSError:
        return None


# A phase as ``cpu_table`` and ``main_process_us`` take it: its name, its transactions,
# and every node's ``cpu_seconds`` before and after it.
CpuPhase = tuple[str, int, list[dict[str, float]], list[dict[str, float]]]


def _spent(
    before: dict[str, float], after: dict[str, float], parts: tuple[str, ...] = CPU_PARTS
) -> dict[str, float]:
    """One node's CPU seconds by part between two ``cpu_seconds`` reads (parts read both
    times only). Clamped: two reads of one counter a few ms apart may differ by a tick."""
    return {p: max(0.0, after[p] - before[p]) for p in parts if p in after and p in before}


def mean_us_per_tx(phase: CpuPhase) -> dict[str, float]:
    """The nodes' mean CPU microseconds per transaction of ``phase``, by part (a part
    a node did not report counts as nothing)."""
    _, txs, before, after = phase
    means = dict.fromkeys(CPU_PARTS, 0.0)
    for b, a in zip(before, after, strict=True):
        for p, v in _spent(b, a).items():
            means[p] += v / len(after) / max(1, txs) * 1e6
    return means


def cpu_table(phases: list[CpuPhase]) -> str:
    """Per phase (name, transactions, ``cpu_seconds`` before, after): each node's CPU
    seconds by part, and the mean over the nodes in microseconds per transaction."""
    lines = [f"CPU per validator, seconds ({' / '.join(CPU_PARTS)}); mean us per tx:"]
    for phase in phases:
        name, _, before, after = phase
        cells = []
        for b, a in zip(before, after, strict=True):
            spent = _spent(b, a)
            cells.append("/".join(f"{spent[p]:.1f}" if p in spent else "-" for p in CPU_PARTS))
        means = mean_us_per_tx(phase)
        mean = " / ".join(f"{means[p]:.0f}" for p in CPU_PARTS)
        lines.append(f"  {name:<16} {'  '.join(cells)}   ({mean} us/tx)")
    return "\n".join(lines)


def stage_table(phases: list[CpuPhase]) -> str:
    """Per phase (as ``cpu_table`` takes them): the mean over the nodes of each pipeline
    stage's CPU microseconds per transaction (``node.stage_cpu``), then ``rest``: what
    the event loop and consensus thread spent outside the stages (HTTP, p2p, consensus
    messages, the write-ahead log). Each mean is over the nodes that reported it (an
    older build reports no stages); a row none reported reads ``-``."""
    names = [name for name, _, _, _ in phases]
    width = max([10, *(len(n) for n in names)])
    lines = [
        "CPU by stage, mean us per tx over the validators (event loop + consensus thread):",
        f"  {'stage':<16}" + "".join(f" {n:>{width}}" for n in names),
    ]
    columns: list[dict[str, float]] = []
    for _, txs, before, after in phases:
        # Per row, each reporting node's microseconds per transaction.
        seen: dict[str, list[float]] = {}
        for b, a in zip(before, after, strict=True):
            us = {p: v / max(1, txs) * 1e6 for p, v in _spent(b, a, (*STAGES, *GIL_PARTS)).items()}
            if len(us) == len(STAGES) + len(GIL_PARTS):
                staged = sum(us[s] for s in STAGES)
                us["rest"] = max(0.0, sum(us[p] for p in GIL_PARTS) - staged)
            for row, value in us.items():
                seen.setdefault(row, []).append(value)
        columns.append({row: sum(v) / len(v) for row, v in seen.items()})
    for row in (*STAGES, "rest"):
        cells = "".join(
            f" {c[row]:>{width}.2f}" if row in c else f" {'-':>{width}}" for c in columns
        )
        lines.append(f"  {row:<16}{cells}")
    return "\n".join(lines)


def main_process_us(phases: list[CpuPhase]) -> float:
    """The nodes' event loop and consensus thread together, mean CPU microseconds per
    transaction over ``phases`` (as ``cpu_table`` takes them).

    Those two threads share one GIL, so this is the work one core must do per
    transaction: a phase's rate cannot beat it, however many signature workers run
    beside. It does not count the idle time a phase's batches leave, which moves a
    rate by a fifth between runs of one build (``benches.commerce``).
    """
    seconds = 0.0
    txs = 0
    for _, count, before, after in phases:
        for b, a in zip(before, after, strict=True):
            spent = _spent(b, a)
            seconds += sum(spent.get(p, 0.0) for p in GIL_PARTS) / len(after)
        txs += count
    return seconds / max(1, txs) * 1e6


def own_work_per_signature(phases: list[CpuPhase]) -> float | None:
    """The nodes' own CPU (event loop, consensus thread, other threads) over their
    signature workers' CPU, summed over ``phases`` and the nodes: the issue's measure
    of a node's own work per transaction against its signature checks (at most one
    check per transaction when it keeps up). Both sides come from one window of one
    run, so the host's speed, which drifts between the ceiling's samples and the
    flood, cancels out. None where no worker CPU was read (no ``/proc``, threads)."""
    own = workers = 0.0
    for _, _, before, after in phases:
        for b, a in zip(before, after, strict=True):
            spent = _spent(b, a)
            own += sum(spent.get(p, 0.0) for p in CPU_PARTS if p != "workers")
            workers += spent.get("workers", 0.0)
    return own / workers if workers > 0 else None


def fund_accounts(root: Path, keys: list[PrivateKey], balance: int) -> None:
    """Add funded accounts to a freshly created devnet's genesis (before its first start)."""
    genesis = load_genesis(root / "genesis.json")
    extra = tuple(GenesisAccount(k.address, balance) for k in keys)
    updated: Genesis = replace(genesis, accounts=genesis.accounts + extra)
    for path in [root / "genesis.json", *root.glob("node*/genesis.json")]:
        path.unlink()
        save_genesis(path, updated)


class Devnet:
    """``liveledger devnet`` as a subprocess; ``nodes`` are read from devnet.json."""

    def __init__(self, root: Path, validators: int, log_level: str = "INFO") -> None:
        self.root = root
        self.log_level = log_level
        self.validators = validators
        self.process: subprocess.Popen[bytes] | None = None
        self._err: BinaryIO | None = None
        self.nodes: list[dict] = []

    def start(self, timeout: float = 90.0) -> None:
        env = dict(os.environ, LIVELEDGER_PASSPHRASE="")
        # Kept beside the node logs: why a devnet did not come up.
        self._err = open(self.root / "devnet.err", "wb")  # closed in stop
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "--log-level",
                self.log_level,
                "devnet",
                "--dir",
                str(self.root),
                "--validators",
                str(self.validators),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )
        try:
            self._wait_up(timeout)
        except BaseException:
            # Callers stop the devnet once it is up: one that never came up (or a
            # Ctrl-C meanwhile) must not leave its nodes running.
            self.stop()
            raise

    def _wait_up(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        path = self.root / "devnet.json"
        while not path.exists():
            if self.process.poll() is not None:
                err = (self.root / "devnet.err").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"devnet exited with {self.process.returncode}: {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("devnet did not come up")
            time.sleep(0.2)
        self.nodes = json.loads(path.read_text())["nodes"]

    def wait_tree_loaded(self, timeout: float = 600.0) -> float:
        """Wait until every node reports its state tree's upper levels loaded
        (``liveledger_state_tree_loaded``); returns the seconds waited. A node loads
        them once after each start, reading ~1M nodes at 1M accounts (a minute for
        four nodes on two cores), and until then each fresh key costs more: a
        measurement started earlier measures the start, not the chain."""
        started = time.monotonic()
        deadline = started + timeout
        loaded = re.compile(r"^liveledger_state_tree_loaded 1(\.0)?$", re.MULTILINE)
        for node in self.nodes:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"devnet exited with {self.process.returncode}")
                metrics = _metrics_text(node["url"], 10)
                # None: a node too busy to answer yet, asked again below.
                if metrics is not None and loaded.search(metrics):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node['url']}: state tree not loaded in {timeout:.0f} s")
                time.sleep(0.5)
        return time.monotonic() - started

    def cpu_seconds(self) -> list[dict[str, float]]:
        """Each node's CPU seconds so far by part (``CPU_PARTS``): its threads from
        ``liveledger_thread_cpu_seconds_total`` in its metrics, its signature workers
        (its child processes) from ``/proc``; and by stage of its pipeline (``STAGES``,
        from ``liveledger_stage_cpu_seconds_total``). Differences of two calls show where
        a phase's CPU went (Linux; a part that cannot be read is missing)."""
        out = []
        for node in self.nodes:
            metrics = _metrics_text(node["url"], 30) or ""
            parts = {k: float(v) for k, v in _THREAD_CPU.findall(metrics)}
            # The stages' share of those threads (``node.stage_cpu``), by stage name.
            parts.update((k, float(v)) for k, v in _STAGE_CPU.findall(metrics))
            workers = children_cpu_seconds(node["pid"])
            if workers is not None:
                parts["workers"] = workers
            out.append(parts)
        return out

    def signature_checks(self) -> list[tuple[float, float, float]]:
        """Each node's (envelopes its workers checked, passes reused from their memory,
        transactions committed) so far, from its metrics (0 where one is missing)."""
        out = []
        for node in self.nodes:
            metrics = _metrics_text(node["url"], 30) or ""
            checks = dict(_CHECKS.findall(metrics))
            committed = _COMMITTED.search(metrics)
            out.append(
                (
                    float(checks.get("workers", 0)),
                    float(checks.get("memory", 0)),
                    float(committed.group(1)) if committed else 0.0,
                )
            )
        return out

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._err is not None:
            self._err.close()


def prebuild_state(
    root: Path, validators: int, addresses: Iterable[bytes], balance: int, what: str
) -> None:
    """Write a devnet's height-0 state with ``addresses`` funded besides genesis's accounts.

    The genesis document holds at most ``MAX_GENESIS_ACCOUNTS``; a chain that already
    holds a million accounts is made here instead, before the nodes first start: node0's
    store is initialized with genesis's state plus these accounts (flat state, tree
    nodes, root, as ``ChainStore.initialize`` writes them) and copied to the other
    nodes, which then open it as an initialized chain of this genesis. The height-0 root
    is not the one the genesis document alone gives (an audit from genesis would not
    replay it); every node of the bench starts from the same state, so blocks agree.
    Prints how many accounts (``what`` they are), the time taken, the bench process's
    peak RSS and the size of a node's data.
    """
    started = time.perf_counter()
    genesis = load_genesis(root / "genesis.json")
    state = genesis_state(genesis)
    value = Account(balance, 0).encode()
    count = 0
    for address in addresses:
        state.setdefault(account_key(address), value)
        count += 1
    first = root / "node0" / "data"
    with ChainStore(first) as store:
        store.initialize(genesis.hash, state)
        del state
        # One write batch leaves the whole state in LevelDB's log: every node would
        # replay it into memory at its first open (a 1M-account state took them past the
        # devnet's startup timeout, and ~700 MB of RSS each). Compacted once here, the
        # nodes open leveled tables, as a node that grew its state block by block would:
        # opened as a node opens it, so the tables get the node's bloom filters (a plain
        # plyvel open built the 1M-key table without, and every read of a fresh
        # account's key read a block of it).
        store.compact()
    for i in range(1, validators):
        shutil.copytree(first, root / f"node{i}" / "data")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"state of {count:,} {what} built in {time.perf_counter() - started:.1f} s "
        f"(bench process peak RSS {rss:,.0f} MB, node data {dir_bytes(first) / 1e6:,.0f} MB each)",
        flush=True,
    )


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (a node's data directory)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _status_mb(pid: int) -> dict[str, float] | None:
    """The sizes in ``/proc/<pid>/status`` (its kB lines), in MB; None once it is gone."""
    sizes: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if rest.endswith(" kB"):
                sizes[name] = int(rest.split()[0]) / 1024
    except OSError:
        return None
    return sizes


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set of process ``pid`` (Linux ``VmHWM``), None once it is gone."""
    return (_status_mb(pid) or {}).get("VmHWM")


def rss_split_mb(pid: int) -> tuple[float, float] | None:
    """The resident set of process ``pid`` now, split into anonymous memory (the heap,
    caches, the tree's slots) and file-backed pages (LevelDB maps its table files, and
    the pages a read touched stay in the resident set until the kernel reclaims them),
    in MB; None once it is gone."""
    sizes = _status_mb(pid)
    if sizes is None or "RssAnon" not in sizes:
        return None
    return sizes["RssAnon"] + sizes.get("RssShmem", 0.0), sizes.get("RssFile", 0.0)


class RssPeaks:
    """The highest anonymous and file-backed resident sets (``rss_split_mb``) of some
    processes, sampled every ``interval`` seconds on a thread of its own.

    ``VmHWM`` counts both at once, and LevelDB's table maps (clean file pages the
    kernel may reclaim) can make up most of it: the anonymous peak is the memory the
    process itself held. A sample can miss a peak shorter than the interval.
    """

    def __init__(self, pids: list[int], interval: float = 0.25) -> None:
        self.anonymous = [0.0] * len(pids)
        self.file_backed = [0.0] * len(pids)
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rss-peaks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (idempotent); the peaks hold what was seen until now."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sample(self) -> list[tuple[float, float]]:
        """Each process's (anonymous, file-backed) MB now, counted in the peaks too;
        (0, 0) for one that is gone."""
        now = []
        for i, pid in enumerate(self._pids):
            split = rss_split_mb(pid) or (0.0, 0.0)
            with self._lock:
                self.anonymous[i] = max(self.anonymous[i], split[0])
                self.file_backed[i] = max(self.file_backed[i], split[1])
            now.append(split)
        return now

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self._interval):
                return


def p50_p99(latencies: list[float]) -> tuple[float, float]:
    """Median and 99th percentile (nearest rank) of sorted ``latencies``; nan when empty."""
    if not latencies:
        return float("nan"), float("nan")
    return statistics.median(latencies), latencies[max(0, int(len(latencies) * 0.99) - 1)]
