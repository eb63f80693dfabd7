"""A member's node home: created by ``init``, completed by installing a genesis document.

Layout (everything a node reads at start; nothing here is ever sent anywhere)::

    HOME/node_key.json   the node key, encrypted as the keyring's keys are (mode 0600)
    HOME/config.json     node-local settings, read by ``node.config`` (mode 0644)
    HOME/genesis.json    written by ``install_genesis`` once the ceremony is over

The node key is the member's identity everywhere: it signs votes and blocks, its
account pays the member's fees and holds its self-bond, and the p2p layer derives
the node's TLS certificate from it at every start (``p2p.tls.make_certificate``,
deterministic), so there is no certificate file to create, copy or lose.

``config.json`` stays JSON rather than the ``config.toml`` the issue names: the
file is written by these functions, two mempool settings take ``null`` (which TOML
cannot say), and nodes, tests and tools already read and edit it as JSON;
docs/node.md says more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import LiveLedgerError
from core.files import make_durable_dir, read_regular_file
from core.keys import PrivateKey, format_address
from core.keystore import atomic_write, read_key_info, save_key, staged_write
from core.netaddr import format_net_address
from genesis.ceremony import SignedContribution
from genesis.document import (
    MAX_GENESIS_FILE_BYTES,
    Genesis,
    InvalidGenesis,
    check_validator_name,
    load_genesis,
    parse_json,
    parse_net_address,
)

CONFIG_FILE = "config.json"
# A node's config.json is a few kB (a peer is ~100 bytes): anything past this is refused
# before it is parsed.
MAX_CONFIG_FILE_BYTES = 1024 * 1024
GENESIS_FILE = "genesis.json"
NODE_KEY_FILE = "node_key.json"
# The pause after a commit before the next height (the engine's ``timeout_commit``).
# A transaction waits on average half of it for the next proposal, then one height:
# at half a 4-validator chain's flash-deal order rate, submit-to-final p50 was
# 0.8-1.4 s with 500 ms (under a second in 6 of 10 runs) and 1.2-1.4 s with 1000 ms
# (docs/node.md, the block interval). An idle chain pays with twice the empty
# blocks, each ~1.2 kB of disk and ~11 ms of CPU per validator.
DEFAULT_BLOCK_INTERVAL_MS = 500
# The block intervals a node runs with. Below 10 ms it would propose empty blocks as
# fast as it can. Above a minute the chain it paces is one the CLI takes for stalled:
# it refuses a node whose latest block is more than 5 minutes behind the clock
# (``cli.commerce.commands.BLOCK_TIME_BEHIND_MS``), which leaves a minute's interval 4
# minutes for clocks that disagree; and the consensus timeouts (3 s to propose) are
# made for blocks seconds apart, not hours.
MIN_BLOCK_INTERVAL_MS = 10
MAX_BLOCK_INTERVAL_MS = 60_000
LOCAL_HOST = "127.0.0.1"
DEFAULT_HTTP = (LOCAL_HOST, 26657)
DEFAULT_P2P = ("0.0.0.0", 26656)


class HomeError(LiveLedgerError):
    """A node home cannot be created, read or completed where asked."""


def check_block_interval(block_interval_ms: int) -> None:
    """Refuse a block interval a node would not start with (``node.config``), before
    a home or a devnet is made with it."""
    if not MIN_BLOCK_INTERVAL_MS <= block_interval_ms <= MAX_BLOCK_INTERVAL_MS:
        raise HomeError(
            f"block_interval_ms must be in {MIN_BLOCK_INTERVAL_MS}..{MAX_BLOCK_INTERVAL_MS}, "
            f"got {block_interval_ms}"
        )


@dataclass(frozen=True, slots=True)
class HomeInfo:
    """What ``init_home`` made: public facts only (never the key's secret)."""

    home: Path
    moniker: str
    public_key: bytes
    address: str
    # "host:port" peers dial, or "" when only a listen-on-all address is known.
    p2p_address: str


def init_home(
    home: Path | str,
    moniker: str,
    passphrase: str,
    *,
    key: PrivateKey | None = None,
    http: tuple[str, int] = DEFAULT_HTTP,
    p2p: tuple[str, int] = DEFAULT_P2P,
    external: tuple[str, int] | None = None,
    block_interval_ms: int = DEFAULT_BLOCK_INTERVAL_MS,
    timeout_propose_ms: int = 3000,
) -> HomeInfo:
    """Create a node home: a new node key (or ``key``) encrypted under ``passphrase``,
    and ``config.json`` with the listen and external addresses, no peers yet.

    Refuses what ``check_new_home`` refuses. ``external`` is the address other members
    dial (default: the p2p listen address).
    """
    root = check_new_home(home, moniker)
    check_block_interval(block_interval_ms)
    if key is None:
        key = PrivateKey.generate()
    try:
        # 0700: the key file is encrypted, but the home is nobody else's business.
        # Durable in its parent, as the node key saved in it.
        make_durable_dir(root, mode=0o700)
        # Also when it existed (empty) with other modes: whoever may write in it could
        # swap the config or the key file before the node starts.
        root.chmod(0o700)
    except OSError as exc:
        raise HomeError(f"cannot create {root}: {exc.strerror or exc}") from None
    save_key(root / NODE_KEY_FILE, key, passphrase, moniker)
    ext_host, ext_port = external if external is not None else p2p
    write_node_config(
        root,
        moniker=moniker,
        http_host=http[0],
        http_port=http[1],
        p2p_host=p2p[0],
        p2p_port=p2p[1],
        external_host=ext_host if external is not None else "",
        external_port=ext_port if external is not None else 0,
        block_interval_ms=block_interval_ms,
        timeout_propose_ms=timeout_propose_ms,
    )
    return HomeInfo(
        home=root,
        moniker=moniker,
        public_key=key.public_key,
        address=format_address(key.address),
        p2p_address=external_address(read_config(root)),
    )


def check_new_home(home: Path | str, moniker: str) -> Path:
    """``home`` as a path, if a node home may be made there under ``moniker``: refused
    (before anything is written) when it exists and is not empty, since a second ``init``
    must never replace a member's key, and when the moniker could not name a validator."""
    root = Path(home)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise HomeError(f"{root} exists and is not an empty directory; refusing to overwrite it")
    try:
        # It becomes the validator's name in the member's contribution.
        check_validator_name(moniker, "moniker")
    except InvalidGenesis as exc:
        raise HomeError(exc.message) from None
    return root


def write_node_config(
    home: Path | str,
    *,
    moniker: str,
    http_port: int,
    p2p_port: int,
    http_host: str = LOCAL_HOST,
    p2p_host: str = LOCAL_HOST,
    external_host: str = "",
    external_port: int = 0,
    block_interval_ms: int = DEFAULT_BLOCK_INTERVAL_MS,
    timeout_propose_ms: int = 3000,
    data_dir: str = "data",
    mempool_shards: int = 4,
    mempool_per_account_cap: int = 64,
    mempool_per_shard_cap: int = 50_000,
    mempool_verify_threads: int = 2,
    peers: Sequence[tuple[bytes, str, int]] = (),
) -> Path:
    """Write ``home/config.json`` (node-local settings, read by ``node.config``).

    ``data_dir`` is relative to ``home`` so that a node directory can be moved as
    a whole. Settings not written here take ``node.config``'s defaults. The
    ``pruning`` and ``storage`` sections are empty: retention and cache sizes go
    there (docs/node.md).
    """
    for name, port in (("http_port", http_port), ("p2p_port", p2p_port)):
        if not 1 <= port <= 65535:
            raise HomeError(f"{name} must be in 1..65535, got {port}")
    if external_port and not 1 <= external_port <= 65535:
        raise HomeError(f"external_port must be in 1..65535, got {external_port}")
    check_block_interval(block_interval_ms)
    config: dict[str, Any] = {
        "moniker": moniker,
        "http_host": http_host,
        "http_port": http_port,
        "p2p_host": p2p_host,
        "p2p_port": p2p_port,
        "external_host": external_host,
        "external_port": external_port,
        "block_interval_ms": block_interval_ms,
        "timeout_propose_ms": timeout_propose_ms,
        "data_dir": data_dir,
        "mempool": {
            "shards": mempool_shards,
            "per_account_cap": mempool_per_account_cap,
            "per_shard_cap": mempool_per_shard_cap,
            "verify_threads": mempool_verify_threads,
        },
        "pruning": {},
        "storage": {},
        "peers": [{"public_key": pk.hex(), "host": host, "port": port} for pk, host, port in peers],
    }
    return _write_config(Path(home), config)


def read_config(home: Path | str) -> dict[str, Any]:
    """``home/config.json`` as written (``node.config.load_config`` checks every setting)."""
    path = Path(home) / CONFIG_FILE
    if not path.exists():
        raise HomeError(f"no {CONFIG_FILE} in {home}; is it a node home (liveledger init)?")
    # Bounded, and a FIFO or device refused unopened (a FIFO blocks for ever).
    data = read_regular_file(path, MAX_CONFIG_FILE_BYTES, "node config", HomeError)
    try:
        # As strict as node.config: a setting given twice is neither signed (contribute)
        # nor collapsed to its last value when install rewrites the file.
        doc = parse_json(data)
    except InvalidGenesis as exc:
        raise HomeError(f"cannot read {path}: {exc.message}") from None
    if not isinstance(doc, dict):
        raise HomeError(f"{path} must hold a JSON object")
    return doc


def external_address(config: dict[str, Any]) -> str:
    """The "host:port" other members dial, from a config's external or p2p settings."""
    host = config.get("external_host") or config.get("p2p_host", "")
    port = config.get("external_port") or config.get("p2p_port", 0)
    if not isinstance(host, str) or not host or type(port) is not int:
        return ""
    return format_net_address(host, port)


def install_genesis(
    home: Path | str,
    data: bytes,
    expect_hash: bytes,
    *,
    contribution: SignedContribution | None = None,
) -> Genesis:
    """Put the genesis document ``data`` (``genesis.json`` bytes) into a node home.

    Refuses, writing nothing, a document that does not parse or whose hash is not
    ``expect_hash`` (the hash members compared out of band), a home that already
    holds a different genesis, and with ``contribution`` (this node's, as sent to the
    coordinator) a document that does not list it as contributed. Then every other
    validator with a published address becomes a peer in ``config.json`` (peers the
    operator added by hand stay). Returns the document.
    """
    root = Path(home)
    config = read_config(root)
    # What is installed must be what a node can start from (load_genesis).
    if len(data) > MAX_GENESIS_FILE_BYTES:
        raise InvalidGenesis(
            f"genesis is {len(data)} bytes, more than {MAX_GENESIS_FILE_BYTES}; nothing installed"
        )
    genesis = Genesis.from_json(parse_json(data))
    # The hash is what members agreed on; anything else is another chain.
    if genesis.hash != expect_hash:
        raise InvalidGenesis(
            f"genesis hash is {genesis.hash.hex()}, expected {expect_hash.hex()}: "
            "not the document the members agreed on; nothing installed"
        )
    target = root / GENESIS_FILE
    installed = False
    if target.exists():
        try:
            held = load_genesis(target).hash
        except InvalidGenesis:
            held = b""
        # A home belongs to one chain: its data and consensus state are that chain's.
        if held != genesis.hash:
            raise HomeError(
                f"{target} already holds another genesis ({held.hex() or 'unreadable'}); "
                "a home belongs to one chain"
            )
        installed = True
    own = read_key_info(root / NODE_KEY_FILE).public_key
    if contribution is not None:
        _check_contribution(genesis, contribution, own)
    if not installed:
        _check_own_entry(root, config, genesis, own)
    listed = [v for v in genesis.validators if v.address and v.public_key != own]
    keys = {v.public_key.hex() for v in listed}
    held_peers = config.get("peers", [])
    if not isinstance(held_peers, list) or not all(isinstance(p, dict) for p in held_peers):
        raise HomeError(f"{root / CONFIG_FILE}: peers must be a list of objects")
    kept = [p for p in held_peers if p.get("public_key") not in keys]
    peers = []
    for v in listed:
        host, port = parse_net_address(v.address)
        peers.append({"public_key": v.public_key.hex(), "host": host, "port": port})
    config["peers"] = peers + kept
    try:
        # The bytes as agreed (the hash is over the document, not its whitespace).
        # genesis.json, which a node needs to start, takes its name last: its bytes are
        # on disk before config.json changes (a full disk stops install with nothing
        # changed), and a crash in between leaves a home that no node starts from and
        # that install, run again, completes.
        with staged_write(target, data):
            _write_config(root, config)
    except OSError as exc:
        raise HomeError(
            f"cannot install genesis into {root}: {exc.strerror or exc}; "
            "no genesis installed, run install again"
        ) from None
    return genesis


def _check_own_entry(root: Path, config: dict[str, Any], genesis: Genesis, own: bytes) -> None:
    """``HomeError`` if genesis lists this node's key other than as this home contributes
    it (its config's moniker and external address, what ``genesis contribute`` signs)."""
    entry = next((v for v in genesis.validators if v.public_key == own), None)
    if entry is None:
        return  # not a genesis validator: a member admitted later, or an observer
    name, address = config.get("moniker"), external_address(config)
    # The document carries no signatures: the hash members compare cannot show that a
    # coordinator rewrote one member's entry; only that member can.
    if (entry.name, entry.address) != (name, address):
        raise HomeError(
            f"genesis lists this node's key as {entry.name!r} at {entry.address!r}, but "
            f"{root / CONFIG_FILE} contributes it as {name!r} at {address!r}: not what this "
            "member signed (or the config changed since); nothing installed"
        )


def _check_contribution(genesis: Genesis, signed: SignedContribution, own: bytes) -> None:
    """``HomeError`` naming what differs unless ``genesis`` lists this node's contribution
    ``signed`` as it was signed: a member left out, or listed otherwise, finds out at
    install rather than from a note (``genesis install --contribution``)."""
    c = signed.contribution
    # Another node's file would check that node, not this one.
    if c.public_key != own:
        raise HomeError(
            f"the contribution is signed by node key {c.public_key.hex()}, not this home's "
            f"{own.hex()}; give this node's own contribution; nothing installed"
        )
    try:
        signed.verify()
    except InvalidGenesis as exc:
        raise HomeError(f"{exc.message}; nothing installed") from None
    # Signed for another chain: not consent to this one, whatever else matches.
    if signed.chain_id != genesis.chain_id:
        raise HomeError(
            f"the contribution is for chain {signed.chain_id!r}, the genesis is of chain "
            f"{genesis.chain_id!r}; nothing installed"
        )
    entry = next((v for v in genesis.validators if v.public_key == own), None)
    if entry is None:
        raise HomeError(
            f"genesis does not list this node's contribution {c.moniker!r} (node key "
            f"{own.hex()}) among its {len(genesis.validators)} validators: left out; "
            "nothing installed"
        )
    bond = None if genesis.staking is None else genesis.staking.self_bond
    differs = [
        f"{what} {listed!r} where it contributed {given!r}"
        for what, listed, given in (
            ("name", entry.name, c.moniker),
            ("address", entry.address, c.address),
            ("self-bond", bond, c.stake),
        )
        if listed != given
    ]
    if differs:
        raise HomeError(
            f"genesis lists this node with {', '.join(differs)}: not as contributed; "
            "nothing installed"
        )


def _write_config(home: Path, config: dict[str, Any]) -> Path:
    path = home / CONFIG_FILE
    atomic_write(path, (json.dumps(config, indent=2) + "\n").encode(), mode=0o644)
    return path
