"""Whose request one is behind a reverse proxy (``core.netaddr.TrustedProxies``): from a
trusted proxy, the rightmost address of ``X-Forwarded-For`` that is not itself a trusted
proxy; from anyone else, the peer, whatever it sends; the header read from its right end
only, a bounded number of addresses and characters."""

from __future__ import annotations

import pytest

from core.netaddr import (
    MAX_FORWARDED_CHARS,
    MAX_FORWARDED_HOPS,
    MAX_TRUSTED_PROXIES,
    TrustedProxies,
    client_key,
    parse_trusted_proxies,
)

PROXY = ("10.0.0.5", 40_000)
PROXIES = TrustedProxies(["10.0.0.0/24", "192.0.2.1"])


def test_from_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client():
    # What the client sent itself (left of what the proxy appended) is never read.
    assert PROXIES.client(PROXY, ["198.51.100.1, 203.0.113.7"]) == "203.0.113.7"
    assert PROXIES.client(PROXY, ["not an address, 203.0.113.7"]) == "203.0.113.7"
    # Trusted proxies on the way are skipped, whether networks or single addresses.
    assert PROXIES.client(PROXY, ["203.0.113.7, 192.0.2.1,10.0.0.9"]) == "203.0.113.7"
    # Several fields are one list in their order: the last one's last address is rightmost.
    assert PROXIES.client(PROXY, ["198.51.100.1", "203.0.113.7, 10.0.0.9"]) == "203.0.113.7"
    # Keyed as a direct client would be: an IPv6 client's /64, an IPv4-mapped one's IPv4.
    assert PROXIES.client(PROXY, ["2001:db8:1:2::9"]) == client_key(("2001:db8:1:2::1", 1, 0, 0))
    assert PROXIES.client(PROXY, ["::ffff:203.0.113.7"]) == "203.0.113.7"
    # A dual-stack listener sees the proxy as an IPv4-mapped address: trusted alike.
    assert PROXIES.client(("::ffff:10.0.0.5", 1, 0, 0), ["203.0.113.7"]) == "203.0.113.7"


def test_an_untrusted_peers_header_is_never_read():
    # Else any client could name its own key and escape its share.
    assert PROXIES.client(("203.0.113.7", 1), ["198.51.100.1"]) == "203.0.113.7"
    assert PROXIES.client(("10.0.1.5", 1), ["198.51.100.1"]) == "10.0.1.5"
    # No proxies trusted (the default): nobody's header is read.
    assert TrustedProxies().client(PROXY, ["198.51.100.1"]) == "10.0.0.5"
    assert PROXIES.client(None, ["198.51.100.1"]) == "unknown"


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [""],
        ["unknown"],
        ["203.0.113.7:8080"],
        ["[2001:db8::1]"],
        ["203.0.113.7, "],
        ["203.0.113.7, garbage, 10.0.0.9"],
        ["010.0.0.1"],
        # Only trusted proxies: the request came from one of them.
        ["10.0.0.9, 192.0.2.1"],
    ],
)
def test_a_missing_or_malformed_header_leaves_the_proxys_own_address(fields):
    assert PROXIES.client(PROXY, fields) == "10.0.0.5"


def test_only_the_headers_right_end_is_read():
    hops = ["10.0.0.9"] * (MAX_FORWARDED_HOPS - 1)
    assert PROXIES.client(PROXY, [", ".join(["203.0.113.7", *hops])]) == "203.0.113.7"
    # One trusted hop more and the client is past what is read: the proxy's address.
    assert PROXIES.client(PROXY, [", ".join(["203.0.113.7", *hops, "10.0.0.9"])]) == "10.0.0.5"
    # Counted over all fields.
    assert PROXIES.client(PROXY, ["203.0.113.7", *hops, "10.0.0.9"]) == "10.0.0.5"
    # A field of any length costs its last MAX_FORWARDED_CHARS: the proxy's entry is there.
    assert PROXIES.client(PROXY, ["x" * 1_000_000 + ", 203.0.113.7"]) == "203.0.113.7"
    # An item cut by that bound is never read as an address: "001:db8:1:2::1" is one.
    cut = "2001:db8:1:2::1" + " " * (MAX_FORWARDED_CHARS - 24) + ", 10.0.0.9"
    assert len(cut) == MAX_FORWARDED_CHARS + 1
    assert PROXIES.client(PROXY, [cut]) == "10.0.0.5"
    # Nor anything left of the cut, in that field or an earlier one.
    assert PROXIES.client(PROXY, ["203.0.113.7", cut]) == "10.0.0.5"


def test_trusted_proxies_are_addresses_or_networks_and_bounded():
    networks = parse_trusted_proxies(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert [str(n) for n in networks] == ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]
    for bad, why in [
        (["proxy.example"], "not an IP address or network"),
        (["10.0.0.7/24"], "host bits set"),
        (["10.0.0.0/33"], "not an IP address or network"),
        ([7], "IP address or network, got 7"),
        (["10.0.0.1"] * (MAX_TRUSTED_PROXIES + 1), f"at most {MAX_TRUSTED_PROXIES}"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_trusted_proxies(bad)
