"""Token-bucket rate limits, shared by every gateway process through Redis.

Without Redis (the embedded default, one process) the buckets live in this process.
If Redis fails, the limits that would go to it are decided by this process's own buckets
for `RATE_LIMIT_REDIS_RETRY` seconds (logged once, counted in
`chat_rate_limits_local_total`): a rate limit must not turn a Redis outage into a chat
outage. Only the call that met the failure waited for it (at most
`REDIS_SOCKET_TIMEOUT`); when the time is up, one call tries Redis again while the others
go on deciding here, so a Redis that stays away costs one wait per period, not one per
send.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisError

from chatsite import metrics
from chatsite.redis import sync_client

logger = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV: rate per second, burst, now (s), cost, force (1: take the cost
# even from a bucket without enough tokens, leaving it in debt). Returns {allowed, wait_ms}.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local force = tonumber(ARGV[5]) or 0
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= math.max(cost, 1) then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((math.max(cost, 1) - tokens) / rate * 1000)
  if force == 1 then tokens = tokens - cost end
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, wait_ms}
"""


@dataclass(frozen=True)
class Verdict:
    """Whether a call may go ahead, and if not how many seconds until it may."""

    allowed: bool
    retry_after: float


_local_lock = threading.Lock()
_local: dict[str, tuple[float, float]] = {}

# A Redis client whose rate limits are decided here until the given time.monotonic().
_resting: dict[redis.Redis, float] = {}
_resting_lock = threading.Lock()


def _redis_for(key: str) -> redis.Redis | None:
    """Return the Redis client that decides `key`, or None: decide it in this process.

    None without Redis, and while the key's Redis is resting after a failure (counted
    in `chat_rate_limits_local_total`). The first call after the rest gets the client
    (it tries Redis again) and the rest is pushed on meanwhile, so the other calls do
    not wait on a Redis that may still be away.
    """
    client = sync_client(shard_by=key)
    if client is None or client not in _resting:
        return client
    with _resting_lock:
        until = _resting.get(client)
        if until is None:
            return client
        now = time.monotonic()
        if now < until:
            metrics.RATE_LIMITS_LOCAL.inc()
            return None
        _resting[client] = now + settings.RATE_LIMIT_REDIS_RETRY  # this call tries Redis
        return client


def _redis_failed(client: redis.Redis, exc: RedisError, keys: int) -> None:
    """Decide `client`'s limits here for a while: it failed a call of `keys` keys."""
    with _resting_lock:
        _resting[client] = time.monotonic() + settings.RATE_LIMIT_REDIS_RETRY
    metrics.RATE_LIMITS_LOCAL.inc(keys)
    logger.warning(
        "rate limits decided in this process for %.0f s: Redis failed: %r",
        settings.RATE_LIMIT_REDIS_RETRY,
        exc,
    )


def _redis_answered(client: redis.Redis) -> None:
    """Send `client`'s limits to it again: it answered."""
    if client in _resting:
        with _resting_lock:
            _resting.pop(client, None)


def _take_local(key: str, rate: float, burst: float, now: float, cost: int, force: bool) -> Verdict:
    with _local_lock:
        tokens, ts = _local.get(key, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - ts) * rate)
        if tokens >= max(cost, 1):
            _local[key] = (tokens - cost, now)
            return Verdict(True, 0.0)
        _local[key] = (tokens - cost if force else tokens, now)
        return Verdict(False, (max(cost, 1) - tokens) / rate)


@functools.cache
def _bucket_script(client: redis.Redis) -> Script:
    """Return the bucket script of `client`: EVALSHA, loading it again after NOSCRIPT.

    EVAL sent the whole script with every send (about 0.7 ms and 6% of a busy gateway's
    CPU in the send path's profile); a restarted Redis has forgotten it, which the Script
    object handles.
    """
    return client.register_script(_BUCKET_LUA)


def take(key: str, *, rate: float, burst: float, cost: int = 1) -> Verdict:
    """Take `cost` tokens from bucket `key` (refilled at `rate`/s up to `burst`).

    `cost=0` only asks whether a token is there (a peek), taking nothing.
    """
    return _take(key, rate=rate, burst=burst, cost=cost, force=False)


def take_each(keys: Sequence[str], *, rate: float, burst: float) -> list[Verdict]:
    """Take one token from the bucket of each key, in order; one round trip per shard.

    What `take(key, ...)` for each key would answer (a key named twice takes twice), for
    a gateway's batch of sends: their bucket scripts go to Redis together, pipelined
    (EVALSHA; after a Redis restart forgot the script, one at a time, loading it).
    """
    if len(keys) == 1:  # most batches: no pipeline to build
        return [take(keys[0], rate=rate, burst=burst)]
    now = time.time()
    verdicts: list[Verdict] = [Verdict(True, 0.0)] * len(keys)
    by_client: dict[redis.Redis, list[int]] = {}
    for i, key in enumerate(keys):
        client = _redis_for(key)
        if client is None:
            verdicts[i] = _take_local(key, rate, burst, now, 1, False)
        else:
            by_client.setdefault(client, []).append(i)
    args = [str(rate), str(burst), repr(now), "1", "0"]
    for client, indexes in by_client.items():
        sha = _bucket_script(client).sha
        try:
            with client.pipeline(transaction=False) as pipe:
                for i in indexes:
                    pipe.evalsha(sha, 1, f"{settings.REDIS_KEY_PREFIX}:rl:{keys[i]}", *args)
                replies: list[Any] = pipe.execute()  # type: ignore[no-untyped-call]
        except NoScriptError:
            # A restarted Redis forgot the script: one at a time, which loads it again.
            for i in indexes:
                verdicts[i] = take(keys[i], rate=rate, burst=burst)
            continue
        except RedisError as exc:
            _redis_failed(client, exc, len(indexes))
            for i in indexes:
                verdicts[i] = _take_local(keys[i], rate, burst, now, 1, False)
            continue
        _redis_answered(client)
        for i, (allowed, wait_ms) in zip(indexes, replies, strict=True):
            verdicts[i] = Verdict(bool(allowed), math.ceil(int(wait_ms)) / 1000)
    return verdicts


def take_one_per(
    key: str, *, interval: float, burst: float, kind: metrics.RateLimitKind
) -> Verdict:
    """Take one from a budget of `burst` refilled one per `interval` seconds.

    A refusal is counted under `kind` (`chat_rate_limited_total`).
    """
    verdict = take(key, rate=1.0 / float(interval), burst=float(burst))
    if not verdict.allowed:
        metrics.count_rate_limited(kind)
    return verdict


def charge(key: str, *, rate: float, burst: float, cost: int = 1) -> Verdict:
    """Take `cost` tokens from bucket `key` even if it has fewer, leaving it in debt.

    For counting what already happened (a failed login): calls that passed a peek
    together are all paid for, so running them in parallel buys nothing. The verdict
    says whether the tokens were there.
    """
    return _take(key, rate=rate, burst=burst, cost=cost, force=True)


def _take(key: str, *, rate: float, burst: float, cost: int, force: bool) -> Verdict:
    now = time.time()
    client = _redis_for(key)
    if client is None:
        return _take_local(key, rate, burst, now, cost, force)
    try:
        args = [str(rate), str(burst), repr(now), str(cost), "1" if force else "0"]
        reply: Any = _bucket_script(client)(
            keys=[f"{settings.REDIS_KEY_PREFIX}:rl:{key}"], args=args
        )
        allowed, wait_ms = reply
    except RedisError as exc:
        _redis_failed(client, exc, 1)
        return _take_local(key, rate, burst, now, cost, force)
    _redis_answered(client)
    return Verdict(bool(allowed), math.ceil(int(wait_ms)) / 1000)
