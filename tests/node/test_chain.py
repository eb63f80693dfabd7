"""Building blocks on a real store (the proposer's time budget), and the consensus engine's
application over it: what it refuses, drops and no longer serves."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import BFTConfig, ConsensusEngine, ConsensusMessage, make_commit
from consensus.messages import (
    EncodedFinalizedBlock,
    FinalizedBlock,
    SyncRequest,
    encode_message,
)
from core import (
    Block,
    Commit,
    CommitSig,
    InvalidBlock,
    PrivateKey,
    TxBody,
    merkle_root,
    sign_tx,
)
from core.keystore import load_key
from genesis import GenesisAccount, create_localnet, load_genesis
from node.chain import BuildCost, Chain
from node.consensus import ChainApplication
from node.service import build_registry
from storage import ChainStore
from tests.consensus.helpers import ManualClock, RecordingTransport
from vm import Transfer, verify_signed_tx

SENDERS = [PrivateKey(i.to_bytes(32, "big")) for i in range(1, 601)]


def _setup(tmp_path):
    layout = create_localnet(tmp_path / "net", 1, "")
    g = load_genesis(layout.genesis_path)
    g = replace(g, accounts=g.accounts + tuple(GenesisAccount(k.address, 10**9) for k in SENDERS))
    producer = load_key(layout.nodes[0].key_path, "")
    return g, producer


def _chain(tmp_path, name, g) -> Chain:
    return Chain(ChainStore(tmp_path / name), g, build_registry())


def _transfers(chain: Chain, g) -> list:
    fee = g.params.min_fee
    body = TxBody(0, fee, 50, "transfer", Transfer(bytes(20), 1).encode())
    return [
        verify_signed_tx(sign_tx(k, g.chain_id, body).encode(), g.chain_id, chain.registry, 10**5)
        for k in SENDERS
    ]


def test_a_spent_budget_ends_the_block_early_and_the_block_is_valid(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    executed = chain.build(
        vtxs, producer, chain.next_block_time(int(time.time() * 1000)), budget_s=0.0
    )
    included = executed.result.included
    # The clock is read between chunks: the first chunk always goes in, no more.
    assert 0 < len(included) < len(vtxs)
    assert included == vtxs[: len(included)]
    assert executed.result.rejected == []
    # The rest is not lost: nothing was refused, it waits for the next block.
    other = _chain(tmp_path, "b", g).verify(executed.block)
    assert other.tree_update.root == executed.block.header.state_root


def test_building_verifying_and_committing_a_block_charge_their_stages(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    other = _chain(tmp_path, "b", g)
    executed = chain.build(_transfers(chain, g), producer, g.genesis_time_ms + 1_000)
    built = chain.stages.totals()
    assert all(built[s] > 0 for s in ("execute", "tree", "roots"))
    # A proposer's own block needs no lookup of its transactions, nor a commit yet.
    assert (built["block_txs"], built["commit"]) == (0.0, 0.0)
    verified = other.verify(executed.block)
    checked = other.stages.totals()
    assert all(checked[s] > 0 for s in ("block_txs", "execute", "tree", "roots"))
    other.commit(verified, make_commit([producer], g.chain_id, 1, 0, executed.block.hash))
    assert other.stages.totals()["commit"] > 0
    # The mempool's stages are its own.
    totals = other.stages.totals()
    assert {totals[s] for s in ("admission_decode", "admission_checks", "select")} == {0.0}


def test_without_a_budget_every_transaction_fits(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    executed = chain.build(vtxs, producer, chain.next_block_time(int(time.time() * 1000)))
    assert executed.result.included == vtxs
    generous = _chain(tmp_path, "b", g).build(
        vtxs, producer, chain.next_block_time(int(time.time() * 1000)), budget_s=60.0
    )
    assert generous.block.header.state_root == executed.block.header.state_root


def test_the_predicted_work_after_execution_ends_the_block_early(tmp_path):
    # Execution alone would fit a generous budget many times over; the tree update and
    # encoding predicted for the keys they write (2 s per 256, a transfer writes its
    # sender's and its receiver's) do not.
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    chain.build_cost = BuildCost(per_key_s=2.0 / 256)
    executed = chain.build(
        vtxs, producer, chain.next_block_time(int(time.time() * 1000)), budget_s=3.0
    )
    # The first chunk always goes in; with the second, 512 txs would need > 4 s after execution.
    assert executed.result.included == vtxs[:256]
    other = _chain(tmp_path, "b", g).verify(executed.block)
    assert other.tree_update.root == executed.block.header.state_root


class _SlowTreeStore(ChainStore):
    """A store whose state tree update takes at least 4 ms per changed key."""

    PER_KEY_S = 0.004

    def prepare_state(self, changes):
        time.sleep(self.PER_KEY_S * len(changes))
        return super().prepare_state(changes)


class _Pool:
    """A ``TxSource`` over a list, remembering what the proposer told it to drop."""

    def __init__(self, txs: list) -> None:
        self.txs = txs
        self.rejected: list[bytes] = []

    def select(self, max_txs: int, max_bytes: int) -> list:
        return self.txs[:max_txs]

    def get(self, tx_hash: bytes):
        return None

    def reject(self, tx_hashes: list[bytes]) -> None:
        self.rejected += tx_hashes


def test_a_slow_tree_learned_from_a_verified_block_bounds_the_next_proposal(tmp_path):
    g, producer = _setup(tmp_path)
    slow = Chain(_SlowTreeStore(tmp_path / "slow"), g, build_registry())
    vtxs = _transfers(slow, g)
    pool = _Pool(vtxs[300:])
    app = ChainApplication(slow, producer, pool, lambda *_: None, build_budget_ms=200)
    assert not slow.build_cost.learned
    # Another producer's block of 300 transfers: each changes its sender's account,
    # so this node's tree update takes >= 4 ms per transaction.
    other = _chain(tmp_path, "a", g)
    theirs = other.build(vtxs[:300], producer, other.next_block_time(int(time.time() * 1000)))
    assert app.validate(theirs.block)
    # Learned as if the node had its cores to itself: a loaded machine (the other
    # test worker's nodes) divides the sleep by the contention its execution saw.
    assert slow.build_cost.learned
    assert slow.build_cost.per_key_s >= _SlowTreeStore.PER_KEY_S / BuildCost.MAX_CONTENTION
    # Its own block at that height: 512 transactions would take >= 0.25 s after
    # execution even so (the prior would predict 50 ms), so within 200 ms only the
    # first chunk goes in.
    block = app.propose(1, 1, int(time.time() * 1000))
    assert list(block.txs) == [v.encoded for v in pool.txs[:256]]
    # The rest stays in the mempool for a later block: nothing was dropped.
    assert pool.rejected == []
    assert _chain(tmp_path, "b", g).verify(block).tree_update.root == block.header.state_root


class _SlowPool(_Pool):
    """A mempool that answers ``select`` late (its loop was busy admitting)."""

    def select(self, max_txs: int, max_bytes: int) -> list:
        time.sleep(0.3)
        return super().select(max_txs, max_bytes)


def test_waiting_for_the_mempool_spends_the_proposers_budget(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    pool = _SlowPool(_transfers(chain, g))
    app = ChainApplication(chain, producer, pool, lambda *_: None, build_budget_ms=200)
    # The budget was spent before the build began: the first chunk only.
    block = app.propose(1, 0, int(time.time() * 1000))
    assert list(block.txs) == [v.encoded for v in pool.txs[:256]]
    assert pool.rejected == []


def test_build_cost_is_learned_per_key_free_of_contention_and_predicted_with_it():
    # Three validators verifying one block on two cores: execution took 1.5x its CPU
    # time on the wall clock, and so did the tree update after it.
    assert BuildCost.contention(wall_s=0.3, cpu_s=0.2) == pytest.approx(1.5)
    cost = BuildCost()
    # The first block replaces the prior, whatever it was: 1,000 transactions wrote
    # 4,000 keys (flash-deal orders) in 1.5 s after their execution.
    cost.observe(1_000, 4_000, 1.5, contention=1.5)
    assert cost.learned
    # The proposer alone on the cores predicts the uncontended cost per key...
    assert cost.predict(4_000) == pytest.approx(1.0)
    assert cost.predict(1_000) == pytest.approx(0.25)
    # ...and a loaded one its own contention's worth.
    assert cost.predict(4_000, contention=2.0) == pytest.approx(2.0)
    # Too little CPU time to tell is no contention; a thread that ran faster on the
    # wall clock than on its CPU clock (clock granularity) is none either; a starved
    # one counts at most MAX_CONTENTION.
    assert BuildCost.contention(wall_s=1.0, cpu_s=BuildCost.MIN_CPU_S / 2) == 1.0
    assert BuildCost.contention(wall_s=0.1, cpu_s=0.2) == 1.0
    assert BuildCost.contention(wall_s=100.0, cpu_s=0.1) == BuildCost.MAX_CONTENTION
    # Small blocks teach nothing.
    before = cost.per_key_s
    cost.observe(BuildCost.MIN_TXS - 1, 10_000, 100.0)
    assert cost.per_key_s == before


def test_a_block_writing_more_keys_per_transaction_is_predicted_by_its_keys(tmp_path, monkeypatch):
    # The regime change of a flash deal: blocks of transfers to one receiver (one new
    # key per transaction) teach the cost, then transactions writing two keys each
    # come (an order writes four). Learned per transaction, 512 of them would fit a
    # 1.5 s budget; their 1,024 keys do not.
    # The slow tree sleeps, which no contention slows: measured contention (another
    # test's processes starving this thread's execution) would only shrink the cost
    # learned from the sleep, and once let a whole pool into the block. Contention has
    # its own test above.
    monkeypatch.setattr(BuildCost, "contention", classmethod(lambda cls, wall_s, cpu_s: 1.0))
    g, producer = _setup(tmp_path)
    slow = Chain(_SlowTreeStore(tmp_path / "slow"), g, build_registry())
    vtxs = _transfers(slow, g)
    other = _chain(tmp_path, "a", g)
    theirs = other.build(vtxs[:300], producer, other.next_block_time(int(time.time() * 1000)))
    fee = g.params.min_fee
    two_keys = [
        verify_signed_tx(
            sign_tx(
                k, g.chain_id, TxBody(0, fee, 50, "transfer", Transfer(k.address[::-1], 1).encode())
            ).encode(),
            g.chain_id,
            slow.registry,
            10**5,
        )
        for k in SENDERS[300:]
    ]
    pool = _Pool(two_keys)
    app = ChainApplication(slow, producer, pool, lambda *_: None, build_budget_ms=1500)
    assert app.validate(theirs.block)
    block = app.propose(1, 1, int(time.time() * 1000))
    assert list(block.txs) == [v.encoded for v in two_keys[:256]]
    assert pool.rejected == []


def test_before_anything_is_learned_the_prior_bounds_the_first_block(tmp_path):
    # A storm's first block: everything pending executes well inside the budget, but
    # the prior's work after execution for 512 transactions does not fit it.
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    assert not chain.build_cost.learned
    budget_s = 300 * BuildCost.PRIOR_S
    executed = chain.build(
        vtxs, producer, chain.next_block_time(int(time.time() * 1000)), budget_s=budget_s
    )
    assert executed.result.included == vtxs[:256]
    # That block taught this node its real cost, and the prior is gone.
    assert chain.build_cost.learned


@pytest.mark.parametrize("over", ["count", "bytes"])
def test_a_block_past_the_limits_is_refused_before_its_signatures(tmp_path, over):
    # A byzantine proposer's block of more transactions (or bytes) than the chain takes
    # is refused by its sizes alone: its transactions here are not even transactions,
    # and checking them first would cost every producer a signature check each.
    g, producer = _setup(tmp_path)
    limit = g.params.max_tx_bytes  # the least max_block_bytes a genesis may set
    g = replace(g, params=replace(g.params, max_block_txs=10, max_block_bytes=limit))
    chain = _chain(tmp_path, "a", g)
    honest = chain.build([], producer, chain.next_block_time(int(time.time() * 1000)))
    if over == "count":
        junk = tuple(bytes([i]) * 8 for i in range(11))
    else:
        junk = (b"x" * limit, b"y")
    forged = Block(replace(honest.block.header, tx_root=merkle_root(junk)), junk)
    expected = "11 transactions" if over == "count" else f"{limit + 1} bytes"
    with pytest.raises(InvalidBlock, match=expected):
        _chain(tmp_path, "b", g).verify(forged)


# --- a byzantine producer's block, as the consensus engine hands it over ----------------


def _at_height_two(tmp_path):
    """A chain with block 1 committed, the application over it, and the honest block 2
    built by another node (with two transfers)."""
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    other = _chain(tmp_path, "b", g)
    vtxs = _transfers(chain, g)
    for c in (chain, other):
        executed = c.build([], producer, g.genesis_time_ms + 1_000)
        c.commit(executed, make_commit([producer], g.chain_id, 1, 0, executed.block.hash))
    honest = other.build(vtxs[:2], producer, g.genesis_time_ms + 2_000).block
    app = ChainApplication(chain, producer, _Pool([]), lambda *_: None)
    return g, producer, app, honest, vtxs


def _with_txs(block: Block, txs: tuple[bytes, ...]) -> Block:
    """``block`` with other transactions under a tx root that matches them (the engine
    hands over only bodies that match their header)."""
    return Block(replace(block.header, tx_root=merkle_root(txs)), txs)


TAMPERED = {
    "state root": lambda b, g, v: Block(replace(b.header, state_root=b"\x01" * 32), b.txs),
    "receipt root": lambda b, g, v: Block(replace(b.header, receipt_root=b"\x01" * 32), b.txs),
    "producer": lambda b, g, v: Block(replace(b.header, producer=SENDERS[0].public_key), b.txs),
    "time": lambda b, g, v: Block(replace(b.header, time_ms=g.genesis_time_ms + 1_000), b.txs),
    "certificate": lambda b, g, v: Block(
        replace(
            b.header,
            last_commit=make_commit([SENDERS[0]], g.chain_id, 1, 0, b.header.prev_hash),
        ),
        b.txs,
    ),
    "not a transaction": lambda b, g, v: _with_txs(b, (b"\x93junk",)),
    "a transaction twice": lambda b, g, v: _with_txs(b, (v[0].encoded, v[0].encoded)),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERED))
def test_a_byzantine_producers_block_is_refused_not_raised(tmp_path, tampering):
    # The engine asks validate() of every proposal it holds a body for: an exception
    # there would halt it, so whatever the block holds, the answer is False.
    g, _, app, honest, vtxs = _at_height_two(tmp_path)
    bad = TAMPERED[tampering](honest, g, vtxs)
    assert bad.hash != honest.hash
    assert app.validate(bad) is False
    # What was tried on the bad block left nothing behind: the honest one still verifies.
    assert app.validate(honest) is True


U64 = st.integers(0, 2**64 - 1)
HASHES = st.binary(min_size=32, max_size=32)
HEADER_FIELDS = {
    "round": U64,
    "time_ms": U64,
    "prev_hash": HASHES,
    "tx_root": HASHES,
    "state_root": HASHES,
    "receipt_root": HASHES,
    "producer": HASHES,
    "producer_set_hash": HASHES,
    "last_commit": st.none()
    | st.builds(
        Commit,
        U64,
        U64,
        HASHES,
        st.lists(st.builds(CommitSig, HASHES, st.binary(min_size=64, max_size=64)), max_size=3).map(
            tuple
        ),
    ),
}


@pytest.mark.parametrize(
    ("tampering", "stage"), [("not a transaction", "block_txs"), ("state root", "execute")]
)
def test_a_refused_proposal_is_charged_the_cpu_its_checks_took(tmp_path, tampering, stage):
    # Under a Byzantine producer the stages still say where the CPU went.
    g, _, app, honest, vtxs = _at_height_two(tmp_path)
    chain = app.chain
    before = chain.stages.totals()[stage]
    assert app.validate(TAMPERED[tampering](honest, g, vtxs)) is False
    assert chain.stages.totals()[stage] > before


def test_no_header_or_body_a_producer_signs_makes_validation_raise(tmp_path):
    # Height and chain id are the engine's to check before it asks (another height's
    # block never reaches validate); everything else is the producer's choice.
    g, _, app, honest, vtxs = _at_height_two(tmp_path)
    bodies = st.lists(
        st.sampled_from([v.encoded for v in vtxs[:4]]) | st.binary(max_size=200), max_size=3
    ).map(tuple)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sets(st.sampled_from(sorted(HEADER_FIELDS))), st.data(), bodies)
    def check(fields, data, txs):
        changes = {name: data.draw(HEADER_FIELDS[name], label=name) for name in fields}
        header = replace(honest.header, **changes)
        block = Block(header, honest.txs) if txs == () else _with_txs(Block(header, ()), txs)
        assert app.validate(block) in (True, False)

    check()


def test_what_the_builder_leaves_out_is_dropped_from_the_mempool(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    # The mempool still offers a transaction the block already holds (its nonce is used).
    pool = _Pool([vtxs[0], vtxs[1], vtxs[0]])
    app = ChainApplication(chain, producer, pool, lambda *_: None)
    block = app.propose(1, 0, g.genesis_time_ms + 1_000)
    assert list(block.txs) == [vtxs[0].encoded, vtxs[1].encoded]
    assert pool.rejected == [vtxs[0].hash]


def test_a_pruned_block_is_not_served_and_the_engine_goes_on(tmp_path):
    # A peer far behind asks a pruning node for a block it no longer keeps: no answer
    # (a certificate without its block, or a block without its certificate, is none).
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    for h in (1, 2, 3):
        executed = chain.build([], producer, g.genesis_time_ms + h * 1_000)
        chain.commit(executed, make_commit([producer], g.chain_id, h, 0, executed.block.hash))
    chain.store.prune_blocks(3)
    app = ChainApplication(chain, producer, _Pool([]), lambda *_: None)
    assert app.committed(1) is None and app.committed(2) is None
    assert app.committed(3) is not None and app.committed(4) is None
    assert app.committed_encoded(2) is None and app.committed_encoded(3) is not None
    transport = RecordingTransport()
    engine = ConsensusEngine(
        chain_id=g.chain_id, app=app, transport=transport, clock=ManualClock(), config=BFTConfig()
    )
    engine.start()
    for height in (1, 2, 3):
        engine.deliver(SyncRequest(height, b""), b"peer")
    answers = [m for peer, m in transport.sent if peer == b"peer"]
    assert [type(m) for m in answers] == [FinalizedBlock] and answers[0].block.header.height == 3
    assert engine.halted is None


def test_a_stored_block_is_served_in_the_bytes_its_decoded_form_encodes_to(tmp_path):
    # Sent to a peer as read (no decode, no encode): what a peer on older code got.
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    executed = chain.build(_transfers(chain, g), producer, g.genesis_time_ms + 1_000)
    chain.commit(executed, make_commit([producer], g.chain_id, 1, 0, executed.block.hash))
    app = ChainApplication(chain, producer, _Pool([]), lambda *_: None)
    assert len(executed.block.txs) == len(SENDERS)
    found = app.committed(1)
    encoded = app.committed_encoded(1)
    assert found is not None and encoded is not None
    assert encode_message(EncodedFinalizedBlock(*encoded, 7)) == (
        ConsensusMessage.wrap(FinalizedBlock(*found, 7)).encode()
    )
    assert app.committed_encoded(0) is None and app.committed_encoded(2) is None


class _CountingChain(Chain):
    """A chain that counts the blocks it executes to validate them."""

    verified = 0

    def verify(self, block, known=None, *, body_matched=False):
        self.verified += 1
        return super().verify(block, known, body_matched=body_matched)


def test_a_height_of_many_rounds_keeps_a_bounded_number_of_executed_blocks(tmp_path):
    # A height whose rounds keep failing brings a new proposal nearly every round; each
    # executed block (state changes, receipts, tree nodes) was kept until the height ended.
    g, producer = _setup(tmp_path)
    chain = _CountingChain(ChainStore(tmp_path / "a"), g, build_registry())
    other = _chain(tmp_path, "b", g)
    vtxs = _transfers(chain, g)
    app = ChainApplication(chain, producer, _Pool([]), lambda *_: None)
    rounds = 3 * ChainApplication.MAX_EXECUTED
    blocks = [
        other.build(vtxs[:2], producer, g.genesis_time_ms + 1_000 + r, r).block
        for r in range(rounds)
    ]
    for block in blocks:
        assert app.validate(block)
    assert chain.verified == rounds
    # The latest rounds' blocks are still held; the first round's was let go.
    for block in blocks[-ChainApplication.MAX_EXECUTED :]:
        assert app.validate(block)
    assert chain.verified == rounds
    assert app.validate(blocks[0])
    assert chain.verified == rounds + 1
    # A block let go can still be committed: it is executed again.
    first = blocks[1]
    app.commit(first, make_commit([producer], g.chain_id, 1, first.header.round, first.hash))
    assert chain.verified == rounds + 2
    assert chain.height == 1 and chain.head == first.header
