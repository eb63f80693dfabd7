"""Consortium governance: proposals to admit or remove a member, change a parameter,
or grant or revoke a member's issuer role for a currency (vm/currency.py).

Any member proposes; the active producers vote. A proposal passes in the vote
that brings its approvals from producers active at that height to more than
2/3 of the active set, and its action runs in that same transaction. Votes are
taken up to and including ``deadline_height``; after it the proposal is dead.

Parameter changes are not applied at once: a change passed at height ``h`` is
scheduled for ``h + param_change_delay_blocks`` and the begin-block hook of that
height writes it into the active parameters. ``params_for_height`` gives the
parameters a block must be executed with, from the state before it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from consensus.codes import shared
from consensus.election import least_epoch_charge
from consensus.prefixes import ConsensusPrefix as P
from consensus.staking_state import (
    ACTIVE_PARAMS_KEY,
    GOVERNABLE_PARAMS,
    MAX_CANDIDATES,
    MAX_MEMBERS,
    MAX_OPEN_PROPOSALS,
    MAX_PENDING_PARAMS,
    MEMBER_LIST_KEY,
    MIN_FAULT_TOLERANT_PRODUCERS,
    PENDING_PARAMS_KEY,
    PROPOSAL_COUNTER_KEY,
    Counter,
    KeyList,
    Member,
    MemberRemoved,
    PendingParam,
    PendingParams,
    active_params,
    check_staking_params,
    get_member,
    member_address_key,
    member_key,
    member_removed_key,
    members,
    membership_changed_at,
    producers_for_height,
    proposal_key,
    prune_candidates,
    read,
    require_staking,
    staking_enabled,
)
from consensus.validators import ValidatorSet
from core.codec import MaxItems, MaxLen, Wire
from core.errors import DecodeError, NodeFault
from core.keys import address_of
from core.types import PublicKey
from vm.context import BlockContext
from vm.currency import (
    Symbol,
    check_grant,
    check_revoke,
    currency_codes,
    grant_issuer,
    revoke_all_of,
    revoke_issuer,
)
from vm.params import ChainParams
from vm.prefixes import KeyPrefix
from vm.receipts import Event
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay, StateView

PROPOSE_ADMIT_MEMBER = "propose_admit_member"
PROPOSE_REMOVE_MEMBER = "propose_remove_member"
PROPOSE_PARAM_CHANGE = "propose_param_change"
PROPOSE_GRANT_ISSUER = "propose_grant_issuer"
PROPOSE_REVOKE_ISSUER = "propose_revoke_issuer"
VOTE_PROPOSAL = "vote_proposal"
TX_TYPES = TxTable(TxClass.CONSENSUS)
# What opening a proposal reads and writes (the member's open list, the counter).
_PROPOSE_READS = {P.CHAIN_PARAMS}
_PROPOSE_WRITES = {P.MEMBER, P.PROPOSAL, P.STAKING_INDEX}

ADMIT_MEMBER = 1
REMOVE_MEMBER = 2
CHANGE_PARAM = 3
GRANT_ISSUER = 4
REVOKE_ISSUER = 5
ACTION_NAMES = {
    ADMIT_MEMBER: "admit_member",
    REMOVE_MEMBER: "remove_member",
    CHANGE_PARAM: "change_param",
    GRANT_ISSUER: "grant_issuer",
    REVOKE_ISSUER: "revoke_issuer",
}
MEMBER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class ProposeAdmitMember(Wire):
    public_key: PublicKey
    name: Annotated[str, MaxLen(64)]

    MAX_ENCODED = 128


@dataclass(frozen=True, slots=True)
class ProposeRemoveMember(Wire):
    public_key: PublicKey

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class ProposeParamChange(Wire):
    name: Annotated[str, MaxLen(64)]
    value: int

    MAX_ENCODED = 128


@dataclass(frozen=True, slots=True)
class ProposeGrantIssuer(Wire):
    """Make member ``public_key`` the issuer of ``currency`` (new, or revoked before)."""

    public_key: PublicKey
    currency: Symbol
    decimals: int

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class ProposeRevokeIssuer(Wire):
    currency: Symbol

    MAX_ENCODED = 32


@dataclass(frozen=True, slots=True)
class VoteProposal(Wire):
    """Approve a proposal (there is no 'no': a proposal without enough approvals expires)."""

    proposal_id: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class Proposal(Wire):
    id: int
    proposer: PublicKey
    # ADMIT_MEMBER (public_key, name), REMOVE_MEMBER (public_key), CHANGE_PARAM (name,
    # value), GRANT_ISSUER (public_key, name = symbol, value = decimals) or
    # REVOKE_ISSUER (name = symbol).
    kind: int
    public_key: Annotated[bytes, MaxLen(32)]
    name: Annotated[str, MaxLen(64)]
    value: int
    created_height: int
    # Last height at which votes are taken.
    deadline_height: int
    # Producers that approved, sorted (only those active at a vote's height count). More
    # distinct voters than any chain has had producers: the vote fails (state_limit).
    voters: Annotated[tuple[PublicKey, ...], MaxItems(MAX_CANDIDATES)]
    # Height it passed at; 0 while open.
    passed_height: int
    # Height of each approval, aligned with ``voters``: a vote counts only in the
    # membership it was cast in (``vote_counts``).
    voted_at: Annotated[tuple[int, ...], MaxItems(MAX_CANDIDATES)] = ()

    MAX_ENCODED = 48 * 1024

    def is_live(self, state: StateView) -> bool:
        """Whether the membership that made it lasts: a proposal is dropped with it.

        Every proposal a member makes goes into its ``Member.open_proposals`` and
        leaves only once closed; removal deletes the record, and a member admitted
        again starts a fresh one. So a proposal not listed there was made by a
        membership that ended, whatever happened to the key since.
        """
        owner = get_member(state, self.proposer)
        return owner is not None and self.id in owner.open_proposals


def get_proposal(state: StateView, proposal_id: int) -> Proposal | None:
    return read(state, proposal_key(proposal_id), Proposal)


# Proposals about a member's membership or role: the key in ``public_key``.
_ABOUT_A_MEMBER = frozenset({ADMIT_MEMBER, REMOVE_MEMBER, GRANT_ISSUER})


def approvals_since(state: StateView, proposal: Proposal) -> int:
    """The first height whose approvals of ``proposal`` can count, as far as what it is
    about goes: for a proposal about a member (admit, remove, grant issuer), the height
    that key's membership last began or ended (``membership_changed_at``); else 0.

    A decision about a membership belongs to it: approvals given before a member's
    removal and readmission, or before a removed member's removal, were about a state
    the consortium has since changed by more than 2/3, and there is no way to withdraw
    an approval. Counted on, a stale proposal to remove a readmitted member (or to
    readmit a removed one) passed with one more approval.
    """
    if proposal.kind in _ABOUT_A_MEMBER:
        return membership_changed_at(state, proposal.public_key)
    return 0


def vote_counts(
    state: StateView, voter: bytes, voted_at: int, active: ValidatorSet, since: int = 0
) -> bool:
    """Whether an approval cast at ``voted_at`` counts now: its voter is an active
    producer and has not been admitted since (a member admitted again starts with no
    votes, as with no proposals), and it was cast at ``since`` or later
    (``approvals_since``: the membership the proposal is about has not changed since).
    A removed producer that still produces keeps its votes until its last elected
    epoch ends (docs/staking.md, Governance).

    Heights are the clock: an approval cast in the block that removed and re-admitted
    its voter (or the proposal's subject), before both, counts as the new membership's.
    """
    if voter not in active or voted_at < since:
        return False
    member = get_member(state, voter)
    return member is None or voted_at >= member.admitted_height


# --- proposing ---


def _new_proposal(
    state: Overlay,
    tx: TxInfo,
    ctx: BlockContext,
    kind: int,
    public_key: bytes = b"",
    name: str = "",
    value: int = 0,
) -> Proposal:
    member = get_member(state, tx.sender)
    # Only members propose (checked first by every proposing handler).
    if member is None:
        raise NodeFault(f"proposer {tx.sender.hex()} is not a member")
    still_open = _open_proposals(state, member, ctx.height)
    # Open proposals are bounded per member, so none can pile up without limit.
    if len(still_open) >= MAX_OPEN_PROPOSALS:
        raise TxFailed(
            f"at most {MAX_OPEN_PROPOSALS} open proposals per member, got {len(still_open)}",
            "too_many_proposals",
        )
    counter = read(state, PROPOSAL_COUNTER_KEY, Counter)
    proposal_id = 1 if counter is None else counter.value
    state.set_obj(
        member_key(tx.sender),
        Member(member.name, member.admitted_height, (*still_open, proposal_id)),
    )
    deadline = ctx.height + ctx.params.proposal_voting_blocks
    proposal = Proposal(
        proposal_id, tx.sender, kind, public_key, name, value, ctx.height, deadline, (), 0
    )
    state.set_obj(PROPOSAL_COUNTER_KEY, Counter(proposal_id + 1))
    state.set_obj(proposal_key(proposal_id), proposal)
    state.emit(
        Event.of(
            "proposal_created",
            proposal_id=proposal_id,
            action=ACTION_NAMES[kind],
            proposer=tx.sender,
            deadline_height=deadline,
        )
    )
    return proposal


def _open_proposals(state: StateView, member: Member, height: int) -> tuple[int, ...]:
    """The member's proposals that can still pass at ``height`` (not passed, not expired)."""
    still_open = []
    for proposal_id in member.open_proposals:
        proposal = get_proposal(state, proposal_id)
        if (
            proposal is not None
            and not proposal.passed_height
            and height <= proposal.deadline_height
        ):
            still_open.append(proposal_id)
    return tuple(still_open)


def _require_member(state: StateView, key: bytes) -> None:
    # Only consortium members may propose.
    if get_member(state, key) is None:
        raise TxFailed(f"{key.hex()} is not a consortium member", "not_member")


def _check_admit(state: StateView, key: bytes, name: str) -> None:
    # Names appear in logs and tools; keep them plain.
    if not MEMBER_NAME_PATTERN.fullmatch(name):
        raise TxFailed(
            f"member name must match [A-Za-z0-9_.-]{{1,64}}, got {name!r}", "invalid_name"
        )
    # A key is a member once.
    if get_member(state, key) is not None:
        raise TxFailed(f"{key.hex()} is already a member", "already_member")
    count = len(members(state))
    # The member list is one state value, so it is bounded.
    if count >= MAX_MEMBERS:
        raise TxFailed(f"at most {MAX_MEMBERS} members, got {count}", "too_many_members")


def _check_remove(state: StateView, key: bytes) -> None:
    # Only a member can be removed.
    if get_member(state, key) is None:
        raise TxFailed(f"{key.hex()} is not a member", "unknown_member")
    count = len(members(state))
    # A consortium without members could never govern itself again.
    if count <= 1:
        raise TxFailed(f"cannot remove the last member, members {count}", "last_member")


def _check_param(state: StateView, name: str, value: int) -> ChainParams:
    """The parameters once every scheduled change and this one apply; TxFailed if invalid."""
    # Only whitelisted parameters are governed (epoch_length is fixed at genesis).
    if name not in GOVERNABLE_PARAMS:
        raise TxFailed(f"parameter {name!r} is not governable", "param_not_governable")
    pending = read(state, PENDING_PARAMS_KEY, PendingParams)
    count = 0 if pending is None else len(pending.changes)
    # The schedule is one state value, so it is bounded.
    if count >= MAX_PENDING_PARAMS:
        raise TxFailed(
            f"at most {MAX_PENDING_PARAMS} scheduled changes, got {count}", "too_many_pending"
        )
    future = _apply_all(state)
    try:
        changed = future.replace(**{name: value})
        check_param_change(future, changed)
    except DecodeError as exc:
        # The parameter set must stay valid once every scheduled change applies.
        raise TxFailed(f"{name} = {value}: {exc.message}", "invalid_param") from None
    return changed


@TX_TYPES.declare(
    PROPOSE_ADMIT_MEMBER,
    ProposeAdmitMember,
    "a member proposes to admit a node key as a member",
    codes=shared(
        "staking_disabled",
        "not_member",
        "invalid_name",
        "already_member",
        "too_many_members",
        "too_many_proposals",
    ),
    events={"proposal_created"},
    reads=_PROPOSE_READS,
    writes=_PROPOSE_WRITES,
)
def apply_propose_admit_member(
    state: Overlay, tx: TxInfo, payload: ProposeAdmitMember, ctx: BlockContext
) -> None:
    require_staking(state)
    _require_member(state, tx.sender)
    _check_admit(state, payload.public_key, payload.name)
    _new_proposal(state, tx, ctx, ADMIT_MEMBER, public_key=payload.public_key, name=payload.name)


@TX_TYPES.declare(
    PROPOSE_REMOVE_MEMBER,
    ProposeRemoveMember,
    "a member proposes to remove a member",
    codes=shared(
        "staking_disabled", "not_member", "unknown_member", "last_member", "too_many_proposals"
    ),
    events={"proposal_created"},
    reads=_PROPOSE_READS,
    writes=_PROPOSE_WRITES,
)
def apply_propose_remove_member(
    state: Overlay, tx: TxInfo, payload: ProposeRemoveMember, ctx: BlockContext
) -> None:
    require_staking(state)
    _require_member(state, tx.sender)
    _check_remove(state, payload.public_key)
    _new_proposal(state, tx, ctx, REMOVE_MEMBER, public_key=payload.public_key)


@TX_TYPES.declare(
    PROPOSE_PARAM_CHANGE,
    ProposeParamChange,
    "a member proposes a new value for a governable chain parameter",
    codes=shared(
        "staking_disabled",
        "not_member",
        "param_not_governable",
        "invalid_param",
        "too_many_pending",
        "too_many_proposals",
    ),
    events={"proposal_created"},
    reads=_PROPOSE_READS,
    writes=_PROPOSE_WRITES,
)
def apply_propose_param_change(
    state: Overlay, tx: TxInfo, payload: ProposeParamChange, ctx: BlockContext
) -> None:
    require_staking(state)
    _require_member(state, tx.sender)
    _check_param(state, payload.name, payload.value)
    _new_proposal(state, tx, ctx, CHANGE_PARAM, name=payload.name, value=payload.value)


def _check_grant(state: StateView, key: bytes, symbol: str, decimals: int) -> None:
    # The issuer role is a member's: it signs with its node key.
    if get_member(state, key) is None:
        raise TxFailed(f"{key.hex()} is not a member", "unknown_member")
    check_grant(state, symbol, decimals, address_of(key), _apply_all(state).max_currencies)


@TX_TYPES.declare(
    PROPOSE_GRANT_ISSUER,
    ProposeGrantIssuer,
    "a member proposes to make a member the issuer of a currency (new, or revoked before)",
    codes={
        **shared("staking_disabled", "not_member", "unknown_member", "too_many_proposals"),
        **currency_codes(
            "invalid_symbol", "invalid_decimals", "currency_exists", "too_many_currencies"
        ),
    },
    events={"proposal_created"},
    reads={*_PROPOSE_READS, KeyPrefix.CURRENCY, KeyPrefix.CURRENCY_LIST},
    writes=_PROPOSE_WRITES,
)
def apply_propose_grant_issuer(
    state: Overlay, tx: TxInfo, payload: ProposeGrantIssuer, ctx: BlockContext
) -> None:
    require_staking(state)
    _require_member(state, tx.sender)
    _check_grant(state, payload.public_key, payload.currency, payload.decimals)
    _new_proposal(
        state,
        tx,
        ctx,
        GRANT_ISSUER,
        public_key=payload.public_key,
        name=payload.currency,
        value=payload.decimals,
    )


@TX_TYPES.declare(
    PROPOSE_REVOKE_ISSUER,
    ProposeRevokeIssuer,
    "a member proposes to revoke the issuer role of a currency (no more mints)",
    codes={
        **shared("staking_disabled", "not_member", "too_many_proposals"),
        **currency_codes("unknown_currency", "currency_revoked"),
    },
    events={"proposal_created"},
    reads={*_PROPOSE_READS, KeyPrefix.CURRENCY},
    writes=_PROPOSE_WRITES,
)
def apply_propose_revoke_issuer(
    state: Overlay, tx: TxInfo, payload: ProposeRevokeIssuer, ctx: BlockContext
) -> None:
    require_staking(state)
    _require_member(state, tx.sender)
    check_revoke(state, payload.currency)
    _new_proposal(state, tx, ctx, REVOKE_ISSUER, name=payload.currency)


# --- voting ---


@TX_TYPES.declare(
    VOTE_PROPOSAL,
    VoteProposal,
    "an active producer approves a proposal; more than 2/3 pass and execute it",
    codes={
        **shared(
            "staking_disabled",
            "invalid_name",
            "already_member",
            "too_many_members",
            "unknown_member",
            "last_member",
            "param_not_governable",
            "invalid_param",
            "too_many_pending",
        ),
        "unknown_proposal": "no such proposal",
        "proposal_closed": "the proposal already passed",
        "proposal_expired": "the proposal's voting period is over",
        "proposer_removed": "the membership that made the proposal ended (removed since)",
        "not_producer": "the voter is not an active producer",
        "already_voted": "the producer already approved the proposal (in this membership)",
        **currency_codes(
            "invalid_symbol",
            "invalid_decimals",
            "currency_exists",
            "too_many_currencies",
            "unknown_currency",
            "currency_revoked",
        ),
    },
    events={
        VOTE_PROPOSAL,
        "member_admitted",
        "member_removed",
        "param_change_scheduled",
        "issuer_granted",
        "issuer_revoked",
    },
    reads={P.PRODUCER_SET},
    writes={
        P.MEMBER,
        P.MEMBER_ADDRESS,
        P.MEMBER_REMOVED,
        P.PROPOSAL,
        P.STAKING_INDEX,
        P.CHAIN_PARAMS,
        KeyPrefix.CURRENCY,
        KeyPrefix.CURRENCY_LIST,
    },
)
def apply_vote_proposal(
    state: Overlay, tx: TxInfo, payload: VoteProposal, ctx: BlockContext
) -> None:
    require_staking(state)
    proposal = get_proposal(state, payload.proposal_id)
    # Votes go to existing proposals.
    if proposal is None:
        raise TxFailed(f"no proposal {payload.proposal_id}", "unknown_proposal")
    # A passed proposal takes no more votes.
    if proposal.passed_height:
        raise TxFailed(
            f"proposal {proposal.id} passed at height {proposal.passed_height}", "proposal_closed"
        )
    # Votes close at the deadline.
    if ctx.height > proposal.deadline_height:
        raise TxFailed(
            f"proposal {proposal.id} closed at height {proposal.deadline_height}, "
            f"this is height {ctx.height}",
            "proposal_expired",
        )
    # A proposal lives as long as the membership that made it (removal drops it, and a
    # member admitted again starts with no proposals).
    if not proposal.is_live(state):
        raise TxFailed(
            f"proposal {proposal.id}: the membership of its proposer "
            f"{proposal.proposer.hex()} that made it ended",
            "proposer_removed",
        )
    active = producers_for_height(state, ctx.height)
    # Only the producers active at this height decide.
    if tx.sender not in active:
        raise TxFailed(f"{tx.sender.hex()} is not an active producer", "not_producer")
    votes = dict(zip(proposal.voters, proposal.voted_at, strict=True))
    previous = votes.get(tx.sender)
    since = approvals_since(state, proposal)
    # One vote per producer and membership, the voter's and the subject's (one from an
    # earlier membership is replaced).
    if previous is not None and vote_counts(state, tx.sender, previous, active, since):
        raise TxFailed(f"{tx.sender.hex()} already voted on {proposal.id}", "already_voted")
    votes[tx.sender] = ctx.height
    voters = tuple(sorted(votes))
    approvals = sum(1 for v in voters if vote_counts(state, v, votes[v], active, since))
    passed = approvals * 3 > len(active) * 2
    if passed:
        _execute(state, proposal, ctx)
    state.set_obj(
        proposal_key(proposal.id),
        Proposal(
            proposal.id,
            proposal.proposer,
            proposal.kind,
            proposal.public_key,
            proposal.name,
            proposal.value,
            proposal.created_height,
            proposal.deadline_height,
            voters,
            ctx.height if passed else 0,
            tuple(votes[v] for v in voters),
        ),
    )
    state.emit(
        Event.of(
            VOTE_PROPOSAL,
            proposal_id=proposal.id,
            voter=tx.sender,
            approvals=approvals,
            producers=len(active),
            passed=int(passed),
        )
    )


def _execute(state: Overlay, proposal: Proposal, ctx: BlockContext) -> None:
    """Carry out a passed proposal; its checks run again against the state of now."""
    key = proposal.public_key
    if proposal.kind == ADMIT_MEMBER:
        _check_admit(state, key, proposal.name)
        state.set_obj(member_key(key), Member(proposal.name, ctx.height))
        state.set_obj(MEMBER_LIST_KEY, KeyList(tuple(sorted((*members(state), key)))))
        state.emit(Event.of("member_admitted", member=key, name=proposal.name))
    elif proposal.kind == REMOVE_MEMBER:
        _check_remove(state, key)
        state.delete(member_key(key))
        # Approvals about this key from before now no longer count (approvals_since).
        state.set_obj(member_removed_key(key), MemberRemoved(ctx.height))
        # Its nodes are no longer dialed: a removed member's address goes with it.
        state.delete(member_address_key(key))
        state.set_obj(MEMBER_LIST_KEY, KeyList(tuple(k for k in members(state) if k != key)))
        # Its candidacy leaves the list unless it still produces (its record stays).
        prune_candidates(state, ctx.height)
        state.emit(Event.of("member_removed", member=key))
        # The issuer role is a member's: a removed member issues nothing more.
        revoke_all_of(state, address_of(key))
    elif proposal.kind == GRANT_ISSUER:
        _check_grant(state, key, proposal.name, proposal.value)
        grant_issuer(state, proposal.name, proposal.value, address_of(key), ctx)
    elif proposal.kind == REVOKE_ISSUER:
        revoke_issuer(state, proposal.name)
    else:
        _check_param(state, proposal.name, proposal.value)
        effective = ctx.height + ctx.params.param_change_delay_blocks
        change = PendingParam(effective, proposal.id, proposal.name, proposal.value)
        pending = read(state, PENDING_PARAMS_KEY, PendingParams)
        changes = () if pending is None else pending.changes
        # After every change already due at or before its height: it was checked against
        # the schedule with those applied first (``_check_param``), so it applies after
        # them, whatever its id. Ordered by id, a change passed later with a lower id
        # went first, and was skipped when it relied on one passed before it.
        at = sum(1 for c in changes if c.effective_height <= effective)
        state.set_obj(PENDING_PARAMS_KEY, PendingParams((*changes[:at], change, *changes[at:])))
        state.emit(
            Event.of(
                "param_change_scheduled",
                name=proposal.name,
                value=proposal.value,
                effective_height=effective,
            )
        )


# --- parameters in force ---


def check_param_change(before: ChainParams, after: ChainParams) -> None:
    """Raise ``DecodeError`` unless governance may change ``before`` into ``after``.

    ``after`` must be valid (``check_staking_params``, as genesis must be), and the
    change must not take away what only a change could (docs/staking.md, "Parameter
    bounds"): genesis may choose any valid set, a devnet's single producer included.
    """
    check_staking_params(after)
    # A set of three or fewer tolerates no fault: one producer offline halts it for
    # good (no block, so no missed-slot jailing and no vote to undo the change).
    least = min(MIN_FAULT_TOLERANT_PRODUCERS, before.max_producers)
    if after.max_producers < least:
        raise DecodeError(
            f"max_producers may not be lowered below {least} (a smaller set tolerates "
            f"no fault), got {after.max_producers}"
        )
    # A producer offline for a whole epoch must be jailed in it (its misses restart with
    # each epoch), or dead producers stay in the set and their crashes add up to a halt.
    # A change may raise neither limit past that; one that only lowers them, or leaves
    # them be, passes on a chain whose genesis chose otherwise (a devnet's short epochs).
    raises = (
        after.max_missed_slots > before.max_missed_slots
        or after.max_producers > before.max_producers
    )
    if not raises:
        return
    charge = least_epoch_charge(after)
    if charge is not None and after.max_missed_slots >= charge:
        raise DecodeError(
            f"max_missed_slots must be below {charge}, the fewest misses charged in an "
            f"epoch of {after.epoch_length} blocks to a producer offline in a set of "
            f"{MIN_FAULT_TOLERANT_PRODUCERS}..{after.max_producers}, got {after.max_missed_slots}"
        )


def apply_pending(
    params: ChainParams, changes: Sequence[PendingParam], height: int
) -> tuple[ChainParams, list[PendingParam], list[PendingParam], tuple[PendingParam, ...]]:
    """Apply the changes due at or before ``height``, in order.

    Returns (parameters, applied, skipped, still pending). A change that would
    make the set invalid (possible only when the delay itself was changed and
    changes landed out of order) is skipped, deterministically.
    """
    applied: list[PendingParam] = []
    skipped: list[PendingParam] = []
    remaining = []
    for change in changes:
        if change.effective_height > height:
            remaining.append(change)
            continue
        if change.name not in GOVERNABLE_PARAMS:
            skipped.append(change)
            continue
        try:
            candidate = params.replace(**{change.name: change.value})
            check_param_change(params, candidate)
        except DecodeError:
            skipped.append(change)
            continue
        params = candidate
        applied.append(change)
    return params, applied, skipped, tuple(remaining)


def _apply_all(state: StateView) -> ChainParams:
    """The active parameters with every scheduled change applied."""
    pending = read(state, PENDING_PARAMS_KEY, PendingParams)
    params = active_params(state)
    if pending is None:
        return params
    return apply_pending(params, pending.changes, 2**64 - 1)[0]


def params_for_height(
    state: StateView, height: int, default: ChainParams | None = None
) -> ChainParams:
    """The parameters block ``height`` executes with, from the state before it.

    The node passes these as ``BlockContext.params`` (and uses them for the
    mempool's limits); the begin-block hook of ``height`` stores the same set
    as the active one. On a chain without staking (no parameters in state)
    ``default`` is returned, normally the genesis parameters.
    """
    if default is not None and not staking_enabled(state):
        return default
    pending = read(state, PENDING_PARAMS_KEY, PendingParams)
    params = active_params(state)
    if pending is None:
        return params
    return apply_pending(params, pending.changes, height)[0]


def apply_param_changes(state: Overlay, ctx: BlockContext) -> None:
    """Begin-block hook: write the changes due at this height into the active parameters."""
    if not staking_enabled(state):
        return
    pending = read(state, PENDING_PARAMS_KEY, PendingParams)
    if pending is None or pending.changes[0].effective_height > ctx.height:
        return
    params, applied, skipped, remaining = apply_pending(
        active_params(state), pending.changes, ctx.height
    )
    state.set_obj(ACTIVE_PARAMS_KEY, params)
    if remaining:
        state.set_obj(PENDING_PARAMS_KEY, PendingParams(remaining))
    else:
        state.delete(PENDING_PARAMS_KEY)
    for change in applied:
        state.emit(Event.of("param_changed", name=change.name, value=change.value))
    for change in skipped:
        state.emit(Event.of("param_change_skipped", name=change.name, value=change.value))
