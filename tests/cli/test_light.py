"""The light client derives each epoch's producers from genesis through proofs only."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestServer

from cli.client import NodeClient, NodeError
from cli.light import Checkpoint, certified_header, fetch_certified_header, producers_at
from consensus import ValidatorSet, make_commit
from consensus.staking_state import producer_set_key
from core import BlockHeader, InvalidBlock, InvalidProof, PrivateKey
from genesis import Genesis, create_localnet
from node.run import build_app
from node.service import Node
from storage import StateProof
from vm import ChainParams


async def test_producers_walk_epochs_and_refuse_a_wrong_set(tmp_path):
    params = ChainParams.default().replace(epoch_length=3)
    layout = create_localnet(tmp_path / "net", 1, "", params=params)
    home = layout.nodes[0].home
    config = json.loads((home / "config.json").read_text())
    config["block_interval_ms"] = 30
    (home / "config.json").write_text(json.dumps(config))
    node = Node.from_home(home, "")
    server = TestServer(build_app(node), host="127.0.0.1")
    await server.start_server()
    try:
        client = NodeClient(str(server.make_url("")))
        while node.chain.height < 10:
            await asyncio.sleep(0.05)
        genesis = layout.genesis
        producers = await asyncio.to_thread(producers_at, client, genesis, 10)
        assert producers.keys == (layout.nodes[0].public_key,)
        header = await asyncio.to_thread(fetch_certified_header, client, genesis, 10, producers)
        assert header.height == 10
        stranger = ValidatorSet.of([PrivateKey.generate().public_key])
        with pytest.raises(InvalidBlock):
            await asyncio.to_thread(fetch_certified_header, client, genesis, 10, stranger)

        # A store keeps the highest set reached; a walk to a lower height leaves it be.
        store = MemoryStore()
        walked = await asyncio.to_thread(producers_at, client, genesis, 10, store)
        assert walked == producers and [c.epoch for c in store.saved] == [3]
        assert store.saved[0].height == 9
        await asyncio.to_thread(producers_at, client, genesis, 4, store)
        assert [c.epoch for c in store.saved] == [3]
        while node.chain.height < 13:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(producers_at, client, genesis, 13, store)
        assert [c.epoch for c in store.saved] == [3, 4]
    finally:
        await server.close()


class MemoryStore:
    """A CheckpointStore in memory that records what it is asked to keep."""

    def __init__(self) -> None:
        self.saved: list[Checkpoint] = []

    def load(self, genesis: Genesis) -> Checkpoint | None:
        return self.saved[-1] if self.saved else None

    def save(self, genesis: Genesis, checkpoint: Checkpoint) -> None:
        self.saved.append(checkpoint)


def test_a_value_the_proof_does_not_support_is_refused():
    from cli import light

    class LyingNode:
        """Claims a value, with a proof that the key is absent from an empty tree."""

        def get(self, path):
            return {"value": "00", "proof": StateProof((), None).encode().hex()}

    with pytest.raises(InvalidProof):
        light.proven_value(LyingNode(), b"\x14key", 1, bytes(32))


async def test_a_pruned_node_still_proves_every_epochs_producers(tmp_path):
    """A node keeps state for a window only (the default, a devnet's too), but its epoch
    records for good: a client walking the epochs from genesis must get each boundary's
    producer set with its proof from the node whatever its window, or it can prove
    nothing (no balance, no merchant key to seal an address to) once the window passed
    the first boundary: minutes into a devnet."""
    params = ChainParams.default().replace(epoch_length=3)
    layout = create_localnet(tmp_path / "net", 1, "", params=params)
    home = layout.nodes[0].home
    config = json.loads((home / "config.json").read_text())
    config["block_interval_ms"] = 30
    config["pruning"] = {"keep_states": 2, "keep_blocks": 1000, "interval": 1}
    (home / "config.json").write_text(json.dumps(config))
    node = Node.from_home(home, "")
    server = TestServer(build_app(node), host="127.0.0.1")
    await server.start_server()
    try:
        client = NodeClient(str(server.make_url("")))
        # Blocks come on their own; a loaded machine makes them slow: bounded generously.
        async with asyncio.timeout(120):
            while node.chain.store.state_base <= 12:
                await asyncio.sleep(0.05)
        height = node.chain.height
        producers = await asyncio.to_thread(producers_at, client, layout.genesis, height)
        assert producers.keys == (layout.nodes[0].public_key,)
        header = await asyncio.to_thread(
            fetch_certified_header, client, layout.genesis, height, producers
        )
        assert header.height == height
        # A state below the window that is no epoch's producer set is still gone.
        with pytest.raises(NodeError) as gone:
            await asyncio.to_thread(client.get, f"/v1/state/{producer_set_key(2).hex()}?height=5")
        assert gone.value.code == "pruned"
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("lie", "says"),
    [({"height": 7}, "of height 7"), ({"chain_id": "another-chain"}, "of chain 'another-chain'")],
    ids=["height", "chain"],
)
def test_a_signed_header_of_another_height_or_chain_is_refused(tmp_path, lie, says):
    # What the browser's light client refuses (web/src/lib/light.js checkHeader): a
    # certificate for height 5 of this chain over a header that says otherwise.
    genesis = create_localnet(tmp_path / "net", 1, "").genesis
    key = PrivateKey.generate()
    fields = {
        "chain_id": genesis.chain_id,
        "height": 5,
        "round": 0,
        "time_ms": 1,
        "prev_hash": bytes(32),
        "tx_root": bytes(32),
        "state_root": bytes(32),
        "receipt_root": bytes(32),
        "producer": key.public_key,
        "producer_set_hash": bytes(32),
        "last_commit": None,
    }
    header = BlockHeader(**{**fields, **lie})
    commit = make_commit([key], genesis.chain_id, 5, 0, header.hash)
    validators = ValidatorSet.of([key.public_key])
    with pytest.raises(InvalidBlock, match=says):
        certified_header(genesis, 5, header.encode().hex(), commit.encode().hex(), validators)
    # The same header, true to its certificate, is taken.
    header = BlockHeader(**fields)
    commit = make_commit([key], genesis.chain_id, 5, 0, header.hash)
    taken = certified_header(genesis, 5, header.encode().hex(), commit.encode().hex(), validators)
    assert taken == header


def test_a_pruned_node_is_named_as_why_the_walk_stops(tmp_path):
    from cli.client import NodeError

    params = ChainParams.default().replace(epoch_length=3)
    genesis = create_localnet(tmp_path / "net", 1, "", params=params).genesis

    class PrunedNode:
        """An honest node that keeps blocks from height 100 only."""

        url = "http://pruned.example"

        def block(self, height):
            raise NodeError("pruned", "block 3 is pruned: this node keeps blocks from height 100")

    with pytest.raises(NodeError) as info:
        producers_at(PrunedNode(), genesis, 500)
    assert info.value.code == "pruned"
    said = info.value.message
    assert "producers of height 500" in said and "block 3 (the last of epoch 0" in said
    assert "http://pruned.example" in said and "archive" in said


def _block_answer(header: object = "00", commit: object = None) -> dict:
    return {"header": {"encoded": header}, "commit": {"encoded": commit or "00"}}


def _header_of_height_3(chain_id: str) -> str:
    key = PrivateKey.generate().public_key
    roots = [bytes(32)] * 4
    return BlockHeader(chain_id, 3, 0, 1, *roots, key, bytes(32), None).encode().hex()


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"header": None, "commit": None},
        {"header": {"encoded": 5}, "commit": {"encoded": "00"}},
        _block_answer("zz"),
        "list-commit",
    ],
    ids=["list", "no-header", "int-header", "not-hex", "list-commit"],
)
def test_a_malformed_block_answer_is_the_node_s_fault(tmp_path, answer):
    from cli.client import NodeError

    genesis = create_localnet(tmp_path / "net", 1, "").genesis
    validators = ValidatorSet.of(v.public_key for v in genesis.validators)

    if answer == "list-commit":
        answer = _block_answer(_header_of_height_3(genesis.chain_id), ["00"])

    class Node:
        def block(self, height):
            return answer

    with pytest.raises(NodeError) as info:
        fetch_certified_header(Node(), genesis, 3, validators)
    assert info.value.code == "bad_answer", info.value


@pytest.mark.parametrize(
    "answer",
    [
        {"height": 0, "value": None, "proof": "00"},
        {"height": 5.0, "value": None, "proof": "00"},
        {"height": True, "value": None, "proof": "00"},
        {"height": 5, "value": 7, "proof": "00"},
        {"height": 5, "value": None, "proof": None},
        "state",
    ],
    ids=["zero", "float", "bool", "int-value", "no-proof", "string"],
)
def test_a_malformed_state_answer_is_the_node_s_fault(tmp_path, answer):
    from cli import light
    from cli.client import NodeError

    genesis = create_localnet(tmp_path / "net", 1, "").genesis

    class Node:
        def get(self, path):
            return answer

    with pytest.raises(NodeError) as info:
        light.proven_state(Node(), genesis, b"\x14key")
    assert info.value.code == "bad_answer", info.value
