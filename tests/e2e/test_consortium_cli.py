"""A consortium set up and operated with the CLI only, as four operators would (real processes).

Four homes are made with ``liveledger init``, each member signs a contribution,
a coordinator assembles genesis, every member checks the hash and installs it,
and the four nodes start on loopback and finalize blocks. Then every staking and
governance command and read runs against the live nodes, with its main refusal:
a fifth member is admitted by governance and stands for election, a parameter
change passes and the next transaction pays the new fee without being told.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core import PrivateKey, Vote
from core.keystore import load_key
from core.types import VoteType
from genesis import free_ports, load_genesis
from tests.e2e.helpers import Cluster, assert_one_chain, http_json, run_cli, wait_until

STAKE = 1_000_000
JAIL_BLOCKS = 30
MEMBERS = ("platform", "brand-a", "brand-b", "logistics")


def ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


def refused(code: int, why: str, *args: str) -> str:
    """The command fails with exit ``code`` and ``why`` in its error output."""
    result = run_cli(*args)
    assert result.returncode == code, f"{args}: exit {result.returncode}: {result.stderr}"
    assert why in result.stderr, f"{args}: {result.stderr}"
    return result.stderr


def events(stdout: str) -> dict[str, dict[str, str]]:
    """The ``kind k=v ...`` lines a waited command prints, by kind."""
    out = {}
    for line in stdout.splitlines():
        kind, *attrs = line.split()
        if attrs and all("=" in a for a in attrs):
            out[kind] = dict(a.split("=", 1) for a in attrs)
    return out


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("consortium")
    chain_id = "consortium-test-1"
    ports = free_ports(2 * len(MEMBERS))
    homes = [root / name for name in MEMBERS]
    for i, home in enumerate(homes):
        out = ok(
            "init",
            "--home",
            str(home),
            "--moniker",
            MEMBERS[i],
            "--p2p-listen",
            f"127.0.0.1:{ports[i]}",
            "--http-listen",
            f"127.0.0.1:{ports[len(MEMBERS) + i]}",
        )
        assert re.search(r"node key\s+[0-9a-f]{64}", out), out
    keyring = root / "keyring"
    faucet = ok("keys", "new", "faucet", "--keyring", str(keyring)).split()[-1]
    (root / "contributions").mkdir()
    files = []
    for home in homes:
        path = root / "contributions" / f"{home.name}.json"
        ok("genesis", "contribute", "--home", str(home), "--chain-id", chain_id,
           "--stake", str(STAKE), "-o", str(path))  # fmt: skip
        files.append(str(path))
    genesis_file = root / "genesis.json"
    assembled = ok(
        "genesis", "assemble", "--chain-id", chain_id, *files, "-o", str(genesis_file),
        "--account", f"{faucet}={10**15}", "--registrar", faucet,
        "--param", f"jail_blocks={JAIL_BLOCKS}",
    )  # fmt: skip
    genesis_hash = assembled.strip()
    assert ok("genesis", "hash", str(genesis_file)).strip() == genesis_hash
    for home in homes:
        out = ok("genesis", "install", "--home", str(home), str(genesis_file),
                 "--expect-hash", genesis_hash)  # fmt: skip
        assert "peers: 3 validator(s)" in out
    with Cluster(homes, block_interval_ms=300) as cluster:
        # One node logs JSON lines, as an operator feeding a log pipeline would run it.
        cluster[0].argv += ["--log-format", "json"]
        cluster.start()
        yield {
            "root": root,
            "chain_id": chain_id,
            "homes": homes,
            "keyring": str(keyring),
            "faucet": faucet,
            "genesis_file": genesis_file,
            "genesis_hash": genesis_hash,
            "cluster": cluster,
            "url": cluster[0].url,
        }


def test_four_members_set_up_by_the_ceremony_reach_finality(consortium):
    cluster = consortium["cluster"]
    cluster.wait_height(3, timeout=90)
    heights = assert_one_chain(cluster.nodes)
    assert min(heights.values()) >= 3
    for node in cluster.nodes:
        status = node.status()
        assert status["genesis_hash"] == consortium["genesis_hash"]
        assert len(status["producers"]) == 4
    wait_until(lambda: all(len(n.status()["peers"]) == 3 for n in cluster.nodes), 30, "mesh")
    genesis = load_genesis(consortium["genesis_file"])
    assert [v.name for v in genesis.validators] == list(MEMBERS)
    # The JSON log carries the fields operators grep for.
    lines = (cluster[0].home / "test-node.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    final = [r for r in records if r["message"].startswith("finalized")]
    assert final and all(type(r["height"]) is int and type(r["round"]) is int for r in final)
    assert any(r.get("peer") for r in records if "connected" in r["message"])


def test_the_ceremony_refuses_what_it_must(consortium, tmp_path):
    root, chain_id = consortium["root"], consortium["chain_id"]
    home = consortium["homes"][0]
    refused(2, "refusing to overwrite", "init", "--home", str(home), "--moniker", "again")
    # A contribution edited after signing (a bigger stake) is a forgery.
    original = json.loads((root / "contributions" / "platform.json").read_text())
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**original, "stake": STAKE * 10}))
    others = [str(root / "contributions" / f"{m}.json") for m in MEMBERS[1:]]
    args = ("genesis", "assemble", "--chain-id", chain_id, "-o", str(tmp_path / "g.json"))
    refused(2, "signature does not verify", *args, str(forged), *others)
    # The same contribution twice, and one for another chain.
    refused(2, "duplicate public key", *args, others[0], *others)
    refused(2, "is for chain", "genesis", "assemble", "--chain-id", "another-chain",
            *others, "-o", str(tmp_path / "g.json"))  # fmt: skip
    assert not (tmp_path / "g.json").exists()
    refused(2, "exists", *args[:-1], str(consortium["genesis_file"]), *others)
    # A member listening on every interface must say where peers reach it.
    lazy = tmp_path / "lazy"
    ok("init", "--home", str(lazy), "--moniker", "lazy")
    refused(2, "listen-on-all", "genesis", "contribute", "--home", str(lazy),
            "--chain-id", chain_id, "--stake", "1")  # fmt: skip
    # Install checks the hash members compared; a wrong one installs nothing.
    wrong = "00" * 32
    refused(2, "nothing installed", "genesis", "install", "--home", str(lazy),
            str(consortium["genesis_file"]), "--expect-hash", wrong)  # fmt: skip
    assert not (lazy / "genesis.json").exists()
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"chain_id": 1.5}')
    refused(2, "integers", "genesis", "hash", str(garbage))


def test_staking_commands_and_reads(consortium):
    url, keyring = consortium["url"], consortium["keyring"]
    homes = consortium["homes"]
    faucet = ("--keyring", keyring, "--from", "faucet", "--node", url, "--wait")

    params = json.loads(ok("query", "params", "--node", url))
    assert params["params"]["min_fee"] == 1000 and params["pending"] == []
    out = ok("staking", "bond", "--amount", "50000", *faucet)
    assert events(out)["bond"]["amount"] == "50000"
    # Each event once, as every waited command prints them.
    assert [line.split()[0] for line in out.splitlines()].count("bond") == 1, out
    refused(3, "insufficient_funds", "staking", "bond", "--amount", str(10**17), *faucet)
    ok("staking", "vote-producers", "platform", "brand-a", *faucet)
    refused(2, "neither a node key", "staking", "vote-producers", "nobody", *faucet)
    refused(2, "or --clear", "staking", "vote-producers", *faucet)
    candidates = json.loads(ok("query", "candidates", "--node", url))["candidates"]
    weights = {c["member"]: c["weight"] for c in candidates}
    assert weights["platform"] == weights["brand-a"] == STAKE + 50000
    assert weights["brand-b"] == STAKE
    out = ok("staking", "unbond", "--amount", "20000", *faucet)
    assert int(events(out)["unbond"]["release_height"]) > 0
    refused(3, "insufficient_bond", "staking", "unbond", "--amount", str(10**9), *faucet)
    ok("staking", "vote-producers", "--clear", *faucet)
    # A member's own transactions are signed with its node key (--home), sent to its node.
    refused(3, "already_candidate", "staking", "register-candidate", "--home", str(homes[0]),
            "--wait")  # fmt: skip
    refused(3, "not_jailed", "staking", "unjail", "--home", str(homes[1]), "--wait")
    refused(2, "sign with a node key", "staking", "unjail", "--node", url)
    members = json.loads(ok("query", "members", "--node", url))["members"]
    assert sorted(m["name"] for m in members) == sorted(MEMBERS)
    producers = json.loads(ok("query", "producers", "--node", url))
    assert len(producers["current"]["producers"]) == 4
    for read in ("members", "candidates", "producers", "proposals", "params"):
        refused(2, "unreachable", "query", read, "--node", "http://127.0.0.1:1")


def test_a_fifth_member_is_admitted_and_a_parameter_changes(consortium, tmp_path):
    url, keyring = consortium["url"], consortium["keyring"]
    homes = consortium["homes"]
    faucet = ("--keyring", keyring, "--from", "faucet", "--node", url, "--wait")
    newcomer = tmp_path / "regulator"
    out = ok("init", "--home", str(newcomer), "--moniker", "regulator",
             "--p2p-listen", "127.0.0.1:1", "--http-listen", "127.0.0.1:2")  # fmt: skip
    node_key = re.search(r"node key\s+([0-9a-f]{64})", out)[1]
    account = re.search(r"account\s+(ll1\w+)", out)[1]

    out = ok("gov", "propose-admit", "--public-key", node_key, "--name", "regulator",
             "--home", str(homes[0]), "--wait")  # fmt: skip
    proposal = events(out)["proposal_created"]["proposal_id"]
    refused(3, "not_member", "gov", "propose-admit", "--public-key", node_key,
            "--name", "x", *faucet)  # fmt: skip
    for home in homes[:3]:
        out = ok("gov", "vote", proposal, "--home", str(home), "--wait")
    assert events(out)["vote_proposal"]["passed"] == "1"
    assert "member_admitted" in events(out)
    refused(3, "proposal_closed", "gov", "vote", proposal, "--home", str(homes[3]), "--wait")
    refused(3, "unknown_proposal", "gov", "vote", "999", "--home", str(homes[3]), "--wait")
    members = json.loads(ok("query", "members", "--node", url))["members"]
    assert "regulator" in {m["name"] for m in members}
    shown = json.loads(ok("query", "proposals", proposal, "--node", url))["proposal"]
    assert shown["status"] == "passed" and len(shown["voters"]) == 3
    refused(2, "not_found", "query", "proposals", "999", "--node", url)

    # The new member funds its node key's account, stands and bonds (it has no node yet:
    # it signs with its home's key and sends to a running member's node).
    ok("tx", "transfer", "--to", account, "--amount", str(10**8), *faucet)
    mine = ("--home", str(newcomer), "--node", url, "--wait")
    ok("staking", "register-candidate", *mine)
    ok("staking", "bond", "--amount", str(STAKE), *mine)
    candidates = json.loads(ok("query", "candidates", "--node", url))["candidates"]
    regulator = {c["member"]: c for c in candidates}["regulator"]
    assert regulator["self_bond"] == STAKE and regulator["jailed"] is False

    # Governance raises the minimum fee; the CLI pays the fee in force unasked.
    refused(3, "param_not_governable", "gov", "propose-param", "epoch_length", "5",
            "--home", str(homes[1]), "--wait")  # fmt: skip
    refused(3, "unknown_member", "gov", "propose-remove", PrivateKey.generate().public_key.hex(),
            "--home", str(homes[1]), "--wait")  # fmt: skip
    out = ok("gov", "propose-param", "min_fee", "1500", "--home", str(homes[1]), "--wait")
    change = events(out)["proposal_created"]["proposal_id"]
    for home in homes[:3]:
        out = ok("gov", "vote", change, "--home", str(home), "--wait")
    effective = int(events(out)["param_change_scheduled"]["effective_height"])
    latest = json.loads(ok("query", "proposals", "--node", url))["proposals"]
    assert [p["id"] for p in latest][-2:] == [int(proposal), int(change)]

    def in_force() -> bool:
        return http_json(f"{url}/v1/params")["params"]["min_fee"] == 1500

    wait_until(in_force, 60, f"min_fee 1500 from height {effective}")
    out = ok("staking", "bond", "--amount", "10", *faucet)
    tx_hash = out.split()[0]
    assert http_json(f"{url}/v1/txs/{tx_hash}")["receipt"]["fee"] == 1500
    # Removal by governance: proposed by one member, passed by the producers.
    out = ok("gov", "propose-remove", "regulator", "--home", str(homes[2]), "--wait")
    removal = events(out)["proposal_created"]["proposal_id"]
    for home in homes[:3]:
        out = ok("gov", "vote", removal, "--home", str(home), "--wait")
    assert "member_removed" in events(out)


def test_evidence_from_a_file_jails_a_double_signer(consortium, tmp_path):
    url, keyring = consortium["url"], consortium["keyring"]
    cluster = consortium["cluster"]
    faucet = ("--keyring", keyring, "--from", "faucet", "--node", url, "--wait")
    bad = tmp_path / "bad.json"
    bad.write_text('{"vote_a": "00", "vote_b": "00"}')
    refused(2, "not an encoded vote", "staking", "submit-evidence", str(bad), *faucet)

    # Two precommits by the logistics node's key for one step, naming different blocks.
    key = load_key(consortium["homes"][3] / "node_key.json", "")
    height = cluster[0].height() - 1
    votes = [
        Vote.create(key, consortium["chain_id"], VoteType.PRECOMMIT, height, 0, bytes([b]) * 32)
        for b in (1, 2)
    ]
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps({"vote_a": votes[0].encode().hex(),
                                    "vote_b": votes[1].encode().hex()}))  # fmt: skip
    out = ok("staking", "submit-evidence", str(evidence), *faucet)
    assert "double_sign" in events(out)
    refused(3, "duplicate_evidence", "staking", "submit-evidence", str(evidence), *faucet)
    candidates = json.loads(ok("query", "candidates", "--node", url))["candidates"]
    jailed = {c["member"]: c for c in candidates}["logistics"]
    assert jailed["jailed"] is True and jailed["self_bond"] < STAKE
    # Once its jail period (a genesis parameter of this chain) is served, it leaves jail.
    home = ("--home", str(consortium["homes"][3]), "--wait")
    if cluster[0].height() + 10 < jailed["jailed_until"]:
        refused(3, "still_jailed", "staking", "unjail", *home)
    cluster.wait_height(jailed["jailed_until"], timeout=60)
    ok("staking", "unjail", *home)
    candidates = json.loads(ok("query", "candidates", "--node", url))["candidates"]
    assert {c["member"]: c for c in candidates}["logistics"]["jailed"] is False
    # The chain goes on: the running epoch's set still has its quorum.
    top = cluster[0].height()
    cluster.wait_height(top + 3, timeout=60)
    assert_one_chain(cluster.nodes)


def test_the_assembled_file_is_what_every_node_serves(consortium):
    served = http_json(f"{consortium['url']}/v1/genesis")
    assert served["hash"] == consortium["genesis_hash"]
    local = json.loads(Path(consortium["genesis_file"]).read_text())
    assert served["genesis"] == local
