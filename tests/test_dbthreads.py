"""The gateway's database pool helpers: `Coalescer` gathers concurrent lookups; `db_by`
drops work that no thread could start in time."""

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from chatsite.gateway.dbthreads import HANDSHAKE_SHARE, Coalescer, Lanes, Shed, db, db_by


def test_concurrent_lookups_share_one_fetch_and_each_gets_its_value() -> None:
    calls: list[list[int]] = []

    def fetch(keys: list[int]) -> dict[int, int]:
        calls.append(sorted(keys))
        return {k: k * 10 for k in keys if k != 3}

    coalescer: Coalescer[int, int] = Coalescer(fetch, window=0.01)

    async def scenario() -> list[int | None]:
        return await asyncio.gather(*(coalescer.get(k) for k in (1, 2, 2, 3)))

    assert asyncio.run(scenario()) == [10, 20, 20, None]  # 3 was not answered
    assert calls == [[1, 2, 3]]


def test_a_failed_fetch_fails_every_waiter_and_the_next_window_fetches_again() -> None:
    attempts: list[int] = []

    def fetch(keys: list[int]) -> dict[int, int]:
        attempts.append(len(keys))
        if len(attempts) == 1:
            raise ConnectionError("database down")
        return dict.fromkeys(keys, 1)

    coalescer: Coalescer[int, int] = Coalescer(fetch, window=0.01)

    async def scenario() -> tuple[Any, int | None]:
        first = await asyncio.gather(coalescer.get(1), coalescer.get(2), return_exceptions=True)
        return first, await coalescer.get(1)

    first, again = asyncio.run(scenario())
    assert [type(r) for r in first] == [ConnectionError, ConnectionError]
    assert again == 1
    assert attempts == [2, 1]


def test_each_event_loop_gets_its_own_batches() -> None:
    coalescer: Coalescer[int, int] = Coalescer(lambda keys: dict.fromkeys(keys, 7), window=0.0)
    assert asyncio.run(coalescer.get(1)) == 7
    assert asyncio.run(coalescer.get(2)) == 7  # a new loop: no futures of the old one


def test_work_no_thread_starts_by_its_deadline_is_dropped_unstarted() -> None:
    """Tried: every database thread busy for 0.5 s; a handshake's lookup with a 0.1 s
    deadline waits behind them and is dropped (`Shed`) without running, while one with a
    generous deadline and plain `db` work queued beside it run when the threads free up."""
    release = threading.Event()
    holding = threading.Semaphore(0)
    ran: list[str] = []

    def hold() -> None:
        holding.release()
        release.wait(10)

    def lookup(name: str) -> str:
        ran.append(name)
        return name

    async def scenario() -> list[Any]:
        busy = [db(hold) for _ in range(settings.WS_DB_THREADS)]
        for _ in busy:  # every thread is busy before the handshakes queue
            await asyncio.to_thread(holding.acquire, timeout=10)
        now = time.monotonic()
        late = db_by(now + 0.1, lookup, name="late")
        patient = db_by(now + 30, lookup, name="patient")
        plain = db(lookup, name="plain")
        asyncio.get_running_loop().call_later(0.5, release.set)
        await asyncio.gather(*busy)
        return list(await asyncio.gather(late, patient, plain, return_exceptions=True))

    late, patient, plain = asyncio.run(scenario())
    assert isinstance(late, Shed) and "lookup not started by its deadline" in str(late)
    assert (patient, plain) == ("patient", "plain")
    assert sorted(ran) == ["patient", "plain"]


def test_no_deadline_means_no_limit() -> None:
    async def answer(start_by: float | None) -> int:
        return await db_by(start_by, lambda: 42)

    assert asyncio.run(answer(None)) == 42
    with pytest.raises(Shed):
        asyncio.run(answer(time.monotonic() - 1))


def _run_on_one_thread(queue: Callable[[Lanes, Callable[[str], None]], list[Any]]) -> list[str]:
    """Return the order one thread ran the jobs `queue` put while it was busy."""
    lanes = Lanes(1, "test-lanes")
    gate = threading.Event()
    order: list[str] = []
    lanes.submit(gate.wait, 10)  # pick 1: the thread is busy until every job is queued
    futures = queue(lanes, order.append)
    gate.set()
    for future in futures:
        future.result(timeout=10)
    lanes.shutdown()
    return order


def test_live_work_is_taken_before_handshakes_queued_ahead_of_it() -> None:
    """Tried: 6 handshakes queued, then 3 sends of open sessions, behind a busy thread.

    The sends go first though queued last, except that every fourth pick goes to a
    waiting handshake; each queue keeps its own order."""

    def queue(lanes: Lanes, run: Callable[[str], None]) -> list[Any]:
        shakes = [lanes.submit_handshake(run, f"handshake-{i}") for i in range(6)]
        return [*shakes, *(lanes.submit(run, f"send-{i}") for i in range(3))]

    assert HANDSHAKE_SHARE == 4
    assert _run_on_one_thread(queue) == [
        "send-0",
        "send-1",
        "handshake-0",  # pick 4
        "send-2",
        *(f"handshake-{i}" for i in range(1, 6)),
    ]


def test_handshakes_get_their_share_under_a_steady_live_load() -> None:
    """Tried: 8 live jobs always waiting ahead; each fourth pick still takes a handshake."""

    def queue(lanes: Lanes, run: Callable[[str], None]) -> list[Any]:
        live = [lanes.submit(run, f"live-{i}") for i in range(8)]
        return [*live, *(lanes.submit_handshake(run, f"handshake-{i}") for i in range(2))]

    assert _run_on_one_thread(queue) == [
        "live-0",
        "live-1",
        "handshake-0",  # pick 4
        "live-2",
        "live-3",
        "live-4",
        "handshake-1",  # pick 8
        "live-5",
        "live-6",
        "live-7",
    ]


def test_work_that_raises_fails_its_caller_and_the_thread_goes_on() -> None:
    def boom() -> None:
        raise ValueError("no such row")

    async def scenario() -> tuple[Any, int]:
        failed = await asyncio.gather(db(boom), db_by(None, boom), return_exceptions=True)
        return failed, await db(lambda: 7)

    failed, after = asyncio.run(scenario())
    assert [type(f) for f in failed] == [ValueError, ValueError]
    assert after == 7
