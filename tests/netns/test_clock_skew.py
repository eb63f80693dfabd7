"""One validator's clock skewed within the BFT time precision (issue 12).

Node 3 runs with ``test_clock_offset_ms`` = +400 ms, under the default time
precision P = 500 ms (docs/consensus.md, Block time): it dates its proposals 400 ms
ahead of the others' clocks, which stays within their timeliness bound
(``time - P <= arrival``). The chain keeps finalizing, with blocks of node 3's
among the final ones, and every node holds the same blocks.
"""

from __future__ import annotations

import statistics

from tests.e2e.helpers import assert_one_chain, header
from tests.netns.hosts import NetnsNetwork

# tests/netns/conftest.py skips the module, saying why, where namespaces cannot be made.
NEEDS_NAMESPACES = True
SKEW_MS = 400
LAN = {"latency_ms": 20, "jitter_ms": 5}


def test_a_clock_skewed_within_precision_keeps_finality_and_its_blocks(tmp_path):
    with NetnsNetwork(tmp_path, per_node={3: {"test_clock_offset_ms": SKEW_MS}}) as net:
        assert "TEST ONLY: this node's clock is offset by +400 ms" in net[3].log_tail(100_000)
        net.faults(default=LAN)
        net.wait_height(24, timeout=120)
        heights = assert_one_chain(net.nodes)
        net.audit_all()

        assert net.layout is not None
        skewed = net.layout.nodes[3].public_key.hex()
        headers = [header(net[0].url, h) for h in range(1, min(heights.values()) + 1)]
        by_skewed = [h for h in headers if h["producer"] == skewed]
        # Its proposals were timely for the others: blocks of its own are final.
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
