"""`Inbox` and `Flag`: a socket's queues and send flag, as asyncio's queue and event behave."""

from __future__ import annotations

import asyncio

import pytest

from chatsite.gateway.inbox import Flag, Inbox


def test_an_inbox_hands_items_out_in_order_and_a_getter_waits_for_the_next() -> None:
    async def scenario() -> list[int]:
        inbox = Inbox()
        for n in range(3):
            inbox.put_nowait(n)
        got = [await inbox.get() for _ in range(3)]
        assert inbox.empty()
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        inbox.put_nowait(3)
        got.append(await asyncio.wait_for(waiting, 5))
        with pytest.raises(asyncio.QueueEmpty):
            inbox.get_nowait()
        return got

    assert asyncio.run(scenario()) == [0, 1, 2, 3]


def test_a_getter_cancelled_after_it_was_woken_passes_the_item_to_the_next() -> None:
    # Tried: two getters wait; an item arrives and wakes the first, which is cancelled
    # before it runs. The item is not lost: the second getter gets it.
    async def scenario() -> object:
        inbox = Inbox()
        first = asyncio.ensure_future(inbox.get())
        second = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put_nowait("item")
        first.cancel()
        got = await asyncio.wait_for(second, 5)
        assert first.cancelled()
        assert inbox.empty()
        return got

    assert asyncio.run(scenario()) == "item"


def test_a_bounded_inbox_says_when_it_is_full() -> None:
    inbox = Inbox(2)
    inbox.put_nowait(1)
    assert not inbox.full()
    inbox.put_nowait(2)
    assert inbox.full()
    assert not Inbox().full()


def test_a_flag_wakes_every_waiter_when_set_and_blocks_again_once_cleared() -> None:
    async def scenario() -> None:
        flag = Flag()
        assert not flag.is_set()
        waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
        cancelled = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        flag.set()
        assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True, True]
        assert await flag.wait()  # set: at once
        flag.clear()
        again = asyncio.ensure_future(flag.wait())
        await asyncio.sleep(0.01)
        assert not again.done()
        flag.set()
        assert await asyncio.wait_for(again, 5)

    asyncio.run(scenario())
