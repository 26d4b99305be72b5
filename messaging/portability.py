"""Export and import: the site, one conversation, or one user's own data, as JSON lines.

An export is a folder (or, for a user downloading their data, the same layout in a zip):

- `data.jsonl`: one object per line, `{"model": ..., "pk": ..., "fields": {...}}` (Django's
  `jsonl` serialization, references to permissions by natural key), model by model in
  `MODELS` order, rows in primary key order;
- `files/<stored name>`: every stored file the rows name (attachments, thumbnails,
  profile pictures), under the name the rows use;
- `archive/<key>`: the archive segments the `ArchiveSegment` rows name (site and
  conversation exports; `messaging.archive`), as stored;
- `manifest.json`: the format, the scope, the count per model and the SHA-256 of
  `data.jsonl`, of each file and of each segment.

A user's own download holds the messages they sent, archived ones included (read back
from their segments, as `messaging.Message` rows), not segments.

Nothing in it depends on when or where it was made, so exporting, importing into an
empty database and exporting again gives the same bytes. What a running server only
keeps for a while is left out (`LEFT_OUT`): sessions, refresh-token records and
revocations (everyone signs in again), the notification queue and its trace.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management.color import no_style
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.db.models import Prefetch, Q, QuerySet

from accounts.avatars import avatar_files
from accounts.models import User
from chatsite import ratelimit
from messaging import archive
from messaging.errors import ExportRateLimited, ImportRefused
from messaging.models import (
    ArchivedAttachment,
    ArchiveSegment,
    Attachment,
    Conversation,
    Membership,
    Message,
)

FORMAT = 1
# Exported models, in an order where every reference points to an earlier model.
MODELS = [
    "auth.Group",
    "accounts.User",
    "messaging.Conversation",
    "messaging.Membership",
    "messaging.Attachment",
    "messaging.Message",
    "messaging.Device",
    "messaging.Block",
    "messaging.Report",
    "messaging.HiddenMessage",
    "messaging.ArchiveSegment",
    "messaging.ArchivedAttachment",
]
# Models of our apps that an export leaves out, and why (a test checks every model of
# `accounts` and `messaging` is in one list or the other).
LEFT_OUT = {
    "accounts.RevokedTokenFamily": "logins do not move: everyone signs in again",
    "accounts.CredentialChange": "read by gateways within seconds, kept an hour",
    "messaging.NotificationDue": "the notification queue of a running server",
    "messaging.PushWindow": "the notification queue of a running server",
    "messaging.EmailDigest": "the notification queue of a running server",
    "messaging.Notification": "the notification trace, kept for days only",
}
_KNOWN = {label.lower() for label in MODELS}
# Models whose references (to permissions) are written by natural key.
NATURAL_REFERENCES = {"auth.Group", "accounts.User"}
# Rows read and written per batch.
BATCH = 2000
# What a user's own download leaves out of their account row.
PRIVATE_USER_FIELDS = {"password", "user_permissions", "groups", "is_superuser", "is_staff"}
# Users named in a conversation export: only what other members see of them.
PUBLIC_USER_FIELDS = ["username", "display_name", "avatar", "is_active", "date_joined"]

Progress = Callable[[str], None]


@dataclass
class Scope:
    """What an export holds: querysets per model label, and which fields of each."""

    name: str
    rows: dict[str, QuerySet[Any]]
    fields: dict[str, list[str]] = field(default_factory=dict)
    # Rows not in the table, written after a model's queryset (archived messages).
    more: dict[str, Callable[[], Iterator[list[Any]]]] = field(default_factory=dict)


class _Encoder(DjangoJSONEncoder):
    """Django's JSON, but times keep their microseconds (Django's cut them to ms)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime.datetime):
            text = o.isoformat()
            return text[:-6] + "Z" if text.endswith("+00:00") else text
        return super().default(o)


def _model(label: str) -> type[models.Model]:
    return apps.get_model(label)


def site_scope() -> Scope:
    """Everything but `LEFT_OUT`."""
    return Scope("site", {label: _model(label)._default_manager.all() for label in MODELS})


def conversation_scope(conversation_id: int) -> Scope:
    """One conversation: its members (public fields), log, memberships and files."""
    messages = Message.objects.filter(conversation_id=conversation_id)
    archived = ArchivedAttachment.objects.filter(conversation_id=conversation_id)
    files = Attachment.objects.filter(
        Q(messages__conversation_id=conversation_id) | Q(pk__in=archived.values("attachment_id"))
    ).distinct()
    people = User.objects.filter(
        Q(memberships__conversation_id=conversation_id)
        | Q(pk__in=messages.exclude(sender=None).values("sender_id"))
        | Q(pk__in=files.values("uploader_id"))
        | Q(pk__in=_archived_senders(conversation_id))
    ).distinct()
    rows: dict[str, QuerySet[Any]] = {
        "accounts.User": people,
        "messaging.Conversation": Conversation.objects.filter(pk=conversation_id),
        "messaging.Membership": Membership.objects.filter(conversation_id=conversation_id),
        "messaging.Attachment": files,
        "messaging.Message": messages,
        "messaging.ArchiveSegment": ArchiveSegment.objects.filter(conversation_id=conversation_id),
        "messaging.ArchivedAttachment": archived,
    }
    return Scope(f"conversation {conversation_id}", rows, {"accounts.User": PUBLIC_USER_FIELDS})


def _archived_senders(conversation_id: int) -> set[int]:
    return {
        row["sender"]
        for segment in ArchiveSegment.objects.filter(conversation_id=conversation_id)
        for row in archive.segment_rows(segment)
        if row["sender"] is not None
    }


def _archived_messages_of(user_id: int) -> Iterator[list[Message]]:
    """Yield the archived messages `user_id` sent, a segment at a time."""
    for segment in ArchiveSegment.objects.order_by("pk").iterator():
        rows = [row for row in archive.segment_rows(segment) if row["sender"] == user_id]
        if rows:
            yield [archive.message_of(segment.conversation_id, row) for row in rows]


def user_scope(user_id: int) -> Scope:
    """One person's own data: account, memberships, what they sent and uploaded, devices."""
    account = [f.name for f in User._meta.concrete_fields if not f.primary_key]
    account += [f.name for f in User._meta.many_to_many]
    rows: dict[str, QuerySet[Any]] = {
        "accounts.User": User.objects.filter(pk=user_id),
        "messaging.Conversation": Conversation.objects.filter(memberships__user_id=user_id),
        "messaging.Membership": Membership.objects.filter(user_id=user_id),
        "messaging.Attachment": Attachment.objects.filter(uploader_id=user_id),
        "messaging.Message": Message.objects.filter(sender_id=user_id),
        "messaging.Device": _model("messaging.Device")._default_manager.filter(user_id=user_id),
        "messaging.Block": _model("messaging.Block")._default_manager.filter(blocker_id=user_id),
        "messaging.Report": _model("messaging.Report")._default_manager.filter(reporter_id=user_id),
        "messaging.HiddenMessage": _model("messaging.HiddenMessage")._default_manager.filter(
            user_id=user_id
        ),
    }
    fields = {"accounts.User": [name for name in account if name not in PRIVATE_USER_FIELDS]}
    more = {"messaging.Message": lambda: _archived_messages_of(user_id)}
    return Scope(f"user {user_id}", rows, fields, more)


def _archive_keys_of(obj: models.Model) -> list[str]:
    return [obj.key] if isinstance(obj, ArchiveSegment) else []


def _files_of(obj: models.Model) -> list[str]:
    if isinstance(obj, Attachment):
        return [f.name for f in (obj.file, obj.thumbnail) if f]
    if isinstance(obj, User):
        return avatar_files(obj.avatar)
    if isinstance(obj, Conversation):
        return avatar_files(obj.picture)  # a group's picture
    return []


class _Digest:
    """A sink that hashes what is written through it, then passes it on."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write_text(self, text: str) -> None:
        data = text.encode()
        self.sha.update(data)
        self.out.write(data)


@dataclass
class _Written:
    """What `_serialize` wrote: rows per model, and the stored files and segments named."""

    counts: dict[str, int] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)


def _serialize(scope: Scope, sink: _Digest, progress: Progress) -> _Written:
    written = _Written()
    counts, names = written.counts, written.names
    for label in MODELS:
        queryset = scope.rows.get(label)
        if queryset is None:
            continue
        count = 0
        model = queryset.model
        ordered = [
            Prefetch(m2m.name, queryset=m2m.related_model._default_manager.order_by("pk"))
            for m2m in model._meta.many_to_many
            if scope.fields.get(label) is None or m2m.name in scope.fields[label]
        ]
        more = scope.more.get(label)
        batches = _batches(queryset.order_by("pk").prefetch_related(*ordered))
        for batch in itertools.chain(batches, more() if more is not None else ()):
            text = serializers.serialize(
                "jsonl",
                batch,
                # Permissions by name: their ids differ between databases. Everything
                # else by id (a natural key would cost a lookup per reference on import).
                use_natural_foreign_keys=label in NATURAL_REFERENCES,
                fields=scope.fields.get(label),
                cls=_Encoder,
            )
            sink.write_text(text)
            for obj in batch:
                names.update(_files_of(obj))
                written.segments.update(_archive_keys_of(obj))
            count += len(batch)
            progress(f"{label.lower()}: {count}")
        counts[label] = count
        if not count:
            progress(f"{label.lower()}: 0")
    return written


def _batches(queryset: QuerySet[Any]) -> Iterator[list[Any]]:
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        batch = list(page[:BATCH])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def _sha256_file(name: str) -> str:
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(
    scope: Scope, written: _Written, data_sha: str, files: dict[str, str], segments: dict[str, str]
) -> bytes:
    manifest = {
        "format": FORMAT,
        "scope": scope.name,
        "counts": written.counts,
        "data_sha256": data_sha,
        "files": dict(sorted(files.items())),
        "archive": dict(sorted(segments.items())),
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _copy(stream: IO[bytes], copy: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
        copy.write(chunk)
    return digest.hexdigest()


def export_to_folder(
    scope: Scope, out: Path, progress: Progress = lambda _: None
) -> dict[str, int]:
    """Write `scope` into the folder `out` (made if missing, refused if not empty)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise ImportRefused(f"{out} is not empty; export into a new folder.")
    with (out / "data.jsonl").open("wb") as data:
        sink = _Digest(data)
        written = _serialize(scope, sink, progress)
    names = written.names
    files: dict[str, str] = {}
    missing = []
    for n, name in enumerate(sorted(names), 1):
        if not default_storage.exists(name):
            missing.append(name)
            continue
        target = out / "files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(name, "rb") as stream, target.open("wb") as copy:
            files[name] = _copy(stream, copy)
        if n % 100 == 0 or n == len(names):
            progress(f"files: {n}/{len(names)}")
    for name in missing:
        progress(f"missing file, left out: {name}")
    segments: dict[str, str] = {}
    for n, key in enumerate(sorted(written.segments), 1):
        target = out / "archive" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.storage().open(key, "rb") as stream, target.open("wb") as copy:
            segments[key] = _copy(stream, copy)
        if n % 100 == 0 or n == len(written.segments):
            progress(f"archive segments: {n}/{len(written.segments)}")
    manifest = _manifest(scope, written, sink.sha.hexdigest(), files, segments)
    (out / "manifest.json").write_bytes(manifest)
    return written.counts


def export_to_zip(scope: Scope, out: IO[bytes]) -> None:
    """Write `scope` as a zip (the layout of a folder export) into `out`."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        with bundle.open("data.jsonl", "w") as data:
            sink = _Digest(data)
            written = _serialize(scope, sink, lambda _: None)
        files: dict[str, str] = {}
        for name in sorted(written.names):
            if not default_storage.exists(name):
                continue
            with (
                default_storage.open(name, "rb") as stream,
                bundle.open(f"files/{name}", "w") as copy,
            ):
                files[name] = _copy(stream, copy)
        segments: dict[str, str] = {}
        for key in sorted(written.segments):
            with (
                archive.storage().open(key, "rb") as stream,
                bundle.open(f"archive/{key}", "w") as copy,
            ):
                segments[key] = _copy(stream, copy)
        bundle.writestr(
            "manifest.json", _manifest(scope, written, sink.sha.hexdigest(), files, segments)
        )


# --- import ------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ImportRefused(f"{folder} holds no readable manifest.json ({exc}).") from exc
    if manifest.get("format") != FORMAT:
        raise ImportRefused(
            f"Export format {manifest.get('format')!r}; this server reads {FORMAT}."
        )
    return manifest


def _check(folder: Path, manifest: dict[str, Any], progress: Progress) -> None:
    """Refuse an export whose data or files do not match their manifest."""
    digest = hashlib.sha256()
    with (folder / "data.jsonl").open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != manifest.get("data_sha256"):
        raise ImportRefused("data.jsonl does not match its manifest (changed or cut short).")
    for name, sha in manifest.get("files", {}).items():
        path = folder / "files" / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            raise ImportRefused(f"files/{name} is missing or does not match the manifest.")
    for key, sha in manifest.get("archive", {}).items():
        path = folder / "archive" / key
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            raise ImportRefused(f"archive/{key} is missing or does not match the manifest.")
    progress("checked: data and files match the manifest")


def _rows(folder: Path) -> Iterator[dict[str, Any]]:
    with (folder / "data.jsonl").open(encoding="utf-8") as data:
        for number, line in enumerate(data, 1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
            except ValueError as exc:
                raise ImportRefused(f"data.jsonl line {number} is not JSON ({exc}).") from exc
            if str(row.get("model")).lower() not in _KNOWN:
                raise ImportRefused(
                    f"data.jsonl line {number}: unknown model {row.get('model')!r}."
                )
            yield row


def _insert(label: str, objects: list[Any]) -> None:
    """Insert deserialized rows as they are (raw: no `auto_now`), then their many-to-many."""
    model = _model(label)
    rows = [o.object for o in objects]
    concrete = list(model._meta.local_concrete_fields)
    size = max(1, connection.ops.bulk_batch_size(concrete, rows))
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        model._base_manager._insert(chunk, fields=concrete, raw=True)  # type: ignore[attr-defined]
    for m2m in model._meta.many_to_many:
        through: Any = m2m.remote_field.through
        source = m2m.m2m_field_name()
        target = m2m.m2m_reverse_field_name()
        links = [
            through(**{f"{source}_id": o.object.pk, f"{target}_id": value})
            for o in objects
            for value in o.m2m_data.get(m2m.name, [])
        ]
        through._default_manager.bulk_create(links, batch_size=BATCH)


def import_folder(folder: Path, progress: Progress = lambda _: None) -> dict[str, int]:
    """Load an export into an empty database and its files into storage; return counts."""
    manifest = _read_manifest(folder)
    _check(folder, manifest, progress)
    if User.objects.exists() or Conversation.objects.exists():
        raise ImportRefused(
            "The database already holds users or conversations; import into an empty one."
        )
    counts: dict[str, int] = {}
    with transaction.atomic():
        pending: list[dict[str, Any]] = []

        def flush() -> None:
            if not pending:
                return
            objects = list(serializers.deserialize("python", pending))
            label = objects[0].object._meta.label
            _insert(label, objects)
            counts[label] = counts.get(label, 0) + len(objects)
            progress(f"{label.lower()}: {counts[label]}")
            pending.clear()

        for row in _rows(folder):
            if pending and (row["model"] != pending[0]["model"] or len(pending) >= BATCH):
                flush()
            pending.append(row)
        flush()
        touched = [_model(name) for name in counts]
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), touched):
                cursor.execute(sql)
    for n, name in enumerate(sorted(manifest.get("files", {})), 1):
        source = folder / "files" / name
        if default_storage.exists(name):
            if _sha256_file(name) != manifest["files"][name]:
                raise ImportRefused(f"Storage already holds a different {name}.")
            continue
        saved = default_storage.save(name, ContentFile(source.read_bytes()))
        if saved != name:
            raise ImportRefused(f"Storage stored {name} as {saved}.")
        if n % 100 == 0 or n == len(manifest["files"]):
            progress(f"files: {n}/{len(manifest['files'])}")
    segments = manifest.get("archive", {})
    for n, key in enumerate(sorted(segments), 1):
        _store_segment(key, (folder / "archive" / key).read_bytes(), segments[key])
        if n % 100 == 0 or n == len(segments):
            progress(f"archive segments: {n}/{len(segments)}")
    return counts


def _store_segment(key: str, data: bytes, sha: str) -> None:
    """Put an imported segment into the archive storage under its key, and check it."""
    store = archive.storage()
    if store.exists(key):
        with store.open(key, "rb") as stream:
            if hashlib.sha256(stream.read()).hexdigest() != sha:
                raise ImportRefused(f"The archive storage already holds a different {key}.")
        return
    if store.save(key, ContentFile(data)) != key:
        raise ImportRefused(f"The archive storage stored {key} under another name.")


# --- a user's own download ---------------------------------------------------------------


def download_own_data(user: User) -> tuple[IO[bytes], str]:
    """Return a zip of the user's own data (rewound) and its file name; rate limited."""
    verdict = ratelimit.take_one_per(
        f"export:{user.pk}",
        interval=settings.EXPORT_INTERVAL,
        burst=settings.EXPORT_BURST,
        kind="export",
    )
    if not verdict.allowed:
        raise ExportRateLimited(verdict.retry_after)
    # Kept in memory up to 16 MiB, then on disk.
    out = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 (the response closes it)
    export_to_zip(user_scope(user.pk), out)
    out.seek(0)
    return out, f"chat-data-{user.username}.zip"
