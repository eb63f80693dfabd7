"""Ending TCP connections whose clients stopped reading, without leaving their data
to the kernel.

Closing a socket (or aborting its transport) with bytes still queued to send
leaves an orphan in the kernel that keeps those bytes, up to the send buffer's
autotuned size (~4 MB), for as long as the client keeps answering with a zero
window. The process's descriptor and its counts are released, so a client can
repeat this and pin kernel memory without bound: the review measured 144 orphans
holding ~540 MB. ``reset`` sends a RST instead and frees the bytes at once;
``bound_unacked`` has the kernel give up on a connection whose sent bytes stay
unacknowledged (a zero window included) for too long, whatever closes it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

# SO_LINGER on with a zero timeout: close() discards the send queue and sends RST.
_LINGER_RESET = struct.pack("ii", 1, 0)


def _socket(transport: asyncio.BaseTransport) -> Any:
    """The transport's TCP socket while its descriptor is still its own, else None.

    Both loops close the descriptor only after the protocol's ``connection_lost`` and
    mark their wrapper of it closed (``fileno()`` -1) as they do, so a transport gone
    never hands out a number the kernel has since given to another connection or file.
    Its setsockopt then fails: ``OSError`` on asyncio's loop, ``ValueError`` on
    uvloop's, which is why the check is here and not in an ``except``. Closing is not
    gone: a transport closed with bytes unsent keeps its descriptor until they flush,
    which a client that stopped reading never lets happen; that is what ``reset`` is for.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:
        return None
    return sock if sock.family in (socket.AF_INET, socket.AF_INET6) else None


def reset(transport: asyncio.Transport) -> None:
    """Drop the connection at once, unsent bytes and all (RST, no orphan)."""
    sock = _socket(transport)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass  # already gone
    transport.abort()


def bound_unacked(transport: asyncio.BaseTransport, timeout_ms: int) -> None:
    """Let the kernel drop the connection once data it sent stays unacknowledged for
    ``timeout_ms`` (``TCP_USER_TIMEOUT``; Linux only, elsewhere nothing)."""
    sock = _socket(transport)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is not None and option is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, timeout_ms)
        except OSError:
            pass  # already gone


__all__ = ["bound_unacked", "reset"]
