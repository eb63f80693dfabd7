"""A fifth member joins across hosts and becomes a producer; an observer and a pruned
node keep serving (issue 12).

One network for the module: four genesis validators and three extra hosts
(``tests/netns/hosts.py``), 50 ± 10 ms each way between every pair of hosts through
the fault proxies. On the extra hosts: a fifth organisation's node, an observer
(archive) and a pruned observer, each listening behind its own host's proxy.

The fifth member goes through the whole join path of the loopback consortium test,
by the same function (``join_as_producer``): admitted by governance, its address on
chain, its node state-synced from a trusted final height and hash, dialled by every
member at that address, registered, bonded, elected, and its precommit in a final
block's certificate. Meanwhile the observer and the pruned node follow finalized
blocks (across the change of producer set) and answer the HTTP API; the pruned one
refuses what is below its window with ``pruned``. At the end every node holds the
same blocks and ``audit verify`` passes on every archive home.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.e2e.helpers import assert_one_chain, header, http_json, set_config, wait_until
from tests.e2e.test_consortium_cli import (
    EPOCH_LENGTH,
    NODE_SETTINGS,
    Member,
    join_as_producer,
    make_home,
    ok,
)
from tests.netns.hosts import NetnsNetwork
from vm import ChainParams

# tests/netns/conftest.py skips the module, saying why, where namespaces cannot be made.
NEEDS_NAMESPACES = True
WAN = {"latency_ms": 50, "jitter_ms": 10}
NEWCOMER, OBSERVER, PRUNED = 4, 5, 6
# Small enough that the pruned node's window moves within the test.
PRUNING = {"keep_blocks": 20, "keep_states": 10, "interval": 10}


def extra_home(net: NetnsNetwork, root: Path, name: str, host: int) -> Member:
    """A home made on extra ``host``: p2p on its loopback, published (and proxied) at
    the host's address, HTTP on the host's address."""
    address, port = net.hosts.addresses[host], net.p2p_port(host)
    return make_home(
        root,
        name,
        f"127.0.0.1:{port}",
        f"{address}:{net.http_port(host)}",
        external=f"{address}:{port}",
        prefix=net.hosts.prefix(host),
    )


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    root = tmp_path_factory.mktemp("join")
    params = dataclasses.replace(ChainParams.default(), epoch_length=EPOCH_LENGTH)
    settings = {k: v for k, v in NODE_SETTINGS.items() if k != "block_interval_ms"}
    net = NetnsNetwork(
        root,
        extra_hosts=3,
        params=params,
        block_interval_ms=NODE_SETTINGS["block_interval_ms"],
        **settings,
    )
    newcomer = extra_home(net, root, "regulator", NEWCOMER)
    observer = extra_home(net, root, "observer", OBSERVER)
    pruned = extra_home(net, root, "pruned", PRUNED)
    # Every member lets the two observers in (docs/node.md, Observers).
    net.config["observers"] = [observer.public_key, pruned.public_key]
    with net:
        net.faults(default=WAN)
        layout = net.layout
        assert layout is not None
        genesis_hash = layout.genesis_hash.hex()
        # The observers start from genesis and follow from the start, by the genesis
        # validators' published addresses (their config peers); the pruned one drops
        # what falls out of its window as it goes.
        for home, extra in ((observer.home, {}), (pruned.home, {"pruning": PRUNING})):
            ok("genesis", "install", "--home", str(home), str(layout.genesis_path),
               "--expect-hash", genesis_hash)  # fmt: skip
            set_config(home, **NODE_SETTINGS, observer=True, **extra)
        net.add_node(observer.home, OBSERVER)
        net.add_node(pruned.home, PRUNED)
        consortium = {
            "url": net[0].url,
            "keyring": str(layout.keyring_dir),
            "homes": [n.home for n in layout.nodes],
            "cluster": net.cluster,
            "genesis_file": layout.genesis_path,
            "genesis_hash": genesis_hash,
        }
        # The nodes so far: the four validators, then the observer and the pruned one
        # (join_as_producer takes the members' nodes first).
        node = join_as_producer(consortium, newcomer)
        yield net, node, newcomer


def test_a_fifth_member_on_its_own_host_joins_and_signs_final_blocks(joined):
    net, node, newcomer = joined
    # join_as_producer saw its precommit in a final block; across hosts, the members
    # reached it at its published address, through its host's proxy.
    assert node.status()["validator"] == newcomer.public_key
    for member in net.nodes[:4]:
        assert f"at {newcomer.p2p} (on chain)" in member.log_tail(10**7), member.home.name
    # Its node dials only the member it was given as a peer; the three others
    # connected to it, at the address on chain, through its host's proxy.
    stats = net.faults([NEWCOMER], default=WAN)[0]
    assert stats["accepted"] >= 3, stats


def test_the_observer_and_the_pruned_node_keep_serving(joined):
    net, node, newcomer = joined
    observer, pruned = net[4], net[5]
    top = max(net.heights(range(4)))
    net.wait_height(top + 2, timeout=60)
    for reader in (observer, pruned):
        status = reader.status()
        assert status["observer"] is True
        # Following across the new producer set: its certificates checked under it.
        assert newcomer.public_key in status["producers"]
        members = http_json(f"{reader.url}/v1/staking/members")["members"]
        assert {m["name"]: m["address"] for m in members}["regulator"] == newcomer.p2p
        assert header(reader.url, top)["hash"] == header(net[0].url, top)["hash"]
    # The observer holds everything; the pruned node only its window.
    assert observer.status()["retained"]["blocks_from"] <= 1
    window = wait_until(
        lambda: (r := pruned.status()["retained"])["blocks_from"] > 1 and r,
        60,
        "the pruned node's first pruning pass",
    )
    for height in (1, window["blocks_from"] - 1):
        assert http_json(f"{pruned.url}/v1/blocks/{height}")["code"] == "pruned"
    head = pruned.height()
    assert header(pruned.url, head - 2)["hash"] == header(net[0].url, head - 2)["hash"]


def test_every_node_holds_the_same_final_blocks_and_archives_audit(joined):
    net, node, newcomer = joined
    heights = assert_one_chain(net.nodes)
    assert len(heights) == 7
    observer_home = net[4].home
    net.audit_all([observer_home])
