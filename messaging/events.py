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
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from messaging.models import Attachment, Membership, Message

logger = logging.getLogger(__name__)


def iso(moment: datetime | None) -> str | None:
    """Return `moment` as ISO-8601 UTC with microseconds and a `Z`, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
            [] if message.deleted else [attachment_payload(a) for a in message.attachments.all()]
        ),
    }
    if message.kind == Message.Kind.SYSTEM and message.system is not None:
        payload["system"] = message.system
    return payload


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
    """
    layer = get_channel_layer()
    if layer is None:
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
