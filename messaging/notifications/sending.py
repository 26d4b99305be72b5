"""Send what the decisions left pending: one push per window and device, one email per window.

Each send is claim, send, record: the claim (a short transaction) re-checks the pending
decisions against what is true now and renews the lease; the requests go out with no
transaction open; the record (another short one) writes each outcome. A worker killed
between the two leaves the lease to expire, and the same push goes out again with the
same Topic, which replaces the first at the push service.
"""

from __future__ import annotations

import functools
import logging
import smtplib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from accounts.models import User
from messaging import wire
from messaging.models import (
    Conversation,
    Device,
    EmailDigest,
    Membership,
    Message,
    Notification,
    NotifyLevel,
    PushWindow,
)
from messaging.notifications import payloads
from messaging.notifications.decide import email_on, suppression
from messaging.push import PushResult, backend_for, send_all

logger = logging.getLogger(__name__)

Decision = Notification.Decision
Reason = Notification.Reason
Channel = Notification.Channel
PUSH_CHANNELS = (Channel.WEBPUSH, Channel.FCM, Channel.APNS)
# A push is tried this often in all (the first try and 3 retries), an email likewise.
MAX_ATTEMPTS = 4
CLAIM_BATCH = 500
EMAIL_MAX_SHOWN = 20


def _ms_since(when: datetime) -> int:
    return max(0, int((timezone.now() - when).total_seconds() * 1000))


# --- the beat tick's claims ------------------------------------------------------------


def _lease_free(now: datetime) -> Q:
    expired = now - timedelta(seconds=settings.NOTIFY_LEASE)
    return Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=expired)


def claim_due_windows(*, now: datetime, limit: int = CLAIM_BATCH) -> list[int]:
    """Lease the push windows that are due; return their ids (each is sent by one task)."""
    with transaction.atomic():
        ids = list(
            PushWindow.objects.select_for_update(skip_locked=True)
            .filter(Q(due_at__lte=now) | Q(remove_due_at__lte=now))
            .filter(_lease_free(now))
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        PushWindow.objects.filter(pk__in=ids).update(dispatched_at=now)
    return ids


def claim_due_digests(*, now: datetime, limit: int = CLAIM_BATCH) -> list[int]:
    """Lease the missed-message emails that are due; return their users' ids."""
    with transaction.atomic():
        ids = list(
            EmailDigest.objects.select_for_update(skip_locked=True)
            .filter(due_at__lte=now)
            .filter(_lease_free(now))
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        EmailDigest.objects.filter(pk__in=ids).update(dispatched_at=now)
    return ids


# --- pushes ----------------------------------------------------------------------------


@dataclass
class _Push:
    """One request to one device, and the trace rows it settles."""

    device: Device
    payload: dict[str, Any]
    urgency: str
    rows: list[Notification]
    kind: str
    seq: int
    result: PushResult | None = None


@dataclass
class _Plan:
    """What a window's send does."""

    pushes: list[_Push] = field(default_factory=list)
    read_seq: int = 0


def send_push_window(window_id: int) -> None:
    """Send the pushes and removals a window has due, and record what came of them."""
    send_push_windows([window_id])


def send_push_windows(window_ids: Sequence[int]) -> None:
    """Send what these windows have due, the requests side by side, then record each.

    Claiming and recording stay one window at a time on this thread (PostgreSQL); only
    the requests run concurrently (`push.send_all`, `PUSH_CONCURRENCY`).
    """
    plans = [(window_id, plan) for window_id in window_ids if (plan := _claim_window(window_id))]
    badges: dict[int, int] = {}
    sends: list[Callable[[], PushResult]] = []
    pushes: list[_Push] = []
    for _, plan in plans:
        for push in plan.pushes:
            backend = backend_for(push.device.platform)
            payload = push.payload
            if push.device.platform == Device.Platform.APNS and push.kind == "message":
                # The app icon's badge: everything the member has not read, everywhere.
                user_id = push.device.user_id
                if user_id not in badges:
                    badges[user_id] = payloads.total_unread(user_id)
                payload = {**payload, "badge": badges[user_id]}
            sends.append(
                functools.partial(
                    backend.send,
                    push.device,
                    payload,
                    topic=payloads.topic(push.rows[0].conversation_id),
                    urgency=push.urgency,
                    ttl=settings.PUSH_TTL,
                )
            )
            pushes.append(push)
    for push, result in zip(pushes, send_all(sends), strict=True):
        push.result = result
        if result.outcome != "sent":
            logger.info("push to device %s: %s %s", push.device.pk, result.outcome, result.status)
    for window_id, plan in plans:
        _record_window(window_id, plan)


def _claim_window(window_id: int) -> _Plan | None:
    """Re-check the window's pending decisions; return what to send (None: nothing now)."""
    now = timezone.now()
    with transaction.atomic():
        window = PushWindow.objects.select_for_update(skip_locked=True).filter(pk=window_id).first()
        if window is None:
            return None  # another worker is on it
        due = window.due_at is not None and window.due_at <= now
        removing = window.remove_due_at is not None and window.remove_due_at <= now
        if not due and not removing:
            return None
        window.dispatched_at = now  # the lease runs from now
        window.save(update_fields=["dispatched_at"])
        member = (
            Membership.objects.filter(
                user_id=window.user_id, conversation_id=window.conversation_id
            )
            .select_related("user", "conversation")
            .first()
        )
        pending = list(
            Notification.objects.filter(
                user_id=window.user_id,
                conversation_id=window.conversation_id,
                kind=Notification.Kind.MESSAGE,
                decision=Decision.PENDING,
                channel__in=PUSH_CHANNELS,
            )
            .select_related("message__sender", "device")
            .order_by("seq", "pk")
        )
        plan = _Plan(read_seq=member.read_seq if member is not None else 0)
        if due:
            _plan_messages(plan, pending, member)
        if removing and member is not None:
            _plan_removal(plan, window, member)
    return plan


def _settle(rows: list[Notification]) -> None:
    """Write the decisions taken on re-check (bulk_update leaves `auto_now` alone)."""
    now = timezone.now()
    for row in rows:
        row.updated_at = now
    Notification.objects.bulk_update(rows, ["decision", "reason", "updated_at"])


def _plan_messages(plan: _Plan, pending: list[Notification], member: Membership | None) -> None:
    """Per device: the newest still-notifiable pending message; the rest are settled now."""
    settled: list[Notification] = []
    newest: dict[int, Notification] = {}
    for row in pending:
        if row.device is None:
            row.decision, row.reason = Decision.FAILED, Reason.GONE
        elif member is None:
            row.decision, row.reason = Decision.SUPPRESSED, Reason.LEFT
        else:
            reason = suppression(row.message, member, member.user)
            if not reason:
                older = newest.get(row.device_key)
                if older is not None:
                    older.decision, older.reason = Decision.SUPPRESSED, Reason.COALESCED
                    settled.append(older)
                newest[row.device_key] = row
                continue
            row.decision, row.reason = Decision.SUPPRESSED, reason
        settled.append(row)
    _settle(settled)
    if not newest or member is None:
        return
    unread = payloads.unread_count(member.user_id, member.conversation_id, member.read_seq)
    by_message: dict[int, dict[str, Any]] = {}
    for row in newest.values():
        message = row.message
        if message.pk not in by_message:
            by_message[message.pk] = dict(
                payloads.message_push(message, member.conversation, message.sender, unread)
            )
        assert row.device is not None  # noqa: S101 - rows without a device were settled above
        plan.pushes.append(
            _Push(row.device, by_message[message.pk], "high", [row], "message", message.seq)
        )


def _plan_removal(plan: _Plan, window: PushWindow, member: Membership) -> None:
    """Take back, on every device that showed one, the pushes of messages now read."""
    shown = (
        Notification.objects.filter(
            user_id=window.user_id,
            conversation_id=window.conversation_id,
            kind=Notification.Kind.MESSAGE,
            decision=Decision.SENT,
            channel__in=PUSH_CHANNELS,
            seq__gt=window.removed_seq,
            seq__lte=member.read_seq,
            device__isnull=False,
        )
        .select_related("device", "message")
        .order_by("seq")
    )
    newest: dict[int, Notification] = {}
    for row in shown:
        newest[row.device_key] = row
    payload = dict(wire.remove_push(window.conversation_id, member.read_seq))
    for row in newest.values():
        assert row.device is not None  # noqa: S101 - filtered above
        removal, _ = Notification.objects.get_or_create(
            message=row.message,
            user_id=row.user_id,
            kind=Notification.Kind.REMOVE,
            channel=row.channel,
            device_key=row.device_key,
            defaults={
                "conversation_id": row.conversation_id,
                "seq": row.seq,
                "device": row.device,
                "decision": Decision.PENDING,
            },
        )
        plan.pushes.append(_Push(row.device, payload, "normal", [removal], "remove", row.seq))


def _record_window(window_id: int, plan: _Plan) -> None:
    """Write each push's outcome; set the window's next due time from what is left."""
    now = timezone.now()
    retry_at: datetime | None = None
    gone: set[int] = set()
    reached: set[int] = set()
    with transaction.atomic():
        window = PushWindow.objects.select_for_update().filter(pk=window_id).first()
        if window is None:
            return
        for push in plan.pushes:
            result = push.result
            assert result is not None  # noqa: S101 - every planned push was sent
            for row in push.rows:
                row.attempts += 1
                row.provider_status = result.status[:200]
                if result.outcome == "sent":
                    row.decision, row.reason = Decision.SENT, ""
                    row.latency_ms = _ms_since(row.message.created_at)
                elif result.outcome in ("gone", "refused"):
                    row.decision = Decision.FAILED
                    row.reason = Reason.GONE if result.outcome == "gone" else Reason.PROVIDER_ERROR
                    gone.add(push.device.pk)
                elif result.outcome == "retry" and row.attempts < MAX_ATTEMPTS:
                    wait = result.retry_after if result.retry_after is not None else 2**row.attempts
                    when = now + timedelta(seconds=min(wait, settings.NOTIFY_LEASE))
                    retry_at = when if retry_at is None else min(retry_at, when)
                else:
                    row.decision, row.reason = Decision.FAILED, Reason.PROVIDER_ERROR
                row.save(
                    update_fields=[
                        "attempts",
                        "provider_status",
                        "decision",
                        "reason",
                        "latency_ms",
                        "updated_at",
                    ]
                )
            if result.outcome == "sent":
                reached.add(push.device.pk)
            if result.outcome == "sent" and push.kind == "message":
                window.pushed_at = now
                window.pushed_seq = max(window.pushed_seq, push.seq)
        if gone:
            Device.objects.filter(pk__in=gone).delete()
        if reached:
            Device.objects.filter(pk__in=reached).update(last_used_at=now)
        # What is still pending in this window, in one read: removals, newer messages.
        pending = set(
            Notification.objects.filter(
                user_id=window.user_id,
                conversation_id=window.conversation_id,
                decision=Decision.PENDING,
                channel__in=PUSH_CHANNELS,
            )
            .values_list("kind", flat=True)
            .distinct()
        )
        removals_left = Notification.Kind.REMOVE in pending
        if window.remove_due_at is not None and window.remove_due_at <= now and not removals_left:
            window.removed_seq = max(window.removed_seq, plan.read_seq)
            window.remove_due_at = None
        elif removals_left:
            window.remove_due_at = retry_at or now
        read_seq = (
            Membership.objects.filter(
                user_id=window.user_id, conversation_id=window.conversation_id
            )
            .values_list("read_seq", flat=True)
            .first()
        )
        if read_seq is not None and window.removed_seq < window.pushed_seq <= read_seq:
            # Read while we were sending: take the push back too.
            window.remove_due_at = window.remove_due_at or now
        window.due_at = _next_due(window, now, retry_at, Notification.Kind.MESSAGE in pending)
        window.dispatched_at = None
        window.save()


def _next_due(
    window: PushWindow, now: datetime, retry_at: datetime | None, more: bool
) -> datetime | None:
    """Return when the window is due again: a retry, or the next window for newer pending."""
    if retry_at is not None:
        return retry_at
    if not more:
        return None
    start = window.pushed_at or now
    return max(now, start + timedelta(seconds=settings.NOTIFY_PUSH_DELAY))


# --- email -----------------------------------------------------------------------------


@dataclass
class _Email:
    user: User
    rows: list[Notification]
    hidden: int


def send_email_digest(user_id: int) -> None:
    """Send one missed-message email listing what the user has still not read."""
    email = _claim_digest(user_id)
    if email is None:
        return
    status, error = "250", False
    try:
        _email_message(email).send()
    except (smtplib.SMTPException, OSError) as exc:
        status, error = f"{type(exc).__name__}: {exc}", True
        logger.warning("missed-message email to user %s failed: %s", user_id, status)
    _record_digest(user_id, email, status, error)


def _claim_digest(user_id: int) -> _Email | None:
    now = timezone.now()
    with transaction.atomic():
        digest = EmailDigest.objects.select_for_update(skip_locked=True).filter(pk=user_id).first()
        if digest is None or digest.due_at is None or digest.due_at > now:
            return None
        digest.dispatched_at = now
        digest.save(update_fields=["dispatched_at"])
        user = User.objects.get(pk=user_id)
        pending = list(
            Notification.objects.filter(
                user_id=user_id,
                kind=Notification.Kind.MESSAGE,
                channel=Channel.EMAIL,
                decision=Decision.PENDING,
            )
            .select_related("message", "message__sender", "conversation")
            .order_by("conversation_id", "seq")
        )
        members = {
            m.conversation_id: m
            for m in Membership.objects.filter(
                user_id=user_id, conversation_id__in={r.conversation_id for r in pending}
            )
        }
        keep: list[Notification] = []
        settled: list[Notification] = []
        for row in pending:
            member = members.get(row.conversation_id)
            if not email_on(user):
                row.decision, row.reason = Decision.SUPPRESSED, Reason.LEVEL
            elif member is None:
                row.decision, row.reason = Decision.SUPPRESSED, Reason.LEFT
            elif row.message.deleted:
                row.decision, row.reason = Decision.SUPPRESSED, Reason.DELETED
            elif member.read_seq >= row.seq:
                row.decision, row.reason = Decision.SUPPRESSED, Reason.READ
            elif member.muted:
                row.decision, row.reason = Decision.SUPPRESSED, Reason.MUTED
            elif member.notify == NotifyLevel.NONE:
                row.decision, row.reason = Decision.SUPPRESSED, Reason.LEVEL
            else:
                keep.append(row)
                continue
            settled.append(row)
        _settle(settled)
        if not keep:
            digest.due_at = None
            digest.dispatched_at = None
            digest.save(update_fields=["due_at", "dispatched_at"])
            return None
        shown = sorted(keep, key=lambda r: r.message.created_at)[:EMAIL_MAX_SHOWN]
        return _Email(user, keep, len(keep) - len(shown))


def _email_message(email: _Email) -> EmailMultiAlternatives:
    shown_ids = {
        r.pk for r in sorted(email.rows, key=lambda r: r.message.created_at)[:EMAIL_MAX_SHOWN]
    }
    groups: dict[int, dict[str, Any]] = {}
    for row in email.rows:
        if row.pk not in shown_ids:
            continue
        conversation: Conversation = row.conversation
        message: Message = row.message
        group = groups.setdefault(
            conversation.pk,
            {
                "title": _title_for(conversation, email.user, message),
                "url": settings.SITE_URL + payloads.conversation_url(conversation.pk),
                "messages": [],
            },
        )
        group["messages"].append(
            {
                "sender": message.sender.name if message.sender else "Someone",
                "time": message.created_at.strftime("%H:%M UTC"),
                "text": payloads.preview(message, limit=1000),
            }
        )
    count = len(email.rows)
    senders = sorted({r.message.sender.name for r in email.rows if r.message.sender})
    subject = f"{count} unread message{'s' if count != 1 else ''}" + (
        f" from {senders[0]}" if len(senders) == 1 else ""
    )
    unsubscribe = payloads.unsubscribe_url(email.user)
    context = {
        "user": email.user,
        "count": count,
        "conversations": list(groups.values()),
        "hidden": email.hidden,
        "app_url": settings.SITE_URL + "/",
        "unsubscribe_url": unsubscribe,
    }
    mail = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("notifications/missed.txt", context),
        to=[email.user.email],
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )
    mail.attach_alternative(render_to_string("notifications/missed.html", context), "text/html")
    return mail


def _title_for(conversation: Conversation, user: User, message: Message) -> str:
    if conversation.kind == Conversation.Kind.GROUP:
        return conversation.title
    return message.sender.name if message.sender and message.sender_id != user.pk else "Direct chat"


def _record_digest(user_id: int, email: _Email, status: str, error: bool) -> None:
    now = timezone.now()
    with transaction.atomic():
        digest = EmailDigest.objects.select_for_update().get(pk=user_id)
        ids = [r.pk for r in email.rows]
        rows = Notification.objects.filter(pk__in=ids, decision=Decision.PENDING)
        if not error:
            for row in email.rows:
                Notification.objects.filter(pk=row.pk, decision=Decision.PENDING).update(
                    decision=Decision.SENT,
                    provider_status=status,
                    attempts=row.attempts + 1,
                    latency_ms=_ms_since(row.message.created_at),
                    updated_at=now,
                )
            digest.sent_at = now
        else:
            attempts = max(r.attempts for r in email.rows) + 1
            if attempts >= MAX_ATTEMPTS:
                rows.update(
                    decision=Decision.FAILED,
                    reason=Reason.PROVIDER_ERROR,
                    provider_status=status[:200],
                    attempts=attempts,
                    updated_at=now,
                )
            else:
                rows.update(provider_status=status[:200], attempts=attempts, updated_at=now)
        more = Notification.objects.filter(
            user_id=user_id,
            kind=Notification.Kind.MESSAGE,
            channel=Channel.EMAIL,
            decision=Decision.PENDING,
        ).exists()
        delay = timedelta(seconds=settings.NOTIFY_EMAIL_DELAY)
        if not more:
            digest.due_at = None
        elif error:
            digest.due_at = now + timedelta(seconds=60)
        else:
            digest.due_at = now + delay
        digest.dispatched_at = None
        digest.save()


def delete_old_notifications(*, now: datetime, batch: int = 5000) -> int:
    """Delete trace rows older than NOTIFY_TRACE_DAYS; return how many.

    Rows are made in time order, so the oldest have the lowest ids: the clean-up walks
    the primary key from the start (no index on `created_at` to keep up on every insert)
    and stops at the first batch with nothing old enough.
    """
    cutoff = now - timedelta(days=settings.NOTIFY_TRACE_DAYS)
    total = 0
    while True:
        ids = [
            pk
            for pk, created_at, decision in Notification.objects.order_by("pk").values_list(
                "pk", "created_at", "decision"
            )[:batch]
            if created_at < cutoff and decision != Decision.PENDING
        ]
        if not ids:
            return total
        deleted, _ = Notification.objects.filter(pk__in=ids).delete()
        total += deleted


# --- security notices --------------------------------------------------------------------


def send_takeover_notice(*, user_id: int, device_id: int, platform: str, name: str) -> int:
    """Tell a user that one of their push targets now belongs to another account.

    A push to each of their remaining devices and, if they have an email address, an
    email; returns how many pushes were sent. Best effort: the registration that
    moved the device has committed, and the move is also in the gateway's log.
    """
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return 0
    label = f"“{name}”" if name else f"A {Device.Platform(platform).label} device"
    title = "A device left your account"
    body = (
        f"{label} now gets another account's notifications, not yours. "
        "If that was not you, change your password and sign out of that device."
    )
    payload = wire.security_push(title=title, body=body, url="/")
    sent, gone = 0, []
    for device in Device.objects.filter(user_id=user_id).exclude(pk=device_id):
        result = backend_for(device.platform).send(
            device, dict(payload), topic="security", urgency="high", ttl=settings.PUSH_TTL
        )
        logger.info("security notice to device %s: %s", device.pk, result.outcome)
        if result.outcome == "sent":
            sent += 1
        elif result.outcome in ("gone", "refused"):
            gone.append(device.pk)
    if gone:
        Device.objects.filter(pk__in=gone).delete()
    if user.email:
        try:
            EmailMultiAlternatives(
                subject=title,
                body=f"{body}\n\n{settings.SITE_URL}/\n",
                to=[user.email],
            ).send()
        except (smtplib.SMTPException, OSError) as exc:
            logger.warning("security notice email to user %s failed: %r", user_id, exc)
    return sent
