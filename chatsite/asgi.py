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

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

from chatsite.bodylimit import BodySizeLimit  # noqa: E402
from chatsite.gateway.auth import WebSocketAuthMiddleware  # noqa: E402
from chatsite.gateway.drain import DrainOnSigterm  # noqa: E402
from chatsite.gateway.fanout import StartFanout  # noqa: E402
from chatsite.metrics import MetricsEndpoint  # noqa: E402
from messaging.consumers import ChatConsumer  # noqa: E402

# A gateway holds millions of long-lived objects (GATEWAY_GC_THRESHOLDS).
gc.set_threshold(*settings.GATEWAY_GC_THRESHOLDS)

application = MetricsEndpoint(
    DrainOnSigterm(
        StartFanout(
            ProtocolTypeRouter(
                {
                    "http": BodySizeLimit(django_asgi_app),
                    "websocket": WebSocketAuthMiddleware(
                        URLRouter([path("ws/v1/", ChatConsumer.as_asgi())])
                    ),
                }
            )
        )
    )
)
