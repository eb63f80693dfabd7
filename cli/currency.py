"""``liveledger currency``: issued currencies (docs/vm.md, Currencies).

The issuer (a member, granted by ``liveledger gov propose-grant-issuer``) signs
``mint`` and ``attest`` with its node key (``--home``); holders sign ``send`` and
``burn`` with a keyring key (``--keyring --from``) or a node key. Symbols are
exact: ``usd`` is no currency.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import click

from cli.client import NodeClient
from cli.keyring import Keyring
from cli.main import clear_errors, main
from cli.operator import AMOUNT, DEFAULT_NODE, U64, OperatorError, Signer, operator_tx
from core import parse_address
from core.files import open_regular_file
from vm.currency import (
    ATTEST,
    BURN,
    CURRENCY_TRANSFER,
    MINT,
    Attest,
    Burn,
    CurrencyTransfer,
    Mint,
)


@main.group()
def currency() -> None:
    """Issued currencies: mint, attest reserves (issuer); send, redeem (holders)."""


def _recipient(signer: Signer, text: str) -> bytes:
    """An ll1... address, or a key's name in the signer's keyring."""
    if text.startswith("ll1") or signer.keyring is None:
        return parse_address(text)
    return Keyring(signer.keyring).resolve(text)


@operator_tx(currency, "mint")
@click.argument("symbol")
@click.option("--to", "recipient", required=True, help="An ll1... address or a key's name.")
@click.option("--amount", type=AMOUNT, required=True, help="In the smallest unit.")
def currency_mint(signer: Signer, symbol: str, recipient: str, amount: int) -> None:
    """Mint AMOUNT of SYMBOL to an address (the issuer: sign with its member --home)."""
    signer.send(MINT, Mint(symbol, _recipient(signer, recipient), amount))


@operator_tx(currency, "attest")
@click.argument("symbol")
@click.option("--reserves", type=U64, required=True, help="Reserves held, in the smallest unit.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The attestation report (its SHA-256 goes on chain).",
)
def currency_attest(signer: Signer, symbol: str, reserves: int, report: Path) -> None:
    """Record the issuer's attestation of the reserves backing SYMBOL."""
    digest = report_digest(report)
    signer.send(ATTEST, Attest(symbol, reserves, digest))


def report_digest(report: Path) -> bytes:
    """SHA-256 of a report of any size, read in blocks (never held whole); a FIFO or a
    device is refused unopened (a FIFO blocks for ever, a device never ends)."""
    with open_regular_file(report, "report", OperatorError) as fh:
        try:
            return hashlib.file_digest(fh, "sha256").digest()
        except OSError as exc:
            raise OperatorError(f"cannot read report {report}: {exc.strerror or exc}") from None


@operator_tx(currency, "send")
@click.argument("symbol")
@click.option("--to", "recipient", required=True, help="An ll1... address or a key's name.")
@click.option("--amount", type=AMOUNT, required=True, help="In the smallest unit.")
def currency_send(signer: Signer, symbol: str, recipient: str, amount: int) -> None:
    """Send AMOUNT of SYMBOL (the fee is paid in the native token)."""
    signer.send(CURRENCY_TRANSFER, CurrencyTransfer(symbol, _recipient(signer, recipient), amount))


@operator_tx(currency, "burn")
@click.argument("symbol")
@click.option("--amount", type=AMOUNT, required=True, help="In the smallest unit.")
@click.option(
    "--reference", default="", help="Your payout reference for the issuer (at most 32 bytes)."
)
def currency_burn(signer: Signer, symbol: str, amount: int, reference: str) -> None:
    """Redeem: burn AMOUNT of SYMBOL; the issuer pays out off chain against the event."""
    ref = reference.encode()
    if len(ref) > 32:
        raise OperatorError(f"--reference must be at most 32 bytes, got {len(ref)}")
    signer.send(BURN, Burn(symbol, amount, ref))


@currency.command("list")
@click.argument("symbol", required=False)
@click.option("--node", "node_url", default=DEFAULT_NODE, envvar="LIVELEDGER_NODE")
@clear_errors
def currency_list(symbol: str | None, node_url: str) -> None:
    """Every issued currency (or SYMBOL's): issuer, supply, attested reserves."""
    client = NodeClient(node_url)
    # Quoted whole: whatever was typed is one symbol the node looks up, never a URL.
    path = "/v1/currencies" if symbol is None else f"/v1/currencies/{quote(symbol, safe='')}"
    click.echo(json.dumps(client.get(path), indent=2))
