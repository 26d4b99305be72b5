"""Decide who is notified of a new message, once its delay is over (stage one)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction

from accounts.models import User
from messaging.models import (
    Device,
    EmailDigest,
    Membership,
    Message,
    Notification,
    NotificationDue,
    NotifyLevel,
    PushWindow,
)

logger = logging.getLogger(__name__)

Decision = Notification.Decision
Reason = Notification.Reason
Channel = Notification.Channel

# Decisions made per transaction; a due row that fails this often is dropped (logged).
BATCH = 100
MAX_ATTEMPTS = 5


def suppression(message: Message, member: Membership, user: User) -> str:
    """Return why `member` is not notified of `message` ("" when they are), first match.

    The order is the contract's: read, delivered, muted, level, busy (a deleted message
    comes first: there is nothing left to show).
    """
    if message.deleted:
        return Reason.DELETED
    if member.read_seq >= message.seq:
        return Reason.READ
    if member.delivered_seq >= message.seq:
        return Reason.DELIVERED
    if member.muted:
        return Reason.MUTED
    mentioned = user.pk in (message.mentions or ())
    if member.notify == NotifyLevel.NONE or (
        member.notify == NotifyLevel.MENTIONS and not mentioned
    ):
        return Reason.LEVEL
    if user.status == User.Status.BUSY:
        return Reason.BUSY
    return ""


def email_on(user: User) -> bool:
    """Return whether the user gets missed-message emails."""
    return bool(user.email) and user.email_notifications


def decide_due_messages(*, now: datetime, limit: int = BATCH) -> int:
    """Decide the notifications of up to `limit` messages whose delay is over; return how many.

    Concurrent workers take disjoint rows (`SKIP LOCKED`). The batch is decided together
    (a few statements whatever its size); if that fails on a bug, each message is decided
    alone in a savepoint, so one bad message does not hold the others back.
    """
    with transaction.atomic():
        dues = list(
            NotificationDue.objects.select_for_update(skip_locked=True)
            .filter(due_at__lte=now)
            .order_by("due_at")[:limit]
        )
        if not dues:
            return 0
        messages = {
            m.pk: m
            for m in Message.objects.filter(pk__in=[d.message_id for d in dues]).select_related(
                "conversation"
            )
        }
        try:
            with transaction.atomic():
                _decide([messages[d.message_id] for d in dues if d.message_id in messages], now)
        except DatabaseError:
            raise  # the database is in trouble: the whole batch is tried again
        except Exception:  # a bug: find the message that has it, decide the others
            logger.exception("deciding %d messages together failed; one by one now", len(dues))
            done = _decide_one_by_one(dues, messages, now)
        else:
            done = [d.pk for d in dues]
        NotificationDue.objects.filter(pk__in=done).delete()
    return len(dues)


def _decide_one_by_one(
    dues: list[NotificationDue], messages: dict[int, Message], now: datetime
) -> list[int]:
    """Decide each message in a savepoint; return the due rows that are finished."""
    done: list[int] = []
    for due in dues:
        message = messages.get(due.message_id)
        try:
            with transaction.atomic():
                if message is not None:
                    _decide([message], now)
        except DatabaseError:
            raise
        except Exception:  # one bad message must not stop everyone's notifications
            due.attempts += 1
            logger.exception("deciding the notifications of message %s failed", due.pk)
            if due.attempts >= MAX_ATTEMPTS:
                done.append(due.pk)
            else:
                due.save(update_fields=["attempts"])
            continue
        done.append(due.pk)
    return done


def _row(
    message: Message,
    user_id: int,
    channel: str,
    device: Device | None,
    decision: str,
    reason: str = "",
) -> Notification:
    return Notification(
        user_id=user_id,
        conversation_id=message.conversation_id,
        message=message,
        seq=message.seq,
        kind=Notification.Kind.MESSAGE,
        channel=channel,
        device=device,
        device_key=device.pk if device is not None else 0,
        decision=decision,
        reason=reason,
    )


def _decide(messages: list[Message], now: datetime) -> None:
    """Trace every other member's decision for each message; open windows for what is pending.

    Three reads (members with their users, their devices) and a few writes for the whole
    list, whatever its size: the worker's cost is per trace row, not per query.
    """
    texts = [m for m in messages if m.kind == Message.Kind.TEXT]
    if not texts:
        return
    members: dict[int, list[Membership]] = defaultdict(list)
    for member in (
        Membership.objects.filter(
            conversation_id__in={m.conversation_id for m in texts}, user__is_active=True
        )
        .select_related("user")
        .order_by("user_id")
    ):
        members[member.conversation_id].append(member)
    user_ids = {member.user_id for group in members.values() for member in group}
    devices: dict[int, list[Device]] = defaultdict(list)
    for device in Device.objects.filter(user_id__in=user_ids).order_by("pk"):
        devices[device.user_id].append(device)
    rows: list[Notification] = []
    pushes: set[tuple[int, int]] = set()
    emails: dict[int, datetime] = {}
    for message in texts:
        for member in members[message.conversation_id]:
            if member.user_id != message.sender_id:
                _plan(message, member, devices[member.user_id], rows, pushes, emails)
    # A retried decision finds its rows already there.
    Notification.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
    open_push_windows(pushes, now)
    open_digests(emails, now)


def _plan(
    message: Message,
    member: Membership,
    targets: list[Device],
    rows: list[Notification],
    pushes: set[tuple[int, int]],
    emails: dict[int, datetime],
) -> None:
    """Add one member's decision for `message`: the trace rows, a window, an email."""
    user = member.user
    emailed = email_on(user)
    reason = suppression(message, member, user)
    if reason:
        rows += [
            _row(message, user.pk, d.platform, d, Decision.SUPPRESSED, reason) for d in targets
        ]
        if emailed:
            rows.append(_row(message, user.pk, Channel.EMAIL, None, Decision.SUPPRESSED, reason))
        if not targets and not emailed:
            rows.append(_row(message, user.pk, Channel.PUSH, None, Decision.SUPPRESSED, reason))
        return
    if targets:
        rows += [_row(message, user.pk, d.platform, d, Decision.PENDING) for d in targets]
        pushes.add((message.conversation_id, user.pk))
    else:
        rows.append(
            _row(message, user.pk, Channel.PUSH, None, Decision.SUPPRESSED, Reason.NO_DEVICES)
        )
    if emailed:
        rows.append(_row(message, user.pk, Channel.EMAIL, None, Decision.PENDING))
        since = emails.get(user.pk)
        emails[user.pk] = message.created_at if since is None else min(since, message.created_at)


def open_push_windows(pairs: Iterable[tuple[int, int]], now: datetime) -> None:
    """Make each (conversation, user) push window due: now, or when its window ends."""
    wanted = set(pairs)
    if not wanted:
        return
    PushWindow.objects.bulk_create(
        [PushWindow(conversation_id=c, user_id=u) for c, u in sorted(wanted)],
        ignore_conflicts=True,
    )
    delay = timedelta(seconds=settings.NOTIFY_PUSH_DELAY)
    changed = []
    # Locked in (conversation, user) order, as every decision does: none deadlock.
    for window in (
        PushWindow.objects.select_for_update()
        .filter(conversation_id__in={c for c, _ in wanted}, user_id__in={u for _, u in wanted})
        .order_by("conversation_id", "user_id")
    ):
        if (window.conversation_id, window.user_id) not in wanted:
            continue
        earliest = now if window.pushed_at is None else max(now, window.pushed_at + delay)
        if window.due_at is None or window.due_at > earliest:
            window.due_at = earliest
            changed.append(window)
    PushWindow.objects.bulk_update(changed, ["due_at"])


def open_digests(since: dict[int, datetime], now: datetime) -> None:
    """Make each user's missed-message email due NOTIFY_EMAIL_DELAY after `since[user]`."""
    if not since:
        return
    EmailDigest.objects.bulk_create(
        [EmailDigest(user_id=u) for u in sorted(since)], ignore_conflicts=True
    )
    delay = timedelta(seconds=settings.NOTIFY_EMAIL_DELAY)
    changed = []
    for digest in (
        EmailDigest.objects.select_for_update().filter(user_id__in=since).order_by("user_id")
    ):
        earliest = since[digest.user_id] + delay
        if digest.sent_at is not None:
            earliest = max(earliest, digest.sent_at + delay)
        if digest.due_at is None or digest.due_at > earliest:
            digest.due_at = earliest
            changed.append(digest)
    EmailDigest.objects.bulk_update(changed, ["due_at"])
