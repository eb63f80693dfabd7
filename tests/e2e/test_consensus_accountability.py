"""Accountability and election with real processes.

Five validators, short epochs. The story, each step checked on chain:

1. Governance: four of the five producers pass ``max_producers = 4`` (never fewer:
   a set under four tolerates no fault); from the next election the four lowest
   keys produce (equal weights, ties by key) and the highest key, D, is a
   candidate left out.
2. Stake votes: a funded account bonds and approves D; at the next epoch
   boundary D is in and the fourth-lowest key is out.
3. D runs through the test-only entry point (``tests/e2e/byzantine.py``,
   ``double-sign``). As a producer it signs conflicting votes; the other nodes
   turn them into ``submit_evidence`` transactions on their own; D is slashed and jailed, and the next election
   leaves it out.
"""

from __future__ import annotations

from typing import Any

from consensus import ValidatorSet
from consensus.governance import ProposeParamChange, VoteProposal
from consensus.staking import Bond, VoteProducers
from core import PrivateKey, address_of, format_address
from core.keystore import load_key
from genesis import create_localnet
from genesis.localnet import VALIDATOR_SELF_BOND
from tests.e2e.helpers import (
    Cluster,
    Signer,
    assert_one_chain,
    faucet_key,
    header,
    http_json,
    submit,
    tx_status,
    wait_tx,
    wait_until,
)
from vm import ChainParams

EPOCH = 12
JAIL_BLOCKS = 1000
SLASH_BPS = 500
VOTER_BOND = 3 * VALIDATOR_SELF_BOND


def events(doc: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [e["attrs"] for e in doc["receipt"]["events"] if e["kind"] == kind]


def next_election(height: int) -> int:
    """The first election height strictly after ``height`` (the last block of its epoch)."""
    return (height // EPOCH + 1) * EPOCH


def producers(url: str) -> tuple[int, list[str]]:
    """(height, producers of the next block) as the node reports them."""
    status = http_json(url + "/v1/status")
    return status["height"], sorted(status["producers"])


def candidates(url: str) -> dict[str, Any]:
    doc = http_json(url + "/v1/staking/candidates")
    return {"totals": doc["totals"], **{c["public_key"]: c for c in doc["candidates"]}}


def test_double_signer_jailed_and_slashed_stake_votes_move_producers(tmp_path):
    params = ChainParams.default().replace(
        epoch_length=EPOCH,
        param_change_delay_blocks=1,
        jail_blocks=JAIL_BLOCKS,
        slash_bps=SLASH_BPS,
    )
    layout = create_localnet(tmp_path / "net", 5, "", params=params, block_interval_ms=250)
    by_key = sorted(layout.nodes, key=lambda n: n.public_key)
    low = by_key[:4]  # producers once max_producers is 4 (equal weights, ties by key)
    d = by_key[4]  # the candidate left out, later voted in, later double-signing
    keys = [n.public_key.hex() for n in by_key]
    d_key = d.public_key.hex()
    chain_id = layout.chain_id

    with Cluster([n.home for n in layout.nodes], timeout_propose_ms=600) as net:
        nodes = {n.index: net[n.index] for n in layout.nodes}
        honest = [nodes[n.index] for n in low]
        url = honest[0].url
        # D joins later (a missed proposer slot costs one short round meanwhile).
        net.start([n.index for n in low])
        net.wait_height(1, honest, timeout=60)
        assert producers(url)[1] == sorted(keys), "all five produce in epoch 0"

        # --- 1. governance: max_producers 5 -> 4 -------------------------------------
        signers = {n.index: Signer(load_key(n.key_path, ""), chain_id) for n in low}
        for s in signers.values():
            s.sync_nonce(url)
        first = signers[low[0].index]
        doc = wait_tx(
            url,
            submit(
                url,
                first.sign("propose_param_change", ProposeParamChange("max_producers", 4).encode()),
            ),
        )
        assert doc["receipt"]["code"] == "ok", doc
        proposal_id = int(events(doc, "proposal_created")[0]["proposal_id"])
        votes = [
            submit(
                honest[i].url,
                signers[n.index].sign("vote_proposal", VoteProposal(proposal_id).encode()),
            )
            for i, n in enumerate(low)
        ]
        vote_docs = [wait_tx(url, h) for h in votes]
        assert all(v["receipt"]["code"] == "ok" for v in vote_docs), vote_docs
        passed = [v for v in vote_docs if events(v, "param_change_scheduled")]
        assert len(passed) == 1, "exactly the fourth approval passes it (3 * 4 > 2 * 5)"
        effective = int(events(passed[0], "param_change_scheduled")[0]["effective_height"])
        h1 = -(-effective // EPOCH) * EPOCH  # first election with max_producers = 4
        net.wait_height(h1 + 1, honest, timeout=60)
        height, now = producers(url)
        assert now == sorted(keys[:4]), (height, now)
        doc = http_json(url + "/v1/staking/producers")
        assert doc["max_producers"] == 4 and sorted(doc["current"]["producers"]) == keys[:4]
        # Headers commit to the set: five producers up to the election, four after.
        old_hash = ValidatorSet.of(n.public_key for n in low).hash.hex()
        assert (
            header(url, h1)["producer_set_hash"]
            == ValidatorSet.of(n.public_key for n in by_key).hash.hex()
        )
        assert header(url, h1 + 1)["producer_set_hash"] == old_hash

        # D starts now, double-signing: as a non-producer it signs nothing.
        nodes[d.index].byzantine("double-sign")
        net.start([d.index])

        # --- 2. stake votes: bond and approve D --------------------------------------
        faucet = Signer(faucet_key(layout.dir), chain_id)
        faucet.sync_nonce(url)
        voter = Signer(PrivateKey.generate(), chain_id)
        assert (
            wait_tx(url, submit(url, faucet.transfer(voter.key.address, 10 * VOTER_BOND)))[
                "receipt"
            ]["code"]
            == "ok"
        )
        # Ballot early in an epoch, so that the old set can be seen before the boundary.
        wait_until(lambda: honest[0].height() % EPOCH in (1, 2), 30, "the start of an epoch")
        bond = submit(honest[1].url, voter.sign("bond", Bond(VOTER_BOND).encode()))
        ballot = submit(
            honest[1].url, voter.sign("vote_producers", VoteProducers((d.public_key,)).encode())
        )
        assert wait_tx(url, bond)["receipt"]["code"] == "ok"
        voted = wait_tx(url, ballot)
        assert voted["receipt"]["code"] == "ok", voted
        h2 = next_election(voted["height"])
        cands = candidates(url)
        assert cands[d_key]["weight"] == VALIDATOR_SELF_BOND + VOTER_BOND
        # Until the boundary the old set stays (sets are fixed for their epoch).
        height, before = producers(url)
        assert height < h2, "the test was too slow to see the set before the boundary"
        assert before == sorted(keys[:4])
        net.wait_height(h2, honest, timeout=60)
        height, after = producers(url)
        moved_in = sorted([d_key, *keys[:3]])
        assert after == moved_in, (height, after)
        new_hash = ValidatorSet.of(bytes.fromhex(k) for k in moved_in).hash.hex()
        net.wait_height(h2 + 1, honest, timeout=30)
        assert header(url, h2)["producer_set_hash"] == old_hash
        assert header(url, h2 + 1)["producer_set_hash"] == new_hash

        # --- 3. D double-signs as a producer: evidence, slash, jail -------------------
        scanned = {"next": h2 + 1}
        found: list[dict[str, Any]] = []

        def evidence_landed() -> bool:
            top = honest[0].height()
            for h in range(scanned["next"], top + 1):
                block = http_json(f"{url}/v1/blocks/{h}")
                for tx in block["txs"]:
                    if tx.get("type") == "submit_evidence":
                        found.append({"height": h, "tx": tx, "doc": tx_status(url, tx["hash"])})
                scanned["next"] = h + 1
            return any(f["doc"]["receipt"]["code"] == "ok" for f in found)

        wait_until(evidence_landed, 60, "evidence of D's double signing in a block")
        punished = [f for f in found if f["doc"]["receipt"]["code"] == "ok"]
        first_ok = punished[0]
        h_e = first_ok["height"]
        honest_addresses = {format_address(address_of(n.public_key)) for n in low}
        (offence,) = events(first_ok["doc"], "double_sign")
        assert offence["validator"] == d_key
        assert int(offence["height"]) > h2  # a vote D signed as a producer
        assert int(offence["slashed"]) == VALIDATOR_SELF_BOND * SLASH_BPS // 10_000
        assert int(offence["jailed_until"]) == h_e + JAIL_BLOCKS
        # Later duplicates of one offence are refused and punish nothing.
        for f in found:
            code = f["doc"]["receipt"]["code"]
            assert code in ("ok", "duplicate_evidence"), f["doc"]

        # The next election leaves the jailed D out.
        h3 = next_election(h_e)
        net.wait_height(h3 + 2, honest, timeout=60)
        height, final = producers(url)
        assert final == sorted(keys[:4]), (height, final)
        assert d_key not in final

        # Once no more evidence can be pending, the books balance exactly: the slashes
        # in the evidence receipts are what D's bond lost and what the totals count.
        net.wait_height(h3 + 4, honest, timeout=30)

        last: dict[str, Any] = {}

        def books_balance() -> dict[str, Any] | None:
            evidence_landed()
            cands = candidates(url)
            slashed = sum(int(e["slashed"]) for f in found for e in events(f["doc"], "double_sign"))
            last.update(receipts=slashed, totals=cands["totals"], d=cands[d_key])
            balanced = (
                cands["totals"]["slashed"] == slashed
                and cands[d_key]["self_bond"] == VALIDATOR_SELF_BOND - slashed
            )
            return cands if balanced and slashed > 0 else None

        try:
            cands = wait_until(books_balance, 20, "the slashes to balance")
        except AssertionError as exc:
            raise AssertionError(
                f"slashes in receipts, totals and D's bond differ: {last}"
            ) from exc
        # Submitted by the other nodes on their own: each that saw the conflict reports it.
        reporters = {f["tx"]["sender"] for f in found} & honest_addresses
        assert len(reporters) >= 2, [f["tx"] for f in found]
        dc = cands[d_key]
        assert dc["jailed"] is True
        assert dc["jailed_until"] >= h_e + JAIL_BLOCKS
        # Voters are not slashed: D's tally lost exactly what its own bond lost.
        assert dc["weight"] == dc["self_bond"] + VOTER_BOND
        for k in keys[:4]:
            assert cands[k]["jailed"] is False and cands[k]["self_bond"] == VALIDATOR_SELF_BOND

        # Through all of it, one chain on every node, D's included.
        wait_until(lambda: nodes[d.index].height() >= h3, 30, "D to follow the chain")
        assert_one_chain(net.nodes)
