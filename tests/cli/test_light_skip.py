"""The light client reads one epoch record per change of producers, not one per epoch,
and what it skips costs it nothing in soundness (Rule S, docs/state-sync.md): a node
that hides a change, skips one or serves a header naming another set is refused."""

from __future__ import annotations

import pytest

from cli.light import Checkpoint, certified_header, fetch_certified_header, producers_at
from core import InvalidBlock, PrivateKey
from core.keystore import load_key
from genesis import Genesis, create_localnet
from tests.cli.light_chain import EPOCHS_OF_3, LAST, FakeChain
from tests.cli.light_chain import height_of as _height_of


class MemoryStore:
    def __init__(self) -> None:
        self.saved: list[Checkpoint] = []

    def load(self, genesis: Genesis) -> Checkpoint | None:
        return self.saved[-1] if self.saved else None

    def save(self, genesis: Genesis, checkpoint: Checkpoint) -> None:
        self.saved.append(checkpoint)


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
    assert [c.epoch for c in store.saved] == [8]
    chain.records.clear()
    chain.paths.clear()
    assert producers_at(chain, genesis, _height_of(LAST), store) == chain.set_of(LAST)
    assert chain.records == [] and chain.paths == ["/v1/epochs/8/next-change"]


def test_a_node_without_the_route_is_walked_epoch_by_epoch(chain_parts):
    genesis, first = chain_parts
    chain = FakeChain(genesis, first, lie="no-route")
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
