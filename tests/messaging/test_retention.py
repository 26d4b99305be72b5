"""Retention: messages older than a conversation's retention are deleted in log order;
one notice says why history ends and tells every device how far it was cut."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from chatsite.celery import app as celery_app
from messaging import attachments, selectors, services, wire
from messaging.models import Attachment, Conversation, Message
from tests.conftest import Listener

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def _settings(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DELETE_AFTER_DAYS = 30


def group(creator: User, title: str, member: User, **fields: Any) -> Conversation:
    """A group made 100 days ago (its first system lines too)."""
    chat = services.create_group(creator=creator, title=title, member_ids=[member.pk])
    long_ago = timezone.now() - 100 * DAY
    Conversation.objects.filter(pk=chat.pk).update(created_at=long_ago, **fields)
    Message.objects.filter(conversation=chat).update(created_at=long_ago)
    chat.refresh_from_db()
    return chat


@pytest.fixture
def chat(ana: User, bo: User) -> Conversation:
    return group(ana, "Team", bo)


def say(user: User, chat: Conversation, body: str, *, age: timedelta = timedelta(0), **kw: Any):
    message = services.send_message(
        sender=user, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body=body, **kw
    ).message
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - age)
    return message


def notice_of(chat: Conversation) -> Message:
    assert chat.retention_notice_id is not None
    return Message.objects.get(pk=chat.retention_notice_id)


def page(user: User, chat: Conversation, **kw: Any) -> list[Message]:
    return selectors.list_messages_for_user(user=user, conversation_id=chat.pk, **kw).messages


def purge(chat: Conversation, on_commit: Callable[..., Any], now: datetime | None = None) -> int:
    with on_commit(execute=True):
        return services.purge_expired(conversation_id=chat.pk, now=now or timezone.now())


def test_old_messages_go_in_log_order_and_a_notice_says_why(
    ana: User, bo: User, chat: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    old = [say(ana, chat, f"old {n}", age=40 * DAY) for n in range(3)]
    new = say(bo, chat, "new", age=29 * DAY)
    activity = Conversation.objects.get(pk=chat.pk).last_activity_at

    assert purge(chat, django_capture_on_commit_callbacks) == 3 + 1  # the "created" line too

    chat.refresh_from_db()
    assert not Message.objects.filter(pk__in=[m.pk for m in old]).exists()
    notice = notice_of(chat)
    assert notice.kind == Message.Kind.SYSTEM
    assert notice.body == "Messages older than 30 days are removed by the retention policy."
    assert notice.system == {"event": "retention", "users": [], "days": 30, "through_seq": 4}
    assert chat.purged_through_seq == new.seq - 1 == 4
    assert chat.purged_count == 4
    assert chat.purged_at is not None
    # The notice does not bring the conversation to the top of anyone's list.
    assert chat.last_activity_at == activity
    assert [m.pk for m in page(bo, chat)] == [new.pk, notice.pk]


def test_each_later_purge_updates_the_one_notice_with_a_new_version(
    ana: User, bo: User, chat: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    say(ana, chat, "old", age=40 * DAY)
    later = say(ana, chat, "later", age=20 * DAY)
    purge(chat, django_capture_on_commit_callbacks)
    chat.refresh_from_db()
    notice = notice_of(chat)
    cursor = chat.last_seq

    # Eleven days on, "later" is past 30 days too; the notice itself is never removed.
    assert purge(chat, django_capture_on_commit_callbacks, timezone.now() + 11 * DAY) == 1
    chat.refresh_from_db()
    assert not Message.objects.filter(pk=later.pk).exists()
    updated = Message.objects.get(pk=notice.pk)
    assert updated.seq == notice.seq
    assert updated.version > notice.version
    # Everything up to the log's end but the notice is gone: the cut passes the notice.
    assert updated.system is not None
    assert updated.system["through_seq"] == chat.purged_through_seq == notice.seq
    assert Message.objects.filter(conversation=chat, system__event="retention").count() == 1
    # A device that synced before the second purge learns the new cut by `after=`.
    assert [m.pk for m in page(bo, chat, after=cursor)] == [notice.pk]


def test_a_conversation_may_keep_everything_or_less_than_the_site(
    ana: User,
    bo: User,
    cy: User,
    chat: Conversation,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    keep = group(ana, "Archive", bo, retention_days=0)
    kept = say(ana, keep, "kept forever", age=400 * DAY)
    short = group(ana, "Scratch", cy, retention_days=2)
    gone = say(ana, short, "three days old", age=3 * DAY)
    settings.DELETE_AFTER_DAYS = 0  # the site keeps everything
    chat_message = say(ana, chat, "site default", age=400 * DAY)

    now = timezone.now()
    assert list(services.conversations_with_retention(now)) == [short.pk]
    with django_capture_on_commit_callbacks(execute=True):
        celery_app.tasks["messaging.tasks.retention_task"].apply()

    assert Message.objects.filter(pk__in=[kept.pk, chat_message.pk]).count() == 2
    assert not Message.objects.filter(pk=gone.pk).exists()
    short.refresh_from_db()
    assert notice_of(short).body == (
        "Messages older than 2 days are removed by the retention policy."
    )


def test_files_of_removed_messages_go_and_replies_show_the_quote_as_gone(
    ana: User, bo: User, chat: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    upload = attachments.store_attachment(
        uploader=ana, upload=SimpleUploadedFile("a.txt", b"hello there", content_type="text/plain")
    )
    path = Path(upload.file.path)
    quoted = say(ana, chat, "with a file", age=40 * DAY, attachment_ids=[upload.pk])
    reply = say(bo, chat, "a reply", reply_to=quoted.pk)

    purge(chat, django_capture_on_commit_callbacks)

    assert not Attachment.objects.filter(pk=upload.pk).exists()
    assert not path.exists()
    shown = next(m for m in page(bo, chat) if m.pk == reply.pk)
    quote = wire.message_payload(shown).get("reply_to")
    assert quote is not None and quote["deleted"] is True


def test_unread_messages_removed_stop_counting_and_the_notice_never_counts(
    ana: User, bo: User, chat: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    for n in range(3):
        say(ana, chat, f"unread {n}", age=40 * DAY)
    say(ana, chat, "fresh")
    assert selectors.get_conversation_for_user(user=bo, conversation_id=chat.pk).unread == 4
    purge(chat, django_capture_on_commit_callbacks)
    assert selectors.get_conversation_for_user(user=bo, conversation_id=chat.pk).unread == 1


def test_members_hear_the_notice_live_then_its_update(
    ana: User, chat: Conversation, listener: Listener, django_capture_on_commit_callbacks: Any
) -> None:
    say(ana, chat, "old", age=40 * DAY)
    listener.join(f"conv.{chat.pk}")
    purge(chat, django_capture_on_commit_callbacks)
    created = listener.receive()["frame"]
    assert created["type"] == "message.created"
    assert created["message"]["system"]["event"] == "retention"
    say(ana, chat, "later", age=35 * DAY)
    purge(chat, django_capture_on_commit_callbacks)
    updated = listener.receive()["frame"]
    assert updated["type"] == "message.updated"
    assert updated["message"]["id"] == created["message"]["id"]
    assert updated["message"]["system"]["through_seq"] > created["message"]["system"]["through_seq"]


def test_the_command_reports_each_conversation_and_a_dry_run_deletes_nothing(
    ana: User, chat: Conversation
) -> None:
    say(ana, chat, "old", age=40 * DAY)
    before = Message.objects.filter(conversation=chat).count()
    out = io.StringIO()
    call_command("retention", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == [
        f"conversation {chat.pk}: would remove 2 messages",
        "would remove 2 messages in 1 conversations",
    ]
    assert Message.objects.filter(conversation=chat).count() == before
    out = io.StringIO()
    call_command("retention", "--conversation", str(chat.pk), stdout=out)
    assert out.getvalue().splitlines()[-1] == "removed 2 messages in 1 conversations"
    with pytest.raises(CommandError, match="There is no conversation 999999"):
        call_command("retention", "--conversation", "999999")


def test_staff_set_a_conversation_retention_and_see_what_it_removed(
    admin_client: Client, ana: User, chat: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    say(ana, chat, "old", age=40 * DAY)
    purge(chat, django_capture_on_commit_callbacks)
    change = admin_client.get(reverse("admin:messaging_conversation_change", args=[chat.pk]))
    assert "Purged count" in change.content.decode()
    changelist = reverse("admin:messaging_conversation_changelist")

    def act(**form: str) -> Any:
        return admin_client.post(
            changelist, {"action": "set_retention", "_selected_action": [chat.pk], **form}
        )

    asked = act()
    assert "Days of messages to keep" in asked.content.decode()
    # Tried: a negative number and a word; the form says why, nothing changes.
    for bad, why in (("-3", "Retention is 0"), ("a week", "whole number")):
        refused = act(post="yes", retention_days=bad)
        assert refused.status_code == 200 and why in refused.content.decode()
        chat.refresh_from_db()
        assert chat.retention_days is None
    assert act(post="yes", retention_days="7").status_code == 302
    chat.refresh_from_db()
    assert chat.retention_days == 7
    act(post="yes", retention_days="")
    chat.refresh_from_db()
    assert chat.retention_days is None
