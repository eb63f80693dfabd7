"""What the node's route modules (``node.api``, ``node.chain_api``) share: the node the
app serves, and its chain and mempool once it is open."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apps.routes import unavailable
from node.service import NODE, Node


def node_of(request: web.Request) -> Node:
    """The node the app serves (``node.api.create_app`` put it there)."""
    return request.app[NODE]


def ready(node: Node) -> tuple[Any, Any]:
    """(chain, mempool) of the node; 503 ``unavailable`` until it is open (and once it
    closes)."""
    if node.chain is None or node.mempool is None:
        raise unavailable()
    return node.chain, node.mempool


__all__ = ["node_of", "ready"]
