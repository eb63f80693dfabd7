import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from core import parse_address
from core.keystore import WrongPassphrase, load_key, read_key_info
from genesis import (
    DEFAULT_BLOCK_INTERVAL_MS,
    FAUCET_BALANCE,
    LocalnetError,
    create_localnet,
    free_ports,
    genesis_state,
    load_genesis,
    write_node_config,
)
from genesis.home import LOCAL_HOST, init_home
from genesis.localnet import VALIDATOR_BALANCE, VALIDATOR_SELF_BOND
from node.config import load_config
from vm.accounts import Account, account_key

PASS = "localnet"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return create_localnet(tmp_path_factory.mktemp("net") / "devnet", 3, PASS)


def test_layout_created(net):
    root = net.dir
    assert (root / "genesis.json").is_file()
    assert (root / "keyring" / "faucet.json").is_file()
    assert stat.S_IMODE((root / "keyring").stat().st_mode) == 0o700
    assert [n.home for n in net.nodes] == [root / f"node{i}" for i in range(3)]
    for node in net.nodes:
        names = sorted(p.name for p in node.home.iterdir())
        assert names == ["config.json", "genesis.json", "node_key.json"]
        assert stat.S_IMODE(node.key_path.stat().st_mode) == 0o600


def test_genesis_copies_identical(net):
    top = net.genesis_path.read_bytes()
    for node in net.nodes:
        assert node.genesis_path.read_bytes() == top
    g = load_genesis(net.genesis_path)
    assert g == net.genesis
    assert g.hash == net.genesis_hash
    assert g.chain_id == net.chain_id


def test_validators_and_balances(net):
    g = net.genesis
    assert [v.name for v in g.validators] == ["node0", "node1", "node2"]
    assert [v.public_key for v in g.validators] == [n.public_key for n in net.nodes]
    assert all(v.power == 1 for v in g.validators)
    state = genesis_state(g)
    faucet = parse_address(net.faucet_address)
    assert Account.decode(state[account_key(faucet)]).balance == FAUCET_BALANCE
    for node in net.nodes:
        balance = Account.decode(state[account_key(parse_address(node.address))]).balance
        assert balance == VALIDATOR_BALANCE
    # Self-bonds are minted into the bonded pool at genesis.
    assert g.total_supply == FAUCET_BALANCE + 3 * (VALIDATOR_BALANCE + VALIDATOR_SELF_BOND)


def test_keys_decrypt(net):
    for node in net.nodes:
        key = load_key(node.key_path, PASS)
        assert key.public_key == node.public_key
        assert read_key_info(node.key_path).name == node.moniker
    faucet = load_key(net.faucet_key_path, PASS)
    assert faucet.address == parse_address(net.faucet_address)
    assert read_key_info(net.faucet_key_path).name == "faucet"
    with pytest.raises(WrongPassphrase):
        load_key(net.nodes[0].key_path, "not " + PASS)


def test_ports_distinct(net):
    ports = [n.http_port for n in net.nodes] + [n.p2p_port for n in net.nodes]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p <= 65535 for p in ports)


def test_node_config_read_by_node(net):
    for node in net.nodes:
        raw = json.loads(node.config_path.read_text())
        assert raw["http_host"] == raw["p2p_host"] == "127.0.0.1"
        config = load_config(node.home)
        assert config.moniker == node.moniker
        assert config.http_port == node.http_port
        assert config.p2p_port == node.p2p_port
        assert config.block_interval_ms == DEFAULT_BLOCK_INTERVAL_MS == 500
        assert config.data_dir == "data"


def test_no_secret_in_layout(net):
    text = repr(net)
    for node in net.nodes:
        seed = load_key(node.key_path, PASS).seed.hex()
        assert seed not in text
        assert seed not in node.config_path.read_text()
    assert PASS not in text


def test_two_localnets_differ(tmp_path, net):
    # Ports are picked free at creation, so a second localnet avoids the first's while
    # its nodes hold them (here sockets bound in their place). Released, the kernel may
    # hand one out again: that collision failed a full run once.
    with ExitStack() as held:
        for port in {n.http_port for n in net.nodes} | {n.p2p_port for n in net.nodes}:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            with contextlib.suppress(OSError):  # in use already: not free to pick either
                sock.bind((LOCAL_HOST, port))
        other = create_localnet(tmp_path / "other", 1, "")
    assert other.chain_id != net.chain_id
    assert other.genesis_hash != net.genesis_hash
    assert {other.nodes[0].http_port, other.nodes[0].p2p_port}.isdisjoint(
        {n.http_port for n in net.nodes} | {n.p2p_port for n in net.nodes}
    )
    assert load_key(other.nodes[0].key_path, "").public_key == other.nodes[0].public_key


def test_fixed_ports_and_chain_id(tmp_path):
    layout = create_localnet(
        tmp_path / "n",
        2,
        PASS,
        chain_id="my-chain",
        base_http_port=30100,
        base_p2p_port=30200,
        genesis_time_ms=1234,
    )
    assert layout.chain_id == "my-chain"
    assert layout.genesis.genesis_time_ms == 1234
    assert [(n.http_port, n.p2p_port) for n in layout.nodes] == [(30100, 30200), (30101, 30201)]


def test_refuses_non_empty_dir(tmp_path):
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "something").write_text("x")
    with pytest.raises(LocalnetError, match="not an empty directory"):
        create_localnet(tmp_path / "n", 1, PASS)


def test_empty_existing_dir_is_fine(tmp_path):
    (tmp_path / "n").mkdir()
    assert len(create_localnet(tmp_path / "n", 1, PASS).nodes) == 1


@pytest.mark.parametrize("count", [0, 65])
def test_validator_count_checked(tmp_path, count):
    with pytest.raises(LocalnetError, match="validators must be"):
        create_localnet(tmp_path / "n", count, PASS)
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("interval", [9, 60_001])
def test_a_block_interval_no_node_starts_with_is_refused_before_anything_is_made(
    tmp_path, interval
):
    # node.config refuses it at start: a devnet, a home or a config made with it would
    # be one that never runs.
    why = f"block_interval_ms must be in 10..60000, got {interval}"
    with pytest.raises(LocalnetError, match=why):
        create_localnet(tmp_path / "n", 1, PASS, block_interval_ms=interval)
    assert not (tmp_path / "n").exists()
    with pytest.raises(LocalnetError, match=why):
        init_home(tmp_path / "home", "m", PASS, block_interval_ms=interval)
    assert not (tmp_path / "home").exists()
    with pytest.raises(LocalnetError, match=why):
        write_node_config(
            tmp_path, moniker="n", http_port=1, p2p_port=2, block_interval_ms=interval
        )
    assert not (tmp_path / "config.json").exists()


def test_overlapping_fixed_ports_refused(tmp_path):
    with pytest.raises(LocalnetError, match="overlap"):
        create_localnet(tmp_path / "n", 2, PASS, base_http_port=30000, base_p2p_port=30001)


def test_free_ports_are_bindable_and_never_ones_an_outbound_connection_may_take():
    # A port in the kernel's ephemeral range may go to any connection dialled between
    # the pick and the node's bind (a test's flood of handshakes did that once).
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(24)
    assert len(set(ports)) == 24
    assert all(port < low for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_ports_never_hands_out_a_port_twice_within_minutes_even_across_processes():
    # A port is bound only when its node starts: two test workers that drew the same
    # one meanwhile made one node fail with "address already in use". 1,000 draws from
    # ~20,000 ports would repeat one almost surely without the record of hand-outs.
    mine = [port for _ in range(20) for port in free_ports(25)]
    code = "from genesis import free_ports; print(*(p for _ in range(20) for p in free_ports(25)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    theirs = [int(port) for port in out.split()]
    assert len(theirs) == 500
    assert len(set(mine + theirs)) == 1_000


def free_ports_with_temp_dir(temp_dir, count):
    """``free_ports(count)`` drawn in a fresh process whose temp dir is ``temp_dir``."""
    code = f"from genesis import free_ports; print(*free_ports({count}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(temp_dir)},
    ).stdout.split()


def test_free_ports_never_writes_through_a_link_in_the_temp_dir(tmp_path):
    # The record of hand-outs lives in a shared temp dir: a link planted under its name
    # must not have free_ports truncate whatever it points to.
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / f"liveledger-ports-{os.getuid()}").symlink_to(victim)
    assert len(set(free_ports_with_temp_dir(tmp_path, 3))) == 3
    assert victim.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_free_ports_leaves_alone_a_record_another_user_made(tmp_path):
    # Another user could create the record's name first in a shared temp dir, made
    # writable to all: free_ports must neither read it nor write it.
    record = tmp_path / f"liveledger-ports-{os.getuid()}"
    record.write_text("precious")
    record.chmod(0o666)
    os.chown(record, os.getuid() + 12_345, -1)
    assert len(set(free_ports_with_temp_dir(tmp_path, 3))) == 3
    assert record.read_text() == "precious"


def test_write_node_config_checks_ports(tmp_path):
    with pytest.raises(LocalnetError, match="http_port"):
        write_node_config(tmp_path, moniker="n", http_port=0, p2p_port=1)
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2, mempool_shards=8)
    assert json.loads(path.read_text())["mempool"]["shards"] == 8
    assert load_config(tmp_path).mempool.shards == 8


def test_mempool_window_below_one_block_is_refused(tmp_path):
    from node.config import ConfigError

    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    assert load_config(tmp_path).mempool.max_pending_blocks == 2
    doc["mempool"]["max_pending_blocks"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="max_pending_blocks must be at least 1, got 0"):
        load_config(tmp_path)
