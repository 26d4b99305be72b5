"""`dispatch_in_turn`: a socket's frames and events, handled one at a time, until it stops."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.exceptions import StopConsumer

from chatsite.gateway.socket import FrameSocket, Receive, dispatch_in_turn


def waits_forever(cancelled: asyncio.Event | None = None) -> Receive:
    """Return a source that never gives a message; it sets `cancelled` when its wait ends."""

    async def receive() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            if cancelled is not None:
                cancelled.set()
        raise AssertionError("unreachable")

    return receive


def test_frames_and_events_are_handled_one_at_a_time_in_arrival_order() -> None:
    # Tried: frames and events arrive on both sources while a slow handler is busy. No
    # two messages are ever handled at once, each source's order is kept, and the loop
    # ends with the disconnect's StopConsumer, after which nothing is handled.
    async def scenario() -> tuple[list[Any], int]:
        frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        handled: list[Any] = []
        busy = 0
        most = 0

        async def dispatch(message: dict[str, Any]) -> None:
            nonlocal busy, most
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.01)  # a handler that waits (a database call, a send)
            handled.append(message["n"])
            busy -= 1
            if message["n"] == "bye":
                raise StopConsumer

        for n in range(5):
            frames.put_nowait({"n": f"f{n}"})
            events.put_nowait({"n": f"e{n}"})
        frames.put_nowait({"n": "bye"})
        for n in range(5, 8):
            events.put_nowait({"n": f"e{n}"})
        with pytest.raises(StopConsumer):
            await asyncio.wait_for(dispatch_in_turn([frames.get, events.get], dispatch), 5)
        return handled, most

    handled, most = asyncio.run(scenario())

    assert most == 1
    assert [n for n in handled if n[0] == "f"] == [f"f{n}" for n in range(5)]
    events_seen = [n for n in handled if n[0] == "e"]
    assert events_seen == [f"e{n}" for n in range(len(events_seen))]
    assert handled[-1] == "bye", "nothing is handled after the disconnect"


def test_a_failing_handler_ends_the_loop_with_its_error_and_cancels_the_sources() -> None:
    # Tried: a handler raises (a bug). The error comes out of the loop, and the source
    # that was still waiting is cancelled (channels-redis unsubscribes on that).
    async def scenario() -> bool:
        frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        cancelled = asyncio.Event()

        async def dispatch(message: dict[str, Any]) -> None:
            raise ValueError(message["n"])

        frames.put_nowait({"n": "boom"})
        with pytest.raises(ValueError, match="boom"):
            await dispatch_in_turn([frames.get, waits_forever(cancelled)], dispatch)
        return cancelled.is_set()

    assert asyncio.run(scenario())


def test_a_failure_on_another_source_ends_the_loop_while_the_first_source_waits() -> None:
    # Tried: the first source (read in the caller's own task) has nothing to give; an
    # event on the second source makes the handler raise. The loop ends with that
    # error at once, and the first source's wait is cancelled.
    async def scenario() -> bool:
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        cancelled = asyncio.Event()

        async def dispatch(message: dict[str, Any]) -> None:
            raise StopConsumer

        events.put_nowait({"n": "evicted"})
        loop = asyncio.ensure_future(
            dispatch_in_turn([waits_forever(cancelled), events.get], dispatch)
        )
        done, _ = await asyncio.wait([loop], timeout=5)
        assert loop in done, "the loop went on waiting on the first source"
        with pytest.raises(StopConsumer):
            loop.result()
        return cancelled.is_set()

    assert asyncio.run(scenario())


def test_a_loop_cancelled_from_outside_stops_every_source() -> None:
    # Tried: the server cancels a socket's task (shutdown). The cancellation comes out
    # of the loop (not swallowed) and the other source's task is cancelled too.
    async def scenario() -> bool:
        cancelled = asyncio.Event()

        async def dispatch(message: dict[str, Any]) -> None:
            raise AssertionError("nothing arrives")

        task = asyncio.ensure_future(
            dispatch_in_turn([waits_forever(), waits_forever(cancelled)], dispatch)
        )
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return cancelled.is_set()

    assert asyncio.run(scenario())


def test_a_held_socket_sends_only_the_frame_it_is_held_for_until_it_is_released() -> None:
    # Tried: a socket is held (its pong's log position is being read) and is given a
    # delivery to send, and a typing frame whose sender is then cancelled (its socket
    # closing), and then its pong. The pong goes out at once, the delivery only after
    # the release, and the cancelled sender does not cancel the hold.
    async def scenario() -> list[str]:
        sent: list[str] = []
        socket = FrameSocket()
        socket.server_times_sends = True

        async def base_send(message: dict[str, Any]) -> None:
            sent.append(json.loads(message["text"])["type"])

        socket.base_send = base_send
        hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        socket.held = hold
        delivery = asyncio.create_task(socket.send_frame({"type": "message.created"}))
        typing = asyncio.create_task(socket.send_frame({"type": "typing"}))
        await asyncio.sleep(0.01)
        assert sent == []  # both wait while the socket is held
        typing.cancel()
        await asyncio.sleep(0)
        assert not hold.done()
        assert await socket.send_frame({"type": "pong"}, unheld=True)
        assert sent == ["pong"]
        hold.set_result(None)
        socket.held = None
        assert await asyncio.wait_for(delivery, 5)
        return sent

    assert asyncio.run(scenario()) == ["pong", "message.created"]
