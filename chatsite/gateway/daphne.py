"""Run a gateway under Daphne with the protocol's frame limit and the HTTP deadlines.

`python -m chatsite.gateway.daphne <daphne's arguments>` is `python -m daphne` with two
changes:

- a frame or message over `--websocket-max-message-size` is refused with a close frame
  1009 (message too big), as the protocol promises and uvicorn does, instead of
  Autobahn's default of dropping the TCP connection (the client sees 1006 and cannot
  tell a limit from a crash). The application checks the size too, but a frame over
  Daphne's own cap never reaches it;
- the HTTP deadlines of uvicorn gateways (`chatsite.gateway.http`) hold here too: each
  request's line, headers and body must arrive within `GATEWAY_REQUEST_TIMEOUT`
  seconds of its first byte, and a connection that sends nothing for
  `GATEWAY_KEEPALIVE_TIMEOUT` seconds while no request is being answered is closed
  (Twisted's idle timeout, 12 hours in plain Daphne). Daphne's own options bound only
  the application's answer (`--http-timeout`) and WebSocket handshakes.
"""

from __future__ import annotations

from typing import Any

import daphne.server
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory
from daphne.ws_protocol import WebSocketFactory
from django.conf import settings
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http


class ClosingWebSocketFactory(WebSocketFactory):  # type: ignore[misc]
    """Daphne's factory with `failByDrop` off: protocol violations get a close frame."""

    def setProtocolOptions(self, **options: Any) -> None:
        """Set Daphne's options, and `failByDrop=False`."""
        super().setProtocolOptions(failByDrop=False, **options)


class DeadlineHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel that closes a connection whose request is late.

    The deadline starts at the connection (its first request) and at the first byte
    of each later one, and stops once the whole request is in (`allContentReceived`);
    an upgraded WebSocket never has another.
    """

    _deadline: Any = None  # a Twisted IDelayedCall

    def connectionMade(self) -> None:
        """Start the deadline for the first request."""
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        """Start the deadline at the first byte of a request."""
        if self._deadline is None and not self._handlingRequest:
            self._arm()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        """Stop the deadline: the request is whole."""
        self._cancel()
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the deadline."""
        self._cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _arm(self) -> None:
        timeout = float(settings.GATEWAY_REQUEST_TIMEOUT)
        call_later: Any = self.callLater
        self._deadline = call_later(timeout, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self._handlingRequest and self.transport is not None:
            self.transport.abortConnection()


class DeadlineHTTPFactory(HTTPFactory):  # type: ignore[misc]
    """Daphne's HTTP factory with the deadline channel and the keep-alive timeout."""

    def __init__(self, server: Any) -> None:
        """Set Twisted's idle timeout to `GATEWAY_KEEPALIVE_TIMEOUT`."""
        super().__init__(server)
        self.timeOut = float(settings.GATEWAY_KEEPALIVE_TIMEOUT)

    def protocol(self) -> Any:
        """Build the channel Twisted's factory would, with the deadline (HTTP/1.1 only)."""
        return http._GenericHTTPChannelProtocol(DeadlineHTTPChannel())  # type: ignore[no-untyped-call]


def main() -> None:
    """Start Daphne with the closing WebSocket factory and the deadline HTTP factory."""
    daphne.server.WebSocketFactory = ClosingWebSocketFactory  # the module Server reads it from
    daphne.server.HTTPFactory = DeadlineHTTPFactory
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
