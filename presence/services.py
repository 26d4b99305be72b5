"""Presence rules over a store: heartbeats, idle, busy, the grace on disconnect, the sweep.

Called by the gateway (`messaging.consumers`), the only module that uses both apps.
Every publish goes through `_announce`, after the state it publishes was swapped in
(`publish_if_changed`, or a new connection's one round trip), so subscribers hear
about a user only when the derived state changes. All functions take
`now` (epoch seconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from accounts.models import User
from accounts.services import expire_statuses, update_profile
from chatsite.gateway.dbthreads import db
from messaging import wire
from presence import events
from presence.state import OFFLINE, Beat, derive, live
from presence.store import PresenceStore, open_store

logger = logging.getLogger(__name__)


def window() -> float:
    """Return how long a connection stays live without a frame (3 heartbeats)."""
    return float(settings.WS_HEARTBEAT_INTERVAL * settings.WS_IDLE_TIMEOUT_FACTOR)


async def publish_if_changed(store: PresenceStore, user_id: int, *, now: float) -> str:
    """Derive the user's state; publish it if it differs from the last published one."""
    connections = (await store.connections([user_id]))[user_id]
    busy = user_id in await store.busy([user_id])
    state = derive(connections, busy=busy, now=now, window=window())
    previous = await store.swap_state(user_id, state)
    await _announce(user_id, previous, state, now=now, store=store)
    return state


async def _announce(
    user_id: int, previous: str | None, state: str, *, now: float, store: PresenceStore
) -> None:
    """Publish `state` if it differs from the one published before (`previous`)."""
    if (previous or OFFLINE) != state:
        last_seen = now if state != OFFLINE else (await store.last_seen([user_id])).get(user_id)
        await events.publish(user_id, state, last_seen)


async def connection_opened(
    store: PresenceStore,
    user_id: int,
    connection: str,
    *,
    busy: bool,
    now: float,
    limit: int | None = None,
) -> list[str]:
    """Record a new connection (dropping ones that expired) and publish any change.

    Returns the user's oldest connections past `limit` (`WS_MAX_CONNECTIONS_PER_USER`
    when None), for the caller to close.
    """
    if limit is None:
        limit = settings.WS_MAX_CONNECTIONS_PER_USER
    # A connection that just beat, not idle, decides the state whatever the others say
    # (`derive`), so the state is known before anything is written: one round trip.
    state = derive({connection: Beat(now, False)}, busy=busy, now=now, window=window())
    known, previous, evicted = await store.open_connection(
        user_id, connection, busy=busy, now=now, state=state, limit=limit
    )
    expired = [name for name in known if name not in live(known, now=now, window=window())]
    await store.remove(user_id, expired)
    await _announce(user_id, previous, state, now=now, store=store)
    return evicted


async def heartbeat(
    store: PresenceStore, user_id: int, connection: str, *, idle: bool, changed: bool, now: float
) -> None:
    """Record a heartbeat; publish only when the idle flag changed."""
    await store.beat(user_id, connection, idle=idle, now=now)
    if changed:
        await publish_if_changed(store, user_id, now=now)


async def connection_closed(
    store: PresenceStore, user_id: int, connection: str, *, now: float
) -> None:
    """Forget a connection; if it was the user's last, decide `offline` after the grace."""
    connections = await store.close_connection(user_id, connection)
    if live(connections, now=now, window=window()):
        await publish_if_changed(store, user_id, now=now)
        return
    # A reconnect within the grace must not flap offline-online for subscribers.
    loop = asyncio.get_running_loop()
    loop.call_later(
        settings.PRESENCE_GRACE,
        lambda: loop.create_task(_settle(store, user_id, last_seen=now)),
    )


async def _settle(store: PresenceStore, user_id: int, *, last_seen: float) -> None:
    try:
        now = last_seen + settings.PRESENCE_GRACE
        connections = (await store.connections([user_id]))[user_id]
        if live(connections, now=now, window=window()):
            return
        await _go_offline(store, user_id, last_seen=last_seen, now=now)
    except Exception:  # a background task: log it; the sweep catches what this misses
        logger.exception("presence settle for user %s failed", user_id)


async def _go_offline(store: PresenceStore, user_id: int, *, last_seen: float, now: float) -> None:
    # The durable record first, then the announcement: whoever hears `offline` can read
    # `last_seen` from PostgreSQL.
    await _record_last_seen(user_id, last_seen)
    await store.set_last_seen(user_id, last_seen)
    await store.forget_user(user_id)
    await publish_if_changed(store, user_id, now=now)


async def _record_last_seen(user_id: int, at: float) -> None:
    def save() -> None:
        User.objects.filter(pk=user_id).update(last_seen=datetime.fromtimestamp(at, UTC))

    try:
        await db(save)
    except DatabaseError as exc:
        logger.warning("last_seen of user %s not saved: %r", user_id, exc)


async def sweep(store: PresenceStore, *, now: float) -> list[int]:
    """Turn offline the users whose every connection expired (their gateway died).

    One sweeper at a time across gateways (a lock in the store). Return the users
    turned offline.
    """
    if not await store.try_lock("sweep", settings.PRESENCE_SWEEP_INTERVAL * 0.8):
        return []
    gone: list[int] = []
    limit = now - window()
    for user_id in await store.stale_users(before=limit):
        connections = (await store.connections([user_id]))[user_id]
        expired = {n: b for n, b in connections.items() if b.at <= limit}
        await store.remove(user_id, expired)
        if len(expired) < len(connections):
            continue
        last_seen = max((b.at for b in expired.values()), default=limit)
        await _go_offline(store, user_id, last_seen=last_seen, now=now)
        gone.append(user_id)
    return gone


async def set_status(store: PresenceStore, user: User, status: str, *, now: float) -> str:
    """Set the sticky status, update the store and publish; return the derived state.

    The rule and the write are the accounts service's, shared with REST.
    """
    await db(update_profile, user=user, status=status)
    # `status_changed` has already published from the service's on-commit hook; this
    # is idempotent (publish_if_changed only publishes a change) and yields the state.
    await store.set_busy(user.pk, user.current_status == User.Status.BUSY)
    return await publish_if_changed(store, user.pk, now=now)


async def end_statuses() -> list[int]:
    """Make available the users whose busy status ended; contacts hear it live.

    Run by every gateway with the sweep (`PRESENCE_SWEEP_INTERVAL`): each ended status
    is cleared once (`accounts.services.expire_statuses`), and its `status_changed`
    publishes the new presence.
    """
    return await db(expire_statuses)


async def snapshot(
    store: PresenceStore, user_ids: Iterable[int], *, now: float
) -> list[wire.PresenceEntry]:
    """Return `{id, state, last_seen}` for each user (three round trips in all)."""
    ids = list(user_ids)
    connections = await store.connections(ids)
    busy = await store.busy(ids)
    seen = await store.last_seen(ids)
    result = []
    for uid in ids:
        state = derive(connections[uid], busy=uid in busy, now=now, window=window())
        last_seen = now if state != OFFLINE else seen.get(uid)
        result.append(wire.presence_entry(uid, state, last_seen))
    return result


def hidden_entry(user_id: int) -> wire.PresenceEntry:
    """Return what a user who may not see `user_id` is told: offline, never seen."""
    return wire.presence_entry(user_id, OFFLINE, None)


async def rebuild(
    store: PresenceStore, entries: Iterable[tuple[int, str, bool, bool]], *, now: float
) -> None:
    """Write back live connections after Redis lost them: (user, connection, idle, busy)."""
    entries = list(entries)
    for user_id, _, _, busy in entries:
        await store.set_busy(user_id, busy)
    await store.beat_many([(user, name, Beat(now, idle)) for user, name, idle, _ in entries])


def on_status_changed(sender: object, *, user_id: int, status: str, **kwargs: Any) -> None:
    """Publish a sticky status changed outside a socket (REST `PATCH /users/me`)."""

    async def apply() -> None:
        async with open_store() as store:
            await store.set_busy(user_id, status == User.Status.BUSY)
            await publish_if_changed(store, user_id, now=time.time())

    try:
        async_to_sync(apply)()
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("presence of user %s not updated after a status change: %r", user_id, exc)
