"""Client-side sealing of shipping addresses (never run by the chain).

A buyer seals the address to the merchant's X25519 key with a libsodium sealed
box (``crypto_box_seal``: anonymous sender, only the key's owner can open it)
and commits to it: the plaintext is ``ShippingAddress(salt, text)`` encoded
canonically, the commitment is a personalised BLAKE2b-256 of that encoding. The
random salt keeps the commitment from being brute-forced over likely
addresses. Whoever opens a sealed copy (the merchant, or an auditor after a
disclosure) checks it against the commitment stored with the order.

Merchant and auditor keys: ``encryption_keypair(seed)`` derives an X25519 key
pair from 32 secret bytes (the CLI keeps them in the keyring).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

import nacl.exceptions
import nacl.public
import nacl.utils

from core.codec import Len, MaxLen, Wire
from core.errors import DecodeError, Invalid

MAX_ADDRESS_TEXT = 400


class SealError(Invalid):
    code = "bad_sealed_address"


@dataclass(frozen=True, slots=True)
class ShippingAddress(Wire):
    salt: Annotated[bytes, Len(32)]
    text: Annotated[str, MaxLen(MAX_ADDRESS_TEXT)]

    MAX_ENCODED = 512


def encryption_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """``(private, public)`` X25519 keys derived from a 32-byte secret seed."""
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    private = nacl.public.PrivateKey.from_seed(seed)
    return bytes(private), bytes(private.public_key)


def commitment(plaintext: bytes) -> bytes:
    return hashlib.blake2b(plaintext, digest_size=32, person=b"ll-ship-address").digest()


def seal_address(
    recipient_public: bytes, text: str, salt: bytes | None = None
) -> tuple[bytes, bytes, bytes]:
    """Seal ``text`` to ``recipient_public``: ``(ciphertext, commitment, plaintext)``.

    Keep ``plaintext`` to re-seal the same address (same commitment) later.
    """
    plain = ShippingAddress(nacl.utils.random(32) if salt is None else salt, text).encode()
    return reseal(recipient_public, plain), commitment(plain), plain


def reseal(recipient_public: bytes, plaintext: bytes) -> bytes:
    """Seal an already committed plaintext to another key (a disclosure to an auditor)."""
    return nacl.public.SealedBox(nacl.public.PublicKey(recipient_public)).encrypt(plaintext)


def open_address(private: bytes, ciphertext: bytes, expected_commitment: bytes) -> str:
    """Open a sealed address and check it against the order's commitment."""
    try:
        plain = nacl.public.SealedBox(nacl.public.PrivateKey(private)).decrypt(ciphertext)
    except nacl.exceptions.CryptoError as exc:
        raise SealError("sealed address does not open with this key") from exc
    if commitment(plain) != expected_commitment:
        raise SealError("sealed address does not match the order's commitment")
    try:
        return ShippingAddress.decode(plain).text
    except DecodeError as exc:
        raise SealError(f"sealed address is not a ShippingAddress: {exc.message}") from exc


def open_plaintext(private: bytes, ciphertext: bytes) -> bytes:
    """The committed plaintext (to ``reseal`` it for a disclosure)."""
    try:
        return nacl.public.SealedBox(nacl.public.PrivateKey(private)).decrypt(ciphertext)
    except nacl.exceptions.CryptoError as exc:
        raise SealError("sealed address does not open with this key") from exc
