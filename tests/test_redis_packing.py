"""Commands of the asyncio Redis clients are packed by hiredis, byte for byte as before.

redis-py 5 packs an asyncio connection's commands in Python (its sync connections use
hiredis when it is installed); `chatsite.redis.hiredis_packing` gives our asyncio pools
(rate limits, presence, tickets) and the channel layer's shards hiredis' packer.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from django.conf import settings
from redis import asyncio as aioredis
from redis.exceptions import DataError

from chatsite.layers import BoundedPubSubChannelLayer
from chatsite.redis import _HiredisPacking, async_client, hiredis_packing


class _Packing(_HiredisPacking, aioredis.Connection):
    pass


# What the server code sends: text of any script, bytes, ints, floats (presence scores),
# a command name in two words, a memoryview; and the arguments redis-py refuses.
COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "k", "välue ✓ \u2028 😀"),
    ("SET", b"k", b"\x00\xff\r\n"),
    ("ZADD", "presence:live", 1765000000.123, "42"),
    ("INCRBY", "k", -5),
    ("SET", "k", 2**70),
    ("SET", "k", float("inf")),
    ("SET", "k", -0.0),
    ("SET", "k", 0.1 + 0.2),
    ("SET", "k", memoryview(b"abc")),
    ("CONFIG GET", "maxmemory"),
    (b"CONFIG GET", b"maxmemory"),
    ("EVALSHA", "a" * 40, "2", "k1", "k2", *[str(n) for n in range(600)]),
    ("SET", "k", "x" * 100_000),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c[0]!r}-{len(c)}")
def test_hiredis_packs_every_command_as_redis_py_did(command: tuple[Any, ...]) -> None:
    """Tried: the arguments above, packed by redis-py's Python packer and by ours."""
    python = b"".join(bytes(part) for part in aioredis.Connection().pack_command(*command))
    assert b"".join(_Packing().pack_command(*command)) == python


@pytest.mark.parametrize("bad", [None, True, 1j, bytearray(b"x"), object()])
def test_an_argument_redis_cannot_take_is_a_data_error_as_before(bad: Any) -> None:
    """Tried: None, a bool, a complex number, a bytearray and an object as an argument."""
    with pytest.raises(DataError):
        aioredis.Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        _Packing().pack_command("SET", "k", bad)


def test_the_gateways_async_clients_pack_with_hiredis_and_talk_to_redis() -> None:
    """The rate-limit/presence client and a channel-layer shard, on the real Redis."""

    async def scenario() -> None:
        client: Any = async_client(shard_by="packing-check")
        assert client is not None
        assert issubclass(client.connection_pool.connection_class, _HiredisPacking)
        key = f"packing:{uuid.uuid4().hex}"
        values = {f"field-{n}": f"välue {n} ✓" for n in range(500)}
        await client.hset(key, mapping=values)
        try:
            assert {
                k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()
            } == values
            script = "return #ARGV + #KEYS"
            assert await client.eval(script, 2, "k1", "k2", *range(300)) == 302
        finally:
            await client.delete(key)
            await client.aclose()

        prefix = f"packing-{uuid.uuid4().hex[:8]}"
        sender = BoundedPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix)
        receiver = BoundedPubSubChannelLayer(hosts=[settings.REDIS_URL], prefix=prefix)
        channel = await receiver.new_channel()
        await sender.send(channel, {"type": "x.y", "text": "välue ✓"})
        assert await asyncio.wait_for(receiver.receive(channel), 5) == {
            "type": "x.y",
            "text": "välue ✓",
        }
        for layer in (sender, receiver):
            for shard in layer._get_layer()._shards:
                pool = shard._redis.connection_pool
                assert issubclass(pool.connection_class, _HiredisPacking)
            await layer.flush()

    asyncio.run(scenario())


def test_packing_is_given_once_and_keeps_the_pools_own_connection_kind() -> None:
    """A pool of unix-socket connections stays one; a second call changes nothing."""
    pool = aioredis.ConnectionPool.from_url("unix:///tmp/redis.sock")
    packed = hiredis_packing(pool).connection_class
    assert issubclass(packed, aioredis.UnixDomainSocketConnection)
    assert issubclass(packed, _HiredisPacking)
    assert hiredis_packing(pool).connection_class is packed
