"""What the consensus engine talks to, and the inputs it queues.

Clock, transport and application are injected through small Protocols, so the same
engine runs in the node and in the deterministic simulation (tests/sim). The inputs
(peer and own messages, step timeouts, the rebroadcast tick) go through the engine's
one queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from consensus.engine_config import Step, Synchrony
from consensus.messages import Message, Outgoing
from consensus.validators import ValidatorSet
from core import Block, Commit, Vote

Peer = Hashable
"""Whatever the transport uses to name a peer; opaque to the engine."""


# --- injected seams ----------------------------------------------------------------


class Clock(Protocol):
    """Time for the engine: the node's event loop, or the simulation's virtual clock."""

    def now(self) -> int:
        """Monotonic milliseconds."""
        ...

    def time_ms(self) -> int:
        """This node's wall clock in Unix milliseconds: what it dates its proposals
        with and judges others' by (docs/consensus.md, "Block time")."""
        ...

    def schedule(self, delay_ms: int, event: Callable[[], None]) -> None:
        """Call ``event`` once, ``delay_ms`` from now, on the engine's thread."""
        ...


class WallClock:
    """A node's wall clock in Unix milliseconds: the one source of its block times
    (what it dates proposals with and judges others' arrival by).

    ``offset_ms`` is for tests only (the ``test_clock_offset_ms`` node setting): it
    shifts this node's reading, as if its clock were skewed, so the network tests can
    show the chain tolerating a clock within the BFT time precision. Timeouts do not
    read this clock: they are durations on the monotonic clock (``Clock.now``), which
    a skewed wall clock does not change.
    """

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


class LoopClock:
    """``Clock`` on an asyncio event loop, for the node. Callbacks run on the loop's
    thread, which must be the engine's one thread (block execution in ``validate``
    blocks it, so give consensus its own loop or thread if that matters)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wall: WallClock | None = None) -> None:
        self._loop = loop
        self._wall = wall if wall is not None else WallClock()

    def now(self) -> int:
        return int(self._loop.time() * 1000)

    def time_ms(self) -> int:
        return self._wall.time_ms()

    def schedule(self, delay_ms: int, event: Callable[[], None]) -> None:
        self._loop.call_later(delay_ms / 1000, event)


class Transport(Protocol):
    """Sends consensus messages; wrap them in ``ConsensusMessage`` for the wire."""

    def broadcast(self, msg: Message) -> None:
        """Send to every connected validator peer (not back to this node)."""
        ...

    def send(self, peer: Peer, msg: Outgoing) -> None:
        """Send to one peer (answers to sync requests and to peers that are behind); a
        finalized block held encoded goes as its bytes are (``encode_message``)."""
        ...


class Application(Protocol):
    """The chain the engine finalizes: the node (or the simulation's toy app)."""

    def height(self) -> int:
        """Height of the last committed block (0 before the first block)."""
        ...

    def validators(self, height: int) -> ValidatorSet:
        """The producers that vote on ``height``."""
        ...

    def propose(self, height: int, round_: int, time_ms: int) -> Block:
        """Build a block for ``height`` on top of the last committed one; its header
        carries ``round_``, this node as producer, the last block's certificate and
        ``time_ms`` (this node's clock) as block time, or the parent's time + 1 if
        that is later."""
        ...

    def synchrony(self, height: int) -> Synchrony:
        """The clock bounds that proposals for ``height`` are judged by (chain
        parameters: every producer must use the same)."""
        ...

    def validate(self, block: Block) -> bool:
        """Fully validate ``block`` on top of the last committed block, execution
        included. The application caches the result so ``commit`` need not re-execute.
        The engine calls it only with a body it matched to the header's tx root."""
        ...

    def commit(self, block: Block, commit: Commit) -> None:
        """Make ``block`` final with its certificate (durably, before returning)."""
        ...

    def committed(self, height: int) -> tuple[Block, Commit] | None:
        """A committed block and its certificate (None when not held)."""
        ...

    def committed_encoded(self, height: int) -> tuple[bytes, bytes] | None:
        """A committed block and its certificate in their canonical encodings, as
        stored, to send to a peer that is behind as they are (None when not held).
        Raises ``StorageError`` when the stored copy is damaged: it is not sent."""
        ...

    def note_late_precommit(self, vote: Vote) -> None:
        """A verified precommit for the last committed block, in its certificate's round,
        from a producer the certificate lacks (it came after the quorum): the next
        proposal's certificate may carry it."""
        ...


# --- inputs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeoutEvent:
    """A step's timer fired; handled only if (height, round) is still current."""

    height: int
    round: int
    step: Step


@dataclass(frozen=True, slots=True)
class _Received:
    msg: Message
    peer: Peer | None
    verified: bool
    # Read back from our own WAL after a restart: handle, but do not log again.
    replayed: bool = False
    # This node's wall clock when the message arrived (``Clock.time_ms``); None when
    # unknown (replayed from the WAL), which makes a new proposal untimely.
    received_ms: int | None = None
    # Made by this engine now (``_send_own``): a proposal's body is the one its header
    # was built from, or one matched on entry (a re-proposed valid block).
    own: bool = False


class _Tick:
    """The rebroadcast timer."""


@dataclass(frozen=True, slots=True)
class _ProposeDue:
    """Our clock has passed the parent's block time: propose in (height, round) now."""

    height: int
    round: int


_Input = _Received | TimeoutEvent | _Tick | _ProposeDue
