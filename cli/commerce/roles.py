"""``liveledger roles``: commerce roles, granted by a registrar."""

from __future__ import annotations

from typing import Any

import click

from apps.commerce import payloads as tx
from apps.commerce.model import Role
from cli.client import NodeClient
from cli.commerce.commands import TxOpts, _hex32, read_command, tx_command
from cli.main import main
from core import parse_address


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


@tx_command(roles, "set")
@click.argument("address")
@click.option(
    "--roles", "names", required=True, help="Comma-separated, e.g. arbiter,maker ('' for none)."
)
@click.option("--enc-key", default="", help="The auditor's X25519 public key (hex).")
def roles_set(t: TxOpts, address: str, names: str, enc_key: str) -> None:
    """Set the full role mask of ADDRESS (registrar)."""
    t.send(
        tx.SET_ROLES,
        tx.SetRoles(parse_address(address), _role_mask(names), _hex32(enc_key, "--enc-key")),
    )


@read_command(roles, "show")
@click.argument("address")
def roles_show(address: str, node_url: str) -> Any:
    """Roles of ADDRESS."""
    return NodeClient(node_url).get(f"/v1/roles/{address}")
