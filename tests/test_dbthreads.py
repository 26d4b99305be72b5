"""The gateway's database pool helpers: `Coalescer` gathers concurrent lookups."""

import asyncio
from typing import Any

from chatsite.gateway.dbthreads import Coalescer


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
