"""`liveledger merchant update` and `listing update` re-sign the current values of the
fields the merchant leaves unchanged: with a trusted genesis (--genesis, or the one
pinned in the keyring) those are read from the records proven against it, never from a
node's answer, so a node that states another price or its own X25519 key gets neither
signed (against a real node; the lie is put in its answers). Without one, the command
says the unchanged fields are the node's word."""

from __future__ import annotations

from pathlib import Path

from click.testing import Result

from cli.keyring import Keyring
from tests.apps.commerce.test_http import PRICE, Actor, Driver, running_driver
from tests.cli.commerce.test_orders import (
    FORGED,
    cli,
    node_answers_at_an_old_height,
    node_rewrites,
    shop,
    watch_sends,
)

MERCHANT = Actor("merchant")


async def as_merchant(d: Driver, keyring: Path, *args: str) -> Result:
    """The CLI signing as listing 1's merchant (added to ``keyring`` as "merchant")."""
    if "merchant" not in Keyring(keyring).names():
        Keyring(keyring).add("merchant", MERCHANT.key, "")
    return await cli(d, keyring, *args, sender="merchant")


async def test_listing_update_keeps_the_proven_fields_not_the_nodes(tmp_path, monkeypatch):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        # The node states a price of 1 and another title for listing 1.
        listing = lambda doc: doc["listing"]  # noqa: E731
        node_rewrites(monkeypatch, "/v1/listings/1", listing, price=1, title="Tin can")
        update = ("listing", "update", "1", "--description", "Enamel", "--wait")
        done = await as_merchant(d, keyring, *update, "--genesis", str(genesis))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        status, doc = await d.get("/v1/listings/1")
        assert status == 200
        shown = doc["listing"]
        assert (shown["version"], shown["description"]) == (2, "Enamel")
        assert (shown["price"], shown["title"]) == (PRICE, "Tea pot")


async def test_merchant_update_keeps_the_proven_key_not_the_nodes(tmp_path, monkeypatch):
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        # The node states its own X25519 key and another name for the merchant.
        merchant = lambda doc: doc["merchant"]  # noqa: E731
        node_rewrites(monkeypatch, "/v1/merchants/", merchant, enc_key=FORGED.hex(), name="Evil")
        update = ("merchant", "update", "--profile", "acme.example/shop", "--wait")
        done = await as_merchant(d, keyring, *update, "--genesis", str(genesis))
        assert done.exit_code == 0, (done.stdout, done.stderr)
        status, doc = await d.get(f"/v1/merchants/{MERCHANT.text}")
        assert status == 200
        shown = doc["merchant"]
        assert shown["enc_key"] == MERCHANT.enc_public.hex()
        assert (shown["name"], shown["profile"]) == ("Acme", "acme.example/shop")


async def test_without_a_genesis_the_unchanged_fields_are_the_nodes_word(tmp_path):
    async with running_driver(tmp_path / "node") as d:
        keyring, _ = await shop(d, tmp_path)
        for update in (
            ("listing", "update", "1", "--title", "Kettle", "--wait"),
            ("merchant", "update", "--name", "Acme Ltd", "--wait"),
        ):
            done = await as_merchant(d, keyring, *update)
            assert done.exit_code == 0, (done.stdout, done.stderr)
            said = " ".join(done.stderr.split())
            assert "the fields left unchanged" in said and "node's word" in said, said


async def test_merchant_update_refuses_a_record_proven_at_an_old_height(tmp_path, monkeypatch):
    # The node picks the height it proves at: answering at an old one, with valid proofs,
    # it had the merchant re-sign its record as it was then (a key it rotated away from,
    # say). A record proven at a block older than MAX_STATE_AGE_S is refused.
    async with running_driver(tmp_path / "node") as d:
        keyring, genesis = await shop(d, tmp_path)
        old = await node_answers_at_an_old_height(d, monkeypatch)
        posted: list[str] = []
        watch_sends(monkeypatch, posted)
        update = ("merchant", "update", "--profile", "acme.example/shop", "--wait")
        done = await as_merchant(d, keyring, *update, "--genesis", str(genesis))
        assert done.exit_code != 0
        assert "stale_state" in done.stderr and f"height {old}" in done.stderr, done.stderr
        assert posted == []
