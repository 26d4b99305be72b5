"""The ASGI application that gateway processes serve: HTTP pages and API, WebSocket `/ws/v1/`.

`GET /metrics` (Prometheus) is answered in front of everything else (`chatsite.metrics`).
Loading it sets the process's garbage-collector thresholds (`GATEWAY_GC_THRESHOLDS`).
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Load Django (apps, models) before anything that imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
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


async def chat_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve `/ws/v1/` with a `ChatConsumer`; refuse any other path before accept (403).

    In place of Channels' `URLRouter` and `as_asgi()`: each of those keeps a copy of the
    scope (about 1.2 KB) and a coroutine for as long as the socket is open.
    """
    if scope["path"] != SOCKET_PATH:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})
        return
    await ChatConsumer()(scope, receive, send)


application = MetricsEndpoint(
    DrainOnSigterm(
        StartFanout(
            ProtocolTypeRouter(
                {
                    "http": BodySizeLimit(django_asgi_app),
                    "websocket": WebSocketAuthMiddleware(chat_socket),
                }
            )
        )
    )
)
