import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vm import Account, Event, Overlay

KEYS = [b"a", b"b", b"c", b"d"]
BASE = {b"a": b"base-a", b"b": Account(7, 1).encode()}


class CountingDict(dict):
    def __init__(self, *args):
        super().__init__(*args)
        self.reads = 0

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_reads_fall_through_and_writes_stay_in_the_overlay():
    base = dict(BASE)
    o = Overlay(base)
    assert o.get(b"a") == b"base-a"
    o.set(b"a", b"new")
    o.delete(b"b")
    o.set(b"c", b"c1")
    assert (o.get(b"a"), o.get(b"b"), o.get(b"c"), o.get(b"d")) == (b"new", None, b"c1", None)
    assert o.changes() == {b"a": b"new", b"b": None, b"c": b"c1"}
    assert base == BASE


def test_nested_snapshots_revert_writes_and_events():
    o = Overlay(dict(BASE))
    o.set(b"a", b"1")
    o.emit(Event.of("first"))
    s1 = o.snapshot()
    o.set(b"a", b"2")
    o.delete(b"b")
    o.emit(Event.of("second"))
    s2 = o.snapshot()
    o.set(b"c", b"3")
    o.emit(Event.of("third"))
    o.revert(s2)
    assert o.get(b"c") is None and o.get(b"a") == b"2"
    o.revert(s1)
    assert o.changes() == {b"a": b"1"}
    assert o.take_events() == [Event.of("first").encode()]
    assert o.take_events() == []


def test_revert_cannot_drop_events_already_taken():
    o = Overlay({})
    s = o.snapshot()
    o.emit(Event.of("taken").encode())
    assert [Event.decode(e).kind for e in o.take_events()] == ["taken"]
    o.emit(Event.of("kept"))
    o.revert(s)
    assert o.take_events() == []


def test_revert_to_an_unknown_snapshot_is_refused():
    o = Overlay({})
    o.set(b"a", b"1")
    with pytest.raises(ValueError, match="outside the journal"):
        o.revert(5)
    with pytest.raises(ValueError):
        o.revert(-1)


def test_forget_undo_keeps_writes_and_starts_a_new_history():
    o = Overlay(dict(BASE))
    old = o.snapshot()
    o.set(b"a", b"1")
    o.set(b"a", b"2")
    o.forget_undo()
    assert o.get(b"a") == b"2"
    # Writes before the cut can no longer be undone; later ones can.
    s = o.snapshot()
    assert s == old
    o.set(b"c", b"3")
    o.revert(s)
    assert o.changes() == {b"a": b"2"}
    o.set(b"d", b"4")
    with pytest.raises(ValueError, match="outside the journal"):
        o.revert(old + 2)


def test_set_refuses_non_bytes():
    with pytest.raises(TypeError, match="bytes"):
        Overlay({}).set(b"a", "text")  # type: ignore[arg-type]  # deliberately the wrong type


def test_objects_are_decoded_once_and_encoded_in_changes():
    base = CountingDict(BASE)
    o = Overlay(base)
    assert o.get_obj(b"b", Account) == Account(7, 1)
    assert o.get_obj(b"b", Account) is o.get_obj(b"b", Account)
    assert o.get_obj(b"zz", Account) is None
    o.get_obj(b"zz", Account)
    assert base.reads == 2
    o.set_obj(b"b", Account(8, 2))
    assert o.get(b"b") == Account(8, 2).encode()
    assert o.changes() == {b"b": Account(8, 2).encode()}


def test_get_obj_decodes_raw_writes():
    o = Overlay({})
    o.set(b"k", Account(3, 4).encode())
    assert o.get_obj(b"k", Account) == Account(3, 4)


def test_reverting_an_object_write_restores_the_base_object():
    o = Overlay(dict(BASE))
    s = o.snapshot()
    o.set_obj(b"b", Account(0, 9))
    o.revert(s)
    assert o.get_obj(b"b", Account) == Account(7, 1)
    assert o.changes() == {}


values = st.binary(max_size=4)
accounts = st.builds(Account, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))


class OverlayMatchesDict(RuleBasedStateMachine):
    """The journaled overlay against the plain way: copy the dict at each snapshot."""

    def __init__(self):
        super().__init__()
        self.overlay = Overlay(dict(BASE))
        self.ref = dict(BASE)
        self.events: list[str] = []
        self.taken: list[str] = []
        # (snapshot id, dict copy, held events) per open snapshot, oldest first.
        self.stack: list[tuple[int, dict, list[str]]] = []

    @rule(key=st.sampled_from(KEYS), value=values)
    def set(self, key, value):
        self.overlay.set(key, value)
        self.ref[key] = value

    @rule(key=st.sampled_from(KEYS), account=accounts)
    def set_obj(self, key, account):
        self.overlay.set_obj(key, account)
        self.ref[key] = account.encode()

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key):
        self.overlay.delete(key)
        self.ref.pop(key, None)

    @rule(kind=st.sampled_from(["x", "y", "z"]))
    def emit(self, kind):
        self.overlay.emit(Event.of(kind))
        self.events.append(kind)

    @rule()
    def take_events(self):
        got = [Event.decode(e).kind for e in self.overlay.take_events()]
        assert got == self.events
        self.taken += got
        self.events = []

    @rule()
    def snapshot(self):
        self.stack.append((self.overlay.snapshot(), dict(self.ref), list(self.taken + self.events)))

    @precondition(lambda self: self.stack)
    @rule(data=st.data())
    def revert(self, data):
        i = data.draw(st.integers(0, len(self.stack) - 1))
        snap, ref, emitted = self.stack[i]
        del self.stack[i:]
        self.overlay.revert(snap)
        self.ref = ref
        # Events taken since the snapshot stay taken; the rest of the newer ones go.
        self.events = emitted[len(self.taken) :] if len(emitted) > len(self.taken) else []

    @rule(key=st.sampled_from(KEYS))
    def read_obj(self, key):
        raw = self.ref.get(key)
        try:
            expected = None if raw is None else Account.decode(raw)
        except Exception:
            return
        assert self.overlay.get_obj(key, Account) == expected

    @invariant()
    def same_view(self):
        for key in KEYS:
            assert self.overlay.get(key) == self.ref.get(key)

    @invariant()
    def changes_rebuild_the_reference(self):
        rebuilt = dict(BASE)
        for k, v in self.overlay.changes().items():
            if v is None:
                rebuilt.pop(k, None)
            else:
                rebuilt[k] = v
        assert rebuilt == self.ref


TestOverlayMatchesDict = OverlayMatchesDict.TestCase
TestOverlayMatchesDict.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
