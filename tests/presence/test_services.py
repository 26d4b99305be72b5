"""Presence rules: derived states, publishing only changes, the grace, the sweep, status."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from django.conf import settings

from accounts.models import User
from presence import services
from presence.events import presence_group
from presence.state import AWAY, BUSY, OFFLINE, ONLINE, Beat, derive
from presence.store import MemoryPresenceStore
from tests.conftest import Listener

T = TypeVar("T")
W = 75.0  # the live window with the default 25 s heartbeat


@pytest.mark.parametrize(
    ("connections", "busy", "state"),
    [
        ({}, False, OFFLINE),
        ({}, True, OFFLINE),
        ({"a": Beat(1000.0, False)}, False, ONLINE),
        ({"a": Beat(1000.0, True)}, False, AWAY),
        ({"a": Beat(1000.0, True), "b": Beat(990.0, False)}, False, ONLINE),
        ({"a": Beat(1000.0, True), "b": Beat(900.0, False)}, False, AWAY),  # b expired
        ({"a": Beat(1000.0, True)}, True, BUSY),
        ({"a": Beat(900.0, False)}, True, OFFLINE),  # expired: busy needs a connection
    ],
)
def test_state_is_derived_from_live_connections_and_status(
    connections: dict[str, Beat], busy: bool, state: str
) -> None:
    assert derive(connections, busy=busy, now=1000.0, window=W) == state


def drive(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())  # type: ignore[arg-type]


async def past_the_grace() -> None:
    """Wait out PRESENCE_GRACE, then for what its end started (the offline decision).

    A timer set before this sleep's fires before it, so the decision's task exists when
    the sleep ends; it is awaited, not given a fixed time (`asyncio.run` would cancel it
    at the end, and a busy machine may take longer to write `last_seen`).
    """
    await asyncio.sleep(settings.PRESENCE_GRACE + 0.1)  # time is the subject
    here = asyncio.current_task()
    started = {task for task in asyncio.all_tasks() if task is not here}
    if started:
        await asyncio.wait(started, timeout=10)


def changes(listener: Listener, user_id: int) -> list[tuple[str, str | None]]:
    """Return the presence changes that arrived for a user, up to a marker."""
    marker = listener.mark(presence_group(user_id))
    seen = []
    while (event := listener.receive()) != marker:
        if event["user"] == user_id:
            seen.append((event["frame"]["state"], event["frame"]["last_seen"]))
    return seen


def test_only_changes_of_the_derived_state_are_published(listener: Listener) -> None:
    store = MemoryPresenceStore()
    listener.join(presence_group(7))

    async def work() -> None:
        await services.connection_opened(store, 7, "phone", busy=False, now=1000.0)
        await services.connection_opened(store, 7, "laptop", busy=False, now=1001.0)
        await services.heartbeat(store, 7, "phone", idle=True, changed=True, now=1002.0)
        await services.heartbeat(store, 7, "laptop", idle=True, changed=True, now=1003.0)
        await services.heartbeat(store, 7, "laptop", idle=False, changed=True, now=1004.0)

    drive(work)

    assert [state for state, _ in changes(listener, 7)] == [ONLINE, AWAY, ONLINE]


@pytest.mark.django_db(transaction=True)
def test_last_connection_goes_offline_after_the_grace_unless_it_comes_back(
    listener: Listener, settings: Any, ana: User
) -> None:
    settings.PRESENCE_GRACE = 0.2
    store = MemoryPresenceStore()
    listener.join(presence_group(ana.pk))

    async def work() -> None:
        await services.connection_opened(store, ana.pk, "a", busy=False, now=1000.0)
        await services.connection_closed(store, ana.pk, "a", now=1001.0)
        await services.connection_opened(store, ana.pk, "b", busy=False, now=1001.1)  # back
        await past_the_grace()
        await services.connection_closed(store, ana.pk, "b", now=1002.0)
        await past_the_grace()

    drive(work)

    # online once, then offline once (with last_seen = the last disconnect), no flap
    seen = changes(listener, ana.pk)
    assert [state for state, _ in seen] == [ONLINE, OFFLINE]
    assert seen[1][1] is not None and seen[1][1].startswith("1970-01-01T00:16:42")
    ana.refresh_from_db()
    assert ana.last_seen is not None and ana.last_seen.timestamp() == 1002.0


@pytest.mark.django_db(transaction=True)
def test_sweep_turns_offline_users_whose_gateway_died(
    listener: Listener, ana: User, bo: User
) -> None:
    store = MemoryPresenceStore()
    listener.join(presence_group(ana.pk))
    listener.join(presence_group(bo.pk))

    async def work() -> list[int]:
        await services.connection_opened(store, ana.pk, "dead-gw", busy=False, now=1000.0)
        await services.connection_opened(store, bo.pk, "live-gw", busy=False, now=1000.0)
        await services.heartbeat(store, bo.pk, "live-gw", idle=False, changed=False, now=1070.0)
        return await services.sweep(store, now=1000.0 + W + 1)

    assert drive(work) == [ana.pk]
    marker = listener.mark(presence_group(bo.pk))
    events = []
    while (event := listener.receive()) != marker:
        events.append((event["user"], event["frame"]["state"]))
    assert events == [(ana.pk, ONLINE), (bo.pk, ONLINE), (ana.pk, OFFLINE)]


@pytest.mark.django_db(transaction=True)
def test_busy_is_stored_and_published_and_survives_a_reconnect(
    listener: Listener, ana: User
) -> None:
    store = MemoryPresenceStore()
    listener.join(presence_group(ana.pk))

    async def set_busy() -> None:
        await services.connection_opened(store, ana.pk, "a", busy=False, now=1000.0)
        await services.set_status(store, ana, "busy", now=1001.0)
        await store.remove(ana.pk, ["a"])

    drive(set_busy)
    ana.refresh_from_db()  # a reconnect reads the stored status, as the gateway does

    async def work() -> str:
        await services.connection_opened(store, ana.pk, "b", busy=ana.status == "busy", now=1002.0)
        return str((await services.snapshot(store, [ana.pk], now=1003.0))[0]["state"])

    assert drive(work) == BUSY
    assert [s for s, _ in changes(listener, ana.pk)] == [ONLINE, BUSY]
    ana.refresh_from_db()
    assert ana.status == "busy"
