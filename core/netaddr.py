"""Network addresses other nodes dial: ``"host:port"`` text, parsed strictly.

One spelling per address (DNS name or IPv4, IPv6 in brackets; the port in decimal
without leading zeros), ASCII only, bounded. Genesis validators and members' on-chain
addresses (``set_member_address``) both use it, so a node dials what they say.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from core.errors import Invalid

# A DNS name is at most 253 characters; "[v6]:65535" fits well below this.
MAX_NET_ADDRESS = 261
_NET_ADDRESS = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r":(?P<port>[1-9][0-9]{0,4})"
)


class InvalidNetAddress(Invalid):
    """Text that is not a ``host:port`` another node can dial."""

    code = "invalid_address"


def parse_net_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"``) as (host, port); ``InvalidNetAddress`` naming the fault."""
    # The pattern is ASCII only, so a lookalike character never matches.
    match = _NET_ADDRESS.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidNetAddress(f"network address must be host:port, got {str(text)[:80]!r}")
    host, port = match["host"], int(match["port"])
    # A TCP port is 16 bits; 0 is not one a peer can dial.
    if not 1 <= port <= 65535:
        raise InvalidNetAddress(f"port must be in 1..65535, got {port} in {text!r}")
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidNetAddress(f"not an IPv6 address in brackets: {text!r}") from None
    elif not host.rsplit(".", 1)[-1][:1].isalpha():
        # Not a name (a top-level label starts with a letter), so it must be an IPv4
        # address in its one dotted-decimal spelling: the resolver also reads "0",
        # "0177.0.0.1" or "0x7f000001" as addresses (inet_aton), which would let
        # "0:1234" stand for 0.0.0.0 past the listen-on-all check.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidNetAddress(
                f"{host!r} is neither a DNS name nor an IPv4 address in dotted decimal"
            ) from None
    return host, port


def format_net_address(host: str, port: int) -> str:
    """The one spelling of (host, port): IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_dialable(text: str) -> tuple[str, int]:
    """A network address other nodes can dial: not the unspecified 0.0.0.0 or ::."""
    host, port = parse_net_address(text)
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False  # a DNS name
    # Listening on every interface is fine; telling peers to dial "any" is not.
    if unspecified:
        raise InvalidNetAddress(f"{text!r} is a listen-on-all address, not one peers can dial")
    return host, port


def source_of(host: str) -> str:
    """Whose connection this is, for per-source caps and rates (p2p handshakes, HTTP
    connections and bodies, feeds): an IPv4 address, or an IPv6 address's /64 (what
    one subscriber usually holds); an IPv4-mapped IPv6 address is its IPv4 address."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_key(peername: Any) -> str:
    """``source_of`` a socket's ``peername`` (host, port, ...); "unknown" without one."""
    host = peername[0] if isinstance(peername, tuple) and peername else None
    return source_of(host) if isinstance(host, str) else "unknown"
