"""The genesis ceremony: members contribute, a coordinator assembles, everyone compares.

In the spirit of Cosmos' ``gentx`` / ``collect-gentxs``:

1. each member, on its own machine, creates a node home (``genesis.home.init_home``)
   and writes a **contribution**: its node's public key, the address peers dial, its
   moniker and its initial stake, signed by the node key (``make_contribution``).
   The signature covers the chain id, so nobody can submit a contribution on a
   member's behalf, nor reuse one for another chain;
2. a coordinator collects the files and ``assemble``s one genesis document, after
   checking every contribution: signature, chain id, duplicates (keys, monikers,
   addresses), stakes;
3. every member computes the document's hash (``Genesis.hash``) and compares it with
   the others' out of band, then installs it (``genesis.home.install_genesis``).

A contribution file is JSON::

    {"version": 1, "chain_id": "...", "moniker": "brand-a", "public_key": "<hex>",
     "address": "host:port", "stake": 1000000, "signature": "<hex>"}

The signature is Ed25519 by ``public_key`` over ``SignDomain.GENESIS_CONTRIBUTION ||
chain id || Contribution.encode()`` (the canonical codec: one encoding, one
signature). Reading is strict: unknown or missing fields, floats and duplicate keys
are refused, like ``genesis.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from apps.commerce import CommerceGenesis
from consensus import GenesisStaking
from core.codec import UINT64_MAX, MaxLen, Wire
from core.errors import DecodeError
from core.files import read_regular_file
from core.keys import PrivateKey, SignDomain, address_of, format_address, is_valid_signature
from core.keystore import atomic_write
from core.netaddr import MAX_NET_ADDRESS, endpoint_key
from core.types import PublicKey
from genesis.document import (
    CHAIN_ID_PATTERN,
    Genesis,
    GenesisAccount,
    GenesisValidator,
    InvalidGenesis,
    check_dialable,
    check_validator_name,
    parse_json,
)
from vm.params import ChainParams

CONTRIBUTION_VERSION = 1
# A contribution is a few hundred bytes; anything much larger is not one.
MAX_CONTRIBUTION_BYTES = 16 * 1024
# Enough for a validator to pay the fees of its own transactions (bond, vote, propose).
DEFAULT_VALIDATOR_BALANCE = 10**9
VALIDATOR_POWER = 1
_FIELDS = ("version", "chain_id", "moniker", "public_key", "address", "stake", "signature")


class InvalidContribution(InvalidGenesis):
    """A contribution that cannot go into a genesis document."""

    code = "invalid_contribution"


@dataclass(frozen=True, slots=True)
class Contribution(Wire):
    """What a member puts into genesis; the signed part of a contribution file."""

    moniker: Annotated[str, MaxLen(64)]
    public_key: PublicKey
    # Where its node listens for peers, "host:port" (``check_dialable``).
    address: Annotated[str, MaxLen(MAX_NET_ADDRESS)]
    # Its initial self-bond (the genesis document's ``staking.self_bond``).
    stake: int

    MAX_ENCODED = 512


@dataclass(frozen=True, slots=True)
class SignedContribution:
    chain_id: str
    contribution: Contribution
    signature: bytes

    def verify(self) -> None:
        """Raise ``InvalidContribution`` unless the node key signed this for this chain."""
        c = self.contribution
        ok = is_valid_signature(
            c.public_key,
            SignDomain.GENESIS_CONTRIBUTION,
            self.chain_id,
            c.encode(),
            self.signature,
        )
        # Only the holder of the node key may contribute it.
        if not ok:
            raise InvalidContribution(
                f"contribution {c.moniker!r}: signature does not verify under its "
                f"public key {c.public_key.hex()} for chain {self.chain_id!r}"
            )

    def to_json(self) -> dict[str, Any]:
        c = self.contribution
        return {
            "version": CONTRIBUTION_VERSION,
            "chain_id": self.chain_id,
            "moniker": c.moniker,
            "public_key": c.public_key.hex(),
            "address": c.address,
            "stake": c.stake,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> SignedContribution:
        """Parse (not verify) a contribution; ``InvalidContribution`` names the field."""
        if not isinstance(doc, dict):
            raise InvalidContribution("a contribution must be a JSON object")
        missing = [f for f in _FIELDS if f not in doc]
        unknown = sorted(str(k) for k in doc if k not in _FIELDS)
        if missing or unknown:
            raise InvalidContribution(
                f"contribution fields: missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        if doc["version"] != CONTRIBUTION_VERSION or type(doc["version"]) is not int:
            raise InvalidContribution(
                f"contribution version must be {CONTRIBUTION_VERSION}, got {doc['version']!r}"
            )
        for name in ("chain_id", "moniker", "public_key", "address", "signature"):
            # Each is plain ASCII when valid; a lone surrogate ("\ud800") would not even encode.
            if not isinstance(doc[name], str) or not doc[name].isascii():
                raise InvalidContribution(f"contribution {name} must be an ASCII string")
        if type(doc["stake"]) is not int or not 0 <= doc["stake"] <= UINT64_MAX:
            raise InvalidContribution(
                f"contribution stake must be an integer in 0..2**64-1, got {doc['stake']!r}"
            )
        public_key = _hex(doc["public_key"], "public_key", 32)
        signature = _hex(doc["signature"], "signature", 64)
        try:
            contribution = Contribution(doc["moniker"], public_key, doc["address"], doc["stake"])
            # The codec's bounds (lengths, uint64) are checked by a round trip.
            Contribution.decode(contribution.encode())
        except DecodeError as exc:
            raise InvalidContribution(f"contribution {doc['moniker']!r}: {exc.message}") from None
        return cls(doc["chain_id"], contribution, signature)


def make_contribution(
    key: PrivateKey, chain_id: str, moniker: str, address: str, stake: int
) -> SignedContribution:
    """Sign a contribution with the node key; its fields are checked as ``assemble`` will."""
    contribution = Contribution(moniker, key.public_key, address, stake)
    _check_fields(chain_id, contribution)
    signature = key.sign(SignDomain.GENESIS_CONTRIBUTION, chain_id, contribution.encode())
    return SignedContribution(chain_id, contribution, signature)


def save_contribution(path: Path | str, signed: SignedContribution) -> None:
    atomic_write(path, (json.dumps(signed.to_json(), indent=2) + "\n").encode(), mode=0o644)


def load_contribution(path: Path | str) -> SignedContribution:
    """Read and parse a contribution file (``assemble`` verifies it)."""
    data = read_regular_file(path, MAX_CONTRIBUTION_BYTES, "contribution", InvalidContribution)
    try:
        return SignedContribution.from_json(parse_json(data))
    except InvalidGenesis as exc:
        raise InvalidContribution(f"{path}: {exc.message}") from None


def assemble(
    chain_id: str,
    contributions: Sequence[SignedContribution],
    *,
    accounts: Iterable[tuple[bytes, int]] = (),
    validator_balance: int = DEFAULT_VALIDATOR_BALANCE,
    params: ChainParams | None = None,
    genesis_time_ms: int | None = None,
    commerce: CommerceGenesis | None = None,
) -> Genesis:
    """Check every contribution and build the genesis document from them.

    Validators are listed in the order given (the order is part of the hash, so
    whoever re-assembles to check must pass the files in the same order); each one's
    node-key account gets ``validator_balance`` for its fees, after ``accounts``.
    Refused, naming the contribution: a bad signature, another chain id, a duplicate
    key, moniker or address, a stake below ``min_self_bond`` or unlike the others
    (genesis has one self-bond for every validator).
    """
    params = params if params is not None else ChainParams.default()
    if not contributions:
        raise InvalidContribution("no contributions: a chain needs at least one validator")
    seen: dict[str, dict[Any, str]] = {"public key": {}, "moniker": {}, "address": {}}
    for signed in contributions:
        c = signed.contribution
        # A contribution signed for another chain is not consent to this one.
        if signed.chain_id != chain_id:
            raise InvalidContribution(
                f"contribution {c.moniker!r} is for chain {signed.chain_id!r}, "
                f"expected {chain_id!r}"
            )
        _check_fields(chain_id, c)
        signed.verify()
        for what, value, key in (
            ("public key", c.public_key.hex(), c.public_key.hex()),
            ("moniker", c.moniker, c.moniker),
            # DNS names ignore case: "Node1.example:1" is the endpoint "node1.example:1".
            ("address", c.address, endpoint_key(c.address)),
        ):
            # One member, one node: a second entry is a copy or an impostor.
            if key in seen[what]:
                raise InvalidContribution(
                    f"duplicate {what} {value}: contributions {seen[what][key]!r} and {c.moniker!r}"
                )
            seen[what][key] = c.moniker
    stakes = {s.contribution.moniker: s.contribution.stake for s in contributions}
    first = contributions[0].contribution
    # The genesis document has one self-bond for every validator (staking.self_bond).
    unlike = {m: s for m, s in stakes.items() if s != first.stake}
    if unlike:
        raise InvalidContribution(
            f"stakes differ: {first.moniker!r} {first.stake}, "
            + ", ".join(f"{m!r} {s}" for m, s in unlike.items())
            + "; genesis has one self-bond for all validators, agree on one"
        )
    # A validator below the minimum could never be re-elected after epoch 0.
    if first.stake < params.min_self_bond:
        raise InvalidContribution(
            f"stake {first.stake} is below min_self_bond {params.min_self_bond}"
        )
    funded = list(accounts)
    funded_addresses = {address for address, _ in funded}
    for signed in contributions:
        address = address_of(signed.contribution.public_key)
        # The validator's account is funded here; a second entry would be a duplicate.
        if address in funded_addresses:
            raise InvalidContribution(
                f"account {format_address(address)} of {signed.contribution.moniker!r} is "
                "also among the extra accounts; fund it once"
            )
        funded.append((address, validator_balance))
    return Genesis(
        chain_id=chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000 if genesis_time_ms is None else genesis_time_ms,
        params=params,
        accounts=tuple(GenesisAccount(a, b) for a, b in funded),
        validators=tuple(
            GenesisValidator(
                s.contribution.moniker,
                s.contribution.public_key,
                VALIDATOR_POWER,
                s.contribution.address,
            )
            for s in contributions
        ),
        staking=GenesisStaking(self_bond=first.stake),
        commerce=commerce,
    )


def _check_fields(chain_id: str, c: Contribution) -> None:
    # The chain id is in every signature; the same rule as genesis.
    if not CHAIN_ID_PATTERN.fullmatch(chain_id):
        raise InvalidContribution(
            f"chain id must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}, got {chain_id!r}"
        )
    try:
        # Monikers become validator names: plain, as genesis wants them.
        check_validator_name(c.moniker, "moniker")
        check_dialable(c.address)
    except InvalidGenesis as exc:
        raise InvalidContribution(f"contribution {c.moniker!r}: {exc.message}") from None
    # A stake of zero could never elect anyone.
    if c.stake < 1:
        raise InvalidContribution(f"contribution {c.moniker!r}: stake must be at least 1")


def _hex(value: str, field: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidContribution(f"contribution {field} is not hex") from None
    # One spelling: lower case, no spaces.
    if raw.hex() != value or len(raw) != size:
        raise InvalidContribution(f"contribution {field} must be {size} bytes of lower-case hex")
    return raw
