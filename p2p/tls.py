"""Node identity in TLS: a self-signed Ed25519 certificate over the node key, pinned by peers.

The certificate's key *is* the node key (the key registered on chain that
signs votes), so there is no second key whose binding would need proving.
Reusing the key across protocols is safe because every signature it makes
is domain-separated: TLS 1.3 CertificateVerify signs 64 spaces and a context
string before the transcript hash, X.509 signs a DER ``TBSCertificate``
(first byte 0x30), and LiveLedger signs ``SignDomain || chain id || body``
(first byte 0x01..0x05, or 0xF0). No signature of one kind parses as another.

Why the certificate is offered in clear before TLS: Python's ``ssl`` offers no
verify callback, and OpenSSL aborts the handshake on a self-signed client
certificate unless that exact certificate is a trust anchor. So each side
first sends its certificate (``CertOffer``); the receiver checks that the key
is a member's and builds a per-connection ``SSLContext`` whose only trust
anchor is that certificate, with ``CERT_REQUIRED``. OpenSSL then insists the
peer presents exactly that certificate and proves, in CertificateVerify, that
it holds its private key. The clear offer only selects the anchor; it is
trusted for nothing, and after the handshake the peer certificate is checked
again (same bytes, Ed25519, member).
"""

from __future__ import annotations

import builtins
import datetime
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.errors import Invalid
from core.keys import PrivateKey
from p2p.limits import RecordCount

# Pinning, not expiry, decides trust (a removed member is refused because it is
# no longer a member), so the certificate is valid from 2000 to the end of
# X.509 time: nodes with skewed clocks still accept each other.
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


# The most a TLS handshake reads from the peer. An honest one reads under 2 KB (a
# ClientHello of ~250 bytes; a certificate of ~300, its proof and Finished). OpenSSL
# takes a ClientHello of up to 128 KiB and a certificate chain of up to 100 KiB, in
# records of any size, and handles all it was given within one ``do_handshake``: a
# 60 KB ClientHello in 1-byte records is 10 ms of the event loop (160 ns a record),
# against 0.3 ms in one record, and anyone who replays a member's public certificate
# gets that far, 10 times a second per source address (``tls_rate_per_address``).
MAX_HANDSHAKE_BYTES = 16 * 1024

# After the handshake an honest node sends application data only: no KeyUpdate
# (Python's ssl cannot send one), no tickets, a close_notify at the end. OpenSSL
# handles any other record inside the read that meets it, with all the TLS layer gave
# it (up to 256 KiB a read), and none of it reaches a frame to be charged: a KeyUpdate
# asking for one back is 20 us and 27 bytes written back, so 256 KiB of them block the
# event loop 200 ms. A connection may carry this many bytes of such records.
MAX_CONTROL_BYTES = 4096
# What TLS 1.3 adds to a record's plaintext: header (5), content type (1), AEAD tag (16).
RECORD_OVERHEAD = 22
# What OpenSSL may hold of a record it has not finished reading (read, not delivered).
_RECORD_HELD = 5 + 16384 + 256


class _BoundExceeded(ssl.SSLError):
    """A bound of ``_BoundedTLS`` exceeded: said as its message, where an ``SSLError``
    made from one argument prints as a tuple (in refusal and misbehaviour lines)."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class HandshakeTooLarge(_BoundExceeded):
    """The peer sent more than ``MAX_HANDSHAKE_BYTES`` before the handshake ended."""


class ControlRecordFlood(_BoundExceeded, Invalid):
    """The peer sent more than ``MAX_CONTROL_BYTES`` of records that carry no data.

    An ``ssl.SSLError`` for the TLS layer, which closes the connection with it (and
    logs an ``OSError`` at debug level, anything else as an error of ours), and
    ``Invalid`` for the reader it reaches: misbehaviour, the peer is banned.
    """

    code = "tls_control_flood"


class _BoundedTLS(ssl.SSLObject):
    """An ``SSLObject`` that bounds what the peer makes OpenSSL handle beyond its data:
    its handshake reads at most ``MAX_HANDSHAKE_BYTES``, and after it at most
    ``MAX_CONTROL_BYTES`` may come in records that carry no application data.

    The TLS layer (asyncio's or uvloop's, both through ``SSLContext.wrap_bio``) writes
    what it receives into ``incoming`` and calls ``do_handshake``, then ``read``; what
    waits in ``incoming`` is counted before a handshake step (so a handshake that
    would read more fails before OpenSSL parses it), and what a read took from it
    against the plaintext it gave (each record of data takes its plaintext and
    ``RECORD_OVERHEAD``). Failing raises an ``ssl.SSLError``: the TLS layer closes the
    connection, as for any TLS error.
    """

    # Set by ``_BoundedContext.wrap_bio``, the one way this class is made.
    _incoming: ssl.MemoryBIO
    _handshake_read = 0
    _taken = 0
    _delivered = 0
    # Records of data read (``p2p.limits.RecordCount``): OpenSSL gives at most one
    # record's plaintext per read and the TLS layer asks for 256 KiB, so each read
    # that gives data is one record. Counted where OpenSSL has framed them, never by
    # parsing the TCP stream: a counter there starts where the stream is when TLS
    # ends, which the peer decides, and once off a record boundary it counts what
    # the peer wrote there (``17 03`` of the next header skips 5,896 bytes).
    records = 0

    def do_handshake(self) -> None:
        waiting = self._incoming.pending
        if self._handshake_read + waiting > MAX_HANDSHAKE_BYTES:
            raise HandshakeTooLarge(
                f"TLS handshake over {MAX_HANDSHAKE_BYTES} bytes "
                f"({self._handshake_read} read, {waiting} more sent)"
            )
        try:
            super().do_handshake()
        finally:
            self._handshake_read += waiting - self._incoming.pending

    def read(  # type: ignore[override]  # typeshed's Buffer is not in typing until 3.12
        self, len: int = 1024, buffer: bytearray | memoryview | None = None
    ) -> bytes:
        waiting = self._incoming.pending
        got = 0
        try:
            data = super().read(len, buffer)
            # With a buffer, ssl returns the count (typeshed says bytes either way).
            got = data if isinstance(data, int) else builtins.len(data)
            return data
        finally:
            self._taken += waiting - self._incoming.pending
            if got:
                self._delivered += got + RECORD_OVERHEAD
                self.records += 1
            # Less a record OpenSSL may hold half-read, which it took and has not given.
            control = self._taken - self._delivered - _RECORD_HELD
            if control > MAX_CONTROL_BYTES:
                raise ControlRecordFlood(
                    f"{control} bytes of TLS records without data, "
                    f"at most {MAX_CONTROL_BYTES} allowed"
                )


class _BoundedContext(ssl.SSLContext):
    """An ``SSLContext`` whose TLS objects are ``_BoundedTLS``, given the incoming BIO
    they count (``SSLObject`` does not say which BIO it reads)."""

    sslobject_class = _BoundedTLS

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        tls = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        assert isinstance(tls, _BoundedTLS), "sslobject_class is _BoundedTLS"
        tls._incoming = incoming
        return tls


def record_count(ssl_object: object) -> RecordCount:
    """What counts the TLS records of data the peer sent on a connection (the
    ``ssl_object`` of a transport made with these contexts)."""
    if not isinstance(ssl_object, _BoundedTLS):
        raise TypeError(f"expected a TLS object of p2p.tls, got {type(ssl_object).__name__}")
    return ssl_object


class PeerRejected(Invalid):
    """A peer's identity is unacceptable: not Ed25519, not a member, or not who we dialed."""

    code = "peer_rejected"


def make_certificate(key: PrivateKey) -> bytes:
    """A DER self-signed X.509 certificate for the node key (Ed25519 signatures are deterministic)."""
    sk = Ed25519PrivateKey.from_private_bytes(key.seed)
    # The CN is the public key in hex (64 characters, the X.509 CN limit), for logs and tools.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key.public_key.hex())])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(sk.public_key())
        # Positive and below 2**159, as RFC 5280 asks; unique per key.
        .serial_number(int.from_bytes(key.public_key[:19], "big") | 1)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(sk, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_public_key(der: bytes, check: Callable[[bytes], None] | None = None) -> bytes:
    """The raw Ed25519 public key of a self-signed certificate; ``PeerRejected`` otherwise.

    ``check(public_key)``, if given, runs before the self-signature is verified and
    may raise: a stranger's certificate then costs a parse, not a signature check.
    """
    # The bytes are a stranger's, so what the parser raises on them is the stranger's
    # doing, and not all of it is a ValueError: an X.509 version other than 1 to 3 raises
    # InvalidVersion, a key of an algorithm cryptography does not know UnsupportedAlgorithm.
    # Uncaught, they reached the handshake as errors of ours (ERROR, with a traceback).
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise PeerRejected(f"certificate does not parse: {exc}") from exc
    try:
        public = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PeerRejected(f"certificate key does not parse: {exc}") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise PeerRejected(f"certificate key must be Ed25519, got {type(public).__name__}")
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if check is not None:
        check(raw)
    # Cheap sanity check before the key goes into a trust store; TLS proves possession.
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PeerRejected("certificate is not validly self-signed") from exc
    return raw


class NodeIdentity:
    """The node's certificate and the TLS contexts that present it and pin a peer.

    ``ssl`` can only load a private key from a file path. The key is written
    encrypted, under a random password that lives only in this object's
    memory, to an anonymous in-memory file (``memfd``, reached through
    ``/proc/self/fd``) where Linux offers one, else to a private ``0600``
    temporary file. Either way the node key never touches disk in clear, and
    with memfd nothing is left behind even if the process is killed.
    """

    __slots__ = ("public_key", "cert_der", "_path", "_fd", "_password")

    def __init__(self, key: PrivateKey) -> None:
        self.public_key = key.public_key
        self.cert_der = make_certificate(key)
        self._password = secrets.token_bytes(32)
        sk = Ed25519PrivateKey.from_private_bytes(key.seed)
        cert_pem = x509.load_der_x509_certificate(self.cert_der).public_bytes(
            serialization.Encoding.PEM
        )
        key_pem = sk.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._password),
        )
        self._fd: int | None = None
        self._path = ""
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            self._fd = os.memfd_create("liveledger-tls", os.MFD_CLOEXEC)
            with open(self._fd, "wb", closefd=False) as f:
                f.write(cert_pem + key_pem)
            self._path = f"/proc/self/fd/{self._fd}"
        else:
            # mkstemp creates the file 0600 and opens it exclusively.
            fd, self._path = tempfile.mkstemp(prefix="liveledger-tls-", suffix=".pem")
            with open(fd, "wb") as f:
                f.write(cert_pem + key_pem)

    def close(self) -> None:
        """Forget the key file; the identity can make no more contexts."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        elif self._path:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        self._path = ""

    def __repr__(self) -> str:
        return f"NodeIdentity(public={self.public_key.hex()})"

    def _context(self, server_side: bool, peer_cert_der: bytes) -> ssl.SSLContext:
        if not self._path:
            raise RuntimeError("identity is closed")
        # What the peer makes OpenSSL handle beyond its data is bounded (_BoundedTLS).
        ctx = _BoundedContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        # No host names: the peer is identified by its pinned key, not by DNS.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        # Resumed sessions skip certificate authentication; always do the full handshake.
        ctx.options |= ssl.OP_NO_TICKET
        if server_side:
            # In TLS 1.3 OP_NO_TICKET only makes the tickets stateful: OpenSSL still sent
            # two after each handshake (158 bytes the client handles as records without
            # data, beside two sessions cached for nothing: every context is new).
            ctx.num_tickets = 0
        ctx.load_cert_chain(self._path, password=self._password)
        # The peer's own certificate is the one and only trust anchor.
        ctx.load_verify_locations(cadata=peer_cert_der)
        return ctx

    def server_context(self, peer_cert_der: bytes) -> ssl.SSLContext:
        """Context for an accepted connection whose client offered ``peer_cert_der``."""
        return self._context(True, peer_cert_der)

    def client_context(self, peer_cert_der: bytes) -> ssl.SSLContext:
        """Context for a dialed connection whose server offered ``peer_cert_der``."""
        return self._context(False, peer_cert_der)


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes:
    """The DER certificate the peer presented in the handshake."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PeerRejected("peer presented no certificate")
    return der
