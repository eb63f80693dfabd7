"""What the CLI trusts about a chain: a pinned genesis, and the producer sets it verified.

The CLI keeps its state in the keyring directory (``--keyring``/``LIVELEDGER_KEYRING``),
beside the keys and the shipping addresses it keeps for buyers:

- ``<keyring>/trust/genesis.json``: the pinned genesis (``liveledger genesis pin``),
  written as ``genesis.json`` is, its hash printed when it is pinned;
- ``<keyring>/trust/producers-<genesis hash>.json``: the highest epoch's producer set
  the CLI verified for that genesis, with the header it was proven at (``ProducerCache``).

A command's anchor (``Anchor``) is the genesis it trusts: ``--genesis FILE`` where the
command has that option, else the genesis pinned in the keyring; an operator signing
with a node key (``--home H``) trusts the genesis installed in ``H``. With an anchor:

- transactions and signed reads are signed for the anchor's chain id, never the one the
  node states; a node whose status shows another chain id (``chain_mismatch``) or
  genesis hash (``genesis_mismatch``) is refused before anything is signed or sealed;
- the X25519 key a shipping address is sealed to is proven against its record at a
  final height whose certificate verifies under producers derived from the anchor, and
  so is the merchant it is the key of (the listing's, or the auction's);
- an update that keeps the fields the user leaves unchanged (``listing update``,
  ``merchant update``) reads their current values from the records proven so.

Without one, a command takes the node's word, as before, and says so on stderr
(``warn_unanchored``). Nothing is ever pinned without being asked: trust on first use
is ``liveledger genesis pin --from-node``, an explicit command that prints the hash to
compare out of band (or checks it against ``--expect-hash``).

The producer cache is the user's own state, yet never trusted blindly: a file that does
not parse, is truncated, fails its checksum, or does not match the genesis it is named
after is taken as absent (the walk starts from genesis again and rewrites it), and it
is written atomically, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.client import NodeClient, NodeError, answer_field, str_field
from cli.light import Checkpoint, proven_value
from consensus.staking_state import ProducerSet
from core import BlockHeader, LiveLedgerError, Wire
from core.errors import Invalid
from core.files import read_regular_file
from core.keystore import atomic_write
from genesis import Genesis, InvalidGenesis, genesis_json_bytes, load_genesis

W = TypeVar("W", bound=Wire)

TRUST_DIR = "trust"
PIN_FILE = "genesis.json"
CACHE_VERSION = 1
CACHE_KIND = "producer-checkpoint"
# What a transaction command takes on the node's word without an anchor.
SIGNED_FOR = "the chain id this transaction is signed for"
# A checkpoint holds at most 64 keys and weights: a few kB of JSON.
MAX_CACHE_BYTES = 64 * 1024
# How old, by the local clock, a block a command proves state at may be when the command
# signs that state again (``Anchor.require_recent``): blocks come every second or so,
# and a machine's clock is within seconds of the chain's (NTP).
MAX_STATE_AGE_S = 120


class TrustError(Invalid):
    """A pinned genesis that cannot be used, or a pin that was refused (nothing changed)."""

    code = "bad_pin"


def trust_dir(keyring: Path) -> Path:
    return Path(keyring) / TRUST_DIR


def pin_path(keyring: Path) -> Path:
    """Where the genesis pinned for ``keyring`` is kept."""
    return trust_dir(keyring) / PIN_FILE


def pinned_genesis(keyring: Path) -> Genesis | None:
    """The genesis pinned in ``keyring``; None if none is. A pin that cannot be read or
    is not a valid genesis is refused (``bad_pin``), never skipped: that would fall
    back to the node's word without the user knowing."""
    path = pin_path(keyring)
    # Anything there that is not a readable genesis file (a directory too) is refused.
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return load_genesis(path)
    except InvalidGenesis as exc:
        raise TrustError(
            f"the pinned genesis is unusable ({exc.message}); pin the consortium's genesis "
            f"again with `liveledger genesis pin FILE --replace`"
        ) from None


def pin_genesis(keyring: Path, genesis: Genesis, *, replace: bool = False) -> bool:
    """Pin ``genesis`` in ``keyring``; False if that very genesis was pinned already.
    Another one pinned is refused (``pinned_other``) unless ``replace``."""
    current = pinned_genesis(keyring) if not replace else None
    if current is not None:
        if current.hash == genesis.hash:
            return False
        raise TrustError(
            f"keyring {keyring} has genesis {current.hash.hex()} of chain "
            f"{current.chain_id!r} pinned, not {genesis.hash.hex()} of chain "
            f"{genesis.chain_id!r}; give --replace to pin the new one",
            "pinned_other",
        )
    directory = trust_dir(keyring)
    try:
        # 0700 as Keyring makes it: the keyring may not exist yet (a shopper pins first).
        Path(keyring).mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise TrustError(f"cannot create {directory}: {exc.strerror or exc}") from None
    atomic_write(pin_path(keyring), genesis_json_bytes(genesis), mode=0o644)
    return True


@dataclass(slots=True)
class Verified:
    """What a command verified through its anchor already: the nodes whose status
    showed the anchor's chain, and the certified header its proofs are made against
    (``header_url``'s; None before the first proof)."""

    nodes: set[str] = field(default_factory=set)
    header: BlockHeader | None = None
    header_url: str = ""


@dataclass(frozen=True, slots=True)
class Anchor:
    """The genesis a command trusts, where it came from (for messages), and the cache
    of producer sets verified from it (None: no keyring to keep one in).

    Each command makes its own (``anchor_of``): what it verified (``verified``) holds
    for the command's run, so its proofs are made against one certified header, at one
    height, fetched and checked once, and the node's chain checked once."""

    genesis: Genesis
    source: str
    cache: ProducerCache | None = None
    verified: Verified = field(default_factory=Verified, compare=False, repr=False)

    def check(self, status: Mapping[str, Any], url: str) -> str:
        """The chain id to sign for (the anchor's), once the node's status shows that
        chain and that genesis; else ``chain_mismatch`` or ``genesis_mismatch``."""
        chain_id, genesis_hash = self.genesis.chain_id, self.genesis.hash.hex()
        # A node of another chain: nothing signed here would be valid there, nor the reverse.
        if status.get("chain_id") != chain_id:
            raise NodeError(
                "chain_mismatch",
                f"the node at {url} serves chain {status.get('chain_id')!r}, {self.source} is "
                f"chain {chain_id!r}: nothing was signed or sent",
            )
        # Same name, another genesis: a different chain all the same.
        if status.get("genesis_hash") != genesis_hash:
            raise NodeError(
                "genesis_mismatch",
                f"the node at {url} runs genesis {status.get('genesis_hash')}, {self.source} "
                f"is {genesis_hash}: nothing was signed or sent",
            )
        self.verified.nodes.add(url)
        return chain_id

    def check_node(self, client: NodeClient) -> str:
        """``check`` against the node's status, fetched now unless this command saw it
        show the anchor's chain already."""
        if client.url in self.verified.nodes:
            return self.genesis.chain_id
        return self.check(client.status(), client.url)

    def prove(self, client: NodeClient, key: bytes) -> tuple[bytes | None, int]:
        """The value of state ``key`` (None: absent) and the final height it is proven
        at, against a header certified from this genesis (``cli.light.proven_value``);
        a node of another chain is refused by name rather than by a failed certificate.
        The command's first proof is at the node's latest final height, and the others
        at that height, against the same header: one certificate checked, and every
        record the command reads of one state."""
        self.check_node(client)
        seen = self.verified
        at = seen.header if seen.header_url == client.url else None
        value, header = proven_value(client, self.genesis, key, self.cache, at)
        seen.header, seen.header_url = header, client.url
        return value, header.height

    def require_recent(self, what: str) -> None:
        """Refuse (``stale_state``) when the header this command's proofs were made
        against is older than ``MAX_STATE_AGE_S`` by the local clock: the node picks the
        height it proves at, so it can answer at any height it keeps, with valid proofs.
        For what a command signs again as it stands: a merchant's key as it was before a
        rotation, re-signed by an update or sealed to by a shopper, would be a key the
        merchant gave up (perhaps leaked)."""
        header = self.verified.header
        if header is None:
            return
        now_ms = int(time.time() * 1000)
        age_s = (now_ms - header.time_ms) / 1000
        if age_s > MAX_STATE_AGE_S:
            raise NodeError(
                "stale_state",
                f"{what} was proven at height {header.height}, a block of {age_s:.0f} s ago "
                f"by this machine's clock (at most {MAX_STATE_AGE_S} s): the node may be "
                "answering at an old height, or this clock is off; nothing was signed or sent",
            )

    def prove_record(self, client: NodeClient, key: bytes, cls: type[W], missing: str) -> W:
        """The record under state ``key``, as ``cls``, proven as ``prove`` proves it; a
        record the proven state does not hold is ``not_found``, said as ``missing`` (what
        has no record) at the height proven."""
        raw, height = self.prove(client, key)
        if raw is None:
            raise NodeError("not_found", f"{missing} at height {height}")
        return cls.decode(raw)


def anchor_of(
    keyring: Path | None, genesis_file: Path | None, home: Path | None = None
) -> Anchor | None:
    """The command's anchor: ``genesis_file``, else the genesis installed in the node
    ``home``, else the one pinned in ``keyring``; None when there is none."""
    cache = ProducerCache(trust_dir(keyring)) if keyring is not None else None
    if genesis_file is not None:
        return Anchor(load_genesis(genesis_file), f"--genesis {genesis_file}", cache)
    if home is not None:
        installed = Path(home) / PIN_FILE
        if installed.is_file():
            return Anchor(load_genesis(installed), f"the genesis installed in {home}", cache)
        return None
    if keyring is None:
        return None
    genesis = pinned_genesis(keyring)
    if genesis is None:
        return None
    return Anchor(genesis, f"the genesis pinned in {pin_path(keyring)}", cache)


def warn_unanchored(keyring: Path | None, what: str, home: Path | None = None) -> None:
    """Say on stderr that ``what`` is the node's word, and how to stop taking it."""
    if home is not None:
        click.echo(
            f"warning: no genesis is installed in {home}: {what} is the node's word "
            "(`liveledger genesis install` puts the consortium's there)",
            err=True,
        )
        return
    where = f" in keyring {keyring}" if keyring is not None else " (no --keyring given)"
    click.echo(
        f"warning: no genesis is pinned{where}: {what} is the node's word. Pin the "
        "consortium's genesis: `liveledger genesis pin FILE` (or `--from-node "
        "--expect-hash HASH`)",
        err=True,
    )


def command_anchor(
    keyring: Path | None, genesis_file: Path | None, what: str, home: Path | None = None
) -> Anchor | None:
    """``anchor_of``, with the warning of ``warn_unanchored`` when there is none."""
    anchor = anchor_of(keyring, genesis_file, home)
    if anchor is None:
        warn_unanchored(keyring, what, home)
    return anchor


def proof_anchor(client: NodeClient, keyring: Path | None, genesis_file: Path | None) -> Anchor:
    """What a ``--prove`` read checks its proof against: ``anchor_of``'s anchor, once the
    node shows its chain; without one, the genesis the node serves (as before), with a
    warning that gives its hash to compare out of band."""
    anchor = anchor_of(keyring, genesis_file)
    if anchor is not None:
        anchor.check_node(client)
        return anchor
    genesis = Genesis.from_json(answer_field(client.genesis(), "genesis", "genesis answer"))
    warn_unanchored(
        keyring,
        f"the genesis this proof is checked against (hash {genesis.hash.hex()}: compare it "
        "with the consortium's)",
    )
    cache = ProducerCache(trust_dir(keyring)) if keyring is not None else None
    return Anchor(genesis, "the node's genesis", cache)


def signing_chain_id(status: Mapping[str, Any], url: str, anchor: Anchor | None) -> str:
    """The chain id to sign for: the anchor's (checked against the node's status), or
    without one the chain id the node states."""
    if anchor is not None:
        return anchor.check(status, url)
    return str_field(status, "chain_id", "status")


# --- the producer cache -------------------------------------------------------------------


def _checksum(fields: Mapping[str, Any]) -> str:
    """A digest of the other fields: an edit or a damaged byte that still parses is seen."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(canonical, digest_size=32, person=b"ll-cli-prodset").hexdigest()


class ProducerCache:
    """The highest epoch's producer set verified for each genesis, one file per genesis
    hash in ``directory`` (a ``cli.light.CheckpointStore``)."""

    __slots__ = ("directory",)

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"ProducerCache({str(self.directory)!r})"

    def path(self, genesis: Genesis) -> Path:
        return self.directory / f"producers-{genesis.hash.hex()}.json"

    def load(self, genesis: Genesis) -> Checkpoint | None:
        """The kept checkpoint; None if there is none or it is unusable (said on stderr)."""
        path = self.path(genesis)
        if not path.exists():
            return None
        try:
            # A FIFO there is refused unopened: one nobody writes to blocks for ever.
            data = read_regular_file(path, MAX_CACHE_BYTES, "producer cache", TrustError)
            return self._parse(data, genesis)
        except (ValueError, TypeError, KeyError, RecursionError, LiveLedgerError) as exc:
            return self._unusable(path, str(exc)[:200])

    def save(self, genesis: Genesis, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint``; a cache that cannot be written only costs the next walk."""
        fields = {
            "version": CACHE_VERSION,
            "kind": CACHE_KIND,
            "chain_id": genesis.chain_id,
            "genesis_hash": genesis.hash.hex(),
            "epoch_length": genesis.params.epoch_length,
            "epoch": checkpoint.epoch,
            "height": checkpoint.height,
            "header_hash": checkpoint.header_hash.hex(),
            "state_root": checkpoint.state_root.hex(),
            "producers": checkpoint.producers.encode().hex(),
        }
        doc = {**fields, "checksum": _checksum(fields)}
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(self.path(genesis), (json.dumps(doc, indent=2) + "\n").encode())
        except OSError as exc:
            click.echo(
                f"note: cannot keep the verified producers in {self.path(genesis)} "
                f"({exc.strerror or exc}); the next command verifies them again",
                err=True,
            )

    @staticmethod
    def _parse(data: bytes, genesis: Genesis) -> Checkpoint:
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        fields = {k: v for k, v in doc.items() if k != "checksum"}
        # Whole: a damaged byte that still parses is caught here.
        if doc.get("checksum") != _checksum(fields):
            raise ValueError("its checksum does not match its contents")
        if (fields["version"], fields["kind"]) != (CACHE_VERSION, CACHE_KIND):
            raise ValueError(f"version {fields['version']!r} of {fields['kind']!r}")
        # Verified from this very genesis, with its epoch length.
        expected = (genesis.chain_id, genesis.hash.hex(), genesis.params.epoch_length)
        found = (fields["chain_id"], fields["genesis_hash"], fields["epoch_length"])
        if found != expected:
            raise ValueError(f"made for {found}, not {expected}")
        epoch, height = fields["epoch"], fields["height"]
        length = genesis.params.epoch_length
        if not isinstance(epoch, int) or epoch < 1 or height != epoch * length:
            raise ValueError(f"epoch {epoch!r} at height {height!r} is no epoch boundary")
        header_hash = bytes.fromhex(fields["header_hash"])
        state_root = bytes.fromhex(fields["state_root"])
        if len(header_hash) != 32 or len(state_root) != 32:
            raise ValueError("a header hash or state root that is not 32 bytes")
        producers = ProducerSet.decode(bytes.fromhex(fields["producers"]))
        return Checkpoint(epoch, height, header_hash, state_root, producers)

    @staticmethod
    def _unusable(path: Path, why: str) -> None:
        click.echo(
            f"note: the producer cache {path} is unusable ({why}); verifying from genesis again",
            err=True,
        )
        return None


__all__ = [
    "Anchor",
    "PIN_FILE",
    "ProducerCache",
    "SIGNED_FOR",
    "TRUST_DIR",
    "TrustError",
    "anchor_of",
    "command_anchor",
    "pin_genesis",
    "pin_path",
    "pinned_genesis",
    "proof_anchor",
    "signing_chain_id",
    "trust_dir",
    "warn_unanchored",
]
