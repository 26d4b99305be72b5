"""Shared Redis clients for rate limits, WebSocket tickets and presence (not the channel layer)."""

from __future__ import annotations

import functools

import redis
import redis.asyncio as aioredis
from django.conf import settings


@functools.cache
def sync_client() -> redis.Redis | None:
    """Return the process's Redis client, or None on the embedded default (no REDIS_URL)."""
    if not settings.REDIS_URL:
        return None
    # Explicit bounds, whatever redis-py's defaults: a stalled Redis must not stall a send
    # for longer than the timeout (RELIABILITY.md R7).
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        health_check_interval=30,
    )


_async_clients: dict[int, aioredis.Redis] = {}


def async_client() -> aioredis.Redis | None:
    """Return a Redis client for the running event loop, or None without REDIS_URL."""
    import asyncio

    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _async_clients.get(id(loop))
    if client is None:
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            health_check_interval=30,
        )
        _async_clients[id(loop)] = client
    return client
