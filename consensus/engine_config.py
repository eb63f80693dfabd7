"""Settings of the consensus engine: the steps of a round and their timeouts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Step(IntEnum):
    """Steps of one round, in order; a round never goes back to an earlier step."""

    NEW_HEIGHT = 1
    NEW_ROUND = 2
    PROPOSE = 3
    PREVOTE = 4
    PREVOTE_WAIT = 5
    PRECOMMIT = 6
    PRECOMMIT_WAIT = 7
    COMMIT = 8


@dataclass(frozen=True, slots=True)
class BFTConfig:
    """Node-local consensus settings (milliseconds). Timeouts grow by delta per round so
    that after the network stabilises some round is long enough for everyone."""

    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500
    # Pause after a commit before round 0 of the next height: the block interval.
    timeout_commit_ms: int = 1000
    # Re-send own messages of the current round this often (0: never). Lost messages are
    # otherwise never repeated, and the algorithm assumes eventual delivery.
    rebroadcast_ms: int = 1000
    # With no step change for this many rebroadcast periods, also relay every vote held
    # for the previous and current round: a restarted peer may have lost votes that
    # only we still have (cometbft's vote gossip does this continuously).
    stall_relay_periods: int = 2
    # The budget interval of sync answers and requests: per peer, each (kind, height,
    # block) at most once and at most max_sync_answers_per_peer in all (any heights),
    # so no peer can make us read and send more blocks than that per interval.
    sync_interval_ms: int = 1000
    max_sync_answers_per_peer: int = 16
    # ... and the blocks among those answers at most this many bytes (a stored block's
    # encoding, a proposal's transactions; at least one block): 16 full blocks are
    # 128 MiB to read (on the engine's thread) and send, for 16 requests of 40 bytes.
    # More than a peer reads in an interval (p2p's 32 MiB/s) only fills its queue
    # until it is dropped.
    max_sync_block_bytes_per_peer: int = 32 * 1024 * 1024
    # Peers with a budget in use (an authenticated member set is far smaller).
    max_sync_peers: int = 256
    # Messages for later heights are kept (bounded) until this node gets there: in all,
    # and per sending peer, so that one peer cannot crowd out the others' messages.
    max_future_heights: int = 2
    max_buffered_messages: int = 4096
    max_buffered_proposals: int = 8
    max_buffered_messages_per_peer: int = 512
    max_buffered_proposals_per_peer: int = 2
    # ... and the proposals' bytes (their transactions'), in all and per peer: a
    # proposal may fill a p2p frame (16 MiB), so the counts alone let a Byzantine
    # producer's proposals, relayed by members, hold 32 MiB per peer, 64 MiB in all
    # (the 4 slots of 2 heights), up to 128 MiB (8 proposals) with more heights.
    # A vote is at most Vote.MAX_ENCODED (256 bytes), so the counts bound the votes'
    # bytes (1 MiB) and proposals never take their room. A proposal whose transactions
    # pass vm.params.MAX_BLOCK_BYTES (12 MiB, the most governance may make
    # max_block_bytes) is no block and is refused: in all, the four slots of two
    # heights at that size, so the two a Byzantine producer may hold (round 1 of the
    # next height and round 0 of the one after are one proposer's) leave the honest
    # ones room for full blocks. Per peer: two full blocks at the default max_block_bytes.
    max_buffered_proposal_bytes: int = 48 * 1024 * 1024
    max_buffered_proposal_bytes_per_peer: int = 16 * 1024 * 1024
    # Votes a validator may have in rounds above ours (cometbft's peer catch-up rounds).
    max_future_rounds_per_validator: int = 2
    # Rounds below ours whose proposals (and blocks) are kept whatever the votes say;
    # older ones only if a round's votes made a majority for their block or it is our
    # lock or valid block. A height whose rounds keep failing while a quorum is up
    # brings a new block nearly every round (megabytes each, 66-120 rounds in its first
    # hour): kept all, they filled the memory of every node while the cause was being
    # fixed. A block let go that late votes decide after all is fetched from a peer (a
    # majority's voters hold it).
    kept_proposal_rounds: int = 4

    def timeout_ms(self, step: Step, round_: int) -> int:
        """How long ``step`` may take in ``round_``: base + delta * round."""
        if step == Step.PROPOSE:
            return self.timeout_propose_ms + self.timeout_propose_delta_ms * round_
        if step == Step.PREVOTE_WAIT:
            return self.timeout_prevote_ms + self.timeout_prevote_delta_ms * round_
        if step == Step.PRECOMMIT_WAIT:
            return self.timeout_precommit_ms + self.timeout_precommit_delta_ms * round_
        if step == Step.NEW_HEIGHT:
            return self.timeout_commit_ms
        raise ValueError(f"step {step.name} has no timeout")


@dataclass(frozen=True, slots=True)
class Synchrony:
    """How far a new proposal's block time may lie from the receiver's clock.

    Proposer-based timestamps (CometBFT's PBTS): a proposal of a new block (no
    proof-of-lock round) is *timely* at a receiver whose clock read ``received_ms``
    when it arrived if

        time_ms - precision_ms <= received_ms <= time_ms + message_delay(round) + precision_ms

    and honest producers prevote nil on an untimely one. ``precision_ms`` bounds the
    difference between honest clocks; ``message_delay_ms`` bounds how long a proposal
    takes to build and reach the others, and grows by a tenth per round so that a
    slow network cannot stall the chain for good.
    """

    precision_ms: int
    message_delay_ms: int

    def message_delay(self, round_: int) -> int:
        return self.message_delay_ms + self.message_delay_ms * round_ // 10

    def timely(self, time_ms: int, received_ms: int | None, round_: int) -> bool:
        """Whether a new block dated ``time_ms``, proposed in ``round_``, arrived in time."""
        if received_ms is None:
            return False
        earliest = time_ms - self.precision_ms
        latest = time_ms + self.message_delay(round_) + self.precision_ms
        return earliest <= received_ms <= latest
