"""Per-process supervision of a gateway's sockets: one periodic task, not one per socket.

It closes sockets that went silent (4408) and sockets whose credential no longer holds
(4401), re-joins every socket's groups when Redis lost them (a restart or flush wipes
channel-layer groups) or before channels-redis forgets them, writes presence back after
such a loss, and runs the presence sweep for users whose gateway died and the end of
busy statuses whose `status_until` passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from datetime import datetime
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, InterfaceError
from django.utils import timezone
from redis.exceptions import RedisError

from accounts import credentials
from accounts.models import User
from chatsite import metrics
from chatsite.gateway.auth import Credential, find_revoked
from chatsite.gateway.dbthreads import db
from chatsite.redis import async_clients
from presence import services as presence
from presence.store import get_store

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_IDLE = 4408
# channels-redis forgets group members after `group_expiry` (a day): sockets older than
# half of it join their groups again. Looked for every 10 minutes, not at every check.
GROUP_REJOIN_AFTER = 12 * 3600
STALE_GROUPS_SCAN_INTERVAL = 600.0
# Silent sockets are looked for this many times per idle limit (3 heartbeats): a silent
# socket is closed at most a fifteenth of the limit late.
IDLE_SCANS_PER_LIMIT = 15


class Socket(Protocol):
    """What the supervisor needs of a connection."""

    user: User
    channel_name: str
    credential: Credential | None
    idle: bool
    last_frame_at: float
    groups_joined_at: float

    async def close_with(self, code: int) -> None:
        """Close once with `code`."""

    async def rejoin_groups(self) -> None:
        """Join the socket's groups again."""


def _affected(credential: Credential | None, changes: credentials.Changes, now: float) -> bool:
    """Return whether a recorded change (or the clock) may have voided this credential."""
    if credential is None:
        return False
    return (
        credential.user_id in changes.users
        or (credential.session_key is not None and credential.session_key in changes.sessions)
        or (credential.expires_at is not None and credential.expires_at <= now)
    )


class Supervisor:
    """The live sockets of this process and the periodic work done for all of them."""

    def __init__(self) -> None:
        self.sockets: set[Socket] = set()
        self.task: asyncio.Task[None] | None = None
        self.instance = uuid.uuid4().hex
        self.sentinel_seen = False
        self.next_auth_check = 0.0
        # Credential re-checks: all sockets every WS_AUTH_FULL_CHECK_INTERVAL; between
        # those, only the sockets whose user or session a recorded change names.
        self.next_full_auth_check = 0.0
        self.changes_read_until: datetime | None = None
        # The earliest expiry (epoch seconds) of a tracked credential not yet checked:
        # between full checks, sockets are scanned only for a change or by this time.
        self.next_expiry = math.inf
        self.next_group_check = 0.0
        self.next_stale_groups_scan = 0.0
        self.next_idle_scan = 0.0
        self.next_sweep = 0.0

    def add(self, socket: Socket) -> None:
        """Track a socket; start the periodic task on first use in this loop."""
        self.sockets.add(socket)
        credential = socket.credential
        if credential is not None and credential.expires_at is not None:
            self.next_expiry = min(self.next_expiry, credential.expires_at)
        metrics.OPEN_SOCKETS.set(len(self.sockets))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, socket: Socket) -> None:
        """Stop tracking a socket."""
        self.sockets.discard(socket)
        metrics.OPEN_SOCKETS.set(len(self.sockets))

    async def _run(self) -> None:
        tick = max(
            0.2, min(settings.WS_HEARTBEAT_INTERVAL / 2, settings.WS_AUTH_CHECK_INTERVAL, 1.0)
        )
        while True:
            await asyncio.sleep(tick)
            try:
                await self._tick()
            except Exception:
                logger.exception("gateway periodic task failed")

    async def _tick(self) -> None:
        now = time.monotonic()
        idle_limit = settings.WS_HEARTBEAT_INTERVAL * settings.WS_IDLE_TIMEOUT_FACTOR
        if now >= self.next_idle_scan:
            self.next_idle_scan = now + idle_limit / IDLE_SCANS_PER_LIMIT
            silent = [s for s in self.sockets if now - s.last_frame_at > idle_limit]
            for socket in silent:
                await socket.close_with(CLOSE_IDLE)
        if now >= self.next_auth_check:
            self.next_auth_check = now + settings.WS_AUTH_CHECK_INTERVAL
            await self._check_credentials()
        if now >= self.next_group_check:
            self.next_group_check = now + settings.WS_GROUP_REFRESH_INTERVAL
            await self._check_groups()
        if now >= self.next_sweep:
            self.next_sweep = now + settings.PRESENCE_SWEEP_INTERVAL
            try:
                await presence.sweep(get_store(), now=time.time())
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("presence sweep failed: %r", exc)
            try:
                await presence.end_statuses()
            except (DatabaseError, InterfaceError) as exc:
                logger.warning("ending busy statuses failed: %r", exc)

    async def _check_credentials(self) -> None:
        """Close the sockets whose credential no longer holds.

        Expired tokens are seen here without a query. The database is asked about every
        socket every `WS_AUTH_FULL_CHECK_INTERVAL`, and in between only about the
        sockets of users and sessions with a recorded change (`accounts.credentials`):
        one small query per interval when nothing changed, whatever the socket count.
        """
        if not any(s.credential is not None for s in self.sockets):
            self.changes_read_until = None  # the next socket starts with a full check
            return
        now, wall = time.monotonic(), time.time()
        try:
            if self.changes_read_until is None or now >= self.next_full_auth_check:
                # Read the clock before the full check: changes from here on are read next.
                self.changes_read_until = timezone.now()
                self.next_full_auth_check = now + settings.WS_AUTH_FULL_CHECK_INTERVAL
                chosen = [s for s in self.sockets if s.credential is not None]
            else:
                changes = await db(credentials.changes_since, since=self.changes_read_until)
                self.changes_read_until = changes.until
                wall = time.time()
                if not changes.users and not changes.sessions and wall < self.next_expiry:
                    return  # nothing recorded, nothing expired: no socket to look at
                chosen = [s for s in self.sockets if _affected(s.credential, changes, wall)]
            if not chosen:
                self._note_expiries(wall)  # the earliest may have been a closed socket's
                return
            creds: list[Credential] = [s.credential for s in chosen]  # type: ignore[misc]
            revoked = await db(find_revoked, credentials=creds, now=wall)
        except (DatabaseError, InterfaceError):
            return  # checked again next time; the database being down revokes nothing
        self._note_expiries(wall)
        for index in revoked:
            await chosen[index].close_with(CLOSE_UNAUTHENTICATED)

    def _note_expiries(self, wall: float) -> None:
        """Remember the earliest credential expiry after `wall` (those before are checked now)."""
        self.next_expiry = min(
            (
                c.expires_at
                for s in self.sockets
                if (c := s.credential) is not None and c.expires_at is not None
                if c.expires_at > wall
            ),
            default=math.inf,
        )

    def _sentinel_key(self) -> str:
        return f"{settings.REDIS_KEY_PREFIX}:gateway:{self.instance}"

    async def ensure_sentinel(self) -> None:
        """Write this process's sentinel key before its first socket joins any group.

        Redis losing the key later is how the periodic check knows the groups are gone.
        """
        if self.sentinel_seen:
            return
        clients = async_clients()
        if not clients:
            return
        with contextlib.suppress(RedisError, OSError):
            for client in clients:  # one per shard: any of them may restart
                await client.set(self._sentinel_key(), "1", nx=True)
            self.sentinel_seen = True

    async def _check_groups(self) -> None:
        """Re-join every group if a Redis shard lost them (a restart or flush wipes groups)."""
        clients = async_clients()
        if not clients or not self.sockets:
            return
        try:
            created = [await c.set(self._sentinel_key(), "1", nx=True) for c in clients]
        except (RedisError, OSError):
            return
        lost = any(created) and self.sentinel_seen
        if lost:
            logger.warning("a Redis shard lost this gateway's groups; re-joining them")
        self.sentinel_seen = True
        now = time.monotonic()
        if lost or now >= self.next_stale_groups_scan:
            self.next_stale_groups_scan = now + STALE_GROUPS_SCAN_INTERVAL
            stale_before = now - GROUP_REJOIN_AFTER
            for socket in list(self.sockets):
                if lost or socket.groups_joined_at < stale_before:
                    await socket.rejoin_groups()
        if lost:
            # Presence lived in the Redis that was lost: write back this process's sockets.
            live = [s for s in self.sockets if s.credential is not None]
            entries = [
                (s.user.pk, s.channel_name, s.idle, s.user.current_status == User.Status.BUSY)
                for s in live
            ]
            try:
                await presence.rebuild(get_store(), entries, now=time.time())
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("presence rebuild failed: %r", exc)


supervisor = Supervisor()
