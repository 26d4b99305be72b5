"""One connection of the client: the session and what travels over it.

A `Session` exists from a connection's `session.ready` until it is lost: the socket, the
background tasks that live as long as it does (catch-ups, heartbeat, periodic sync,
outbox pump), and the limit on fetches in flight. `Pending` is a request waiting for its
reply frame. The helpers decode frames and read close codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

logger = logging.getLogger(__name__)

# Frames in and out with orjson where it is installed: a ninth to a third of the json
# module's CPU per frame. The client needs only the standard library and websockets.
_ORJSON: bool
try:
    import orjson
except ImportError:  # pragma: no cover - the tests run with orjson installed
    _ORJSON = False
else:
    _ORJSON = True

Frame = dict[str, Any]

CATCH_UP_CONCURRENCY = 4  # fetches in flight at once per connection


@dataclass
class Pending:
    """A request waiting for its reply frame."""

    reply: str  # the reply frame type
    future: asyncio.Future[Frame]
    on_reply: Callable[[Frame], None] | None = None
    # Accept a reply of this type that carries no ref (the oldest such request wins).
    match_without_ref: bool = True
    conversation: int | None = None


class Session:
    """One connection after its `session.ready`: the socket and its background tasks."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.last_frame_at = time.monotonic()  # when the last frame arrived (any frame)
        self.tasks: set[asyncio.Task[None]] = set()
        self.catch_ups: dict[int, asyncio.Task[None]] = {}
        self.fetch_slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `coro` for as long as this connection lives."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def send(self, frame: Mapping[str, Any]) -> None:
        """Send one JSON frame (raises ConnectionClosed if the socket is gone)."""
        if _ORJSON:  # the same text frame; keys that are not strings become strings
            await self.ws.send(orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS), text=True)
        else:
            await self.ws.send(json.dumps(frame))

    async def stop(self) -> None:
        """Cancel the background tasks and wait for them to end."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def parse_frame(raw: str | bytes) -> Frame | None:
    """Decode one server frame; None (and a log line) if it is not a JSON object."""
    if isinstance(raw, bytes):
        logger.warning("binary frame from the server ignored")
        return None
    try:
        frame = orjson.loads(raw) if _ORJSON else json.loads(raw)
    except ValueError:  # orjson.JSONDecodeError is one too
        logger.warning("frame that is not JSON ignored: %.200r", raw)
        return None
    if not isinstance(frame, dict):
        logger.warning("frame that is not an object ignored: %.200r", raw)
        return None
    return frame


def close_code(exc: ConnectionClosed) -> int:
    """Return the close code the server sent, or 1006 when the connection just died."""
    return exc.rcvd.code if exc.rcvd is not None else 1006


def safe_url(url: str) -> str:
    """Return `url` without its query string (a `?ticket=` must never reach a log)."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(query=""))


async def wait_all(tasks: Iterable[asyncio.Task[None] | None]) -> None:
    """Wait for tasks to end without taking on their cancellation or errors."""
    pending = {t for t in tasks if t is not None}
    if pending:
        await asyncio.wait(pending)
