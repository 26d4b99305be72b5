"""The wire format of every messaging payload, and broadcasts to the channel layer on commit.

This is the only module that talks to the channel layer (STYLE.md). A channel-layer
event is the wire frame itself: `{"type": "message.created", "message": {...}}`, so a
gateway forwards it as it is (its Channels handler is `message_created`).

Groups: `conv.<id>` holds the connections of a conversation's members (message and
receipt events); `user.<id>` holds every connection of a user (membership changes,
which make those connections join or leave `conv.<id>`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chatsite.wire import iso
from messaging.models import Attachment, Device, Membership, Message, Notification

logger = logging.getLogger(__name__)


def conversation_group(conversation_id: int) -> str:
    """Return the channel-layer group of a conversation's connections."""
    return f"conv.{conversation_id}"


def user_group(user_id: int) -> str:
    """Return the channel-layer group of all of a user's connections."""
    return f"user.{user_id}"


class AttachmentPayload(TypedDict):
    """An attachment as clients see it."""

    id: int
    filename: str
    content_type: str
    size: int
    url: str
    thumbnail_url: str | None


class SystemPayload(TypedDict):
    """What a system message records: the event, the users it concerns, a title."""

    event: str
    users: list[int]
    title: NotRequired[str]


class MessagePayload(TypedDict):
    """A message as REST answers it and `message.created` / `message.updated` carry it."""

    id: int
    conversation: int
    seq: int
    version: int
    kind: str
    sender: int | None
    body: str
    client_msg_id: str | None
    created_at: str | None
    edited_at: str | None
    deleted: bool
    attachments: list[AttachmentPayload]
    mentions: list[int]
    system: NotRequired[SystemPayload]


class MemberPayload(TypedDict):
    """A member of a conversation with their markers."""

    id: int
    username: str
    display_name: str
    role: str
    read_seq: int
    delivered_seq: int


class ConversationPayload(TypedDict):
    """A conversation as one user sees it (session.ready, sync.state, REST)."""

    id: int
    kind: str
    title: str
    public: bool
    last_seq: int
    read_seq: int
    delivered_seq: int
    unread: int
    muted: bool
    notify: str
    last_activity_at: str | None
    peer: NotRequired[int | None]
    members: NotRequired[list[MemberPayload]]


@dataclass(frozen=True)
class ConversationView:
    """The facts of one user's view of a conversation, from which its payload is built."""

    id: int
    kind: str
    title: str
    public: bool
    last_seq: int
    read_seq: int
    delivered_seq: int
    unread: int
    muted: bool
    last_activity_at: datetime | None
    peer: int | None = None
    notify: str = "all"
    # Internal (not on the wire): the log number of the latest membership change.
    member_seq: int = 0


def attachment_payload(attachment: Attachment) -> AttachmentPayload:
    """Build the wire form of an attachment."""
    return {
        "id": attachment.pk,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "url": f"/api/v1/attachments/{attachment.pk}",
        "thumbnail_url": (
            f"/api/v1/attachments/{attachment.pk}?thumbnail=1" if attachment.thumbnail else None
        ),
    }


def message_payload(message: Message) -> MessagePayload:
    """Build the one wire form of a message (prefetch `attachments` when building many)."""
    payload: MessagePayload = {
        "id": message.pk,
        "conversation": message.conversation_id,
        "seq": message.seq,
        "version": message.version,
        "kind": message.kind,
        "sender": message.sender_id,
        "body": message.body,
        "client_msg_id": str(message.client_msg_id) if message.client_msg_id else None,
        "created_at": iso(message.created_at),
        "edited_at": iso(message.edited_at),
        "deleted": message.deleted,
        "attachments": (
            [] if message.deleted else [attachment_payload(a) for a in _attachments(message)]
        ),
        "mentions": [] if message.deleted else list(message.mentions or ()),
    }
    if message.kind == Message.Kind.SYSTEM and message.system is not None:
        payload["system"] = message.system
    return payload


def _attachments(message: Message) -> Iterable[Attachment]:
    # Prefetched attachments straight from the cache: `message.attachments.all()` builds a
    # related manager and a queryset on every call, most of the cost of a payload.
    prefetched: dict[str, Any] | None = getattr(message, "_prefetched_objects_cache", None)
    if prefetched is not None and "attachments" in prefetched:
        cached: Iterable[Attachment] = prefetched["attachments"]
        return cached
    return message.attachments.all()


def conversation_payload(
    view: ConversationView, members: list[MemberPayload] | None = None
) -> ConversationPayload:
    """Build the wire form of one user's view of a conversation."""
    payload: ConversationPayload = {
        "id": view.id,
        "kind": view.kind,
        "title": view.title,
        "public": view.public,
        "last_seq": view.last_seq,
        "read_seq": view.read_seq,
        "delivered_seq": view.delivered_seq,
        "unread": view.unread,
        "muted": view.muted,
        "notify": view.notify,
        "last_activity_at": iso(view.last_activity_at),
    }
    if view.kind == "direct":
        payload["peer"] = view.peer
    if members is not None:
        payload["members"] = members
    return payload


def member_payload(membership: Membership) -> MemberPayload:
    """Build the wire form of a member (select the membership's user with it)."""
    return {
        "id": membership.user_id,
        "username": membership.user.username,
        "display_name": membership.user.name,
        "role": membership.role,
        "read_seq": membership.read_seq,
        "delivered_seq": membership.delivered_seq,
    }


class NotificationPayload(TypedDict):
    """One decision of a message's notification trace, as its recipient sees it."""

    kind: str
    channel: str
    device: int | None
    decision: str
    reason: str | None
    provider_status: str | None
    latency_ms: int | None
    at: str | None


def notification_payload(row: Notification) -> NotificationPayload:
    """Build the wire form of a trace row."""
    return {
        "kind": row.kind,
        "channel": row.channel,
        "device": row.device_id,
        "decision": row.decision,
        "reason": row.reason or None,
        "provider_status": row.provider_status or None,
        "latency_ms": row.latency_ms,
        "at": iso(row.updated_at),
    }


class DevicePayload(TypedDict):
    """A registered push target (its token is never echoed)."""

    id: int
    platform: str
    name: str
    created_at: str | None
    last_used_at: str | None


def device_payload(device: Device) -> DevicePayload:
    """Build the wire form of a device."""
    return {
        "id": device.pk,
        "platform": device.platform,
        "name": device.name,
        "created_at": iso(device.created_at),
        "last_used_at": iso(device.last_used_at),
    }


ConversationReason = Literal["created", "joined", "left", "removed", "renamed"]


def message_created_event(message: Message) -> dict[str, Any]:
    """Build the `message.created` frame."""
    return {"type": "message.created", "message": message_payload(message)}


def message_updated_event(message: Message) -> dict[str, Any]:
    """Build the `message.updated` frame (an edit or a deletion)."""
    return {"type": "message.updated", "message": message_payload(message)}


def receipt_updated_event(
    *, conversation_id: int, user_id: int, delivered_seq: int, read_seq: int
) -> dict[str, Any]:
    """Build the `receipt.updated` frame."""
    return {
        "type": "receipt.updated",
        "conversation": conversation_id,
        "user": user_id,
        "delivered_seq": delivered_seq,
        "read_seq": read_seq,
    }


def conversation_updated_event(
    conversation: Mapping[str, Any], reason: ConversationReason
) -> dict[str, Any]:
    """Build the `conversation.updated` frame."""
    return {"type": "conversation.updated", "conversation": dict(conversation), "reason": reason}


def broadcast_to_conversation_on_commit(
    conversation_id: int, member_seq: int, frame: dict[str, Any]
) -> None:
    """Send a conversation's event to its members' connections once the transaction commits.

    The event carries `member_seq` (the log number of the latest membership change);
    gateways use it to re-check a connection's membership before forwarding and strip
    it from the frame.
    """
    broadcast_on_commit(conversation_group(conversation_id), {**frame, "member_seq": member_seq})


def broadcast_on_commit(group: str, event: dict[str, Any]) -> None:
    """Send `event` to `group` once the current transaction commits (never before)."""
    transaction.on_commit(lambda: send_now([(group, event)]))


def broadcast_many_on_commit(items: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Send several `(group, event)` pairs once the current transaction commits."""
    batch = list(items)
    if batch:
        transaction.on_commit(lambda: send_now(batch))


def send_now(batch: list[tuple[str, dict[str, Any]]]) -> None:
    """Send events to groups now, bounded in time; a failure is logged, never raised.

    The write they announce is already committed; a lost event is a gap that clients
    repair from the database (PROTOCOL.md section 1), so fan-out must not fail a send.
    In a gateway process the events are handed to its event loop's fan-out queue and
    this returns at once; elsewhere (admin, commands, tests) it waits, at most
    `CHAT_BROADCAST_TIMEOUT`.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    if _fanout is not None and _fanout.offer(batch):
        return
    try:
        async_to_sync(_send_all)(layer, batch)
    except Exception as exc:  # noqa: BLE001 - no layer failure may fail a committed write
        logger.warning("fan-out of %d event(s) failed: %r", len(batch), exc)


async def _send_all(layer: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
    timeout = settings.CHAT_BROADCAST_TIMEOUT
    async with asyncio.timeout(timeout):
        for group, event in batch:
            await layer.group_send(group, event)


class _Fanout:
    """Per-process fan-out: ordered queues drained by tasks on the gateway's event loop.

    Each group hashes to one queue, so events of one conversation leave in commit order;
    several queues keep one slow group from holding up the others. Queues are bounded:
    when full, events are dropped and logged (clients repair gaps from the database).
    """

    SHARDS = 4

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: Any) -> None:
        self.loop = loop
        self.layer = layer
        size = settings.CHAT_FANOUT_QUEUE
        self.queues: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = [
            asyncio.Queue(size) for _ in range(self.SHARDS)
        ]
        self.tasks = [loop.create_task(self._drain(q)) for q in self.queues]

    def offer(self, batch: list[tuple[str, dict[str, Any]]]) -> bool:
        """Queue the batch from any thread; False if this loop is gone."""
        if self.loop.is_closed() or not self.loop.is_running():
            return False
        self.loop.call_soon_threadsafe(self._put, batch)
        return True

    def _put(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for group, event in batch:
            queue = self.queues[hash(group) % self.SHARDS]
            try:
                queue.put_nowait((group, event))
            except asyncio.QueueFull:
                logger.warning("fan-out queue full; dropped %s to %s", event.get("type"), group)

    async def _drain(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        timeout = settings.CHAT_BROADCAST_TIMEOUT
        while True:
            group, event = await queue.get()
            try:
                async with asyncio.timeout(timeout):
                    await self.layer.group_send(group, event)
            except Exception as exc:  # noqa: BLE001 - the write is committed; clients repair
                logger.warning("fan-out of %s to %s failed: %r", event.get("type"), group, exc)


_fanout: _Fanout | None = None


def start_fanout(layer: Any) -> None:
    """Route this process's on-commit broadcasts through the running loop (gateways call it)."""
    global _fanout
    loop = asyncio.get_running_loop()
    if _fanout is None or _fanout.loop is not loop:
        _fanout = _Fanout(loop, layer)


# --- what gateways do with the channel layer ------------------------------------------


async def join_groups(layer: Any, channel: str, groups: Iterable[str]) -> None:
    """Add a connection's channel to groups."""
    for group in groups:
        await layer.group_add(group, channel)


async def leave_groups(layer: Any, channel: str, groups: Iterable[str]) -> None:
    """Remove a connection's channel from groups."""
    for group in groups:
        await layer.group_discard(group, channel)


async def send_to_channel(layer: Any, channel: str, event: dict[str, Any]) -> None:
    """Send one event to one connection's channel."""
    await layer.send(channel, event)


def typing_event(*, conversation_id: int, user_id: int, state: str) -> dict[str, Any]:
    """Build the `typing` frame."""
    return {"type": "typing", "conversation": conversation_id, "user": user_id, "state": state}


async def relay_typing(
    layer: Any, *, conversation_id: int, user_id: int, state: str, member_seq: int
) -> None:
    """Relay a typing indicator to a conversation's connections (never stored)."""
    event = {**typing_event(conversation_id=conversation_id, user_id=user_id, state=state)}
    event["member_seq"] = member_seq
    async with asyncio.timeout(settings.CHAT_BROADCAST_TIMEOUT):
        await layer.group_send(conversation_group(conversation_id), event)
