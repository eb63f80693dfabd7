"""Issued currencies on a real single-validator node: governance grants the node's member
the issuer role; balances per currency on the account route, each proven, and checked
by the light client (``query account --prove``), which refuses a node that lies."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from click.testing import CliRunner

from cli.client import NodeClient, NodeError
from cli.main import main as cli_main
from cli.main import verify_account_proof
from consensus.governance import (
    PROPOSE_GRANT_ISSUER,
    VOTE_PROPOSAL,
    ProposeGrantIssuer,
    VoteProposal,
)
from core import TxBody, format_address, sign_tx
from tests.node.test_staking_api import wait_committed
from vm.currency import CURRENCY_TRANSFER, MINT, CurrencyTransfer, Mint


async def send(client, node, key, nonce, tx_type, payload, expect="ok"):
    body = TxBody(nonce, 1000, node.chain.height + 100, tx_type, payload.encode())
    tx = sign_tx(key, node.genesis.chain_id, body).encode().hex()
    resp = await client.post("/v1/txs", json={"tx": tx})
    done = await wait_committed(client, (await resp.json())["hash"])
    assert done["receipt"]["code"] == expect, done
    return done


async def test_balances_per_currency_are_listed_and_proven(node_client):
    client, node, faucet = node_client
    member = node.key
    steps = [
        (PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(member.public_key, "USD", 2)),
        (VOTE_PROPOSAL, VoteProposal(1)),
        (PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(member.public_key, "EUR", 2)),
        (VOTE_PROPOSAL, VoteProposal(2)),
        (MINT, Mint("USD", faucet.address, 5_000)),
    ]
    for nonce, (tx_type, payload) in enumerate(steps):
        await send(client, node, member, nonce, tx_type, payload)
    await send(
        client, node, faucet, 0, CURRENCY_TRANSFER, CurrencyTransfer("USD", member.address, 1_200)
    )

    doc = await (await client.get("/v1/currencies")).json()
    assert [(c["symbol"], c["supply"]) for c in doc["currencies"]] == [("EUR", 0), ("USD", 5_000)]
    usd = await (await client.get("/v1/currencies/USD")).json()
    assert usd["issuer"] == format_address(member.address) and usd["revoked"] is False
    escrows = (await (await client.get("/v1/commerce")).json())["escrows"]
    assert escrows == [
        {"currency": "EUR", "held": 0, "open_orders": 0},
        {"currency": "USD", "held": 0, "open_orders": 0},
    ]
    resp = await client.get("/v1/currencies/usd")
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"

    faucet_text = format_address(faucet.address)
    plain = await (await client.get(f"/v1/accounts/{faucet_text}")).json()
    assert [(b["currency"], b["balance"]) for b in plain["balances"]] == [
        ("EUR", 0),
        ("USD", 3_800),
    ]
    assert "currencies" not in plain and "proof" not in plain["balances"][0]
    # The native balance and nonce are the account record's, as before currencies.
    assert plain["nonce"] == 1

    while node.chain.height < plain["height"] + 1:
        await asyncio.sleep(0.02)
    doc = await (await client.get(f"/v1/accounts/{faucet_text}?proof=true")).json()
    url = str(client.server.make_url(""))

    def verify(d: dict) -> None:
        verify_account_proof(NodeClient(url), d, node.genesis, address=faucet.address)

    await asyncio.to_thread(verify, doc)
    # A node that changes a balance, drops a currency, or proves another key is caught.
    lies = [
        lambda d: d["balances"][1].update(balance=9_999),
        lambda d: d["balances"].pop(0),
        lambda d: d["balances"][0].update(key=d["balances"][1]["key"]),
        lambda d: d.pop("currencies"),
        # The proven figures, as floats: equal in Python, yet not what was proven.
        lambda d: d.update(balance=float(d["balance"])),
        lambda d: d["balances"][1].update(balance=float(d["balances"][1]["balance"])),
    ]
    # The CLI prints only what it proved: every balance, and how many currencies.
    args = ["query", "account", faucet_text, "--prove", "--node", url]
    run = await asyncio.to_thread(CliRunner().invoke, cli_main, args)
    assert run.exit_code == 0, run.output
    shown = json.loads(run.stdout)  # stderr: the unpinned-genesis warning
    assert shown["balances"] == {"EUR": 0, "USD": 3_800}
    assert shown["proof"]["verified"] is True and shown["proof"]["currencies"] == 2
    run = await asyncio.to_thread(
        CliRunner().invoke, cli_main, ["currency", "list", "USD", "--node", url]
    )
    assert run.exit_code == 0 and json.loads(run.output)["supply"] == 5_000
    for lie in lies:
        forged = copy.deepcopy(doc)
        lie(forged)
        with pytest.raises(NodeError) as refused:
            await asyncio.to_thread(verify, forged)
        assert refused.value.code == "proof_mismatch"


async def test_a_proven_account_read_proves_only_the_keys_it_answers_with(node_client, monkeypatch):
    """The account route runs on the loop every client shares: with ``?proof=true`` it
    builds one proof per key it answers with (account, currency list, each balance),
    none for the currency records it reads decimals from (up to ``max_currencies``)."""
    client, node, faucet = node_client
    member = node.key
    steps = [
        (PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(member.public_key, "USD", 2)),
        (VOTE_PROPOSAL, VoteProposal(1)),
        (PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(member.public_key, "EUR", 3)),
        (VOTE_PROPOSAL, VoteProposal(2)),
    ]
    for nonce, (tx_type, payload) in enumerate(steps):
        await send(client, node, member, nonce, tx_type, payload)
    store = node.chain.store
    proven: list[bytes] = []
    prove = store.prove

    def counting(key, height=None):
        proven.append(key)
        return prove(key, height)

    monkeypatch.setattr(store, "prove", counting)
    doc = await (
        await client.get(f"/v1/accounts/{format_address(faucet.address)}?proof=true")
    ).json()
    assert [(b["currency"], b["decimals"]) for b in doc["balances"]] == [("EUR", 3), ("USD", 2)]
    answered = [doc["key"], doc["currencies"]["key"], *(b["key"] for b in doc["balances"])]
    assert [key.hex() for key in proven] == answered


async def test_currency_list_sends_any_symbol_as_one_path_segment(node_client):
    """A symbol with a space, a slash or a question mark is no currency: the node says
    so (``not_found``), the CLI does not fail on the URL nor ask another route."""
    client, _, _ = node_client
    url = str(client.server.make_url(""))
    for symbol in ("U S", "../accounts", "USD?x=1"):
        args = ["currency", "list", symbol, "--node", url]
        run = await asyncio.to_thread(CliRunner().invoke, cli_main, args)
        assert run.exit_code != 0 and "not_found" in run.output, (symbol, run.output)
