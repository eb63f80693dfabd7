"""Ed25519 keys and signatures (PyNaCl / libsodium) and account addresses.

Signed bytes are ``tag || len(chain_id) || chain_id || body``: the one-byte tag
says what kind of message it is and the chain id binds it to one chain, so a
signature can be replayed neither on another chain nor as another message.
"""

from __future__ import annotations

import functools
from enum import IntEnum

import nacl.exceptions
import nacl.signing

from core.errors import InvalidAddress, InvalidSignature
from core.hashing import Domain, hash_bytes

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
ADDRESS_SIZE = 20
ADDRESS_HRP = "ll"


class SignDomain(IntEnum):
    """What a signature is over; values are part of the protocol."""

    TX = 0x01
    VOTE = 0x02
    PROPOSAL = 0x03
    NODE_CERT = 0x04
    # A member's contribution to a genesis ceremony (genesis/ceremony.py).
    GENESIS_CONTRIBUTION = 0x05
    # A signed HTTP read (a party reading its own orders); never valid as a tx or vote.
    HTTP_READ = 0xF0


def signing_bytes(domain: SignDomain, chain_id: str, body: bytes) -> bytes:
    cid = chain_id.encode()
    if len(cid) > 255:
        raise ValueError("chain id longer than 255 bytes")
    return bytes((domain, len(cid))) + cid + body


class PrivateKey:
    """An Ed25519 signing key. Its ``repr`` shows only the public half."""

    __slots__ = ("_sk", "_public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"seed must be {SEED_SIZE} bytes, got {len(seed)}")
        self._sk = nacl.signing.SigningKey(seed)
        self._public = bytes(self._sk.verify_key)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Only the keyring should ever touch it."""
        return bytes(self._sk)

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def address(self) -> bytes:
        return address_of(self._public)

    def sign(self, domain: SignDomain, chain_id: str, body: bytes) -> bytes:
        return self._sk.sign(signing_bytes(domain, chain_id, body)).signature

    def __repr__(self) -> str:
        return f"PrivateKey(public={self._public.hex()})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("private keys are not picklable")


def verify(
    public_key: bytes, domain: SignDomain, chain_id: str, body: bytes, signature: bytes
) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` is valid. Releases the GIL."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature("public key or signature has the wrong size")
    try:
        nacl.signing.VerifyKey(public_key).verify(signing_bytes(domain, chain_id, body), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
        raise InvalidSignature("signature does not verify") from exc


def is_valid_signature(
    public_key: bytes, domain: SignDomain, chain_id: str, body: bytes, signature: bytes
) -> bool:
    try:
        verify(public_key, domain, chain_id, body, signature)
    except InvalidSignature:
        return False
    return True


# Senders repeat (merchants, regular buyers, validators): every admitted and every
# block-validated transaction asks for its sender's address. A hit costs a fifth
# of the hash; 65k entries hold about 10 MB.
@functools.lru_cache(maxsize=1 << 16)
def address_of(public_key: bytes) -> bytes:
    """The 20-byte account address of a public key."""
    return hash_bytes(Domain.ADDRESS, public_key)[:ADDRESS_SIZE]


# --- bech32m (BIP-350) text form of addresses: "ll1..." with a 6-char checksum ---

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32M_CONST = 0x2BC830A3


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], frm: int, to: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to) - 1
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to - bits)) & maxv)
    elif bits >= frm or ((acc << (to - bits)) & maxv):
        raise InvalidAddress("address has invalid padding")
    return out


@functools.lru_cache(maxsize=1 << 16)
def format_address(address: bytes) -> str:
    """The bech32m text form (cached: addresses repeat and bech32 is slow in Python)."""
    if len(address) != ADDRESS_SIZE:
        raise InvalidAddress(f"address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    data = _convert_bits(address, 8, 5, True)
    poly = _polymod(_hrp_expand(ADDRESS_HRP) + data + [0] * 6) ^ _BECH32M_CONST
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return ADDRESS_HRP + "1" + "".join(_CHARSET[d] for d in data + checksum)


def parse_address(text: str) -> bytes:
    """Parse ``ll1...`` into 20 bytes; raise ``InvalidAddress`` with the reason."""
    if not isinstance(text, str) or len(text) > 90:
        raise InvalidAddress("address must be a string of at most 90 characters")
    if text.lower() != text and text.upper() != text:
        raise InvalidAddress("address mixes upper and lower case")
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep or hrp != ADDRESS_HRP:
        raise InvalidAddress(f"address must start with '{ADDRESS_HRP}1', got {text[:4]!r}")
    if len(rest) < 7 or any(c not in _CHARSET for c in rest):
        raise InvalidAddress("address has invalid characters or is too short")
    values = [_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + values) != _BECH32M_CONST:
        raise InvalidAddress("address checksum does not match")
    raw = bytes(_convert_bits(values[:-6], 5, 8, False))
    if len(raw) != ADDRESS_SIZE:
        raise InvalidAddress(f"address must hold {ADDRESS_SIZE} bytes, got {len(raw)}")
    return raw
