"""Conversations, their members and their log of messages, attachments and push devices.

Every change in a conversation takes the next number of `Conversation.last_seq` inside
the transaction that makes it (PROTOCOL.md section 1). Writes go through
`messaging.services`; nothing else changes these rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import avatar_path


class Conversation(models.Model):
    """A direct (two people) or group conversation with one gap-free log counter."""

    class Kind(models.TextChoices):
        DIRECT = "direct", "Direct"
        GROUP = "group", "Group"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    title = models.CharField(max_length=200, blank=True)
    public = models.BooleanField(default=False)
    last_seq = models.BigIntegerField(default=0)
    # The log number of the latest membership change. Every conversation event carries
    # it, so a gateway re-checks a connection's membership only when it has moved (a
    # removed member's connection never forwards anything logged after the removal).
    member_seq = models.BigIntegerField(default=0)
    # "<low user id>:<high user id>" for direct conversations; unique, so a pair of users
    # has at most one direct conversation whoever creates it.
    direct_key = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_activity_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Retention (`services.purge_expired`): days of history kept here, overriding the
    # site's `DELETE_AFTER_DAYS`; 0 keeps everything, None follows the site.
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Days of messages kept; empty: the site default (DELETE_AFTER_DAYS); "
        "0: keep every message.",
    )
    # Every message up to this seq was removed by retention, but the notice that says so.
    purged_through_seq = models.BigIntegerField(default=0)
    purged_count = models.BigIntegerField(default=0)
    purged_at = models.DateTimeField(null=True, blank=True)
    # The system message that tells members why history ends (updated by each purge).
    retention_notice_id = models.BigIntegerField(null=True, blank=True)
    # Archiving (`messaging.archive`): the log up to this seq was moved into segments in
    # the archive storage (but the few messages kept in the table, see `archive`).
    archived_through_seq = models.BigIntegerField(default=0)

    class PostPolicy(models.TextChoices):
        """Who may send messages in a group."""

        EVERYONE = "everyone", "Everyone"
        ADMINS = "admins", "Admins only"

    # Group settings, changed by its owner and admins (`services.update_group`).
    description = models.TextField(blank=True, default="")
    # A stored picture, "<sha256>.<ext>" as `User.avatar` (`accounts.avatars`).
    picture = models.CharField(max_length=80, blank=True, default="")
    post_policy = models.CharField(
        max_length=8, choices=PostPolicy.choices, default=PostPolicy.EVERYONE
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="group") | Q(direct_key__isnull=False), name="direct_has_key"
            ),
        ]
        indexes = [models.Index(fields=["public", "kind"], name="conversation_public_idx")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}: {self.title}" if self.title else f"{self.kind} #{self.pk}"

    @property
    def picture_url(self) -> str | None:
        """Return where the group's 256 x 256 picture is served, or None without one."""
        return avatar_path(self.picture, 256) if self.picture else None


class NotifyLevel(models.TextChoices):
    """A member's choice of what notifies them in a conversation."""

    ALL = "all", "All messages"
    MENTIONS = "mentions", "Only @mentions"
    NONE = "none", "Nothing"


class Membership(models.Model):
    """A user's place in a conversation, with read and delivered markers (only ever raised)."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    delivered_seq = models.BigIntegerField(default=0)
    read_seq = models.BigIntegerField(default=0)
    # The first log number this member may read. 0 = the whole history (group creators,
    # public groups); else the seq of the system message that added them to a private
    # group, so a member removed and re-added never sees what was said in between.
    visible_from_seq = models.BigIntegerField(default=0)
    muted = models.BooleanField(default=False)
    # Which new messages may notify this member while they are away (push and email).
    notify = models.CharField(max_length=8, choices=NotifyLevel.choices, default=NotifyLevel.ALL)
    # False: someone who is not this user's contact put them here (a direct chat or a
    # group add), and they have not accepted yet: a message request. Until then their
    # presence, read receipts and typing are not shared; they are notified as of any
    # message, and may read, accept (replying accepts too) or decline.
    accepted = models.BooleanField(default=True)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="membership_unique"),
        ]
        indexes = [models.Index(fields=["user", "conversation"], name="membership_user_idx")]

    def __str__(self) -> str:
        return f"user {self.user_id} in conversation {self.conversation_id} ({self.role})"

    @property
    def is_admin(self) -> bool:
        """Return whether this member may manage the conversation (owner or admin)."""
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class Attachment(models.Model):
    """An uploaded file; readable by members of a conversation where it was posted."""

    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )

    class Thumbnail(models.TextChoices):
        """Where the thumbnail stands; the Celery worker makes it after the upload."""

        PENDING = "pending", "Pending"  # queued for the worker
        WORKING = "working", "Working"  # a worker took it (shown to clients as pending)
        READY = "ready", "Ready"
        NONE = "none", "None"  # not an image, or it did not decode

    file = models.FileField(upload_to="attachments/%Y/%m/")
    thumbnail = models.FileField(upload_to="thumbnails/%Y/%m/", blank=True)
    thumbnail_status = models.CharField(
        max_length=8, choices=Thumbnail.choices, default=Thumbnail.NONE
    )
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    size = models.BigIntegerField()
    # Audio and video: the length the client declared (WAV: read from its header);
    # a voice message is audio recorded in the app, shown as a voice note.
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    voice = models.BooleanField(default=False)
    sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.filename} ({self.size} bytes)"


class Message(models.Model):
    """One entry of a conversation's log: a text message or a system line.

    `seq` is the log number it was created with (display order); `version` the number
    of its latest change (edit or delete), so `after=cursor` fetches find changes too.
    """

    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        SYSTEM = "system", "System"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    seq = models.BigIntegerField()
    version = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TEXT)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_msg_id = models.UUIDField(null=True, blank=True)
    body = models.TextField(blank=True)
    system = models.JSONField(null=True, blank=True)
    attachments = models.ManyToManyField(Attachment, blank=True, related_name="messages")
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted = models.BooleanField(default=False)
    # Ids of the members named as `@username` in the body when it was sent.
    mentions = models.JSONField(default=list, blank=True)
    # Emoji reactions, `[[emoji, [user id, ...]], ...]` in the order each emoji was first
    # used, its users in the order they reacted (`services.react`). A JSON column, not a
    # table: changed under the conversation lock with the message's `version`, and read
    # with the message, so building a page of payloads asks no extra query.
    reactions = models.JSONField(default=list, blank=True)
    # The message this one replies to, of the same conversation (`services.send_message`
    # checks it). An id, not a foreign key: the partitioned layout keys messages by
    # (conversation_id, id), and a quoted message may be deleted or purged later.
    reply_to_id = models.BigIntegerField(null=True, blank=True)
    # Not a column: the attachments when read in bulk with the message
    # (`selectors.load_attachments`), so the payload builder asks no query per message.
    loaded_attachments: list[Attachment] | None = None
    # Not a column: the message `reply_to_id` names, read in bulk with it
    # (`selectors.load_for_payload`); `False` when read and found missing.
    loaded_reply: Message | Literal[False] | None = None
    # Not columns: a message read back from the archive (`messaging.archive`) is an
    # unsaved instance with `archived` set and the ids of the files it carried.
    archived: bool = False
    archived_attachment_ids: Sequence[int] = ()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["sender", "client_msg_id"],
                condition=Q(client_msg_id__isnull=False),
                name="message_client_msg_id_unique",
            ),
        ]
        indexes = [
            # `after=cursor` reads by version; `before=seq` and unread counts by seq.
            models.Index(fields=["conversation", "version"], name="message_version_idx"),
        ]

    def __str__(self) -> str:
        return f"message {self.pk} (conversation {self.conversation_id}, seq {self.seq})"


class Device(models.Model):
    """A push target of a user's install: a Web Push subscription, FCM or APNs token."""

    class Platform(models.TextChoices):
        WEBPUSH = "webpush", "Web Push"
        FCM = "fcm", "Firebase Cloud Messaging"
        APNS = "apns", "Apple Push Notification service"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices"
    )
    platform = models.CharField(max_length=8, choices=Platform.choices)
    # The FCM/APNs token, or the Web Push endpoint URL.
    token = models.CharField(max_length=1024)
    # Web Push only: the subscription's keys (`p256dh`, `auth`).
    keys = models.JSONField(null=True, blank=True)
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["platform", "token"], name="device_token_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.platform} device of user {self.user_id}"


class NotificationDue(models.Model):
    """A new message whose notifications the worker decides at `due_at`.

    Written in the send's own transaction, so the decision survives whatever process
    committed it (no in-memory on-commit hook); the worker takes due rows with
    `SKIP LOCKED` and deletes each once decided.
    """

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    due_at = models.DateTimeField(db_index=True)
    # Failed decisions so far; a row that keeps failing is dropped (and logged) at 5.
    attempts = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"notifications of message {self.message_id} due {self.due_at:%H:%M:%S}"


class PushWindow(models.Model):
    """One member's pushes in one conversation: what is due, what was sent, what to remove.

    At most one push per member and conversation goes out per `NOTIFY_PUSH_DELAY`
    window; it carries the newest pending message. `dispatched_at` is a lease: a worker
    that died mid-send leaves it to expire (`NOTIFY_LEASE`) and the window is sent again.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    due_at = models.DateTimeField(null=True, blank=True)
    remove_due_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
    # The seq of the newest message a push carried, and up to which removals went out.
    pushed_seq = models.BigIntegerField(default=0)
    removed_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "conversation"], name="push_window_unique"),
        ]
        indexes = [
            models.Index(
                fields=["due_at"], name="push_window_due_idx", condition=Q(due_at__isnull=False)
            ),
            models.Index(
                fields=["remove_due_at"],
                name="push_window_remove_idx",
                condition=Q(remove_due_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"pushes of user {self.user_id} in conversation {self.conversation_id}"


class EmailDigest(models.Model):
    """One member's missed-message email: due when the oldest pending message is old enough."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"email digest of user {self.user_id}"


class Notification(models.Model):
    """One decision of the notification trace: a member, a message, a channel, a device.

    "Why wasn't I notified?" is answered by these rows: each says whether a push or an
    email was sent, suppressed (and why), failed, or is still pending.
    """

    class Kind(models.TextChoices):
        MESSAGE = "message", "Message"
        REMOVE = "remove", "Removal"

    class Channel(models.TextChoices):
        WEBPUSH = "webpush", "Web Push"
        FCM = "fcm", "FCM"
        APNS = "apns", "APNs"
        EMAIL = "email", "Email"
        # A push decision that reached no device (the member has none).
        PUSH = "push", "Push (no device)"

    class Decision(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        SUPPRESSED = "suppressed", "Suppressed"
        FAILED = "failed", "Failed"

    class Reason(models.TextChoices):
        DELETED = "deleted", "Message deleted"
        READ = "read", "Read"
        DELIVERED = "delivered", "Delivered live"
        MUTED = "muted", "Muted"
        LEVEL = "level", "Notify level"
        BUSY = "busy", "Busy"
        LEFT = "left", "Left the conversation"
        NO_DEVICES = "no_devices", "No devices"
        COALESCED = "coalesced", "Coalesced into a newer push"
        GONE = "gone", "Device gone"
        PROVIDER_ERROR = "provider_error", "Provider error"

    # Every message of a busy group writes a row per member and device: each index is paid
    # on every insert: the user and message columns have none of their own (the member
    # index and the unique constraint lead with them), nor has the conversation (deleting
    # a conversation, which nothing in the product does, may scan), nor `created_at` (the
    # clean-up walks the primary key). The device has one: a gone device is deleted often.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+", db_index=False)
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.MESSAGE)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The device's id, or 0: unique with the rest, and kept when the device is deleted.
    device_key = models.BigIntegerField(default=0)
    decision = models.CharField(max_length=12, choices=Decision.choices)
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True)
    # What the push service or SMTP server answered ("201", "410", "timeout", ...).
    provider_status = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # From the message's commit to the provider's answer, for sent notifications.
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message", "user", "kind", "channel", "device_key"],
                name="notification_unique",
            ),
        ]
        indexes = [
            models.Index(
                fields=["user", "conversation", "decision"], name="notification_member_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.decision} for user {self.user_id}, message {self.message_id}"


# --- blocking, reports, delete for me ---------------------------------------------------


class Block(models.Model):
    """`blocker` blocked `blocked`: no direct messages, presence or typing between them."""

    blocker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks_made"
    )
    blocked = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="blocks_received"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique"),
            models.CheckConstraint(
                condition=~models.Q(blocker=models.F("blocked")), name="block_not_self"
            ),
        ]
        indexes = [models.Index(fields=["blocked"], name="block_blocked_idx")]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocks {self.blocked_id}"


class Report(models.Model):
    """A member reported a message to staff, with a reason."""

    class Reason(models.TextChoices):
        SPAM = "spam", "Spam"
        ABUSE = "abuse", "Harassment or abuse"
        ILLEGAL = "illegal", "Illegal content"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DISMISSED = "dismissed", "Dismissed"
        ACTIONED = "actioned", "Message deleted"

    # No database constraint: a partitioned message table cannot be referenced by `id`
    # alone (partition_messages); Django still cascades deletes of messages.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="reports", db_constraint=False
    )
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports_made"
    )
    reason = models.CharField(max_length=8, choices=Reason.choices)
    details = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "reporter"], name="report_unique"),
        ]

    def __str__(self) -> str:
        return f"report {self.pk} of message {self.message_id}"


class HiddenMessage(models.Model):
    """A message the user deleted for themself: hidden on all of their devices only.

    The id is the user's cursor for syncing hidden ids (`GET /api/v1/hidden-messages`).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # No database constraint, as `Report.message`.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="hidden_by", db_constraint=False
    )
    conversation_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "message"], name="hidden_message_unique"),
        ]

    def __str__(self) -> str:
        return f"message {self.message_id} hidden for {self.user_id}"


class ArchiveSegment(models.Model):
    """Old messages of one conversation, moved out of the table into the archive storage.

    The object under `key` is gzip-compressed JSON lines, one message row per line in
    seq order (`messaging.archive`); `sha256` is of the stored bytes, checked after the
    write and on every read. Segments never change: a retention purge that cuts one
    writes its remainder as a new segment and deletes the old.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="archive_segments"
    )
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    # The range of the rows' versions and ids: `after=` sync and reply previews find the
    # segments that may hold what they look for without reading the others.
    min_version = models.BigIntegerField()
    max_version = models.BigIntegerField()
    min_id = models.BigIntegerField()
    max_id = models.BigIntegerField()
    # When its newest message was sent: retention finds what it may purge without
    # reading segments it must keep.
    newest_at = models.DateTimeField()
    count = models.PositiveIntegerField()
    size = models.BigIntegerField()
    key = models.CharField(max_length=200, unique=True)
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "first_seq"], name="archive_segment_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "max_version"], name="archive_segment_version"),
            models.Index(fields=["conversation", "min_id"], name="archive_segment_id"),
        ]

    def __str__(self) -> str:
        return f"conversation {self.conversation_id}, seq {self.first_seq}-{self.last_seq}"


class ArchivedAttachment(models.Model):
    """A file an archived message carries: who may download it, and a hold against clean-up.

    Takes the place of the message's link row (`Message.attachments`) once the message
    row is archived; goes with its segment.
    """

    segment = models.ForeignKey(ArchiveSegment, on_delete=models.CASCADE, related_name="+")
    attachment = models.ForeignKey(Attachment, on_delete=models.CASCADE, related_name="+")
    conversation_id = models.BigIntegerField()
    message_id = models.BigIntegerField()
    seq = models.BigIntegerField()

    def __str__(self) -> str:
        return f"attachment {self.attachment_id} of archived message {self.message_id}"
