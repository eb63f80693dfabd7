"""GET /v1/epochs/{epoch}: the record that proves an epoch's producers, from a real node
(real LevelDB, real socket), pruned or not."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from consensus import ValidatorSet
from node.epoch_records import EpochRecord, verify_epoch_record
from node.service import Node
from tests.node.conftest import make_home
from tests.node.test_openapi import Checker, fetch, get_document
from tests.served import node_server
from vm import ChainParams

EPOCH = "/v1/epochs/{epoch}"
NEXT = "/v1/epochs/{epoch}/next-change"


async def test_epoch_records_walk_from_genesis_on_a_node_that_pruned_the_boundaries(tmp_path):
    """A node whose `keep_blocks` passed every boundary (410 for those blocks) answers each
    epoch's record in one read, and the records verify from genesis's producers by the
    node's own verifier (the state sync's)."""
    params = ChainParams.default().replace(epoch_length=3)
    pruning = {"keep_states": 2, "keep_blocks": 2, "interval": 1}
    layout, home = make_home(tmp_path, params, block_interval_ms=30, pruning=pruning)
    node = Node.from_home(home, "")
    client = TestClient(node_server(node))
    await client.start_server()
    try:
        checker = Checker(await get_document(client))
        # Blocks come on their own; a loaded machine makes them slow: bounded generously.
        async with asyncio.timeout(120):
            while node.chain.store.block_base <= 13:
                await asyncio.sleep(0.05)
        resp = await client.get("/v1/blocks/3?txs=false")
        assert resp.status == 410 and (await resp.json())["code"] == "pruned"

        genesis = layout.genesis
        validators = ValidatorSet.of(v.public_key for v in genesis.validators)
        for epoch in range(1, 5):
            doc = await fetch(client, checker, EPOCH, f"/v1/epochs/{epoch}")
            assert doc["epoch"] == epoch and doc["height"] == 3 * epoch
            raw = EpochRecord(
                *(bytes.fromhex(doc[k]) for k in ("header", "commit", "producers", "proof"))
            ).encode()
            validators = verify_epoch_record(genesis, epoch, raw, validators)
        assert validators.keys == (layout.nodes[0].public_key,)

        # Epoch 0 is genesis's; an epoch whose boundary is above the head has no record.
        head = node.chain.height
        for which in (0, head // 3 + 1, 10**18):
            doc = await fetch(client, checker, EPOCH, f"/v1/epochs/{which}", status=404)
            assert doc["code"] == "not_found" and "genesis" in doc["message"]
        for bad in ("x", "-1", "²", "1" * 20):
            doc = await fetch(client, checker, EPOCH, f"/v1/epochs/{bad}", status=400)
            assert doc["code"] == "bad_epoch"

        # The next change of producers: none on this chain (one validator for good).
        doc = await fetch(client, checker, NEXT, "/v1/epochs/0/next-change", status=404)
        assert doc["code"] == "no_set_change" and "are epoch 0's" in doc["message"]
        doc = await fetch(client, checker, NEXT, f"/v1/epochs/{10**6}/next-change", status=404)
        assert doc["code"] == "not_found"
        doc = await fetch(client, checker, NEXT, "/v1/epochs/x/next-change", status=400)
        assert doc["code"] == "bad_epoch"
        # Where the index says the set changed (here: told so), the answer is that
        # epoch's record, the same document as its own route's.
        node.chain.store.put_epoch_sets(3, [bytes(32)])
        doc = await fetch(client, checker, NEXT, "/v1/epochs/1/next-change")
        assert doc == {**await fetch(client, checker, EPOCH, "/v1/epochs/3"), "epoch": 3}
        doc = await fetch(client, checker, NEXT, "/v1/epochs/3/next-change")
        assert doc["epoch"] == 4 and doc["height"] == 12

        # A stored record that does not decode is this node's damaged store, said so.
        node.chain.store.put_epoch_record(2, b"\x93junk", bytes(32))
        doc = await fetch(client, checker, EPOCH, "/v1/epochs/2", status=500)
        assert doc["code"] == "corrupt_record" and "epoch 2" in doc["message"]
    finally:
        await client.close()


def test_a_record_whose_header_names_another_set_than_its_signers_is_refused(tmp_path):
    """The state sync's walk checks a record as the light client does: its boundary
    header names the set that certified it (Rule S, docs/state-sync.md), whoever
    signed it."""
    import pytest

    from core import Invalid
    from core.keystore import load_key
    from genesis import create_localnet
    from tests.cli.light_chain import EPOCHS_OF_3, FakeChain

    layout = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3)
    genesis = layout.genesis
    chain = FakeChain(genesis, load_key(layout.nodes[0].key_path, ""))

    def raw(doc: dict) -> bytes:
        parts = (bytes.fromhex(doc[k]) for k in ("header", "commit", "producers", "proof"))
        return EpochRecord(*parts).encode()

    assert verify_epoch_record(genesis, 4, raw(chain.record(4)), chain.set_of(3)) == chain.set_of(4)
    forged = raw(chain.record(4, names=chain.set_of(4)))
    with pytest.raises(Invalid, match="names producer set"):
        verify_epoch_record(genesis, 4, forged, chain.set_of(3))
