"""The sharded mempool: verified transactions waiting for a block.

Admission runs in two phases (indy-plenum style). Stateless checks — size,
decoding, chain id, signature, payload — run in a thread pool, one pool call
per chunk of a batch, so PyNaCl (which releases the GIL) keeps every core busy
without paying per-transaction task overhead. Stateful checks — duplicates,
expiry, fee, nonce, the sender's balance, caps — then run on the event-loop
thread against the latest state, so they never race with each other or with
``on_block_committed``.

Layout. ``shard = int.from_bytes(sender[:8]) % S``; each shard holds, per
sender, a queue of transactions keyed by nonce. Nonces may arrive out of order
(gossip reorders), so a queue may hold gaps inside a window of
``max_nonce_ahead`` nonces past the sender's state nonce; only the contiguous
run from the state nonce is ever offered to a block. Each admitted transaction
is kept as its ``VerifiedTx`` so block building reuses the verdict: a
transaction is verified once per node.

Pending and queued (Geth's txpool split). A sender's *pending* transactions are
the contiguous run from its state nonce, which the next blocks can include; its
*queued* ones sit above a missing nonce. Queued transactions never pay until the
gap fills, so they never count against the admission window of
``max_pending_blocks`` (see ``_room``), which only pending ones and those in
verification hold. They have budgets of their own (``_queue_room``):

- per sender, ``max_queued_per_sender`` (a client's reordering needs a few;
  beyond it ``nonce_gap``: send the missing nonce first);
- gaps opened (or fee-bumped) since the last commit, ``max_gap_blocks`` blocks'
  worth: this bounds how many gaps are admitted per block, as the window does for
  pending ones (without it, under honest reordering, admission ran ahead of
  finality). A gap refused by it has cost its signature check, like any refused
  transaction: that work is bounded by the window, which counts every transaction
  in verification, not by this budget;
- per node, ``max_queued``. It is larger, because honest reordering fills it: a
  client behind a load balancer sends consecutive nonces to different nodes, so
  most of its transactions reach a node before their predecessor's gossip
  (``benches.throughput`` keeps up to four batches of 2,000 in flight). When it
  is full, a new queued transaction evicts the highest nonce of the sender
  holding the most queued ones, if that sender holds more than the newcomer's.

A queued transaction refused for a full budget gets ``mempool_full`` (retry
later, by when the gap has usually filled), never a final error that would leave
a permanent hole. Eviction takes only queued transactions, so no pending run ever
gets a gap. Queued transactions are gossiped like any other (the peer may hold
the missing nonce), and gossip goes through the same admission as a client's,
with budgets twice as large.

Decisions (see also docs in the module's functions):

- A second transaction for a queued (sender, nonce) replaces the first only if
  its fee is at least ``replace_fee_bump_pct`` percent higher (the geth rule),
  so a sender can unstick a low-fee transaction but cannot make the node
  re-verify and re-gossip the same slot for free. Otherwise it is ``duplicate``.
- A client's batch is refused (``mempool_full``, retry later) before any signature
  work for what does not fit in ``max_pending_blocks`` blocks' worth of pending
  transactions (the chain's ``max_block_txs`` and ``max_block_bytes``, counting
  those still in verification): what the chain cannot include in the next blocks
  only waits, and admitting it would take the cores that finalize blocks. Under a
  flood of four loaded validators on two cores, admission ran three blocks ahead
  of finality and blocks came at a fraction of the rate the machine sustains.
  Queued transactions do not count (see above); gossip from peers is refused
  only beyond twice this window (see ``submit``).
- A transaction beyond the window that pays more than the cheapest one that may go
  takes its place (``OUTBID_PER_BATCH``), if its sender has nothing pending ahead
  of it (``_may_outbid``). Only a sender's last transaction may go,
  and only while it is pending with nothing queued behind it, so that no eviction
  opens a nonce gap (DESIGN.md), and never the node's own (its evidence is signed
  at the minimum fee); the cheapest such, newest first, leaves the pool. Without
  it a flood at the minimum fee, refilled after every block, had every other
  client refused whatever fee it offered, and selection's fee priority never saw
  them.
- Full shards refuse (``mempool_full``), except a new pending transaction that pays
  more than the shard's cheapest one that may go: it takes its place, as beyond the
  window (accounts are cheap to grind into one shard, and the cap is under the
  client window). Otherwise only queued transactions are evicted, and only for
  other queued ones (see above). When
  a sender's balance drops below the fees it has queued, its queue is trimmed
  from the highest nonce down, which never opens a gap.
- The mempool's view of a sender (state nonce and balance) is refreshed from
  state whenever the sender submits and when a committed block touches it (a
  submit at the height of the last commit reuses what the commit read: state
  changes only with a block).
  A block may touch senders whose transactions never reached this node: the
  caller passes them in ``on_block_committed(..., senders=...)``.
- A peer's gossip (``submit(..., origin=peer)``) has a budget of transactions that
  cost a signature check only to be refused for what they are: by their stateless
  checks (an unknown type, a payload that does not decode...) or against the chain's
  state (``check_admission``: spent, a nonce the chain used or an expiry passed; an
  unfunded sender, a fee below the minimum):
  ``stale_gossip_per_s``, ``stale_gossip_burst`` saved up. Past it the peer's batches
  are refused unchecked (``peer_throttled``) until the budget refills. Signed once,
  such transactions could be sent again and again, none ever paying (the verifier
  remembers only the last passes). An honest relay, which gossips only what it
  admitted at its own state, sends them only in a race with a block (a nonce just
  used, an account just emptied), so the peer is not banned. Refusals that depend on
  what this pool holds or on its settings are not counted: a full pool, a sender's
  queue or nonce window (``nonce_gap``, ``account_queue_full``), a slot taken by
  other bytes (``duplicate``), fees already queued (``insufficient_fee`` beyond the
  balance's first fee). Honest relays meet all of them: a flood's reordering gave a
  relay 400 ``nonce_gap`` refusals in a run of ``benches.throughput --validators 4``,
  and a client that sends other bytes for one (sender, nonce) to each node, which
  costs it nothing while the nonce is queued, had every relay refused ``duplicate`` at
  every other node, so that the honest relays' gossip was dropped. The price: a member
  may replay transactions refused for those reasons (other bytes for a slot it
  filled), each a signature check, bound only by its p2p rate.
- A client's submissions are classed the same way (``SubmitResult.unpaid``), and its
  address's budget is the HTTP layer's (``node.bodies.CheckBudget``), with one more
  refusal counted: a nonce past the window from the chain's nonce (``nonce_gap``) while
  the window is not full of the sender's pending nonces (a pipeline running ahead of the
  blocks fills it first; to send such nonces free, a sender keeps a window of fees
  pending). Everything else
  that depends on this pool (a full pool, a sender's queued nonces, a held slot, fees
  already queued) is free to a client too: an honest wallet's burst meets it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from core.codec import constructor
from core.errors import Invalid
from core.types import SignedTx, TxBody, tx_hash
from node.config import MempoolConfig
from node.stage_cpu import StageCpu
from node.verifier import ProcessVerifier, chunk_step
from p2p.limits import TokenBucket
from vm.accounts import ACCOUNT_PREFIX, ZERO_ACCOUNT, Account, get_account
from vm.executor import (
    BlockResult,
    Executor,
    VerifiedTx,
    complete_checked,
    read_account,
    verify_signed_tx,
)
from vm.params import ChainParams
from vm.registry import Registry, TxClass
from vm.state import StateView

log = logging.getLogger("node.mempool")

ACCEPTED = "accepted"

# Transactions decoded or admitted between two turns of the event loop. The loop also
# carries p2p (proposals, votes) and the proposer's selection: a batch of 2,000 admitted
# in one go held it 0.2-0.6 s on loaded validators (``benches.flashdeal``), every vote
# and proposal meanwhile waiting. 64 are ~2 ms of work on an idle core (up to ~25 ms on
# four loaded validators sharing two); 64 left fewer stalls over 100 ms than 128.
ADMIT_CHUNK = 64

# Peers with a stale-gossip budget kept (an authenticated member set is far smaller).
_MAX_STALE_BUDGETS = 1024
# Transactions of one batch beyond the window whose fee is read (a body decode on the
# loop, before any signature work) to see whether they outbid the cheapest pending
# one; those that do are verified. A one-tap order is a batch of one; a storm's
# batches of thousands would otherwise pay a decode each for a refusal.
OUTBID_PER_BATCH = 8
# Outbidding transactions in verification at once, over every batch: the bound on
# signature work beyond the window.
_MAX_OUTBIDDING = 64


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The verdict on one submitted transaction; ``code`` is ``accepted`` or an error code."""

    hash: bytes | None
    code: str
    message: str
    # Refused once checked, for what it is: by its stateless checks, or against the
    # chain's state (spent, unfunded, a fee below the minimum; for a client, a nonce
    # past the window). Never to pay, so the submitter's budget counts it (a peer's
    # here, a client address's ``node.bodies.CheckBudget``); refusals for what the pool
    # holds (full, a queued slot or nonce) are not: honest senders meet them.
    unpaid: bool = False

    @property
    def accepted(self) -> bool:
        return self.code == ACCEPTED


# Every accepted transaction gets one: set the slots directly.
_new_result = constructor(SubmitResult)


@dataclass(frozen=True, slots=True)
class MempoolStats:
    """What the mempool holds, by the budgets of the module docstring (for metrics)."""

    # Every held transaction, and their encoded bytes.
    transactions: int
    bytes: int
    # The contiguous runs from each sender's state nonce: what blocks can include.
    pending: int
    pending_bytes: int
    # Held above a missing nonce, and of those the ones admitted since the last commit.
    queued: int
    queued_since_commit: int
    queued_since_commit_bytes: int
    # Batches' transactions in signature verification right now, or verified and
    # waiting for their chunk's admission (``ADMIT_CHUNK``).
    verifying: int
    # Senders with any transaction held.
    senders: int


class _Entry:
    """One pending transaction with the fields the hot paths read, unpacked once."""

    __slots__ = (
        "vtx",
        "hash",
        "sender",
        "shard",
        "nonce",
        "fee",
        "size",
        "expiry",
        "seq",
        "order",
        "tx_class",
    )

    def __init__(self, vtx: VerifiedTx, shard: int, seq: int, tx_class: int) -> None:
        body = vtx.body
        self.vtx = vtx
        self.hash = vtx.hash
        self.sender = vtx.sender_address
        self.shard = shard
        self.nonce = body.nonce
        self.fee = body.fee
        self.size = vtx.size
        self.expiry = body.expiry_height
        # Admission order: ties between equal fees go first-come first-served.
        self.seq = seq
        # Highest fee first in a min-heap; the class picks the heap (``select``).
        self.order = -body.fee
        self.tx_class = tx_class


class _Account:
    """A sender's queue and the state it was last checked against.

    Nonces in ``[nonce, end)`` are pending, every one present; those above
    ``end`` (which is missing) are queued.
    """

    __slots__ = (
        "sender",
        "nonce",
        "end",
        "queued",
        "txs",
        "fees",
        "read",
        "read_height",
        "outbiddable",
    )

    def __init__(self, sender: bytes, nonce: int) -> None:
        self.sender = sender
        # Next nonce the chain expects from this sender, as last read from state.
        self.nonce = nonce
        # The account as last read from state (by admission, or by
        # ``on_block_committed`` from the block's own records), and the height it was
        # read at: the state changes only when the height moves, so the sender's next
        # transaction at that height needs no read (a busy sender sends several per
        # block interval).
        self.read = ZERO_ACCOUNT
        self.read_height = -1
        # The first missing nonce: the end of the pending run.
        self.end = nonce
        # How many of ``txs`` are queued (above ``end``).
        self.queued = 0
        self.txs: dict[int, _Entry] = {}
        # Sum of the fees of every queued transaction: all of them must be payable.
        self.fees = 0
        # Its entry in its shard's ``_Outbiddable``, if any (``Mempool._index_last``).
        self.outbiddable: _Entry | None = None


class _Shard:
    __slots__ = ("accounts", "count", "nbytes")

    def __init__(self) -> None:
        self.accounts: dict[bytes, _Account] = {}
        self.count = 0
        self.nbytes = 0


def _verify_chunk(
    raws: Sequence[bytes],
    hashes: Sequence[bytes | None],
    chain_id: str,
    registry: Registry,
    max_tx_bytes: int,
) -> list[VerifiedTx | Invalid]:
    """Stateless checks for one chunk; runs in a pool thread. ``hashes[i]`` is
    ``tx_hash(raws[i])``, or None where admission did not hash it."""
    out: list[VerifiedTx | Invalid] = []
    for raw, hash_ in zip(raws, hashes, strict=True):
        try:
            out.append(verify_signed_tx(raw, chain_id, registry, max_tx_bytes, hash_))
        except Invalid as exc:
            out.append(exc)
    return out


# The key of the heaps once classes are merged (``select``'s second phase).
_ANY_CLASS = -1


class _Picker:
    """One block's selection over per-class, per-shard heaps of senders (``select``).

    While ``merged`` is false a sender's next transaction waits in its class's heap;
    once true every heap is keyed ``_ANY_CLASS`` and fee alone orders them.
    """

    __slots__ = ("heaps", "out", "room", "max_txs", "next_height", "merged")

    def __init__(
        self,
        heaps: dict[int, list[list[tuple[int, int, _Entry, dict[int, _Entry]]]]],
        max_txs: int,
        max_bytes: int,
        next_height: int,
    ) -> None:
        self.heaps = heaps
        self.out: list[VerifiedTx] = []
        self.room = max_bytes
        self.max_txs = max_txs
        self.next_height = next_height
        self.merged = False

    def merge(self) -> None:
        """One heap per shard over every class: from now on fee decides, not class."""
        n_shards = len(next(iter(self.heaps.values())))
        merged = [
            [item for by_shard in self.heaps.values() for item in by_shard[k]]
            for k in range(n_shards)
        ]
        for heap in merged:
            heapq.heapify(heap)
        self.heaps = {_ANY_CLASS: merged}
        self.merged = True

    def take(self, tx_class: int, limit: int) -> None:
        """Up to ``limit`` more transactions of ``tx_class``, a shard per turn."""
        out = self.out
        stop = min(self.max_txs, len(out) + limit)
        heappop, heappush, heapreplace = heapq.heappop, heapq.heappush, heapq.heapreplace
        heaps = self.heaps
        n_shards = len(heaps[tx_class])
        live = [k for k, heap in enumerate(heaps[tx_class]) if heap]
        while live and len(out) < stop:
            still = []
            for k in live:
                heap = heaps[tx_class][k]
                while heap:
                    top = heap[0]
                    e = top[2]
                    if e.size > self.room or e.expiry < self.next_height:
                        heappop(heap)
                        continue
                    out.append(e.vtx)
                    self.room -= e.size
                    txs = top[3]
                    nxt = txs.get(e.nonce + 1)
                    if nxt is None:
                        heappop(heap)
                    elif self.merged or nxt.tx_class == tx_class:
                        heapreplace(heap, (nxt.order, nxt.seq, nxt, txs))
                    else:
                        # The sender's run goes on in another class: it waits there.
                        heappop(heap)
                        other = heaps.get(nxt.tx_class)
                        if other is None:
                            other = heaps[nxt.tx_class] = [[] for _ in range(n_shards)]
                        heappush(other[k], (nxt.order, nxt.seq, nxt, txs))
                    break
                if len(out) >= stop:
                    return
                if heap:
                    still.append(k)
            live = still


class _Outbiddable:
    """One shard's transactions that may be outbid: each sender's last one while it
    is pending with nothing queued behind it, so that its leaving opens no nonce gap
    (DESIGN.md, Mempool). Exact, at most one entry per sender: the mempool adds an
    entry when it becomes the last and discards it when it stops being so or leaves.

    By fee level, each an insertion-ordered dict (newest indexed at the end), the
    levels' fees in a heap of ints pushed when a level is made: a few dict
    operations per admitted transaction, where a heap of entries cost a tuple and
    a push each on the flood's hot path.
    """

    __slots__ = ("levels", "fees")

    def __init__(self) -> None:
        self.levels: dict[int, dict[int, _Entry]] = {}
        # Fees of levels emptied and dropped stay until popped: past twice the live
        # ones the heap is rebuilt from them (amortised O(1) per level made).
        self.fees: list[int] = []

    def add(self, e: _Entry) -> None:
        level = self.levels.get(e.fee)
        if level is None:
            level = self.levels[e.fee] = {}
            fees = self.fees
            if len(fees) > 2 * len(self.levels) + 64:
                fees[:] = self.levels
                heapq.heapify(fees)
            else:
                heapq.heappush(fees, e.fee)
        level[e.seq] = e

    def discard(self, e: _Entry) -> None:
        level = self.levels[e.fee]
        del level[e.seq]
        if not level:
            del self.levels[e.fee]

    def cheapest(self) -> _Entry | None:
        """The cheapest entry, the newest indexed on ties, or None."""
        fees, levels = self.fees, self.levels
        while fees:
            level = levels.get(fees[0])
            if level is not None:
                return level[next(reversed(level))]
            heapq.heappop(fees)
        return None


class Mempool:
    """Pending transactions, sharded by sender; see the module docstring.

    Not thread-safe: every method runs on the event-loop thread, except the pool
    work inside ``submit`` and ``get``. ``get`` may be called from any thread (the
    consensus thread validates proposals with it, without a hop per block to the
    loop): it is one ``dict.get``, atomic under the GIL, and what it returns is
    never mutated once admitted. Keep it that way. ``state`` must always read the
    latest committed state and ``height_fn`` return the latest committed height.
    """

    def __init__(
        self,
        chain_id: str,
        registry: Registry,
        executor: Executor,
        params: ChainParams,
        state: StateView,
        height_fn: Callable[[], int],
        config: MempoolConfig | None = None,
        verify_pool: concurrent.futures.Executor | None = None,
        verifier: ProcessVerifier | None = None,
        stages: StageCpu | None = None,
    ) -> None:
        self._chain_id = chain_id
        # CPU by stage (``node.stage_cpu``): admission, selection and the clean-up
        # after a commit are charged here.
        self._stages = StageCpu() if stages is None else stages
        self._registry = registry
        self._executor = executor
        self._params = params
        self._state = state
        self._height_fn = height_fn
        self._config = config = config or MempoolConfig()
        # Worker processes for envelopes and signatures; without them, threads.
        self._verifier = verifier
        self._own_pool = verify_pool is None
        self._pool = verify_pool or concurrent.futures.ThreadPoolExecutor(
            max_workers=config.verify_threads, thread_name_prefix="mempool-verify"
        )
        self._shards = [_Shard() for _ in range(config.shards)]
        # Read per admitted transaction: bound once (the config is frozen).
        self._n_shards = config.shards
        self._nonce_window = config.nonce_window
        self._by_hash: dict[bytes, _Entry] = {}
        # Pending transactions and their bytes: what the admission window counts.
        self._pending = 0
        self._pending_bytes = 0
        # Queued transactions, and the senders holding any by how many they hold:
        # eviction finds the biggest holder without scanning every account.
        self._queued = 0
        self._holders: dict[int, dict[bytes, _Account]] = {}
        # Queued transactions admitted since the last commit (seq >= _young_from), and
        # their bytes: they have a budget per block (see ``_queue_room``).
        self._young = 0
        self._young_bytes = 0
        self._young_from = 0
        # Hashes of transactions being verified right now (or waiting for their chunk's
        # admission), so concurrent submits of the same bytes (gossip echoes) verify
        # them once.
        self._inflight: set[bytes] = set()
        # Encoded size of the transactions in ``_inflight``.
        self._inflight_bytes = 0
        # Expiry index: hashes per expiry height (a height with none is dropped)
        # plus a heap of those heights (and of some dropped ones, bounded: see
        # ``_insert``), so expiring is proportional to what expires.
        self._expiry: dict[int, set[bytes]] = {}
        self._expiry_heights: list[int] = []
        self._seq = itertools.count()
        # Shard that select starts from; rotates so no shard always goes first.
        self._rr = 0
        # Each gossiping peer's budget of spent transactions it made us check.
        self._stale: dict[bytes, TokenBucket] = {}
        # Each shard's entries that may be outbid: who a transaction beyond the
        # window, or in a full shard, outbids.
        self._outbiddable = [_Outbiddable() for _ in self._shards]
        # Outbidding transactions in verification now (``_MAX_OUTBIDDING``).
        self._outbidding = 0
        # Senders never outbid: the node's own (``submit(own=True)``), one key.
        self._pinned: set[bytes] = set()

    # --- lifecycle ---

    def close(self) -> None:
        """Shut down the verification pool if the mempool created it."""
        if self._own_pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # --- reads ---

    @property
    def config(self) -> MempoolConfig:
        return self._config

    @property
    def stages(self) -> StageCpu:
        """The CPU this mempool's stages spent (``node.stage_cpu``)."""
        return self._stages

    @property
    def params(self) -> ChainParams:
        """The chain parameters admission checks against (those of the next block)."""
        return self._params

    def set_params(self, params: ChainParams) -> None:
        """Check admissions against ``params`` from now on (governance changed them).

        Queued transactions stay: a block's inclusion checks use that block's own
        parameters, and the builder drops what they refuse.
        """
        self._params = params

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash_: object) -> bool:
        return tx_hash_ in self._by_hash

    def contains(self, tx_hash_: bytes) -> bool:
        return tx_hash_ in self._by_hash

    def get(self, tx_hash_: bytes) -> VerifiedTx | None:
        """The verified transaction under ``tx_hash_``, for block building to reuse.

        Safe from any thread (see the class docstring)."""
        entry = self._by_hash.get(tx_hash_)
        return None if entry is None else entry.vtx

    def shard_of(self, sender: bytes) -> int:
        # The address is already a hash of the public key, so its first bytes
        # are uniform; no need to hash again.
        return int.from_bytes(sender[:8], "big") % self._n_shards

    def shard_sizes(self) -> list[int]:
        return [s.count for s in self._shards]

    def shard_bytes(self) -> list[int]:
        return [s.nbytes for s in self._shards]

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self._shards)

    def stats(self) -> MempoolStats:
        return MempoolStats(
            transactions=len(self._by_hash),
            bytes=self.total_bytes,
            pending=self._pending,
            pending_bytes=self._pending_bytes,
            queued=self._queued,
            queued_since_commit=self._young,
            queued_since_commit_bytes=self._young_bytes,
            verifying=len(self._inflight),
            senders=sum(len(s.accounts) for s in self._shards),
        )

    def pending_hashes(self) -> Iterator[bytes]:
        return iter(list(self._by_hash))

    def pending_for(self, sender: bytes) -> list[VerifiedTx]:
        """The sender's queued transactions in nonce order (gaps included)."""
        acct = self._shards[self.shard_of(sender)].accounts.get(sender)
        if acct is None:
            return []
        return [acct.txs[n].vtx for n in sorted(acct.txs)]

    def next_nonce(self, sender: bytes) -> int | None:
        """The nonce after the sender's contiguous run, or None if nothing is queued.

        This is the nonce a client should sign next; it ignores queued
        transactions beyond a gap.
        """
        acct = self._shards[self.shard_of(sender)].accounts.get(sender)
        return None if acct is None else acct.end

    # --- admission ---

    async def submit(
        self,
        raw_txs: Sequence[bytes],
        *,
        client: bool = False,
        origin: bytes | None = None,
        own: bool = False,
    ) -> list[SubmitResult]:
        """Check and admit a batch; one result per input, in input order.

        ``origin``: the peer that gossiped the batch, held to its budget of checked
        transactions refused (see the module docstring): past it, every one is refused
        ``peer_throttled`` unchecked.

        ``client``: a client's submission, refused before verification beyond the
        window of ``max_pending_blocks`` blocks' worth of pending transactions.
        Peers' gossip (and the node's own transactions) are refused only beyond
        twice that window: another member accepted them and will propose them, and
        a node that refused them early would verify them inside a proposal instead,
        or hold a sender's later nonces without the earlier ones; but a peer must
        not grow the pool without bound. Every other rule applies to all.

        ``own``: the node's own transactions (signed with its key, ``client`` false).
        Their sender's are never outbid: the node signs its upkeep (evidence) at the
        minimum fee and retries it only while it is refused, so an outbid piece of
        evidence let its offender go free.
        """
        budget = None if origin is None else self._stale_budget(origin)
        if budget is not None and budget.take(0) > 0:
            message = (
                "this peer's gossip was refused once checked (spent, unfunded, not "
                "admissible) past its budget; batches wait unchecked until it refills"
            )
            return [SubmitResult(None, "peer_throttled", message) for _ in raw_txs]
        results: list[SubmitResult | None] = [None] * len(raw_txs)
        todo_idx: list[int] = []
        todo_raw: list[bytes] = []
        todo_hash: list[bytes | None] = []
        max_tx_bytes = self._params.max_tx_bytes
        by_hash = self._by_hash
        inflight = self._inflight
        room, room_bytes = self._room(1 if client else 2)
        claimed_bytes = 0
        peeks = OUTBID_PER_BATCH
        outbids: set[bytes] = set()
        # Known bytes are refused before any signature work, and so is what does not
        # fit. The hash of the raw bytes is the transaction hash: decoding accepts only
        # the one canonical encoding, so equal transactions have equal bytes.
        for i, raw in enumerate(raw_txs):
            if type(raw) is not bytes:
                raw = bytes(raw)
            h = None
            if len(raw) <= max_tx_bytes:
                h = tx_hash(raw)
                if h in by_hash or h in inflight:
                    results[i] = SubmitResult(h, "duplicate", "transaction already known")
                    continue
                if room >= 1 and room_bytes >= len(raw):
                    room -= 1
                    room_bytes -= len(raw)
                elif peeks > 0 and self._outbidding < _MAX_OUTBIDDING:
                    peeks -= 1
                    if not self._outbids(raw):
                        results[i] = self._full(h)
                        continue
                    outbids.add(h)
                    self._outbidding += 1
                else:
                    results[i] = self._full(h)
                    continue
                claimed_bytes += len(raw)
                inflight.add(h)
            todo_idx.append(i)
            todo_raw.append(raw)
            todo_hash.append(h)
        self._inflight_bytes += claimed_bytes
        # Claims are given up chunk by chunk as each is admitted, so a batch always
        # counts against the window, in verification or in the pool, while other
        # batches run between its chunks.
        released = 0

        def release(upto: int) -> None:
            nonlocal released
            for j in range(released, upto):
                h = todo_hash[j]
                if h is not None:
                    inflight.discard(h)
                    self._inflight_bytes -= len(todo_raw[j])
                    if h in outbids:
                        self._outbidding -= 1
            released = upto

        windows = 1 if client else 2
        accepted = 0
        # Checked, then refused by the checks of the transaction alone or against the
        # chain's state: what a peer's gossip budget counts (module docstring).
        unpaid = 0
        try:
            verdicts = await self._verify(todo_raw, todo_hash)
            for start in range(0, len(todo_idx), ADMIT_CHUNK):
                if start:
                    # Let the loop's other work in (ADMIT_CHUNK); a block may commit
                    # meanwhile, so the height is read again.
                    await asyncio.sleep(0)
                end = start + ADMIT_CHUNK
                release(min(end, len(todo_idx)))
                with self._stages.timed("admission_checks"):
                    height = self._height_fn()
                    for i, verdict in zip(todo_idx[start:end], verdicts[start:end], strict=True):
                        if isinstance(verdict, Invalid):
                            # No hash: bytes failing stateless checks identify no transaction.
                            results[i] = SubmitResult(None, verdict.code, verdict.message, True)
                            unpaid += 1
                        else:
                            outbid = verdict.hash in outbids
                            if own:
                                self._pinned.add(verdict.sender_address)
                            r = self._admit(verdict, height, windows, outbid)
                            results[i] = r
                            accepted += r.code == ACCEPTED
                            unpaid += r.unpaid
        finally:
            release(len(todo_idx))
        if budget is not None and unpaid:
            # Checked and refused for what they are, never to pay: the peer's budget
            # (module docstring).
            budget.take(unpaid)
        log.debug("batch of %d: %d accepted, %d pending", len(raw_txs), accepted, len(self))
        answers = [r for r in results if r is not None]
        # Every slot was filled above: refused unverified, or verified and refused or admitted.
        assert len(answers) == len(results), "a transaction of the batch has no answer"
        return answers

    def _stale_budget(self, origin: bytes) -> TokenBucket:
        budgets = self._stale
        bucket = budgets.get(origin)
        if bucket is None:
            if len(budgets) >= _MAX_STALE_BUDGETS:
                # The longest-known first: a peer's debt outlives its connection only
                # while few others gossip.
                del budgets[next(iter(budgets))]
            cfg = self._config
            bucket = budgets[origin] = TokenBucket(cfg.stale_gossip_per_s, cfg.stale_gossip_burst)
        return bucket

    def _room(self, windows: int) -> tuple[int, int]:
        """How many more transactions, and bytes, may enter verification now within
        ``windows`` times the window of ``max_pending_blocks`` blocks.

        Only pending transactions and those in verification count: queued ones
        have their own budgets (``_queue_room``), so gaps never take the room of
        transactions the next blocks can include.
        """
        blocks = windows * self._config.max_pending_blocks
        params = self._params
        count = blocks * params.max_block_txs - self._pending - len(self._inflight)
        nbytes = blocks * params.max_block_bytes - self._pending_bytes - self._inflight_bytes
        return count, nbytes

    def _full(self, h: bytes) -> SubmitResult:
        blocks = self._config.max_pending_blocks
        return SubmitResult(
            h,
            "mempool_full",
            f"the mempool holds {self._pending} pending transactions and verifies "
            f"{len(self._inflight)}, {blocks} blocks' worth (at most "
            f"{blocks * self._params.max_block_txs} transactions and "
            f"{blocks * self._params.max_block_bytes} bytes): retry later",
        )

    def _outbids(self, raw: bytes) -> bool:
        """Whether ``raw`` offers more than the cheapest pending transaction, by its
        fee as written: unverified, so admission checks it again (``_admit``)."""
        cheapest = self._cheapest()
        if cheapest is None:
            return False
        try:
            fee = TxBody.decode(SignedTx.decode(raw).body).fee
        except Invalid:
            return False
        return fee > cheapest.fee

    def _cheapest(self, shard_i: int | None = None) -> _Entry | None:
        """The cheapest transaction that may be outbid, in shard ``shard_i`` or in any,
        or None (see ``_Outbiddable``). On ties the newest goes, so first come keeps
        its place: within a shard the newest indexed, across shards the newest."""
        best = None
        for k in range(len(self._shards)) if shard_i is None else (shard_i,):
            e = self._outbiddable[k].cheapest()
            if e is not None and (
                best is None or e.fee < best.fee or (e.fee == best.fee and e.seq > best.seq)
            ):
                best = e
        return best

    def _index_last(self, acct: _Account, shard_i: int) -> None:
        """Keep the sender's entry in ``_Outbiddable`` its last transaction, if that is
        pending with nothing queued and the sender not the node's own (``submit``),
        else none: called wherever that may change."""
        e = acct.txs.get(acct.end - 1) if acct.queued == 0 and acct.end > acct.nonce else None
        if e is not None and self._pinned and acct.sender in self._pinned:
            e = None
        old = acct.outbiddable
        if old is e:
            return
        index = self._outbiddable[shard_i]
        if old is not None:
            index.discard(old)
        if e is not None:
            index.add(e)
        acct.outbiddable = e

    @staticmethod
    def _may_outbid(acct: _Account | None) -> bool:
        """Whether the sender of a new pending transaction may take another sender's
        place: only with nothing pending ahead of it, so that it is the next of its
        sender's to execute. Behind a run of its own it would evict, then wait behind
        fees lower than its victim's (selection takes a run in nonce order), or find
        itself unpayable when a transaction ahead spends the balance (admission counts
        fees, not the amounts a transaction moves), and leave having paid nothing: a
        free eviction per transaction of the run. A one-tap order is a sender's only
        one."""
        return acct is None or acct.end == acct.nonce

    def _over_window(self, windows: int, size: int) -> bool:
        """Whether one more pending transaction of ``size`` bytes is beyond the window."""
        blocks = windows * self._config.max_pending_blocks
        params = self._params
        return (
            self._pending + len(self._inflight) >= blocks * params.max_block_txs
            or self._pending_bytes + self._inflight_bytes + size > blocks * params.max_block_bytes
        )

    async def _verify(
        self, raws: list[bytes], hashes: list[bytes | None]
    ) -> list[VerifiedTx | Invalid]:
        if not raws:
            return []
        step = chunk_step(len(raws), self._config.verify_threads)
        loop = asyncio.get_running_loop()
        if self._verifier is not None:
            return await self._verify_in_processes(raws, hashes, step)
        futures = [
            loop.run_in_executor(
                self._pool,
                _verify_chunk,
                raws[k : k + step],
                hashes[k : k + step],
                self._chain_id,
                self._registry,
                self._params.max_tx_bytes,
            )
            for k in range(0, len(raws), step)
        ]
        out: list[VerifiedTx | Invalid] = []
        for part in await asyncio.gather(*futures):
            out.extend(part)
        return out

    async def _verify_in_processes(
        self, raws: list[bytes], hashes: list[bytes | None], step: int
    ) -> list[VerifiedTx | Invalid]:
        """Envelope and signature in worker processes, then body and payload here.

        The workers' checks come first in ``verify_signed_tx``; what is left
        (decoding body and payload) runs here on the transactions that passed,
        so every transaction gets the verdict ``verify_signed_tx`` would give.
        """
        verifier = self._verifier
        assert verifier is not None
        chain_id = self._chain_id
        max_tx_bytes = self._params.max_tx_bytes
        if step >= len(raws):
            # One chunk (a one-tap request): awaited as it is, not wrapped in a task.
            verdicts = await verifier.check(raws, chain_id, max_tx_bytes, hashes)
        else:
            parts = await asyncio.gather(
                *(
                    verifier.check(raws[k : k + step], chain_id, max_tx_bytes, hashes[k : k + step])
                    for k in range(0, len(raws), step)
                )
            )
            verdicts = [verdict for part in parts for verdict in part]
        registry = self._registry
        out: list[VerifiedTx | Invalid] = []
        for k in range(0, len(raws), ADMIT_CHUNK):
            if k:
                await asyncio.sleep(0)  # ADMIT_CHUNK
            end = k + ADMIT_CHUNK
            with self._stages.timed("admission_decode"):
                out.extend(complete_checked(raws[k:end], verdicts[k:end], registry, hashes[k:end]))
        return out

    def _admit(
        self, vtx: VerifiedTx, height: int, windows: int, outbid: bool = False
    ) -> SubmitResult:
        """Stateful checks against the latest state, then queue. Event-loop thread only.

        ``windows``: 1 for a client's transaction, 2 for a peer's (see ``submit``).
        ``outbid``: it came beyond the window; while the window is still full it goes
        in only in the place of cheaper pending ones (see the module docstring).

        The verdict is ``unpaid`` when the transaction is refused for what it is
        against the chain's state alone (the submitter's budget counts it: see the
        module docstring), and for a client also past the nonce window. The other
        refusals depend on what this pool holds and on its settings, which differ
        between honest nodes.
        """
        client = windows == 1  # (own transactions count as a peer's: ``submit``)
        h = vtx.hash
        if h in self._by_hash:
            return SubmitResult(h, "duplicate", "transaction already known")
        sender = vtx.sender_address
        shard_i = self.shard_of(sender)
        shard = self._shards[shard_i]
        acct = shard.accounts.get(sender)
        if acct is not None and acct.read_height == height:
            state_acct = acct.read
        else:
            state_acct = read_account(self._state, sender)
        # A refresh changes nothing while the state nonce is the one the queue was
        # last checked at, the pending run starts there and the balance pays the
        # queued fees (the common case: a sender's next transaction in the same
        # block interval), so it is skipped then.
        if acct is not None and not (
            state_acct.nonce == acct.nonce <= acct.end and acct.fees <= state_acct.balance
        ):
            self._refresh(shard_i, acct, state_acct.nonce, state_acct.balance)
            # The refresh may have emptied, and so forgotten, the account.
            acct = shard.accounts.get(sender)
        # Expiry, minimum fee, nonce below the state nonce, fee above balance.
        try:
            self._executor.check_admission(
                self._state, vtx, height, self._params, account=state_acct
            )
        except Invalid as exc:
            # The transaction and the state decide these: an honest relay admitted it
            # at its own state, which differs from ours only across a block.
            return SubmitResult(h, exc.code, exc.message, True)
        cfg = self._config
        nonce = vtx.body.nonce
        fee = vtx.body.fee
        base = state_acct.nonce
        # check_admission refused this already; kept so the window below never
        # sees a nonce under the base, whatever the executor's rules become.
        if nonce < base:
            return SubmitResult(h, "nonce_too_low", f"expected nonce >= {base}, got {nonce}", True)
        window = self._nonce_window
        if nonce >= base + window:
            # Past the chain's nonce by more than this node's window: a client's to pay,
            # unless its window is full of pending nonces (a merchant's pipeline runs
            # ahead of the blocks, and resends; to send such nonces free, a sender keeps
            # a window of fees pending). Never a relay's: another node's window may be
            # wider, its state a block ahead.
            full = acct is not None and acct.end >= base + window
            return SubmitResult(
                h,
                "nonce_gap",
                f"expected nonce < {base + window} (state nonce {base} + {window}), got {nonce}",
                client and not full,
            )
        old = acct.txs.get(nonce) if acct is not None else None
        if old is not None:
            bump = cfg.replace_fee_bump_pct
            if bump is None:
                return SubmitResult(h, "duplicate", f"nonce {nonce} is already queued")
            need = max(old.fee + 1, -(-old.fee * (100 + bump) // 100))
            if fee < need:
                return SubmitResult(
                    h,
                    "duplicate",
                    f"nonce {nonce} is already queued with fee {old.fee}; "
                    f"a replacement needs fee >= {need}, got {fee}",
                )
        elif acct is not None and len(acct.txs) >= cfg.per_account_cap:
            return SubmitResult(
                h,
                "account_queue_full",
                f"sender has {len(acct.txs)} pending transactions, the cap is "
                f"{cfg.per_account_cap}",
            )
        queued_fees = (acct.fees if acct is not None else 0) - (old.fee if old else 0)
        if queued_fees + fee > state_acct.balance:
            return SubmitResult(
                h,
                "insufficient_fee",
                f"balance {state_acct.balance} cannot pay fee {fee} on top of "
                f"{queued_fees} in fees already queued",
            )
        size = vtx.size
        end = base if acct is None else acct.end
        # A new pending transaction in a full shard takes the place of the shard's
        # cheapest pending one that pays less (as beyond the window, below): accounts
        # are cheap to grind into one shard.
        displaced = None
        if old is None and shard.count >= cfg.per_shard_cap:
            if nonce == end:
                displaced = self._cheapest(shard_i)
            if (
                displaced is None
                or displaced.fee >= fee
                or displaced.sender == sender
                or not self._may_outbid(acct)
            ):
                return SubmitResult(
                    h,
                    "mempool_full",
                    f"shard {shard_i} holds {shard.count} transactions (the cap)",
                )
        grow = size - (old.size if old else 0) - (displaced.size if displaced else 0)
        if shard.nbytes + grow > cfg.per_shard_bytes:
            return SubmitResult(
                h,
                "mempool_full",
                f"shard {shard_i} holds {shard.nbytes} bytes; {grow} more exceeds the cap "
                f"{cfg.per_shard_bytes}",
            )
        if nonce > end:
            refused = self._queue_room(acct, end, size, windows, replacing=old is not None)
            if refused is not None:
                return SubmitResult(h, refused[0], refused[1])
        if displaced is not None:
            # One pending transaction out for one in: the window is no fuller either.
            self._remove(displaced)
            self._evict_excess()
            acct = shard.accounts.get(sender)
        elif outbid and old is None and nonce == end and self._over_window(windows, size):
            cheapest = self._cheapest()
            if (
                cheapest is None
                or cheapest.fee >= fee
                or cheapest.sender == sender
                or not self._may_outbid(acct)
            ):
                return self._full(h)
            # Cheapest and newest first, until it fits or what left holds its bytes:
            # each a sender's last, so no gap opens (its sender's previous one may go
            # next). Never more: gossip fills up to twice a client's window, and
            # fitting a client's transaction into its own window would take a
            # window's worth of other senders' transactions out for one fee.
            freed_bytes = 0
            while cheapest is not None and cheapest.fee < fee and cheapest.sender != sender:
                self._remove(cheapest)
                freed_bytes += cheapest.size
                if freed_bytes >= size or not self._over_window(windows, size):
                    break
                cheapest = self._cheapest()
            self._evict_excess()
            acct = shard.accounts.get(sender)
        message = "accepted"
        seq = None
        if old is not None:
            # A pending replacement keeps its slot's age; a queued one is a new gap
            # (it cost a signature check like one), so a sender cannot fee-bump its
            # old gaps block after block outside the budget of new ones.
            seq = old.seq if nonce < end else None
            # May forget the account when old was its only entry: look it up after.
            self._remove(old)
            message = f"replaced {old.hash.hex()}"
        acct = shard.accounts.get(sender)
        if acct is None:
            acct = shard.accounts[sender] = _Account(sender, state_acct.nonce)
        acct.read, acct.read_height = state_acct, height
        self._insert(shard, acct, vtx, shard_i, seq)
        return _new_result(h, ACCEPTED, message, False)

    def _queue_room(
        self, acct: _Account | None, end: int, size: int, windows: int, *, replacing: bool
    ) -> tuple[str, str] | None:
        """Room for one more queued transaction (above the missing nonce ``end``), or
        the refusal (code, message). May evict a bigger holder's highest nonce.
        ``replacing``: it takes the slot of a queued one, so only the budget of new
        gaps applies."""
        cfg = self._config
        mine = 0 if acct is None else acct.queued
        if not replacing and mine >= cfg.max_queued_per_sender:
            return (
                "nonce_gap",
                f"sender holds {mine} transactions waiting for nonce {end} (the cap is "
                f"{cfg.max_queued_per_sender}): send nonce {end} first",
            )
        # Gaps opened (or fee-bumped) since the last commit: honest reordering heals
        # them within a gossip round trip; this bounds how many are admitted per
        # block, apart from the pending window (see the module docstring).
        blocks = windows * cfg.max_gap_blocks
        params = self._params
        if (
            self._young >= blocks * params.max_block_txs
            or self._young_bytes + size > blocks * params.max_block_bytes
        ):
            return (
                "mempool_full",
                f"the mempool admitted {self._young} transactions above a missing nonce "
                f"since the last block (the cap); retry once nonce {end} is in",
            )
        if not replacing and self._queued >= cfg.max_queued:
            # Queued budget full: make room from a bigger holder, or refuse for now.
            victim = self._biggest_holder()
            if victim is None or victim.queued <= mine:
                return (
                    "mempool_full",
                    f"the mempool holds {self._queued} transactions waiting for an earlier "
                    f"nonce (the cap); retry once nonce {end} is in",
                )
            self._remove(victim.txs[max(victim.txs)])
        return None

    def _insert(
        self, shard: _Shard, acct: _Account, vtx: VerifiedTx, shard_i: int, seq: int | None
    ) -> None:
        tx_class = self._registry.tx_class(vtx.body.type)
        e = _Entry(vtx, shard_i, next(self._seq) if seq is None else seq, tx_class)
        acct.txs[e.nonce] = e
        acct.fees += e.fee
        shard.count += 1
        shard.nbytes += e.size
        before = acct.queued
        if e.nonce == acct.end:
            self._pending += 1
            self._pending_bytes += e.size
            acct.end += 1
            self._extend(acct)
        else:
            acct.queued += 1
            self._queued += 1
            self._age(e, 1)
        if acct.queued != before:
            self._reindex(acct, before)
        self._index_last(acct, shard_i)
        self._by_hash[e.hash] = e
        expiry = self._expiry
        bucket = expiry.get(e.expiry)
        if bucket is None:
            bucket = expiry[e.expiry] = set()
            heights = self._expiry_heights
            # Heights of buckets emptied and dropped stay in the heap until popped: past
            # twice the live ones, it is rebuilt from them (amortised O(1) per bucket).
            if len(heights) > 2 * len(expiry) + 64:
                heights[:] = expiry
                heapq.heapify(heights)
            else:
                heapq.heappush(heights, e.expiry)
        bucket.add(e.hash)

    def _remove(self, e: _Entry, *, used: bool = False) -> None:
        """Drop one entry everywhere; an emptied account is forgotten (memory bound).

        ``used``: the chain has used its nonce (a committed block included it, or the
        state nonce passed it). At the front of the sender's pending run it then
        leaves from the front and the rest stays pending, the state nonce past it
        (rather than turning queued until the sender's refresh promotes it again)."""
        shard = self._shards[e.shard]
        acct = shard.accounts[e.sender]
        if acct.outbiddable is e:
            self._outbiddable[e.shard].discard(e)
            acct.outbiddable = None
        del acct.txs[e.nonce]
        acct.fees -= e.fee
        shard.count -= 1
        shard.nbytes -= e.size
        before = acct.queued
        front = used and e.nonce == acct.nonce < acct.end
        if front:
            self._pending -= 1
            self._pending_bytes -= e.size
            acct.nonce += 1
        elif e.nonce < acct.end:
            # A pending one leaves: the rest of its run waits behind the new gap
            # (or is promoted again at once when the state nonce passed it).
            self._pending -= 1
            self._pending_bytes -= e.size
            for n in range(e.nonce + 1, acct.end):
                moved = acct.txs[n]
                self._pending -= 1
                self._pending_bytes -= moved.size
                acct.queued += 1
                self._queued += 1
                self._age(moved, 1)
            acct.end = e.nonce
        else:
            acct.queued -= 1
            self._queued -= 1
            self._age(e, -1)
        if acct.queued != before:
            self._reindex(acct, before)
        del self._by_hash[e.hash]
        bucket = self._expiry.get(e.expiry)
        if bucket is not None:
            bucket.discard(e.hash)
            # An empty bucket goes at once: left until its height, possibly far off
            # (max_expiry_blocks is governed), one per expiry ever seen would pile up.
            if not bucket:
                del self._expiry[e.expiry]
        if not acct.txs:
            del shard.accounts[e.sender]
        elif not front:
            # Taking the front of a pending run leaves its last as it was; any other
            # removal may make another transaction the last, or none.
            self._index_last(acct, e.shard)

    def _extend(self, acct: _Account) -> None:
        """Promote queued transactions that continue the pending run at ``acct.end``."""
        txs = acct.txs
        if acct.end < acct.nonce:
            acct.end = acct.nonce
        while acct.end in txs:
            e = txs[acct.end]
            acct.queued -= 1
            self._queued -= 1
            self._pending += 1
            self._pending_bytes += e.size
            self._age(e, -1)
            acct.end += 1

    def _age(self, e: _Entry, delta: int) -> None:
        """Count a queued entry in or out of the young ones, if it is young."""
        if e.seq >= self._young_from:
            self._young += delta
            self._young_bytes += delta * e.size

    def _reindex(self, acct: _Account, before: int) -> None:
        """Move the sender in the holders index after its queued count left ``before``."""
        if acct.queued == before:
            return
        holders = self._holders
        if before:
            bucket = holders[before]
            del bucket[acct.sender]
            if not bucket:
                del holders[before]
        if acct.queued:
            holders.setdefault(acct.queued, {})[acct.sender] = acct

    def _biggest_holder(self) -> _Account | None:
        """The sender holding the most queued transactions (the earliest to reach that count)."""
        if not self._holders:
            return None
        return next(iter(self._holders[max(self._holders)].values()))

    def _evict_excess(self) -> None:
        """Evict queued transactions, biggest holders first, down to the budget (a
        pending one that left without a block turns its successors into queued)."""
        while self._queued > self._config.max_queued:
            victim = self._biggest_holder()
            assert victim is not None
            self._remove(victim.txs[max(victim.txs)])

    def _refresh(self, shard_i: int, acct: _Account, nonce: int, balance: int) -> None:
        """Bring a sender's queue in line with its state: drop used nonces, trim unpayable fees."""
        if nonce > acct.nonce:
            # Lowest first: each leaves the front of the pending run, which stays
            # pending (any other order is correct too, but demotes the run).
            txs = acct.txs
            for n in sorted(txs):
                if n >= nonce:
                    break
                self._remove(txs[n], used=True)
        acct.nonce = nonce
        if acct.end < nonce:
            # The chain used nonces this node never held: what follows may now be pending.
            before = acct.queued
            self._extend(acct)
            self._reindex(acct, before)
            self._index_last(acct, shard_i)
        if acct.fees > balance:
            # Trim from the top so what is left stays a prefix: no gap opens.
            for n in sorted(acct.txs, reverse=True):
                if acct.fees <= balance:
                    break
                self._remove(acct.txs[n])

    # --- block building ---

    def select(self, max_txs: int, max_bytes: int) -> list[VerifiedTx]:
        """Transactions for the next block, in an order that executes without nonce gaps.

        Per sender only the contiguous run from its state nonce. Priority classes
        (``vm.TxClass``, from each type's registration): first every class in turn,
        highest first, takes up to its fair share, ``max_txs // (2 * classes)``; then
        what room is left goes by fee, whatever the class. So the chain's upkeep goes
        first, no class starves whatever the others send, and no class buys more
        than its share of precedence at the minimum fee. One transaction per shard
        per round (round-robin, rotating start); within a shard the sender whose
        next transaction pays the highest fee goes first, earliest admitted on ties. A transaction that does not fit the
        remaining bytes, or that expires before the next height, ends its sender's
        run for this block. Nothing is removed: the pool changes only on commit, so
        a block that fails to commit loses nothing.
        """
        with self._stages.timed("select"):
            return self._select(max_txs, max_bytes)

    def _select(self, max_txs: int, max_bytes: int) -> list[VerifiedTx]:
        if max_txs <= 0 or max_bytes <= 0 or not self._by_hash:
            return []
        n_shards = len(self._shards)
        start = self._rr
        self._rr = (start + 1) % n_shards
        # heaps[class][k]: the senders of shard (start + k) whose next transaction is of
        # that class, by (fee, admission).
        heaps: dict[int, list[list[tuple[int, int, _Entry, dict[int, _Entry]]]]] = {}
        for k in range(n_shards):
            shard = self._shards[(start + k) % n_shards]
            for acct in shard.accounts.values():
                e = acct.txs.get(acct.nonce)
                if e is not None:
                    by_shard = heaps.get(e.tx_class)
                    if by_shard is None:
                        by_shard = heaps[e.tx_class] = [[] for _ in range(n_shards)]
                    by_shard[k].append((e.order, e.seq, e, acct.txs))
        if not heaps:
            return []
        picker = _Picker(heaps, max_txs, max_bytes, self._height_fn() + 1)
        if len(heaps) > 1:
            # (With one class, as in a plain transfer flood, merge does the heapify.)
            for by_shard in heaps.values():
                for heap in by_shard:
                    heapq.heapify(heap)
            share = max_txs // (2 * len(TxClass))
            for c in sorted(heaps, reverse=True):
                picker.take(c, share)
        # Beyond the shares, fee alone: a class's precedence is not for sale at the
        # minimum fee (a flood of failing staking transactions would otherwise push
        # every commerce order out but its share).
        picker.merge()
        picker.take(_ANY_CLASS, max_txs)
        return picker.out

    def on_block_committed(
        self,
        included_hashes: Iterable[bytes],
        rejected_hashes: Iterable[bytes] = (),
        *,
        senders: Iterable[bytes] = (),
        included: Iterable[VerifiedTx] = (),
        result: BlockResult | None = None,
        result_height: int = -1,
    ) -> None:
        """Forget what a committed block included and re-check the senders it touched.

        ``rejected_hashes`` are transactions the block builder left out as not
        includable (expired, unpayable, ...); they are dropped too. ``senders``
        names further accounts whose nonce or balance the block may have
        changed (senders of transactions this node never saw, receivers);
        their queues are re-read from state as well. ``included``: the block's
        transactions themselves, each forgotten like an included hash and its
        sender re-read like one in ``senders`` (one pass over the block, where
        a caller with the transactions would make two more for their hashes and
        senders). The work is proportional to the transactions and senders
        touched plus those expiring, never to the whole pool. Call it once
        ``state`` and ``height_fn`` show the block.

        ``result``: the execution of the block at ``result_height`` (the one
        committed). While no later block has committed, the accounts it wrote are
        taken from its records as written, not read from state and decoded again.
        """
        with self._stages.timed("after_commit"):
            self._on_block_committed(
                included_hashes, rejected_hashes, senders, included, result, result_height
            )

    def _on_block_committed(
        self,
        included_hashes: Iterable[bytes],
        rejected_hashes: Iterable[bytes],
        senders: Iterable[bytes],
        included: Iterable[VerifiedTx],
        result: BlockResult | None,
        result_height: int,
    ) -> None:
        # Each sender to read again, with its shard where an entry of its named it (-1:
        # not known yet).
        touched: dict[bytes, int] = dict.fromkeys(senders, -1)
        by_hash = self._by_hash
        for vtx in included:
            e = by_hash.get(vtx.hash)
            if e is not None:
                touched[e.sender] = e.shard
                self._remove(e, used=True)
            else:
                touched.setdefault(vtx.sender_address, -1)
        for used, hashes in ((True, included_hashes), (False, rejected_hashes)):
            for h in hashes:
                e = by_hash.get(h)
                if e is not None:
                    touched[e.sender] = e.shard
                    self._remove(e, used=used)
        # Read before the accounts: the state is at least as new as this height (a
        # commit writes the state before it moves the height).
        height = self._height_fn()
        # The block's own records are the state only at its height: past it, a later
        # block may have changed them (reading state then gives the newer account).
        records = result.records if result is not None and result_height == height else {}
        shards = self._shards
        for sender, shard_i in touched.items():
            if shard_i < 0:
                shard_i = self.shard_of(sender)
            acct = shards[shard_i].accounts.get(sender)
            if acct is not None:
                a = records.get(ACCOUNT_PREFIX + sender)
                if type(a) is not Account:
                    # Not written by the block (or written as bytes, or deleted).
                    a = get_account(self._state, sender)
                # Admission at this height takes it from here (``_Account.read``).
                acct.read, acct.read_height = a, height
                self._refresh(shard_i, acct, a.nonce, a.balance)
        self._expire(self._height_fn() + 1)
        self._evict_excess()
        # Every gap still open is old now: it leaves the per-block gap budget.
        self._young_from = next(self._seq)
        self._young = self._young_bytes = 0

    def _expire(self, next_height: int) -> None:
        """Drop transactions that can no longer be included at ``next_height`` or later.

        A later nonce of the same sender stays: the sender may still fill the
        slot with a fresh transaction.
        """
        heights = self._expiry_heights
        while heights and heights[0] < next_height:
            # Absent when its bucket emptied before its height (``_remove``).
            for h in self._expiry.pop(heapq.heappop(heights), ()):
                self._remove(self._by_hash[h])

    def __repr__(self) -> str:
        return f"Mempool(txs={len(self)}, shards={self.shard_sizes()})"
