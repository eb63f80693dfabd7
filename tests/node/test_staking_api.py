"""Read-only staking routes against a real single-validator node."""

from __future__ import annotations

import asyncio

from consensus import is_member
from consensus.governance import (
    PROPOSE_ADMIT_MEMBER,
    PROPOSE_PARAM_CHANGE,
    PROPOSE_REMOVE_MEMBER,
    VOTE_PROPOSAL,
    ProposeAdmitMember,
    ProposeParamChange,
    ProposeRemoveMember,
    VoteProposal,
)
from consensus.staking import SET_MEMBER_ADDRESS, Bond, SetMemberAddress, VoteProducers
from core import PrivateKey, TxBody, sign_tx
from genesis.localnet import VALIDATOR_SELF_BOND
from p2p import PeerAddress
from vm import Transfer


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


async def test_members_proposals_and_params_follow_governance(node_client):
    client, node, _faucet = node_client
    me = node.key.public_key
    chain_id = node.genesis.chain_id
    newcomer = PrivateKey.generate().public_key

    doc = await (await client.get("/v1/staking/members")).json()
    assert doc["members"] == [
        {
            "public_key": me.hex(),
            "name": "node0",
            "admitted_height": 0,
            "candidate": True,
            "address": None,
        }
    ]
    doc = await (await client.get("/v1/params")).json()
    assert doc["params"] == node.genesis.to_json()["params"] and doc["pending"] == []
    doc = await (await client.get("/v1/governance/proposals")).json()
    assert doc["proposals"] == [] and doc["next_id"] == 1

    steps = [
        (PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(newcomer, "newcomer")),
        (PROPOSE_PARAM_CHANGE, ProposeParamChange("min_fee", 1500)),
        (VOTE_PROPOSAL, VoteProposal(1)),
        (VOTE_PROPOSAL, VoteProposal(2)),
        (SET_MEMBER_ADDRESS, SetMemberAddress("node0.example:26656")),
    ]
    heights = []
    for nonce, (tx_type, payload) in enumerate(steps):
        body = TxBody(nonce, 1000, 1000, tx_type, payload.encode())
        resp = await client.post(
            "/v1/txs", json={"tx": sign_tx(node.key, chain_id, body).encode().hex()}
        )
        done = await wait_committed(client, (await resp.json())["hash"])
        assert done["receipt"]["code"] == "ok", done
        heights.append(done["height"])

    doc = await (await client.get("/v1/staking/members")).json()
    admitted = {m["name"]: m for m in doc["members"]}["newcomer"]
    assert admitted == {
        "public_key": newcomer.hex(),
        "name": "newcomer",
        "admitted_height": heights[2],
        "candidate": False,
        "address": None,
    }
    # The address a member signed is what every node shows (and dials).
    assert {m["name"]: m for m in doc["members"]}["node0"]["address"] == "node0.example:26656"
    doc = await (await client.get("/v1/governance/proposals?start=1&limit=1")).json()
    assert doc["next_id"] == 3 and [p["id"] for p in doc["proposals"]] == [1]
    (first,) = doc["proposals"]
    assert first["action"] == "admit_member" and first["status"] == "passed"
    assert first["voters"] == [me.hex()] and first["passed_height"] == heights[2]
    doc = await (await client.get("/v1/governance/proposals/2")).json()
    change = doc["proposal"]
    assert (change["action"], change["name"], change["value"]) == ("change_param", "min_fee", 1500)
    assert change["public_key"] is None
    resp = await client.get("/v1/governance/proposals/3")
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    resp = await client.get("/v1/governance/proposals?limit=0")
    assert resp.status == 400 and (await resp.json())["code"] == "bad_param"

    # The change waits for its height, then is in force: clients read fees from here.
    effective = heights[3] + node.genesis.params.param_change_delay_blocks
    doc = await (await client.get("/v1/params")).json()
    if doc["height"] + 1 < effective:
        assert doc["pending"] == [
            {"effective_height": effective, "proposal_id": 2, "name": "min_fee", "value": 1500}
        ]
        assert doc["params"]["min_fee"] == 1000
    for _ in range(200):
        doc = await (await client.get("/v1/params")).json()
        if doc["height"] + 1 >= effective:
            break
        await asyncio.sleep(0.05)
    assert doc["params"]["min_fee"] == 1500 and doc["pending"] == []


async def test_members_are_dialed_at_the_address_they_set_on_chain(node_client):
    """A member's on-chain address becomes a p2p dial target on every node; one per member,
    replaced when it sets another, gone when governance removes the member."""
    client, node, faucet = node_client
    chain_id = node.genesis.chain_id
    newcomer = PrivateKey.generate()
    key = newcomer.public_key
    nonces = {}

    async def run(signer, tx_type, payload):
        nonce = nonces.get(signer.public_key, 0)
        nonces[signer.public_key] = nonce + 1
        body = TxBody(nonce, 1000, 1000, tx_type, payload.encode())
        resp = await client.post(
            "/v1/txs", json={"tx": sign_tx(signer, chain_id, body).encode().hex()}
        )
        done = await wait_committed(client, (await resp.json())["hash"])
        assert done["receipt"]["code"] == "ok", done

    async def dialed(predicate):
        # The node reads the addresses after the commit, on its loop: let it run.
        for _ in range(250):
            if predicate(node.p2p.dial_addresses()):
                return True
            await asyncio.sleep(0.02)
        return False

    await run(node.key, PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(key, "newcomer"))
    await run(node.key, VOTE_PROPOSAL, VoteProposal(1))
    await run(faucet, "transfer", Transfer(newcomer.address, 10**6))
    assert key not in node.p2p.dial_addresses()
    await run(newcomer, SET_MEMBER_ADDRESS, SetMemberAddress("127.0.0.1:1"))
    assert await dialed(lambda d: d.get(key) == PeerAddress(key, "127.0.0.1", 1))
    # One address per member: the next one replaces it.
    await run(newcomer, SET_MEMBER_ADDRESS, SetMemberAddress("[::1]:2"))
    assert await dialed(lambda d: d.get(key) == PeerAddress(key, "::1", 2))
    # A node never dials itself, whatever its own member record says.
    await run(node.key, SET_MEMBER_ADDRESS, SetMemberAddress("127.0.0.1:3"))
    # Removed: no longer dialed.
    await run(node.key, PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(key))
    await run(node.key, VOTE_PROPOSAL, VoteProposal(2))
    assert await dialed(lambda d: key not in d)
    assert node.key.public_key not in node.p2p.dial_addresses()
