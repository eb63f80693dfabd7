"""Byzantine behaviours of simulated nodes, each a small rewrite of what a node sends,
relays or proposes. The engine itself is always the real one.

| behaviour | what the node does |
|---|---|
| ``equivocate`` | signs a conflicting vote after each of its own (``EquivocatingVotes``, with the key: the privval never lets one out) and sends a second, different proposal to half of its peers |
| ``twins`` | runs twice: two nodes with one key, each with its own privval, WAL and chain, so the identity sends conflicting proposals and votes (Twins, Bano et al. 2020) |
| ``tamper`` | relays every proposal and finalized block it receives with another body (its links are fast, so the tampered copy usually arrives first), and tampers the ones its engine re-sends |
| ``ahead`` | dates its proposals a day ahead of its clock |
| ``max_time`` | dates its proposals ``MAX_TIME_MS``, the latest block time validation allows |
| ``behind`` | dates its proposals as early as allowed (parent time + 1 ms) |
| ``withhold`` | never sends its own votes |
| ``selective`` | sends its own votes only to a fixed half of its peers |

A Byzantine *producer* holds a validator key (at most f of them per run); a Byzantine
*member* is a connected node outside the producer set (any number may misbehave).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from consensus.bft import Application
from consensus.messages import (
    EncodedFinalizedBlock,
    FinalizedBlock,
    Message,
    Outgoing,
    Proposal,
)
from core import MAX_TIME_MS, Block, Vote
from tests.consensus.byzantine import sign_proposal

if TYPE_CHECKING:
    from tests.sim.harness import SimNode

BEHAVIOURS = (
    "equivocate",
    "twins",
    "tamper",
    "ahead",
    "max_time",
    "behind",
    "withhold",
    "selective",
)

DAY_MS = 86_400_000


def outgoing(node: SimNode, msg: Outgoing, peer: int) -> Outgoing | None:
    """What ``node`` really sends to ``peer`` when its engine sends ``msg`` (None: nothing)."""
    behaviour = node.behaviour
    if behaviour == "tamper" and isinstance(msg, EncodedFinalizedBlock):
        msg = FinalizedBlock.decode(msg.encode())  # a stored block, tampered below
    own_vote = isinstance(msg, Vote) and msg.validator == node.key.public_key
    if behaviour == "withhold" and own_vote:
        return None
    if behaviour == "selective" and own_vote and peer not in node.vote_peers:
        return None
    if behaviour == "tamper" and isinstance(msg, Proposal | FinalizedBlock):
        if not (isinstance(msg, Proposal) and msg.proposer == node.key.public_key):
            return tampered(msg, peer)
    if (
        behaviour == "equivocate"
        and isinstance(msg, Proposal)
        and msg.pol_round is None
        and peer % 2 == 1
    ):
        return _alt_proposal(node, msg)
    return msg


def on_receive(node: SimNode, msg: Message, src: int) -> None:
    """A tampering relay forwards a tampered copy of every block it receives."""
    if node.behaviour != "tamper" or not isinstance(msg, Proposal | FinalizedBlock):
        return
    for other in node.net.nodes:
        if other.index not in (node.index, src):
            node.net.send(node.index, other.index, tampered(msg, other.index))


def tampered(msg: Proposal | FinalizedBlock, salt: int) -> Proposal | FinalizedBlock:
    """``msg`` with the same (signed) header and another body."""
    txs = list(msg.block.txs)
    way = (salt + msg.block.header.height) % 3
    if way == 0 and len(set(txs)) >= 2:
        txs.reverse()  # same transactions, another order
    elif way == 1 and txs:
        txs.pop()  # one transaction left out
    else:
        txs.append(b"\x92\xc4\x01x\xc4\x01y")  # one made up
    block = Block(msg.block.header, tuple(txs))
    return replace(msg, block=block)


def _alt_proposal(node: SimNode, p: Proposal) -> Message:
    """A second proposal for the same (height, round): another block, also signed."""
    key = (p.height, p.round)
    alt = node.alt_proposals.get(key)
    if alt is None:
        assert node.engine is not None
        block = node.engine.app.propose(p.height, p.round, p.block.header.time_ms + 1)
        alt = sign_proposal(node.key, node.engine.chain_id, p.height, p.round, None, block)
        node.alt_proposals[key] = alt
    return alt


class DatingApp:
    """The application of a producer that dates its proposals as it likes."""

    def __init__(self, inner: Application, behaviour: str) -> None:
        self.inner = inner
        self.behaviour = behaviour

    def propose(self, height: int, round_: int, time_ms: int) -> Block:
        if self.behaviour == "ahead":
            time_ms += DAY_MS
        elif self.behaviour == "max_time":
            time_ms = MAX_TIME_MS
        else:
            # The application dates it parent time + 1 ms when that is later.
            time_ms = 0
        return self.inner.propose(height, round_, time_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrap_app(node: SimNode, app: Application) -> Application:
    if node.behaviour in ("ahead", "max_time", "behind"):
        return DatingApp(app, node.behaviour)  # type: ignore[return-value]  # a wrapper with the same surface
    return app
