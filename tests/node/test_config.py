"""Node-local settings: what config.json may hold (``node/config.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest

from consensus import LoopClock, WallClock
from core.netaddr import format_net_address
from genesis.home import MAX_CONFIG_FILE_BYTES
from genesis.localnet import write_node_config
from node.config import ConfigError, load_config
from tests.fifos import fifo_holding


@pytest.mark.parametrize("key", ["unsafe_double_sign", "unsafe_equivocate", "behaviour"])
def test_no_setting_makes_a_node_misbehave(tmp_path, key):
    # Byzantine behaviours for tests live behind a test-only entry point
    # (tests/e2e/byzantine.py); a production config cannot ask for one.
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    assert load_config(tmp_path).moniker == "n"
    doc = json.loads(path.read_text())
    doc[key] = True
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=f"unknown settings \\['{key}'\\]"):
        load_config(tmp_path)


def _assert_refused(path, section, name, bad, why):
    """The config at ``path`` with ``section.name`` set to ``bad`` is refused for
    ``why``; the file is left as it was."""
    good = path.read_text()
    doc = json.loads(good)
    doc[section][name] = bad
    path.write_text(json.dumps(doc))
    try:
        with pytest.raises(ConfigError, match=why):
            load_config(path.parent)
    finally:
        path.write_text(good)


def test_every_mempool_setting_is_loaded_and_checked(tmp_path):
    # One settings type: what config.json holds is what the mempool runs with.
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    doc["mempool"].update(max_queued_per_sender=3, max_gap_blocks=2, max_nonce_ahead=None)
    path.write_text(json.dumps(doc))
    mempool = load_config(tmp_path).mempool
    assert (mempool.max_queued_per_sender, mempool.max_gap_blocks) == (3, 2)
    assert mempool.nonce_window == mempool.per_account_cap
    for name, bad, why in [
        ("max_queued_per_sender", 0, "at least 1"),
        ("max_nonce_ahead", 0, "at least 1"),
        ("max_nonce_ahead", "8", "integer or null"),
        ("replace_fee_bump_pct", -1, "non-negative"),
        ("verify_processes", 1, "true or false"),
        # Each worker is a thread or process started with the node, and each shard a
        # heap per proposal: a typo of a few zeros must not start or build that many.
        ("verify_threads", 100_000, "mempool verify_threads must be at most 256, got 100000"),
        ("shards", 100_000, "mempool shards must be at most 256, got 100000"),
    ]:
        _assert_refused(path, "mempool", name, bad, why)
    doc["mempool"].update(verify_threads=256, shards=256)
    path.write_text(json.dumps(doc))
    mempool = load_config(tmp_path).mempool
    assert (mempool.verify_threads, mempool.shards) == (256, 256)


def test_test_clock_offset_is_a_signed_integer_and_defaults_to_none(tmp_path):
    # The test-only clock skew (docs/node.md): off unless set, negative allowed,
    # anything but a bounded integer refused.
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    assert load_config(tmp_path).test_clock_offset_ms == 0
    doc = json.loads(path.read_text())
    for good in (-400, 400):
        doc["test_clock_offset_ms"] = good
        path.write_text(json.dumps(doc))
        assert load_config(tmp_path).test_clock_offset_ms == good
    for bad in (1.5, "400", True, 10**12):
        doc["test_clock_offset_ms"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match="test_clock_offset_ms"):
            load_config(tmp_path)


def test_wall_clock_offset_shifts_the_consensus_clock():
    loop = asyncio.new_event_loop()
    try:
        skewed = LoopClock(loop, WallClock(-5_000))
        before = time.time_ns() // 1_000_000
        reading = skewed.time_ms()
        after = time.time_ns() // 1_000_000
        assert before - 5_000 <= reading <= after - 5_000
        # Timeouts run on the monotonic clock, which the offset leaves alone.
        assert abs(skewed.now() - LoopClock(loop).now()) < 1_000
    finally:
        loop.close()


def test_storage_caches_are_loaded_and_bounded(tmp_path):
    # An operator sizes the caches to the machine and the state; a new home shows
    # where (an empty section, the defaults in force).
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    assert doc["storage"] == {}
    assert set(load_config(tmp_path).to_json()["storage"]) == {"tree_cache", "state_cache"}
    doc["storage"] = {"tree_cache": 1 << 16, "state_cache": 4096}
    path.write_text(json.dumps(doc))
    storage = load_config(tmp_path).storage
    assert (storage.tree_cache, storage.state_cache) == (1 << 16, 4096)
    for name, bad, why in [
        ("tree_cache", 16, "in 1024.."),
        ("tree_cache", 1 << 30, "in 1024.."),
        ("state_cache", 0, "in 1024.."),
        ("state_cache", "4096", "non-negative integer"),
        ("cache", 4096, "unknown settings"),
    ]:
        _assert_refused(path, "storage", name, bad, why)
    doc["storage"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="storage must be an object"):
        load_config(tmp_path)


def test_trusted_proxies_are_a_list_of_addresses_or_networks(tmp_path):
    # None by default: every peer is its own client (docs/node.md, HTTP connections).
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    assert load_config(tmp_path).http.trusted_proxies == ()
    doc = json.loads(path.read_text())
    doc["http"] = {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]}
    path.write_text(json.dumps(doc))
    config = load_config(tmp_path)
    assert config.http.trusted_proxies == ("127.0.0.1", "10.0.0.0/8", "2001:db8::/32")
    assert config.to_json()["http"]["trusted_proxies"] == [
        "127.0.0.1",
        "10.0.0.0/8",
        "2001:db8::/32",
    ]
    for bad, why in [
        ("127.0.0.1", "must be a list of IP addresses or networks"),
        ([1], "must be a list of IP addresses or networks"),
        (["proxy.example"], "http trusted_proxies: not an IP address or network"),
        (["10.0.0.7/24"], "host bits set"),
        (["10.0.0.1"] * 65, "at most 64"),
    ]:
        _assert_refused(path, "http", "trusted_proxies", bad, why)


@pytest.mark.parametrize(
    "text, why",
    [
        (b'{"moniker": "\xff"}', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"http_port": 1, "http_port": 2}', "duplicate key 'http_port'"),
        (b'{"mempool": {"shards": 4, "shards": 8}}', "duplicate key 'shards'"),
    ],
)
def test_a_config_file_that_does_not_say_one_thing_is_refused(tmp_path, text, why):
    # Not UTF-8, nested past the decoder's depth, or one setting given twice (json.loads
    # keeps the last silently): a config error naming the file, never a crash, never a
    # guess at which value was meant.
    (tmp_path / "config.json").write_bytes(text)
    with pytest.raises(ConfigError, match=why) as exc:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(exc.value)


def test_a_config_file_is_a_bounded_regular_file(tmp_path):
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    good = path.read_bytes()
    path.write_bytes(good + b" " * (MAX_CONFIG_FILE_BYTES - len(good)))
    assert load_config(tmp_path).moniker == "n"
    # Past the bound it is refused unparsed (json.loads would hold it all, and more).
    path.write_bytes(good + b" " * (MAX_CONFIG_FILE_BYTES + 1 - len(good)))
    with pytest.raises(ConfigError, match=f"{path} is larger than {MAX_CONFIG_FILE_BYTES} bytes"):
        load_config(tmp_path)
    # A FIFO or device is refused unopened, as what it is, not as a missing config.
    path.unlink()
    with fifo_holding(path, 1):
        with pytest.raises(ConfigError, match=f"{path} is not a regular file but a FIFO"):
            load_config(tmp_path)
    os.unlink(path)
    path.symlink_to("/dev/null")
    with pytest.raises(ConfigError, match="is not a regular file but a character device"):
        load_config(tmp_path)


def test_ports_are_tcp_ports(tmp_path):
    # A p2p port of 0 would bind whatever port the kernel picks while peers dial the
    # one published; above 65535 the bind fails late, at start, with an OverflowError.
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    for name, bad, why in [
        ("p2p_port", 0, "p2p_port must be in 1..65535, got 0"),
        ("p2p_port", 65536, "p2p_port must be in 1..65535, got 65536"),
        ("http_port", 65536, "http_port must be in 0..65535, got 65536"),
    ]:
        path.write_text(json.dumps(dict(doc, **{name: bad})))
        with pytest.raises(ConfigError, match=why):
            load_config(tmp_path)
    # The API on a free port the kernel picks: what tests serving it ask for.
    path.write_text(json.dumps(dict(doc, http_port=0)))
    assert (load_config(tmp_path).http_port, load_config(tmp_path).p2p_port) == (0, 2)


def test_peers_are_checked_as_a_node_dials_them(tmp_path):
    key = "ab" * 32
    path = write_node_config(
        tmp_path, moniker="n", http_port=1, p2p_port=2, peers=[(bytes.fromhex(key), "h.example", 5)]
    )
    assert load_config(tmp_path).peers[0].public_key == key
    doc = json.loads(path.read_text())
    peer = doc["peers"][0]
    for bad, why in [
        (dict(peer, port=0), "port must be in 1..65535"),
        (dict(peer, port=70000), "port must be in 1..65535"),
        (dict(peer, host=""), "host:port"),
        (dict(peer, host="010.0.0.1"), "neither a DNS name nor an IPv4"),
        # Node keys are compared as text (genesis install replaces a validator's entry
        # by its key): one spelling, or a stale entry would survive beside the new one.
        (dict(peer, public_key=key.upper()), "64 lower-case hex"),
        (dict(peer, public_key=" " + key), "64 lower-case hex"),
    ]:
        path.write_text(json.dumps(dict(doc, peers=[bad])))
        with pytest.raises(ConfigError, match=why):
            load_config(tmp_path)
    # Two addresses for one node: which one is dialed would be the loader's choice.
    path.write_text(json.dumps(dict(doc, peers=[peer, dict(peer, host="other.example")])))
    with pytest.raises(ConfigError, match="peers\\[1\\]: node key .* is also peers\\[0\\]"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "first, second",
    [
        (("node1.example", 5), ("node1.example", 5)),
        (("10.0.0.1", 5), ("10.0.0.1", 5)),
        # One endpoint spelled twice: DNS names ignore case, IPv6 has many spellings.
        (("node1.example", 5), ("Node1.EXAMPLE", 5)),
        (("2001:db8::1", 5), ("2001:DB8:0:0::1", 5)),
    ],
)
def test_two_peers_at_one_endpoint_are_refused(tmp_path, first, second):
    # Two node keys at one address: one of them is not there, and the node would dial
    # the other's endpoint for it.
    a, b = "ab" * 32, "cd" * 32
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    (h1, p1), (h2, p2) = first, second
    peers = [
        {"public_key": a, "host": h1, "port": p1},
        {"public_key": b, "host": h2, "port": p2},
    ]
    path.write_text(json.dumps(dict(doc, peers=peers)))
    one, two = format_net_address(h1, p1), format_net_address(h2, p2)
    says = f"peers[1]: address {two} (node key {b}) is the endpoint of peers[0] too, {one} (node key {a})"
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(tmp_path)
    # Another port, or another name, is another endpoint.
    for other in ({"port": p2 + 1}, {"host": "node2.example"}):
        path.write_text(json.dumps(dict(doc, peers=[peers[0], dict(peers[1], **other)])))
        assert len(load_config(tmp_path).peers) == 2


@pytest.mark.parametrize(
    "setting, bad, why",
    [
        # 0 would not mean "no limit": a round that never waits for its proposer
        # (prevotes nil for every block), every POST body refused or timed out at
        # once, every state sync request given up at once.
        (("timeout_propose_ms",), 0, "timeout_propose_ms must be at least 1, got 0"),
        (("max_request_bytes",), 0, "max_request_bytes must be at least 1, got 0"),
        (("body_timeout_ms",), 0, "body_timeout_ms must be at least 1, got 0"),
        (("state_sync", "request_timeout_s"), 0, "request_timeout_s must be at least 1, got 0"),
        # The moniker is the name a contribution carries and logs show: plain.
        (("moniker",), "a\nb", "moniker must match"),
        (("moniker",), "", "moniker must match"),
    ],
)
def test_settings_that_zero_would_disable_are_refused(tmp_path, setting, bad, why):
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    assert load_config(tmp_path).moniker == "n"
    if len(setting) == 2:
        doc[setting[0]] = {setting[1]: bad}
    else:
        doc[setting[0]] = bad
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=why):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "interval, why",
    [
        (9, "block_interval_ms must be at least 10, got 9"),
        # A chain paced an hour apart would be refused by the CLI as stalled (its latest
        # block more than 5 minutes behind the clock), with timeouts made for seconds.
        (60_001, "block_interval_ms must be at most 60000 \\(a minute\\), got 60001"),
        (3_600_000, "block_interval_ms must be at most 60000 \\(a minute\\), got 3600000"),
    ],
)
def test_a_block_interval_out_of_range_is_refused_naming_the_file(tmp_path, interval, why):
    path = write_node_config(tmp_path, moniker="n", http_port=1, p2p_port=2)
    doc = json.loads(path.read_text())
    for good in (10, 60_000):
        doc["block_interval_ms"] = good
        path.write_text(json.dumps(doc))
        assert load_config(tmp_path).block_interval_ms == good
    doc["block_interval_ms"] = interval
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {why}$"):
        load_config(tmp_path)
