"""The gateway's WebSocket protocol for uvicorn: the sans-I/O implementation, flow-controlled.

Gateways run `--ws chatsite.gateway:FlowControlledWebSocket`. It is uvicorn's
`websockets-sansio` implementation, which holds a socket in one protocol object, one
queue and the application's task. uvicorn's `--ws websockets` (the legacy `websockets`
server) adds per socket a reader task, a keepalive task, a close task and their futures
and queues, and wakes three of them for every frame: more memory for an idle socket and
more CPU for each heartbeat.

The sans-I/O implementation never makes a send wait, though: a client that stops
reading would grow the gateway's buffer without bound, and the gateway would not
notice (the 4429 close, `WS_SEND_TIMEOUT`, is a send that waited too long). This class
adds what is missing:

- flow control: a send waits while the transport's buffer is over its high-water mark
  (asyncio's `pause_writing`/`resume_writing`), as the legacy server's drain did;
- a close does not wait: its frame is queued behind what the client has not read, so a
  client that reads again sees everything and then the code; a connection still open
  `CLOSE_TIMEOUT` seconds after the close is aborted;
- a send after the connection was lost raises `ClientDisconnected` (as the legacy
  server does) instead of writing into a closed transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# Seconds a closed connection may take to hand its last bytes to the client (the legacy
# server's close timeout).
CLOSE_TIMEOUT = 10.0


class FlowControlledWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol whose sends wait for a client that reads."""

    _abort_timer: asyncio.TimerHandle | None = None
    _lost = False

    def pause_writing(self) -> None:
        """Make sends wait: the transport's buffer passed its high-water mark."""
        self.writable.clear()

    def resume_writing(self) -> None:
        """Let sends go on: the buffer fell under its low-water mark."""
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """Let a send that waits for room learn that the client is gone."""
        self._lost = True
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)
        self.writable.set()

    async def send(self, message: Any) -> None:
        """Send as uvicorn does, but wait for room first and never write after a loss."""
        if message["type"] == "websocket.close" and self._open():
            self._close(message.get("code", 1000), message.get("reason", "") or "")
            return
        await self.writable.wait()
        if message["type"] == "websocket.send" and self._lost:
            raise ClientDisconnected()
        await super().send(message)

    def _open(self) -> bool:
        """Answer whether the handshake is done and neither side has closed."""
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.transport.is_closing()
        )

    def _close(self, code: int, reason: str) -> None:
        """Queue the close frame behind what is unread, close, and abort if it hangs."""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
        if not self._lost:
            self._abort_timer = self.loop.call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self._lost:
            self.transport.abort()
