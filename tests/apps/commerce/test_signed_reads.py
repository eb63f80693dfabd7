"""``verify_read_request``: the headers of a signed order read, each malformed way refused
with 401 and its code before any signature work, and the signature bound to its read."""

from __future__ import annotations

import pytest

from apps.commerce.signed_reads import (
    KEY_HEADER,
    NODE_HEADER,
    READ_WINDOW_MS,
    SIGNATURE_HEADER,
    TIME_HEADER,
    sign_read_request,
    verify_read_request,
)
from core import HttpError, PrivateKey, SignDomain, address_of
from core.codec import pack_raw

CHAIN = "reads-test"
KEY = PrivateKey(b"\x05" * 32)
NOW = 1_700_000_000_000
PATH = "/v1/orders/7?x=1"
# The node that verifies, and another member's node.
NODE = PrivateKey(b"\x07" * 32).public_key
OTHER_NODE = PrivateKey(b"\x08" * 32).public_key


def _refused(headers: dict[str, str], code: str, *, path: str = PATH, method: str = "GET"):
    with pytest.raises(HttpError) as refused:
        verify_read_request(CHAIN, method, path, headers, now_ms=NOW, node=NODE)
    assert (refused.value.status, refused.value.code) == (401, code)
    return refused.value


def test_a_signed_read_names_its_signer():
    headers = sign_read_request(KEY, CHAIN, "GET", PATH, NOW - READ_WINDOW_MS, node=NODE)
    assert verify_read_request(CHAIN, "GET", PATH, headers, now_ms=NOW, node=NODE) == address_of(
        KEY.public_key
    )
    # The method is signed in upper case, whichever case the route hands over.
    assert verify_read_request(CHAIN, "get", PATH, headers, now_ms=NOW, node=NODE)


@pytest.mark.parametrize("missing", [KEY_HEADER, TIME_HEADER, SIGNATURE_HEADER])
def test_each_header_is_required(missing):
    headers = sign_read_request(KEY, CHAIN, "GET", PATH, NOW, node=NODE)
    del headers[missing]
    _refused(headers, "unauthenticated")


@pytest.mark.parametrize(
    ("header", "value", "says"),
    [
        (KEY_HEADER, "zz" * 32, "must be hex"),
        (SIGNATURE_HEADER, "0x" + "00" * 63, "must be hex"),
        (KEY_HEADER, "00" * 31, "32-byte key"),
        (SIGNATURE_HEADER, "00" * 65, "64-byte signature"),
        (TIME_HEADER, "+1700000000000", "unix milliseconds"),
        (TIME_HEADER, "-1", "unix milliseconds"),
        (TIME_HEADER, "١٧٠٠٠٠٠٠٠٠٠٠٠", "unix milliseconds"),  # digits, but not ASCII ones
        (TIME_HEADER, "1" * 17, "unix milliseconds"),
    ],
)
def test_malformed_headers_are_refused_before_the_signature(header, value, says):
    headers = sign_read_request(KEY, CHAIN, "GET", PATH, NOW, node=NODE)
    headers[header] = value
    assert says in _refused(headers, "bad_signature").message


def test_a_read_is_good_for_its_window_either_way_and_no_longer():
    for signed in (NOW - READ_WINDOW_MS - 1, NOW + READ_WINDOW_MS + 1):
        _refused(sign_read_request(KEY, CHAIN, "GET", PATH, signed, node=NODE), "stale_request")
    for signed in (NOW - READ_WINDOW_MS, NOW + READ_WINDOW_MS):
        headers = sign_read_request(KEY, CHAIN, "GET", PATH, signed, node=NODE)
        verify_read_request(CHAIN, "GET", PATH, headers, now_ms=NOW, node=NODE)


def test_a_signature_holds_only_for_its_read():
    headers = sign_read_request(KEY, CHAIN, "GET", PATH, NOW, node=NODE)
    _refused(headers, "bad_signature", path="/v1/orders/7")  # the query string is signed
    _refused(headers, "bad_signature", path="/v1/orders/8?x=1")
    _refused(headers, "bad_signature", method="POST")
    with pytest.raises(HttpError, match="does not verify"):
        verify_read_request("another-chain", "GET", PATH, headers, now_ms=NOW, node=NODE)
    # Another key's name on this signature.
    forged = {**headers, KEY_HEADER: PrivateKey(b"\x06" * 32).public_key.hex()}
    _refused(forged, "bad_signature")
    # The time is signed too.
    _refused({**headers, TIME_HEADER: str(NOW + 1)}, "bad_signature")


def test_a_read_signed_for_one_node_is_refused_by_another():
    """Whoever sees a signed read (a proxy, a log, a member node it was sent to) cannot
    present it to another node within its window: the node's key is signed."""
    headers = sign_read_request(KEY, CHAIN, "GET", PATH, NOW, node=OTHER_NODE)
    refused = _refused(headers, "wrong_node")
    assert OTHER_NODE.hex() in refused.message and NODE.hex() in refused.message
    # Naming this node on it does not help: the signature covers the node it was for.
    _refused({**headers, NODE_HEADER: NODE.hex()}, "bad_signature")
    assert verify_read_request(CHAIN, "GET", PATH, headers, now_ms=NOW, node=OTHER_NODE)


def test_a_read_signed_for_no_node_is_refused_with_its_own_code():
    """The old signed read (``[method, path, time]``, no node) is refused ``unbound_read``,
    which names the header and this node's key, not as a signature that does not verify."""
    old = KEY.sign(SignDomain.HTTP_READ, CHAIN, pack_raw(["GET", PATH, NOW]))
    headers = {KEY_HEADER: KEY.public_key.hex(), TIME_HEADER: str(NOW), SIGNATURE_HEADER: old.hex()}
    refused = _refused(headers, "unbound_read")
    assert NODE_HEADER in refused.message and NODE.hex() in refused.message
    # Nor does it pass with the node named after the fact.
    _refused({**headers, NODE_HEADER: NODE.hex()}, "bad_signature")
