"""The wait after a commit (the block interval) and when it may run from round 0's start."""

from __future__ import annotations

from consensus import ValidatorSet, verify_commit
from consensus.bft import Step
from core import Block, Commit, VoteType
from tests.consensus.helpers import (
    CHAIN,
    CONFIG,
    ME,
    OTHERS,
    ToyApp,
    make_block,
    make_engine,
    proposer,
    sign_proposal,
)

PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
SOLO = ValidatorSet.of([ME.public_key])


class SoloApp(ToyApp):
    """A chain with one producer ("me"): every certificate holds every precommit."""

    def __init__(self, build_ms: int = 0) -> None:
        super().__init__()
        self.build_ms = build_ms
        self.clock = None

    def validators(self, height: int) -> ValidatorSet:
        return SOLO

    def propose(self, height: int, round_: int, time_ms: int) -> Block:
        if self.clock is not None:
            # Building the block takes time (the engine waits on it).
            self.clock.now_ms += self.build_ms
        return make_block(self, height, round_, self.key, time_ms=time_ms)

    def validate(self, block: Block) -> bool:
        self.validated.append(block.hash)
        return True

    def commit(self, block: Block, commit: Commit) -> None:
        verify_commit(commit, CHAIN, block.header.height, block.hash, SOLO)
        self.blocks.append(block)
        self.commits.append(commit)


def _solo(tmp_path, build_ms: int):
    app = SoloApp(build_ms)
    h = make_engine(tmp_path, app=app, start=False)
    app.clock = h.clock
    h.engine.start()
    return h


def test_full_certificate_counts_the_interval_from_round_zero(tmp_path):
    interval = CONFIG.timeout_commit_ms
    h = _solo(tmp_path, build_ms=interval // 4)
    # Height 1 committed at once, a quarter interval after its round 0 began.
    assert h.app.height() == 1 and len(h.app.commits[0].signatures) == 1
    assert h.clock.delays[-1] == interval - interval // 4
    h.clock.advance(interval - interval // 4 - 1)
    assert (h.engine.height, h.step) == (2, Step.NEW_HEIGHT)
    # Round 0 of height 2 starts one interval after round 0 of height 1, and so on.
    h.clock.advance(1)
    assert h.app.height() == 2
    assert h.clock.delays[-1] == interval - interval // 4


def test_block_slower_than_the_interval_is_followed_at_once(tmp_path):
    interval = CONFIG.timeout_commit_ms
    h = _solo(tmp_path, build_ms=interval + 50)
    assert h.app.height() == 1
    assert h.clock.delays[-1] == 0
    h.clock.advance(0)
    assert h.app.height() == 2


def test_idle_lone_validator_keeps_one_block_per_interval(tmp_path):
    interval = CONFIG.timeout_commit_ms
    h = _solo(tmp_path, build_ms=0)
    h.clock.advance(5 * interval)
    # Empty blocks commit at once; the next one still waits a whole interval.
    assert h.app.height() == 6
    assert [d for d in h.clock.delays if d != CONFIG.timeout_propose_ms] == [interval] * 6


def test_missing_precommit_waits_the_whole_interval_after_the_commit(tmp_path):
    h = make_engine(tmp_path)
    key = proposer(1, 0)
    block = make_block(h.app, 1, 0, key)
    h.deliver(sign_proposal(key, 1, 0, block))
    h.votes_from(OTHERS, PV, 0, block.hash)
    h.clock.advance(150)
    # Me and two others: +2/3, but one producer's precommit is not in the certificate.
    h.votes_from(OTHERS[:2], PC, 0, block.hash)
    assert h.app.height() == 1 and len(h.app.commits[0].signatures) == 3
    assert h.clock.delays[-1] == CONFIG.timeout_commit_ms
    h.clock.advance(CONFIG.timeout_commit_ms - 1)
    assert (h.engine.height, h.step) == (2, Step.NEW_HEIGHT)
    h.clock.advance(1)
    assert (h.engine.height, h.engine.round, h.step) == (2, 0, Step.PROPOSE)
