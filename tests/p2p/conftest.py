"""Run every async p2p test on both the default asyncio loop and uvloop (the node's loop)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
