"""Presence end to end: devices, idle, busy, a killed gateway, a Redis restart, visibility."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.request
from typing import Any

import pytest

from accounts.models import User
from bench.harness import Deployment, RedisServer
from chatsite.redis import async_clients
from messaging import services
from presence.store import get_store
from tests.e2e.wsclient import Socket, bearer, drive, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# A short heartbeat so the live window (3 heartbeats) and the sweep fit in a test.
FAST = {
    "WS_HEARTBEAT_INTERVAL": "1",
    "PRESENCE_SWEEP_INTERVAL": "1",
    "WS_GROUP_REFRESH_INTERVAL": "1",
}


async def keep_pinging(socket: Socket, every: float = 0.4) -> None:
    """Send `ping` frames so a socket stays live under a short heartbeat (until cancelled)."""
    while True:
        await socket.send(type="ping")
        await asyncio.sleep(every)


def is_change(user: User, state: str | None = None) -> Any:
    return lambda f: (
        f["type"] == "presence.changed"
        and f["user"] == user.pk
        and (state is None or f["state"] == state)
    )


def contacts(*users: User) -> None:
    """Make every pair of users contacts: a direct conversation both accepted."""
    for a in users:
        for b in users:
            if a.pk < b.pk:
                chat, _ = services.create_direct_conversation(user=a, other_user_id=b.pk)
                services.accept_request(user=b, conversation_id=chat.pk)


def test_two_devices_idle_and_closing_drive_online_away_and_offline(
    deployment: Deployment, ana: User, bo: User
) -> None:
    contacts(ana, bo)
    tok = {u.username: bearer(u) for u in (ana, bo)}

    async def scenario() -> float:
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        snap = await watcher.request(type="presence.subscribe", users=[ana.pk])
        assert snap["users"] == [{"id": ana.pk, "state": "offline", "last_seen": None}]

        phone, _ = await open_socket(deployment.urls[0], tok["ana"])
        assert (await watcher.until(is_change(ana)))["state"] == "online"
        laptop, _ = await open_socket(deployment.urls[1], tok["ana"])
        await phone.send(type="activity", idle=True)  # laptop still active: online
        await laptop.send(type="activity", idle=True)  # every device idle: away
        assert (await watcher.until(is_change(ana)))["state"] == "away"
        await laptop.send(type="activity", idle=False)
        assert (await watcher.until(is_change(ana)))["state"] == "online"

        await laptop.ws.close()  # the idle phone remains
        assert (await watcher.until(is_change(ana)))["state"] == "away"
        await phone.ws.close()
        closed = time.monotonic()
        offline = await watcher.until(is_change(ana), timeout=15)
        assert offline["state"] == "offline" and offline["last_seen"].endswith("Z")
        return time.monotonic() - closed

    offline_after = 0.0

    async def run() -> None:
        nonlocal offline_after
        offline_after = await scenario()

    drive(run)
    # contract: subscribers see offline within 10 s of the last clean close
    assert offline_after < 10
    ana.refresh_from_db()
    assert ana.last_seen is not None


def test_a_killed_gateway_turns_its_users_offline_by_the_sweep(
    make_deployment: Any, ana: User, bo: User, record_property: Any
) -> None:
    deployment = make_deployment(env=FAST)
    contacts(ana, bo)
    tok = {u.username: bearer(u) for u in (ana, bo)}
    measured: dict[str, float] = {}

    async def scenario() -> None:
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        pinger = asyncio.create_task(keep_pinging(watcher))
        try:
            await watcher.request(type="presence.subscribe", users=[ana.pk])
            await open_socket(deployment.urls[0], tok["ana"])
            await watcher.until(is_change(ana, "online"))
            await asyncio.to_thread(deployment.gateways[0].kill)  # never says goodbye
            killed = time.monotonic()
            await watcher.until(is_change(ana, "offline"), timeout=30)
            measured["offline_after_s"] = time.monotonic() - killed
        finally:
            pinger.cancel()

    drive(scenario)
    record_property("offline_after_kill_s", round(measured["offline_after_s"], 2))
    # 3 heartbeats (3 s) + a sweep interval (1 s) + slack; 90 s with the defaults
    assert measured["offline_after_s"] < 10


def test_a_quick_reconnect_does_not_flap_offline(make_deployment: Any, ana: User, bo: User) -> None:
    # A 3 s grace (5 s by default): a reconnect takes well under a second.
    deployment = make_deployment(env={"PRESENCE_GRACE": "3"})
    contacts(ana, bo)
    tok = {u.username: bearer(u) for u in (ana, bo)}

    async def scenario() -> None:
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        await watcher.request(type="presence.subscribe", users=[ana.pk])
        first, _ = await open_socket(deployment.urls[0], tok["ana"])
        await watcher.until(is_change(ana, "online"))
        await first.ws.close()
        await open_socket(deployment.urls[1], tok["ana"])  # back well within 3 s
        await asyncio.sleep(4)  # time is the subject: past the 3 s grace
        flaps = [f for f in await watcher.quiet() if f["type"] == "presence.changed"]
        assert flaps == []

    drive(scenario)


def test_busy_is_sticky_across_reconnects_and_visible_to_subscribers(
    deployment: Deployment, ana: User, bo: User
) -> None:
    contacts(ana, bo)
    tok = {u.username: bearer(u) for u in (ana, bo)}

    async def scenario() -> None:
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        await watcher.request(type="presence.subscribe", users=[ana.pk])
        phone, _ = await open_socket(deployment.urls[0], tok["ana"])
        await watcher.until(is_change(ana, "online"))
        reply = await phone.request(type="status.set", status="busy")
        assert (reply["type"], reply["state"]) == ("presence.changed", "busy")
        await watcher.until(is_change(ana, "busy"))
        bad = await phone.request(type="status.set", status="invisible")
        assert bad["code"] == "bad_request"

        await phone.ws.close()
        again, ready = await open_socket(deployment.urls[1], tok["ana"])
        assert ready["status"] == "busy"
        snap = await watcher.request(type="presence.subscribe", users=[ana.pk])
        assert snap["users"][0]["state"] == "busy"
        await again.request(type="status.set", status="available")
        await watcher.until(is_change(ana, "online"))

    drive(scenario)
    ana.refresh_from_db()
    assert ana.status == "available"


def test_presence_is_visible_only_to_contacts_and_subscriptions_are_bounded(
    deployment: Deployment, ana: User, bo: User, cy: User
) -> None:
    contacts(ana, bo)  # cy shares nothing with bo
    tok = {u.username: bearer(u) for u in (ana, bo, cy)}

    async def scenario() -> None:
        await open_socket(deployment.urls[0], tok["cy"])
        await open_socket(deployment.urls[0], tok["ana"])
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        snap = await watcher.request(type="presence.subscribe", users=[ana.pk, cy.pk, bo.pk])
        assert snap["users"][0]["state"] == "online"  # a contact
        assert snap["users"][1] == {"id": cy.pk, "state": "offline", "last_seen": None}
        assert snap["users"][2]["state"] == "online"  # oneself
        stranger, _ = await open_socket(deployment.urls[0], tok["cy"])
        await stranger.request(type="status.set", status="busy")
        leaked = [f for f in await watcher.quiet() if f.get("user") == cy.pk]
        assert leaked == []

        too_many = await watcher.request(type="presence.subscribe", users=list(range(1, 1002)))
        assert too_many["code"] == "bad_request" and too_many["details"]["max"] == 1000
        wrong = await watcher.request(type="presence.subscribe", users=["ana"])
        assert wrong["code"] == "bad_request"
        # a new set replaces the old one: no more changes for ana
        await watcher.request(type="presence.subscribe", users=[])
        ana_phone, _ = await open_socket(deployment.urls[1], tok["ana"])
        await ana_phone.request(type="status.set", status="busy")
        assert [f for f in await watcher.quiet() if f["type"] == "presence.changed"] == []

    drive(scenario)

    # REST gives the same view
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the harness
        f"{deployment.http_urls[0]}/api/v1/presence?users={ana.pk},{cy.pk}",
        headers={"Authorization": f"Bearer {bearer(bo)}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        users = json.loads(response.read())["users"]
    assert [u["id"] for u in users] == [ana.pk, cy.pk]
    assert users[1] == {"id": cy.pk, "state": "offline", "last_seen": None}


def test_presence_rebuilds_after_a_redis_restart_within_a_heartbeat(
    make_deployment: Any, redis_server: RedisServer, ana: User, bo: User, record_property: Any
) -> None:
    deployment = make_deployment(env={**FAST, "WS_HEARTBEAT_INTERVAL": "2"})
    contacts(ana, bo)
    tok = {u.username: bearer(u) for u in (ana, bo)}
    measured: dict[str, float] = {}

    async def scenario() -> None:
        phone, _ = await open_socket(deployment.urls[0], tok["ana"])
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        pingers = [asyncio.create_task(keep_pinging(s, 0.5)) for s in (phone, watcher)]
        try:
            await asyncio.to_thread(redis_server.restart)  # presence keys are gone
            restarted = time.monotonic()
            deadline = restarted + 15
            state = "offline"
            while state != "online" and time.monotonic() < deadline:
                snap = await watcher.request(type="presence.subscribe", users=[ana.pk])
                state = snap["users"][0]["state"]
                if state != "online":
                    await asyncio.sleep(0.2)
            measured["rebuilt_after_s"] = time.monotonic() - restarted
            assert state == "online"
        finally:
            for task in pingers:
                task.cancel()

    drive(scenario)
    record_property("presence_rebuilt_after_s", round(measured["rebuilt_after_s"], 2))
    # within one heartbeat interval (2 s) of Redis answering again, plus the check's tick
    assert measured["rebuilt_after_s"] < 2 + 1 + 1


def test_a_socket_pinging_on_time_writes_its_beat_every_other_ping_and_stays_online(
    make_deployment: Any, settings: Any, ana: User, bo: User, record_property: Any
) -> None:
    """Tried: a client pinging a little faster than the heartbeat (0.8 of 1 s) for 8 s.

    Its beats are written at most every PRESENCE_WRITE_INTERVAL (1.2 heartbeats, so every
    other ping), the written beat never gets as old as the live window (3 heartbeats,
    with the sweep running every second), and its user never flaps offline.
    """
    deployment = make_deployment(env=FAST)
    settings.PRESENCE_STORE = "redis"  # read the deployment's store from this process
    contacts(ana, bo)
    tok = {u.username: bearer(u) for u in (ana, bo)}
    written: set[float] = set()
    oldest = 0.0

    async def scenario() -> list[dict[str, Any]]:
        nonlocal oldest
        watcher, _ = await open_socket(deployment.urls[1], tok["bo"])
        phone, _ = await open_socket(deployment.urls[0], tok["ana"])
        pingers = [
            asyncio.create_task(keep_pinging(watcher)),
            asyncio.create_task(keep_pinging(phone, every=0.8)),
        ]
        try:
            await watcher.request(type="presence.subscribe", users=[ana.pk])
            store = get_store()
            end = time.monotonic() + 8
            while time.monotonic() < end:
                for beat in (await store.connections([ana.pk]))[ana.pk].values():
                    written.add(beat.at)
                    oldest = max(oldest, time.time() - beat.at)
                await asyncio.sleep(0.05)
            changes = [f for f in await watcher.quiet() if is_change(ana)(f)]
        finally:
            for task in pingers:
                task.cancel()
            for client in async_clients():
                await client.aclose()
        return changes

    changes: list[dict[str, Any]] = []

    async def run() -> None:
        changes.extend(await scenario())

    drive(run)
    beats = sorted(written)
    gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
    record_property("beat_gaps_s", [round(g, 2) for g in gaps])
    record_property("oldest_beat_s", round(oldest, 2))
    assert len(beats) >= 4, beats  # the open's beat, then one about every 1.6 s
    # Every other ping: never two writes within the interval (1.2 s; 0.1 s for the loop).
    assert min(gaps) > 1.1, gaps
    assert oldest < 3.0, oldest  # always inside the live window
    assert changes == [], changes  # no offline (or any other) change while it pinged
