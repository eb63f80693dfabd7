"""Double-sign evidence as a transaction: anyone submits, the offender is slashed and jailed.

Evidence is two signed votes by one validator for one (height, round, type)
naming different blocks (a nil vote and a block vote conflict too). The
offence, not the pair, is recorded, so it is punished exactly once whichever
pair (or order) is submitted. Slashed tokens go to the community pool: the
supply is unchanged and the burn is tracked in ``Totals.slashed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.codes import shared
from consensus.prefixes import ConsensusPrefix as P
from consensus.staking_state import (
    BONDED_POOL,
    BPS,
    COMMUNITY_POOL,
    UNBONDING_POOL,
    Candidate,
    EvidenceRecord,
    Staker,
    Unbonding,
    add_totals,
    adjust_weights,
    candidate_key,
    epoch_of,
    evidence_key,
    get_staker,
    producer_set,
    put_staker,
    read,
    require_staking,
)
from core.codec import Wire
from core.errors import NodeFault
from core.keys import SignDomain, address_of, is_valid_signature
from core.types import Vote, vote_signing_body
from vm.accounts import move_tokens
from vm.context import BlockContext
from vm.prefixes import KeyPrefix
from vm.receipts import Event
from vm.registry import TxClass, TxFailed, TxInfo, TxTable
from vm.state import Overlay

SUBMIT_EVIDENCE = "submit_evidence"
TX_TYPES = TxTable(TxClass.CONSENSUS)


@dataclass(frozen=True, slots=True)
class SubmitEvidence(Wire):
    vote_a: Vote
    vote_b: Vote

    MAX_ENCODED = 600


def _signature_ok(vote: Vote, chain_id: str) -> bool:
    body = vote_signing_body(vote.type, vote.height, vote.round, vote.block_hash)
    return is_valid_signature(vote.validator, SignDomain.VOTE, chain_id, body, vote.signature)


@TX_TYPES.declare(
    SUBMIT_EVIDENCE,
    SubmitEvidence,
    "two conflicting votes of one producer: it is slashed and jailed",
    codes={
        **shared("staking_disabled"),
        "invalid_evidence": "two votes that are not a double signature",
        "future_evidence": "evidence for a height not below the including block",
        "evidence_too_old": "evidence older than `max_evidence_age_blocks`",
        "duplicate_evidence": "the offence was already punished",
        "not_a_producer": "the signer was not a producer at that height",
        "bad_evidence_signature": "a vote's signature does not verify for this chain",
    },
    events={"double_sign"},
    reads={P.PRODUCER_SET, P.CHAIN_PARAMS},
    writes={KeyPrefix.ACCOUNT, P.CANDIDATE, P.STAKER, P.EVIDENCE, P.STAKING_INDEX},
    view="Candidate",
)
def apply_submit_evidence(
    state: Overlay, tx: TxInfo, payload: SubmitEvidence, ctx: BlockContext
) -> None:
    a, b = payload.vote_a, payload.vote_b
    require_staking(state)
    # Evidence is about one validator.
    if a.validator != b.validator:
        raise TxFailed(
            f"votes are by {a.validator.hex()} and {b.validator.hex()}, expected one validator",
            "invalid_evidence",
        )
    # Only two votes for the same step conflict.
    if (a.height, a.round, a.type) != (b.height, b.round, b.type):
        raise TxFailed(
            f"votes are for (height, round, type) {(a.height, a.round, a.type)} and "
            f"{(b.height, b.round, b.type)}, expected the same",
            "invalid_evidence",
        )
    # Two votes for the same block are no offence.
    if a.block_hash == b.block_hash:
        raise TxFailed(
            f"both votes are for block {a.block_hash.hex() or 'nil'}, expected different blocks",
            "invalid_evidence",
        )
    # Blocks start at height 1.
    if a.height < 1:
        raise TxFailed(f"vote height must be at least 1, got {a.height}", "invalid_evidence")
    # Only past heights: the producers of a later one may not be known yet.
    if a.height >= ctx.height:
        raise TxFailed(
            f"vote height {a.height}, expected below the including height {ctx.height}",
            "future_evidence",
        )
    age = ctx.height - a.height
    # Older evidence could outlive the unbonding stake it must reach.
    if age > ctx.params.max_evidence_age_blocks:
        raise TxFailed(
            f"evidence is {age} blocks old, at most {ctx.params.max_evidence_age_blocks} accepted",
            "evidence_too_old",
        )
    ekey = evidence_key(a.validator, a.height, a.round, a.type)
    # One offence is punished once, whichever conflicting pair shows it.
    if read(state, ekey, EvidenceRecord) is not None:
        raise TxFailed(
            f"offence of {a.validator.hex()} at height {a.height} round {a.round} "
            "was already punished",
            "duplicate_evidence",
        )
    record = producer_set(state, epoch_of(a.height, ctx.params.epoch_length))
    # Sets older than the evidence age are dropped (``drop_old_producer_sets``); one
    # dropped before governance raised the age stays dropped.
    if record is None:
        raise TxFailed(
            f"the producers of height {a.height} are no longer kept, so its evidence is too old",
            "evidence_too_old",
        )
    # Only a producer of that height could sign a vote that counts.
    if a.validator not in record.keys:
        raise TxFailed(
            f"{a.validator.hex()} was not a producer at height {a.height}", "not_a_producer"
        )
    for vote in (a, b):
        # Both votes must really be signed by the validator, for this chain.
        if not _signature_ok(vote, ctx.chain_id):
            raise TxFailed(
                f"vote for block {vote.block_hash.hex() or 'nil'} has a bad signature "
                f"for chain {ctx.chain_id!r}",
                "bad_evidence_signature",
            )
    slashed = slash(state, a.validator, ctx.params.slash_bps)
    jailed_until = jail(state, a.validator, ctx.height + ctx.params.jail_blocks)
    state.set_obj(ekey, EvidenceRecord(ctx.height, slashed))
    state.emit(
        Event.of(
            "double_sign",
            validator=a.validator,
            height=a.height,
            round=a.round,
            vote_type=a.type,
            slashed=slashed,
            jailed_until=jailed_until,
            reporter=tx.sender_address,
        )
    )


def slash_amount(amount: int, bps: int) -> int:
    """``bps``/10000 of ``amount``, rounded up: anything held loses at least 1 (bps >= 1).

    Rounding down let a small bond (the default ``min_self_bond`` is 1) lose
    nothing; rounding up never takes more than ``amount`` because bps <= 10000.
    """
    return -(-amount * bps // BPS)


def slash(state: Overlay, validator: bytes, bps: int) -> int:
    """Take ``bps``/10000 (rounded up) of the validator's bond and of each pending unbonding.

    Only the validator's own account is slashed, not the stakers who voted for
    it. Returns the total taken, which goes to the community pool; it is
    positive whenever the validator holds any bond or unbonding stake, since
    ``check_staking_params`` keeps ``slash_bps`` at 1 or more.
    """
    address = address_of(validator)
    staker = get_staker(state, address)
    bond_cut = slash_amount(staker.bonded, bps)
    entries = []
    unbonding_cut = 0
    for u in staker.unbonding:
        cut = slash_amount(u.amount, bps)
        unbonding_cut += cut
        # Kept when slashed to 0: the release queue of its height is linked through it.
        entries.append(Unbonding(u.amount - cut, u.release_height, u.next))
    move_tokens(state, BONDED_POOL, COMMUNITY_POOL, bond_cut, checked=True)
    move_tokens(state, UNBONDING_POOL, COMMUNITY_POOL, unbonding_cut, checked=True)
    put_staker(state, address, Staker(staker.bonded - bond_cut, staker.votes, tuple(entries)))
    adjust_weights(state, staker.votes, -bond_cut)
    add_totals(state, bonded=-bond_cut, unbonding=-unbonding_cut, slashed=bond_cut + unbonding_cut)
    return bond_cut + unbonding_cut


def jail(state: Overlay, validator: bytes, until: int) -> int:
    """Jail a candidate until at least ``until``; returns the height it may unjail at."""
    ckey = candidate_key(validator)
    cand = state.get_obj(ckey, Candidate)
    # Producers are elected from candidates, and candidacies are never deleted.
    if cand is None:
        raise NodeFault(f"producer {validator.hex()} has no candidate record")
    until = max(until, cand.jailed_until)
    state.set_obj(
        ckey,
        Candidate(
            cand.registered_height,
            cand.weight,
            True,
            until,
            cand.missed_epoch,
            cand.missed_by,
            cand.withheld_by,
        ),
    )
    return until
