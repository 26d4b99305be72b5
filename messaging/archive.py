"""The archive: old messages moved out of the table into segments in object storage.

A segment is up to `ARCHIVE_SEGMENT_MESSAGES` messages of one conversation, in seq order,
stored as gzip-compressed JSON lines (a header line, then one message row per line) under
a name that ends in the SHA-256 of its bytes, and recorded as an `ArchiveSegment`.

**Writing** (`archive_conversation`): under the conversation's row lock, one transaction
per segment: read the rows, write the object, read it back and compare its SHA-256 with
what was written (the storage's own checksum is not trusted), then record the segment,
move the message's attachment links to `ArchivedAttachment`, delete the rows and advance
`Conversation.archived_through_seq`. A run killed before the commit leaves at most an
object nobody recorded; the next run deletes such objects before it writes there, so a
run can stop anywhere and the next one resumes without losing, duplicating or leaking.

A few messages stay in the table though older: the retention notice (it changes with
every purge) and messages someone reported (staff act on them). Readers therefore always
merge both sources; for any message exactly one of them holds it.

**Reading** (`before`, `after`, `find`): the segments that may hold what is asked for are
picked by their seq, version and id ranges, read (a process keeps the last
`ARCHIVE_CACHE_SEGMENTS`, checked by SHA-256 when read), and turned back into unsaved
`Message` objects that build the very payload the row built. Archived messages are
read-only: an edit, delete, reaction or report answers `message_archived` (409).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q

from messaging.errors import ArchiveUnavailable
from messaging.models import (
    ArchivedAttachment,
    ArchiveSegment,
    Attachment,
    Conversation,
    Message,
    Notification,
    NotificationDue,
    Report,
)

logger = logging.getLogger(__name__)

FORMAT = 1


class ArchiveError(Exception):
    """A segment could not be written as it should (nothing was deleted)."""


def storage() -> Storage:
    return storages["archive"]


# --- the segment format ------------------------------------------------------------------


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def row_of(message: Message, attachment_ids: Sequence[int]) -> dict[str, Any]:
    """Return the archived form of a message row: every column a payload or a read needs."""
    return {
        "id": message.pk,
        "seq": message.seq,
        "version": message.version,
        "kind": message.kind,
        "sender": message.sender_id,
        "client_msg_id": None if message.client_msg_id is None else str(message.client_msg_id),
        "body": message.body,
        "system": message.system,
        "created_at": _when(message.created_at),
        "edited_at": _when(message.edited_at),
        "deleted": message.deleted,
        "mentions": message.mentions,
        "reactions": message.reactions,
        "reply_to": message.reply_to_id,
        "attachments": list(attachment_ids),
    }


def encode(conversation_id: int, rows: Sequence[dict[str, Any]]) -> bytes:
    """Return the bytes of a segment: the same rows always give the same bytes."""
    header = {
        "format": FORMAT,
        "conversation": conversation_id,
        "first_seq": rows[0]["seq"],
        "last_seq": rows[-1]["seq"],
        "count": len(rows),
    }
    lines = [_line(header), *(_line(row) for row in rows)]
    return gzip.compress("\n".join(lines).encode() + b"\n", compresslevel=6, mtime=0)


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def decode(data: bytes) -> list[dict[str, Any]]:
    """Return the message rows of a segment's bytes (the header checked, left out)."""
    lines = gzip.decompress(data).decode().splitlines()
    header = json.loads(lines[0])
    if header.get("format") != FORMAT:
        raise ValueError(f"unknown archive format {header.get('format')!r}")
    rows: list[dict[str, Any]] = json.loads("[" + ",".join(lines[1:]) + "]")
    if len(rows) != header["count"]:
        raise ValueError("segment holds fewer rows than its header says")
    return rows


def segment_key(conversation_id: int, first_seq: int, last_seq: int, sha256: str) -> str:
    return f"{conversation_id}/{first_seq:012d}-{last_seq:012d}-{sha256[:16]}.jsonl.gz"


def message_of(conversation_id: int, row: dict[str, Any]) -> Message:
    """Return an unsaved Message equal to the archived row (`Message.archived` set)."""
    message = Message(
        id=row["id"],
        conversation_id=conversation_id,
        seq=row["seq"],
        version=row["version"],
        kind=row["kind"],
        sender_id=row["sender"],
        client_msg_id=None if row["client_msg_id"] is None else UUID(row["client_msg_id"]),
        body=row["body"],
        system=row["system"],
        created_at=datetime.fromisoformat(row["created_at"]),
        edited_at=None if row["edited_at"] is None else datetime.fromisoformat(row["edited_at"]),
        deleted=row["deleted"],
        mentions=row["mentions"],
        reactions=row["reactions"],
        reply_to_id=row["reply_to"],
    )
    message._state.adding = False
    message.archived = True
    message.archived_attachment_ids = list(row["attachments"])
    return message


# --- reading -----------------------------------------------------------------------------


class _Cache:
    """The rows of the segments read last, by key (segments never change)."""

    def __init__(self) -> None:
        self._rows: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> list[dict[str, Any]] | None:
        with self._lock:
            rows = self._rows.get(key)
            if rows is not None:
                self._rows.move_to_end(key)
            return rows

    def put(self, key: str, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rows[key] = rows
            self._rows.move_to_end(key)
            while len(self._rows) > max(0, int(settings.ARCHIVE_CACHE_SEGMENTS)):
                self._rows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


cache = _Cache()


def _read(key: str) -> bytes:
    with storage().open(key, "rb") as stored:
        data: bytes = stored.read()
    return data


def segment_rows(segment: ArchiveSegment) -> list[dict[str, Any]]:
    """Return the rows of a segment, read from the storage (or the cache) and checked."""
    rows = cache.get(segment.key)
    if rows is not None:
        return rows
    try:
        data = _read(segment.key)
    except (OSError, ValueError) as exc:
        logger.error("archive segment %s could not be read: %r", segment.key, exc)
        raise ArchiveUnavailable() from exc
    if hashlib.sha256(data).hexdigest() != segment.sha256:
        logger.error("archive segment %s does not match its SHA-256", segment.key)
        raise ArchiveUnavailable()
    rows = decode(data)
    cache.put(segment.key, rows)
    return rows


@dataclass(frozen=True)
class Window:
    """What a reader may see of a conversation's archive."""

    conversation_id: int
    floor_seq: int = 0  # the member's `visible_from_seq`
    hidden: frozenset[int] = frozenset()  # ids the member deleted for themself

    def shows(self, row: dict[str, Any]) -> bool:
        return row["seq"] >= self.floor_seq and row["id"] not in self.hidden


def _messages(window: Window, rows: Iterable[dict[str, Any]]) -> list[Message]:
    messages = [message_of(window.conversation_id, row) for row in rows]
    attach(messages)
    return messages


def attach(messages: Sequence[Message]) -> None:
    """Read the attachments of archived messages in one query, in the order attached."""
    wanted = {pk for m in messages for pk in m.archived_attachment_ids}
    found = {a.pk: a for a in Attachment.objects.filter(pk__in=wanted)} if wanted else {}
    for message in messages:
        message.loaded_attachments = [
            found[pk] for pk in message.archived_attachment_ids if pk in found
        ]


def before(
    window: Window, *, before_seq: int | None, want: int, above_seq: int = 0
) -> list[Message]:
    """Return the newest `want` archived messages, `above_seq < seq < before_seq`.

    Newest first.
    """
    segments = ArchiveSegment.objects.filter(
        conversation_id=window.conversation_id, last_seq__gt=max(above_seq, window.floor_seq - 1)
    )
    if before_seq is not None:
        segments = segments.filter(first_seq__lt=before_seq)
    found: list[dict[str, Any]] = []
    for segment in segments.order_by("-first_seq"):
        if len(found) >= want:
            break
        for row in reversed(segment_rows(segment)):
            below = before_seq is None or row["seq"] < before_seq
            if below and row["seq"] > above_seq and window.shows(row):
                found.append(row)
                if len(found) >= want:
                    break
    return _messages(window, found)


def after(
    window: Window, *, after_version: int, upto: int, want: int, bound: int | None = None
) -> list[Message]:
    """Return the `want` archived messages of lowest version in `(after_version, upto]`.

    `bound`: versions above it are not needed (the caller already has `want` below it).
    """
    limit = upto if bound is None else min(upto, bound)
    found: list[dict[str, Any]] = []
    segments = ArchiveSegment.objects.filter(
        conversation_id=window.conversation_id,
        max_version__gt=after_version,
        last_seq__gte=window.floor_seq,
    )
    for segment in segments.order_by("min_version"):
        if segment.min_version > limit:
            break
        found.extend(
            row
            for row in segment_rows(segment)
            if after_version < row["version"] <= limit and window.shows(row)
        )
        found.sort(key=lambda row: row["version"])
        del found[want:]
        if len(found) >= want:
            limit = min(limit, found[-1]["version"])
    return _messages(window, found)


def find(conversation_id: int, message_ids: Iterable[int]) -> dict[int, Message]:
    """Return the archived messages among `message_ids` of one conversation, by id."""
    wanted = set(message_ids)
    if not wanted:
        return {}
    low, high = min(wanted), max(wanted)
    segments = ArchiveSegment.objects.filter(
        conversation_id=conversation_id, min_id__lte=high, max_id__gte=low
    ).order_by("first_seq")
    rows = [
        row
        for segment in segments
        if any(segment.min_id <= pk <= segment.max_id for pk in wanted)
        for row in segment_rows(segment)
        if row["id"] in wanted
    ]
    messages = _messages(Window(conversation_id), rows)
    return {message.pk: message for message in messages}


def find_one(conversation_id: int, message_id: int, *, floor_seq: int = 0) -> Message | None:
    message = find(conversation_id, [message_id]).get(message_id)
    return message if message is not None and message.seq >= floor_seq else None


def has_segments(conversation: Conversation) -> bool:
    return conversation.archived_through_seq > 0


# --- writing -----------------------------------------------------------------------------


def _lock(conversation_id: int) -> Conversation | None:
    return Conversation.objects.select_for_update().filter(pk=conversation_id).first()


def _sweep_locked(conversation_id: int) -> int:
    """Delete the conversation's objects no segment records (left by a killed run).

    The caller holds the conversation's lock.

    A writer holds the lock from its write to its commit, so an object being written now
    is never taken for a leftover.
    """
    try:
        _folders, names = storage().listdir(str(conversation_id))
    except FileNotFoundError:
        return 0
    recorded = set(
        ArchiveSegment.objects.filter(conversation_id=conversation_id).values_list("key", flat=True)
    )
    removed = 0
    for name in names:
        key = f"{conversation_id}/{name}"
        if key not in recorded:
            storage().delete(key)
            removed += 1
            logger.warning("archive: deleted %s, an object no segment records", key)
    return removed


def _write_verified(key: str, data: bytes, sha256: str) -> None:
    """Store `data` under `key`, read it back and check it; raise ArchiveError if not equal."""
    store = storage()
    if store.exists(key):  # the same bytes by name, left by a run killed before its commit
        store.delete(key)
    name = store.save(key, ContentFile(data))
    if name != key:
        store.delete(name)
        raise ArchiveError(f"the storage saved {key} as {name}")
    back = _read(key)
    if hashlib.sha256(back).hexdigest() != sha256:
        store.delete(key)
        raise ArchiveError(f"{key} read back differs from what was written")


def _kept(conversation: Conversation) -> Q:
    """Messages that stay in the table however old: the retention notice, reported ones."""
    reported = Report.objects.filter(message__conversation_id=conversation.pk)
    kept = Q(pk__in=reported.values("message_id"))
    if conversation.retention_notice_id is not None:
        kept |= Q(pk=conversation.retention_notice_id)
    return kept


def _through(conversation: Conversation, cutoff: datetime) -> int:
    """Return the seq up to which the locked conversation's log is older than `cutoff`."""
    newer = (
        Message.objects.filter(
            conversation_id=conversation.pk,
            seq__gt=conversation.archived_through_seq,
            created_at__gte=cutoff,
        )
        .exclude(_kept(conversation))
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    return conversation.last_seq if newer is None else newer - 1


def _candidates(conversation: Conversation, through: int) -> Any:
    start = max(conversation.archived_through_seq, conversation.purged_through_seq)
    return (
        Message.objects.filter(conversation_id=conversation.pk, seq__gt=start, seq__lte=through)
        .exclude(_kept(conversation))
        .order_by("seq")
    )


def count_archivable(conversation_id: int, cutoff: datetime) -> int:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return 0
    return int(_candidates(conversation, _through(conversation, cutoff)).count())


def _links(message_ids: Sequence[int]) -> dict[int, list[int]]:
    through = Message.attachments.through
    found: dict[int, list[int]] = {pk: [] for pk in message_ids}
    for message_id, attachment_id in (
        through.objects.filter(message_id__in=message_ids)
        .order_by("pk")
        .values_list("message_id", "attachment_id")
    ):
        found[message_id].append(attachment_id)
    return found


def _delete_rows(conversation_id: int, message_ids: Sequence[int]) -> None:
    """Delete archived rows and what only they are for (links, notification records).

    Not `QuerySet.delete()`: that would also delete the user's hidden-message marks and
    reports, which stay (hidden messages stay hidden when read from the archive).
    """
    Message.attachments.through.objects.filter(message_id__in=message_ids).delete()
    NotificationDue.objects.filter(message_id__in=message_ids).delete()
    Notification.objects.filter(message_id__in=message_ids).delete()
    table = Message._meta.db_table
    marks = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE conversation_id = %s AND id IN ({marks})",  # noqa: S608
            [conversation_id, *message_ids],
        )


def _batch(messages: Sequence[Message], links: dict[int, list[int]]) -> list[dict[str, Any]]:
    """Return the rows of the leading messages that fit one segment (count, then bytes)."""
    rows: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        row = row_of(message, links[message.pk])
        size += len(_line(row).encode()) + 1
        if rows and size > settings.ARCHIVE_SEGMENT_BYTES:
            break
        rows.append(row)
    return rows


def write_segment(conversation: Conversation, rows: Sequence[dict[str, Any]]) -> ArchiveSegment:
    """Write, verify and record one segment of the locked conversation (in its transaction)."""
    data = encode(conversation.pk, rows)
    sha256 = hashlib.sha256(data).hexdigest()
    key = segment_key(conversation.pk, rows[0]["seq"], rows[-1]["seq"], sha256)
    _write_verified(key, data, sha256)
    try:
        segment = ArchiveSegment.objects.create(
            conversation=conversation,
            first_seq=rows[0]["seq"],
            last_seq=rows[-1]["seq"],
            min_version=min(row["version"] for row in rows),
            max_version=max(row["version"] for row in rows),
            min_id=min(row["id"] for row in rows),
            max_id=max(row["id"] for row in rows),
            newest_at=max(datetime.fromisoformat(row["created_at"]) for row in rows),
            count=len(rows),
            size=len(data),
            key=key,
            sha256=sha256,
        )
    except Exception:
        storage().delete(key)
        raise
    return segment


def archive_conversation(
    conversation_id: int,
    *,
    cutoff: datetime,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Move the conversation's messages older than `cutoff` into segments; return how many."""
    moved = 0
    swept = False
    while True:
        written: list[str] = []
        try:
            with transaction.atomic():
                conversation = _lock(conversation_id)
                if conversation is None:
                    break
                through = _through(conversation, cutoff)
                if through <= conversation.archived_through_seq:
                    break
                if not swept:  # leftovers of a killed run, before anything new is written
                    swept = True
                    _sweep_locked(conversation_id)
                limit = settings.ARCHIVE_SEGMENT_MESSAGES
                messages = list(_candidates(conversation, through)[:limit])
                if not messages:
                    Conversation.objects.filter(pk=conversation_id).update(
                        archived_through_seq=through
                    )
                    break
                links = _links([m.pk for m in messages])
                rows = _batch(messages, links)
                done = len(rows) == len(messages) < limit
                segment = write_segment(conversation, rows)
                written.append(segment.key)
                ArchivedAttachment.objects.bulk_create(
                    ArchivedAttachment(
                        segment=segment,
                        attachment_id=attachment_id,
                        conversation_id=conversation_id,
                        message_id=row["id"],
                        seq=row["seq"],
                    )
                    for row in rows
                    for attachment_id in row["attachments"]
                )
                _delete_rows(conversation_id, [row["id"] for row in rows])
                Conversation.objects.filter(pk=conversation_id).update(
                    archived_through_seq=through if done else rows[-1]["seq"]
                )
        except BaseException:
            _delete_objects(written)  # rolled back: no segment records them
            raise
        moved += len(rows)
        if progress is not None:
            progress(len(rows))
        if done:
            break
    if moved:
        logger.info("archive: moved %d messages of conversation %d", moved, conversation_id)
    return moved


def conversations_to_archive(cutoff: datetime) -> list[int]:
    """Return the conversations with messages older than `cutoff` not archived yet."""
    old = Message.objects.filter(
        conversation_id=OuterRef("pk"),
        seq__gt=OuterRef("archived_through_seq"),
        created_at__lt=cutoff,
    )
    return list(
        Conversation.objects.filter(last_seq__gt=F("archived_through_seq"))
        .filter(Exists(old))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


# --- retention ---------------------------------------------------------------------------


def purge(conversation: Conversation, through: int) -> int:
    """Remove archived messages with `seq <= through` (the conversation locked); how many.

    Whole segments go (their objects once the deletion commits); one cut in two is
    written again without the purged rows.
    """
    removed = 0
    doomed: list[str] = []
    for segment in ArchiveSegment.objects.filter(
        conversation_id=conversation.pk, first_seq__lte=through
    ).order_by("first_seq"):
        if segment.last_seq <= through:
            removed += segment.count
        else:
            rows = segment_rows(segment)
            kept = [row for row in rows if row["seq"] > through]
            removed += len(rows) - len(kept)
            replacement = write_segment(conversation, kept)
            ArchivedAttachment.objects.filter(segment=segment, seq__gt=through).update(
                segment=replacement
            )
        doomed.append(segment.key)
        segment.delete()
    if doomed:
        transaction.on_commit(lambda: _delete_objects(doomed))
    return removed


def first_newer(conversation: Conversation, cutoff: datetime) -> int | None:
    """Return the seq of the first archived message sent at or after `cutoff`, if any."""
    for segment in ArchiveSegment.objects.filter(
        conversation_id=conversation.pk, newest_at__gte=cutoff
    ).order_by("first_seq"):
        for row in segment_rows(segment):
            if datetime.fromisoformat(row["created_at"]) >= cutoff:
                return int(row["seq"])
    return None


def count_through(conversation: Conversation, through: int) -> int:
    """Return how many archived messages have `seq <= through`."""
    count = 0
    for segment in ArchiveSegment.objects.filter(
        conversation_id=conversation.pk, first_seq__lte=through
    ):
        if segment.last_seq <= through:
            count += segment.count
        else:
            count += sum(1 for row in segment_rows(segment) if row["seq"] <= through)
    return count


def _delete_objects(keys: Sequence[str]) -> None:
    for key in keys:
        try:
            storage().delete(key)
        except OSError as exc:  # the next run's sweep deletes it
            logger.warning("archive: could not delete %s: %r", key, exc)
