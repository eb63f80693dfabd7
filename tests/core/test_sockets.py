"""``core.sockets`` on real loopback connections, on both loops (a transport's socket
and when its descriptor closes are each loop's own).

A connection's descriptor number is free again once its transport has closed, and the
next accepted connection takes it: ``reset`` or ``bound_unacked`` called late, on a
transport already gone, must leave that other connection alone (and not raise)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from core.sockets import bound_unacked, reset

pytestmark = pytest.mark.both_loops

_LINGER_OFF = struct.pack("ii", 0, 0)


class _Accepted(asyncio.Protocol):
    """Hands each accepted transport to the test; ``lost`` is done once it closed."""

    def __init__(self, accepted: asyncio.Queue) -> None:
        self.accepted = accepted
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.accepted.put_nowait(self)

    def connection_lost(self, exc) -> None:
        self.lost.set_result(exc)


async def _server() -> tuple[asyncio.Server, asyncio.Queue, int]:
    accepted: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Accepted(accepted), "127.0.0.1", 0)
    return server, accepted, server.sockets[0].getsockname()[1]


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def _read_to_end(sock: socket.socket) -> bytes:
    """All the peer sent until its FIN (a RST raises ConnectionResetError)."""
    loop = asyncio.get_running_loop()
    data = b""
    while chunk := await loop.sock_recv(sock, 65536):
        data += chunk
    return data


async def test_reset_of_a_closed_transport_leaves_the_connection_on_its_old_fd_alone():
    server, accepted, port = await _server()
    loop = asyncio.get_running_loop()
    first_client, second_client = _client(), _client()
    try:
        await loop.sock_connect(first_client, ("127.0.0.1", port))
        first = await accepted.get()
        # Read as the callers do (``bound_unacked`` on every HTTP connection): uvloop
        # keeps this wrapper of the descriptor for the transport's life and after.
        assert first.transport.get_extra_info("socket").fileno() >= 0
        first.transport.abort()
        await first.lost
        # The second client's own socket is open already: the server's accept takes
        # the lowest free number, the one the first connection gave back.
        await loop.sock_connect(second_client, ("127.0.0.1", port))
        second = await accepted.get()
        second_sock = second.transport.get_extra_info("socket")
        # Almost always the first one's old number; not asserted, since another thread
        # of this process may take it first. Either way the late calls below must not
        # raise (uvloop's wrapper raised ValueError) and must leave the second alone.

        # Late: the first connection is gone, its number is the second's.
        reset(first.transport)
        bound_unacked(first.transport, 1234)

        assert second_sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == _LINGER_OFF
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert second_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0
        # Closed as it would be: its bytes and a FIN reach the client, no RST.
        second.transport.write(b"still mine")
        second.transport.close()
        assert await _read_to_end(second_client) == b"still mine"
        await second.lost
    finally:
        first_client.close()
        second_client.close()
        server.close()
        await server.wait_closed()


async def test_reset_of_a_closing_transport_drops_its_unsent_bytes():
    # A transport closed with bytes its client does not take is closing, yet its
    # descriptor is still its own until they flush, which such a client never lets
    # happen: that is the transport ``reset`` is for (apps.commerce.feed resets a feed
    # after closing it), so "closing" must not mean "leave it alone".
    server, accepted, port = await _server()
    loop = asyncio.get_running_loop()
    client = _client()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        conn = await accepted.get()
        conn.transport.write(b"x" * (8 << 20))  # far more than both buffers hold
        conn.transport.close()
        assert conn.transport.is_closing() and conn.transport.get_write_buffer_size() > 0

        reset(conn.transport)

        await conn.lost
        with pytest.raises(ConnectionResetError):
            await _read_to_end(client)
    finally:
        client.close()
        server.close()
        await server.wait_closed()
