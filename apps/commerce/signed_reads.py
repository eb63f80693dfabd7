"""Signed reads: how a client proves who reads an order, and how the node checks it.

Orders are private to their parties (docs/commerce.md, Privacy), so a read of an
order carries the viewer's Ed25519 public key, the time, the node it is for and a
signature over the method, path with query string, time and that node's key, under
``SignDomain.HTTP_READ`` and the chain id (``sign_read_request``; the CLI signs with
it). The node's routes check it with ``verify_read_request`` and refuse with
``HttpError`` 401; the headers and refusals are documented once here (``SIGNED``,
``SIGNED_READ_REFUSED``).

A signed read is bound to the node it is sent to (its key, ``GET /v1/status``'s
``validator``): whoever sees one (a proxy, a log, a member node that received it) could
otherwise present it to every other node within its window and read the order there.
The node's key, not the request's host: a node cannot tell which of its names a client
used (a replayer sets any ``Host`` it likes), but it knows its own key. A read signed
the old way, for no node, is refused ``unbound_read``; one for another node
``wrong_node``.
"""

from __future__ import annotations

import time
from typing import Any

from apps.routes import Param, Refusal, hex_bytes
from core.codec import pack_raw
from core.errors import HttpError, InvalidSignature
from core.keys import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    PrivateKey,
    SignDomain,
    address_of,
    verify,
)

# Headers of a signed read: the viewer's Ed25519 public key, the time of the
# request (unix ms) and the signature, all in hex / decimal.
KEY_HEADER = "X-LiveLedger-Key"
TIME_HEADER = "X-LiveLedger-Time"
SIGNATURE_HEADER = "X-LiveLedger-Signature"
# The public key of the node the read is for (hex), which the signature covers.
NODE_HEADER = "X-LiveLedger-Node"
# How far a signed read's time may be from the server's clock, either way: a
# captured request can be replayed only this long, and clients may be a little off.
READ_WINDOW_MS = 60_000


def read_request_body(method: str, path_qs: str, time_ms: int, node: bytes) -> bytes:
    """What a signed read signs, under ``SignDomain.HTTP_READ`` and the chain id.

    The domain keeps a signed read from ever passing as a transaction, vote or
    proposal (and the reverse); the chain id from being replayed on another chain;
    the path with its query string from being replayed as another read; the node's
    key from being replayed to another node.
    """
    return pack_raw([method.upper(), path_qs, time_ms, node])


def sign_read_request(
    key: PrivateKey,
    chain_id: str,
    method: str,
    path_qs: str,
    time_ms: int | None = None,
    *,
    node: bytes,
) -> dict[str, str]:
    """The headers that sign ``method path_qs`` (path with its query string) as ``key``,
    for the node whose public key is ``node`` (its status's ``validator``) only."""
    if time_ms is None:
        time_ms = time.time_ns() // 1_000_000
    signature = key.sign(
        SignDomain.HTTP_READ, chain_id, read_request_body(method, path_qs, time_ms, node)
    )
    return {
        KEY_HEADER: key.public_key.hex(),
        TIME_HEADER: str(time_ms),
        NODE_HEADER: node.hex(),
        SIGNATURE_HEADER: signature.hex(),
    }


def verify_read_request(
    chain_id: str,
    method: str,
    path_qs: str,
    headers: Any,
    now_ms: int | None = None,
    *,
    node: bytes,
) -> bytes:
    """The address of the viewer who signed this read for the node whose key is ``node``;
    ``HttpError`` 401 if none did."""
    key_hex, time_text, sig_hex = (
        headers.get(KEY_HEADER),
        headers.get(TIME_HEADER),
        headers.get(SIGNATURE_HEADER),
    )
    if key_hex is None or time_text is None or sig_hex is None:
        raise HttpError(
            401,
            "unauthenticated",
            f"this read is for the order's parties: sign it with the headers {KEY_HEADER}, "
            f"{TIME_HEADER} and {SIGNATURE_HEADER}",
        )
    try:
        public_key, signature = bytes.fromhex(key_hex), bytes.fromhex(sig_hex)
    except ValueError:
        raise HttpError(401, "bad_signature", "key and signature must be hex") from None
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise HttpError(
            401,
            "bad_signature",
            f"expected a {PUBLIC_KEY_SIZE}-byte key and a {SIGNATURE_SIZE}-byte signature, "
            f"got {len(public_key)} and {len(signature)}",
        )
    node_hex = headers.get(NODE_HEADER)
    # Unbound (the old signed read): a replay of it to any node would pass.
    if node_hex is None:
        raise HttpError(
            401,
            "unbound_read",
            f"sign the read for this node: {NODE_HEADER} {node.hex()} (its status's "
            "validator key), which the signature covers; a read signed for no node is "
            "refused, as anyone who saw it could replay it to every node",
        )
    # Signed for another node: a replay, or a client that asked one node and sent to another.
    if node_hex.lower() != node.hex():
        raise HttpError(
            401,
            "wrong_node",
            f"the read is signed for node {node_hex[: 2 * PUBLIC_KEY_SIZE]!r}, "
            f"this node is {node.hex()}",
        )
    if not (time_text.isascii() and time_text.isdigit()) or len(time_text) > 16:
        raise HttpError(401, "bad_signature", f"{TIME_HEADER} must be unix milliseconds")
    signed_ms = int(time_text)
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    # A stale (or far future) request is refused: it bounds how long a captured one works.
    if abs(now_ms - signed_ms) > READ_WINDOW_MS:
        raise HttpError(
            401,
            "stale_request",
            f"request signed at {signed_ms} ms, server time is {now_ms} ms; "
            f"at most {READ_WINDOW_MS} ms apart",
        )
    body = read_request_body(method, path_qs, signed_ms, node)
    try:
        verify(public_key, SignDomain.HTTP_READ, chain_id, body, signature)
    except InvalidSignature:
        raise HttpError(401, "bad_signature", "signature does not verify") from None
    return address_of(public_key)


# --- what the routes document ---

_SIGNING = (
    f"Order reads are signed by the viewer's Ed25519 account key: `{KEY_HEADER}`, "
    f"`{TIME_HEADER}`, `{NODE_HEADER}` and `{SIGNATURE_HEADER}` carry the public key, "
    "the time (unix ms), the key of the node the read is for (`validator` in "
    "`GET /v1/status`) and the signature over `0xF0 || len(chain_id) || chain_id || "
    "msgpack([method, path_with_query, time_ms, node_key])` "
    "(`apps.commerce.http.sign_read_request`). A time more "
    f"than {READ_WINDOW_MS // 1000} s from the server's clock is refused, and so is a "
    "read signed for another node (`wrong_node`: a signed read cannot be replayed to "
    "another node) or for none (`unbound_read`, the old form)."
)
# The headers of a signed read (``verify_read_request``), documented once for every route.
SIGNED = (
    Param(
        KEY_HEADER,
        "header",
        hex_bytes(32),
        f"The viewer's Ed25519 public key, hex. {_SIGNING}",
        component="ReadKey",
    ),
    Param(
        TIME_HEADER,
        "header",
        {"type": "string", "pattern": "^[0-9]{1,16}$"},
        "The time of the request, unix ms (decimal).",
        component="ReadTime",
    ),
    Param(
        NODE_HEADER,
        "header",
        hex_bytes(32),
        "The public key of the node the read is for (`validator` in `GET /v1/status`), "
        "hex; signed.",
        component="ReadNode",
    ),
    Param(
        SIGNATURE_HEADER,
        "header",
        hex_bytes(64),
        "The Ed25519 signature of the read, hex.",
        component="ReadSignature",
    ),
)
SIGNED_READ_REFUSED = Refusal(
    401,
    "The signed read is refused: headers missing, signature malformed or not "
    f"verifying, a time more than {READ_WINDOW_MS // 1000} s off, or signed for "
    "another node (`wrong_node`) or for none (`unbound_read`).",
    "unauthenticated",
    "bad_signature",
    "stale_request",
    "unbound_read",
    "wrong_node",
)


__all__ = [
    "KEY_HEADER",
    "NODE_HEADER",
    "READ_WINDOW_MS",
    "SIGNATURE_HEADER",
    "SIGNED",
    "SIGNED_READ_REFUSED",
    "TIME_HEADER",
    "read_request_body",
    "sign_read_request",
    "verify_read_request",
]
