"""State views and the journaled write overlay that block execution runs on.

``Overlay`` keeps the block's writes in one dict and a journal of undo entries
(py-evm style): ``snapshot`` is the journal length, ``revert`` pops entries back
to it. Events ride in the same journal so a revert drops the events of the
work it undoes. They are kept encoded, as receipts store them.

Decoded objects (accounts, above all) can be kept in the overlay as objects via
``get_obj``/``set_obj``: a block that touches one account a thousand times
decodes it once and encodes it once, in ``changes()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from core.codec import Wire
from core.errors import DecodeError, NodeFault
from storage.state_tree import MAX_KEY_SIZE, MAX_VALUE_SIZE

if TYPE_CHECKING:
    from vm.receipts import Event

W = TypeVar("W", bound=Wire)

# Marks "no entry" in the write dict and the read cache (None means deleted).
_MISSING: Any = object()
# Journal entry for one emitted event.
_EVENT: Any = object()


class StateView(Protocol):
    """Read access to state: the committed tree, a snapshot of it, or an overlay."""

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key``, or None when absent."""
        ...


def read_obj(state: StateView, key: bytes, cls: type[W]) -> W | None:
    """The record under ``key`` as ``cls`` (decoded once per block on an overlay), or None."""
    if isinstance(state, Overlay):
        return state.get_obj(key, cls)
    raw = state.get(key)
    return None if raw is None else cls.decode(raw)


class Overlay:
    """Writes over a read-only base, with journaled snapshot and revert.

    Values in the write dict are ``bytes``, a ``Wire`` object (encoded lazily)
    or None for a deletion. A snapshot id stays valid until the overlay is
    reverted to an earlier one.
    """

    __slots__ = ("_base", "_values", "_cache", "_journal", "_events", "_encoded")

    def __init__(self, base: StateView, known: Mapping[bytes, Wire] | None = None) -> None:
        """``known``: records ``base`` holds, as objects (the previous block's writes,
        ``net_writes``), taken as read instead of decoding them again. Each must be
        exactly what ``base`` holds under its key."""
        self._base = base
        self._values: dict[bytes, Any] = {}
        # Decoded base values (or None when absent), so a key read as an object
        # is decoded once per block. Base never changes, so no journaling.
        self._cache: dict[bytes, Any] = {} if known is None else dict(known)
        self._journal: list[Any] = []
        self._events: list[bytes] = []
        # Encodings made by ``check_writes``, by key, with the object they encode:
        # ``changes()`` reuses one while the key still holds that very object.
        self._encoded: dict[bytes, tuple[Any, bytes]] = {}

    # --- reads ---

    def get(self, key: bytes) -> bytes | None:
        v = self._values.get(key, _MISSING)
        if v is _MISSING:
            return self._base.get(key)
        if v is None or type(v) is bytes:
            return v
        encoded: bytes = v.encode()
        return encoded

    def get_obj(self, key: bytes, cls: type[W]) -> W | None:
        """The value under ``key`` decoded as ``cls`` (cached), or None when absent."""
        v = self._values.get(key, _MISSING)
        if v is _MISSING:
            v = self._cache.get(key, _MISSING)
            if v is _MISSING:
                raw = self._base.get(key)
                v = self._cache[key] = None if raw is None else cls.decode(raw)
        if v is None or type(v) is cls:
            return v
        # Written as raw bytes or as another class: go through the encoding.
        return cls.decode(v if type(v) is bytes else v.encode())

    # --- writes ---

    # The three writers repeat the journal step inline: they run several times
    # per transaction and a shared helper would add a call to each.

    def set(self, key: bytes, value: bytes) -> None:
        if type(value) is not bytes:
            raise TypeError(f"state values are bytes, got {type(value).__name__}")
        values = self._values
        self._journal.append((key, values.get(key, _MISSING)))
        values[key] = value

    def set_obj(self, key: bytes, obj: Wire) -> None:
        """Store ``obj``; it is encoded only when read as bytes or in ``changes()``."""
        values = self._values
        self._journal.append((key, values.get(key, _MISSING)))
        values[key] = obj

    def delete(self, key: bytes) -> None:
        values = self._values
        self._journal.append((key, values.get(key, _MISSING)))
        values[key] = None

    # --- events ---

    def emit(self, event: Event | bytes) -> None:
        """Emit ``event``, or an event given encoded (``Event.encode``'s bytes, as
        ``apps.commerce.events.make`` builds them without the objects)."""
        self._events.append(event if isinstance(event, bytes) else event.encode())
        self._journal.append(_EVENT)

    def take_events(self) -> list[bytes]:
        """Hand over the events emitted so far, encoded; a later revert can no longer
        drop them."""
        events = self._events
        self._events = []
        return events

    # --- snapshots ---

    def snapshot(self) -> int:
        return len(self._journal)

    def written(self) -> int:
        """How many keys hold a write (a reverted first write counts until its revert)."""
        return len(self._values)

    def forget_undo(self) -> None:
        """Drop the undo journal: the writes so far stay, no snapshot taken before can
        be reverted to. The executor calls it between transactions (a transaction
        reverts only to its own snapshot), so a block's undo entries do not pile up
        for the cyclic GC to scan."""
        self._journal.clear()

    def revert(self, snapshot: int) -> None:
        """Undo every write and event since ``snapshot``."""
        journal = self._journal
        if not 0 <= snapshot <= len(journal):
            raise ValueError(f"snapshot {snapshot} is outside the journal (0..{len(journal)})")
        values = self._values
        events = self._events
        while len(journal) > snapshot:
            entry = journal.pop()
            if entry is _EVENT:
                # Events are always the newest suffix of what was emitted; taken
                # ones are gone already, so there may be nothing left to drop.
                if events:
                    events.pop()
                continue
            key, prev = entry
            if prev is _MISSING:
                del values[key]
            else:
                values[key] = prev

    # --- checks ---

    def check_writes(self, snapshot: int) -> None:
        """Check every write since ``snapshot`` as the state tree will store it: key and
        encoded value within the tree's limits, and an encoding that decodes back.

        Raises ``DecodeError`` naming the key; ``NodeFault`` naming the key and the class
        when a value is no ``Wire`` record, or nests one that is not where a record is
        expected (a handler's bug, not the transaction's). The executor calls it at the end of each
        transaction, inside its failure boundary, so a record no node could store or read
        fails that transaction instead of the block that carries it.

        Every write before ``snapshot`` must have been checked by an earlier call (or be
        of a ``WRITE_CHECKED`` class): a record is checked only in the fields that differ
        from what its key held at ``snapshot`` (or in base, decoded), which passed then.
        The executor checks the begin-block hooks' writes and then each transaction's.
        """
        journal = self._journal
        if snapshot >= len(journal):
            return
        values = self._values
        cache = self._cache
        for entry in journal[snapshot:]:
            if entry is _EVENT:
                continue
            key, old = entry
            if len(key) > MAX_KEY_SIZE:
                raise DecodeError(f"state key is {len(key)} bytes, at most {MAX_KEY_SIZE}")
            v = values[key]
            if v is None:
                continue
            if type(v) is bytes:
                if len(v) > MAX_VALUE_SIZE:
                    raise DecodeError(
                        f"state value at {key.hex()} is {len(v)} bytes, at most {MAX_VALUE_SIZE}"
                    )
            else:
                try:
                    # Of the type: a class written by mistake is refused with the rest.
                    checked = type(v).WRITE_CHECKED
                except AttributeError:
                    # A handler's bug (it wrote something that is no state record): named
                    # here, not left to raise bare in ``changes()`` or deep in the commit.
                    raise NodeFault(
                        f"state value at {key.hex()} is a {type(v).__name__}, not a Wire record"
                    ) from None
                if checked:
                    continue
                # For the key's first write since ``snapshot``, ``old`` is what it held
                # then (checked), or absent: then what base holds, if it was read. A later
                # write's ``old`` is unchecked, but the first one has looked at ``v``.
                if old is _MISSING:
                    old = cache.get(key)
                if old is v:
                    continue
                # Most records are shown storable by their fields (types and ranges, and
                # a largest encoding within the cap): nothing is encoded per write, only
                # once per block in ``changes()``. The rest are encoded and checked.
                if not v.fits(MAX_VALUE_SIZE, old):
                    try:
                        raw = v.checked_encoding(MAX_VALUE_SIZE)
                    except DecodeError as exc:
                        raise DecodeError(f"state value at {key.hex()}: {exc}") from exc
                    except Exception as exc:
                        # Out of range or of a wrong plain type is a DecodeError above;
                        # this is a record nesting what is no record (a handler's bug).
                        raise NodeFault(
                            f"state value at {key.hex()} ({type(v).__name__}) does not "
                            f"encode: {type(exc).__name__}: {exc}"
                        ) from exc
                    self._encoded[key] = (v, raw)

    # --- results ---

    def changes(self) -> dict[bytes, bytes | None]:
        """Net writes against the base, encoded; None marks a deletion."""
        return self.net_writes()[0]

    def net_writes(self) -> tuple[dict[bytes, bytes | None], dict[bytes, Wire]]:
        """``changes()``, and the records among them as the objects written: a reader
        of the new state (the mempool, after a commit) takes those instead of
        decoding what was just encoded."""
        encoded = self._encoded
        out: dict[bytes, bytes | None] = {}
        records: dict[bytes, Wire] = {}
        for k, v in self._values.items():
            if v is None or type(v) is bytes:
                out[k] = v
            else:
                records[k] = v
                done = encoded.get(k)
                out[k] = done[1] if done is not None and done[0] is v else v.encode()
        return out, records


class TracedOverlay(Overlay):
    """An ``Overlay`` that records the key of every read and write, for checking what a
    transaction touched against its type's declaration (``Executor(check_declarations=True)``).

    Slower than ``Overlay`` by a call per access: tests and debugging only.
    """

    __slots__ = ("reads", "writes")

    def __init__(self, base: StateView, known: Mapping[bytes, Wire] | None = None) -> None:
        super().__init__(base, known)
        self.reads: list[bytes] = []
        self.writes: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        self.reads.append(key)
        return super().get(key)

    def get_obj(self, key: bytes, cls: type[W]) -> W | None:
        self.reads.append(key)
        return super().get_obj(key, cls)

    def set(self, key: bytes, value: bytes) -> None:
        self.writes.append(key)
        super().set(key, value)

    def set_obj(self, key: bytes, obj: Wire) -> None:
        self.writes.append(key)
        super().set_obj(key, obj)

    def delete(self, key: bytes) -> None:
        self.writes.append(key)
        super().delete(key)
