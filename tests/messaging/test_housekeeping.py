"""Housekeeping: uploads nobody sent, files of deleted messages, expired tokens, sessions
and spent revocations are deleted; nothing a message or a live login needs is touched."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from PIL import Image
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import tokens
from accounts.models import RevokedTokenFamily, User
from chatsite.celery import app as celery_app
from chatsite.errors import DomainError
from messaging import attachments, housekeeping, services
from messaging.models import Attachment, Conversation, Message
from messaging.tasks import housekeeping_task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CHAT_ORPHAN_UPLOAD_HOURS = 24


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(out, format="PNG")
    return out.getvalue()


def upload(user: User, *, hours_ago: float = 0) -> Attachment:
    """Store a PNG as the upload endpoint does, with its thumbnail, `hours_ago` old."""
    attachment = attachments.store_attachment(
        uploader=user, upload=SimpleUploadedFile("cat.png", png(), content_type="image/png")
    )
    assert attachments.make_thumbnail(attachment.pk) == Attachment.Thumbnail.READY
    Attachment.objects.filter(pk=attachment.pk).update(
        created_at=timezone.now() - timedelta(hours=hours_ago)
    )
    return Attachment.objects.get(pk=attachment.pk)


def files_of(attachment: Attachment) -> list[Path]:
    paths = [Path(attachment.file.path), Path(attachment.thumbnail.path)]
    assert all(path.exists() for path in paths)
    return paths


def send(user: User, chat: Conversation, attachment_ids: list[int]) -> Message:
    return services.send_message(
        sender=user,
        conversation_id=chat.pk,
        client_msg_id=uuid.uuid4(),
        body="look",
        attachment_ids=attachment_ids,
    ).message


@pytest.fixture
def chat(ana: User, bo: User) -> Conversation:
    return services.create_group(creator=ana, title="Pets", member_ids=[bo.pk])


def test_an_upload_nobody_sent_goes_after_the_limit_with_its_files(
    ana: User, chat: Conversation, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    old = upload(ana, hours_ago=25)
    fresh = upload(ana, hours_ago=23)
    sent = upload(ana, hours_ago=48)
    send(ana, chat, [sent.pk])
    old_files, fresh_files, sent_files = files_of(old), files_of(fresh), files_of(sent)

    assert housekeeping.discard_orphan_uploads(now=timezone.now(), dry_run=True) == 1
    assert Attachment.objects.filter(pk=old.pk).exists()  # a dry run deletes nothing

    with django_capture_on_commit_callbacks(execute=True) as on_commit:
        assert housekeeping.discard_orphan_uploads(now=timezone.now()) == 1
        assert all(path.exists() for path in old_files)  # the files go on commit
    assert len(on_commit) == 1
    assert not Attachment.objects.filter(pk=old.pk).exists()
    assert not any(path.exists() for path in old_files)
    assert Attachment.objects.filter(pk__in=[fresh.pk, sent.pk]).count() == 2
    assert all(path.exists() for path in fresh_files + sent_files)


def test_a_message_deleted_for_everyone_takes_its_files_unless_another_holds_them(
    ana: User, chat: Conversation, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    own, shared = upload(ana), upload(ana)
    first = send(ana, chat, [own.pk, shared.pk])
    send(ana, chat, [shared.pk])
    own_files, shared_files = files_of(own), files_of(shared)

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_message(user=ana, conversation_id=chat.pk, message_id=first.pk)

    assert not Attachment.objects.filter(pk=own.pk).exists()
    assert not any(path.exists() for path in own_files)
    assert Attachment.objects.filter(pk=shared.pk).exists()
    assert all(path.exists() for path in shared_files)


def test_staff_deleting_a_message_also_removes_its_files(
    ana: User,
    chat: Conversation,
    make_user: Callable[..., User],
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    attachment = upload(ana)
    message = send(ana, chat, [attachment.pk])
    paths = files_of(attachment)
    staff = make_user(is_staff=True)
    with django_capture_on_commit_callbacks(execute=True):
        services.moderate_delete_message(staff=staff, message_id=message.pk)
    assert not Attachment.objects.filter(pk=attachment.pk).exists()
    assert not any(path.exists() for path in paths)


@pytest.mark.django_db(transaction=True)
def test_a_send_holding_an_upload_keeps_it_from_the_cleanup(ana: User, chat: Conversation) -> None:
    """Tried: the clean-up runs while a send has locked the upload's row (it is attaching
    it): the clean-up passes over it, and the file stays with the message."""
    attachment = upload(ana, hours_ago=30)
    locked, release = threading.Event(), threading.Event()

    def sending() -> None:
        try:
            with transaction.atomic():
                assert list(housekeeping.lock_for_send(ana, [attachment.pk])) == [attachment.pk]
                locked.set()
                release.wait(10)
                Message.attachments.through.objects.create(
                    message_id=send(ana, chat, []).pk, attachment_id=attachment.pk
                )
        finally:
            connection.close()

    thread = threading.Thread(target=sending)
    thread.start()
    assert locked.wait(10)
    try:
        assert housekeeping.discard_orphan_uploads(now=timezone.now()) == 0
    finally:
        release.set()
        thread.join(10)
    assert housekeeping.discard_orphan_uploads(now=timezone.now()) == 0
    assert Attachment.objects.filter(pk=attachment.pk, messages__isnull=False).exists()
    assert all(path.exists() for path in files_of(attachment))


@pytest.mark.django_db(transaction=True)
def test_a_send_waiting_on_an_upload_the_cleanup_deleted_is_refused_and_stores_nothing(
    ana: User, chat: Conversation
) -> None:
    """Tried: the clean-up holds the upload's row and deletes it while a send that already
    checked the upload waits to attach it: the send answers a clear 400, no message."""
    attachment = upload(ana, hours_ago=30)
    locked, release = threading.Event(), threading.Event()

    def cleanup() -> None:
        try:
            with transaction.atomic():
                Attachment.objects.select_for_update().get(pk=attachment.pk)
                locked.set()
                release.wait(10)
                Attachment.objects.filter(pk=attachment.pk).delete()
        finally:
            connection.close()

    thread = threading.Thread(target=cleanup)
    thread.start()
    assert locked.wait(10)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    before = Message.objects.filter(conversation=chat).count()
    with pytest.raises(DomainError) as refused:
        send(ana, chat, [attachment.pk])
    thread.join(10)
    timer.cancel()
    assert refused.value.http_status == 400
    assert "upload them again" in str(refused.value)
    assert Message.objects.filter(conversation=chat).count() == before


def test_expired_token_records_go_and_live_ones_stay(ana: User) -> None:
    live = RefreshToken.for_user(ana)
    expired = RefreshToken.for_user(ana)
    expired.blacklist()
    OutstandingToken.objects.filter(jti=expired["jti"]).update(
        expires_at=timezone.now() - timedelta(hours=2)
    )
    now = timezone.now()
    assert housekeeping.run(now=now, dry_run=True)["expired_tokens"] == 1
    assert housekeeping.run(now=now)["expired_tokens"] == 1
    assert not OutstandingToken.objects.filter(jti=expired["jti"]).exists()
    assert not BlacklistedToken.objects.exists()
    assert OutstandingToken.objects.filter(jti=live["jti"]).exists()


def test_expired_sessions_go_and_live_ones_stay() -> None:
    live, expired = SessionStore(), SessionStore()
    live.create()
    expired.create()
    Session.objects.filter(session_key=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    assert housekeeping.run(now=timezone.now())["expired_sessions"] == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_a_revoked_family_stays_while_any_of_its_tokens_could_be_presented(
    ana: User, settings: Any
) -> None:
    spent = tokens.issue_pair(ana)
    recent = tokens.issue_pair(ana)
    tokens.revoke(spent["refresh"], ana)
    tokens.revoke(recent["refresh"], ana)
    lifetime = settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"]
    spent_family = tokens.family_of(RefreshToken(spent["refresh"], verify=False))  # type: ignore[arg-type]
    RevokedTokenFamily.objects.filter(family=spent_family).update(
        revoked_at=timezone.now() - lifetime - timedelta(hours=2)
    )
    # Just inside the lifetime (and the clock margin): kept.
    RevokedTokenFamily.objects.exclude(family=spent_family).update(
        revoked_at=timezone.now() - lifetime
    )
    assert housekeeping.run(now=timezone.now())["spent_token_families"] == 1
    assert list(RevokedTokenFamily.objects.values_list("family", flat=True)) == [
        tokens.family_of(RefreshToken(recent["refresh"], verify=False))  # type: ignore[arg-type]
    ]


def test_the_command_prints_each_step_and_a_dry_run_deletes_nothing(ana: User) -> None:
    old = upload(ana, hours_ago=30)
    out = io.StringIO()
    call_command("housekeeping", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == [
        "expired tokens: would delete 0",
        "expired sessions: would delete 0",
        "spent token families: would delete 0",
        "credential changes: would delete 0",
        "orphan uploads: would delete 1",
    ]
    assert Attachment.objects.filter(pk=old.pk).exists()
    out = io.StringIO()
    call_command("housekeeping", stdout=out)
    assert "orphan uploads: deleted 1" in out.getvalue()
    assert not Attachment.objects.filter(pk=old.pk).exists()


def test_beat_runs_the_housekeeping_task(ana: User, settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["housekeeping"]
    assert entry["task"] == housekeeping_task.name
    old = upload(ana, hours_ago=30)
    celery_app.tasks[entry["task"]].apply()
    assert not Attachment.objects.filter(pk=old.pk).exists()
