"""Node-local settings (``<home>/config.json``); chain parameters live in genesis."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from apps.commerce.feed import FeedLimits
from core import LiveLedgerError
from core.files import DuplicateJsonKey, read_regular_file, reject_duplicate_keys
from core.netaddr import InvalidNetAddress, endpoint_key, format_net_address

# The home's layout is fixed where homes are made (``genesis.home``, ``liveledger init``).
from genesis.document import VALIDATOR_NAME_PATTERN
from genesis.home import (
    CONFIG_FILE,
    DEFAULT_BLOCK_INTERVAL_MS,
    MAX_BLOCK_INTERVAL_MS,
    MAX_CONFIG_FILE_BYTES,
    MIN_BLOCK_INTERVAL_MS,
)
from genesis.home import GENESIS_FILE as GENESIS_FILE
from genesis.home import NODE_KEY_FILE as NODE_KEY_FILE
from node.http_server import HttpLimits
from p2p.messages import MAX_CHUNK_BYTES
from storage import DEFAULT_STATE_CACHE_SIZE, DEFAULT_TREE_CACHE_SIZE, ChainStore

# A test skews a clock by a fraction of the time precision; a day is no test.
MAX_TEST_CLOCK_OFFSET_MS = 86_400_000


class ConfigError(LiveLedgerError):
    """The node's home or its config file is missing or wrong."""


# Upper bounds of the mempool settings that size what the node starts with: each
# verify worker is a thread or a process (a typo of 100000 would spawn that many at
# start), and every proposal builds a heap per shard and class. No machine we run on
# has more cores than this; the default is 4 shards and 2 workers.
MAX_MEMPOOL_SHARDS = 256
MAX_VERIFY_WORKERS = 256


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    """Node-local mempool settings (not chain parameters); see node/mempool.py."""

    shards: int = 4
    # Pending transactions per sender. With the default nonce window it can
    # only be reached by filling the window, which ``nonce_gap`` refuses first;
    # ``account_queue_full`` matters when max_nonce_ahead is larger.
    per_account_cap: int = 64
    # Pending transactions per shard.
    per_shard_cap: int = 50_000
    # Workers for the signature checks of incoming transactions.
    verify_threads: int = 2
    # Run those workers as processes (each with its own GIL) rather than threads.
    verify_processes: bool = True
    # Encoded bytes per shard; with per_shard_cap this bounds memory.
    per_shard_bytes: int = 32 * 1024 * 1024
    # Highest accepted nonce is state nonce + max_nonce_ahead - 1; None means
    # per_account_cap (a sender can fill its whole queue, gaps included).
    max_nonce_ahead: int | None = None
    # Minimum fee increase, in percent, for replacing a queued (sender, nonce);
    # None refuses every replacement as ``duplicate``.
    replace_fee_bump_pct: int | None = 10
    # Pending transactions (and bytes) beyond this many full blocks are refused
    # before verification: see node/mempool.py. With max_block_txs at 40k that is
    # 80k transactions (~80 MB; 160k for gossip): one block's worth (what 2 x 20k
    # was) starved a one-validator flood of refusals (0.46 of the verify ceiling
    # against 0.58-0.62 with two).
    max_pending_blocks: int = 2
    # Queued transactions (above a sender's missing nonce) per node; when full the
    # biggest holders lose their highest nonces: see node/mempool.py.
    max_queued: int = 16_384
    # Queued transactions per sender: a client's reordering needs a few.
    max_queued_per_sender: int = 16
    # Queued transactions (and bytes) admitted since the last commit, in blocks'
    # worth: bounds the gaps admitted per block, apart from the pending window.
    max_gap_blocks: int = 1
    # A peer's gossiped transactions that cost a signature check only to be refused for
    # what they are (malformed, spent, unfunded, a fee too low; not for what this pool
    # holds or its settings): per second, and saved up, before its batches are dropped
    # unchecked until the budget refills. An honest relay sends few (a race with a
    # block); replaying committed transactions, or ones signed once that never pay, a
    # member could otherwise keep the verification workers busy for free.
    stale_gossip_per_s: int = 1_000
    stale_gossip_burst: int = 20_000

    def __post_init__(self) -> None:
        for name in (
            "shards",
            "per_account_cap",
            "per_shard_cap",
            "verify_threads",
            "max_pending_blocks",
            "max_queued",
            "max_queued_per_sender",
            "max_gap_blocks",
            "stale_gossip_per_s",
            "stale_gossip_burst",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"mempool {name} must be at least 1, got {getattr(self, name)}")
        for name, bound in (("shards", MAX_MEMPOOL_SHARDS), ("verify_threads", MAX_VERIFY_WORKERS)):
            if getattr(self, name) > bound:
                raise ValueError(
                    f"mempool {name} must be at most {bound}, got {getattr(self, name)}"
                )
        if self.per_shard_bytes < 1:
            raise ValueError(
                f"mempool per_shard_bytes must be positive, got {self.per_shard_bytes}"
            )
        if self.max_nonce_ahead is not None and self.max_nonce_ahead < 1:
            raise ValueError(
                f"mempool max_nonce_ahead must be at least 1, got {self.max_nonce_ahead}"
            )
        if self.replace_fee_bump_pct is not None and self.replace_fee_bump_pct < 0:
            raise ValueError(
                f"mempool replace_fee_bump_pct must be >= 0, got {self.replace_fee_bump_pct}"
            )

    @property
    def nonce_window(self) -> int:
        return self.per_account_cap if self.max_nonce_ahead is None else self.max_nonce_ahead


@dataclass(frozen=True, slots=True)
class PruningConfig:
    """What a node keeps (docs/node.md, Pruning). ``archive`` keeps everything."""

    archive: bool = False
    # Blocks (with certificates, receipts, tx index) of the last this many heights:
    # about 14 hours of an idle chain's 500 ms blocks.
    keep_blocks: int = 100_000
    # State versions (proofs at past heights) of the last this many heights; the
    # two latest snapshot heights are kept besides, while peers may sync from them.
    keep_states: int = 1_000
    # Prune every this many blocks (in a background thread).
    interval: int = 100

    def __post_init__(self) -> None:
        for name in ("keep_blocks", "keep_states", "interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"pruning {name} must be at least 1, got {getattr(self, name)}")


# Bounds of the storage caches: below, a state tree cache would hold only a few
# levels by position (docs/node.md, Storage); above, its slots alone would map 2.1 GB.
MIN_CACHE_ENTRIES = 1024
MAX_CACHE_ENTRIES = 1 << 24


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Memory the store may hold for speed, sized to the machine and the state
    (docs/node.md, Storage). Neither setting changes what the node computes."""

    # State tree nodes: the upper floor(log2(tree_cache)) levels by position (126 bytes
    # per place, taken a 4 kB page at a time as nodes fill them: levels deeper than the
    # state cost a page per node), an eighth of it of recent nodes besides.
    tree_cache: int = DEFAULT_TREE_CACHE_SIZE
    # Latest state values (flat key -> value), read by execution and admission.
    state_cache: int = DEFAULT_STATE_CACHE_SIZE

    def __post_init__(self) -> None:
        for name in ("tree_cache", "state_cache"):
            value = getattr(self, name)
            if type(value) is not int or not MIN_CACHE_ENTRIES <= value <= MAX_CACHE_ENTRIES:
                raise ValueError(
                    f"storage {name} must be in {MIN_CACHE_ENTRIES}..{MAX_CACHE_ENTRIES}, "
                    f"got {value}"
                )

    def open_store(self, path: Path, *, create: bool = True, sync: bool = True) -> ChainStore:
        """The ``ChainStore`` at ``path`` with these cache sizes (the node's, and an
        audit's beside it)."""
        return ChainStore(
            path,
            create=create,
            sync=sync,
            tree_cache_size=self.tree_cache,
            state_cache_size=self.state_cache,
        )


@dataclass(frozen=True, slots=True)
class StateSyncConfig:
    """Joining from a snapshot instead of replaying from genesis (docs/state-sync.md)."""

    # Sync from peers' snapshot when the store is empty (a new node).
    enabled: bool = False
    # Trusted final height and block hash (hex) from a source outside the peers (an
    # operator of another member, or ``liveledger query block`` through the light
    # client): the snapshot must be at exactly this block. 0 / "": trust genesis
    # and the certificates alone (producers are derived epoch by epoch).
    trust_height: int = 0
    trust_hash: str = ""
    # Seconds without progress before a peer's request is given up and asked elsewhere.
    request_timeout_s: int = 10


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """A member's node to keep connected to: its node key (hex) and p2p address."""

    public_key: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NodeConfig:
    moniker: str = "node"
    http_host: str = "127.0.0.1"
    http_port: int = 26657
    p2p_host: str = "127.0.0.1"
    p2p_port: int = 26656
    # The address other members dial ("" / 0: the p2p listen address); what
    # ``liveledger genesis contribute`` publishes.
    external_host: str = ""
    external_port: int = 0
    block_interval_ms: int = DEFAULT_BLOCK_INTERVAL_MS
    data_dir: str = "data"
    # Upper bound for one POST body (a batch of transactions).
    max_request_bytes: int = 32 * 1024 * 1024
    # A request body must arrive within this many ms, or 408 (a slow upload holds a
    # connection and a buffer); 32 MiB takes 3 s at 100 Mbit/s.
    body_timeout_ms: int = 20_000
    # How long a round waits for the scheduled proposer before moving on.
    timeout_propose_ms: int = 3000
    # A proposer stops adding transactions before its block would take longer than
    # this to build (execution, state tree update, encoding), so the proposal
    # reaches the others inside timeout_propose even when the node is loaded; the
    # rest of timeout_propose covers sending it and the others having started the
    # round before us (0: no limit but the block's size limits).
    build_budget_ms: int = 2000
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    # WebSocket feed bounds: connections per node and per address, replay length,
    # client messages per second (apps.commerce.feed.FeedLimits).
    feeds: FeedLimits = field(default_factory=FeedLimits)
    # What HTTP clients may hold: connections in all and per address, idle time,
    # stalled writes, request bodies in flight; the reverse proxies trusted to name
    # their clients (node.http_server.HttpLimits).
    http: HttpLimits = field(default_factory=HttpLimits)
    peers: tuple[PeerSettings, ...] = ()
    pruning: PruningConfig = field(default_factory=PruningConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    state_sync: StateSyncConfig = field(default_factory=StateSyncConfig)
    # Snapshots served to joining nodes are taken at multiples of this height.
    snapshot_interval: int = 1000
    # Bytes of tree nodes per state sync chunk served (a larger leaf goes alone).
    snapshot_chunk_bytes: int = 1024 * 1024
    # An observer follows and serves the chain but never signs a vote, a proposal
    # or a transaction (docs/node.md, Observers).
    observer: bool = False
    # Node keys (hex) of observers this node lets connect besides the members:
    # a member's own observers (docs/node.md, Observers).
    observers: tuple[str, ...] = ()
    # TEST ONLY: milliseconds added to this node's wall clock (block times and the
    # arrival times proposals are judged by), to test a skewed clock (docs/node.md,
    # Test-only settings). May be negative; a node started with it non-zero logs a
    # warning. Never set it in production.
    test_clock_offset_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["mempool"] = {f.name: getattr(self.mempool, f.name) for f in fields(MempoolConfig)}
        out["feeds"] = {f.name: getattr(self.feeds, f.name) for f in fields(FeedLimits)}
        out["http"] = {f.name: getattr(self.http, f.name) for f in fields(HttpLimits)}
        out["http"]["trusted_proxies"] = list(self.http.trusted_proxies)
        out["pruning"] = {f.name: getattr(self.pruning, f.name) for f in fields(PruningConfig)}
        out["storage"] = {f.name: getattr(self.storage, f.name) for f in fields(StorageConfig)}
        out["state_sync"] = {
            f.name: getattr(self.state_sync, f.name) for f in fields(StateSyncConfig)
        }
        out["observers"] = list(self.observers)
        out["peers"] = [
            {f.name: getattr(p, f.name) for f in fields(PeerSettings)} for p in self.peers
        ]
        return out


def _typed(cls: type, raw: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        expected = known[name].type
        if expected in ("int", int):
            if type(value) is not int or value < 0:
                raise ConfigError(f"{where}: {name} must be a non-negative integer, got {value!r}")
        elif expected == "int | None":
            if value is not None and (type(value) is not int or value < 0):
                raise ConfigError(
                    f"{where}: {name} must be a non-negative integer or null, got {value!r}"
                )
        elif expected in ("str", str) and not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
        elif expected in ("bool", bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        out[name] = value
    return out


def _is_key_hex(value: object) -> bool:
    try:
        return isinstance(value, str) and len(bytes.fromhex(value)) == 32
    except ValueError:
        return False


def _is_canonical_key_hex(value: str) -> bool:
    return _is_key_hex(value) and bytes.fromhex(value).hex() == value


def _check_port(port: int, where: str) -> None:
    # 0 would bind a port the kernel picks, not the one peers and clients are told.
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where} must be in 1..65535, got {port}")


def load_config(home: Path) -> NodeConfig:
    path = home / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"no node config at {path}; is {home} a node home?")
    # Bounded, and a FIFO or device refused unopened (a FIFO blocks for ever).
    data = read_regular_file(path, MAX_CONFIG_FILE_BYTES, "node config", ConfigError)
    try:
        raw = json.loads(data, object_pairs_hook=reject_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 too; a few kB of "[[[[" exhaust the decoder's depth.
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    except DuplicateJsonKey as exc:
        raise ConfigError(f"{path}: duplicate key {exc.key!r}: a setting is given once") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    mempool_raw = raw.pop("mempool", {})
    if not isinstance(mempool_raw, dict):
        raise ConfigError(f"{path}: mempool must be an object")
    feeds_raw = raw.pop("feeds", {})
    if not isinstance(feeds_raw, dict):
        raise ConfigError(f"{path}: feeds must be an object")
    http_raw = raw.pop("http", {})
    pruning_raw = raw.pop("pruning", {})
    storage_raw = raw.pop("storage", {})
    sync_raw = raw.pop("state_sync", {})
    for name, section in (
        ("http", http_raw),
        ("pruning", pruning_raw),
        ("storage", storage_raw),
        ("state_sync", sync_raw),
    ):
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {name} must be an object")
    observers_raw = raw.pop("observers", [])
    if not isinstance(observers_raw, list) or not all(_is_key_hex(k) for k in observers_raw):
        raise ConfigError(f"{path}: observers must be a list of node keys (64 hex characters)")
    # The one signed integer setting (_typed takes non-negative ones).
    offset = raw.pop("test_clock_offset_ms", 0)
    if type(offset) is not int or abs(offset) > MAX_TEST_CLOCK_OFFSET_MS:
        raise ConfigError(
            f"{path}: test_clock_offset_ms must be an integer within "
            f"±{MAX_TEST_CLOCK_OFFSET_MS}, got {offset!r}"
        )
    peers_raw = raw.pop("peers", [])
    if not isinstance(peers_raw, list) or not all(isinstance(p, dict) for p in peers_raw):
        raise ConfigError(f"{path}: peers must be a list of objects")
    values = _typed(NodeConfig, raw, str(path))
    try:
        mempool = MempoolConfig(**_typed(MempoolConfig, mempool_raw, f"{path}: mempool"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    feeds = FeedLimits(**_typed(FeedLimits, feeds_raw, f"{path}: feeds"))
    # The one list of the section (_typed checks scalars): strings, each parsed below.
    proxies = http_raw.pop("trusted_proxies", [])
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise ConfigError(
            f"{path}: http.trusted_proxies must be a list of IP addresses or networks "
            f'("10.0.0.7", "10.0.0.0/24"), got {str(proxies)[:80]}'
        )
    try:
        http = HttpLimits(
            **_typed(HttpLimits, http_raw, f"{path}: http"), trusted_proxies=tuple(proxies)
        )
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        pruning = PruningConfig(**_typed(PruningConfig, pruning_raw, f"{path}: pruning"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        storage = StorageConfig(**_typed(StorageConfig, storage_raw, f"{path}: storage"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    state_sync = StateSyncConfig(**_typed(StateSyncConfig, sync_raw, f"{path}: state_sync"))
    if state_sync.trust_hash and not _is_key_hex(state_sync.trust_hash):
        raise ConfigError(f"{path}: state_sync.trust_hash must be 64 hex characters")
    if bool(state_sync.trust_hash) != bool(state_sync.trust_height):
        raise ConfigError(f"{path}: state_sync.trust_height and trust_hash go together")
    peers: list[PeerSettings] = []
    endpoints: dict[str, int] = {}
    for i, peer_raw in enumerate(peers_raw):
        where = f"{path}: peers[{i}]"
        missing = {f.name for f in fields(PeerSettings)} - set(peer_raw)
        if missing:
            raise ConfigError(f"{where}: missing {sorted(missing)}")
        peer = PeerSettings(**_typed(PeerSettings, peer_raw, where))
        # Keys are matched as text (genesis install replaces a validator's entry by it).
        if not _is_canonical_key_hex(peer.public_key):
            raise ConfigError(
                f"{where}: public_key must be 64 lower-case hex characters, "
                f"got {peer.public_key[:80]!r}"
            )
        # One address per node: with two, which one is dialed would be ours to guess.
        earlier = [j for j, p in enumerate(peers) if p.public_key == peer.public_key]
        if earlier:
            raise ConfigError(
                f"{where}: node key {peer.public_key} is also peers[{earlier[0]}]; "
                "list each node once"
            )
        _check_port(peer.port, f"{where}: port")
        address = format_net_address(peer.host, peer.port)
        try:
            # The address as genesis and the chain spell one (a node dials what it says).
            endpoint = endpoint_key(address)
        except InvalidNetAddress as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        # One node per address, compared as endpoints (a DNS name in any case, an IPv6
        # address in any spelling), as genesis compares its validators': two keys at one
        # address are two nodes that cannot both answer there.
        if endpoint in endpoints:
            j = endpoints[endpoint]
            other = format_net_address(peers[j].host, peers[j].port)
            raise ConfigError(
                f"{where}: address {address} (node key {peer.public_key}) is the endpoint of "
                f"peers[{j}] too, {other} (node key {peers[j].public_key}); one address "
                "serves one node"
            )
        endpoints[endpoint] = i
        peers.append(peer)
    config = NodeConfig(
        **values,
        mempool=mempool,
        feeds=feeds,
        http=http,
        peers=tuple(peers),
        pruning=pruning,
        storage=storage,
        state_sync=state_sync,
        observers=tuple(observers_raw),
        test_clock_offset_ms=offset,
    )
    _check_port(config.p2p_port, f"{path}: p2p_port")
    # 0 binds a free port the kernel picks (tests serving the API read it back);
    # peers never dial it, unlike p2p_port.
    if config.http_port > 65535:
        raise ConfigError(f"{path}: http_port must be in 0..65535, got {config.http_port}")
    # The name its contribution carries (a validator's name) and its logs show.
    if not VALIDATOR_NAME_PATTERN.fullmatch(config.moniker):
        raise ConfigError(
            f"{path}: moniker must match [A-Za-z0-9_.-]{{1,64}}, got {config.moniker[:80]!r}"
        )
    # Where 0 would not mean "no limit" but a node that never waits for a proposal,
    # refuses or times out every request body, or gives up every sync request at once.
    for name, value in (
        ("timeout_propose_ms", config.timeout_propose_ms),
        ("max_request_bytes", config.max_request_bytes),
        ("body_timeout_ms", config.body_timeout_ms),
        ("state_sync.request_timeout_s", config.state_sync.request_timeout_s),
    ):
        if value < 1:
            raise ConfigError(f"{path}: {name} must be at least 1, got {value}")
    if config.snapshot_interval < 1:
        raise ConfigError(f"{path}: snapshot_interval must be at least 1")
    if not 1 <= config.snapshot_chunk_bytes <= MAX_CHUNK_BYTES:
        raise ConfigError(f"{path}: snapshot_chunk_bytes must be in 1..{MAX_CHUNK_BYTES}")
    if config.external_port > 65535:
        raise ConfigError(
            f"{path}: external_port must be at most 65535, got {config.external_port}"
        )
    # A node pacing blocks minutes apart is one the CLI refuses as stalled, and its
    # consensus timeouts are made for seconds (genesis.home.MAX_BLOCK_INTERVAL_MS).
    if config.block_interval_ms < MIN_BLOCK_INTERVAL_MS:
        raise ConfigError(
            f"{path}: block_interval_ms must be at least {MIN_BLOCK_INTERVAL_MS}, "
            f"got {config.block_interval_ms}"
        )
    if config.block_interval_ms > MAX_BLOCK_INTERVAL_MS:
        raise ConfigError(
            f"{path}: block_interval_ms must be at most {MAX_BLOCK_INTERVAL_MS} (a minute), "
            f"got {config.block_interval_ms}"
        )
    for name in ("max_connections", "max_per_address", "max_client_messages_per_s"):
        if getattr(config.feeds, name) < 1:
            raise ConfigError(
                f"{path}: feeds.{name} must be at least 1, got {getattr(config.feeds, name)}"
            )
    for limit in fields(HttpLimits):
        if limit.type in ("int", int) and getattr(config.http, limit.name) < 1:
            raise ConfigError(
                f"{path}: http.{limit.name} must be at least 1, "
                f"got {getattr(config.http, limit.name)}"
            )
    return config
