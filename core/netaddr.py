"""Network addresses other nodes dial: ``"host:port"`` text, parsed strictly; and
whose connection or request one is, for per-source bounds (``source_of``,
``client_key``, ``TrustedProxies`` for clients behind a reverse proxy).

One spelling per address (DNS name or IPv4, IPv6 in brackets; the port in decimal
without leading zeros), ASCII only, bounded. Genesis validators and members' on-chain
addresses (``set_member_address``) both use it, so a node dials what they say.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import Any, TypeAlias

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


def endpoint_key(text: str) -> str:
    """What every spelling of the endpoint ``text`` (a ``parse_net_address`` address)
    shares: DNS names ignore case (RFC 4343) and an IPv6 address has many spellings.
    For finding duplicates only; an address is kept and hashed as written."""
    host, port = parse_net_address(text)
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        host = host.lower()
    return format_net_address(host, port)


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


# Every request with a body asks it of its client's address (``node.bodies``): parsing
# costs 2.7 µs for an IPv4 address and 16 for an IPv6 one, a hit a tenth of a
# microsecond. Bounded, so addresses a client makes up only churn it.
@functools.lru_cache(maxsize=4096)
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


# --- clients behind a reverse proxy ---

IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
# Networks an operator may list as trusted proxies: each request from one is matched
# against all of them.
MAX_TRUSTED_PROXIES = 64
# Addresses of ``X-Forwarded-For`` read, from the right, and characters of each field:
# a client may send a header as long as the HTTP parser takes, but the addresses a
# trusted proxy appended are at its right end, so only that end is read.
MAX_FORWARDED_HOPS = 16
MAX_FORWARDED_CHARS = 1024


def parse_trusted_proxies(texts: Sequence[str]) -> tuple[IpNetwork, ...]:
    """``http.trusted_proxies``: IP addresses (``10.0.0.7``) or networks (``10.0.0.0/24``),
    at most ``MAX_TRUSTED_PROXIES``; ``ValueError`` naming the first one that is not.
    A network with host bits set is refused (``10.0.0.7/24`` is a typo of either)."""
    if len(texts) > MAX_TRUSTED_PROXIES:
        raise ValueError(f"at most {MAX_TRUSTED_PROXIES} trusted proxies, got {len(texts)}")
    networks = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"a trusted proxy is an IP address or network, got {text!r}")
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"not an IP address or network: {text[:80]!r} ({exc})") from None
    return tuple(networks)


def _unmapped(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address as its IPv4 address (a dual-stack socket's peer)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` names the client (the node config's
    ``http.trusted_proxies``), and the client key of a request (``client``).

    From a trusted peer, the client is the rightmost address of ``X-Forwarded-For`` that
    is not itself a trusted proxy: each proxy appends the address it was connected from,
    so everything left of that is what the client sent and may be forged. A header that
    is missing, malformed where it is read, or holds only trusted proxies within its
    last ``MAX_FORWARDED_HOPS`` addresses leaves the peer's own address. An untrusted
    peer's header is never read: any client could otherwise pick its own key.
    """

    __slots__ = ("networks",)

    def __init__(self, texts: Sequence[str] = ()) -> None:
        self.networks = parse_trusted_proxies(texts)

    def trusts(self, address: IpAddress) -> bool:
        address = _unmapped(address)
        return any(address in network for network in self.networks)

    def client(self, peername: Any, forwarded: Sequence[str]) -> str:
        """The client key (``source_of``) of a request from socket peer ``peername``
        carrying the ``X-Forwarded-For`` fields ``forwarded``, in their order."""
        host = peername[0] if isinstance(peername, tuple) and peername else None
        if not self.networks or not forwarded or not isinstance(host, str):
            return client_key(peername)
        try:
            peer = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return client_key(peername)
        if not self.trusts(peer):
            return client_key(peername)
        address = self._forwarded_client(forwarded)
        return client_key(peername) if address is None else source_of(str(address))

    def _forwarded_client(self, forwarded: Sequence[str]) -> IpAddress | None:
        """The rightmost untrusted address of the header's last ``MAX_FORWARDED_HOPS``
        (None: none there, or a malformed item reached first)."""
        hops = 0
        for field in reversed(forwarded):
            items = field[-MAX_FORWARDED_CHARS:].split(",")
            if len(field) > MAX_FORWARDED_CHARS:
                items = items[1:]  # the first may be cut: never read as an address
            for item in reversed(items):
                hops += 1
                if hops > MAX_FORWARDED_HOPS:
                    return None
                try:
                    address = _unmapped(ipaddress.ip_address(item.strip()))
                except ValueError:
                    return None
                if not self.trusts(address):
                    return address
            if len(field) > MAX_FORWARDED_CHARS:
                return None  # the rest of the field was not read
        return None
