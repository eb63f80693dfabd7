"""Async tests run on the node's event loop (tests/conftest.py)."""

from __future__ import annotations

import asyncio

import uvloop


async def test_async_tests_run_on_uvloop_as_the_node_does():
    # node.run serves on uvloop; a test on asyncio's loop alone would miss its bugs.
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
