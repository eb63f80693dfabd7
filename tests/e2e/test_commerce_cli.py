"""The commerce CLI against a real devnet process: a merchant and a shopper's happy path.

Register and approve a merchant (its X25519 key made in the keyring), grant it the
maker role, list, order with a sealed address, read the address as the merchant,
ship with a serialized item, confirm, review, and verify the item's history proof.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from apps.commerce.provenance import gtin_check_digit
from cli.keyring import Keyring
from core import PrivateKey, TxBody, format_address, sign_tx
from core.keystore import load_key
from genesis import create_localnet
from tests.e2e.helpers import REPO, cli_env, run_cli
from vm import Transfer

GTIN = "0950600013435" + str(gtin_check_digit("0950600013435"))
ADDRESS = "12 Harbour Street, Gdansk"


def ok(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def event_attr(out: str, kind: str, attr: str) -> str:
    for line in out.splitlines():
        if line.startswith(kind + " "):
            return dict(p.split("=", 1) for p in line.split()[1:])[attr]
    raise AssertionError(f"no {kind} in {out!r}")


def fund(url: str, faucet: PrivateKey, chain_id: str, *addresses: bytes) -> None:
    from tests.e2e.helpers import http_json

    for nonce, address in enumerate(addresses):
        body = TxBody(nonce, 1_000, 500, "transfer", Transfer(address, 10**9).encode())
        doc = http_json(
            url + "/v1/txs",
            json.dumps({"tx": sign_tx(faucet, chain_id, body).encode().hex()}).encode(),
        )
        assert "hash" in doc, doc


def test_merchant_and_shopper_happy_path(tmp_path):
    root = tmp_path / "devnet"
    # Short blocks keep the many --wait calls quick; `devnet` reuses this network.
    layout = create_localnet(root, 1, "", block_interval_ms=200)
    keyring = root / "keyring"
    ring = Keyring(keyring)
    merchant = ring.create("merchant", "")
    buyer = ring.create("buyer", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "devnet", "--dir", str(root), "--validators", "1"],
        env=cli_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (root / "devnet.json").exists():
            assert proc.poll() is None, "devnet exited"
            assert time.monotonic() < deadline, "devnet did not come up"
            time.sleep(0.1)
        url = json.loads((root / "devnet.json").read_text())["nodes"][0]["url"]
        faucet = load_key(layout.faucet_key_path, "")
        fund(url, faucet, layout.genesis.chain_id, merchant.address, buyer.address)
        m_addr = format_address(merchant.address)
        common = ["--keyring", str(keyring), "--node", url]

        out = ok("merchant", "register", "--from", "merchant", "--name", "Acme", "--wait", *common)
        assert event_attr(out, "commerce.merchant_registered", "merchant")
        ok("merchant", "approve", m_addr, "--from", "faucet", "--wait", *common)
        ok("roles", "set", m_addr, "--roles", "maker", "--from", "faucet", "--wait", *common)
        ok(
            "item", "register", GTIN, "SN-7", "--description", "Kettle", "--read-point",
            "urn:acme:plant", "--from", "merchant", "--wait", *common,
        )  # fmt: skip
        out = ok(
            "listing", "create", "--title", "Kettle", "--price", "2500", "--stock", "3",
            "--from", "merchant", "--wait", *common,
        )  # fmt: skip
        listing_id = event_attr(out, "commerce.listing_created", "listing")

        out = ok(
            "order", "place", listing_id, "--address", ADDRESS, "--from", "buyer", "--wait", *common
        )
        order_id = event_attr(out, "commerce.order_placed", "order")
        ok("order", "accept", order_id, "--from", "merchant", "--wait", *common)
        # The merchant opens the sealed address; the chain and the buyer's view hold no plaintext.
        out = ok("order", "address", order_id, "--from", "merchant", *common)
        assert out.strip() == ADDRESS
        shown = json.loads(ok("order", "show", order_id, "--from", "buyer", *common))
        assert shown["order"]["state"] == "accepted" and ADDRESS not in json.dumps(shown)

        ok(
            "order", "ship", order_id, "--tracking", "PL123456789", "--item", f"{GTIN}:SN-7",
            "--from", "merchant", "--wait", *common,
        )  # fmt: skip
        ok("order", "confirm", order_id, "--from", "buyer", "--wait", *common)
        ok(
            "review",
            "add",
            order_id,
            "--rating",
            "5",
            "--text",
            "Great kettle",
            "--from",
            "buyer",
            "--wait",
            *common,
        )

        doc = json.loads(ok("merchant", "show", m_addr, "--node", url))
        assert (doc["merchant"]["rating_count"], doc["merchant"]["rating_avg_x100"]) == (1, 500)
        history = json.loads(
            ok(
                "item",
                "history",
                GTIN,
                "SN-7",
                "--prove",
                "--genesis",
                str(layout.genesis_path),
                "--node",
                url,
            )
        )
        assert history["proof"]["verified"] is True
        assert history["proof"]["custodian"] == format_address(buyer.address)

        # Clear errors: a completed order cannot be cancelled (execution error, exit 3) ...
        done = run_cli("order", "cancel", order_id, "--from", "buyer", "--wait", *common)
        assert done.returncode == 3 and "bad_state" in done.stderr, done.stderr
        # ... and the buyer holds no key that opens the sealed address.
        done = run_cli("order", "address", order_id, "--from", "buyer", *common)
        assert done.returncode == 2 and "no_key" in done.stderr, done.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
