"""``liveledger staking``, ``liveledger gov`` and the staking reads of ``liveledger query``.

A command for each staking and governance transaction (``consensus.staking``
registers them). A member's own transactions (standing as a candidate, unjailing,
proposing, voting on proposals) are signed by its node key: ``--home H`` signs with
``H/node_key.json`` and, unless ``--node`` says otherwise, talks to that home's own
HTTP API. Anyone else's (bonding, ballots, evidence) may come from a keyring key
(``--keyring K --from NAME``) as well. Fees and expiry follow the parameters in
force (``GET /v1/params``), so a fee raised by governance is paid without a flag.
The chain id signed for is that of the genesis installed in ``H`` (or pinned in ``K``,
``cli.trust``); a node of another chain is refused before anything is signed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from cli.client import NodeClient, int_field, reading_answer
from cli.keyring import Keyring, passphrase_from_env_or_prompt
from cli.main import clear_errors, main, query
from cli.send import sign_and_send
from cli.trust import SIGNED_FOR, command_anchor
from consensus.evidence import SUBMIT_EVIDENCE, SubmitEvidence
from consensus.governance import (
    PROPOSE_ADMIT_MEMBER,
    PROPOSE_GRANT_ISSUER,
    PROPOSE_PARAM_CHANGE,
    PROPOSE_REMOVE_MEMBER,
    PROPOSE_REVOKE_ISSUER,
    VOTE_PROPOSAL,
    ProposeAdmitMember,
    ProposeGrantIssuer,
    ProposeParamChange,
    ProposeRemoveMember,
    ProposeRevokeIssuer,
    VoteProposal,
)
from consensus.staking import (
    BOND,
    REGISTER_CANDIDATE,
    SET_MEMBER_ADDRESS,
    UNBOND,
    UNJAIL,
    VOTE_PRODUCERS,
    Bond,
    RegisterCandidate,
    SetMemberAddress,
    Unbond,
    Unjail,
    VoteProducers,
)
from core import LiveLedgerError, PrivateKey, Vote
from core.codec import Wire
from core.errors import DecodeError
from core.files import DuplicateJsonKey, read_regular_file, reject_duplicate_keys
from core.keystore import load_key
from core.netaddr import InvalidNetAddress, check_dialable
from genesis.home import NODE_KEY_FILE, external_address, read_config

U64 = click.IntRange(0, 2**64 - 1)
AMOUNT = click.IntRange(1, 2**64 - 1)
DEFAULT_NODE = "http://127.0.0.1:26657"
# An evidence file is a few hundred bytes of hex.
MAX_EVIDENCE_FILE_BYTES = 16 * 1024


class OperatorError(LiveLedgerError):
    """An operator command's input is unusable (nothing was sent)."""

    code = "bad_input"


class Signer:
    """The key a transaction is signed with and the node it goes to."""

    def __init__(
        self,
        home: Path | None,
        keyring: Path | None,
        sender: str | None,
        node_url: str | None,
        fee: int | None,
        nonce: int | None,
        wait: bool,
    ) -> None:
        # Exactly one source of the signing key.
        if (home is None) == (keyring is None or sender is None):
            raise OperatorError(
                "sign with a node key (--home H) or a keyring key (--keyring K --from NAME)"
            )
        self.home = home
        self.keyring = keyring
        self.sender = sender
        self.client = NodeClient(node_url or _home_url(home) or DEFAULT_NODE)
        self.fee = fee
        self.nonce = nonce
        self.wait = wait

    def key(self) -> PrivateKey:
        passphrase = passphrase_from_env_or_prompt(confirm=False)
        if self.home is not None:
            return load_key(self.home / NODE_KEY_FILE, passphrase)
        assert self.keyring is not None and self.sender is not None
        ring = Keyring(self.keyring)
        ring.address(self.sender)  # a missing key fails before the passphrase matters
        return ring.load(self.sender, passphrase)

    def send(self, tx_type: str, payload: Wire) -> None:
        """Sign for the trusted chain and send; with ``--wait`` ``sign_and_send`` prints
        the events (ids of what it made)."""
        anchor = command_anchor(self.keyring, None, SIGNED_FOR, self.home)
        sign_and_send(
            self.client,
            self.key(),
            tx_type,
            payload.encode(),
            self.fee,
            self.nonce,
            self.wait,
            anchor=anchor,
        )


def _home_url(home: Path | None) -> str | None:
    """The HTTP API of a node home, reached from this machine."""
    if home is None:
        return None
    config = read_config(home)
    host = str(config.get("http_host", "127.0.0.1"))
    # A node listening on every interface is reached on loopback from its own machine.
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{config.get('http_port', 26657)}"


def operator_tx(group: click.Group, name: str) -> Callable[[Callable[..., None]], click.Command]:
    """A transaction command: signer, node and fee options arrive as one ``Signer``."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @wraps(fn)
        def run(
            home: Path | None,
            keyring: Path | None,
            sender: str | None,
            node_url: str | None,
            fee: int | None,
            nonce: int | None,
            wait: bool,
            **kwargs: Any,
        ) -> None:
            fn(Signer(home, keyring, sender, node_url, fee, nonce, wait), **kwargs)

        cmd: Any = clear_errors(run)
        for option in (
            click.option(
                "--wait",
                is_flag=True,
                help="Return once committed; fail with the error code if it failed.",
            ),
            click.option("--nonce", type=U64, default=None, help="Default: the account's next."),
            click.option(
                "--fee", type=U64, default=None, help="Default: the minimum fee in force."
            ),
            click.option(
                "--node",
                "node_url",
                default=None,
                envvar="LIVELEDGER_NODE",
                help="Node HTTP API (default: the --home's own, else " + DEFAULT_NODE + ").",
            ),
            click.option("--from", "sender", default=None, help="Key name in --keyring."),
            click.option(
                "--keyring",
                default=None,
                envvar="LIVELEDGER_KEYRING",
                type=click.Path(file_okay=False, path_type=Path),
                help="Sign with a keyring key (with --from).",
            ),
            click.option(
                "--home",
                default=None,
                type=click.Path(file_okay=False, exists=True, path_type=Path),
                help="Sign with the node key of this node home (a member's transactions).",
            ),
        ):
            cmd = option(cmd)
        return group.command(name)(cmd)

    return decorate


def member_key(client: NodeClient, text: str) -> bytes:
    """A node key given as 64 hex characters or as a member's name."""
    try:
        raw = bytes.fromhex(text)
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    members = client.get("/v1/staking/members")
    with reading_answer("member list"):
        named = [m["public_key"] for m in members["members"] if m["name"] == text]
        key = bytes.fromhex(named[0]) if named else None
        if key is not None and len(key) != 32:
            raise ValueError(f"member {text!r} has a key of {len(key)} bytes")
    if key is None:
        raise OperatorError(f"{text!r} is neither a node key (64 hex) nor a member's name")
    return key


# --- staking ---------------------------------------------------------------------------


@main.group()
def staking() -> None:
    """Stand for election, bond, vote for producers, unjail, report double signing."""


@operator_tx(staking, "register-candidate")
def register_candidate(signer: Signer) -> None:
    """Stand for election with the node key (sign with --home; the key must be a member's)."""
    signer.send(REGISTER_CANDIDATE, RegisterCandidate())


@operator_tx(staking, "bond")
@click.option("--amount", required=True, type=AMOUNT)
def bond(signer: Signer, amount: int) -> None:
    """Bond tokens of the signing account (a node key's bond is its self-bond)."""
    signer.send(BOND, Bond(amount))


@operator_tx(staking, "unbond")
@click.option("--amount", required=True, type=AMOUNT)
def unbond(signer: Signer, amount: int) -> None:
    """Unbond tokens; they are paid back after the unbonding period (unbonding_blocks)."""
    signer.send(UNBOND, Unbond(amount))


@operator_tx(staking, "vote-producers")
@click.argument("candidates", nargs=-1)
@click.option("--clear", is_flag=True, help="Withdraw the ballot (no candidate).")
def vote_producers(signer: Signer, candidates: tuple[str, ...], clear: bool) -> None:
    """Approve CANDIDATES (node keys in hex, or member names): the whole ballot, replacing
    the previous one; the signer's whole bond counts for each."""
    if bool(candidates) == clear:
        raise OperatorError("name at least one candidate, or --clear to withdraw the ballot")
    keys = {member_key(signer.client, c) for c in candidates}
    signer.send(VOTE_PRODUCERS, VoteProducers(tuple(sorted(keys))))


@operator_tx(staking, "unjail")
def unjail(signer: Signer) -> None:
    """Leave jail once the jail period is served (sign with the candidate's --home)."""
    signer.send(UNJAIL, Unjail())


@operator_tx(staking, "set-address")
@click.option(
    "--address",
    default=None,
    help="host:port other members dial (default: the --home's external address).",
)
def set_address(signer: Signer, address: str | None) -> None:
    """Publish where this member's node listens for peers (sign with the member's --home):
    every member's node dials it, and it replaces the address set before."""
    if address is None:
        address = external_address(read_config(signer.home)) if signer.home else ""
        if not address:
            raise OperatorError("give --address host:port (the home has no external address)")
    try:
        check_dialable(address)
    except InvalidNetAddress as exc:
        raise OperatorError(f"--address: {exc.message}") from None
    signer.send(SET_MEMBER_ADDRESS, SetMemberAddress(address))


@operator_tx(staking, "submit-evidence")
@click.argument("evidence_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def submit_evidence(signer: Signer, evidence_file: Path) -> None:
    """Report a double sign: EVIDENCE_FILE holds {"vote_a": hex, "vote_b": hex}, two
    encoded votes by one producer for one step naming different blocks (a node that
    sees them logs both under these names)."""
    signer.send(SUBMIT_EVIDENCE, read_evidence(evidence_file))


def read_evidence(path: Path) -> SubmitEvidence:
    """The two votes of an evidence file, decoded strictly (the chain judges the rest)."""
    # A FIFO or device is refused unopened: a FIFO nobody writes to blocks for ever.
    data = read_regular_file(path, MAX_EVIDENCE_FILE_BYTES, "evidence file", OperatorError)
    try:
        doc = json.loads(data, object_pairs_hook=reject_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise OperatorError(f"{path}: not JSON: {exc}") from None
    except DuplicateJsonKey as exc:
        # Which of two votes given under one name would the submitter mean?
        raise OperatorError(f"{path}: {exc.message}") from None
    if not isinstance(doc, dict) or set(doc) != {"vote_a", "vote_b"}:
        raise OperatorError(f'{path}: expected {{"vote_a": hex, "vote_b": hex}}')
    votes = []
    for name in ("vote_a", "vote_b"):
        try:
            votes.append(Vote.decode(bytes.fromhex(doc[name])))
        except (ValueError, TypeError, DecodeError) as exc:
            raise OperatorError(f"{path}: {name} is not an encoded vote: {exc}") from None
    return SubmitEvidence(votes[0], votes[1])


# --- governance ------------------------------------------------------------------------


@main.group()
def gov() -> None:
    """Consortium governance: propose and vote (members propose, producers vote)."""


@operator_tx(gov, "propose-admit")
@click.option("--public-key", required=True, help="The new member's node key (64 hex).")
@click.option("--name", required=True, help="Its member name ([A-Za-z0-9_.-]{1,64}).")
def propose_admit(signer: Signer, public_key: str, name: str) -> None:
    """Propose admitting a new member (sign with a member's --home)."""
    try:
        key = bytes.fromhex(public_key)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise OperatorError(f"--public-key must be 64 hex characters, got {public_key[:80]!r}")
    signer.send(PROPOSE_ADMIT_MEMBER, ProposeAdmitMember(key, name))


@operator_tx(gov, "propose-remove")
@click.argument("member")
def propose_remove(signer: Signer, member: str) -> None:
    """Propose removing MEMBER (its node key in hex, or its name)."""
    signer.send(PROPOSE_REMOVE_MEMBER, ProposeRemoveMember(member_key(signer.client, member)))


@operator_tx(gov, "propose-param")
@click.argument("name")
@click.argument("value", type=U64)
def propose_param(signer: Signer, name: str, value: int) -> None:
    """Propose setting chain parameter NAME to VALUE (applies param_change_delay_blocks
    after it passes)."""
    signer.send(PROPOSE_PARAM_CHANGE, ProposeParamChange(name, value))


@operator_tx(gov, "propose-grant-issuer")
@click.argument("member")
@click.argument("symbol")
@click.option("--decimals", type=click.IntRange(0, 18), required=True, help="For display.")
def propose_grant_issuer(signer: Signer, member: str, symbol: str, decimals: int) -> None:
    """Propose making MEMBER (node key in hex, or name) the issuer of currency SYMBOL
    (2-8 of A-Z and 0-9): a new currency, or a revoked one re-granted (same decimals)."""
    key = member_key(signer.client, member)
    signer.send(PROPOSE_GRANT_ISSUER, ProposeGrantIssuer(key, symbol, decimals))


@operator_tx(gov, "propose-revoke-issuer")
@click.argument("symbol")
def propose_revoke_issuer(signer: Signer, symbol: str) -> None:
    """Propose revoking the issuer of SYMBOL: no more mints; holders keep, send, redeem."""
    signer.send(PROPOSE_REVOKE_ISSUER, ProposeRevokeIssuer(symbol))


@operator_tx(gov, "vote")
@click.argument("proposal_id", type=click.IntRange(1, 2**64 - 1))
def vote_proposal(signer: Signer, proposal_id: int) -> None:
    """Approve proposal PROPOSAL_ID (sign with an active producer's --home)."""
    signer.send(VOTE_PROPOSAL, VoteProposal(proposal_id))


# --- reads -----------------------------------------------------------------------------


def _read(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A ``query`` command printing what its function returns, as JSON."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        @wraps(fn)
        def run(node_url: str, **kwargs: Any) -> None:
            click.echo(json.dumps(fn(NodeClient(node_url), **kwargs), indent=2))

        option = click.option(
            "--node",
            "node_url",
            default=DEFAULT_NODE,
            envvar="LIVELEDGER_NODE",
            show_default=True,
            help="URL of a node's HTTP API (or set LIVELEDGER_NODE).",
        )
        return query.command(name)(option(clear_errors(run)))

    return decorate


@_read("members")
def query_members(client: NodeClient) -> Any:
    """Consortium members (node key, name, admission height, network address)."""
    return client.get("/v1/staking/members")


@_read("candidates")
def query_candidates(client: NodeClient) -> Any:
    """Candidates: weight, self-bond, jail state, missed slots; stake totals."""
    return client.get("/v1/staking/candidates")


@_read("producers")
def query_producers(client: NodeClient) -> Any:
    """The producer set of this epoch and, once elected, of the next."""
    return client.get("/v1/staking/producers")


@_read("proposals")
@click.argument("proposal_id", required=False, type=click.IntRange(1, 2**64 - 1))
@click.option("--start", type=click.IntRange(1, 2**64 - 1), default=None, help="First id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def query_proposals(
    client: NodeClient, proposal_id: int | None, start: int | None, limit: int
) -> Any:
    """Governance proposals (the latest LIMIT by default), or proposal PROPOSAL_ID."""
    if proposal_id is not None:
        return client.get(f"/v1/governance/proposals/{proposal_id}")
    if start is None:
        latest = client.get("/v1/governance/proposals?limit=1")
        next_id = int_field(latest, "next_id", "proposal list")
        start = max(1, next_id - limit)
    return client.get(f"/v1/governance/proposals?start={start}&limit={limit}")


@_read("params")
def query_params(client: NodeClient) -> Any:
    """The chain parameters in force and the changes scheduled by governance."""
    return client.params()


__all__ = ["OperatorError", "Signer", "read_evidence"]
