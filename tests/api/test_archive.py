"""Archiving: old messages move into segments in the archive storage (a local folder and
an S3-compatible server, moto's server mode) and read back exactly as before."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from storages.backends.s3 import S3Storage

from accounts.models import User
from chatsite.celery import app as celery_app
from messaging import archive, portability, selectors, services, wire
from messaging.models import ArchivedAttachment, ArchiveSegment, Conversation, Message
from tests.api.conftest import Client, error_code
from tests.api.test_attachments import download, png, upload

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
MOTO = Path(sys.executable).parent / "moto_server"


def _flipped(content: Any) -> ContentFile[bytes]:
    data = bytearray(content.read())
    data[len(data) // 2] ^= 0x01
    return ContentFile(bytes(data))


class FlippingStorage(FileSystemStorage):
    """A folder that stores every file with one byte changed: a storage that corrupts."""

    def save(self, name: str | None, content: Any, max_length: int | None = None) -> str:
        return super().save(name, _flipped(content), max_length)


class FlippingS3Storage(S3Storage):  # type: ignore[misc] # django-storages has no types
    """The S3 backend, but one byte of every object changes on the way to the bucket."""

    def save(self, name: str | None, content: Any, max_length: int | None = None) -> str:
        return str(super().save(name, _flipped(content), max_length))


def use_archive_folder(settings: Any, root: Path) -> None:
    """Point the archive storage at the folder `root` (and forget cached segments)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": root},
        },
    }
    archive.cache.clear()


def use_archive_bucket(settings: Any, endpoint: str, monkeypatch: Any) -> str:
    """Point the archive storage at a fresh bucket of the S3 server; return its name."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    S3Storage(
        bucket_name=bucket, endpoint_url=endpoint, region_name="us-east-1"
    ).connection.meta.client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": "archive",
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                "file_overwrite": True,
            },
        },
    }
    archive.cache.clear()
    return bucket


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3-compatible server on a free local port; stop it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(params=["folder", "s3"])
def store(request: Any, settings: Any, tmp_path: Path, monkeypatch: Any) -> str:
    """Point the archive storage at a fresh folder, or a fresh bucket of the S3 server."""
    archive.cache.clear()
    settings.ARCHIVE_SEGMENT_MESSAGES = 7
    if request.param == "folder":
        use_archive_folder(settings, tmp_path / "archive")
        return "folder"
    endpoint = request.getfixturevalue("s3_endpoint")
    use_archive_bucket(settings, endpoint, monkeypatch)
    return "s3"


def say(user: User, chat: Conversation, body: str, **kw: Any) -> Message:
    return services.send_message(
        sender=user, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body=body, **kw
    ).message


def age_all(chat: Conversation, days: int) -> None:
    Message.objects.filter(conversation=chat).update(created_at=timezone.now() - days * DAY)


def run_archive(chat: Conversation, days: int = 30) -> int:
    return archive.archive_conversation(chat.pk, cutoff=timezone.now() - days * DAY)


def history(client: Any, user: User, chat: Conversation, limit: int = 5) -> list[bytes]:
    """Every page of the conversation as the REST API answers it, bytes as sent.

    Backwards by `before` from the newest page to the start, and forwards by `after`
    from 0 to the end; and every message alone (as `messages.fetch`'s reply previews
    and reports read it).
    """
    pages: list[bytes] = []
    url = f"/api/v1/conversations/{chat.pk}/messages"
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        response = client.get(url, params)
        assert response.status_code == 200, response.content
        pages.append(response.content)
        body = response.json()
        if not body["has_more"]:
            break
        before = body["messages"][0]["seq"]
    after = 0
    ids: list[int] = []
    while True:
        response = client.get(url, {"limit": limit, "after": after})
        assert response.status_code == 200, response.content
        pages.append(response.content)
        body = response.json()
        ids += [m["id"] for m in body["messages"]]
        after = body["upto"]
        if not body["has_more"]:
            break
    for pk in ids:
        one = selectors.get_message_for_user(user=user, conversation_id=chat.pk, message_id=pk)
        pages.append(json.dumps(wire.message_payload(one)).encode())
    return pages


@pytest.fixture
def chat(ana: User, bo: User, cy: User) -> Conversation:
    return services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])


def busy_history(client_for: Client, chat: Conversation, ana: User, bo: User) -> dict[str, Any]:
    """Forty messages with every feature a payload shows: replies, reactions, edits,
    deletes, mentions, a file, a system line, one message Bo deleted for himself."""
    made: dict[str, Any] = {}
    picture = upload(client_for(ana), png(), "pic.png").json()
    made["file"] = services.send_message(
        sender=ana,
        conversation_id=chat.pk,
        client_msg_id=uuid.uuid4(),
        body="a picture",
        attachment_ids=[picture["id"]],
    ).message
    made["attachment_id"] = picture["id"]
    first = say(ana, chat, "first words, ünïcödé and emoji 🎉")
    for n in range(30):
        sender = ana if n % 2 else bo
        said = say(sender, chat, f"message {n} @bo" if n % 5 == 0 else f"message {n}")
        if n == 3:
            made["hidden"] = said
    made["quoted"] = say(bo, chat, "reply to the first", reply_to=first.pk)
    services.react(user=bo, conversation_id=chat.pk, message_id=first.pk, emoji="👍")
    services.edit_message(user=ana, conversation_id=chat.pk, message_id=first.pk, body="edited")
    gone = say(ana, chat, "to be deleted")
    services.delete_message(user=ana, conversation_id=chat.pk, message_id=gone.pk)
    services.update_group(actor=ana, conversation_id=chat.pk, description="Our team")
    services.hide_message(user=bo, conversation_id=chat.pk, message_id=made["hidden"].pk)
    made["first"] = first
    return made


def test_every_page_reads_the_same_bytes_before_and_after_archiving(
    store: str, client_for: Client, chat: Conversation, ana: User, bo: User
) -> None:
    """Tried: a conversation of ~45 messages of every kind is archived but its newest
    five, in segments of 7; every `before` page, every `after` page and every message
    alone reads byte for byte as it did from the table, for a member and for one who
    deleted a message for himself."""
    made = busy_history(client_for, chat, ana, bo)
    age_all(chat, 40)
    newest = list(Message.objects.filter(conversation=chat).order_by("-seq")[:5])
    Message.objects.filter(pk__in=[m.pk for m in newest]).update(created_at=timezone.now())
    total = Message.objects.filter(conversation=chat).count()
    readers = {"ana": (client_for(ana), ana), "bo": (client_for(bo), bo)}
    before = {name: history(*reader, chat) for name, reader in readers.items()}
    before_small = history(*readers["bo"], chat, limit=3)

    moved = run_archive(chat)

    chat.refresh_from_db()
    assert moved == total - 5
    assert Message.objects.filter(conversation=chat).count() == 5
    segments = list(ArchiveSegment.objects.filter(conversation=chat).order_by("first_seq"))
    assert [s.count for s in segments] == [7] * (moved // 7) + ([moved % 7] if moved % 7 else [])
    assert chat.archived_through_seq == segments[-1].last_seq == newest[-1].seq - 1
    for segment in segments:  # what is stored is what was recorded
        data = archive._read(segment.key)
        assert hashlib.sha256(data).hexdigest() == segment.sha256 and len(data) == segment.size
        lines = gzip.decompress(data).decode().splitlines()
        assert json.loads(lines[0])["count"] == segment.count == len(lines) - 1
    archive.cache.clear()

    after = {name: history(*reader, chat) for name, reader in readers.items()}
    assert after == before
    assert history(*readers["bo"], chat, limit=3) == before_small
    # The hidden message is in the archive, and still hidden from Bo only.
    assert made["hidden"].pk in archive.find(chat.pk, [made["hidden"].pk])
    assert b'"message 3"' in b"".join(after["ana"][:9])
    assert b'"message 3"' not in b"".join(after["bo"][:9])


def test_archived_messages_are_read_only_but_can_be_quoted_and_their_files_fetched(
    store: str, client_for: Client, chat: Conversation, ana: User, bo: User, cy: User
) -> None:
    """Tried: an edit, a delete, a reaction and a report of an archived message answer
    409 `message_archived` and change nothing; hiding it for oneself works; a reply to
    it works and shows its
    preview; the archived message's file still downloads for members, not for others;
    housekeeping keeps it."""
    made = busy_history(client_for, chat, ana, bo)
    age_all(chat, 40)
    run_archive(chat)
    first, url = made["first"], f"/api/v1/conversations/{chat.pk}/messages"
    client = client_for(ana)
    segments = list(ArchiveSegment.objects.values_list("key", "sha256"))

    tries = [
        client.patch(f"{url}/{first.pk}", {"body": "again"}, format="json"),
        client.delete(f"{url}/{first.pk}"),
        client.put(f"{url}/{first.pk}/reactions/%F0%9F%91%8D"),
        client_for(bo).post(f"{url}/{first.pk}/report", {"reason": "spam"}, format="json"),
    ]
    for response in tries:
        assert response.status_code == 409, response.content
        assert error_code(response) == "message_archived"
    assert list(ArchiveSegment.objects.values_list("key", "sha256")) == segments
    # Not found stays not found.
    assert client.patch(f"{url}/99999999", {"body": "x"}, format="json").status_code == 404
    # Deleting it for yourself works: it is yours to hide, on your devices.
    hidden = client_for(cy).post(f"{url}/{first.pk}/hide")
    assert hidden.status_code in (200, 201), hidden.content
    pages = client_for(cy).get(url, {"limit": 200}).json()["messages"]
    assert first.pk not in [m["id"] for m in pages]
    assert first.pk in [m["id"] for m in client.get(url, {"limit": 200}).json()["messages"]]

    reply = say(cy, chat, "answering an old one", reply_to=first.pk)
    payload = wire.message_payload(
        selectors.get_message_for_user(user=cy, conversation_id=chat.pk, message_id=reply.pk)
    )
    assert payload["reply_to"] == {
        "id": first.pk,
        "seq": first.seq,
        "sender": ana.pk,
        "preview": "edited",
        "deleted": False,
    }

    assert ArchivedAttachment.objects.filter(attachment_id=made["attachment_id"]).exists()
    response, data = download(client_for(bo), made["attachment_id"])
    assert response.status_code == 200 and data == png()
    stranger = User.objects.create_user(username="zed", password="pw-zed-123456")
    response, _ = download(client_for(stranger), made["attachment_id"])
    assert response.status_code == 404
    call_command("housekeeping", stdout=io.StringIO())
    response, data = download(client_for(bo), made["attachment_id"])
    assert response.status_code == 200 and data == png()


def test_a_flipped_byte_in_storage_is_caught_before_any_row_is_deleted(
    store: str, settings: Any, chat: Conversation, ana: User
) -> None:
    """Tried: the storage changes one byte of what it stores. The archiver reads the
    segment back, sees the SHA-256 differ, deletes the object and stops: every message
    is still in the table, no segment is recorded, no object is left."""
    if store == "folder":
        settings.STORAGES["archive"]["BACKEND"] = "tests.api.test_archive.FlippingStorage"
    else:
        settings.STORAGES["archive"]["BACKEND"] = "tests.api.test_archive.FlippingS3Storage"
    settings.STORAGES = {**settings.STORAGES}  # tell the storages handler
    for n in range(10):
        say(ana, chat, f"message {n}")
    age_all(chat, 40)
    count = Message.objects.filter(conversation=chat).count()

    with pytest.raises(archive.ArchiveError, match="read back differs"):
        run_archive(chat)

    assert Message.objects.filter(conversation=chat).count() == count
    assert not ArchiveSegment.objects.exists()
    chat.refresh_from_db()
    assert chat.archived_through_seq == 0
    try:
        _folders, left = archive.storage().listdir(str(chat.pk))
    except FileNotFoundError:
        left = []
    assert left == []


def test_a_corrupted_segment_is_refused_on_read(
    settings: Any, tmp_path: Path, client_for: Client, chat: Conversation, ana: User
) -> None:
    """Tried: a segment's stored bytes change after it was archived. Reading that part of
    history answers 503 `archive_unavailable`; the newer messages still read."""
    settings.ARCHIVE_SEGMENT_MESSAGES = 5
    use_archive_folder(settings, tmp_path / "archive")
    for n in range(10):
        say(ana, chat, f"message {n}")
    age_all(chat, 40)
    fresh = say(ana, chat, "fresh")
    run_archive(chat)
    segment = ArchiveSegment.objects.order_by("first_seq").first()
    assert segment is not None
    path = tmp_path / "archive" / segment.key
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    url = f"/api/v1/conversations/{chat.pk}/messages"

    response = client_for(ana).get(url, {"before": segment.last_seq + 1})
    assert response.status_code == 503, response.content
    assert error_code(response) == "archive_unavailable"
    response = client_for(ana).get(url, {"limit": 1})
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["messages"]] == [fresh.pk]


def test_a_run_stopped_before_its_commit_leaves_nothing_behind_and_the_next_resumes(
    store: str, chat: Conversation, ana: User
) -> None:
    """Tried: a segment is written and its transaction never commits (what a killed run
    leaves: an object no segment records). The next run deletes that object, then
    archives every message exactly once."""
    from django.db import transaction

    for n in range(20):
        say(ana, chat, f"message {n}")
    age_all(chat, 40)
    ids = set(Message.objects.filter(conversation=chat).values_list("pk", flat=True))
    with pytest.raises(RuntimeError), transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=chat.pk)
        rows = [
            archive.row_of(m, [])
            for m in Message.objects.filter(conversation=chat).order_by("seq")[:5]
        ]
        left = archive.write_segment(locked, rows).key
        raise RuntimeError("killed")
    assert archive.storage().exists(left)
    assert not ArchiveSegment.objects.exists()

    run_archive(chat)

    assert not archive.storage().exists(left)
    _folders, names = archive.storage().listdir(str(chat.pk))
    keys = sorted(ArchiveSegment.objects.values_list("key", flat=True))
    assert sorted(f"{chat.pk}/{name}" for name in names) == keys
    archived = [
        row["id"]
        for s in ArchiveSegment.objects.order_by("first_seq")
        for row in archive.segment_rows(s)
    ]
    assert len(archived) == len(set(archived)) and set(archived) == ids


def test_retention_purges_archived_messages_too_and_cuts_a_segment_in_two(
    store: str,
    settings: Any,
    chat: Conversation,
    ana: User,
    bo: User,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Tried: messages 100 to 40 days old are archived; a 60-day retention then removes
    the archived ones older than 60 days, writing the segment that straddles the cut
    again without them; pages show the rest and the notice."""
    settings.DELETE_AFTER_DAYS = 60
    Conversation.objects.filter(pk=chat.pk).update(created_at=timezone.now() - 100 * DAY)
    Message.objects.filter(conversation=chat).update(created_at=timezone.now() - 100 * DAY)
    made = []
    for n in range(20):
        message = say(ana, chat, f"day {100 - 3 * n}")
        Message.objects.filter(pk=message.pk).update(
            created_at=timezone.now() - (100 - 3 * n) * DAY
        )
        made.append(message)
    run_archive(chat)
    assert not Message.objects.filter(pk__in=[m.pk for m in made]).exists()
    archived = sum(ArchiveSegment.objects.values_list("count", flat=True))
    expected_kept = [m for n, m in enumerate(made) if 100 - 3 * n < 60]

    with django_capture_on_commit_callbacks(execute=True):
        removed = services.purge_expired(conversation_id=chat.pk, now=timezone.now())

    chat.refresh_from_db()
    kept_rows = [
        row
        for s in ArchiveSegment.objects.filter(conversation=chat)
        for row in archive.segment_rows(s)
    ]
    assert sorted(row["id"] for row in kept_rows) == [m.pk for m in expected_kept]
    assert removed == archived - len(kept_rows) == chat.purged_count
    _folders, names = archive.storage().listdir(str(chat.pk))
    keys = sorted(ArchiveSegment.objects.values_list("key", flat=True))
    assert sorted(f"{chat.pk}/{name}" for name in names) == keys
    shown = selectors.list_messages_for_user(user=bo, conversation_id=chat.pk, limit=100)
    bodies = [m.body for m in shown.messages]
    assert bodies[: len(expected_kept)] == [m.body for m in expected_kept]
    assert "removed by the retention policy" in bodies[-1]


def test_the_command_counts_moves_and_reports_progress(
    store: str, chat: Conversation, ana: User, capsys: Any
) -> None:
    """Tried: `archive` without a setting (a clear error), `--dry-run` (counts, moves
    nothing), then a run with progress lines; a second run finds nothing to do."""
    for n in range(15):
        say(ana, chat, f"message {n}")
    age_all(chat, 40)
    count = Message.objects.filter(conversation=chat).count()
    with pytest.raises(CommandError, match="ARCHIVE_AFTER_DAYS"):
        call_command("archive")

    call_command("archive", "--older-than", "30", "--dry-run")
    assert f"would archive {count} messages in 1 conversations" in capsys.readouterr().out
    assert Message.objects.filter(conversation=chat).count() == count

    call_command("archive", "--older-than", "30")
    out = capsys.readouterr().out
    assert f"archiving {count} messages in 1 conversations" in out
    assert f"  {count}/{count} messages (100%)" in out
    assert f"archived {count} messages in 1 conversations" in out
    assert not Message.objects.filter(conversation=chat).exists()

    call_command("archive", "--older-than", "30")
    assert "archiving 0 messages in 0 conversations" in capsys.readouterr().out


def test_the_segment_format_round_trips_and_is_deterministic(chat: Conversation, ana: User) -> None:
    """Tried: the same rows encode to the same bytes; decode gives the rows back; a
    segment whose header count disagrees with its lines is refused."""
    for n in range(3):
        say(ana, chat, f"message {n}")
    rows = [archive.row_of(m, []) for m in Message.objects.filter(conversation=chat)]
    assert archive.encode(chat.pk, rows) == archive.encode(chat.pk, rows)
    assert archive.decode(archive.encode(chat.pk, rows)) == rows
    short = gzip.decompress(archive.encode(chat.pk, rows)).splitlines()[:-1]
    with pytest.raises(ValueError, match="fewer rows"):
        archive.decode(gzip.compress(b"\n".join(short)))


def test_export_import_export_carries_the_archive_and_a_user_gets_their_archived_messages(
    settings: Any, tmp_path: Path, client_for: Client, chat: Conversation, ana: User, bo: User
) -> None:
    """Tried: a site with an archived conversation is exported, the database and the
    archive folder emptied, the export imported and exported again: the two exports are
    the same bytes (segments included) and every page reads as before. Bo's own download
    holds the messages he sent that are archived."""
    settings.ARCHIVE_SEGMENT_MESSAGES = 7
    use_archive_folder(settings, tmp_path / "archive")
    busy_history(client_for, chat, ana, bo)
    age_all(chat, 40)
    run_archive(chat)
    sent_by_bo = {
        row["body"]
        for s in ArchiveSegment.objects.all()
        for row in archive.segment_rows(s)
        if row["sender"] == bo.pk
    }
    assert len(sent_by_bo) > 10
    before = history(client_for(bo), bo, chat)
    first, second = tmp_path / "first", tmp_path / "second"
    call_command("export", str(first), stdout=io.StringIO())
    manifest = json.loads((first / "manifest.json").read_text())
    assert sorted(manifest["archive"]) == sorted(
        ArchiveSegment.objects.values_list("key", flat=True)
    )

    Message.objects.all().delete()
    Conversation.objects.all().delete()
    User.objects.all().delete()
    shutil.rmtree(tmp_path / "archive")
    archive.cache.clear()
    out = io.StringIO()
    call_command("import", str(first), stdout=out)
    assert f"archive segments: {len(manifest['archive'])}/" in out.getvalue()
    call_command("export", str(second), stdout=io.StringIO())

    def tree(folder: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }

    assert tree(first) == tree(second)
    bo = User.objects.get(username="bo")
    assert history(client_for(bo), bo, Conversation.objects.get(pk=chat.pk)) == before

    mine = tmp_path / "mine"
    portability.export_to_folder(portability.user_scope(bo.pk), mine)
    rows = [json.loads(line) for line in (mine / "data.jsonl").read_text().splitlines()]
    bodies = {r["fields"]["body"] for r in rows if r["model"] == "messaging.message"}
    assert sent_by_bo <= bodies


def test_search_finds_archived_messages_after_the_table_s_own(
    store: str, client_for: Client, chat: Conversation, ana: User, bo: User, cy: User
) -> None:
    """Tried: "harbour" is in archived messages and in one new message: the new one comes
    first (word match), then the archived ones newest first, across pages by the
    cursor; deleted, hidden and other people's conversations' archived messages are not
    found; a member who joined later does not find what came before."""
    for n in range(12):
        say(ana, chat, f"the harbour trip {n}" if n % 3 == 0 else f"something else {n}")
    gone = say(ana, chat, "harbour deleted")
    services.delete_message(user=ana, conversation_id=chat.pk, message_id=gone.pk)
    hidden = say(ana, chat, "harbour hidden from bo")
    services.hide_message(user=bo, conversation_id=chat.pk, message_id=hidden.pk)
    other = services.create_group(creator=cy, title="Other", member_ids=[ana.pk])
    say(cy, other, "harbour elsewhere")
    age_all(chat, 40)
    age_all(other, 40)
    run_archive(chat)
    run_archive(other)
    fresh = say(ana, chat, "harbour today")

    def search(user: User, **params: Any) -> Any:
        response = client_for(user).get("/api/v1/search", {"q": "harbour", **params})
        assert response.status_code == 200, response.content
        return response.json()

    first = search(bo, limit=3)
    ids = [hit["message"]["id"] for hit in first["results"]]
    assert ids[0] == fresh.pk
    response = client_for(bo).get(first["next"])
    assert response.status_code == 200, response.content
    rest = response.json()
    bodies = [hit["message"]["body"] for hit in first["results"] + rest["results"]]
    assert bodies == [
        "harbour today",
        "the harbour trip 9",
        "the harbour trip 6",
        "the harbour trip 3",
        "the harbour trip 0",
    ]
    assert rest["next"] is None
    assert "<mark>harbour</mark>" in rest["results"][0]["snippet"]
    # Ana sees the one she did not hide, and the other group's (she is a member there).
    mine = [hit["message"]["body"] for hit in search(ana, limit=20)["results"]]
    assert "harbour hidden from bo" in mine and "harbour elsewhere" in mine
    assert "harbour deleted" not in mine
    # Someone added later reads from their joining on: nothing before, archived or not.
    dee = User.objects.create_user(username="dee", password="pw-dee-123456")
    services.add_members(actor=ana, conversation_id=chat.pk, user_ids=[dee.pk])
    assert search(dee)["results"] == []


def test_staff_read_archived_messages_in_the_admin(
    store: str, admin_client: Any, chat: Conversation, ana: User
) -> None:
    """Tried: the conversation's admin page counts its archived messages and links to its
    segments; a segment's page shows its messages read back from storage (escaped); the
    admin offers no way to change or delete a segment."""
    for n in range(9):
        say(ana, chat, f"<b>old</b> message {n}")
    age_all(chat, 40)
    run_archive(chat)
    segments = list(ArchiveSegment.objects.filter(conversation=chat).order_by("first_seq"))
    total = sum(s.count for s in segments)

    page = admin_client.get(reverse("admin:messaging_conversation_change", args=[chat.pk]))
    assert page.status_code == 200
    assert f"{total} messages archived in {len(segments)} segments" in page.content.decode()
    listing = admin_client.get(
        reverse("admin:messaging_archivesegment_changelist"), {"q": str(chat.pk)}
    )
    assert {s.pk for s in listing.context["cl"].result_list} == {s.pk for s in segments}

    last = segments[-1]
    page = admin_client.get(reverse("admin:messaging_archivesegment_change", args=[last.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "&lt;b&gt;old&lt;/b&gt; message 8" in body and "<b>old</b>" not in body
    assert 'name="_save"' not in body and "deletelink" not in body
    assert (
        admin_client.post(reverse("admin:messaging_archivesegment_delete", args=[last.pk]))
    ).status_code == 403
    assert ArchiveSegment.objects.filter(pk=last.pk).exists()


def test_beat_runs_the_archive_task_only_when_archiving_is_on(
    store: str, settings: Any, chat: Conversation, ana: User
) -> None:
    """Tried: the beat entry's task with ARCHIVE_AFTER_DAYS unset (nothing moves), then
    set to 30 (the old messages move, the new one stays)."""
    entry = settings.CELERY_BEAT_SCHEDULE["archive"]
    for n in range(5):
        say(ana, chat, f"old {n}")
    age_all(chat, 40)
    fresh = say(ana, chat, "fresh")
    settings.ARCHIVE_AFTER_DAYS = 0
    celery_app.tasks[entry["task"]].apply()
    assert not ArchiveSegment.objects.exists()

    settings.ARCHIVE_AFTER_DAYS = 30
    celery_app.tasks[entry["task"]].apply()
    assert list(Message.objects.filter(conversation=chat)) == [fresh]
    assert sum(ArchiveSegment.objects.values_list("count", flat=True)) >= 5
