"""Building blocks on a real store: the proposer's time budget."""

from __future__ import annotations

import time
from dataclasses import replace

from core import PrivateKey, TxBody, sign_tx
from core.keystore import load_key
from genesis import GenesisAccount, create_localnet, load_genesis
from node.chain import Chain
from node.service import build_registry
from storage import ChainStore
from vm import Transfer, verify_signed_tx

SENDERS = [PrivateKey(i.to_bytes(32, "big")) for i in range(1, 601)]


def _setup(tmp_path):
    layout = create_localnet(tmp_path / "net", 1, "")
    g = load_genesis(layout.genesis_path)
    g = replace(g, accounts=g.accounts + tuple(GenesisAccount(k.address, 10**9) for k in SENDERS))
    producer = load_key(layout.nodes[0].key_path, "")
    return g, producer


def _chain(tmp_path, name, g) -> Chain:
    return Chain(ChainStore(tmp_path / name), g, build_registry())


def _transfers(chain: Chain, g) -> list:
    fee = g.params.min_fee
    body = TxBody(0, fee, 50, "transfer", Transfer(bytes(20), 1).encode())
    return [
        verify_signed_tx(sign_tx(k, g.chain_id, body).encode(), g.chain_id, chain.registry, 10**5)
        for k in SENDERS
    ]


def test_a_spent_budget_ends_the_block_early_and_the_block_is_valid(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    executed = chain.build(
        vtxs, producer, chain.next_block_time(int(time.time() * 1000)), budget_s=0.0
    )
    included = executed.result.included
    # The clock is read between chunks: the first chunk always goes in, no more.
    assert 0 < len(included) < len(vtxs)
    assert included == vtxs[: len(included)]
    assert executed.result.rejected == []
    # The rest is not lost: nothing was refused, it waits for the next block.
    other = _chain(tmp_path, "b", g).verify(executed.block)
    assert other.tree_update.root == executed.block.header.state_root


def test_without_a_budget_every_transaction_fits(tmp_path):
    g, producer = _setup(tmp_path)
    chain = _chain(tmp_path, "a", g)
    vtxs = _transfers(chain, g)
    executed = chain.build(vtxs, producer, chain.next_block_time(int(time.time() * 1000)))
    assert executed.result.included == vtxs
    generous = _chain(tmp_path, "b", g).build(
        vtxs, producer, chain.next_block_time(int(time.time() * 1000)), budget_s=60.0
    )
    assert generous.block.header.state_root == executed.block.header.state_root
