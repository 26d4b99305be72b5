"""The ASGI application that gateway processes serve: HTTP pages and API, WebSocket `/ws/v1/`.

`GET /metrics` (Prometheus) is answered in front of everything else (`chatsite.metrics`).
Loading it sets the process's garbage-collector thresholds (`GATEWAY_GC_THRESHOLDS`).
"""

import gc
import os
from collections.abc import Awaitable

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Load Django (apps, models) before anything that imports models.
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from chatsite.bodylimit import BodySizeLimit  # noqa: E402
from chatsite.gateway.auth import Receive, Scope, Send, WebSocketAuthMiddleware  # noqa: E402
from chatsite.gateway.drain import DrainOnSigterm  # noqa: E402
from chatsite.gateway.fanout import StartFanout  # noqa: E402
from chatsite.metrics import MetricsEndpoint  # noqa: E402
from messaging.consumers import ChatConsumer  # noqa: E402

# A gateway holds millions of long-lived objects (GATEWAY_GC_THRESHOLDS).
gc.set_threshold(*settings.GATEWAY_GC_THRESHOLDS)

SOCKET_PATH = "/ws/v1/"


def chat_socket(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """Serve `/ws/v1/` with a `ChatConsumer`; refuse any other path before accept (403).

    In place of Channels' `URLRouter` and `as_asgi()`: each of those keeps a copy of the
    scope (about 1.2 KB) and a coroutine for as long as the socket is open. This returns
    the consumer's coroutine instead of awaiting it in one of its own.
    """
    if scope["path"] != SOCKET_PATH:
        return _refuse(receive, send)
    return ChatConsumer()(scope, receive, send)


async def _refuse(receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


http_app = BodySizeLimit(django_asgi_app)
socket_app = WebSocketAuthMiddleware(chat_socket)


def by_protocol(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """Channels' `ProtocolTypeRouter`, returning the application's awaitable.

    The middlewares in front of this (`DrainOnSigterm`, `StartFanout`, `MetricsEndpoint`)
    do the same, so an open socket holds no coroutine of theirs (about 250 bytes each).
    """
    kind = scope["type"]
    if kind == "websocket":
        return socket_app(scope, receive, send)
    if kind == "http":
        return http_app(scope, receive, send)
    raise ValueError(f"No application configured for scope type {kind!r}")


application = MetricsEndpoint(DrainOnSigterm(StartFanout(by_protocol)))
