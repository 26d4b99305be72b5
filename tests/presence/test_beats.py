"""A gateway's heartbeat writes, gathered per window (presence.beats) on the real Redis."""

import asyncio
import logging
import uuid
from typing import Any

import pytest

from chatsite.redis import async_clients
from presence.beats import BeatBatch
from presence.state import Beat
from presence.store import get_store

WINDOW = 0.05


@pytest.fixture(autouse=True)
def _short_window(settings: Any) -> None:
    """A short window, and keys of this test's own (user ids repeat between tests)."""
    settings.PRESENCE_WRITE_WINDOW = WINDOW
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"


async def settled(batch: BeatBatch) -> None:
    """Return once `batch` has nothing queued and no write under way."""
    async with asyncio.timeout(10):
        while batch.pending or batch.writing:
            await asyncio.sleep(0.005)


async def _close_clients() -> None:
    for client in async_clients():
        await client.aclose()


def test_queued_beats_are_written_together_once_the_window_ends() -> None:
    async def main() -> tuple[Any, Any]:
        batch = BeatBatch()
        for uid in range(1, 51):
            batch.queue(uid, f"conn-{uid}", lambda: False)
        batch.queue(1, "conn-1b", lambda: True)
        early = await get_store().connections([1, 50])
        await settled(batch)
        late = await get_store().connections([1, 50])
        await _close_clients()
        return early, late

    early, late = asyncio.run(main())

    assert early == {1: {}, 50: {}}, "nothing is written before the window ends"
    assert set(late[1]) == {"conn-1", "conn-1b"} and set(late[50]) == {"conn-50"}
    assert late[1]["conn-1b"].idle and not late[1]["conn-1"].idle


def test_a_queued_beat_writes_the_idle_flag_as_it_is_when_written() -> None:
    """`activity` may change the flag after the beat was queued: the newer flag wins."""
    idle = {"now": False}

    async def main() -> Beat:
        batch = BeatBatch()
        batch.queue(7, "phone", lambda: idle["now"])
        idle["now"] = True  # the socket reported idle before the window ended
        await settled(batch)
        beat = (await get_store().connections([7]))[7]["phone"]
        await _close_clients()
        return beat

    assert asyncio.run(main()).idle is True


def test_a_forgotten_beat_is_never_written() -> None:
    async def main() -> Any:
        batch = BeatBatch()
        batch.queue(8, "closing", lambda: False)
        batch.queue(8, "staying", lambda: False)
        await batch.forget("closing")
        await settled(batch)
        found = (await get_store().connections([8]))[8]
        await _close_clients()
        return found

    assert set(asyncio.run(main())) == {"staying"}


def test_forget_waits_for_a_write_of_the_connection_already_under_way() -> None:
    """A close removes its connection after `forget`: the beat must have landed first."""

    async def main() -> tuple[bool, Any, Any]:
        batch = BeatBatch()
        loop = asyncio.get_running_loop()
        batch.queue(9, "closing", lambda: False)
        batch._flush(loop)  # the window ended: the write is under way, not yet done
        under_way = bool(batch.writing)
        await batch.forget("closing")
        after_forget = (await get_store().connections([9]))[9]
        await get_store().remove(9, ["closing"])  # what the close does next
        await settled(batch)
        final = (await get_store().connections([9]))[9]
        await _close_clients()
        return under_way, after_forget, final

    under_way, after_forget, final = asyncio.run(main())

    assert under_way
    assert set(after_forget) == {"closing"}, "forget returned before the write landed"
    assert final == {}, "no beat re-created the removed connection"


def test_a_write_that_fails_is_logged_and_the_next_window_writes_again(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried: the store's Redis refusing connections for one window (presence is a hint)."""
    working = settings.REDIS_URL

    async def main() -> Any:
        batch = BeatBatch()
        settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
        batch.queue(10, "phone", lambda: False)
        await settled(batch)
        await _close_clients()
        settings.REDIS_URL = working
        batch.queue(10, "phone", lambda: False)
        await settled(batch)
        found = (await get_store().connections([10]))[10]
        await _close_clients()
        return found

    with caplog.at_level(logging.WARNING, logger="presence.beats"):
        found = asyncio.run(main())

    assert "1 presence heartbeats not written" in caplog.text
    assert set(found) == {"phone"}
    assert working == settings.REDIS_URL, "the test put the working Redis back"
