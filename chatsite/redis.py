"""Shared Redis clients for rate limits, WebSocket tickets and presence (not the channel layer).

One Redis server (`REDIS_URL`), or several (`REDIS_SHARDS`, comma-separated URLs): each
key then lives on one shard, chosen by a stable hash of the name it is sharded by (a
user id, a ticket, a rate-limit bucket), the same in every process. The channel layer
spreads its groups over the same servers by its own hash (channels-redis `hosts`).
Changing the number of shards moves keys: presence, rate-limit buckets and tickets in
flight start over, which they survive (presence is re-sent every heartbeat).
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import DataError, NoScriptError


def shard_urls() -> list[str]:
    """Return the Redis servers keys are spread over (empty on the embedded default)."""
    shards = list(getattr(settings, "REDIS_SHARDS", []) or [])
    if shards:
        return shards
    return [settings.REDIS_URL] if settings.REDIS_URL else []


def shard_of(name: object, count: int | None = None) -> int:
    """Return the shard that keys sharded by `name` live on (stable across processes).

    `count` is the number of shards (default: the configured servers).
    """
    count = len(shard_urls()) if count is None else count
    if count <= 1:
        return 0
    return binascii.crc32(str(name).encode()) % count


@functools.cache
def _sync_client(url: str) -> redis.Redis:
    # Explicit bounds, whatever redis-py's defaults: a stalled Redis must not stall a send
    # for longer than the timeout (RELIABILITY.md R7).
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        health_check_interval=30,
    )


def sync_client(shard_by: object = None) -> redis.Redis | None:
    """Return the client of the shard for `shard_by` (the first shard for None).

    None on the embedded default (no REDIS_URL).
    """
    urls = shard_urls()
    if not urls:
        return None
    return _sync_client(urls[0 if shard_by is None else shard_of(shard_by, len(urls))])


def sync_clients() -> list[redis.Redis]:
    """Return a client of every shard, in shard order."""
    return [_sync_client(url) for url in shard_urls()]


def forget_clients() -> None:
    """Drop the cached synchronous clients (tests that point REDIS_URL elsewhere)."""
    _sync_client.cache_clear()


class _HiredisPacking:
    """Pack commands with hiredis' C packer, as redis-py's sync connections do.

    redis-py 5's asyncio connections pack in Python, growing one bytes object argument
    by argument: a presence batch of 100 users' heartbeats (600 arguments) took 430 µs
    to pack against 46 µs here, and packing was 7% of an idle gateway's CPU. The bytes
    are the same (`tests/test_redis_packing.py`).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """Pack one command (a command name like "CONFIG GET" is split, as redis-py does)."""
        head = args[0]
        if isinstance(head, str):
            args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


_packing_classes: dict[type, type] = {}


def hiredis_packing(pool: aioredis.ConnectionPool) -> aioredis.ConnectionPool:
    """Make the connections `pool` opens from now on pack commands with hiredis."""
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        packing = _packing_classes.get(base)
        if packing is None:
            packing = type(f"HiredisPacking{base.__name__}", (_HiredisPacking, base), {})
            _packing_classes[base] = packing
        pool.connection_class = packing
    return pool


# One client per event loop and server (asyncio connections belong to the loop that made them).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]]
_async_clients = weakref.WeakKeyDictionary()


def _async_client(url: str) -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        # A bounded pool that makes callers wait for a free connection: one event loop
        # needs few connections, and an unbounded pool opened one per concurrent call - a
        # thousand sockets closing at once opened a thousand Redis connections, and their
        # handshakes ate the gateway's CPU. The wait is longer than one call's timeout:
        # under such a burst a late presence write is better than a lost one.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.REDIS_ASYNC_POOL_SIZE,
            timeout=settings.REDIS_POOL_WAIT,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
            health_check_interval=30,
        )
        client = aioredis.Redis(connection_pool=hiredis_packing(pool))
        clients[url] = client
    return client


def async_client(shard_by: object = None) -> aioredis.Redis | None:
    """Return the running loop's client of the shard for `shard_by` (None: the first).

    None without REDIS_URL.
    """
    urls = shard_urls()
    if not urls:
        return None
    return _async_client(urls[0 if shard_by is None else shard_of(shard_by, len(urls))])


def async_clients() -> list[aioredis.Redis]:
    """Return the running loop's client of every shard, in shard order."""
    return [_async_client(url) for url in shard_urls()]


class Script:
    """A Lua script, run by its SHA1 (EVALSHA) and sent whole only when Redis lacks it.

    One command and one reply where a pipeline of the same commands costs the gateway a
    command to build and a reply to parse each. Not bound to a client: the clients are
    made per event loop and per shard.
    """

    __slots__ = ("lua", "sha")

    def __init__(self, lua: str) -> None:
        """Keep the script and its SHA1, the name Redis caches it by."""
        self.lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()  # noqa: S324 - Redis names scripts so

    async def __call__(
        self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run the script on `client` with `keys` and `args`; return its reply."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:  # a new or restarted Redis: EVAL loads it
            return await client.eval(self.lua, len(keys), *keys, *args)  # type: ignore[misc]
