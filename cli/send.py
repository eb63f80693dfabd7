"""Signing and sending a transaction, and how the CLI reports a failure.

``submit_tx`` is what every transaction command ends in:

0. the chain id signed for is the trusted genesis's (``cli.trust``: ``--genesis``, the
   pinned one, a node home's), and a node of another chain is refused before anything
   is signed; without one, the chain id the node states (the command warned of it);
1. the nonce is the node's ``next_nonce`` for the signer: after the transactions it
   holds pending for it, so commands sent back to back do not collide;
   the fee (unless ``--fee``) is the minimum in force and the expiry the node's head
   height plus at most EXPIRY_BLOCKS: the node's word too, each checked to be an
   integer in range; a minimum above the trusted genesis's is paid only once the
   chain's state, proven against it, shows governance set it (else
   ``fee_not_in_force``: ``--fee`` pays it knowingly);
2. the signed transaction is simulated on the node (``POST /v1/txs/simulate``): if a
   block would fail it, the command stops with that block's error code and message
   (exit 3) and nothing is sent, so no fee is lost to a foreseeable failure
   (``--no-simulate`` sends it anyway);
3. it is sent and its hash printed (computed here, never the node's word); with
   ``--wait``, its height and events (ids of what it created, addresses as ``ll1…``,
   times with their ISO form), or its error (exit 3). A node may say "committed, ok" of
   a transaction it dropped: with a trusted genesis, the outcome printed is the one the
   transaction's inclusion proof shows (``cli.light.proven_tx``: its block certified by
   the producers derived from the genesis), and a node that cannot prove what it says
   ends the command with ``unproven`` (exit 4: the outcome is unknown, so sending again
   may pay twice); without one, the node's word, said as ``(unproven: …)``.

Every failure is one line ``error: <code>: <message>`` on stderr, epoch-millisecond
times in it with their ISO form, and where the fix is not obvious a ``hint:`` line;
exit 2 when the node refused before any block, 3 for an execution error, 4 when the
node says the transaction is committed and cannot prove it.

A stdout that refuses output ends any command with exit 1 (``output_failed``):
quietly once its reader went (``liveledger ... | head``), else with why (a full disk).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from cli.client import (
    MAX_U64,
    TRY_AGAIN,
    TRY_AGAIN_S,
    NodeClient,
    NodeError,
    int_field,
    list_field,
    object_field,
    reading_answer,
    str_field,
)
from cli.human import event_line, times_in
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.light import proven_tx
from cli.trust import Anchor, signing_chain_id
from consensus.staking_state import ACTIVE_PARAMS_KEY, PENDING_PARAMS_KEY, PendingParams
from core import PrivateKey, TxBody, format_address, sign_tx, tx_hash
from core.errors import Invalid
from vm import ChainParams, receipt_json

# Exit statuses: refused before a block (bad input, the node's admission), an execution
# error (simulated or committed), and a "committed" the node cannot prove (the outcome
# is unknown: the transaction may be in a block, or dropped).
EXIT_REFUSED = 2
EXIT_FAILED = 3
EXIT_UNPROVEN = 4


def fail(code: str | None, message: str, status: int = EXIT_REFUSED, hint: str = "") -> NoReturn:
    """Print ``error: <code>: <message>`` (and ``hint: ...``) on stderr and exit."""
    line = f"error: {code}: {times_in(message)}" if code else f"error: {times_in(message)}"
    click.echo(line, err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(status)


def output_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is an output stream refusing a line (a closed pipe, a full disk),
    not a file's or a node's: every line the CLI prints goes through ``click.echo``, so
    an ``OSError`` raised in it is the output's."""
    if not isinstance(exc, OSError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is click.utils.echo.__code__:
            return True
        tb = tb.tb_next
    return False


def output_failed(exc: OSError, what: str = "the output") -> NoReturn:
    """End the command once stdout refused ``what`` (``exc`` says why): exit 1, quietly
    when its reader went (nobody reads a reason), else with why on stderr."""
    # Python flushes stdout again at exit, and would print its own error there (and
    # exit 120): what is left unprinted goes nowhere (a stdout with no descriptor, as
    # a test's, keeps it; a closed one raises ValueError, not OSError).
    with contextlib.suppress(OSError, ValueError):
        stdout = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stdout)
        finally:
            os.close(devnull)
    if not isinstance(exc, BrokenPipeError):
        # Stderr may be what refused (or be closed): then nothing can be said.
        with contextlib.suppress(OSError, ValueError):
            fail(None, f"cannot print {what}: {exc}", 1)
    sys.exit(1)


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
    if exc.code == "maybe_pruned":
        return "an archive node (`pruning: {archive: true}`) holds every block: ask one with --node"
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
    params = object_field(client.params(), "params", "parameters in force")
    explicit = nonce is not None
    if nonce is None:
        nonce = _next_nonce(client, key)
    if fee is None:
        fee = _min_fee(client, params, anchor)
    body = TxBody(
        nonce=nonce, fee=fee, expiry_height=_expiry(status, params), type=tx_type, payload=payload
    )
    raw = sign_tx(key, chain_id, body).encode()
    if simulate:
        _simulate(client, raw, nonce, explicit)
    # Followed by the hash computed here: a node stating another one would have --wait
    # report (and prove) another transaction's outcome.
    own = tx_hash(raw).hex()
    try:
        stated = client.submit(raw)
    except NodeError as exc:
        fail(exc.code, exc.message, hint=hint_for(exc, nonce, explicit))
    if stated != own:
        click.echo(
            f"warning: {client.url} stated hash {stated[:64]!r} for this transaction; "
            f"its hash is {own}",
            err=True,
        )
    click.echo(own)
    if not wait:
        return None
    doc, how = _committed(client, own, anchor)
    what = f"transaction {own}"
    height = int_field(doc, "height", what)
    code, message, events = _receipt(doc, what)
    if code != "ok":
        fail(code, f"{message} (height {height}, {how})", EXIT_FAILED)
    click.echo(f"committed at height {height} ({how})")
    with reading_answer(f"{what}'s events"):
        for event in events:
            click.echo(event_line(event))
    return doc


# How long --wait asks again for a proof the node is too busy to give (or has no block
# for yet), once it said the transaction is committed: as long as it waits for that.
PROOF_WAIT_S = 30.0


def _committed(
    client: NodeClient, hash_hex: str, anchor: Anchor | None
) -> tuple[dict[str, Any], str]:
    """The transaction ``hash_hex`` once the node says it is committed, and how its
    outcome is known. With ``anchor``: the block, index and receipt its inclusion proof
    shows against a header certified from the anchor's genesis, whatever the node's
    status answer says; a node that cannot prove it ends the command (``unproven``,
    exit 4). Without one: the node's word."""
    doc = client.wait_committed(hash_hex)
    if anchor is None:
        return doc, "unproven: the node's word, no genesis is trusted"
    # A busy node (a flash deal's buyers all asking for proofs: a few block reads run at
    # once) or one a balancer put behind the one that answered (its block not yet there)
    # says nothing against the transaction: asked again, for as long as a wait lasts.
    deadline = time.monotonic() + PROOF_WAIT_S
    while True:
        try:
            proven = proven_tx(client, anchor.genesis, bytes.fromhex(hash_hex), anchor.cache)
            break
        except NodeError as exc:
            if exc.code in (*TRY_AGAIN, "pending") and time.monotonic() < deadline:
                time.sleep(TRY_AGAIN_S)
                continue
            _unproven(client, hash_hex, doc, anchor, f"{exc.code}: {exc.message}")
        except Invalid as exc:
            # Whatever failed (no proof, a malformed or false one, no epoch record): said.
            _unproven(client, hash_hex, doc, anchor, f"{exc.code}: {exc.message}")
    out = {
        "hash": hash_hex,
        "status": "committed",
        "height": proven.header.height,
        "index": proven.proof.index,
        "receipt": receipt_json(proven.receipt),
    }
    return out, f"proven against {anchor.source}"


def _unproven(
    client: NodeClient, hash_hex: str, doc: dict[str, Any], anchor: Anchor, why: str
) -> NoReturn:
    """End the command: the node says ``doc`` (committed) and its proof failed (``why``)."""
    receipt = doc.get("receipt")
    said = receipt.get("code") if isinstance(receipt, dict) else None
    fail(
        "unproven",
        f"{client.url} says transaction {hash_hex} is committed at height "
        f"{str(doc.get('height'))[:20]} ({str(said)[:40]}), and cannot prove it against "
        f"{anchor.source} ({why[:300]}): its outcome is unknown",
        EXIT_UNPROVEN,
        hint=(
            "the node may have dropped it; do not send it again before another node "
            f"proves or denies it: `liveledger query tx {hash_hex} --prove --node URL`"
        ),
    )


# How far ahead of the node's head a transaction expires, at most (the chain's
# max_expiry_blocks may allow more): a signed transaction cannot be held back long.
EXPIRY_BLOCKS = 100


def _next_nonce(client: NodeClient, key: PrivateKey) -> int:
    """The signer's next nonce as the node states it: after the transactions it holds
    pending for the key (older nodes: the state's nonce)."""
    what = "account of the signer"
    account = client.account(format_address(key.address))
    nonce = int_field(account, "nonce", what)
    if "next_nonce" not in account:
        return nonce
    # Pending transactions only ever add to the state's nonce.
    return int_field(account, "next_nonce", what, low=nonce)


def _min_fee(client: NodeClient, params: dict[str, Any], anchor: Anchor | None) -> int:
    """The fee paid when none is given: the minimum in force, as the node states it.

    The whole fee is charged. With a trusted genesis, a minimum above the genesis's is
    paid only if governance set it: the chain's state, proven against the genesis,
    holds it in force or passed and waiting for its height (a change due now). Else
    ``fee_not_in_force``, nothing signed: ``--fee`` pays it knowingly.
    """
    min_fee = int_field(params, "min_fee", "parameters in force")
    if anchor is None or min_fee <= anchor.genesis.params.min_fee:
        return min_fee
    proven = _governed_min_fees(client, anchor)
    if min_fee not in proven:
        raise NodeError(
            "fee_not_in_force",
            f"the node states a minimum fee of {min_fee}; the chain's state proven against "
            f"{anchor.source} sets {' or '.join(map(str, sorted(proven)))}: nothing was "
            f"signed. To pay {min_fee} all the same, give --fee {min_fee}",
        )
    return min_fee


def _governed_min_fees(client: NodeClient, anchor: Anchor) -> set[int]:
    """The minimum fees the chain's state sets, proven against the anchor's genesis:
    the one in force and those passed by governance and waiting for their height (the
    node states the fee for its next block, which a waiting change may already be due
    at). A chain without staking has no governance: genesis's is the only one."""
    genesis = anchor.genesis
    if genesis.staking is None:
        return {genesis.params.min_fee}
    active, _ = anchor.prove(client, ACTIVE_PARAMS_KEY)
    pending, _ = anchor.prove(client, PENDING_PARAMS_KEY)
    fees = {genesis.params.min_fee if active is None else ChainParams.decode(active).min_fee}
    if pending is not None:
        changes = PendingParams.decode(pending).changes
        fees |= {change.value for change in changes if change.name == "min_fee"}
    return fees


def _expiry(status: dict[str, Any], params: dict[str, Any]) -> int:
    """The last height the transaction may be included at: the node's head height plus
    at most EXPIRY_BLOCKS (the node's word for both: see the module's docstring)."""
    ahead = min(EXPIRY_BLOCKS, int_field(params, "max_expiry_blocks", "parameters in force", 1))
    return int_field(status, "height", "status", high=MAX_U64 - ahead) + ahead


def _receipt(doc: dict[str, Any], what: str) -> tuple[str, str, list[Any]]:
    """A receipt's code, message and events, from the node's document ``doc``."""
    receipt = object_field(doc, "receipt", what)
    what = f"{what}'s receipt"
    code = str_field(receipt, "code", what)
    return code, str_field(receipt, "message", what), list_field(receipt, "events", what)


def _simulate(client: NodeClient, raw: bytes, nonce: int, explicit: bool) -> None:
    """Stop (exit 3) if a block would fail the transaction; nothing has been sent."""
    try:
        doc = client.simulate(raw)
    except NodeError as exc:
        if exc.code in ("not_found", "method_not_allowed"):
            click.echo("note: this node cannot simulate; sending without a simulation", err=True)
            return
        fail(exc.code, exc.message, hint=hint_for(exc, nonce, explicit) or "nothing was sent")
    what = "simulation"
    code, message, _ = _receipt(doc, what)
    if code != "ok":
        fee = int_field(object_field(doc, "receipt", what), "fee", f"{what}'s receipt")
        fail(
            code,
            message,
            EXIT_FAILED,
            f"the next block would fail it with this error and charge its fee "
            f"({fee}); nothing was sent (--no-simulate sends it anyway)",
        )


__all__ = [
    "EXIT_FAILED",
    "EXIT_REFUSED",
    "EXIT_UNPROVEN",
    "fail",
    "hint_for",
    "output_failed",
    "output_refused",
    "sign_and_send",
    "submit_tx",
]
