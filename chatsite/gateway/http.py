"""The gateway's HTTP protocol for uvicorn: h11 plus a deadline for every request.

uvicorn waits forever for a request's headers and body: sockets that connect and send
nothing, or half a request, or a body one byte at a time, or a second request on a
kept-alive connection one byte at a time, would hold file descriptors (and a thread
waiting on the body) for good. Gateways run `--http chatsite.gateway:H11WithHandshakeDeadline`:

- each request, the first included, must arrive whole (request line, headers and
  body) within `GATEWAY_REQUEST_TIMEOUT` seconds of its first byte (of the connection,
  for the first request), or the connection is closed;
- between requests, an idle kept-alive connection is closed after
  `GATEWAY_KEEPALIVE_TIMEOUT` seconds (uvicorn's own keep-alive timer, set from the
  setting whatever `--timeout-keep-alive` says);
- once the server has the whole request, the deadline stops: the answer takes what it
  takes (the application's own timeouts bound it), and a WebSocket upgrade is handed
  to the WebSocket protocol, whose heartbeat rules apply from then on.

It also turns uvicorn's reading of `X-Forwarded-For`/`X-Forwarded-Proto` off (as
`--no-proxy-headers` does): by default uvicorn takes the client address from that
header on any connection from 127.0.0.1, so any local process could choose the address
the sign-up and login budgets count. The application reads the header itself, as the
settings say (`chatsite.clientaddr`: `API_NUM_PROXIES`, `API_TRUSTED_PROXIES`).

And, for a gateway run with `--ws websockets` (the legacy `websockets` server, which
the gateways used before `chatsite.gateway.websocket`), it spares each WebSocket
upgrade a signature inspection: that server asks `inspect.signature` of uvicorn's
handler, twice, on every connection (and warns that the handler takes a path), 5% of
a gateway's CPU while clients connect. The answer depends only on the handler's
function, so it is asked once per function.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import h11
from django.conf import settings
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS
from websockets.http11 import Request as WebSocketRequest
from websockets.protocol import Protocol

with warnings.catch_warnings():
    # The implementation uvicorn's `--ws websockets` runs on (uvicorn's default);
    # importing it warns that it is deprecated, once per process.
    warnings.simplefilter("ignore", DeprecationWarning)
    from websockets.legacy import server as legacy_server

_inspect_handler = legacy_server.remove_path_argument
_takes_path: dict[Any, bool] = {}
Handler = Callable[..., Awaitable[Any]]


def _remove_path_argument(ws_handler: Handler) -> Handler:
    """`websockets`' own `remove_path_argument`, with its answer kept per function."""
    function = getattr(ws_handler, "__func__", None)
    if function is None:
        return _inspect_handler(ws_handler)
    takes_path = _takes_path.get(function)
    if takes_path is None:
        takes_path = _takes_path[function] = _inspect_handler(ws_handler) is not ws_handler
    if not takes_path:
        return ws_handler

    async def without_path(websocket: Any) -> Any:
        return await ws_handler(websocket, websocket.path)

    return without_path


legacy_server.remove_path_argument = _remove_path_argument

# The request is still arriving in these states of the client's side.
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


def _without_proxy_headers(config: Config) -> None:
    """Unwrap uvicorn's proxy-headers middleware, the outermost layer when it is on."""
    if not config.loaded:
        config.load()
    if isinstance(config.loaded_app, ProxyHeadersMiddleware):
        config.loaded_app = config.loaded_app.app
        config.proxy_headers = False


class H11WithHandshakeDeadline(H11Protocol):
    """uvicorn's h11 protocol that closes connections whose request does not arrive in time.

    (The name is older than the deadline for later requests; gateways' command lines
    name it.)
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Read the deadlines from settings; take the client address from the socket."""
        _without_proxy_headers(config)
        super().__init__(config, server_state, app_state, _loop)
        self.timeout_keep_alive = float(settings.GATEWAY_KEEPALIVE_TIMEOUT)  # type: ignore[assignment]
        self._request_timeout = float(settings.GATEWAY_REQUEST_TIMEOUT)
        self._deadline: asyncio.TimerHandle | None = None
        self._answered = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the deadline for the first request."""
        super().connection_made(transport)
        self._track()

    def data_received(self, data: bytes) -> None:
        """Start the deadline at a request's first byte; stop it once the request is whole."""
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        """After an answer: idle (keep-alive timer) or a pipelined request (deadline)."""
        self._answered = True
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the deadline."""
        self._cancel()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """Hand the upgrade to the WebSocket protocol with the request h11 already read.

        uvicorn writes the request out again and the sans-I/O protocol parses it a second
        time, a line at a time through generators (in process, 74 µs against 11 µs for
        handing over what h11 read; docs/performance.md). The protocol is given the
        parsed request instead, as the event its parser would have produced, and the
        frame parser that would have followed. A request that parser would refuse, and
        any protocol but the sans-I/O one, goes the usual way, so what is refused, and
        how, does not change.
        """
        kind = self.ws_protocol_class
        request = _websocket_request(event)
        if request is None or kind is None or not issubclass(kind, WebSocketsSansIOProtocol):
            super().handle_websocket_upgrade(event)
            return
        self.connections.discard(self)
        protocol = kind(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        conn = protocol.conn
        conn.parser = Protocol.parse(conn)
        next(conn.parser)  # to its first wait for a frame, as after a parsed request
        conn.events.append(request)
        protocol.handle_events()
        self.transport.set_protocol(protocol)

    def _track(self) -> None:
        """Run the deadline while a request is arriving, and only then."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._cancel()  # closed, or upgraded to a WebSocket
            return
        pending, _closed = self.conn.trailing_data
        receiving = self.conn.their_state is h11.SEND_BODY or (
            self.conn.their_state is h11.IDLE and (bool(pending) or not self._answered)
        )
        if not receiving:
            self._cancel()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self._request_timeout, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.conn.their_state in _RECEIVING:
            self.transport.close()


def _websocket_request(event: h11.Request) -> WebSocketRequest | None:
    """Return the request as `websockets` would have parsed it, or None if it would refuse it.

    Its parser takes a `GET` in HTTP/1.1 without a body, at most `MAX_NUM_HEADERS`
    headers of at most `MAX_LINE_LENGTH` bytes, names of token characters and values of
    visible characters (h11 checked those two already), and keeps the path and values
    as ASCII with surrogate escapes.
    """
    if event.method != b"GET" or event.http_version != b"1.1":
        return None
    if len(event.target) + len(b"GET  HTTP/1.1\r\n") > MAX_LINE_LENGTH:
        return None
    raw = event.headers.raw_items()
    if len(raw) > MAX_NUM_HEADERS:
        return None
    headers = Headers()
    for name, value in raw:
        if len(name) + len(value) + 4 > MAX_LINE_LENGTH:  # "name: value\r\n"
            return None
        headers[name.decode("ascii")] = value.decode("ascii", "surrogateescape")
    if "Transfer-Encoding" in headers or "Content-Length" in headers:
        return None
    return WebSocketRequest(event.target.decode("ascii", "surrogateescape"), headers)
