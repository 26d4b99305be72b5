"""The wire format: one typed definition and one builder for everything the server emits.

Every WebSocket frame, every REST body and every push payload is a `TypedDict` here,
built only by the function beside it, so a message reads the same in `message.created`,
in `messages.batch` and in `GET .../messages` (Zulip's single `MessageDict`). `FRAMES`
names each server frame's definition: tests check every event they see against it, and
`messaging.asyncapi` publishes the WebSocket protocol from the same definitions.

Nothing here queries the database or talks to the channel layer: builders take models
(with what they need prefetched) or plain facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict, cast

from accounts.models import User
from chatsite.wire import iso, iso_from_epoch
from messaging.models import (
    Attachment,
    Block,
    Device,
    HiddenMessage,
    Membership,
    Message,
    Notification,
    Report,
)

# --- payloads: the things frames and REST bodies carry -----------------------------------


class AttachmentPayload(TypedDict):
    """An attachment as clients see it."""

    id: int
    filename: str
    content_type: str
    size: int
    url: str
    thumbnail: Literal["pending", "ready", "none"]
    thumbnail_url: str | None
    # Audio and video: their length, if known; `voice`: a voice message recorded in an app.
    duration_ms: int | None
    voice: bool


# The events a system message records (`SystemPayload.event`).
SYSTEM_EVENTS = (
    "created",
    "joined",
    "added",
    "left",
    "removed",
    "renamed",
    "retention",
    "description",
    "picture",
    "post_policy",
    "role",
)
PostPolicy = Literal["everyone", "admins"]
MemberRole = Literal["owner", "admin", "member"]


class SystemPayload(TypedDict):
    """What a system message records: the event, the users it concerns, a title.

    `read_seq` (`left`, `removed`): how far the departing member had read, so their
    reads still count in "Read by k of N" after they are gone. `days` and `through_seq`
    (`retention`): the policy in force, and the seq up to which every message but this
    notice was removed by it. `role` (`role`): the role the member now has (`admin` or
    `member`). `post_policy` (`post_policy`): who may send now (`everyone`, `admins`).
    """

    event: str
    users: list[int]
    title: NotRequired[str]
    read_seq: NotRequired[int]
    days: NotRequired[int]
    through_seq: NotRequired[int]
    role: NotRequired[str]
    post_policy: NotRequired[str]


class ReactionPayload(TypedDict):
    """One emoji on a message: how many reacted with it, and who (in the order they did)."""

    emoji: str
    count: int
    users: list[int]


class ReplyPayload(TypedDict):
    """What a reply shows of the message it quotes, as that message is now."""

    id: int
    seq: int | None  # None: the quoted message is gone (purged)
    sender: int | None
    preview: str  # its first REPLY_PREVIEW_LENGTH characters; "" once deleted
    deleted: bool


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
    reactions: list[ReactionPayload]
    reply_to: ReplyPayload | None
    system: NotRequired[SystemPayload]


class MemberPayload(TypedDict):
    """A member of a conversation with their markers."""

    id: int
    username: str
    display_name: str
    avatar_url: str | None
    role: str
    read_seq: int
    delivered_seq: int
    # A message request this member has not accepted: markers show 0 until they do.
    pending: bool


class ConversationSummary(TypedDict):
    """What is the same for every member: `conversation.updated` of a departure or rename.

    `description`, `picture_url` and `post_policy` are a group's settings (a direct chat:
    empty, null, `everyone`); `post_policy` `admins` means only its owner and admins may
    send (an announcement group).
    """

    id: int
    kind: str
    title: str
    public: bool
    last_seq: int
    description: str
    picture_url: str | None
    post_policy: PostPolicy


class ConversationPayload(ConversationSummary):
    """A conversation as one member sees it (session.ready, sync.state, REST)."""

    read_seq: int
    delivered_seq: int
    unread: int
    muted: bool
    notify: str
    last_activity_at: str | None
    # This member's role: `owner` and `admin` manage a group (settings, members, roles).
    role: MemberRole
    # A message request to this user: accept it (replying accepts too) or decline it.
    request: bool
    peer: NotRequired[int | None]
    # A direct chat's other person's picture (`UserPayload.avatar_url`).
    peer_avatar_url: NotRequired[str | None]
    members: NotRequired[list[MemberPayload]]


class UserPayload(TypedDict):
    """A user as others see them."""

    id: int
    username: str
    display_name: str
    # Their 256 x 256 picture (`-64.` in place of `-256.`: 64 x 64); null: show initials.
    avatar_url: str | None


class ProfilePayload(UserPayload):
    """The signed-in user's own profile."""

    status: str
    status_until: str | None
    email: str
    email_notifications: bool
    group_adds: str


class PresenceEntry(TypedDict):
    """One user's derived presence (`presence.snapshot`, `GET /presence`)."""

    id: int
    state: str
    last_seen: str | None


class DevicePayload(TypedDict):
    """A registered push target (its token is never echoed)."""

    id: int
    platform: str
    name: str
    created_at: str | None
    last_used_at: str | None


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


class PushSender(TypedDict):
    """Who wrote the message a push shows."""

    id: int
    display_name: str


class MessagePush(TypedDict):
    """The decrypted body of a `message` push."""

    type: Literal["message"]
    conversation: int
    seq: int
    message_id: int
    sender: PushSender
    title: str
    body: str
    unread: int
    url: str


class RemovePush(TypedDict):
    """The decrypted body of a `remove` push: close what shows this conversation."""

    type: Literal["remove"]
    conversation: int
    up_to_seq: int


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
    peer_avatar_url: str | None = None
    notify: str = "all"
    request: bool = False
    role: str = "member"
    description: str = ""
    picture_url: str | None = None
    post_policy: str = "everyone"
    # Routing data, not on the wire: the log number of the latest membership change.
    member_seq: int = 0
    # Not on the wire: a direct chat the other person opened that has no message yet.
    # The gateway follows it (its first message must arrive), but it is not listed.
    hidden: bool = False


def shown(views: Iterable[ConversationView]) -> list[ConversationView]:
    """Return the views a user's list shows (`hidden` ones left out)."""
    return [view for view in views if not view.hidden]


def attachment_payload(attachment: Attachment) -> AttachmentPayload:
    """Build the wire form of an attachment.

    `thumbnail` is `pending` while the worker makes it (its URL answers 404
    `thumbnail_pending` until then), `ready`, or `none` (no URL: not an image, or it did
    not decode).
    """
    status = attachment.thumbnail_status
    thumbnail: Literal["pending", "ready", "none"] = "none"
    if status == Attachment.Thumbnail.READY and attachment.thumbnail:
        thumbnail = "ready"
    elif status in (Attachment.Thumbnail.PENDING, Attachment.Thumbnail.WORKING):
        thumbnail = "pending"
    return {
        "id": attachment.pk,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "url": f"/api/v1/attachments/{attachment.pk}",
        "thumbnail": thumbnail,
        "thumbnail_url": (
            None if thumbnail == "none" else f"/api/v1/attachments/{attachment.pk}?thumbnail=1"
        ),
        "duration_ms": attachment.duration_ms,
        "voice": attachment.voice,
    }


def message_payload(message: Message) -> MessagePayload:
    """Build the one wire form of a message (`selectors.load_for_payload` when building many)."""
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
        "reactions": (
            []
            if message.deleted
            else [
                {"emoji": emoji, "count": len(users), "users": list(users)}
                for emoji, users in message.reactions or ()
            ]
        ),
        "reply_to": None if message.deleted else _reply(message),
    }
    if message.kind == Message.Kind.SYSTEM and message.system is not None:
        payload["system"] = message.system
    return payload


REPLY_PREVIEW_LENGTH = 100


def _reply(message: Message) -> ReplyPayload | None:
    if message.reply_to_id is None:
        return None
    quoted = message.loaded_reply
    if quoted is None:  # not read in bulk (`selectors.load_for_payload`): one query
        quoted = (
            Message.objects.filter(
                conversation_id=message.conversation_id, pk=message.reply_to_id
            ).first()
            or False
        )
        message.loaded_reply = quoted
    if quoted is False:
        return {
            "id": message.reply_to_id,
            "seq": None,
            "sender": None,
            "preview": "",
            "deleted": True,
        }
    return {
        "id": quoted.pk,
        "seq": quoted.seq,
        "sender": quoted.sender_id,
        "preview": "" if quoted.deleted else quoted.body[:REPLY_PREVIEW_LENGTH],
        "deleted": quoted.deleted,
    }


def _attachments(message: Message) -> list[Attachment]:
    # Read with the message (`selectors.load_for_payload`) when it was read in bulk:
    # `message.attachments.all()` builds a related manager and a query on every call.
    if message.loaded_attachments is not None:
        return message.loaded_attachments
    return list(message.attachments.all())


def conversation_summary(
    *,
    id: int,
    kind: str,
    title: str,
    public: bool,
    last_seq: int,
    description: str = "",
    picture_url: str | None = None,
    post_policy: str = "everyone",
) -> ConversationSummary:
    """Build what every member may be told of a conversation."""
    return {
        "id": id,
        "kind": kind,
        "title": title,
        "public": public,
        "last_seq": last_seq,
        "description": description,
        "picture_url": picture_url,
        "post_policy": cast(PostPolicy, post_policy),
    }


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
        "request": view.request,
        "description": view.description,
        "picture_url": view.picture_url,
        "post_policy": cast(PostPolicy, view.post_policy),
        "role": cast(MemberRole, view.role),
    }
    if view.kind == "direct":
        payload["peer"] = view.peer
        payload["peer_avatar_url"] = view.peer_avatar_url
    if members is not None:
        payload["members"] = members
    return payload


def member_payload(membership: Membership) -> MemberPayload:
    """Build the wire form of a member (select the membership's user with it)."""
    return {
        "id": membership.user_id,
        "username": membership.user.username,
        "display_name": membership.user.name,
        "avatar_url": membership.user.avatar_url,
        "role": membership.role,
        # A pending member's receipts are not shared (message requests).
        "read_seq": membership.read_seq if membership.accepted else 0,
        "delivered_seq": membership.delivered_seq if membership.accepted else 0,
        "pending": not membership.accepted,
    }


def user_payload(user: User) -> UserPayload:
    """Build a user as others see them."""
    return {
        "id": user.pk,
        "username": user.username,
        "display_name": user.name,
        "avatar_url": user.avatar_url,
    }


def profile_payload(user: User) -> ProfilePayload:
    """Build the signed-in user's own profile (`status_until`: when busy ends by itself)."""
    status = user.current_status
    until = iso(user.status_until) if user.status_until and status != "available" else None
    return {
        "id": user.pk,
        "username": user.username,
        "display_name": user.name,
        "avatar_url": user.avatar_url,
        "status": status,
        "status_until": until,
        "email": user.email,
        "email_notifications": user.email_notifications,
        "group_adds": user.group_adds,
    }


def presence_entry(user_id: int, state: str, last_seen: float | None) -> PresenceEntry:
    """Build one user's presence (`last_seen` in epoch seconds)."""
    return {
        "id": user_id,
        "state": state,
        "last_seen": iso_from_epoch(last_seen) if last_seen is not None else None,
    }


def device_payload(device: Device) -> DevicePayload:
    """Build the wire form of a device."""
    return {
        "id": device.pk,
        "platform": device.platform,
        "name": device.name,
        "created_at": iso(device.created_at),
        "last_used_at": iso(device.last_used_at),
    }


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


def message_push(
    *,
    conversation_id: int,
    message: Message,
    sender: User | None,
    title: str,
    body: str,
    unread: int,
    url: str,
) -> MessagePush:
    """Build a `message` push."""
    return {
        "type": "message",
        "conversation": conversation_id,
        "seq": message.seq,
        "message_id": message.pk,
        "sender": {
            "id": sender.pk if sender is not None else 0,
            "display_name": sender.name if sender is not None else "Someone",
        },
        "title": title,
        "body": body,
        "unread": unread,
        "url": url,
    }


def remove_push(conversation_id: int, up_to_seq: int) -> RemovePush:
    """Build a `remove` push."""
    return {"type": "remove", "conversation": conversation_id, "up_to_seq": up_to_seq}


class SecurityPush(TypedDict):
    """The decrypted body of a `security` push: something changed about the account."""

    type: Literal["security"]
    title: str
    body: str
    url: str


def security_push(*, title: str, body: str, url: str) -> SecurityPush:
    """Build a `security` push."""
    return {"type": "security", "title": title, "body": body, "url": url}


# --- server frames -----------------------------------------------------------------------

ConversationReason = Literal[
    "created", "joined", "left", "removed", "renamed", "accepted", "settings", "role"
]
PresenceState = Literal["online", "away", "busy", "offline"]


class SessionReadyFrame(TypedDict):
    """The first frame of a connection: who, which device, the conversation snapshot."""

    type: Literal["session.ready"]
    user: UserPayload
    device: str
    heartbeat_interval: float
    server_time: str | None
    status: str
    conversations: list[ConversationPayload]


class SyncStateFrame(TypedDict):
    """The answer to `sync`: the snapshot again."""

    type: Literal["sync.state"]
    ref: str | None
    conversations: list[ConversationPayload]


class MessageCreatedFrame(TypedDict):
    """A new entry of a conversation's log."""

    type: Literal["message.created"]
    message: MessagePayload


class MessageUpdatedFrame(TypedDict):
    """An edit or deletion (a new `version`); with `ref` when it answers the requester."""

    type: Literal["message.updated"]
    message: MessagePayload
    ref: NotRequired[str | None]


class MessageSentFrame(TypedDict):
    """The answer to `message.send`: the stored message (new or replayed)."""

    type: Literal["message.sent"]
    ref: str | None
    client_msg_id: str
    message: MessagePayload


class MessagesBatchFrame(TypedDict):
    """The answer to `messages.fetch`: a page of the log."""

    type: Literal["messages.batch"]
    ref: str | None
    conversation: int
    messages: list[MessagePayload]
    upto: int | None
    has_more: bool


class ReceiptUpdatedFrame(TypedDict):
    """A member's delivered and read markers rose."""

    type: Literal["receipt.updated"]
    conversation: int
    user: int
    delivered_seq: int
    read_seq: int


class TypingFrame(TypedDict):
    """Another member started or stopped typing."""

    type: Literal["typing"]
    conversation: int
    user: int
    state: Literal["start", "stop"]


class ConversationUpdatedFrame(TypedDict):
    """A membership change or rename: the full view for a newcomer, else the summary."""

    type: Literal["conversation.updated"]
    conversation: ConversationSummary | ConversationPayload
    reason: ConversationReason


class UserUpdatedFrame(TypedDict):
    """What others see of a user (display name, picture) changed: to their conversations."""

    type: Literal["user.updated"]
    user: UserPayload


class PresenceChangedFrame(TypedDict):
    """A followed user's derived presence changed (or this user's, answering `status.set`)."""

    type: Literal["presence.changed"]
    user: int
    state: PresenceState
    last_seen: str | None
    ref: NotRequired[str | None]


class PresenceSnapshotFrame(TypedDict):
    """The answer to `presence.subscribe`."""

    type: Literal["presence.snapshot"]
    ref: str | None
    users: list[PresenceEntry]


class PongMarkers(TypedDict):
    """A conversation's marker sum (`ping` with a `conversation`)."""

    conversation: int
    sum: int


class PongFrame(TypedDict):
    """The answer to `ping`: the server's time and the user's log position."""

    type: Literal["pong"]
    ref: str | None
    server_time: str | None
    log_position: NotRequired[int]
    # For a `ping` that named a conversation of the user's: its members' marker sum.
    markers: NotRequired[PongMarkers]


class ReconnectFrame(TypedDict):
    """The gateway is draining (shutting down): reconnect after `after_ms` milliseconds.

    The delay is chosen at random per socket over the drain window, so a gateway's
    clients move to the others spread out, not all at once. A client that has not gone
    some seconds after the delay is closed with 1012.
    """

    type: Literal["reconnect"]
    after_ms: int


class ErrorFrame(TypedDict):
    """A frame or request failed; the connection stays open."""

    type: Literal["error"]
    code: str
    message: str
    ref: NotRequired[str]
    details: NotRequired[dict[str, Any]]
    retry_after: NotRequired[float]
    client_msg_id: NotRequired[str]


# Every server frame type and its definition (the AsyncAPI document and the tests read it).
FRAMES: dict[str, type] = {
    "session.ready": SessionReadyFrame,
    "sync.state": SyncStateFrame,
    "message.created": MessageCreatedFrame,
    "message.updated": MessageUpdatedFrame,
    "message.sent": MessageSentFrame,
    "messages.batch": MessagesBatchFrame,
    "receipt.updated": ReceiptUpdatedFrame,
    "typing": TypingFrame,
    "conversation.updated": ConversationUpdatedFrame,
    "user.updated": UserUpdatedFrame,
    "presence.changed": PresenceChangedFrame,
    "presence.snapshot": PresenceSnapshotFrame,
    "pong": PongFrame,
    "reconnect": ReconnectFrame,
    "error": ErrorFrame,
}


def session_ready_frame(
    *,
    user: User,
    device: str,
    heartbeat_interval: float,
    server_time: datetime,
    views: list[ConversationView],
) -> SessionReadyFrame:
    """Build `session.ready`."""
    return {
        "type": "session.ready",
        "user": user_payload(user),
        "device": device,
        "heartbeat_interval": heartbeat_interval,
        "server_time": iso(server_time),
        "status": user.current_status,
        "conversations": [conversation_payload(v) for v in shown(views)],
    }


def sync_state_frame(ref: str | None, views: list[ConversationView]) -> SyncStateFrame:
    """Build `sync.state`."""
    return {
        "type": "sync.state",
        "ref": ref,
        "conversations": [conversation_payload(v) for v in shown(views)],
    }


def message_created_frame(message: Message) -> MessageCreatedFrame:
    """Build `message.created`."""
    return {"type": "message.created", "message": message_payload(message)}


def message_updated_frame(message: Message, ref: str | None = None) -> MessageUpdatedFrame:
    """Build `message.updated` (with `ref` for the requester's own answer)."""
    frame: MessageUpdatedFrame = {"type": "message.updated", "message": message_payload(message)}
    if ref is not None:
        frame["ref"] = ref
    return frame


def message_sent_frame(ref: str | None, client_msg_id: str, message: Message) -> MessageSentFrame:
    """Build `message.sent`."""
    return {
        "type": "message.sent",
        "ref": ref,
        "client_msg_id": client_msg_id,
        "message": message_payload(message),
    }


def messages_batch_frame(
    ref: str | None,
    conversation_id: int,
    messages: list[Message],
    upto: int | None,
    has_more: bool,
) -> MessagesBatchFrame:
    """Build `messages.batch`."""
    return {
        "type": "messages.batch",
        "ref": ref,
        "conversation": conversation_id,
        "messages": [message_payload(m) for m in messages],
        "upto": upto,
        "has_more": has_more,
    }


def receipt_updated_frame(
    *, conversation_id: int, user_id: int, delivered_seq: int, read_seq: int
) -> ReceiptUpdatedFrame:
    """Build `receipt.updated`."""
    return {
        "type": "receipt.updated",
        "conversation": conversation_id,
        "user": user_id,
        "delivered_seq": delivered_seq,
        "read_seq": read_seq,
    }


def typing_frame(
    *, conversation_id: int, user_id: int, state: Literal["start", "stop"]
) -> TypingFrame:
    """Build `typing`."""
    return {"type": "typing", "conversation": conversation_id, "user": user_id, "state": state}


def conversation_updated_frame(
    conversation: ConversationSummary | ConversationPayload, reason: ConversationReason
) -> ConversationUpdatedFrame:
    """Build `conversation.updated`."""
    return {"type": "conversation.updated", "conversation": conversation, "reason": reason}


def user_updated_frame(user: User) -> UserUpdatedFrame:
    """Build `user.updated`."""
    return {"type": "user.updated", "user": user_payload(user)}


def presence_changed_frame(
    user_id: int, state: str, last_seen: float | None, ref: str | None = None
) -> PresenceChangedFrame:
    """Build `presence.changed` (`state` one of PresenceState; `last_seen` epoch seconds)."""
    frame: PresenceChangedFrame = {
        "type": "presence.changed",
        "user": user_id,
        "state": cast(PresenceState, state),
        "last_seen": iso_from_epoch(last_seen) if last_seen is not None else None,
    }
    if ref is not None:
        frame["ref"] = ref
    return frame


def presence_snapshot_frame(ref: str | None, users: list[PresenceEntry]) -> PresenceSnapshotFrame:
    """Build `presence.snapshot`."""
    return {"type": "presence.snapshot", "ref": ref, "users": users}


def reconnect_frame(after_ms: int) -> ReconnectFrame:
    """Build `reconnect` (sent by a draining gateway)."""
    return {"type": "reconnect", "after_ms": after_ms}


def pong_frame(
    ref: str | None,
    server_time: datetime,
    log_position: int | None,
    markers: PongMarkers | None = None,
) -> PongFrame:
    """Build `pong` (without `log_position` or `markers` when the database could not say)."""
    frame: PongFrame = {"type": "pong", "ref": ref, "server_time": iso(server_time)}
    if log_position is not None:
        frame["log_position"] = log_position
    if markers is not None:
        frame["markers"] = markers
    return frame


def error_frame(
    *,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    ref: str | None = None,
    client_msg_id: str | None = None,
) -> ErrorFrame:
    """Build `error` (`retry_after` is copied from the details when they have it)."""
    frame: ErrorFrame = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    if details:
        frame["details"] = details
        retry_after = details.get("retry_after")
        if retry_after is not None:
            frame["retry_after"] = retry_after
    if client_msg_id is not None:
        frame["client_msg_id"] = client_msg_id
    return frame


# --- blocking, reports, delete for me ---------------------------------------------------


class BlockPayload(TypedDict):
    """A person the caller blocked (`GET /api/v1/blocks`)."""

    user: UserPayload
    created_at: str | None


class ReportPayload(TypedDict):
    """A report the caller made (`POST .../messages/{id}/report`)."""

    id: int
    conversation: int
    message: int
    reason: str
    details: str
    status: str
    created_at: str | None


class HiddenPayload(TypedDict):
    """A message the caller deleted for themself; `id` is the sync cursor."""

    id: int
    conversation: int
    message: int


class BlockUpdatedFrame(TypedDict):
    """The caller blocked or unblocked `user` (sent to all of the blocker's devices only)."""

    type: Literal["block.updated"]
    user: int
    blocked: bool


class MessageHiddenFrame(TypedDict):
    """The caller deleted a message for themself (sent to all of their devices only)."""

    type: Literal["message.hidden"]
    id: int
    conversation: int
    message: int


FRAMES["block.updated"] = BlockUpdatedFrame
FRAMES["message.hidden"] = MessageHiddenFrame


def block_payload(block: Block) -> BlockPayload:
    """Describe a block the caller made."""
    return {"user": user_payload(block.blocked), "created_at": iso(block.created_at)}


def report_payload(report: Report) -> ReportPayload:
    """Describe a report to its reporter."""
    return {
        "id": report.pk,
        "conversation": report.message.conversation_id,
        "message": report.message_id,
        "reason": report.reason,
        "details": report.details,
        "status": report.status,
        "created_at": iso(report.created_at),
    }


def hidden_payload(hidden: HiddenMessage) -> HiddenPayload:
    """Describe a hidden message (its id is the cursor of `GET /api/v1/hidden-messages`)."""
    return {"id": hidden.pk, "conversation": hidden.conversation_id, "message": hidden.message_id}


def block_updated_frame(user_id: int, *, blocked: bool) -> BlockUpdatedFrame:
    """Build `block.updated` for the blocker's devices."""
    return {"type": "block.updated", "user": user_id, "blocked": blocked}


def message_hidden_frame(hidden: HiddenMessage) -> MessageHiddenFrame:
    """Build `message.hidden` for the user's devices."""
    return {
        "type": "message.hidden",
        "id": hidden.pk,
        "conversation": hidden.conversation_id,
        "message": hidden.message_id,
    }
