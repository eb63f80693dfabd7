"""``liveledger keys``: create and inspect keys in a keyring directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.keyring import Keyring, passphrase_from_env_or_prompt
from core.errors import LiveLedgerError
from core.keys import format_address
from core.keystore import KeyInfo

_F = TypeVar("_F", bound=Callable[..., Any])

keyring_option = click.option(
    "--keyring",
    "keyring_path",
    required=True,
    envvar="LIVELEDGER_KEYRING",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keyring directory (or set LIVELEDGER_KEYRING).",
)


def _clear_errors(fn: _F) -> _F:
    """Turn our errors into one-line click errors (exit code 1) instead of tracebacks."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LiveLedgerError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


@click.group("keys")
def keys() -> None:
    """Create and inspect signing keys."""


@keys.command("new")
@click.argument("name")
@keyring_option
@_clear_errors
def new_key(name: str, keyring_path: Path) -> None:
    """Create key NAME and print its address.

    The passphrase comes from LIVELEDGER_PASSPHRASE, or is asked for twice.
    """
    keyring = Keyring(keyring_path)
    # Check the name before asking for a passphrase the user would type for nothing.
    if name in keyring:
        raise click.ClickException(f"key {name!r} already exists in keyring {keyring_path}")
    key = keyring.create(name, passphrase_from_env_or_prompt(confirm=True))
    click.echo(format_address(key.address))


@keys.command("show")
@click.argument("name")
@keyring_option
@click.option("--json", "as_json", is_flag=True, help="Print name, address and public key.")
@_clear_errors
def show_key(name: str, keyring_path: Path, as_json: bool) -> None:
    """Print the address of key NAME (no passphrase needed)."""
    info = Keyring(keyring_path).info(name)
    if as_json:
        doc = {"name": name, "address": info.address, "public_key": info.public_key.hex()}
        click.echo(json.dumps(doc))
    else:
        click.echo(info.address)


@keys.command("list")
@keyring_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_clear_errors
def list_keys(keyring_path: Path, as_json: bool) -> None:
    """List the keys of a keyring with their addresses."""
    keyring = Keyring(keyring_path)
    infos: list[tuple[str, KeyInfo]] = []
    broken = 0
    for name in keyring.names():
        # One damaged file should not hide the other keys; report it and fail at the end.
        try:
            infos.append((name, keyring.info(name)))
        except LiveLedgerError as exc:
            click.echo(f"warning: skipping {name!r}: {exc}", err=True)
            broken += 1
    if as_json:
        docs = [
            {"name": n, "address": i.address, "public_key": i.public_key.hex()} for n, i in infos
        ]
        click.echo(json.dumps(docs))
    else:
        width = max((len(n) for n, _ in infos), default=0)
        for name, info in infos:
            click.echo(f"{name:<{width}}  {info.address}")
    if broken:
        raise click.ClickException(f"{broken} key file(s) could not be read")
