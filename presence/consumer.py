"""What a chat socket does for presence: its frames, its heartbeat writes, its followers.

A mixin of the consumer (`messaging.consumers.ChatConsumer`): the socket is a live
connection of its user while it sends frames; `activity`, `status.set` and
`presence.subscribe` are answered here, and followed users' changes forwarded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from redis.exceptions import RedisError

from accounts.models import User
from chatsite.gateway.dbthreads import db
from messaging import frames, selectors, wire
from presence import events, services
from presence.beats import beats
from presence.store import get_store

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The empty set every socket starts with (the sets are replaced, never changed in place).
NOBODY: frozenset[int] = frozenset()


class PresenceMixin:
    """Presence for a `chatsite.gateway.socket.FrameSocket` of one user."""

    user: User
    channel_name: str
    channel_layer: Any
    last_frame_at: float
    idle = False
    presence_written_at = 0.0
    following: AbstractSet[int]
    # The users of the last `presence.subscribe`, and who is in a block with this user
    # (either way): they read offline, never seen.
    presence_wanted: AbstractSet[int]
    blocked: AbstractSet[int]

    if TYPE_CHECKING:

        async def send_frame(
            self, frame: Any, *, shared: bool = False, unheld: bool = False
        ) -> bool:
            """Send a frame (the socket's); return whether it went out."""

    def init_presence(self) -> None:
        """Give the presence attributes their first values (from the socket's `__init__`).

        The three sets start as one shared empty set (`NOBODY`) and are replaced, never
        changed in place: most sockets follow nobody and block nobody.
        """
        self.idle = False
        self.presence_written_at = 0.0
        self.following = NOBODY
        self.presence_wanted = NOBODY
        self.blocked = NOBODY

    async def _presence(self, work: Awaitable[T], failed: T) -> T:
        """Run a presence update; presence is a hint, so a Redis failure is only logged.

        Returns what the update returned, or `failed` if it failed.
        """
        try:
            return await work
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("presence update failed: %r", exc)
            return failed

    async def presence_opened(self) -> list[str]:
        """Count this socket as a live connection of its user.

        Returns the user's oldest connections past `WS_MAX_CONNECTIONS_PER_USER`, to be
        closed (none if Redis failed: presence is a hint, and the cap then waits).
        """
        busy = self.user.current_status == User.Status.BUSY
        opened = services.connection_opened(
            get_store(), self.user.pk, self.channel_name, busy=busy, now=time.time()
        )
        evicted = await self._presence(opened, failed=[])
        self.presence_written_at = time.monotonic()
        return evicted

    async def presence_closed(self) -> None:
        """Stop following anyone and count this connection gone."""
        await beats.forget(self.channel_name)
        try:
            await events.follow(self.channel_layer, self.channel_name, add=(), drop=self.following)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("presence cleanup failed: %r", exc)
        await self._presence(
            services.connection_closed(
                get_store(), self.user.pk, self.channel_name, now=time.time()
            ),
            failed=None,
        )

    def presence_heartbeat(self) -> None:
        """Any frame is a heartbeat; one is queued at most every PRESENCE_WRITE_INTERVAL."""
        if self.last_frame_at - self.presence_written_at < settings.PRESENCE_WRITE_INTERVAL:
            return
        self.presence_written_at = self.last_frame_at
        beats.queue(self.user.pk, self.channel_name, lambda: self.idle)

    async def activity(self, request: frames.Activity, ref: str | None) -> None:
        """Record whether the user is idle on this device (all devices idle: `away`)."""
        changed, self.idle = request.idle != self.idle, request.idle
        self.presence_written_at = time.monotonic()
        await self._presence(
            services.heartbeat(
                get_store(),
                self.user.pk,
                self.channel_name,
                idle=request.idle,
                changed=changed,
                now=time.time(),
            ),
            failed=None,
        )

    async def set_status(self, request: frames.StatusSet, ref: str | None) -> None:
        """Set the sticky status; answer with this user's `presence.changed`."""
        state = await services.set_status(get_store(), self.user, request.status, now=time.time())
        await self.send_frame(wire.presence_changed_frame(self.user.pk, state, time.time(), ref))

    async def subscribe_presence(self, request: frames.PresenceSubscribe, ref: str | None) -> None:
        """Follow the presence of up to 1,000 users (replacing the set); answer a snapshot.

        Users who share no conversation with this user are answered as offline and
        never seen, and are not followed: presence is visible only to contacts.
        """
        wanted = request.users
        self.presence_wanted = set(wanted)
        visible = await db(selectors.filter_visible_users, user=self.user, user_ids=wanted)
        await events.follow(
            self.channel_layer,
            self.channel_name,
            add=visible - self.following,
            drop=self.following - visible,
        )
        self.following = set(visible)
        shown = {
            entry["id"]: entry
            for entry in await services.snapshot(
                get_store(), [u for u in wanted if u in visible], now=time.time()
            )
        }
        users = [shown.get(u) or services.hidden_entry(u) for u in wanted]
        await self.send_frame(wire.presence_snapshot_frame(ref, users))

    async def presence_event(self, event: dict[str, Any]) -> None:
        """Forward `presence.changed` of a followed user."""
        if event["user"] in self.following and event["user"] not in self.blocked:
            await self.send_frame(event["frame"], shared=True)

    async def presence_block_changed(self, other: int, *, blocked: bool) -> None:
        """Show `other` offline when a block began, and as they are when it ended."""
        if other not in self.presence_wanted:
            return
        if blocked:
            await events.follow(self.channel_layer, self.channel_name, add=(), drop=[other])
            self.following = self.following - {other}
            entry = services.hidden_entry(other)
            await self.send_frame(wire.presence_changed_frame(other, entry["state"], None))
            return
        visible = await db(selectors.filter_visible_users, user=self.user, user_ids=[other])
        if other not in visible:
            return
        await events.follow(self.channel_layer, self.channel_name, add=[other], drop=())
        self.following = self.following | {other}
        (shown,) = await services.snapshot(get_store(), [other], now=time.time())
        frame = wire.presence_changed_frame(other, shown["state"], None)
        frame["last_seen"] = shown["last_seen"]
        await self.send_frame(frame)


def parse_presence_subscribe(frame: dict[str, Any]) -> frames.PresenceSubscribe:
    """Parse `presence.subscribe` against PRESENCE_MAX_SUBSCRIPTIONS."""
    return frames.parse_presence_subscribe(frame, limit=settings.PRESENCE_MAX_SUBSCRIPTIONS)
