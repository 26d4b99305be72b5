"""The gateway's HTTP protocol for uvicorn: h11 plus a deadline for the first request.

uvicorn waits forever for a connection's first request, so 500 sockets that connect and
send nothing (or half a request) would hold file descriptors for good (RELIABILITY.md
S8). Gateways run `--http chatsite.gateway:H11WithHandshakeDeadline`: a connection with
no complete request after `GATEWAY_HANDSHAKE_TIMEOUT` seconds (default 10) is closed.
Once a request arrived, uvicorn's own keep-alive timeout applies; once upgraded, the
WebSocket protocol's heartbeat rules do.
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.h11_impl import H11Protocol


def handshake_timeout() -> float:
    """Return the seconds a new connection has to send a complete request."""
    return float(os.environ.get("GATEWAY_HANDSHAKE_TIMEOUT", "10"))


class H11WithHandshakeDeadline(H11Protocol):
    """uvicorn's h11 protocol that closes connections which never send a full request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the deadline for the first request."""
        super().connection_made(transport)
        self._deadline = self.loop.call_later(handshake_timeout(), self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the deadline."""
        self._deadline.cancel()
        super().connection_lost(exc)

    def _expire(self) -> None:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # closed already, or upgraded to a WebSocket
        # uvicorn types `cycle` as always set, but it is None until a request arrives.
        if getattr(self, "cycle", None) is None:
            self.transport.close()
