"""Two Redis shards: groups, presence and tickets spread over both; one restarts (R6 per shard).

Two real gateways with `REDIS_SHARDS` naming two real Redis servers. Reference clients
chat in eight groups across both gateways. What is checked: the conversation groups and
the presence keys are on both shards; a WebSocket ticket works (issued on one gateway,
redeemed on the other); then one shard restarts mid-traffic (losing its groups,
presence and queued events): sends keep succeeding, live delivery resumes on the groups
of that shard, and no message is lost, duplicated or reordered in the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.utils import _consistent_hash
from websockets.asyncio.client import connect

from bench.harness import RedisServer, http_get, http_post_json
from chatsite.redis import shard_of
from messaging.events import conversation_group
from messaging.models import Conversation
from tests.e2e.conftest import MakeDeployment
from tests.e2e.scenario import (
    Fleet,
    Properties,
    drive,
    finish,
    make_groups,
    make_users,
    mint_access,
    think_times,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def keys_on(server: RedisServer, pattern: str) -> list[str]:
    with redis.Redis.from_url(server.url) as client:
        return [k.decode() for k in client.keys(pattern)]


def channels_on(server: RedisServer, pattern: str) -> list[str]:
    with redis.Redis.from_url(server.url) as client:
        return [c.decode() for c in client.pubsub_channels(pattern)]


def group_shard(prefix: str, conversation_id: int) -> int:
    """Return which of two shards the layer subscribes a conversation's group on."""
    name = f"{prefix}__group__{conversation_group(conversation_id)}"
    return int(_consistent_hash(name, 2))


def test_two_shards_carry_groups_and_presence_and_survive_a_restart_of_one(
    make_deployment: MakeDeployment,
    redis_server: RedisServer,
    tmp_path: Path,
    properties: Properties,
) -> None:
    with RedisServer(tmp_path / "shard-b") as shard_b:
        shard_a = redis_server
        deployment = make_deployment(
            gateways=2,
            env={
                "REDIS_SHARDS": f"{shard_a.url},{shard_b.url}",
                "CHAT_SEND_RATE": "1000",
                "CHAT_SEND_BURST": "1000",
                # Pings every 2 s: a lost last event is found within one heartbeat.
                "WS_HEARTBEAT_INTERVAL": "2",
            },
        )
        prefix = deployment.channel_layer_prefix
        users = make_users("shu", 24)
        groups = make_groups(users, 3, "Shard")
        # The layer puts a group on the shard the CRC of its name picks, and consecutive
        # conversation ids can all pick one shard: make the groups again (new ids) until
        # both shards carry some, or the restart of shard b would test no live group.
        while len({group_shard(prefix, g.id) for g in groups}) < 2:
            Conversation.objects.filter(pk__in=[g.id for g in groups]).delete()
            groups = make_groups(users, 3, "Shard")
        access = mint_access(u for g in groups for u in g.members)
        fleet = Fleet(deployment.urls, seed=11, backoff_base=0.2, backoff_max=2.0)
        for group in groups:
            for user in group.members:
                fleet.add(user.username, access[user.pk], [group.id])
        sends_each = 14  # about 5 s of traffic: well past the restart at 1 s
        pauses = think_times(fleet.clients, sends_each, 0.2, 0.5, seed=11)
        seen: dict[str, Any] = {}
        times: dict[str, float] = {}

        async def fault() -> None:
            await asyncio.sleep(1.0)
            on_a, on_b = channels_on(shard_a, f"{prefix}*"), channels_on(shard_b, f"{prefix}*")
            seen["channels"] = [len(on_a), len(on_b)]
            seen["groups_on_b"] = sorted(
                {int(m) for name in on_b for m in re.findall(r"conv\.(\d+)", name)}
            )
            seen["presence"] = [
                len(keys_on(shard_a, f"{prefix}:pres:c:*")),
                len(keys_on(shard_b, f"{prefix}:pres:c:*")),
            ]
            times["restart"] = time.time()
            await asyncio.to_thread(shard_b.restart)
            times["back"] = time.time()

        async def scenario() -> dict[str, Any]:
            try:
                await fleet.connect(60)
                await asyncio.gather(fault(), fleet.chat(pauses))
                return await fleet.settle(30)
            finally:
                await fleet.close()

        outcome = drive(scenario, timeout=180)
        live_after = Counter(
            r.conversation
            for r in fleet.history.recvs
            if r.via == "live" and r.received_at > times["back"] + 1.0
        )
        report = finish(
            "redis-shards",
            fleet.history,
            fleet.views(),
            fleet.members,
            tmp_path=tmp_path,
            properties=properties,
            extra={**outcome, **seen, "live_after_restart": dict(live_after)},
        )

        # Tickets live on the shard their name hashes to: one made through the first
        # gateway opens a socket on the second.
        user = groups[0].members[0]
        tickets: list[str] = []
        while len({shard_of(t, 2) for t in tickets}) < 2 and len(tickets) < 40:
            url = f"{deployment.gateways[0].http_url}/api/v1/ws-tickets"
            tickets.append(http_post_json(url, {}, token=access[user.pk])[1]["ticket"])

        async def redeem(ticket: str) -> str:
            url = f"{deployment.gateways[1].ws_url}?ticket={ticket}"
            async with connect(url) as ws:
                frame: dict[str, Any] = json.loads(await ws.recv())
                return str(frame["type"])

        assert {shard_of(t, 2) for t in tickets} == {0, 1}, "tickets on both shards"
        assert [asyncio.run(redeem(t)) for t in tickets] == ["session.ready"] * len(tickets)

        status, body = http_get(f"{deployment.gateways[0].http_url}/healthz")
        assert status == 200 and json.loads(body)["checks"]["redis"] is True
        assert all(n > 0 for n in seen["channels"]), f"groups on both shards: {seen}"
        assert all(n > 0 for n in seen["presence"]), f"presence on both shards: {seen}"
        assert all(s.outcome == "ok" for s in fleet.history.sends), "no send failed"
        assert outcome["incomplete"] == {}, outcome
        assert report.ok, report.summary() + "\n" + "\n".join(report.details[:20])
        assert report.sent_ok == 24 * sends_each
        assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
        # Live delivery came back on the restarted shard's groups, not only by sync.
        assert seen["groups_on_b"], seen
        assert all(live_after[c] > 0 for c in seen["groups_on_b"]), (seen, live_after)
