"""Skip the network namespace tests, saying why, where namespaces cannot be made.

A test module that needs namespaces says so with ``NEEDS_NAMESPACES = True``.
"""

from __future__ import annotations

import pytest

from tests.netns.hosts import unavailable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [
        item for item in items if getattr(getattr(item, "module", None), "NEEDS_NAMESPACES", False)
    ]
    if not here:
        return
    reason = unavailable()
    if reason is not None:
        for item in here:
            item.add_marker(pytest.mark.skip(reason=f"no network namespaces: {reason}"))
