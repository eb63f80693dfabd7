"""Read-only staking routes against a real single-validator node."""

from __future__ import annotations

import asyncio

from consensus import is_member
from consensus.governance import (
    PROPOSE_ADMIT_MEMBER,
    PROPOSE_REMOVE_MEMBER,
    VOTE_PROPOSAL,
    ProposeAdmitMember,
    ProposeRemoveMember,
    VoteProposal,
)
from consensus.staking import Bond, VoteProducers
from core import PrivateKey, TxBody, sign_tx
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


async def test_a_producer_removed_by_governance_may_still_connect(node_client):
    """Removal must not cut off a producer of the running epoch (it could no longer vote)."""
    client, node, _faucet = node_client
    me = node.key.public_key
    newcomer = PrivateKey.generate().public_key
    chain_id = node.genesis.chain_id
    steps = [
        (PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(newcomer, "newcomer")),
        (VOTE_PROPOSAL, VoteProposal(1)),
        (PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(me)),
        (VOTE_PROPOSAL, VoteProposal(2)),
    ]
    for nonce, (tx_type, payload) in enumerate(steps):
        body = TxBody(nonce, 1000, 1000, tx_type, payload.encode())
        resp = await client.post(
            "/v1/txs", json={"tx": sign_tx(node.key, chain_id, body).encode().hex()}
        )
        done = await wait_committed(client, (await resp.json())["hash"])
        assert done["receipt"]["code"] == "ok", done
    assert not is_member(node.chain.state, me)
    # Still the producer (the set is fixed for its epoch, and the next election finds
    # no other eligible candidate), so its node must stay reachable.
    assert me in node.chain.validators
    assert node.is_member(me)
    assert node.is_member(newcomer)
    assert not node.is_member(PrivateKey.generate().public_key)
