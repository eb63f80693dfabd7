"""The building blocks of the commerce commands, shared by all of them.

Parameter types, the ``--keyring``/``--from``/``--genesis`` options, ``TxOpts`` with
the ``tx_command``/``read_command`` decorators, and small value and output helpers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import click

from cli import human
from cli.client import NodeClient, NodeError, answer_field, int_field
from cli.commerce.client import CommerceClient
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.main import (
    clear_errors,
    keyring_option,
    node_option,
    simulate_option,
    trusted_genesis_option,
    tx_genesis_option,
)
from cli.send import submit_tx
from cli.trust import SIGNED_FOR, Anchor, command_anchor
from core import PrivateKey, parse_address
from vm.params import MAX_TIME_PRECISION_MS

U64 = click.IntRange(0, 2**64 - 1)
ID = click.IntRange(1, 2**64 - 1)
AMOUNT = click.IntRange(1, 2**64 - 1)
BPS = click.IntRange(0, 10_000)

from_option = click.option(
    "--from", "sender", required=True, help="Name of the signing key in the keyring."
)

# ``order place``, ``bid`` and ``order disclose``: the key an address is sealed to is
# proven against the trusted genesis too.
seal_genesis_option = trusted_genesis_option(
    "Trusted genesis.json: the X25519 key the address is sealed to (the merchant's, "
    "or an auditor's) is proven against it before the address is sealed, and the "
    "transaction signed for its chain id (default: the genesis pinned in the keyring, "
    "`liveledger genesis pin`; with neither, the node's word for both)."
)
SEALED_TO = (
    SIGNED_FOR + ", and the merchant and X25519 key the address is sealed to (a node that "
    "shows its own key opens the address),"
)
# ``order place`` also signs the listing's terms (or the deal's) as the node shows them.
ORDERED = (
    SIGNED_FOR + ", the merchant and X25519 key the address is sealed to (a node that "
    "shows its own key opens the address), and the price, version and currency signed "
    "(the listing's; with --deal, the deal's price and session: a node that lies about "
    "them has the order fail, for its fee),"
)
# ``listing update`` and ``merchant update``: the fields the user leaves unchanged are
# re-signed at their current values, read from records proven against the genesis.
keep_genesis_option = trusted_genesis_option(
    "Trusted genesis.json: the current values of the fields left unchanged are read "
    "from the records proven against it, and the transaction signed for its chain id "
    "(default: the genesis pinned in the keyring, `liveledger genesis pin`; with "
    "neither, the node's word for both)."
)
KEPT = SIGNED_FOR + ", and the values it signs again for the fields left unchanged,"


@dataclass(frozen=True, slots=True)
class TxOpts:
    """The options every transaction command shares."""

    keyring: Path
    sender: str
    fee: int | None
    nonce: int | None
    wait: bool
    node_url: str
    simulate: bool = True
    # The trusted genesis (``cli.trust``); None: the node's word, as the command warned.
    anchor: Anchor | None = None

    @property
    def client(self) -> CommerceClient:
        return CommerceClient(self.node_url)

    def get_signed(self, path: str, client: CommerceClient | None = None) -> Any:
        """GET ``path`` signed by the signer, for the trusted chain."""
        return (client or self.client).get_signed(path, self.keyring, self.sender, self.anchor)

    def send(
        self,
        tx_type: str,
        payload: Any,
        client: CommerceClient | None = None,
        key: PrivateKey | None = None,
    ) -> dict[str, Any] | None:
        """Sign, simulate, send and (with --wait) report the transaction and its events;
        the committed transaction with --wait. ``key``: the signer's, if already loaded."""
        return submit_tx(
            client or self.client,
            self.keyring,
            self.sender,
            tx_type,
            payload.encode(),
            self.fee,
            self.nonce,
            self.wait,
            simulate=self.simulate,
            key=key,
            anchor=self.anchor,
        )

    def signing_key(self) -> PrivateKey:
        """The signer's key (asks for the passphrase unless LIVELEDGER_PASSPHRASE is set)."""
        return Keyring(self.keyring).load(self.sender, passphrase_from_env_or_prompt(False))

    def address(self) -> bytes:
        return parse_address(Keyring(self.keyring).address(self.sender))

    def resolve(self, text: str) -> bytes:
        """An ``ll1…`` address, or the address of a key of this keyring by its name."""
        return Keyring(self.keyring).resolve(text)


def tx_command(
    group: click.Group,
    name: str,
    *,
    seals: bool = False,
    keeps: bool = False,
    unanchored: str | None = None,
) -> Callable[[Callable[..., None]], click.Command]:
    """A transaction command of ``group``: the shared options arrive as one ``TxOpts``,
    with the trusted genesis (``--genesis``, else the keyring's pin) as its anchor.
    ``seals``: the command seals an address to a key the anchor proves; ``keeps``: it
    re-signs the current values of fields the user leaves unchanged, read from records
    the anchor proves. ``unanchored``: what the warning without an anchor names as the
    node's word, where it is more than ``seals`` or ``keeps`` say."""
    warning = unanchored or (SEALED_TO if seals else KEPT if keeps else SIGNED_FOR)
    genesis_opt = (
        seal_genesis_option if seals else keep_genesis_option if keeps else tx_genesis_option
    )

    def decorate(fn: Callable[..., None]) -> click.Command:
        @wraps(fn)
        def run(
            keyring: Path,
            sender: str,
            fee: int | None,
            nonce: int | None,
            wait: bool,
            no_simulate: bool,
            node_url: str,
            genesis_file: Path | None,
            **kwargs: Any,
        ) -> None:
            anchor = command_anchor(keyring, genesis_file, warning)
            opts = TxOpts(keyring, sender, fee, nonce, wait, node_url, not no_simulate, anchor)
            fn(opts, **kwargs)

        cmd: Any = clear_errors(run)
        for option in (
            genesis_opt,
            node_option,
            simulate_option,
            click.option(
                "--wait",
                is_flag=True,
                help="Return once committed; fail with the error code if it failed.",
            ),
            click.option("--nonce", type=U64, default=None, help="Default: the account's next."),
            click.option("--fee", type=U64, default=None, help="Default: the chain's minimum."),
            from_option,
            keyring_option,
        ):
            cmd = option(cmd)
        return group.command(name)(cmd)

    return decorate


def read_command(group: click.Group, name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A read command of ``group``: ``--node``, clear errors, the result printed as JSON."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        @wraps(fn)
        def run(**kwargs: Any) -> None:
            _echo_json(fn(**kwargs))

        return group.command(name)(node_option(clear_errors(run)))

    return decorate


def _echo_json(doc: Any) -> None:
    """Print a read as JSON, with ``<name>_iso`` beside every ``<name>_ms`` time."""
    click.echo(json.dumps(human.with_times(doc), indent=2))


def _hash_option(name: str, help_text: str) -> Callable[[Any], Any]:
    return click.option(name, default="", help=help_text + " (32 bytes, hex; default none).")


def _hex32(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"{what} must be hex") from None
    if len(raw) not in (0, 32):
        raise click.BadParameter(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


# How far ahead of this machine's clock the node's latest block time may be. No chain
# lets a block time run more than MAX_TIME_PRECISION_MS (a minute) ahead of an honest
# producer's clock; the rest allows for this machine's own clock being behind.
BLOCK_TIME_AHEAD_MS = MAX_TIME_PRECISION_MS + 4 * 60_000
# How far behind this machine's clock it may be. A chain makes a block every block
# interval, idle or not (half a second by default), so a following node's latest block
# is seconds old; the same allowance as ahead covers this machine's clock being ahead.
BLOCK_TIME_BEHIND_MS = BLOCK_TIME_AHEAD_MS


def _now_ms(client: NodeClient) -> int:
    """ "Now" for a time the user signs: the latest block time (the wall clock before
    the first block). Event times and deal starts may not be after the block time that
    includes them; the latest block's time is safe. A node whose latest block is far
    behind the wall clock is refused (``stale_node``), not replaced by the wall clock:
    that one may be ahead of the chain's time, and the node's other answers (the nonce,
    the simulation) are as stale as its time."""
    wall = int(time.time() * 1000)
    status = client.status()
    if answer_field(status, "latest_block_time_ms", "status") is None:
        return wall
    # A time far ahead of every clock would date what is signed into the future.
    latest = int_field(status, "latest_block_time_ms", "status", 1, wall + BLOCK_TIME_AHEAD_MS)
    # One far behind (a node that stopped following the chain, a halted chain, or a node
    # lying) would date it into the past: a deal "in 1h" could end before it is sent.
    if latest < wall - BLOCK_TIME_BEHIND_MS:
        raise NodeError(
            "stale_node",
            f"the node's latest block time is {latest}, {(wall - latest) // 60_000} minutes "
            "behind this machine's clock: the node does not follow the chain (or the chain "
            "halted, or this clock is ahead), and a time dated from it would be in the past; "
            "nothing was signed. Point --node at a node that follows the chain, or give the "
            "time in epoch milliseconds",
        )
    return latest


def _when(client: NodeClient, when: human.When | None, ms: int | None, what: str) -> int:
    """A time given as WHEN (``--x``) or epoch ms (``--x-ms``), "now" = the latest block
    time; the latest block time if neither is given."""
    if when is not None and ms is not None:
        raise click.UsageError(f"give --{what} or --{what}-ms, not both")
    if ms is not None:
        return ms
    # A time given in full needs no "now": a stale node's (``_now_ms``) is no reason to
    # refuse it.
    if when is not None and when.absolute_ms is not None:
        return when.absolute_ms
    now = _now_ms(client)
    return now if when is None else when.resolve(now)


# The building blocks the commerce commands share; ``keyring_option`` is cli.main's,
# one --keyring for every command.
__all__ = [
    "AMOUNT",
    "BPS",
    "ID",
    "U64",
    "TxOpts",
    "from_option",
    "keyring_option",
    "read_command",
    "tx_command",
]
