"""The genesis pinned in the keyring is what the CLI trusts (against a real node):
transactions and signed reads are signed for its chain id and a node of another chain is
refused; the producer sets a proof walks through are kept, so the next command goes on
from the highest one verified; a damaged cache is verified again, never believed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.client import NodeClient, NodeError
from cli.main import main
from cli.trust import MAX_CACHE_BYTES, ProducerCache
from core import PrivateKey, address_of, format_address
from genesis import LocalnetLayout, create_localnet
from node.service import Node
from tests.cli.commerce.test_orders import watch_sends
from tests.fifos import fifo_holding
from tests.genesis.test_document import sample
from tests.served import node_server
from vm import ChainParams

EPOCH = 3


@dataclass
class Net:
    layout: LocalnetLayout
    node: Node
    url: str

    @property
    def keyring(self) -> Path:
        return self.layout.keyring_dir


@asynccontextmanager
async def running_net(tmp_path: Path) -> AsyncIterator[Net]:
    """One validator (real LevelDB, real socket), epochs of 3 blocks of 30 ms."""
    params = ChainParams.default().replace(epoch_length=EPOCH)
    layout = create_localnet(tmp_path / "net", 1, "", params=params, block_interval_ms=30)
    node = Node.from_home(layout.nodes[0].home, "")
    server = node_server(node)
    await server.start_server()
    try:
        yield Net(layout, node, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


async def cli(net: Net, *args: str, keyring: Path | None = None) -> Result:
    """The CLI with the net's keyring (or ``keyring``) and node, off the event loop."""
    node = [] if args[:2] == ("genesis", "pinned") else ["--node", net.url]
    argv = [*args, "--keyring", str(keyring or net.keyring), *node]
    env = {"LIVELEDGER_PASSPHRASE": ""}
    return await asyncio.to_thread(CliRunner().invoke, main, argv, env=env)


async def ok(net: Net, *args: str, keyring: Path | None = None) -> Result:
    done = await cli(net, *args, keyring=keyring)
    assert done.exit_code == 0, (args, done.stdout, done.stderr)
    return done


async def until_height(net: Net, height: int) -> None:
    while net.node.chain.height < height:
        await asyncio.sleep(0.03)


def header_requests(monkeypatch: Any) -> list[int]:
    """The heights of every header the CLI asks any node for, from now on: a block's, or
    an epoch record's (the epoch's boundary, `GET /v1/epochs/{e}`)."""
    heights: list[int] = []
    get = NodeClient.get

    def counting(self: NodeClient, path: str) -> Any:
        for prefix, scale in (("/v1/blocks/", 1), ("/v1/epochs/", EPOCH)):
            number = path.removeprefix(prefix).partition("?")[0]
            if path.startswith(prefix) and number.isdigit():
                heights.append(int(number) * scale)
        return get(self, path)

    monkeypatch.setattr(NodeClient, "get", counting)
    return heights


def as_older_node(monkeypatch: Any) -> None:
    """Answer the CLI as a node without `GET /v1/epochs/{e}/next-change` does (404
    `not_found`): it walks the epochs one by one, verifying and keeping each set. The
    net's one validator never changes, so against the route nothing is verified past
    genesis and nothing is kept (tests/cli/test_light_skip.py walks changes)."""
    get = NodeClient.get

    def older(self: NodeClient, path: str) -> Any:
        if path.endswith("/next-change"):
            raise NodeError("not_found", "404: Not Found", 404)
        return get(self, path)

    monkeypatch.setattr(NodeClient, "get", older)


def other_genesis(tmp_path: Path, chain_id: str | None = None) -> Path:
    """A genesis of another chain (another chain id, or the same one with other keys)."""
    return create_localnet(tmp_path, 1, "", chain_id=chain_id).genesis_path


async def prove_faucet(net: Net) -> dict[str, Any]:
    done = await ok(net, "query", "account", "faucet", "--prove")
    doc = json.loads(done.stdout)
    assert doc["proof"]["verified"] is True
    return doc


def cache_file(keyring: Path) -> Path:
    (path,) = (keyring / "trust").glob("producers-*.json")
    return path


async def test_a_second_proof_goes_on_from_the_producers_the_first_verified(tmp_path, monkeypatch):
    async with running_net(tmp_path) as net:
        await until_height(net, 4 * EPOCH + 1)
        pinned = await ok(net, "genesis", "pin", str(net.layout.genesis_path))
        assert f"pinned genesis {net.layout.genesis.hash.hex()}" in pinned.stdout
        as_older_node(monkeypatch)
        heights = header_requests(monkeypatch)

        first = await prove_faucet(net)
        assert first["proof"]["genesis_hash"] == net.layout.genesis.hash.hex()
        # From genesis: the last block of every epoch up to the proven height's.
        walked = list(heights)
        assert {EPOCH, 2 * EPOCH, 3 * EPOCH, 4 * EPOCH} <= set(walked)
        kept = json.loads((await ok(net, "genesis", "pinned")).stdout)
        assert kept["verified_height"] == kept["verified_epoch"] * EPOCH >= 4 * EPOCH

        heights.clear()
        await prove_faucet(net)
        # Nothing the first command verified is fetched again.
        assert heights and all(h > kept["verified_height"] for h in heights), heights
        assert len(heights) < len(walked)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _another_set(path: Path) -> None:
    # Still JSON, still a producer set that decodes: another key, as bit rot or an edit
    # would leave it. The checksum no longer matches.
    doc = json.loads(path.read_text())
    key_at = len(doc["producers"]) - 10
    digit = "1" if doc["producers"][key_at] != "1" else "2"
    doc["producers"] = doc["producers"][:key_at] + digit + doc["producers"][key_at + 1 :]
    path.write_text(json.dumps(doc))


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xff not json")


@pytest.mark.parametrize("damage", [_truncated, _another_set, _garbage])
async def test_a_damaged_cache_is_verified_again_from_genesis(tmp_path, monkeypatch, damage):
    async with running_net(tmp_path) as net:
        await until_height(net, 3 * EPOCH + 1)
        await ok(net, "genesis", "pin", str(net.layout.genesis_path))
        as_older_node(monkeypatch)
        await prove_faucet(net)
        damage(cache_file(net.keyring))
        heights = header_requests(monkeypatch)

        done = await ok(net, "query", "account", "faucet", "--prove")
        assert json.loads(done.stdout)["proof"]["verified"] is True
        assert "unusable" in done.stderr and "verifying from genesis again" in done.stderr
        # Walked from genesis again, and kept sound again.
        assert EPOCH in heights
        kept = json.loads((await ok(net, "genesis", "pinned")).stdout)
        assert kept["verified_epoch"] is not None
        heights.clear()
        done = await ok(net, "query", "account", "faucet", "--prove")
        assert "unusable" not in done.stderr
        assert all(h > kept["verified_height"] for h in heights), heights


def test_a_cache_that_is_not_a_regular_file_is_taken_as_absent_unread(tmp_path, capsys):
    # A FIFO nobody writes to would block every --prove command for ever.
    genesis = sample()
    cache = ProducerCache(tmp_path)
    with fifo_holding(cache.path(genesis), MAX_CACHE_BYTES + 1):
        assert cache.load(genesis) is None
    assert "is not a regular file but a FIFO" in capsys.readouterr().err


async def test_a_node_of_another_chain_is_refused_before_anything_is_signed(tmp_path, monkeypatch):
    transfer = ("tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1")
    async with running_net(tmp_path) as net:
        await until_height(net, 1)
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        own = net.layout.genesis
        for genesis, code in (
            (other_genesis(tmp_path / "a"), "chain_mismatch"),
            (other_genesis(tmp_path / "b", own.chain_id), "genesis_mismatch"),
        ):
            await ok(net, "genesis", "pin", str(genesis), "--replace")
            for command in (transfer, ("order", "show", "1", "--from", "faucet")):
                done = await cli(net, *command)
                assert done.exit_code == 2, (command, done.output)
                assert f"error: {code}:" in done.stderr and "nothing was signed" in done.stderr
                assert "hint: point --node" in done.stderr
        assert posted == []
        # The consortium's genesis pinned again: the same command goes through, signed
        # for its chain id, without a word about the node's.
        await ok(net, "genesis", "pin", str(net.layout.genesis_path), "--replace")
        done = await ok(net, *transfer, "--wait")
        assert "committed at height" in done.stdout
        assert "node's word" not in done.stderr


async def test_without_a_pin_the_node_s_word_is_taken_and_said_so(tmp_path):
    async with running_net(tmp_path) as net:
        await until_height(net, 1)
        done = await ok(
            net, "tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1"
        )
        assert "warning: no genesis is pinned" in done.stderr
        assert "the chain id this transaction is signed for is the node's word" in done.stderr
        assert "liveledger genesis pin FILE" in done.stderr
        # A proof without a pin checks against the node's genesis, and says its hash.
        done = await ok(net, "query", "account", "faucet", "--prove")
        assert net.layout.genesis.hash.hex() in done.stderr
        # `--genesis` for one command stands in for a pin.
        done = await ok(
            net, "tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1",
            "--genesis", str(net.layout.genesis_path),
        )  # fmt: skip
        assert "node's word" not in done.stderr


async def test_a_damaged_pin_is_refused_never_skipped(tmp_path, monkeypatch):
    async with running_net(tmp_path) as net:
        await until_height(net, 1)
        await ok(net, "genesis", "pin", str(net.layout.genesis_path))
        (net.keyring / "trust" / "genesis.json").write_text('{"chain_id": "x"')
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        done = await cli(
            net, "tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1"
        )
        assert done.exit_code == 2 and "error: bad_pin:" in done.stderr
        assert posted == []
        # --replace mends it.
        await ok(net, "genesis", "pin", str(net.layout.genesis_path), "--replace")


async def test_pinning_from_a_file_or_the_node(tmp_path):
    async with running_net(tmp_path) as net:
        keyring = tmp_path / "shopper"
        own = net.layout.genesis.hash.hex()
        # Neither, or both, of a file and --from-node.
        done = await cli(net, "genesis", "pin", keyring=keyring)
        assert done.exit_code == 2 and "--from-node" in done.stderr
        # The node's genesis, checked against the hash given out of band ...
        done = await cli(net, "genesis", "pin", "--from-node", "--expect-hash", "ab" * 32,
                         keyring=keyring)  # fmt: skip
        assert done.exit_code == 2 and "error: hash_mismatch:" in done.stderr
        assert not (keyring / "trust" / "genesis.json").exists()
        done = await ok(net, "genesis", "pin", "--from-node", "--expect-hash", own, keyring=keyring)
        assert own in done.stdout and "first use" not in done.stderr
        # ... again: nothing changes; another chain's is refused without --replace.
        done = await ok(net, "genesis", "pin", str(net.layout.genesis_path), keyring=keyring)
        assert "already pinned" in done.stdout
        done = await cli(net, "genesis", "pin", str(other_genesis(tmp_path / "o")),
                         keyring=keyring)  # fmt: skip
        assert done.exit_code == 2 and "error: pinned_other:" in done.stderr
        # Trust on first use is a command of its own, and says what it did.
        fresh = tmp_path / "fresh"
        done = await ok(net, "genesis", "pin", "--from-node", keyring=fresh)
        assert own in done.stdout and "trusted on first use" in done.stderr
        shown = json.loads((await ok(net, "genesis", "pinned", keyring=fresh)).stdout)
        assert shown["genesis_hash"] == own and shown["verified_epoch"] is None
        done = await cli(net, "genesis", "pinned", keyring=tmp_path / "none")
        assert done.exit_code == 2 and "error: no_pin:" in done.stderr


def test_every_command_that_signs_or_seals_takes_a_genesis() -> None:
    for command in (["tx", "transfer"], ["order", "place"], ["bid"], ["listing", "create"]):
        done = CliRunner().invoke(main, [*command, "--help"])
        assert done.exit_code == 0
        assert "pinned in the keyring" in " ".join(done.output.split())


async def test_a_proof_of_another_account_is_refused(tmp_path, monkeypatch):
    async with running_net(tmp_path) as net:
        await until_height(net, 2)
        await ok(net, "genesis", "pin", str(net.layout.genesis_path))
        faucet = json.loads((await ok(net, "query", "account", "faucet")).stdout)["address"]
        asked = format_address(address_of(PrivateKey.generate().public_key))
        get = NodeClient.get

        def other_account(self: NodeClient, path: str) -> Any:
            # A node that answers a question about one account with another's (proven)
            # balance: the faucet's is real and certified, just not the one asked for.
            return get(self, path.replace(f"/v1/accounts/{asked}", f"/v1/accounts/{faucet}"))

        monkeypatch.setattr(NodeClient, "get", other_account)
        done = await cli(net, "query", "account", asked, "--prove")
        assert done.exit_code != 0 and done.stdout == "", done.stdout
        assert "proof_mismatch" in done.stderr and asked in done.stderr, done.stderr


async def test_a_minimum_fee_governance_raised_is_paid_a_node_s_invention_is_not(
    tmp_path, monkeypatch
):
    # The fee in force is the node's word; above the pinned genesis's, the CLI pays only
    # what the chain's state, proven against the genesis, shows governance set.
    transfer = ("tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1")
    async with running_net(tmp_path) as net:
        await until_height(net, 1)
        await ok(net, "genesis", "pin", str(net.layout.genesis_path))
        home = ("--home", str(net.layout.nodes[0].home), "--node", net.url, "--wait")
        raised = net.layout.genesis.params.min_fee + 500
        for argv in (("gov", "propose-param", "min_fee", str(raised)), ("gov", "vote", "1")):
            done = await asyncio.to_thread(
                CliRunner().invoke, main, [*argv, *home], env={"LIVELEDGER_PASSPHRASE": ""}
            )
            assert done.exit_code == 0, done.output
        # Passed, and in force from its height on: paid unasked.
        while net.node.chain.params_for(net.node.chain.height + 1).min_fee != raised:
            await asyncio.sleep(0.03)
        done = await ok(net, *transfer, "--wait")
        committed = await asyncio.to_thread(NodeClient(net.url).tx, done.stdout.split()[0])
        assert committed["receipt"]["fee"] == raised

        # A node naming a minimum fee governance never set gets nothing signed.
        params = NodeClient.params

        def inflated(self: NodeClient) -> dict[str, Any]:
            doc = params(self)
            doc["params"]["min_fee"] = raised * 1000
            return doc

        monkeypatch.setattr(NodeClient, "params", inflated)
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        done = await cli(net, *transfer)
        assert done.exit_code == 2, done.output
        assert "error: fee_not_in_force: " in done.stderr and str(raised) in done.stderr
        assert posted == []
