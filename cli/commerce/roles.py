"""``liveledger roles``: commerce roles, granted by a registrar."""

from __future__ import annotations

from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.model import Role
from cli.client import NodeClient
from cli.commerce.commands import TxOpts, _hex32, read_command, tx_command
from cli.commerce.enc_keys import enc_keys_of
from cli.main import main


@main.group()
def roles() -> None:
    """Commerce roles (granted by a registrar)."""


def _role_mask(text: str) -> int:
    mask = 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.upper() not in Role.__members__ or part.upper() == "REGISTRAR":
            raise click.BadParameter(
                f"unknown role {part!r}: arbiter, maker, carrier, inspector, auditor"
            )
        mask |= Role[part.upper()]
    return mask


def _enc_key(t: TxOpts, text: str, mask: int) -> bytes:
    """The auditor's X25519 key: hex, or the name of a key in the keyring (its newest)."""
    if mask & Role.AUDITOR and not text:
        raise click.UsageError(
            "the auditor role needs --enc-key: the auditor's X25519 public key (hex, or the "
            "name of its key in this keyring); the auditor makes one with "
            "`liveledger enc-key new NAME` and prints it with `liveledger enc-key show NAME`"
        )
    if text and not all(c in "0123456789abcdefABCDEF" for c in text):
        found = enc_keys_of(t.keyring, text)
        if not found:
            raise click.BadParameter(
                f"{text!r} is neither 64 hex characters nor the name of an X25519 key in "
                f"{t.keyring} (`liveledger enc-key new {text}` makes one)",
                param_hint="--enc-key",
            )
        return found[0][0]
    return _hex32(text, "--enc-key")


@tx_command(roles, "set")
@click.argument("address")
@click.option(
    "--roles", "names", required=True, help="Comma-separated, e.g. arbiter,maker ('' for none)."
)
@click.option(
    "--enc-key",
    default="",
    help="For an auditor: its X25519 public key (hex) or the name of that key in the keyring.",
)
def roles_set(t: TxOpts, address: str, names: str, enc_key: str) -> None:
    """Set the full role mask of ADDRESS (an ll1... address or a key's name; registrar)."""
    mask = _role_mask(names)
    t.send(tx.SET_ROLES, tx.SetRoles(t.resolve(address), mask, _enc_key(t, enc_key, mask)))


@read_command(roles, "show")
@click.argument("address")
def roles_show(address: str, node_url: str) -> Any:
    """Roles of ADDRESS."""
    return NodeClient(node_url).get(f"/v1/roles/{address}")
