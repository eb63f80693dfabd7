"""``node.audit``: a replay from genesis over a node home's store (the audit's
acceptance runs are the e2e and netns suites, through ``liveledger audit verify``)."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from cli.main import main
from cli.trust import pin_genesis
from consensus import ValidatorSet, make_commit
from core import Block, Commit, InvalidBlock, PrivateKey, StorageError, TxBody, sign_tx, tx_hash
from core.keystore import load_key
from genesis import create_localnet, load_genesis
from node.audit import audit_home
from node.chain import Chain
from node.config import load_config
from node.epoch_records import EpochRecord, keep_epoch_record
from node.service import build_registry
from storage import ChainStore
from storage.db import BLOCK, BLOCK_HEIGHT, EPOCH, STATE, TX_INDEX, encode_height, encode_position
from tests.consensus.staking_helpers import KEYS as STAKING_KEYS
from tests.consensus.staking_helpers import PARAMS as STAKING_PARAMS
from tests.consensus.staking_helpers import make_genesis
from tests.storage.storage_chain_fixtures import raw_write
from vm import Account, Transfer, account_key, verify_signed_tx

# Three producers elected every epoch of 4 blocks.
STAKING_GENESIS = make_genesis(validators=3, params=STAKING_PARAMS)


def _home_with_blocks(tmp_path, blocks: int):
    layout = create_localnet(tmp_path / "net", 1, "")
    node = layout.nodes[0]
    genesis = load_genesis(layout.genesis_path)
    producer = load_key(node.key_path, "")
    config = load_config(node.home)
    store = config.storage.open_store(node.home / config.data_dir)
    chain = Chain(store, genesis, build_registry())
    for h in range(1, blocks + 1):
        executed = chain.build([], producer, genesis.genesis_time_ms + h * 1_000)
        chain.commit(executed, make_commit([producer], genesis.chain_id, h, 0, executed.block.hash))
    return node.home, store


def test_an_archive_home_audits_from_genesis(tmp_path):
    home, store = _home_with_blocks(tmp_path, 4)
    store.close()
    report = audit_home(home)
    assert (report.height, report.txs, report.copied) == (4, 0, False)


@pytest.mark.parametrize("pruned", ["blocks", "states"])
def test_a_pruned_home_is_refused_up_front_as_pruned_not_as_damage(tmp_path, pruned):
    # A replay from genesis needs every block and the genesis state; a pruning node's
    # store lacks them by design, which must not read as a store missing what it should
    # hold ("block or commit 1 missing", "state at height 0 is pruned").
    home, store = _home_with_blocks(tmp_path, 4)
    if pruned == "blocks":
        store.prune_blocks(3)
    else:
        store.prune_states(3)
    store.close()
    with pytest.raises(StorageError) as info:
        audit_home(home)
    message = str(info.value)
    assert "pruned" in message and "archive" in message, message
    assert "missing" not in message, message


def _hostile_home(tmp_path, chain_id: str = "audit-test"):
    """A four-producer localnet's first home, one block in, and every producer's key:
    the operator below writes blocks into its store directly, as a hostile one can
    (``ChainStore.commit_block`` checks no signature and executes nothing)."""
    layout = create_localnet(tmp_path / "net", 4, "", chain_id)
    genesis = load_genesis(layout.genesis_path)
    keys = {k.public_key: k for k in (load_key(n.key_path, "") for n in layout.nodes)}
    config = load_config(layout.nodes[0].home)
    store = config.storage.open_store(layout.nodes[0].home / config.data_dir)
    chain = Chain(store, genesis, build_registry())
    executed = chain.build([], keys[chain.validators.proposer(1, 0)], genesis.genesis_time_ms + 1)
    certificate = make_commit(keys.values(), genesis.chain_id, 1, 0, executed.block.hash)
    chain.commit(executed, certificate)
    return layout, genesis, keys, store, chain


def _lie(genesis, keys, store, chain, lie: str) -> None:
    """Store block 2 with ``lie`` in it, its certificate signed by every producer unless
    the lie is in the certificate."""
    proposer = keys[chain.validators.proposer(2, 0)]
    executed = chain.build([], proposer, chain.head.time_ms + 1_000)
    header, changes, update = executed.block.header, executed.result.changes, executed.tree_update
    if lie == "state root":
        # Coins minted out of nothing: a state the block's execution never made.
        changes = {**changes, account_key(bytes(20)): Account(10**9, 0).encode()}
        update = store.prepare_state(changes)
        header = dataclasses.replace(header, state_root=update.root)
    elif lie == "receipt root":
        # (The roots of an empty list are zeros: a root of ones commits to something.)
        header = dataclasses.replace(header, receipt_root=b"\x01" * 32)
    elif lie == "tx root":
        header = dataclasses.replace(header, tx_root=b"\x01" * 32)
    elif lie == "time":
        header = dataclasses.replace(header, time_ms=chain.head.time_ms)
    elif lie == "producer":
        other = next(k for k in keys if k != proposer.public_key)
        header = dataclasses.replace(header, producer=other)
    elif lie == "producer set":
        # Three of the four: a set no election made.
        header = dataclasses.replace(header, producer_set_hash=ValidatorSet.of(list(keys)[:3]).hash)
    block = Block(header, executed.block.txs)
    signers = list(keys.values())
    certificate = make_commit(signers, genesis.chain_id, 2, 0, block.hash)
    sigs = certificate.signatures
    if lie == "too few":
        sigs = sigs[:2]
    elif lie == "repeated":
        sigs = (sigs[0], sigs[0], sigs[1])
    elif lie == "non-producer":
        stranger = make_commit([PrivateKey.generate()], genesis.chain_id, 2, 0, block.hash)
        sigs = tuple(sorted(sigs[:2] + stranger.signatures, key=lambda s: s.validator))
    certificate = dataclasses.replace(certificate, signatures=sigs)
    store.commit_block(
        block, certificate, executed.receipts, changes, update, block_events=executed.block_events
    )


@pytest.mark.parametrize(
    "lie, says",
    [
        ("state root", "state root"),
        ("receipt root", "receipt root"),
        ("tx root", "tx root"),
        ("time", "expected after"),
        ("producer", "expected"),
        ("producer set", "producer set"),
        ("too few", "2 precommits, expected at least 3"),
        ("repeated", "unique and sorted"),
        ("non-producer", "non-producer"),
    ],
)
def test_a_block_or_certificate_the_operator_forged_is_refused(tmp_path, lie, says):
    # Even signed by every producer: the audit re-executes, so no coalition of any size
    # gets a state, receipt or tx root past it; and a certificate must hold a quorum of
    # the set the replayed state elects, each signer once.
    _layout, genesis, keys, store, chain = _hostile_home(tmp_path)
    _lie(genesis, keys, store, chain, lie)
    home = _layout.nodes[0].home
    store.close()
    with pytest.raises(InvalidBlock, match=says):
        audit_home(home)


def test_a_chain_replays_from_the_auditor_s_genesis_not_the_one_in_the_home(tmp_path):
    # The home's genesis.json is the operator's word: one of its own making (the same
    # chain id, its own keys as the validators) makes a chain it signed alone replay
    # clean from it. The auditor's copy (--genesis, or the keyring's pin) refuses it.
    forged, _genesis, _keys, store, _chain = _hostile_home(tmp_path / "forged")
    store.close()
    home = forged.nodes[0].home
    trusted = create_localnet(tmp_path / "consortium", 4, "", "audit-test")
    runner = CliRunner()
    done = runner.invoke(main, ["audit", "verify", "--home", str(home)], env={})
    assert done.exit_code == 0, done.output
    assert f"genesis {forged.genesis.hash.hex()}" in done.stdout
    # Without a genesis of its own, the auditor is told whose it replayed from.
    assert "the node operator's" in " ".join(done.stderr.split())
    argv = ["audit", "verify", "--home", str(home), "--genesis", str(trusted.genesis_path)]
    done = runner.invoke(main, argv)
    assert done.exit_code != 0
    assert f"the genesis audited against hashes to {trusted.genesis.hash.hex()}" in done.output
    keyring = tmp_path / "auditor"
    pin_genesis(keyring, trusted.genesis)
    done = runner.invoke(main, ["audit", "verify", "--home", str(home), "--keyring", str(keyring)])
    assert done.exit_code != 0
    assert f"store was made from genesis {forged.genesis.hash.hex()}" in done.output
    with pytest.raises(InvalidBlock):
        audit_home(home, genesis=trusted.genesis)
    assert audit_home(home, genesis=forged.genesis).height == 1


def test_the_operator_s_block_without_a_lie_audits_clean(tmp_path):
    # The refusals above are the lies', not the way the blocks were written.
    layout, genesis, keys, store, chain = _hostile_home(tmp_path)
    _lie(genesis, keys, store, chain, "none")
    store.close()
    assert audit_home(layout.nodes[0].home).height == 2


def _home_with_a_transfer(tmp_path):
    """A one-producer localnet's home, two blocks in: block 1 holds a transfer of the
    faucet's, so the tx index holds one entry."""
    layout = create_localnet(tmp_path / "net", 1, "")
    genesis = load_genesis(layout.genesis_path)
    producer = load_key(layout.nodes[0].key_path, "")
    faucet = load_key(layout.faucet_key_path, "")
    config = load_config(layout.nodes[0].home)
    data_dir = layout.nodes[0].home / config.data_dir
    store = config.storage.open_store(data_dir)
    chain = Chain(store, genesis, build_registry())
    body = TxBody(0, genesis.params.min_fee, 50, "transfer", Transfer(bytes(20), 7).encode())
    raw = sign_tx(faucet, genesis.chain_id, body).encode()
    paid = verify_signed_tx(raw, genesis.chain_id, chain.registry, genesis.params.max_tx_bytes)
    for h, txs in ((1, [paid]), (2, [])):
        executed = chain.build(txs, producer, genesis.genesis_time_ms + h * 1_000)
        chain.commit(executed, make_commit([producer], genesis.chain_id, h, 0, executed.block.hash))
    block = store.get_block(2)
    assert block is not None
    store.close()
    return layout.nodes[0].home, data_dir, tx_hash(raw), block.hash, faucet.address


@pytest.mark.parametrize(
    "lie, says",
    [
        # A payment no block holds, answered as committed (GET /v1/txs/{hash}).
        ("phantom tx", "tx index holds"),
        # A payment a block holds, answered as unknown.
        ("dropped tx", "tx index lacks"),
        # Another height and place: another receipt answered as its own.
        ("moved tx", "tx index holds"),
        ("phantom block", "block index holds"),
        ("moved block", "block index holds"),
        # Coins minted out of nothing in what unproven account reads answer from (and
        # what the node's own execution reads).
        ("balance", "flat state holds"),
        ("deleted account", "flat state lacks"),
    ],
)
def test_an_index_the_operator_forged_beside_valid_blocks_is_refused(tmp_path, lie, says):
    # Every block, certificate, receipt and root is genuine: the lie is only in what the
    # node keeps beside them and answers unproven reads from.
    home, data_dir, paid, block_2, faucet = _home_with_a_transfer(tmp_path)
    assert audit_home(home).height == 2
    location = encode_height(1) + encode_position(0)
    faucet_key = account_key(faucet)
    puts, deletes = {}, []
    if lie == "phantom tx":
        puts[TX_INDEX + b"\x07" * 32] = location
    elif lie == "dropped tx":
        deletes.append(TX_INDEX + paid)
    elif lie == "moved tx":
        puts[TX_INDEX + paid] = encode_height(2) + encode_position(0)
    elif lie == "phantom block":
        puts[BLOCK_HEIGHT + b"\x07" * 32] = encode_height(1)
    elif lie == "moved block":
        puts[BLOCK_HEIGHT + block_2] = encode_height(1)
    elif lie == "balance":
        puts[STATE + faucet_key] = Account(10**15, 1).encode()
    elif lie == "deleted account":
        deletes.append(STATE + faucet_key)
    raw_write(data_dir, puts, deletes)
    with pytest.raises(InvalidBlock, match=says):
        audit_home(home)


def _staking_home(tmp_path, epochs: int):
    """A staking chain of epochs of 4 blocks, ``epochs`` of them, each epoch's record
    kept at its last block as the node keeps it; the home, its data dir, and every
    producer's key by public key."""
    layout = create_localnet(tmp_path / "net", 1, "")
    home = layout.nodes[0].home
    config = load_config(home)
    data_dir = home / config.data_dir
    store = config.storage.open_store(data_dir)
    chain = Chain(store, STAKING_GENESIS, build_registry())
    by_key = {k.public_key: k for k in STAKING_KEYS}
    length = STAKING_GENESIS.params.epoch_length
    for h in range(1, epochs * length + 1):
        producers = chain.validators_for(h)
        proposer = by_key[producers.proposer(h, 0)]
        executed = chain.build([], proposer, STAKING_GENESIS.genesis_time_ms + h * 1_000)
        signers = [by_key[k] for k in producers.keys]
        chain.commit(
            executed, make_commit(signers, STAKING_GENESIS.chain_id, h, 0, executed.block.hash)
        )
        if h % length == 0:
            keep_epoch_record(store, h // length, length)
    store.close()
    return home, data_dir, by_key


def test_an_epoch_record_the_operator_swapped_is_refused(tmp_path):
    # The honest records audit clean, and a record of another epoch stored in one's
    # place (what GET /v1/epochs/{e} and joining nodes read) is refused.
    home, data_dir, _keys = _staking_home(tmp_path, 3)
    with ChainStore(data_dir) as store:
        first = store.get_epoch_record(1)
        assert first is not None and store.get_epoch_record(3) is not None
    assert audit_home(home, genesis=STAKING_GENESIS).height == 12
    raw_write(data_dir, {EPOCH + encode_height(2): first})
    with pytest.raises(InvalidBlock, match="record of epoch 2"):
        audit_home(home, genesis=STAKING_GENESIS)


@pytest.mark.parametrize("signers", ["producers", "one"])
def test_an_epoch_record_with_another_certificate_of_its_block_audits_by_its_signatures(
    tmp_path, signers
):
    # Certificates of one block differ from node to node (each holds the precommits it
    # saw, in the round it saw them): a record a state sync kept from a peer before the
    # sync began (the node then replayed from genesis instead) carries the peer's. It is
    # as final as the node's own and audits clean; a certificate without more than 2/3
    # of the block's producers is refused. Compared byte for byte, an honest archive
    # failed its audit.
    home, data_dir, by_key = _staking_home(tmp_path, 3)
    length = STAKING_GENESIS.params.epoch_length
    with ChainStore(data_dir) as store:
        block = store.get_block(2 * length)
        stored = store.get_epoch_record(2)
        assert block is not None and stored is not None
    record = EpochRecord.decode(stored)
    keys = [by_key[sig.validator] for sig in Commit.decode(record.commit).signatures]
    keys = keys if signers == "producers" else keys[:1]
    other = make_commit(keys, STAKING_GENESIS.chain_id, 2 * length, 1, block.hash)
    assert other.encode() != record.commit
    swapped = dataclasses.replace(record, commit=other.encode()).encode()
    raw_write(data_dir, {EPOCH + encode_height(2): swapped})
    if signers == "producers":
        assert audit_home(home, genesis=STAKING_GENESIS).height == 3 * length
    else:
        with pytest.raises(InvalidBlock, match="record of epoch 2"):
            audit_home(home, genesis=STAKING_GENESIS)


def test_blocks_served_out_of_order_are_refused(tmp_path):
    # Two genuine blocks stored each under the other's height: the replay asks for each
    # height in turn and takes only the block that follows its head.
    home, data_dir, _paid, _block_2, _faucet = _home_with_a_transfer(tmp_path)
    with ChainStore(data_dir) as store:
        first, second = store.get_block_bytes(1), store.get_block_bytes(2)
    assert first is not None and second is not None
    raw_write(data_dir, {BLOCK + encode_height(1): second, BLOCK + encode_height(2): first})
    with pytest.raises(InvalidBlock, match="block height 2, expected 1"):
        audit_home(home)
