"""Housekeeping of stored files: uploads nobody sent, and files of deleted messages.

An upload becomes an attachment as soon as it is stored; it is meant to be sent within
minutes. One that no message holds after `CHAT_ORPHAN_UPLOAD_HOURS` is deleted, file,
thumbnail and row. A message deleted for everyone lets go of its attachments at once
(`discard_if_orphaned`), so the files go with it rather than a day later.

Sends and this clean-up meet on the attachment's row lock: a send locks the rows it
attaches (`lock_for_send`), the clean-up skips rows locked by a send, and re-reads
under its own lock whether a message took the file meanwhile. So a file is never
deleted under a message, and a send that comes after the deletion is refused clearly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet

from accounts import housekeeping as accounts_housekeeping
from accounts.models import User
from messaging.attachments import discard_files
from messaging.models import ArchivedAttachment, Attachment, Message

logger = logging.getLogger(__name__)

# Attachments deleted per transaction.
BATCH = 200


def run(
    *, now: datetime, dry_run: bool = False, report: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Do every housekeeping step; return how many rows each removed (or would remove).

    `report` hears each step's name and count as soon as the step is done.
    """
    steps = {
        "expired_tokens": accounts_housekeeping.delete_expired_tokens,
        "expired_sessions": accounts_housekeeping.delete_expired_sessions,
        "spent_token_families": accounts_housekeeping.delete_stale_token_families,
        "credential_changes": accounts_housekeeping.delete_read_credential_changes,
        "orphan_uploads": discard_orphan_uploads,
    }
    counts = {}
    for name, step in steps.items():
        counts[name] = step(now=now, dry_run=dry_run)
        if report is not None:
            report(name, counts[name])
    return counts


def _unheld() -> QuerySet[Attachment]:
    held = Message.attachments.through.objects.filter(attachment_id=OuterRef("pk"))
    archived = ArchivedAttachment.objects.filter(attachment_id=OuterRef("pk"))
    return Attachment.objects.filter(~Exists(held), ~Exists(archived))


def lock_for_send(uploader: User, attachment_ids: Sequence[int]) -> dict[int, Attachment]:
    """Lock the uploader's attachments a send is about to attach; return those that exist."""
    mine = Attachment.objects.filter(pk__in=attachment_ids, uploader=uploader)
    return {attachment.pk: attachment for attachment in mine.select_for_update()}


def _discard(candidates: QuerySet[Attachment]) -> tuple[int, int]:
    """Delete the orphans among `candidates`, one batch in one transaction.

    Return how many rows were locked and how many of them were deleted.
    """
    with transaction.atomic():
        locked = list(
            candidates.select_for_update(skip_locked=True).values_list("pk", flat=True)[:BATCH]
        )
        if not locked:
            return 0, 0
        # A new statement sees what committed while this one waited: a send that attached
        # one of them just before the lock keeps it.
        doomed = list(_unheld().filter(pk__in=locked))
        Attachment.objects.filter(pk__in=[a.pk for a in doomed]).delete()
        # The files go once the rows are gone for good (a rollback keeps both).
        transaction.on_commit(lambda: _discard_all_files(doomed))
    return len(locked), len(doomed)


def _discard_all_files(attachments: list[Attachment]) -> None:
    for attachment in attachments:
        discard_files(attachment)


def discard_orphan_uploads(*, now: datetime, dry_run: bool = False) -> int:
    """Delete uploads that no message holds and that are older than the orphan limit."""
    cutoff = now - timedelta(hours=settings.CHAT_ORPHAN_UPLOAD_HOURS)
    candidates = _unheld().filter(created_at__lt=cutoff).order_by("pk")
    if dry_run:
        return candidates.count()
    deleted = 0
    while True:
        locked, gone = _discard(candidates)
        if not locked:
            break
        deleted += gone
    if deleted:
        logger.info("deleted %d uploads that no message held", deleted)
    return deleted


def release_attachments(message_ids: Sequence[int]) -> list[int]:
    """Detach every file of messages being deleted; they go once the deletion commits.

    Return the ids detached. One statement: the links are deleted and read back at once.
    """
    if not message_ids:
        return []
    links = Message.attachments.through._meta.db_table
    marks = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {links} WHERE message_id IN ({marks}) RETURNING attachment_id",  # noqa: S608
            list(message_ids),
        )
        held = sorted({row[0] for row in cursor.fetchall()})
    if held:
        transaction.on_commit(lambda: discard_if_orphaned(held))
    return held


def discard_if_orphaned(attachment_ids: Sequence[int]) -> int:
    """Delete those of `attachment_ids` that no message holds any more (a message deleted)."""
    if not attachment_ids:
        return 0
    return _discard(_unheld().filter(pk__in=list(attachment_ids)))[1]
