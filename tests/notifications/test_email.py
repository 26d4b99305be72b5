"""Missed-message emails: one per member per window, what is still unread, one-click off."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from email import message_from_bytes, policy
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone

from accounts.models import User
from messaging import services
from messaging.models import EmailDigest, Message, Notification
from messaging.notifications import decide, sending

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _email_settings(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.SITE_URL = "https://chat.example.org"
    settings.CHAT_SEND_BURST = 1000


def send(user: User, conversation_id: int, body: str) -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation_id, client_msg_id=uuid.uuid4(), body=body
    ).message


def run_email_window(user: User) -> None:
    """Decide what is due, make the user's email due now, and send it (as the worker does)."""
    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))
    EmailDigest.objects.filter(user=user).update(due_at=timezone.now())
    assert sending.claim_due_digests(now=timezone.now()) == [user.pk]
    sending.send_email_digest(user.pk)


def test_one_email_lists_the_unread_messages_by_conversation_with_one_click_unsubscribe(
    make_user: Callable[..., User],
) -> None:
    ana = make_user("ana", display_name="Ana Lima")
    cy = make_user("cy", display_name="Cy Park")
    bo = make_user("bo", display_name="Bo", email="bo@example.org")
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=cy, title="Book <club>", member_ids=[bo.pk])
    first = send(ana, direct.pk, "Lunch at 12:30?")
    send(cy, group.pk, "Chapter 3 for Friday <b>please</b>")
    read = send(ana, direct.pk, "(already read)")
    services.mark_read(user=bo, conversation_id=direct.pk, seq=first.seq - 1)

    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))
    # Bo read the last direct message (and so the first) on his phone before the email.
    services.mark_read(user=bo, conversation_id=direct.pk, seq=read.seq)
    send(ana, direct.pk, "Still there?")
    run_email_window(bo)

    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == ["bo@example.org"]
    assert email.subject == "2 unread messages"
    parsed = message_from_bytes(email.message().as_bytes(), policy=policy.default)
    unsubscribe = str(parsed["List-Unsubscribe"]).strip()  # long: folded onto a new line
    assert unsubscribe.startswith("<https://chat.example.org/notifications/unsubscribe/")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = email.body
    assert "Chapter 3 for Friday <b>please</b>" in text  # plain text: as written
    assert "Still there?" in text and "Book <club>" in text
    assert "Lunch at 12:30?" not in text and "(already read)" not in text
    assert isinstance(email, EmailMultiAlternatives)
    html = str(email.alternatives[0][0])
    assert "Chapter 3 for Friday &lt;b&gt;please&lt;/b&gt;" in html  # escaped in HTML
    assert f"https://chat.example.org/#c{group.pk}" in html
    # The trace says what happened to each message's email.
    decisions = dict(
        Notification.objects.filter(user=bo, channel="email").values_list(
            "message__body", "decision"
        )
    )
    assert decisions["Lunch at 12:30?"] == "suppressed"
    assert decisions["Chapter 3 for Friday <b>please</b>"] == "sent"


def test_no_email_when_everything_was_read_in_time(ana: User, make_user: Any) -> None:
    bo = make_user("bo2", email="bo@example.org")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    message = send(ana, chat.pk, "hi")
    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))
    services.mark_read(user=bo, conversation_id=chat.pk, seq=message.seq)

    run_email_window(bo)

    assert mail.outbox == []
    row = Notification.objects.get(user=bo, channel="email")
    assert (row.decision, row.reason) == ("suppressed", "read")
    assert EmailDigest.objects.get(user=bo).due_at is None


def test_at_most_twenty_messages_are_shown_then_a_count(ana: User, make_user: Any) -> None:
    bo = make_user("bo3", email="bo@example.org")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for n in range(23):
        send(ana, chat.pk, f"message number {n:02d}")

    run_email_window(bo)

    body = mail.outbox[0].body
    assert "message number 19" in body and "message number 20" not in body
    assert "... and 3 more." in body
    assert mail.outbox[0].subject == "23 unread messages from Ana"


def test_emails_off_or_no_address_means_no_email_row(ana: User, make_user: Any) -> None:
    off = make_user("off", email="off@example.org", email_notifications=False)
    none = make_user("none")
    group = services.create_group(creator=ana, title="G", member_ids=[off.pk, none.pk])
    send(ana, group.pk, "hello")

    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))

    assert not Notification.objects.filter(channel="email").exists()
    assert not EmailDigest.objects.exists()


def test_the_next_email_waits_a_whole_window(ana: User, make_user: Any, settings: Any) -> None:
    settings.NOTIFY_EMAIL_DELAY = 300
    bo = make_user("bo4", email="bo@example.org")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat.pk, "one")
    run_email_window(bo)
    sent_at = EmailDigest.objects.get(user=bo).sent_at
    assert sent_at is not None

    send(ana, chat.pk, "two")
    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))

    digest = EmailDigest.objects.get(user=bo)
    assert digest.due_at is not None and digest.due_at >= sent_at + timedelta(seconds=300)
