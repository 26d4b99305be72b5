"""Events on the channel layer: group names, and sending frames to them once a write commits.

This is the only messaging module that talks to the channel layer (STYLE.md). An event
carries a wire frame (`messaging.wire`) and, beside it, the routing data the gateway
needs and never forwards:

- `conv.event` to `conv.<id>`, with `conversation` and `member_seq` (and `cid`, the
  correlation id of the work that made it, when there is one): the gateway forwards
  the frame to members (re-checking membership when `member_seq` moved);
- `user.event` to `user.<id>`, with `conversation` and `member_seq`: the gateway joins or
  leaves `conv.<id>`, then forwards the frame (`conversation.updated`).

Groups: `conv.<id>` holds the connections of a conversation's members; `user.<id>`
every connection of one user.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chatsite import metrics
from chatsite.gateway import fanout
from chatsite.layers import add_to_groups
from chatsite.logs import correlation_id

logger = logging.getLogger(__name__)

Event = dict[str, Any]


def conversation_group(conversation_id: int) -> str:
    """Return the channel-layer group of a conversation's connections."""
    return f"conv.{conversation_id}"


def user_group(user_id: int) -> str:
    """Return the channel-layer group of all of a user's connections."""
    return f"user.{user_id}"


def conversation_event(
    conversation_id: int,
    member_seq: int,
    frame: Mapping[str, Any],
    origin: str | None = None,
) -> Event:
    """Wrap a conversation's frame with what gateways route it by.

    `member_seq` is the log number of the conversation's latest membership change: a
    gateway re-checks a socket's membership before forwarding when it has moved, so a
    removed member's socket never gets what was logged after the removal. `origin`: the
    channel name of a socket that already has the frame (it answered that socket's
    request) and does not get it again.
    """
    event: Event = {
        "type": "conv.event",
        "conversation": conversation_id,
        "member_seq": member_seq,
        "frame": dict(frame),
    }
    if origin is not None:
        event["origin"] = origin
    cid = correlation_id.get()
    if cid is not None:
        event["cid"] = cid  # the receivers' gateways log it (chatsite.logs)
    return event


def user_event(conversation_id: int, member_seq: int, frame: Mapping[str, Any]) -> Event:
    """Wrap a membership change for one user's connections."""
    return {
        "type": "user.event",
        "conversation": conversation_id,
        "member_seq": member_seq,
        "frame": dict(frame),
    }


def send_event_on_commit(group: str, event: Event) -> None:
    """Send `event` to `group` once the current transaction commits (never before)."""
    transaction.on_commit(lambda: send_now([(group, event)]))


def send_events_on_commit(items: Iterable[tuple[str, Event]]) -> None:
    """Send several `(group, event)` pairs, in order, once the current transaction commits."""
    batch = list(items)
    if batch:
        transaction.on_commit(lambda: send_now(batch))


def to_conversation_on_commit(
    conversation_id: int,
    member_seq: int,
    frame: Mapping[str, Any],
    origin: str | None = None,
) -> None:
    """Send a conversation's frame to its members' connections once the write commits.

    `origin`: the channel name of a connection left out (see `conversation_event`).
    """
    send_event_on_commit(
        conversation_group(conversation_id),
        conversation_event(conversation_id, member_seq, frame, origin),
    )


def send_now(batch: list[tuple[str, Event]]) -> None:
    """Send events to groups now, bounded in time; a failure is logged, never raised.

    The write they announce is already committed; a lost event is a gap that clients
    repair from the database (docs/protocol.md), so fan-out must not fail a send. In a
    gateway the events go to its fan-out queues (`chatsite.gateway.fanout`, started with
    the ASGI app) and this returns at once; elsewhere (a worker, a command, a test) it
    waits, at most `CHAT_BROADCAST_TIMEOUT`.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    if fanout.offer(layer, batch):
        return
    try:
        async_to_sync(_send_all)(layer, batch)
    except Exception as exc:  # noqa: BLE001 - no layer failure may fail a committed write
        metrics.count_dropped("publish_failed", len(batch))
        logger.warning("fan-out of %d event(s) failed: %r", len(batch), exc)


async def _send_all(layer: Any, batch: list[tuple[str, Event]]) -> None:
    async with asyncio.timeout(settings.CHAT_BROADCAST_TIMEOUT):
        for group, event in batch:
            await layer.group_send(group, event)


async def send_event(layer: Any, group: str, event: Event) -> None:
    """Send one event now, from async code (typing: never stored, so nothing to commit)."""
    async with asyncio.timeout(settings.CHAT_BROADCAST_TIMEOUT):
        await layer.group_send(group, event)


# --- what gateways do with the channel layer ------------------------------------------


async def join_groups(layer: Any, channel: str, groups: Iterable[str]) -> None:
    """Add a connection's channel to groups, returning once their events reach it."""
    await add_to_groups(layer, groups, channel)


async def leave_groups(layer: Any, channel: str, groups: Iterable[str]) -> None:
    """Remove a connection's channel from groups."""
    for group in groups:
        await layer.group_discard(group, channel)


async def send_to_channel(layer: Any, channel: str, event: Event) -> None:
    """Send one event to one connection's channel."""
    await layer.send(channel, event)


# --- blocking and delete for me -----------------------------------------------------------


def block_event(other_user_id: int, *, blocked: bool, frame: Mapping[str, Any] | None) -> Event:
    """Tell a user's connections a block with `other_user_id` began or ended.

    Both sides' gateways update their block set (presence and typing filters); only
    the blocker's get a `frame` (`block.updated`) to forward: the blocked person is
    never told.
    """
    return {
        "type": "block.event",
        "user": other_user_id,
        "blocked": blocked,
        "frame": dict(frame) if frame is not None else None,
    }


def own_event(frame: Mapping[str, Any]) -> Event:
    """Wrap a frame for one user's own connections only (`message.hidden`)."""
    return {"type": "own.event", "frame": dict(frame)}
