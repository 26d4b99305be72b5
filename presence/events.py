"""Presence on the channel layer: the only presence module that talks to it.

Each user's derived state changes go to the group `presence.<user>`; a connection joins
the groups of the users it subscribed to (bounded by `presence.subscribe`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from chatsite import metrics
from chatsite.layers import add_to_groups
from messaging import wire

logger = logging.getLogger(__name__)


def presence_group(user_id: int) -> str:
    """Return the group of a user's presence subscribers."""
    return f"presence.{user_id}"


def presence_event(frame: wire.PresenceChangedFrame) -> dict[str, Any]:
    """Wrap `presence.changed` for the gateways: they forward it to followers."""
    return {"type": "presence.event", "user": frame["user"], "frame": dict(frame)}


async def publish(user_id: int, state: str, last_seen: float | None) -> None:
    """Send a state change to the user's subscribers; a failure is logged, not raised."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async with asyncio.timeout(settings.CHAT_BROADCAST_TIMEOUT):
            await layer.group_send(
                presence_group(user_id),
                presence_event(wire.presence_changed_frame(user_id, state, last_seen)),
            )
    except Exception as exc:  # noqa: BLE001 - presence is a hint; the next change corrects it
        metrics.count_dropped("publish_failed")
        logger.warning("presence of user %s not published: %r", user_id, exc)


async def follow(layer: Any, channel: str, *, add: Iterable[int], drop: Iterable[int]) -> None:
    """Make a connection follow the presence of `add` and stop following `drop`."""
    for user_id in drop:
        await layer.group_discard(presence_group(user_id), channel)
    await add_to_groups(layer, [presence_group(user_id) for user_id in add], channel)
