"""How fast each peer serves one state sync, and so whom the syncer asks first
(docs/state-sync.md, Slow and hostile peers).

An answer's size says little on its own: an honest server cuts a chunk at a budget of
its own and the end of a subtree, and a page of epoch records at what it holds. So a
peer is rated by what it delivered over the time its requests were out (bytes a
second), and a peer far slower than the fastest is asked only now and then: enough to
see it got faster, too rarely to matter when it did not. Nothing here bans anyone: a
slow answer is no fault that can be proven.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class _Standing:
    # Decayed sums: a rate is nbytes / seconds.
    nbytes: float = 0.0
    seconds: float = 0.0
    answers: int = 0
    # ``PeerRates.answers`` when this peer was last asked (its probe's clock).
    asked_at: int = 0


class PeerRates:
    """Each peer's delivered bytes a second during one sync."""

    # A peer below the fastest's rate divided by this is slow.
    SLOW_RATIO = 8.0
    # A slow peer is asked again once this many answers came (from anyone) since it was
    # last asked: it gets at most about one request in this many.
    PROBE_AFTER = 16
    # Weight the past keeps at each answer: a peer that got faster is seen within a few.
    DECAY = 0.75
    # A peer hedges (asks again what another holds) only if its rate is this many times
    # the holder's: two honest peers of about one speed do not duplicate each other.
    HEDGE_RATIO = 2.0
    # An answer counts as taking this long at least (a rate needs a duration).
    MIN_SECONDS = 1e-3

    def __init__(self) -> None:
        self._peers: dict[bytes, _Standing] = {}
        self.answers = 0

    def answered(self, peer: bytes, nbytes: int, seconds: float) -> None:
        """``peer`` answered a request out for ``seconds`` with ``nbytes`` of content
        (not for an answer of nothing: "I hold none" is no measure of speed, and the
        syncer deals with it on its own). A chunk counts once it verified, a page of
        epoch records once all of it did: bytes that fail are no delivery, and their
        sender is refused."""
        s = self._peers.setdefault(peer, _Standing())
        s.nbytes = s.nbytes * self.DECAY + nbytes
        s.seconds = s.seconds * self.DECAY + max(seconds, self.MIN_SECONDS)
        s.answers += 1
        self.answers += 1

    def asked(self, peer: bytes) -> None:
        self._peers.setdefault(peer, _Standing()).asked_at = self.answers

    def rate(self, peer: bytes) -> float | None:
        """Bytes a second, None before its first answer."""
        s = self._peers.get(peer)
        return None if s is None or not s.answers else s.nbytes / s.seconds

    def slow(self, peer: bytes, among: Iterable[bytes]) -> bool:
        """Far slower than the fastest of ``among`` (a peer never rated is not slow)."""
        rate = self.rate(peer)
        if rate is None:
            return False
        best = max((r for p in among if (r := self.rate(p)) is not None), default=rate)
        return rate * self.SLOW_RATIO < best

    def outpaces(self, peer: bytes, holder: bytes) -> bool:
        """Whether ``peer`` should ask again what ``holder`` was asked: the holder was
        never rated (nor was the peer: knowing nothing, two askers beat one), or the peer
        is rated well above it."""
        mine, theirs = self.rate(peer), self.rate(holder)
        if theirs is None:
            return True
        return mine is not None and mine > theirs * self.HEDGE_RATIO

    def order(
        self, idle: Iterable[bytes], usable: Iterable[bytes], *, anyone: bool = False
    ) -> list[bytes]:
        """The ``idle`` peers to ask now, best first: those never rated (in the order
        given: each is tried once), then by rate; a peer slow among ``usable`` only when
        its probe is due, or with ``anyone`` (no request is out: waiting for a probe to
        come due would wait for answers that never come)."""
        idle, usable = list(idle), list(usable)
        untried = [p for p in idle if self.rate(p) is None]
        rated = sorted(
            (p for p in idle if self.rate(p) is not None),
            key=lambda p: -(self.rate(p) or 0.0),
        )
        due = [
            p
            for p in rated
            if anyone
            or not self.slow(p, usable)
            or self.answers - self._peers[p].asked_at >= self.PROBE_AFTER
        ]
        return untried + due
