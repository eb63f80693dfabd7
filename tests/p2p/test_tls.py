"""Certificates over the node key, and the pinned TLS 1.3 contexts."""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from core.keys import PrivateKey
from p2p.tls import (
    ControlRecordFlood,
    HandshakeTooLarge,
    NodeIdentity,
    PeerRejected,
    certificate_public_key,
    make_certificate,
    record_count,
)
from tests.p2p.helpers import tls_key_memfds, unparsable_certificates


def test_certificate_carries_the_node_key_and_is_deterministic():
    key = PrivateKey.generate()
    der = make_certificate(key)
    assert certificate_public_key(der) == key.public_key
    assert make_certificate(key) == der  # Ed25519 signatures are deterministic
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject == cert.issuer
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == key.public_key.hex()


def test_non_ed25519_certificate_is_rejected():
    sk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecdsa")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(sk.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(sk, hashes.SHA256())
    )
    with pytest.raises(PeerRejected, match="Ed25519"):
        certificate_public_key(cert.public_bytes(serialization.Encoding.DER))


def test_garbage_and_forged_certificates_are_rejected():
    with pytest.raises(PeerRejected):
        certificate_public_key(b"\x30\x03\x02\x01\x00")
    der = bytearray(make_certificate(PrivateKey.generate()))
    der[-1] ^= 1  # last byte of the signature
    with pytest.raises(PeerRejected, match="self-signed"):
        certificate_public_key(bytes(der))


@pytest.mark.parametrize("change", ["unknown key algorithm", "unknown version"])
def test_certificates_the_parser_raises_on_are_rejected(change):
    # Before, these escaped as UnsupportedAlgorithm / InvalidVersion: to the handshake,
    # an error of ours (logged at ERROR with a traceback, for every connection).
    der = unparsable_certificates(PrivateKey.generate())[change]
    with pytest.raises(PeerRejected, match="does not parse"):
        certificate_public_key(der)


def test_contexts_are_tls13_only_and_require_a_certificate():
    a, b = PrivateKey.generate(), PrivateKey.generate()
    ident = NodeIdentity(a)
    try:
        for ctx in (
            ident.server_context(make_certificate(b)),
            ident.client_context(make_certificate(b)),
        ):
            assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
            assert ctx.verify_mode == ssl.CERT_REQUIRED
            assert ctx.options & ssl.OP_NO_TICKET
        assert repr(ident) == f"NodeIdentity(public={a.public_key.hex()})"
    finally:
        ident.close()


def test_private_key_file_is_encrypted_and_released(tmp_path, monkeypatch):
    # Any temporary file would go here, where nothing else writes.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = tls_key_memfds()
    key = PrivateKey.generate()
    ident = NodeIdentity(key)
    memfds = tls_key_memfds() - before
    [path] = memfds | {str(p) for p in tmp_path.glob("liveledger-tls-*.pem")}
    if hasattr(os, "memfd_create"):
        assert path in memfds  # anonymous memory, never on disk
    with open(path, "rb") as f:
        data = f.read()
    assert b"ENCRYPTED PRIVATE KEY" in data
    assert key.seed not in data and key.seed.hex().encode() not in data
    ident.close()
    assert tls_key_memfds() == before and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError):
        ident.client_context(make_certificate(key))


def test_temporary_file_fallback_without_memfd(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = tls_key_memfds()
    key = PrivateKey.generate()
    ident = NodeIdentity(key)
    [path] = tmp_path.glob("liveledger-tls-*.pem")
    assert tls_key_memfds() == before
    assert os.stat(path).st_mode & 0o077 == 0
    ident.server_context(make_certificate(PrivateKey.generate()))
    ident.close()
    assert not os.path.exists(path)


def _handshake_in_memory() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """A client and a server TLS object of two nodes, their handshake done in memory:
    (client, its incoming BIO, server, its outgoing BIO)."""
    client_id, server_id = NodeIdentity(PrivateKey.generate()), NodeIdentity(PrivateKey.generate())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_id.client_context(server_id.cert_der).wrap_bio(c_in, c_out)
    server = server_id.server_context(client_id.cert_der).wrap_bio(s_in, s_out, server_side=True)
    # ClientHello; ServerHello .. Finished; the client's Certificate .. Finished, after
    # which the server's tickets wait in its outgoing BIO.
    for tls, out, to in [(client, c_out, s_in), (server, s_out, c_in), (client, c_out, s_in)]:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        to.write(out.read())
    server.do_handshake()
    client_id.close()
    server_id.close()
    return client, c_in, server, s_out


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=16384), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=20),
)
def test_each_record_of_data_is_counted_once_however_the_stream_is_cut(sizes, cuts):
    # The TLS object counts the records OpenSSL decrypts (one per read that gives data),
    # whatever TCP cuts the stream into: a header or a body split across reads, several
    # records in one. The server's tickets (records without data) come first, and an
    # honest stream never counts as records without data (no ControlRecordFlood).
    client, c_in, server, s_out = _handshake_in_memory()
    sent = b""
    for n, size in enumerate(sizes):
        data = bytes([n % 251]) * size
        server.write(data)  # one record each (at most 16 KiB)
        sent += data
    stream = s_out.read()
    got = b""
    at, turn = 0, 0
    while at < len(stream):
        step = cuts[turn % len(cuts)]
        c_in.write(stream[at : at + step])
        at, turn = at + step, turn + 1
        while True:
            try:
                got += client.read(256 * 1024)
            except ssl.SSLWantReadError:
                break
    assert got == sent
    assert record_count(client).records == len(sizes)


def test_the_server_sends_no_session_tickets():
    # OP_NO_TICKET alone only makes TLS 1.3 tickets stateful: the server still sent two
    # after each handshake, records without data for the client (p2p.tls,
    # MAX_CONTROL_BYTES), for sessions that no new context could resume.
    client, c_in, server, s_out = _handshake_in_memory()
    assert s_out.read() == b""


def test_a_tls_bound_exceeded_says_its_message_not_a_tuple():
    # Refusal and misbehaviour lines print the exception: an ssl.SSLError made from one
    # argument printed "('37355 bytes ...',)".
    flood = ControlRecordFlood("5000 bytes of TLS records without data")
    assert str(flood) == "5000 bytes of TLS records without data"
    assert flood.message == str(flood) and flood.code == "tls_control_flood"
    assert str(HandshakeTooLarge("TLS handshake over 16384 bytes")) == (
        "TLS handshake over 16384 bytes"
    )
