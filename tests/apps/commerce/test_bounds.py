"""Hostile use of the deal clock: a merchant that grows a deal-end bucket.

A bucket used to keep the id of every deal ever opened in its minute, closed or
not, and nothing bounded a merchant's deals across sessions: one merchant opening
and closing deals grew one state value until its write failed (256 KiB, ~52k ids),
and every write re-encoded it (6 ms at 40k ids, for one minimum fee). Now buckets
hold open deals only, a merchant holds at most ``max_open_deals_per_merchant``, and a
bucket at ``max_deals_per_bucket`` refuses with ``deal_bucket_full``.
"""

from dataclasses import replace

from apps.commerce import keys, sessions
from apps.commerce import payloads as tx
from apps.commerce.model import DealBucket
from apps.commerce.views import get_listing
from tests.apps.commerce.helpers import MIN, PRICE, TEST_PARAMS, Chain, new_chain, open_shop
from vm import TRANSFER, Transfer

END = 30 * MIN


def bucket_ids(chain: Chain, end_ms: int) -> tuple[int, ...]:
    """The deal ids of the bucket of ``end_ms``, read from committed state."""
    raw = chain.state.get(keys.deal_bucket_key(end_ms // TEST_PARAMS.deal_bucket_ms))
    return () if raw is None else DealBucket.decode(raw).deal_ids


def shop_of(chain: Chain, name: str, n: int) -> None:
    """Merchant ``name`` with listing ``n`` and session ``n`` (listing pinned)."""
    chain.ok(name, tx.REGISTER_MERCHANT, tx.RegisterMerchant(name, "", b"\x01" * 32))
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr(name), True))
    chain.ok(name, tx.CREATE_LISTING, tx.CreateListing("Tea", "", PRICE, 1_000, b""))
    chain.ok(name, tx.OPEN_SESSION, tx.OpenSession(chain.addr("host"), 0, "live"))
    chain.ok(name, tx.PIN, tx.PinListing(n, n))


def test_a_merchant_cycling_deals_cannot_grow_a_bucket():
    chain = new_chain()
    open_shop(chain, stock=1_000)
    end = chain.time_ms + END
    for block in range(4):
        txs = []
        for i in range(25):
            deal_id = block * 25 + i + 1
            start = chain.time_ms
            txs.append(
                chain.sign("merchant", tx.OPEN_DEAL, tx.OpenDeal(1, 1, 10, 5, 1, start, end))
            )
            txs.append(chain.sign("merchant", tx.CLOSE_DEAL, tx.DealRef(deal_id)))
        honest = chain.sign("alice", TRANSFER, Transfer(chain.addr("bob"), 5))
        result = chain.block(*txs, honest)
        assert [r.code for r in result.receipts] == ["ok"] * 51
        # No write of the attack is bigger than one deal's records.
        assert max(len(v) for v in result.changes.values() if v is not None) < 1024
    # 100 deals opened and closed in one minute's bucket: it holds none of them.
    assert bucket_ids(chain, end) == ()
    assert chain.balance("bob") == 10**9 + 4 * 5
    listing = get_listing(chain.state, 1)
    assert (listing.available, listing.reserved, listing.open_deals) == (1_000, 0, 0)


def test_a_deal_bucket_at_its_cap_refuses_with_its_own_code():
    params = replace(TEST_PARAMS, max_open_deals_per_merchant=4, max_deals_per_bucket=8)
    chain = new_chain(params=params)
    for n, name in enumerate(("merchant", "bob", "carol"), start=1):
        shop_of(chain, name, n)
    end = chain.time_ms + END
    start = chain.time_ms

    def deal(n: int, end_ms: int = end) -> tx.OpenDeal:
        return tx.OpenDeal(n, n, 10, 2, 1, start, end_ms)

    # One merchant holds at most 4 open deals, however many sessions it has.
    txs = [chain.sign("merchant", tx.OPEN_DEAL, deal(1)) for _ in range(5)]
    codes = [r.code for r in chain.block(*txs).receipts]
    assert codes == ["ok"] * 4 + ["merchant_deal_limit"]
    # A second merchant fills the bucket (8); a third is refused in that minute, while
    # an honest transfer in the same block commits.
    txs = [chain.sign("bob", tx.OPEN_DEAL, deal(2)) for _ in range(4)]
    txs.append(chain.sign("carol", tx.OPEN_DEAL, deal(3)))
    txs.append(chain.sign("alice", TRANSFER, Transfer(chain.addr("stranger"), 3)))
    result = chain.block(*txs)
    assert [r.code for r in result.receipts] == ["ok"] * 4 + ["deal_bucket_full", "ok"]
    assert result.receipts[4].message.startswith("8 open deals end in the minute of")
    assert chain.balance("stranger") == 10**9 + 3
    assert len(bucket_ids(chain, end)) == 8
    # Another minute has room, and closing a deal frees a place in this one.
    chain.ok("carol", tx.OPEN_DEAL, deal(3, end + MIN))
    chain.ok("merchant", tx.CLOSE_DEAL, tx.DealRef(1))
    chain.ok("carol", tx.OPEN_DEAL, deal(3))
    assert len(bucket_ids(chain, end)) == 8
    # At their end every deal closes and its bucket goes; so does the clock.
    result = chain.wait(END + 2 * MIN)
    closed = [e for e in result.begin_events if e.kind == "commerce.deal_closed"]
    assert len(closed) == 9
    assert bucket_ids(chain, end) == () and bucket_ids(chain, end + MIN) == ()
    assert keys.DEAL_CLOCK_KEY not in chain.state
    chain.ok("alice", TRANSFER, Transfer(chain.addr("stranger"), 3))


def test_after_a_long_pause_deals_close_a_budget_per_block(monkeypatch):
    # A halted chain comes back with every bucket of the deal window due at once: the
    # hook closes what its budget allows per block, the rest in the next blocks, and a
    # deal past its end takes no order meanwhile.
    monkeypatch.setattr(sessions, "DEAL_ENDS_PER_BLOCK", 5)
    chain = new_chain(params=replace(TEST_PARAMS, max_open_deals_per_merchant=8))
    shop = open_shop(chain, stock=1_000)
    shop_of(chain, "bob", 2)
    start = chain.time_ms
    txs = []
    for n, name in enumerate((shop.merchant, "bob"), start=1):
        for minute in range(6):
            deal = tx.OpenDeal(n, n, 10, 2, 1, start, start + END + minute * MIN)
            txs.append(chain.sign(name, tx.OPEN_DEAL, deal))
    assert [r.code for r in chain.block(*txs).receipts] == ["ok"] * 12

    closed_per_block: list[int] = []
    refusals: list[str] = []
    advance = END + 60 * MIN
    while keys.DEAL_CLOCK_KEY in chain.state:
        # Every deal is past its end, closed or not yet: none takes an order. The last
        # of the merchant's (deal 6) closes in the last of these blocks.
        order = chain.sign("alice", tx.PLACE_ORDER, shop.order("alice", deal=6, price=10))
        result = chain.block(order, advance_ms=advance)
        advance = 1_000
        closed_per_block.append(sum(e.kind == "commerce.deal_closed" for e in result.begin_events))
        refusals.append(result.receipts[0].code)
    # Six buckets of two deals each, at most five reads (buckets and deals) a block.
    assert sum(closed_per_block) == 12
    assert max(closed_per_block) <= 4 and len(closed_per_block) >= 3
    assert refusals[0] == "deal_ended" and set(refusals) <= {"deal_ended", "deal_closed"}
    assert get_listing(chain.state, 1).open_deals == get_listing(chain.state, 2).open_deals == 0
