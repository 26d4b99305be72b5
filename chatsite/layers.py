"""The channel layer gateways use: channels-redis, surviving Redis restarts.

A restart drops the connection a socket's `receive` waits on; channels-redis raises,
and Channels would end the consumer (the client sees an abnormal close and a reconnect
storm follows). This layer waits and receives again instead, so open sockets stay open;
the gateway re-joins their groups once Redis is back (messaging.consumers.Gateway).
Events published while Redis was down are lost: clients repair the gap from the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)


class ResilientRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    """RedisChannelLayer whose `receive` outlives a lost Redis connection."""

    async def receive(self, channel: str) -> Any:
        """Receive the next message, retrying (with backoff, up to 2 s) while Redis is away."""
        delay = 0.05
        while True:
            try:
                return await super().receive(channel)
            except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
                logger.warning("channel layer receive failed (%r); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
