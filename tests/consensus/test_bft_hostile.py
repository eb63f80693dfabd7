"""What a hostile member or producer sends the engine: swapped bodies and chosen block times.

A proposal's signature and a certificate cover the block header only; the body must
be matched to it where it enters, or any relaying member could make us judge, keep
and vote on a block nobody proposed. A proposer chooses its block time; honest
producers prevote only a new block dated close to their own clock (proposer-based
timestamps), so no producer moves the chain clock that commerce deadlines follow.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import Synchrony, make_commit, validate_header
from consensus.bft import NIL, ConsensusEngine, Step
from consensus.messages import FinalizedBlock, Proposal, SyncRequest
from consensus.privval import PrivValidator
from consensus.wal import WAL
from core import MAX_TIME_MS, Block, InvalidBlock, PrivateKey, Vote, VoteType
from tests.consensus.helpers import (
    CHAIN,
    CONFIG,
    GENESIS_HASH,
    GENESIS_TIME,
    ME,
    OTHERS,
    SYNCHRONY,
    VALIDATORS,
    ToyApp,
    make_block,
    make_engine,
    proposer,
    sign_proposal,
    vote,
)

PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
TXS = (b"order-1", b"order-2", b"tip-3")


def genuine_and_tampered(h, txs=TXS, time_ms=0):
    """Height 1 round 0's signed proposal, and a relay's copy with one transaction removed."""
    key = proposer(1, 0)
    block = make_block(h.app, 1, 0, key, txs=txs, time_ms=time_ms)
    genuine = sign_proposal(key, 1, 0, block)
    tampered = dataclasses.replace(genuine, block=Block(block.header, block.txs[1:]))
    return genuine, tampered


# --- bodies ----------------------------------------------------------------------------


def test_tampered_proposal_is_refused_and_the_genuine_one_prevoted(tmp_path):
    h = make_engine(tmp_path)
    genuine, tampered = genuine_and_tampered(h)
    # The signature verifies (it covers the header), the body does not match it.
    tampered.verify(CHAIN)
    h.deliver(tampered, peer="relay")
    assert [peer for peer, _ in h.bad_peers] == ["relay"]
    assert "body does not match its header" in h.bad_peers[0][1]
    assert h.transport.votes(PV) == [] and h.step == Step.PROPOSE
    # The genuine copy is not shadowed by the tampered one.
    h.deliver(genuine, peer="proposer")
    assert [v.block_hash for v in h.transport.votes(PV)] == [genuine.block.hash]


def test_quorum_for_a_block_seen_only_tampered_fetches_the_body_instead_of_halting(tmp_path):
    h = make_engine(tmp_path)
    genuine, tampered = genuine_and_tampered(h)
    h.deliver(tampered, peer="relay")
    block_hash = genuine.block.hash
    h.votes_from(OTHERS, PV, 0, block_hash)
    h.votes_from(OTHERS, PC, 0, block_hash)
    assert h.engine.halted is None and h.app.height() == 0
    # The decided block is asked for, and committed once the right body arrives.
    assert (1, block_hash) in h.missing
    h.deliver(genuine, peer="honest")
    assert h.app.height() == 1 and h.app.blocks[0].txs == TXS


def test_tampered_finalized_block_is_refused_and_the_genuine_one_committed(tmp_path):
    h = make_engine(tmp_path)
    block = make_block(ToyApp(), 1, 0, proposer(1, 0), txs=TXS)
    commit = make_commit(OTHERS, CHAIN, 1, 0, block.hash)
    tampered = Block(block.header, block.txs[:-1])
    h.deliver(FinalizedBlock(tampered, commit, latest=1), peer="relay")
    assert h.engine.halted is None and h.app.height() == 0
    assert [peer for peer, _ in h.bad_peers] == ["relay"]
    h.deliver(FinalizedBlock(block, commit, latest=1), peer="honest")
    assert h.app.height() == 1 and h.app.blocks[0].txs == TXS


def test_tampered_proposal_in_the_wal_is_not_replayed(tmp_path):
    h = make_engine(tmp_path, with_wal=True)
    genuine, tampered = genuine_and_tampered(h)
    h.deliver(tampered, peer="relay")
    h.engine.wal.sync()
    # After a restart nothing of the tampered copy comes back: the genuine one is
    # still taken.
    restarted = make_engine(tmp_path, app=h.app, with_wal=True)
    restarted.deliver(genuine, peer="proposer")
    assert restarted.engine.proposals[0].block.txs == TXS


# --- block time ------------------------------------------------------------------------


def test_synchrony_window_bounds_and_growth():
    s = Synchrony(precision_ms=500, message_delay_ms=10_000)
    assert s.timely(10_000, 9_500, 0) and not s.timely(10_000, 9_499, 0)
    assert s.timely(10_000, 20_500, 0) and not s.timely(10_000, 20_501, 0)
    # The message delay grows by a tenth per round, so a slow network recovers.
    assert s.message_delay(3) == 13_000 and s.timely(10_000, 23_500, 3)
    # Unknown arrival time (replayed from the WAL): never timely.
    assert not s.timely(10_000, None, 0)


@pytest.mark.parametrize(
    "ahead_ms, prevoted",
    [
        (0, True),
        (SYNCHRONY.precision_ms, True),
        (SYNCHRONY.precision_ms + 1, False),
        (24 * 3_600_000, False),
        (MAX_TIME_MS - GENESIS_TIME, False),
    ],
)
def test_a_new_block_dated_ahead_of_our_clock_is_prevoted_only_within_precision(
    tmp_path, ahead_ms, prevoted
):
    h = make_engine(tmp_path)
    genuine, _ = genuine_and_tampered(h, time_ms=h.clock.time_ms() + ahead_ms)
    h.deliver(genuine)
    expected = genuine.block.hash if prevoted else NIL
    assert [v.block_hash for v in h.transport.votes(PV)] == [expected]


def test_a_new_block_dated_far_behind_our_clock_gets_nil(tmp_path):
    h = make_engine(tmp_path)
    late = SYNCHRONY.message_delay(0) + SYNCHRONY.precision_ms
    # The block is dated just after genesis; our clock reads 1 ms past the window.
    h.clock.wall_offset_ms = late + 2
    genuine, _ = genuine_and_tampered(h)
    assert h.clock.time_ms() - genuine.block.header.time_ms == late + 1
    h.deliver(genuine)
    assert [v.block_hash for v in h.transport.votes(PV)] == [NIL]


def test_an_honest_clock_skewed_within_precision_still_prevotes(tmp_path):
    h = make_engine(tmp_path)
    # The proposer's clock runs precision/2 fast, ours precision/2 slow.
    half = SYNCHRONY.precision_ms // 2
    h.clock.wall_offset_ms = -half
    genuine, _ = genuine_and_tampered(h, time_ms=GENESIS_TIME + half)
    h.deliver(genuine)
    assert [v.block_hash for v in h.transport.votes(PV)] == [genuine.block.hash]


def test_producers_of_consecutive_heights_dating_back_hold_the_clock_at_most_d_plus_p_behind(
    tmp_path,
):
    # Producers of consecutive heights (neighbours in the sorted keys: the schedule is
    # round-robin over them) each date their block parent + 1 ms and hold it back for a
    # block interval and a proposal timeout. Each block alone is timely, so the lag adds
    # up from height to height, up to D + P behind our clock and no further
    # (docs/consensus.md, Bounds).
    h = make_engine(tmp_path)
    bound = SYNCHRONY.message_delay(0) + SYNCHRONY.precision_ms
    held_ms = 3_500  # a node's default block interval (500 ms) and timeout_propose (3 s)
    seen = []
    for height in (1, 2, 3):
        h.clock.wall_offset_ms += held_ms
        key = proposer(height, 0)
        block = make_block(h.app, height, 0, key)  # dated parent + 1 ms
        h.deliver(sign_proposal(key, height, 0, block))
        (prevote,) = [v for v in h.transport.votes(PV, 0) if v.height == height]
        seen.append((h.clock.time_ms() - block.header.time_ms, prevote.block_hash == block.hash))
        if prevote.block_hash != block.hash:
            break
        h.votes_from(OTHERS, PV, 0, block.hash, height=height)
        h.votes_from(OTHERS, PC, 0, block.hash, height=height)
        assert h.app.height() == height
        h.clock.advance(CONFIG.timeout_commit_ms)
    assert [prevoted for _, prevoted in seen] == [True, True, False]
    (lag1, _), (lag2, _), (lag3, _) = seen
    assert lag1 < held_ms < 2 * held_ms < lag2 <= bound < lag3


def test_a_proof_of_lock_reproposal_is_not_judged_by_its_old_time(tmp_path):
    h = make_engine(tmp_path)
    genuine, _ = genuine_and_tampered(h)
    block = genuine.block
    h.deliver(genuine)
    h.votes_from(OTHERS, PV, 0, block.hash)
    assert h.engine.locked_hash == block.hash
    h.votes_from(OTHERS, PC, 0, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    assert h.engine.round == 1
    # Much later, round 1's proposer re-proposes it with its proof of lock (round 0).
    h.clock.wall_offset_ms = 10 * SYNCHRONY.message_delay_ms
    h.deliver(sign_proposal(proposer(1, 1), 1, 1, block, pol_round=0))
    assert [v.block_hash for v in h.transport.votes(PV, 1)] == [block.hash]


# --- who built it ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names_round", "names_producer"),
    [(2, 2), (0, 2), (2, 0)],
    ids=["another-producers-slot", "another-producer", "another-round"],
)
def test_a_new_block_naming_another_producer_or_round_gets_nil(
    tmp_path, names_round, names_producer
):
    # The header's producer and round decide whose the block's fees are and to whose
    # row the precommits it leaves out are charged: round 0's proposer may not build
    # a block as round 2's producer (the schedule agrees with that pair, so the app's
    # header check passes), nor name another round or producer of its own.
    h = make_engine(tmp_path)
    signer, named = proposer(1, 0), proposer(1, names_producer)
    assert signer != proposer(1, 2)
    block = make_block(h.app, 1, names_round, named, time_ms=h.clock.time_ms())
    h.deliver(sign_proposal(signer, 1, 0, block))
    assert [v.block_hash for v in h.transport.votes(PV)] == [NIL]


def test_the_signers_own_block_of_this_round_is_prevoted(tmp_path):
    h = make_engine(tmp_path)
    block = make_block(h.app, 1, 0, proposer(1, 0), time_ms=h.clock.time_ms())
    h.deliver(sign_proposal(proposer(1, 0), 1, 0, block))
    assert [v.block_hash for v in h.transport.votes(PV)] == [block.hash]


def test_a_reproposal_of_a_block_built_after_its_proof_of_lock_gets_nil(tmp_path):
    # Round 1's proposer re-proposes a block whose header says round 1, citing prevotes
    # for it from round 0: no block built in round 1 can have had them (here the others
    # sent them anyway), so its header's round or producer is not its own.
    h = make_engine(tmp_path)
    genuine, _ = genuine_and_tampered(h)
    h.deliver(genuine)
    later = make_block(h.app, 1, 1, proposer(1, 1), time_ms=h.clock.time_ms())
    h.votes_from(OTHERS, PV, 0, later.hash)
    h.votes_from(OTHERS, PC, 0, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    assert h.engine.round == 1
    h.deliver(sign_proposal(proposer(1, 1), 1, 1, later, pol_round=0))
    assert [v.block_hash for v in h.transport.votes(PV, 1)] == [NIL]


def test_own_proposal_is_dated_by_the_engine_clock(tmp_path):
    h = make_engine(tmp_path)
    h.clock.wall_offset_ms = 7_000
    # ME proposes round 3 of height 1.
    for r in range(3):
        h.votes_from(OTHERS, PV, r, NIL)
        h.votes_from(OTHERS, PC, r, NIL)
        h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, r))
    assert proposer(1, 3) == ME and h.engine.round == 3
    (proposal,) = h.transport.proposals()
    assert proposal.block.header.time_ms == h.app.proposed_times[0] == h.clock.time_ms()
    assert [v.block_hash for v in h.transport.votes(PV, 3)] == [proposal.block.hash]


def test_block_time_beyond_max_time_is_invalid():
    app = ToyApp()
    at_max = make_block(app, 1, 0, proposer(1, 0), time_ms=MAX_TIME_MS).header
    beyond = dataclasses.replace(at_max, time_ms=MAX_TIME_MS + 1)
    check = {
        "chain_id": CHAIN,
        "prev": None,
        "genesis_hash": GENESIS_HASH,
        "genesis_time_ms": GENESIS_TIME,
        "validators": VALIDATORS,
    }
    validate_header(at_max, **check)
    with pytest.raises(InvalidBlock, match="expected at most"):
        validate_header(beyond, **check)


def test_a_proposer_behind_its_parent_time_waits_instead_of_dating_parent_plus_one(tmp_path):
    h = make_engine(tmp_path)
    # Heights 1-3 finalized by the others; the last is dated 300 ms ahead of our clock.
    other = ToyApp()
    ahead = 300
    for height in (1, 2, 3):
        block = make_block(other, height, 0, proposer(height, 0), time_ms=h.clock.time_ms() + ahead)
        commit = make_commit(OTHERS, CHAIN, height, 0, block.hash)
        other.commit(block, commit)
        h.deliver(FinalizedBlock(block, commit, latest=3), peer="peer")
    assert h.app.height() == 3 and proposer(4, 0) == ME
    parent_time = h.app.blocks[-1].header.time_ms
    h.clock.advance(CONFIG.timeout_commit_ms)
    assert (h.engine.height, h.engine.round, h.step) == (4, 0, Step.PROPOSE)
    # Our clock is not past the parent's time yet: no proposal dated parent + 1.
    assert h.clock.time_ms() <= parent_time and h.transport.proposals() == []
    h.clock.advance(parent_time - h.clock.time_ms() + 1)
    (proposal,) = h.transport.proposals()
    assert proposal.block.header.time_ms == h.clock.time_ms() == parent_time + 1
    assert [v.block_hash for v in h.transport.votes(PV, 0)] == [proposal.block.hash]


def test_a_replayed_proposal_gets_its_arrival_from_a_resent_copy(tmp_path):
    h = make_engine(tmp_path, with_wal=True)
    # Round 1's proposal arrives early, in round 0: kept (and logged), not voted on yet.
    key = proposer(1, 1)
    block = make_block(h.app, 1, 1, key, txs=TXS)
    proposal = sign_proposal(key, 1, 1, block)
    h.deliver(proposal)
    assert h.transport.votes(PV, 1) == []
    h.engine.wal.sync()
    # A restart replays it with no arrival time; the proposer re-sends it.
    restarted = make_engine(tmp_path, app=h.app, with_wal=True)
    restarted.deliver(proposal)
    restarted.votes_from(OTHERS, PV, 0, NIL)
    restarted.votes_from(OTHERS, PC, 0, NIL)
    restarted.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    assert restarted.engine.round == 1
    assert [v.block_hash for v in restarted.transport.votes(PV, 1)] == [block.hash]


# --- who signed it -----------------------------------------------------------------------


def test_a_proposal_whose_signature_fails_is_refused_and_leaves_the_round_to_the_proposer(
    tmp_path,
):
    # Any member can relay a proposal under the scheduled proposer's name: with another
    # block and the proposer's signature over the first, it must not become the round's
    # proposal (the first one wins a round: the genuine one would then be ignored).
    h = make_engine(tmp_path)
    key = proposer(1, 0)
    genuine = sign_proposal(key, 1, 0, make_block(h.app, 1, 0, key, time_ms=h.clock.time_ms()))
    swapped = make_block(h.app, 1, 0, key, salt=5, time_ms=h.clock.time_ms())
    forged = dataclasses.replace(genuine, block=swapped)
    h.deliver(forged, peer="forger")
    assert [peer for peer, _ in h.bad_peers] == ["forger"]
    assert "bad signature" in h.bad_peers[0][1]
    assert h.engine.proposals == {} and h.transport.votes(PV) == []
    h.deliver(genuine, peer="proposer")
    assert [v.block_hash for v in h.transport.votes(PV)] == [genuine.block.hash]


def test_a_proposal_carrying_a_block_of_another_height_is_refused(tmp_path):
    # Signed by the scheduled proposer, but the block inside is for height 2: refused and
    # reported, so it takes neither the round's slot nor room among the height's blocks.
    h = make_engine(tmp_path)
    key = proposer(1, 0)
    block = make_block(h.app, 1, 0, key, time_ms=h.clock.time_ms())
    elsewhere = Block(dataclasses.replace(block.header, height=2), ())
    h.deliver(sign_proposal(key, 1, 0, elsewhere), peer="proposer")
    assert [peer for peer, _ in h.bad_peers] == ["proposer"]
    assert "carries block 2" in h.bad_peers[0][1]
    assert h.engine.proposals == {} and h.transport.votes(PV) == []
    h.deliver(sign_proposal(key, 1, 0, block), peer="proposer")
    assert [v.block_hash for v in h.transport.votes(PV)] == [block.hash]


# --- anything a byzantine producer and any member send --------------------------------

BYZANTINE = OTHERS[0]
HONEST = OTHERS[1:]
STRANGER = PrivateKey(b"\x42" * 32)

_actions = st.one_of(
    # The byzantine producer proposes in a round of its own (or anyone's), at a nearby
    # height: a block as built (another one each time: it equivocates), with another
    # body, at another height, dated far ahead, in another producer's name, or as a
    # re-proposal.
    st.tuples(
        st.just("propose"),
        st.sampled_from([0, 0, 0, -1, 1]),
        st.integers(0, 2),
        st.booleans(),
        st.sampled_from(["built", "built", "body", "height", "time", "producer", "pol"]),
        st.integers(0, 3),
    ),
    # It votes anything, anywhere near.
    st.tuples(
        st.just("vote"),
        st.integers(-1, 2),
        st.integers(0, 5),
        st.sampled_from([PV, PC]),
        st.sampled_from(["nil", "known", "random"]),
    ),
    # Any member relays a forgery, or a stranger's signed vote.
    st.tuples(st.just("forged"), st.integers(-1, 1), st.integers(0, 3), st.sampled_from([PV, PC])),
    st.tuples(
        st.just("stranger"), st.integers(-1, 1), st.integers(0, 3), st.sampled_from([PV, PC])
    ),
    # A certificate with the byzantine signature and forged ones.
    st.tuples(st.just("certificate"), st.integers(0, 3)),
    st.tuples(st.just("sync"), st.integers(0, 4), st.booleans()),
    # The honest producers take their next step in a round by the rules (often: most of
    # what a node hears is honest): propose in their own rounds, prevote, precommit.
    *[st.tuples(st.just("honest"), st.sampled_from([0, 0, 0, 1, -1]), st.just(False))] * 4,
    st.tuples(st.just("honest"), st.just(0), st.just(True)),
    st.tuples(st.just("time"), st.sampled_from([1, 100, 500, 2_000, 10_000])),
    # This node crashes and restarts: the WAL's unsynced tail lost, or not.
    st.tuples(st.just("crash"), st.booleans()),
)


class _Fuzz:
    """One engine ("me"), one byzantine producer, and two honest ones that follow the
    algorithm together (prevote a valid proposal unless locked on another, precommit a
    polka and lock on it, nil otherwise), seeing the votes the engine sees."""

    def __init__(self, path) -> None:
        self.path = path
        self.h = make_engine(path, with_wal=True)
        self.signed: dict[tuple[int, int, int], bytes] = {}
        # Blocks built as the application would (valid), by height.
        self.valid: dict[bytes, Block] = {}
        self.lock: tuple[int, int, bytes] | None = None

    def built(self, height: int, round_: int, key, salt: int) -> Block:
        app = self.h.app
        if height != app.height() + 1:
            # Not on our head: still a block, of the height asked.
            base = make_block(app, app.height() + 1, round_, key, salt=salt)
            return Block(dataclasses.replace(base.header, height=height), ())
        block = make_block(app, height, round_, key, salt=salt, time_ms=self.h.clock.time_ms())
        self.valid[block.hash] = block
        return block

    def is_valid(self, block: Block) -> bool:
        """As an honest producer judges a new block: valid, and dated close to its clock."""
        ahead = block.header.time_ms - self.h.clock.time_ms()
        return self.h.app.validate(block) and ahead <= SYNCHRONY.precision_ms

    def honest(self, round_: int, timed_out: bool) -> None:
        """The honest producers' next step in ``round_``: propose if it is theirs, prevote
        once the proposal is in (nil if ``timed_out`` without one), precommit once +2/3
        prevoted (nil if ``timed_out`` without that). Each step signed once."""
        engine = self.h.engine
        height = engine.height
        key = proposer(height, round_)
        if key in HONEST and (height, round_, 0) not in self.signed:
            block = self.built(height, round_, key, 0)
            self.signed[(height, round_, 0)] = block.hash
            self.h.deliver(sign_proposal(key, height, round_, block), peer="honest")
        elif (height, round_, int(PV)) not in self.signed:
            p = engine.proposals.get(round_)
            if p is not None or timed_out:
                self.sign(height, round_, PV, NIL if p is None else self.prevote_choice(p))
        elif (height, round_, int(PC)) not in self.signed:
            if engine.votes.two_thirds_any(round_, PV) or timed_out:
                polka = engine.votes.majority(round_, PV)
                held = [p.block for p in engine.proposals.values() if p.block.hash == polka]
                choice = NIL
                if polka and held and self.is_valid(held[0]):
                    choice = polka
                    self.lock = (height, round_, polka)
                self.sign(height, round_, PC, choice)

    def prevote_choice(self, p: Proposal) -> bytes:
        height = self.h.engine.height
        block = p.block
        lock = self.lock if self.lock is not None and self.lock[0] == height else None
        if block.header.height != height or not self.is_valid(block):
            return NIL
        if p.pol_round is None:
            fresh = block.header.round == p.round and block.header.producer == p.proposer
            return block.hash if fresh and (lock is None or lock[2] == block.hash) else NIL
        if lock is not None and lock[2] == block.hash:
            return block.hash
        polka = self.h.engine.votes.majority(p.pol_round, PV)
        if polka == block.hash and (lock is None or lock[1] <= p.pol_round):
            return block.hash
        return NIL

    def sign(self, height: int, round_: int, vote_type: VoteType, choice: bytes) -> None:
        self.signed[(height, round_, int(vote_type))] = choice
        for k in HONEST:
            self.h.deliver(vote(k, vote_type, height, round_, choice), peer="honest")

    def run(self, action) -> None:
        h, kind = self.h, action[0]
        height = h.engine.height
        if kind == "propose":
            _, dh, nth, own_round, how, salt = action
            at = max(1, height + dh)
            # The byzantine producer's next rounds from ours on (or any round near it).
            start = max(0, h.engine.round - 1)
            rounds = [r for r in range(start, start + 12) if proposer(at, r) == BYZANTINE]
            round_ = rounds[nth] if own_round else start + nth
            pol = None
            if how == "pol" and round_ > 0:
                pol = salt % round_
                earlier = [b for b in self.valid.values() if b.header.height == at]
                block = earlier[0] if earlier else self.built(at, pol, proposer(at, pol), salt)
            elif how == "producer":
                # Signed by the byzantine producer, built in an honest one's name.
                block = self.built(at, round_, HONEST[salt % 2], salt)
            else:
                block = self.built(at, round_, BYZANTINE, salt)
            if how == "body":
                block = Block(block.header, (b"smuggled",))
            elif how == "height":
                block = Block(dataclasses.replace(block.header, height=at + 1), block.txs)
            elif how == "time":
                block = Block(dataclasses.replace(block.header, time_ms=MAX_TIME_MS), block.txs)
            h.deliver(sign_proposal(BYZANTINE, at, round_, block, pol), peer="byzantine")
        elif kind == "vote":
            _, dh, round_, vote_type, what = action
            at = max(1, height + dh)
            target = {
                "nil": NIL,
                "known": next(iter(self.valid), NIL),
                "random": bytes([round_ + 1]) * 32,
            }[what]
            h.deliver(vote(BYZANTINE, vote_type, at, round_, target), peer="byzantine")
        elif kind in ("forged", "stranger"):
            _, dh, round_, vote_type = action
            at = max(1, height + dh)
            if kind == "forged":
                good = vote(HONEST[round_ % 2], vote_type, at, round_, NIL)
                h.deliver(dataclasses.replace(good, signature=bytes(64)), peer="relay")
            else:
                h.deliver(vote(STRANGER, vote_type, at, round_, NIL), peer="relay")
        elif kind == "certificate":
            _, round_ = action
            block = self.built(height, round_, proposer(height, round_), 7)
            commit = make_commit([BYZANTINE], CHAIN, height, round_, block.hash)
            forged = [
                dataclasses.replace(sig, signature=bytes(64))
                for sig in make_commit(HONEST, CHAIN, height, round_, block.hash).signatures
            ]
            sigs = tuple(sorted((*commit.signatures, *forged), key=lambda sig: sig.validator))
            commit = dataclasses.replace(commit, signatures=sigs)
            h.deliver(FinalizedBlock(block, commit, latest=height + 1), peer="certifier")
        elif kind == "sync":
            _, at, with_hash = action
            block_hash = next(iter(self.valid), NIL) if with_hash else NIL
            h.deliver(SyncRequest(at, block_hash), peer="behind")
        elif kind == "honest":
            self.honest(max(0, h.engine.round + action[1]), action[2])
        elif kind == "crash":
            self.restart(lose_tail=action[1])
        else:
            h.clock.advance(action[1])

    def restart(self, *, lose_tail: bool) -> None:
        """A crash: what the WAL had not synced is lost (or not), the timers are gone;
        then a new engine over the same application, privval file and WAL."""
        h = self.h
        wal = h.engine.wal
        assert wal is not None
        synced = wal.synced_size
        wal.close()
        if lose_tail:
            os.truncate(wal.path, synced)
        h.clock.pending.clear()
        engine = ConsensusEngine(
            chain_id=CHAIN,
            app=h.app,
            transport=h.transport,
            clock=h.clock,
            privval=PrivValidator(ME, CHAIN, self.path / "privval"),
            wal=WAL(self.path / "wal", CHAIN),
            config=CONFIG,
            on_evidence=h.evidence.append,
            on_bad_peer=lambda peer, reason: h.bad_peers.append((peer, reason)),
            on_missing_block=lambda height, block_hash: h.missing.append((height, block_hash)),
        )
        self.h = dataclasses.replace(h, engine=engine)
        engine.start()


@settings(max_examples=200, deadline=None)
@given(st.lists(_actions, min_size=20, max_size=80))
def test_nothing_a_byzantine_producer_and_any_member_send_halts_the_engine(actions):
    # Fewer than 1/3 byzantine (one of four), any member relaying anything, this node
    # crashing now and then: the engine never halts (each of its halts says more than
    # 1/3 are faulty, or it is broken), never signs two things at one step (across its
    # restarts too), and commits one block per height.
    with tempfile.TemporaryDirectory() as path:
        fuzz = _Fuzz(Path(path))
        for action in actions:
            fuzz.run(action)
            assert fuzz.h.engine.halted is None, action
        own: dict[tuple[int, int, int], bytes] = {}
        for _, m in fuzz.h.transport.sent:
            if isinstance(m, Vote) and m.validator == ME.public_key:
                assert own.setdefault((m.type, m.height, m.round), m.block_hash) == m.block_hash
            elif isinstance(m, Proposal) and m.proposer == ME.public_key:
                assert own.setdefault((0, m.height, m.round), m.block.hash) == m.block.hash
        blocks = fuzz.h.app.blocks
        assert [b.header.height for b in blocks] == list(range(1, len(blocks) + 1))
        assert all(b.hash in fuzz.valid or b in fuzz.h.app.blocks for b in blocks)
