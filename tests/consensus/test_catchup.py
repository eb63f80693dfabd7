"""Catch-up traffic is bounded per peer: what unsigned or replayed messages can make a
node read, send and keep (``consensus/engine_catchup.py``)."""

from __future__ import annotations

import dataclasses

from consensus import make_commit
from consensus.bft import NIL, Step
from consensus.messages import FinalizedBlock, Proposal, SyncRequest
from core import Block, Commit, PrivateKey, StorageError, Vote, VoteType
from tests.consensus.helpers import (
    CHAIN,
    CONFIG,
    KEYS,
    ME,
    OTHERS,
    ToyApp,
    make_block,
    make_engine,
    proposer,
    sign_proposal,
    vote,
)
from vm.params import MAX_BLOCK_BYTES

PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
CHAIN_LENGTH = 40


def chain_of(length: int) -> ToyApp:
    """An application that already finalized ``length`` blocks."""
    app = ToyApp()
    for height in range(1, length + 1):
        block = make_block(app, height, 0, proposer(height, 0))
        app.blocks.append(block)
        app.commits.append(make_commit(OTHERS, CHAIN, height, 0, block.hash))
    return app


def served(h, peer):
    return [m for p, m in h.transport.sent if p == peer and isinstance(m, FinalizedBlock)]


def forged(v: Vote) -> Vote:
    """``v`` with a signature that does not verify."""
    return Vote(v.type, v.height, v.round, v.block_hash, v.validator, bytes(64))


def test_sync_requests_for_any_heights_are_served_within_a_per_peer_budget(tmp_path):
    h = make_engine(tmp_path, app=chain_of(CHAIN_LENGTH))
    assert h.engine.height == CHAIN_LENGTH + 1
    # SyncRequest is unsigned and names any height: asking for every one of them
    # must not make us read and send the whole chain in one interval.
    for height in range(1, CHAIN_LENGTH + 1):
        h.deliver(SyncRequest(height, NIL), peer="greedy")
    first = served(h, "greedy")
    assert 0 < len(first) < CHAIN_LENGTH
    assert len(first) == CONFIG.max_sync_answers_per_peer
    assert [fb.block.header.height for fb in first] == list(range(1, len(first) + 1))
    # The budget is the peer's own: another peer is still served.
    h.deliver(SyncRequest(CHAIN_LENGTH, NIL), peer="other")
    assert [fb.block.header.height for fb in served(h, "other")] == [CHAIN_LENGTH]
    # The same request again within the interval is not answered twice.
    h.deliver(SyncRequest(CHAIN_LENGTH, NIL), peer="other")
    assert len(served(h, "other")) == 1
    # A new interval, a new budget.
    h.clock.advance(CONFIG.sync_interval_ms)
    for height in range(1, CHAIN_LENGTH + 1):
        h.deliver(SyncRequest(height, NIL), peer="greedy")
    assert len(served(h, "greedy")) == 2 * CONFIG.max_sync_answers_per_peer


def chain_of_big_blocks(length: int, size: int) -> ToyApp:
    """``chain_of`` with ``size`` bytes of transactions (of 16 KiB) in every block."""
    app = ToyApp()
    for height in range(1, length + 1):
        tx = height.to_bytes(4, "big") * 4096
        block = make_block(app, height, 0, proposer(height, 0), txs=(tx,) * (size // len(tx)))
        app.blocks.append(block)
        app.commits.append(make_commit(OTHERS, CHAIN, height, 0, block.hash))
    return app


def test_blocks_sent_to_one_peer_are_bounded_by_their_bytes_too(tmp_path):
    # Sixteen requests of 40 bytes were answered with sixteen blocks whatever their
    # size: full blocks (8 MiB) made 128 MiB a second for one peer to read and decode
    # on the engine's thread and to queue for it, at no cost to the peer. A peer reads
    # 32 MiB a second (p2p's rate): what goes past that only fills its queue.
    size = 4 * 1024 * 1024
    h = make_engine(tmp_path, app=chain_of_big_blocks(12, size))
    for height in range(1, 13):
        h.deliver(SyncRequest(height, NIL), peer="greedy")
    sent = served(h, "greedy")
    assert sum(len(tx) for fb in sent for tx in fb.block.txs) <= 32 * 1024 * 1024 + size
    assert [fb.block.header.height for fb in sent] == list(range(1, len(sent) + 1))


def test_the_byte_budget_is_per_peer_and_per_interval(tmp_path):
    size = 1024 * 1024
    cfg = dataclasses.replace(CONFIG, max_sync_block_bytes_per_peer=5 * size // 2)
    h = make_engine(tmp_path, app=chain_of_big_blocks(CHAIN_LENGTH, size), config=cfg)
    for height in range(1, CHAIN_LENGTH + 1):
        h.deliver(SyncRequest(height, NIL), peer="greedy")
    # Three blocks pass the budget (the last one read goes past it); no more follow.
    assert [fb.block.header.height for fb in served(h, "greedy")] == [1, 2, 3]
    # The budget is the peer's own, and a new interval brings a new one.
    h.deliver(SyncRequest(CHAIN_LENGTH, NIL), peer="other")
    assert len(served(h, "other")) == 1
    h.clock.advance(cfg.sync_interval_ms)
    for height in range(4, CHAIN_LENGTH + 1):
        h.deliver(SyncRequest(height, NIL), peer="greedy")
    assert [fb.block.header.height for fb in served(h, "greedy")] == [1, 2, 3, 4, 5, 6]


def test_a_block_bigger_than_the_byte_budget_is_still_served_once_an_interval(tmp_path):
    size = 1024 * 1024
    cfg = dataclasses.replace(CONFIG, max_sync_block_bytes_per_peer=size // 2)
    h = make_engine(tmp_path, app=chain_of_big_blocks(4, size), config=cfg)
    for height in range(1, 5):
        h.deliver(SyncRequest(height, NIL), peer="behind")
    assert [fb.block.header.height for fb in served(h, "behind")] == [1]
    h.clock.advance(cfg.sync_interval_ms)
    h.deliver(SyncRequest(2, NIL), peer="behind")
    assert [fb.block.header.height for fb in served(h, "behind")] == [1, 2]


def test_old_height_votes_are_served_within_the_same_budget(tmp_path):
    h = make_engine(tmp_path, app=chain_of(CHAIN_LENGTH))
    for height in range(1, CHAIN_LENGTH + 1):
        h.deliver(vote(OTHERS[0], PV, height, 0, NIL), peer="replayer")
    replayed = served(h, "replayer")
    assert 0 < len(replayed) < CHAIN_LENGTH
    assert len(replayed) == CONFIG.max_sync_answers_per_peer


def test_old_height_votes_nobody_signed_are_not_served(tmp_path):
    h = make_engine(tmp_path, app=chain_of(3))
    stranger = PrivateKey(b"\x42" * 32)
    # Signed by a key that is not a producer: no block is read for it.
    h.deliver(vote(stranger, PV, 1, 0, NIL), peer="stranger")
    assert served(h, "stranger") == []
    # A producer's vote with a signature that does not verify: the sender is at fault.
    h.deliver(forged(vote(OTHERS[0], PV, 1, 0, NIL)), peer="forger")
    assert served(h, "forger") == []
    assert [peer for peer, _ in h.bad_peers] == ["forger"]
    # The genuine vote is served.
    h.deliver(vote(OTHERS[0], PV, 1, 0, NIL), peer="honest")
    assert [fb.block.header.height for fb in served(h, "honest")] == [1]


def height_two(h):
    """The block and proposal of height 2 on top of the block ``h`` will finalize at 1."""
    b1 = make_block(h.app, 1, 0, proposer(1, 0))
    ahead = ToyApp()
    ahead.blocks.append(b1)
    ahead.commits.append(make_commit(OTHERS, CHAIN, 1, 0, b1.hash))
    b2 = make_block(ahead, 2, 0, proposer(2, 0))
    return b1, b2


def finish_height_one(h, b1):
    h.deliver(sign_proposal(proposer(1, 0), 1, 0, b1))
    h.votes_from(OTHERS, PV, 0, b1.hash)
    h.votes_from(OTHERS, PC, 0, b1.hash)
    assert h.engine.height == 2


def test_one_peer_cannot_crowd_honest_early_votes_out_of_the_buffer(tmp_path):
    # Room for two peers' shares; each producer has more slots than a share.
    cfg = dataclasses.replace(CONFIG, max_buffered_messages=8, max_buffered_messages_per_peer=4)
    h = make_engine(tmp_path, config=cfg)
    b1, b2 = height_two(h)
    # A peer replays more early votes (all genuinely signed, for height 2: the nil
    # votes of later rounds) than the whole buffer holds.
    for round_ in (1, 2):
        for kind in (PV, PC):
            for key in OTHERS:
                h.deliver(vote(key, kind, 2, round_, NIL), peer="flooder")
    # Then an honest peer's early prevotes arrive, before we finished height 1.
    for key in OTHERS:
        h.deliver(vote(key, PV, 2, 0, b2.hash), peer="honest")
    finish_height_one(h, b1)
    assert h.engine.votes.get(0, PV).count(b2.hash) == len(OTHERS)


def test_one_peer_cannot_crowd_an_honest_early_proposal_out_of_the_buffer(tmp_path):
    h = make_engine(tmp_path)
    b1, b2 = height_two(h)
    ahead = ToyApp()
    ahead.blocks.append(b1)
    # Signed proposals of later rounds of height 2 (any member can replay them).
    for round_ in range(1, 2 + CONFIG.max_buffered_proposals):
        other = make_block(ahead, 2, round_, proposer(2, round_))
        h.deliver(sign_proposal(proposer(2, round_), 2, round_, other), peer="flooder")
    h.deliver(sign_proposal(proposer(2, 0), 2, 0, b2), peer="honest")
    finish_height_one(h, b1)
    h.clock.advance(CONFIG.timeout_commit_ms)
    # We hold the honest proposal of round 0 and prevote it.
    assert [v.block_hash for v in h.transport.votes(PV, 0) if v.height == 2] == [b2.hash]


def test_early_messages_with_bad_signatures_take_no_slot_and_are_reported(tmp_path):
    h = make_engine(tmp_path)
    b1, b2 = height_two(h)
    h.deliver(forged(vote(OTHERS[0], PV, 2, 0, b2.hash)), peer="forger")
    # Reported while we are still at height 1, not once we get to height 2.
    assert h.engine.height == 1
    assert [peer for peer, _ in h.bad_peers] == ["forger"]
    # A stranger's signed vote is not kept either (nor reported: it is well signed).
    h.deliver(vote(PrivateKey(b"\x42" * 32), PV, 2, 0, b2.hash), peer="stranger")
    finish_height_one(h, b1)
    # Neither vote was kept for height 2.
    assert h.engine.votes.get(0, PV) is None


def test_a_peer_asking_for_a_reproposed_block_gets_its_proof_of_lock_too(tmp_path):
    # We never saw round 0's proposal; round 1 re-proposes its block with the prevotes
    # of round 0 as its proof of lock. A peer missing the block asks for it: without
    # those prevotes it could not prevote the re-proposal (it waits for them).
    h = make_engine(tmp_path)
    b0 = make_block(h.app, 1, 0, proposer(1, 0))
    h.clock.advance(CONFIG.timeout_propose_ms)
    h.votes_from(OTHERS, PV, 0, b0.hash)
    h.votes_from(OTHERS, PC, 0, NIL)
    h.clock.advance(CONFIG.timeout_ms(Step.PRECOMMIT_WAIT, 0))
    assert h.engine.round == 1
    reproposal = sign_proposal(proposer(1, 1), 1, 1, b0, pol_round=0)
    h.deliver(reproposal)
    h.transport.sent.clear()
    h.deliver(SyncRequest(1, b0.hash), peer="behind")
    sent = [m for p, m in h.transport.sent if p == "behind"]
    assert sent[0] == reproposal
    pol = sent[1:]
    assert all(isinstance(v, Vote) and (v.type, v.round) == (PV, 0) for v in pol)
    assert {v.validator for v in pol} == {k.public_key for k in OTHERS}


def test_the_table_of_peer_budgets_is_bounded_and_frees_up_each_interval(tmp_path):
    cfg = dataclasses.replace(CONFIG, max_sync_peers=2)
    h = make_engine(tmp_path, app=chain_of(3), config=cfg)
    for peer in ("a", "b", "c"):
        h.deliver(SyncRequest(1, NIL), peer=peer)
    # A third peer finds the table full: no read, no answer for it in this interval.
    assert [bool(served(h, p)) for p in ("a", "b", "c")] == [True, True, False]
    # Once the budgets in it expire, they make room.
    h.clock.advance(cfg.sync_interval_ms)
    h.deliver(SyncRequest(1, NIL), peer="c")
    assert len(served(h, "c")) == 1


def crowd_the_budget_table(h, cfg):
    """Peers that are not producers take every slot of the table of budgets."""
    for i in range(cfg.max_sync_peers):
        h.deliver(SyncRequest(1, NIL), peer=f"observer-{i}")
    assert all(served(h, f"observer-{i}") for i in range(cfg.max_sync_peers))
    h.deliver(SyncRequest(1, NIL), peer="one-too-many")
    assert served(h, "one-too-many") == []


def test_peers_filling_the_budget_table_cannot_stop_us_asking_for_a_missing_block(tmp_path):
    cfg = dataclasses.replace(CONFIG, max_sync_peers=2)
    app = chain_of(3)
    h = make_engine(tmp_path, app=app, config=cfg)
    crowd_the_budget_table(h, cfg)
    # +2/3 precommit a block of our height that we never received: we must ask for it.
    missing = make_block(app, 4, 0, proposer(4, 0))
    h.votes_from(OTHERS, PC, 0, missing.hash, height=4)
    assert h.step == Step.COMMIT
    assert h.missing == [(4, missing.hash)]
    assert ("*", SyncRequest(4, missing.hash)) in h.transport.sent


def test_peers_filling_the_budget_table_cannot_keep_a_producer_from_being_served(tmp_path):
    cfg = dataclasses.replace(CONFIG, max_sync_peers=2)
    h = make_engine(tmp_path, app=chain_of(3), config=cfg)
    crowd_the_budget_table(h, cfg)
    # A producer of our height that fell behind (its node's key names the peer).
    behind = OTHERS[0].public_key
    h.deliver(SyncRequest(1, NIL), peer=behind)
    assert [fb.block.header.height for fb in served(h, behind)] == [1]
    # Within its own budget, as any peer.
    for height in range(1, 4):
        for _ in range(2):
            h.deliver(SyncRequest(height, NIL), peer=behind)
    assert [fb.block.header.height for fb in served(h, behind)] == [1, 2, 3]


def vote_checks(monkeypatch) -> list[int]:
    """The height of every vote whose signature is checked from now on, in order."""
    checks: list[int] = []
    genuine = Vote.verify

    def counted(self, chain_id):
        checks.append(self.height)
        genuine(self, chain_id)

    monkeypatch.setattr(Vote, "verify", counted)
    return checks


def test_replayed_old_votes_cost_no_signature_check_beyond_the_peers_budget(tmp_path, monkeypatch):
    h = make_engine(tmp_path, app=chain_of(CHAIN_LENGTH))
    checks = vote_checks(monkeypatch)
    # Any member can replay producers' signed votes of old heights, as fast as its
    # link allows; each one answered costs a block read, each one checked a signature.
    for _ in range(10):
        for height in range(1, CHAIN_LENGTH + 1):
            h.deliver(vote(OTHERS[0], PV, height, 0, NIL), peer="replayer")
    served_heights = [fb.block.header.height for fb in served(h, "replayer")]
    assert len(served_heights) == CONFIG.max_sync_answers_per_peer
    # Only the votes that were served cost a signature check.
    assert sorted(checks) == served_heights
    # A vote whose signature fails still costs its sender its connection.
    h.clock.advance(CONFIG.sync_interval_ms)
    h.deliver(forged(vote(OTHERS[0], PV, 1, 0, NIL)), peer="forger")
    assert [peer for peer, _ in h.bad_peers] == ["forger"]
    assert served(h, "forger") == []


def test_peers_replaying_one_early_vote_cannot_crowd_out_the_others(tmp_path, monkeypatch):
    # Room for two peers' shares in all: two replayers could fill it with copies.
    cfg = dataclasses.replace(CONFIG, max_buffered_messages=4, max_buffered_messages_per_peer=2)
    h = make_engine(tmp_path, config=cfg)
    b1, b2 = height_two(h)
    checks = vote_checks(monkeypatch)
    replayed = vote(OTHERS[0], PV, 2, 0, b2.hash)
    for peer in ("replayer-1", "replayer-2"):
        for _ in range(5):
            h.deliver(replayed, peer=peer)
    # A copy of a message already kept costs neither a slot nor a signature check.
    assert checks == [2]
    for key in OTHERS:
        h.deliver(vote(key, PV, 2, 0, b2.hash), peer="honest")
    finish_height_one(h, b1)
    assert h.engine.votes.get(0, PV).count(b2.hash) == len(OTHERS)


def test_a_byzantine_producer_signing_many_early_votes_cannot_crowd_out_honest_ones(
    tmp_path, monkeypatch
):
    # Room for eight peers' shares in all, and any number of members may relay.
    cfg = dataclasses.replace(CONFIG, max_buffered_messages=32, max_buffered_messages_per_peer=4)
    h = make_engine(tmp_path, config=cfg)
    b1, b2 = height_two(h)
    checks = vote_checks(monkeypatch)
    byzantine, honest = OTHERS[0], OTHERS[1:]
    # It signs different votes for height 2: every round, both kinds, nil and made-up
    # blocks; each relaying member sends them all.
    signed = [
        vote(byzantine, kind, 2, round_, block_hash)
        for round_ in range(8)
        for kind in (PV, PC)
        for block_hash in (NIL, bytes([round_ + 1]) * 32)
    ]
    for relay in range(12):
        for v in signed:
            h.deliver(v, peer=f"relay-{relay}")
    # Its votes cost a signature check only within the slots an honest producer has:
    # one vote per step, in the round a height starts in and the rounds above it.
    rounds = cfg.max_future_rounds_per_validator + 1
    assert len(checks) == 2 * rounds
    # The honest producers' early votes (a lagging node needs them) still find room.
    for key in honest:
        h.deliver(vote(key, PV, 2, 0, b2.hash), peer="honest")
        h.deliver(vote(key, PC, 2, 0, b2.hash), peer="honest")
    finish_height_one(h, b1)
    for kind in (PV, PC):
        assert {v.validator for v in h.engine.votes.get(0, kind).votes_for(b2.hash)} == {
            k.public_key for k in honest
        }


def counting_proposal_checks(monkeypatch) -> list[int]:
    checks: list[int] = []
    genuine = Proposal.verify

    def counted(self, chain_id):
        checks.append(self.round)
        genuine(self, chain_id)

    monkeypatch.setattr(Proposal, "verify", counted)
    return checks


def prevotes_at_height_two(h, b1):
    finish_height_one(h, b1)
    h.clock.advance(CONFIG.timeout_commit_ms)
    return [v.block_hash for v in h.transport.votes(PV, 0) if v.height == 2]


def test_a_byzantine_proposer_cannot_crowd_an_honest_early_proposal_out(tmp_path, monkeypatch):
    h = make_engine(tmp_path)
    b1, b2 = height_two(h)
    ahead = ToyApp()
    ahead.blocks.append(b1)
    checks = counting_proposal_checks(monkeypatch)
    # The proposer of round 1 of height 2 signs a proposal for every round (those of
    # other proposers too), and hostile members relay them all.
    byzantine = proposer(2, 1)
    signed = [
        sign_proposal(byzantine, 2, round_, make_block(ahead, 2, round_, byzantine))
        for round_ in range(4 * CONFIG.max_buffered_proposals)
    ]
    for relay in range(2 * CONFIG.max_buffered_proposals):
        for p in signed:
            h.deliver(p, peer=f"relay-{relay}")
    # Only its own round the engine would take at the start of height 2 costs a check.
    assert checks == [1]
    h.deliver(sign_proposal(proposer(2, 0), 2, 0, b2), peer="honest")
    assert prevotes_at_height_two(h, b1) == [b2.hash]


def test_copies_of_an_early_proposal_take_one_slot_and_a_swapped_body_none(tmp_path, monkeypatch):
    h = make_engine(tmp_path)
    b1, _ = height_two(h)
    ahead = ToyApp()
    ahead.blocks.append(b1)
    ahead.commits.append(make_commit(OTHERS, CHAIN, 1, 0, b1.hash))
    b2 = make_block(ahead, 2, 0, proposer(2, 0), txs=(b"order-1", b"tip-2"))
    genuine = sign_proposal(proposer(2, 0), 2, 0, b2)
    checks = counting_proposal_checks(monkeypatch)
    # A relay's copy with a swapped body: its signature verifies (it covers the
    # header), its body does not match. Refused and reported now, it holds no slot.
    swapped = dataclasses.replace(genuine, block=Block(b2.header, b2.txs[1:]))
    h.deliver(swapped, peer="swapper")
    assert [peer for peer, _ in h.bad_peers] == ["swapper"]
    assert h.engine.height == 1
    # Then many members relay the genuine one: one check, one slot.
    for relay in range(2 * CONFIG.max_buffered_proposals):
        h.deliver(genuine, peer=f"relay-{relay}")
    assert checks == [0, 0]
    # A copy with a swapped body, once the genuine one is kept, does not replace it.
    h.deliver(swapped, peer="swapper")
    assert prevotes_at_height_two(h, b1) == [b2.hash]


def big_proposals(b1: Block, size: int) -> tuple[Proposal, Proposal]:
    """A Byzantine producer's proposals for round 1 of height 2 and round 0 of height 3
    (the same proposer's: the schedule goes by height + round), each carrying ``size``
    bytes of transactions: valid bodies for their signed headers, whatever they hold."""
    byzantine = proposer(2, 1)
    assert proposer(3, 0) == byzantine
    txs = tuple(bytes([i]) * (size // 8) for i in range(8))
    ahead = ToyApp()
    ahead.blocks.append(b1)
    b21 = make_block(ahead, 2, 1, byzantine, txs=txs)
    ahead.blocks.append(make_block(ahead, 2, 0, proposer(2, 0)))
    b30 = make_block(ahead, 3, 0, byzantine, txs=txs)
    return sign_proposal(byzantine, 2, 1, b21), sign_proposal(byzantine, 3, 0, b30)


def test_a_peer_s_early_proposals_are_bounded_by_their_bytes(tmp_path, monkeypatch):
    # By count alone, one peer could put two proposals of a p2p frame each (16 MiB) in
    # the buffer, and members relaying a Byzantine producer's 128 MiB in all.
    h = make_engine(tmp_path)
    b1, b2 = height_two(h)
    # Each proposal 12 MiB: two are more than a peer's share (16 MiB).
    p21, p30 = big_proposals(b1, 12 * 2**20)
    checks = counting_proposal_checks(monkeypatch)
    h.deliver(p21, peer="relay-1")
    h.deliver(p30, peer="relay-1")
    # The second is refused before its signature check: it is not kept.
    assert checks == [1]
    # Another peer's share holds it.
    h.deliver(p30, peer="relay-2")
    assert checks == [1, 0]
    # And the honest proposal of height 2 still fits, with its proposer's votes.
    h.deliver(sign_proposal(proposer(2, 0), 2, 0, b2), peer="honest")
    for key in OTHERS:
        h.deliver(vote(key, PV, 2, 0, b2.hash), peer="honest")
    assert checks == [1, 0, 0]
    assert prevotes_at_height_two(h, b1) == [b2.hash]
    assert h.engine.votes.get(0, PV).count(b2.hash) == len(OTHERS) + 1


def test_a_byzantine_producer_s_frame_sized_proposals_leave_room_for_honest_full_blocks(
    tmp_path, monkeypatch
):
    # The Byzantine producer's two slots (round 1 of height 2, round 0 of height 3) took
    # a p2p frame each (16 MiB): no block's transactions may pass MAX_BLOCK_BYTES, but
    # the buffer held them, and honest blocks as large as governance allows
    # (max_block_bytes up to MAX_BLOCK_BYTES) found no room in the rest (48 MiB), so a
    # node a height behind missed the honest proposal and prevoted nil at that height.
    assert 2 * CONFIG.max_future_heights * MAX_BLOCK_BYTES <= CONFIG.max_buffered_proposal_bytes
    # This node is another producer than the proposers of heights 2 and 3's slots.
    h = make_engine(tmp_path, app=ToyApp(key=KEYS[1]))
    b1, _ = height_two(h)
    p21, p30 = big_proposals(b1, 16 * 2**20 - 1024)
    honest_txs = tuple(bytes([i]) * (MAX_BLOCK_BYTES // 8) for i in range(8))
    ahead = ToyApp()
    ahead.blocks.append(b1)
    b20 = make_block(ahead, 2, 0, proposer(2, 0), txs=honest_txs)
    ahead.blocks.append(b20)
    b31 = make_block(ahead, 3, 1, proposer(3, 1), txs=honest_txs)
    assert {proposer(2, 0), proposer(3, 1)}.isdisjoint({proposer(2, 1), KEYS[1]})
    checks = counting_proposal_checks(monkeypatch)
    h.deliver(p21, peer="relay-1")
    h.deliver(p30, peer="relay-2")
    h.deliver(sign_proposal(proposer(2, 0), 2, 0, b20), peer="honest-1")
    h.deliver(sign_proposal(proposer(3, 1), 3, 1, b31), peer="honest-2")
    # The Byzantine ones, larger than any block, are refused before their signature
    # check; both honest full blocks are checked and kept (it was [1, 0, 0]: the
    # round-1 proposal of height 3 found 44 of the 48 MiB taken).
    assert checks == [0, 1]


def test_the_early_proposals_bytes_are_bounded_in_all_and_votes_keep_their_room(
    tmp_path, monkeypatch
):
    cfg = dataclasses.replace(
        CONFIG, max_buffered_proposal_bytes=2500, max_buffered_proposal_bytes_per_peer=1500
    )
    h = make_engine(tmp_path, config=cfg)
    b1, _ = height_two(h)
    p21, p30 = big_proposals(b1, 1200)
    checks = counting_proposal_checks(monkeypatch)
    h.deliver(p21, peer="relay-1")
    h.deliver(p30, peer="relay-2")
    assert checks == [1, 0]
    # Every proposal byte in use: an honest proposal with as many is refused now...
    ahead = ToyApp()
    ahead.blocks.append(b1)
    ahead.commits.append(make_commit(OTHERS, CHAIN, 1, 0, b1.hash))
    b2 = make_block(ahead, 2, 0, proposer(2, 0), txs=(b"\x01" * 300,))
    honest = sign_proposal(proposer(2, 0), 2, 0, b2)
    h.deliver(honest, peer="honest")
    assert checks == [1, 0]
    # ...but the producers' early votes are kept (their bytes are their count's).
    for key in OTHERS:
        h.deliver(vote(key, PV, 2, 0, b2.hash), peer="honest")
    finish_height_one(h, b1)
    assert h.engine.votes.get(0, PV).count(b2.hash) == len(OTHERS)
    # The proposer sends its proposal again at our height (rebroadcast): we prevote it.
    h.deliver(honest, peer="honest")
    h.clock.advance(CONFIG.timeout_commit_ms)
    assert [v.block_hash for v in h.transport.votes(PV, 0) if v.height == 2] == [b2.hash]


class DamagedAt(ToyApp):
    """A chain whose stored copy of one block is damaged: reading it raises."""

    def __init__(self, app: ToyApp, damaged: int) -> None:
        super().__init__()
        self.blocks, self.commits, self.damaged = app.blocks, app.commits, damaged

    def committed(self, height: int) -> tuple[Block, Commit] | None:
        if height == self.damaged:
            raise StorageError(f"stored block {height} is corrupt")
        return super().committed(height)

    def committed_encoded(self, height: int) -> tuple[bytes, bytes] | None:
        if height == self.damaged:
            raise StorageError(f"stored block {height} is corrupt")
        return super().committed_encoded(height)


def test_a_damaged_stored_block_is_not_sent_and_the_engine_goes_on(tmp_path):
    # The read raised inside the engine's loop and halted it: one request from any
    # member stopped the node. Now nothing is sent for it and the engine goes on; the
    # asker's block budget for the interval is spent (what the read cost is unknown).
    h = make_engine(tmp_path, app=DamagedAt(chain_of(5), damaged=2))
    h.deliver(SyncRequest(2, NIL), peer="asker")
    h.deliver(SyncRequest(3, NIL), peer="asker")
    assert served(h, "asker") == [] and h.engine.halted is None
    h.deliver(SyncRequest(3, NIL), peer="other")
    assert [fb.block.header.height for fb in served(h, "other")] == [3]
    h.clock.advance(CONFIG.sync_interval_ms)
    h.deliver(SyncRequest(3, NIL), peer="asker")
    assert [fb.block.header.height for fb in served(h, "asker")] == [3]
    assert h.engine.halted is None


def asked(h, peer):
    return [m.height for p, m in h.transport.sent if p == peer and isinstance(m, SyncRequest)]


def finalized(source: ToyApp, height: int, latest: int) -> FinalizedBlock:
    """Block ``height`` of ``source`` with its certificate, its sender holding up to ``latest``."""
    return FinalizedBlock(source.blocks[height - 1], source.commits[height - 1], latest)


def test_a_peer_claiming_more_and_then_silent_cannot_stall_a_catch_up(tmp_path):
    # A member answered the requests of an interval first with the real block, claimed
    # to hold far more, and never answered the request that followed; the honest
    # answers came second and were dropped, so nobody else was asked for the next
    # block until the next interval (one block a second, against one every 500 ms).
    source = chain_of(4)
    h = make_engine(tmp_path)

    h.deliver(finalized(source, 1, latest=2**64 - 1), peer="liar")
    assert h.engine.height == 2 and asked(h, "liar") == [2]
    # The liar's copy again takes no second place: it is asked once.
    h.deliver(finalized(source, 1, latest=2**64 - 1), peer="liar")
    h.deliver(finalized(source, 1, latest=4), peer="honest")
    assert asked(h, "liar") == [2] and asked(h, "honest") == [2]
    # One runner-up per block: a third answer asks nobody more.
    h.deliver(finalized(source, 1, latest=4), peer="third")
    assert asked(h, "third") == []
    # The honest peer's answer goes on as the catch-up, with no interval waited; the
    # second place goes in turn to a peer that said it holds the block (third).
    h.deliver(finalized(source, 2, latest=4), peer="honest")
    assert h.engine.height == 3 and asked(h, "honest") == [2, 3] and asked(h, "third") == [3]
    # A peer that holds no more is not asked.
    h.deliver(finalized(source, 2, latest=2), peer="third")
    h.deliver(finalized(source, 3, latest=4), peer="honest")
    assert h.engine.height == 4 and asked(h, "third") == [3]


def test_members_answering_first_and_then_silent_are_passed_over(tmp_path):
    # Two colluding members win the interval's race with the real block and take both
    # places asked for the next one, then answer late (at the next interval) or never:
    # the honest peer, third, was never asked, and the catch-up went one block an
    # interval. A peer asked and slower than an interval is passed over for a while.
    source = chain_of(5)
    h = make_engine(tmp_path)

    for peer in ("liar1", "liar2", "honest"):
        h.deliver(finalized(source, 1, latest=5), peer=peer)
    assert asked(h, "liar1") == [2] and asked(h, "liar2") == [2] and asked(h, "honest") == []
    # The next interval: the liars send block 2 first again, late for what they were
    # asked, and the honest peer's copy comes third.
    h.clock.advance(CONFIG.sync_interval_ms + 1)
    for peer in ("liar1", "liar2", "honest"):
        h.deliver(finalized(source, 2, latest=5), peer=peer)
    assert h.engine.height == 3
    assert asked(h, "liar1") == [2] and asked(h, "liar2") == [2] and asked(h, "honest") == [3]
    # The honest peer answers at once and goes on as the catch-up.
    h.deliver(finalized(source, 3, latest=5), peer="honest")
    assert h.engine.height == 4 and asked(h, "honest") == [3, 4]
    # A liar that stays silent on what it was asked is passed over too.
    h.deliver(finalized(source, 3, latest=5), peer="liar1")
    assert asked(h, "liar1") == [2]


def test_members_answering_just_within_the_interval_cannot_keep_an_honest_peer_out(tmp_path):
    # Two colluding members took both places asked for the next block (the peer whose
    # block we took and the runner-up), then answered each request just within a sync
    # interval, in time: only their copies came, the honest peer (which answered the
    # first requests too) was never asked again, and the catch-up went one block an
    # interval against blocks every 500 ms. The second place goes to the peer known to
    # hold the blocks that was asked least recently: the honest peer gets its turn.
    source = chain_of(6)
    h = make_engine(tmp_path)

    for peer in ("liar1", "liar2", "honest"):
        h.deliver(finalized(source, 1, latest=6), peer=peer)
    assert asked(h, "liar1") == [2] and asked(h, "liar2") == [2] and asked(h, "honest") == []
    h.clock.advance(CONFIG.sync_interval_ms - 1)
    for peer in ("liar1", "liar2"):
        h.deliver(finalized(source, 2, latest=6), peer=peer)
    assert h.engine.height == 3
    assert asked(h, "honest") == [3]
    # It answers at once and goes on as the catch-up; the liars take their turns.
    h.deliver(finalized(source, 3, latest=6), peer="honest")
    assert h.engine.height == 4 and asked(h, "honest") == [3, 4]
    assert asked(h, "liar1") == [2, 3] and asked(h, "liar2") == [2, 4]
    # Silent on those, they are not asked again (one that still owes a block is not
    # asked for another: its wait would start over, and it would never be late).
    half = CONFIG.sync_interval_ms // 2 + 1
    for height in (4, 5):
        h.clock.advance(half)
        h.deliver(finalized(source, height, latest=6), peer="honest")
    assert h.engine.height == 6 and asked(h, "honest") == [3, 4, 5, 6]
    assert asked(h, "liar1") == [2, 3] and asked(h, "liar2") == [2, 4]


def test_members_answering_at_the_interval_s_requests_are_passed_over(tmp_path):
    # Asked for the next block, two colluding members waited for the requests the
    # node sends everyone once it has been a sync interval at its height, and answered
    # them first: exactly an interval after they were asked (or, for a runner-up asked
    # later, less), which counted as in time. Who was asked for a height and has not
    # sent it when the node has to ask everyone is late, however soon that was.
    source = chain_of(6)
    h = make_engine(tmp_path)

    for peer in ("liar1", "liar2", "honest"):
        h.deliver(finalized(source, 1, latest=6), peer=peer)
    assert asked(h, "liar1") == [2] and asked(h, "liar2") == [2]
    # An interval at height 2: a producer's message for a later height (relayed by
    # the honest peer) makes the node ask its sender for height 2.
    h.clock.advance(CONFIG.sync_interval_ms)
    h.deliver(vote(OTHERS[0], PC, 5, 0, NIL), peer="honest")
    assert asked(h, "honest") == [2]
    for peer in ("liar1", "liar2", "honest"):
        h.deliver(finalized(source, 2, latest=6), peer=peer)
    assert h.engine.height == 3
    assert asked(h, "liar1") == [2] and asked(h, "liar2") == [2]
    assert asked(h, "honest") == [2, 3]


def proposed_signers(h, height: int) -> list[bytes]:
    """Who the certificate in our proposal for ``height`` names."""
    [p] = [p for p in h.transport.proposals() if p.height == height]
    assert p.block.header.last_commit is not None
    return [s.validator for s in p.block.header.last_commit.signatures]


EVERY_PRODUCER = sorted(k.public_key for k in KEYS)


def precommitted_height_three(h) -> Block:
    """At height 3, the proposal of round 0 and its polka: we precommit it."""
    assert h.engine.height == 3
    b3 = make_block(h.app, 3, 0, proposer(3, 0))
    h.deliver(sign_proposal(proposer(3, 0), 3, 0, b3))
    h.votes_from(OTHERS, PV, 0, b3.hash, height=3)
    assert [v.block_hash for v in h.transport.votes(PC, 0) if v.height == 3] == [b3.hash]
    return b3


def test_a_stripped_certificate_does_not_leave_out_precommits_the_node_holds(tmp_path):
    # A relay stripped the certificate it sent us to a bare quorum. Stored as received,
    # it went into our next proposal (we propose height 4) without a producer whose
    # precommit we held: a missed slot charged to us, an honest proposer, as the
    # certificate's builder (docs/staking.md, Missed slots). A member that produces
    # nothing could so push honest producers towards jailing.
    h = make_engine(tmp_path, app=chain_of(2))
    b3 = precommitted_height_three(h)
    h.deliver(vote(OTHERS[0], PC, 3, 0, b3.hash), peer="honest")
    stripped = make_commit([ME, *OTHERS[1:]], CHAIN, 3, 0, b3.hash)
    h.deliver(FinalizedBlock(b3, stripped, latest=3), peer="relay")
    assert h.engine.height == 4
    h.clock.advance(CONFIG.timeout_commit_ms)
    assert proposed_signers(h, 4) == EVERY_PRODUCER
    # The certificate stored (and served to peers) names them all too.
    assert [s.validator for s in h.app.commits[-1].signatures] == EVERY_PRODUCER


def test_a_fuller_copy_of_a_stripped_certificate_completes_it(tmp_path):
    # The stripped certificate came first; an honest peer's copy of the block, second,
    # carries the full one. Its precommits that ours lacks go into our next proposal.
    # A copy with a precommit that does not verify is its sender's fault.
    h = make_engine(tmp_path, app=chain_of(2))
    b3 = precommitted_height_three(h)
    stripped = make_commit([ME, *OTHERS[1:]], CHAIN, 3, 0, b3.hash)
    h.deliver(FinalizedBlock(b3, stripped, latest=3), peer="relay")
    assert h.engine.height == 4
    full = make_commit(KEYS, CHAIN, 3, 0, b3.hash)
    forged = Commit(
        3, 0, b3.hash, tuple(dataclasses.replace(s, signature=bytes(64)) for s in full.signatures)
    )
    h.deliver(FinalizedBlock(b3, forged, latest=3), peer="forger")
    assert [peer for peer, _ in h.bad_peers] == ["forger"]
    h.deliver(FinalizedBlock(b3, full, latest=3), peer="honest")
    h.clock.advance(CONFIG.timeout_commit_ms)
    assert proposed_signers(h, 4) == EVERY_PRODUCER
    assert [peer for peer, _ in h.bad_peers] == ["forger"] and h.engine.halted is None


def test_a_peer_whose_answer_a_faster_peer_overtook_is_not_passed_over(tmp_path):
    # Asked for a block in the second place, a peer answered at once, but a nearer
    # peer's answers took the node two heights on before it came: a copy of a block
    # below the one finalized last was dropped unseen, the peer still owed its block,
    # so it was not asked again, and an interval after its ask it was passed over for
    # SLOW_PEER_HEIGHTS heights, however soon it had answered. Honest peers farther
    # away than the fastest one dropped out of the second place that way, one by one.
    source = chain_of(8)
    h = make_engine(tmp_path)

    h.deliver(finalized(source, 1, latest=8), peer="near")
    h.deliver(finalized(source, 1, latest=8), peer="far")
    assert asked(h, "near") == [2] and asked(h, "far") == [2]
    # The near peer's answers come first, twice; the far peer's answer for 2 after them.
    h.deliver(finalized(source, 2, latest=8), peer="near")
    h.deliver(finalized(source, 3, latest=8), peer="near")
    assert h.engine.height == 4 and asked(h, "far") == [2]
    h.deliver(finalized(source, 2, latest=8), peer="far")
    # It answered what it was asked, in time: it takes its turn again.
    h.deliver(finalized(source, 4, latest=8), peer="near")
    assert h.engine.height == 5 and asked(h, "far") == [2, 5]
    # Its answer comes first now: it goes on as the catch-up.
    h.deliver(finalized(source, 5, latest=8), peer="far")
    assert h.engine.height == 6 and asked(h, "far") == [2, 5, 6]


def test_a_peer_whose_copy_faster_peers_overtook_takes_its_turns(tmp_path):
    # Two colluding members near the node answered the requests of an interval first
    # and each request after fast and just within the interval by turns: the honest
    # peers' copies, farther away, came once the node was two heights on and were
    # dropped, so the node never learnt that they hold blocks; the second place went
    # in turn to the two members only, the node never waited an interval at a height
    # (so never asked everyone), and it went a block half an interval, no faster than
    # the chain. A peer whose copy came too late to use still holds blocks.
    source = chain_of(8)
    h = make_engine(tmp_path)

    for peer in ("near1", "near2"):
        h.deliver(finalized(source, 1, latest=8), peer=peer)
    h.deliver(finalized(source, 2, latest=8), peer="near1")
    h.deliver(finalized(source, 2, latest=8), peer="near2")
    assert h.engine.height == 3
    h.deliver(finalized(source, 1, latest=8), peer="honest")
    h.deliver(finalized(source, 3, latest=8), peer="near1")
    assert h.engine.height == 4 and asked(h, "honest") == [4]
