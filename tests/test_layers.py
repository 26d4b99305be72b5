"""The gateways' channel layer on the real Redis: queued shard operations.

Each shard's PUBLISH, SUBSCRIBE and UNSUBSCRIBE calls go through one ordered queue
(`chatsite.layers._Shard`). What the tests hold it to: the order of the calls is the
order of the effects (a group's events arrive in the order they were sent, a leave
then a join ends subscribed), concurrent handshakes share SUBSCRIBE commands, a failure
reaches the callers whose operations it hit, and a join returns once Redis has the
subscription (or, Redis paused, after a bounded wait).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from prometheus_client import REGISTRY
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.harness import RedisServer
from chatsite.layers import SUBSCRIBE_TIMEOUT, BoundedPubSubChannelLayer

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def make_layer(prefix: str, url: str | None = None) -> BoundedPubSubChannelLayer:
    return BoundedPubSubChannelLayer(hosts=[url or settings.REDIS_URL], prefix=prefix)


async def in_group(group: str) -> tuple[Any, Any, str]:
    """Return a sending layer, a receiving layer and its channel in `group` (own prefix)."""
    prefix = f"layer-{uuid.uuid4().hex[:8]}"
    sender, receiver = make_layer(prefix), make_layer(prefix)
    channel = await receiver.new_channel()
    await receiver.group_add(group, channel)
    return sender, receiver, channel


async def receive_all(layer: Any, channel: str, count: int) -> list[Any]:
    return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]


async def count_subscribes(prefix: str, during: Callable[[], Awaitable[None]]) -> int:
    """Run `during` and count the SUBSCRIBE commands naming `prefix` that Redis saw."""
    client = aioredis.from_url(settings.REDIS_URL)  # type: ignore[no-untyped-call]
    try:
        async with client.monitor() as monitor:
            await asyncio.sleep(0.1)  # MONITOR is on before the first command
            # MONITOR shows every client's commands, other test runs' too (tests/shards.py
            # runs several at once): read until an ECHO sent after `during` comes through.
            # `during` awaits its subscribes, and the ECHO goes on a connection opened after
            # they were written, so Redis logs it after them.
            end = f"ECHO {prefix}-end"
            commands: list[str] = []

            async def read() -> None:
                while (text := (await monitor.next_command())["command"]) != end:
                    commands.append(text)

            reader = asyncio.ensure_future(read())
            await during()
            marker = aioredis.from_url(settings.REDIS_URL)  # type: ignore[no-untyped-call]
            try:
                await marker.echo(end.removeprefix("ECHO "))
            finally:
                await marker.aclose()
            await asyncio.wait_for(reader, 30)
            seen = sum(1 for text in commands if text.startswith("SUBSCRIBE ") and prefix in text)
    finally:
        await client.aclose()
    return seen


def test_a_thousand_concurrent_group_sends_arrive_complete_and_in_order() -> None:
    async def scenario() -> list[Any]:
        sender, receiver, channel = await in_group("conv.1")
        # Sent all at once, as the fan-out queues and sockets of a busy gateway do.
        await asyncio.gather(
            *(sender.group_send("conv.1", {"type": "e", "n": n}) for n in range(1000))
        )
        got = await receive_all(receiver, channel, 1000)
        await sender.flush()
        await receiver.flush()
        return [m["n"] for m in got]

    assert run(scenario) == list(range(1000))


def test_three_hundred_handshakes_at_once_share_few_subscribe_commands() -> None:
    prefix = f"layer-{uuid.uuid4().hex[:8]}"
    channels: list[str] = []

    async def scenario() -> list[Any]:
        layer, sender = make_layer(prefix), make_layer(prefix)

        async def handshake(n: int) -> None:
            channel = await layer.new_channel()
            await layer.group_add(f"user.{n}", channel)
            await layer.group_add("conv.shared", channel)  # mostly subscribed already
            channels.append(channel)

        async def all_handshakes() -> None:
            await asyncio.gather(*(handshake(n) for n in range(300)))

        commands = await count_subscribes(prefix, all_handshakes)
        await sender.group_send("conv.shared", {"type": "e", "n": 1})
        for n in range(300):
            await sender.group_send(f"user.{n}", {"type": "e", "n": n})
        got = [await receive_all(layer, channel, 2) for channel in channels]
        await layer.flush()
        await sender.flush()
        return [commands, got]

    commands, got = run(scenario)
    # 300 sockets: 300 own channels, 300 user groups and one shared group, 601 channels.
    assert len(got) == 300
    assert all(first == {"type": "e", "n": 1} for first, _ in got)
    assert sorted(second["n"] for _, second in got) == list(range(300))
    # channels-redis sent one SUBSCRIBE per channel (601); queued, they share commands.
    assert 1 <= commands <= 60, commands


def test_leaving_and_joining_a_group_at_once_ends_in_the_group() -> None:
    async def scenario() -> list[Any]:
        sender, layer, channel = await in_group("conv.9")
        # The last member leaves (UNSUBSCRIBE queued) and joins again before it ran.
        leave = asyncio.ensure_future(layer.group_discard("conv.9", channel))
        join = asyncio.ensure_future(layer.group_add("conv.9", channel))
        await asyncio.gather(leave, join)
        await sender.group_send("conv.9", {"type": "e", "n": 9})
        got = await receive_all(layer, channel, 1)
        # And the other way round: joined, then the leave is the last word.
        await asyncio.gather(
            layer.group_add("conv.9", channel), layer.group_discard("conv.9", channel)
        )
        await sender.group_send("conv.9", {"type": "e", "n": 10})
        await sender.send(channel, {"type": "e", "n": 11})
        got += await receive_all(layer, channel, 1)
        await layer.flush()
        await sender.flush()
        return got

    assert run(scenario) == [{"type": "e", "n": 9}, {"type": "e", "n": 11}]


def test_a_publish_to_an_unreachable_redis_fails_its_caller_and_the_next_one_too() -> None:
    prefix = f"layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[Any]:
        # Nothing listens on port 9 of 127.0.0.1 (discard): every connect is refused.
        layer = make_layer(prefix, "redis://127.0.0.1:9/0")
        outcomes = []
        for _attempt in range(2):
            try:
                await asyncio.wait_for(layer.group_send("conv.1", {"type": "e"}), 10)
            except (RedisConnectionError, OSError) as exc:
                outcomes.append(type(exc).__name__)
        await layer.flush()
        return outcomes

    # Tried: a group send with Redis down; the caller hears the failure (the fan-out
    # counts it as publish_failed) instead of waiting forever, and the queue goes on.
    assert len(run(scenario)) == 2


def test_a_caller_that_stops_waiting_drops_its_publish_and_the_queue_goes_on() -> None:
    async def scenario() -> list[Any]:
        sender, receiver, channel = await in_group("conv.2")
        # Cancelled before the drain ran: never published (a fan-out timeout).
        dropped = [asyncio.ensure_future(sender.group_send("conv.2", {"n": -1})) for _ in range(2)]
        kept = asyncio.ensure_future(sender.group_send("conv.2", {"type": "e", "n": 1}))
        await asyncio.sleep(0)  # all three are queued; the queue has not run yet
        for future in dropped:
            future.cancel()
        await kept
        await sender.group_send("conv.2", {"type": "e", "n": 2})
        got = await receive_all(receiver, channel, 2)
        await sender.flush()
        await receiver.flush()
        return got

    assert run(scenario) == [{"type": "e", "n": 1}, {"type": "e", "n": 2}]


def test_an_event_is_decoded_once_for_all_the_sockets_of_a_group_in_a_process() -> None:
    # Tried: three sockets of one gateway in a group, one event. channels-redis decoded it
    # once per socket, so each got a dict of its own and the frame was JSON-encoded once
    # per socket too; now they share one decoded event (no handler changes an event).
    async def scenario() -> tuple[list[Any], Any]:
        sender, receiver, first = await in_group("conv.2")
        others = [await receiver.new_channel() for _ in range(2)]
        for channel in others:
            await receiver.group_add("conv.2", channel)
        await sender.group_send("conv.2", {"type": "e", "frame": {"type": "x", "n": 1}})
        got = [await asyncio.wait_for(receiver.receive(c), 5) for c in [first, *others]]
        await sender.send(first, {"type": "direct", "n": 2})  # a socket's own channel
        direct = await asyncio.wait_for(receiver.receive(first), 5)
        await sender.flush()
        await receiver.flush()
        return got, direct

    got, direct = run(scenario)
    assert got[0] == {"type": "e", "frame": {"type": "x", "n": 1}}
    assert all(event is got[0] for event in got)
    assert direct == {"type": "direct", "n": 2}


def test_a_message_that_is_no_event_is_dropped_and_counted_and_the_next_event_arrives() -> None:
    # Tried: bytes that are not msgpack published on a group's Redis channel (a stray
    # client, a layer of another version). The receiving task must not stop for it.
    dropped = "chat_fanout_events_dropped_total"
    before = REGISTRY.get_sample_value(dropped, {"reason": "undecodable"}) or 0.0

    async def scenario() -> Any:
        sender, receiver, channel = await in_group("conv.3")
        raw = aioredis.from_url(settings.REDIS_URL)  # type: ignore[no-untyped-call]
        try:
            name = receiver._get_layer()._get_group_channel_name("conv.3")
            await raw.publish(name, b"\xc1" * 16)
        finally:
            await raw.aclose()
        await sender.group_send("conv.3", {"type": "e", "n": 3})
        event = await asyncio.wait_for(receiver.receive(channel), 5)
        await sender.flush()
        await receiver.flush()
        return event

    assert run(scenario) == {"type": "e", "n": 3}
    assert (REGISTRY.get_sample_value(dropped, {"reason": "undecodable"}) or 0.0) == before + 1


async def paused(server: RedisServer, seconds: float) -> tuple[Any, Any, str]:
    """Return a layer, a sender and the layer's channel, their connections open, once
    `server` holds every command for `seconds` (CLIENT PAUSE ALL)."""
    layer, sender = make_layer("pause", server.url), make_layer("pause", server.url)
    channel = await layer.new_channel()  # its own channel subscribed before the pause
    await sender.group_send("warm", {"type": "e"})  # the sender's connection is open
    await asyncio.to_thread(server.pause, seconds)
    return layer, sender, channel


async def publish_and_close(layer: Any, sender: Any, channel: str, group: str, n: int) -> Any:
    """Send event `n` to `group`, return what reaches `channel`, and close both layers."""
    await sender.group_send(group, {"type": "e", "n": n})
    event = await asyncio.wait_for(layer.receive(channel), 5)
    await layer.flush()
    await sender.flush()
    return event


def test_a_join_returns_only_once_redis_has_the_subscription(tmp_path: Path) -> None:
    # Tried: a socket joins a group while its Redis holds every command (CLIENT PAUSE ALL,
    # as a Redis busy with a long command does). channels-redis counted the join done
    # once SUBSCRIBE was written: the gateway told its client it was ready, and an event
    # Redis handled before the SUBSCRIBE was missed live. The join must wait for Redis.
    pause = 0.6  # s, under SUBSCRIBE_TIMEOUT: the join waits for Redis, not the timeout
    assert pause < SUBSCRIBE_TIMEOUT

    async def scenario() -> tuple[bool, Any]:
        layer, sender, channel = await paused(server, pause)
        join = asyncio.ensure_future(layer.group_add("conv.5", channel))
        done, _ = await asyncio.wait({join}, timeout=pause / 2)
        returned_during_pause = bool(done)
        await asyncio.wait_for(join, 10)
        # No sleep: the publish goes out the moment the join returns, on another
        # connection, as the other gateway's would.
        event = await publish_and_close(layer, sender, channel, "conv.5", 5)
        return returned_during_pause, event

    with RedisServer(tmp_path / "redis") as server:
        returned_during_pause, event = run(scenario)
    assert not returned_during_pause, "the join returned before Redis processed SUBSCRIBE"
    assert event == {"type": "e", "n": 5}


def test_a_join_goes_on_without_a_paused_redis_after_a_bounded_wait(tmp_path: Path) -> None:
    # Tried: Redis paused for longer than a join may wait. The socket's handshake must not
    # hang on it: the join returns after SUBSCRIBE_TIMEOUT, is counted, and the group's
    # events reach the socket once Redis resumes.
    pause = SUBSCRIBE_TIMEOUT + 2.0
    unconfirmed = "chat_layer_subscribes_unconfirmed_total"
    before = REGISTRY.get_sample_value(unconfirmed) or 0.0

    async def scenario() -> tuple[bool, Any]:
        layer, sender, channel = await paused(server, pause)
        loop = asyncio.get_running_loop()
        paused_at = loop.time()
        await asyncio.wait_for(layer.group_add_all(["conv.6", "conv.7"], channel), 10)
        returned_while_paused = loop.time() - paused_at < pause
        await asyncio.sleep(max(0.0, paused_at + pause - loop.time()) + 0.2)
        # Redis is back and has processed the SUBSCRIBE it held.
        event = await publish_and_close(layer, sender, channel, "conv.7", 7)
        return returned_while_paused, event

    with RedisServer(tmp_path / "redis") as server:
        returned_while_paused, event = run(scenario)
    assert returned_while_paused, "the join waited for the whole pause"
    assert event == {"type": "e", "n": 7}
    assert (REGISTRY.get_sample_value(unconfirmed) or 0.0) == before + 2


def test_joining_two_hundred_groups_at_once_is_one_subscribe_and_each_gets_its_event() -> None:
    prefix = f"layer-{uuid.uuid4().hex[:8]}"
    groups = [f"conv.{n}" for n in range(200)]

    async def scenario() -> tuple[int, list[Any]]:
        layer, sender = make_layer(prefix), make_layer(prefix)
        channel = await layer.new_channel()

        async def join() -> None:
            await layer.group_add_all(groups, channel)

        commands = await count_subscribes(prefix, join)
        for n, group in enumerate(groups):
            await sender.group_send(group, {"type": "e", "n": n})
        got = await receive_all(layer, channel, len(groups))
        await layer.flush()
        await sender.flush()
        return commands, [event["n"] for event in got]

    commands, got = run(scenario)
    # A socket of a user in 200 conversations: one SUBSCRIBE, not 200 one after another.
    assert commands == 1, commands
    assert got == list(range(200))
