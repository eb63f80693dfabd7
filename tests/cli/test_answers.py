"""Every field of a node's answer is read as a hostile node may send it: a field that is
missing or of the wrong type or range is the node's bad answer (error: bad_answer, exit
2), never an "unexpected failure" of the CLI, and never signed. A node's minimum fee
above the trusted genesis's is not paid unasked."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.public
import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from cli.keyring import Keyring
from cli.main import main
from core import PrivateKey, format_address
from genesis import genesis_json_bytes
from tests.genesis.test_document import sample
from tests.served import app_server

TX = "ab" * 32
NOW_MS = int(time.time() * 1000)
GENESIS = sample()
MERCHANT = format_address(PrivateKey.generate().address)
SEAL_KEY = nacl.public.PrivateKey.generate().public_key.encode().hex()


class _Missing:
    """Stands for "the field is not there" (its repr names the test case)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()
# Wrong types and ranges of an integer field.
NOT_U64 = ["7", -1, 2**64, True, None, 7.0, {"n": 7}, [7], MISSING]


def answers() -> dict[str, Any]:
    """An honest node's answers (chain and genesis of GENESIS), by route."""
    return {
        "status": {
            "chain_id": GENESIS.chain_id,
            "genesis_hash": GENESIS.hash.hex(),
            "height": 5,
            # A second ago: the node follows the chain (a test may run minutes after
            # the module is imported, and a block time minutes old is a stale node's).
            "latest_block_time_ms": int(time.time() * 1000) - 1_000,
            # The node's key, which a signed read is signed for.
            "validator": "00" * 32,
        },
        "params": {
            "height": 5,
            "params": {"min_fee": GENESIS.params.min_fee, "max_expiry_blocks": 3_600},
            "pending": [],
        },
        "account": {
            "address": "",
            "balance": 10**9,
            "nonce": 3,
            "next_nonce": 4,
            "height": 5,
            "balances": [],
        },
        "simulate": {"receipt": {"code": "ok", "message": "", "fee": 1_000, "events": []}},
        "tx": {
            "status": "committed",
            "height": 6,
            "receipt": {
                "code": "ok",
                "message": "",
                "fee": 1_000,
                "events": [{"kind": "transfer", "attrs": {"amount": "1"}}],
            },
        },
        "block": {"header": {"height": 5, "encoded": "00"}, "txs": []},
        "commerce": {"config": {"params": {"sealed_address_max_bytes": 512}}},
        "listing": {
            "listing": {
                "merchant": MERCHANT,
                "version": 2,
                "title": "Mug",
                "description": "A mug",
                "price": 500,
                "currency": "",
                "media_hash": "",
            }
        },
        "deal": {"deal": {"listing_id": 1, "price": 400, "session_id": 3}},
        "auction": {"auction": {"merchant": MERCHANT, "session_id": 1}},
        "merchant": {"merchant": {"name": "Shop", "profile": "", "enc_key": SEAL_KEY}},
        "order": {"order": {"escrow": 500}},
        "session": {"session": {"deals": [{"left": 0}]}},
        # An item's history in two pages, and the governance proposals.
        "item": {
            "height": 5,
            "item": {"history": [{"seq": 0}]},
            "from_seq": 0,
            "event_count": 2,
            "next_from_seq": 1,
        },
        "item page 2": {
            "height": 5,
            "item": {"history": [{"seq": 1}]},
            "from_seq": 1,
            "event_count": 2,
            "next_from_seq": None,
        },
        "proposals": {"next_id": 3, "proposals": []},
        "genesis": {"genesis": GENESIS.to_json()},
    }


@dataclass
class FakeNode:
    url: str
    answers: dict[str, Any]
    # The transactions sent (simulated or submitted): what the user signed.
    signed: list[str] = field(default_factory=list)

    def set(self, route: str, path: tuple[str, ...], value: Any) -> None:
        """The answer to ``route`` with the field at ``path`` set to ``value`` (MISSING:
        left out)."""
        doc = self.answers[route]
        for name in path[:-1]:
            doc = doc[name]
        if value is MISSING:
            del doc[path[-1]]
        else:
            doc[path[-1]] = value


async def fake_node() -> AsyncIterator[FakeNode]:
    node = FakeNode("", answers())

    def route(name: str) -> Any:
        async def answer(request: web.Request) -> web.Response:
            if request.method == "POST":
                node.signed.append((await request.json())["tx"])
            doc = copy.deepcopy(node.answers[name])
            if name == "account" and doc.get("address") == "":
                doc["address"] = request.match_info["address"]
            return web.json_response(doc)

        return answer

    app = web.Application()
    app.router.add_get("/v1/status", route("status"))
    app.router.add_get("/v1/params", route("params"))
    app.router.add_get("/v1/accounts/{address}", route("account"))
    app.router.add_get("/v1/blocks/{height}", route("block"))
    app.router.add_get("/v1/txs/{hash}", route("tx"))
    app.router.add_post("/v1/txs/simulate", route("simulate"))
    app.router.add_get("/v1/commerce", route("commerce"))
    app.router.add_get("/v1/listings/{id}", route("listing"))
    app.router.add_get("/v1/deals/{id}", route("deal"))
    app.router.add_get("/v1/auctions/{id}", route("auction"))
    app.router.add_get("/v1/merchants/{address}", route("merchant"))
    app.router.add_get("/v1/orders/{id}", route("order"))
    app.router.add_get("/v1/sessions/{id}", route("session"))
    app.router.add_get("/v1/governance/proposals", route("proposals"))
    app.router.add_get("/v1/genesis", route("genesis"))
    first_page, second_page = route("item"), route("item page 2")

    async def item_page(request: web.Request) -> web.Response:
        return await (second_page if "from_seq" in request.query else first_page)(request)

    app.router.add_get("/v1/items/01/{gtin}/21/{serial}", item_page)

    async def submit(request: web.Request) -> web.Response:
        node.signed.append((await request.json())["tx"])
        return web.json_response({"hash": TX})

    app.router.add_post("/v1/txs", submit)
    server = app_server(app)
    await server.start_server()
    node.url = str(server.make_url("")).rstrip("/")
    try:
        yield node
    finally:
        await server.close()


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    async for served in fake_node():
        yield served


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    ring = tmp_path / "keyring"
    Keyring(ring).create("alice", "")
    return ring


async def run(node: FakeNode, *argv: str) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke,
        main,
        [*argv, "--node", node.url],
        env={"LIVELEDGER_PASSPHRASE": ""},
    )


async def transfer(node: FakeNode, keyring: Path, *extra: str) -> Result:
    to = format_address(PrivateKey.generate().address)
    argv = ["tx", "transfer", "--from", "alice", "--to", to, "--amount", "1"]
    return await run(node, *argv, "--keyring", str(keyring), *extra)


def refused_as_bad_answer(done: Result, name: str) -> None:
    assert done.exit_code == 2, done.output
    assert "error: bad_answer: " in done.output, done.output
    assert name in done.output, done.output
    assert "unexpected failure" not in done.output


# What a transaction is signed with, from the node's answers.
SIGNED_FIELDS = [
    ("status", ("height",)),
    ("params", ("params", "min_fee")),
    ("params", ("params", "max_expiry_blocks")),
    ("account", ("nonce",)),
    ("account", ("next_nonce",)),
]


@pytest.mark.parametrize("bad", NOT_U64, ids=repr)
@pytest.mark.parametrize("route, path", SIGNED_FIELDS, ids=lambda p: "/".join(p) if p else "")
async def test_a_bad_value_to_sign_is_the_node_s_bad_answer_and_nothing_is_signed(
    node, keyring, route, path, bad
):
    node.set(route, path, bad)
    done = await transfer(node, keyring)
    if path == ("next_nonce",) and bad is MISSING:
        # An older node states no next_nonce: the state's nonce is signed.
        assert done.exit_code == 0, done.output
        assert len(node.signed) == 2  # simulated, then submitted
        return
    refused_as_bad_answer(done, path[-1])
    assert node.signed == []


@pytest.mark.parametrize(
    "route, path, bad",
    [
        # Pending transactions only add to the state's nonce.
        ("account", ("next_nonce",), 2),
        # An expiry past what a transaction can hold.
        ("status", ("height",), 2**64 - 50),
        # No chain lets a transaction expire 0 blocks ahead.
        ("params", ("params", "max_expiry_blocks"), 0),
        ("params", ("params",), [1_000, 3_600]),
        ("status", ("chain_id",), 5),
        ("status", ("chain_id",), MISSING),
    ],
    ids=repr,
)
async def test_a_value_out_of_range_is_the_node_s_bad_answer(node, keyring, route, path, bad):
    node.set(route, path, bad)
    done = await transfer(node, keyring)
    refused_as_bad_answer(done, path[-1])
    assert node.signed == []


async def test_honest_answers_are_signed_and_sent(node, keyring):
    done = await transfer(node, keyring, "--wait")
    assert done.exit_code == 0, done.output
    assert "committed at height 6" in done.output and "transfer amount=1" in done.output
    assert len(node.signed) == 2  # simulated, then submitted


@pytest.mark.parametrize(
    "path, bad",
    [
        (("status",), MISSING),
        (("status",), 5),
        (("height",), MISSING),
        (("height",), "6"),
        (("receipt",), "ok"),
        (("receipt",), MISSING),
        (("receipt", "code"), MISSING),
        (("receipt", "code"), 0),
        (("receipt", "message"), None),
        (("receipt", "events"), {"kind": "transfer"}),
        (("receipt", "events"), ["transfer"]),
        (("receipt", "events"), [{"kind": "transfer"}]),
        (("receipt", "events"), [{"kind": "transfer", "attrs": {"amount": 1}}]),
    ],
    ids=repr,
)
async def test_a_malformed_committed_transaction_is_the_node_s_bad_answer(node, keyring, path, bad):
    node.set("tx", path, bad)
    done = await transfer(node, keyring, "--wait")
    refused_as_bad_answer(done, "")
    assert TX in done.output  # sent: its hash was printed first


@pytest.mark.parametrize(
    "path, bad",
    [
        (("receipt",), MISSING),
        (("receipt",), []),
        (("receipt", "code"), MISSING),
        (("receipt", "message"), 5),
    ],
    ids=repr,
)
async def test_a_malformed_simulation_is_the_node_s_bad_answer_and_nothing_is_sent(
    node, keyring, path, bad
):
    node.set("simulate", path, bad)
    done = await transfer(node, keyring)
    refused_as_bad_answer(done, path[-1])
    assert len(node.signed) == 1  # simulated only


async def test_a_failed_simulation_without_its_fee_is_the_node_s_bad_answer(node, keyring):
    node.set("simulate", ("receipt", "code"), "insufficient_funds")
    node.set("simulate", ("receipt", "fee"), MISSING)
    done = await transfer(node, keyring)
    refused_as_bad_answer(done, "fee")


async def test_a_minimum_fee_above_a_genesis_without_governance_is_not_paid_unasked(
    node, keyring, tmp_path
):
    # No staking section: no governance can have raised the genesis's minimum fee.
    assert GENESIS.staking is None
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(genesis_json_bytes(GENESIS))
    raised = GENESIS.params.min_fee * 1_000_000
    node.set("params", ("params", "min_fee"), raised)
    done = await transfer(node, keyring, "--genesis", str(genesis))
    assert done.exit_code == 2, done.output
    assert "error: fee_not_in_force: " in done.output, done.output
    assert f"sets {GENESIS.params.min_fee}" in done.output and f"--fee {raised}" in done.output
    assert node.signed == []
    # Given with --fee, it is paid knowingly.
    done = await transfer(node, keyring, "--genesis", str(genesis), "--fee", str(raised))
    assert done.exit_code == 0, done.output
    assert len(node.signed) == 2


@pytest.mark.parametrize("bad", [[], "header", None, MISSING], ids=repr)
async def test_a_block_without_its_header_is_the_node_s_bad_answer(node, bad):
    node.set("block", ("header",), bad)
    done = await run(node, "query", "block")
    refused_as_bad_answer(done, "header")


@pytest.mark.parametrize("name", ["address", "balance", "nonce", "height", "next_nonce"])
@pytest.mark.parametrize("bad", [None, [1], {"a": 1}, MISSING], ids=repr)
async def test_a_malformed_account_is_the_node_s_bad_answer(node, name, bad):
    node.set("account", (name,), bad)
    address = format_address(PrivateKey.generate().address)
    done = await run(node, "query", "account", address)
    if name == "next_nonce" and bad is MISSING:
        # An older node states no next_nonce: its account is shown all the same.
        assert done.exit_code == 0, done.output
        return
    refused_as_bad_answer(done, "")


@pytest.mark.parametrize(
    "balances", [5, [5], [{"currency": "X"}], [{"currency": [1], "balance": 1}]]
)
async def test_malformed_account_balances_are_the_node_s_bad_answer(node, balances):
    node.set("account", ("balances",), balances)
    address = format_address(PrivateKey.generate().address)
    done = await run(node, "query", "account", address)
    refused_as_bad_answer(done, "balances")


async def test_a_committed_transaction_shown_unproven_is_said_to_be_the_node_s_word(node):
    # Its status, block and receipt come from the node's tx index, which no header commits
    # to: a node may name a payment no block holds.
    done = await run(node, "query", "tx", TX)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["status"] == "committed"
    assert "the node's word" in done.stderr and "--prove" in done.stderr


@pytest.mark.parametrize(
    "receipt",
    [{"events": 5}, {"code": "ok"}, {"events": [{"kind": "x", "attrs": {"n": 1}}]}, "ok"],
    ids=repr,
)
async def test_a_malformed_receipt_shown_is_the_node_s_bad_answer(node, receipt):
    node.set("tx", ("receipt",), receipt)
    done = await run(node, "query", "tx", TX)
    refused_as_bad_answer(done, "receipt")


@pytest.mark.parametrize(
    "bad",
    [
        "7",
        True,
        7.5,
        -1,
        0,
        {"ms": 1},
        MISSING,
        # The same id in every process that collects the tests (xdist's workers).
        pytest.param(NOW_MS + 3_600_000, id="an hour ahead"),
        2**64,
    ],
    ids=repr,
)
async def test_a_bad_block_time_is_not_signed_as_now(node, keyring, bad):
    # "now" of a deal's start is the latest block time: a time far ahead of every
    # clock would open the deal in the future, signed.
    node.set("status", ("latest_block_time_ms",), bad)
    argv = ["live", "deal", "1", "1", "--price", "5", "--allocation", "1"]
    done = await run(node, *argv, "--from", "alice", "--keyring", str(keyring))
    refused_as_bad_answer(done, "latest_block_time_ms")
    assert node.signed == []


@pytest.mark.parametrize(
    "argv",
    [
        ["live", "deal", "1", "1", "--price", "5", "--allocation", "1", "--end", "in 1h"],
        ["live", "deal", "1", "1", "--price", "5", "--allocation", "1"],
        ["item", "register", "4006381333931", "S1", "--description", "d", "--read-point", "r"],
    ],
    ids=["deal ending in 1h", "deal from now", "item event now"],
)
async def test_a_block_time_far_behind_the_clock_is_not_signed_as_now(node, keyring, argv):
    # A node that stopped following the chain (or lies) an hour ago: a deal "in 1h"
    # from its "now" ends as it is sent, and an event would be dated an hour early.
    node.set("status", ("latest_block_time_ms",), NOW_MS - 3_600_000)
    done = await run(node, *as_alice(keyring, *argv))
    assert done.exit_code == 2, done.output
    assert "error: stale_node: the node's latest block time is " in done.output, done.output
    assert "minutes behind this machine's clock" in done.output, done.output
    assert node.signed == []


@pytest.mark.parametrize(
    "times",
    [
        ["--start", "2099-01-01T10:00Z", "--end", "2099-01-01T11:00Z"],
        ["--start", "4070944800000", "--end", "4070948400000"],
        ["--start-ms", "4070944800000", "--end", "2099-01-01T11:00Z"],
    ],
    ids=["iso", "epoch-ms", "end-iso"],
)
async def test_a_time_given_in_full_needs_no_now_from_the_node(node, keyring, times):
    # Only a time relative to "now" is dated from the node's latest block: one given in
    # full is signed as given, whatever the node's clock (stale here).
    node.set("status", ("latest_block_time_ms",), NOW_MS - 3_600_000)
    argv = ["live", "deal", "1", "1", "--price", "5", "--allocation", "1", *times]
    done = await run(node, *as_alice(keyring, *argv))
    assert done.exit_code == 0, done.output
    assert len(node.signed) == 2


async def test_a_block_time_a_few_seconds_old_is_now(node, keyring):
    node.set("status", ("latest_block_time_ms",), int(time.time() * 1000) - 20_000)
    argv = ["live", "deal", "1", "1", "--price", "5", "--allocation", "1"]
    done = await run(node, *as_alice(keyring, *argv))
    assert done.exit_code == 0, done.output
    assert len(node.signed) == 2


async def test_before_the_first_block_now_is_the_clock(node, keyring):
    node.set("status", ("latest_block_time_ms",), None)
    argv = ["live", "deal", "1", "1", "--price", "5", "--allocation", "1"]
    done = await run(node, *argv, "--from", "alice", "--keyring", str(keyring))
    assert done.exit_code == 0, done.output
    assert len(node.signed) == 2


def as_alice(keyring: Path, *argv: str) -> list[str]:
    return [*argv, "--from", "alice", "--keyring", str(keyring)]


PLACE = ["order", "place", "1", "--address", "1 Main St"]
DEAL = [*PLACE, "--deal", "4"]
BID = ["bid", "1", "100", "--address", "1 Main St"]
RELIST = ["listing", "update", "1", "--title", "Cup"]
RENAME = ["merchant", "update", "--name", "new"]

# Bad values of each kind of field.
NOT_STR = [None, 5, ["x"], MISSING]
NOT_OBJECT = [None, ["x"], "x", MISSING]
NOT_KEY = [None, 5, "zz", "ab" * 20, MISSING]
BAD = {
    "u64": NOT_U64,
    "amount": [0, *NOT_U64],
    "str": NOT_STR,
    "address": ["ll1zz", *NOT_STR],
    "key": NOT_KEY,
    "object": NOT_OBJECT,
    "sealed max": [0, 1025, *NOT_U64],
}
# What a commerce transaction is signed with, from the node's answers: the command,
# the route, the field and its kind.
COMMERCE_FIELDS = [
    (PLACE, "commerce", ("config",), "object"),
    (PLACE, "commerce", ("config", "params"), "object"),
    (PLACE, "commerce", ("config", "params", "sealed_address_max_bytes"), "sealed max"),
    (PLACE, "listing", ("listing",), "object"),
    (PLACE, "listing", ("listing", "price"), "u64"),
    (PLACE, "listing", ("listing", "version"), "u64"),
    (PLACE, "listing", ("listing", "currency"), "str"),
    (PLACE, "listing", ("listing", "merchant"), "address"),
    (PLACE, "merchant", ("merchant",), "object"),
    (PLACE, "merchant", ("merchant", "enc_key"), "key"),
    (DEAL, "deal", ("deal", "listing_id"), "u64"),
    (DEAL, "deal", ("deal", "price"), "u64"),
    (DEAL, "deal", ("deal", "session_id"), "u64"),
    (BID, "auction", ("auction", "merchant"), "address"),
    (BID, "auction", ("auction", "session_id"), "u64"),
    (RELIST, "listing", ("listing", "version"), "u64"),
    (RELIST, "listing", ("listing", "description"), "str"),
    (RELIST, "listing", ("listing", "price"), "amount"),
    (RELIST, "listing", ("listing", "media_hash"), "key"),
    (["merchant", "update", "--profile", "new"], "merchant", ("merchant", "name"), "str"),
    (RENAME, "merchant", ("merchant", "profile"), "str"),
    (RENAME, "merchant", ("merchant", "enc_key"), "key"),
    (["order", "refund", "1"], "order", ("order", "escrow"), "amount"),
]


@pytest.mark.parametrize(
    "argv, route, path, bad",
    [
        pytest.param(argv, route, path, bad, id=f"{argv[0]} {argv[1]}-{'/'.join(path)}-{bad!r}")
        for argv, route, path, kind in COMMERCE_FIELDS
        for bad in BAD[kind]
    ],
)
async def test_a_bad_field_a_commerce_transaction_takes_is_the_node_s_bad_answer(
    node, keyring, argv, route, path, bad
):
    node.set(route, path, bad)
    done = await run(node, *as_alice(keyring, *argv))
    refused_as_bad_answer(done, path[-1])
    assert node.signed == []


async def test_a_merchant_without_a_key_to_seal_to_is_refused(node, keyring):
    node.set("merchant", ("merchant", "enc_key"), "")
    done = await run(node, *as_alice(keyring, *PLACE))
    assert done.exit_code == 2, done.output
    assert "error: invalid_key: " in done.output and "no X25519 key" in done.output
    assert node.signed == []


@pytest.mark.parametrize("argv", [PLACE, DEAL], ids=" ".join)
async def test_an_order_without_a_trusted_genesis_names_every_field_taken_on_trust(
    node, keyring, argv
):
    # The merchant and its key, and the terms signed: the listing's price, version and
    # currency (a deal's price and session), all as the node shows them.
    done = await run(node, *as_alice(keyring, *argv))
    assert done.exit_code == 0, done.output
    warning = " ".join(line for line in done.stderr.splitlines() if "node's word" in line)
    assert "the merchant and X25519 key the address is sealed to" in warning, done.stderr
    assert "the price, version and currency signed" in warning, done.stderr
    assert "with --deal, the deal's price and session" in warning, done.stderr


async def test_an_order_through_a_deal_of_another_listing_is_refused_unsigned(node, keyring):
    # The chain refuses it (deal_mismatch), yet charges its fee.
    node.set("deal", ("deal", "listing_id"), 2)
    done = await run(node, *as_alice(keyring, *DEAL))
    assert done.exit_code == 2, done.output
    assert "error: deal_mismatch: deal 4 sells listing 2, not listing 1" in done.output
    assert node.signed == []


async def test_an_order_through_a_deal_of_another_session_is_refused_unsigned(node, keyring):
    # Deal 4 is in session 3: a --session naming another is not silently replaced.
    done = await run(node, *as_alice(keyring, *DEAL, "--session", "5"))
    assert done.exit_code == 2, done.output
    assert "error: deal_mismatch: deal 4 is in session 3, not session 5" in done.output
    assert "nothing was signed or sent" in done.output
    assert node.signed == []


async def test_an_order_through_a_deal_naming_its_session_is_signed_and_sent(node, keyring):
    done = await run(node, *as_alice(keyring, *DEAL, "--session", "3"))
    assert done.exit_code == 0, done.output
    assert len(node.signed) == 2


@pytest.mark.parametrize(
    "argv",
    [
        PLACE,
        [*PLACE, "--deal", "4"],
        ["listing", "update", "1", "--title", "Cup"],
        ["merchant", "update", "--name", "new"],
        ["order", "refund", "1"],
        ["bid", "1", "100", "--address", "1 Main St"],
    ],
    ids=" ".join,
)
async def test_honest_commerce_answers_are_signed_and_sent(node, keyring, argv):
    done = await run(node, *as_alice(keyring, *argv))
    assert done.exit_code == 0, done.output
    assert len(node.signed) == 2


@pytest.mark.parametrize("deals", [5, [5], [{"price": 1}], None], ids=repr)
async def test_a_malformed_session_shown_is_the_node_s_bad_answer(node, deals):
    node.set("session", ("session", "deals"), deals)
    done = await run(node, "live", "show", "1")
    refused_as_bad_answer(done, "session 1")


ITEM = ["item", "history", "4006381333931", "S1"]


@pytest.mark.parametrize(
    "route, path, bad",
    [
        pytest.param(route, path, bad, id=f"{route}-{'/'.join(path)}-{bad!r}")
        for route, path, bads in [
            ("item", ("height",), NOT_U64),
            ("item", ("item",), NOT_OBJECT),
            ("item", ("item", "history"), [None, "x", {"seq": 0}, MISSING]),
            ("item", ("event_count",), ["2", -1, None, 2.0]),
            # (Missing: an older node's one page.)
            ("item", ("next_from_seq",), ["1", -1, 1.0, [1]]),
            ("item page 2", ("height",), ["5", None, MISSING]),
            ("item page 2", ("from_seq",), ["1", None, MISSING]),
            ("item page 2", ("item", "history"), [None, "x", MISSING]),
            ("item page 2", ("next_from_seq",), ["2", MISSING]),
        ]
        for bad in bads
    ],
)
async def test_a_malformed_item_history_is_the_node_s_bad_answer(node, route, path, bad):
    node.set(route, path, bad)
    done = await run(node, *ITEM)
    refused_as_bad_answer(done, "item page")


async def test_an_item_history_is_read_page_after_page(node):
    done = await run(node, *ITEM)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["item"]["history"] == [{"seq": 0}, {"seq": 1}]


@pytest.mark.parametrize("bad", ["3", None, 3.0, MISSING], ids=repr)
async def test_a_proposal_list_without_its_next_id_is_the_node_s_bad_answer(node, bad):
    node.set("proposals", ("next_id",), bad)
    done = await run(node, "query", "proposals")
    refused_as_bad_answer(done, "next_id")


async def test_a_genesis_answer_without_its_genesis_is_the_node_s_bad_answer(node, keyring):
    node.set("genesis", ("genesis",), MISSING)
    done = await run(node, "genesis", "pin", "--from-node", "--keyring", str(keyring))
    refused_as_bad_answer(done, "genesis")
