"""The ``liveledger`` command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.client import NodeClient, NodeError
from cli.devnet import run_devnet
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.keys import keys
from cli.light import fetch_certified_header, producers_at, trusted_genesis
from core import (
    LiveLedgerError,
    PrivateKey,
    TxBody,
    format_address,
    parse_address,
    sign_tx,
)
from genesis import Genesis
from storage import StateProof, verify_proof
from vm import Account, Transfer, account_key

_F = TypeVar("_F", bound=Callable[..., Any])

node_option = click.option(
    "--node",
    "node_url",
    default="http://127.0.0.1:26657",
    envvar="LIVELEDGER_NODE",
    show_default=True,
    help="URL of a node's HTTP API (or set LIVELEDGER_NODE).",
)
# The genesis a light client trusts when it checks a proof.
genesis_option = click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trusted genesis.json (default: fetched from the node; its hash is printed).",
)


def clear_errors(fn: _F) -> _F:
    """One-line errors with their code and a non-zero exit, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NodeError as exc:
            click.echo(f"error: {exc.code}: {exc.message}", err=True)
            sys.exit(2)
        except LiveLedgerError as exc:
            code = getattr(exc, "code", type(exc).__name__)
            click.echo(f"error: {code}: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Log level of node processes.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """LiveLedger: a permissioned blockchain for live-stream commerce."""
    ctx.obj = {"log_level": log_level}


main.add_command(keys)


# --- devnet and node --------------------------------------------------------------------


@main.command()
@click.option("--dir", "root", default="devnet", show_default=True, type=click.Path(path_type=Path))
@click.option("--validators", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Format of the nodes' node.log files (see node start).",
)
@click.pass_context
def devnet(ctx: click.Context, root: Path, validators: int, log_format: str) -> None:
    """Create (on first run) and run a local validator network until Ctrl-C.

    The network is made by the genesis ceremony's own functions (init, contribute,
    assemble, install), run for every validator in one place. Keys are encrypted with
    LIVELEDGER_PASSPHRASE; a devnet allows it empty (the default).
    """
    passphrase = os.environ.get("LIVELEDGER_PASSPHRASE", "")
    run_devnet(root, validators, passphrase, ctx.obj["log_level"], log_format)


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


def submit_tx(
    client: NodeClient,
    keyring: Path,
    name: str,
    tx_type: str,
    payload: bytes,
    fee: int | None,
    nonce: int | None,
    wait: bool,
) -> None:
    """Sign a transaction of the key NAME, send it, print its hash; with ``wait``, its outcome."""
    ring = Keyring(keyring)
    ring.address(name)  # a missing key fails before the passphrase is asked for
    key = ring.load(name, passphrase_from_env_or_prompt(confirm=False))
    sign_and_send(client, key, tx_type, payload, fee, nonce, wait)


def sign_and_send(
    client: NodeClient,
    key: PrivateKey,
    tx_type: str,
    payload: bytes,
    fee: int | None,
    nonce: int | None,
    wait: bool,
) -> dict[str, Any] | None:
    """Sign with ``key``, send, print the hash; with ``wait``, the height (or exit 3 with
    the receipt's code) and return the committed transaction's document.

    The fee (by default the minimum) and the expiry bound are the parameters in force
    (``GET /v1/params``): governance may have changed them since genesis.
    """
    status = client.status()
    params = client.params()["params"]
    if nonce is None:
        nonce = client.account(format_address(key.address))["nonce"]
    body = TxBody(
        nonce=nonce,
        fee=params["min_fee"] if fee is None else fee,
        expiry_height=status["height"] + min(100, params["max_expiry_blocks"]),
        type=tx_type,
        payload=payload,
    )
    tx = sign_tx(key, status["chain_id"], body)
    tx_hash = client.submit(tx.encode())
    click.echo(tx_hash)
    if not wait:
        return None
    doc = client.wait_committed(tx_hash)
    receipt = doc["receipt"]
    if receipt["code"] != "ok":
        click.echo(
            f"error: {receipt['code']}: {receipt['message']} (height {doc['height']})", err=True
        )
        sys.exit(3)
    click.echo(f"committed at height {doc['height']}")
    return doc


@main.group()
def tx() -> None:
    """Sign and send transactions."""


@tx.command("transfer")
@click.option("--keyring", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "sender", required=True, help="Name of the sending key in the keyring.")
@click.option("--to", "recipient", required=True, help="Recipient address (ll1...).")
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
    node_url: str,
) -> None:
    """Transfer tokens."""
    payload = Transfer(to=parse_address(recipient), amount=amount).encode()
    submit_tx(NodeClient(node_url), keyring, sender, "transfer", payload, fee, nonce, wait)


# --- queries -----------------------------------------------------------------------------


@main.group()
def query() -> None:
    """Read chain state."""


def verify_account_proof(client: NodeClient, doc: dict[str, Any], genesis: Genesis) -> None:
    """Check a proven account against a finalized header, trusting only ``genesis``."""
    height = doc["height"]
    address = parse_address(doc["address"])
    key = account_key(address)
    value = bytes.fromhex(doc["value"]) if doc["value"] is not None else None
    proof = StateProof.decode(bytes.fromhex(doc["proof"]))
    # The header is final: more than 2/3 of that height's producers signed it; the
    # producers themselves are derived from genesis through proofs.
    validators = producers_at(client, genesis, height)
    header = fetch_certified_header(client, genesis, height, validators)
    # The proof is against that header's state root.
    if header.state_root.hex() != doc["state_root"]:
        raise NodeError("proof_mismatch", "proof root differs from the header's state root")
    verify_proof(header.state_root, key, value, proof)
    # The value shown is the one proven.
    account = Account.decode(value) if value is not None else Account(0, 0)
    if (account.balance, account.nonce) != (doc["balance"], doc["nonce"]):
        raise NodeError("proof_mismatch", "node's balance/nonce differ from the proven value")


@query.command("account")
@click.argument("address")
@click.option("--prove", is_flag=True, help="Verify a state proof against a finalized header.")
@genesis_option
@node_option
@clear_errors
def query_account(address: str, prove: bool, genesis_file: Path | None, node_url: str) -> None:
    """Show an account's balance and nonce."""
    client = NodeClient(node_url)
    parse_address(address)
    doc = client.account(address, proof=prove)
    out: dict[str, Any] = {
        "address": doc["address"],
        "balance": doc["balance"],
        "nonce": doc["nonce"],
        "height": doc["height"],
    }
    if prove:
        genesis = trusted_genesis(client, genesis_file)
        if doc["height"] == 0:
            raise NodeError("no_blocks", "no block is final yet; nothing to prove against")
        verify_account_proof(client, doc, genesis)
        out["proof"] = {
            "verified": True,
            "height": doc["height"],
            "state_root": doc["state_root"],
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
    doc["header"].pop("encoded", None)
    click.echo(json.dumps(doc, indent=2))


# --- audit -------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Verify chain data without trusting any node."""


@audit.command("verify")
@click.option(
    "--home", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@clear_errors
def audit_verify(home: Path) -> None:
    """Re-verify every block of a node's home from genesis: signatures, roots, re-execution."""
    from node.audit import audit_home

    report = audit_home(home)
    note = " (audited a copy: the node is running)" if report.copied else ""
    click.echo(
        f"verified height {report.height}: {report.txs} transactions, "
        f"state root {report.state_root.hex()}, genesis {report.genesis_hash.hex()}{note}"
    )


# Importing these adds their commands and groups to main.
from cli import ceremony as _ceremony  # noqa: E402, F401
from cli import commerce as _commerce  # noqa: E402, F401
from cli import operator as _operator  # noqa: E402, F401
