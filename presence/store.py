"""Where presence lives: Redis (shared by all gateways) or this process (embedded default).

Both stores keep, per user, their connections' last heartbeats and idle flags, the
sticky `busy` flag, the last published state and `last_seen`, plus an index of users by
latest heartbeat for the sweep. The same contract tests run against both
(tests/presence/test_store.py). Callers pass `now`, so tests control time.

Redis keys (prefix `REDIS_KEY_PREFIX`): `pres:c:<user>` hash connection -> "at|idle";
`pres:live` sorted set user -> latest heartbeat; `pres:busy:<user>`; `pres:state:<user>`;
`pres:seen:<user>`; `pres:lock:<name>`; and `conns:<user>`, the registry of the user's
connections by connect time for the per-user cap (`WS_MAX_CONNECTIONS_PER_USER`). A
registry entry left by a gateway that died is the oldest, so it is the first one
evicted (harmlessly).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, NamedTuple, cast

from django.conf import settings
from redis.asyncio import Redis

from chatsite.redis import Script, async_clients, shard_of, shard_urls
from presence.state import Beat

# How long a user's connection registry outlives its last connect (a day).
REGISTRY_TTL = 86_400


class Opened(NamedTuple):
    """What `open_connection` found and did."""

    known: dict[str, Beat]  # the user's connections before, with their heartbeats
    previous: str | None  # the published state the new one replaced
    evicted: list[str]  # the oldest connections past the cap, dropped from the registry


class PresenceStore(ABC):
    """The operations presence needs, whatever keeps the data."""

    @abstractmethod
    async def beat(self, user_id: int, connection: str, *, idle: bool, now: float) -> None:
        """Record a heartbeat of one connection (creating it if new)."""

    async def beat_many(self, beats: Sequence[tuple[int, str, Beat]]) -> None:
        """Record the heartbeats of many connections: (user, connection, beat) each."""
        for user_id, connection, beat in beats:
            await self.beat(user_id, connection, idle=beat.idle, now=beat.at)

    @abstractmethod
    async def open_connection(
        self, user_id: int, connection: str, *, busy: bool, now: float, state: str, limit: int
    ) -> Opened:
        """Record a new connection at once: its first beat, the busy flag, the state.

        The connection joins the user's registry, and the oldest past `limit` leave it
        (returned in `evicted`, for the caller to close). Returns also the user's
        connections as they were before, and the state `state` replaced (`swap_state`).
        """

    @abstractmethod
    async def remove(self, user_id: int, connections: Iterable[str]) -> None:
        """Forget connections of a user."""

    @abstractmethod
    async def connections(self, user_ids: Iterable[int]) -> dict[int, dict[str, Beat]]:
        """Return each user's connections with their last heartbeats."""

    @abstractmethod
    async def close_connection(self, user_id: int, connection: str) -> dict[str, Beat]:
        """Forget a closed connection (and its registry entry); return the user's others."""

    @abstractmethod
    async def set_busy(self, user_id: int, busy: bool) -> None:
        """Set or clear the user's sticky busy flag."""

    @abstractmethod
    async def busy(self, user_ids: Iterable[int]) -> set[int]:
        """Return which of the users are busy."""

    @abstractmethod
    async def swap_state(self, user_id: int, state: str) -> str | None:
        """Store the user's published state; return the one it replaces."""

    @abstractmethod
    async def set_last_seen(self, user_id: int, at: float) -> None:
        """Store when the user was last connected."""

    @abstractmethod
    async def last_seen(self, user_ids: Iterable[int]) -> dict[int, float]:
        """Return the known last-seen times."""

    @abstractmethod
    async def stale_users(self, before: float) -> list[int]:
        """Return users whose latest heartbeat is older than `before`."""

    @abstractmethod
    async def forget_user(self, user_id: int) -> None:
        """Drop a user from the heartbeat index (no live connection left)."""

    @abstractmethod
    async def try_lock(self, name: str, ttl: float) -> bool:
        """Take a named lock for `ttl` seconds if nobody holds it."""


class MemoryPresenceStore(PresenceStore):
    """Presence in this process (the embedded default: one process, no Redis)."""

    def __init__(self) -> None:
        self._connections: dict[int, dict[str, Beat]] = {}
        self._busy: set[int] = set()
        self._state: dict[int, str] = {}
        self._seen: dict[int, float] = {}
        self._live: dict[int, float] = {}
        self._locks: dict[str, float] = {}
        self._registry: dict[int, dict[str, float]] = {}  # user -> connection -> opened at

    async def beat(self, user_id: int, connection: str, *, idle: bool, now: float) -> None:
        """Record a heartbeat of one connection (creating it if new)."""
        self._connections.setdefault(user_id, {})[connection] = Beat(now, idle)
        self._live[user_id] = max(self._live.get(user_id, 0.0), now)

    async def open_connection(
        self, user_id: int, connection: str, *, busy: bool, now: float, state: str, limit: int
    ) -> Opened:
        """Record a new connection at once: its first beat, the busy flag, the state."""
        known = (await self.connections([user_id]))[user_id]
        await self.set_busy(user_id, busy)
        await self.beat(user_id, connection, idle=False, now=now)
        registry = self._registry.setdefault(user_id, {})
        registry[connection] = now
        oldest = sorted(registry, key=registry.__getitem__)
        evicted = oldest[: max(0, len(oldest) - limit)]
        for name in evicted:
            del registry[name]
        return Opened(known, await self.swap_state(user_id, state), evicted)

    async def remove(self, user_id: int, connections: Iterable[str]) -> None:
        """Forget connections of a user."""
        mine = self._connections.get(user_id, {})
        for name in connections:
            mine.pop(name, None)
        if not mine:
            self._connections.pop(user_id, None)

    async def connections(self, user_ids: Iterable[int]) -> dict[int, dict[str, Beat]]:
        """Return each user's connections with their last heartbeats."""
        return {uid: dict(self._connections.get(uid, {})) for uid in user_ids}

    async def close_connection(self, user_id: int, connection: str) -> dict[str, Beat]:
        """Forget a closed connection; return the user's others, with their heartbeats."""
        registry = self._registry.get(user_id)
        if registry is not None:
            registry.pop(connection, None)
            if not registry:
                del self._registry[user_id]
        await self.remove(user_id, [connection])
        return (await self.connections([user_id]))[user_id]

    async def set_busy(self, user_id: int, busy: bool) -> None:
        """Set or clear the user's sticky busy flag."""
        if busy:
            self._busy.add(user_id)
        else:
            self._busy.discard(user_id)

    async def busy(self, user_ids: Iterable[int]) -> set[int]:
        """Return which of the users are busy."""
        return {uid for uid in user_ids if uid in self._busy}

    async def swap_state(self, user_id: int, state: str) -> str | None:
        """Store the user's published state; return the one it replaces."""
        previous = self._state.get(user_id)
        self._state[user_id] = state
        return previous

    async def set_last_seen(self, user_id: int, at: float) -> None:
        """Store when the user was last connected."""
        self._seen[user_id] = at

    async def last_seen(self, user_ids: Iterable[int]) -> dict[int, float]:
        """Return the known last-seen times."""
        return {uid: self._seen[uid] for uid in user_ids if uid in self._seen}

    async def stale_users(self, before: float) -> list[int]:
        """Return users whose latest heartbeat is older than `before`."""
        return [uid for uid, at in self._live.items() if at < before]

    async def forget_user(self, user_id: int) -> None:
        """Drop a user from the heartbeat index (no live connection left)."""
        self._live.pop(user_id, None)

    async def try_lock(self, name: str, ttl: float) -> bool:
        """Take a named lock for `ttl` seconds if nobody holds it."""
        now = time.monotonic()
        if self._locks.get(name, 0.0) > now:
            return False
        self._locks[name] = now + ttl
        return True


# The heartbeats of many users in one call. KEYS[1]: the shard's heartbeat index; then
# each user's connections hash. ARGV[1]: the hashes' TTL; then, per user: its id, its
# latest beat, the number of its connections n, and n pairs of connection and "at|idle".
_BEATS = Script("""
local ttl, at = ARGV[1], 2
for i = 2, #KEYS do
  local user, latest, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 3
  for _ = 1, n do
    redis.call('HSET', KEYS[i], ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('ZADD', KEYS[1], 'GT', latest, user)
end
return #KEYS - 1
""")

# New connections (`open_connection`), one or more, each with 5 KEYS and 9 ARGV. KEYS:
# the user's connections hash, busy flag, the shard's heartbeat index, the user's
# published state, the user's registry. ARGV: the connection, its first beat "at|0",
# the hash's TTL, "1" if busy, the user, the time, the new state, the cap, the
# registry's TTL. Returns, per connection, the hash as it was (flat: name, beat, ...),
# the state replaced (or false) and the registry's evicted entries.
_OPEN = Script("""
local out = {}
for i = 0, #KEYS / 5 - 1 do
  local k, a = i * 5, i * 9
  local before = redis.call('HGETALL', KEYS[k + 1])
  if ARGV[a + 4] == '1' then
    redis.call('SET', KEYS[k + 2], '1')
  else
    redis.call('DEL', KEYS[k + 2])
  end
  redis.call('HSET', KEYS[k + 1], ARGV[a + 1], ARGV[a + 2])
  redis.call('EXPIRE', KEYS[k + 1], ARGV[a + 3])
  redis.call('ZADD', KEYS[k + 3], 'GT', ARGV[a + 6], ARGV[a + 5])
  local previous = redis.call('GETSET', KEYS[k + 4], ARGV[a + 7])
  redis.call('ZADD', KEYS[k + 5], ARGV[a + 6], ARGV[a + 1])
  redis.call('EXPIRE', KEYS[k + 5], ARGV[a + 9])
  local evicted = {}
  local over = redis.call('ZCARD', KEYS[k + 5]) - tonumber(ARGV[a + 8])
  if over > 0 then
    evicted = redis.call('ZRANGE', KEYS[k + 5], 0, over - 1)
    redis.call('ZREM', KEYS[k + 5], unpack(evicted))
  end
  out[i + 1] = {before, previous, evicted}
end
return out
""")

# Opens sent in one script call at most.
OPEN_BATCH = 200


class _Opens:
    """The connection opens of one Redis client (one shard, one event loop), gathered.

    One open runs at once; the opens that arrive meanwhile (a burst of handshakes) go
    together in the next script call: one command and one reply for all, where each
    open cost the gateway a command of its own (about a seventh of a handshake's CPU).
    An open that arrives while none runs starts at once. Opens of one user keep their
    order (the script runs them one after the other).
    """

    __slots__ = ("drainer", "running", "waiting")

    def __init__(self) -> None:
        self.waiting: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self.running = False
        self.drainer: asyncio.Task[None] | None = None

    def open(self, client: Redis, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue one open (5 keys, 9 args) on `client`; the future gets its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((keys, args, future))
        if not self.running:
            self.running = True
            self.drainer = loop.create_task(self._drain(client))
        return future

    async def _drain(self, client: Redis) -> None:
        # The client is not kept: it is the key this queue is found by (weakly).
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:OPEN_BATCH], self.waiting[OPEN_BATCH:]
                # A handshake that stopped waiting (its client left) opens nothing.
                batch = [op for op in batch if not op[2].cancelled()]
                if not batch:
                    continue
                keys = [key for op in batch for key in op[0]]
                args = [arg for op in batch for arg in op[1]]
                try:
                    replies = await _OPEN(client, keys, args)
                except Exception as exc:  # noqa: BLE001 - each caller gets the failure
                    for *_rest, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for *_rest, future in batch:
                        future.cancel()
                    raise
                for (*_rest, future), reply in zip(batch, replies, strict=True):
                    if not future.done():
                        future.set_result(reply)
        finally:
            self.running = False


_opens: weakref.WeakKeyDictionary[Redis, _Opens] = weakref.WeakKeyDictionary()

# A closed connection (`close_connection`). KEYS: the user's connections hash and
# registry; ARGV[1]: the connection. Returns the others (flat: name, beat, ...).
_CLOSE = Script("""
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HGETALL', KEYS[1])
""")


class RedisPresenceStore(PresenceStore):
    """Presence in Redis, shared by every gateway process, sharded by user.

    A user's keys live on the shard `chatsite.redis.shard_of(user_id)` picks; each shard
    keeps the heartbeat index (`pres:live`) of its own users, so the sweep reads them
    all. Locks are on the first shard.
    """

    def __init__(self, clients: list[Redis] | None = None, prefix: str | None = None) -> None:
        self._clients = clients
        self._prefix = prefix

    @property
    def clients(self) -> list[Redis]:
        """Return the Redis client of every shard for the running event loop."""
        clients = self._clients or async_clients()
        if not clients:
            raise RuntimeError("RedisPresenceStore needs REDIS_URL")
        return clients

    async def aclose(self) -> None:
        """Close the clients this store was given (the shared per-loop ones stay open)."""
        for client in self._clients or []:
            await client.aclose()

    def _client(self, user_id: int) -> Redis:
        clients = self.clients
        return clients[shard_of(user_id, len(clients))]

    def _by_shard(self, user_ids: list[int]) -> dict[int, list[int]]:
        shards: dict[int, list[int]] = {}
        count = len(self.clients)
        for uid in user_ids:
            shards.setdefault(shard_of(uid, count), []).append(uid)
        return shards

    def _key(self, *parts: object) -> str:
        prefix = self._prefix or settings.REDIS_KEY_PREFIX
        return ":".join([prefix, "pres", *map(str, parts)])

    def _registry_key(self, user_id: int) -> str:
        return f"{self._prefix or settings.REDIS_KEY_PREFIX}:conns:{user_id}"

    @property
    def _ttl(self) -> int:
        # Keys outlive the live window, so a sweep still finds what a dead gateway left.
        return int(settings.WS_HEARTBEAT_INTERVAL * settings.WS_IDLE_TIMEOUT_FACTOR * 4) + 60

    async def beat(self, user_id: int, connection: str, *, idle: bool, now: float) -> None:
        """Record a heartbeat of one connection: one round trip (a pipeline of three)."""
        key = self._key("c", user_id)
        async with self._client(user_id).pipeline(transaction=False) as pipe:
            pipe.hset(key, connection, f"{now:.3f}|{int(idle)}")
            pipe.expire(key, self._ttl)
            pipe.zadd(self._key("live"), {str(user_id): now}, gt=True)
            await pipe.execute()

    async def beat_many(self, beats: Sequence[tuple[int, str, Beat]]) -> None:
        """Record many heartbeats: one script call per shard, whatever their number.

        Per user an HSET of each connection, an EXPIRE and a ZADD of its latest beat, run
        by one EVALSHA (`_BEATS`) with one reply: a pipeline of the same commands
        cost the gateway more to build and to read (a reply per command) than the
        writes cost Redis.
        """
        fields: dict[int, dict[str, str]] = {}
        latest: dict[int, float] = {}
        for user_id, connection, beat in beats:
            fields.setdefault(user_id, {})[connection] = f"{beat.at:.3f}|{int(beat.idle)}"
            latest[user_id] = max(latest.get(user_id, beat.at), beat.at)
        ttl = self._ttl

        async def write(shard: int, user_ids: list[int]) -> None:
            keys = [self._key("live"), *(self._key("c", uid) for uid in user_ids)]
            args = [str(ttl)]
            for uid in user_ids:
                mine = fields[uid]
                args += (str(uid), repr(latest[uid]), str(len(mine)))
                for pair in mine.items():
                    args += pair
            await _BEATS(self.clients[shard], keys, args)

        await asyncio.gather(*(write(s, ids) for s, ids in self._by_shard(list(fields)).items()))

    async def open_connection(
        self, user_id: int, connection: str, *, busy: bool, now: float, state: str, limit: int
    ) -> Opened:
        """Record a new connection in one round trip (`_OPEN`, with the opens beside it)."""
        keys = [
            self._key("c", user_id),
            self._key("busy", user_id),
            self._key("live"),
            self._key("state", user_id),
            self._registry_key(user_id),
        ]
        args = [connection, f"{now:.3f}|0", self._ttl, int(busy), user_id, repr(now), state]
        args += [limit, REGISTRY_TTL]
        client = self._client(user_id)
        opens = _opens.get(client)
        if opens is None:
            opens = _opens[client] = _Opens()
        before, previous, evicted = await opens.open(client, keys, args)
        return Opened(
            _beats(_pairs(before)),
            _text(previous) if previous is not None else None,
            [_text(name) for name in evicted],
        )

    async def remove(self, user_id: int, connections: Iterable[str]) -> None:
        """Forget connections of a user."""
        names = list(connections)
        if names:
            client = self._client(user_id)
            await cast("Awaitable[int]", client.hdel(self._key("c", user_id), *names))

    async def close_connection(self, user_id: int, connection: str) -> dict[str, Beat]:
        """Forget a closed connection and read the user's others (one script, `_CLOSE`)."""
        keys = [self._key("c", user_id), self._registry_key(user_id)]
        others = await _CLOSE(self._client(user_id), keys, [connection])
        return _beats(_pairs(others))

    async def connections(self, user_ids: Iterable[int]) -> dict[int, dict[str, Beat]]:
        """Return each user's connections with their last heartbeats (a round trip a shard)."""
        result: dict[int, dict[str, Beat]] = {}
        for shard, ids in self._by_shard(list(user_ids)).items():
            async with self.clients[shard].pipeline(transaction=False) as pipe:
                for uid in ids:
                    pipe.hgetall(self._key("c", uid))
                replies = await pipe.execute()
            for uid, raw in zip(ids, replies, strict=True):
                result[uid] = _beats(raw)
        return result

    async def set_busy(self, user_id: int, busy: bool) -> None:
        """Set or clear the user's sticky busy flag."""
        if busy:
            await self._client(user_id).set(self._key("busy", user_id), "1")
        else:
            await self._client(user_id).delete(self._key("busy", user_id))

    async def _mget(self, kind: str, user_ids: Iterable[int]) -> dict[int, bytes | str]:
        found: dict[int, bytes | str] = {}
        for shard, ids in self._by_shard(list(user_ids)).items():
            values = await self.clients[shard].mget([self._key(kind, uid) for uid in ids])
            found.update({uid: v for uid, v in zip(ids, values, strict=True) if v})
        return found

    async def busy(self, user_ids: Iterable[int]) -> set[int]:
        """Return which of the users are busy."""
        return set(await self._mget("busy", user_ids))

    async def swap_state(self, user_id: int, state: str) -> str | None:
        """Store the user's published state; return the one it replaces (atomically)."""
        previous = await self._client(user_id).getset(self._key("state", user_id), state)
        return _text(previous) if previous is not None else None

    async def set_last_seen(self, user_id: int, at: float) -> None:
        """Store when the user was last connected."""
        await self._client(user_id).set(self._key("seen", user_id), f"{at:.3f}")

    async def last_seen(self, user_ids: Iterable[int]) -> dict[int, float]:
        """Return the known last-seen times."""
        return {uid: float(_text(v)) for uid, v in (await self._mget("seen", user_ids)).items()}

    async def stale_users(self, before: float) -> list[int]:
        """Return users whose latest heartbeat is older than `before` (on every shard)."""
        stale: list[int] = []
        for client in self.clients:
            members = await client.zrangebyscore(self._key("live"), "-inf", f"({before}")
            stale += [int(_text(m)) for m in members]
        return stale

    async def forget_user(self, user_id: int) -> None:
        """Drop a user from the heartbeat index (no live connection left)."""
        await self._client(user_id).zrem(self._key("live"), str(user_id))

    async def try_lock(self, name: str, ttl: float) -> bool:
        """Take a named lock for `ttl` seconds if nobody holds it."""
        taken = await self.clients[0].set(
            self._key("lock", name), "1", nx=True, px=max(1, int(ttl * 1000))
        )
        return bool(taken)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """Return a hash a script read with HGETALL (name, value, name, value...) as a dict."""
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def _beats(raw: dict[Any, Any]) -> dict[str, Beat]:
    """Parse a user's connection hash (`name -> "at|idle"`)."""
    beats: dict[str, Beat] = {}
    for name, value in raw.items():
        at, _, idle = _text(value).partition("|")
        beats[_text(name)] = Beat(float(at), idle == "1")
    return beats


_memory = MemoryPresenceStore()


@contextlib.asynccontextmanager
async def open_store() -> AsyncIterator[PresenceStore]:
    """Yield the configured store for one piece of work outside a gateway's event loop.

    Sync code (REST views, signal receivers) runs presence work through `async_to_sync`,
    often on a new event loop each time; the Redis client it opens is closed here.
    """
    if settings.PRESENCE_STORE != "redis":
        yield _memory
        return
    clients = [
        Redis.from_url(
            url,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        )
        for url in shard_urls()
    ]
    store = RedisPresenceStore(clients=clients)
    try:
        yield store
    finally:
        await store.aclose()


def get_store() -> PresenceStore:
    """Return the configured store (`PRESENCE_STORE`: `redis` or `memory`)."""
    if settings.PRESENCE_STORE == "redis":
        return RedisPresenceStore()
    return _memory
