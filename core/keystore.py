"""Encrypted key files: an Ed25519 seed sealed under a passphrase.

A key file is JSON::

    {"version": 1, "name": "alice", "address": "ll1...", "public_key": "<hex>",
     "kdf": {"alg": "argon2id", "opslimit": 2, "memlimit": 67108864, "salt": "<hex>"},
     "nonce": "<hex>", "ciphertext": "<hex>"}

The passphrase goes through Argon2id (``nacl.pwhash.argon2id``) to a 32-byte key
and the seed is sealed with ``nacl.secret.SecretBox`` (XSalsa20-Poly1305); all
cryptography is libsodium's. The public half stays in clear so that a key's
address can be shown without the passphrase; after decryption the seed must
produce exactly that public key, so a file whose public part was edited is
refused instead of silently signing as someone else.

The CLI keyring and the validator node key both use this module, which is why it
sits in ``core``. Reading the passphrase (environment or prompt) is the CLI's job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from core.errors import InvalidAddress, LiveLedgerError
from core.files import fsync_dir, read_regular_file_and_mode
from core.keys import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    PrivateKey,
    address_of,
    format_address,
    parse_address,
)

log = logging.getLogger("core.keystore")

KEYSTORE_VERSION = 1
KDF_ALG = "argon2id"
# Interactive limits (2 passes, 64 MiB, ~0.1 s) by default: devnets and tests create
# many keys, and a node decrypts its key at every start. Keys worth more can be
# written with stronger limits; the limits travel in the file, so reading needs no
# configuration.
DEFAULT_OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
# Upper bounds accepted when reading: a crafted file must not make us spend minutes
# or gigabytes before the MAC check can even fail.
MAX_OPSLIMIT = argon2id.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE
MAX_NAME_BYTES = 64
# A key file is a few hundred bytes; refuse to parse anything much larger.
MAX_FILE_BYTES = 64 * 1024

_FIELDS = ("version", "name", "address", "public_key", "kdf", "nonce", "ciphertext")
_KDF_FIELDS = ("alg", "opslimit", "memlimit", "salt")


class KeystoreError(LiveLedgerError):
    """A key file cannot be written, read or opened. Messages never contain secrets."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open the key file (or its ciphertext was altered)."""


class KeyExists(KeystoreError):
    """Refusing to overwrite an existing key file: that would destroy a key."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The public part of a key file, readable without the passphrase."""

    name: str
    address: str
    public_key: bytes


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str):
        raise TypeError("passphrase must be a str")
    # NFC so that the same passphrase typed on systems that compose accented
    # characters differently (macOS vs Linux input methods) opens the same file.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, _passphrase_bytes(passphrase), salt, opslimit, memlimit
    )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise KeystoreError("key name must be a non-empty string")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise KeystoreError(f"key name must be at most {MAX_NAME_BYTES} bytes")


def encrypt_seed(
    seed: bytes,
    passphrase: str,
    *,
    name: str,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> dict[str, Any]:
    """Seal a 32-byte Ed25519 seed under ``passphrase``; return the JSON-ready key file."""
    if len(seed) != SEED_SIZE:
        raise KeystoreError(f"seed must be {SEED_SIZE} bytes, got {len(seed)}")
    _check_name(name)
    _check_limits(opslimit, memlimit)
    public_key = PrivateKey(bytes(seed)).public_key
    salt = nacl.utils.random(argon2id.SALTBYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    ciphertext = box.encrypt(bytes(seed), nonce).ciphertext
    return {
        "version": KEYSTORE_VERSION,
        "name": name,
        "address": format_address(address_of(public_key)),
        "public_key": public_key.hex(),
        "kdf": {"alg": KDF_ALG, "opslimit": opslimit, "memlimit": memlimit, "salt": salt.hex()},
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }


def decrypt_seed(doc: dict[str, Any], passphrase: str) -> bytes:
    """Open a key file; raise ``WrongPassphrase`` or ``KeystoreError`` with the reason."""
    info = key_info(doc)
    kdf = doc["kdf"]
    salt = _hex(kdf["salt"], "kdf.salt", argon2id.SALTBYTES)
    nonce = _hex(doc["nonce"], "nonce", nacl.secret.SecretBox.NONCE_SIZE)
    ciphertext = _hex(doc["ciphertext"], "ciphertext", SEED_SIZE + nacl.secret.SecretBox.MACBYTES)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, kdf["opslimit"], kdf["memlimit"]))
    try:
        seed = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        # The MAC cannot tell a wrong passphrase from an altered salt, nonce or
        # ciphertext; say both. "from None": nothing in the cause helps the user.
        raise WrongPassphrase(
            f"wrong passphrase for key {info.name!r} (or the key file was altered)"
        ) from None
    if PrivateKey(seed).public_key != info.public_key:
        raise KeystoreError(
            f"key file {info.name!r} is corrupt: its secret key does not match its public key"
        )
    return seed


def key_info(doc: dict[str, Any]) -> KeyInfo:
    """Check the structure of a key file and return its public part.

    Every field must be present with the right type, nothing else may be, and the
    address must be the one of the public key.
    """
    if not isinstance(doc, dict):
        raise KeystoreError(f"key file must be a JSON object, got {type(doc).__name__}")
    _check_keys(doc, _FIELDS, "key file")
    if type(doc["version"]) is not int or doc["version"] != KEYSTORE_VERSION:
        raise KeystoreError(
            f"unsupported key file version: expected {KEYSTORE_VERSION}, got {doc['version']!r}"
        )
    name = doc["name"]
    if not isinstance(name, str):
        raise KeystoreError("key file field 'name' must be a string")
    _check_name(name)
    kdf = doc["kdf"]
    if not isinstance(kdf, dict):
        raise KeystoreError("key file field 'kdf' must be an object")
    _check_keys(kdf, _KDF_FIELDS, "key file 'kdf'")
    if kdf["alg"] != KDF_ALG:
        raise KeystoreError(f"unsupported kdf: expected {KDF_ALG!r}, got {kdf['alg']!r}")
    _check_limits(kdf["opslimit"], kdf["memlimit"])
    _hex(kdf["salt"], "kdf.salt", argon2id.SALTBYTES)
    _hex(doc["nonce"], "nonce", nacl.secret.SecretBox.NONCE_SIZE)
    _hex(doc["ciphertext"], "ciphertext", SEED_SIZE + nacl.secret.SecretBox.MACBYTES)
    public_key = _hex(doc["public_key"], "public_key", PUBLIC_KEY_SIZE)
    address = doc["address"]
    try:
        if not isinstance(address, str) or parse_address(address) != address_of(public_key):
            raise KeystoreError(f"key file {name!r}: address does not match its public key")
    except InvalidAddress as exc:
        raise KeystoreError(f"key file {name!r}: bad address: {exc}") from None
    return KeyInfo(name=name, address=address, public_key=public_key)


def _check_keys(obj: dict[str, Any], expected: tuple[str, ...], where: str) -> None:
    missing = [k for k in expected if k not in obj]
    unknown = sorted(k for k in obj if k not in expected)
    if missing:
        raise KeystoreError(f"{where} is missing field(s): {', '.join(missing)}")
    if unknown:
        raise KeystoreError(f"{where} has unknown field(s): {', '.join(map(str, unknown))}")


def _check_limits(opslimit: Any, memlimit: Any) -> None:
    if type(opslimit) is not int or not argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT:
        raise KeystoreError(
            f"kdf opslimit must be an integer in {argon2id.OPSLIMIT_MIN}..{MAX_OPSLIMIT}, "
            f"got {opslimit!r}"
        )
    if type(memlimit) is not int or not argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT:
        raise KeystoreError(
            f"kdf memlimit must be an integer in {argon2id.MEMLIMIT_MIN}..{MAX_MEMLIMIT}, "
            f"got {memlimit!r}"
        )


def _hex(value: Any, field: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise KeystoreError(f"key file field {field!r} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise KeystoreError(f"key file field {field!r} is not valid hex") from None
    if len(raw) != size:
        raise KeystoreError(f"key file field {field!r}: expected {size} bytes, got {len(raw)}")
    return raw


# --- files ---


def atomic_write(
    path: Path | str, data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are fsynced, and then
    take the final name; the directory is fsynced so the name survives a crash.
    With ``overwrite=False`` the final step is ``link`` rather than ``rename``:
    ``link`` fails atomically when the name exists, where an exists-check followed
    by ``rename`` could still clobber a file created in between.
    """
    with staged_write(path, data, mode=mode, overwrite=overwrite):
        pass


@contextlib.contextmanager
def staged_write(
    path: Path | str, data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> Iterator[None]:
    """``atomic_write`` in two steps: the bytes are written and fsynced on entry, and take
    the final name when the block exits without an exception (with one, nothing is left).

    For a file whose presence says that the writes inside the block are complete: they
    run only once its bytes are safely on disk (a full disk fails before them), and a
    crash inside the block leaves the file absent.
    """
    path = Path(path)
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; widen only when asked (e.g. genesis.json).
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        yield
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)


def save_key(
    path: Path | str,
    key: PrivateKey,
    passphrase: str,
    name: str,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> KeyInfo:
    """Encrypt ``key`` into a new file at ``path`` (mode 0600); never overwrite one."""
    path = Path(path)
    if path.exists():
        # Early, friendly refusal before spending the KDF; the link in atomic_write
        # is what actually guarantees no overwrite.
        raise KeyExists(f"key file {path} already exists")
    doc = encrypt_seed(key.seed, passphrase, name=name, opslimit=opslimit, memlimit=memlimit)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    try:
        atomic_write(path, data, mode=0o600, overwrite=False)
    except FileExistsError:
        raise KeyExists(f"key file {path} already exists") from None
    except OSError as exc:
        raise KeystoreError(f"cannot write key file {path}: {exc.strerror or exc}") from None
    return key_info(doc)


def read_key_file(path: Path | str) -> dict[str, Any]:
    """Read and structurally check a key file; no passphrase needed."""
    path = Path(path)
    # A FIFO or device given as a key file is refused unopened (a FIFO blocks for ever).
    data, mode = read_regular_file_and_mode(path, MAX_FILE_BYTES, "key file", KeystoreError)
    try:
        doc: dict[str, Any] = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a few kB of "[[[[" exhaust the decoder's depth.
        raise KeystoreError(f"{path} is not a key file: not valid JSON") from None
    try:
        key_info(doc)
    except KeystoreError as exc:
        raise KeystoreError(f"{path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Like ssh: the seed is encrypted, but a readable file invites offline guessing.
        log.warning("key file %s is accessible by other users (mode %o)", path, mode & 0o777)
    return doc


def read_key_info(path: Path | str) -> KeyInfo:
    """The public part (name, address, public key) of a key file."""
    return key_info(read_key_file(path))


def load_key(path: Path | str, passphrase: str) -> PrivateKey:
    """Read and decrypt a key file."""
    return PrivateKey(decrypt_seed(read_key_file(path), passphrase))
