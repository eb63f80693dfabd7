"""Order deadline queues: one FIFO per deadline kind, found without a range scan.

A deadline is always ``block time + window`` with the window a genesis
parameter per kind, so within one kind deadlines are created in order of their
due time: a FIFO per kind is sorted by construction. The begin-block hook pops
entries from the head while they are due. An order that moved on before its
deadline leaves a stale entry; it is recognised (the order is no longer in the
state the entry was for, or has another deadline) and dropped when popped.

Keys: ``COMMERCE_DEADLINE_QUEUE || kind`` -> ``QueueMeta(head, tail)`` and
``COMMERCE_DEADLINE_ENTRY || kind || seq`` -> ``Deadline(due_ms, first_order,
count)``: a run of consecutive order ids due together (a block's orders share
their due time and mostly have consecutive ids, so one entry, one state key,
usually serves them all). An empty queue is stored as absence.
"""

from __future__ import annotations

from collections.abc import Callable

from apps.commerce import keys
from apps.commerce.model import Deadline, DeadlineKind, QueueMeta
from apps.commerce.store import load
from core.codec import constructor
from core.errors import NodeFault
from vm.state import Overlay, StateView

_EMPTY = QueueMeta(0, 0)
# Every order, shipment and settlement schedules a deadline: built slot by slot.
_new_deadline = constructor(Deadline)
_new_meta = constructor(QueueMeta)


def schedule(state: Overlay, kind: DeadlineKind, due_ms: int, order_id: int) -> None:
    """Queue ``order_id``'s deadline of ``kind`` (extending the tail run when it can)."""
    qkey = keys.deadline_queue_key(kind)
    meta = load(state, qkey, QueueMeta) or _EMPTY
    if meta.tail > meta.head:
        last_key = keys.deadline_entry_key(kind, meta.tail - 1)
        last = load(state, last_key, Deadline)
        if last is not None and last.due_ms == due_ms and last.first_order + last.count == order_id:
            state.set_obj(last_key, _new_deadline(due_ms, last.first_order, last.count + 1))
            return
    state.set_obj(keys.deadline_entry_key(kind, meta.tail), _new_deadline(due_ms, order_id, 1))
    state.set_obj(qkey, _new_meta(meta.head, meta.tail + 1))


def pop_due(
    state: Overlay,
    kind: DeadlineKind,
    now_ms: int,
    budget: int,
    fire: Callable[[int, int], int],
) -> int:
    """Take the deadlines of ``kind`` due at ``now_ms`` from the queue, calling
    ``fire(due_ms, order_id)`` for each, while the work done is under ``budget``;
    returns the work done. ``fire`` returns the work of its deadline (1, and 1 more per
    item a settlement hands over or unlocks: a block's deadlines are bounded by what
    they do, not by how many they are), so the last one may overrun the budget by its
    own work. A stale entry costs 1 too (its read).
    """
    qkey = keys.deadline_queue_key(kind)
    meta = load(state, qkey, QueueMeta)
    if meta is None:
        return 0
    head = meta.head
    spent = 0
    while head < meta.tail and spent < budget:
        ekey = keys.deadline_entry_key(kind, head)
        entry = load(state, ekey, Deadline)
        if entry is None:
            raise NodeFault(f"deadline queue {kind.name} lost entry {head}")
        if entry.due_ms > now_ms:
            break
        n = 0
        while n < entry.count and spent < budget:
            spent += fire(entry.due_ms, entry.first_order + n)
            n += 1
        if n < entry.count:
            # Out of budget: the rest of the run waits for the next block.
            state.set_obj(ekey, _new_deadline(entry.due_ms, entry.first_order + n, entry.count - n))
            break
        state.delete(ekey)
        head += 1
    if head != meta.head:
        if head == meta.tail:
            state.delete(qkey)
        else:
            state.set_obj(qkey, _new_meta(head, meta.tail))
    return spent


def pending(state: StateView, kind: DeadlineKind) -> list[tuple[int, int]]:
    """Every (due_ms, order_id) still queued for ``kind`` (stale ones included)."""
    meta = load(state, keys.deadline_queue_key(kind), QueueMeta)
    if meta is None:
        return []
    out: list[tuple[int, int]] = []
    for seq in range(meta.head, meta.tail):
        entry = load(state, keys.deadline_entry_key(kind, seq), Deadline)
        if entry is not None:
            out.extend((entry.due_ms, entry.first_order + i) for i in range(entry.count))
    return out
