"""A gateway's presence heartbeat writes, gathered: one round trip per shard per window.

Any frame is a heartbeat, and a socket writes one at most every 1.2 heartbeat intervals
(`PRESENCE_WRITE_INTERVAL`): every other ping. Written one by one, that was a Redis
pipeline per socket per write: at 10,000 idle sockets (when it was every half
heartbeat) 400 round trips a second, the largest part of the gateways' idle CPU. Queued
here for `PRESENCE_WRITE_WINDOW` seconds, they go out as one script call per shard
(`PresenceStore.beat_many`). A beat a little late changes nothing: a connection stays
live for three heartbeats after its last written beat.

Two orderings are kept:
- A queued beat reads the connection's idle flag when it is written, not when it was
  queued, so it never puts back a flag that `activity` has since changed.
- A closing connection `forget`s its queued beat and waits for a write of it already
  under way, so no beat lands after the close removed the connection (which would show
  the user online for the live window after they left).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable

from django.conf import settings

from presence.state import Beat
from presence.store import get_store

logger = logging.getLogger(__name__)


class BeatBatch:
    """The heartbeats one process has queued, and the writes it has under way."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        # connection -> (user, read the connection's idle flag)
        self.pending: dict[str, tuple[int, Callable[[], bool]]] = {}
        self.writing: dict[asyncio.Task[None], frozenset[str]] = {}

    def queue(self, user_id: int, connection: str, idle: Callable[[], bool]) -> None:
        """Queue a heartbeat of `connection`; it is written within the window."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.pending, self.writing = loop, {}, {}
        if not self.pending:
            # In a context of its own: the write must not inherit the first caller's.
            loop.call_later(
                settings.PRESENCE_WRITE_WINDOW, self._flush, loop, context=contextvars.Context()
            )
        self.pending[connection] = (user_id, idle)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop or not self.pending:
            return
        batch, self.pending = self.pending, {}
        now = time.time()
        beats = [(user_id, name, Beat(now, idle())) for name, (user_id, idle) in batch.items()]
        task = loop.create_task(self._write(beats))
        self.writing[task] = frozenset(batch)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self.writing.pop(task, None)

    async def _write(self, beats: list[tuple[int, str, Beat]]) -> None:
        try:
            await get_store().beat_many(beats)
        except Exception as exc:  # noqa: BLE001 - presence is a hint; the next beat repairs it
            logger.warning("%d presence heartbeats not written: %r", len(beats), exc)

    async def forget(self, connection: str) -> None:
        """Drop `connection`'s queued beat; return once no write of it is under way."""
        if self.loop is not asyncio.get_running_loop():
            return
        self.pending.pop(connection, None)
        for task, names in list(self.writing.items()):
            if connection in names:
                # Shielded: a cancelled close must not cancel the others' beats.
                await asyncio.shield(task)


beats = BeatBatch()
