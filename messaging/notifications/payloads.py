"""What a push and an email say: previews, titles, unread counts, links (`wire` builds them)."""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.db.models import F

from accounts.models import User
from messaging import wire
from messaging.markup import plain_text
from messaging.models import Conversation, Message

PREVIEW_CHARS = 200
_UNSUBSCRIBE_SALT = "messaging.notifications.unsubscribe"


def conversation_url(conversation_id: int) -> str:
    """Return the web app's path that opens a conversation."""
    return f"/#c{conversation_id}"


def preview(message: Message, limit: int = PREVIEW_CHARS) -> str:
    """Return the start of a message as plain text (a file's name for an attachment)."""
    body = " ".join(plain_text(message.body).split())
    if not body:
        files = list(message.attachments.all())
        if files and files[0].voice:
            body = "🎤 Voice message"
        elif files:
            body = "📎 " + ", ".join(a.filename for a in files)
    return body if len(body) <= limit else body[: limit - 1] + "…"


def unread_count(user_id: int, conversation_id: int, read_seq: int) -> int:
    """Return how many messages of others after `read_seq` the member has not read."""
    return (
        Message.objects.filter(
            conversation_id=conversation_id,
            seq__gt=read_seq,
            kind=Message.Kind.TEXT,
            deleted=False,
        )
        .exclude(sender_id=user_id)
        .count()
    )


def total_unread(user_id: int) -> int:
    """Return how many messages of others the user has not read, in all their conversations."""
    return (
        Message.objects.filter(
            conversation__memberships__user_id=user_id,
            seq__gt=F("conversation__memberships__read_seq"),
            kind=Message.Kind.TEXT,
            deleted=False,
        )
        .exclude(sender_id=user_id)
        .count()
    )


def message_push(
    message: Message, conversation: Conversation, sender: User | None, unread: int
) -> wire.MessagePush:
    """Build a `message` push: the group's title in a group, else the sender's name."""
    name = sender.name if sender is not None else "Someone"
    return wire.message_push(
        conversation_id=conversation.pk,
        message=message,
        sender=sender,
        title=conversation.title if conversation.kind == Conversation.Kind.GROUP else name,
        body=preview(message),
        unread=unread,
        url=conversation_url(conversation.pk),
    )


def topic(conversation_id: int) -> str:
    """Return the push Topic of a conversation: a later push replaces an undelivered one."""
    return f"c{conversation_id}"


def unsubscribe_token(user: User) -> str:
    """Return a signed token that turns this user's emails off (no cookie needed)."""
    return signing.dumps(user.pk, salt=_UNSUBSCRIBE_SALT, compress=True)


def unsubscribe_user_id(token: str) -> int | None:
    """Return the user id a token was made for, or None if it is not ours."""
    try:
        value = signing.loads(token, salt=_UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    return value if isinstance(value, int) else None


def unsubscribe_url(user: User) -> str:
    """Return the absolute one-click unsubscribe URL (RFC 8058) of a user's emails."""
    return f"{settings.SITE_URL}/notifications/unsubscribe/{unsubscribe_token(user)}/"
