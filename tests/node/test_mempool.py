"""The sharded mempool: admission codes, nonce queues, selection, commit, verify-once."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import itertools
import tracemalloc
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import node.mempool as mempool_mod
from core.keys import PrivateKey
from core.types import SignedTx, TxBody, sign_tx, tx_hash
from node.mempool import Mempool, MempoolConfig
from vm.accounts import Account, account_key, get_account
from vm.context import BlockContext
from vm.executor import BlockResult, Executor, verify_signed_tx
from vm.params import ChainParams
from vm.registry import TxClass, TxType, default_registry
from vm.transfer import Transfer, apply_transfer

CHAIN = "mempool-test"
MIN_FEE = 10
PARAMS = ChainParams(min_fee=MIN_FEE, max_expiry_blocks=100)
RICH = 10**12


def key(i: int) -> PrivateKey:
    return PrivateKey(hashlib.sha256(b"mempool-key-%d" % i).digest())


KEYS = [key(i) for i in range(64)]
SINK = bytes(20)


class DictState:
    """A StateView over a plain dict, with helpers to set real encoded accounts."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, k: bytes) -> bytes | None:
        return self.data.get(k)

    def put(self, address: bytes, balance: int, nonce: int = 0) -> None:
        self.data[account_key(address)] = Account(balance, nonce).encode()

    def account(self, address: bytes) -> Account:
        return get_account(self, address)


def make_tx(
    k: PrivateKey,
    nonce: int,
    fee: int = MIN_FEE,
    expiry: int = 50,
    amount: int = 1,
    chain: str = CHAIN,
    tx_type: str = "transfer",
    payload: bytes | None = None,
) -> bytes:
    body = TxBody(
        nonce,
        fee,
        expiry,
        tx_type,
        Transfer(SINK, amount).encode() if payload is None else payload,
    )
    return sign_tx(k, chain, body).encode()


class Env:
    def __init__(
        self,
        pool: ThreadPoolExecutor,
        params: ChainParams = PARAMS,
        **config: int | None,
    ) -> None:
        self.state = DictState()
        self.height = 0
        self.registry = default_registry()
        self.executor = Executor(self.registry)
        self.mempool = Mempool(
            CHAIN,
            self.registry,
            self.executor,
            params,
            self.state,
            lambda: self.height,
            MempoolConfig(**config),  # type: ignore[arg-type]  # settings by name
            pool,
        )
        for k in KEYS:
            self.state.put(k.address, RICH)

    async def submit(self, *raws: bytes, client: bool = False) -> list[str]:
        return [r.code for r in await self.mempool.submit(list(raws), client=client)]

    def commit(self, txs: list) -> None:
        """Apply a selection as a block would (nonce and fee only) and tell the mempool."""
        for vtx in txs:
            a = self.state.account(vtx.sender_address)
            assert vtx.body.nonce == a.nonce
            self.state.put(vtx.sender_address, a.balance - vtx.body.fee, a.nonce + 1)
        self.height += 1
        self.mempool.on_block_committed([v.hash for v in txs])


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(2) as p:
        yield p


@pytest.fixture
def env(pool):
    return Env(pool)


def keys_in_shard(shard: int, shards: int, n: int) -> list[PrivateKey]:
    out = [k for k in KEYS if int.from_bytes(k.address[:8], "big") % shards == shard]
    assert len(out) >= n
    return out[:n]


# --- accepting and reading back ---


async def test_accepts_and_keeps_the_verified_tx(env):
    raw = make_tx(KEYS[0], 0)
    [r] = await env.mempool.submit([raw])
    assert (r.code, r.hash) == ("accepted", tx_hash(raw))
    assert r.accepted
    vtx = env.mempool.get(r.hash)
    assert vtx is not None and vtx.tx == SignedTx.decode(raw)
    assert env.mempool.contains(r.hash) and r.hash in env.mempool
    assert len(env.mempool) == 1 and sum(env.mempool.shard_sizes()) == 1
    assert env.mempool.total_bytes == len(raw)
    assert list(env.mempool.pending_hashes()) == [r.hash]
    assert env.mempool.select(10, 10**6) == [vtx]


async def test_admission_selection_and_the_clean_up_after_a_commit_are_charged_their_cpu(env):
    stages = env.mempool.stages
    await env.submit(*(make_tx(k, 0) for k in KEYS[:20]))
    admitted = stages.totals()
    assert admitted["admission_checks"] > 0
    # Threads decode as they verify, beside the signatures: no stage of the node's own.
    assert admitted["admission_decode"] == 0.0
    assert (admitted["select"], admitted["after_commit"]) == (0.0, 0.0)
    picked = env.mempool.select(10, 10**6)
    assert stages.totals()["select"] > 0
    env.commit(picked)
    after = stages.totals()
    assert after["after_commit"] > 0
    # Blocks are the chain's stages, never the mempool's.
    assert {after[s] for s in ("execute", "tree", "roots", "commit", "block_txs")} == {0.0}


async def test_results_in_input_order(env):
    raws = [make_tx(KEYS[0], 0), b"junk", make_tx(KEYS[1], 0, fee=1), make_tx(KEYS[2], 0)]
    assert await env.submit(*raws) == ["accepted", "malformed", "fee_too_low", "accepted"]


# --- stateless refusals ---


async def test_stateless_codes(env):
    good = SignedTx.decode(make_tx(KEYS[0], 0))
    bad_sig = SignedTx(good.chain_id, good.sender, good.body, bytes(64)).encode()
    codes = await env.submit(
        b"\x93\x01",
        b"x" * (PARAMS.max_tx_bytes + 1),
        make_tx(KEYS[0], 0, chain="other-chain"),
        bad_sig,
        make_tx(KEYS[0], 0, tx_type="nope"),
        make_tx(KEYS[0], 0, payload=b"\xc0"),
    )
    assert codes == [
        "malformed",
        "too_large",
        "wrong_chain",
        "bad_signature",
        "unknown_type",
        "malformed",
    ]
    assert len(env.mempool) == 0


async def test_stateless_refusal_has_no_hash(env):
    [r] = await env.mempool.submit([b"junk"])
    assert r.hash is None and r.message


# --- stateful refusals ---


async def test_expired_and_too_far_ahead(env):
    env.height = 10
    # expiry 10 < next height 11; 11 is the last height it may go in.
    assert await env.submit(make_tx(KEYS[0], 0, expiry=10)) == ["expired"]
    assert await env.submit(make_tx(KEYS[0], 0, expiry=11)) == ["accepted"]
    assert await env.submit(make_tx(KEYS[1], 0, expiry=11 + PARAMS.max_expiry_blocks + 1)) == [
        "expired"
    ]


async def test_fee_too_low(env):
    [r] = await env.mempool.submit([make_tx(KEYS[0], 0, fee=MIN_FEE - 1)])
    assert r.code == "fee_too_low" and str(MIN_FEE) in r.message


async def test_new_params_apply_to_later_admissions(env):
    # Governance raised the minimum fee: the node hands the mempool the new params.
    assert await env.submit(make_tx(KEYS[0], 0, fee=MIN_FEE)) == ["accepted"]
    env.mempool.set_params(dataclasses.replace(PARAMS, min_fee=MIN_FEE * 2))
    assert env.mempool.params.min_fee == MIN_FEE * 2
    [r] = await env.mempool.submit([make_tx(KEYS[1], 0, fee=MIN_FEE)])
    assert r.code == "fee_too_low" and str(MIN_FEE * 2) in r.message
    assert await env.submit(make_tx(KEYS[1], 0, fee=MIN_FEE * 2)) == ["accepted"]


async def test_nonce_too_low(env):
    env.state.put(KEYS[0].address, RICH, nonce=5)
    [r] = await env.mempool.submit([make_tx(KEYS[0], 4)])
    assert r.code == "nonce_too_low" and "5" in r.message and "4" in r.message


async def test_insufficient_fee_single_and_cumulative(env):
    env.state.put(KEYS[0].address, 25)
    assert await env.submit(make_tx(KEYS[1], 0, fee=RICH + 1)) == ["insufficient_fee"]
    # 25 pays two fees of 10, not three: queued fees count against the balance.
    codes = await env.submit(*(make_tx(KEYS[0], n) for n in range(3)))
    assert codes == ["accepted", "accepted", "insufficient_fee"]
    [r] = await env.mempool.submit([make_tx(KEYS[0], 2, fee=11)])
    assert r.code == "insufficient_fee" and "20" in r.message


async def test_duplicate_same_bytes(env):
    raw = make_tx(KEYS[0], 0)
    assert await env.submit(raw, raw) == ["accepted", "duplicate"]
    assert await env.submit(raw) == ["duplicate"]
    assert len(env.mempool) == 1


async def test_duplicate_nonce_and_replacement(env):
    first = make_tx(KEYS[0], 0, fee=100)
    assert await env.submit(first) == ["accepted"]
    # Same nonce, fee bumped by less than 10 %: refused.
    [r] = await env.mempool.submit([make_tx(KEYS[0], 0, fee=109)])
    assert r.code == "duplicate" and "110" in r.message
    # Enough of a bump: the new one replaces the old one.
    second = make_tx(KEYS[0], 0, fee=110)
    [r] = await env.mempool.submit([second])
    assert r.code == "accepted" and tx_hash(first).hex() in r.message
    assert not env.mempool.contains(tx_hash(first))
    assert env.mempool.contains(tx_hash(second))
    assert len(env.mempool) == 1 and env.mempool.total_bytes == len(second)
    assert [v.body.fee for v in env.mempool.select(10, 10**6)] == [110]


async def test_replacement_disabled(pool):
    env = Env(pool, replace_fee_bump_pct=None)
    assert await env.submit(make_tx(KEYS[0], 0, fee=10)) == ["accepted"]
    assert await env.submit(make_tx(KEYS[0], 0, fee=10_000)) == ["duplicate"]


async def test_replacement_must_stay_payable(env):
    env.state.put(KEYS[0].address, 100)
    assert await env.submit(make_tx(KEYS[0], 0, fee=50)) == ["accepted"]
    assert await env.submit(make_tx(KEYS[0], 0, fee=101)) == ["insufficient_fee"]
    assert await env.submit(make_tx(KEYS[0], 0, fee=100)) == ["accepted"]


async def test_nonce_gap_beyond_window(pool):
    env = Env(pool, per_account_cap=4)
    env.state.put(KEYS[0].address, RICH, nonce=3)
    # Window is [3, 7).
    codes = await env.submit(make_tx(KEYS[0], 6), make_tx(KEYS[0], 7))
    assert codes == ["accepted", "nonce_gap"]


async def test_account_queue_full(pool):
    env = Env(pool, per_account_cap=3, max_nonce_ahead=10)
    codes = await env.submit(*(make_tx(KEYS[0], n) for n in (0, 2, 4, 6)))
    assert codes == ["accepted", "accepted", "accepted", "account_queue_full"]
    # Other senders are unaffected.
    assert await env.submit(make_tx(KEYS[1], 0)) == ["accepted"]


async def test_mempool_full_by_count(pool):
    env = Env(pool, shards=2, per_shard_cap=2)
    a, b, c = keys_in_shard(0, 2, 3)
    (d,) = keys_in_shard(1, 2, 1)
    codes = await env.submit(make_tx(a, 0), make_tx(b, 0), make_tx(c, 0), make_tx(d, 0))
    assert codes == ["accepted", "accepted", "mempool_full", "accepted"]
    assert env.mempool.shard_sizes() == [2, 1]
    # A replacement does not grow the shard, so it is still allowed.
    assert await env.submit(make_tx(a, 0, fee=100)) == ["accepted"]
    # Committing frees room.
    env.commit(env.mempool.select(1, 10**6))
    assert await env.submit(make_tx(c, 0)) == ["accepted"]


async def test_mempool_full_by_bytes(pool):
    size = len(make_tx(KEYS[0], 0))
    env = Env(pool, shards=1, per_shard_bytes=2 * size)
    codes = await env.submit(make_tx(KEYS[0], 0), make_tx(KEYS[1], 0), make_tx(KEYS[2], 0))
    assert codes == ["accepted", "accepted", "mempool_full"]
    assert env.mempool.shard_bytes() == [2 * size]


async def test_a_higher_fee_outbids_a_shard_filled_at_the_minimum_fee(pool):
    """Accounts are cheap to grind into one shard: a flood filling the shard's cap
    (50,000 by default, under the client window of 80,000) had every sender of that
    shard refused ``mempool_full`` whatever fee it offered, with room in the window."""
    env = Env(pool, shards=2, per_shard_cap=3)
    flooders = keys_in_shard(0, 2, 5)
    flood = [make_tx(k, 0) for k in flooders[:3]]
    assert await env.submit(*flood, client=True) == ["accepted"] * 3
    shopper = flooders[3]
    assert await env.submit(make_tx(shopper, 0), client=True) == ["mempool_full"]
    assert await env.submit(make_tx(shopper, 0, fee=2 * MIN_FEE), client=True) == ["accepted"]
    assert env.mempool.shard_sizes()[0] == 3
    assert tx_hash(flood[2]) not in env.mempool
    # Nothing cheaper left in the shard: refused, nothing evicted.
    assert await env.submit(make_tx(flooders[4], 0), client=True) == ["mempool_full"]
    assert env.mempool.shard_sizes()[0] == 3


@pytest.fixture
def verified(monkeypatch) -> list[bytes]:
    """The transactions the mempool verifies, in the order it verifies them."""
    calls: list[bytes] = []
    real = mempool_mod.verify_signed_tx

    def counting(raw, *args):
        calls.append(raw)
        return real(raw, *args)

    monkeypatch.setattr(mempool_mod, "verify_signed_tx", counting)
    return calls


async def test_beyond_its_blocks_window_a_batch_is_refused_before_verification(pool, verified):
    params = dataclasses.replace(PARAMS, max_block_txs=2)
    env = Env(pool, params=params, max_pending_blocks=2)
    raws = [make_tx(KEYS[i], 0) for i in range(6)]
    results = await env.mempool.submit(raws, client=True)
    assert [r.code for r in results] == ["accepted"] * 4 + ["mempool_full"] * 2
    assert "retry later" in results[4].message and results[4].hash == tx_hash(raws[4])
    assert verified == raws[:4]
    # A known transaction is still told it is a duplicate, not that the pool is full.
    assert await env.submit(raws[0], client=True) == ["duplicate"]
    # A committed block makes room for one block's worth again.
    env.commit(env.mempool.select(2, 10**6))
    assert await env.submit(*raws[4:], client=True) == ["accepted", "accepted"]


async def test_the_window_counts_bytes_and_batches_still_in_verification(pool):
    size = len(make_tx(KEYS[0], 0))
    params = dataclasses.replace(PARAMS, max_tx_bytes=size, max_block_bytes=3 * size)
    env = Env(pool, params=params, max_pending_blocks=1)
    # Two batches in verification at once share the window of three transactions.
    first, second = await asyncio.gather(
        env.submit(make_tx(KEYS[0], 0), make_tx(KEYS[1], 0), client=True),
        env.submit(make_tx(KEYS[2], 0), make_tx(KEYS[3], 0), client=True),
    )
    assert sorted(first + second) == ["accepted"] * 3 + ["mempool_full"]
    assert env.mempool.total_bytes == 3 * size


async def test_a_big_batch_is_admitted_in_chunks_with_the_loop_free_between_them(pool):
    """The event loop also carries votes and proposals: a batch of thousands must not
    hold it for its whole admission."""
    n = 3 * mempool_mod.ADMIT_CHUNK + 5
    env = Env(pool, per_account_cap=n + 1)
    raws = [make_tx(KEYS[0], nonce) for nonce in range(n)]
    task = asyncio.ensure_future(env.mempool.submit(raws, client=True))
    seen: list[int] = []
    while not task.done():
        seen.append(len(env.mempool))
        await asyncio.sleep(0)
    assert all(r.accepted for r in task.result())
    assert len(env.mempool) == n
    # Other work ran while the batch was partly in the pool.
    assert any(0 < size < n for size in seen)


async def test_a_batch_in_admission_still_holds_its_window_against_the_next(pool):
    """Between a batch's chunks the part not yet admitted stays claimed: a batch
    arriving meanwhile finds the window full, as it would before the first chunk."""
    n = 2 * mempool_mod.ADMIT_CHUNK
    params = dataclasses.replace(PARAMS, max_block_txs=n)
    env = Env(pool, params=params, max_pending_blocks=1, per_account_cap=n + 1)
    first = asyncio.ensure_future(
        env.mempool.submit([make_tx(KEYS[0], nonce) for nonce in range(n)], client=True)
    )
    while len(env.mempool) == 0:
        await asyncio.sleep(0)
    assert not first.done()
    late = await env.submit(*(make_tx(KEYS[i], 0) for i in range(1, 4)), client=True)
    assert late == ["mempool_full"] * 3
    assert all(r.accepted for r in await first)
    assert len(env.mempool) == n


async def test_the_window_refuses_peers_only_beyond_twice_its_size(pool):
    params = dataclasses.replace(PARAMS, max_block_txs=1)
    env = Env(pool, params=params, max_pending_blocks=1)
    assert await env.submit(make_tx(KEYS[0], 0), make_tx(KEYS[1], 0), client=True) == [
        "accepted",
        "mempool_full",
    ]
    # Gossip: another member accepted it and will propose it, but a peer cannot
    # grow the pool without bound either.
    assert await env.submit(make_tx(KEYS[1], 0), make_tx(KEYS[2], 0)) == [
        "accepted",
        "mempool_full",
    ]
    assert len(env.mempool) == 2


async def test_a_higher_fee_outbids_a_window_full_of_minimum_fee_transactions(pool, verified):
    """Many funded accounts keep the window full at the minimum fee (refilling it
    after every block). On main a shopper's order was refused ``mempool_full``
    whatever fee it offered, while the flood's own transactions sat in the pool:
    selection's fee priority never saw it."""
    params = dataclasses.replace(PARAMS, max_block_txs=4)
    env = Env(pool, params=params, max_pending_blocks=1)
    flood = [make_tx(KEYS[i], 0) for i in range(4)]
    assert await env.submit(*flood, client=True) == ["accepted"] * 4
    shopper = KEYS[10]
    # At the pool's lowest fee there is nothing to outbid: retry later, and no
    # signature checked for it.
    verified.clear()
    assert await env.submit(make_tx(shopper, 0), client=True) == ["mempool_full"]
    assert verified == []
    # A higher fee takes the place of the flood's newest transaction at the lowest fee.
    order = make_tx(shopper, 0, fee=2 * MIN_FEE)
    [r] = await env.mempool.submit([order], client=True)
    assert r.accepted
    assert len(env.mempool) == 4 and env.mempool.stats().pending == 4
    assert tx_hash(flood[3]) not in env.mempool
    assert all(tx_hash(raw) in env.mempool for raw in flood[:3])
    # The next block takes it.
    assert r.hash in {v.hash for v in env.mempool.select(4, 10**6)}
    # Gossip outbids the same way, within its own (twice as large) window.
    assert await env.submit(*(make_tx(KEYS[i], 0) for i in range(20, 24))) == ["accepted"] * 4
    assert await env.submit(make_tx(KEYS[30], 0, fee=3 * MIN_FEE)) == ["accepted"]
    assert len(env.mempool) == 8


async def test_outbidding_takes_a_senders_last_transaction_never_one_inside_its_run(pool):
    """Only a sender's last transaction may be outbid: one inside its run would leave
    the rest behind a nonce gap, which no eviction may open (DESIGN.md, Mempool)."""
    params = dataclasses.replace(PARAMS, max_block_txs=3)
    env = Env(pool, params=params, max_pending_blocks=1)
    a, b = KEYS[0], KEYS[1]
    run = [make_tx(a, 0), make_tx(a, 1, fee=5 * MIN_FEE)]
    assert await env.submit(*run, make_tx(b, 0, fee=3 * MIN_FEE), client=True) == ["accepted"] * 3
    # The cheapest pending transaction is the front of a's run, but it is not a's last:
    # nothing the newcomer outbids may go.
    assert await env.submit(make_tx(KEYS[2], 0, fee=2 * MIN_FEE), client=True) == ["mempool_full"]
    assert all(tx_hash(raw) in env.mempool for raw in run)
    # b's only (so last) transaction is cheaper than this one: it goes, a's run stays.
    assert await env.submit(make_tx(KEYS[3], 0, fee=4 * MIN_FEE), client=True) == ["accepted"]
    stats = env.mempool.stats()
    assert (stats.pending, stats.queued) == (3, 0)
    assert env.mempool.next_nonce(a.address) == 2
    assert env.mempool.next_nonce(b.address) is None
    # The cheapest last one goes first (KEYS[3]'s, then a's nonce 1); once a's last
    # one is outbid, its first is the last, and may go next.
    assert await env.submit(make_tx(KEYS[4], 0, fee=6 * MIN_FEE), client=True) == ["accepted"]
    assert env.mempool.next_nonce(a.address) == 2
    assert await env.submit(make_tx(KEYS[5], 0, fee=7 * MIN_FEE), client=True) == ["accepted"]
    assert env.mempool.next_nonce(a.address) == 1
    assert await env.submit(make_tx(KEYS[6], 0, fee=2 * MIN_FEE), client=True) == ["accepted"]
    assert env.mempool.next_nonce(a.address) is None
    assert env.mempool.stats().queued == 0


async def test_a_run_promoted_by_a_nonce_used_elsewhere_can_be_outbid(pool):
    """Queued transactions turn pending when the chain uses the nonce before them
    through a transaction this node never held: the run's last one may then be
    outbid like any other."""
    params = dataclasses.replace(PARAMS, max_block_txs=3)
    env = Env(pool, params=params, max_pending_blocks=1)
    a, b = KEYS[0], KEYS[1]
    run = [make_tx(a, 1, fee=2 * MIN_FEE), make_tx(a, 2, fee=2 * MIN_FEE)]
    assert await env.submit(*run, make_tx(b, 0, fee=3 * MIN_FEE), client=True) == ["accepted"] * 3
    assert env.mempool.stats().queued == 2
    # Another member's block used a's nonce 0.
    env.state.put(a.address, RICH, nonce=1)
    env.height += 1
    env.mempool.on_block_committed([], senders=[a.address])
    assert (env.mempool.stats().pending, env.mempool.stats().queued) == (3, 0)
    assert await env.submit(make_tx(KEYS[2], 0, fee=4 * MIN_FEE), client=True) == ["accepted"]
    assert tx_hash(run[1]) not in env.mempool
    assert tx_hash(run[0]) in env.mempool and env.mempool.next_nonce(b.address) == 1


async def test_outbidding_a_full_window_verifies_few_of_a_batch(pool, verified):
    """A batch beyond the window has only its first few transactions read for their
    fee and verified: outbidding is for a one-tap order, not a way around the
    window's bound on verification work."""
    params = dataclasses.replace(PARAMS, max_block_txs=4)
    env = Env(pool, params=params, max_pending_blocks=1)
    assert (
        await env.submit(*(make_tx(KEYS[i], 0) for i in range(4)), client=True) == ["accepted"] * 4
    )
    verified.clear()
    batch = [make_tx(KEYS[10 + i], 0, fee=2 * MIN_FEE) for i in range(40)]
    codes = await env.submit(*batch, client=True)
    assert codes.count("accepted") == 4 and len(env.mempool) == 4
    assert len(verified) == mempool_mod.OUTBID_PER_BATCH
    assert set(codes) == {"accepted", "mempool_full"}


async def test_a_client_outbidding_a_pool_filled_by_gossip_takes_one_place_not_a_window(pool):
    """Gossip fills up to twice the client window: a client's one transaction beyond
    its window took every cheaper pending one until the pool was under the client
    window, a window's worth of other senders' transactions out for one fee (and as
    many removals of work on the loop)."""
    params = dataclasses.replace(PARAMS, max_block_txs=4)
    env = Env(pool, params=params, max_pending_blocks=1)
    gossip = [make_tx(KEYS[i], 0) for i in range(8)]
    assert await env.submit(*gossip) == ["accepted"] * 8
    assert await env.submit(make_tx(KEYS[20], 0, fee=2 * MIN_FEE), client=True) == ["accepted"]
    # One out for one in.
    assert len(env.mempool) == 8 and env.mempool.stats().pending == 8
    assert sum(tx_hash(raw) not in env.mempool for raw in gossip) == 1


async def test_only_a_senders_next_transaction_to_execute_may_outbid(pool):
    """Selection takes a sender's run in nonce order: a high fee behind the sender's
    own transaction at the minimum fee goes in no block before that one, which the
    window's cheapest senders outbid. It evicted a cheaper sender's transaction, then
    waited behind the minimum fee (and, expiring at the next height, left having paid
    nothing): a free eviction per block. A run that pays more all along may still
    leave unpaid: its first transaction can spend the balance the others' fees
    were counted against."""
    params = dataclasses.replace(PARAMS, max_block_txs=4)
    env = Env(pool, params=params, max_pending_blocks=1)
    a, b, c = KEYS[0], KEYS[1], KEYS[2]
    held = [make_tx(a, 0), make_tx(a, 1, fee=5 * MIN_FEE)]
    held += [make_tx(b, 0, fee=3 * MIN_FEE), make_tx(c, 0, fee=2 * MIN_FEE)]
    assert await env.submit(*held, client=True) == ["accepted"] * 4
    bid = make_tx(a, 2, fee=3 * MIN_FEE, expiry=env.height + 1)
    assert await env.submit(bid, client=True) == ["mempool_full"]
    assert all(tx_hash(raw) in env.mempool for raw in held)
    # The same in a full shard.
    env = Env(pool, shards=1, per_shard_cap=4)
    assert await env.submit(*held, client=True) == ["accepted"] * 4
    assert await env.submit(bid, client=True) == ["mempool_full"]
    assert all(tx_hash(raw) in env.mempool for raw in held)
    # Paying more than the victim all along its run, a sender still may not outbid.
    assert await env.submit(make_tx(b, 1, fee=4 * MIN_FEE), client=True) == ["mempool_full"]
    # A sender with nothing pending does: the cheapest one that may go leaves.
    assert await env.submit(make_tx(KEYS[3], 0, fee=4 * MIN_FEE), client=True) == ["accepted"]
    assert tx_hash(held[3]) not in env.mempool


async def test_nonce_gaps_do_not_count_against_the_window(pool):
    params = dataclasses.replace(PARAMS, max_block_txs=1)
    env = Env(pool, params=params, max_pending_blocks=1)
    # Nonces above a missing one cannot be selected: they wait in a budget of their
    # own, one block's worth of new gaps per block (two for gossip).
    assert await env.submit(make_tx(KEYS[1], 1), client=True) == ["accepted"]
    r = (await env.mempool.submit([make_tx(KEYS[2], 1)], client=True))[0]
    assert r.code == "mempool_full" and "retry once nonce 0 is in" in r.message
    assert await env.submit(make_tx(KEYS[2], 1)) == ["accepted"]
    assert await env.submit(make_tx(KEYS[3], 1)) == ["mempool_full"]
    assert env.mempool.stats().queued_since_commit == 2
    env.commit([])
    # After a block they are old: the budget of new gaps is free again, while the
    # old ones stay (in the per-node budget).
    for i in range(3, 6):
        assert await env.submit(make_tx(KEYS[i], 1), client=True) == ["accepted"]
        env.commit([])
    # The pending window is untouched by them: a client's selectable one still fits.
    assert await env.submit(make_tx(KEYS[0], 0), client=True) == ["accepted"]
    stats = env.mempool.stats()
    assert (stats.pending, stats.queued, stats.queued_since_commit) == (1, 5, 0)
    # The window (one transaction) is taken by KEYS[0]'s.
    assert await env.submit(make_tx(KEYS[1], 0), client=True) == ["mempool_full"]
    # Once the gap fills (e.g. by gossip), the run is selectable as a whole.
    assert await env.submit(make_tx(KEYS[1], 0)) == ["accepted"]
    assert env.mempool.next_nonce(KEYS[1].address) == 2
    picked = [(v.sender_address, v.body.nonce) for v in env.mempool.select(10, 10**6)]
    assert sorted(picked) == sorted(
        [(KEYS[0].address, 0), (KEYS[1].address, 0), (KEYS[1].address, 1)]
    )


async def test_fee_bumping_an_old_gap_takes_the_budget_of_new_gaps(pool):
    params = dataclasses.replace(PARAMS, max_block_txs=1)
    env = Env(pool, params=params)
    assert await env.submit(make_tx(KEYS[1], 1, fee=MIN_FEE), client=True) == ["accepted"]
    env.commit([])
    # Old now; its bump is a new gap (it cost a signature check), so it takes the
    # budget: a second bump before the next block is told to retry.
    assert await env.submit(make_tx(KEYS[1], 1, fee=2 * MIN_FEE), client=True) == ["accepted"]
    assert env.mempool.stats().queued_since_commit == 1
    assert await env.submit(make_tx(KEYS[1], 1, fee=4 * MIN_FEE), client=True) == ["mempool_full"]
    env.commit([])
    assert await env.submit(make_tx(KEYS[1], 1, fee=4 * MIN_FEE), client=True) == ["accepted"]
    assert len(env.mempool) == 1


async def test_a_sender_holds_few_queued_transactions(pool):
    env = Env(pool, max_queued_per_sender=2)
    assert await env.submit(make_tx(KEYS[0], 2), make_tx(KEYS[0], 3)) == ["accepted"] * 2
    r = (await env.mempool.submit([make_tx(KEYS[0], 4)]))[0]
    assert r.code == "nonce_gap" and "send nonce 0 first" in r.message
    # Filling the gap makes them pending, and the sender may queue again.
    assert await env.submit(make_tx(KEYS[0], 0), make_tx(KEYS[0], 1)) == ["accepted"] * 2
    assert await env.submit(make_tx(KEYS[0], 5), make_tx(KEYS[0], 6)) == ["accepted"] * 2
    assert env.mempool.next_nonce(KEYS[0].address) == 4
    assert env.mempool.stats().queued == 2


async def test_a_full_gap_budget_evicts_the_biggest_holder_first(pool):
    env = Env(pool, max_queued=4)
    a, b, c = KEYS[0], KEYS[1], KEYS[2]
    # a holds a pending run (0, 1) and three queued nonces above its gap at 2.
    assert await env.submit(*(make_tx(a, n) for n in (0, 1, 3, 4, 5))) == ["accepted"] * 5
    assert await env.submit(make_tx(b, 2)) == ["accepted"]
    # Full: c's first queued one evicts a's highest nonce, not b's and not a's run.
    assert await env.submit(make_tx(c, 1)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.pending_for(a.address)] == [0, 1, 3, 4]
    assert await env.submit(make_tx(c, 2)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.pending_for(a.address)] == [0, 1, 3]
    # Now every holder has at most what c would have: c is told to retry later,
    # not refused for good (the missing nonce is usually on its way).
    r = (await env.mempool.submit([make_tx(c, 3)]))[0]
    assert r.code == "mempool_full" and "retry once nonce 0 is in" in r.message
    # A pending transaction needs no queued slot, and filling c's gap promotes its run.
    assert await env.submit(make_tx(c, 0), make_tx(c, 3)) == ["accepted", "accepted"]
    assert env.mempool.next_nonce(c.address) == 4
    assert env.mempool.next_nonce(a.address) == 2


async def test_a_nonce_gap_flood_from_clients_and_peers_leaves_room_for_honest_clients(pool):
    """Hundreds of funded accounts each send nonces above a missing one (never
    selectable, never paying), half to this node and half through a peer's gossip,
    and keep sending fresh ones. On main they held the whole window and every
    client got ``mempool_full``."""
    params = dataclasses.replace(PARAMS, max_block_txs=100)
    env = Env(pool, params=params, max_queued=2000, max_pending_blocks=2)
    flooders = [key(1000 + i) for i in range(600)]
    for k in flooders:
        env.state.put(k.address, RICH)

    async def flood(senders: list[PrivateKey], nonces: range, commit_every: int) -> None:
        for i, k in enumerate(senders):
            gaps = [make_tx(k, n, expiry=99) for n in nonces]
            codes = await env.submit(*gaps, client=i % 2 == 0)
            assert set(codes) <= {"accepted", "mempool_full", "nonce_gap"}
            if i % commit_every == commit_every - 1:
                env.commit([])

    # A flood sustained over many blocks, and fresh gaps since the last one.
    await flood(flooders[:300], range(1, 64), 4)
    await flood(flooders[300:], range(1, 2), 1000)
    stats = env.mempool.stats()
    assert env.mempool.select(1000, 10**7) == []
    assert stats.pending == 0 and stats.queued == 2000
    assert stats.queued_since_commit == 200  # twice a block's worth: half came by gossip
    honest = KEYS[0]
    expiry = env.height + 50
    # An honest client's next transaction is admitted at once: gaps hold no window.
    assert await env.submit(make_tx(honest, 0, expiry=expiry), client=True) == ["accepted"]
    # Behind a load balancer its nonces may arrive reordered; a gap opened while the
    # budget of new gaps is full is told to retry, and goes in once in order.
    later = make_tx(honest, 2, expiry=expiry)
    assert await env.submit(later, client=True) == ["mempool_full"]
    assert await env.submit(make_tx(honest, 1, expiry=expiry), client=True) == ["accepted"]
    assert await env.submit(later, client=True) == ["accepted"]
    # Another one whose transaction arrives by gossip.
    assert await env.submit(make_tx(KEYS[1], 0, expiry=expiry)) == ["accepted"]
    picked = [(v.sender_address, v.body.nonce) for v in env.mempool.select(1000, 10**7)]
    assert sorted(picked) == sorted(
        [(honest.address, 0), (honest.address, 1), (honest.address, 2), (KEYS[1].address, 0)]
    )
    env.commit(env.mempool.select(1000, 10**7))
    assert env.state.account(honest.address).nonce == 3
    # The window is not held by the gaps: two blocks' worth of clients still fit.
    clients = [key(5000 + i) for i in range(200)]
    for k in clients:
        env.state.put(k.address, RICH)
    raws = [make_tx(k, 0, expiry=env.height + 50) for k in clients]
    assert await env.submit(*raws, client=True) == ["accepted"] * len(raws)
    # The gaps held no more than their budgets: the rest were evicted or refused.
    assert env.mempool.stats().queued <= 2000


async def test_new_gaps_over_their_budget_are_told_to_retry(pool):
    params = dataclasses.replace(PARAMS, max_block_txs=2)
    # Two blocks' worth of pending room: only the budget of new gaps refuses here.
    env = Env(pool, params=params, max_pending_blocks=2)
    gapped = [make_tx(KEYS[i], 1) for i in range(3)]
    assert await env.submit(*gapped[:2], client=True) == ["accepted"] * 2
    r = (await env.mempool.submit([gapped[2]], client=True))[0]
    assert r.code == "mempool_full" and "since the last block" in r.message
    # A gap healed frees its place at once; a block frees all of them.
    assert await env.submit(make_tx(KEYS[0], 0), client=True) == ["accepted"]
    assert await env.submit(gapped[2], client=True) == ["accepted"]
    assert await env.submit(make_tx(KEYS[3], 1), client=True) == ["mempool_full"]
    env.commit([])
    assert await env.submit(make_tx(KEYS[3], 1), client=True) == ["accepted"]


def test_config_is_checked():
    with pytest.raises(ValueError, match="shards"):
        MempoolConfig(shards=0)
    with pytest.raises(ValueError, match="max_nonce_ahead"):
        MempoolConfig(max_nonce_ahead=0)
    with pytest.raises(ValueError, match="max_pending_blocks"):
        MempoolConfig(max_pending_blocks=0)
    assert MempoolConfig(per_account_cap=7).nonce_window == 7


# --- nonce queues and selection ---


async def test_out_of_order_nonces_queue_and_gaps_wait(env):
    k = KEYS[0]
    assert await env.submit(make_tx(k, 2), make_tx(k, 0)) == ["accepted", "accepted"]
    # Nonce 1 is missing: only the run [0] may go in a block.
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [0]
    assert env.mempool.next_nonce(k.address) == 1
    assert await env.submit(make_tx(k, 1)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [0, 1, 2]
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [0, 1, 2]
    assert env.mempool.next_nonce(k.address) == 3
    assert env.mempool.next_nonce(KEYS[1].address) is None


async def test_select_never_starts_above_state_nonce(env):
    env.state.put(KEYS[0].address, RICH, nonce=4)
    assert await env.submit(make_tx(KEYS[0], 5), make_tx(KEYS[0], 6)) == ["accepted"] * 2
    assert env.mempool.select(10, 10**6) == []


async def test_select_by_fee_between_senders_nonce_order_within(pool):
    env = Env(pool, shards=1)
    a, b, c = KEYS[:3]
    await env.submit(
        make_tx(a, 0, fee=10),
        make_tx(a, 1, fee=1000),
        make_tx(b, 0, fee=50),
        make_tx(c, 0, fee=30),
        make_tx(c, 1, fee=20),
    )
    got = [(v.sender_address, v.body.nonce) for v in env.mempool.select(10, 10**6)]
    # b (50) > c0 (30) > c1 (20) > a0 (10), and a1 (1000) must wait for a0.
    assert got == [
        (b.address, 0),
        (c.address, 0),
        (c.address, 1),
        (a.address, 0),
        (a.address, 1),
    ]


async def test_select_equal_fees_first_come_first_served(pool):
    env = Env(pool, shards=1)
    for k in (KEYS[3], KEYS[1], KEYS[2]):
        await env.submit(make_tx(k, 0))
    got = [v.sender_address for v in env.mempool.select(10, 10**6)]
    assert got == [KEYS[3].address, KEYS[1].address, KEYS[2].address]


async def test_select_round_robin_across_shards(pool):
    env = Env(pool, shards=2)
    rich = keys_in_shard(0, 2, 4)
    poor = keys_in_shard(1, 2, 2)
    await env.submit(*(make_tx(k, 0, fee=1000) for k in rich))
    await env.submit(*(make_tx(k, 0, fee=MIN_FEE) for k in poor))
    picked = env.mempool.select(4, 10**6)
    shards = sorted(env.mempool.shard_of(v.sender_address) for v in picked)
    # High fees in shard 0 do not starve shard 1.
    assert shards == [0, 0, 1, 1]
    # The start shard rotates between calls.
    firsts = {env.mempool.shard_of(env.mempool.select(1, 10**6)[0].sender_address) for _ in "ab"}
    assert firsts == {0, 1}


async def test_select_limits(pool):
    env = Env(pool, shards=1)
    raws = [make_tx(KEYS[0], 0), make_tx(KEYS[0], 1), make_tx(KEYS[1], 0)]
    await env.submit(*raws)
    size = len(raws[0])
    assert len(env.mempool.select(2, 10**6)) == 2
    two = env.mempool.select(10, 3 * size - 1)
    assert len(two) == 2 and sum(v.size for v in two) <= 3 * size - 1
    assert env.mempool.select(0, 10**6) == [] and env.mempool.select(10, 0) == []


async def test_tx_that_does_not_fit_ends_its_senders_run(pool):
    env = Env(pool, shards=1)
    a, b = KEYS[0], KEYS[1]
    # A larger amount encodes longer: a0 is bigger than the others.
    big = make_tx(a, 0, fee=1000, amount=2**60)
    small = make_tx(b, 0, fee=10)
    assert len(big) > len(small)
    await env.submit(big, make_tx(a, 1, fee=1000), small)
    picked = env.mempool.select(10, len(small))
    # a0 does not fit; a1 may not go without it; b0 still does.
    assert [(v.sender_address, v.body.nonce) for v in picked] == [(b.address, 0)]


async def test_select_skips_expired_before_commit_catches_up(env):
    k = KEYS[0]
    await env.submit(make_tx(k, 0, expiry=5), make_tx(k, 1, expiry=50), make_tx(KEYS[1], 0))
    env.height = 5  # the chain moved on; on_block_committed not yet called
    picked = env.mempool.select(10, 10**6)
    assert [v.sender_address for v in picked] == [KEYS[1].address]


# --- commit ---


async def test_commit_removes_included_and_stale(env):
    k = KEYS[0]
    await env.submit(*(make_tx(k, n) for n in range(4)))
    env.commit(env.mempool.select(2, 10**6))
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [2, 3]
    assert len(env.mempool) == 2


async def test_commit_of_a_runs_front_keeps_the_rest_pending_and_the_gap_queued(env):
    k = KEYS[0]
    await env.submit(*(make_tx(k, n) for n in (0, 1, 2, 3, 5)))
    env.commit(env.mempool.select(2, 10**6))
    stats = env.mempool.stats()
    assert (stats.transactions, stats.pending, stats.queued) == (3, 2, 1)
    assert stats.queued_since_commit == 0
    assert env.mempool.next_nonce(k.address) == 4
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [2, 3]
    # The gap fills: the queued one joins the run.
    assert await env.submit(make_tx(k, 4)) == ["accepted"]
    stats = env.mempool.stats()
    assert (stats.pending, stats.queued) == (4, 0)
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [2, 3, 4, 5]


async def test_a_committed_blocks_transactions_leave_and_their_senders_are_read_again(env):
    a, b = KEYS[0], KEYS[1]
    await env.submit(*(make_tx(a, n) for n in range(3)))
    # b's nonce 0 never reached this node: its nonce 1 waits behind the gap.
    await env.submit(make_tx(b, 1))
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [0, 1, 2]
    ours = env.mempool.select(2, 10**6)
    theirs = verify_signed_tx(make_tx(b, 0), CHAIN, default_registry(), PARAMS.max_tx_bytes)
    block = [*ours, theirs]
    for vtx in block:
        acct = env.state.account(vtx.sender_address)
        env.state.put(vtx.sender_address, acct.balance - vtx.body.fee, acct.nonce + 1)
    env.height += 1
    env.mempool.on_block_committed((), included=block)
    assert not any(env.mempool.contains(v.hash) for v in ours)
    # a's nonce 2 stays; b, read again, has its nonce 1 pending now.
    assert sorted(
        (v.sender_address == b.address, v.body.nonce) for v in env.mempool.select(10, 10**6)
    ) == [(False, 2), (True, 1)]


class CountingState(DictState):
    """A DictState that counts the reads of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[bytes, int] = {}

    def get(self, k: bytes) -> bytes | None:
        self.reads[k] = self.reads.get(k, 0) + 1
        return super().get(k)


async def test_after_a_commit_the_blocks_own_accounts_are_taken_at_its_height_only(pool):
    env = Env(pool)
    env.state = state = CountingState()
    env.mempool = Mempool(
        CHAIN, env.registry, env.executor, PARAMS, state, lambda: env.height, None, pool
    )
    a, b = KEYS[0], KEYS[1]
    for k in KEYS:
        state.put(k.address, RICH)
    await env.submit(*(make_tx(a, n) for n in range(3)), *(make_tx(b, n) for n in range(2)))
    picked = env.mempool.select(2, 10**6)
    assert {v.sender_address for v in picked} == {a.address, b.address}
    ctx = BlockContext(CHAIN, 1, 1000, PRODUCER, PARAMS)
    result = env.executor.execute_block(state, picked, ctx, strict=True)
    for key, value in result.changes.items():
        assert value is not None
        state.data[key] = value
    env.height = 1
    state.reads.clear()
    env.mempool.on_block_committed((), included=result.included, result=result, result_height=1)
    # Both senders' new accounts came from the block: state was not read for them.
    assert state.reads.get(account_key(a.address), 0) == 0
    assert state.reads.get(account_key(b.address), 0) == 0
    assert [v.body.nonce for v in env.mempool.pending_for(a.address)] == [1, 2]
    assert [v.body.nonce for v in env.mempool.pending_for(b.address)] == [1]
    # Admission at this height checks against those accounts: nonce 0 is used.
    assert await env.submit(make_tx(a, 0, fee=MIN_FEE + 1)) == ["nonce_too_low"]

    # A result heard after a later block committed is not the state any more: block 2
    # used a's nonces 1 and 2 (its records say nonce 3), then block 3 used nonce 3 with
    # a transaction this node never saw. The state's account (nonce 4) is the one.
    await env.submit(make_tx(a, 3))
    late = env.executor.execute_block(
        state,
        env.mempool.pending_for(a.address)[:2],
        BlockContext(CHAIN, 2, 2000, PRODUCER, PARAMS),
        strict=True,
    )
    assert [v.body.nonce for v in late.included] == [1, 2]
    state.put(a.address, RICH, nonce=4)
    env.height = 3
    state.reads.clear()
    env.mempool.on_block_committed((), included=late.included, result=late, result_height=2)
    assert state.reads.get(account_key(a.address), 0) == 1
    assert env.mempool.pending_for(a.address) == []
    assert await env.submit(make_tx(a, 3, fee=MIN_FEE + 1)) == ["nonce_too_low"]


async def test_a_senders_account_is_read_once_per_height(pool):
    # A busy sender's next transactions at one height are checked against the account
    # read for its first: the state changes only when the height moves.
    env = Env(pool)
    env.state = state = CountingState()
    env.mempool = Mempool(
        CHAIN, env.registry, env.executor, PARAMS, state, lambda: env.height, None, pool
    )
    a = KEYS[0]
    state.put(a.address, RICH)
    for n in range(3):
        assert await env.submit(make_tx(a, n)) == ["accepted"]
    assert state.reads[account_key(a.address)] == 1
    # A block this node never saw used nonces 0-4 and took most of the balance; the
    # mempool has not heard of it yet, but the height moved: the account is read again.
    state.put(a.address, 3 * MIN_FEE, nonce=5)
    env.height = 1
    assert await env.submit(make_tx(a, 3)) == ["nonce_too_low"]
    assert state.reads[account_key(a.address)] == 2
    assert await env.submit(make_tx(a, 5)) == ["accepted"]
    assert await env.submit(make_tx(a, 6)) == ["accepted"]
    assert await env.submit(make_tx(a, 7)) == ["accepted"]
    # Fees queued now exceed the balance read at this height.
    assert await env.submit(make_tx(a, 8)) == ["insufficient_fee"]
    assert state.reads[account_key(a.address)] == 3


async def test_commit_drops_nonces_used_elsewhere(env):
    k = KEYS[0]
    await env.submit(*(make_tx(k, n) for n in range(3)))
    # A block this node did not build used nonces 0 and 1 with other transactions.
    env.state.put(k.address, RICH, nonce=2)
    env.height += 1
    env.mempool.on_block_committed([b"\x00" * 32], senders=[k.address])
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [2]
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [2]


async def test_submit_refreshes_a_stale_sender(env):
    k = KEYS[0]
    await env.submit(*(make_tx(k, n) for n in range(3)))
    env.state.put(k.address, RICH, nonce=2)
    env.height += 1
    # A block used nonces 0 and 1 and nobody told the mempool; the sender's next
    # submit re-reads state (the height moved: what was read before is old).
    assert await env.submit(make_tx(k, 3)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [2, 3]


async def test_submit_after_a_later_block_reads_the_senders_state_again(env):
    k = KEYS[0]
    await env.submit(make_tx(k, 0), make_tx(k, 1))
    env.commit(env.mempool.select(1, 10**6))
    # The next block used nonce 1 elsewhere; the mempool has not heard of it yet.
    env.state.put(k.address, RICH, nonce=2)
    env.height += 1
    assert await env.submit(make_tx(k, 2)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [2]


async def test_submit_after_every_queued_nonce_was_used_elsewhere(env):
    k = KEYS[0]
    await env.submit(*(make_tx(k, n) for n in range(3)))
    env.state.put(k.address, RICH, nonce=3)
    env.height += 1
    assert await env.submit(make_tx(k, 3)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [3]
    assert len(env.mempool) == 1 and env.mempool.select(10, 10**6)[0].body.nonce == 3


async def test_commit_trims_unpayable_tail_without_gap(env):
    k = KEYS[0]
    env.state.put(k.address, 1000)
    await env.submit(*(make_tx(k, n, fee=100) for n in range(5)))
    env.state.put(k.address, 250)
    env.height += 1
    env.mempool.on_block_committed([], senders=[k.address])
    assert [v.body.nonce for v in env.mempool.pending_for(k.address)] == [0, 1]


async def test_commit_drops_rejected(env):
    raws = [make_tx(KEYS[0], 0), make_tx(KEYS[1], 0)]
    await env.submit(*raws)
    env.mempool.on_block_committed([tx_hash(raws[0])], [tx_hash(raws[1])])
    assert len(env.mempool) == 0


async def test_commit_expires_untouched_senders(env):
    await env.submit(
        make_tx(KEYS[0], 0, expiry=3),
        make_tx(KEYS[0], 1, expiry=9),
        make_tx(KEYS[1], 0, expiry=4),
    )
    env.height = 3  # next height 4: KEYS[0] nonce 0 is dead
    env.mempool.on_block_committed([])
    assert [v.body.nonce for v in env.mempool.pending_for(KEYS[0].address)] == [1]
    assert len(env.mempool) == 2
    env.height = 4
    env.mempool.on_block_committed([])
    assert len(env.mempool) == 1
    # The sender can refill the expired slot.
    assert await env.submit(make_tx(KEYS[0], 0, expiry=20)) == ["accepted"]
    assert [v.body.nonce for v in env.mempool.select(10, 10**6)] == [0, 1]


async def test_transactions_that_left_leave_nothing_behind_whatever_their_expiry(pool):
    """A chain whose governance allows far expiries: each transaction names its own
    expiry height, and once blocks have included them the mempool holds nothing of
    them (before, each left an empty expiry bucket until its height, far off, came:
    memory that grew with every transaction ever admitted)."""
    env = Env(pool, PARAMS.replace(max_expiry_blocks=10**9))
    expiry = itertools.count(10**6)

    async def rounds(n: int) -> None:
        for _ in range(n):
            raws = [
                make_tx(k, env.state.account(k.address).nonce, expiry=next(expiry)) for k in KEYS
            ]
            assert set(await env.submit(*raws)) == {"accepted"}
            env.commit(env.mempool.select(len(raws), 10**7))
        assert len(env.mempool) == 0

    await rounds(2)  # the mempool's own structures at their working size
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        await rounds(100)  # 6,400 transactions, each its own expiry height
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    where = [tracemalloc.Filter(True, mempool_mod.__file__)]
    grown = sum(
        d.size_diff
        for d in after.filter_traces(where).compare_to(before.filter_traces(where), "filename")
    )
    # Before the fix about 300 bytes per transaction (about 2 MB here), and 8 more
    # for a heap of expiry heights never compacted (about 60 KB); after, about 10 KB
    # (the per-commit account cache of 64 senders).
    print(f"mempool allocations grew by {grown} bytes over 6,400 transactions")
    assert grown < 32 * 1024


async def test_empty_accounts_are_forgotten(env):
    await env.submit(make_tx(KEYS[0], 0))
    env.commit(env.mempool.select(10, 10**6))
    assert len(env.mempool) == 0
    assert env.mempool.stats().senders == 0
    assert env.mempool.total_bytes == 0


# --- verified once ---


async def test_each_transaction_is_verified_once(env, verified):
    raws = [make_tx(KEYS[i], 0) for i in range(40)]
    # Two concurrent submits of the same batch, plus an in-batch duplicate.
    first, second = await asyncio.gather(
        env.mempool.submit(raws + raws[:1]), env.mempool.submit(raws)
    )
    third = await env.mempool.submit(raws)
    assert sorted(verified) == sorted(raws)
    assert [r.code for r in first] == ["accepted"] * 40 + ["duplicate"]
    assert {r.code for r in second} == {"duplicate"} and {r.code for r in third} == {"duplicate"}
    # Block building gets the very objects admission produced.
    picked = env.mempool.select(100, 10**6)
    assert all(env.mempool.get(v.hash) is v for v in picked) and len(picked) == 40


class CountingPool(ThreadPoolExecutor):
    """A verification pool counting its calls and the transactions handed to them."""

    def __init__(self) -> None:
        super().__init__(2)
        self.calls = 0
        self.checked = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.calls += 1
        self.checked += len(args[0])
        return super().submit(fn, *args, **kwargs)


async def test_one_pool_call_per_chunk():
    counting = CountingPool()
    try:
        env = Env(counting, verify_threads=2)  # type: ignore[arg-type]  # a counting pool stands in
        raws = [make_tx(KEYS[i % 64], i // 64) for i in range(200)]
        codes = await env.submit(*raws)
        assert codes == ["accepted"] * 200
        assert counting.calls == 2
        # A tiny batch is not split.
        await env.submit(make_tx(KEYS[0], 4))
        assert counting.calls == 3
    finally:
        counting.shutdown()


async def test_own_pool_is_created_and_closed():
    env_state = DictState()
    env_state.put(KEYS[0].address, RICH)
    registry = default_registry()
    m = Mempool(CHAIN, registry, Executor(registry), PARAMS, env_state, lambda: 0)
    try:
        assert [r.code for r in await m.submit([make_tx(KEYS[0], 0)])] == ["accepted"]
        assert "txs=1" in repr(m)
    finally:
        m.close()


async def test_cancelled_submit_releases_inflight(env):
    raw = make_tx(KEYS[0], 0)
    task = asyncio.ensure_future(env.mempool.submit([raw]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancelled batch no longer holds its slot: the same transaction is admitted.
    assert await env.submit(raw) == ["accepted"]


def upkeep_env(pool: ThreadPoolExecutor, params: ChainParams = PARAMS, **config: int) -> Env:
    """An Env whose registry has a transfer-like type in each higher priority class."""
    env = Env(pool, params, **config)
    env.registry.register(TxType("test.upkeep", Transfer, apply_transfer, TxClass.CONSENSUS))
    env.registry.register(TxType("test.commerce", Transfer, apply_transfer, TxClass.COMMERCE))
    return env


def typed_tx(k: PrivateKey, nonce: int, tx_type: str, fee: int = MIN_FEE) -> bytes:
    return make_tx(k, nonce, fee=fee, tx_type=tx_type)


async def test_the_nodes_own_transactions_are_never_outbid(pool):
    """The node signs its upkeep (evidence of a double signature) at the minimum fee and
    retries it only while it is refused: once admitted, outbidding took it as the
    newest transaction at the window's lowest fee, and the offender went free."""
    params = dataclasses.replace(PARAMS, max_block_txs=4)
    env = upkeep_env(pool, params, max_pending_blocks=1)
    assert (
        await env.submit(*(make_tx(KEYS[i], 0) for i in range(3)), client=True) == ["accepted"] * 3
    )
    evidence = typed_tx(KEYS[5], 0, "test.upkeep")
    [r] = await env.mempool.submit([evidence], own=True)
    assert r.accepted
    outbids = [make_tx(KEYS[10 + i], 0, fee=2 * MIN_FEE) for i in range(4)]
    assert await env.submit(*outbids[:3], client=True) == ["accepted"] * 3
    assert tx_hash(evidence) in env.mempool
    # Nothing cheaper left that may go: the node's own transaction stays.
    assert await env.submit(outbids[3], client=True) == ["mempool_full"]
    assert tx_hash(evidence) in env.mempool and len(env.mempool) == 4


async def test_priority_class_goes_before_fee(pool):
    env = upkeep_env(pool, shards=1)
    await env.submit(
        typed_tx(KEYS[0], 0, "transfer", fee=1000),
        typed_tx(KEYS[1], 0, "test.upkeep"),
        typed_tx(KEYS[2], 0, "test.commerce", fee=500),
    )
    got = [v.sender_address for v in env.mempool.select(10, 10**6)]
    assert got == [KEYS[1].address, KEYS[2].address, KEYS[0].address]


async def test_every_class_gets_a_fair_share_of_a_full_block(pool):
    env = upkeep_env(pool)
    commerce = [typed_tx(KEYS[i], 0, "test.commerce", fee=10_000) for i in range(30)]
    transfers = [typed_tx(KEYS[30 + i], 0, "transfer") for i in range(30)]
    await env.submit(*commerce, *transfers)
    # 12 slots: 12 // (2 * 3 classes) = 2 guaranteed to transfers, the rest by class.
    picked = env.mempool.select(12, 10**7)
    types = [v.body.type for v in picked]
    assert types == ["test.commerce"] * 2 + ["transfer"] * 2 + ["test.commerce"] * 8


async def test_a_flood_of_one_class_buys_no_precedence_beyond_its_share(pool):
    env = upkeep_env(pool)
    # Staking transactions at the minimum fee (they may well fail, and still pay it)
    # against commerce orders paying ten times more.
    upkeep = [typed_tx(KEYS[i], 0, "test.upkeep") for i in range(30)]
    commerce = [typed_tx(KEYS[30 + i], 0, "test.commerce", fee=10 * MIN_FEE) for i in range(30)]
    await env.submit(*upkeep, *commerce)
    # 12 slots: upkeep's share (2) goes first, then commerce's (2); the rest by fee.
    types = [v.body.type for v in env.mempool.select(12, 10**7)]
    assert types == ["test.upkeep"] * 2 + ["test.commerce"] * 10


async def test_a_senders_run_keeps_nonce_order_across_classes(pool):
    env = upkeep_env(pool)
    a, b = KEYS[0], KEYS[1]
    await env.submit(
        typed_tx(a, 0, "transfer"),
        typed_tx(a, 1, "test.upkeep"),
        typed_tx(a, 2, "test.commerce"),
        typed_tx(b, 0, "test.upkeep"),
    )
    picked = [(v.sender_address, v.body.nonce) for v in env.mempool.select(10, 10**6)]
    assert picked[0] == (b.address, 0)
    assert [n for s, n in picked if s == a.address] == [0, 1, 2]
    env.commit(env.mempool.select(10, 10**6))
    assert env.state.account(a.address).nonce == 3


# --- invariants under random submit / select / commit sequences ---

SIM_KEYS = KEYS[:6]
# Senders that only ever send a transaction outbidding every other (``outbid``).
OUTBID_KEYS = KEYS[6:9]
OUTBID_FEE = 60
# Every sender the machine's traffic comes from.
ALL_SIM_KEYS = SIM_KEYS + OUTBID_KEYS
PRODUCER = b"\x77" * 20


class MempoolMachine(RuleBasedStateMachine):
    """Random traffic against a small, tightly capped mempool.

    Every selection is executed with the real executor in strict mode, which
    refuses a block with a nonce gap, a used nonce, an expired or an unpayable
    transaction; so "select only returns what can go in a block" is checked
    by the chain's own rules. Amounts are zero (a failed transfer that still
    pays its fee) so balances move only by fees, which the mempool accounts.
    """

    # The block size the window counts in: here it never binds (see the subclass).
    max_block_txs = PARAMS.max_block_txs

    def __init__(self) -> None:
        super().__init__()
        self.env = upkeep_env(
            SIM_POOL,
            dataclasses.replace(PARAMS, max_block_txs=self.max_block_txs),
            max_pending_blocks=1,
            shards=2,
            per_account_cap=3,
            max_nonce_ahead=5,
            per_shard_cap=7,
            per_shard_bytes=10**6,
            max_queued=3,
            max_queued_per_sender=2,
        )
        # Hashes admitted since the last commit (a pending replacement inherits its
        # slot's age): the model of the budget of new gaps.
        self.young: set[bytes] = set()
        for i, k in enumerate(SIM_KEYS):
            # Some senders can pay only a few fees, so fee accounting matters.
            self.env.state.put(k.address, [25, 45, 1000, 10**6, 10**6, 10**6][i])
        for k in OUTBID_KEYS:
            self.env.state.put(k.address, 10**6)
        self.cfg = self.env.mempool.config
        # Blocks committed that the mempool has not heard of yet (what they included).
        # Blocks committed that the pool has not heard of yet: (height, result).
        self.unheard: list[tuple[int, BlockResult]] = []

    @rule(
        batch=st.lists(
            st.tuples(
                st.integers(0, len(SIM_KEYS) - 1),
                # Mostly the next few nonces, sometimes used or far ahead ones.
                st.sampled_from([-1, 0, 0, 0, 1, 1, 2, 3, 6]),
                st.sampled_from([MIN_FEE, MIN_FEE + 1, 20, 50]),
                st.integers(0, 20),
                # Every priority class: select's fair shares and cross-class runs.
                st.sampled_from(["transfer", "test.commerce", "test.upkeep"]),
            ),
            min_size=1,
            max_size=6,
        ),
        repeat=st.booleans(),
    )
    def submit(self, batch, repeat) -> None:
        env = self.env
        raws = []
        slots = []
        fees = [fee for _, _, fee, _, _ in batch]
        for ki, offset, fee, ttl, tx_type in batch:
            k = SIM_KEYS[ki]
            nonce = max(0, env.state.account(k.address).nonce + offset)
            raws.append(
                make_tx(k, nonce, fee=fee, expiry=env.height + ttl, amount=0, tx_type=tx_type)
            )
            slots.append((k.address, nonce))
        if repeat:
            raws.append(raws[0])
            slots.append(slots[0])
            fees.append(fees[0])
        results = asyncio.run(env.mempool.submit(raws))
        assert len(results) == len(raws)
        replaced = {bytes.fromhex(r.message.split()[1]) for r in results if "replaced" in r.message}
        for i, (raw, (address, nonce), r) in enumerate(zip(raws, slots, results, strict=True)):
            assert r.code in ADMISSION_CODES, r
            if r.accepted:
                old = bytes.fromhex(r.message.split()[1]) if "replaced" in r.message else None
                # A replacement of a gap is a new gap; a pending one keeps its age.
                next_nonce = env.mempool.next_nonce(address)
                queued = next_nonce is not None and nonce > next_nonce
                if old is None or old in self.young or queued:
                    self.young.add(r.hash)
            if r.accepted and r.hash not in replaced and not env.mempool.contains(r.hash):
                # Evicted for a later one of the batch: only queued ones ever are. Its
                # nonce is still above the run, unless a later one of the batch took
                # the freed slot and the run then grew past it.
                next_nonce = env.mempool.next_nonce(address)
                refilled = any(
                    later.accepted
                    and env.mempool.contains(later.hash)
                    and slots[j] == (address, nonce)
                    for j, later in enumerate(results[i + 1 :], i + 1)
                )
                # Or a later one of the batch outbid it beyond the window.
                outbid = any(
                    later.accepted and fees[j] > fees[i]
                    for j, later in enumerate(results[i + 1 :], i + 1)
                )
                assert next_nonce is None or nonce >= next_nonce or refilled or outbid
                # No eviction opens a nonce gap: what the sender still holds above the
                # evicted nonce came later in the batch (or took its very slot).
                later = {results[j].hash for j in range(i + 1, len(results))}
                above = {v.hash for v in env.mempool.pending_for(address) if v.body.nonce > nonce}
                assert refilled or above <= later
            if r.code != "accepted" and r.code != "duplicate":
                assert not env.mempool.contains(tx_hash(raw))

    @rule(ki=st.integers(0, len(OUTBID_KEYS) - 1))
    def outbid(self, ki) -> None:
        """A client's transaction paying more than any other, the window full: it goes
        in exactly when some sender's last transaction may be outbid (pending, nothing
        queued behind it), and the cheapest such leaves. A sender missing from the
        pool's index of those, or one left there, fails this."""
        env = self.env
        pool = env.mempool
        k = OUTBID_KEYS[ki]
        shard = pool.shard_of(k.address)
        if (
            pool.pending_for(k.address)
            or pool.stats().pending < self.max_block_txs
            or pool.shard_sizes()[shard] >= self.cfg.per_shard_cap
        ):
            return
        eligible = {}
        for other in ALL_SIM_KEYS:
            held = pool.pending_for(other.address)
            next_nonce = pool.next_nonce(other.address)
            last = held[-1] if held else None
            if last and last.body.nonce == next_nonce - 1 and last.body.fee < OUTBID_FEE:
                eligible[held[-1].hash] = held[-1].body.fee
        nonce = env.state.account(k.address).nonce
        raw = make_tx(k, nonce, fee=OUTBID_FEE, expiry=env.height + 5, amount=0)
        [r] = asyncio.run(pool.submit([raw], client=True))
        assert r.accepted == bool(eligible), (r, eligible)
        if r.accepted:
            gone = [h for h in eligible if not pool.contains(h)]
            assert gone and min(eligible[h] for h in gone) == min(eligible.values())

    @rule(
        max_txs=st.integers(0, 8),
        max_bytes=st.sampled_from([0, 400, 10**6, 10**6]),
        hear=st.sampled_from([True, True, False]),
    )
    def block(self, max_txs, max_bytes, hear) -> None:
        """A block from this selection; the mempool may hear of it only later (the
        node's loop is busy while the consensus thread commits the next one)."""
        env = self.env
        picked = env.mempool.select(max_txs, max_bytes)
        assert len(picked) <= max_txs
        assert sum(v.size for v in picked) <= max_bytes
        assert len({v.hash for v in picked}) == len(picked)
        # While a block is unheard of, the pool offers nonces it used: the builder
        # leaves them out and hands them back as rejected, at once.
        strict = not self.unheard
        if strict:
            # Reference: every sender's unexpired contiguous run from its state nonce.
            ready = set()
            for k in ALL_SIM_KEYS:
                n = env.state.account(k.address).nonce
                queued = {v.body.nonce: v for v in env.mempool.pending_for(k.address)}
                while n in queued and queued[n].body.expiry_height >= env.height + 1:
                    ready.add(queued[n].hash)
                    n += 1
            assert {v.hash for v in picked} <= ready
            if max_bytes >= 10**6:
                # Only the count limit binds: select takes as much as it may.
                assert len(picked) == min(max_txs, len(ready))
        ctx = BlockContext(CHAIN, env.height + 1, env.height * 1000, PRODUCER, PARAMS)
        # Strict: any transaction that may not be included raises InvalidBlock.
        result = env.executor.execute_block(env.state, picked, ctx, strict=strict)
        if result.rejected:
            env.mempool.on_block_committed((), [v.hash for v, _ in result.rejected])
            self.young.clear()
        for k, v in result.changes.items():
            if v is None:
                env.state.data.pop(k, None)
            else:
                env.state.data[k] = v
        env.height += 1
        self.unheard.append((env.height, result))
        if hear:
            self.hear()
            assert not any(env.mempool.contains(v.hash) for v in picked)

    @rule()
    def hear(self) -> None:
        for height, result in self.unheard:
            # As the node does (node/service.py, after_commit): with the block's result,
            # whose records only the newest of several unheard blocks may serve.
            self.env.mempool.on_block_committed(
                (), included=result.included, result=result, result_height=height
            )
            self.young.clear()
        self.unheard = []

    @rule(blocks=st.integers(1, 4))
    def empty_blocks(self, blocks) -> None:
        self.hear()
        self.env.height += blocks
        self.env.mempool.on_block_committed([])
        self.young.clear()

    @rule(ki=st.integers(0, len(SIM_KEYS) - 1), spend=st.integers(0, 60), used=st.integers(0, 2))
    def foreign_block(self, ki, spend, used) -> None:
        """A block from elsewhere spent some balance and nonces of a sender."""
        self.hear()
        env = self.env
        address = SIM_KEYS[ki].address
        a = env.state.account(address)
        env.state.put(address, max(0, a.balance - spend), a.nonce + used)
        env.height += 1
        env.mempool.on_block_committed([], senders=[address])
        self.young.clear()

    @invariant()
    def consistent(self) -> None:
        if self.unheard:
            return  # the pool holds what those blocks used until it hears of them
        env, cfg = self.env, self.cfg
        m = env.mempool
        params = m.params
        sizes, nbytes = [0] * cfg.shards, [0] * cfg.shards
        total = pending = pending_bytes = queued = young = young_bytes = senders = 0
        for k in ALL_SIM_KEYS:
            address = k.address
            held = m.pending_for(address)
            if not held:
                assert m.next_nonce(address) is None, "empty accounts are forgotten"
                continue
            senders += 1
            state = env.state.account(address)
            nonces = [v.body.nonce for v in held]
            assert nonces == sorted(set(nonces))
            assert len(held) <= cfg.per_account_cap
            assert sum(v.body.fee for v in held) <= state.balance
            for v in held:
                assert v.sender_address == address
                assert state.nonce <= v.body.nonce < state.nonce + cfg.nonce_window
                assert v.body.expiry_height >= env.height + 1, "expired entries are dropped"
                assert m.get(v.hash) is v and m.contains(v.hash)
            # Pending: the contiguous run from the state nonce; queued: the rest.
            end = state.nonce
            while end in nonces:
                end += 1
            assert m.next_nonce(address) == end
            mine = [v for v in held if v.body.nonce > end]
            assert len(mine) <= cfg.max_queued_per_sender
            pending += end - state.nonce
            pending_bytes += sum(v.size for v in held if v.body.nonce < end)
            queued += len(mine)
            young += sum(v.hash in self.young for v in mine)
            young_bytes += sum(v.size for v in mine if v.hash in self.young)
            shard = m.shard_of(address)
            sizes[shard] += len(held)
            nbytes[shard] += sum(v.size for v in held)
            total += len(held)
        assert m.shard_sizes() == sizes and m.shard_bytes() == nbytes
        assert all(n <= cfg.per_shard_cap for n in sizes)
        assert all(b <= cfg.per_shard_bytes for b in nbytes)
        assert total == len(m) == len(list(m.pending_hashes()))
        stats = m.stats()
        assert (stats.transactions, stats.bytes, stats.senders) == (total, sum(nbytes), senders)
        assert (stats.pending, stats.pending_bytes, stats.queued) == (
            pending,
            pending_bytes,
            queued,
        )
        assert (stats.queued_since_commit, stats.queued_since_commit_bytes) == (young, young_bytes)
        assert queued <= cfg.max_queued
        # Gossip's budget of new gaps: twice a block's worth.
        assert young <= 2 * cfg.max_gap_blocks * params.max_block_txs
        assert stats.verifying == 0


ADMISSION_CODES = {
    "accepted",
    "duplicate",
    "nonce_too_low",
    "nonce_exhausted",
    "nonce_gap",
    "expired",
    "fee_too_low",
    "insufficient_fee",
    "mempool_full",
    "account_queue_full",
}
SIM_POOL = ThreadPoolExecutor(2, thread_name_prefix="mempool-sim")

MempoolMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestMempoolMachine = MempoolMachine.TestCase


class SmallWindowMempoolMachine(MempoolMachine):
    """The same traffic with a window of two blocks of three for gossip: it binds,
    and transactions beyond it outbid cheaper pending ones."""

    max_block_txs = 3


SmallWindowMempoolMachine.TestCase.settings = MempoolMachine.TestCase.settings
TestSmallWindowMempoolMachine = SmallWindowMempoolMachine.TestCase


async def test_a_peer_replaying_spent_transactions_is_refused_unchecked_past_its_budget():
    pool = CountingPool()
    try:
        env = Env(pool, stale_gossip_per_s=1, stale_gossip_burst=40)
        k = KEYS[0]
        spent = [make_tx(k, n) for n in range(64)]
        # Those nonces are used: a block this node did not see took them.
        env.state.put(k.address, RICH, nonce=64)
        env.height += 1
        env.mempool.on_block_committed([], senders=[k.address])
        peer, other = b"\x0a" * 32, b"\x0b" * 32
        results = await env.mempool.submit(spent[:30], origin=peer)
        assert {r.code for r in results} == {"nonce_too_low"}
        assert pool.checked == 30
        # The budget (40) goes into debt with this batch, checked like the first.
        results = await env.mempool.submit(spent[30:60], origin=peer)
        assert {r.code for r in results} == {"nonce_too_low"}
        assert pool.checked == 60
        # Now the peer's batches are refused without a signature check, valid or not.
        fresh = make_tx(KEYS[1], 0)
        results = await env.mempool.submit([*spent[60:], fresh], origin=peer)
        assert {r.code for r in results} == {"peer_throttled"}
        assert pool.checked == 60
        # Another peer, a client and this node keep theirs.
        assert [r.code for r in await env.mempool.submit([fresh], origin=other)] == ["accepted"]
        assert [r.code for r in await env.mempool.submit(spent[60:], client=True)] == [
            "nonce_too_low"
        ] * 4
        assert pool.checked == 65
    finally:
        pool.shutdown()


def _never_admitted(kind: str) -> list[bytes]:
    """64 signed transactions a member can make once and gossip again and again: each
    costs the receiver a signature check, and none is ever admitted (so none pays).
    Each is refused for what it is against the chain's state, whatever the pool holds."""
    if kind == "unfunded":
        return [make_tx(key(1000 + i), 0) for i in range(64)]
    if kind == "fee below the minimum":
        return [make_tx(KEYS[0], i, fee=MIN_FEE - 1) for i in range(64)]
    assert kind == "unknown type"
    return [make_tx(KEYS[0], i, tx_type="no_such_type", payload=b"") for i in range(64)]


@pytest.mark.parametrize("kind", ["unfunded", "fee below the minimum", "unknown type"])
async def test_a_peer_gossiping_transactions_that_never_pay_is_refused_unchecked_past_its_budget(
    kind,
):
    # Only spent transactions (a used nonce, an expiry passed) counted against a peer's
    # budget: these, signed once, cost a check each time they came again, for free.
    pool = CountingPool()
    try:
        env = Env(pool, stale_gossip_per_s=1, stale_gossip_burst=40)
        txs = _never_admitted(kind)
        peer = b"\x0a" * 32
        checked = pool.checked
        results = await env.mempool.submit(txs[:30], origin=peer)
        assert "accepted" not in {r.code for r in results}
        results = await env.mempool.submit(txs[30:60], origin=peer)
        assert "accepted" not in {r.code for r in results}
        assert pool.checked == checked + 60
        # Past the budget (40) the peer's batches wait unchecked.
        results = await env.mempool.submit(txs[:30], origin=peer)
        assert {r.code for r in results} == {"peer_throttled"}
        assert pool.checked == checked + 60
    finally:
        pool.shutdown()


def _sent_apart(kind: str) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """What clients sent one node, what they sent a relay (60 transactions the relay
    admits and the node then refuses), and the relay's settings."""
    if kind == "other bytes for a queued nonce":
        # A client signs two transfers for one nonce above a gap (free while the gap
        # stays) and sends one to each node.
        node = [make_tx(KEYS[i], 1, amount=1) for i in range(60)]
        return node, [make_tx(KEYS[i], 1, amount=2) for i in range(60)], {}
    if kind == "a sender's queued cap":
        # A flood's consecutive nonces spread over the nodes (benches.throughput): the
        # node holds 16 above a missing nonce (max_queued_per_sender), the relay others.
        node = [make_tx(KEYS[i], n) for i in range(4) for n in range(1, 17)]
        return node, [make_tx(KEYS[i], n) for i in range(4) for n in range(17, 32)], {}
    if kind == "fees already queued":
        # Two fees' worth of balance: the node holds nonces 0 and 1, the relay 2 and 3.
        node = [make_tx(key(2000 + i), n) for i in range(30) for n in (0, 1)]
        return node, [make_tx(key(2000 + i), n) for i in range(30) for n in (2, 3)], {}
    assert kind == "a wider nonce window at the relay"
    # A node's window is its own setting (max_nonce_ahead, 64 by default here).
    relay = [make_tx(KEYS[i], n) for i in range(4) for n in range(70, 85)]
    return [], relay, {"max_nonce_ahead": 128}


REFUSED = {
    "other bytes for a queued nonce": "duplicate",
    "a sender's queued cap": "nonce_gap",
    "fees already queued": "insufficient_fee",
    "a wider nonce window at the relay": "nonce_gap",
}


@pytest.mark.parametrize(
    "kind",
    [
        "other bytes for a queued nonce",
        "a sender's queued cap",
        "fees already queued",
        "a wider nonce window at the relay",
    ],
)
async def test_an_honest_relay_keeps_its_gossip_whatever_clients_sent_each_node(pool, kind):
    # Refusals that depend on what the receiving pool holds (or its settings) were
    # counted against the gossiping peer's budget: a relay that gossiped only what it
    # admitted itself was refused unchecked once clients had sent the two nodes
    # different transactions (a flood's reordering, or a client's two versions of one
    # nonce, which cost it nothing), and the honest transactions it gossiped next were
    # dropped.
    to_node, to_relay, relay_settings = _sent_apart(kind)
    node = Env(pool, stale_gossip_per_s=1, stale_gossip_burst=40)
    relay = Env(pool, **relay_settings)
    for env in (node, relay):
        for i in range(30):
            env.state.put(key(2000 + i).address, 2 * MIN_FEE)
    assert await node.submit(*to_node, client=True) == ["accepted"] * len(to_node)
    assert await relay.submit(*to_relay, client=True) == ["accepted"] * len(to_relay)
    peer = b"\x0a" * 32
    results = await node.mempool.submit(to_relay, origin=peer)
    assert len(results) == 60
    assert {r.code for r in results} == {REFUSED[kind]}
    # The relay's next gossip, which any node admits, is checked and admitted.
    fresh = [make_tx(KEYS[63], n) for n in range(8)]
    assert await relay.submit(*fresh, client=True) == ["accepted"] * 8
    results = await node.mempool.submit(fresh, origin=peer)
    assert [r.code for r in results] == ["accepted"] * 8


async def test_refusals_for_what_a_transaction_is_are_unpaid_for_clients_too(pool):
    # The HTTP layer charged a client only the codes of one list of its own (bytes that
    # are no transaction, bad signatures, spent ones): well-signed transactions that
    # never pay (unfunded, a fee below the minimum, a nonce far ahead) cost a check each
    # for free. Clients now get the gossip budget's classification, with the nonce
    # window too (a relay is not charged it: another node's window may be wider).
    env = Env(pool)
    env.state.put(key(3001).address, 2 * MIN_FEE)
    tampered = SignedTx.decode(make_tx(KEYS[2], 0))
    forged = SignedTx(tampered.chain_id, tampered.sender, tampered.body, bytes(64)).encode()
    what_it_is = {
        "insufficient_fee": make_tx(key(3000), 0),
        "fee_too_low": make_tx(KEYS[0], 0, fee=MIN_FEE - 1),
        "expired": make_tx(KEYS[0], 0, expiry=0),
        "nonce_gap": make_tx(KEYS[0], env.mempool.config.nonce_window),
        "bad_signature": forged,
    }
    results = await env.mempool.submit(list(what_it_is.values()), client=True)
    assert [(r.code, r.unpaid) for r in results] == [(code, True) for code in what_it_is]
    results = await env.mempool.submit([what_it_is["nonce_gap"]], origin=b"\x0a" * 32)
    assert [(r.code, r.unpaid) for r in results] == [("nonce_gap", False)]
    # What the pool holds: a burst out of order, another version of a queued nonce,
    # fees already queued. An honest wallet meets them; they are not charged.
    assert (
        await env.submit(*(make_tx(KEYS[1], n) for n in range(1, 17)), client=True)
        == ["accepted"] * 16
    )
    assert await env.submit(make_tx(key(3001), 0), make_tx(key(3001), 1)) == ["accepted"] * 2
    what_the_pool_holds = {
        "nonce_gap": make_tx(KEYS[1], 17),
        "duplicate": make_tx(KEYS[1], 1, amount=2),
        "insufficient_fee": make_tx(key(3001), 2),
    }
    results = await env.mempool.submit(list(what_the_pool_holds.values()), client=True)
    assert [(r.code, r.unpaid) for r in results] == [(c, False) for c in what_the_pool_holds]
    # A full pool: refused before any check, or by a full shard after it.
    full = Env(pool, per_shard_cap=1)
    first, second = keys_in_shard(0, full.mempool.config.shards, 2)
    assert await full.submit(make_tx(first, 0), client=True) == ["accepted"]
    results = await full.mempool.submit([make_tx(second, 0)], client=True)
    assert [(r.code, r.unpaid) for r in results] == [("mempool_full", False)]
