"""Per-process fan-out: committed events handed to the channel layer from the event loop.

A write commits on a database thread; its events must reach the channel layer without
making that thread wait on Redis. In a gateway they go to ordered queues drained by
tasks on the process's event loop. Each group hashes to one queue, so a conversation's
events leave in commit order; several queues keep one slow group from holding up the
others. Queues are bounded (`CHAT_FANOUT_QUEUE`): when full, events are dropped, logged
and counted (`chat_fanout_events_dropped_total`; clients repair gaps from the database).

The queues start with the ASGI application (`start`, called by `chatsite.asgi` on the
first request or connection of the process), so a REST send in a process with no socket
is handed off like any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from chatsite import metrics

logger = logging.getLogger(__name__)

SHARDS = 4
Batch = list[tuple[str, dict[str, Any]]]


class Fanout:
    """The queues of one event loop and the tasks that drain them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: Any) -> None:
        self.loop = loop
        self.layer = layer
        size = settings.CHAT_FANOUT_QUEUE
        self.queues: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = [
            asyncio.Queue(size) for _ in range(SHARDS)
        ]
        self.tasks = [loop.create_task(self._drain(q)) for q in self.queues]

    def offer(self, batch: Batch) -> bool:
        """Queue the batch from any thread; False if this loop is gone."""
        if self.loop.is_closed() or not self.loop.is_running():
            return False
        self.loop.call_soon_threadsafe(self._put, batch)
        return True

    def _put(self, batch: Batch) -> None:
        for group, event in batch:
            queue = self.queues[hash(group) % SHARDS]
            try:
                queue.put_nowait((group, event))
            except asyncio.QueueFull:
                metrics.count_dropped("queue_full")
                logger.warning("fan-out queue full; dropped an event to %s", group)

    async def _drain(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        timeout = settings.CHAT_BROADCAST_TIMEOUT
        while True:
            group, event = await queue.get()
            try:
                async with asyncio.timeout(timeout):
                    await self.layer.group_send(group, event)
            except Exception as exc:  # noqa: BLE001 - the write is committed; clients repair
                metrics.count_dropped("publish_failed")
                logger.warning("fan-out to %s failed: %r", group, exc)


_fanout: Fanout | None = None


def start() -> None:
    """Route this process's committed events through the running loop's queues."""
    global _fanout
    layer = get_channel_layer()
    if layer is None:
        return
    loop = asyncio.get_running_loop()
    if _fanout is None or _fanout.loop is not loop or _fanout.layer is not layer:
        _fanout = Fanout(loop, layer)


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class StartFanout:
    """ASGI middleware: start the fan-out with the first request or connection served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        """Make sure the queues run on this loop, then serve (the application's awaitable).

        Called in the server's task, so the loop is running: no coroutine of its own for
        an open socket to hold (`chatsite.metrics.MetricsEndpoint.__call__`).
        """
        if scope["type"] in ("http", "websocket"):
            start()
        return self.app(scope, receive, send)


def offer(layer: Any, batch: Batch) -> bool:
    """Hand `batch` to the running gateway's queues; False where there are none."""
    fanout = _fanout
    if fanout is None or fanout.layer is not layer:
        return False
    return fanout.offer(batch)
