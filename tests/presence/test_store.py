"""The presence store contract: the same tests against Redis and the in-process store."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from redis.asyncio import Redis

from bench.harness import RedisServer
from presence.state import Beat
from presence.store import MemoryPresenceStore, PresenceStore, RedisPresenceStore

T = TypeVar("T")


# Two shards: two databases of the test's Redis server (keys are routed by user id).
SHARD_DBS = (13, 14)


def shard_clients() -> list[Redis]:
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    return [Redis.from_url(f"{base}/{db}") for db in SHARD_DBS]


@pytest.fixture(params=["memory", "redis", "redis-sharded"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], PresenceStore]:
    """Return a factory of fresh stores of one kind (Redis: the real server, own prefix)."""
    prefix = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        return MemoryPresenceStore
    if request.param == "redis-sharded":
        return lambda: RedisPresenceStore(clients=shard_clients(), prefix=prefix)
    return lambda: RedisPresenceStore(prefix=prefix)


def run(make: Callable[[], PresenceStore], work: Callable[[PresenceStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = make()
        try:
            return await work(store)
        finally:
            if isinstance(store, RedisPresenceStore):
                await store.aclose()

    return asyncio.run(main())


def test_beats_are_kept_per_connection_with_their_idle_flag(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.beat(7, "conn-a", idle=False, now=100.0)
        await store.beat(7, "conn-b", idle=True, now=101.5)
        await store.beat(7, "conn-a", idle=True, now=102.25)
        return await store.connections([7, 8])

    assert run(make_store, work) == {
        7: {"conn-a": Beat(102.25, True), "conn-b": Beat(101.5, True)},
        8: {},
    }


def test_many_beats_are_kept_as_one_by_one_and_index_each_users_latest(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.beat(7, "old", idle=False, now=50.0)
        await store.beat_many(
            [
                (7, "a", Beat(100.0, False)),
                (7, "b", Beat(101.5, True)),
                *((uid, f"c{uid}", Beat(90.0 + uid, False)) for uid in range(20, 40)),
            ]
        )
        await store.beat_many([])
        return await store.connections([7, 20, 39]), sorted(await store.stale_users(before=101.0))

    connections, stale = run(make_store, work)

    assert connections == {
        7: {"old": Beat(50.0, False), "a": Beat(100.0, False), "b": Beat(101.5, True)},
        20: {"c20": Beat(110.0, False)},
        39: {"c39": Beat(129.0, False)},
    }
    assert stale == [], "user 7's latest beat (101.5) indexes them, not their oldest"


def test_many_beats_reach_a_redis_that_forgot_the_script_and_keep_their_ttl() -> None:
    # Tried: Redis lost its scripts (a restart, SCRIPT FLUSH) between two gathered
    # writes. The second write loads the script again instead of failing, and every
    # user's connections hash expires as a single beat's does.
    prefix = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"

    async def work(store: PresenceStore) -> Any:
        assert isinstance(store, RedisPresenceStore)
        await store.beat_many([(5, "a", Beat(10.0, False))])
        await store.clients[0].script_flush()
        await store.beat_many([(5, "b", Beat(11.0, True)), (6, "c", Beat(12.0, False))])
        ttls = [await store.clients[0].ttl(f"{prefix}:pres:c:{uid}") for uid in (5, 6)]
        return await store.connections([5, 6]), ttls, store._ttl

    connections, ttls, ttl = run(lambda: RedisPresenceStore(prefix=prefix), work)

    assert connections == {
        5: {"a": Beat(10.0, False), "b": Beat(11.0, True)},
        6: {"c": Beat(12.0, False)},
    }
    assert all(ttl - 5 <= left <= ttl for left in ttls), (ttls, ttl)


def test_removing_connections_forgets_only_those(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.beat(7, "a", idle=False, now=1.0)
        await store.beat(7, "b", idle=False, now=1.0)
        await store.remove(7, ["a", "never-there"])
        await store.remove(7, [])
        return await store.connections([7])

    assert run(make_store, work) == {7: {"b": Beat(1.0, False)}}


def test_closing_a_connection_forgets_it_and_reads_the_others(make_store) -> None:
    """Tried: closing one of two connections, the last one, and one never opened."""

    async def work(store: PresenceStore) -> Any:
        await store.beat(7, "a", idle=False, now=1.0)
        await store.beat(7, "b", idle=True, now=2.0)
        return (
            await store.close_connection(7, "a"),
            await store.close_connection(7, "b"),
            await store.close_connection(7, "never-there"),
            await store.connections([7]),
        )

    assert run(make_store, work) == ({"b": Beat(2.0, True)}, {}, {}, {7: {}})


def test_opening_a_connection_beats_sets_busy_and_swaps_the_state_at_once(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.beat(7, "old", idle=True, now=5.0)
        await store.set_busy(7, True)
        first = await store.open_connection(7, "new", busy=False, now=9.5, state="online", limit=10)
        second = await store.open_connection(
            7, "newer", busy=True, now=10.0, state="busy", limit=10
        )
        return (
            first,
            second,
            await store.connections([7]),
            await store.busy([7]),
            await store.stale_users(before=9.9),
            await store.swap_state(7, "online"),
        )

    first, second, connections, busy, stale, state = run(make_store, work)
    # What was there before each open, and the state each one replaced.
    assert first == ({"old": Beat(5.0, True)}, None, [])
    assert second == ({"old": Beat(5.0, True), "new": Beat(9.5, False)}, "online", [])
    assert connections == {
        7: {"old": Beat(5.0, True), "new": Beat(9.5, False), "newer": Beat(10.0, False)}
    }
    assert busy == {7}  # the last open said busy
    assert stale == []  # the open counts as the user's latest heartbeat
    assert state == "busy"


def test_a_connection_past_the_cap_evicts_the_oldest_and_a_closed_one_frees_its_place(
    make_store,
) -> None:
    """Tried: three connections of one user under a cap of two, one at a time, then a
    closed one forgotten, then two more: each open names the oldest past the cap (by
    connect time) and drops it from the registry; another user's connections are not
    touched. Without the close freeing its place, opening "d" would evict "b"."""

    async def work(store: PresenceStore) -> list[list[str]]:
        async def open_(user: int, name: str, now: float) -> list[str]:
            opened = await store.open_connection(
                user, name, busy=False, now=now, state="online", limit=2
            )
            return opened.evicted

        seen = [await open_(8, "other-user", 0.5)]
        for n, name in enumerate(("a", "b", "c")):
            seen.append(await open_(7, name, 1.0 + n))
        await store.close_connection(7, "b")
        seen.append(await open_(7, "d", 4.0))
        seen.append(await open_(7, "e", 5.0))
        seen.append(await open_(8, "other-again", 6.0))
        return seen

    assert run(make_store, work) == [[], [], [], ["a"], [], ["c"], []]


def test_opens_made_at_once_answer_each_as_if_made_one_after_the_other(make_store) -> None:
    """Tried: a burst of handshakes, 40 opens of 10 users at once (a Redis store sends
    those that arrive while one runs in one script call). Each must get what it would
    have got alone, in the order asked: the connections before it, the state it replaced,
    what it evicted past a cap of 3 (users 1-10 opened one at a time, users 101-110 all
    at once)."""

    def opens(base: int) -> list[tuple[int, str, bool, float, str]]:
        return [
            (base + n % 10, f"c{n}", n % 7 == 0, 10.0 + n, ("online", "busy")[n % 7 == 0])
            for n in range(40)
        ]

    async def work(store: PresenceStore) -> tuple[list[Any], list[Any], Any]:
        async def open_(user: int, name: str, busy: bool, now: float, state: str) -> Any:
            return await store.open_connection(user, name, busy=busy, now=now, state=state, limit=3)

        alone = [await open_(*op) for op in opens(1)]
        together = await asyncio.gather(*(open_(*op) for op in opens(101)))
        after = await store.connections([101, 110])
        return alone, list(together), after

    alone, together, after = run(make_store, work)
    assert together == alone
    assert [len(o.known) for o in together[:10]] == [0] * 10
    assert together[30].known == {
        "c0": Beat(10.0, False),
        "c10": Beat(20.0, False),
        "c20": Beat(30.0, False),
    }
    assert together[30].evicted == ["c0"]
    assert sorted(after[101]) == ["c0", "c10", "c20", "c30"]  # the registry evicts, not this


def test_busy_is_sticky_until_cleared(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.set_busy(1, True)
        await store.set_busy(2, True)
        await store.set_busy(2, False)
        return await store.busy([1, 2, 3]), await store.busy([])

    assert run(make_store, work) == ({1}, set())


def test_swap_state_returns_the_previous_state(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        return [
            await store.swap_state(5, "online"),
            await store.swap_state(5, "away"),
            await store.swap_state(5, "away"),
        ]

    assert run(make_store, work) == [None, "online", "away"]


def test_last_seen_is_stored_per_user(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.set_last_seen(3, 1700000000.5)
        return await store.last_seen([3, 4]), await store.last_seen([])

    assert run(make_store, work) == ({3: 1700000000.5}, {})


def test_stale_users_are_those_whose_latest_beat_is_older(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        await store.beat(1, "a", idle=False, now=10.0)
        await store.beat(2, "a", idle=False, now=10.0)
        await store.beat(2, "b", idle=False, now=50.0)  # a newer beat keeps user 2 fresh
        await store.beat(3, "a", idle=False, now=30.0)
        stale = sorted(await store.stale_users(before=40.0))
        await store.forget_user(1)
        return stale, sorted(await store.stale_users(before=40.0))

    assert run(make_store, work) == ([1, 3], [3])


def test_a_lock_is_held_until_it_expires(make_store) -> None:
    async def work(store: PresenceStore) -> Any:
        first = await store.try_lock("sweep", 0.3)
        second = await store.try_lock("sweep", 0.3)
        other = await store.try_lock("other", 0.3)
        await asyncio.sleep(0.4)  # time is the subject: the lock's expiry
        return first, second, other, await store.try_lock("sweep", 0.3)

    assert run(make_store, work) == (True, False, True, True)


def test_a_sharded_store_spreads_users_over_both_shards_and_sweeps_them_all() -> None:
    prefix = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"

    async def main() -> tuple[list[int], list[int]]:
        clients = shard_clients()
        store = RedisPresenceStore(clients=clients, prefix=prefix)
        for uid in range(1, 21):
            await store.beat(uid, f"conn-{uid}", idle=False, now=100.0 + uid)
        per_shard = [len(await c.keys(f"{prefix}:pres:c:*")) for c in clients]
        stale = sorted(await store.stale_users(before=111.0))
        for client in clients:
            await client.aclose()
        return per_shard, stale

    per_shard, stale = asyncio.run(main())

    assert sum(per_shard) == 20 and all(n > 0 for n in per_shard), per_shard
    assert stale == list(range(1, 11)), "the sweep reads every shard's index"


def test_a_burst_of_opens_is_one_script_call_not_one_each(tmp_path: Path) -> None:
    """Tried: 300 handshakes of a gateway open their presence at once, on a Redis of its
    own (its command counts are this test's alone). They used to be 300 EVALSHA calls,
    each a command to build and a reply to read on the gateway; now those that arrive
    while one runs go together."""

    async def work(store: PresenceStore) -> list[Any]:
        return list(
            await asyncio.gather(
                *(
                    store.open_connection(n, "c", busy=False, now=1.0, state="online", limit=5)
                    for n in range(300)
                )
            )
        )

    with RedisServer(tmp_path / "redis") as server:
        opened = run(lambda: RedisPresenceStore(clients=[Redis.from_url(server.url)]), work)
        with server.client() as client:
            stats = client.info("commandstats")
    calls = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    assert all(o.known == {} and o.previous is None and o.evicted == [] for o in opened)
    assert 1 <= calls <= 3, calls
