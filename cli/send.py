"""Signing and sending a transaction, and how the CLI reports a failure.

``submit_tx`` is what every transaction command ends in:

0. the chain id signed for is the trusted genesis's (``cli.trust``: ``--genesis``, the
   pinned one, a node home's), and a node of another chain is refused before anything
   is signed; without one, the chain id the node states (the command warned of it);
1. the nonce is the node's ``next_nonce`` for the signer: after the transactions it
   holds pending for it, so commands sent back to back do not collide;
2. the signed transaction is simulated on the node (``POST /v1/txs/simulate``): if a
   block would fail it, the command stops with that block's error code and message
   (exit 3) and nothing is sent, so no fee is lost to a foreseeable failure
   (``--no-simulate`` sends it anyway);
3. it is sent and its hash printed; with ``--wait``, its height and events (ids of what
   it created, addresses as ``ll1…``, times with their ISO form), or its error (exit 3).

Every failure is one line ``error: <code>: <message>`` on stderr, epoch-millisecond
times in it with their ISO form, and where the fix is not obvious a ``hint:`` line;
exit 2 when the node refused before any block, 3 for an execution error.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from cli.client import NodeClient, NodeError
from cli.human import event_line, times_in
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.trust import Anchor, signing_chain_id
from core import PrivateKey, TxBody, format_address, sign_tx

# Exit statuses: refused before a block (bad input, the node's admission), and an
# execution error (simulated or committed).
EXIT_REFUSED = 2
EXIT_FAILED = 3


def fail(code: str | None, message: str, status: int = EXIT_REFUSED, hint: str = "") -> NoReturn:
    """Print ``error: <code>: <message>`` (and ``hint: ...``) on stderr and exit."""
    line = f"error: {code}: {times_in(message)}" if code else f"error: {times_in(message)}"
    click.echo(line, err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(status)


def hint_for(exc: NodeError, nonce: int | None = None, explicit_nonce: bool = False) -> str:
    """What a person can do about a refusal, where the message alone does not say it."""
    if exc.code == "duplicate" and "nonce" in exc.message and nonce is not None:
        need = re.search(r"fee >= (\d+)", exc.message)
        replace = f" --fee {need.group(1)}" if need else " and a higher --fee"
        again = (
            "leave out --nonce to take the next free one"
            if explicit_nonce
            else "send the command again: it takes the next nonce after the pending ones"
        )
        return (
            f"another transaction of this key with nonce {nonce} is pending (sent at the same "
            f"time from elsewhere?). To send this one as well, {again}; to replace the "
            f"pending one, give --nonce {nonce}{replace}"
        )
    if exc.code == "duplicate":
        return "the node already has this very transaction: it was sent before"
    if exc.code == "nonce_too_low" and explicit_nonce:
        return "that nonce is used; leave out --nonce to take the next free one"
    if exc.code == "unreachable":
        return (
            "is the node running? Give its URL with --node or LIVELEDGER_NODE "
            "(`liveledger devnet env` prints a devnet's)"
        )
    if exc.code in ("chain_mismatch", "genesis_mismatch"):
        return (
            "point --node (or LIVELEDGER_NODE) at a node of the trusted chain; if the "
            "consortium gave you another genesis, pin it: `liveledger genesis pin FILE --replace`"
        )
    if exc.code in ("insufficient_fee", "insufficient_funds"):
        return "fund the key first (e.g. `liveledger tx transfer --from faucet ...`)"
    return ""


def submit_tx(
    client: NodeClient,
    keyring: Path,
    name: str,
    tx_type: str,
    payload: bytes,
    fee: int | None,
    nonce: int | None,
    wait: bool,
    *,
    simulate: bool = True,
    key: PrivateKey | None = None,
    anchor: Anchor | None = None,
) -> dict[str, Any] | None:
    """Sign a transaction of the key NAME, simulate it, send it and print its hash; with
    ``wait``, its outcome. Returns the committed transaction (with ``wait``), else None.

    ``key``: the signing key if the caller loaded it already (one passphrase prompt);
    ``anchor``: the trusted genesis, whose chain id is signed for (None: the node's).
    """
    ring = Keyring(keyring)
    ring.address(name)  # a missing key fails before the passphrase is asked for
    if key is None:
        key = ring.load(name, passphrase_from_env_or_prompt(confirm=False))
    return sign_and_send(
        client, key, tx_type, payload, fee, nonce, wait, simulate=simulate, anchor=anchor
    )


def sign_and_send(
    client: NodeClient,
    key: PrivateKey,
    tx_type: str,
    payload: bytes,
    fee: int | None,
    nonce: int | None,
    wait: bool,
    *,
    simulate: bool = True,
    anchor: Anchor | None = None,
) -> dict[str, Any] | None:
    """Sign with ``key``, simulate, send, print the hash; with ``wait``, the height and
    events (or exit 3 with the receipt's code) and return the committed transaction.

    The chain id is ``anchor``'s, once the node's status shows that chain and genesis
    (else ``chain_mismatch``/``genesis_mismatch``, nothing signed); without an anchor,
    the node's. The fee (by default the minimum) and the expiry bound are the parameters
    in force (``GET /v1/params``): governance may have changed them since genesis.
    """
    status = client.status()
    chain_id = signing_chain_id(status, client.url, anchor)
    params = client.params()["params"]
    explicit = nonce is not None
    if nonce is None:
        account = client.account(format_address(key.address))
        # The next nonce after what the node holds pending (older nodes: the state's).
        nonce = int(account.get("next_nonce", account["nonce"]))
    body = TxBody(
        nonce=nonce,
        fee=params["min_fee"] if fee is None else fee,
        expiry_height=status["height"] + min(100, params["max_expiry_blocks"]),
        type=tx_type,
        payload=payload,
    )
    raw = sign_tx(key, chain_id, body).encode()
    if simulate:
        _simulate(client, raw, nonce, explicit)
    try:
        tx_hash = client.submit(raw)
    except NodeError as exc:
        fail(exc.code, exc.message, hint=hint_for(exc, nonce, explicit))
    click.echo(tx_hash)
    if not wait:
        return None
    doc = client.wait_committed(tx_hash)
    receipt = doc["receipt"]
    if receipt["code"] != "ok":
        fail(receipt["code"], f"{receipt['message']} (height {doc['height']})", EXIT_FAILED)
    click.echo(f"committed at height {doc['height']}")
    for event in receipt["events"]:
        click.echo(event_line(event))
    return doc


def _simulate(client: NodeClient, raw: bytes, nonce: int, explicit: bool) -> None:
    """Stop (exit 3) if a block would fail the transaction; nothing has been sent."""
    try:
        doc = client.simulate(raw)
    except NodeError as exc:
        if exc.code in ("not_found", "method_not_allowed"):
            click.echo("note: this node cannot simulate; sending without a simulation", err=True)
            return
        fail(exc.code, exc.message, hint=hint_for(exc, nonce, explicit) or "nothing was sent")
    receipt = doc["receipt"]
    if receipt["code"] != "ok":
        fail(
            receipt["code"],
            receipt["message"],
            EXIT_FAILED,
            f"the next block would fail it with this error and charge its fee "
            f"({receipt['fee']}); nothing was sent (--no-simulate sends it anyway)",
        )


__all__ = ["EXIT_FAILED", "EXIT_REFUSED", "fail", "hint_for", "sign_and_send", "submit_tx"]
