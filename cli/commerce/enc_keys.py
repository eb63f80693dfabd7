"""X25519 keys in the keyring, and ``liveledger enc-key``.

Merchants and auditors also hold an X25519 key (shipping addresses are sealed
to it). It lives beside the signing keys as ``<keyring>/x25519/<NAME>.<pub>.json``:
the seed is sealed with core.keystore's scheme (Argon2id + SecretBox, same
passphrase handling), and every key a merchant ever registered is kept, since
older orders stay sealed to older keys. The subdirectory keeps these files out
of ``keys list``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import nacl.utils

from apps.commerce.sealing import encryption_keypair
from cli.commerce.commands import keyring_option
from cli.keyring import check_name, passphrase_from_env_or_prompt
from cli.main import clear_errors, main
from core.files import read_regular_file
from core.keystore import KeystoreError, atomic_write, decrypt_seed, encrypt_seed

ENC_DIR = "x25519"
ENC_VERSION = 1
_ENC_FIELDS = {"version", "kind", "name", "public_key", "sealed"}


def _enc_dir(keyring: Path) -> Path:
    return keyring / ENC_DIR


def enc_key_new(keyring: Path, name: str, passphrase: str) -> bytes:
    """Create an X25519 key for ``name`` (kept beside older ones); return its public key."""
    check_name(name)
    seed = nacl.utils.random(32)
    _, public = encryption_keypair(seed)
    # The seed is sealed exactly as a signing key is (core.keystore); the record's
    # own public key is the X25519 one, checked again after every decryption.
    doc = {
        "version": ENC_VERSION,
        "kind": "x25519",
        "name": name,
        "public_key": public.hex(),
        "sealed": encrypt_seed(seed, passphrase, name=name),
    }
    directory = _enc_dir(keyring)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.{public.hex()[:16]}.json"
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600, overwrite=False)
    return public


def _enc_read(path: Path) -> dict[str, Any]:
    # Bounded, and a FIFO or device refused unopened (a FIFO blocks for ever).
    data = read_regular_file(path, 64 * 1024, "X25519 key file", KeystoreError)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise KeystoreError(f"cannot read X25519 key file {path}: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != _ENC_FIELDS or doc["kind"] != "x25519":
        raise KeystoreError(f"{path} is not an X25519 key file")
    return doc


def enc_keys_of(keyring: Path, name: str) -> list[tuple[bytes, Path]]:
    """(public key, file) of every X25519 key of ``name``, newest first."""
    check_name(name)
    directory = _enc_dir(keyring)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob(f"{name}.*.json"):
        # A longer name sharing the prefix ("alice.x" vs "alice") is not this key.
        if path.name[len(name) + 1 : -len(".json")].isalnum():
            doc = _enc_read(path)
            if doc["name"] == name:
                found.append((path.stat().st_mtime_ns, bytes.fromhex(doc["public_key"]), path))
    return [(public, path) for _, public, path in sorted(found, reverse=True)]


def enc_private(keyring: Path, name: str, public: bytes) -> bytes:
    """The private X25519 key of ``name`` whose public key is ``public``."""
    for candidate, path in enc_keys_of(keyring, name):
        if candidate == public:
            doc = _enc_read(path)
            seed = decrypt_seed(doc["sealed"], passphrase_from_env_or_prompt(confirm=False))
            private, derived = encryption_keypair(seed)
            # The file's public key is what the chain holds: it must be this seed's.
            if derived != public:
                raise KeystoreError(f"X25519 key file {path} is corrupt: keys do not match")
            return private
    raise KeystoreError(f"no X25519 key of {name!r} in {_enc_dir(keyring)} matches {public.hex()}")


@main.group("enc-key")
def enc_key() -> None:
    """X25519 keys for sealed shipping addresses (merchants, auditors)."""


@enc_key.command("new")
@click.argument("name")
@keyring_option
@clear_errors
def enc_key_new_cmd(name: str, keyring: Path) -> None:
    """Create an X25519 key for NAME and print its public key (hex)."""
    click.echo(enc_key_new(keyring, name, passphrase_from_env_or_prompt(confirm=True)).hex())


@enc_key.command("show")
@click.argument("name")
@keyring_option
@clear_errors
def enc_key_show(name: str, keyring: Path) -> None:
    """Print NAME's X25519 public keys, newest first (no passphrase needed)."""
    for public, _ in enc_keys_of(keyring, name):
        click.echo(public.hex())
