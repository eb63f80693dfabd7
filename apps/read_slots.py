"""Reads HTTP clients ask for, in threads of their own: a bounded number at once, a
bounded number waiting, a share of both per client address, and the waiting ones taken
by address in turn.

Python's default executor (``min(32, cores + 4)`` threads: 6 on two cores) also runs
the node's own reads: the feed hub's live blocks, state sync served to peers, epoch
records checked, simulations. A read a client asks for once went there too, so one
address's 256 connections asking for full pages or big blocks lined up hundreds of jobs
ahead of all of it. A ``ReadSlots`` runs its reads in its own ``slots`` threads (so a
client's reads never queue ahead of the node's), lets ``queue`` more wait, and lets one
client address (``core.netaddr.client_key``) hold at most a quarter of both, running
and waiting: past either, the read is refused with 503 ``busy`` and ``Retry-After``
(``apps.routes.retry_later``), and ``on_refused`` is told which bound refused it (the
node counts it in ``liveledger_http_refused_total``). When a thread frees, the next
read goes to the next address in turn, not to the oldest waiter: an address waits
behind at most one read of each other address, however many it queued.

A slot is held until its thread's work ends, not until its caller stops waiting: a
client that asks and hangs up frees nothing early, so it cannot pile work behind the
threads.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from apps.routes import retry_later

T = TypeVar("T")


class ReadSlots:
    """``slots`` reads at once in ``slots`` threads of its own, ``queue`` more waiting
    (None: no bound, for callers bounded elsewhere), a quarter of ``slots + queue`` per
    client address; used from one event loop."""

    def __init__(
        self,
        name: str,
        slots: int,
        queue: int | None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.slots = slots
        self.queue = queue
        self.per_client = None if queue is None else max(1, (slots + queue) // 4)
        # Called with "total" (the queue was full) or "per_address" (the client's share
        # was) for each read refused; never for one taken.
        self.on_refused = on_refused
        self.running = 0
        self.waiting = 0
        # Reads running or waiting, by client.
        self._held: dict[str, int] = {}
        # Waiting reads by client, the clients in their turn's order.
        self._turns: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._executor = ThreadPoolExecutor(slots, thread_name_prefix=name)

    def held(self, client: str) -> int:
        """Reads of ``client`` running or waiting."""
        return self._held.get(client, 0)

    def _refused(self, client: str) -> tuple[str, str] | None:
        """(the bound, why) a read of ``client`` would be refused for now, if it would."""
        if self.queue is None or self.running < self.slots and not self.waiting:
            return None
        if self.waiting >= self.queue:
            return "total", f"{self.slots} {self.name} reads run and {self.queue} wait"
        assert self.per_client is not None
        if self.held(client) >= self.per_client:
            return (
                "per_address",
                f"one address may hold {self.per_client} {self.name} reads at once",
            )
        return None

    async def run(self, client: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in one of the threads once it is ``client``'s turn; 503 ``busy``
        when the queue or the client's share is full."""
        refused = self._refused(client)
        if refused is not None:
            if self.on_refused is not None:
                self.on_refused(refused[0])
            raise retry_later("busy", f"{refused[1]}; retry later")
        self._held[client] = self.held(client) + 1
        try:
            if self.running < self.slots and not self.waiting:
                self.running += 1
            else:
                await self._wait_turn(client)
        except BaseException:
            self._let_go(client)
            raise
        # The slot is this read's until its thread is done, whoever still waits for it.
        try:
            work = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except BaseException:
            self._done(client)
            raise
        work.add_done_callback(lambda done: self._ended(client, done))
        return await asyncio.shield(work)

    def _ended(self, client: str, work: asyncio.Future[Any]) -> None:
        if not work.cancelled():
            # Retrieved here too: a caller that went away leaves no "never retrieved" log.
            work.exception()
        self._done(client)

    async def _wait_turn(self, client: str) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._turns.get(client)
        if waiters is None:
            waiters = self._turns[client] = deque()
        waiters.append(turn)
        self.waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                # Given the slot as its caller went away: the next in turn takes it.
                self._pass_on()
            elif turn in waiters:
                waiters.remove(turn)
                self.waiting -= 1
                if not waiters and self._turns.get(client) is waiters:
                    del self._turns[client]
            raise

    def _done(self, client: str) -> None:
        self._let_go(client)
        self._pass_on()

    def _let_go(self, client: str) -> None:
        left = self._held[client] - 1
        if left:
            self._held[client] = left
        else:
            del self._held[client]

    def _pass_on(self) -> None:
        """A slot is free: the first waiter of the next address in turn takes it."""
        while self._turns:
            client, waiters = next(iter(self._turns.items()))
            turn = waiters.popleft()
            self.waiting -= 1
            if waiters:
                self._turns.move_to_end(client)
            else:
                del self._turns[client]
            # A waiter cancelled a moment ago is still queued: skipped.
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1

    def close(self) -> None:
        """Stop the threads once their reads end; queued work is dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["ReadSlots"]
