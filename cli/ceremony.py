"""``liveledger init`` and ``liveledger genesis``: a member's node home, the genesis
ceremony, and the genesis a client trusts.

Each member runs ``init`` and ``genesis contribute`` on its own machine; a
coordinator runs ``genesis assemble``; every member runs ``genesis hash``, compares
the hash with the others out of band, and ``genesis install``s the document. The
functions behind them are ``genesis.home`` and ``genesis.ceremony``, which
``liveledger devnet`` uses too.

A client (merchant, shopper, auditor) pins the genesis it was given in its keyring
(``genesis pin``, ``genesis pinned``): ``cli.trust`` says what that changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.client import NodeClient, answer_field
from cli.keyring import passphrase_from_env_or_prompt
from cli.main import clear_errors, keyring_option, main, node_option
from cli.trust import (
    ProducerCache,
    TrustError,
    pin_genesis,
    pin_path,
    pinned_genesis,
    trust_dir,
)
from core import parse_address
from core.errors import InvalidAddress
from core.keystore import atomic_write, load_key, read_key_info
from genesis import (
    Genesis,
    HomeError,
    assemble,
    genesis_json_bytes,
    init_home,
    install_genesis,
    load_contribution,
    load_genesis,
    make_contribution,
)
from genesis.ceremony import DEFAULT_VALIDATOR_BALANCE
from genesis.document import InvalidGenesis, parse_net_address, read_genesis_file
from genesis.home import (
    DEFAULT_HTTP,
    DEFAULT_P2P,
    NODE_KEY_FILE,
    check_new_home,
    external_address,
    read_config,
)

home_option = click.option(
    "--home", required=True, type=click.Path(file_okay=False, path_type=Path), help="Node home."
)


def _net_address(value: str | None, what: str) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_net_address(value)
    except InvalidGenesis as exc:
        raise click.BadParameter(exc.message, param_hint=what) from None


@main.command("init")
@home_option
@click.option("--moniker", required=True, help="This member's node name ([A-Za-z0-9_.-]{1,64}).")
@click.option(
    "--p2p-listen",
    default="{}:{}".format(*DEFAULT_P2P),
    show_default=True,
    help="host:port the node listens on for other members' nodes.",
)
@click.option(
    "--external",
    default=None,
    help="host:port other members dial (default: the p2p listen address; needed when "
    "that is 0.0.0.0).",
)
@click.option(
    "--http-listen",
    default="{}:{}".format(*DEFAULT_HTTP),
    show_default=True,
    help="host:port of the HTTP API.",
)
@clear_errors
def init(home: Path, moniker: str, p2p_listen: str, external: str | None, http_listen: str) -> None:
    """Create a node home in HOME: a new node key, encrypted, and config.json.

    The passphrase comes from LIVELEDGER_PASSPHRASE, or is asked for twice. Refuses
    a HOME that exists and is not empty. Nothing secret leaves HOME: the node's TLS
    certificate is derived from the key at every start.
    """
    p2p = _net_address(p2p_listen, "--p2p-listen")
    http = _net_address(http_listen, "--http-listen")
    ext = _net_address(external, "--external")
    assert p2p is not None and http is not None
    # Before the passphrase is typed for nothing.
    root = check_new_home(home, moniker)
    info = init_home(
        root,
        moniker,
        passphrase_from_env_or_prompt(confirm=True),
        http=http,
        p2p=p2p,
        external=ext,
    )
    click.echo(f"home       {info.home}")
    click.echo(f"moniker    {info.moniker}")
    click.echo(f"node key   {info.public_key.hex()}")
    click.echo(f"account    {info.address}")
    click.echo(f"p2p        {info.p2p_address}")
    if info.p2p_address.startswith(("0.0.0.0:", "[::]:")):
        click.echo(
            "note: peers cannot dial 0.0.0.0; set external_host/external_port in "
            f"{info.home / 'config.json'} (or init again with --external) before contributing",
            err=True,
        )


@main.group()
def genesis() -> None:
    """The genesis ceremony (contribute, assemble, hash, install); the genesis a client
    trusts (pin, pinned)."""


@genesis.command("contribute")
@home_option
@click.option("--chain-id", required=True, help="The chain id the members agreed on.")
@click.option(
    "--stake", required=True, type=click.IntRange(1, 2**64 - 1), help="Initial self-bond."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the contribution here (default: print it).",
)
@clear_errors
def contribute(home: Path, chain_id: str, stake: int, output: Path | None) -> None:
    """Sign this member's contribution with the node key of HOME.

    It holds the node's public key, the address peers dial (the external address of
    config.json), the moniker and the stake; send it to the coordinator. Public: it
    holds no secret.
    """
    config = read_config(home)
    address = external_address(config)
    key = load_key(Path(home) / NODE_KEY_FILE, passphrase_from_env_or_prompt(confirm=False))
    signed = make_contribution(key, chain_id, str(config.get("moniker", "")), address, stake)
    data = (json.dumps(signed.to_json(), indent=2) + "\n").encode()
    if output is None:
        click.echo(data.decode(), nl=False)
    else:
        _write_output(output, data, overwrite=True)
        click.echo(f"wrote {output}", err=True)


def _write_output(path: Path, data: bytes, *, overwrite: bool) -> None:
    """``data`` into ``path`` (atomically); a HomeError naming it if that cannot be done."""
    try:
        atomic_write(path, data, overwrite=overwrite)
    except FileExistsError:
        raise HomeError(f"{path} exists; refusing to overwrite a genesis document") from None
    except OSError as exc:
        raise HomeError(f"cannot write {path}: {exc.strerror or exc}") from None


def _account(text: str) -> tuple[bytes, int]:
    address, sep, amount = text.partition("=")
    if not sep or not _decimal(amount):
        raise click.BadParameter(f"expected ADDRESS=BALANCE, got {text!r}", param_hint="--account")
    try:
        return parse_address(address), int(amount)
    except InvalidAddress as exc:
        raise click.BadParameter(exc.message, param_hint="--account") from None


def _param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not _decimal(value):
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--param")
    return name, int(value)


def _decimal(text: str) -> bool:
    # str.isdigit also takes digits int() refuses ("²").
    return text.isascii() and text.isdigit()


@genesis.command("assemble")
@click.argument(
    "contributions",
    nargs=-1,
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
@click.option("--chain-id", required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write genesis.json (never over an existing file).",
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    help="ADDRESS=BALANCE: an extra funded account (a faucet, a treasury); repeatable.",
)
@click.option(
    "--validator-balance",
    type=click.IntRange(1, 2**64 - 1),
    default=DEFAULT_VALIDATOR_BALANCE,
    show_default=True,
    help="Tokens each validator's node-key account gets for its fees.",
)
@click.option("--param", "params", multiple=True, help="NAME=VALUE of a chain parameter.")
@click.option(
    "--registrar",
    "registrars",
    multiple=True,
    help="Address holding the commerce registrar role; repeatable (none: no commerce).",
)
@click.option(
    "--treasury",
    default=None,
    help="Address receiving commerce fees (default: the first registrar).",
)
@click.option("--genesis-time-ms", type=click.IntRange(0), default=None, help="Default: now.")
@clear_errors
def assemble_cmd(
    contributions: tuple[Path, ...],
    chain_id: str,
    output: Path,
    accounts: tuple[str, ...],
    validator_balance: int,
    params: tuple[str, ...],
    registrars: tuple[str, ...],
    treasury: str | None,
    genesis_time_ms: int | None,
) -> None:
    """Check every contribution and write one genesis document; print its hash.

    Validators are listed in the order the CONTRIBUTIONS files are given.
    """
    from apps.commerce import CommerceGenesis
    from vm import ChainParams

    signed = [load_contribution(path) for path in contributions]
    overrides: dict[str, int] = {}
    for name, value in map(_param, params):
        # dict() would keep the last value: which one the coordinator meant is unknown.
        if name in overrides:
            raise click.BadParameter(f"{name} is given twice", param_hint="--param")
        overrides[name] = value
    try:
        chain_params = ChainParams.default().replace(**overrides)
    except TypeError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from None
    commerce = None
    if treasury is not None and not registrars:
        raise click.BadParameter("needs at least one --registrar", param_hint="--treasury")
    if registrars:
        keys = tuple(parse_address(r) for r in registrars)
        commerce = CommerceGenesis(
            registrars=keys, treasury=parse_address(treasury) if treasury else keys[0]
        )
    genesis = assemble(
        chain_id,
        signed,
        accounts=[_account(a) for a in accounts],
        validator_balance=validator_balance,
        params=chain_params,
        genesis_time_ms=genesis_time_ms,
        commerce=commerce,
    )
    _write_output(output, genesis_json_bytes(genesis), overwrite=False)
    click.echo(f"wrote {output}: {len(genesis.validators)} validators", err=True)
    click.echo(genesis.hash.hex())


@genesis.command("hash")
@click.argument("genesis_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@clear_errors
def hash_cmd(genesis_file: Path) -> None:
    """Print the genesis hash: every member compares it with the others out of band."""
    click.echo(load_genesis(genesis_file).hash.hex())


@genesis.command("install")
@home_option
@click.argument("genesis_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--expect-hash",
    required=True,
    help="The hash the members compared (liveledger genesis hash); anything else is refused.",
)
@click.option(
    "--contribution",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="This node's contribution file (genesis contribute): refuse a genesis that does "
    "not list it exactly as contributed (name, address, self-bond), or leaves it out.",
)
@clear_errors
def install(home: Path, genesis_file: Path, expect_hash: str, contribution: Path | None) -> None:
    """Install GENESIS_FILE into HOME and take the peers from its validators' addresses."""
    expected = _expected_hash(expect_hash)
    signed = None if contribution is None else load_contribution(contribution)
    installed = install_genesis(
        home, read_genesis_file(genesis_file), expected, contribution=signed
    )
    own = read_key_info(Path(home) / NODE_KEY_FILE).public_key.hex()
    mine = [v for v in installed.validators if v.public_key.hex() == own]
    peers = [v for v in installed.validators if v.address and v.public_key.hex() != own]
    click.echo(f"installed genesis {installed.hash.hex()} of chain {installed.chain_id}")
    click.echo(f"peers: {len(peers)} validator(s) with an address")
    if mine:
        click.echo(f"this node is validator {mine[0].name!r} at {mine[0].address or '-'}")
    else:
        click.echo(
            "this node is not a genesis validator (a member admitted later; if it "
            "contributed, install with --contribution to have that refused)",
            err=True,
        )


def _expected_hash(text: str) -> bytes:
    """``--expect-hash`` as 32 bytes; a usage error otherwise."""
    try:
        expected = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter("must be 64 hex characters", param_hint="--expect-hash") from None
    if len(expected) != 32:
        raise click.BadParameter("must be 32 bytes of hex", param_hint="--expect-hash")
    return expected


@genesis.command("pin")
@click.argument(
    "genesis_file", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--from-node",
    is_flag=True,
    help="Trust on first use: pin the genesis the node (--node) serves. Compare the hash "
    "printed with the consortium's out of band, or give it with --expect-hash.",
)
@click.option(
    "--expect-hash",
    default=None,
    help="The genesis hash the consortium gave out of band; any other genesis is refused.",
)
@click.option("--replace", is_flag=True, help="Replace the genesis pinned now (another chain's).")
@keyring_option
@node_option
@clear_errors
def pin(
    genesis_file: Path | None,
    from_node: bool,
    expect_hash: str | None,
    replace: bool,
    keyring: Path,
    node_url: str,
) -> None:
    """Pin GENESIS_FILE (or with --from-node, the node's genesis) in the keyring.

    From then on every command with this keyring trusts that genesis: it signs for its
    chain id, refuses a node whose chain id or genesis hash differs, and proves the key
    an address is sealed to (and what --prove shows) against headers certified by
    producers derived from it. Prints the genesis hash: compare it with the one the
    consortium gave out of band (`liveledger genesis hash` on their file).
    """
    if (genesis_file is None) == (not from_node):
        raise click.UsageError("give a GENESIS_FILE or --from-node (not both)")
    expected = None if expect_hash is None else _expected_hash(expect_hash)
    if genesis_file is not None:
        doc = load_genesis(genesis_file)
        source = str(genesis_file)
    else:
        client = NodeClient(node_url)
        doc = Genesis.from_json(answer_field(client.genesis(), "genesis", "genesis answer"))
        source = f"the node at {client.url}"
    # The hash is computed here from the document, never taken from the node.
    if expected is not None and doc.hash != expected:
        raise TrustError(
            f"{source} holds genesis {doc.hash.hex()} of chain {doc.chain_id!r}, not the "
            f"expected {expected.hex()}: nothing was pinned",
            "hash_mismatch",
        )
    changed = pin_genesis(keyring, doc, replace=replace)
    verb = "pinned" if changed else "already pinned"
    click.echo(f"{verb} genesis {doc.hash.hex()} of chain {doc.chain_id} in {pin_path(keyring)}")
    if from_node and expected is None:
        click.echo(
            f"note: trusted on first use: this is the genesis {source} serves. Compare its "
            "hash with the one the consortium gave out of band; if they differ, pin theirs "
            "with --replace",
            err=True,
        )


@genesis.command("pinned")
@keyring_option
@clear_errors
def pinned(keyring: Path) -> None:
    """Show the genesis pinned in the keyring and the highest epoch whose producers the
    CLI verified from it by their record (a change of producers: kept so that commands
    do not walk the changes again; null while none was walked through, as on a chain
    whose producers never changed, where genesis's set is all there is to know)."""
    doc = pinned_genesis(keyring)
    if doc is None:
        raise TrustError(
            f"no genesis is pinned in keyring {keyring} ({pin_path(keyring)}): "
            "pin the consortium's with `liveledger genesis pin FILE`",
            "no_pin",
        )
    cache = ProducerCache(trust_dir(keyring))
    checkpoint = cache.load(doc)
    out = {
        "file": str(pin_path(keyring)),
        "chain_id": doc.chain_id,
        "genesis_hash": doc.hash.hex(),
        "verified_epoch": None if checkpoint is None else checkpoint.epoch,
        "verified_height": None if checkpoint is None else checkpoint.height,
    }
    click.echo(json.dumps(out, indent=2))
