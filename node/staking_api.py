"""Read-only HTTP views of staking state: candidates (weights, jail, self-bond) and producer sets.

Mounted by ``node.api.create_app``. Everything is read from the latest
committed state through consensus' own read functions; nothing here writes.
Reads of several keys are not one snapshot: a block may commit between them,
so ``height`` is the head read first (good enough for dashboards and tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from consensus import epoch_of, producer_set, staking_enabled
from consensus.staking_state import (
    active_params,
    candidates,
    get_candidate,
    get_member,
    get_totals,
    self_bond,
)

if TYPE_CHECKING:
    from node.service import Node


def _state(node: Node) -> tuple[Any, int]:
    chain = node.chain
    if chain is None:
        raise web.HTTPServiceUnavailable(reason="node is starting or stopping")
    return chain.state, chain.height


def _disabled() -> web.Response:
    return web.json_response(
        {"code": "staking_disabled", "message": "genesis has no staking section"}, status=404
    )


def add_staking_routes(app: web.Application, node: Node) -> None:
    """``GET /v1/staking/candidates`` and ``GET /v1/staking/producers``."""

    async def get_candidates(_request: web.Request) -> web.Response:
        state, height = _state(node)
        if not staking_enabled(state):
            return _disabled()
        out = []
        for key in candidates(state):
            cand = get_candidate(state, key)
            if cand is None:
                continue
            member = get_member(state, key)
            out.append(
                {
                    "public_key": key.hex(),
                    "member": member.name if member is not None else None,
                    "registered_height": cand.registered_height,
                    "weight": cand.weight,
                    "self_bond": self_bond(state, key),
                    "jailed": cand.jailed,
                    "jailed_until": cand.jailed_until,
                    "missed_epoch": cand.missed_epoch,
                    "missed": cand.missed,
                }
            )
        totals = get_totals(state)
        return web.json_response(
            {
                "height": height,
                "candidates": out,
                "totals": {
                    "bonded": totals.bonded,
                    "unbonding": totals.unbonding,
                    "slashed": totals.slashed,
                },
            }
        )

    async def get_producers(_request: web.Request) -> web.Response:
        state, height = _state(node)
        if not staking_enabled(state):
            return _disabled()
        params = active_params(state)
        epoch = epoch_of(height + 1, params.epoch_length)
        sets = {}
        # The set of the next block's epoch, and the following one once elected.
        for name, number in (("current", epoch), ("next", epoch + 1)):
            record = producer_set(state, number)
            sets[name] = (
                None
                if record is None
                else {
                    "epoch": record.epoch,
                    "elected_height": record.elected_height,
                    "producers": [k.hex() for k in record.keys],
                    "weights": list(record.weights),
                }
            )
        return web.json_response(
            {
                "height": height,
                "epoch": epoch,
                "epoch_length": params.epoch_length,
                "max_producers": params.max_producers,
                **sets,
            }
        )

    app.router.add_get("/v1/staking/candidates", get_candidates)
    app.router.add_get("/v1/staking/producers", get_producers)
