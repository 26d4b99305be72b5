"""The live connections of each user, across gateway processes (for the per-user cap).

Redis keeps, per user, a sorted set of connection channel names scored by connect time
(`<prefix>:conns:<user>`); the embedded default keeps it in this process. An entry left
by a gateway that died is the oldest, so it is the first one evicted (harmlessly).
"""

from __future__ import annotations

import contextlib
import time

from django.conf import settings
from redis.exceptions import RedisError

from chatsite.redis import async_client

_local: dict[int, dict[str, float]] = {}


def _key(user_id: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:conns:{user_id}"


async def register(user_id: int, channel: str, *, limit: int) -> list[str]:
    """Record a new connection; return the channels of the oldest ones past `limit`."""
    now = time.time()
    client = async_client(shard_by=user_id)
    if client is None:
        conns = _local.setdefault(user_id, {})
        conns[channel] = now
        ordered = sorted(conns, key=conns.__getitem__)
        excess = ordered[: max(0, len(ordered) - limit)]
        for name in excess:
            conns.pop(name, None)
        return excess
    key = _key(user_id)
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {channel: now})
            pipe.zrange(key, 0, -1)
            pipe.expire(key, 86_400)
            _, members, _ = await pipe.execute()
    except RedisError:
        # Without Redis the cap is not enforced; the connection itself still works.
        return []
    names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    excess = names[: max(0, len(names) - limit)]
    if excess:
        with contextlib.suppress(RedisError):
            await client.zrem(key, *excess)
    return excess


async def unregister(user_id: int, channel: str) -> None:
    """Forget a closed connection."""
    client = async_client(shard_by=user_id)
    if client is None:
        _local.get(user_id, {}).pop(channel, None)
        return
    with contextlib.suppress(RedisError):
        await client.zrem(_key(user_id), channel)
