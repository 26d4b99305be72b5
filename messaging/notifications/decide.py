"""Decide who is notified of a new message, once its delay is over (stage one)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from accounts.models import User, status_at
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
    """Return why `member` is not notified of `message` ("" when they are), first match."""
    return suppression_of(
        deleted=message.deleted,
        seq=message.seq,
        mentioned=user.pk in (message.mentions or ()),
        read_seq=member.read_seq,
        delivered_seq=member.delivered_seq,
        muted=member.muted,
        notify=member.notify,
        busy=user.current_status == User.Status.BUSY,
    )


def suppression_of(
    *,
    deleted: bool,
    seq: int,
    mentioned: bool,
    read_seq: int,
    delivered_seq: int,
    muted: bool,
    notify: str,
    busy: bool,
) -> str:
    """Return the reason of `suppression` from plain values (a batch reads no models).

    The order is the contract's: read, delivered, muted, level, busy (a deleted message
    comes first: there is nothing left to show).
    """
    if deleted:
        return Reason.DELETED
    if read_seq >= seq:
        return Reason.READ
    if delivered_seq >= seq:
        return Reason.DELIVERED
    if muted:
        return Reason.MUTED
    if notify == NotifyLevel.NONE or (notify == NotifyLevel.MENTIONS and not mentioned):
        return Reason.LEVEL
    if busy:
        return Reason.BUSY
    return ""


def email_on(user: User) -> bool:
    """Return whether the user gets missed-message emails."""
    return email_wanted(user.email, user.email_notifications)


def email_wanted(email: str, enabled: bool) -> bool:
    """Return `email_on` from plain values: an address, and emails not turned off."""
    return bool(email) and enabled


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


class _Member(NamedTuple):
    """What the decision needs of one member, read as plain values (no model instances)."""

    conversation_id: int
    user_id: int
    read_seq: int
    delivered_seq: int
    muted: bool
    notify: str
    busy: bool
    emailed: bool


# One trace row: user, conversation, message, seq, channel, device, device key, decision, reason.
_TraceRow = tuple[int, int, int, int, str, int | None, int, str, str]
_trace_table = Notification._meta.db_table
_TRACE_INSERT = f"""
    INSERT INTO {_trace_table} (user_id, conversation_id, message_id, seq, channel, device_id,
        device_key, decision, reason, kind, provider_status, attempts, created_at, updated_at)
"""
# PostgreSQL: the whole trace as one array per column, one statement whatever its size.
_TRACE_SQL_ARRAYS = f"""{_TRACE_INSERT}
    SELECT x.*, %s, '', 0, %s, %s
    FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[],
        %s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS x
    ON CONFLICT DO NOTHING
"""  # noqa: S608 - the table name is ours; values are parameters
# The embedded default (SQLite): the same row by row.
_TRACE_SQL_ROW = f"""{_TRACE_INSERT}
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', 0, %s, %s) ON CONFLICT DO NOTHING
"""


def _decide(messages: list[Message], now: datetime) -> None:
    """Trace every other member's decision for each message; open windows for what is pending.

    Three reads (members with their users, their devices), one insert of the whole trace
    and a few writes for the windows, whatever the list's size. Members and devices are
    read as values and the trace is written as arrays: a busy group writes a row per
    member and message, and model instances would make the worker's cost per row several
    times the database's.
    """
    texts = [m for m in messages if m.kind == Message.Kind.TEXT]
    if not texts:
        return
    members: dict[int, list[_Member]] = defaultdict(list)
    for conversation_id, user_id, read, delivered, muted, notify, status, until, email, wanted in (
        Membership.objects.filter(
            conversation_id__in={m.conversation_id for m in texts}, user__is_active=True
        )
        .order_by("user_id")
        .values_list(
            "conversation_id",
            "user_id",
            "read_seq",
            "delivered_seq",
            "muted",
            "notify",
            "user__status",
            "user__status_until",
            "user__email",
            "user__email_notifications",
        )
    ):
        members[conversation_id].append(
            _Member(
                conversation_id,
                user_id,
                read,
                delivered,
                muted,
                notify,
                busy=status_at(status, until, now) == User.Status.BUSY,
                emailed=email_wanted(email, wanted),
            )
        )
    user_ids = {member.user_id for group in members.values() for member in group}
    devices: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for user_id, device_id, platform in (
        Device.objects.filter(user_id__in=user_ids)
        .order_by("pk")
        .values_list("user_id", "pk", "platform")
    ):
        devices[user_id].append((device_id, platform))
    rows: list[_TraceRow] = []
    pushes: set[tuple[int, int]] = set()
    emails: dict[int, datetime] = {}
    for message in texts:
        mentioned = set(message.mentions or ())
        for member in members[message.conversation_id]:
            if member.user_id != message.sender_id:
                _plan(message, member, mentioned, devices[member.user_id], rows, pushes, emails)
    _write_trace(rows, now)
    open_push_windows(pushes, now)
    open_digests(emails, now)


def _plan(
    message: Message,
    member: _Member,
    mentioned: set[int],
    targets: list[tuple[int, str]],
    rows: list[_TraceRow],
    pushes: set[tuple[int, int]],
    emails: dict[int, datetime],
) -> None:
    """Add one member's decision for `message`: the trace rows, a window, an email."""
    user_id = member.user_id
    reason = suppression_of(
        deleted=message.deleted,
        seq=message.seq,
        mentioned=user_id in mentioned,
        read_seq=member.read_seq,
        delivered_seq=member.delivered_seq,
        muted=member.muted,
        notify=member.notify,
        busy=member.busy,
    )
    head = (user_id, message.conversation_id, message.pk, message.seq)
    if reason:
        rows += [(*head, platform, pk, pk, Decision.SUPPRESSED, reason) for pk, platform in targets]
        if member.emailed:
            rows.append((*head, Channel.EMAIL, None, 0, Decision.SUPPRESSED, reason))
        if not targets and not member.emailed:
            rows.append((*head, Channel.PUSH, None, 0, Decision.SUPPRESSED, reason))
        return
    if targets:
        rows += [(*head, platform, pk, pk, Decision.PENDING, "") for pk, platform in targets]
        pushes.add((message.conversation_id, user_id))
    else:
        rows.append((*head, Channel.PUSH, None, 0, Decision.SUPPRESSED, Reason.NO_DEVICES))
    if member.emailed:
        rows.append((*head, Channel.EMAIL, None, 0, Decision.PENDING, ""))
        since = emails.get(user_id)
        emails[user_id] = message.created_at if since is None else min(since, message.created_at)


def _write_trace(rows: list[_TraceRow], now: datetime) -> None:
    """Insert the trace rows in one statement; a retried decision finds its rows there."""
    if not rows:
        return
    kind = Notification.Kind.MESSAGE
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            columns = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(_TRACE_SQL_ARRAYS, [kind, stamp, stamp, *columns])
        else:
            cursor.executemany(_TRACE_SQL_ROW, [(*row, kind, stamp, stamp) for row in rows])


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
