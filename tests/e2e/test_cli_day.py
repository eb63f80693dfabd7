"""A day of live selling from the CLI against one real node (issue 13).

One single-validator node process (real LevelDB, real sockets, 200 ms blocks) serves
the whole module; the CLI runs in this process through click's runner, so a command
costs its requests and not a Python start-up. Every run is recorded: the last test
checks that every command of ``liveledger`` ran at least once successfully and once on
its main error path, and every run checks that what a person reads holds no traceback
and no exception class name. The key ring and the node come from LIVELEDGER_KEYRING and
LIVELEDGER_NODE only (item 7): no command here is given --keyring or --node unless the
test is about them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from apps.commerce.provenance import gtin_check_digit
from apps.commerce.sealing import MAX_ADDRESS_TEXT
from cli.keyring import Keyring
from cli.main import main
from genesis import create_localnet, load_genesis
from tests.e2e.helpers import REPO, NodeProcess, cli_env, wait_until

EAN13 = "950600013435"
EAN13 += str(gtin_check_digit("0" + EAN13))  # a 13-digit EAN: the chain stores it as 14
GTIN14 = "0" + EAN13
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Fault)\b")
ACTORS = ("merchant", "host", "shopper1", "shopper2", "arbiter", "carrier", "auditor", "rusher")

# Commands whose runs are in other modules (they need a process of their own).
ELSEWHERE = {
    # tests/e2e/test_devnet_cli.py: runs a devnet, a second one on its directory is
    # refused; `devnet env` with the devnet running and stopped.
    "devnet": {"ok", "error"},
    "devnet env": {"ok", "error"},
    # The node of this module is `python -m cli node start` (its error path runs here).
    "node start": {"ok"},
    # tests/e2e/test_consortium_cli.py: the member's node, the genesis ceremony and the
    # operator's commands, each run against live nodes and on its main refusal.
    **{
        path: {"ok", "error"}
        for path in (
            "init",
            "genesis assemble",
            "genesis contribute",
            "genesis hash",
            "genesis install",
            "gov propose-admit",
            "gov propose-param",
            "gov propose-remove",
            "gov vote",
            "query candidates",
            "query members",
            "query params",
            "query producers",
            "query proposals",
            "staking bond",
            "staking register-candidate",
            "staking set-address",
            "staking submit-evidence",
            "staking unbond",
            "staking unjail",
            "staking vote-producers",
        )
    },
}


def leaf_commands(group: click.Group, prefix: str = "") -> set[str]:
    """Every runnable command path; a group that runs without a subcommand counts too."""
    out = set()
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:
                out.add(path)
            out |= leaf_commands(cmd, path + " ")
        else:
            out.add(path)
    return out


def command_path(args: tuple[str, ...]) -> str:
    cmd: click.Command = main
    path = []
    for arg in args:
        if isinstance(cmd, click.Group) and arg in cmd.commands:
            cmd = cmd.commands[arg]
            path.append(arg)
        else:
            break
    return " ".join(path)


@dataclass
class Day:
    root: Path
    node: NodeProcess
    keyring: Path
    env: dict[str, str]
    ran: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ids: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, env: dict[str, str] | None = None):
        result = CliRunner().invoke(main, list(args), env={**self.env, **(env or {})})
        # No traceback and no class name where a person reads, whatever happened.
        text = result.stdout + result.stderr
        assert "Traceback" not in text and not CLASS_NAME.search(text), (args, text)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args,
            result.exception,
        )
        self.ran[command_path(args)].add("ok" if result.exit_code == 0 else "error")
        return result

    def ok(self, *args: str, **kw) -> str:
        result = self.run(*args, **kw)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def fails(self, *args: str, code: int | None = None, says: str = "", **kw) -> str:
        """Run a command that must fail; return what it printed on stderr."""
        result = self.run(*args, **kw)
        assert result.exit_code != 0, (args, result.stdout)
        if code is not None:
            assert result.exit_code == code, (args, result.exit_code, result.stderr)
        assert says in result.stderr, (args, says, result.stderr)
        return result.stderr

    def json(self, *args: str) -> dict:
        return json.loads(self.ok(*args))

    def address(self, name: str) -> str:
        return Keyring(self.keyring).address(name)

    def committed(self, tx_hash: str) -> dict:
        return wait_until(
            lambda: (doc := self.json("query", "tx", tx_hash))["status"] == "committed" and doc,
            30,
            f"{tx_hash} committed",
        )


def event(out: str, kind: str) -> dict[str, str]:
    """The attributes of the first ``kind`` event a --wait command printed."""
    for line in out.splitlines():
        if line.startswith(kind + " "):
            return dict(p.split("=", 1) for p in line.split()[1:])
    raise AssertionError(f"no {kind} in {out!r}")


def height_of(out: str) -> int:
    return int(re.search(r"committed at height (\d+)", out).group(1))


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("day")
    layout = create_localnet(root / "net", 1, "", block_interval_ms=200)
    node = NodeProcess(layout.nodes[0].home)
    node.start()
    keyring = root / "net" / "keyring"
    ring = Keyring(keyring)
    for name in ACTORS:
        ring.create(name, "")
    env = {
        "LIVELEDGER_PASSPHRASE": "",
        "LIVELEDGER_KEYRING": str(keyring),
        # Without a scheme: http:// is meant (item 5).
        "LIVELEDGER_NODE": node.url.removeprefix("http://"),
    }
    d = Day(root, node, keyring, env)
    try:
        yield d
    finally:
        node.stop()


def test_the_consortium_s_genesis_is_pinned_first(day):
    """The keyring pins the genesis it was given: every command after this one signs for
    its chain id and proves what it seals an address to (docs/commerce.md, Trust)."""
    genesis = day.root / "net" / "genesis.json"
    own = load_genesis(genesis).hash.hex()
    day.fails("genesis", "pinned", code=2, says="no_pin")
    unpinned = day.run("tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1")
    assert unpinned.exit_code == 0 and "is the node's word" in unpinned.stderr
    assert own in day.ok("genesis", "pin", str(genesis))
    other = create_localnet(day.root / "other", 1, "").genesis_path
    day.fails("genesis", "pin", str(other), code=2, says="pinned_other")
    assert day.json("genesis", "pinned")["genesis_hash"] == own
    pinned = day.run("tx", "transfer", "--from", "faucet", "--to", "faucet", "--amount", "1")
    assert pinned.exit_code == 0 and "node's word" not in pinned.stderr


def test_back_to_back_sends_take_the_next_nonce(day):
    """Item 2: many sends without --wait, each after the last (the faucet funds everyone);
    a true collision says what to do."""
    hashes = [
        day.ok("tx", "transfer", "--from", "faucet", "--to", name, "--amount", "10000000").strip()
        for name in ACTORS
    ]
    assert len(set(hashes)) == len(ACTORS)
    for tx_hash in hashes:
        assert day.committed(tx_hash)["receipt"]["code"] == "ok"
    # A nonce the node holds pending (a gap keeps it pending) sent again: refused, with
    # what to do about it.
    nonce = day.json("query", "account", day.address("rusher"))["next_nonce"] + 5
    send = ["tx", "transfer", "--from", "rusher", "--to", "faucet", "--nonce", str(nonce)]
    day.ok(*send, "--amount", "1", "--no-simulate")
    err = day.fails(*send, "--amount", "2", "--no-simulate", code=2, says="duplicate")
    assert f"--nonce {nonce} --fee 1100" in err and "leave out --nonce" in err
    account = day.json("query", "account", day.address("rusher"))
    assert account["next_nonce"] == account["nonce"]  # the gap does not count


def test_chain_reads_keys_and_audit(day):
    """Items 3, 5, 7: query tx/status, a URL without scheme, the keyring from the
    environment for every command; each command's error path."""
    status = day.json("query", "status")
    assert status["height"] >= 1 and status["latest_block_time_iso"].endswith("Z")
    day.fails("query", "status", env={"LIVELEDGER_NODE": "127.0.0.1:9"}, says="unreachable")
    day.fails("query", "status", env={"LIVELEDGER_NODE": "ftp://x"}, code=2, says="http://")
    day.json("query", "block", "latest")
    day.fails("query", "block", "999999", says="not_found")
    shopper = day.address("shopper1")
    doc = day.json("query", "account", shopper, "--prove")
    assert doc["balance"] == 10_000_000 and doc["proof"]["verified"] is True
    day.fails("query", "account", "ll1nobody", says="bad_address")
    day.fails("query", "tx", "00" * 32, says="not_found")
    day.fails("query", "tx", "xyz", says="bad_hash")

    assert day.ok("keys", "new", "walkin").startswith("ll1")
    day.fails("keys", "new", "walkin", says="already exists")
    assert day.ok("keys", "show", "walkin").strip() == day.address("walkin")
    day.fails("keys", "show", "nobody", says="no key named 'nobody'")
    assert "walkin" in day.ok("keys", "list")
    day.fails("keys", "list", env={"LIVELEDGER_KEYRING": str(day.root / "none")}, says="exist")
    out = day.ok("audit", "verify", "--home", str(day.node.home))
    assert "verified height" in out
    day.fails("audit", "verify", "--home", str(day.keyring), says="error: ")
    # (A home that is not one: refused before the node code runs in this process.)
    day.fails("node", "start", "--home", str(day.root / "no-home"), code=2, says="does not exist")


def test_foreseeable_failures_are_refused_before_sending(day):
    """Item 3: a transfer beyond the balance is simulated, refused, and costs nothing."""
    before = day.json("query", "account", day.address("walkin"))
    err = day.fails(
        "tx", "transfer", "--from", "walkin", "--to", "faucet", "--amount", "5", code=2,
        says="insufficient_fee",
    )  # fmt: skip
    assert "fund the key" in err
    err = day.fails(
        "tx", "transfer", "--from", "shopper2", "--to", "walkin", "--amount", "999999999",
        code=3, says="insufficient_funds",
    )  # fmt: skip
    assert "nothing was sent" in err
    after = day.json("query", "account", day.address("shopper2"))
    assert (after["balance"], after["nonce"]) == (10_000_000, 0)
    assert before["nonce"] == 0


def test_merchant_listing_roles_and_keys(day):
    """Registration, approval, roles (the auditor needs --enc-key, named), listings with
    GTIN-13 items, and output a person reads (ll1 addresses, ISO times)."""
    out = day.ok("merchant", "register", "--from", "merchant", "--name", "Acme", "--wait")
    m_addr = day.address("merchant")
    assert event(out, "commerce.merchant_registered")["merchant"] == m_addr
    day.fails(
        "merchant", "register", "--from", "merchant", "--name", "Acme", says="merchant_exists"
    )
    day.fails("merchant", "approve", "merchant", "--from", "shopper1", code=3, says="missing_role")
    day.ok("merchant", "approve", "merchant", "--from", "faucet", "--wait")
    day.ok("merchant", "update", "--from", "merchant", "--profile", "kettles", "--wait")
    day.fails("merchant", "update", "--from", "shopper1", says="not_found")
    shown = day.json("merchant", "show", m_addr)
    assert shown["merchant"]["profile"] == "kettles" and "registered_iso" in shown["merchant"]
    day.fails("merchant", "show", day.address("shopper1"), says="not_found")
    day.json("merchant", "reviews", m_addr)
    day.fails("merchant", "reviews", "ll1bad", says="bad_address")

    assert len(day.ok("enc-key", "new", "auditor").strip()) == 64
    day.fails("enc-key", "new", "bad/name", says="invalid key name")
    assert len(day.ok("enc-key", "show", "auditor").strip()) == 64
    day.fails("enc-key", "show", "bad/name", says="invalid key name")
    # The auditor role without its key is refused naming the option (item 5) ...
    err = day.fails("roles", "set", "auditor", "--roles", "auditor", "--from", "faucet")
    assert "--enc-key" in err and "enc-key new" in err
    # ... and given by the key's name in the keyring.
    day.ok(
        "roles", "set", "auditor", "--roles", "auditor", "--enc-key", "auditor", "--from",
        "faucet", "--wait",
    )  # fmt: skip
    day.ok("roles", "set", "arbiter", "--roles", "arbiter", "--from", "faucet", "--wait")
    day.ok("roles", "set", "merchant", "--roles", "maker", "--from", "faucet", "--wait")
    day.ok("roles", "set", "carrier", "--roles", "carrier", "--from", "faucet", "--wait")
    assert "auditor" in json.dumps(day.json("roles", "show", day.address("auditor")))
    day.fails("roles", "show", "nobody", says="bad_address")

    out = day.ok(
        "listing", "create", "--title", "Kettle", "--price", "2500", "--stock", "20",
        "--from", "merchant", "--wait",
    )  # fmt: skip
    day.ids["listing"] = event(out, "commerce.listing_created")["listing"]
    out = day.ok(
        "listing", "create", "--title", "Old", "--price", "10", "--stock", "1", "--from",
        "merchant", "--wait",
    )  # fmt: skip
    old = event(out, "commerce.listing_created")["listing"]
    day.fails(
        "listing", "create", "--title", "X", "--price", "1", "--stock", "1", "--from", "shopper1",
        code=3, says="missing_role",
    )  # fmt: skip
    lid = day.ids["listing"]
    day.ok("listing", "update", lid, "--price", "2400", "--from", "merchant", "--wait")
    day.fails("listing", "update", "999", "--price", "1", "--from", "merchant", says="not_found")
    day.ok("listing", "restock", lid, "5", "--from", "merchant", "--wait")
    day.fails("listing", "restock", lid, "5", "--from", "shopper1", code=3, says="not_authorized")
    day.ok("listing", "withdraw", lid, "1", "--from", "merchant", "--wait")
    day.fails("listing", "withdraw", old, "9", "--from", "merchant", says="insufficient_stock")
    day.ok("listing", "delist", old, "--from", "merchant", "--wait")
    day.fails("listing", "delist", old, "--from", "merchant", says="listing_inactive")
    listing = day.json("listing", "show", lid)["listing"]
    assert (listing["price"], listing["available"]) == (2400, 24)
    day.fails("listing", "show", "999", says="not_found")
    assert len(day.json("listing", "list")["listings"]) == 2
    day.fails("listing", "list", "--limit", "0", code=2, says="--limit")
    day.json("listing", "reviews", lid)
    day.fails("listing", "reviews", "0", code=2, says="LISTING_ID")

    # Serialized items: a GTIN-13 as printed on the package (item 5).
    day.ok(
        "item", "register", EAN13, "SN-1", "--description", "Kettle", "--read-point",
        "urn:acme:plant", "--event-time", "1m ago", "--from", "merchant", "--wait",
    )  # fmt: skip
    day.fails(
        "item", "register", EAN13[:-1] + str((int(EAN13[-1]) + 1) % 10), "SN-2",
        "--description", "x", "--read-point", "y", "--from", "merchant", code=2,
        says="check digit",
    )  # fmt: skip
    day.fails(
        "item", "register", EAN13, "SN-1", "--description", "Kettle", "--read-point", "z",
        "--from", "merchant", code=3, says="item_exists",
    )  # fmt: skip
    day.ok(
        "item", "attest", EAN13, "SN-1", "--step", "inspecting", "--event-time", "now",
        "--from", "merchant", "--wait",
    )  # fmt: skip
    day.fails(
        "item", "attest", EAN13, "SN-1", "--step", "inspecting", "--from", "carrier", code=3,
        says="not_custodian",
    )  # fmt: skip
    # A hand-off refused, then one accepted and handed back.
    day.ok("item", "handoff", EAN13, "SN-1", "--to", "carrier", "--from", "merchant", "--wait")
    day.ok("item", "refuse", EAN13, "SN-1", "--from", "carrier", "--wait")
    day.fails("item", "refuse", EAN13, "SN-1", "--from", "carrier", says="no_pending_handoff")
    day.fails(
        "item", "handoff", EAN13, "SN-1", "--to", "merchant", "--from", "merchant", code=3,
        says="self_dealing",
    )  # fmt: skip
    day.ok("item", "handoff", EAN13, "SN-1", "--to", "carrier", "--from", "merchant", "--wait")
    day.ok("item", "accept", EAN13, "SN-1", "--from", "carrier", "--wait")
    day.fails("item", "accept", EAN13, "SN-1", "--from", "carrier", says="no_pending_handoff")
    day.ok("item", "handoff", GTIN14, "SN-1", "--to", "merchant", "--from", "carrier", "--wait")
    day.ok("item", "accept", EAN13, "SN-1", "--from", "merchant", "--wait")
    history = day.json("item", "history", EAN13, "SN-1", "--prove")
    assert history["item"]["gtin"] == GTIN14 and history["proof"]["verified"] is True
    assert history["proof"]["custodian"] == day.address("merchant")
    day.fails("item", "history", EAN13, "SN-404", says="not_found")


def test_live_session_deals_and_a_watch_across_a_node_restart(day):
    """Item 8 (and 6): the feed followed across a node restart, nothing missed or twice;
    --from POS; "no session 999"; a sold-out deal reads as sold out; times in and out."""
    lid = day.ids["listing"]
    day.fails("live", "open", "--host", "host", "--title", "x", "--from", "shopper1", code=3)
    out = day.ok(
        "live", "open", "--host", "host", "--title", "Kettles live", "--from", "merchant", "--wait"
    )
    session = event(out, "commerce.session_opened")["session"]
    assert event(out, "commerce.session_opened")["host"] == day.address("host")
    opened = height_of(out)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli", "live", "watch", session, "--from", str(opened - 1)],
        env={**cli_env(), **day.env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        day.ok("live", "pin", session, lid, "--from", "merchant", "--wait")
        day.fails("live", "pin", session, lid, "--from", "merchant", code=3, says="already_pinned")
        day.ok("live", "unpin", session, lid, "--from", "host", "--wait")
        day.fails("live", "unpin", session, lid, "--from", "host", code=3, says="not_pinned")
        day.ok("live", "pin", session, lid, "--from", "merchant", "--wait")
        # A deal that opens later: ordering now says when it starts, as an ISO time too.
        out = day.ok(
            "live", "deal", session, lid, "--price", "2000", "--allocation", "1", "--start",
            "in 5m", "--end", "30m", "--from", "merchant", "--wait",
        )  # fmt: skip
        later = event(out, "commerce.deal_opened")
        assert later["start_iso"].endswith("Z") and int(later["end_ms"]) > int(later["start_ms"])
        err = day.fails(
            "order", "place", lid, "--deal", later["deal"], "--address", "1 Main St",
            "--from", "shopper1", code=3, says="deal_not_started",
        )  # fmt: skip
        assert re.search(r"\d{13} \(20\d\d-\d\d-\d\dT", err), err
        day.ok("live", "close-deal", later["deal"], "--from", "host", "--wait")
        day.fails("live", "close-deal", later["deal"], "--from", "host", code=3, says="deal_closed")
        day.fails(
            "live", "deal", session, lid, "--price", "1", "--allocation", "1", "--start",
            "2030-01-01T00:00Z", "--end", "2029-01-01T00:00Z", "--from", "merchant", code=2,
            says="not after its start",
        )  # fmt: skip
        out = day.ok(
            "live", "deal", session, lid, "--price", "2000", "--allocation", "1", "--from",
            "merchant", "--wait",
        )  # fmt: skip
        deal = event(out, "commerce.deal_opened")["deal"]
        out = day.ok(
            "order", "place", lid, "--deal", deal, "--address", "2 Dock Rd", "--from",
            "shopper2", "--wait",
        )  # fmt: skip
        day.ids["deal_order"] = event(out, "commerce.order_placed")["order"]
        day.fails(
            "order", "place", lid, "--deal", deal, "--address", "1 Main St", "--from",
            "shopper1", code=3, says="sold_out",
        )  # fmt: skip
        shown = day.json("live", "show", session)["session"]
        assert [d["sold_out"] for d in shown["deals"]] == [True]
        day.fails("live", "show", "999", says="no session 999")

        # The node restarts under the watcher.
        day.node.stop()
        day.node.start()

        day.ok("tip", session, "150", "--message", "great show", "--from", "shopper1", "--wait")
        day.fails("tip", session, "150", "--from", "host", code=3, says="self_dealing")
        day.ok("live", "close", session, "--from", "merchant", "--wait")
        day.fails("live", "close", session, "--from", "merchant", code=3, says="session_closed")
        day.fails("tip", session, "1", "--from", "shopper1", code=3, says="session_closed")
        stdout, stderr = watcher.communicate(timeout=90)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, stderr
    assert "reconnected" in stderr, stderr
    followed = [json.loads(line) for line in stdout.splitlines()]
    # The same session read afterwards in one go (it closed, so the replay ends).
    replayed = [
        json.loads(line)
        for line in day.ok("live", "watch", session, "--from", str(opened - 1)).splitlines()
    ]
    positions = [(e["height"], e["index"]) for e in followed]
    assert positions == [(e["height"], e["index"]) for e in replayed]
    assert len(set(positions)) == len(positions)
    kinds = [e["kind"] for e in followed]
    assert kinds[0] == "commerce.session_opened" and kinds[-1] == "commerce.session_closed"
    assert "commerce.tip" in kinds
    sold = [e for e in followed if e["kind"] == "commerce.stock_left" and e["attrs"]["deal"]]
    assert sold[-1]["attrs"]["left"] == 0 and sold[-1]["attrs"]["sold_out"] is True
    tip = next(e for e in followed if e["kind"] == "commerce.tip")
    assert tip["attrs"]["amount"] == 150 and tip["attrs"]["host"] == day.address("host")
    assert tip["time_iso"].endswith("Z")
    # Resuming after the first event leaves out exactly that one (--from POS).
    first = f"{positions[0][0]}:{positions[0][1]}"
    resumed = day.ok("live", "watch", session, "--from", first).splitlines()
    assert [json.loads(x)["index"] for x in resumed] == [e["index"] for e in followed[1:]]
    day.fails("live", "watch", "999", says="no session 999")
    day.fails("live", "watch", session, "--from", "x:y", code=2, says="not a position")


def test_orders_disclosure_reviews_and_disputes(day):
    """Items 4, 5, 6: the buyer discloses its address; addresses checked in characters;
    order list infers the merchant role; every order command and its error path."""
    lid = day.ids["listing"]
    day.fails("order", "place", lid, "--address", "  ", "--from", "shopper1", code=2, says="empty")
    err = day.fails(
        "order", "place", lid, "--address", "x" * (MAX_ADDRESS_TEXT + 1), "--from", "shopper1",
        code=2,
    )  # fmt: skip
    assert f"{MAX_ADDRESS_TEXT + 1} characters, at most {MAX_ADDRESS_TEXT} fit" in err

    def place(buyer: str, address: str = "12 Harbour Street, Gdansk") -> str:
        out = day.ok("order", "place", lid, "--address", address, "--from", buyer, "--wait")
        return event(out, "commerce.order_placed")["order"]

    # Cancelled by the buyer; declined by the merchant.
    first = place("shopper1")
    day.fails("order", "accept", first, "--from", "shopper1", code=3, says="not_authorized")
    day.ok("order", "cancel", first, "--from", "shopper1", "--wait")
    day.fails("order", "cancel", first, "--from", "shopper1", code=3, says="bad_state")
    second = place("shopper1")
    day.ok("order", "decline", second, "--from", "merchant", "--wait")
    day.fails("order", "decline", second, "--from", "merchant", code=3, says="bad_state")

    # Shipped with the item by its GTIN-13, confirmed, reviewed, replied.
    sold = place("shopper1")
    day.fails(
        "order", "ship", sold, "--tracking", "T1", "--from", "merchant", code=3, says="bad_state"
    )
    day.ok("order", "accept", sold, "--from", "merchant", "--wait")
    day.fails("order", "confirm", sold, "--from", "shopper1", code=3, says="bad_state")
    day.ok(
        "order", "ship", sold, "--tracking", "PL123", "--item", f"{EAN13}:SN-1", "--from",
        "merchant", "--wait",
    )  # fmt: skip
    day.fails(
        "review", "add", sold, "--rating", "5", "--from", "shopper1", code=3, says="not_settled"
    )
    day.ok("order", "confirm", sold, "--from", "shopper1", "--wait")
    day.ok(
        "review",
        "add",
        sold,
        "--rating",
        "5",
        "--text",
        "Great kettle",
        "--from",
        "shopper1",
        "--wait",
    )
    day.ok("review", "reply", sold, "--text", "Thanks", "--from", "merchant", "--wait")
    day.fails(
        "review",
        "reply",
        sold,
        "--text",
        "Again",
        "--from",
        "merchant",
        code=3,
        says="already_replied",
    )

    # The buyer discloses its own address to the auditor (item 4), the auditor reads it.
    day.fails(
        "order", "disclose", sold, "--auditor", "arbiter", "--from", "shopper1", says="auditor"
    )
    day.ok("order", "disclose", sold, "--auditor", "auditor", "--from", "shopper1", "--wait")
    assert (
        day.ok("order", "address", sold, "--from", "auditor").strip() == "12 Harbour Street, Gdansk"
    )
    assert (
        day.ok("order", "address", sold, "--from", "merchant").strip()
        == "12 Harbour Street, Gdansk"
    )
    day.fails("order", "address", sold, "--from", "shopper1", says="no_key")
    # The merchant may disclose too; a keyring that placed no such order holds no copy.
    day.ok("order", "disclose", sold, "--auditor", "auditor", "--from", "merchant", "--wait")
    other = day.root / "other-keyring"
    Keyring(other).add("shopper1", Keyring(day.keyring).load("shopper1", ""), "")
    day.fails(
        "order", "disclose", sold, "--auditor", day.address("auditor"), "--from", "shopper1",
        env={"LIVELEDGER_KEYRING": str(other)}, says="keeps no copy",
    )  # fmt: skip

    # Refunded in part, then disputed and ruled by the arbiter.
    disputed = day.ids["deal_order"]  # a deal order starts accepted
    day.fails(
        "order",
        "refund",
        disputed,
        "--amount",
        "5",
        "--from",
        "shopper2",
        code=3,
        says="not_authorized",
    )
    day.ok("order", "refund", disputed, "--amount", "100", "--from", "merchant", "--wait")
    day.fails(
        "order",
        "dispute",
        disputed,
        "--reason",
        "late",
        "--from",
        "shopper2",
        code=3,
        says="bad_state",
    )
    day.ok("order", "ship", disputed, "--tracking", "PL9", "--from", "merchant", "--wait")
    day.ok("order", "dispute", disputed, "--reason", "dented", "--from", "shopper2", "--wait")
    day.fails(
        "order",
        "rule",
        disputed,
        "--buyer-bps",
        "5000",
        "--from",
        "shopper1",
        code=3,
        says="missing_role",
    )
    day.ok("order", "rule", disputed, "--buyer-bps", "5000", "--from", "arbiter", "--wait")

    shown = day.json("order", "show", sold, "--from", "shopper1")["order"]
    assert shown["state"] == "completed" and shown["placed_iso"].endswith("Z")
    assert shown["buyer"] == day.address("shopper1")
    day.fails("order", "show", sold, "--from", "carrier", says="forbidden")
    # The merchant's key lists what it sells without --role (item 6).
    result = day.run("order", "list", "--from", "merchant")
    assert result.exit_code == 0 and "is the merchant" in result.stderr
    listed = json.loads(result.stdout)
    assert listed["role"] == "merchant" and listed["total"] == 4
    mine = json.loads(day.ok("order", "list", "--from", "shopper2"))["orders"]
    assert [o["id"] for o in mine] == [int(disputed)]
    day.fails("order", "list", "--from", "nobody", says="no key named")


def test_a_currency_issued_sent_redeemed_and_proven(day):
    """The node's member is granted USD by governance, mints and attests; shoppers send,
    redeem, and read their proven balances; the issuer is revoked."""
    home = ["--home", str(day.node.home), "--wait"]
    shopper1, shopper2 = day.address("shopper1"), day.address("shopper2")
    grant = ("gov", "propose-grant-issuer", "node0")
    day.fails(*grant, "usd", "--decimals", "2", *home, says="invalid_symbol")
    pid = event(day.ok(*grant, "USD", "--decimals", "2", *home), "proposal_created")["proposal_id"]
    day.ok("gov", "vote", pid, *home)
    day.fails("currency", "mint", "USD", "--to", "shopper1", "--amount", "5", "--from",
              "shopper1", "--wait", says="not_issuer")  # fmt: skip
    day.ok("currency", "mint", "USD", "--to", shopper1, "--amount", "5000", *home)
    report = day.root / "reserves.txt"
    report.write_text("bank statement: 5000.00 USD")
    attest = ("currency", "attest", "--reserves", "5000", "--report", str(report))
    day.fails(*attest[:2], "EUR", *attest[2:], *home, says="unknown_currency")
    day.ok(*attest[:2], "USD", *attest[2:], *home)
    send = ("currency", "send", "USD", "--to", "shopper2", "--from", "shopper1", "--wait")
    day.ok(*send, "--amount", "1200")
    day.fails(*send, "--amount", "999999", says="insufficient_funds")
    burn = ("currency", "burn", "USD", "--amount", "200", "--from", "shopper2", "--wait")
    day.fails(*burn, "--reference", "x" * 33, says="at most 32 bytes")
    day.ok(*burn, "--reference", "iban-ref-1")
    usd = day.json("currency", "list", "USD")
    assert (usd["supply"], usd["reserves"], usd["burned"]) == (4_800, 5_000, 200)
    day.fails("currency", "list", "usd", says="not_found")
    doc = day.json("query", "account", shopper1, "--prove")
    assert doc["balances"] == {"USD": 3_800} and doc["proof"]["currencies"] == 1
    assert day.json("query", "account", shopper2)["balances"] == {"USD": 1_000}
    revoke = ("gov", "propose-revoke-issuer")
    day.fails(*revoke, "EUR", *home, says="unknown_currency")
    pid = event(day.ok(*revoke, "USD", *home), "proposal_created")["proposal_id"]
    day.ok("gov", "vote", pid, *home)
    day.fails("currency", "mint", "USD", "--to", shopper1, "--amount", "1", *home,
              says="currency_revoked")  # fmt: skip


def test_live_auction_start_cancel_bid_and_won(day):
    """Auctions from the CLI: start (and its refusals), cancel, show, bids by maximum (the
    proxy answers a lower one; too low is refused naming the minimum), won into an order."""
    lid = day.ids["listing"]
    out = day.ok(
        "live", "open", "--host", "host", "--title", "Auction live", "--from", "merchant", "--wait"
    )
    session = event(out, "commerce.session_opened")["session"]
    start = ("live", "auction", "start", session, lid, "--start-price", "100")
    day.fails(*start, "--from", "shopper1", code=3, says="not_authorized")
    day.fails(*start, "--duration", "1h", "--from", "host", code=3, says="invalid_schedule")
    day.fails(*start, "--duration", "soon", "--from", "host", code=2, says="not a duration")
    out = day.ok(*start, "--duration", "60s", "--from", "merchant", "--wait")
    spare = event(out, "commerce.auction_started")["auction"]
    day.ok("live", "auction", "cancel", spare, "--from", "host", "--wait")
    day.fails("live", "auction", "cancel", spare, "--from", "host", code=3, says="auction_closed")
    # The host may not auction the merchant's stock below its price (2,400)...
    day.fails(*start, "--duration", "6s", "--from", "host", code=3, says="below_listing_price")
    # ...the merchant may. Sudden death, 6 s: the bids below land well within it.
    out = day.ok(*start, "--duration", "6s", "--sudden-death", "--from", "merchant", "--wait")
    auction = event(out, "commerce.auction_started")["auction"]
    assert event(out, "commerce.auction_started")["mode"] == "sudden_death"
    out = day.ok("bid", auction, "300", "--address", "1 Main St", "--from", "shopper1", "--wait")
    assert event(out, "commerce.auction_bid")["amount"] == "100"
    day.fails(
        "bid", auction, "100", "--address", "2 Dock Rd", "--from", "shopper2", code=3,
        says="bid 100 is below the minimum 105",
    )  # fmt: skip
    day.ok("bid", auction, "150", "--address", "2 Dock Rd", "--from", "shopper2", "--wait")
    shown = day.json("live", "auction", "show", auction)["auction"]
    assert (shown["price"], shown["bids"], shown["next_minimum"]) == (155, 2, 160)
    day.fails("live", "auction", "show", "999", says="no auction 999")
    sold = wait_until(
        lambda: (
            (a := day.json("live", "auction", "show", auction)["auction"])["status"] == "sold" and a
        ),
        30,
        "auction sold",
    )
    order = day.json("order", "show", str(sold["order_id"]), "--from", "shopper1")["order"]
    assert (order["amount"], order["state"]) == (155, "accepted")
    day.ok("live", "close", session, "--from", "merchant", "--wait")


def test_every_command_ran_with_its_error_path(day):
    """Every command of the CLI ran against the node, and failed once on its main error."""
    ran = {path: set(kinds) for path, kinds in day.ran.items()}
    for path, kinds in ELSEWHERE.items():
        ran[path] = ran.get(path, set()) | kinds
    commands = leaf_commands(main)
    missing = {c: {"ok", "error"} - ran.get(c, set()) for c in commands}
    assert {c: m for c, m in missing.items() if m} == {}
    assert len(commands) >= 58
