"""A socket's queue and flag: what `asyncio.Queue` and `asyncio.Event` do, in less memory.

Every socket of a gateway holds two queues (uvicorn's frames from the client, the
channel layer's events for it) and a flag (the transport has room for a send). As
`asyncio.Queue` and `asyncio.Event` they cost about 3.7 KB and 1 KB: each holds three
(the queue) or one (the event) `collections.deque` of 760 bytes, and a queue has an
event of its own for `join()`: with 10,000 idle sockets, about 84 MB of empty queues
and events (70 MB less RSS measured once replaced, docs/performance.md).
`Inbox` and `Flag` keep their items and waiters in lists made when first needed, and
have no `join()`. Both are for one event loop, as their asyncio counterparts are.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def _new_waiter(
    waiters: list[asyncio.Future[None]] | None,
) -> tuple[list[asyncio.Future[None]], asyncio.Future[None]]:
    """Return `waiters` (made if None) with a new future of the running loop at its end."""
    waiters = [] if waiters is None else waiters
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    return waiters, waiter


def _wake_one(waiters: list[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


class Inbox:
    """A first-in first-out queue: `put_nowait`, `get`, `get_nowait`, `qsize`, `empty`, `full`.

    `maxsize` > 0 bounds `full()`; what happens to a put on a full inbox is the caller's
    (a subclass) choice: `put_nowait` here never refuses.
    """

    __slots__ = ("_items", "_waiters", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] | None = None
        self.maxsize = maxsize

    def qsize(self) -> int:
        """Return how many items wait."""
        return len(self._items)

    def empty(self) -> bool:
        """Answer whether no item waits."""
        return not self._items

    def full(self) -> bool:
        """Answer whether `maxsize` items (or more) wait."""
        return 0 < self.maxsize <= len(self._items)

    def put_nowait(self, item: Any) -> None:
        """Add an item at the end, and wake a getter."""
        self._items.append(item)
        if self._waiters:
            _wake_one(self._waiters)

    def get_nowait(self) -> Any:
        """Remove and return the first item; raise `asyncio.QueueEmpty` if there is none."""
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> Any:
        """Remove and return the first item, waiting for one if there is none."""
        while not self._items:
            self._waiters, waiter = _new_waiter(self._waiters)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if self._items and not waiter.cancelled():
                    _wake_one(self._waiters)  # woken, then cancelled: wake the next
                raise
        return self._items.pop(0)


class Flag:
    """A flag tasks can wait for: `set`, `clear`, `is_set`, `wait`."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Answer whether the flag is set."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Clear the flag: `wait` blocks until the next `set`."""
        self._set = False

    async def wait(self) -> bool:
        """Return at once if set, else when the flag is next set."""
        if self._set:
            return True
        self._waiters, waiter = _new_waiter(self._waiters)
        try:
            await waiter
        finally:
            if self._waiters is not None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return True
