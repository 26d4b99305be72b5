"""Shapes of the REST API: inputs are checked here for shape only, every rule is in the services.

Outputs are built by `messaging.events` (the one payload builder for REST and WebSocket);
the output serializers below only document them in the OpenAPI schema, and
tests/api/test_schema.py checks that they name the same fields as the payload types.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from chatsite import rest
from chatsite.limits import MAX_ID, MAX_SEQ
from messaging import wire
from messaging.models import (
    Conversation,
    Device,
    Membership,
    Message,
    Notification,
    NotifyLevel,
    Report,
)

# Re-exported for the views and URL converters that name them.
__all__ = ["MAX_ID", "MAX_SEQ"]

# The roles a member may be given (the owner's passes on only when they leave).
ROLE_CHANGES = [(Membership.Role.ADMIN.value, "Admin"), (Membership.Role.MEMBER.value, "Member")]


def id_field(*, strict: bool = False, **kwargs: Any) -> serializers.IntegerField:
    """Return an integer field for a database id (strict: a JSON integer, not text)."""
    kind = rest.StrictIntegerField if strict else serializers.IntegerField
    return kind(min_value=1, max_value=MAX_ID, **kwargs)


# --- outputs (documentation of the payloads in messaging/events.py) --------------------


class AttachmentSerializer(serializers.Serializer[Any]):
    """An attachment as clients see it (`wire.AttachmentPayload`)."""

    id = serializers.IntegerField()
    filename = serializers.CharField()
    content_type = serializers.CharField(help_text="Detected from the content, not the client.")
    size = serializers.IntegerField(help_text="Bytes.")
    url = serializers.CharField(help_text="Download path (members only).")
    thumbnail = serializers.ChoiceField(
        choices=["pending", "ready", "none"],
        help_text=(
            "pending: the worker is making it (the URL answers 404 `thumbnail_pending` "
            "until ready); ready; none: not an image, or it did not decode."
        ),
    )
    thumbnail_url = serializers.CharField(
        allow_null=True, help_text="Images (pending or ready) only, else null."
    )
    duration_ms = serializers.IntegerField(
        allow_null=True, help_text="Audio and video: their length in ms, if known; else null."
    )
    voice = serializers.BooleanField(help_text="A voice message recorded in an app.")


class SystemSerializer(serializers.Serializer[Any]):
    """What a system message records (`wire.SystemPayload`)."""

    event = serializers.ChoiceField(choices=wire.SYSTEM_EVENTS)
    users = serializers.ListField(child=serializers.IntegerField())
    title = serializers.CharField(required=False)
    read_seq = serializers.IntegerField(
        required=False,
        help_text="`left`, `removed`: how far the departing member had read (their reads "
        "still count in a group's read marks).",
    )
    days = serializers.IntegerField(
        required=False, help_text="`retention`: the days of messages the conversation keeps."
    )
    through_seq = serializers.IntegerField(
        required=False,
        help_text="`retention`: every message up to this seq but this notice was removed; "
        "drop them from local storage.",
    )
    role = serializers.ChoiceField(
        choices=ROLE_CHANGES,
        required=False,
        help_text="`role`: the role the member (`users[0]`) has now.",
    )
    post_policy = serializers.ChoiceField(
        choices=Conversation.PostPolicy.choices,
        required=False,
        help_text="`post_policy`: who may send messages now.",
    )


class ReactionSerializer(serializers.Serializer[Any]):
    """One emoji on a message (`wire.ReactionPayload`)."""

    emoji = serializers.CharField()
    count = serializers.IntegerField()
    users = serializers.ListField(
        child=serializers.IntegerField(), help_text="Who reacted, in the order they did."
    )


class ReplySerializer(serializers.Serializer[Any]):
    """What a reply shows of the message it quotes, as it is now (`wire.ReplyPayload`)."""

    id = serializers.IntegerField()
    seq = serializers.IntegerField(allow_null=True, help_text="Null: the message is gone.")
    sender = serializers.IntegerField(allow_null=True)
    preview = serializers.CharField(
        allow_blank=True, help_text="Its first 100 characters; empty once deleted."
    )
    deleted = serializers.BooleanField()


class MessageSerializer(serializers.Serializer[Any]):
    """A message, exactly as `message.created` carries it (`wire.MessagePayload`)."""

    id = serializers.IntegerField()
    conversation = serializers.IntegerField()
    seq = serializers.IntegerField(help_text="The log number it was created with.")
    version = serializers.IntegerField(help_text="The log number of its latest change.")
    kind = serializers.ChoiceField(choices=Message.Kind.choices)
    sender = serializers.IntegerField(allow_null=True)
    body = serializers.CharField(
        allow_blank=True,
        help_text="Plain text; never render it as HTML (the web app formats a Markdown "
        "subset from it by building elements).",
    )
    client_msg_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)
    edited_at = serializers.DateTimeField(allow_null=True)
    deleted = serializers.BooleanField()
    attachments = AttachmentSerializer(many=True)
    mentions = serializers.ListField(
        child=serializers.IntegerField(), help_text="Ids of the members named as @username."
    )
    reactions = ReactionSerializer(
        many=True, help_text="Emoji reactions, in the order each emoji was first used."
    )
    reply_to = ReplySerializer(allow_null=True, help_text="The message this one replies to.")
    system = SystemSerializer(required=False)


class MemberSerializer(serializers.Serializer[Any]):
    """A member of a conversation with their markers (`wire.MemberPayload`)."""

    id = serializers.IntegerField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    avatar_url = serializers.CharField(allow_null=True, help_text="Null: show initials.")
    role = serializers.ChoiceField(choices=Membership.Role.choices)
    read_seq = serializers.IntegerField(help_text="0 while the member is `pending`.")
    delivered_seq = serializers.IntegerField(help_text="0 while the member is `pending`.")
    pending = serializers.BooleanField(
        help_text="A message request this member has not accepted yet."
    )


class ConversationSerializer(serializers.Serializer[Any]):
    """A conversation as one user sees it, as in `session.ready` (`wire.ConversationPayload`)."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Conversation.Kind.choices)
    title = serializers.CharField(allow_blank=True, help_text="Direct: the other user's name.")
    public = serializers.BooleanField()
    last_seq = serializers.IntegerField()
    description = serializers.CharField(allow_blank=True, help_text="A group's description.")
    picture_url = serializers.CharField(
        allow_null=True, help_text="A group's picture (256 x 256); null: show initials."
    )
    post_policy = serializers.ChoiceField(
        choices=Conversation.PostPolicy.choices,
        help_text="Who may send: everyone, or only the group's owner and admins.",
    )
    role = serializers.ChoiceField(
        choices=Membership.Role.choices,
        help_text="Your role: a group's owner and admins change its settings and members.",
    )
    read_seq = serializers.IntegerField()
    delivered_seq = serializers.IntegerField()
    unread = serializers.IntegerField()
    muted = serializers.BooleanField(help_text="Nothing notifies you (push or email).")
    notify = serializers.ChoiceField(
        choices=NotifyLevel.choices,
        help_text="What notifies you while you are away: all, mentions (only @you), none.",
    )
    last_activity_at = serializers.DateTimeField(allow_null=True)
    request = serializers.BooleanField(
        help_text="A message request to you: accept it (replying accepts too) or decline it."
    )
    peer = serializers.IntegerField(
        required=False, allow_null=True, help_text="Direct only: the other user's id."
    )
    peer_avatar_url = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Direct only: the other user's picture (`avatar_url`), null for none.",
    )


class ConversationDetailSerializer(ConversationSerializer):
    """A conversation with its members and their markers."""

    members = MemberSerializer(many=True)


class ConversationPageSerializer(serializers.Serializer[Any]):
    """A page of the user's conversations, most recently active first."""

    results = ConversationSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page's URL, or null.")


class MessageBatchSerializer(serializers.Serializer[Any]):
    """A page of the log, like the `messages.batch` frame."""

    messages = MessageSerializer(many=True)
    upto = serializers.IntegerField(
        allow_null=True, help_text="With `after`: the log number the answer is complete up to."
    )
    has_more = serializers.BooleanField()


class MarkersSerializer(serializers.Serializer[Any]):
    """The user's markers in a conversation after a read receipt."""

    conversation = serializers.IntegerField()
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField()


class SearchHitSerializer(serializers.Serializer[Any]):
    """A message that matched, with a snippet of it."""

    message = MessageSerializer()
    snippet = serializers.CharField(
        allow_blank=True,
        help_text=(
            "Part of the body around the match, HTML-escaped, with matches wrapped in "
            "`<mark>`…`</mark>` (the only markup it can contain)."
        ),
    )


class SearchPageSerializer(serializers.Serializer[Any]):
    """A page of search hits, best first."""

    results = SearchHitSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page's URL, or null.")


class DeviceSerializer(serializers.Serializer[Any]):
    """A registered push target (its token is not echoed)."""

    id = serializers.IntegerField()
    platform = serializers.ChoiceField(choices=Device.Platform.choices)
    name = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(
        allow_null=True, help_text="When a push last reached it."
    )


class DevicePageSerializer(serializers.Serializer[Any]):
    """The caller's devices (one page: a user has at most CHAT_MAX_DEVICES_PER_USER)."""

    results = DeviceSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="Always null.")


class NotificationSerializer(serializers.Serializer[Any]):
    """One decision of a message's notification trace (`wire.NotificationPayload`)."""

    kind = serializers.ChoiceField(
        choices=Notification.Kind.choices, help_text="`remove` takes a shown push back."
    )
    channel = serializers.ChoiceField(
        choices=Notification.Channel.choices,
        help_text="`push`: a push decision that reached no device.",
    )
    device = serializers.IntegerField(allow_null=True)
    decision = serializers.ChoiceField(choices=Notification.Decision.choices)
    reason = serializers.ChoiceField(
        choices=Notification.Reason.choices, allow_null=True, help_text="Null when sent."
    )
    provider_status = serializers.CharField(
        allow_null=True, help_text="What the push service or mail server answered."
    )
    latency_ms = serializers.IntegerField(
        allow_null=True, help_text="From the message's commit to the provider's answer."
    )
    at = serializers.DateTimeField(allow_null=True)


class NotificationListSerializer(serializers.Serializer[Any]):
    """The notification trace of one message for the caller."""

    results = NotificationSerializer(many=True)


class FrameBudgetSerializer(serializers.Serializer[Any]):
    """One class of WebSocket frames: its per-socket token bucket and its frame types."""

    rate = serializers.FloatField(help_text="Frames per second per socket, sustained.")
    burst = serializers.FloatField(help_text="Frames per socket in a burst.")
    frames = serializers.ListField(
        child=serializers.CharField(), help_text="The frame types that draw on this budget."
    )


class LimitsSerializer(serializers.Serializer[Any]):
    """The limits this server enforces (read from its settings)."""

    max_message_length = serializers.IntegerField(help_text="Characters per message body.")
    max_title_length = serializers.IntegerField(help_text="Characters per group title.")
    max_description_length = serializers.IntegerField(help_text="Characters per group description.")
    max_group_members = serializers.IntegerField()
    max_attachments_per_message = serializers.IntegerField()
    max_upload_bytes = serializers.IntegerField(help_text="Bytes per attachment.")
    max_image_pixels = serializers.IntegerField(help_text="Width times height of an image upload.")
    max_image_decode_bytes = serializers.IntegerField(
        help_text="Width x height x bytes per pixel of an image upload (413 past it)."
    )
    thumbnail_size = serializers.IntegerField(help_text="Longest side of a thumbnail, pixels.")
    max_image_edge = serializers.IntegerField(
        help_text="Longest side of a stored image, pixels: larger ones are scaled down."
    )
    max_voice_seconds = serializers.IntegerField(help_text="Length of a voice message.")
    max_media_seconds = serializers.IntegerField(
        help_text="Length an audio or video upload may declare."
    )
    media_types = serializers.ListField(
        child=serializers.CharField(), help_text="Audio and video types played inline."
    )
    max_json_bytes = serializers.IntegerField(help_text="Bytes per JSON request body.")
    fetch_default_limit = serializers.IntegerField()
    fetch_max_limit = serializers.IntegerField()
    page_size = serializers.IntegerField(help_text="Default page size of lists.")
    max_page_size = serializers.IntegerField()
    search_max_query_length = serializers.IntegerField()
    search_max_results = serializers.IntegerField()
    send_rate = serializers.FloatField(help_text="Sends per second per user, sustained.")
    send_burst = serializers.FloatField(help_text="Sends per user in a burst.")
    react_rate = serializers.FloatField(help_text="Reaction changes per second per user.")
    react_burst = serializers.FloatField()
    max_reactions = serializers.IntegerField(help_text="Different emoji on one message.")
    api_rate = serializers.FloatField(help_text="REST requests per second per user, sustained.")
    api_burst = serializers.FloatField()
    upload_rate = serializers.FloatField()
    upload_burst = serializers.FloatField()
    search_rate = serializers.FloatField()
    search_burst = serializers.FloatField()
    typing_rate = serializers.FloatField()
    typing_burst = serializers.FloatField()
    typing_max_members = serializers.IntegerField()
    login_failure_limit = serializers.IntegerField()
    login_lockout_seconds = serializers.IntegerField()
    max_devices_per_user = serializers.IntegerField()
    ws_max_frame_bytes = serializers.IntegerField()
    ws_heartbeat_interval = serializers.FloatField(help_text="Seconds.")
    ws_max_connections_per_user = serializers.IntegerField()
    ws_ticket_ttl = serializers.IntegerField(help_text="Seconds.")
    ws_frame_budgets = serializers.DictField(
        child=FrameBudgetSerializer(),
        help_text="Per-socket budgets by frame class; past one, a frame is answered "
        "`rate_limited` with `retry_after`. `message.send` is limited per user instead "
        "(`send_rate`, `send_burst`).",
    )
    jwt_access_seconds = serializers.IntegerField()


# --- inputs ----------------------------------------------------------------------------


class DirectCreateSerializer(serializers.Serializer[Any]):
    """Open the direct conversation with `user` (the existing one if any)."""

    kind = serializers.ChoiceField(choices=["direct"])
    user = id_field(strict=True)


class GroupCreateSerializer(serializers.Serializer[Any]):
    """Create a group owned by the caller."""

    kind = serializers.ChoiceField(choices=["group"])
    title = rest.StrictCharField(max_length=1000, trim_whitespace=False)
    members = serializers.ListField(child=id_field(strict=True), required=False, default=list)
    public = rest.StrictBooleanField(required=False, default=False)


class ConversationKindSerializer(serializers.Serializer[Any]):
    """Only the `kind` of a new conversation, to pick the shape of the rest."""

    kind = serializers.ChoiceField(choices=Conversation.Kind.choices)


class ConversationUpdateSerializer(serializers.Serializer[Any]):
    """Change a group's settings (owners and admins) and/or your own notifications."""

    title = rest.StrictCharField(required=False, max_length=1000, trim_whitespace=False)
    description = rest.StrictCharField(
        required=False, allow_blank=True, max_length=100_000, trim_whitespace=False
    )
    post_policy = serializers.ChoiceField(choices=Conversation.PostPolicy.choices, required=False)
    muted = rest.StrictBooleanField(required=False)
    notify = serializers.ChoiceField(choices=NotifyLevel.choices, required=False)


class MemberRoleSerializer(serializers.Serializer[Any]):
    """A member's new role: `admin`, or `member` to dismiss an admin."""

    role = serializers.ChoiceField(choices=ROLE_CHANGES)


class MembersAddSerializer(serializers.Serializer[Any]):
    """`users` to add (owners and admins); no `users` joins a public group."""

    users = serializers.ListField(child=id_field(strict=True), required=False)


class MessageSendSerializer(serializers.Serializer[Any]):
    """A new message; `client_msg_id` is generated once per message and reused on retries."""

    client_msg_id = rest.StrictUUIDField()
    body = rest.StrictCharField(required=False, default="", allow_blank=True, trim_whitespace=False)
    attachments = serializers.ListField(child=id_field(strict=True), required=False, default=list)
    reply_to = id_field(
        strict=True,
        required=False,
        allow_null=True,
        default=None,
        help_text="The id of a message of this conversation to reply to.",
    )


class MessageEditSerializer(serializers.Serializer[Any]):
    """The new body of your message."""

    body = rest.StrictCharField(allow_blank=True, trim_whitespace=False)


class MessageFetchSerializer(serializers.Serializer[Any]):
    """Which part of the log to fetch: `after` a log number, or `before` a seq."""

    after = serializers.IntegerField(required=False, min_value=0, max_value=MAX_SEQ)
    before = serializers.IntegerField(required=False, min_value=0, max_value=MAX_SEQ)
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.CHAT_FETCH_MAX_LIMIT
    )


class ReadSerializer(serializers.Serializer[Any]):
    """The read marker: the highest seq the user has seen."""

    seq = rest.StrictIntegerField(min_value=0, max_value=MAX_SEQ)


class SearchQuerySerializer(serializers.Serializer[Any]):
    """Words to find, optionally in one conversation."""

    q = serializers.CharField(max_length=settings.CHAT_SEARCH_MAX_QUERY_LENGTH)
    conversation = id_field(required=False)


class WebPushKeysSerializer(serializers.Serializer[Any]):
    """The keys of a Web Push subscription (base64url)."""

    p256dh = rest.StrictCharField(max_length=200)
    auth = rest.StrictCharField(max_length=200)


class WebPushSubscriptionSerializer(serializers.Serializer[Any]):
    """A browser's `PushSubscription.toJSON()` (endpoint and keys)."""

    endpoint = rest.StrictCharField(max_length=1024)
    keys = WebPushKeysSerializer()


class DeviceRegisterSerializer(serializers.Serializer[Any]):
    """A push target: `subscription` for `webpush`, `token` for `fcm` and `apns`."""

    platform = serializers.ChoiceField(choices=Device.Platform.choices)
    token = rest.StrictCharField(required=False, max_length=1024)
    subscription = WebPushSubscriptionSerializer(required=False)
    name = rest.StrictCharField(required=False, default="", allow_blank=True, max_length=100)


class DownloadQuerySerializer(serializers.Serializer[Any]):
    """Which file to send: the attachment, or its thumbnail (images only)."""

    thumbnail = serializers.BooleanField(required=False, default=False)


class UploadSerializer(serializers.Serializer[Any]):
    """A multipart upload: the file in field `file`; audio or video may say how long it is."""

    file = serializers.FileField(allow_empty_file=True, use_url=False)
    voice = serializers.BooleanField(
        required=False,
        default=False,
        help_text="A voice message recorded in the app (audio only; at most `max_voice_seconds`).",
    )
    duration_ms = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="Audio or video: its length as the client measured it (a WAV's header "
        "is read instead).",
    )


# --- blocking, reports, delete for me ---------------------------------------------------


class BlockedUserSerializer(serializers.Serializer[Any]):
    """A user as others see them (`wire.UserPayload`)."""

    id = serializers.IntegerField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    avatar_url = serializers.CharField(allow_null=True)


class BlockSerializer(serializers.Serializer[Any]):
    """A person you blocked (`wire.BlockPayload`)."""

    user = BlockedUserSerializer()
    created_at = serializers.DateTimeField(allow_null=True)


class BlockListSerializer(serializers.Serializer[Any]):
    """The people you blocked, newest first."""

    results = BlockSerializer(many=True)


class ReportSerializer(serializers.Serializer[Any]):
    """A report you made (`wire.ReportPayload`)."""

    id = serializers.IntegerField()
    conversation = serializers.IntegerField()
    message = serializers.IntegerField()
    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    details = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=Report.Status.choices)
    created_at = serializers.DateTimeField(allow_null=True)


class ReportCreateSerializer(serializers.Serializer[Any]):
    """Why you report a message: a reason and, optionally, a few words."""

    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    details = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")


class HiddenSerializer(serializers.Serializer[Any]):
    """A message you deleted for yourself (`wire.HiddenPayload`); `id` is the cursor."""

    id = serializers.IntegerField()
    conversation = serializers.IntegerField()
    message = serializers.IntegerField()


class HiddenPageSerializer(serializers.Serializer[Any]):
    """Hidden messages past `after`, in id order; ask again `after=cursor` while `has_more`."""

    results = HiddenSerializer(many=True)
    cursor = serializers.IntegerField()
    has_more = serializers.BooleanField()


class HiddenQuerySerializer(serializers.Serializer[Any]):
    """Where to continue: the last `id` (cursor) you have."""

    after = serializers.IntegerField(required=False, min_value=0, max_value=MAX_ID, default=0)
