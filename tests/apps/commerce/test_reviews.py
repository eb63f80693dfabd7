"""Review rules: buyer of a settled order, once, editable until the merchant replies."""

from apps.commerce import payloads as tx
from apps.commerce.views import get_review, listing_view, merchant_view, order_view, reviews_for
from tests.apps.commerce.helpers import TEST_PARAMS, new_chain, open_shop


def settled(chain, shop, buyer):
    chain.ok(buyer, tx.PLACE_ORDER, shop.order(buyer))
    order_id = int(chain.vectors[-1].receipts[0].events[0].get("order"))
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(order_id))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(order_id, b"\x01" * 32, ()))
    chain.ok(buyer, tx.CONFIRM_DELIVERY, tx.OrderRef(order_id))
    return order_id


def test_review_rules():
    chain = new_chain()
    shop = open_shop(chain)
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))
    # Not settled yet.
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 5, "great"), "not_settled")
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 5, "great"), "not_settled")
    chain.ok("alice", tx.CONFIRM_DELIVERY, tx.OrderRef(1))

    chain.fails("bob", tx.REVIEW, tx.WriteReview(1, 5, "great"), "not_authorized")
    chain.fails("merchant", tx.REVIEW, tx.WriteReview(1, 5, "great"), "not_authorized")
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 0, ""), "invalid_rating")
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 6, ""), "invalid_rating")
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 5, "x" * 1025), "text_too_long")
    chain.fails("alice", tx.REVIEW, tx.WriteReview(2, 5, ""), "unknown_order")
    chain.fails("merchant", tx.REPLY_REVIEW, tx.ReplyReview(1, "thanks"), "unknown_review")

    chain.ok("alice", tx.REVIEW, tx.WriteReview(1, 2, "lid rattles"))
    assert merchant_view(chain.state, chain.addr("merchant")).rating_avg_x100 == 200
    # Editing replaces the rating in the aggregates (still one review).
    chain.ok("alice", tx.REVIEW, tx.WriteReview(1, 4, "lid rattles, but tea is great"))
    m = merchant_view(chain.state, chain.addr("merchant"))
    assert (m.rating_count, m.rating_sum) == (1, 4)
    assert get_review(chain.state, 1).edits == 1

    chain.fails("alice", tx.REPLY_REVIEW, tx.ReplyReview(1, "me too"), "not_authorized")
    chain.fails("merchant", tx.REPLY_REVIEW, tx.ReplyReview(1, "  "), "invalid_text")
    chain.ok("merchant", tx.REPLY_REVIEW, tx.ReplyReview(1, "a new lid is on its way"))
    chain.fails("merchant", tx.REPLY_REVIEW, tx.ReplyReview(1, "again"), "already_replied")
    # Replied: the review is final.
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 1, "changed my mind"), "review_locked")
    assert get_review(chain.state, 1).rating == 4
    assert order_view(chain.state, 1, chain.addr("alice")).reviewed


def test_aggregates_per_merchant_and_listing():
    chain = new_chain()
    shop = open_shop(chain)
    for buyer, rating in (("alice", 5), ("bob", 4), ("carol", 2)):
        oid = settled(chain, shop, buyer)
        chain.ok(buyer, tx.REVIEW, tx.WriteReview(oid, rating, f"from {buyer}"))
    m = merchant_view(chain.state, chain.addr("merchant"))
    assert (m.rating_count, m.rating_sum, m.rating_avg_x100) == (3, 11, 367)
    lst = listing_view(chain.state, 1)
    assert (lst.rating_count, lst.rating_sum) == (3, 11)
    by_merchant = reviews_for(chain.state, merchant=chain.addr("merchant"))
    assert [r.rating for r in by_merchant] == [2, 4, 5]  # newest first
    assert [r.order_id for r in reviews_for(chain.state, listing=1, limit=2)] == [3, 2]
    assert [r.order_id for r in reviews_for(chain.state, listing=1, before=2)] == [1]
    assert reviews_for(chain.state, listing=7) == []
    # Editing does not reorder.
    chain.ok("alice", tx.REVIEW, tx.WriteReview(1, 3, "edited"))
    assert [r.order_id for r in reviews_for(chain.state, listing=1)] == [3, 2, 1]


def test_settlement_does_not_wait_for_a_review():
    chain = new_chain()
    shop = open_shop(chain)
    merchant0 = chain.balance("merchant")
    settled(chain, shop, "alice")
    assert chain.balance("merchant") > merchant0


def test_a_review_counts_once_for_the_order_it_reviews_and_nothing_else():
    """The adversary's tries (review h_listed): a merchant buying from itself, reviewing
    a refunded or expired order, reviewing one order twice, or making a review count for
    another listing or merchant. A review names only its order: its merchant and listing
    are the order's."""
    chain = new_chain()
    shop = open_shop(chain)
    chain.fails("merchant", tx.PLACE_ORDER, shop.order("merchant"), "self_dealing")
    # A second merchant whose aggregates no review of the first may move.
    chain.ok("carol", tx.REGISTER_MERCHANT, tx.RegisterMerchant("Carol", "", shop.enc_public))
    chain.ok("registrar", tx.APPROVE_MERCHANT, tx.ApproveMerchant(chain.addr("carol"), True))
    chain.ok("carol", tx.CREATE_LISTING, tx.CreateListing("Cup", "", 10, 5, b""))  # listing 2
    # Refunded in full (after shipping too), or expired: not settled, never reviewed.
    chain.ok("alice", tx.PLACE_ORDER, shop.order("alice"))  # order 1
    chain.ok("merchant", tx.ACCEPT_ORDER, tx.OrderRef(1))
    chain.ok("merchant", tx.SHIP_ORDER, tx.ShipOrder(1, b"\x01" * 32, ()))
    chain.ok("merchant", tx.REFUND, tx.Refund(1, 1_000))
    chain.fails("alice", tx.REVIEW, tx.WriteReview(1, 5, ""), "not_settled")
    chain.ok("bob", tx.PLACE_ORDER, shop.order("bob"))  # order 2
    chain.block(advance_ms=TEST_PARAMS.accept_window_ms + 1)
    assert order_view(chain.state, 2, chain.addr("bob")).state == "expired"
    chain.fails("bob", tx.REVIEW, tx.WriteReview(2, 1, ""), "not_settled")
    # Settled: one review, edited as often as the buyer likes, counts once, for the
    # order's merchant and listing only.
    oid = settled(chain, shop, "alice")
    for rating in (5, 1, 5):
        chain.ok("alice", tx.REVIEW, tx.WriteReview(oid, rating, ""))
    m = merchant_view(chain.state, chain.addr("merchant"))
    assert (m.rating_count, m.rating_sum) == (1, 5)
    assert (listing_view(chain.state, 1).rating_count, listing_view(chain.state, 1).rating_sum) == (
        1,
        5,
    )
    assert merchant_view(chain.state, chain.addr("carol")).rating_count == 0
    assert listing_view(chain.state, 2).rating_count == 0
    assert reviews_for(chain.state, merchant=chain.addr("carol")) == []
