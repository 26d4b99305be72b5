"""The Channels tutorial chat (part 3, async consumer) as one ASGI application.

    BASELINE_LAYER=memory python -m uvicorn bench.baselines.tutorial:application ...
    BASELINE_LAYER=redis BASELINE_REDIS_URL=redis://127.0.0.1:PORT/7 python -m uvicorn ...

The consumer, its URL (`ws/chat/<room>/`) and the channel layers' settings are the
tutorial's: `InMemoryChannelLayer`, or `channels_redis.core.RedisChannelLayer` with its
default capacity. Django is configured here in code, without a database or any app: the
tutorial's `AuthMiddlewareStack` needs the session and auth apps (hence a database), and
its origin check refuses clients that send no Origin header, so both are left out. It
stores nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from django.conf import settings

LAYERS = {
    "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "redis": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/7")]},
    },
}

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-baseline-not-secret",  # noqa: S106 - nothing here is signed
    ALLOWED_HOSTS=["127.0.0.1"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
    CHANNEL_LAYERS={"default": LAYERS[os.environ.get("BASELINE_LAYER", "memory")]},
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Join the room's group; relay every `{"message": ...}` to the whole group."""

    async def connect(self) -> None:
        """Join the group `chat_<room>` and accept the socket."""
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code: int) -> None:
        """Leave the room's group."""
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send the frame's `message` to the room's group (the sender included)."""
        text_data_json = json.loads(text_data or "")
        message = text_data_json["message"]
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        """Send a group message to this socket."""
        message = event["message"]
        await self.send(text_data=json.dumps({"message": message}))


application = ProtocolTypeRouter(
    {"websocket": URLRouter([re_path(r"ws/chat/(?P<room_name>\w+)/$", ChatConsumer.as_asgi())])}
)
