"""The state machine driven by hand: one engine ("me"), the tests play the other three."""

from __future__ import annotations

import dataclasses
import os

import pytest

from consensus import make_commit, verify_commit
from consensus.bft import NIL, BFTConfig, ConsensusEngine, Step
from consensus.messages import DuplicateVoteEvidence, FinalizedBlock, SyncRequest
from consensus.privval import PrivValidator
from consensus.wal import WAL
from core import NodeFault, PrivateKey, Vote, VoteType
from tests.consensus.helpers import (
    CHAIN,
    CONFIG,
    KEYS,
    ME,
    OTHERS,
    VALIDATORS,
    ManualClock,
    RecordingTransport,
    ToyApp,
    make_block,
    make_engine,
    proposer,
    sign_proposal,
    vote,
)

PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT


def propose(h, round_, *, salt=0, pol_round=None, block=None):
    """The scheduled proposer's signed proposal (and its block)."""
    key = proposer(h.engine.height, round_)
    block = block or make_block(h.app, h.engine.height, round_, key, salt)
    h.deliver(sign_proposal(key, h.engine.height, round_, block, pol_round))
    return block


def to_next_round(h, round_):
    """Round ``round_`` ends without a decision: nil from the others, then timeouts."""
    h.votes_from(OTHERS, PV, round_, NIL)
    h.votes_from(OTHERS, PC, round_, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, round_))
    assert h.engine.round == round_ + 1


def test_config_timeouts_grow_with_the_round():
    cfg = BFTConfig(timeout_propose_ms=3000, timeout_propose_delta_ms=500)
    assert [cfg.timeout_ms(Step.PROPOSE, r) for r in range(4)] == [3000, 3500, 4000, 4500]
    assert (
        cfg.timeout_ms(Step.PREVOTE_WAIT, 2)
        == cfg.timeout_prevote_ms + 2 * cfg.timeout_prevote_delta_ms
    )
    assert cfg.timeout_ms(Step.PRECOMMIT_WAIT, 3) == (
        cfg.timeout_precommit_ms + 3 * cfg.timeout_precommit_delta_ms
    )
    assert cfg.timeout_ms(Step.NEW_HEIGHT, 9) == cfg.timeout_commit_ms
    # Steps that wait for votes, not for time, have none.
    with pytest.raises(ValueError, match="PREVOTE has no timeout"):
        cfg.timeout_ms(Step.PREVOTE, 0)


def test_engine_schedules_growing_propose_timeouts(tmp_path):
    h = make_engine(tmp_path)
    for r in range(3):
        to_next_round(h, r)
    propose_delays = [d for d in h.clock.delays if d >= CONFIG.timeout_propose_ms]
    assert propose_delays == [
        CONFIG.timeout_propose_ms + r * CONFIG.timeout_propose_delta_ms for r in range(4)
    ]


def test_happy_path_commits_with_a_verifying_certificate(tmp_path):
    h = make_engine(tmp_path)
    assert (h.engine.height, h.engine.round, h.step) == (1, 0, Step.PROPOSE)
    block = propose(h, 0)
    assert [v.block_hash for v in h.transport.votes(PV)] == [block.hash]
    h.votes_from(OTHERS[:2], PV, 0, block.hash)
    assert [v.block_hash for v in h.transport.votes(PC)] == [block.hash]
    assert h.engine.locked_round == 0
    h.votes_from(OTHERS[:2], PC, 0, block.hash)
    assert h.app.height() == 1
    commit = h.app.commits[0]
    verify_commit(commit, CHAIN, 1, block.hash, VALIDATORS)
    signers = [s.validator for s in commit.signatures]
    assert signers == sorted(signers) and len(signers) == 3
    # The next height starts after timeout_commit, with a clean lock.
    assert (h.engine.height, h.step) == (2, Step.NEW_HEIGHT)
    h.clock.advance(CONFIG.timeout_commit_ms)
    assert (h.engine.height, h.engine.round, h.step) == (2, 0, Step.PROPOSE)
    assert h.engine.locked_round == -1 and h.engine.locked_hash is None


def commit_with_a_precommit_missing(h):
    """Height 1, longer than one block interval, decided by 3 of the 4 precommits."""
    block = propose(h, 0)
    h.votes_from(OTHERS, PV, 0, block.hash)
    h.clock.advance(CONFIG.timeout_commit_ms)
    h.votes_from(OTHERS[:2], PC, 0, block.hash)
    return block


def test_the_last_precommit_arriving_after_the_commit_ends_the_wait(tmp_path):
    h = make_engine(tmp_path)
    block = commit_with_a_precommit_missing(h)
    assert (h.engine.height, h.step) == (2, Step.NEW_HEIGHT)
    # A forged precommit does not count as the missing one.
    good = vote(OTHERS[2], PC, 1, 0, block.hash)
    forged = Vote(good.type, 1, 0, block.hash, good.validator, bytes(64))
    h.deliver(forged, peer="forger")
    h.clock.advance(0)
    assert h.step == Step.NEW_HEIGHT
    # Its sender is reported, as for a vote of the current height: else a peer could
    # send such forgeries, each a signature check, at no risk (found by a review).
    assert [peer for peer, _ in h.bad_peers] == ["forger"]
    assert "late precommit 1/0" in h.bad_peers[0][1]
    # Every producer has precommitted: nobody is left to wait for.
    h.deliver(good, peer="honest")
    h.clock.advance(0)
    assert (h.engine.height, h.engine.round) == (2, 0) and h.step != Step.NEW_HEIGHT
    # The application heard of the late precommit once, for the next certificate.
    h.deliver(good)
    assert h.app.late == [good]
    assert [peer for peer, _ in h.bad_peers] == ["forger"]


def test_a_missing_precommit_keeps_the_full_block_interval(tmp_path):
    h = make_engine(tmp_path)
    commit_with_a_precommit_missing(h)
    h.clock.advance(CONFIG.timeout_commit_ms - 1)
    assert h.step == Step.NEW_HEIGHT
    h.clock.advance(1)
    assert h.step != Step.NEW_HEIGHT


def test_block_is_validated_once(tmp_path):
    h = make_engine(tmp_path)
    block = propose(h, 0)
    h.votes_from(OTHERS, PV, 0, block.hash)
    h.votes_from(OTHERS, PC, 0, block.hash)
    assert h.app.validated.count(block.hash) == 1


def test_silent_proposer_costs_one_round(tmp_path):
    h = make_engine(tmp_path)
    h.clock.advance(CONFIG.timeout_propose_ms)
    assert [v.block_hash for v in h.transport.votes(PV, 0)] == [NIL]
    to_next_round(h, 0)
    block = propose(h, 1)
    h.votes_from(OTHERS, PV, 1, block.hash)
    h.votes_from(OTHERS, PC, 1, block.hash)
    assert h.app.height() == 1 and h.app.commits[0].round == 1


def test_invalid_proposal_gets_a_nil_prevote(tmp_path):
    h = make_engine(tmp_path)
    bad = make_block(h.app, 1, 0, proposer(1, 0))
    h.app.invalid.add(bad.hash)
    propose(h, 0, block=bad)
    assert [v.block_hash for v in h.transport.votes(PV, 0)] == [NIL]


def test_proposal_from_wrong_proposer_is_ignored_and_reported(tmp_path):
    h = make_engine(tmp_path)
    wrong = OTHERS[2] if proposer(1, 0) != OTHERS[2] else OTHERS[1]
    block = make_block(h.app, 1, 0, wrong)
    h.deliver(sign_proposal(wrong, 1, 0, block))
    assert h.engine.proposals == {} and h.bad_peers
    assert h.transport.votes(PV) == []


def test_we_propose_in_our_round(tmp_path):
    h = make_engine(tmp_path)
    for r in range(3):
        to_next_round(h, r)
    assert proposer(1, 3) == ME
    [p] = h.transport.proposals()
    assert (p.height, p.round, p.pol_round, p.proposer) == (1, 3, None, ME.public_key)
    p.verify(CHAIN)


# --- locking -------------------------------------------------------------------------


def lock_on_round0(h):
    """Prevote and precommit block B0 in round 0, then let round 0 end undecided."""
    b0 = propose(h, 0)
    h.votes_from(OTHERS[:2], PV, 0, b0.hash)
    assert h.engine.locked_round == 0 and h.engine.locked_hash == b0.hash
    h.votes_from(OTHERS[:2], PC, 0, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    assert h.engine.round == 1
    return b0


def test_locked_node_prevotes_nil_for_another_block_without_pol(tmp_path):
    h = make_engine(tmp_path)
    lock_on_round0(h)
    b1 = propose(h, 1, salt=7)
    assert b1.hash != h.engine.locked_hash
    assert [v.block_hash for v in h.transport.votes(PV, 1)] == [NIL]


def test_locked_node_prevotes_its_locked_block_again(tmp_path):
    h = make_engine(tmp_path)
    b0 = lock_on_round0(h)
    propose(h, 1, block=b0, pol_round=0)
    assert [v.block_hash for v in h.transport.votes(PV, 1)] == [b0.hash]


def test_newer_pol_unlocks(tmp_path):
    h = make_engine(tmp_path)
    lock_on_round0(h)
    # Round 1: another block, we prevote nil; the others form a polka for it, but we
    # only see it after the round is over (no relock in round 1).
    b1 = propose(h, 1, salt=7)
    h.votes_from(OTHERS, PC, 1, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 1))
    assert h.engine.round == 2 and h.engine.locked_round == 0
    h.votes_from(OTHERS, PV, 1, b1.hash)
    # Round 2 re-proposes B1 with its proof of lock from round 1 > our lock round 0.
    propose(h, 2, block=b1, pol_round=1)
    assert [v.block_hash for v in h.transport.votes(PV, 2)] == [b1.hash]


def test_pol_older_than_lock_does_not_unlock(tmp_path):
    h = make_engine(tmp_path)
    # Round 0: a polka for B0 that we see only after the round; we do not lock.
    b0 = make_block(h.app, 1, 0, proposer(1, 0))
    h.clock.advance(CONFIG.timeout_propose_ms)  # prevote nil
    to_next_round(h, 0)
    h.votes_from(OTHERS[:2], PV, 0, b0.hash)
    # Round 1: lock on B1.
    b1 = propose(h, 1, salt=3)
    h.votes_from(OTHERS[:2], PV, 1, b1.hash)
    assert (h.engine.locked_round, h.engine.locked_hash) == (1, b1.hash)
    h.votes_from(OTHERS, PC, 1, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 1))
    # Round 2: B0 with a real but older POL (round 0 < lock round 1): nil.
    propose(h, 2, block=b0, pol_round=0)
    assert [v.block_hash for v in h.transport.votes(PV, 2)] == [NIL]


def test_pol_for_another_block_gets_nil(tmp_path):
    h = make_engine(tmp_path)
    lock_on_round0(h)
    # Round 0's polka is for B0, so a B1 claiming round 0 as its POL is a lie.
    b1 = make_block(h.app, 1, 1, proposer(1, 1), salt=5)
    propose(h, 1, block=b1, pol_round=0)
    assert [v.block_hash for v in h.transport.votes(PV, 1)] == [NIL]


def test_missing_pol_waits_for_the_timeout_then_nil(tmp_path):
    h = make_engine(tmp_path)
    # Round 0 ends with no polka at all.
    h.clock.advance(CONFIG.timeout_propose_ms)
    h.votes_from(OTHERS, PC, 0, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    b1 = make_block(h.app, 1, 1, proposer(1, 1), salt=5)
    propose(h, 1, block=b1, pol_round=0)
    # Incomplete proposal: wait for the POL prevotes...
    assert h.transport.votes(PV, 1) == []
    # ...which never come: nil on timeout.
    h.clock.advance(CONFIG.timeout_ms(Step.PROPOSE, 1))
    assert [v.block_hash for v in h.transport.votes(PV, 1)] == [NIL]


def test_lock_survives_a_restart(tmp_path):
    h = make_engine(tmp_path)
    b0 = lock_on_round0(h)
    # A new process: same privval file, nothing else (no WAL).
    clock, transport = ManualClock(), RecordingTransport()
    engine = ConsensusEngine(
        chain_id=CHAIN,
        app=h.app,
        transport=transport,
        clock=clock,
        privval=PrivValidator(ME, CHAIN, tmp_path / "privval"),
        config=CONFIG,
    )
    engine.start()
    assert (engine.locked_round, engine.locked_hash) == (0, b0.hash)
    # It starts in the round it last signed in, not round 0.
    assert engine.round == 0
    for k in OTHERS:
        engine.deliver(vote(k, PC, 1, 0, NIL), "peer")
    clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    b1 = make_block(h.app, 1, 1, proposer(1, 1), salt=9)
    engine.deliver(sign_proposal(proposer(1, 1), 1, 1, b1), "peer")
    mine = [m for _, m in transport.sent if getattr(m, "validator", None) == ME.public_key]
    assert [(m.round, m.block_hash) for m in mine if m.type == PV and m.round == 1] == [(1, NIL)]


def test_relock_on_polka_in_current_round(tmp_path):
    h = make_engine(tmp_path)
    lock_on_round0(h)
    b1 = propose(h, 1, salt=7)
    h.votes_from(OTHERS, PV, 1, b1.hash)
    # Paper line 36: a polka in our round for a block we hold moves the lock.
    assert (h.engine.locked_round, h.engine.locked_hash) == (1, b1.hash)
    assert [v.block_hash for v in h.transport.votes(PC, 1)] == [b1.hash]


def test_valid_block_is_reproposed_with_its_pol_round(tmp_path):
    h = make_engine(tmp_path)
    b0 = lock_on_round0(h)
    to_next_round(h, 1)
    to_next_round(h, 2)
    assert proposer(1, 3) == ME
    [p] = h.transport.proposals()
    assert (p.round, p.pol_round, p.block.hash) == (3, 0, b0.hash)
    # The proof of lock travels with the proposal.
    pol = [
        m
        for _, m in h.transport.sent
        if getattr(m, "round", None) == 0 and getattr(m, "type", 0) == PV
    ]
    assert {v.validator for v in pol if v.block_hash == b0.hash} >= {
        k.public_key for k in OTHERS[:2]
    }


# --- commit, catch-up and faults ----------------------------------------------------


def test_commit_in_an_earlier_round_is_honoured(tmp_path):
    h = make_engine(tmp_path)
    b0 = propose(h, 0)
    # More than 1/3 are already in round 2: we follow them there.
    h.votes_from(OTHERS[:2], PV, 2, NIL)
    assert h.engine.round == 2
    # Late precommits for round 0 still decide the height.
    h.votes_from(OTHERS, PC, 0, b0.hash)
    assert h.app.height() == 1 and h.app.commits[0].round == 0


def test_missing_block_is_requested_then_committed(tmp_path):
    h = make_engine(tmp_path)
    b0 = make_block(h.app, 1, 0, proposer(1, 0))
    h.votes_from(OTHERS, PC, 0, b0.hash)
    assert h.step == Step.COMMIT and h.app.height() == 0
    assert h.missing == [(1, b0.hash)]
    assert any(isinstance(m, SyncRequest) and m.block_hash == b0.hash for _, m in h.transport.sent)
    h.deliver(sign_proposal(proposer(1, 0), 1, 0, b0))
    assert h.app.height() == 1


def test_future_height_messages_are_buffered_and_replayed(tmp_path):
    h = make_engine(tmp_path)
    b1 = make_block(h.app, 1, 0, proposer(1, 0))
    helper = ToyApp()
    helper.blocks.append(b1)
    b2 = make_block(helper, 2, 0, proposer(2, 0))
    # Height 2 votes arrive before height 1 is done.
    h.votes_from(OTHERS, PV, 0, b2.hash, height=2)
    assert h.engine.height == 1
    propose(h, 0, block=b1)
    h.votes_from(OTHERS, PV, 0, b1.hash)
    h.votes_from(OTHERS, PC, 0, b1.hash)
    assert h.engine.height == 2
    assert h.engine.votes.get(0, PV).count(b2.hash) == 3


def test_catch_up_from_a_finalized_block(tmp_path):
    h = make_engine(tmp_path)
    other = ToyApp()
    b1 = make_block(other, 1, 0, proposer(1, 0))
    commit = make_commit(OTHERS, CHAIN, 1, 0, b1.hash)
    h.deliver(FinalizedBlock(b1, commit, latest=5), peer="p1")
    assert h.app.height() == 1 and h.engine.height == 2
    # The peer is further ahead: ask it for the next block.
    assert ("p1", SyncRequest(2, b"")) in h.transport.sent


def test_finalized_block_with_bad_certificate_is_refused(tmp_path):
    h = make_engine(tmp_path)
    b1 = make_block(ToyApp(), 1, 0, proposer(1, 0))
    commit = make_commit(OTHERS[:1], CHAIN, 1, 0, b1.hash)  # 1 of 4: no quorum
    h.deliver(FinalizedBlock(b1, commit, latest=1), peer="p1")
    assert h.app.height() == 0 and h.bad_peers[0][0] == "p1"


def finalize(h, round_=0):
    """The others vote the round's proposal (ours, if we are its proposer) to a commit."""
    if proposer(h.engine.height, round_) == ME:
        block = h.engine.proposals[round_].block
    else:
        block = propose(h, round_)
    height = h.engine.height
    h.votes_from(OTHERS, PV, round_, block.hash, height=height)
    h.votes_from(OTHERS, PC, round_, block.hash, height=height)
    return block


def served(h, peer):
    return [m for p, m in h.transport.sent if p == peer and isinstance(m, FinalizedBlock)]


def test_peer_behind_gets_the_finalized_block(tmp_path):
    h = make_engine(tmp_path)
    b1 = finalize(h)
    # One height behind right after we moved on: the peer is most likely still
    # committing the block it voted for, so the block is not sent yet.
    h.deliver(vote(OTHERS[0], PV, 1, 3, NIL), peer="slow")
    assert served(h, "slow") == []
    # Still behind a while later: it needs the block.
    h.clock.advance(CONFIG.sync_interval_ms)
    h.deliver(vote(OTHERS[0], PV, 1, 3, NIL), peer="slow")
    [fb] = served(h, "slow")
    assert fb.block.hash == b1.hash and fb.latest == 1


def test_peer_two_heights_behind_gets_the_block_at_once(tmp_path):
    h = make_engine(tmp_path)
    b1 = finalize(h)
    h.clock.advance(CONFIG.timeout_commit_ms)
    finalize(h)
    assert h.engine.height == 3
    h.deliver(vote(OTHERS[0], PV, 1, 0, NIL), peer="far")
    [fb] = served(h, "far")
    assert fb.block.hash == b1.hash and fb.latest == 2


def test_conflicting_votes_become_evidence_once(tmp_path):
    h = make_engine(tmp_path)
    block = propose(h, 0)
    cheat = OTHERS[0]
    h.deliver(vote(cheat, PV, 1, 0, block.hash))
    h.deliver(vote(cheat, PV, 1, 0, NIL))
    h.deliver(vote(cheat, PV, 1, 0, NIL))
    [ev] = h.evidence
    assert isinstance(ev, DuplicateVoteEvidence) and ev.validator == cheat.public_key
    ev.verify(CHAIN, VALIDATORS)


def test_non_validator_votes_are_ignored(tmp_path):
    h = make_engine(tmp_path)
    stranger = PrivateKey(bytes([99]) * 32)
    block = propose(h, 0)
    for _ in range(3):
        h.deliver(vote(stranger, PV, 1, 0, block.hash))
    assert h.engine.votes.get(0, PV).count(block.hash) == 1  # only ours


def test_forged_vote_is_rejected_and_reported(tmp_path):
    h = make_engine(tmp_path)
    good = vote(OTHERS[0], PV, 1, 0, NIL)
    forged = Vote(
        good.type, good.height, good.round, good.block_hash, OTHERS[1].public_key, good.signature
    )
    h.deliver(forged, peer="liar")
    assert h.bad_peers and h.bad_peers[0][0] == "liar"


def test_invalid_block_with_quorum_precommits_halts(tmp_path):
    h = make_engine(tmp_path)
    bad = make_block(h.app, 1, 0, proposer(1, 0))
    h.app.invalid.add(bad.hash)
    h.votes_from(OTHERS, PC, 0, bad.hash)
    with pytest.raises(NodeFault):
        h.deliver(sign_proposal(proposer(1, 0), 1, 0, bad))
    assert h.engine.halted is not None
    with pytest.raises(NodeFault):
        h.deliver(vote(OTHERS[0], PV, 1, 0, NIL))
    assert h.app.height() == 0
    # Its timers (timeouts, the rebroadcast tick) end quietly: the halt was reported
    # once, and a traceback per tick until the process exits would bury it in the log.
    assert h.clock.pending
    h.clock.advance(60_000)
    assert not h.clock.pending and h.app.height() == 0


def test_two_certified_blocks_at_one_height_halt(tmp_path):
    h = make_engine(tmp_path)
    b0 = make_block(h.app, 1, 0, proposer(1, 0))
    b1 = make_block(h.app, 1, 1, proposer(1, 1), salt=1)
    h.votes_from(OTHERS, PC, 0, b0.hash)  # decided, block still missing
    with pytest.raises(NodeFault):
        h.votes_from(OTHERS, PC, 1, b1.hash)


def test_a_peers_certificate_for_another_block_than_our_quorum_halts(tmp_path):
    # +2/3 precommitted B0 (its body still missing), and a peer's certificate finalizes
    # B1 at the same height: more than 1/3 signed both. Committing B1 would fork us off
    # the nodes that commit B0; the engine stops instead.
    h = make_engine(tmp_path)
    b0 = make_block(h.app, 1, 0, proposer(1, 0))
    b1 = make_block(h.app, 1, 1, proposer(1, 1), salt=1)
    h.votes_from(OTHERS, PC, 0, b0.hash)
    assert h.step == Step.COMMIT
    other = FinalizedBlock(b1, make_commit(OTHERS, CHAIN, 1, 1, b1.hash), latest=1)
    with pytest.raises(NodeFault, match="certificates for"):
        h.deliver(other, peer="peer")
    assert h.app.height() == 0 and h.engine.halted is not None


def test_a_peers_certificate_for_the_block_of_our_quorum_commits_it(tmp_path):
    h = make_engine(tmp_path)
    b0 = make_block(h.app, 1, 0, proposer(1, 0))
    h.votes_from(OTHERS, PC, 0, b0.hash)
    h.deliver(FinalizedBlock(b0, make_commit(OTHERS, CHAIN, 1, 0, b0.hash), latest=1), "peer")
    assert h.app.height() == 1 and h.app.blocks == [b0] and h.engine.halted is None


def test_a_certified_block_this_node_finds_invalid_halts_without_committing(tmp_path):
    # +2/3 signed a block our application refuses: we or more than 1/3 are broken, and
    # going on could only build on a state we cannot vouch for.
    h = make_engine(tmp_path)
    bad = make_block(h.app, 1, 0, proposer(1, 0))
    h.app.invalid.add(bad.hash)
    certified = FinalizedBlock(bad, make_commit(OTHERS, CHAIN, 1, 0, bad.hash), latest=1)
    with pytest.raises(NodeFault, match="invalid here"):
        h.deliver(certified, peer="peer")
    assert h.app.height() == 0 and h.engine.halted is not None


class _TrustingApp(ToyApp):
    """Commits whatever certificate it is handed (a node's chain checks it again; this
    one shows what the engine itself lets through)."""

    def commit(self, block, commit):
        self.blocks.append(block)
        self.commits.append(commit)


def test_precommits_a_caller_vouched_for_that_do_not_verify_never_make_a_commit(tmp_path):
    # ``verified=True`` says a caller checked the signatures already (the WAL replay,
    # worker threads). If that was wrong, the certificate built from them fails to
    # verify: the engine halts rather than hand the application a certificate nobody
    # signed.
    h = make_engine(tmp_path, app=_TrustingApp())
    block = propose(h, 0)
    for k in OTHERS:
        good = vote(k, PC, 1, 0, block.hash)
        forged = Vote(good.type, 1, 0, block.hash, good.validator, bytes(64))
        if k is OTHERS[-1]:
            with pytest.raises(NodeFault, match="own certificate does not verify"):
                h.engine.deliver(forged, "peer", verified=True)
        else:
            h.engine.deliver(forged, "peer", verified=True)
    assert h.app.height() == 0 and h.engine.halted is not None


class _ProposesTheWrongHeight(ToyApp):
    def propose(self, height, round_, time_ms):
        self.proposed_times.append(time_ms)
        block = make_block(self, height, round_, self.key, time_ms=time_ms)
        return dataclasses.replace(
            block, header=dataclasses.replace(block.header, height=height + 1)
        )


def test_an_application_proposing_another_height_halts_before_anything_is_signed(tmp_path):
    h = make_engine(tmp_path, app=_ProposesTheWrongHeight())
    for r in range(2):
        to_next_round(h, r)
    h.votes_from(OTHERS, PV, 2, NIL)
    h.votes_from(OTHERS, PC, 2, NIL)
    assert proposer(1, 3) == ME
    # Round 3 is ours: its start finds the application's block for height 2.
    with pytest.raises(NodeFault, match="app proposed height 2, expected 1"):
        h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 2))
    assert h.engine.halted is not None and h.transport.proposals() == []
    # Nothing of round 3 was signed.
    assert PrivValidator(ME, CHAIN, tmp_path / "privval").last_signed[:2] != (1, 3)


def test_a_second_start_is_refused_and_changes_nothing(tmp_path):
    h = make_engine(tmp_path)
    block = propose(h, 0)
    with pytest.raises(NodeFault, match="started twice"):
        h.engine.start()
    assert (h.engine.height, h.engine.round, h.step) == (1, 0, Step.PREVOTE)
    assert h.engine.proposals[0].block == block


class _Loopback(RecordingTransport):
    """A synchronous transport that hands every broadcast straight back to the engine,
    from inside the engine's own call (as a zero-delay network would)."""

    def __init__(self) -> None:
        super().__init__()
        self.engine: ConsensusEngine | None = None
        self.depth = 0
        self.deepest = 0

    def broadcast(self, msg):
        super().broadcast(msg)
        if self.engine is not None:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)
            try:
                self.engine.deliver(msg, "echo")
            finally:
                self.depth -= 1


def test_messages_handed_in_from_inside_the_engine_wait_their_turn(tmp_path):
    # A transport (or app) that delivers while the engine is handling an input does not
    # make it handle two inputs at once: the echo is queued behind the current one.
    transport = _Loopback()
    engine = ConsensusEngine(
        chain_id=CHAIN,
        app=ToyApp(),
        transport=transport,
        clock=ManualClock(),
        privval=PrivValidator(ME, CHAIN, tmp_path / "privval"),
        config=CONFIG,
    )
    transport.engine = engine
    engine.start()
    app = engine.app
    block = make_block(app, 1, 0, proposer(1, 0))
    # Two prevotes first: our own prevote, echoed, completes the polka.
    for k in OTHERS[:2]:
        engine.deliver(vote(k, PV, 1, 0, block.hash), "p")
    engine.deliver(sign_proposal(proposer(1, 0), 1, 0, block), "p")
    for k in OTHERS[:2]:
        engine.deliver(vote(k, PC, 1, 0, block.hash), "p")
    assert app.height() == 1 and engine.halted is None
    # Each own vote was signed and sent once, and its echo counted once.
    mine = [m for _, m in transport.sent if getattr(m, "validator", None) == ME.public_key]
    assert [(m.type, m.block_hash) for m in mine] == [(PV, block.hash), (PC, block.hash)]
    assert app.commits[0].round == 0 and len(app.commits[0].signatures) == 3
    # Nothing was sent while an echo was being handed in: it waited for its turn.
    assert transport.deepest == 1


def test_observer_follows_without_signing(tmp_path):
    app = ToyApp()
    clock, transport = ManualClock(), RecordingTransport()
    engine = ConsensusEngine(
        chain_id=CHAIN, app=app, transport=transport, clock=clock, config=CONFIG
    )
    engine.start()
    block = make_block(app, 1, 0, proposer(1, 0))
    engine.deliver(sign_proposal(proposer(1, 0), 1, 0, block), "p")
    for k in KEYS[1:]:
        engine.deliver(vote(k, PC, 1, 0, block.hash), "p")
    assert app.height() == 1
    assert not any(getattr(m, "validator", None) == ME.public_key for _, m in transport.sent)


def test_f_plus_one_votes_in_a_later_round_skip_ahead(tmp_path):
    h = make_engine(tmp_path)
    h.deliver(vote(OTHERS[0], PV, 1, 5, NIL))
    assert h.engine.round == 0
    h.deliver(vote(OTHERS[1], PV, 1, 5, NIL))
    assert h.engine.round == 5


def test_votes_far_in_future_rounds_are_bounded(tmp_path):
    h = make_engine(tmp_path)
    for r in range(10, 20):
        h.deliver(vote(OTHERS[0], PV, 1, r, NIL))
    kept = {r for r in h.engine.votes.rounds_of(OTHERS[0].public_key)}
    assert len(kept) == CONFIG.max_future_rounds_per_validator


def test_restart_replays_wal_and_resends_same_vote(tmp_path):
    h = make_engine(tmp_path, with_wal=True)
    b0 = propose(h, 0)
    h.votes_from(OTHERS[:1], PV, 0, b0.hash)
    [my_prevote] = h.transport.votes(PV, 0)
    h.engine.wal.close()
    # Restart: the WAL gives back the proposal and the votes; privval the own vote.
    clock, transport = ManualClock(), RecordingTransport()
    engine = ConsensusEngine(
        chain_id=CHAIN,
        app=h.app,
        transport=transport,
        clock=clock,
        privval=PrivValidator(ME, CHAIN, tmp_path / "privval"),
        wal=WAL(tmp_path / "wal", CHAIN),
        config=CONFIG,
    )
    engine.start()
    assert engine.proposals[0].block.hash == b0.hash
    assert engine.votes.get(0, PV).count(b0.hash) == 2
    # The last own vote (from privval) is sent again, identical.
    assert ("*", my_prevote) in transport.sent
    # One more prevote completes the polka seen before the crash: we lock and precommit.
    engine.deliver(vote(OTHERS[1], PV, 1, 0, b0.hash), "p")
    assert engine.locked_hash == b0.hash
    assert any(
        getattr(m, "type", 0) == PC and getattr(m, "validator", b"") == ME.public_key
        for _, m in transport.sent
    )


# --- re-sending ----------------------------------------------------------------------


def _stalled_in_prevote(tmp_path):
    """Round 0 with the proposal in hand, our prevote sent, and no quorum of prevotes."""
    cfg = dataclasses.replace(CONFIG, rebroadcast_ms=100, stall_relay_periods=2)
    h = make_engine(tmp_path, config=cfg)
    block = propose(h, 0)
    h.votes_from(OTHERS[:1], PV, 0, block.hash)
    assert h.step == Step.PREVOTE
    h.transport.sent.clear()
    return h, block


def test_votes_are_resent_every_tick_a_proposal_with_backoff(tmp_path):
    h, block = _stalled_in_prevote(tmp_path)
    h.clock.advance(3000)
    assert h.step == Step.PREVOTE
    # Our prevote goes out on every tick (small, and peers may have lost it).
    assert len(h.transport.votes(PV, 0)) >= 25
    # The proposal is relayed too (peers may lack it), but its copies back off:
    # a whole block sent every tick cost loaded nodes more than admission.
    copies = [p for p in h.transport.proposals() if p.block.hash == block.hash]
    assert 2 <= len(copies) <= 5, len(copies)


def test_own_proposal_resends_back_off(tmp_path):
    cfg = dataclasses.replace(CONFIG, rebroadcast_ms=100)
    h = make_engine(tmp_path, config=cfg)
    for r in range(3):
        to_next_round(h, r)
    [own] = h.transport.proposals()
    h.transport.sent.clear()
    h.clock.advance(2000)
    assert h.engine.round == 3
    copies = [p for p in h.transport.proposals() if p == own]
    assert 1 <= len(copies) <= 4, len(copies)


class _SlowValidation(ToyApp):
    """Validating a block takes longer than ``timeout_propose``: time passes on the
    engine's one thread, and the timers due meanwhile fire only after it returns."""

    def __init__(self, clock_of) -> None:
        super().__init__()
        self.clock_of = clock_of

    def validate(self, block):
        self.clock_of().now_ms += 3 * CONFIG.timeout_propose_ms
        return super().validate(block)


def test_a_proposal_that_arrived_in_time_is_prevoted_however_long_it_takes_to_validate(
    tmp_path,
):
    # timeout_propose waits for the proposal's arrival, not for its verification: a
    # valid big block that outlasts it does not cost the round.
    holder: list = []
    h = make_engine(tmp_path, app=_SlowValidation(lambda: holder[0]), start=False)
    holder.append(h.clock)
    h.engine.start()
    h.clock.advance(CONFIG.timeout_propose_ms - 1)
    block = propose(h, 0)
    h.clock.advance(0)
    assert [v.block_hash for v in h.transport.votes(PV, 0)] == [block.hash]
    h.votes_from(OTHERS, PV, 0, block.hash)
    h.votes_from(OTHERS, PC, 0, block.hash)
    assert h.app.height() == 1 and h.app.commits[0].round == 0


# --- memory of a height that takes many rounds ---------------------------------------


def _stalled_rounds(h, rounds, txs=()):
    """Rounds without a decision, each with a new block (of ``txs``) from its proposer
    (our own rounds' blocks come from the engine itself)."""
    for r in range(h.engine.round, h.engine.round + rounds):
        key = proposer(1, r)
        if key != ME:
            block = make_block(h.app, 1, r, key, time_ms=h.clock.time_ms(), txs=txs)
            h.deliver(sign_proposal(key, 1, r, block))
        to_next_round(h, r)


def test_a_height_of_failing_rounds_keeps_a_bounded_number_of_proposals(tmp_path):
    # Rounds that keep failing while a quorum is up: a new block nearly every round,
    # megabytes each, and all of them were kept until the height ended.
    h = make_engine(tmp_path)
    kept = CONFIG.kept_proposal_rounds
    for _ in range(4):
        _stalled_rounds(h, kept)
        # The rounds kept, the current one and the next.
        assert len(h.engine.proposals) <= kept + 2
    assert h.engine.round == 4 * kept


def test_a_locked_block_is_kept_however_many_rounds_go_by(tmp_path):
    h = make_engine(tmp_path)
    b0 = lock_on_round0(h)
    _stalled_rounds(h, 3 * CONFIG.kept_proposal_rounds)
    assert h.engine.proposals[0].block.hash == b0.hash
    assert h.engine.locked_hash == b0.hash and h.engine.valid_block == b0


def test_a_block_let_go_that_late_precommits_decide_is_fetched_and_committed(tmp_path):
    h = make_engine(tmp_path)
    b0 = propose(h, 0)
    # More than 1/3 are rounds ahead: we follow them there, and round 0's block, with
    # no majority, is let go.
    h.votes_from(OTHERS[:2], PV, CONFIG.kept_proposal_rounds + 2, NIL)
    assert 0 not in h.engine.proposals
    h.votes_from(OTHERS, PC, 0, b0.hash)
    assert h.app.height() == 0 and h.missing == [(1, b0.hash)]
    h.deliver(sign_proposal(proposer(1, 0), 1, 0, b0))
    assert h.app.height() == 1 and h.app.commits[0].round == 0


def test_the_wal_of_a_height_of_many_rounds_stays_bounded_and_replays_the_lock(tmp_path):
    # Every proposal of every round was logged: a day of such a height is gigabytes,
    # all read back at a restart.
    h = make_engine(tmp_path, with_wal=True)
    b0 = lock_on_round0(h)
    tx = bytes(16 * 1024)
    block_bytes = 4 * len(tx)
    kept = CONFIG.kept_proposal_rounds
    for _ in range(15):
        _stalled_rounds(h, kept, txs=(tx,) * 4)
        # Twice what is held (the rounds kept, the current and the next), and a block.
        assert os.path.getsize(h.engine.wal.path) < (2 * (kept + 2) + 4) * block_bytes
    h.engine.wal.close()
    # A restart finds the locked block and the polka behind the lock in the log.
    engine = make_engine(tmp_path, app=h.app, with_wal=True).engine
    assert engine.proposals[0].block.hash == b0.hash
    assert engine.votes.get(0, PV).count(b0.hash) == 3
    assert (engine.locked_hash, engine.valid_block) == (b0.hash, b0)


def test_old_rounds_proposals_relayed_again_are_not_kept_again(tmp_path):
    # Any member holds every proposal it was sent and may relay the old rounds' ones
    # again: each was taken back as new (a signature check, a tx root over its block,
    # a WAL append) and held until the next round, so the bound above held nothing back.
    h = make_engine(tmp_path, with_wal=True)
    kept = CONFIG.kept_proposal_rounds
    tx = bytes(16 * 1024)
    block_bytes = 4 * len(tx)
    relayed = []
    for r in range(3 * kept):
        key = proposer(1, r)
        if key != ME:
            block = make_block(h.app, 1, r, key, time_ms=h.clock.time_ms(), txs=(tx,) * 4)
            relayed.append(sign_proposal(key, 1, r, block))
            h.deliver(relayed[-1])
        to_next_round(h, r)
    relayed += h.transport.proposals()
    wal_size = os.path.getsize(h.engine.wal.path)
    for _ in range(3):
        for p in relayed:
            h.deliver(p, "relay")
    assert len(h.engine.proposals) <= kept + 2
    assert os.path.getsize(h.engine.wal.path) < wal_size + block_bytes
    assert h.bad_peers == []
