"""Re-sending for the consensus engine: own messages, proposals and stalled rounds.

The algorithm assumes eventual delivery, and a lost message is otherwise never
repeated. On every rebroadcast tick the engine re-sends its own messages of the
current round (proposals with a back-off, their blocks are large); when its step has
not changed for a while it also relays every vote it holds for the previous and the
current round. ``ConsensusEngine`` owns one ``Gossip`` and calls it explicitly, on the
engine's one thread; it only sends, and never changes the engine's consensus state.
"""

from __future__ import annotations

from consensus.engine_config import BFTConfig
from consensus.engine_io import Clock, Transport
from consensus.messages import Message, Proposal
from consensus.vote_sets import HeightVoteSet, pol_votes
from core import VoteType


class Gossip:
    """When and what the engine sends again."""

    def __init__(self, *, transport: Transport, clock: Clock, config: BFTConfig) -> None:
        self.transport = transport
        self.clock = clock
        self.config = config
        # Per proposal round: (when it may be sent again, the wait after that).
        self._proposal_resend: dict[int, tuple[int, int]] = {}

    def new_height(self) -> None:
        """Forget the proposal back-offs: proposal rounds start over at each height."""
        self._proposal_resend = {}

    def rebroadcast_own(
        self, own: dict[tuple[int, int], Message], round_: int, votes: HeightVoteSet
    ) -> None:
        """Re-send our own messages (``own``) of ``round_``."""
        for (_, r), msg in list(own.items()):
            if r == round_:
                if isinstance(msg, Proposal):
                    self.resend_proposal(msg, votes, sent=True)
                else:
                    self.transport.broadcast(msg)

    def relay_round_state(
        self,
        own: dict[tuple[int, int], Message],
        round_: int,
        proposals: dict[int, Proposal],
        votes: HeightVoteSet,
    ) -> None:
        """Re-send what we know of the last two rounds, so peers that lost messages
        (a restart, a long partition) can reach the same thresholds we see."""
        sent_own = set(map(id, own.values()))
        proposal = proposals.get(round_)
        if proposal is not None and id(proposal) not in sent_own:
            self.resend_proposal(proposal, votes, sent=False)
        for r in (round_ - 1, round_):
            for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                vs = votes.get(r, vote_type)
                for vote in vs.all_votes() if vs is not None else ():
                    if id(vote) not in sent_own:
                        self.transport.broadcast(vote)

    def resend_proposal(self, p: Proposal, votes: HeightVoteSet, *, sent: bool) -> None:
        """Send a proposal again, at most after 2, 4, 8... rebroadcast periods.

        Votes are small and re-sent every tick; a proposal carries its whole block
        (megabytes under load) and every copy costs each peer a decode. Sent every
        tick, the copies of a slow height cost a loaded node's main loop more than
        admitting the transactions did. A peer that missed it still gets it within
        a few periods, or asks for it (``SyncRequest``). ``sent``: this node sent it
        just now (its own proposal), so the first copy waits.
        """
        now = self.clock.now()
        period = self.config.rebroadcast_ms
        due = self._proposal_resend.get(p.round)
        if due is None:
            self._proposal_resend[p.round] = (now + 2 * period, 4 * period)
            if not sent:
                self.broadcast_proposal(p, votes)
            return
        at, wait = due
        if now >= at:
            self._proposal_resend[p.round] = (now + wait, 2 * wait)
            self.broadcast_proposal(p, votes)

    def broadcast_proposal(self, p: Proposal, votes: HeightVoteSet) -> None:
        """Send a proposal to every validator peer, with its proof-of-lock prevotes."""
        # Peers that missed the proof-of-lock round cannot prevote the block without
        # those prevotes, so they travel with it (cometbft gossips them the same way).
        self.transport.broadcast(p)
        for vote in pol_votes(votes, p):
            self.transport.broadcast(vote)
