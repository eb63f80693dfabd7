"""The genesis document: chain id, start time, chain parameters, initial accounts, validators.

Two forms. The canonical one is the ``Wire`` encoding; ``Genesis.hash`` is over
it, and every node and verifier derives the same hash from the same document.
The file form (``genesis.json``) is for people: addresses in bech32m text, keys
in hex, parameters by name. ``from_json`` is strict (no missing or unknown
fields, no floats, no duplicate JSON keys, no duplicate accounts or validators)
so that a typo fails loudly at load time instead of starting a different chain.

List order is part of the document (and of its hash): it is kept as written,
never sorted behind the user's back.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from apps.commerce import CommerceGenesis, InvalidCommerceGenesis, commerce_genesis_state
from consensus.staking_genesis import (
    GenesisStaking,
    check_genesis_staking,
    genesis_bonded,
    staking_genesis_state,
)
from consensus.staking_state import MODULE_ACCOUNT_NAMES
from core import netaddr
from core.codec import UINT64_MAX, MaxItems, MaxLen, Wire
from core.errors import DecodeError, Invalid, InvalidAddress
from core.files import DuplicateJsonKey, read_regular_file, reject_duplicate_keys
from core.hashing import Domain, hash_bytes
from core.keys import format_address, parse_address
from core.keystore import atomic_write
from core.netaddr import MAX_NET_ADDRESS, InvalidNetAddress
from core.types import MAX_TIME_MS, MAX_VALIDATORS, Address, PublicKey
from vm.accounts import Account, account_key
from vm.params import ChainParams

T = TypeVar("T")

MAX_GENESIS_ACCOUNTS = 100_000
# A genesis.json larger than this is refused before parsing.
MAX_GENESIS_FILE_BYTES = 32 * 1024 * 1024
CHAIN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VALIDATOR_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InvalidGenesis(Invalid):
    """A genesis document that no node may start from."""

    code = "invalid_genesis"


def check_validator_name(name: str, what: str = "validator name") -> None:
    """``InvalidGenesis`` unless ``name`` can name a validator (``what`` says what it is)."""
    # Names show up in logs and file names; keep them plain.
    if not VALIDATOR_NAME_PATTERN.fullmatch(name):
        raise InvalidGenesis(f"{what} must match [A-Za-z0-9_.-]{{1,64}}, got {name!r}")


def parse_net_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"``) as (host, port); ``InvalidGenesis`` naming the fault."""
    try:
        return netaddr.parse_net_address(text)
    except InvalidNetAddress as exc:
        raise InvalidGenesis(exc.message) from None


def check_dialable(text: str) -> tuple[str, int]:
    """A network address other nodes can dial: not the unspecified 0.0.0.0 or ::."""
    try:
        return netaddr.check_dialable(text)
    except InvalidNetAddress as exc:
        raise InvalidGenesis(exc.message) from None


@dataclass(frozen=True, slots=True)
class GenesisValidator(Wire):
    name: Annotated[str, MaxLen(64)]
    public_key: PublicKey
    # Vote weight in the initial producer set.
    power: int
    # Where its node listens for peers ("host:port"; "" if not published). Part of
    # the hash, so members who compare it also agree on whom they dial.
    address: Annotated[str, MaxLen(MAX_NET_ADDRESS)] = ""

    def __post_init__(self) -> None:
        check_validator_name(self.name)
        # A raw-bytes field must hold exactly one Ed25519 key.
        if len(self.public_key) != 32:
            raise InvalidGenesis(
                f"validator {self.name!r}: public key must be 32 bytes, got {len(self.public_key)}"
            )
        # Power 0 would be a validator that can never count toward a quorum.
        if not 1 <= self.power <= UINT64_MAX:
            raise InvalidGenesis(
                f"validator {self.name!r}: power must be in 1..2**64-1, got {self.power}"
            )
        if self.address:
            try:
                check_dialable(self.address)
            except InvalidGenesis as exc:
                raise InvalidGenesis(f"validator {self.name!r}: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class GenesisAccount(Wire):
    address: Address
    balance: int

    def __post_init__(self) -> None:
        if len(self.address) != 20:
            raise InvalidGenesis(f"account address must be 20 bytes, got {len(self.address)}")
        # The vm stores an empty account as absence, so a zero balance here would put
        # into state what execution never could (and change the state root).
        if not 1 <= self.balance <= UINT64_MAX:
            raise InvalidGenesis(
                f"account {format_address(self.address)}: balance must be in 1..2**64-1, "
                f"got {self.balance}"
            )


@dataclass(frozen=True, slots=True)
class Genesis(Wire):
    chain_id: Annotated[str, MaxLen(64)]
    genesis_time_ms: int
    params: ChainParams
    accounts: Annotated[tuple[GenesisAccount, ...], MaxItems(MAX_GENESIS_ACCOUNTS)]
    validators: Annotated[tuple[GenesisValidator, ...], MaxItems(MAX_VALIDATORS)]
    # Staking, election and governance (docs/staking.md); None keeps the validators fixed.
    staking: GenesisStaking | None = None
    # Commerce roles, treasury and parameters (docs/commerce.md); None: commerce disabled.
    commerce: CommerceGenesis | None = None

    MAX_ENCODED = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        # The chain id is in every signature; plain ASCII keeps look-alikes out.
        if not CHAIN_ID_PATTERN.fullmatch(self.chain_id):
            raise InvalidGenesis(
                f"chain_id must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}, got {self.chain_id!r}"
            )
        # Block times come after genesis time and stay at most MAX_TIME_MS.
        if not 0 <= self.genesis_time_ms < MAX_TIME_MS:
            raise InvalidGenesis(
                f"genesis_time_ms must be in 0..{MAX_TIME_MS - 1}, got {self.genesis_time_ms}"
            )
        # Without a validator no block can ever be produced or finalized.
        if not self.validators:
            raise InvalidGenesis("genesis must have at least one validator, got 0")
        # Consensus votes are counted per producer; more cannot fit in a Commit.
        if len(self.validators) > MAX_VALIDATORS:
            raise InvalidGenesis(
                f"genesis may have at most {MAX_VALIDATORS} validators, got {len(self.validators)}"
            )
        if len(self.accounts) > MAX_GENESIS_ACCOUNTS:
            raise InvalidGenesis(
                f"genesis may have at most {MAX_GENESIS_ACCOUNTS} accounts, "
                f"got {len(self.accounts)}"
            )
        _no_duplicates([format_address(a.address) for a in self.accounts], "account address")
        _no_duplicates([v.name for v in self.validators], "validator name")
        _no_duplicates([v.public_key.hex() for v in self.validators], "validator public key")
        # One endpoint, however spelled: "Node1.example:1" is "node1.example:1". Compared
        # folded rather than rewritten, since the document is hashed as written.
        _no_duplicates(
            [v.address for v in self.validators if v.address],
            "validator address",
            key=netaddr.endpoint_key,
        )
        # Balances are uint64 everywhere; a supply beyond that could overflow a sum.
        supply = self.total_supply
        if supply > UINT64_MAX:
            raise InvalidGenesis(f"total supply {supply} does not fit in uint64 (max {UINT64_MAX})")
        # Quorum arithmetic sums powers in uint64 too.
        power = sum(v.power for v in self.validators)
        if power > UINT64_MAX:
            raise InvalidGenesis(f"total validator power {power} does not fit in uint64")
        if self.staking is not None:
            keys = [v.public_key for v in self.validators]
            try:
                check_genesis_staking(
                    self.staking, self.params, keys, [a.address for a in self.accounts]
                )
            except DecodeError as exc:
                raise InvalidGenesis(f"staking: {exc.message}") from None
        # The treasury is credited chain fees; a module account's balance is its module's.
        if self.commerce is not None and self.commerce.treasury in MODULE_ACCOUNT_NAMES:
            raise InvalidGenesis(
                f"commerce.treasury must not be a module account, got "
                f"{format_address(self.commerce.treasury)} "
                f"(the {MODULE_ACCOUNT_NAMES[self.commerce.treasury]} module account)"
            )

    @property
    def hash(self) -> bytes:
        return hash_bytes(Domain.GENESIS, self.encode())

    @property
    def total_supply(self) -> int:
        bonded = 0 if self.staking is None else genesis_bonded(self.staking, len(self.validators))
        return sum(a.balance for a in self.accounts) + bonded

    def to_json(self) -> dict[str, Any]:
        """The human-readable form written to ``genesis.json``."""
        doc: dict[str, Any] = {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "params": params_to_json(self.params),
            "accounts": [
                {"address": format_address(a.address), "balance": a.balance} for a in self.accounts
            ],
            "validators": [_validator_to_json(v) for v in self.validators],
        }
        if self.staking is not None:
            doc["staking"] = {"self_bond": self.staking.self_bond}
        if self.commerce is not None:
            doc["commerce"] = self.commerce.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> Genesis:
        """Parse the file form; raise ``InvalidGenesis`` naming the offending field."""
        optional = tuple(k for k in ("staking", "commerce") if isinstance(doc, dict) and k in doc)
        obj = _object(
            doc,
            "genesis",
            ("chain_id", "genesis_time_ms", "params", "accounts", "validators", *optional),
        )
        chain_id = _str(obj["chain_id"], "chain_id")
        time_ms = _uint(obj["genesis_time_ms"], "genesis_time_ms")
        params = _params_from_json(obj["params"])
        accounts = []
        for i, item in enumerate(_list(obj["accounts"], "accounts", MAX_GENESIS_ACCOUNTS)):
            where = f"accounts[{i}]"
            acc = _object(item, where, ("address", "balance"))
            address = _address(acc["address"], f"{where}.address")
            balance = _uint(acc["balance"], f"{where}.balance")
            accounts.append(_build(GenesisAccount, where, address, balance))
        validators = []
        for i, item in enumerate(_list(obj["validators"], "validators", MAX_VALIDATORS)):
            where = f"validators[{i}]"
            has_address = isinstance(item, dict) and "address" in item
            fields = ("name", "public_key", "power", *(("address",) if has_address else ()))
            val = _object(item, where, fields)
            name = _str(val["name"], f"{where}.name")
            public_key = _hex(val["public_key"], f"{where}.public_key", 32)
            power = _uint(val["power"], f"{where}.power")
            # Absent means unpublished; written, it must be an address (one spelling of "").
            net_address = _str(val["address"], f"{where}.address") if has_address else ""
            if has_address and not net_address:
                raise InvalidGenesis(f"{where}.address: leave it out rather than empty")
            validators.append(_build(GenesisValidator, where, name, public_key, power, net_address))
        staking = None
        if "staking" in obj:
            st = _object(obj["staking"], "staking", ("self_bond",))
            staking = _build(GenesisStaking, "staking", _uint(st["self_bond"], "staking.self_bond"))
        commerce = None
        if "commerce" in obj:
            try:
                commerce = CommerceGenesis.from_json(obj["commerce"])
            except InvalidCommerceGenesis as exc:
                raise InvalidGenesis(exc.message) from None
        genesis = _build(
            cls,
            "genesis",
            chain_id,
            time_ms,
            params,
            tuple(accounts),
            tuple(validators),
            staking,
            commerce,
        )
        # Backstop: whatever from_json accepts must also survive the strict codec.
        try:
            cls.decode(genesis.encode())
        except DecodeError as exc:
            raise InvalidGenesis(f"genesis: {exc}") from None
        return genesis


def _validator_to_json(v: GenesisValidator) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name, "public_key": v.public_key.hex(), "power": v.power}
    if v.address:
        out["address"] = v.address
    return out


def genesis_state(genesis: Genesis) -> dict[bytes, bytes]:
    """The state before block 1: key -> encoded value.

    Accounts, and with a staking section the consensus entries (members,
    candidates, bonds, the producer set of epoch 0, the chain parameters);
    with a commerce section its configuration and the registrars' roles.
    """
    state = {
        account_key(a.address): Account(balance=a.balance, nonce=0).encode()
        for a in genesis.accounts
    }
    if genesis.staking is not None:
        validators = [(v.name, v.public_key) for v in genesis.validators]
        state.update(staking_genesis_state(genesis.staking, genesis.params, validators))
    if genesis.commerce is not None:
        state.update(commerce_genesis_state(genesis.commerce))
    return state


def read_genesis_file(path: Path | str) -> bytes:
    """The bytes of a ``genesis.json`` of at most ``MAX_GENESIS_FILE_BYTES``."""
    return read_regular_file(path, MAX_GENESIS_FILE_BYTES, "genesis file", InvalidGenesis)


def load_genesis(path: Path | str) -> Genesis:
    """Read and validate a ``genesis.json``."""
    data = read_genesis_file(path)
    try:
        return Genesis.from_json(parse_json(data))
    except InvalidGenesis as exc:
        raise InvalidGenesis(f"{path}: {exc.message}") from None


def save_genesis(path: Path | str, genesis: Genesis) -> bytes:
    """Write ``genesis.json`` atomically; return the bytes written (to copy them verbatim)."""
    data = genesis_json_bytes(genesis)
    atomic_write(path, data, mode=0o644, overwrite=True)
    return data


def genesis_json_bytes(genesis: Genesis) -> bytes:
    return (json.dumps(genesis.to_json(), indent=2) + "\n").encode()


def parse_json(data: bytes | str) -> Any:
    """``json.loads`` without its lenient corners: duplicate keys, floats, NaN; and
    ``InvalidGenesis`` for any malformed text, however deeply nested."""
    try:
        return json.loads(
            data,
            object_pairs_hook=reject_duplicate_keys,
            parse_float=_reject_float,
            parse_constant=_reject_float,
        )
    except InvalidGenesis:
        raise
    except DuplicateJsonKey as exc:
        # Two values for one field is a typo.
        raise InvalidGenesis(exc.message) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidGenesis(f"not valid JSON: {exc}") from None
    except RecursionError:
        # A few kilobytes of "[[[[..." exhaust the decoder's recursion limit; our
        # documents nest a handful of levels.
        raise InvalidGenesis("not valid JSON: nested too deeply") from None


def _reject_float(text: str) -> Any:
    # Amounts are integers; a float would be rounded somewhere, differently per tool.
    raise InvalidGenesis(f"numbers must be integers, got {text}")


# --- field helpers: each names the JSON path of the offending value ---


def _no_duplicates(items: list[str], what: str, key: Callable[[str], str] = str) -> None:
    """``InvalidGenesis`` for the first item whose ``key`` an earlier item has."""
    seen: dict[str, str] = {}
    for item in items:
        k = key(item)
        if k in seen:
            spelled = "" if seen[k] == item else f" (also written {seen[k]})"
            raise InvalidGenesis(f"duplicate {what} {item}{spelled}")
        seen[k] = item


def _object(value: Any, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidGenesis(f"{where}: expected an object, got {_json_type(value)}")
    missing = [f for f in fields if f not in value]
    if missing:
        raise InvalidGenesis(f"{where}: missing field(s): {', '.join(missing)}")
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise InvalidGenesis(f"{where}: unknown field(s): {', '.join(unknown)}")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidGenesis(f"{where}: expected a list, got {_json_type(value)}")
    if len(value) > limit:
        raise InvalidGenesis(f"{where}: at most {limit} items, got {len(value)}")
    return value


def _uint(value: Any, where: str) -> int:
    # bool is an int subclass in Python; true/false is not a number in our files.
    if type(value) is not int:
        raise InvalidGenesis(f"{where}: expected an integer, got {_json_type(value)}")
    if not 0 <= value <= UINT64_MAX:
        raise InvalidGenesis(f"{where}: expected an integer in 0..2**64-1, got {value}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidGenesis(f"{where}: expected a string, got {_json_type(value)}")
    return value


def _bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise InvalidGenesis(f"{where}: expected true or false, got {_json_type(value)}")
    return value


def _hex(value: Any, where: str, size: int | None = None) -> bytes:
    text = _str(value, where)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidGenesis(f"{where}: not valid hex") from None
    # bytes.fromhex skips whitespace; only the canonical lower-case form is accepted.
    if raw.hex() != text:
        raise InvalidGenesis(f"{where}: hex must be lower case without spaces")
    if size is not None and len(raw) != size:
        raise InvalidGenesis(f"{where}: expected {size} bytes, got {len(raw)}")
    return raw


def _address(value: Any, where: str) -> bytes:
    text = _str(value, where)
    try:
        raw = parse_address(text)
    except InvalidAddress as exc:
        raise InvalidGenesis(f"{where}: bad address {text!r}: {exc.message}") from None
    # One spelling per address (parse_address also takes upper case).
    if format_address(raw) != text:
        raise InvalidGenesis(f"{where}: address must be lower case, got {text!r}")
    return raw


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _build(cls: Callable[..., T], where: str, *args: Any) -> T:
    """Construct, turning the constructor's checks into errors that name ``where``."""
    try:
        return cls(*args)
    except InvalidGenesis as exc:
        # Top-level messages already say what they are about.
        if where == "genesis":
            raise
        raise InvalidGenesis(f"{where}: {exc.message}") from None
    except DecodeError as exc:
        raise InvalidGenesis(f"{where}: {exc.message}") from None


def _param_types() -> dict[str, Any]:
    hints = typing.get_type_hints(ChainParams, include_extras=True)
    out = {}
    for field in dataclasses.fields(ChainParams):
        hint = hints[field.name]
        if typing.get_origin(hint) is Annotated:
            hint = typing.get_args(hint)[0]
        out[field.name] = hint
    return out


def params_to_json(params: ChainParams) -> dict[str, Any]:
    """The parameters by name, as ``genesis.json`` and ``GET /v1/params`` show them."""
    out: dict[str, Any] = {}
    for name, hint in _param_types().items():
        value = getattr(params, name)
        out[name] = value.hex() if hint is bytes else value
    return out


def _params_from_json(value: Any) -> ChainParams:
    # Parameters are read by name from ChainParams itself, so new parameters need
    # no change here; every one must be present, since each is part of the hash.
    types = _param_types()
    obj = _object(value, "params", tuple(types))
    kwargs: dict[str, Any] = {}
    for name, hint in types.items():
        where = f"params.{name}"
        if hint is bool:
            kwargs[name] = _bool(obj[name], where)
        elif hint is int:
            kwargs[name] = _uint(obj[name], where)
        elif hint is str:
            kwargs[name] = _str(obj[name], where)
        elif hint is bytes:
            kwargs[name] = _hex(obj[name], where)
        else:
            raise TypeError(f"ChainParams.{name}: no JSON form for {hint!r}")
    try:
        return ChainParams(**kwargs)
    except DecodeError as exc:
        raise InvalidGenesis(f"params: {exc.message}") from None
