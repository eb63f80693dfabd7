"""The ``liveledger`` command."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from cli import human
from cli.client import (
    NodeClient,
    NodeError,
    answer_field,
    int_field,
    node_url,
    object_field,
    reading_answer,
    str_field,
)
from cli.devnet import devnet_env, run_devnet
from cli.keyring import Keyring
from cli.keys import keys
from cli.light import CheckpointStore, fetch_certified_header, producers_at, proven_tx
from cli.send import fail, hint_for, output_failed, output_refused, submit_tx
from cli.trust import SIGNED_FOR, anchor_of, command_anchor, proof_anchor, warn_unanchored
from core import LiveLedgerError, format_address, parse_address
from genesis import Genesis
from storage import StateProof, verify_proof
from vm import (
    Account,
    Balance,
    CurrencyList,
    Transfer,
    account_key,
    balance_key,
    receipt_json,
)
from vm.currency import CURRENCY_LIST_KEY

_F = TypeVar("_F", bound=Callable[..., Any])


def _node_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return node_url(value)
    except NodeError as exc:
        raise click.BadParameter(exc.message) from None


node_option = click.option(
    "--node",
    "node_url",
    default="http://127.0.0.1:26657",
    envvar="LIVELEDGER_NODE",
    show_default=True,
    callback=_node_url,
    help="URL of a node's HTTP API, http:// if no scheme is given (or set LIVELEDGER_NODE).",
)
keyring_option = click.option(
    "--keyring",
    required=True,
    envvar="LIVELEDGER_KEYRING",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keyring directory (or set LIVELEDGER_KEYRING).",
)
simulate_option = click.option(
    "--no-simulate",
    "no_simulate",
    is_flag=True,
    help="Send without asking the node first whether a block would fail it.",
)


def trusted_genesis_option(help: str) -> Callable[[_F], _F]:
    """``--genesis FILE`` (``genesis_file``): the genesis a command trusts for this run,
    in place of the one pinned in the keyring; ``help`` says what it is trusted for."""
    return click.option(
        "--genesis",
        "genesis_file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help=help,
    )


def trust_keyring_option(help: str) -> Callable[[_F], _F]:
    """``--keyring DIR`` (``keyring``), optional: where a command finds the pinned genesis
    and the producers verified before; ``help`` says what it is read for."""
    return click.option(
        "--keyring",
        envvar="LIVELEDGER_KEYRING",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"{help} (or set LIVELEDGER_KEYRING).",
    )


# The genesis a light client trusts when it checks a proof.
genesis_option = trusted_genesis_option(
    "Trusted genesis.json (default: the genesis pinned in the keyring, `liveledger "
    "genesis pin`; with neither, the node's, its hash printed to compare)."
)
# The genesis a transaction command trusts for this run, in place of the pinned one.
tx_genesis_option = trusted_genesis_option(
    "Trusted genesis.json: the transaction is signed for its chain id and a node of "
    "another chain is refused (default: the genesis pinned in the keyring, `liveledger "
    "genesis pin`; with neither, the node's word)."
)


def clear_errors(fn: _F) -> _F:
    """One-line errors (a code where there is one, then a sentence) and a non-zero exit,
    never a traceback nor an exception's class name."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NodeError as exc:
            fail(exc.code, exc.message, hint=hint_for(exc))
        except LiveLedgerError as exc:
            fail(getattr(exc, "code", None), str(exc))
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            # The output's own failure ends every command in one place (_Commands).
            if output_refused(exc):
                raise
            _unexpected(exc)
        except Exception as exc:
            _unexpected(exc)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


def _unexpected(exc: Exception) -> NoReturn:
    # A bug: say so in a sentence; LIVELEDGER_DEBUG=1 shows the traceback.
    if os.environ.get("LIVELEDGER_DEBUG"):
        raise exc
    fail(None, f"unexpected failure ({exc}); LIVELEDGER_DEBUG=1 shows where", 1)


class _Commands(click.Group):
    """The ``liveledger`` group: every command, whatever catches its errors, and click's
    own help, end the same way once the output refuses a line
    (``cli.send.output_failed``)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except OSError as exc:
            if not output_refused(exc):
                raise
            output_failed(exc)


@click.group(cls=_Commands)
@click.option("--log-level", default="INFO", show_default=True, help="Log level of node processes.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """LiveLedger: a permissioned blockchain for live-stream commerce.

    Trust: pin the consortium's genesis in the keyring once (`liveledger genesis pin
    FILE`); from then on every command signs for its chain id, refuses a node of another
    chain, and proves what it seals an address to and what --prove shows against it.
    Without a pin (or --genesis FILE) a command takes the node's word and says so.
    """
    ctx.obj = {"log_level": log_level}


main.add_command(keys)


# --- devnet and node --------------------------------------------------------------------


dir_option = click.option(
    "--dir", "root", default="devnet", show_default=True, type=click.Path(path_type=Path)
)


@main.group(invoke_without_command=True)
@dir_option
@click.option("--validators", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of the nodes' node.log files (see node start).",
)
@click.pass_context
@clear_errors
def devnet(ctx: click.Context, root: Path, validators: int, log_format: str) -> None:
    """Create (on first run) and run a local validator network until Ctrl-C.

    The network is made by the genesis ceremony's own functions (init, contribute,
    assemble, install), run for every validator in one place. Keys are encrypted with
    LIVELEDGER_PASSPHRASE; a devnet allows it empty (the default).
    A directory whose devnet is running is refused. `liveledger devnet env` prints the
    exports that point every command at a running devnet.
    """
    if ctx.invoked_subcommand is None:
        passphrase = os.environ.get("LIVELEDGER_PASSPHRASE", "")
        run_devnet(root, validators, passphrase, ctx.obj["log_level"], log_format)


@devnet.command("env")
@click.option(
    "--dir", "root", default=None, type=click.Path(path_type=Path), help="[default: devnet]"
)
@click.pass_context
@clear_errors
def devnet_env_cmd(ctx: click.Context, root: Path | None) -> None:
    """Print shell exports for the running devnet in DIR: eval "$(liveledger devnet env)"."""
    # `devnet --dir D env` names the directory too.
    parent = ctx.parent.params["root"] if ctx.parent is not None else Path("devnet")
    click.echo(devnet_env(parent if root is None else root))


@main.group()
def node() -> None:
    """Run a validator node."""


@node.command("start")
@click.option(
    "--home", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--observer",
    is_flag=True,
    help="Follow and serve the chain without ever signing (as config's observer: true).",
)
@click.option(
    "--state-sync",
    is_flag=True,
    help="An empty node joins from a peer's snapshot (as config's state_sync.enabled).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with height, round, peer, tx_hash... as fields.",
)
@click.pass_context
@clear_errors
def node_start(
    ctx: click.Context, home: Path, observer: bool, state_sync: bool, log_format: str
) -> None:
    """Run the validator (or observer) whose home is HOME until SIGINT or SIGTERM.

    The node key's passphrase comes from LIVELEDGER_PASSPHRASE (empty if unset).
    """
    from node.run import configure_logging, run_node

    configure_logging(ctx.obj["log_level"], log_format)
    run_node(home, observer=observer, state_sync=state_sync)


# --- transactions ------------------------------------------------------------------------


@main.group()
def tx() -> None:
    """Sign and send transactions."""


@tx.command("transfer")
@keyring_option
@click.option("--from", "sender", required=True, help="Name of the sending key in the keyring.")
@click.option(
    "--to", "recipient", required=True, help="Recipient: an ll1... address or a key's name."
)
@click.option("--amount", required=True, type=click.IntRange(1, 2**64 - 1))
@click.option(
    "--fee", type=click.IntRange(0, 2**64 - 1), default=None, help="Default: the chain's minimum."
)
@click.option(
    "--nonce", type=click.IntRange(0, 2**64 - 1), default=None, help="Default: the account's next."
)
@click.option(
    "--wait", is_flag=True, help="Return once committed; fail with the error code if it failed."
)
@simulate_option
@tx_genesis_option
@node_option
@clear_errors
def tx_transfer(
    keyring: Path,
    sender: str,
    recipient: str,
    amount: int,
    fee: int | None,
    nonce: int | None,
    wait: bool,
    no_simulate: bool,
    genesis_file: Path | None,
    node_url: str,
) -> None:
    """Transfer tokens."""
    anchor = command_anchor(keyring, genesis_file, SIGNED_FOR)
    payload = Transfer(to=Keyring(keyring).resolve(recipient), amount=amount).encode()
    submit_tx(
        NodeClient(node_url),
        keyring,
        sender,
        "transfer",
        payload,
        fee,
        nonce,
        wait,
        simulate=not no_simulate,
        anchor=anchor,
    )


# --- queries -----------------------------------------------------------------------------


@main.group()
def query() -> None:
    """Read chain state."""


def verify_account_proof(
    client: NodeClient,
    doc: dict[str, Any],
    genesis: Genesis,
    store: CheckpointStore | None = None,
    *,
    address: bytes,
) -> None:
    """Check the node's answer about ``address`` (the account asked for, never the
    node's word) against a finalized header, trusting only ``genesis`` (and the producer
    sets ``store`` kept, verified from it before)."""
    what = "account"
    height = int_field(doc, "height", what)
    # The account asked about: a node could answer with another account's proven record.
    if answer_field(doc, "address", what) != format_address(address):
        raise NodeError(
            "proof_mismatch",
            f"asked for account {format_address(address)}, the node answered for "
            f"{str(doc['address'])[:64]!r}",
        )
    key = account_key(address)
    with reading_answer("account's proof"):
        value = bytes.fromhex(doc["value"]) if doc["value"] is not None else None
        proof = StateProof.decode(bytes.fromhex(doc["proof"]))
    # The header is final: more than 2/3 of that height's producers signed it; the
    # producers themselves are derived from genesis through proofs.
    validators = producers_at(client, genesis, height, store)
    header = fetch_certified_header(client, genesis, height, validators)
    # The proof is against that header's state root.
    if header.state_root.hex() != answer_field(doc, "state_root", what):
        raise NodeError("proof_mismatch", "proof root differs from the header's state root")
    verify_proof(header.state_root, key, value, proof)
    # The value shown is the one proven.
    account = Account.decode(value) if value is not None else Account(0, 0)
    # Exact ints: 5.0 and true equal 5 and 1 in Python, and are printed as the node sent them.
    shown = (doc.get("balance"), doc.get("nonce"))
    if (account.balance, account.nonce) != shown or any(type(x) is not int for x in shown):
        raise NodeError("proof_mismatch", "node's balance/nonce differ from the proven value")
    # Every issued currency is listed (the list itself is proven), each balance proven.
    listed = _proven(header.state_root, CURRENCY_LIST_KEY, doc.get("currencies"))
    symbols = CurrencyList.decode(listed).symbols if listed is not None else ()
    with reading_answer("account's balances"):
        balances = doc.get("balances", [])
        listed_symbols = [str_field(b, "currency", "account's balance") for b in balances]
    if listed_symbols != list(symbols):
        raise NodeError("proof_mismatch", f"node lists currencies other than the proven {symbols}")
    for entry in balances:
        raw = _proven(header.state_root, balance_key(address, entry["currency"]), entry)
        amount = Balance.decode(raw).amount if raw is not None else 0
        if amount != entry.get("balance") or type(entry.get("balance")) is not int:
            raise NodeError(
                "proof_mismatch", f"node's {entry['currency']} balance differs from the proven one"
            )


def _proven(state_root: bytes, key: bytes, entry: Any) -> bytes | None:
    """The value an answer's ``{key, value, proof}`` entry proves for ``key``."""
    if not isinstance(entry, dict) or entry.get("key") != key.hex():
        raise NodeError("proof_mismatch", f"the node gave no proof of key {key.hex()}")
    with reading_answer(f"proof of key {key.hex()}"):
        value = bytes.fromhex(entry["value"]) if entry["value"] is not None else None
        proof = StateProof.decode(bytes.fromhex(entry["proof"]))
    verify_proof(state_root, key, value, proof)
    return value


@query.command("account")
@click.argument("address")
@click.option("--prove", is_flag=True, help="Verify a state proof against a finalized header.")
@genesis_option
@trust_keyring_option(
    "Where ADDRESS may name a key instead, and --prove finds the pinned genesis and "
    "the producers verified before"
)
@node_option
@clear_errors
def query_account(
    address: str, prove: bool, genesis_file: Path | None, keyring: Path | None, node_url: str
) -> None:
    """Show an account's balance and nonce, and its balance in every issued currency
    (ADDRESS: ll1... or a key's name). With --prove, every figure shown is proven."""
    client = NodeClient(node_url)
    raw = parse_address(address) if keyring is None else Keyring(keyring).resolve(address)
    doc = client.account(format_address(raw), proof=prove)
    what = "account"
    out: dict[str, Any] = {
        "address": str_field(doc, "address", what),
        "balance": int_field(doc, "balance", what),
        "nonce": int_field(doc, "nonce", what),
        "height": int_field(doc, "height", what),
    }
    if "next_nonce" in doc:
        out["next_nonce"] = int_field(doc, "next_nonce", what)
    with reading_answer("account's balances"):
        out["balances"] = {b["currency"]: b["balance"] for b in doc.get("balances", [])}
    if prove:
        anchor = proof_anchor(client, keyring, genesis_file)
        genesis = anchor.genesis
        if out["height"] == 0:
            raise NodeError("no_blocks", "no block is final yet; nothing to prove against")
        verify_account_proof(client, doc, genesis, anchor.cache, address=raw)
        out["proof"] = {
            "verified": True,
            "height": doc["height"],
            "state_root": str_field(doc, "state_root", what),
            "currencies": len(out["balances"]),
            "genesis_hash": genesis.hash.hex(),
        }
    click.echo(json.dumps(out, indent=2))


@query.command("block")
@click.argument("height", default="latest")
@node_option
@clear_errors
def query_block(height: str, node_url: str) -> None:
    """Show a block (a height or 'latest')."""
    doc = NodeClient(node_url).block(height)
    object_field(doc, "header", f"block {height}").pop("encoded", None)
    click.echo(json.dumps(human.with_times(doc), indent=2))


@query.command("tx")
@click.argument("tx_hash", metavar="HASH")
@click.option(
    "--prove",
    is_flag=True,
    help="Verify that a finalized block holds the transaction, and its receipt there.",
)
@genesis_option
@trust_keyring_option("Where --prove finds the pinned genesis and the producers verified before")
@node_option
@clear_errors
def query_tx(
    tx_hash: str, prove: bool, genesis_file: Path | None, keyring: Path | None, node_url: str
) -> None:
    """Show a transaction: pending, or committed with its receipt. With --prove, the
    block and receipt shown are proven, the index only as far as the node's count of
    the block's transactions is true (no header commits to it); a pending one is
    refused: nothing to prove yet."""
    text = tx_hash.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise NodeError("bad_hash", f"a transaction hash is 64 hex characters, got {tx_hash!r}")
    client = NodeClient(node_url)
    if prove:
        anchor = proof_anchor(client, keyring, genesis_file)
        proven = proven_tx(client, anchor.genesis, bytes.fromhex(text), anchor.cache)
        header = proven.header
        out = {
            "hash": text,
            "status": "committed",
            "height": header.height,
            "index": proven.proof.index,
            "receipt": human.receipt(receipt_json(proven.receipt)),
            "proof": {
                "verified": True,
                "height": header.height,
                "block_hash": header.hash.hex(),
                "tx_root": header.tx_root.hex(),
                "receipt_root": header.receipt_root.hex(),
                "genesis_hash": anchor.genesis.hash.hex(),
            },
        }
        click.echo(json.dumps(out, indent=2))
        return
    doc = client.tx(text)
    if doc.get("receipt"):
        with reading_answer(f"receipt of {text}"):
            doc["receipt"] = human.receipt(doc["receipt"])
    click.echo(json.dumps(doc, indent=2))
    if doc.get("status") == "committed":
        # Read from the node's tx index: a node may name a transaction no block holds,
        # or another's receipt. Said, as every unproven answer an auditor may act on.
        click.echo(
            "note: the node's word (its tx index); --prove verifies that a final block "
            "holds the transaction and this receipt",
            err=True,
        )


@query.command("status")
@node_option
@clear_errors
def query_status(node_url: str) -> None:
    """Show the node's chain, height, latest block time, producers and peers."""
    click.echo(json.dumps(human.with_times(NodeClient(node_url).status()), indent=2))


# --- audit -------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Verify chain data without trusting any node."""


@audit.command("verify")
@click.option(
    "--home", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@trusted_genesis_option(
    "Trusted genesis.json to replay from (default: the genesis pinned in the keyring, "
    "`liveledger genesis pin`; with neither, the one installed in --home, the node "
    "operator's, its hash printed to compare)."
)
@trust_keyring_option("Where the pinned genesis is")
@clear_errors
def audit_verify(home: Path, genesis_file: Path | None, keyring: Path | None) -> None:
    """Re-verify every block of a node's home from genesis: signatures, roots, re-execution."""
    from node.audit import audit_home
    from node.config import GENESIS_FILE

    # The node's home holds a genesis too, but its operator wrote it: one of its own
    # making would make a chain it signed alone replay clean.
    anchor = anchor_of(keyring, genesis_file)
    report = audit_home(home, genesis=None if anchor is None else anchor.genesis)
    note = " (audited a copy: the node is running)" if report.copied else ""
    click.echo(
        f"verified height {report.height}: {report.txs} transactions, "
        f"state root {report.state_root.hex()}, genesis {report.genesis_hash.hex()}{note}"
    )
    if anchor is None:
        # Once the audit ran: a home that is none fails with its error alone.
        installed = home / GENESIS_FILE
        warn_unanchored(
            keyring,
            f"the genesis this audit replayed from ({installed}, the node operator's: "
            "compare the hash above with the consortium's)",
        )


# Importing these adds their commands and groups to main.
from cli import ceremony as _ceremony  # noqa: E402, F401
from cli import commerce as _commerce  # noqa: E402, F401
from cli import currency as _currency  # noqa: E402, F401
from cli import operator as _operator  # noqa: E402, F401
