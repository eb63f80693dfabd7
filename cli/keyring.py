"""The CLI keyring: a directory of ``<NAME>.json`` key files (see ``core.keystore``)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import click

from core.errors import InvalidAddress
from core.files import make_durable_dir
from core.keys import PrivateKey, parse_address
from core.keystore import (
    KeyExists,
    KeyInfo,
    KeystoreError,
    load_key,
    read_key_info,
    save_key,
)

PASSPHRASE_ENV = "LIVELEDGER_PASSPHRASE"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SUFFIX = ".json"


class KeyNotFound(KeystoreError):
    """No key of that name in the keyring."""


class InvalidKeyName(KeystoreError):
    """A key name outside ``[A-Za-z0-9_.-]{1,64}``."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid key name; it becomes a file name, so no slashes."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidKeyName(
            f"invalid key name {name!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
        )
    return name


class Keyring:
    """Key files in one directory, one per name. Holds no secrets itself."""

    __slots__ = ("path",)

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r})"

    def file_of(self, name: str) -> Path:
        return self.path / (check_name(name) + _SUFFIX)

    def create(self, name: str, passphrase: str) -> PrivateKey:
        """Generate a new key, store it encrypted, and return it."""
        key = PrivateKey.generate()
        self.add(name, key, passphrase)
        return key

    def add(self, name: str, key: PrivateKey, passphrase: str) -> KeyInfo:
        """Store an existing key under a new name."""
        path = self.file_of(name)
        if path.exists():
            raise KeyExists(f"key {name!r} already exists in keyring {self.path}")
        try:
            # 0700: the file names alone tell who holds keys on this machine. Durable in
            # its parent: the key file is fsynced in it, but a new keyring's own name
            # could be lost in a power loss, and the new key with it.
            make_durable_dir(self.path, mode=0o700)
        except OSError as exc:
            raise KeystoreError(
                f"cannot create keyring {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            return save_key(path, key, passphrase, name)
        except KeyExists:
            raise KeyExists(f"key {name!r} already exists in keyring {self.path}") from None

    def load(self, name: str, passphrase: str) -> PrivateKey:
        return load_key(self._existing(name), passphrase)

    def info(self, name: str) -> KeyInfo:
        """Name, address and public key, without the passphrase."""
        return read_key_info(self._existing(name))

    def address(self, name: str) -> str:
        """The bech32m address of key ``name``, without the passphrase."""
        return self.info(name).address

    def resolve(self, text: str) -> bytes:
        """The address ``text`` names: an ``ll1…`` address, or a key's name in this keyring."""
        try:
            return parse_address(text)
        except InvalidAddress as exc:
            if _NAME.fullmatch(text) and self.file_of(text).is_file():
                return parse_address(self.address(text))
            raise InvalidAddress(
                f"{text!r} is neither an ll1… address ({exc.message}) nor a key in keyring "
                f"{self.path}"
            ) from None

    def names(self) -> list[str]:
        """The key names in the keyring, sorted."""
        self._check_dir()
        out = []
        for entry in os.listdir(self.path):
            # Skips temporary files of interrupted writes and anything foreign.
            if entry.endswith(_SUFFIX) and _NAME.fullmatch(entry[: -len(_SUFFIX)]):
                out.append(entry[: -len(_SUFFIX)])
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.file_of(name).is_file()

    def _check_dir(self) -> None:
        if not self.path.is_dir():
            raise KeystoreError(f"keyring {self.path} does not exist or is not a directory")

    def _existing(self, name: str) -> Path:
        path = self.file_of(name)
        if not path.is_file():
            self._check_dir()
            raise KeyNotFound(f"no key named {name!r} in keyring {self.path}")
        return path


def local_secret(key: PrivateKey, purpose: bytes) -> bytes:
    """A 32-byte secret for this machine's own records of ``key`` (e.g. the shipping
    addresses its buyer sealed), derived from its seed: whoever can sign as the key can
    read them, and nobody else. ``purpose`` keeps each use's secret apart."""
    return hashlib.blake2b(key.seed, digest_size=32, person=b"ll-local", salt=purpose).digest()


def passphrase_from_env_or_prompt(confirm: bool) -> str:
    """The passphrase from ``LIVELEDGER_PASSPHRASE`` if set (even empty), else a prompt.

    The environment variable serves scripts, devnets and nodes started unattended;
    an empty value is allowed there on purpose (throwaway devnet keys). The prompt
    hides input, asks twice when ``confirm`` (a typo would lock the key away for
    good) and writes to stderr so stdout stays parseable.
    """
    value = os.environ.get(PASSPHRASE_ENV)
    if value is not None:
        return value
    result: str = click.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    return result
