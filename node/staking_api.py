"""Read-only HTTP views of staking state: members, candidates (weights, jail, self-bond),
producer sets, governance proposals, and the chain parameters in force.

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
    IntParam,
    Refusal,
    RouteTable,
    array,
    described,
    nullable,
    obj,
    unavailable,
)
from consensus import epoch_of, producer_set, staking_enabled
from consensus.governance import ACTION_NAMES, Proposal, get_proposal
from consensus.staking_state import (
    PENDING_PARAMS_KEY,
    PROPOSAL_COUNTER_KEY,
    Counter,
    PendingParams,
    active_params,
    candidates,
    get_candidate,
    get_member,
    get_totals,
    member_address,
    members,
    read,
    self_bond,
)
from core import HttpError
from core.codec import UINT64_MAX
from genesis.document import params_to_json
from node.api_common import node_of
from node.chain import Chain
from vm import ChainParams

MAX_PROPOSALS_PER_PAGE = 1000

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


def _chain(request: web.Request) -> Chain:
    chain = node_of(request).chain
    if chain is None:
        raise unavailable()
    return chain


def _state(request: web.Request) -> tuple[Any, int]:
    """The latest state and height, if staking is on (``staking_disabled`` if not)."""
    chain = _chain(request)
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


MEMBER = Component(
    "Member",
    obj(
        {
            "public_key": described(PUBLIC_KEY, "its node key"),
            "name": STR,
            "admitted_height": described(UINT, "0 for genesis validators"),
            "candidate": described(BOOL, "registered as a candidate"),
            "address": described(
                nullable(STR),
                "`host:port` its node listens on, as the member set it "
                "(`set_member_address`); null if it has not",
            ),
        }
    ),
)


@ROUTES.get(
    "/v1/staking/members",
    "getStakingMembers",
    "Consortium members",
    "Every member's node key, name, admission height and network address, from the latest "
    "committed state.",
    ok=Answer(
        "Members, by node key.",
        obj({"height": described(UINT, "head height (read first)"), "members": array(MEMBER)}),
    ),
    errors=_ERRORS,
)
async def get_members(request: web.Request) -> web.Response:
    state, height = _state(request)
    out = []
    for key in members(state):
        member = get_member(state, key)
        if member is None:
            continue
        out.append(
            {
                "public_key": key.hex(),
                "name": member.name,
                "admitted_height": member.admitted_height,
                "candidate": get_candidate(state, key) is not None,
                "address": member_address(state, key),
            }
        )
    return web.json_response({"height": height, "members": out})


GOVERNANCE_PROPOSAL = Component(
    "GovernanceProposal",
    obj(
        {
            "id": UINT,
            "proposer": described(PUBLIC_KEY, "the proposing member's node key"),
            "action": {"type": "string", "enum": sorted(ACTION_NAMES.values())},
            "public_key": described(
                nullable(PUBLIC_KEY), "the member admitted or removed; null for a parameter"
            ),
            "name": described(STR, "member name (admit) or parameter name (change); else empty"),
            "value": described(UINT, "the new value of a parameter change; else 0"),
            "created_height": UINT,
            "deadline_height": described(UINT, "last height at which votes are taken"),
            "voters": described(array(PUBLIC_KEY), "producers that approved, sorted"),
            "voted_at": described(
                array(UINT),
                "height of each approval, aligned with `voters` (one cast before its voter "
                "was admitted again does not count)",
            ),
            "passed_height": described(UINT, "height it passed at; 0 if it has not"),
            "status": {
                "type": "string",
                "enum": ["open", "passed", "expired", "dropped"],
                "description": "`expired`: past its deadline without passing; `dropped`: "
                "the proposer's membership that made it ended before it passed",
            },
        }
    ),
)
FIRST_PROPOSAL = IntParam("start", "query", 1, UINT64_MAX, "first proposal id", default=1)
PROPOSAL_LIMIT = IntParam(
    "limit", "query", 1, MAX_PROPOSALS_PER_PAGE, "at most this many", default=100
)
PROPOSAL_ID = IntParam("id", "path", 1, UINT64_MAX, "proposal id")


def _proposal_json(proposal: Proposal, state: Any, height: int) -> dict[str, Any]:
    if proposal.passed_height:
        status = "passed"
    elif height > proposal.deadline_height:
        status = "expired"
    elif not proposal.is_live(state):
        status = "dropped"
    else:
        status = "open"
    return {
        "id": proposal.id,
        "proposer": proposal.proposer.hex(),
        "action": ACTION_NAMES[proposal.kind],
        "public_key": proposal.public_key.hex() if proposal.public_key else None,
        "name": proposal.name,
        "value": proposal.value,
        "created_height": proposal.created_height,
        "deadline_height": proposal.deadline_height,
        "voters": [v.hex() for v in proposal.voters],
        "voted_at": list(proposal.voted_at),
        "passed_height": proposal.passed_height,
        "status": status,
    }


@ROUTES.get(
    "/v1/governance/proposals",
    "getGovernanceProposals",
    "Governance proposals",
    "Proposals by id from `start`, at most `limit` of them, with their votes and status "
    "(`open` until its deadline, `passed`, `expired`, or `dropped` with its proposer); `next_id` is the id the next "
    "proposal will get, so `start=next_id-limit` reads the latest.",
    params=(FIRST_PROPOSAL, PROPOSAL_LIMIT),
    ok=Answer(
        "Proposals, ascending by id.",
        obj(
            {
                "height": described(UINT, "head height (read first)"),
                "next_id": UINT,
                "proposals": array(GOVERNANCE_PROPOSAL),
            }
        ),
    ),
    errors=(Refusal(400, "A bad `start` or `limit`.", "bad_param"), *_ERRORS),
    tag="governance",
)
async def get_proposals(request: web.Request) -> web.Response:
    start = FIRST_PROPOSAL.read(request)
    limit = PROPOSAL_LIMIT.read(request)
    state, height = _state(request)
    counter = read(state, PROPOSAL_COUNTER_KEY, Counter)
    next_id = 1 if counter is None else counter.value
    out = []
    for proposal_id in range(start, min(next_id, start + limit)):
        proposal = get_proposal(state, proposal_id)
        if proposal is not None:
            out.append(_proposal_json(proposal, state, height))
    return web.json_response({"height": height, "next_id": next_id, "proposals": out})


@ROUTES.get(
    "/v1/governance/proposals/{id}",
    "getGovernanceProposal",
    "A governance proposal",
    "One proposal with its votes and status.",
    params=(PROPOSAL_ID,),
    ok=Answer(
        "The proposal.",
        obj({"height": described(UINT, "head height"), "proposal": GOVERNANCE_PROPOSAL}),
    ),
    errors=(
        Refusal(400, "Not a proposal id.", "bad_param"),
        Refusal(
            404,
            "No such proposal, or no staking section in genesis.",
            "not_found",
            "staking_disabled",
        ),
    ),
    tag="governance",
)
async def get_proposal_route(request: web.Request) -> web.Response:
    proposal_id = PROPOSAL_ID.read(request)
    state, height = _state(request)
    proposal = get_proposal(state, proposal_id)
    if proposal is None:
        raise HttpError(404, "not_found", f"no proposal {proposal_id}")
    return web.json_response(
        {"height": height, "proposal": _proposal_json(proposal, state, height)}
    )


PENDING_CHANGE = Component(
    "PendingParamChange",
    obj(
        {
            "effective_height": described(UINT, "the first block executed with it"),
            "proposal_id": UINT,
            "name": STR,
            "value": UINT,
        }
    ),
)


@ROUTES.get(
    "/v1/params",
    "getParams",
    "Chain parameters in force",
    "The parameters the next block executes with (genesis's, as changed by governance): "
    "clients take the minimum fee and the expiry bound from here, never from the genesis "
    "file. `pending` lists passed changes waiting for their height.",
    ok=Answer(
        "The parameters.",
        obj(
            {
                "height": described(UINT, "head height; `params` hold for block height + 1"),
                "params": ChainParams,
                "pending": array(PENDING_CHANGE),
            }
        ),
    ),
    tag="node",
)
async def get_params(request: web.Request) -> web.Response:
    chain = _chain(request)
    state, height = chain.state, chain.height
    params = chain.params_for(height + 1)
    pending = read(state, PENDING_PARAMS_KEY, PendingParams) if staking_enabled(state) else None
    changes = (
        [] if pending is None else [c for c in pending.changes if c.effective_height > height + 1]
    )
    return web.json_response(
        {
            "height": height,
            "params": params_to_json(params),
            "pending": [
                {
                    "effective_height": c.effective_height,
                    "proposal_id": c.proposal_id,
                    "name": c.name,
                    "value": c.value,
                }
                for c in changes
            ],
        }
    )
