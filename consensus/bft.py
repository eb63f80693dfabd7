"""BFT finality: the Tendermint state machine (propose, prevote, precommit, commit).

The algorithm is Algorithm 1 of "The latest gossip on BFT consensus" (Buchman,
Kwon, Milosevic); the code has cometbft's shape. One owner (``ConsensusEngine``)
consumes one queue of inputs: peer messages, its own messages and timeouts. Each
step is a method ``enter_<step>(height, round)`` that returns early on stale input;
after every input ``_progress`` re-checks the paper's "upon" rules, so no rule
depends on the order in which messages arrived.

Clock, transport and application are injected through small Protocols, and the
engine uses no wall clock and no randomness, so the same code runs in the node
and in the deterministic simulation (tests/sim). Everything runs on the caller's
thread: call ``deliver`` and the clock callbacks from one thread (or task) only.

A broken invariant (an invalid block with +2/3 precommits, two certified blocks
at one height, a certificate that does not verify) raises ``NodeFault`` and halts
the engine: continuing could only make things worse.

Around the engine: ``engine_config`` (settings), ``engine_io`` (the Protocols and the
queued inputs), ``vote_sets``, ``engine_catchup`` (peers at other heights) and
``engine_gossip`` (re-sending). Their public names are re-exported here.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from consensus.engine_catchup import CatchUp
from consensus.engine_config import BFTConfig, Step, Synchrony
from consensus.engine_gossip import Gossip
from consensus.engine_io import (
    Application,
    Clock,
    LoopClock,
    Peer,
    TimeoutEvent,
    Transport,
    WallClock,
    _Input,
    _ProposeDue,
    _Received,
    _Tick,
)
from consensus.messages import DuplicateVoteEvidence, FinalizedBlock, Message, Proposal, SyncRequest
from consensus.privval import DoubleSignRefused, PrivValidator
from consensus.validation import validate_tx_root
from consensus.validators import ValidatorSet, verify_commit
from consensus.vote_sets import MAX_VOTES_PER_VALIDATOR, NIL, HeightVoteSet, VoteSet, one_third_plus
from consensus.wal import WAL
from core import (
    Block,
    Commit,
    CommitSig,
    Invalid,
    InvalidBlock,
    InvalidSignature,
    NodeFault,
    Vote,
    VoteType,
)

__all__ = [
    # Defined here.
    "ConsensusEngine",
    # Moved out of this module, still importable from here.
    "MAX_VOTES_PER_VALIDATOR",
    "NIL",
    "Application",
    "BFTConfig",
    "Clock",
    "HeightVoteSet",
    "LoopClock",
    "WallClock",
    "Peer",
    "Step",
    "Synchrony",
    "TimeoutEvent",
    "Transport",
    "VoteSet",
    "one_third_plus",
]

log = logging.getLogger("consensus.bft")


# --- the engine --------------------------------------------------------------------


class ConsensusEngine:
    """One validator's (or observer's, without ``privval``) view of BFT finality."""

    def __init__(
        self,
        *,
        chain_id: str,
        app: Application,
        transport: Transport,
        clock: Clock,
        privval: PrivValidator | None = None,
        wal: WAL | None = None,
        config: BFTConfig | None = None,
        on_evidence: Callable[[DuplicateVoteEvidence], None] | None = None,
        on_missing_block: Callable[[int, bytes], None] | None = None,
        on_bad_peer: Callable[[Peer, str], None] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.app = app
        self.transport = transport
        self.clock = clock
        self.privval = privval
        self.wal = wal
        self.config = config or BFTConfig()
        self.on_evidence = on_evidence
        self.on_missing_block = on_missing_block
        self.on_bad_peer = on_bad_peer
        self._queue: deque[_Input] = deque()
        self._draining = False
        self._halted: BaseException | None = None
        self._started = False
        self._catchup = CatchUp(
            chain_id=chain_id,
            app=app,
            transport=transport,
            clock=clock,
            config=self.config,
            bad_peer=self._bad_peer,
        )
        self._gossip = Gossip(transport=transport, clock=clock, config=self.config)
        self._where: tuple[int, int, Step] = (0, 0, Step.NEW_HEIGHT)
        self._where_since = clock.now()
        # The certificate of the block finalized last, its producers and when its
        # round 0 began; who has precommitted that block in that round so far (the
        # certificate and late precommits); the round the current height starts in.
        self._last: tuple[Commit, ValidatorSet, int | None] | None = None
        self._last_signers: set[bytes] = set()
        self._start_round = 0
        # Replaced at every height by the application's (chain parameters).
        self.synchrony = Synchrony(precision_ms=0, message_delay_ms=0)
        # Block time of the last committed block (None: not known, e.g. at genesis).
        self._parent_time_ms: int | None = None
        # The block this node is locked on (set per height by ``_reset_height``).
        self.locked_hash: bytes | None = None
        # Height 0 is a placeholder until start() asks the application where it is.
        self._reset_height(0, ValidatorSet((bytes(32),)))

    # --- public surface --------------------------------------------------------------

    @property
    def halted(self) -> BaseException | None:
        """The fault that stopped the engine, if any."""
        return self._halted

    @property
    def is_validator(self) -> bool:
        return self.privval is not None and self.privval.public_key in self.validators

    def start(self) -> None:
        """Begin at the height after the application's last committed block."""
        if self._started:
            raise NodeFault("consensus engine started twice")
        self._started = True
        last = self.app.committed(self.app.height())
        if last is not None:
            self._parent_time_ms = last[0].header.time_ms
        self._run(lambda: self._enter_new_height(self.app.height() + 1, wait=False))
        if self.config.rebroadcast_ms > 0:
            self._later(self.config.rebroadcast_ms, _Tick())

    def deliver(
        self,
        msg: Message,
        peer: Peer | None = None,
        *,
        verified: bool = False,
        received_ms: int | None = None,
    ) -> None:
        """Hand in a message from ``peer``. ``verified`` says its signature was checked
        already (e.g. on the transport's worker threads). ``received_ms`` is the
        ``clock.time_ms()`` reading when it arrived, taken by a caller that hands it
        over later (from another thread); by default it is read here. A proposal is
        judged by when it arrived, not by when the engine got to it."""
        if received_ms is None:
            received_ms = self.clock.time_ms()
        self._submit(_Received(msg, peer, verified, received_ms=received_ms))

    # --- the queue -------------------------------------------------------------------

    def _submit(self, item: _Input) -> None:
        self._queue.append(item)
        self._run(None)

    def _later(self, delay_ms: int, item: _Input) -> None:
        """Submit ``item`` in ``delay_ms`` (a timeout, the rebroadcast tick)."""
        self.clock.schedule(delay_ms, lambda: self._fire(item))

    def _fire(self, item: _Input) -> None:
        # A halted engine was reported once; its timers end quietly rather than raise
        # (and log a traceback) every rebroadcast interval until the process exits.
        if self._halted is None:
            self._submit(item)

    def _run(self, first: Callable[[], None] | None) -> None:
        if self._halted is not None:
            raise NodeFault("consensus engine halted") from self._halted
        if self._draining:
            # Re-entrant call (an own message, a synchronous transport): the loop below
            # will get to it; inputs are handled strictly one at a time, in order.
            return
        self._draining = True
        try:
            if first is not None:
                first()
                self._progress()
                self._note_change()
            while self._queue:
                self._handle(self._queue.popleft())
                self._progress()
                self._note_change()
        except BaseException as exc:
            # A half-applied input leaves the state machine in an unknown state: stop here.
            self._halted = exc
            log.critical("consensus halted at %d/%d: %s", self.height, self.round, exc)
            raise
        finally:
            self._draining = False

    def _note_change(self) -> None:
        where = (self.height, self.round, self.step)
        if where != self._where:
            self._where = where
            self._where_since = self.clock.now()

    def _handle(self, item: _Input) -> None:
        if isinstance(item, TimeoutEvent):
            self._on_timeout(item)
        elif isinstance(item, _Tick):
            self._on_tick()
        elif isinstance(item, _ProposeDue):
            if (item.height, item.round, self.step) == (self.height, self.round, Step.PROPOSE):
                self._decide_proposal(item.height, item.round)
        else:
            self._on_message(item)

    # --- steps -----------------------------------------------------------------------

    def _enter_new_height(self, height: int, *, wait: bool, wait_ms: int | None = None) -> None:
        """Reset for ``height``. Expects the application to have committed ``height - 1``."""
        if self.app.height() != height - 1:
            raise NodeFault(f"entering height {height}, but the app is at {self.app.height()}")
        self._reset_height(height, self.app.validators(height))
        self.synchrony = self.app.synchrony(height)
        if self.wal is not None:
            # After a restart: what we had accepted at this height, in the same order.
            for msg in self.wal.start_height(height):
                self._queue.append(_Received(msg, None, True, replayed=True))
        start_round = 0
        if self.privval is not None:
            # After a restart: keep the lock we signed, do not re-enter rounds we left.
            lock = self.privval.lock(height)
            if lock is not None:
                self.locked_round, self.locked_hash = lock.round, lock.block_hash
            last_h, last_r, _ = self.privval.last_signed
            if last_h == height:
                start_round = last_r
            last_vote = self.privval.last_vote()
            if last_vote is not None and last_vote.height == height:
                self._own[(last_vote.type, last_vote.round)] = last_vote
                self._queue.append(_Received(last_vote, None, True))
                self.transport.broadcast(last_vote)
        # Messages that arrived early for this height are handled now, in arrival order.
        self._queue.extend(self._catchup.take_buffered(height))
        self._start_round = start_round
        if wait:
            self._schedule(Step.NEW_HEIGHT, height, start_round, wait_ms)
        else:
            self.enter_new_round(height, start_round)

    def _reset_height(self, height: int, validators: ValidatorSet) -> None:
        self.height = height
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self.validators = validators
        self.votes = HeightVoteSet(self.chain_id, height, validators)
        self.proposals: dict[int, Proposal] = {}
        # Per round: when its proposal arrived (None: replayed, unknown) and whether
        # that was in time (``Synchrony.timely``).
        self._arrival: dict[int, int | None] = {}
        self._timely: dict[int, bool] = {}
        # Blocks by hash; each body was matched to its signed header when it came in.
        self._blocks: dict[bytes, Block] = {}
        self._valid: dict[bytes, bool] = {}
        self.locked_round = -1
        self.locked_hash = None
        self.valid_round = -1
        self.valid_block: Block | None = None
        self.commit_round = -1
        self._precommit_wait_round = -1
        self._own: dict[tuple[int, int], Message] = {}
        # Proposals dropped from memory since the WAL was last rewritten, and the size
        # it must reach before it is rewritten again (``_compact_wal``).
        self._wal_stale = False
        self._wal_rewrite_at = 0
        self._gossip.new_height()
        self._height_started = self.clock.now()
        # When round 0 of this height began (None: not yet, or only later rounds).
        self._round0_started: int | None = None
        self._catchup.new_height(validators)

    def enter_new_round(self, height: int, round_: int) -> None:
        """Start ``round_`` (paper: StartRound). Expects a later round, or the first
        round of a height from NEW_HEIGHT."""
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step != Step.NEW_HEIGHT)
        ):
            return
        log.debug("%d/%d: new round", height, round_)
        if round_ == 0:
            self._round0_started = self.clock.now()
        self.round = round_
        self.step = Step.NEW_ROUND
        self._forget_old_proposals()
        self.enter_propose(height, round_)

    def enter_propose(self, height: int, round_: int) -> None:
        """Propose if scheduled, and give the proposer ``timeout_propose(round)``."""
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PROPOSE)
        ):
            return
        self.round = round_
        self.step = Step.PROPOSE
        self._schedule(Step.PROPOSE, height, round_)
        if self._is_proposer(height, round_):
            self._decide_proposal(height, round_)

    def _decide_proposal(self, height: int, round_: int) -> None:
        assert self.privval is not None
        if self.valid_block is not None:
            # Re-propose the newest block with a polka, with its proof-of-lock round,
            # so validators locked on it can prevote it (paper lines 15-16).
            block, pol_round = self.valid_block, self.valid_round
        else:
            now = self.clock.time_ms()
            parent = self._parent_time_ms
            if parent is not None and now <= parent:
                # Wait for our clock to pass the parent's time rather than date the block
                # parent + 1: that could be up to 2P ahead of the slowest honest clock,
                # which would prevote nil (CometBFT's proposer wait). The parent is final,
                # so at most P ahead of an honest clock: the wait is short.
                wait_ms = parent - now + 1
                log.debug(
                    "%d/%d: proposing in %d ms, after the parent's time", height, round_, wait_ms
                )
                self._later(wait_ms, _ProposeDue(height, round_))
                return
            block, pol_round = self.app.propose(height, round_, now), -1
            # The application must build on our height, or we would sign nonsense.
            if block.header.height != height:
                raise NodeFault(f"app proposed height {block.header.height}, expected {height}")
        self._sync_wal()
        try:
            proposal = self.privval.sign_proposal(
                height, round_, None if pol_round < 0 else pol_round, block
            )
        except DoubleSignRefused as exc:
            log.info(
                "%d/%d: not proposing: %s",
                height,
                round_,
                exc,
                extra={"height": height, "round": round_},
            )
            return
        log.debug("%d/%d: proposing %s", height, round_, block.hash.hex()[:12])
        self._send_own(proposal)

    def enter_prevote(self, height: int, round_: int) -> None:
        """Prevote in ``round_`` by the locking rules (paper lines 22-33 and 57-60)."""
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PREVOTE)
        ):
            return
        self.round = round_
        self.step = Step.PREVOTE
        self._sign_and_send(VoteType.PREVOTE, height, round_, self._prevote_choice(round_))

    def _prevote_choice(self, round_: int) -> bytes:
        proposal = self.proposals.get(round_)
        # A silent proposer only costs this round.
        if proposal is None:
            return NIL
        block_hash = proposal.block.hash
        header = proposal.block.header
        if proposal.pol_round is None:
            # The header names who built the block and in which round, and the app
            # checks only that the two agree with the schedule: a new block must be
            # the signer's own, of this round. Otherwise a proposer could name another
            # producer: the block's fees would go to it, and the precommits the
            # proposer leaves out would be charged to its row (missed slots: a way to
            # get an honest producer jailed).
            if header.producer != proposal.proposer or header.round != round_:
                log.info(
                    "%d/%d: proposal by %s names producer %s of round %d",
                    self.height,
                    round_,
                    proposal.proposer.hex()[:16],
                    header.producer.hex()[:16],
                    header.round,
                    extra={"height": self.height, "round": round_},
                )
                return NIL
        elif header.round > proposal.pol_round:
            # Re-proposed with its proof of lock, a block keeps the header its producer
            # made when it first proposed it: in the lock's round or before.
            return NIL
        if not self._is_valid(proposal.block):
            return NIL
        if proposal.pol_round is None:
            # A new block must be dated close to our clock (proposer-based timestamps):
            # no producer moves the chain clock, which commerce deadlines follow.
            if not self._timely.get(round_, False):
                log.info(
                    "%d/%d: proposal is not timely",
                    self.height,
                    round_,
                    extra={"height": self.height, "round": round_},
                )
                return NIL
            return block_hash if self.locked_round == -1 or self.locked_hash == block_hash else NIL
        # Prevoting the block we are locked on is always safe.
        if self.locked_hash == block_hash:
            return block_hash
        # A proof of lock at least as new as our lock releases it (paper line 29).
        polka = self.votes.majority(proposal.pol_round, VoteType.PREVOTE)
        if polka == block_hash and self.locked_round <= proposal.pol_round:
            return block_hash
        return NIL

    def enter_prevote_wait(self, height: int, round_: int) -> None:
        """+2/3 prevoted but not for one value (yet): wait ``timeout_prevote(round)``."""
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PREVOTE_WAIT)
        ):
            return
        if not self.votes.two_thirds_any(round_, VoteType.PREVOTE):
            raise NodeFault(f"{height}/{round_}: prevote wait without +2/3 prevotes")
        self.round = round_
        self.step = Step.PREVOTE_WAIT
        self._schedule(Step.PREVOTE_WAIT, height, round_)

    def enter_precommit(self, height: int, round_: int) -> None:
        """Precommit the block with +2/3 prevotes in ``round_`` and lock on it when we
        hold it and it is valid; otherwise precommit nil, keeping any lock (44-46)."""
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PRECOMMIT)
        ):
            return
        self.round = round_
        self.step = Step.PRECOMMIT
        choice = NIL
        polka = self.votes.majority(round_, VoteType.PREVOTE)
        if polka:
            block = self._blocks.get(polka)
            if block is None:
                self._request_block(polka)
            elif self._is_valid(block):
                # Lock (paper lines 36-43); privval persists it with the precommit.
                self.locked_round, self.locked_hash = round_, polka
                self.valid_round, self.valid_block = round_, block
                choice = polka
        self._sign_and_send(VoteType.PRECOMMIT, height, round_, choice)

    def enter_precommit_wait(self, height: int, round_: int) -> None:
        """+2/3 precommitted in ``round_`` but not for one block: wait
        ``timeout_precommit(round)``, then go to the next round (paper 47-48, 65-67)."""
        if height != self.height or round_ < self.round or self._precommit_wait_round == round_:
            return
        if not self.votes.two_thirds_any(round_, VoteType.PRECOMMIT):
            raise NodeFault(f"{height}/{round_}: precommit wait without +2/3 precommits")
        self.round = round_
        self.step = max(self.step, Step.PRECOMMIT_WAIT)
        self._precommit_wait_round = round_
        self._schedule(Step.PRECOMMIT_WAIT, height, round_)

    def enter_commit(self, height: int, commit_round: int) -> None:
        """+2/3 precommitted one block in ``commit_round`` (any round): it is decided;
        finalize it as soon as we hold it (paper line 49)."""
        if height != self.height or self.step == Step.COMMIT:
            return
        decided = self.votes.majority(commit_round, VoteType.PRECOMMIT)
        if not decided:
            raise NodeFault(f"{height}/{commit_round}: commit without +2/3 precommits")
        log.debug("%d/%d: +2/3 precommits for %s", height, commit_round, decided.hex()[:12])
        self.step = Step.COMMIT
        self.commit_round = commit_round
        if decided not in self._blocks:
            self._request_block(decided)
            return
        self._try_finalize(height)

    def _try_finalize(self, height: int) -> None:
        if height != self.height or self.step != Step.COMMIT:
            return
        vs = self.votes.get(self.commit_round, VoteType.PRECOMMIT)
        assert vs is not None
        decided = vs.majority()
        assert decided
        block = self._blocks.get(decided)
        if block is None:
            return
        # +2/3 precommitted it, so either we are broken or more than 1/3 are faulty.
        if not self._is_valid(block):
            raise NodeFault(
                f"height {height}: +2/3 precommitted {decided.hex()}, which is invalid here"
            )
        self._finalize(block, vs.make_commit())

    def _finalize(self, block: Block, commit: Commit) -> None:
        height = self.height
        try:
            verify_commit(commit, self.chain_id, height, block.hash, self.validators)
        except InvalidBlock as exc:
            raise NodeFault(f"height {height}: own certificate does not verify: {exc}") from exc
        self.app.commit(block, commit)
        self._parent_time_ms = block.header.time_ms
        if self.app.height() != height:
            raise NodeFault(f"committed height {height}, but the app is at {self.app.height()}")
        log.info(
            "finalized %d (round %d, %s, %d sigs)",
            height,
            commit.round,
            block.hash.hex()[:12],
            len(commit.signatures),
            extra={"height": height, "round": commit.round, "block_hash": block.hash},
        )
        # Precommits for this block that arrive later are counted (see _late_precommit).
        self._last_signers = {s.validator for s in commit.signatures}
        self._last = (commit, self.validators, self._round0_started)
        self._enter_new_height(height + 1, wait=True, wait_ms=self._commit_wait_ms(commit))

    def _late_precommit(self, vote: Vote, peer: Peer | None, verified: bool) -> bool:
        """A precommit for the block we finalized last, from a producer its certificate lacks.

        The application gets it (the next proposal's certificate can name the producer,
        which then does not count as missing). Once every producer's precommit is in
        during the wait before the next height, nobody is left to wait for: the height
        starts as ``_commit_wait_ms`` would have let it with a full certificate
        (CometBFT's skip_timeout_commit, for precommits that arrive after the commit).

        Returns False if the vote's signature is bad: its peer is reported (an honest
        peer relays only votes it verified), as for a vote of the current height,
        rather than cost a signature check each time at no risk.
        """
        if self._last is None:
            return True
        commit, validators, round0_started = self._last
        # A certificate holds one round's precommits: other rounds' do not count.
        if (
            vote.type != VoteType.PRECOMMIT
            or (vote.height, vote.round, vote.block_hash)
            != (commit.height, commit.round, commit.block_hash)
            or vote.validator in self._last_signers
            or vote.validator not in validators
        ):
            return True
        if not verified:
            try:
                vote.verify(self.chain_id)
            except InvalidSignature:
                self._bad_peer(
                    peer,
                    f"late precommit {vote.height}/{vote.round} from "
                    f"{vote.validator.hex()[:16]} has a bad signature",
                )
                return False
        self._last_signers.add(vote.validator)
        self.app.note_late_precommit(vote)
        if self.step != Step.NEW_HEIGHT or len(self._last_signers) < len(validators):
            return True
        wait_ms = self.config.timeout_commit_ms
        if round0_started is not None:
            wait_ms = max(0, wait_ms - (self.clock.now() - round0_started))
        log.debug("%d: every precommit is in, next height in %d ms", commit.height, wait_ms)
        self._schedule(Step.NEW_HEIGHT, self.height, self._start_round, wait_ms)
        return True

    def _commit_wait_ms(self, commit: Commit) -> int:
        """How long NEW_HEIGHT waits after this commit before round 0 of the next height.

        ``timeout_commit`` is the block interval. Its wait after a commit lets late
        precommits arrive, so the next proposal's certificate names every producer
        that signed (producers missing from certificates are jailed). A certificate
        that already holds every producer's precommit has nobody left to wait for:
        the interval then runs from the start of this height's round 0, so a
        height whose block took long to build and execute is not followed by a
        full interval more (a lone validator under load). Never less than zero,
        and a height is never started sooner than one interval after the last.
        """
        cfg = self.config
        if self._round0_started is None or len(commit.signatures) < len(self.validators):
            return cfg.timeout_commit_ms
        elapsed = self.clock.now() - self._round0_started
        return max(0, cfg.timeout_commit_ms - elapsed)

    # --- the upon rules, re-checked after every input ---------------------------------

    def _progress(self) -> None:
        h = self.height
        if self.step == Step.COMMIT:
            self._try_finalize(h)
            return
        # Line 49: +2/3 precommits for one block in any round decide the height.
        if self.votes.commit_round is not None:
            self.enter_commit(h, self.votes.commit_round)
            return
        # Line 55: more than 1/3 are in a later round, so at least one honest one is.
        later = [r for r in self.votes.rounds() if r > self.round]
        weak = one_third_plus(len(self.validators))
        for r in reversed(later):
            if self.votes.voters(r) >= weak:
                self.enter_new_round(h, r)
                break
        r = self.round
        if self.step == Step.NEW_HEIGHT:
            # Others already vote in this height's first round: stop waiting for ours.
            if not (
                self.votes.two_thirds_any(r, VoteType.PREVOTE)
                or self.votes.two_thirds_any(r, VoteType.PRECOMMIT)
            ):
                return
            self.enter_new_round(h, r)
        # Lines 22 and 28: a complete proposal in the propose step.
        if self.step == Step.PROPOSE and self._proposal_complete(r):
            self.enter_prevote(h, r)
        self._update_valid()
        polka = self.votes.majority(r, VoteType.PREVOTE)
        if self.step in (Step.PREVOTE, Step.PREVOTE_WAIT):
            if polka == NIL:
                self.enter_precommit(h, r)
            elif polka is not None:
                if polka in self._blocks:
                    self.enter_precommit(h, r)
                else:
                    # Wait (bounded by timeout_prevote) for the block to lock on it.
                    self._request_block(polka)
                    self.enter_prevote_wait(h, r)
            elif self.votes.two_thirds_any(r, VoteType.PREVOTE):
                self.enter_prevote_wait(h, r)
        # Line 47.
        if self.votes.two_thirds_any(r, VoteType.PRECOMMIT):
            self.enter_precommit_wait(h, r)

    def _update_valid(self) -> None:
        """Line 36, second half: remember the newest valid block with a polka, so our
        next proposal re-proposes it. The paper looks at the current round only; any
        round up to it is as safe (receivers check the proof of lock) and lets a
        restarted node recover its valid block from the replayed WAL."""
        for r in reversed(self.votes.rounds()):
            if r <= self.valid_round:
                return
            if r > self.round:
                continue
            polka = self.votes.majority(r, VoteType.PREVOTE)
            block = self._blocks.get(polka) if polka else None
            if block is not None and self._is_valid(block):
                self.valid_round, self.valid_block = r, block
                return

    def _forget_old_proposals(self) -> None:
        """Drop the proposals (and blocks) of rounds more than ``kept_proposal_rounds``
        below ours whose block no round's votes made a majority for and that is neither
        our lock nor our valid block: no rule of the algorithm can use them any more,
        except a commit by late precommits, which fetches the block (``enter_commit``)."""
        floor = self._kept_rounds_floor()
        old = [r for r in self.proposals if r < floor]
        if not old:
            return
        needed = self._needed_blocks()
        for r in old:
            if self.proposals[r].block.hash not in needed:
                del self.proposals[r]
                self._arrival.pop(r, None)
                self._timely.pop(r, None)
                self._own.pop((0, r), None)
                self._wal_stale = True
        held = {p.block.hash for p in self.proposals.values()}
        for block_hash in [h for h in self._blocks if h not in held and h not in needed]:
            del self._blocks[block_hash]
        self._compact_wal()

    def _kept_rounds_floor(self) -> int:
        """The lowest round whose proposal is kept whatever the votes say."""
        return self.round - self.config.kept_proposal_rounds

    def _needed_blocks(self) -> set[bytes | None]:
        """Blocks a proposal below the kept rounds is held for: those a round's votes
        made a majority for, our lock and our valid block."""
        needed: set[bytes | None] = {self.locked_hash}
        if self.valid_block is not None:
            needed.add(self.valid_block.hash)
        for r in self.votes.rounds():
            for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                needed.add(self.votes.majority(r, vote_type))
        return needed

    def _compact_wal(self) -> None:
        """Rewrite the WAL with what the engine still holds (proposals, then votes,
        round by round) once proposals were dropped and it has doubled since it was last
        written whole: it stays within twice what is held, however many rounds go by,
        at the cost of one rewrite per doubling. Not while replayed messages wait in
        the queue: they are in the old log only, and handling them logs nothing."""
        wal = self.wal
        if wal is None or not self._wal_stale or wal.size < self._wal_rewrite_at:
            return
        if any(isinstance(item, _Received) and item.replayed for item in self._queue):
            return
        msgs: list[Message] = []
        for r in sorted(set(self.proposals) | set(self.votes.rounds())):
            proposal = self.proposals.get(r)
            if proposal is not None:
                msgs.append(proposal)
            for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                vs = self.votes.get(r, vote_type)
                if vs is not None:
                    msgs.extend(vs.all_votes())
        wal.rewrite(msgs)
        self._wal_stale = False
        self._wal_rewrite_at = 2 * wal.size

    def _proposal_complete(self, round_: int) -> bool:
        proposal = self.proposals.get(round_)
        if proposal is None:
            return False
        # With a proof-of-lock round, wait for those prevotes (or the timeout).
        return proposal.pol_round is None or (
            self.votes.majority(proposal.pol_round, VoteType.PREVOTE) is not None
        )

    # --- inputs ----------------------------------------------------------------------

    def _on_timeout(self, ev: TimeoutEvent) -> None:
        if ev.height != self.height or ev.round < self.round:
            return
        if ev.step == Step.NEW_HEIGHT:
            self.enter_new_round(ev.height, ev.round)
        elif ev.step == Step.PROPOSE:
            self.enter_prevote(ev.height, ev.round)
        elif ev.step == Step.PREVOTE_WAIT:
            self.enter_precommit(ev.height, ev.round)
        elif ev.step == Step.PRECOMMIT_WAIT:
            self.enter_precommit(ev.height, ev.round)
            self.enter_new_round(ev.height, ev.round + 1)

    def _on_tick(self) -> None:
        self._gossip.rebroadcast_own(self._own, self.round, self.votes)
        stalled_ms = self.clock.now() - self._where_since
        if stalled_ms >= self.config.rebroadcast_ms * self.config.stall_relay_periods:
            self._gossip.relay_round_state(self._own, self.round, self.proposals, self.votes)
        if self.step == Step.COMMIT:
            decided = self.votes.majority(self.commit_round, VoteType.PRECOMMIT)
            if decided and decided not in self._blocks:
                self._request_block(decided)
        self._later(self.config.rebroadcast_ms, _Tick())

    def _on_message(self, item: _Received) -> None:
        msg, peer = item.msg, item.peer
        if isinstance(msg, SyncRequest):
            self._catchup.on_sync_request(
                msg, peer, self.height, self.proposals.values(), self.votes
            )
            return
        if isinstance(msg, FinalizedBlock):
            self._on_finalized(msg, peer)
            return
        if msg.height < self.height:
            if isinstance(msg, Vote) and not self._late_precommit(msg, peer, item.verified):
                return
            self._catchup.on_behind(item, self.height, self._height_started, self.validators)
            return
        if msg.height > self.height:
            self._catchup.buffer(item, self.height, self._height_started, self.validators)
            return
        if isinstance(msg, Proposal):
            self._on_proposal(
                msg, peer, item.verified, item.replayed, item.received_ms, own=item.own
            )
        else:
            self._on_vote(msg, peer, item.verified, item.replayed)

    def _on_proposal(
        self,
        p: Proposal,
        peer: Peer | None,
        verified: bool,
        replayed: bool = False,
        received_ms: int | None = None,
        *,
        own: bool = False,
    ) -> None:
        # Proposals far ahead would only cost memory; the proposer re-sends them.
        if p.round > self.round + 1:
            return
        # Nor is one of a round below those kept (``_forget_old_proposals``) taken
        # again, unless its block is still needed (a late commit fetches it so): any
        # member holds the proposals it was sent, and relaying old ones again had each
        # checked, logged and held anew, as many as the height had rounds.
        if (
            not replayed
            and p.round < self._kept_rounds_floor()
            and p.block.hash not in self._needed_blocks()
        ):
            return
        expected = self.validators.proposer(self.height, p.round)
        # Only the scheduled proposer of the round may propose.
        if p.proposer != expected:
            self._bad_peer(
                peer,
                f"proposal {p.height}/{p.round} from {p.proposer.hex()}, expected {expected.hex()}",
            )
            return
        # The block must be for the height the proposal names.
        if p.block.header.height != p.height:
            self._bad_peer(
                peer, f"proposal {p.height}/{p.round} carries block {p.block.header.height}"
            )
            return
        # First proposal of a round wins; a second one is the proposer equivocating.
        first = self.proposals.get(p.round)
        if first is not None:
            # After a restart the replayed copy has no arrival time; the same proposal
            # sent again gives it one (a later stamp only makes "ahead" harder to pass).
            if (
                p.pol_round is None
                and received_ms is not None
                and self._arrival.get(p.round, 0) is None
                and first.block.hash == p.block.hash
                and first.pol_round is None
            ):
                self._arrival[p.round] = received_ms
                self._timely[p.round] = self.synchrony.timely(
                    p.block.header.time_ms, received_ms, p.round
                )
            return
        if not verified:
            try:
                p.verify(self.chain_id)
            except InvalidSignature:
                self._bad_peer(peer, f"proposal {p.height}/{p.round} has a bad signature")
                return
        # The signature covers the header only: the body must be the one it commits
        # to, or anyone relaying the proposal could swap it (and have us judge, keep
        # and vote on a block no one proposed). Our own was built from its body (or
        # matched when it arrived): hashing every transaction again would cost the
        # proposer a tx root per block for nothing. A replayed one is checked.
        if not own and not self._body_matches(p.block, peer, f"proposal {p.height}/{p.round}"):
            return
        self._log(p, replayed)
        if replayed and self._is_me(p.proposer):
            self._own[(0, p.round)] = p
            # We dated it ourselves: judge it as if it arrived now (a stale one is late).
            received_ms = self.clock.time_ms()
        self.proposals[p.round] = p
        if p.pol_round is None:
            self._arrival[p.round] = received_ms
            self._timely[p.round] = self.synchrony.timely(
                p.block.header.time_ms, received_ms, p.round
            )
        self._blocks.setdefault(p.block.hash, p.block)

    def _on_vote(
        self, vote: Vote, peer: Peer | None, verified: bool, replayed: bool = False
    ) -> None:
        if vote.validator not in self.validators:
            log.debug("ignoring vote from non-producer %s", vote.validator.hex())
            return
        if vote.round > self.round:
            # Bound the rounds one validator can make us keep (memory), as cometbft does.
            ahead = {r for r in self.votes.rounds_of(vote.validator) if r > self.round}
            if (
                vote.round not in ahead
                and len(ahead) >= self.config.max_future_rounds_per_validator
            ):
                return
        try:
            added, evidence = self.votes.add(vote, verified=verified)
        except Invalid as exc:
            self._bad_peer(peer, f"vote {vote.height}/{vote.round}: {exc}")
            return
        if added:
            self._log(vote, replayed)
            if replayed and self._is_me(vote.validator):
                self._own[(vote.type, vote.round)] = vote
        if evidence is not None:
            log.warning(
                "%d/%d: conflicting votes from %s",
                vote.height,
                vote.round,
                vote.validator.hex(),
                extra={"height": vote.height, "round": vote.round, "validator": vote.validator},
            )
            if self.on_evidence is not None:
                self.on_evidence(evidence)

    def _on_finalized(self, fb: FinalizedBlock, peer: Peer | None) -> None:
        height = self.height
        if fb.commit.height == height - 1 and fb.block.header.height == height - 1:
            # The block we finalized last, in an answer that came second: its
            # certificate may name producers ours lacks (``_late_copy``), and its
            # sender may still serve us the next one (``CatchUp.ask_next``).
            if self._late_copy(fb.commit, peer):
                self._catchup.ask_next(peer, fb.latest, height, runner_up=True)
            return
        if fb.commit.height == fb.block.header.height < height - 1:
            # An answer a faster peer's overtook: of no use, but not silence either, and
            # from a peer that holds blocks (``CatchUp.overtaken``).
            self._catchup.overtaken(peer, fb.commit.height, fb.latest)
            return
        # Only the next block is useful; older ones we have, later ones cannot be checked yet.
        if fb.commit.height != height or fb.block.header.height != height:
            return
        block_hash = fb.block.hash
        try:
            verify_commit(fb.commit, self.chain_id, height, block_hash, self.validators)
        except InvalidBlock as exc:
            self._bad_peer(peer, f"finalized block {height}: {exc}")
            return
        # The certificate signs the header; the body must be the one it commits to.
        if not self._body_matches(fb.block, peer, f"finalized block {height}"):
            return
        decided = self.votes.commit_round
        if decided is not None:
            ours = self.votes.majority(decided, VoteType.PRECOMMIT)
            # Two certified blocks at one height: more than 1/3 are faulty. Stop.
            if ours != block_hash:
                raise NodeFault(
                    f"height {height}: certificates for {ours.hex() if ours else '?'} "
                    f"and {block_hash.hex()}"
                )
        if not self._is_valid(fb.block):
            raise NodeFault(f"height {height}: certified block {block_hash.hex()} is invalid here")
        log.info("%d: catching up from a peer's certificate", height, extra={"height": height})
        self._blocks.setdefault(block_hash, fb.block)
        self._finalize(fb.block, self._with_held_precommits(fb.commit))
        # The sender is further ahead: ask it for the next block right away.
        self._catchup.ask_next(peer, fb.latest, self.height, runner_up=False)

    def _with_held_precommits(self, commit: Commit) -> Commit:
        """A peer's certificate for our height, with the precommits for its block and
        round that we hold and it lacks.

        Any relay can strip a certificate to a bare quorum. Kept as received, it went
        into our next proposal's ``last_commit`` without producers whose precommits we
        held: missed slots charged to us, the certificate's builder (docs/staking.md,
        Missed slots), so a member that produces nothing could push honest producers
        towards jailing. Our votes were checked when they came in; the signers stay
        sorted, as a certificate's encoding requires."""
        held = self.votes.get(commit.round, VoteType.PRECOMMIT)
        if held is None:
            return commit
        sigs = {s.validator: s for s in commit.signatures}
        for vote in held.votes_for(commit.block_hash):
            sigs.setdefault(vote.validator, CommitSig(vote.validator, vote.signature))
        if len(sigs) == len(commit.signatures):
            return commit
        ordered = tuple(sigs[key] for key in sorted(sigs))
        return Commit(commit.height, commit.round, commit.block_hash, ordered)

    def _late_copy(self, commit: Commit, peer: Peer | None) -> bool:
        """Another copy of the certificate of the block we finalized last: its
        precommits that ours lacks count as late precommits (``_late_precommit``), so
        a fuller certificate that came after a stripped one still fills our next
        proposal's. Only those are checked, each once (the first to verify is kept);
        returns False if one does not verify (its sender is reported)."""
        if self._last is None:
            return True
        ours = self._last[0]
        if (commit.round, commit.block_hash) != (ours.round, ours.block_hash):
            return True
        for vote in commit.votes():
            if vote.validator not in self._last_signers and not self._late_precommit(
                vote, peer, verified=False
            ):
                return False
        return True

    # --- helpers ---------------------------------------------------------------------

    def _sign_and_send(
        self, vote_type: VoteType, height: int, round_: int, block_hash: bytes
    ) -> None:
        if not self.is_validator:
            return
        assert self.privval is not None
        self._sync_wal()
        try:
            vote = self.privval.sign_vote(vote_type, height, round_, block_hash)
        except DoubleSignRefused as exc:
            # Expected after a restart: we already voted here, differently or later.
            log.info(
                "%d/%d: not voting: %s",
                height,
                round_,
                exc,
                extra={"height": height, "round": round_},
            )
            return
        log.debug("%d/%d: %s %s", height, round_, vote_type.name, block_hash.hex()[:12] or "nil")
        self._send_own(vote)

    def _send_own(self, msg: Proposal | Vote) -> None:
        kind = 0 if isinstance(msg, Proposal) else msg.type
        self._own[(kind, msg.round)] = msg
        if isinstance(msg, Proposal):
            self._gossip.broadcast_proposal(msg, self.votes)
        else:
            self.transport.broadcast(msg)
        # Own messages take the same path as peers' ones, after the current input.
        self._queue.append(_Received(msg, None, True, received_ms=self.clock.time_ms(), own=True))

    def _log(self, msg: Proposal | Vote, replayed: bool) -> None:
        if self.wal is not None and not replayed:
            self.wal.append(msg)

    def _sync_wal(self) -> None:
        # What we saw must be durable before we act on it in a signature: after a
        # crash the replay then reproduces the proof of lock behind our lock.
        if self.wal is not None:
            self.wal.sync()

    def _is_me(self, key: bytes) -> bool:
        return self.privval is not None and self.privval.public_key == key

    def _is_proposer(self, height: int, round_: int) -> bool:
        return (
            self.privval is not None
            and self.validators.proposer(height, round_) == self.privval.public_key
        )

    def _body_matches(self, block: Block, peer: Peer | None, what: str) -> bool:
        """Whether ``block``'s transactions are the ones its header's tx root commits
        to; a peer that sends another body is reported."""
        try:
            validate_tx_root(block)
        except InvalidBlock as exc:
            self._bad_peer(peer, f"{what}: body does not match its header: {exc}")
            return False
        return True

    def _is_valid(self, block: Block) -> bool:
        block_hash = block.hash
        valid = self._valid.get(block_hash)
        if valid is None:
            valid = (
                block.header.height == self.height
                and block.header.chain_id == self.chain_id
                and bool(self.app.validate(block))
            )
            self._valid[block_hash] = valid
        return valid

    def _request_block(self, block_hash: bytes) -> None:
        self._catchup.request_block(self.height, block_hash, self.on_missing_block)

    def _schedule(self, step: Step, height: int, round_: int, delay_ms: int | None = None) -> None:
        ev = TimeoutEvent(height, round_, step)
        if delay_ms is None:
            delay_ms = self.config.timeout_ms(step, round_)
        self._later(delay_ms, ev)

    def _bad_peer(self, peer: Peer | None, reason: str) -> None:
        log.info("bad consensus message from %r: %s", peer, reason)
        if peer is not None and self.on_bad_peer is not None:
            self.on_bad_peer(peer, reason)
