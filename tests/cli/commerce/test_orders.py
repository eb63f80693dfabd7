"""`liveledger order place --genesis` (and `bid --genesis`) seals the shipping address
only to the merchant key the merchant's record proves, of the merchant the listing's
(or the auction's) record proves, and `order disclose --genesis` only to the auditor
key its role record proves: a node that shows another key, or names another merchant,
gets nothing sealed to it, nor anything sent (against a real node; the lie is put in
its answers); `order place` signs the price, version and currency the listing's (and
the deal's) record proves. A genesis pinned in the keyring (`liveledger genesis pin`)
does the same without --genesis on the command line."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from apps.commerce import payloads as tx
from apps.commerce.model import Role
from apps.commerce.sealing import encryption_keypair
from cli import trust
from cli.client import NodeClient
from cli.keyring import Keyring
from cli.main import main
from genesis import save_genesis
from tests.apps.commerce.test_http import (
    DEAL_PRICE,
    PRICE,
    Actor,
    Driver,
    open_shop,
    running_driver,
)
from vm import Transfer

ADDRESS = "1 Harbour Street"


async def cli(d: Driver, keyring: Path, *args: str, sender: str = "buyer") -> Result:
    """The CLI as ``sender`` (the buyer) of ``keyring`` against the node under test,
    off the loop."""
    url = str(d.client.make_url("")).rstrip("/")
    argv = [*args, "--from", sender, "--keyring", str(keyring), "--node", url]
    env = {"LIVELEDGER_PASSPHRASE": ""}
    return await asyncio.to_thread(CliRunner().invoke, main, argv, env=env)


async def place(d: Driver, keyring: Path, genesis: Path) -> Result:
    return await cli(
        d, keyring, "order", "place", "1", "--address", ADDRESS, "--wait", "--genesis", str(genesis)
    )


async def shop(d: Driver, tmp_path: Path) -> tuple[Path, Path]:
    """Listing 1 of an approved merchant; a funded buyer in a keyring; the genesis."""
    merchant, host = Actor("merchant"), Actor("host")
    keyring = tmp_path / "keyring"
    buyer = Keyring(keyring).create("buyer", "")
    await d.all(
        *((d.faucet, "transfer", Transfer(a.address, 10**10)) for a in (merchant, host, buyer))
    )
    await open_shop(d, merchant, host)
    genesis = tmp_path / "genesis.json"
    save_genesis(genesis, d.node.genesis)
    return keyring, genesis


async def test_a_proven_merchant_key_seals_the_order(tmp_path):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        done = await place(d, keyring, genesis)
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert "commerce.order_placed" in done.stdout
        status, doc = await d.get("/v1/orders/1", Actor("merchant").key)
        assert status == 200
        assert doc["order"]["sealed_to"] == Actor("merchant").enc_public.hex()


async def pin(keyring: Path, genesis: Path) -> None:
    """``liveledger genesis pin GENESIS`` in ``keyring``."""
    argv = ["genesis", "pin", str(genesis), "--keyring", str(keyring)]
    done = await asyncio.to_thread(CliRunner().invoke, main, argv)
    assert done.exit_code == 0, done.output


async def test_with_a_pinned_genesis_the_merchant_key_is_proven_without_an_option(tmp_path):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        await pin(keyring, genesis)
        done = await cli(d, keyring, "order", "place", "1", "--address", ADDRESS, "--wait")
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert "node's word" not in done.stderr
        status, doc = await d.get("/v1/orders/1", Actor("merchant").key)
        assert doc["order"]["sealed_to"] == Actor("merchant").enc_public.hex()


async def test_order_reads_are_signed_for_the_node_asked(tmp_path):
    """``order show`` and ``order list`` sign their read for the node they talk to (its
    status's key): the node refuses a read signed for no node or for another."""
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        assert (await place(d, keyring, genesis)).exit_code == 0
        done = await cli(d, keyring, "order", "show", "1")
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert json.loads(done.stdout)["order"]["id"] == 1
        done = await cli(d, keyring, "order", "list")
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert [o["id"] for o in json.loads(done.stdout)["orders"]] == [1]


# The key a lying node shows as the merchant's or the auditor's.
_, FORGED = encryption_keypair(bytes([9]) * 32)


def node_rewrites(
    monkeypatch: Any, prefix: str, holder: Callable[[Any], Any], **fields: Any
) -> list[str]:
    """From now on the node states ``fields`` in its answers to paths under ``prefix``
    (``holder`` finds the object carrying them); the names of the calls that simulate or
    submit a transaction are recorded in the list returned."""
    get = NodeClient.get

    def lying_get(self: NodeClient, path: str) -> Any:
        doc = get(self, path)
        if path.startswith(prefix):
            holder(doc).update(fields)
        return doc

    monkeypatch.setattr(NodeClient, "get", lying_get)
    posted: list[str] = []
    watch_sends(monkeypatch, posted)
    return posted


def node_lies(monkeypatch: Any, prefix: str, holder: Callable[[Any], Any]) -> list[str]:
    """``node_rewrites`` showing ``FORGED`` as the X25519 key under ``prefix``."""
    return node_rewrites(monkeypatch, prefix, holder, enc_key=FORGED.hex())


async def test_a_node_showing_another_merchant_key_gets_nothing_sealed_to_it(tmp_path, monkeypatch):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        posted = node_lies(monkeypatch, "/v1/merchants/", lambda doc: doc["merchant"])
        done = await place(d, keyring, genesis)
    assert done.exit_code != 0
    assert "proof_mismatch" in done.output and FORGED.hex() in done.output
    # Neither simulated nor sent: the node never saw a box sealed to its key.
    assert posted == []


async def add_merchant(d: Driver) -> Actor:
    """Another merchant, registered with an X25519 key a hostile node may hold: the proof
    of its key checks out, it just sells neither listing 1 nor auction 1."""
    other = Actor("other merchant")
    await d.run(d.faucet, "transfer", Transfer(other.address, 10**10))
    register = tx.RegisterMerchant("Other", "", other.enc_public)
    await d.run(other.key, tx.REGISTER_MERCHANT, register)
    return other


async def test_a_node_naming_another_merchant_gets_no_order_sealed_to_it(tmp_path, monkeypatch):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        other = await add_merchant(d)
        listing = lambda doc: doc["listing"]  # noqa: E731
        posted = node_rewrites(monkeypatch, "/v1/listings/1", listing, merchant=other.text)
        done = await place(d, keyring, genesis)
        assert done.exit_code != 0
        assert "proof_mismatch" in done.output and other.text in done.output
        # Neither simulated nor sent: the node never saw a box sealed to its key.
        assert posted == []
        # Through a deal, the merchant is the listing's all the same.
        deal = ("order", "place", "1", "--deal", "1", "--address", ADDRESS)
        done = await cli(d, keyring, *deal, "--genesis", str(genesis))
        assert done.exit_code != 0
        assert "proof_mismatch" in done.output and posted == []


async def test_an_order_signs_the_terms_the_records_prove(tmp_path, monkeypatch):
    """A node lying about the listing's price, version or currency (or a deal's price
    or session) would have the buyer sign an order the chain refuses, for its fee: with
    a trusted genesis they are read from the proven listing (and deal) records."""
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        listing = lambda doc: doc["listing"]  # noqa: E731
        node_rewrites(monkeypatch, "/v1/listings/1", listing, price=1, version=2, currency="GLD")
        # Without a trusted genesis, the node's word: the chain refuses the order.
        unanchored = ("order", "place", "1", "--address", ADDRESS, "--wait")
        done = await cli(d, keyring, *unanchored)
        assert done.exit_code != 0 and "node's word" in done.stderr
        done = await place(d, keyring, genesis)
        assert done.exit_code == 0, (done.stdout, done.stderr)
        deal = lambda doc: doc["deal"]  # noqa: E731
        node_rewrites(monkeypatch, "/v1/deals/1", deal, price=1, session_id=9)
        by_deal = ("order", "place", "1", "--deal", "1", "--address", ADDRESS, "--wait")
        done = await cli(d, keyring, *by_deal, "--genesis", str(genesis))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        merchant = Actor("merchant")
        status, doc = await d.get("/v1/orders/1", merchant.key)
        assert status == 200
        assert (doc["order"]["unit_price"], doc["order"]["listing_version"]) == (PRICE, 1)
        status, doc = await d.get("/v1/orders/2", merchant.key)
        assert status == 200
        assert (doc["order"]["unit_price"], doc["order"]["session_id"]) == (DEAL_PRICE, 1)


async def test_an_order_through_a_deal_of_another_listing_is_refused_unsigned(
    tmp_path, monkeypatch
):
    """Deal 1 sells listing 1: an order of listing 2 through it is refused before it is
    signed (the chain would refuse it, and charge its fee), the deal's listing being the
    one its record proves."""
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        merchant = Actor("merchant")
        other = tx.CreateListing("Kettle", "Copper", PRICE, 5, b"")
        await d.run(merchant.key, tx.CREATE_LISTING, other)
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        by_deal = ("order", "place", "2", "--deal", "1", "--address", ADDRESS)
        done = await cli(d, keyring, *by_deal, "--genesis", str(genesis))
        assert done.exit_code == 2, (done.stdout, done.stderr)
        assert "error: deal_mismatch: deal 1 sells listing 1, not listing 2" in done.stderr
        assert posted == []


async def test_an_order_through_a_deal_of_another_session_is_refused_unsigned(
    tmp_path, monkeypatch
):
    """Deal 1 is in session 1, as its record proves: an order naming session 2 with it
    is refused before it is signed, not signed with the deal's session instead."""
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        by_deal = ("order", "place", "1", "--deal", "1", "--session", "2", "--address", ADDRESS)
        done = await cli(d, keyring, *by_deal, "--genesis", str(genesis))
        assert done.exit_code == 2, (done.stdout, done.stderr)
        assert "error: deal_mismatch: deal 1 is in session 1, not session 2" in done.stderr
        assert posted == []


async def test_an_order_checks_one_certified_header_for_all_its_proofs(tmp_path, monkeypatch):
    """``order place --deal`` proves the listing, the deal and the merchant's key: all
    three against one certified header, at one height, fetched once, and the node's
    chain read once for them."""
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        asked: list[str] = []
        get = NodeClient.get

        def counted_get(self: NodeClient, path: str) -> Any:
            asked.append(path)
            return get(self, path)

        monkeypatch.setattr(NodeClient, "get", counted_get)
        by_deal = ("order", "place", "1", "--deal", "1", "--address", ADDRESS)
        done = await cli(d, keyring, *by_deal, "--genesis", str(genesis))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        proofs = [p for p in asked if p.startswith("/v1/state/")]
        blocks = [p for p in asked if p.startswith("/v1/blocks/")]
        assert len(proofs) == 3, asked
        assert len(blocks) == 1, asked
        height = blocks[0].removeprefix("/v1/blocks/").partition("?")[0]
        assert all(p.endswith(f"?height={height}") for p in proofs[1:]), asked
        # Once for the proofs, once for the head height the transaction expires after.
        assert asked.count("/v1/status") == 2, asked


async def test_a_node_naming_another_merchant_gets_no_bid_sealed_to_it(tmp_path, monkeypatch):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        other = await add_merchant(d)
        merchant = Actor("merchant")
        await d.run(merchant.key, tx.START_AUCTION, tx.StartAuction(1, 1, 100, 0, 0, 60_000, 1))
        bid = ("bid", "1", "200", "--address", ADDRESS, "--genesis", str(genesis))
        lot = lambda doc: doc["auction"]  # noqa: E731
        posted = node_rewrites(monkeypatch, "/v1/auctions/1", lot, merchant=other.text)
        done = await cli(d, keyring, *bid)
        assert done.exit_code != 0
        assert "proof_mismatch" in done.output and other.text in done.output
        assert posted == []
        # Nor does naming a session of that merchant's, which is not the auction's.
        monkeypatch.undo()
        await d.run(d.faucet, tx.APPROVE_MERCHANT, tx.ApproveMerchant(other.address, True))
        await d.run(other.key, tx.OPEN_SESSION, tx.OpenSession(other.address, 0, "Other live"))
        posted = node_rewrites(
            monkeypatch, "/v1/auctions/1", lot, merchant=other.text, session_id=2
        )
        done = await cli(d, keyring, *bid)
        assert done.exit_code != 0
        assert "proof_mismatch" in done.output and "session 2" in done.output
        assert posted == []
        # With the node's true answer, the bid is sealed to the auction's merchant.
        monkeypatch.undo()
        done = await cli(d, keyring, *bid, "--wait")
        assert done.exit_code == 0, (done.stdout, done.stderr)
        status, doc = await d.get("/v1/auctions/1")
        assert status == 200 and doc["auction"]["bids"] == 1


async def add_auditor(d) -> Actor:
    """An auditor, given its role (and its X25519 key) by the faucet, the registrar."""
    auditor = Actor("auditor")
    roles = tx.SetRoles(auditor.address, int(Role.AUDITOR), auditor.enc_public)
    await d.run(d.faucet, tx.SET_ROLES, roles)
    return auditor


async def test_a_node_showing_another_auditor_key_gets_no_disclosure_sealed_to_it(
    tmp_path, monkeypatch
):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        auditor = await add_auditor(d)
        placed = await place(d, keyring, genesis)
        assert placed.exit_code == 0, (placed.stdout, placed.stderr)
        disclose = ("order", "disclose", "1", "--auditor", auditor.text, "--genesis", str(genesis))
        posted = node_lies(monkeypatch, "/v1/roles/", lambda doc: doc)
        done = await cli(d, keyring, *disclose)
        assert done.exit_code != 0
        assert "proof_mismatch" in done.output and FORGED.hex() in done.output
        assert posted == []
        # With the node's true answer, the disclosure goes to the auditor's key.
        monkeypatch.undo()
        done = await cli(d, keyring, *disclose, "--wait")
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert "commerce.disclosed" in done.stdout


async def test_a_pinned_genesis_refuses_the_lying_node_without_genesis_on_the_command_line(
    tmp_path, monkeypatch
):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        auditor = await add_auditor(d)
        await pin(keyring, genesis)
        placed = await cli(d, keyring, "order", "place", "1", "--address", ADDRESS, "--wait")
        assert placed.exit_code == 0, (placed.stdout, placed.stderr)
        # The node lies about the merchant's key, then about the auditor's: neither
        # command is given --genesis, and neither seals nor sends anything.
        place = ("order", "place", "1", "--address", ADDRESS)
        disclose = ("order", "disclose", "1", "--auditor", auditor.text)
        for prefix, holder, command in (
            ("/v1/merchants/", lambda doc: doc["merchant"], place),
            ("/v1/roles/", lambda doc: doc, disclose),
        ):
            posted = node_lies(monkeypatch, prefix, holder)
            done = await cli(d, keyring, *command)
            monkeypatch.undo()
            assert done.exit_code != 0, command
            assert "proof_mismatch" in done.output and FORGED.hex() in done.output
            assert posted == []


async def node_answers_at_an_old_height(d: Driver, monkeypatch: Any) -> int:
    """From now on the node proves state at the height it is at now (returned), with
    valid proofs, whatever height is latest; ``cli.trust.MAX_STATE_AGE_S`` is 1 s and that
    block is more than that behind this machine's clock."""
    status, doc = await d.get("/v1/status")
    assert status == 200
    old = doc["height"]
    status, block = await d.get(f"/v1/blocks/{old}")
    assert status == 200
    monkeypatch.setattr(trust, "MAX_STATE_AGE_S", 1)
    while time.time() * 1000 - block["header"]["time_ms"] <= 1500:
        await asyncio.sleep(0.1)
    get = NodeClient.get

    def at_old_height(self: NodeClient, path: str) -> Any:
        if path.startswith("/v1/state/") and "?" not in path:
            path += f"?height={old}"
        return get(self, path)

    monkeypatch.setattr(NodeClient, "get", at_old_height)
    return old


async def test_a_merchant_key_proven_at_an_old_height_gets_nothing_sealed_to_it(
    tmp_path, monkeypatch
):
    # The node picks the height it proves at: at an old one, the merchant's key before a
    # rotation (given up, perhaps leaked) was proven, and the address sealed to it went
    # into a block in the refused order. A key proven at a block older than
    # MAX_STATE_AGE_S is refused before anything is sealed.
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        old = await node_answers_at_an_old_height(d, monkeypatch)
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        done = await place(d, keyring, genesis)
    assert done.exit_code != 0
    assert "stale_state" in done.stderr and f"height {old}" in done.stderr, done.stderr
    assert posted == []


def watch_sends(monkeypatch: Any, posted: list[str]) -> None:
    """Record every transaction the CLI simulates or submits (``posted``)."""
    for name in ("simulate", "submit", "post_json"):
        method = getattr(NodeClient, name)

        def spy(self: NodeClient, *args: Any, _method: Any = method, _name: str = name) -> Any:
            posted.append(_name)
            return _method(self, *args)

        monkeypatch.setattr(NodeClient, name, spy)


def test_both_commands_that_seal_an_address_take_the_option() -> None:
    # A bid seals the winner's address too; a disclosure re-seals it to an auditor.
    for command in (["order", "place"], ["bid"], ["order", "disclose"]):
        done = CliRunner().invoke(main, [*command, "--help"])
        assert done.exit_code == 0
        assert "proven against it before the address is sealed" in " ".join(done.output.split())
