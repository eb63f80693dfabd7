"""The light client reads one epoch record per change of producers, not one per epoch,
and what it skips costs it nothing in soundness (Rule S, docs/state-sync.md): a node
that hides a change, skips one or serves a header naming another set is refused."""

from __future__ import annotations

import pytest

from cli.client import NodeError
from cli.light import certified_header, fetch_certified_header, producers_at
from consensus import make_commit
from core import BlockHeader, InvalidBlock, PrivateKey
from core.keystore import load_key
from genesis import Genesis, create_localnet
from tests.cli.light_chain import EPOCHS_OF_3, LAST, FakeChain, MemoryStore
from tests.cli.light_chain import height_of as _height_of


@pytest.fixture
def chain_parts(tmp_path) -> tuple[Genesis, PrivateKey]:
    layout = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3)
    return layout.genesis, load_key(layout.nodes[0].key_path, "")


def test_the_walk_reads_one_record_per_change_not_per_epoch(chain_parts):
    genesis, first = chain_parts
    chain = FakeChain(genesis, first)
    for target in (2, 5, LAST):
        chain.records.clear()
        producers = producers_at(chain, genesis, _height_of(target))
        assert producers == chain.set_of(target)
        # The changes up to the target, and the one past it if there is one.
        changes = chain.changes()
        assert (
            chain.records
            == [c for c in changes if c <= target] + ([c for c in changes if c > target][:1])
        )
        # The header of that height checks out with it.
        header = fetch_certified_header(chain, genesis, _height_of(target), producers)
        assert header.height == _height_of(target)
    # The changes read, a few records for twelve epochs.
    assert chain.changes() == [4, 8]

    # From a checkpoint: the highest change verified is kept, and the next walk starts
    # there (one answer: "no change since").
    store = MemoryStore()
    producers_at(chain, genesis, _height_of(LAST), store)
    assert [c.epoch for c in store.saved] == [4, 8]
    chain.records.clear()
    chain.paths.clear()
    assert producers_at(chain, genesis, _height_of(LAST), store) == chain.set_of(LAST)
    assert chain.records == [] and chain.paths == ["/v1/epochs/8/next-change"]


@pytest.mark.parametrize("lie", ["no-route", "proxy-404"])
def test_a_node_without_the_route_is_walked_epoch_by_epoch(chain_parts, lie):
    # Its 404 the node's JSON (not_found) or a proxy's page (http_error, 404): the
    # browser's walk took either for no route, the CLI failed on the proxy's.
    genesis, first = chain_parts
    chain = FakeChain(genesis, first, lie=lie)
    assert producers_at(chain, genesis, _height_of(LAST)) == chain.set_of(LAST)
    assert chain.records == list(range(1, LAST + 1))


@pytest.mark.parametrize("lie", ["hide", "skip", "other-set"])
def test_a_node_that_hides_or_skips_a_change_is_refused(chain_parts, lie):
    """Hidden: the set derived is an earlier one, and the header of the height asked
    names the true one: refused. A later change skipping one: its record's header names
    the set in between: refused. A record whose header names another set than the one
    that signed it: refused. Never a wrong set accepted for a header."""
    genesis, first = chain_parts
    chain = FakeChain(genesis, first, lie=lie)
    height = _height_of(LAST)
    with pytest.raises(InvalidBlock, match="names producer set"):
        producers = producers_at(chain, genesis, height)
        fetch_certified_header(chain, genesis, height, producers)


def test_a_header_signed_by_the_right_keys_naming_another_set_is_refused(chain_parts):
    genesis, first = chain_parts
    chain = FakeChain(genesis, first)
    # Epoch 1's header, certified by its producers (genesis's key), naming the set of
    # epoch 4: under Rule S that set would be taken for a later height.
    _, header, commit = chain.header(_height_of(1), {b"\x01x": b"y"}, chain.set_of(4))
    with pytest.raises(InvalidBlock, match="names producer set"):
        certified_header(genesis, _height_of(1), header, commit, chain.set_of(1))


class Hostile(FakeChain):
    """Answers the next-change route with ``answer(epoch, chain)``: a document, or None
    for "no change"."""

    def __init__(self, genesis: Genesis, first: PrivateKey, answer) -> None:
        super().__init__(genesis, first)
        self.answer = answer

    def get(self, path: str) -> dict:
        parts = path.split("/")
        if len(parts) == 5:
            doc = self.answer(int(parts[3]), self)
            if doc is None:
                raise NodeError("no_set_change", "none", 404)
            return doc
        return super().get(path)


def test_a_skipped_excursion_a_b_a_is_true_or_refused_never_a_wrong_set(chain_parts):
    """Sets A (0-3), B (4-7), A (8-9), C (10 on). A node that answers the change at 10
    from epoch 0 (hiding B and its end) gives a record whose header names A, signed by
    A: true, and C is epoch 10's set. A height inside B is then checked with A: refused."""
    genesis, first = chain_parts

    def skip_excursion(epoch: int, chain: FakeChain) -> dict | None:
        return chain.record(10) if epoch < 10 else None

    chain = Hostile(genesis, first, skip_excursion)
    chain.keys.update({8: chain.keys[0], 9: chain.keys[0]})
    assert chain.changes() == [4, 8, 10]
    assert chain.set_of(8) == chain.set_of(0) != chain.set_of(10)
    producers = producers_at(chain, genesis, _height_of(LAST))
    assert producers == chain.set_of(LAST)
    fetch_certified_header(chain, genesis, _height_of(LAST), producers)
    producers = producers_at(chain, genesis, _height_of(5))
    with pytest.raises(InvalidBlock, match="names producer set"):
        fetch_certified_header(chain, genesis, _height_of(5), producers)


def _certified_by_b(epoch: int, chain: FakeChain) -> dict:
    """Epoch 4's true record (its header names A) with a certificate of that very
    header by B's keys, epoch 4's producers, not the boundary's."""
    doc = chain.record(4)
    header = BlockHeader.decode(bytes.fromhex(doc["header"]))
    signers = sorted(chain.keys[4], key=lambda k: k.public_key)
    commit = make_commit(signers, chain.genesis.chain_id, header.height, 0, header.hash)
    return {**doc, "commit": commit.encode().hex()}


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        # Not later than the epoch asked from: a walk that never ends, or goes back.
        (lambda epoch, chain: {**chain.record(4), "epoch": epoch}, "not an integer in 1"),
        (
            lambda epoch, chain: chain.record(4) if epoch < 4 else {**chain.record(8), "epoch": 3},
            "not an integer in 5",
        ),
        # Epoch 5 said, epoch 4's record: its header is of height 12, not 15.
        (lambda epoch, chain: {**chain.record(4), "epoch": 5}, "height 12, expected 15"),
        # Epoch 4 said, epoch 5's record: its header is of height 15, not 12.
        (lambda epoch, chain: {**chain.record(5), "epoch": 4}, "height 15, expected 12"),
        # The right header (naming A) certified by another set's keys.
        (_certified_by_b, "signed by non-producer"),
    ],
    ids=[
        "same-epoch",
        "earlier-epoch",
        "epoch-past-record",
        "record-past-epoch",
        "other-certificate",
    ],
)
def test_a_change_record_that_is_not_the_one_named_is_refused(chain_parts, answer, refused):
    genesis, first = chain_parts
    chain = Hostile(genesis, first, answer)
    with pytest.raises((InvalidBlock, NodeError), match=refused):
        producers_at(chain, genesis, _height_of(LAST))


def test_a_checkpoint_past_the_height_asked_is_not_used_for_it(chain_parts):
    """A kept set of epoch 8 does not certify a height of epoch 5: the walk starts
    from genesis's, and the kept one stays (only ever forward)."""
    genesis, first = chain_parts
    chain = FakeChain(genesis, first)
    store = MemoryStore()
    producers_at(chain, genesis, _height_of(LAST), store)
    assert [c.epoch for c in store.saved] == [4, 8]
    assert producers_at(chain, genesis, _height_of(5), store) == chain.set_of(5)
    assert [c.epoch for c in store.saved] == [4, 8]


class BusyAt(FakeChain):
    """A chain whose node is busy (503) once at each path of ``busy``, as a flash
    deal's node or one that timed out is."""

    def __init__(self, genesis: Genesis, first: PrivateKey, lie: str | None, busy: set[str]):
        super().__init__(genesis, first, lie)
        self.busy = busy

    def get(self, path: str) -> dict:
        if path in self.busy:
            self.busy.discard(path)
            self.paths.append(path)
            raise NodeError("busy", "the node is busy", 503)
        return super().get(path)


@pytest.mark.parametrize(
    ("lie", "busy_at", "resumed_from"),
    [(None, "/v1/epochs/4/next-change", 4), ("no-route", "/v1/epochs/6", 4)],
)
def test_an_interrupted_walk_resumes_from_the_last_change_it_verified(
    chain_parts, lie, busy_at, resumed_from
):
    """The walk kept what it reached only when it ended: one a busy node or a timeout
    interrupted started from genesis again, and again. Each change verified is kept as
    it is, so the next walk reads only what comes after it."""
    genesis, first = chain_parts
    chain = BusyAt(genesis, first, lie, {busy_at})
    store = MemoryStore()
    with pytest.raises(NodeError, match="busy"):
        producers_at(chain, genesis, _height_of(LAST), store)
    assert [c.epoch for c in store.saved] == [resumed_from]
    chain.records.clear()
    assert producers_at(chain, genesis, _height_of(LAST), store) == chain.set_of(LAST)
    # From the kept change on: nothing before it is read again.
    assert chain.records and min(chain.records) > resumed_from
    assert store.saved[-1].epoch in (8, LAST)
