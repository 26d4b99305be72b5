"""Shared Redis clients for rate limits, WebSocket tickets and presence (not the channel layer)."""

from __future__ import annotations

import asyncio
import functools
import weakref

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


# One client per event loop (asyncio connections belong to the loop that made them).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, aioredis.Redis]]
_async_clients = weakref.WeakKeyDictionary()


def async_client() -> aioredis.Redis | None:
    """Return a Redis client for the running event loop, or None without REDIS_URL."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    url, client = _async_clients.get(loop, ("", None))
    if client is None or url != settings.REDIS_URL:
        # A bounded pool that makes callers wait for a free connection: one event loop
        # needs few connections, and an unbounded pool opened one per concurrent call - a
        # thousand sockets closing at once opened a thousand Redis connections, and their
        # handshakes ate the gateway's CPU. The wait is longer than one call's timeout:
        # under such a burst a late presence write is better than a lost one.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.REDIS_ASYNC_POOL_SIZE,
            timeout=settings.REDIS_POOL_WAIT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
            health_check_interval=30,
        )
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = (settings.REDIS_URL, client)
    return client
