"""The Redis token bucket (chatsite/ratelimit.py), on the real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pytest_django.fixtures import SettingsWrapper

from bench.harness import RedisServer
from chatsite.ratelimit import Verdict, charge, take, take_each
from chatsite.redis import forget_clients, sync_client

TIMEOUT = 0.3  # s: REDIS_SOCKET_TIMEOUT of the clients on the private Redis
RETRY = 1.5  # s: RATE_LIMIT_REDIS_RETRY there


def test_a_bucket_refuses_past_its_burst_and_says_when_to_retry() -> None:
    """Tried: 4 takes from a bucket of 3 refilled at 1/s; the 4th is refused, wait about 1 s."""
    key = f"test:{uuid.uuid4().hex}"
    verdicts = [take(key, rate=1.0, burst=3.0) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert 0.5 < verdicts[-1].retry_after <= 1.0


def test_the_bucket_keeps_working_after_redis_forgets_its_script() -> None:
    """Tried: SCRIPT FLUSH (what a Redis restart does) between takes; no error, still enforced."""
    client = sync_client()
    assert client is not None
    key = f"test:{uuid.uuid4().hex}"
    assert take(key, rate=0.01, burst=2.0).allowed
    client.script_flush()
    assert take(key, rate=0.01, burst=2.0).allowed
    client.script_flush()
    assert not take(key, rate=0.01, burst=2.0).allowed


def test_a_charge_past_an_empty_bucket_leaves_it_in_debt() -> None:
    """Tried: a bucket of 2 at 1/s; 2 takes, then 3 charges; the wait grows by 1 s each."""
    key = f"test:{uuid.uuid4().hex}"
    assert take(key, rate=1.0, burst=2.0).allowed
    assert take(key, rate=1.0, burst=2.0).allowed

    charged = [charge(key, rate=1.0, burst=2.0) for _ in range(3)]
    after = take(key, rate=1.0, burst=2.0, cost=0)

    assert [v.allowed for v in charged] == [False, False, False]
    assert not after.allowed
    assert 3.5 < after.retry_after <= 4.0


def test_taking_for_several_keys_at_once_answers_as_one_take_each_would() -> None:
    """Tried: a batch naming one bucket of 3 (at 1/s) four times and another once, then
    the same after SCRIPT FLUSH (a restarted Redis): the 4th take of the first is refused
    with its wait, the other bucket unaffected, and the buckets hold what was taken."""
    client = sync_client()
    assert client is not None
    busy, other = f"test:{uuid.uuid4().hex}", f"test:{uuid.uuid4().hex}"

    verdicts = take_each([busy, busy, other, busy, busy], rate=1.0, burst=3.0)

    assert [v.allowed for v in verdicts] == [True, True, True, True, False]
    assert 0.5 < verdicts[-1].retry_after <= 1.0 and verdicts[0].retry_after == 0.0
    assert not take(busy, rate=1.0, burst=3.0, cost=0).allowed  # nothing left
    assert take(other, rate=1.0, burst=3.0, cost=2).allowed  # two of three left

    client.script_flush()
    fresh = f"test:{uuid.uuid4().hex}"
    again = take_each([fresh, fresh, busy], rate=0.01, burst=1.0)
    assert [v.allowed for v in again] == [True, False, False]


def test_replies_are_read_by_the_c_parser() -> None:
    """Tried: the clients of rate limits, presence and the channel layer read replies with
    hiredis (a requirement; redis-py falls back to its Python parser, 20-25% more CPU a
    round trip, if hiredis is missing or of a version it does not take)."""
    from redis._parsers import _AsyncHiredisParser, _HiredisParser
    from redis.asyncio import Redis as AsyncRedis

    client = sync_client(shard_by="hiredis-check")
    assert client is not None
    connection = client.connection_pool.get_connection("PING")
    try:
        assert isinstance(connection._parser, _HiredisParser)
    finally:
        client.connection_pool.release(connection)
    async_connection = AsyncRedis().connection_pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(async_connection._parser, _AsyncHiredisParser)


@pytest.fixture
def private_redis(tmp_path: Path, settings: SettingsWrapper) -> Iterator[RedisServer]:
    """A Redis of the test's own, the only shard of the rate limits, to pause at will."""
    with RedisServer(tmp_path / "redis") as server:
        settings.REDIS_URL, settings.REDIS_SHARDS = server.url, []
        settings.REDIS_SOCKET_TIMEOUT, settings.RATE_LIMIT_REDIS_RETRY = TIMEOUT, RETRY
        forget_clients()
        try:
            yield server
        finally:
            forget_clients()


def local_decisions() -> float:
    return REGISTRY.get_sample_value("chat_rate_limits_local_total") or 0.0


def timed(call: Callable[[], Verdict]) -> tuple[Verdict, float]:
    started = time.monotonic()
    verdict = call()
    return verdict, time.monotonic() - started


def test_a_paused_redis_costs_one_wait_and_the_limit_holds_in_the_process(
    private_redis: RedisServer,
) -> None:
    """Tried: Redis holds every command (CLIENT PAUSE ALL, 4 s) while a user sends 6 times
    from a bucket of 3 at 0.01/s. Before, each take waited out the socket timeout and was
    let through unlimited (with 8 database threads a gateway then stored at most 8 sends
    a second). Now only the first waits; all are decided at once by this process's own
    bucket, which refuses past the burst; and once Redis is back and the rest is over,
    the limits go to Redis again."""
    key = f"test:{uuid.uuid4().hex}"
    assert take(key, rate=0.01, burst=3.0).allowed  # the connection is open; Redis has 2 left
    before = local_decisions()
    private_redis.pause(4.0)

    first, first_wait = timed(lambda: take(key, rate=0.01, burst=3.0))
    rest = [timed(lambda: take(key, rate=0.01, burst=3.0)) for _ in range(5)]
    batch, batch_wait = timed(lambda: take_each([key, key], rate=0.01, burst=3.0)[0])

    assert TIMEOUT * 0.9 <= first_wait < TIMEOUT + 0.5, "the first take waits for Redis, once"
    assert max(wait for _, wait in rest) < TIMEOUT / 2 and batch_wait < TIMEOUT / 2
    # This process's bucket starts full: 3 allowed (the first included), then refused.
    assert [first.allowed] + [v.allowed for v, _ in rest] == [True, True, True, False, False, False]
    assert not batch.allowed and rest[-1][0].retry_after > 1.0
    assert local_decisions() == before + 8

    time.sleep(4.0 + 0.2 - first_wait - 0.1)  # Redis is back, and the rest is over
    back, back_wait = timed(lambda: take(key, rate=0.01, burst=3.0))
    assert back.allowed and back_wait < TIMEOUT * 0.9, "Redis had 2 tokens left: it decides again"
    assert take(key, rate=0.01, burst=3.0).allowed
    assert not take(key, rate=0.01, burst=3.0).allowed  # Redis's bucket is now empty
    assert local_decisions() == before + 8


def test_after_the_rest_one_call_tries_redis_while_the_others_go_on(
    private_redis: RedisServer,
) -> None:
    """Tried: Redis paused for longer than the rest after its first failure. When the rest
    is over, one call tries Redis again and waits out the timeout; calls made meanwhile
    from another thread (the gateway's other database threads) do not wait for it."""
    key = f"test:{uuid.uuid4().hex}"
    assert take(key, rate=100.0, burst=100.0).allowed
    private_redis.pause(RETRY + 2.0)
    _, failed_wait = timed(lambda: take(key, rate=100.0, burst=100.0))
    assert failed_wait >= TIMEOUT * 0.9
    time.sleep(RETRY + 0.05)

    others: list[float] = []

    def meanwhile() -> None:
        time.sleep(0.1)  # the probe below has taken its turn by now
        others.extend(timed(lambda: take(key, rate=100.0, burst=100.0))[1] for _ in range(5))

    thread = threading.Thread(target=meanwhile)
    thread.start()
    _, probe = timed(lambda: take(key, rate=100.0, burst=100.0))
    thread.join()

    assert probe >= TIMEOUT * 0.9, "the first call after the rest tries Redis"
    assert len(others) == 5 and max(others) < TIMEOUT / 2, "the others are decided here"
