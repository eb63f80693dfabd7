"""A consortium set up and operated with the CLI only, as four operators would (real processes).

Four homes are made with ``liveledger init``, each member signs a contribution,
a coordinator assembles genesis, every member checks the hash and installs it,
and the four nodes start on loopback and finalize blocks. Then every staking and
governance command and read runs against the live nodes, with its main refusal.
A fifth member goes through the whole join path: admitted by governance, it
publishes its address on chain, starts from the genesis document and a trusted
final block, state-syncs, follows, stands, bonds, is voted for, and signs blocks
as a producer from the next epoch on. A parameter change passes and the next
transaction pays the new fee without being told; the fifth member is removed;
every archive home passes ``audit verify``.

The set-up is in functions (``make_homes``, ``hold_ceremony``, ``join_member``) that
take each node's addresses, so the same path can run on other hosts than loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from core import PrivateKey, Vote
from core.keystore import load_key
from core.types import VoteType
from genesis import free_ports, load_genesis
from tests.e2e.helpers import (
    Cluster,
    NodeProcess,
    assert_one_chain,
    audit_homes,
    header,
    http_json,
    run_cli,
    set_config,
    wait_until,
)

STAKE = 1_000_000
JAIL_BLOCKS = 30
# Short epochs and snapshot intervals, so a joining member is elected within seconds.
EPOCH_LENGTH = 30
SNAPSHOT_INTERVAL = 20
MEMBERS = ("platform", "brand-a", "brand-b", "logistics")
# Every node's settings besides the ceremony's (members keep every block: archives).
NODE_SETTINGS = {
    "block_interval_ms": 300,
    "timeout_propose_ms": 1000,
    "snapshot_interval": SNAPSHOT_INTERVAL,
}


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


@dataclass(frozen=True)
class Member:
    """A member's node home, the addresses it was made with (``p2p``: the one peers
    dial), and the command prefix that runs its node on its own host (none: here)."""

    home: Path
    public_key: str
    account: str
    p2p: str
    http: str
    prefix: tuple[str, ...] = ()


def make_home(
    root: Path,
    name: str,
    p2p: str,
    http: str,
    *,
    external: str | None = None,
    prefix: Sequence[str] = (),
) -> Member:
    """``liveledger init`` on the member's own machine; its key and account as printed.
    With ``external``, the node listens on ``p2p`` and peers dial ``external`` (a member
    behind a NAT or proxy); its node runs under ``prefix`` (tests/netns: its host)."""
    home = root / name
    published = ["--external", external] if external else []
    out = ok("init", "--home", str(home), "--moniker", name, "--p2p-listen", p2p,
             *published, "--http-listen", http)  # fmt: skip
    key = re.search(r"node key\s+([0-9a-f]{64})", out)
    account = re.search(r"account\s+(ll1\w+)", out)
    assert key and account, out
    return Member(home, key[1], account[1], external or p2p, http, tuple(prefix))


def hold_ceremony(
    root: Path, chain_id: str, members: list[Member], faucet: str, params: dict[str, int]
) -> tuple[Path, str]:
    """Contributions, assembly, the hash compared, install on every home: (file, hash)."""
    (root / "contributions").mkdir()
    files = []
    for member in members:
        path = root / "contributions" / f"{member.home.name}.json"
        ok("genesis", "contribute", "--home", str(member.home), "--chain-id", chain_id,
           "--stake", str(STAKE), "-o", str(path))  # fmt: skip
        files.append(str(path))
    genesis_file = root / "genesis.json"
    settings = [f"--param={name}={value}" for name, value in params.items()]
    assembled = ok(
        "genesis", "assemble", "--chain-id", chain_id, *files, "-o", str(genesis_file),
        "--account", f"{faucet}={10**15}", "--registrar", faucet, *settings,
    )  # fmt: skip
    genesis_hash = assembled.strip()
    assert ok("genesis", "hash", str(genesis_file)).strip() == genesis_hash
    for member in members:
        out = ok("genesis", "install", "--home", str(member.home), str(genesis_file),
                 "--expect-hash", genesis_hash)  # fmt: skip
        assert f"peers: {len(members) - 1} validator(s)" in out
    return genesis_file, genesis_hash


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    root = tmp_path_factory.mktemp("consortium")
    chain_id = "consortium-test-1"
    ports = free_ports(2 * len(MEMBERS))
    members = [
        make_home(root, name, f"127.0.0.1:{ports[i]}", f"127.0.0.1:{ports[len(MEMBERS) + i]}")
        for i, name in enumerate(MEMBERS)
    ]
    keyring = root / "keyring"
    faucet = ok("keys", "new", "faucet", "--keyring", str(keyring)).split()[-1]
    params = {"jail_blocks": JAIL_BLOCKS, "epoch_length": EPOCH_LENGTH}
    genesis_file, genesis_hash = hold_ceremony(root, chain_id, members, faucet, params)
    homes = [m.home for m in members]
    with Cluster(homes, **NODE_SETTINGS, pruning={"archive": True}) as cluster:
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


def vote_until_passed(proposal: str, homes: list[Path]) -> dict[str, dict[str, str]]:
    """Producers approve in turn until the proposal passes; the passing vote's events."""
    for home in homes:
        out = events(ok("gov", "vote", proposal, "--home", str(home), "--wait"))
        if out["vote_proposal"]["passed"] == "1":
            return out
    raise AssertionError(f"proposal {proposal} did not pass with {len(homes)} votes")


def start_by_state_sync(
    member: Member, genesis_file: Path, genesis_hash: str, peers: list[str], trusted: str
) -> NodeProcess:
    """The joining member's node: the genesis members agreed on, ``peers`` (node keys) of
    the validators as its only config peers, and the last snapshot below the head of the
    member node at ``trusted`` (waiting for the first) as the final block it trusts; then
    it syncs and follows."""
    ok("genesis", "install", "--home", str(member.home), str(genesis_file),
       "--expect-hash", genesis_hash)  # fmt: skip
    config = json.loads((member.home / "config.json").read_text())
    kept = [p for p in config["peers"] if p["public_key"] in peers]
    assert len(kept) == len(peers), config["peers"]

    def last_snapshot() -> int:
        return (
            (http_json(f"{trusted}/v1/status")["height"] - 1)
            // SNAPSHOT_INTERVAL
            * SNAPSHOT_INTERVAL
        )

    # A young chain may not have its first snapshot below the head yet.
    height = wait_until(last_snapshot, 60, "a snapshot height below the trusted node's head")
    block = json.loads(ok("query", "block", str(height), "--node", trusted))
    trust = {"enabled": True, "trust_height": height, "trust_hash": block["header"]["hash"]}
    set_config(member.home, **NODE_SETTINGS, peers=kept, state_sync=trust)
    node = NodeProcess(member.home)
    node.prefix = list(member.prefix)
    node.argv += ["--state-sync"]
    node.start(timeout=90)
    return node


def test_a_fifth_member_joins_by_state_sync_and_becomes_a_producer(consortium):
    p2p_port, http_port = free_ports(2)
    newcomer = make_home(
        consortium["root"], "regulator", f"127.0.0.1:{p2p_port}", f"127.0.0.1:{http_port}"
    )
    join_as_producer(consortium, newcomer)


def join_as_producer(consortium: dict, newcomer: Member) -> NodeProcess:
    """The whole join path of ``newcomer`` (a home made by ``make_home``), with the CLI:
    admitted, its address on chain, its node state-synced from a trusted final block and
    reached by every member, elected, and signing. ``cluster.nodes`` begins with the
    members' nodes, in ``homes`` order; the newcomer's node is appended to it."""
    url, keyring = consortium["url"], consortium["keyring"]
    homes, cluster = consortium["homes"], consortium["cluster"]
    faucet = ("--keyring", keyring, "--from", "faucet", "--node", url, "--wait")
    key, name = newcomer.public_key, newcomer.home.name

    # Admitted by governance with its node key.
    out = ok("gov", "propose-admit", "--public-key", key, "--name", name,
             "--home", str(homes[0]), "--wait")  # fmt: skip
    proposal = events(out)["proposal_created"]["proposal_id"]
    refused(3, "not_member", "gov", "propose-admit", "--public-key", key,
            "--name", "x", *faucet)  # fmt: skip
    for home in homes[:3]:
        out = ok("gov", "vote", proposal, "--home", str(home), "--wait")
    assert events(out)["vote_proposal"]["passed"] == "1"
    assert "member_admitted" in events(out)
    refused(3, "proposal_closed", "gov", "vote", proposal, "--home", str(homes[3]), "--wait")
    refused(3, "unknown_proposal", "gov", "vote", "999", "--home", str(homes[3]), "--wait")
    shown = json.loads(ok("query", "proposals", proposal, "--node", url))["proposal"]
    assert shown["status"] == "passed" and len(shown["voters"]) == 3
    refused(2, "not_found", "query", "proposals", "999", "--node", url)

    # Funded, it publishes where its node listens (its home's external address), signed
    # with its node key and sent to a member's node: its own is not running yet.
    ok("tx", "transfer", "--to", newcomer.account, "--amount", str(10**8), *faucet)
    mine = ("--home", str(newcomer.home), "--node", url, "--wait")
    refused(2, "listen-on-all", "staking", "set-address", "--address", "0.0.0.0:1", *mine)
    refused(3, "not_member", "staking", "set-address", "--address", "shop.example:1", *faucet)
    out = ok("staking", "set-address", *mine)
    assert events(out)["set_member_address"]["address"] == newcomer.p2p
    members = json.loads(ok("query", "members", "--node", url))["members"]
    addresses = {m["name"]: m["address"] for m in members}
    # Its own, and only its own: the genesis members set none (genesis has theirs).
    assert addresses == {**dict.fromkeys(addresses), name: newcomer.p2p}
    assert len(addresses) == len(homes) + 1

    # Its node starts from the genesis document and a final block it trusts, with one
    # member as its peer; no member adds it to its config: they dial its address on chain.
    platform = cluster[0]
    platform_key = platform.status()["validator"]
    node = start_by_state_sync(
        newcomer, consortium["genesis_file"], consortium["genesis_hash"], [platform_key], url
    )
    cluster.nodes.append(node)  # stopped with the others, its log shown on failure
    synced_at = node.status()["retained"]["blocks_from"]
    trusted = json.loads((newcomer.home / "config.json").read_text())["state_sync"]
    assert synced_at == trusted["trust_height"]
    assert http_json(f"{node.url}/v1/blocks/1")["code"] == "pruned"
    members_keys = {s["validator"] for s in (n.status() for n in cluster.nodes[: len(homes)])}
    wait_until(
        lambda: set(node.status()["peers"]) == members_keys, 30, "every member connected to it"
    )
    cluster.wait_height(platform.height() + 2)

    # It stands, bonds and approves itself through its own node, and is elected.
    own = ("--home", str(newcomer.home), "--wait")
    ok("staking", "register-candidate", *own)
    ok("staking", "bond", "--amount", str(STAKE), *own)
    ok("staking", "vote-producers", name, *own)
    candidates = json.loads(ok("query", "candidates", "--node", url))["candidates"]
    standing = {c["member"]: c for c in candidates}[name]
    assert standing["self_bond"] == standing["weight"] == STAKE
    assert standing["jailed"] is False

    def producing() -> bool:
        return key in json.loads(ok("query", "producers", "--node", url))["current"]["producers"]

    wait_until(producing, EPOCH_LENGTH * 0.3 * 2 + 30, "the newcomer among the producers", 1.0)
    # Its own node shows it too, once at the first block of that epoch (it may be a
    # block behind the member's node asked above).
    wait_until(lambda: key in node.status()["producers"], 30, "its own node showing it")
    # Its precommit is in the certificate a later final block carries (or it proposed one).
    seen = {"next": platform.height()}

    def signed_by_it() -> int | None:
        top = platform.height()
        for height in range(seen["next"], top + 1):
            doc = header(platform.url, height)
            signers = {
                s["validator"] for s in (doc["last_commit"] or {"signatures": []})["signatures"]
            }
            if key in signers or doc["producer"] == key:
                return height
        seen["next"] = top + 1
        return None

    signed = wait_until(signed_by_it, 30, "a final block with the newcomer's precommit")
    cluster.wait_height(signed + 1)
    assert_one_chain(cluster.nodes)
    return node


def test_a_parameter_changes_by_governance(consortium):
    url, keyring = consortium["url"], consortium["keyring"]
    homes = consortium["homes"]
    faucet = ("--keyring", keyring, "--from", "faucet", "--node", url, "--wait")
    # Governance raises the minimum fee; the CLI pays the fee in force unasked.
    refused(3, "param_not_governable", "gov", "propose-param", "epoch_length", "5",
            "--home", str(homes[1]), "--wait")  # fmt: skip
    refused(3, "unknown_member", "gov", "propose-remove", PrivateKey.generate().public_key.hex(),
            "--home", str(homes[1]), "--wait")  # fmt: skip
    out = ok("gov", "propose-param", "min_fee", "1500", "--home", str(homes[1]), "--wait")
    change = events(out)["proposal_created"]["proposal_id"]
    effective = int(vote_until_passed(change, homes)["param_change_scheduled"]["effective_height"])
    latest = json.loads(ok("query", "proposals", "--node", url))["proposals"]
    assert latest[-1]["id"] == int(change) and latest[-1]["action"] == "change_param"

    def in_force() -> bool:
        return http_json(f"{url}/v1/params")["params"]["min_fee"] == 1500

    wait_until(in_force, 60, f"min_fee 1500 from height {effective}")
    out = ok("staking", "bond", "--amount", "10", *faucet)
    tx_hash = out.split()[0]
    assert http_json(f"{url}/v1/txs/{tx_hash}")["receipt"]["fee"] == 1500


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


def test_a_member_is_removed_and_every_archive_home_audits(consortium):
    """Last: the fifth member leaves by governance (its address with it); the nodes hold
    one chain and each member's archive passes the audit from genesis."""
    url, homes, cluster = consortium["url"], consortium["homes"], consortium["cluster"]
    out = ok("gov", "propose-remove", "regulator", "--home", str(homes[2]), "--wait")
    removal = events(out)["proposal_created"]["proposal_id"]
    assert "member_removed" in vote_until_passed(removal, homes)
    members = json.loads(ok("query", "members", "--node", url))["members"]
    assert sorted(m["name"] for m in members) == sorted(MEMBERS)
    assert_one_chain(cluster.nodes)
    audit_homes(homes)
