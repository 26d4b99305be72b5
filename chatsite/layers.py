"""The channel layer gateways use: channels-redis pub/sub, with a bound on each inbox.

Chosen by measurement (docs/performance.md, "Fan-out"): one message to a 1,000-member
group over two gateways reached the last member in 13-30 ms with `RedisPubSubChannelLayer`
and one group per conversation, against 63-95 ms with `RedisChannelLayer` (whose
per-process inbox also caps and drains slowly under load), at a fifth of the gateway CPU;
per-user groups were 10-50 times worse with either layer. A group_send is one PUBLISH;
each gateway subscribed to the group fans out to its own sockets in memory.

Redis restarts: redis-py's pub/sub connection re-subscribes every channel and group when
it reconnects, and `receive` waits on an in-process queue, so open sockets survive; what
was published while Redis was away is lost and clients repair it from the log.

Three changes:
- channels-redis decodes an event once for every socket it is handed to (in `receive`):
  a message to a group of 1,000 was decoded 1,000 times, and each socket got a dict of
  its own, so the frame could not be encoded once for all of them either
  (`chatsite.gateway.socket.encode_shared` caches by the frame object). Here each event
  is decoded once per process, as it arrives from Redis, and every local socket of the
  group gets the same dict (which no handler changes). An event that cannot be decoded
  is dropped and logged, as any lost event (clients repair it from the log).
- channels-redis gives each socket an unbounded in-process queue. Here it holds at most
  `capacity` events (CHANNEL_LAYER_CAPACITY, default 1,000) and drops the oldest beyond
  that (a socket that far behind is about to be closed 4429 anyway), counted as
  `chat_fanout_events_dropped_total{reason="inbox_full"}`.
- channels-redis runs every PUBLISH, SUBSCRIBE and UNSUBSCRIBE of a shard one at a time
  under one `asyncio.Lock`: a round trip per publish, a write per subscribe, and, with
  hundreds of handshakes waiting, a lock whose every acquire scans all its waiters.
  Here (`_Shard`) they join one ordered queue that a single task drains: what waits
  goes out together, consecutive publishes as one pipeline, consecutive subscribes as
  one SUBSCRIBE. The order of the operations is the order they were asked in, as with
  the lock (a group's events leave in commit order), and a subscribe to a channel the
  shard already has costs nothing.

And one fix: channels-redis's `subscribe` returns once SUBSCRIBE is written, before Redis
has processed it, so a socket could tell its client it was ready while a publish Redis
handled first was still missed live. Here `subscribe` returns when Redis confirms the
subscription (the reader takes the confirmations instead of ignoring them), or after
`SUBSCRIBE_TIMEOUT` seconds without one (Redis paused or away: the socket goes on, as it
would with the event lost, and the client repairs from the log); the confirmations of one
batch are awaited together, so joining many groups costs one round trip.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Iterable
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)

from chatsite import metrics
from chatsite.gateway.inbox import Inbox
from chatsite.redis import hiredis_packing

logger = logging.getLogger(__name__)


async def add_to_groups(layer: Any, groups: Iterable[str], channel: str) -> None:
    """Add `channel` to `groups`, returning once their events reach it.

    The gateways' layer (`BoundedPubSubChannelLayer`) subscribes to them all at once and
    waits for Redis once; any other layer (in memory, for `make run`) takes them one by one.
    """
    add_all = getattr(layer, "group_add_all", None)
    if add_all is not None:
        names = list(groups)
        if names:
            await add_all(names, channel)
        return
    for group in groups:
        await layer.group_add(group, channel)


class _CountingQueue(Inbox):
    """channels-redis's bounded queue (full: the oldest goes), counting what it drops.

    An `Inbox`, not channels-redis's `asyncio.Queue`: 3.5 KB less per socket.
    """

    __slots__ = ()

    def put_nowait(self, item: Any) -> None:
        if self.full():
            metrics.count_dropped("inbox_full")
            self.get_nowait()
        super().put_nowait(item)


# Operations sent in one round trip at most (a pipeline of publishes, one SUBSCRIBE).
BATCH = 500
# Seconds a subscribe waits for Redis to confirm it before the socket goes on without.
SUBSCRIBE_TIMEOUT = 1.0

_Op = tuple[str, str, Any, "asyncio.Future[None]"]


class _Shard(RedisSingleShardConnection):  # type: ignore[misc]
    """One Redis shard's connection whose operations are queued, not locked one by one."""

    def __init__(self, host: Any, channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        self._ops: list[_Op] = []
        self._queued: dict[str, int] = {}  # channel -> its (un)subscribes still queued
        self._drainer: asyncio.Task[None] | None = None
        # channel -> resolved when Redis confirms its SUBSCRIBE (written, not confirmed)
        self._confirming: dict[str, asyncio.Future[None]] = {}
        self._subscribing = asyncio.Event()  # set when the pub/sub connection has channels

    def _ensure_redis(self) -> None:
        """Open the shard's client as channels-redis does, packing commands with hiredis."""
        if self._redis is None:
            super()._ensure_redis()
            redis: Any = self._redis
            hiredis_packing(redis.connection_pool)

    async def publish(self, channel: str, message: Any) -> None:
        await self._enqueue("publish", channel, message)

    def _receive_message(self, message: Any) -> None:
        """Decode an event once and hand the same dict to every local socket it is for."""
        if message is None:
            return
        try:
            # The loop layer's own layer (`BoundedPubSubChannelLayer`) holds the serializer.
            data = self.channel_layer.channel_layer.deserialize(message["data"])
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the receiving
            metrics.count_dropped("undecodable")
            logger.warning("channel-layer event dropped, not decodable: %r", exc)
            return
        super()._receive_message({"channel": message["channel"], "data": data})

    async def _do_receiving(self) -> None:
        """Hand each event to its sockets, and each subscribe confirmation to its waiters.

        channels-redis's loop, with the confirmations kept, and waiting for a first
        subscription on an event rather than in steps of 0.1 s.
        """
        while True:
            try:
                if self._pubsub is not None and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(timeout=0.1)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "message":
                        self._receive_message(message)
                    elif kind == "subscribe":
                        self._confirmed(message["channel"])
                else:
                    self._subscribing.clear()
                    async with asyncio.timeout(1.0):
                        await self._subscribing.wait()
            except TimeoutError:
                continue
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException:
                logger.exception("Unexpected exception in receive task")
                await asyncio.sleep(1)

    async def flush(self) -> None:
        await super().flush()
        for name in list(self._confirming):  # nobody waits on a connection that is gone
            self._confirmed(name)

    def _confirmed(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        future = self._confirming.pop(name, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def subscribe(self, channel: str) -> None:
        await self.subscribe_all([channel])

    async def subscribe_all(self, channels: list[str]) -> None:
        """Subscribe to `channels`, returning when Redis has confirmed every one of them.

        Or when `SUBSCRIBE_TIMEOUT` has passed since their SUBSCRIBE was written (`_late`).
        """
        waits = [
            self._enqueue("subscribe", channel)
            for channel in channels
            # not already subscribed, or an unsubscribe waits ahead of this
            if channel not in self._subscribed_to or channel in self._queued
        ]
        if len(waits) == 1:
            await waits[0]
        elif waits:
            await asyncio.gather(*waits)
        pending = [self._confirming[c] for c in channels if c in self._confirming]
        if not pending:
            return
        # A future of this caller's own: the confirmations are shared by every caller
        # waiting for them, and a caller cancelled while awaiting one would cancel it.
        mine = asyncio.get_running_loop().create_future()
        left = len(pending)

        def confirmed(_future: asyncio.Future[None]) -> None:
            nonlocal left
            left -= 1
            if not left and not mine.done():
                mine.set_result(None)

        for future in pending:
            future.add_done_callback(confirmed)
        await mine

    def _late(self, waits: dict[str, asyncio.Future[None]]) -> None:
        """Stop waiting for the confirmations of one SUBSCRIBE, written long ago."""
        late = [name for name, future in waits.items() if not future.done()]
        if not late:
            return
        metrics.SUBSCRIBES_UNCONFIRMED.inc(len(late))
        logger.warning(
            "Redis did not confirm %d subscription(s) within %.1f s; going on without",
            len(late),
            SUBSCRIBE_TIMEOUT,
        )
        for name in late:
            future = waits[name]
            future.set_result(None)
            if self._confirming.get(name) is future:  # a later subscribe waits no more
                del self._confirming[name]

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._subscribed_to and channel not in self._queued:
            return
        await self._enqueue("unsubscribe", channel)

    def _enqueue(self, kind: str, channel: str, message: Any = None) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._ops.append((kind, channel, message, future))
        if kind != "publish":
            self._queued[channel] = self._queued.get(channel, 0) + 1
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        ops: list[_Op] = []
        try:
            async with self._lock:  # `flush` (the layer's reset) takes it too
                while self._ops:
                    ops, self._ops = self._ops[:BATCH], self._ops[BATCH:]
                    for kind, run in itertools.groupby(ops, key=lambda op: op[0]):
                        await self._run(kind, list(run))
        except asyncio.CancelledError:
            # The loop is shutting down: nobody is left to send what still waits.
            for *_rest, future in [*ops, *self._ops]:
                future.cancel()  # a no-op for those already answered
            self._ops, self._queued = [], {}
            raise

    async def _run(self, kind: str, ops: list[_Op]) -> None:
        # A publish or subscribe whose caller stopped waiting (a timeout) is dropped, as
        # one still waiting for the lock was; an unsubscribe is cleanup and always runs.
        todo = [op for op in ops if kind == "unsubscribe" or not op[3].cancelled()]
        try:
            if todo:
                self._ensure_redis()
                if kind == "publish":
                    pipe = self._redis.pipeline(transaction=False)
                    for _kind, channel, message, _future in todo:
                        pipe.publish(channel, message)
                    await pipe.execute()
                else:
                    await self._resubscribe(kind, [op[1] for op in todo])
        except Exception as exc:  # noqa: BLE001 - each caller gets its operation's failure
            for *_rest, future in ops:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:
            for *_rest, future in ops:
                future.cancel()
            raise
        else:
            for *_rest, future in ops:
                if not future.done():
                    future.set_result(None)
        finally:
            if kind != "publish":
                for _kind, channel, _message, _future in ops:
                    left = self._queued[channel] - 1
                    if left:
                        self._queued[channel] = left
                    else:
                        del self._queued[channel]

    async def _resubscribe(self, kind: str, channels: list[str]) -> None:
        """SUBSCRIBE what is not subscribed yet, or UNSUBSCRIBE what is, in one command."""
        wanted = kind == "subscribe"
        names = [c for c in dict.fromkeys(channels) if (c in self._subscribed_to) != wanted]
        if not names:
            return
        self._ensure_receiver()
        if kind == "subscribe":
            # Waited for before the write: the reader may take the confirmation during it.
            loop = asyncio.get_running_loop()
            waits = {name: loop.create_future() for name in names}
            self._confirming.update(waits)
            try:
                await self._pubsub.subscribe(*names)
            except BaseException:
                for name in names:
                    self._confirming.pop(name, None)
                raise
            loop.call_later(SUBSCRIBE_TIMEOUT, self._late, waits)  # one timer a command
            self._subscribed_to.update(names)
            self._subscribing.set()
        else:  # never with no names: that would unsubscribe from everything
            for name in names:  # nobody waits for a subscription that is given up
                self._confirmed(name)
            await self._pubsub.unsubscribe(*names)
            self._subscribed_to.difference_update(names)


class _BoundedLoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, capacity: int = 1000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity
        self._shards = [_Shard(s.host, self) for s in self._shards]  # type: ignore[has-type]

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = _CountingQueue(self.capacity)
        shard = self._get_shard(channel)
        await shard.subscribe(channel)

    async def group_add_all(self, groups: list[str], channel: str) -> None:
        """`group_add` for each of `groups`: one SUBSCRIBE and one wait per shard."""
        if channel not in self.channels:
            raise RuntimeError("group_add_all() needs a channel that exists in this process")
        by_shard: dict[_Shard, list[str]] = {}
        for group in groups:
            name = self._get_group_channel_name(group)
            self.groups.setdefault(name, set()).add(channel)
            by_shard.setdefault(self._get_shard(name), []).append(name)
        if len(by_shard) == 1:
            [(shard, names)] = by_shard.items()
            await shard.subscribe_all(names)
        else:
            await asyncio.gather(*(s.subscribe_all(n) for s, n in by_shard.items()))


class BoundedPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    """`RedisPubSubChannelLayer` whose per-socket queues are bounded."""

    def deserialize(self, message: Any) -> Any:
        """Return an event: decoded already as it arrived (`_Shard`), or decode it now."""
        if isinstance(message, dict):
            return message
        return super().deserialize(message)

    async def group_add_all(self, groups: list[str], channel: str) -> None:
        """Add `channel` to every one of `groups`, waiting for Redis once, not per group."""
        await self._get_layer().group_add_all(groups, channel)

    def receiver(self, channel: str) -> Any:
        """Return what `receive(channel)` is, bound to this loop's layer.

        `receive` goes through channels-redis's proxy, a coroutine more that a socket
        waiting for its next event holds for its whole life (about 250 bytes).
        """
        return functools.partial(self._get_layer().receive, channel)

    def _get_layer(self) -> Any:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            # channels-redis's own _get_layer, with the bounded loop layer.
            from channels_redis.pubsub import _wrap_close

            layer = _BoundedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
