"""Producer election at epoch boundaries, and missed-slot jailing.

The begin-block hook of the last block of epoch ``e`` (height ``(e+1) * E``)
ranks the eligible candidates and stores the top ``max_producers`` as the
producers of epoch ``e + 1``. The set is therefore in the state root of a
block finalized by the outgoing producers, one block before it takes over. A
set stays in state while evidence may still name its epoch's heights
(``drop_old_producer_sets``); an offline audit that re-executes the chain
re-derives each one, and each epoch's boundary state proves it for good.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from consensus.staking_state import (
    MIN_FAULT_TOLERANT_PRODUCERS,
    Candidate,
    ProducerSet,
    active_params,
    candidate_key,
    candidates,
    drop_old_producer_sets,
    epoch_of,
    get_candidate,
    is_election_height,
    is_member,
    producer_set,
    producers_for_height,
    prune_candidates,
    self_bond,
    staking_enabled,
    store_producer_set,
)
from consensus.validators import ValidatorSet
from core.errors import NodeFault
from core.keys import address_of
from core.types import MAX_VALIDATORS
from vm.context import BlockContext
from vm.params import ChainParams
from vm.receipts import Event
from vm.state import Overlay, StateView


def rank_candidates(state: StateView, params: ChainParams) -> list[tuple[bytes, int]]:
    """Eligible candidates as (key, weight), best first; ties go to the lower key.

    Eligible: still a member, not jailed, self-bond at least ``min_self_bond``
    and some approval (weight above 0).
    """
    ranked = []
    for key in candidates(state):
        cand = get_candidate(state, key)
        if cand is None:
            raise NodeFault(f"candidate list names {key.hex()}, which has no record")
        if cand.jailed or cand.weight == 0 or not is_member(state, key):
            continue
        if self_bond(state, key) < params.min_self_bond:
            continue
        ranked.append((key, cand.weight))
    ranked.sort(key=lambda kw: (-kw[1], kw[0]))
    return ranked


# Producers not in the outgoing set that an election may take in. It was the faults
# the set tolerates, ``(n - 1) // 3``: dormant together, with their keys adjacent in
# the schedule (their owners choose them), each was charged too few misses to be
# jailed (six of 21: 9 an epoch of 100, under the default 20; none from 22 up), so
# stake filled a third of a large set in two elections (docs/staking.md, Missed
# slots). One dormant newcomer is charged at least ``least_epoch_charge``, which
# governance keeps above ``max_missed_slots``: jailed within its first epoch, and left
# out by the next election. A set therefore grows or changes by one producer an epoch.
NEWCOMERS_PER_ELECTION = 1


def elect(
    state: StateView, params: ChainParams, outgoing: Collection[bytes] = ()
) -> list[tuple[bytes, int]]:
    """The top ``max_producers`` eligible candidates (possibly none), best first, with
    at most ``NEWCOMERS_PER_ELECTION`` of them not in ``outgoing``: each newcomer over it,
    lowest ranked first, gives its place to the best outgoing producer left out, if
    any.

    Nothing asks whether a newcomer's node runs. Stake can elect members that
    registered, bonded and went dormant, and with a third of the set theirs, the set
    never reaches a quorum: no block comes, so the missed-slot jailing that would
    remove them (it needs blocks) never runs, and the chain stops for good. With
    one newcomer an election, the outgoing producers, who just made blocks, keep a
    quorum from four producers up: a newcomer dormant from its first block is
    jailed within the epoch (when ``max_missed_slots`` is below
    ``least_epoch_charge``, which governance keeps it). It does not stop stake for
    good: a member that runs a while, then stops, stays in the set, and a whale can
    bring such members in one an election; that gives the members the epochs to
    remove them by governance (their producers still hold a quorum) where one
    election used to end the chain. A set
    under four tolerates no fault, and still takes one newcomer (so that it can
    grow or change by votes): one dormant newcomer stops it, as any producer's
    crash does. When no outgoing producer is eligible there is no quorum to keep,
    and the top ``max_producers`` win.
    """
    ranked = rank_candidates(state, params)
    size = min(params.max_producers, MAX_VALIDATORS)
    chosen, rest = ranked[:size], ranked[size:]
    if not any(key in outgoing for key, _ in ranked):
        return chosen
    while True:
        new = [kw for kw in chosen if kw[0] not in outgoing]
        if len(new) <= NEWCOMERS_PER_ELECTION:
            return chosen
        chosen.remove(new[-1])
        back = next((kw for kw in rest if kw[0] in outgoing), None)
        if back is not None:
            # Ranked below all of ``chosen`` (it was left out of the top), so the list
            # stays best first.
            rest.remove(back)
            chosen.append(back)


def elect_producers(state: Overlay, ctx: BlockContext) -> None:
    """Begin-block hook: at the last block of an epoch, store the next epoch's producers.

    With no eligible candidate the outgoing set carries over (a chain without
    producers could never make another block), and an ``election_failed``
    event says so. Either way each producer's term moves to the new epoch, so its
    own unbonding stays slashable while it produces (``release_unbonded``).
    """
    if not staking_enabled(state):
        return
    epoch_length = active_params(state).epoch_length
    if not is_election_height(ctx.height, epoch_length):
        return
    epoch = epoch_of(ctx.height, epoch_length) + 1
    previous = producer_set(state, epoch - 1)
    if previous is None:
        raise NodeFault(f"no producer set for epoch {epoch - 1} at height {ctx.height}")
    winners = sorted(elect(state, ctx.params, frozenset(previous.keys)))
    if winners:
        record = ProducerSet(
            epoch, ctx.height, tuple(k for k, _ in winners), tuple(w for _, w in winners)
        )
    else:
        record = ProducerSet(epoch, ctx.height, previous.keys, previous.weights)
        state.emit(Event.of("election_failed", epoch=epoch))
    store_producer_set(state, record)
    drop_old_producer_sets(state, ctx.height, ctx.params)
    # Removed members' candidacies leave the list once no set they are in is running.
    prune_candidates(state, ctx.height)
    state.emit(
        Event.of(
            "producers_elected",
            epoch=epoch,
            producers=len(record.keys),
            set_hash=ValidatorSet(record.keys).hash,
        )
    )


def charged_misses(missed_by: Sequence[int], withheld_by: Sequence[int], quorum: int) -> int:
    """Misses that count towards jailing: all of them, minus every miss that the
    ``len(missed_by) - quorum`` producers with the most misses to their name could
    have caused.

    A miss has two possible causes besides the producer itself: the proposer that
    built the certificate (it may leave any precommit out, ``missed_by``) and the
    proposer of the certified block's commit round (it may keep its proposal from
    the producer, which then has nothing to precommit in time, ``withheld_by``).
    A miss is to a producer's name when it is either of the two. The producers
    subtracted are the most faulty the set tolerates, so whatever a coalition of
    them leaves out or withholds, the result is at most the misses no member of it
    had a hand in: a coalition under 1/3 cannot get anybody jailed on its own
    (docs/staking.md, "Missed slots"). Both counts are aligned with the producer set.
    """
    faulty = len(missed_by) - quorum
    to_name = sorted((b + w for b, w in zip(missed_by, withheld_by, strict=True)), reverse=True)
    return max(0, sum(missed_by) - sum(to_name[:faulty]))


def least_offline_charge(size: int, certificates: int) -> int:
    """The fewest misses ``charged_misses`` charges, over ``certificates`` consecutive
    certificates of one epoch, to a producer that signs none of them while the other
    ``size - 1`` producers of its set (four or more) sign every one, whatever its
    place in the schedule.

    Its own rounds fail and the next producer proposes those heights too, so of each
    full turn of ``size`` certificates the next producer has three to its name and
    every other producer two (docs/staking.md, Missed slots): with the ``size -
    quorum`` largest counts not charged, a turn charges ``2 * quorum - size - 1``. The
    ``rest`` past the last full turn add ``rest`` misses, of which those counts take
    at most ``min(2 * rest, 2 * (size - quorum) + 1)`` (each certificate is to two
    producers' names; the next producer's turn adds one). It is a lower bound, at
    most one under the exact count, which
    ``test_an_offline_producer_is_charged_at_least_the_least_offline_charge`` checks
    on the chain.
    """
    quorum = 2 * size // 3 + 1
    faulty = size - quorum
    turns, rest = divmod(certificates, size)
    return max(0, turns * (2 * quorum - size - 1) + rest - min(2 * rest, 2 * faulty + 1))


def least_epoch_charge(params: ChainParams) -> int | None:
    """The fewest misses charged within an epoch to a producer offline all of it, over
    the sets of four or more that ``max_producers`` allows; None when it allows none
    (a set under four needs every producer: an offline one halts it, nothing is jailed).

    A producer is jailed once its charged misses exceed ``max_missed_slots``, and its
    counts restart with each epoch, so below this figure an offline producer is jailed
    within its first epoch in the set (a newcomer's has ``epoch_length - 1``
    certificates that can lack it: the first block of an epoch certifies the last of
    the previous set), and the next election leaves it out; at it or above, some
    offline producer is never jailed.
    """
    largest = min(params.max_producers, MAX_VALIDATORS)
    if largest < MIN_FAULT_TOLERANT_PRODUCERS:
        return None
    certificates = params.epoch_length - 1
    return min(
        least_offline_charge(size, certificates)
        for size in range(MIN_FAULT_TOLERANT_PRODUCERS, largest + 1)
    )


def record_missed(
    state: Overlay,
    height: int,
    expected: Iterable[bytes],
    signers: Collection[bytes],
    proposer: bytes,
    params: ChainParams,
    withholder: bytes | None = None,
) -> list[bytes]:
    """Count a missed slot for each of ``expected`` not in ``signers``; jail those over the limit.

    ``height`` is the block being executed and ``proposer`` the node key of its
    producer, who chose which precommits its ``last_commit`` carries: ``signers``
    (the commit of ``height - 1``); ``expected`` are the producers of
    ``height - 1`` and ``withholder`` is the one that proposed in the round that
    committed it (None: ``proposer`` itself). A miss is counted against the
    proposer that left it out and against the withholder, per epoch of ``height``
    (counts restart with each epoch); a withholder outside this epoch's set (the
    first block of an epoch) is nobody the count can hold to account, so that
    miss is on record (its event) and not counted. A producer is jailed until
    ``height + jail_blocks`` once its ``charged_misses`` exceed
    ``max_missed_slots``. Every miss emits a ``missed_slot`` event naming the
    proposer, so omissions are on record. Returns the keys jailed now, sorted.
    """
    producers = producers_for_height(state, height)
    # Header validation lets only the scheduled proposer, a producer of the height, produce.
    if proposer not in producers:
        raise NodeFault(f"proposer {proposer.hex()} of height {height} is not one of its producers")
    row = producers.keys.index(proposer)
    withholder = proposer if withholder is None else withholder
    # The proposer of the previous epoch's last block may have left the set.
    counted = withholder in producers
    held_row = producers.keys.index(withholder) if counted else row
    size = len(producers)
    epoch = epoch_of(height, active_params(state).epoch_length)
    jailed = []
    for key in sorted(set(expected)):
        if key in signers:
            continue
        ckey = candidate_key(key)
        cand = state.get_obj(ckey, Candidate)
        # Producers are elected from candidates, and candidacies are never deleted.
        if cand is None:
            raise NodeFault(f"producer {key.hex()} has no candidate record")
        fresh = cand.missed_epoch != epoch or len(cand.missed_by) != size
        counts = [0] * size if fresh else list(cand.missed_by)
        held = list(cand.withheld_by) if not fresh and len(cand.withheld_by) == size else [0] * size
        if counted:
            counts[row] += 1
            # One miss is to each producer's name once, even when it did both.
            if held_row != row:
                held[held_row] += 1
        charged = charged_misses(counts, held, producers.quorum)
        jail = not cand.jailed and charged > params.max_missed_slots
        state.set_obj(
            ckey,
            Candidate(
                cand.registered_height,
                cand.weight,
                cand.jailed or jail,
                height + params.jail_blocks if jail else cand.jailed_until,
                epoch,
                tuple(counts),
                tuple(held) if any(held) else (),
            ),
        )
        state.emit(
            Event.of(
                "missed_slot", candidate=key, height=height - 1, proposer=proposer, charged=charged
            )
        )
        if jail:
            jailed.append(key)
            state.emit(
                Event.of(
                    "jailed",
                    candidate=key,
                    reason="missed_slots",
                    missed=sum(counts),
                    charged=charged,
                    jailed_until=height + params.jail_blocks,
                )
            )
    return jailed


def missed_slots_hook(state: Overlay, ctx: BlockContext) -> None:
    """Begin-block hook: ``record_missed`` for the previous block's commit.

    The signers are those of the header's ``last_commit``
    (``ctx.last_commit_signers``, None where no certificate is at hand); the
    proposer is the producer of this height whose address ``ctx.producer`` is.
    """
    signers = ctx.last_commit_signers
    if signers is None or ctx.height <= 1 or not staking_enabled(state):
        return
    previous = producers_for_height(state, ctx.height - 1)
    expected = previous.keys
    signed = frozenset(signers)
    if all(key in signed for key in expected):
        return
    producers = producers_for_height(state, ctx.height).keys
    proposer = next((k for k in producers if address_of(k) == ctx.producer), None)
    # Header validation lets only the scheduled proposer, a producer of the height, produce.
    if proposer is None:
        raise NodeFault(f"producer address {ctx.producer.hex()} of height {ctx.height} is unknown")
    # Who proposed in the round that committed the previous block (the certificate's round).
    withholder = previous.proposer(ctx.height - 1, ctx.last_commit_round)
    record_missed(state, ctx.height, expected, signed, proposer, ctx.params, withholder)
