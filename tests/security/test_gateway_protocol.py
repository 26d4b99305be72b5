"""The gateway's uvicorn protocol ignores uvicorn's proxy-headers option.

Tried: a gateway command line without `--no-proxy-headers` (uvicorn's default trusts
X-Forwarded-For from 127.0.0.1, and `--forwarded-allow-ips '*'` from anyone). The
protocol class every gateway runs takes uvicorn's middleware off before the first
request, so the client address stays the TCP peer's and only `chatsite.clientaddr`
reads the header, as the settings say.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
