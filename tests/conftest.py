"""Settings for the whole suite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop
from hypothesis import HealthCheck, settings

# Hypothesis fails an example that runs past a deadline (200 ms by default), and a
# test whose data generation is slow (the too_slow health check): both are timing
# assertions, which on a loaded two-core machine (xdist workers, a node's processes,
# a benchmark beside the suite) failed a test that passed on a rerun with the same
# seed. Timing belongs in benches/; a test's own bound is pytest-timeout's.
settings.register_profile("liveledger", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("liveledger")

TESTS = Path(__file__).resolve().parent
# Where the event loop's own behaviour is the point (how a transport buffers, when it
# pauses writing, how it closes and resets, signals), tests run on asyncio's loop as
# well: the p2p transport, the HTTP connection gate, and tests marked ``both_loops``.
BOTH_LOOPS = (TESTS / "p2p", TESTS / "node" / "test_http_server.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run this async test on asyncio's loop as well as on uvloop"
    )


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """Every async test runs on uvloop, the loop the node serves on (``node.run``): a
    bug of the node on uvloop alone is a production bug that no test on asyncio's
    loop would see. Those under ``BOTH_LOOPS`` or marked ``both_loops`` run on
    asyncio's too."""
    if item.get_closest_marker("both_loops") is not None or any(
        item.path == place or place in item.path.parents for place in BOTH_LOOPS
    ):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}
