"""The gateway's uvicorn protocol ignores uvicorn's proxy-headers option.

(And it spares every WebSocket upgrade the inspection of uvicorn's handler.)

Tried: a gateway command line without `--no-proxy-headers` (uvicorn's default trusts
X-Forwarded-For from 127.0.0.1, and `--forwarded-allow-ips '*'` from anyone). The
protocol class every gateway runs takes uvicorn's middleware off before the first
request, so the client address stays the TCP peer's and only `chatsite.clientaddr`
reads the header, as the settings say.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.server import ServerState

from chatsite.gateway.http import H11WithHandshakeDeadline


async def app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI application that is never called."""


def reads_proxy_headers(config: Config) -> bool:
    return isinstance(config.loaded_app, ProxyHeadersMiddleware)


def test_uvicorns_proxy_headers_are_taken_off_whatever_the_command_line_says(
    settings: Any,
) -> None:
    settings.GATEWAY_KEEPALIVE_TIMEOUT = 7.0
    config = Config(app=app, proxy_headers=True, forwarded_allow_ips="*", lifespan="off", ws="none")
    config.load()
    assert reads_proxy_headers(config)
    loop = asyncio.new_event_loop()
    try:
        protocol = H11WithHandshakeDeadline(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()

    assert not reads_proxy_headers(config)
    assert config.proxy_headers is False
    assert protocol.app is config.loaded_app
    assert protocol.timeout_keep_alive == 7.0


class Handlers:
    """Stand-ins for uvicorn's handler (socket and path) and a newer one (socket only)."""

    async def with_path(self, websocket: Any, path: str) -> tuple[Any, str]:
        return websocket, path

    async def without_path(self, websocket: Any) -> Any:
        return websocket


class Socket:
    path = "/ws/v1/"


def test_a_handlers_signature_is_inspected_once_per_function_not_per_connection() -> None:
    # websockets' legacy server (uvicorn's `--ws websockets`) calls this for every
    # connection; its own version inspects the signature and warns each time.
    # Imported (its deprecation warning silenced) by chatsite.gateway.http, above.
    from websockets.legacy import server as legacy_server

    remove_path_argument: Any = legacy_server.remove_path_argument
    first, second = Handlers(), Handlers()
    with pytest.warns(DeprecationWarning, match="remove second argument"):
        wrapped = remove_path_argument(first.with_path)
    # A second connection: no inspection, so no warning (the suite turns one into an error).
    again = remove_path_argument(second.with_path)
    socket = Socket()
    assert asyncio.run(wrapped(socket)) == (socket, "/ws/v1/")
    assert asyncio.run(again(socket)) == (socket, "/ws/v1/")
    assert remove_path_argument(first.without_path) == first.without_path
    assert remove_path_argument(second.without_path) == second.without_path
