"""Read-only staking routes against a real single-validator node."""

from __future__ import annotations

import asyncio

from consensus.staking import Bond, VoteProducers
from core import TxBody, sign_tx
from genesis.localnet import VALIDATOR_SELF_BOND


async def wait_committed(client, tx_hash, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        resp = await client.get(f"/v1/txs/{tx_hash}")
        doc = await resp.json()
        if doc.get("status") == "committed":
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{tx_hash} not committed")


async def test_candidates_and_producers_follow_bonds_and_ballots(node_client):
    client, node, faucet = node_client
    me = node.key.public_key.hex()

    doc = await (await client.get("/v1/staking/candidates")).json()
    (cand,) = doc["candidates"]
    assert cand["public_key"] == me and cand["member"] == "node0"
    assert cand["weight"] == cand["self_bond"] == VALIDATOR_SELF_BOND
    assert cand["jailed"] is False
    assert doc["totals"] == {"bonded": VALIDATOR_SELF_BOND, "unbonding": 0, "slashed": 0}

    doc = await (await client.get("/v1/staking/producers")).json()
    assert doc["epoch"] == 0 and doc["epoch_length"] == node.genesis.params.epoch_length
    assert doc["current"]["producers"] == [me]
    assert doc["current"]["weights"] == [VALIDATOR_SELF_BOND]
    assert doc["next"] is None  # elected only at the epoch's last block

    # The faucet bonds and approves the node: its tally grows, its own bond does not.
    chain_id = node.genesis.chain_id
    for nonce, (tx_type, payload) in enumerate(
        [("bond", Bond(5000)), ("vote_producers", VoteProducers((node.key.public_key,)))]
    ):
        body = TxBody(nonce, 1000, 1000, tx_type, payload.encode())
        resp = await client.post(
            "/v1/txs", json={"tx": sign_tx(faucet, chain_id, body).encode().hex()}
        )
        done = await wait_committed(client, (await resp.json())["hash"])
        assert done["receipt"]["code"] == "ok", done
    doc = await (await client.get("/v1/staking/candidates")).json()
    (cand,) = doc["candidates"]
    assert cand["weight"] == VALIDATOR_SELF_BOND + 5000
    assert cand["self_bond"] == VALIDATOR_SELF_BOND
    assert doc["totals"]["bonded"] == VALIDATOR_SELF_BOND + 5000
