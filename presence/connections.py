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

from chatsite.redis import Script, async_client

_local: dict[int, dict[str, float]] = {}


# Record a connection and evict the oldest past the cap, at once. KEYS[1]: the user's
# connections; ARGV: the channel, the time, the cap, the key's TTL. Returns the evicted.
_REGISTER = Script("""
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over <= 0 then return {} end
local excess = redis.call('ZRANGE', KEYS[1], 0, over - 1)
redis.call('ZREM', KEYS[1], unpack(excess))
return excess
""")


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
    try:
        excess = await _REGISTER(client, [_key(user_id)], [channel, repr(now), limit, 86_400])
    except RedisError:
        # Without Redis the cap is not enforced; the connection itself still works.
        return []
    return [m.decode() if isinstance(m, bytes) else str(m) for m in excess]


async def unregister(user_id: int, channel: str) -> None:
    """Forget a closed connection."""
    client = async_client(shard_by=user_id)
    if client is None:
        _local.get(user_id, {}).pop(channel, None)
        return
    with contextlib.suppress(RedisError):
        await client.zrem(_key(user_id), channel)
