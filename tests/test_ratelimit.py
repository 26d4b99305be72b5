"""The Redis token bucket (chatsite/ratelimit.py), on the real Redis."""

from __future__ import annotations

import uuid

from chatsite.ratelimit import charge, take, take_each
from chatsite.redis import sync_client


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
