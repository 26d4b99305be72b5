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

The one change: channels-redis gives each socket an unbounded in-process queue. Here it
holds at most `capacity` events (CHANNEL_LAYER_CAPACITY, default 1,000) and drops the
oldest beyond that (a socket that far behind is about to be closed 4429 anyway), counted
as `chat_fanout_events_dropped_total{reason="inbox_full"}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels_redis.core import BoundedQueue
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer

from chatsite import metrics


class _CountingQueue(BoundedQueue):  # type: ignore[misc]
    """channels-redis's bounded queue (full: the oldest goes), counting what it drops."""

    def put_nowait(self, item: Any) -> None:
        if self.full():
            metrics.count_dropped("inbox_full")
        super().put_nowait(item)


class _BoundedLoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, capacity: int = 1000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = _CountingQueue(self.capacity)
        shard = self._get_shard(channel)
        await shard.subscribe(channel)


class BoundedPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    """`RedisPubSubChannelLayer` whose per-socket queues are bounded."""

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
