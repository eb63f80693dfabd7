"""The light client derives each epoch's producers from genesis through proofs only."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from cli.client import NodeClient, NodeError
from cli.light import (
    certified_header,
    fetch_certified_header,
    fetch_epoch,
    producers_at,
    proven_state,
    proven_tx,
)
from cli.main import main
from consensus import ValidatorSet, make_commit
from consensus.staking_state import producer_set_key
from core import (
    BlockHeader,
    InvalidBlock,
    InvalidProof,
    MerkleTree,
    PrivateKey,
    TxBody,
    address_of,
    format_address,
    merkle_root,
    sign_tx,
    tx_hash,
)
from core.keystore import load_key
from genesis import Genesis, create_localnet
from node.service import Node
from storage import StateProof
from tests.cli.light_chain import MemoryStore
from tests.node.conftest import make_home
from tests.served import node_server
from vm import Account, ChainParams, Receipt, Transfer, account_key

# Epochs of three blocks: a walk crosses several in a second of blocks.
EPOCHS_OF_3 = ChainParams.default().replace(epoch_length=3)


async def test_producers_walk_epochs_and_refuse_a_wrong_set(tmp_path):
    layout, home = make_home(tmp_path, EPOCHS_OF_3, block_interval_ms=30)
    node = Node.from_home(home, "")
    server = node_server(node)
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

        # The set never changes here: no record is verified, none kept (one read, the
        # node's "no change"); the walks with changes are test_light_skip.py's.
        store = MemoryStore()
        walked = await asyncio.to_thread(producers_at, client, genesis, 10, store)
        assert walked == producers and store.saved == []
    finally:
        await server.close()


class CountingClient(NodeClient):
    """A NodeClient that notes the path of every read it makes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.paths: list[str] = []

    def get(self, path: str) -> object:
        self.paths.append(path)
        return super().get(path)


async def test_a_walk_over_epochs_without_a_change_is_one_read(tmp_path):
    """The producers never change on this chain: proving a height of epoch 4 or later
    read one record per epoch (`GET /v1/epochs/{e}`, each with its certificate checked);
    now it is one answer, the node's "no change since genesis"."""
    layout, home = make_home(tmp_path, EPOCHS_OF_3, block_interval_ms=30)
    node = Node.from_home(home, "")
    server = node_server(node)
    await server.start_server()
    try:
        client = CountingClient(str(server.make_url("")))
        async with asyncio.timeout(120):
            while node.chain.height < 14:
                await asyncio.sleep(0.05)
        genesis = layout.genesis
        producers = await asyncio.to_thread(producers_at, client, genesis, 14)
        assert producers.keys == (layout.nodes[0].public_key,)
        assert [p for p in client.paths if p.startswith("/v1/epochs/")] == [
            "/v1/epochs/0/next-change"
        ]
        # ... and the header of that height checks out with it.
        header = await asyncio.to_thread(fetch_certified_header, client, genesis, 14, producers)
        assert header.producer_set_hash == producers.hash
    finally:
        await server.close()


def _signed_boundary(genesis: Genesis, key: PrivateKey, height: int) -> tuple[str, str]:
    """A header of ``height`` of ``genesis``'s chain (state root zeros) and its certificate
    by ``key`` alone, hex."""
    roots = [bytes(32)] * 4
    named = ValidatorSet.of([key.public_key]).hash
    header = BlockHeader(genesis.chain_id, height, 0, 1, *roots, key.public_key, named, None)
    commit = make_commit([key], genesis.chain_id, height, 0, header.hash)
    return header.encode().hex(), commit.encode().hex()


def test_a_set_the_proof_does_not_support_is_refused(tmp_path):
    genesis = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3).genesis
    key = PrivateKey.generate()
    header, commit = _signed_boundary(genesis, key, 3)

    class LyingNode:
        """A record of epoch 1 certified as it should be, whose set the proof does not
        support (it shows the key absent from an empty tree)."""

        def get(self, path):
            assert path == "/v1/epochs/1"
            proof = StateProof((), None).encode().hex()
            return {"header": header, "commit": commit, "producers": "00", "proof": proof}

    with pytest.raises(InvalidProof):
        fetch_epoch(LyingNode(), genesis, 1, ValidatorSet.of([key.public_key]), 5)


async def test_a_pruned_node_still_proves_every_epochs_producers(tmp_path):
    """A node keeps blocks and state for a window only (the default, a devnet's too), but
    its epoch records for good: a client walking the epochs from genesis gets each
    boundary's header, certificate and producer set with its proof from the node
    (`GET /v1/epochs/{e}`) whatever its windows, or it could prove nothing (no balance,
    no merchant key to seal an address to) once `keep_blocks` passed the first
    boundary. A fresh client (nothing kept) proves an account on such a node."""
    # Enough blocks kept for the head's header to outlive the walk (30 blocks, 0.9 s at
    # the fastest), none of the boundaries walked.
    pruning = {"keep_states": 2, "keep_blocks": 30, "interval": 1}
    layout, home = make_home(tmp_path, EPOCHS_OF_3, block_interval_ms=30, pruning=pruning)
    node = Node.from_home(home, "")
    server = node_server(node)
    await server.start_server()
    try:
        client = NodeClient(str(server.make_url("")))
        # Blocks come on their own; a loaded machine makes them slow: bounded generously.
        async with asyncio.timeout(120):
            while node.chain.store.block_base <= 12:
                await asyncio.sleep(0.05)
        # The boundaries' blocks are gone: the walk of old read them and stopped here.
        with pytest.raises(NodeError) as gone:
            await asyncio.to_thread(client.block, "3?txs=false")
        assert gone.value.code == "pruned"
        genesis = layout.genesis
        faucet = load_key(layout.faucet_key_path, "").public_key
        store = MemoryStore()
        value, height = await asyncio.to_thread(
            proven_state, client, genesis, account_key(address_of(faucet)), store
        )
        assert value is not None and Account.decode(value).balance > 0
        # Genesis's set still: no change to walk through, so no record to keep.
        assert height > 12 and store.saved == []
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
        "producer_set_hash": ValidatorSet.of([key.public_key]).hash,
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


def test_a_node_without_an_epoch_record_is_named_as_why_the_walk_stops(tmp_path):
    from cli.client import NodeError

    genesis = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3).genesis

    class BareNode:
        """A node with no record of any epoch (404, as for an epoch past its head)."""

        url = "http://bare.example"

        def get(self, path):
            raise NodeError("not_found", "no record of epoch 1: records are of epochs 1 to 0", 404)

    with pytest.raises(NodeError) as info:
        producers_at(BareNode(), genesis, 500)
    assert info.value.code == "no_epoch_record" and info.value.status == 404
    said = info.value.message
    assert "producers of height 500" in said and "record of epoch 1 (block 3" in said
    assert "http://bare.example" in said and "no record of epoch 1" in said


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


EMPTY_PROOF = StateProof((), None).encode().hex()


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"header": "00", "commit": "00", "producers": None, "proof": "00"},
        {"header": "00", "commit": "00", "producers": "00", "proof": "zz"},
        {"header": 5, "commit": "00", "producers": "00", "proof": EMPTY_PROOF},
        {"commit": "00", "producers": "00", "proof": EMPTY_PROOF},
        "record",
    ],
    ids=["list", "no-producers", "not-hex", "int-header", "no-header", "string"],
)
def test_a_malformed_epoch_record_is_the_node_s_fault(tmp_path, answer):
    from cli.client import NodeError

    genesis = create_localnet(tmp_path / "net", 1, "", params=EPOCHS_OF_3).genesis
    validators = ValidatorSet.of(v.public_key for v in genesis.validators)

    class Node:
        def get(self, path):
            return answer

    with pytest.raises(NodeError) as info:
        fetch_epoch(Node(), genesis, 1, validators, 5)
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


def test_a_state_answer_at_another_height_than_the_header_s_is_refused(tmp_path):
    # A proof against a header certified before is asked at its height: an answer at
    # another is refused by name (its proof would not verify against that root anyway).
    from cli.light import proven_value

    genesis = create_localnet(tmp_path / "net", 1, "").genesis
    header = BlockHeader.decode(bytes.fromhex(_header_of_height_3(genesis.chain_id)))
    asked: list[str] = []

    class Node:
        def get(self, path):
            asked.append(path)
            return {"height": 4, "value": None, "proof": EMPTY_PROOF}

    with pytest.raises(NodeError) as info:
        proven_value(Node(), genesis, b"\x14key", at=header)
    assert info.value.code == "proof_mismatch", info.value
    assert "at height 3, the node answered at 4" in info.value.message
    assert asked == ["/v1/state/146b6579?height=3"]


def _leaf_proof(key: bytes, value: bytes) -> str:
    from storage.state_tree import ProofLeaf, key_path, value_hash

    return StateProof((), ProofLeaf(key_path(key), value_hash(value))).encode().hex()


@pytest.mark.parametrize(
    "answer",
    [
        # A value with a proof of absence.
        {"height": 3, "value": "01", "proof": EMPTY_PROOF},
        # Another key's value, proven (against another root).
        {"height": 3, "value": "01", "proof": _leaf_proof(b"\x14other", b"\x01")},
        # The key's own leaf, under a root that is not the header's.
        {"height": 3, "value": "01", "proof": _leaf_proof(b"\x14key", b"\x01")},
    ],
    ids=["absence-proof", "other-key", "other-root"],
)
def test_an_answer_at_a_reused_header_s_height_is_checked_against_its_root(tmp_path, answer):
    # The header is not fetched again, but the proof is: a node may not pick the value.
    from cli.light import proven_value

    genesis = create_localnet(tmp_path / "net", 1, "").genesis
    header = BlockHeader.decode(bytes.fromhex(_header_of_height_3(genesis.chain_id)))

    class Node:
        def get(self, path):
            return answer

    with pytest.raises(InvalidProof):
        proven_value(Node(), genesis, b"\x14key", at=header)


# --- transactions: inclusion and receipt ------------------------------------------------


async def test_query_tx_prove_shows_the_proven_receipt_of_each_transaction(tmp_path):
    """Against a real node whose epochs the walk crosses: a transaction that succeeded and
    one that failed, each proven in its block (the receipt's code is the chain's)."""
    layout, home = make_home(tmp_path, EPOCHS_OF_3, block_interval_ms=30)
    node = Node.from_home(home, "")
    server = node_server(node)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        client = NodeClient(url)
        faucet = load_key(layout.faucet_key_path, "")
        async with asyncio.timeout(60):
            while node.chain.height < 7:
                await asyncio.sleep(0.03)
        sent = {}
        for nonce, (amount, code) in enumerate(((5, "ok"), (2**63, "insufficient_funds"))):
            body = TxBody(
                nonce, 1_000, 1_000, "transfer", Transfer(faucet.address, amount).encode()
            )
            raw = sign_tx(faucet, layout.genesis.chain_id, body).encode()
            sent[await asyncio.to_thread(client.submit, raw)] = code
        for hash_hex, code in sent.items():
            await asyncio.to_thread(client.wait_committed, hash_hex)
            argv = ["query", "tx", hash_hex, "--prove", "--genesis", str(layout.genesis_path)]
            done = await asyncio.to_thread(CliRunner().invoke, main, [*argv, "--node", url])
            assert done.exit_code == 0, (done.stdout, done.stderr)
            doc = json.loads(done.stdout)
            status = await asyncio.to_thread(client.tx, hash_hex)
            assert doc["receipt"]["code"] == code and doc["proof"]["verified"] is True
            assert (doc["height"], doc["index"]) == (status["height"], status["index"])
            assert doc["proof"]["genesis_hash"] == layout.genesis.hash.hex()
            # Proven at a height whose producers were reached by the epochs' walk.
            assert doc["height"] > 2 * EPOCHS_OF_3.epoch_length
    finally:
        await server.close()


async def test_query_tx_says_a_pruning_node_cannot_tell_never_included_from_pruned(tmp_path):
    """A transaction of a block the node pruned, and a hash never sent, read the same on
    a pruning node: `maybe_pruned` (with or without --prove), with a hint to ask an
    archive node; on a node holding every block, a hash never sent is `not_found`."""
    pruning = {"keep_states": 2, "keep_blocks": 2, "interval": 1}
    layout, home = make_home(tmp_path, block_interval_ms=30, pruning=pruning)
    node = Node.from_home(home, "")
    server = node_server(node)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        client = NodeClient(url)
        faucet = load_key(layout.faucet_key_path, "")
        body = TxBody(0, 1_000, 1_000, "transfer", Transfer(faucet.address, 5).encode())
        sent = await asyncio.to_thread(
            client.submit, sign_tx(faucet, layout.genesis.chain_id, body).encode()
        )
        # Its block may be pruned before any lookup by hash: the account's nonce says it
        # is in a block at or below the height of that answer.
        address = format_address(faucet.address)
        async with asyncio.timeout(60):
            while (account := await asyncio.to_thread(client.account, address))["nonce"] < 1:
                await asyncio.sleep(0.03)
            while node.chain.store.block_base <= account["height"]:
                await asyncio.sleep(0.03)
        for hash_hex in (sent, "ab" * 32):
            for prove in ([], ["--prove", "--genesis", str(layout.genesis_path)]):
                argv = ["query", "tx", hash_hex, *prove, "--node", url]
                done = await asyncio.to_thread(CliRunner().invoke, main, argv)
                assert done.exit_code == 2, (done.stdout, done.stderr)
                assert f"error: maybe_pruned: transaction {hash_hex} is" in done.stderr
                assert "cannot tell whether" in done.stderr
                assert "hint: an archive node" in done.stderr
    finally:
        await server.close()


class ProvingNode:
    """A node that answers one transaction's proof request with ``answer`` (a block of
    three transfers, the asked one the last, certified by ``signer``) as ``lie`` alters it."""

    def __init__(self, genesis: Genesis, signer: PrivateKey, lie: dict | None = None) -> None:
        key = PrivateKey.generate()
        txs = []
        for nonce in range(3):
            body = TxBody(nonce, 10, 100, "transfer", Transfer(key.address, 1).encode())
            txs.append(sign_tx(key, genesis.chain_id, body).encode())
        receipts = [Receipt(tx_hash(t), "ok", "", 10, ()).encode() for t in txs]
        roots = (merkle_root(txs), bytes(32), merkle_root(receipts))
        header = BlockHeader(
            genesis.chain_id,
            3,
            0,
            1,
            bytes(32),
            *roots,
            signer.public_key,
            ValidatorSet.of([signer.public_key]).hash,
            None,
        )
        commit = make_commit([signer], genesis.chain_id, 3, 0, header.hash)
        self.hash = tx_hash(txs[2])
        self.answer = {
            "hash": self.hash.hex(),
            "height": 3,
            "index": 2,
            "count": 3,
            "tx": txs[2].hex(),
            "receipt": receipts[2].hex(),
            "tx_path": [h.hex() for h in MerkleTree.of(txs).path(2)],
            "receipt_path": [h.hex() for h in MerkleTree.of(receipts).path(2)],
            "header": header.encode().hex(),
            "commit": commit.encode().hex(),
            **(lie or {}),
        }
        self.others = (txs, receipts)

    def get(self, path: str) -> object:
        assert path == f"/v1/txs/{self.hash.hex()}/proof", path
        return self.answer


def _validator(tmp_path) -> tuple[Genesis, PrivateKey]:
    layout = create_localnet(tmp_path / "net", 1, "")
    return layout.genesis, load_key(layout.nodes[0].key_path, "")


def test_a_proof_in_a_block_its_producers_certified_is_taken(tmp_path):
    genesis, validator = _validator(tmp_path)
    node = ProvingNode(genesis, validator)
    proven = proven_tx(node, genesis, node.hash)
    assert proven.header.height == 3 and proven.proof.index == 2
    assert proven.receipt.code == "ok" and proven.tx.encode().hex() == node.answer["tx"]


def test_a_header_its_producers_did_not_certify_is_refused(tmp_path):
    genesis, _ = _validator(tmp_path)
    # Every path true to the header, the header signed by a key genesis does not name.
    node = ProvingNode(genesis, PrivateKey.generate())
    with pytest.raises(InvalidBlock):
        proven_tx(node, genesis, node.hash)


@pytest.mark.parametrize(
    "lie",
    [
        {"index": 1},
        "another-tx",
        "another-receipt",
        {"tx_path": ["00" * 31]},
        {"receipt_path": ["00" * 32] * 18},
        {"receipt_path": ["zz"] * 1_000_000},
    ],
    ids=["wrong-index", "another-tx", "another-receipt", "odd-path", "long-path", "huge-path"],
)
def test_a_hostile_proof_is_refused(tmp_path, lie):
    genesis, validator = _validator(tmp_path)
    node = ProvingNode(genesis, validator)
    txs, receipts = node.others
    if lie == "another-tx":
        lie = {
            "tx": txs[1].hex(),
            "index": 1,
            "tx_path": [h.hex() for h in MerkleTree.of(txs).path(1)],
        }
    elif lie == "another-receipt":
        path = MerkleTree.of(receipts).path(1)
        lie = {"receipt": receipts[1].hex(), "receipt_path": [h.hex() for h in path]}
    node.answer.update(lie)
    with pytest.raises(InvalidProof):
        proven_tx(node, genesis, node.hash)


@pytest.mark.parametrize(
    "lie",
    [
        {"height": 3.0},
        {"index": 3},
        {"count": 0},
        {"tx": "zz"},
        {"receipt": None},
        {"tx_path": "00" * 32},
        {"receipt_path": [5]},
        {"header": 5},
    ],
    ids=[
        "float-height",
        "index-past-count",
        "no-count",
        "not-hex",
        "no-receipt",
        "path-string",
        "path-int",
        "int-header",
    ],
)
def test_a_malformed_proof_is_the_node_s_fault(tmp_path, lie):
    genesis, validator = _validator(tmp_path)
    node = ProvingNode(genesis, validator, lie)
    with pytest.raises(NodeError) as info:
        proven_tx(node, genesis, node.hash)
    assert info.value.code == "bad_answer", info.value
