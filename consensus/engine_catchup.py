"""Catch-up for the consensus engine: traffic with peers at other heights than ours.

A peer that is behind gets the block we finalized at its height (``FinalizedBlock``),
or on a ``SyncRequest`` the proposal it lacks. When we are behind, messages for later
heights are kept (bounded) until we get there, and the sender is asked for our height;
a block that +2/3 voted for but we do not hold is asked for. Every answer and request
is rate limited per peer and height.

``ConsensusEngine`` owns one ``CatchUp`` and calls it explicitly, on the engine's one
thread. It never changes the engine's consensus state: what it hands back (buffered
messages) goes through the engine's queue like any other input. Applying a peer's
certificate (``FinalizedBlock``) stays in the engine, since it finalizes a height.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from consensus.engine_config import BFTConfig
from consensus.engine_io import Application, Clock, Peer, Transport, _Received
from consensus.messages import FinalizedBlock, Proposal, SyncRequest
from consensus.vote_sets import NIL, HeightVoteSet, pol_votes
from core import Vote

# The engine's logger: these records are the engine's, and keep its name.
log = logging.getLogger("consensus.bft")


class CatchUp:
    """The engine's sync serving and requesting, and its buffer of early messages."""

    def __init__(
        self, *, app: Application, transport: Transport, clock: Clock, config: BFTConfig
    ) -> None:
        self.app = app
        self.transport = transport
        self.clock = clock
        self.config = config
        self._future: dict[int, list[_Received]] = {}
        self._buffered = 0
        self._buffered_proposals = 0
        self._served: dict[tuple[Peer, str, int, bytes], int] = {}

    def new_height(self) -> None:
        """Forget what was served: the rate limits start over at each height."""
        self._served.clear()

    def buffer(self, item: _Received, height: int, height_started: int) -> None:
        """Keep a message for a later height than ours (``height``, entered at
        ``height_started``) until we get there."""
        msg = item.msg
        assert isinstance(msg, Proposal | Vote)
        cfg = self.config
        fits = (
            msg.height <= height + cfg.max_future_heights
            and self._buffered < cfg.max_buffered_messages
            and not (
                isinstance(msg, Proposal) and self._buffered_proposals >= cfg.max_buffered_proposals
            )
        )
        if fits:
            self._future.setdefault(msg.height, []).append(item)
            self._buffered += 1
            self._buffered_proposals += isinstance(msg, Proposal)
        # Still here a while after others moved on: ask the sender for our height.
        waited = self.clock.now() - height_started >= cfg.sync_interval_ms
        if waited and item.peer is not None and self.may_serve(item.peer, "request", height, NIL):
            self.transport.send(item.peer, SyncRequest(height, NIL))

    def take_buffered(self, height: int) -> list[_Received]:
        """Drop what was kept for heights up to ``height``; return the messages kept
        for ``height`` itself, in arrival order."""
        ready: list[_Received] = []
        for h in [h for h in self._future if h <= height]:
            for item in self._future.pop(h):
                self._buffered -= 1
                self._buffered_proposals -= isinstance(item.msg, Proposal)
                if h == height:
                    ready.append(item)
        return ready

    def on_sync_request(
        self,
        req: SyncRequest,
        peer: Peer | None,
        height: int,
        proposals: Iterable[Proposal],
        votes: HeightVoteSet,
    ) -> None:
        """Answer ``req`` from ``peer``; we are at ``height`` and hold ``proposals``
        and ``votes``."""
        if peer is None:
            return
        if req.height < height:
            self.serve_finalized(req.height, peer, height)
        elif req.height == height and req.block_hash:
            for p in proposals:
                if p.block.hash == req.block_hash and self.may_serve(
                    peer, "proposal", p.height, req.block_hash
                ):
                    self.transport.send(peer, p)
                    for vote in pol_votes(votes, p):
                        self.transport.send(peer, vote)
                    return

    def on_behind(self, item: _Received, height: int, height_started: int) -> None:
        """A message from a peer at a height below ours (``height``, entered at
        ``height_started``): it needs the block we finalized at its height."""
        behind = item.msg.height
        # A peer one height behind is most often still committing the block it voted
        # for (its re-sent votes cross our next height): a whole block sent to it
        # now would be dropped. Serve it once it had time to commit on its own.
        if (
            behind == height - 1
            and self.clock.now() - height_started < self.config.sync_interval_ms
        ):
            return
        self.serve_finalized(behind, item.peer, height)

    def serve_finalized(self, height: int, peer: Peer | None, our_height: int) -> None:
        """Send ``peer`` the block we finalized at ``height``; we are at ``our_height``."""
        if peer is None or height < 1 or not self.may_serve(peer, "finalized", height, NIL):
            return
        found = self.app.committed(height)
        if found is not None:
            block, commit = found
            self.transport.send(peer, FinalizedBlock(block, commit, our_height - 1))

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

    def may_serve(self, peer: Peer | None, what: str, height: int, block_hash: bytes) -> bool:
        """At most once per ``sync_interval_ms`` per (peer, what, height, block)."""
        key = (peer, what, height, block_hash)
        now = self.clock.now()
        last = self._served.get(key)
        if last is not None and now - last < self.config.sync_interval_ms:
            return False
        self._served[key] = now
        return True
