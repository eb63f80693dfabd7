"""The deadline queues: FIFO per kind, runs of consecutive orders, per-block budget."""

from hypothesis import given
from hypothesis import strategies as st

from apps.commerce.deadlines import pending, pop_due, schedule
from apps.commerce.keys import CommercePrefix
from apps.commerce.model import DeadlineKind
from vm import Overlay

SHIP = DeadlineKind.SHIP


def test_consecutive_orders_due_together_share_one_entry():
    state = Overlay({})
    for order_id in (1, 2, 3):
        schedule(state, SHIP, 100, order_id)
    schedule(state, SHIP, 100, 5)  # a gap: new entry
    schedule(state, SHIP, 200, 6)  # another due time: new entry
    entries = [k for k in state.changes() if k[0] == CommercePrefix.DEADLINE_ENTRY]
    assert len(entries) == 3
    assert pending(state, SHIP) == [(100, 1), (100, 2), (100, 3), (100, 5), (200, 6)]


def test_pop_respects_due_time_and_budget():
    state = Overlay({})
    for order_id in range(1, 6):
        schedule(state, SHIP, 100, order_id)
    schedule(state, SHIP, 200, 6)
    fired = []
    assert pop_due(state, SHIP, 99, 10, lambda due, oid: fired.append(oid) or 1) == 0
    assert pop_due(state, SHIP, 150, 2, lambda due, oid: fired.append(oid) or 1) == 2
    assert pop_due(state, SHIP, 150, 10, lambda due, oid: fired.append(oid) or 1) == 3
    assert fired == [1, 2, 3, 4, 5]
    assert pending(state, SHIP) == [(200, 6)]
    assert pop_due(state, SHIP, 200, 10, lambda due, oid: fired.append(oid) or 1) == 1
    # Empty queues leave nothing in state.
    assert {k: v for k, v in state.changes().items() if v is not None} == {}


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), max_size=30),
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 5)), max_size=10),
)
def test_every_deadline_fires_once_in_order(blocks, pops):
    """Blocks schedule orders at increasing times; pops take what is due, in order."""
    state = Overlay({})
    expected = []
    order_id, now = 0, 0
    for gap, n in blocks:
        now += gap
        for _ in range(n):
            order_id += 1
            schedule(state, SHIP, now + 10, order_id)
            expected.append((now + 10, order_id))
    fired = []
    t = 0
    for advance, budget in pops:
        t += advance
        pop_due(state, SHIP, t, budget, lambda due, oid: fired.append((due, oid)) or 1)
    pop_due(state, SHIP, 10**9, 10**9, lambda due, oid: fired.append((due, oid)) or 1)
    assert fired == expected
