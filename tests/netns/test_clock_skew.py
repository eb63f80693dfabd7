"""One validator's clock skewed, within and then beyond the BFT time precision (issue 12).

Node 3 runs with ``test_clock_offset_ms`` = +400 ms, under the default time
precision P = 500 ms (docs/consensus.md, Block time): it dates its proposals 400 ms
ahead of the others' clocks, which stays within their timeliness bound
(``time - P <= arrival``). The chain keeps finalizing, with blocks of node 3's
among the final ones, and every node holds the same blocks.

Then, as the control that the offset is real and the bound enforced, node 3 restarts
+1500 ms ahead (beyond P): the others find its proposals untimely, so no block of
its becomes final, and the three honest clocks keep the chain finalizing.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from tests.e2e.helpers import assert_one_chain, header, set_config
from tests.netns.hosts import NetnsNetwork

# tests/netns/conftest.py skips the module, saying why, where namespaces cannot be made.
NEEDS_NAMESPACES = True
SKEW_MS = 400
BEYOND_MS = 1500
LAN = {"latency_ms": 20, "jitter_ms": 5}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    per_node = {3: {"test_clock_offset_ms": SKEW_MS}}
    with NetnsNetwork(tmp_path_factory.mktemp("skew"), per_node=per_node) as net:
        net.faults(default=LAN)
        yield net


def final_headers(net: NetnsNetwork, since: int = 1) -> list[dict[str, Any]]:
    """Headers of the blocks every node holds, from ``since``, once all agree on them;
    ``audit verify`` passes on every home."""
    heights = assert_one_chain(net.nodes)
    net.audit_all()
    return [header(net[0].url, h) for h in range(since, min(heights.values()) + 1)]


def skewed_key(net: NetnsNetwork) -> str:
    assert net.layout is not None
    return net.layout.nodes[3].public_key.hex()


def test_a_clock_skewed_within_precision_keeps_finality_and_its_blocks(net):
    assert f"TEST ONLY: this node's clock is offset by +{SKEW_MS} ms" in net[3].log_tail(100_000)
    net.wait_height(24, timeout=120)
    headers = final_headers(net)
    skewed = skewed_key(net)
    # Its proposals were timely for the others: blocks of its own are final.
    by_skewed = [h for h in headers if h["producer"] == skewed]
    assert len(by_skewed) >= 2, [(h["height"], h["round"], h["producer"][:8]) for h in headers]
    # And dated ahead: the step into one of its blocks is longer than a step
    # between two others' by about the skew (medians, so a slow round does not count).
    times = {h["height"]: h["time_ms"] for h in headers}
    producer = {h["height"]: h["producer"] for h in headers}
    into_skewed = [
        times[h] - times[h - 1]
        for h in times
        if h > 1 and producer[h] == skewed and producer[h - 1] != skewed
    ]
    between_others = [
        times[h] - times[h - 1]
        for h in times
        if h > 1 and skewed not in (producer[h], producer[h - 1])
    ]
    assert into_skewed and between_others
    shift = statistics.median(into_skewed) - statistics.median(between_others)
    assert shift > SKEW_MS / 2, (into_skewed, between_others)


def test_a_clock_beyond_precision_loses_its_proposals_not_the_chain(net):
    node = net[3]
    node.stop()
    set_config(node.home, test_clock_offset_ms=BEYOND_MS)
    node.start(timeout=60)
    since = max(net.heights()) + 1
    net.wait_height(since + 16, timeout=120)
    headers = final_headers(net, since)
    skewed = skewed_key(net)
    assert not [h["height"] for h in headers if h["producer"] == skewed]
    # Its turns were refused for being untimely, not for anything else.
    assert "proposal is not timely" in net[0].log_tail(10**7)
