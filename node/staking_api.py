"""Read-only HTTP views of staking state: candidates (weights, jail, self-bond) and producer sets.

Mounted by ``node.api.create_app``. Everything is read from the latest
committed state through consensus' own read functions; nothing here writes.
Reads of several keys are not one snapshot: a block may commit between them,
so ``height`` is the head read first (good enough for dashboards and tests).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from apps.routes import (
    BOOL,
    PUBLIC_KEY,
    STR,
    UINT,
    Answer,
    Component,
    Refusal,
    RouteTable,
    array,
    described,
    nullable,
    obj,
)
from consensus import epoch_of, producer_set, staking_enabled
from consensus.staking_state import (
    active_params,
    candidates,
    get_candidate,
    get_member,
    get_totals,
    self_bond,
)
from core import HttpError
from node.service import NODE

PRODUCER_SET = Component(
    "ProducerSet",
    obj(
        {
            "epoch": UINT,
            "elected_height": UINT,
            "producers": described(array(PUBLIC_KEY), "sorted node keys"),
            "weights": described(array(UINT), "vote weights, aligned with `producers`"),
        }
    ),
)
CANDIDATE = Component(
    "Candidate",
    obj(
        {
            "public_key": PUBLIC_KEY,
            "member": described(nullable(STR), "member name; null once removed"),
            "registered_height": UINT,
            "weight": described(UINT, "bonded stake of the ballots that approve it"),
            "self_bond": UINT,
            "jailed": BOOL,
            "jailed_until": UINT,
            "missed_epoch": UINT,
            "missed": described(UINT, "missed commit signatures in `missed_epoch`"),
        }
    ),
)
ROUTES = RouteTable("staking", components=(PRODUCER_SET, CANDIDATE))
_ERRORS = (
    Refusal(404, "No staking section in genesis.", "staking_disabled"),
    Refusal(503, "The node is starting or stopping.", "unavailable"),
)


def _state(request: web.Request) -> tuple[Any, int]:
    """The latest state and height, if staking is on (``staking_disabled`` if not)."""
    chain = request.app[NODE].chain
    if chain is None:
        raise HttpError(503, "unavailable", "node is starting or stopping")
    state, height = chain.state, chain.height
    if not staking_enabled(state):
        raise HttpError(404, "staking_disabled", "genesis has no staking section")
    return state, height


@ROUTES.get(
    "/v1/staking/candidates",
    "getStakingCandidates",
    "Candidates and stake totals",
    "Each candidate's weight, self-bond, jail state and missed slots, and the "
    "bonded, unbonding and slashed totals, from the latest committed state.",
    ok=Answer(
        "Candidates.",
        obj(
            {
                "height": described(UINT, "head height (read first)"),
                "candidates": array(CANDIDATE),
                "totals": obj({"bonded": UINT, "unbonding": UINT, "slashed": UINT}),
            }
        ),
    ),
    errors=_ERRORS,
)
async def get_candidates(request: web.Request) -> web.Response:
    state, height = _state(request)
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


@ROUTES.get(
    "/v1/staking/producers",
    "getStakingProducers",
    "Producer sets",
    "The producer set of the next block's epoch and, once elected, of the following one.",
    ok=Answer(
        "Producer sets.",
        obj(
            {
                "height": described(UINT, "head height"),
                "epoch": described(UINT, "epoch of the next block"),
                "epoch_length": UINT,
                "max_producers": UINT,
                "current": nullable(PRODUCER_SET),
                "next": described(nullable(PRODUCER_SET), "null until elected"),
            }
        ),
    ),
    errors=_ERRORS,
)
async def get_producers(request: web.Request) -> web.Response:
    state, height = _state(request)
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
