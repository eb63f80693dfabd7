"""Staking state: records, keys, module accounts, epochs and producer sets.

Everything here is a pure read or write of state; the transaction handlers and
begin-block hooks in ``staking``, ``election``, ``evidence`` and ``governance``
build on it. Key layout and rules: docs/staking.md.

Records are frozen ``Wire`` dataclasses. A record that would read the same as
a missing one (a staker with nothing bonded, no votes and nothing unbonding)
is stored as absence, as the vm does for empty accounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from consensus.prefixes import ConsensusPrefix
from consensus.validators import ValidatorSet
from core.codec import MaxItems, MaxLen, Wire
from core.errors import DecodeError, Invalid, NodeFault
from core.hashing import Domain, hash_bytes
from core.keys import ADDRESS_SIZE, address_of
from core.netaddr import MAX_NET_ADDRESS
from core.types import MAX_VALIDATORS, Address, PublicKey
from vm.params import ChainParams
from vm.registry import TxFailed
from vm.state import Overlay, StateView, read_obj

# Largest consortium; every member may be a candidate, and producers come from them.
MAX_MEMBERS = MAX_VALIDATORS
# Listed candidacies: the members' and those of removed members still in a producer set
# of this epoch or the next (``prune_candidates``), at most 3 x 256. Candidate records
# themselves are never deleted (their tallies must survive).
MAX_CANDIDATES = 1024
# Upper bound of ``max_votes`` (K): a staker's approval list is at most this long.
MAX_VOTES = 64
# Unbonding entries one staker may have pending at once.
MAX_UNBONDING_ENTRIES = 16
# Stakers released at one height: bounds the work of that height's begin-block hook
# (a block adds at most max_block_txs; heights collide only when governance shortens
# unbonding_blocks). The queue itself is a linked list of constant-size records.
MAX_RELEASES_PER_HEIGHT = 100_000
BPS = 10_000
# Passed parameter changes waiting for their height.
MAX_PENDING_PARAMS = 256
# Open (not passed, not expired) proposals one member may have at once.
MAX_OPEN_PROPOSALS = 8
# Bounds that keep governance from halting the chain (docs/staking.md, "Parameter
# bounds"). A fee above this could be more than any producer holds: no vote could
# then be paid for, and the change could never be undone.
MAX_MIN_FEE = 1_000_000
# Every staking and governance transaction fits (the largest, a full 64-key ballot,
# signs to ~2.4 KiB), so a smaller max_tx_bytes can always be raised again.
MIN_TX_BYTES = 4096
# Block-count periods are added to a height and stored as u64: far below 2**64.
MAX_PERIOD_BLOCKS = 2**32
# A passed change applies within this many blocks (a day of 1 s blocks); changing the
# delay itself waits for the old delay, so a huge one would freeze every later change.
MAX_PARAM_CHANGE_DELAY_BLOCKS = 100_000
# The smallest producer set that tolerates a fault (a quorum of 3 of 4): governance
# never lowers max_producers below it (``governance.check_param_change``).
MIN_FAULT_TOLERANT_PRODUCERS = 4

# The parameters a governance proposal may change (epoch_length may not:
# every epoch number and stored producer set depends on it).
GOVERNABLE_PARAMS: tuple[str, ...] = (
    "min_fee",
    "max_block_txs",
    "max_block_bytes",
    "max_tx_bytes",
    "max_expiry_blocks",
    "max_producers",
    "max_votes",
    "unbonding_blocks",
    "min_self_bond",
    "slash_bps",
    "max_missed_slots",
    "jail_blocks",
    "max_evidence_age_blocks",
    "proposal_voting_blocks",
    "param_change_delay_blocks",
    "max_currencies",
)


def module_address(label: str) -> bytes:
    """Address of an account no key controls.

    Hashed like a key address but from a label that is never 32 bytes long, so it
    can collide with no public key's address.
    """
    raw = f"module:{label}".encode()
    if len(raw) == 32:
        raise ValueError("module labels must not be 32 bytes long")
    return hash_bytes(Domain.ADDRESS, raw)[:ADDRESS_SIZE]


# Holds every bonded token: its balance equals the sum of all stakers' bonds.
BONDED_POOL = module_address("bonded_pool")
# Holds tokens on their way back to their owners: the sum of all unbonding entries.
UNBONDING_POOL = module_address("unbonding_pool")
# Receives slashed tokens; nothing can spend from it, so slashing is a tracked burn.
COMMUNITY_POOL = module_address("community_pool")
# Their names, as ``register_staking`` registers them with the vm (which refuses
# transfers to them: a deposit from outside would break the invariants above).
MODULE_ACCOUNT_NAMES: dict[bytes, str] = {
    BONDED_POOL: "bonded_pool",
    UNBONDING_POOL: "unbonding_pool",
    COMMUNITY_POOL: "community_pool",
}
MODULE_ACCOUNTS = tuple(MODULE_ACCOUNT_NAMES)


class StakingError(Invalid):
    """A staking query that the given state cannot answer (e.g. a producer set not yet elected)."""

    code = "no_producer_set"


# --- records ---


@dataclass(frozen=True, slots=True)
class Member(Wire):
    """A consortium member, identified by its node key."""

    name: Annotated[str, MaxLen(64)]
    admitted_height: int
    # Ids of the proposals it made that were open when it last proposed, ascending.
    open_proposals: Annotated[tuple[int, ...], MaxItems(MAX_OPEN_PROPOSALS)] = ()

    MAX_ENCODED = 256


@dataclass(frozen=True, slots=True)
class MemberRemoved(Wire):
    """When a node key's last membership ended: the height of the block that removed it.

    Kept after the key is admitted again (its ``Member.admitted_height`` is later), so
    that a proposal about the key can tell approvals of before its removal.
    """

    height: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class MemberAddress(Wire):
    """Where a member's node listens for peers, ``host:port`` (``core.netaddr``), as the
    member signed it. Other nodes dial it; TLS pins the member's node key, so an address
    that points elsewhere gets only failed handshakes."""

    address: Annotated[str, MaxLen(MAX_NET_ADDRESS)]

    MAX_ENCODED = MAX_NET_ADDRESS + 8


@dataclass(frozen=True, slots=True)
class Candidate(Wire):
    """A member standing for election, with its vote tally and jail state."""

    registered_height: int
    # Sum of the bonds of every staker that approves this candidate.
    weight: int
    jailed: bool
    # First height at which a jailed candidate may unjail.
    jailed_until: int
    # Epoch whose blocks' certificates ``missed_by`` counts (the epoch of the block
    # carrying the certificate, so its proposer is in that epoch's set).
    missed_epoch: int
    # Certificates that left this producer's precommit out, per proposer that built
    # them, aligned with the sorted producer set of ``missed_epoch``; () when none.
    missed_by: Annotated[tuple[int, ...], MaxItems(MAX_VALIDATORS)]
    # The same misses per proposer of the certified block's commit round, where that is
    # another producer of the set (it could have kept its proposal from this one, which
    # then had nothing to precommit); aligned likewise, () when none.
    withheld_by: Annotated[tuple[int, ...], MaxItems(MAX_VALIDATORS)] = ()

    MAX_ENCODED = 8192

    @property
    def missed(self) -> int:
        """Missed commit signatures in ``missed_epoch``, whoever left them out."""
        return sum(self.missed_by)


@dataclass(frozen=True, slots=True)
class Unbonding(Wire):
    amount: int
    # Height whose begin-block hook pays the amount back (one entry per height).
    release_height: int
    # The next staker released at the same height (the queue is linked through the
    # entries, so no record grows with the number of stakers); None ends the list.
    next: Address | None = None


@dataclass(frozen=True, slots=True)
class Staker(Wire):
    """One account's bond, its approved candidates (sorted) and its pending unbondings."""

    bonded: int
    votes: Annotated[tuple[PublicKey, ...], MaxItems(MAX_VOTES)]
    unbonding: Annotated[tuple[Unbonding, ...], MaxItems(MAX_UNBONDING_ENTRIES)]

    MAX_ENCODED = 4096

    @property
    def unbonding_total(self) -> int:
        return sum(u.amount for u in self.unbonding)

    @property
    def is_empty(self) -> bool:
        return self.bonded == 0 and not self.votes and not self.unbonding


EMPTY_STAKER = Staker(0, (), ())


@dataclass(frozen=True, slots=True)
class KeyList(Wire):
    """A sorted list of public keys (members, candidates)."""

    keys: Annotated[tuple[PublicKey, ...], MaxItems(MAX_CANDIDATES)]

    MAX_ENCODED = 40 * 1024


@dataclass(frozen=True, slots=True)
class ReleaseQueue(Wire):
    """The stakers released at one height: the newest, whose entry for that height
    links to the next (``Unbonding.next``), and how many there are.

    It was a sorted list of every address, one state value: an unbonding queue
    filled in one block grew past what the state tree stores (256 KiB, ~11,900
    stakers) and each unbond re-encoded the whole list. Now an unbond writes this
    record and its own ``Staker``, both of constant size.
    """

    first: Address
    count: int

    MAX_ENCODED = 48


@dataclass(frozen=True, slots=True)
class ProducerSet(Wire):
    """The producers of one epoch, sorted by key, with the vote weight each was elected with."""

    epoch: int
    # Height whose begin-block hook elected this set (0 for genesis).
    elected_height: int
    keys: Annotated[tuple[PublicKey, ...], MaxItems(MAX_VALIDATORS)]
    weights: Annotated[tuple[int, ...], MaxItems(MAX_VALIDATORS)]

    MAX_ENCODED = 16 * 1024

    def validator_set(self) -> ValidatorSet:
        return ValidatorSet(self.keys)


@dataclass(frozen=True, slots=True)
class ProducerTerm(Wire):
    """The last epoch whose producer set names the node key of this address: every
    stored set writes it for each of its keys (genesis, elections, and failed elections
    that carry the outgoing set over), so it only grows."""

    epoch: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class EvidenceRecord(Wire):
    """An offence already punished: included at ``height``, ``slashed`` tokens taken."""

    height: int
    slashed: int

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class Totals(Wire):
    """Running sums, so audits and tests can check the pools without a scan."""

    bonded: int
    unbonding: int
    slashed: int

    MAX_ENCODED = 64


@dataclass(frozen=True, slots=True)
class Counter(Wire):
    value: int

    MAX_ENCODED = 16


@dataclass(frozen=True, slots=True)
class PendingParam(Wire):
    """A passed parameter change waiting for its height."""

    effective_height: int
    proposal_id: int
    name: Annotated[str, MaxLen(64)]
    value: int


@dataclass(frozen=True, slots=True)
class PendingParams(Wire):
    # By effective_height, and in the order they passed within one height: the order
    # they are applied in (governance._execute).
    changes: Annotated[tuple[PendingParam, ...], MaxItems(MAX_PENDING_PARAMS)]

    MAX_ENCODED = 32 * 1024


# --- keys ---

_MEMBER = bytes([ConsensusPrefix.MEMBER])
_MEMBER_ADDRESS = bytes([ConsensusPrefix.MEMBER_ADDRESS])
_CANDIDATE = bytes([ConsensusPrefix.CANDIDATE])
_STAKER = bytes([ConsensusPrefix.STAKER])
_QUEUE = bytes([ConsensusPrefix.UNBONDING_QUEUE])
_PRODUCERS = bytes([ConsensusPrefix.PRODUCER_SET])
_EVIDENCE = bytes([ConsensusPrefix.EVIDENCE])
_PROPOSAL = bytes([ConsensusPrefix.PROPOSAL])
_TERM = bytes([ConsensusPrefix.PRODUCER_TERM])
_MEMBER_REMOVED = bytes([ConsensusPrefix.MEMBER_REMOVED])
MEMBER_LIST_KEY = bytes([ConsensusPrefix.STAKING_INDEX, 0x01])
CANDIDATE_LIST_KEY = bytes([ConsensusPrefix.STAKING_INDEX, 0x02])
PROPOSAL_COUNTER_KEY = bytes([ConsensusPrefix.STAKING_INDEX, 0x03])
TOTALS_KEY = bytes([ConsensusPrefix.STAKING_INDEX, 0x04])
# The first epoch whose producer set is still in state (``drop_old_producer_sets``), a
# ``Counter``; absent, 0.
FIRST_KEPT_SET_KEY = bytes([ConsensusPrefix.STAKING_INDEX, 0x05])
ACTIVE_PARAMS_KEY = bytes([ConsensusPrefix.CHAIN_PARAMS, 0x01])
PENDING_PARAMS_KEY = bytes([ConsensusPrefix.CHAIN_PARAMS, 0x02])


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def member_key(public_key: bytes) -> bytes:
    return _MEMBER + public_key


def member_address_key(public_key: bytes) -> bytes:
    return _MEMBER_ADDRESS + public_key


def member_removed_key(public_key: bytes) -> bytes:
    return _MEMBER_REMOVED + public_key


def candidate_key(public_key: bytes) -> bytes:
    return _CANDIDATE + public_key


def staker_key(address: bytes) -> bytes:
    return _STAKER + address


def queue_key(height: int) -> bytes:
    return _QUEUE + _u64(height)


def producer_set_key(epoch: int) -> bytes:
    return _PRODUCERS + _u64(epoch)


def evidence_key(validator: bytes, height: int, round_: int, vote_type: int) -> bytes:
    """One key per offence: any conflicting pair for one (validator, height, round, type)."""
    return _EVIDENCE + validator + _u64(height) + _u64(round_) + bytes([vote_type])


def proposal_key(proposal_id: int) -> bytes:
    return _PROPOSAL + _u64(proposal_id)


def producer_term_key(address: bytes) -> bytes:
    """Keyed by address, like the ``Staker`` whose entries it holds back."""
    return _TERM + address


# --- generic access ---


# The consensus modules' name for it.
read = read_obj


def write(state: Overlay, key: bytes, obj: Wire | None) -> None:
    """Store ``obj``, or delete the key for None."""
    if obj is None:
        state.delete(key)
    else:
        state.set_obj(key, obj)


# --- typed access ---


def staking_enabled(state: StateView) -> bool:
    """Whether genesis set up staking (it writes the active parameters)."""
    return state.get(ACTIVE_PARAMS_KEY) is not None


def get_member(state: StateView, public_key: bytes) -> Member | None:
    return read(state, member_key(public_key), Member)


def members(state: StateView) -> tuple[bytes, ...]:
    """Node keys of every consortium member, sorted (p2p pins peers to these)."""
    lst = read(state, MEMBER_LIST_KEY, KeyList)
    return () if lst is None else lst.keys


def member_address(state: StateView, public_key: bytes) -> str | None:
    """The ``host:port`` a member published for its node, or None."""
    record = read(state, member_address_key(public_key), MemberAddress)
    return None if record is None else record.address


def is_member(state: StateView, public_key: bytes) -> bool:
    return get_member(state, public_key) is not None


def membership_changed_at(state: StateView, public_key: bytes) -> int:
    """The height the key's membership last began (it is a member) or ended (it was
    removed since), 0 for a key never admitted by governance nor removed."""
    member = get_member(state, public_key)
    if member is not None:
        return member.admitted_height
    removed = read(state, member_removed_key(public_key), MemberRemoved)
    return 0 if removed is None else removed.height


def get_candidate(state: StateView, public_key: bytes) -> Candidate | None:
    return read(state, candidate_key(public_key), Candidate)


def candidates(state: StateView) -> tuple[bytes, ...]:
    lst = read(state, CANDIDATE_LIST_KEY, KeyList)
    return () if lst is None else lst.keys


def get_staker(state: StateView, address: bytes) -> Staker:
    staker = read(state, staker_key(address), Staker)
    return EMPTY_STAKER if staker is None else staker


def put_staker(state: Overlay, address: bytes, staker: Staker) -> None:
    write(state, staker_key(address), None if staker.is_empty else staker)


def get_totals(state: StateView) -> Totals:
    totals = read(state, TOTALS_KEY, Totals)
    return Totals(0, 0, 0) if totals is None else totals


def self_bond(state: StateView, public_key: bytes) -> int:
    """What a candidate's own account (the address of its node key) has bonded."""
    return get_staker(state, address_of(public_key)).bonded


def adjust_weights(state: Overlay, keys: Iterable[bytes], delta: int) -> None:
    """Add ``delta`` (may be negative) to the tally of each candidate in ``keys``."""
    for key in keys:
        ckey = candidate_key(key)
        cand = state.get_obj(ckey, Candidate)
        # Votes only ever name registered candidates, and candidates are never deleted.
        if cand is None:
            raise NodeFault(f"vote for {key.hex()}, which has no candidate record")
        weight = cand.weight + delta
        if weight < 0:
            raise NodeFault(f"tally of {key.hex()} would go negative: {cand.weight} + {delta}")
        state.set_obj(ckey, _replace_weight(cand, weight))


def _replace_weight(cand: Candidate, weight: int) -> Candidate:
    return Candidate(
        cand.registered_height,
        weight,
        cand.jailed,
        cand.jailed_until,
        cand.missed_epoch,
        cand.missed_by,
        cand.withheld_by,
    )


def add_totals(state: Overlay, bonded: int = 0, unbonding: int = 0, slashed: int = 0) -> None:
    t = get_totals(state)
    new = Totals(t.bonded + bonded, t.unbonding + unbonding, t.slashed + slashed)
    # Each total is the balance of a pool; a negative one is a bookkeeping bug.
    if min(new.bonded, new.unbonding, new.slashed) < 0:
        raise NodeFault(f"staking totals would go negative: {new}")
    state.set_obj(TOTALS_KEY, new)


# --- epochs and producer sets ---


def epoch_of(height: int, epoch_length: int) -> int:
    """Epoch of block ``height``: heights 1..E are epoch 0, E+1..2E epoch 1, and so on."""
    if height < 1:
        raise ValueError(f"block heights start at 1, got {height}")
    if epoch_length < 1:
        raise ValueError(f"epoch_length must be at least 1, got {epoch_length}")
    return (height - 1) // epoch_length


def is_election_height(height: int, epoch_length: int) -> bool:
    """The last block of each epoch elects the next epoch's producers (in its begin-block)."""
    return height % epoch_length == 0


def active_params(state: StateView) -> ChainParams:
    """The parameters in force after the last executed block (pending changes not applied)."""
    params = read(state, ACTIVE_PARAMS_KEY, ChainParams)
    if params is None:
        raise NodeFault("staking is not set up in this state (genesis has no staking section)")
    return params


def producer_set(state: StateView, epoch: int) -> ProducerSet | None:
    return read(state, producer_set_key(epoch), ProducerSet)


def producers_for_height(state: StateView, height: int) -> ValidatorSet:
    """The producers that must propose and sign block ``height``.

    Answerable from the state after block ``height - 1``, and from later states while
    evidence may still name ``height`` (``drop_old_producer_sets``): the set of an
    epoch is elected in the begin-block of the previous epoch's last block.
    """
    epoch = epoch_of(height, active_params(state).epoch_length)
    record = producer_set(state, epoch)
    # Sets are elected one block ahead at most; a later height is not decided yet.
    if record is None:
        raise StakingError(f"no producer set for height {height} (epoch {epoch}) in this state")
    return record.validator_set()


# Sets a single election deletes at most: after governance lowers
# ``max_evidence_age_blocks`` a long way, the backlog goes over several elections
# rather than in one block.
MAX_SETS_DROPPED_PER_ELECTION = 64


def drop_old_producer_sets(state: Overlay, height: int, params: ChainParams) -> None:
    """Delete the producer sets of the epochs no block from ``height`` on asks for.

    A set is read for its own epoch's blocks (and the next block's missed slots), and
    then only by evidence, for a vote at most ``max_evidence_age_blocks`` older than
    the including block. Kept for good, one set per epoch (~1 KiB for 21 producers,
    every 50 s by default) grew the state by gigabytes a year. Light clients and
    joining nodes prove a set at its epoch's boundary, in that height's state (epoch
    records, kept for good by every node), never in the current one.

    A set deleted here stays deleted if governance later raises the evidence age:
    evidence naming its epoch is then refused as too old (``submit_evidence``).
    """
    oldest = max(1, height - params.max_evidence_age_blocks)
    needed = epoch_of(oldest, params.epoch_length)
    mark = read(state, FIRST_KEPT_SET_KEY, Counter)
    first = 0 if mark is None else mark.value
    last = min(needed, first + MAX_SETS_DROPPED_PER_ELECTION)
    if last <= first:
        return
    for epoch in range(first, last):
        state.delete(producer_set_key(epoch))
    state.set_obj(FIRST_KEPT_SET_KEY, Counter(last))


def store_producer_set(state: Overlay, record: ProducerSet) -> None:
    """Store an epoch's producers, and that epoch as the last term of each of them.

    At most ``MAX_VALIDATORS`` term records, once per epoch (in its election block).
    """
    state.set_obj(producer_set_key(record.epoch), record)
    for key in record.keys:
        state.set_obj(producer_term_key(address_of(key)), ProducerTerm(record.epoch))


def slashable_until(state: StateView, address: bytes, params: ChainParams) -> int:
    """The last height whose block can still slash the producer of ``address``; 0 if
    its key was never a producer.

    A producer of epoch ``e`` signs votes up to the epoch's last height ``(e+1)·E``,
    and evidence of a vote is accepted up to ``max_evidence_age_blocks`` later. The
    term is the last stored epoch naming it: the running one, or the next once elected
    (an election block elects before any of its transactions run).
    """
    term = read(state, producer_term_key(address), ProducerTerm)
    if term is None:
        return 0
    return (term.epoch + 1) * params.epoch_length + params.max_evidence_age_blocks


def may_connect(state: StateView, public_key: bytes, height: int) -> bool:
    """Whether the node of ``public_key`` belongs on the network that builds block ``height``.

    ``state`` is the state after block ``height - 1`` (p2p asks with the latest
    committed state and its height + 1). Members may connect, and so may the
    producers of block ``height - 1`` (their precommits go into the certificate
    block ``height`` carries), of the epoch of ``height``, and of the next epoch
    once it is elected, even when governance removed them: a producer set is
    fixed for its epoch, so a producer cut off could no longer vote, and removing
    enough of them would stop the chain. A removed member therefore stays
    connected until the last epoch it was elected for ends; elections after its
    removal leave it out (``rank_candidates``).
    """
    if is_member(state, public_key):
        return True
    epoch_length = active_params(state).epoch_length
    first = epoch_of(max(height - 1, 1), epoch_length)
    for epoch in range(first, epoch_of(height, epoch_length) + 2):
        record = producer_set(state, epoch)
        if record is not None and public_key in record.keys:
            return True
    return False


def prune_candidates(state: Overlay, height: int) -> None:
    """Take off the candidate list every key that is no longer a member and is in
    neither the producer set of ``height``'s epoch nor the next one (once elected).

    Its ``Candidate`` record stays: ballots may still name it, its tally must stay
    exact, and a member admitted again takes it up again as it was, jail included
    (``register_candidate``). Called when a member is removed and at every election,
    so the list holds at most the members and the keys of two producer sets
    (3 x 256 < ``MAX_CANDIDATES``): departed members can no longer fill it for good.
    Work: one read per listed key, and the sets.
    """
    keys = candidates(state)
    epoch = epoch_of(height, active_params(state).epoch_length)
    producing: set[bytes] = set()
    for record in (producer_set(state, epoch), producer_set(state, epoch + 1)):
        if record is not None:
            producing.update(record.keys)
    kept = tuple(k for k in keys if k in producing or is_member(state, k))
    if kept != keys:
        state.set_obj(CANDIDATE_LIST_KEY, KeyList(kept))


def check_staking_params(params: ChainParams) -> None:
    """Raise ``DecodeError`` naming the first staking parameter out of range.

    ``ChainParams`` checks the vm's own limits when it is built; these are the
    consensus ones, checked for genesis and for every governance change.
    """
    p = params
    # A fee no producer can pay would stop every transaction, the fix included.
    if p.min_fee > MAX_MIN_FEE:
        raise DecodeError(f"min_fee must be at most {MAX_MIN_FEE}, got {p.min_fee}")
    # Every staking and governance transaction must fit, so the limit can be raised again.
    if p.max_tx_bytes < MIN_TX_BYTES:
        raise DecodeError(f"max_tx_bytes must be at least {MIN_TX_BYTES}, got {p.max_tx_bytes}")
    # Heights map to epochs by division.
    if p.epoch_length < 1:
        raise DecodeError(f"epoch_length must be at least 1, got {p.epoch_length}")
    # An election must pick somebody, and a commit holds at most MAX_VALIDATORS signatures.
    if not 1 <= p.max_producers <= MAX_VALIDATORS:
        raise DecodeError(f"max_producers must be in 1..{MAX_VALIDATORS}, got {p.max_producers}")
    # A staker's approval list is bounded by its encoding.
    if not 1 <= p.max_votes <= MAX_VOTES:
        raise DecodeError(f"max_votes must be in 1..{MAX_VOTES}, got {p.max_votes}")
    # Releases run in a later block's begin-block; the release height must fit in u64.
    if not 1 <= p.unbonding_blocks <= MAX_PERIOD_BLOCKS:
        raise DecodeError(
            f"unbonding_blocks must be in 1..{MAX_PERIOD_BLOCKS}, got {p.unbonding_blocks}"
        )
    # A jail must outlast the next election, or the offender unjails before it and never
    # leaves the producer set: jailed in a block just after an election, it may unjail at
    # +jail_blocks, after the election at +epoch_length only if jail_blocks >= epoch_length.
    # height + jail_blocks is stored as u64: an overflow would fail the block that jails.
    if not p.epoch_length <= p.jail_blocks <= MAX_PERIOD_BLOCKS:
        raise DecodeError(
            f"jail_blocks must be in epoch_length ({p.epoch_length})..{MAX_PERIOD_BLOCKS}, "
            f"got {p.jail_blocks}"
        )
    # A candidate with no self-bond would have nothing to lose by misbehaving.
    if p.min_self_bond < 1:
        raise DecodeError(f"min_self_bond must be at least 1, got {p.min_self_bond}")
    # Nobody can lose more than the whole bond, and every offender loses something.
    if not 1 <= p.slash_bps <= BPS:
        raise DecodeError(f"slash_bps must be in 1..{BPS}, got {p.slash_bps}")
    # Evidence must land while an offender's unbonding stake is still held. A producer
    # may start unbonding its self-bond in the block that elects it and still produce
    # for the whole next epoch: an offence in that epoch's last block is punishable up
    # to max_evidence_age_blocks later. The release hook holds a producer's entries that
    # long whatever the bound (``slashable_until``); the bound makes the plain unbonding
    # period cover it, so only a producer elected or carried over again is held.
    most = p.unbonding_blocks - p.epoch_length - 1
    if not 1 <= p.max_evidence_age_blocks <= most:
        raise DecodeError(
            f"max_evidence_age_blocks must be in 1..unbonding_blocks-epoch_length-1 "
            f"({most}), got {p.max_evidence_age_blocks}"
        )
    # Every producer of some epoch gets a whole epoch to vote; the deadline fits in u64.
    if not p.epoch_length <= p.proposal_voting_blocks <= MAX_PERIOD_BLOCKS:
        raise DecodeError(
            f"proposal_voting_blocks must be in epoch_length ({p.epoch_length})"
            f"..{MAX_PERIOD_BLOCKS}, got {p.proposal_voting_blocks}"
        )
    # A change applies in a later block, and soon enough that a bad one can be undone.
    if not 1 <= p.param_change_delay_blocks <= MAX_PARAM_CHANGE_DELAY_BLOCKS:
        raise DecodeError(
            f"param_change_delay_blocks must be in 1..{MAX_PARAM_CHANGE_DELAY_BLOCKS}, "
            f"got {p.param_change_delay_blocks}"
        )


def require_staking(state: StateView) -> None:
    """Refuse a staking transaction on a chain whose genesis has no staking section."""
    # Staking state exists only when genesis set it up.
    if not staking_enabled(state):
        raise TxFailed("staking is not set up on this chain", "staking_disabled")
