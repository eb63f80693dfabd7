"""Catch-up for the consensus engine: traffic with peers at other heights than ours.

A peer that is behind gets the block we finalized at its height (``FinalizedBlock``,
sent as the store holds it: ``EncodedFinalizedBlock``), or on a ``SyncRequest`` the
proposal it lacks. A stored block found damaged is not sent, and does not stop the
engine (``_send_finalized``). When we are behind, messages for later heights are kept
(bounded) until we get there, and the sender is asked for our height; a block that
+2/3 voted for but we do not hold is asked for.

Nothing a peer sends here can make us read, send or keep unbounded data, whatever it
sends and however often: every answer and request counts against the peer's budget of
``max_sync_answers_per_peer`` per ``sync_interval_ms`` (regardless of height), and the
bytes of the blocks it is sent against ``max_sync_block_bytes_per_peer``; the table of
budgets is bounded, an old-height message is served only when a producer signed it,
and each peer and each producer has its own share of the buffer of early messages,
which holds only producers' signed messages, bounded by count and, for proposals, by
bytes. Time comes from the injected clock only.

Nor can peers crowd out what catch-up is for. The engine's own requests have a
budget of their own, outside the table, and the producers of our height keep theirs
in a table of their own (bounded by the producer set): however many other peers
(members, observers) fill ``max_sync_peers``, this node still asks for the blocks it
lacks, and a producer that fell behind is still served.

``ConsensusEngine`` owns one ``CatchUp`` and calls it explicitly, on the engine's one
thread. It never changes the engine's consensus state: what it hands back (buffered
messages) goes through the engine's queue like any other input. Applying a peer's
certificate (``FinalizedBlock``) stays in the engine, since it finalizes a height.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from consensus.engine_config import BFTConfig
from consensus.engine_io import Application, Clock, Peer, Transport, _Received
from consensus.messages import EncodedFinalizedBlock, Proposal, SyncRequest
from consensus.validation import validate_tx_root
from consensus.validators import ValidatorSet
from consensus.vote_sets import NIL, HeightVoteSet, pol_votes
from core import Block, InvalidBlock, InvalidSignature, StorageError, Vote
from vm.params import MAX_BLOCK_BYTES

# The engine's logger: these records are the engine's, and keep its name.
log = logging.getLogger("consensus.bft")

# Answers (``may_serve`` kinds) that send a whole block.
_BLOCK_ANSWERS = frozenset({"finalized", "proposal"})

# Rounds of a later height whose proposals are kept: the engine starts a height in
# round 0 and takes a proposal at most one round above its own.
_PROPOSAL_ROUNDS = 2

# Heights for which a peer asked for the next block (``CatchUp.ask_next``) and slower
# than a sync interval to send it, or silent, is not asked again: it may be a member
# that wins the interval's race with the real block and then never answers.
SLOW_PEER_HEIGHTS = 64


@dataclass
class _Holder:
    """A peer that sent us a certified block: the latest height it claimed to hold, and
    when ``ask_next`` last asked it (the number of its ask; 0: never)."""

    latest: int
    asked: int = 0


@dataclass
class _Window:
    """What one peer was sent (or asked) since ``start``: one sync interval's budget."""

    start: int
    keys: set[tuple[str, int, bytes]] = field(default_factory=set)
    # Bytes of the blocks sent (a stored block's encoding, a proposal's ``_block_bytes``).
    block_bytes: int = 0


@dataclass
class _Signed:
    """What producers signed that is kept for one later height: per signer, the steps
    (round, vote type) it has a vote kept for and the rounds they are in; the rounds
    a proposal is kept for."""

    steps: set[tuple[bytes, int, int]] = field(default_factory=set)
    rounds: dict[bytes, set[int]] = field(default_factory=dict)
    proposals: set[int] = field(default_factory=set)


@dataclass
class _Share:
    """How many early messages (and proposals among them, and their bytes) one peer has
    in the buffer."""

    messages: int = 0
    proposals: int = 0
    proposal_bytes: int = 0


class CatchUp:
    """The engine's sync serving and requesting, and its buffer of early messages."""

    def __init__(
        self,
        *,
        chain_id: str,
        app: Application,
        transport: Transport,
        clock: Clock,
        config: BFTConfig,
        bad_peer: Callable[[Peer | None, str], None],
    ) -> None:
        self.chain_id = chain_id
        self.app = app
        self.transport = transport
        self.clock = clock
        self.config = config
        self.bad_peer = bad_peer
        self._future: dict[int, list[_Received]] = {}
        # Who signed what among them, per height: each signer's share of the buffer.
        self._future_signed: dict[int, _Signed] = {}
        self._buffered = 0
        self._buffered_proposals = 0
        # The buffered proposals' transactions' bytes (``_block_bytes``).
        self._buffered_proposal_bytes = 0
        self._shares: dict[Peer, _Share] = {}
        # Budgets: the engine's own requests (never refused for want of room), those
        # of the producers of our height (bounded by the set) and everyone else's
        # (bounded by max_sync_peers).
        self._own = _Window(-config.sync_interval_ms)
        self._producer_keys: frozenset[Peer] = frozenset()
        self._producers: dict[Peer, _Window] = {}
        self._windows: dict[Peer, _Window] = {}
        # The height we entered on a peer's certificate and the peers asked for it on
        # their word that they hold it (``ask_next``): at most two.
        self._next_height = 0
        self._next_asked: set[Peer] = set()
        # Peers asked by ``ask_next`` that have not sent that block yet: the height and
        # when. And peers passed over until a height (``SLOW_PEER_HEIGHTS``). Both are
        # bounded by ``max_sync_peers``, the oldest going first.
        self._outstanding: dict[Peer, tuple[int, int]] = {}
        self._passed_over: dict[Peer, int] = {}
        # Peers that sent us a certified block (first or a copy), the one heard from
        # longest ago first, bounded by ``max_sync_peers``: whom ``ask_next`` may ask
        # in the second place. And how many asks it made.
        self._holders: dict[Peer, _Holder] = {}
        self._asks = 0

    def new_height(self, validators: ValidatorSet) -> None:
        """Forget budgets whose interval is over (the tables stay small); the producers
        of the new height (``validators``) keep their budgets apart from other peers'."""
        now = self.clock.now()
        self._producer_keys = frozenset(validators.keys)
        self._drop_expired(now)
        # A budget follows its peer into the other table, so it stays spent for the
        # rest of its interval (unless that table is full: one more budget, once per
        # change of the set).
        for peer in [p for p in self._producers if p not in self._producer_keys]:
            window = self._producers.pop(peer)
            if len(self._windows) < self.config.max_sync_peers:
                self._windows.setdefault(peer, window)
        for peer in [p for p in self._windows if p in self._producer_keys]:
            self._producers.setdefault(peer, self._windows.pop(peer))

    # --- messages from peers ahead of us -----------------------------------------------

    def buffer(
        self, item: _Received, height: int, height_started: int, validators: ValidatorSet
    ) -> None:
        """Keep a message for a later height than ours (``height``, entered at
        ``height_started``, with ``validators``) until we get there."""
        msg = item.msg
        assert isinstance(msg, Proposal | Vote)
        cfg = self.config
        is_proposal = isinstance(msg, Proposal)
        share = self._shares.get(item.peer, _Share())
        size = 0
        fits = (
            item.peer is not None
            and (
                self._vote_fits(msg)
                if isinstance(msg, Vote)
                else self._proposal_fits(msg, validators)
            )
            and msg.height <= height + cfg.max_future_heights
            and self._buffered < cfg.max_buffered_messages
            and share.messages < cfg.max_buffered_messages_per_peer
            and not (
                is_proposal
                and (
                    self._buffered_proposals >= cfg.max_buffered_proposals
                    or share.proposals >= cfg.max_buffered_proposals_per_peer
                )
            )
        )
        if fits and isinstance(msg, Proposal):
            # By bytes too (before its signature check: one too big costs none). Votes
            # are small and fixed in size: their counts bound their bytes. No block's
            # transactions pass MAX_BLOCK_BYTES, whatever governance makes
            # max_block_bytes: a bigger one is no block, and kept it let a Byzantine
            # producer's slots take a frame each, leaving too little for honest full
            # blocks (the slots of two heights at MAX_BLOCK_BYTES fit the bound).
            size = _block_bytes(msg.block)
            fits = (
                size <= MAX_BLOCK_BYTES
                and self._buffered_proposal_bytes + size <= cfg.max_buffered_proposal_bytes
                and share.proposal_bytes + size <= cfg.max_buffered_proposal_bytes_per_peer
            )
        # Only a producer's signed message may take a slot (producers rarely change
        # between two heights; an incoming producer's early messages are re-sent).
        if fits and self._signed_by_producer(item, validators) and self._body_matches(item):
            self._future.setdefault(msg.height, []).append(dataclasses.replace(item, verified=True))
            signed = self._future_signed.setdefault(msg.height, _Signed())
            if isinstance(msg, Vote):
                signed.steps.add((msg.validator, msg.round, msg.type))
                signed.rounds.setdefault(msg.validator, set()).add(msg.round)
            else:
                signed.proposals.add(msg.round)
            self._buffered += 1
            self._buffered_proposals += is_proposal
            self._buffered_proposal_bytes += size
            share.messages += 1
            share.proposals += is_proposal
            share.proposal_bytes += size
            self._shares[item.peer] = share
        # Still here a while after others moved on: ask the sender for our height.
        waited = self.clock.now() - height_started >= cfg.sync_interval_ms
        if waited and item.peer is not None and self.may_serve(item.peer, "request", height, NIL):
            # Peers asked for this height (``ask_next``) that have not sent it made us
            # ask everyone: late, however soon this comes after they were asked.
            self._overdue(height)
            self.transport.send(item.peer, SyncRequest(height, NIL))

    def take_buffered(self, height: int) -> list[_Received]:
        """Drop what was kept for heights up to ``height``; return the messages kept
        for ``height`` itself, in arrival order."""
        ready: list[_Received] = []
        for h in [h for h in self._future if h <= height]:
            self._future_signed.pop(h, None)
            for item in self._future.pop(h):
                msg = item.msg
                is_proposal = isinstance(msg, Proposal)
                size = _block_bytes(msg.block) if isinstance(msg, Proposal) else 0
                self._buffered -= 1
                self._buffered_proposals -= is_proposal
                self._buffered_proposal_bytes -= size
                share = self._shares[item.peer]
                share.messages -= 1
                share.proposals -= is_proposal
                share.proposal_bytes -= size
                if share.messages == 0:
                    del self._shares[item.peer]
                if h == height:
                    ready.append(item)
        return ready

    def _vote_fits(self, vote: Vote) -> bool:
        """Whether ``vote`` may take a slot for its signer: one vote per step, in at
        most ``max_future_rounds_per_validator`` + 1 rounds of the height.

        A producer signs any number of different votes for later heights (every
        round, nil or any block): kept, a Byzantine one's votes relayed by many peers
        would fill the buffer that honest producers' early votes need, each at the
        price of a signature check. An honest producer signs one vote per step, and
        the engine keeps a producer's votes of the round it starts a height in and
        of ``max_future_rounds_per_validator`` rounds above: so every producer,
        honest or not, has at most as many slots as an honest one needs, and a
        copy (or a conflicting twin) of a vote kept takes none and costs no check.
        An honest producer's votes are in rounds it went through in order; if
        others' are kept first, they are of rounds it left, and it re-sends those
        of its round when we get there.
        """
        signed = self._future_signed.get(vote.height)
        if signed is None:
            return True
        if (vote.validator, vote.round, vote.type) in signed.steps:
            return False
        rounds = signed.rounds.get(vote.validator, ())
        return vote.round in rounds or len(rounds) <= self.config.max_future_rounds_per_validator

    def _proposal_fits(self, p: Proposal, validators: ValidatorSet) -> bool:
        """Whether ``p`` may take a slot: the first proposal of its (height, round), by
        the proposer of that round, in a round the engine takes at the start of a height.

        A producer signs proposals for any round, and many members relay them: kept,
        a Byzantine one's would fill the few proposal slots. The engine starts a
        height in round 0 and takes a proposal at most one round above its own, and
        only from the round's proposer (the schedule of our producers, as for the
        signer of any early message): at most ``_PROPOSAL_ROUNDS`` slots per height,
        each its proposer's own. The first one kept was matched to its header (its
        body checked on arrival), so what is signed names it: a copy, or the
        proposer's second proposal for the round (the engine keeps the first too),
        takes no slot and costs no check, and no copy with a swapped body stands in
        for the real one.
        """
        signed = self._future_signed.get(p.height)
        return (
            p.round < _PROPOSAL_ROUNDS
            and p.proposer == validators.proposer(p.height, p.round)
            and (signed is None or p.round not in signed.proposals)
        )

    def _body_matches(self, item: _Received) -> bool:
        """A vote, or a proposal whose transactions are the ones its signed header
        commits to; a peer that sends another body is reported."""
        if not isinstance(item.msg, Proposal):
            return True
        try:
            validate_tx_root(item.msg.block)
        except InvalidBlock as exc:
            self.bad_peer(item.peer, f"proposal for height {item.msg.height}: {exc}")
            return False
        return True

    # --- peers behind us ---------------------------------------------------------------

    def on_sync_request(
        self,
        req: SyncRequest,
        peer: Peer | None,
        height: int,
        proposals: Iterable[Proposal],
        votes: HeightVoteSet,
    ) -> None:
        """Answer ``req`` from ``peer``; we are at ``height`` and hold ``proposals``
        and ``votes``. The request is unsigned: the peer's budget bounds the answers."""
        if peer is None:
            return
        if req.height < height:
            self.serve_finalized(req.height, peer, height)
        elif req.height == height and req.block_hash:
            for p in proposals:
                if p.block.hash == req.block_hash and self.may_serve(
                    peer, "proposal", p.height, req.block_hash
                ):
                    self._charge(peer, _block_bytes(p.block))
                    self.transport.send(peer, p)
                    for vote in pol_votes(votes, p):
                        self.transport.send(peer, vote)
                    return

    def on_behind(
        self, item: _Received, height: int, height_started: int, validators: ValidatorSet
    ) -> None:
        """A message from a peer at a height below ours (``height``, entered at
        ``height_started``, with ``validators``): it needs the block we finalized at
        its height."""
        if not isinstance(item.msg, (Proposal, Vote)):
            return
        behind = item.msg.height
        # A peer one height behind is most often still committing the block it voted
        # for (its re-sent votes cross our next height): a whole block sent to it
        # now would be dropped. Serve it once it had time to commit on its own.
        if (
            behind == height - 1
            and self.clock.now() - height_started < self.config.sync_interval_ms
        ):
            return
        # A block read and sent on the word of a message nobody signed would let any
        # peer make us read blocks for free: a producer must have signed it. (A
        # producer that left the set catches up with SyncRequest, within its budget.)
        # The signature is checked last, once the peer's budget allows an answer: any
        # member can replay signed old messages as fast as its link allows, and each
        # must not cost us a signature check (a bad one still costs the sender).
        if item.peer is None or behind < 1 or _signer(item.msg) not in validators:
            return
        if not self.may_serve(item.peer, "finalized", behind, NIL):
            return
        if self._signed_by_producer(item, validators):
            self._send_finalized(behind, item.peer, height)

    def serve_finalized(self, height: int, peer: Peer | None, our_height: int) -> None:
        """Send ``peer`` the block we finalized at ``height``; we are at ``our_height``."""
        if peer is None or height < 1 or not self.may_serve(peer, "finalized", height, NIL):
            return
        self._send_finalized(height, peer, our_height)

    def _send_finalized(self, height: int, peer: Peer, our_height: int) -> None:
        # As stored, sent as stored: a read and a copy, not a decode on this thread and
        # an encode on p2p's (the store checks the bytes against the certificate).
        try:
            found = self.app.committed_encoded(height)
        except StorageError as exc:
            # This node's damage, not the peer's doing, and no reason to stop deciding
            # new heights: nothing is sent, and since what the read cost is not known,
            # the peer's block budget for the interval is spent (one report per peer
            # per interval, whatever it asks).
            self._charge(peer, self.config.max_sync_block_bytes_per_peer)
            log.error("%d: stored block not sent to a peer: %s", height, exc)
            return
        if found is not None:
            block, commit = found
            self._charge(peer, len(block))
            self.transport.send(peer, EncodedFinalizedBlock(block, commit, our_height - 1))

    # --- our requests ------------------------------------------------------------------

    def ask_next(self, peer: Peer | None, latest: int, height: int, *, runner_up: bool) -> None:
        """Ask ``peer`` for ``height``, ours since a peer's certificate finalized the
        block below it, when its ``FinalizedBlock`` says it holds blocks up to ``latest``
        (``>= height``). Asked: the peer whose block we finalized (``runner_up`` False),
        and in the second place the peer known to hold ``height`` that was asked least
        recently, or else the first other whose answer for that block came second
        (``runner_up``).

        ``latest`` is the sender's word. Asking only the first to answer let one member
        stall a catch-up: it answers the requests every peer gets each sync interval
        first, claims to hold far more, then never answers the request that follows;
        the honest answers, second, were dropped, and nobody was asked for the next
        block until the next interval, whose race it wins again (one block a second
        against blocks every 500 ms: never caught up). With one member hostile, one of
        two different peers asked is honest; so two copies of each block come at most,
        not one per peer that answered. A second place's request counts against the
        peer's budget.

        Several hostile members could take both places at every interval. So a peer
        asked that sends the block later than a sync interval after, or never, or not
        before the node asks everyone for it (``buffer``), is passed over for
        ``SLOW_PEER_HEIGHTS`` heights (``_askable``): each such member wastes one
        request before the places go to peers that answer. That alone still let two of
        them keep both places by answering each request just within the interval:
        only their copies came, and the catch-up went one block an interval. The
        second place is therefore not theirs to win: it goes in turn to every peer
        that sent us a certified block (``_holders``), so an honest one is asked
        within a few heights whatever the others do, and goes on as the catch-up."""
        now = self.clock.now()
        if peer is not None:
            self._delivered(peer, height - 1, now)
            self._holds(peer, latest)
        if not runner_up and self._next_height != height:
            self._next_height, self._next_asked = height, set()
        if (
            peer is None
            # Not entered on a certificate (our own votes decided): nothing to ask for.
            or self._next_height != height
        ):
            return
        if (
            latest >= height
            and peer not in self._next_asked
            and len(self._next_asked) < 2
            and self._askable(peer, height, now)
        ):
            # Recorded for the peer whose block we took too, but never refused: that
            # one is the catch-up itself (as before the runner-up was asked).
            allowed = self.may_serve(peer, "request", height, NIL)
            if allowed or not runner_up:
                self._ask(peer, height, now)
        if not runner_up:
            self._ask_in_turn(height, now)

    def _ask_in_turn(self, height: int, now: int) -> None:
        """Give the second place for ``height`` to the peer that holds it (by its word)
        and was asked least recently, within its budget; none: a runner-up may take it.
        A peer that still owes a block it was asked for is not asked for another (its
        wait would start over: a silent one would never be late)."""
        candidates = sorted(
            (holder.asked, order, peer)
            for order, (peer, holder) in enumerate(self._holders.items())
            if holder.latest >= height and peer not in self._next_asked
        )
        for _, _, peer in candidates:
            if len(self._next_asked) >= 2:
                return
            if (
                self._askable(peer, height, now)
                and peer not in self._outstanding
                and self.may_serve(peer, "request", height, NIL)
            ):
                self._ask(peer, height, now)

    def _ask(self, peer: Peer, height: int, now: int) -> None:
        self._next_asked.add(peer)
        self._asks += 1
        holder = self._holders.get(peer)
        if holder is not None:
            holder.asked = self._asks
        outstanding = self._outstanding
        outstanding.pop(peer, None)
        outstanding[peer] = (height, now)
        if len(outstanding) > self.config.max_sync_peers:
            del outstanding[next(iter(outstanding))]
        self.transport.send(peer, SyncRequest(height, NIL))

    def _holds(self, peer: Peer, latest: int) -> None:
        """``peer`` sent a certified block and says it holds up to ``latest``: heard from
        last, it goes to the end of ``_holders`` (the first one goes when full)."""
        holder = self._holders.pop(peer, None) or _Holder(latest)
        holder.latest = latest
        self._holders[peer] = holder
        if len(self._holders) > self.config.max_sync_peers:
            del self._holders[next(iter(self._holders))]

    def overtaken(self, peer: Peer | None, height: int, latest: int) -> None:
        """``peer`` sent a block of ``height`` below the one we finalized last, saying it
        holds blocks up to ``latest``: a faster peer's answers took us on before it came.
        It answers what ``ask_next`` asked it, if that is what it was asked, so it is not
        silent (``_delivered``), and it holds blocks: it takes its turns in the second
        place (``_holds``). The block is not checked, as a runner-up's copy is not: any
        peer could send the real one (the node took it from another)."""
        if peer is not None:
            self._delivered(peer, height, self.clock.now())
            self._holds(peer, latest)

    def _delivered(self, peer: Peer, height: int, now: int) -> None:
        """``peer`` sent the certified block of ``height``: in time, or late, for the
        request ``ask_next`` sent it (if that is what it answers)."""
        asked = self._outstanding.get(peer)
        if asked is None or asked[0] != height:
            return
        del self._outstanding[peer]
        if now - asked[1] > self.config.sync_interval_ms:
            self._pass_over(peer, height)

    def _askable(self, peer: Peer, height: int, now: int) -> bool:
        """Whether ``ask_next`` may ask ``peer``: not passed over, and not silent past a
        sync interval on what it was asked last."""
        asked = self._outstanding.get(peer)
        if asked is not None and now - asked[1] > self.config.sync_interval_ms:
            del self._outstanding[peer]
            self._pass_over(peer, asked[0])
        until = self._passed_over.get(peer)
        if until is None:
            return True
        if height < until:
            return False
        del self._passed_over[peer]
        return True

    def _overdue(self, height: int) -> None:
        """The node asks every peer for ``height``: those ``ask_next`` asked for it and
        still waited for are passed over."""
        for peer in [p for p, (h, _) in self._outstanding.items() if h == height]:
            del self._outstanding[peer]
            self._pass_over(peer, height)

    def _pass_over(self, peer: Peer, height: int) -> None:
        passed = self._passed_over
        passed.pop(peer, None)
        passed[peer] = height + SLOW_PEER_HEIGHTS
        if len(passed) > self.config.max_sync_peers:
            del passed[next(iter(passed))]

    def request_block(
        self,
        height: int,
        block_hash: bytes,
        on_missing_block: Callable[[int, bytes], None] | None,
    ) -> None:
        """We know +2/3 voted for a block we do not hold: ask for it (rate limited)."""
        if not self.may_serve(None, "want", height, block_hash):
            return
        log.info("%d: missing block %s, asking peers", height, block_hash.hex()[:12])
        if on_missing_block is not None:
            on_missing_block(height, block_hash)
        self.transport.broadcast(SyncRequest(height, block_hash))

    # --- budgets -----------------------------------------------------------------------

    def may_serve(self, peer: Peer | None, what: str, height: int, block_hash: bytes) -> bool:
        """Record and allow one answer (or request) ``what`` for ``peer`` unless its
        budget for this sync interval is spent: each (what, height, block) at most once,
        at most ``max_sync_answers_per_peer`` in all, whatever the heights, and no
        answer that carries a block once ``max_sync_block_bytes_per_peer`` of blocks
        went to the peer (a block is read before its size is known: the last one may
        go past it)."""
        cfg = self.config
        window = self._window(peer, self.clock.now())
        key = (what, height, block_hash)
        if (
            window is None
            or key in window.keys
            or len(window.keys) >= cfg.max_sync_answers_per_peer
            or (what in _BLOCK_ANSWERS and window.block_bytes >= cfg.max_sync_block_bytes_per_peer)
        ):
            return False
        window.keys.add(key)
        return True

    def _charge(self, peer: Peer, size: int) -> None:
        """Count ``size`` bytes of a block, about to be sent to ``peer``, against its budget."""
        window = self._window(peer, self.clock.now())
        if window is not None:
            window.block_bytes += size

    def _window(self, peer: Peer | None, now: int) -> _Window | None:
        """``peer``'s budget for the interval in progress (None: ours), started now if
        it had none; None when the table of other peers' budgets is full."""
        interval = self.config.sync_interval_ms
        if peer is None:
            # Our own requests: peers filling the table must not stop us catching up.
            if now - self._own.start >= interval:
                self._own = _Window(now)
            return self._own
        producer = peer in self._producer_keys
        table = self._producers if producer else self._windows
        window = table.get(peer)
        if window is not None and now - window.start < interval:
            return window
        # The producers' table is bounded by the set: only the others' can fill up.
        if window is None and not producer and len(table) >= self.config.max_sync_peers:
            self._drop_expired(now)
            if len(table) >= self.config.max_sync_peers:
                return None
        window = table[peer] = _Window(now)
        return window

    def _drop_expired(self, now: int) -> None:
        interval = self.config.sync_interval_ms
        for table in (self._windows, self._producers):
            for peer in [p for p, w in table.items() if now - w.start >= interval]:
                del table[peer]

    def _signed_by_producer(self, item: _Received, validators: ValidatorSet) -> bool:
        """``item`` is a proposal or vote signed by one of ``validators``; a bad
        signature is the sender's fault for certain and is reported."""
        msg = item.msg
        if not isinstance(msg, (Proposal, Vote)) or _signer(msg) not in validators:
            return False
        if not item.verified:
            try:
                msg.verify(self.chain_id)
            except InvalidSignature:
                self.bad_peer(item.peer, f"message for height {msg.height} has a bad signature")
                return False
        return True


def _block_bytes(block: Block) -> int:
    """About what sending ``block``, held decoded (a proposal), costs: its transactions'
    bytes (the header and certificate are small beside a full block). A stored block
    is charged its encoding's length, read before it is known."""
    return sum(map(len, block.txs))


def _signer(msg: object) -> bytes | None:
    """Who signed a proposal or vote (None for any other message)."""
    if isinstance(msg, Proposal):
        return msg.proposer
    return msg.validator if isinstance(msg, Vote) else None
