"""Staking transactions: register as a candidate, bond, unbond, vote, unjail, and a
member's network address.

Handlers are plain functions of (state, tx, payload, block context), as the vm
wants them; every check is one line with its reason. ``register_staking`` adds
these, governance and evidence to a registry with the begin-block hooks that
apply parameter changes, pay out unbonded stake, count missed slots and elect
producers. Rules: docs/staking.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from consensus import evidence, governance
from consensus.codes import shared
from consensus.election import elect_producers, missed_slots_hook
from consensus.governance import apply_param_changes
from consensus.prefixes import ConsensusPrefix as P
from consensus.staking_state import (
    BONDED_POOL,
    CANDIDATE_LIST_KEY,
    MAX_CANDIDATES,
    MAX_RELEASES_PER_HEIGHT,
    MAX_UNBONDING_ENTRIES,
    MAX_VOTES,
    MODULE_ACCOUNT_NAMES,
    UNBONDING_POOL,
    Candidate,
    KeyList,
    MemberAddress,
    ReleaseQueue,
    Staker,
    Unbonding,
    add_totals,
    adjust_weights,
    candidate_key,
    candidates,
    get_candidate,
    get_member,
    get_staker,
    member_address_key,
    put_staker,
    queue_key,
    read,
    require_staking,
    slashable_until,
    staking_enabled,
)
from core.codec import MaxItems, MaxLen, Wire
from core.errors import NodeFault
from core.netaddr import MAX_NET_ADDRESS, InvalidNetAddress, check_dialable
from core.types import PublicKey
from vm.accounts import get_account, move_tokens
from vm.amounts import checked_add
from vm.context import BlockContext
from vm.prefixes import KeyPrefix
from vm.receipts import MAX_ATTR_VALUE, Event
from vm.registry import Registry, TxClass, TxFailed, TxInfo, TxTable, TxType
from vm.state import Overlay

REGISTER_CANDIDATE = "register_candidate"
BOND = "bond"
UNBOND = "unbond"
VOTE_PRODUCERS = "vote_producers"
UNJAIL = "unjail"
SET_MEMBER_ADDRESS = "set_member_address"

# The chain's own upkeep goes before commerce and transfers (with fair shares).
TX_TYPES = TxTable(TxClass.CONSENSUS)


@dataclass(frozen=True, slots=True)
class RegisterCandidate(Wire):
    """Stand for election with the sender's node key (the sender must be a member)."""

    MAX_ENCODED = 8


@dataclass(frozen=True, slots=True)
class Bond(Wire):
    amount: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class Unbond(Wire):
    amount: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class VoteProducers(Wire):
    """The sender's whole approval ballot (replaces the previous one); keys ascending."""

    candidates: Annotated[tuple[PublicKey, ...], MaxItems(MAX_VOTES)]

    MAX_ENCODED = MAX_VOTES * 34 + 16


@dataclass(frozen=True, slots=True)
class Unjail(Wire):
    """Leave jail after ``jailed_until`` (the sender's own candidacy)."""

    MAX_ENCODED = 8


@dataclass(frozen=True, slots=True)
class SetMemberAddress(Wire):
    """Where the sender's node listens for peers, ``host:port``: replaces what it set before."""

    address: Annotated[str, MaxLen(MAX_NET_ADDRESS)]

    MAX_ENCODED = MAX_NET_ADDRESS + 8


@TX_TYPES.declare(
    REGISTER_CANDIDATE,
    RegisterCandidate,
    "the sender's node key stands for election (weight 0, or its kept record)",
    codes={
        **shared("staking_disabled", "not_member"),
        "already_candidate": "the node key is already on the candidate list",
        "too_many_candidates": "the candidate list is full",
    },
    events={REGISTER_CANDIDATE},
    reads={P.MEMBER, P.CHAIN_PARAMS},
    writes={P.CANDIDATE, P.STAKING_INDEX},
    view="Candidate",
)
def apply_register_candidate(
    state: Overlay, tx: TxInfo, payload: RegisterCandidate, ctx: BlockContext
) -> None:
    key = tx.sender
    require_staking(state)
    # Only consortium members may stand for election.
    if get_member(state, key) is None:
        raise TxFailed(f"{key.hex()} is not a consortium member", "not_member")
    keys = candidates(state)
    # A key stands once at a time (a removed member's candidacy may be taken up again).
    if key in keys:
        raise TxFailed(f"{key.hex()} is already a candidate", "already_candidate")
    # The candidate list is one state value, so it is bounded.
    if len(keys) >= MAX_CANDIDATES:
        raise TxFailed(
            f"at most {MAX_CANDIDATES} candidates, got {len(keys)}", "too_many_candidates"
        )
    # A record kept from an earlier membership comes back as it was: the tally the
    # ballots naming it add up to, and its jail.
    if get_candidate(state, key) is None:
        state.set_obj(candidate_key(key), Candidate(ctx.height, 0, False, 0, 0, ()))
    state.set_obj(CANDIDATE_LIST_KEY, KeyList(tuple(sorted((*keys, key)))))
    state.emit(Event.of(REGISTER_CANDIDATE, candidate=key))


@TX_TYPES.declare(
    BOND,
    Bond,
    "balance to the bonded pool; the bond and the tallies of its ballot grow",
    codes={
        **shared("staking_disabled", "invalid_amount", "u64_overflow"),
        "insufficient_funds": "balance after the fee below the amount",
    },
    events={BOND},
    reads={P.CHAIN_PARAMS},
    writes={KeyPrefix.ACCOUNT, P.CANDIDATE, P.STAKER, P.STAKING_INDEX},
    view="Candidate",
)
def apply_bond(state: Overlay, tx: TxInfo, payload: Bond, ctx: BlockContext) -> None:
    amount = payload.amount
    require_staking(state)
    # Bonding nothing would only add noise.
    if amount <= 0:
        raise TxFailed(f"amount must be positive, got {amount}", "invalid_amount")
    balance = get_account(state, tx.sender_address).balance
    # The fee is already paid, so the amount must come out of what is left.
    if balance < amount:
        raise TxFailed(f"balance {balance} is less than the amount {amount}", "insufficient_funds")
    staker = get_staker(state, tx.sender_address)
    bonded = checked_add(staker.bonded, amount, "bond")
    move_tokens(state, tx.sender_address, BONDED_POOL, amount, checked=True)
    put_staker(state, tx.sender_address, Staker(bonded, staker.votes, staker.unbonding))
    adjust_weights(state, staker.votes, amount)
    add_totals(state, bonded=amount)
    state.emit(Event.of(BOND, staker=tx.sender_address, amount=amount, bonded=bonded))


@TX_TYPES.declare(
    UNBOND,
    Unbond,
    "bonded to unbonding pool, paid back after `unbonding_blocks`; tallies shrink at once",
    codes={
        **shared("staking_disabled", "invalid_amount", "u64_overflow"),
        "insufficient_bond": "unbonding more than is bonded",
        "too_many_unbonding": "the staker has the most pending unbonding entries",
        "release_queue_full": "too many releases due at that height",
    },
    events={UNBOND},
    reads={P.CHAIN_PARAMS},
    writes={KeyPrefix.ACCOUNT, P.CANDIDATE, P.STAKER, P.UNBONDING_QUEUE, P.STAKING_INDEX},
    view="Candidate",
)
def apply_unbond(state: Overlay, tx: TxInfo, payload: Unbond, ctx: BlockContext) -> None:
    amount = payload.amount
    require_staking(state)
    # Unbonding nothing would only add noise.
    if amount <= 0:
        raise TxFailed(f"amount must be positive, got {amount}", "invalid_amount")
    staker = get_staker(state, tx.sender_address)
    # Only bonded tokens can be unbonded.
    if staker.bonded < amount:
        raise TxFailed(
            f"bonded {staker.bonded} is less than the amount {amount}", "insufficient_bond"
        )
    release = ctx.height + ctx.params.unbonding_blocks
    entries = list(staker.unbonding)
    at = next((i for i, u in enumerate(entries) if u.release_height == release), None)
    if at is not None:
        # Already queued for that height: the entry grows, the queue does not.
        u = entries[at]
        entries[at] = Unbonding(checked_add(u.amount, amount, "unbonding"), release, u.next)
    else:
        # Pending unbondings of one staker are bounded (one state value).
        if len(entries) >= MAX_UNBONDING_ENTRIES:
            raise TxFailed(
                f"at most {MAX_UNBONDING_ENTRIES} pending unbondings, got {len(entries)}",
                "too_many_unbonding",
            )
        qkey = queue_key(release)
        queue = read(state, qkey, ReleaseQueue)
        count = 0 if queue is None else queue.count
        # One height's releases run in one begin-block, so they are bounded.
        if count >= MAX_RELEASES_PER_HEIGHT:
            raise TxFailed(
                f"at most {MAX_RELEASES_PER_HEIGHT} releases at height {release}, got {count}",
                "release_queue_full",
            )
        entries.append(Unbonding(amount, release, None if queue is None else queue.first))
        state.set_obj(qkey, ReleaseQueue(tx.sender_address, count + 1))
    move_tokens(state, BONDED_POOL, UNBONDING_POOL, amount, checked=True)
    put_staker(
        state, tx.sender_address, Staker(staker.bonded - amount, staker.votes, tuple(entries))
    )
    adjust_weights(state, staker.votes, -amount)
    add_totals(state, bonded=-amount, unbonding=amount)
    state.emit(
        Event.of(
            UNBOND,
            staker=tx.sender_address,
            amount=amount,
            bonded=staker.bonded - amount,
            release_height=release,
        )
    )


@TX_TYPES.declare(
    VOTE_PRODUCERS,
    VoteProducers,
    "replace the sender's ballot; the whole bond counts for each candidate on it",
    codes={
        **shared("staking_disabled"),
        "invalid_votes": "a ballot not in strictly ascending order",
        "too_many_votes": "a ballot over `max_votes`",
        "unknown_candidate": "a ballot names a key that is not a candidate",
        "no_stake": "a non-empty ballot without a bond",
    },
    events={VOTE_PRODUCERS},
    reads={P.CHAIN_PARAMS},
    writes={P.CANDIDATE, P.STAKER},
    view="Candidate",
)
def apply_vote_producers(
    state: Overlay, tx: TxInfo, payload: VoteProducers, ctx: BlockContext
) -> None:
    votes = payload.candidates
    require_staking(state)
    # One ballot has one encoding: keys strictly ascending, so no duplicates either.
    if list(votes) != sorted(set(votes)):
        raise TxFailed("candidates must be unique and in ascending order", "invalid_votes")
    # K bounds how many candidates one bond counts for.
    if len(votes) > ctx.params.max_votes:
        raise TxFailed(
            f"at most {ctx.params.max_votes} candidates per ballot, got {len(votes)}",
            "too_many_votes",
        )
    for key in votes:
        # Votes go only to registered candidates (their tallies must exist).
        if get_candidate(state, key) is None:
            raise TxFailed(f"{key.hex()} is not a candidate", "unknown_candidate")
    staker = get_staker(state, tx.sender_address)
    # A ballot without a bond would weigh nothing; clearing one is always allowed.
    if votes and staker.bonded == 0:
        raise TxFailed("bonded 0, expected a bond before voting", "no_stake")
    adjust_weights(state, staker.votes, -staker.bonded)
    adjust_weights(state, votes, staker.bonded)
    put_staker(state, tx.sender_address, Staker(staker.bonded, votes, staker.unbonding))
    state.emit(
        Event.of(VOTE_PRODUCERS, staker=tx.sender_address, count=len(votes), weight=staker.bonded)
    )


@TX_TYPES.declare(
    UNJAIL,
    Unjail,
    "a jailed candidate that served its time leaves jail; its missed counts restart",
    codes={
        **shared("staking_disabled"),
        "not_candidate": "unjail from a key that is not a candidate",
        "not_jailed": "unjail of a candidate that is not jailed",
        "still_jailed": "unjail before `jailed_until`",
    },
    events={UNJAIL},
    reads={P.CHAIN_PARAMS},
    writes={P.CANDIDATE},
    view="Candidate",
)
def apply_unjail(state: Overlay, tx: TxInfo, payload: Unjail, ctx: BlockContext) -> None:
    key = tx.sender
    require_staking(state)
    cand = get_candidate(state, key)
    # Only a candidate can be jailed.
    if cand is None:
        raise TxFailed(f"{key.hex()} is not a candidate", "not_candidate")
    # There is nothing to undo.
    if not cand.jailed:
        raise TxFailed(f"{key.hex()} is not jailed", "not_jailed")
    # The jail period must be served first.
    if ctx.height < cand.jailed_until:
        raise TxFailed(
            f"jailed until height {cand.jailed_until}, this is height {ctx.height}",
            "still_jailed",
        )
    # The missed-slot count restarts, or the next miss would jail it again at once.
    freed = Candidate(cand.registered_height, cand.weight, False, 0, cand.missed_epoch, ())
    state.set_obj(candidate_key(key), freed)
    state.emit(Event.of(UNJAIL, candidate=key))


@TX_TYPES.declare(
    SET_MEMBER_ADDRESS,
    SetMemberAddress,
    "a member publishes where its node listens (host:port); other nodes dial it",
    codes={
        **shared("staking_disabled", "not_member"),
        "invalid_address": "not host:port, a listen-on-all host (0.0.0.0, ::), or too long",
    },
    events={SET_MEMBER_ADDRESS},
    reads={P.MEMBER, P.CHAIN_PARAMS},
    writes={P.MEMBER_ADDRESS},
    view="Member",
)
def apply_set_member_address(
    state: Overlay, tx: TxInfo, payload: SetMemberAddress, ctx: BlockContext
) -> None:
    key = tx.sender
    require_staking(state)
    # Only members' nodes are dialed; the record goes when the member does.
    if get_member(state, key) is None:
        raise TxFailed(f"{key.hex()} is not a consortium member", "not_member")
    try:
        # Every node dials it: one strict spelling, and never "any interface".
        check_dialable(payload.address)
    except InvalidNetAddress as exc:
        raise TxFailed(exc.message, "invalid_address") from None
    # The event carries it, and an event value holds at most MAX_ATTR_VALUE bytes (ASCII here).
    if len(payload.address) > MAX_ATTR_VALUE:
        raise TxFailed(
            f"network address must be at most {MAX_ATTR_VALUE} bytes, got {len(payload.address)}",
            "invalid_address",
        )
    # One address per member: the new one replaces the old.
    state.set_obj(member_address_key(key), MemberAddress(payload.address))
    state.emit(Event.of(SET_MEMBER_ADDRESS, member=key, address=payload.address))


def release_unbonded(state: Overlay, ctx: BlockContext) -> None:
    """Begin-block hook: pay out the unbonding entries due at this height.

    An entry of a producer's own account is not paid while that producer can still
    be slashed (``slashable_until``: its last elected or carried-over epoch plus the
    evidence age): it moves to the first height after that (``_hold``), where this
    hook checks it again. A producer that unbonds and keeps producing, because it is
    re-elected or an election failed and carried its set over, is thus never left
    with nothing to slash (docs/staking.md, Accountability). Only the producer's own
    account is held, the one evidence slashes; its voters' stake is not.

    Work: the entries due at this height (``ReleaseQueue.count``), each one state
    read more than a plain release (its term) and, when held, the queue record of
    its new height read and written; no other entry is looked at.
    """
    if not staking_enabled(state):
        return
    qkey = queue_key(ctx.height)
    queue = read(state, qkey, ReleaseQueue)
    if queue is None:
        return
    address: bytes | None = queue.first
    for _ in range(queue.count):
        if address is None:
            raise NodeFault(f"release queue of height {ctx.height} ends before {queue.count}")
        staker = get_staker(state, address)
        entry = next((u for u in staker.unbonding if u.release_height == ctx.height), None)
        if entry is None:
            raise NodeFault(f"{address.hex()} is queued at {ctx.height} without an entry")
        rest = tuple(u for u in staker.unbonding if u.release_height != ctx.height)
        held_until = slashable_until(state, address, ctx.params)
        # Slashing may have taken all of it (the entry stays, to keep the list linked).
        if entry.amount and ctx.height <= held_until:
            rest = _hold(state, address, rest, entry.amount, held_until + 1)
            state.emit(
                Event.of(
                    "unbonding_held",
                    staker=address,
                    amount=entry.amount,
                    release_height=held_until + 1,
                )
            )
        elif entry.amount:
            move_tokens(state, UNBONDING_POOL, address, entry.amount, checked=True)
            add_totals(state, unbonding=-entry.amount)
            state.emit(Event.of("unbonded", staker=address, amount=entry.amount))
        put_staker(state, address, Staker(staker.bonded, staker.votes, rest))
        address = entry.next
    if address is not None:
        raise NodeFault(f"release queue of height {ctx.height} is longer than {queue.count}")
    state.delete(qkey)


def _hold(
    state: Overlay, address: bytes, entries: tuple[Unbonding, ...], amount: int, release: int
) -> tuple[Unbonding, ...]:
    """``entries`` with ``amount`` moved to the staker's entry released at ``release``.

    The entry being paid has just left ``entries``, so the staker never has more
    entries than before (``MAX_UNBONDING_ENTRIES`` holds). A new entry goes to the
    head of that height's queue without the ``MAX_RELEASES_PER_HEIGHT`` check: it
    cannot be refused (the tokens would have nowhere to go), and the held entries
    of one height are at most one per producer of the epochs whose hold ends there
    (one epoch, ``MAX_VALIDATORS`` producers, unless governance changed the evidence
    age in between). No u64 check: a staker's entries sum to less than the supply.
    """
    out = list(entries)
    at = next((i for i, u in enumerate(out) if u.release_height == release), None)
    if at is not None:
        u = out[at]
        out[at] = Unbonding(u.amount + amount, release, u.next)
        return tuple(out)
    qkey = queue_key(release)
    queue = read(state, qkey, ReleaseQueue)
    out.append(Unbonding(amount, release, None if queue is None else queue.first))
    state.set_obj(qkey, ReleaseQueue(address, 1 if queue is None else queue.count + 1))
    return tuple(out)


# Every consensus transaction type: staking, evidence, governance (in registration order).
CONSENSUS_TX_TYPES: tuple[TxType, ...] = (*TX_TYPES, *evidence.TX_TYPES, *governance.TX_TYPES)


def register_staking(registry: Registry) -> None:
    """Add the staking, evidence and governance transactions and their begin-block hooks.

    Hook order matters and is part of the protocol: parameter changes first
    (so later hooks and the block's transactions see one parameter set), then
    missed slots (so a producer jailed for them is left out of an election in the
    same block), the election, and then unbonding releases: a producer elected in
    this block is held to its new term (a release before the election paid out the
    unbonding of one elected for the next epoch in that very block). The three
    staking pools are registered as module accounts, so no transfer can pay into them.
    """
    for decl in CONSENSUS_TX_TYPES:
        registry.register(decl)
    registry.add_begin_block(apply_param_changes)
    registry.add_begin_block(missed_slots_hook)
    registry.add_begin_block(elect_producers)
    registry.add_begin_block(release_unbonded)
    for address, name in MODULE_ACCOUNT_NAMES.items():
        registry.add_module_account(address, name)
