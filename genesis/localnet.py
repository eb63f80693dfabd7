"""Generate a local validator network in one directory (devnets, tests, benches).

Layout::

    DIR/genesis.json                 written last: its presence means the network is complete
    DIR/keyring/faucet.json          funded key, same format as the CLI keyring
    DIR/node{i}/genesis.json         byte-identical copy
    DIR/node{i}/node_key.json        validator key, encrypted with the same passphrase
    DIR/node{i}/config.json          node-local settings (see ``genesis.home``)

A local network is a genesis ceremony played by one process, with the functions
members use on their own machines: each node home is made by ``init_home``, each
validator signs its contribution (``make_contribution``), the contributions are
``assemble``d into genesis, and ``install_genesis`` puts it into every home and
fills its peers. Chain parameters go into genesis; everything a node may choose
for itself (ports, timing of its own loop, mempool sizes) goes into its
``config.json``.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from apps.commerce import CommerceGenesis
from core.keys import PrivateKey, format_address
from core.keystore import atomic_write, save_key
from genesis.ceremony import DEFAULT_VALIDATOR_BALANCE, assemble, make_contribution
from genesis.document import Genesis, genesis_json_bytes
from genesis.home import (
    DEFAULT_BLOCK_INTERVAL_MS,
    LOCAL_HOST,
    HomeError,
    check_block_interval,
    init_home,
    install_genesis,
)
from genesis.home import write_node_config as write_node_config
from vm.params import ChainParams

FAUCET_NAME = "faucet"
FAUCET_BALANCE = 10**15
# Enough for a validator to pay fees for its own transactions (bonding, voting).
VALIDATOR_BALANCE = DEFAULT_VALIDATOR_BALANCE
VALIDATOR_SELF_BOND = 10**6

# One error for homes and the networks built from them.
LocalnetError = HomeError


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """One validator's home directory and public identity (never its secret)."""

    index: int
    moniker: str
    home: Path
    public_key: bytes
    address: str
    http_port: int
    p2p_port: int

    @property
    def config_path(self) -> Path:
        return self.home / "config.json"

    @property
    def key_path(self) -> Path:
        return self.home / "node_key.json"

    @property
    def genesis_path(self) -> Path:
        return self.home / "genesis.json"


@dataclass(frozen=True, slots=True)
class LocalnetLayout:
    dir: Path
    genesis: Genesis
    genesis_path: Path
    keyring_dir: Path
    faucet_address: str
    nodes: tuple[NodeLayout, ...]

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    @property
    def genesis_hash(self) -> bytes:
        return self.genesis.hash

    @property
    def faucet_key_path(self) -> Path:
        return self.keyring_dir / f"{FAUCET_NAME}.json"


def create_localnet(
    dir: Path | str,
    validators: int,
    passphrase: str,
    chain_id: str | None = None,
    *,
    base_http_port: int | None = None,
    base_p2p_port: int | None = None,
    genesis_time_ms: int | None = None,
    params: ChainParams | None = None,
    faucet_balance: int = FAUCET_BALANCE,
    validator_balance: int = VALIDATOR_BALANCE,
    block_interval_ms: int = DEFAULT_BLOCK_INTERVAL_MS,
    external_hosts: Sequence[str] | None = None,
) -> LocalnetLayout:
    """Create genesis, a funded faucet key and ``validators`` node homes under ``dir``.

    Ports: with ``base_*_port`` set, node i gets base + i; otherwise each port is
    one the kernel hands out free right now, so that several devnets and test runs
    on one machine do not collide. (Another process may still take such a port
    before the node starts; tests that need certainty should retry on bind errors.)
    Without ``chain_id`` a random one is made, so that transactions signed for one
    throwaway devnet are refused by another. With ``external_hosts``, node i still
    listens on the local host but publishes ``external_hosts[i]`` (with its p2p port)
    as the address peers dial, as a member behind a NAT or proxy does (the network
    namespace tests, tests/netns).
    """
    if external_hosts is not None and len(external_hosts) != validators:
        raise LocalnetError(f"{len(external_hosts)} external hosts for {validators} validators")
    if not 1 <= validators <= 64:
        raise LocalnetError(f"validators must be in 1..64, got {validators}")
    check_block_interval(block_interval_ms)
    root = Path(dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise LocalnetError(f"{root} exists and is not an empty directory")
    if chain_id is None:
        chain_id = f"liveledger-local-{secrets.token_hex(4)}"
    if genesis_time_ms is None:
        genesis_time_ms = time.time_ns() // 1_000_000
    if base_http_port is None and base_p2p_port is None:
        # One draw for both, so no port can be handed out twice.
        ports = free_ports(2 * validators)
        http_ports, p2p_ports = ports[:validators], ports[validators:]
    else:
        http_ports = _ports(base_http_port, validators)
        p2p_ports = _ports(base_p2p_port, validators)
    if set(http_ports) & set(p2p_ports):
        raise LocalnetError("HTTP and p2p port ranges overlap")

    faucet = PrivateKey.generate()
    keyring_dir = root / "keyring"
    keyring_dir.mkdir(mode=0o700, parents=True)
    save_key(keyring_dir / f"{FAUCET_NAME}.json", faucet, passphrase, FAUCET_NAME)

    # Each member's part, as on its own machine: a home, then a signed contribution.
    homes = []
    contributions = []
    for i in range(validators):
        key = PrivateKey.generate()
        info = init_home(
            root / f"node{i}",
            f"node{i}",
            passphrase,
            key=key,
            http=(LOCAL_HOST, http_ports[i]),
            p2p=(LOCAL_HOST, p2p_ports[i]),
            external=None if external_hosts is None else (external_hosts[i], p2p_ports[i]),
            block_interval_ms=block_interval_ms,
        )
        homes.append(info)
        contributions.append(
            make_contribution(key, chain_id, info.moniker, info.p2p_address, VALIDATOR_SELF_BOND)
        )
    # The coordinator's part. Producers are elected by stake; each validator starts
    # with a self-bond. The faucet is the devnet's registrar (approves merchants and
    # attestors) and receives the chain's commerce fee.
    genesis = assemble(
        chain_id,
        contributions,
        accounts=[(faucet.address, faucet_balance)],
        validator_balance=validator_balance,
        params=params,
        genesis_time_ms=genesis_time_ms,
        commerce=CommerceGenesis(registrars=(faucet.address,), treasury=faucet.address),
    )
    genesis_bytes = genesis_json_bytes(genesis)
    nodes = []
    for i, info in enumerate(homes):
        # Every member installs the same bytes; the peers (a full mesh) come from them.
        install_genesis(info.home, genesis_bytes, genesis.hash)
        nodes.append(
            NodeLayout(
                index=i,
                moniker=info.moniker,
                home=info.home,
                public_key=info.public_key,
                address=info.address,
                http_port=http_ports[i],
                p2p_port=p2p_ports[i],
            )
        )
    # Last, as the mark of a complete network: a run that failed half-way leaves
    # no DIR/genesis.json, so tools do not take the debris for a devnet.
    atomic_write(root / "genesis.json", genesis_bytes)
    return LocalnetLayout(
        dir=root,
        genesis=genesis,
        genesis_path=root / "genesis.json",
        keyring_dir=keyring_dir,
        faucet_address=format_address(faucet.address),
        nodes=tuple(nodes),
    )


def _ports(base: int | None, count: int) -> list[int]:
    if base is not None:
        if not 1 <= base or base + count - 1 > 65535:
            raise LocalnetError(f"ports {base}..{base + count - 1} are not all in 1..65535")
        return [base + i for i in range(count)]
    return free_ports(count)


# Ports picked below the kernel's ephemeral range (``ip_local_port_range``), from here.
_LOWEST_PICKED_PORT = 10_000
_PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    """The lowest port the kernel gives to outbound connections and to bind(0)."""
    try:
        return int(_PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


# Ports handed out by ``free_ports`` in the last ``_HANDED_OUT_S`` seconds, by any
# process of this user on this machine: a port is free when picked but bound only
# when its node starts, seconds later, and meanwhile another process (a parallel
# test worker, a second devnet) could draw the same one.
_HANDED_OUT = Path(tempfile.gettempdir()) / f"liveledger-ports-{os.getuid()}"
_HANDED_OUT_S = 120.0
# Far more than two minutes of hand-outs take (a line is ~12 bytes).
_RECORD_MAX_BYTES = 1 << 20


@contextmanager
def _handed_out() -> Iterator[dict[int, float]]:
    """The recent hand-outs (port: when), under an exclusive lock, written back on exit;
    an empty dict kept nowhere when the file cannot be used (no protection, no failure)."""
    try:
        # Never through a link someone else put in the shared temp dir.
        fd = os.open(_HANDED_OUT, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield {}
        return
    with os.fdopen(fd, "r+") as f:
        if os.fstat(fd).st_uid != os.getuid():
            # Made by another user before us (the temp dir is shared): not ours to
            # read (it could be any size) or to write.
            yield {}
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        now = time.time()
        recent: dict[int, float] = {}
        for line in f.read(_RECORD_MAX_BYTES).split():
            port, _, when = line.partition("@")
            try:
                if now - float(when) < _HANDED_OUT_S:
                    recent[int(port)] = float(when)
            except ValueError:
                continue  # a torn line of an older version: forget it
        yield recent
        f.seek(0)
        f.truncate()
        f.write("".join(f"{port}@{when:.0f}\n" for port, when in recent.items()))


def free_ports(count: int, host: str = LOCAL_HOST) -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now.

    Drawn at random below the kernel's ephemeral range: a port from bind(0) is one
    the kernel may give any outbound connection (a peer dialling, a client) between
    this pick and the node's own bind, which then fails with "address already in
    use". All sockets stay bound until every port is picked, so no port comes twice;
    no port handed out here in the last two minutes comes again (``_handed_out``).
    Where that range leaves too little room, bind(0) as before.
    """
    low = _ephemeral_low()
    draw = secrets.SystemRandom()
    with ExitStack() as stack:
        recent = stack.enter_context(_handed_out())
        ports: list[int] = []
        tries = 0
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            if low - _LOWEST_PICKED_PORT < 1_000 or tries >= 50 * count:
                sock.bind((host, 0))
            else:
                tries += 1
                port = draw.randrange(_LOWEST_PICKED_PORT, low)
                if port in recent:
                    continue  # another process's, not bound yet: draw again
                try:
                    sock.bind((host, port))
                except OSError:
                    continue  # taken (or ours already): draw again
            ports.append(sock.getsockname()[1])
        now = time.time()
        recent.update(dict.fromkeys(ports, now))
        return ports
