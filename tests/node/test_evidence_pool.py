"""The node holds double-sign evidence of the height being decided until that height
commits, because the chain refuses evidence that is not below the including block.

Found by the simulation (tests/sim, "twins" seeds 2, 3, 9...): evidence caught in
round 0 of height h was included in a later round of h itself, failed with
``future_evidence``, and was never submitted again, so the double signer stayed free.
(The refusal itself: tests/consensus/test_staking_evidence.py, ``future_evidence``.)
"""

from __future__ import annotations

from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.messages import DuplicateVoteEvidence
from consensus.staking_state import EvidenceRecord, evidence_key, read
from core import PrivateKey, Vote, VoteType
from node.consensus import EvidencePool
from node.service import Node
from tests.node.conftest import served_node, until
from vm import get_account

CHAIN = "evidence-pool-test"

SIGNER = PrivateKey(bytes([9]) * 32)


def _evidence(height: int, round_: int = 0, key: PrivateKey = SIGNER) -> DuplicateVoteEvidence:
    votes = [
        Vote.create(key, CHAIN, VoteType.PREVOTE, height, round_, bytes([b]) * 32) for b in (1, 2)
    ]
    return DuplicateVoteEvidence.of(*votes)


def test_evidence_of_the_open_height_waits_for_its_commit() -> None:
    sent: list[DuplicateVoteEvidence] = []
    pool = EvidencePool(sent.append)
    ev = _evidence(height=8)
    # Caught while deciding height 8 (7 is the last committed block).
    pool.add(ev, committed_height=7)
    assert sent == []
    pool.committed(7)
    assert sent == []
    pool.committed(8)
    assert sent == [ev]
    pool.committed(9)
    assert sent == [ev]


def test_evidence_of_a_committed_height_goes_out_at_once_and_only_once() -> None:
    sent: list[DuplicateVoteEvidence] = []
    pool = EvidencePool(sent.append)
    old = _evidence(height=5, round_=1)
    pool.add(old, committed_height=7)
    pool.add(old, committed_height=7)
    assert sent == [old]
    open_ = _evidence(height=8)
    pool.add(open_, committed_height=7)
    pool.add(open_, committed_height=7)
    pool.committed(8)
    pool.committed(8)
    assert sent == [old, open_]


def test_evidence_too_old_for_any_chain_is_neither_sent_nor_kept() -> None:
    sent: list[DuplicateVoteEvidence] = []
    pool = EvidencePool(sent.append)
    keep = EvidencePool.REMEMBER_HEIGHTS
    ancient = _evidence(height=1)
    pool.add(ancient, committed_height=keep + 2)
    assert sent == []
    # What is remembered ages out too: the same piece, once old enough, is not resent.
    recent = _evidence(height=100)
    pool.add(recent, committed_height=100)
    pool.committed(100 + keep + 1)
    pool.add(recent, committed_height=100 + keep + 1)
    assert sent == [recent]


def _pieces(height: int, rounds: int, key: PrivateKey) -> list[DuplicateVoteEvidence]:
    """A double signature at both steps of every round of ``height``."""
    pieces = []
    for round_ in range(rounds):
        for kind in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            votes = [Vote.create(key, CHAIN, kind, height, round_, bytes([b]) * 32) for b in (1, 2)]
            pieces.append(DuplicateVoteEvidence.of(*votes))
    return pieces


def test_a_producer_double_signing_everywhere_is_held_within_a_bound() -> None:
    # Byzantine producers (up to a third of the set) double-sign at every height,
    # round and step: a piece each, for every height the pool remembers.
    offenders = [SIGNER, PrivateKey(bytes([10]) * 32)]
    sent: list[DuplicateVoteEvidence] = []
    pool = EvidencePool(sent.append)
    most = EvidencePool.MAX_PER_OFFENDER
    rounds = most  # more pieces a height than taken of one offender
    for height in range(1, 31):
        caught = {key.public_key: _pieces(height, rounds, key) for key in offenders}
        for pieces in caught.values():
            for ev in pieces:
                pool.add(ev, committed_height=height - 1)
        # What one offender makes this node hold is bounded, whatever it signs.
        assert len(pool) <= most * len(offenders)
        pool.committed(height)
        # Enough of each offender's pieces go out to slash and jail it, not all:
        # each is a transaction of this node, and one height could hold thousands.
        for key, pieces in caught.items():
            assert [ev for ev in sent if ev.validator == key] == pieces[:most]
        # The pieces taken are still submitted once only.
        for pieces in caught.values():
            for ev in pieces:
                pool.add(ev, committed_height=height)
        assert len(sent) == most * len(offenders)
        sent.clear()


def _offences(node: Node, rounds: tuple[int, ...]) -> list[bytes]:
    """``submit_evidence`` payloads: the node's own key (the one producer of its chain)
    prevoting two blocks at height 1, in each of ``rounds``."""
    chain_id = node.genesis.chain_id
    return [
        SubmitEvidence(
            *(
                Vote.create(node.key, chain_id, VoteType.PREVOTE, 1, round_, bytes([b]) * 32)
                for b in (1, 2)
            )
        ).encode()
        for round_ in rounds
    ]


def _punished(node: Node, rounds: tuple[int, ...]) -> int:
    """How many of ``_offences(node, rounds)`` the chain has recorded."""
    state = node.chain.state if node.chain is not None else {}
    keys = [evidence_key(node.key.public_key, 1, r, VoteType.PREVOTE) for r in rounds]
    return sum(read(state, k, EvidenceRecord) is not None for k in keys)


async def test_evidence_released_together_is_submitted_with_consecutive_nonces(node_client):
    # ``EvidencePool.committed`` hands every piece of a height over at once: two
    # offenders caught in one height, or one at several steps. Each became a
    # transaction signed with the nonce after the node's queued ones, read before the
    # previous one was admitted (admission verifies it off the loop first): all took
    # the same nonce, the mempool kept the first only, and the others' offenders
    # were never punished (the pool submits a piece once).
    _client, node, _faucet = node_client
    assert node.chain is not None
    await until(lambda: node.chain is not None and node.chain.height >= 1, timeout=20.0)
    rounds = (0, 1)
    for piece in _offences(node, rounds):
        node.submit_own_tx(SUBMIT_EVIDENCE, piece)
    # Both offences punished.
    await until(lambda: _punished(node, rounds) == 2, timeout=20.0)
    assert get_account(node.chain.state, node.key.address).nonce == 2


async def test_evidence_refused_for_a_full_queue_is_submitted_again(tmp_path):
    # A pool full under load, or the node's own queue (pieces of many offenders
    # released at once): the refusal passes as blocks drain the pool, but the
    # transaction was given up, and with it the punishment of its offender.
    # The node's mempool queues one transaction per sender.
    config = {"block_interval_ms": 200, "mempool": {"per_account_cap": 1}}
    async with served_node(tmp_path, **config) as (_client, node, _faucet):
        await until(lambda: node.chain is not None and node.chain.height >= 1, timeout=20.0)
        assert node.chain is not None
        rounds = (0, 1, 2)
        for piece in _offences(node, rounds):
            node.submit_own_tx(SUBMIT_EVIDENCE, piece)
        # Every offence punished.
        await until(lambda: _punished(node, rounds) == len(rounds), timeout=20.0)
