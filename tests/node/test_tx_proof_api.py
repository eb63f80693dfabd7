"""``GET /v1/txs/{hash}/proof`` on a real node: a committed transaction's proof checks out
against its block's certified header (succeeded or failed, whatever its place), and a
transaction with nothing to prove is refused with a stable code."""

from __future__ import annotations

import asyncio
import threading

import pytest

from consensus import ValidatorSet, verify_commit
from core import BlockHeader, Commit, MerkleTree, TxBody, sign_tx, tx_hash
from node.chain_api import BLOCK_READ_SLOTS, BLOCK_READS, ProofTrees
from storage import Database
from tests.apps.commerce.test_http_reads import Holds, get_from
from tests.apps.commerce.test_http_reads import until as until_loop
from tests.node.conftest import served_node, until
from vm import Transfer, TxInclusion, verify_tx_inclusion


def _transfer(key, chain_id, amount, nonce):
    body = TxBody(nonce, 1_000, 1_000, "transfer", Transfer(key.address, amount).encode())
    return sign_tx(key, chain_id, body)


def _inclusion(doc) -> TxInclusion:
    return TxInclusion(
        doc["height"],
        doc["index"],
        doc["count"],
        bytes.fromhex(doc["tx"]),
        bytes.fromhex(doc["receipt"]),
        tuple(bytes.fromhex(h) for h in doc["tx_path"]),
        tuple(bytes.fromhex(h) for h in doc["receipt_path"]),
    )


async def test_a_committed_transaction_is_proven_against_its_certified_header(tmp_path):
    # Blocks every second: the batch lands in one block or two, several at each.
    async with served_node(tmp_path, block_interval_ms=1000) as (client, node, faucet):
        chain_id = node.genesis.chain_id
        # Seven transfers, the fourth of an amount no account holds (a failed receipt).
        txs = [_transfer(faucet, chain_id, 2**63 if i == 3 else 5, i) for i in range(7)]
        resp = await client.post("/v1/txs", json={"txs": [t.encode().hex() for t in txs]})
        assert resp.status == 200, await resp.text()
        hashes = [tx_hash(t.encode()) for t in txs]
        await until(lambda: node.chain.store.tx_location(hashes[-1]) is not None, 30)
        producers = ValidatorSet.of(v.public_key for v in node.genesis.validators)
        counts = set()
        for _ in range(2):  # the second time, from the block's kept trees
            for i, hash_ in enumerate(hashes):
                resp = await client.get(f"/v1/txs/{hash_.hex()}/proof")
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
                status = await (await client.get(f"/v1/txs/{hash_.hex()}")).json()
                assert (doc["hash"], doc["height"]) == (hash_.hex(), status["height"])
                assert doc["index"] == status["index"] < doc["count"]
                header = BlockHeader.decode(bytes.fromhex(doc["header"]))
                commit = Commit.decode(bytes.fromhex(doc["commit"]))
                verify_commit(commit, chain_id, doc["height"], header.hash, producers)
                tx, receipt = verify_tx_inclusion(header, hash_, _inclusion(doc))
                assert tx == txs[i]
                assert receipt.code == ("insufficient_funds" if i == 3 else "ok")
                assert receipt.code == status["receipt"]["code"]
                counts.add(doc["count"])
        # Paths of several levels: a block held three transactions or more.
        assert max(counts) >= 3, counts


async def test_a_transaction_with_nothing_to_prove_is_refused_with_its_code(tmp_path):
    async with served_node(tmp_path) as (client, node, faucet):
        chain_id = node.genesis.chain_id
        resp = await client.get("/v1/txs/nothex/proof")
        assert resp.status == 400 and (await resp.json())["code"] == "bad_hash"
        # A node that holds every block looked at them all: never included.
        for path in (f"/v1/txs/{'ab' * 32}/proof", f"/v1/txs/{'ab' * 32}"):
            resp = await client.get(path)
            assert resp.status == 404 and (await resp.json())["code"] == "not_found"
        # Above a missing nonce: held in the mempool, in no block.
        queued = _transfer(faucet, chain_id, 5, 1)
        resp = await client.post("/v1/txs", json={"tx": queued.encode().hex()})
        assert resp.status == 200, await resp.text()
        resp = await client.get(f"/v1/txs/{queued.hash.hex()}/proof")
        assert resp.status == 404 and (await resp.json())["code"] == "pending"


async def test_a_transaction_of_a_pruned_block_is_refused_as_maybe_pruned(tmp_path):
    """Once blocks are pruned, a transaction in none of the blocks held may have been in
    one that went: `maybe_pruned` (status and proof alike), never the `not_found` of a
    node that looked at the whole chain; a hash never sent reads the same there."""
    pruning = {"keep_states": 2, "keep_blocks": 2, "interval": 1}
    async with served_node(tmp_path, block_interval_ms=30, pruning=pruning) as (
        client,
        node,
        faucet,
    ):
        sent = _transfer(faucet, node.genesis.chain_id, 5, 0)
        resp = await client.post("/v1/txs", json={"tx": sent.encode().hex()})
        assert resp.status == 200, await resp.text()
        await until(lambda: node.chain.store.tx_location(sent.hash) is not None, 30)
        (height, _) = node.chain.store.tx_location(sent.hash)
        assert (await client.get(f"/v1/txs/{sent.hash.hex()}/proof")).status == 200
        async with asyncio.timeout(60):
            while node.chain.store.block_base <= height:
                await asyncio.sleep(0.03)
        for hash_hex in (sent.hash.hex(), "ab" * 32):
            for path in (f"/v1/txs/{hash_hex}/proof", f"/v1/txs/{hash_hex}"):
                resp = await client.get(path)
                doc = await resp.json()
                assert resp.status == 404 and doc["code"] == "maybe_pruned", (path, doc)
                assert "holds no block below" in doc["message"], doc


async def test_proofs_queued_behind_a_block_s_first_read_take_the_trees_it_kept(
    tmp_path, monkeypatch
):
    """A flash deal's buyers ask for their orders' proofs in the same block at once. The
    kept trees were looked up as each request came, before it waited its turn: every
    request queued behind the block's first read built the block's two trees again
    (~100 ms at 40k transactions, each). Now a read looks them up when its turn comes."""
    async with served_node(tmp_path) as (client, node, faucet):
        sent = _transfer(faucet, node.genesis.chain_id, 5, 0)
        resp = await client.post("/v1/txs", json={"tx": sent.encode().hex()})
        assert resp.status == 200, await resp.text()
        await until(lambda: node.chain.store.tx_location(sent.hash) is not None, 30)
        (height, _) = node.chain.store.tx_location(sent.hash)
        store = node.chain.store
        held = Holds()
        get_block_bytes = store.get_block_bytes

        def slow_block(at: int) -> bytes | None:
            if at == height:
                held.hold()
            return get_block_bytes(at)

        built: list[int] = []
        of = MerkleTree.of

        def counted(cls: type[MerkleTree], leaves: list[bytes]) -> MerkleTree:
            built.append(len(leaves))
            return of(leaves)

        monkeypatch.setattr(store, "get_block_bytes", slow_block)
        monkeypatch.setattr(MerkleTree, "of", classmethod(counted))
        url = str(client.make_url(f"/v1/txs/{sent.hash.hex()}/proof"))
        reads = client.server.app[BLOCK_READS]
        # Three addresses, two requests each: the first two reads run (held), the
        # others wait their turn.
        asked = [asyncio.create_task(get_from(url, f"127.0.0.{2 + i % 3}")) for i in range(6)]
        try:
            await until_loop(lambda: held.entered == BLOCK_READ_SLOTS, "reads running")
            await until_loop(lambda: reads.waiting == 6 - BLOCK_READ_SLOTS, "reads waiting")
        finally:
            held.open()
        answers = await asyncio.gather(*asked)
        assert [status for status, _, _ in answers] == [200] * 6
        # Two trees for each read that ran before any was kept, none after (it was 12).
        assert len(built) <= 2 * BLOCK_READ_SLOTS, built


def test_kept_proof_trees_are_bounded_in_bytes():
    def trees(leaves: int) -> tuple[MerkleTree, MerkleTree]:
        tree = MerkleTree.of([bytes([i]) for i in range(leaves)])
        return tree, tree

    one = trees(1)  # 32 bytes each: 64 a pair
    kept = ProofTrees(max_bytes=200)
    kept.put(1, one)
    kept.put(2, one)
    kept.put(3, one)
    assert kept.get(1) == one  # now the most recently used
    kept.put(4, one)
    assert kept.get(2) is None and kept.get(1) is not None and kept.get(4) is not None
    kept.put(5, trees(3))  # 6 hashes a tree: larger than the whole bound, not kept
    assert kept.get(5) is None


async def test_a_transaction_committed_during_its_lookup_is_never_said_absent_up_to_its_block(
    tmp_path, monkeypatch
):
    """`GET /v1/txs/{hash}` read the head after the index lookup: a block committed in
    between (here the lookup misses it, then the block is written) had the refusal say
    "not found up to height H" of a transaction in block H. The head is read first."""
    async with served_node(tmp_path) as (client, node, faucet):
        store, mempool = node.chain.store, node.mempool
        sent = _transfer(faucet, node.genesis.chain_id, 5, 0)
        holding, looked, written = threading.Event(), threading.Event(), threading.Event()
        commit_block, tx_location = store.commit_block, store.tx_location

        def held_commit(block, *args, **kwargs):
            if sent.encode() in block.txs:
                holding.set()
                assert looked.wait(30)
                commit_block(block, *args, **kwargs)
                written.set()
                return
            commit_block(block, *args, **kwargs)

        def lookup(hash_):
            found = tx_location(hash_)
            if hash_ == sent.hash:
                looked.set()
            return found

        # As for a transaction sent through another node: this one's mempool never held
        # it; asked (between the lookup and the refusal) once the block is written.
        def contains(hash_):
            if hash_ == sent.hash:
                assert written.wait(30)
                return False
            return True

        monkeypatch.setattr(store, "commit_block", held_commit)
        monkeypatch.setattr(store, "tx_location", lookup)
        resp = await client.post("/v1/txs", json={"tx": sent.encode().hex()})
        assert resp.status == 200, await resp.text()
        await until(holding.is_set, 30)
        monkeypatch.setattr(mempool, "contains", contains)
        resp = await client.get(f"/v1/txs/{sent.hash.hex()}")
        doc = await resp.json()
        (height, _) = tx_location(sent.hash)
        assert resp.status == 404 and doc["code"] == "not_found", doc
        said = int(doc["message"].rsplit(" ", 1)[1])
        assert said < height, (doc, height)


async def test_a_lookup_during_a_pruning_write_reads_maybe_pruned_never_not_found(
    tmp_path, monkeypatch
):
    """`prune_blocks` raised its block base only after its write: a status lookup in
    between read `not_found` (the node holding every block, it said) and a proof whose
    block went under its reads a 500. The base moves first; a failed write puts it back."""
    async with served_node(tmp_path) as (client, node, faucet):
        store = node.chain.store
        sent = _transfer(faucet, node.genesis.chain_id, 5, 0)
        resp = await client.post("/v1/txs", json={"tx": sent.encode().hex()})
        assert resp.status == 200, await resp.text()
        await until(lambda: store.tx_location(sent.hash) is not None, 30)
        (height, _) = store.tx_location(sent.hash)
        await until(lambda: store.height > height + 2, 30)
        loop = asyncio.get_running_loop()
        # A proof whose reads begin before the prune and go on after its write.
        reading, resume = threading.Event(), threading.Event()
        get_block_bytes = store.get_block_bytes

        def held_block(at: int) -> bytes | None:
            if at == height and not reading.is_set():  # the proof's read, not the prune's
                reading.set()
                assert resume.wait(30)
            return get_block_bytes(at)

        monkeypatch.setattr(store, "get_block_bytes", held_block)
        proof = asyncio.ensure_future(client.get(f"/v1/txs/{sent.hash.hex()}/proof"))
        await until(reading.is_set, 30)
        pruner: list[int] = []
        seen: list[tuple[int, dict]] = []
        write = Database.write

        async def ask(path: str) -> tuple[int, dict]:
            resp = await client.get(path)
            return resp.status, await resp.json()

        def between(db: Database, batch) -> None:
            write(db, batch)
            if threading.get_ident() in pruner and not seen:
                # Just after the write, before prune_blocks returns.
                resume.set()
                seen.append(proof_status())
                path = f"/v1/txs/{sent.hash.hex()}"
                seen.append(asyncio.run_coroutine_threadsafe(ask(path), loop).result(30))

        def proof_status() -> tuple[int, dict]:
            answer = asyncio.run_coroutine_threadsafe(asyncio.wait_for(proof, 30), loop)
            resp = answer.result(30)
            body = asyncio.run_coroutine_threadsafe(resp.json(), loop).result(30)
            return resp.status, body

        def prune() -> int:
            pruner.append(threading.get_ident())
            return store.prune_blocks(height + 1)

        monkeypatch.setattr(Database, "write", between)
        assert await asyncio.to_thread(prune) == height + 1
        (proof_code, proof_doc), (status_code, status_doc) = seen
        assert (proof_code, proof_doc["code"]) == (410, "pruned"), proof_doc
        assert (status_code, status_doc["code"]) == (404, "maybe_pruned"), status_doc

        # A write that fails leaves the base where it was: the next pass prunes from it.
        here = threading.get_ident()

        def failing(db: Database, batch) -> None:
            if threading.get_ident() == here:  # this pass's, not a commit's
                raise OSError("disk full")
            write(db, batch)

        monkeypatch.setattr(Database, "write", failing)
        with pytest.raises(OSError):
            store.prune_blocks(height + 2)
        assert store.block_base == height + 1
        monkeypatch.setattr(Database, "write", write)
        assert store.prune_blocks(height + 2) == height + 2
        assert store.get_block_bytes(height + 1) is None
