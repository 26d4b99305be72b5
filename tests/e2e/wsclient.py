"""Raw protocol sockets for end-to-end tests: await frames by predicate, close them all."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import connection
from websockets.asyncio.client import ClientConnection, connect

from accounts.models import User
from accounts.tokens import issue_pair
from tests.wirecheck import check_frame


class Socket:
    """A raw protocol connection with helpers to await frames by predicate."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(frame)
        return check_frame(frame)

    async def until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - time.monotonic()))
            if match(frame):
                return frame

    async def request(self, timeout: float = 10.0, **frame: Any) -> dict[str, Any]:
        ref = uuid.uuid4().hex[:12]
        await self.send(ref=ref, **frame)
        return await self.until(lambda f: f.get("ref") == ref, timeout)

    async def quiet(self) -> list[dict[str, Any]]:
        """Return the frames that arrive before the answer to a ping (nothing else pending)."""
        ref = uuid.uuid4().hex[:12]
        await self.send(type="ping", ref=ref)
        before: list[dict[str, Any]] = []
        while True:
            frame = await self.next()
            if frame.get("ref") == ref:
                return before
            before.append(frame)


_open: list[Socket] = []


def drive(scenario: Callable[[], Any]) -> None:
    """Run an async scenario; close every socket it opened, whatever happens."""

    async def main() -> None:
        try:
            await scenario()
        finally:
            for socket in _open:
                await socket.ws.close()
            _open.clear()

    asyncio.run(main())


async def in_thread(func: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a service call in a worker thread that closes its database connection after."""

    def run() -> Any:
        try:
            return func(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def bearer(user: User) -> str:
    """Mint an access token (outside the event loop: it writes to the database)."""
    return issue_pair(user)["access"]


async def open_socket(
    url: str, access: str, device: str | None = None
) -> tuple[Socket, dict[str, Any]]:
    target = f"{url}?device={device}" if device else url
    ws = await connect(target, additional_headers={"Authorization": f"Bearer {access}"})
    socket = Socket(ws)
    _open.append(socket)
    ready = await socket.next()
    assert ready["type"] == "session.ready"
    return socket, ready
