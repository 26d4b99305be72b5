"""Celery tasks: the notification tick and the sends it rings for; image thumbnails.

Beat runs `notify_tick_task` every `NOTIFY_POLL_INTERVAL` seconds. The tick decides due
messages itself and hands each due push window and email to its own task. Tasks take
ids and re-read the truth; the work they do is recorded in PostgreSQL, so a task that
runs twice, late, or not at all (its lease expires) changes nothing but timing.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from messaging import archive, attachments, housekeeping, services
from messaging.devices import device_taken_over
from messaging.models import Attachment, Device
from messaging.notifications import decide, sending
from messaging.push import backend_for

logger = logging.getLogger(__name__)

# How long one tick may keep deciding before it lets the next one take over.
TICK_BUDGET = 5.0
# Due push windows handed to one task (each is one member in one conversation).
WINDOWS_PER_TASK = 4


@shared_task(ignore_result=True)
def notify_tick_task() -> None:
    """Decide what is due, then ring for every due push window and email."""
    started = time.monotonic()
    while decide.decide_due_messages(now=timezone.now()) == decide.BATCH:
        if time.monotonic() - started > TICK_BUDGET:
            break
    now = timezone.now()
    try:
        windows = sending.claim_due_windows(now=now)
        # A few windows per task: fewer broker messages, and still spread over the pool.
        for start in range(0, len(windows), WINDOWS_PER_TASK):
            send_push_windows_task.delay(windows[start : start + WINDOWS_PER_TASK])
        for user_id in sending.claim_due_digests(now=now):
            send_email_digest_task.delay(user_id)
    except BrokerError as exc:
        # The claims stay leased; they are claimed again when the lease runs out.
        logger.warning("cannot reach the broker to send notifications: %r", exc)


@shared_task(ignore_result=True)
def send_push_windows_task(window_ids: list[int]) -> None:
    """Send what these push windows (a member in a conversation each) have due."""
    sending.send_push_windows(window_ids)


@shared_task(ignore_result=True)
def send_email_digest_task(user_id: int) -> None:
    """Send one member's missed-message email."""
    sending.send_email_digest(user_id)


@shared_task(ignore_result=True)
def delete_old_notifications_task() -> None:
    """Delete notification trace rows past NOTIFY_TRACE_DAYS."""
    deleted = sending.delete_old_notifications(now=timezone.now())
    if deleted:
        logger.info("deleted %d old notification trace rows", deleted)


@shared_task(ignore_result=True)
def send_takeover_notice_task(user_id: int, device_id: int, platform: str, name: str) -> None:
    """Tell a user on their other devices that a push target moved to another account."""
    sending.send_takeover_notice(user_id=user_id, device_id=device_id, platform=platform, name=name)


def _on_device_taken_over(
    *, previous_user_id: int, device_id: int, platform: str, name: str, **_: object
) -> None:
    try:
        send_takeover_notice_task.delay(previous_user_id, device_id, platform, name)
    except BrokerError as exc:
        # The move itself is logged by `messaging.devices`; only the notice is lost.
        logger.warning("cannot reach the broker to send a security notice: %r", exc)


device_taken_over.connect(_on_device_taken_over, dispatch_uid="messaging-device-taken-over")


@shared_task(ignore_result=True)
def make_thumbnail_task(attachment_id: int) -> None:
    """Decode an uploaded image and store its thumbnail (queue `thumbnails`, CELERY_TASK_ROUTES).

    Only the worker of that queue runs it, so its `--concurrency` bounds how many images
    are decoded at once; the gateway that took the upload never decodes one.
    """
    attachments.make_thumbnail(attachment_id)


def queue_thumbnail(attachment: Attachment) -> None:
    """Hand a pending thumbnail to the worker, after the upload is committed.

    With eager Celery (`make run`: no broker) the task runs here, and `attachment` is
    read again so the answer says `ready`. Without a reachable broker the file goes
    without a thumbnail rather than waiting for one nobody will make.
    """
    if attachment.thumbnail_status != Attachment.Thumbnail.PENDING:
        return
    try:
        make_thumbnail_task.delay(attachment.pk)
    except BrokerError as exc:
        logger.warning("cannot queue the thumbnail of attachment %d: %r", attachment.pk, exc)
        attachments.give_up_thumbnail(attachment.pk)
    attachment.refresh_from_db(fields=["thumbnail", "thumbnail_status"])


@worker_ready.connect
def _warn_about_unconfigured_push(**_: object) -> None:
    """Say once, at worker start, which push platforms cannot send (not once per push)."""
    if not settings.NOTIFY_ENABLED:
        logger.warning("NOTIFY_ENABLED is off: no notifications are decided")
        return
    for platform in Device.Platform.values:
        problem = backend_for(platform).problem()
        if problem:
            logger.warning("%s devices will get provider_error: %s", platform, problem)


@shared_task(ignore_result=True)
def housekeeping_task() -> None:
    """Delete expired tokens and sessions, spent revocations, and uploads nobody sent."""
    counts = housekeeping.run(now=timezone.now())
    logger.info("housekeeping: %s", ", ".join(f"{name} {count}" for name, count in counts.items()))


@shared_task(ignore_result=True)
def archive_task() -> None:
    """Move messages older than `ARCHIVE_AFTER_DAYS` into the archive storage."""
    days = settings.ARCHIVE_AFTER_DAYS
    if not days:
        return
    cutoff = timezone.now() - timedelta(days=days)
    conversations = moved = 0
    for conversation_id in archive.conversations_to_archive(cutoff):
        count = archive.archive_conversation(conversation_id, cutoff=cutoff)
        conversations += bool(count)
        moved += count
    if moved:
        logger.info("archive: moved %d messages of %d conversations", moved, conversations)


@shared_task(ignore_result=True)
def retention_task() -> None:
    """Delete messages past their conversation's retention (`DELETE_AFTER_DAYS`)."""
    now = timezone.now()
    conversations = removed = 0
    for conversation_id in services.conversations_with_retention(now):
        gone = services.purge_expired(conversation_id=conversation_id, now=now)
        conversations += bool(gone)
        removed += gone
    if removed:
        logger.info("retention: removed %d messages in %d conversations", removed, conversations)
