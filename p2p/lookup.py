"""Name lookups of the hosts the node dials: at most one running per peer, each on a
thread of its own.

A peer's host may be a DNS name another member chose (its on-chain address, changed
as often as it likes). A lookup is a blocking ``getaddrinfo`` that cannot be cancelled
once it runs, and the name's server may never answer. Left to the loop (its default
executor, or libuv's four threads under uvloop), lookups restarted at every redial
or address change would pile up there and starve everything else that uses those
threads (HTTP reads, state sync serving, other peers' lookups). Here a peer whose
last lookup still runs gets no new one until it ends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading


class PeerLookups:
    """Resolves dialed hosts to IP addresses, one lookup per peer key at a time."""

    def __init__(self) -> None:
        # Peers whose lookup runs now (touched on the loop's thread only).
        self._running: set[bytes] = set()

    async def resolve(self, peer: bytes, host: str, port: int) -> list[str]:
        """The IP addresses of ``host`` (just ``host`` if it is one), in the resolver's
        order; ``TimeoutError`` if ``peer``'s previous lookup has not ended yet, and the
        lookup's ``OSError`` if it fails."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        if peer in self._running:
            raise TimeoutError(f"the lookup of this peer's previous host is still running ({host})")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[str]] = loop.create_future()
        self._running.add(peer)

        def settle(result: list[str] | OSError) -> None:
            self._running.discard(peer)
            if answer.done():
                return  # the dial gave up (timeout, cancelled)
            if isinstance(result, OSError):
                answer.set_exception(result)
            else:
                answer.set_result(result)

        def look_up() -> None:
            result: list[str] | OSError
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                result = list(dict.fromkeys(str(info[4][0]) for info in infos))
            except OSError as exc:
                result = exc
            try:
                loop.call_soon_threadsafe(settle, result)
            except RuntimeError:
                pass  # the loop closed meanwhile: nobody waits for it

        # A daemon thread: one stuck in a lookup never holds up the process's exit.
        threading.Thread(target=look_up, name=f"p2p-lookup-{host[:40]}", daemon=True).start()
        return await answer
