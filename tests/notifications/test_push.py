"""Sending what the decisions left pending, in process, to a real local Web Push service.

The service (tests/e2e/pushservice.py) checks the VAPID signature and decrypts every push
with the subscription's own private key, as a browser's push service and browser would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import User
from messaging import devices, services
from messaging.models import (
    Conversation,
    Device,
    Message,
    Notification,
    NotificationDue,
    PushWindow,
)
from messaging.notifications import decide, sending
from tests.e2e.pushservice import Answer, PushService, vapid_keypair

pytestmark = pytest.mark.django_db


@pytest.fixture
def push(settings: Any) -> Iterator[PushService]:
    public, private = vapid_keypair()
    with PushService(public, vapid_private=private) as service:
        settings.WEBPUSH_VAPID_PUBLIC_KEY = public
        settings.WEBPUSH_VAPID_PRIVATE_KEY = private
        settings.WEBPUSH_VAPID_SUBJECT = "mailto:ops@example.org"
        settings.PUSH_ENDPOINT_ALLOW = [service.origin]
        settings.NOTIFY_PUSH_DELAY = 10
        settings.CHAT_SEND_BURST = 1000
        yield service


def subscribe(push: PushService, user: User, name: str) -> Device:
    device, _ = devices.register_device(
        user=user, platform="webpush", subscription=push.subscribe(name), name=name
    )
    return device


def send(user: User, conversation: Conversation, body: str) -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


def decide_now() -> None:
    """Let every message's delay be over and decide (the tick's first half)."""
    NotificationDue.objects.filter(due_at__gt=timezone.now()).update(due_at=timezone.now())
    decide.decide_due_messages(now=timezone.now())


def send_due() -> list[int]:
    """Claim and send every window due now (the tick's second half and its tasks)."""
    windows = sending.claim_due_windows(now=timezone.now())
    for window_id in windows:
        sending.send_push_window(window_id)
    return windows


def run_worker() -> list[int]:
    """Do what the tick and its tasks do for everything due now; return the windows sent."""
    decide_now()
    return send_due()


def rows(user: User) -> list[tuple[str, str, str]]:
    return list(
        Notification.objects.filter(user=user)
        .order_by("seq", "kind", "device_key")
        .values_list("message__body", "decision", "reason")
    )


def test_a_push_is_encrypted_signed_and_carries_what_the_device_shows(
    push: PushService, make_user: Any
) -> None:
    ana = make_user("ana", display_name="Ana Lima")
    bo = make_user("bo", display_name="Bo")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = subscribe(push, bo, "bo-laptop")
    message = send(ana, chat, "Lunch at 12:30?")

    run_worker()

    (delivery,) = push.deliveries("bo-laptop")
    assert delivery.payload == {
        "type": "message",
        "conversation": chat.pk,
        "seq": message.seq,
        "message_id": message.pk,
        "sender": {"id": ana.pk, "display_name": "Ana Lima"},
        "title": "Ana Lima",
        "body": "Lunch at 12:30?",
        "unread": 1,
        "url": f"/#c{chat.pk}",
    }
    assert (delivery.topic, delivery.urgency) == (f"c{chat.pk}", "high")
    assert delivery.ttl > 0
    assert push.rejections == []
    row = Notification.objects.get(user=bo, device=laptop)
    assert (row.decision, row.provider_status, row.attempts) == ("sent", "201", 1)
    assert row.latency_ms is not None
    laptop.refresh_from_db()
    assert laptop.last_used_at is not None


def test_a_group_push_is_titled_with_the_group_and_long_bodies_are_cut(
    push: PushService, ana: User, bo: User
) -> None:
    group = services.create_group(creator=ana, title="Book club", member_ids=[bo.pk])
    subscribe(push, bo, "bo")
    send(ana, group, "x" * 500)

    run_worker()

    payload = push.deliveries("bo")[0].payload
    assert payload["title"] == "Book club"
    assert len(payload["body"]) == 200 and payload["body"].endswith("…")


def test_a_burst_is_one_push_with_the_newest_message_and_the_unread_count(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "bo")
    for body in ("one", "two", "three"):
        send(ana, chat, body)

    run_worker()

    (delivery,) = push.deliveries("bo")
    assert (delivery.payload["body"], delivery.payload["unread"]) == ("three", 3)
    assert rows(bo) == [
        ("one", "suppressed", "coalesced"),
        ("two", "suppressed", "coalesced"),
        ("three", "sent", ""),
    ]


def test_a_message_after_a_push_waits_for_the_window_to_end(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "bo")
    send(ana, chat, "first")
    run_worker()
    window = PushWindow.objects.get(user=bo, conversation=chat)
    assert window.pushed_at is not None

    send(ana, chat, "second")
    assert run_worker() == []  # decided, but the window that pushed "first" is still open

    window.refresh_from_db()
    assert window.due_at is not None
    assert (window.due_at - window.pushed_at).total_seconds() == pytest.approx(10)
    PushWindow.objects.filter(pk=window.pk).update(due_at=timezone.now())
    run_worker()
    assert [d.payload["body"] for d in push.deliveries("bo")] == ["first", "second"]
    assert [d["body"] for d in push.shown("bo")] == ["second"]  # the same Topic: replaced


def test_reading_on_another_device_takes_the_push_back(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "bo-phone")
    subscribe(push, bo, "bo-laptop")
    message = send(ana, chat, "are you there?")
    run_worker()
    assert len(push.deliveries()) == 2

    services.mark_read(user=bo, conversation_id=chat.pk, seq=message.seq)
    run_worker()

    removals = [d for d in push.deliveries() if d.payload["type"] == "remove"]
    assert sorted(d.name for d in removals) == ["bo-laptop", "bo-phone"]
    for removal in removals:
        assert removal.payload == {"type": "remove", "conversation": chat.pk, "up_to_seq": 1}
        assert (removal.topic, removal.urgency) == (f"c{chat.pk}", "normal")
    assert Notification.objects.filter(user=bo, kind="remove", decision="sent").count() == 2
    window = PushWindow.objects.get(user=bo, conversation=chat)
    assert (window.removed_seq, window.remove_due_at) == (1, None)
    # Reading again changes nothing: no second removal.
    services.mark_read(user=bo, conversation_id=chat.pk, seq=message.seq)
    run_worker()
    assert len(push.deliveries()) == 4


def test_a_delivery_receipt_leaves_the_push_and_only_reading_takes_it_back(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "bo-phone")
    first = send(ana, chat, "one")
    second = send(ana, chat, "two")
    run_worker()
    assert len(push.deliveries()) == 1  # one push for the window, carrying "two"

    # A device got both messages (delivered) but nobody has read them: the push stays
    services.mark_delivered(user=bo, conversation_id=chat.pk, seq=second.seq)
    run_worker()
    assert [d.payload["type"] for d in push.deliveries()] == ["message"]
    assert PushWindow.objects.get(user=bo, conversation=chat).remove_due_at is None

    # Reading the first only leaves the push of the second
    services.mark_read(user=bo, conversation_id=chat.pk, seq=first.seq)
    run_worker()
    assert [d.payload["type"] for d in push.deliveries()] == ["message"]

    # Reading the second takes it back, in the same write as the marker
    services.mark_read(user=bo, conversation_id=chat.pk, seq=second.seq)
    assert PushWindow.objects.get(user=bo, conversation=chat).remove_due_at is not None
    run_worker()
    removals = [d.payload for d in push.deliveries() if d.payload["type"] == "remove"]
    assert removals == [{"type": "remove", "conversation": chat.pk, "up_to_seq": second.seq}]


def test_a_read_before_the_push_means_no_push_and_no_removal(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "bo")
    message = send(ana, chat, "hi")
    decide_now()
    services.mark_read(user=bo, conversation_id=chat.pk, seq=message.seq)

    send_due()

    assert push.attempts == []
    assert rows(bo) == [("hi", "suppressed", "read")]


def test_a_gone_subscription_deletes_the_device(push: PushService, ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    gone = subscribe(push, bo, "old-laptop")
    kept = subscribe(push, bo, "phone")
    push.script("old-laptop", 410)
    send(ana, chat, "hi")

    run_worker()

    assert list(Device.objects.filter(user=bo)) == [kept]
    failed = Notification.objects.get(user=bo, device_key=gone.pk)
    assert (failed.decision, failed.reason, failed.provider_status) == ("failed", "gone", "410")
    assert Notification.objects.get(user=bo, device=kept).decision == "sent"


def test_a_busy_push_service_is_retried_after_its_retry_after(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "patient")
    push.script("patient", Answer(429, retry_after=7), 503, 201)
    send(ana, chat, "hi")

    run_worker()
    window = PushWindow.objects.get(user=bo, conversation=chat)
    assert window.due_at is not None
    assert 5 < (window.due_at - timezone.now()).total_seconds() <= 7  # Retry-After: 7
    assert send_due() == []  # not before then
    for _ in range(2):
        PushWindow.objects.filter(pk=window.pk).update(due_at=timezone.now())
        send_due()

    row = Notification.objects.get(user=bo)
    assert (row.decision, row.attempts, row.provider_status) == ("sent", 3, "201")
    assert [a.status for a in push.attempts] == [429, 503, 201]
    assert len(push.deliveries("patient")) == 1


def test_a_failing_push_service_is_tried_four_times_in_all_then_given_up(
    push: PushService, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "hopeless")
    push.script("hopeless", 500, 500, 500, 500, 201)
    send(ana, chat, "hi")

    run_worker()
    for _ in range(5):
        PushWindow.objects.filter(user=bo).update(due_at=timezone.now())
        send_due()

    row = Notification.objects.get(user=bo)
    assert (row.decision, row.reason, row.attempts) == ("failed", "provider_error", 4)
    assert [a.status for a in push.attempts] == [500, 500, 500, 500]
    assert PushWindow.objects.get(user=bo).due_at is None
    assert Device.objects.filter(user=bo).exists()  # a sick service is not a gone device


def test_without_a_vapid_key_web_push_is_a_provider_error(
    push: PushService, ana: User, bo: User, settings: Any
) -> None:
    settings.WEBPUSH_VAPID_PRIVATE_KEY = ""
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    subscribe(push, bo, "bo")
    send(ana, chat, "hi")

    run_worker()

    row = Notification.objects.get(user=bo)
    assert (row.decision, row.reason) == ("failed", "provider_error")
    assert "WEBPUSH_VAPID_PRIVATE_KEY" in row.provider_status
    assert push.attempts == []


def test_a_member_who_left_before_the_push_is_not_notified(
    push: PushService, ana: User, bo: User
) -> None:
    group = services.create_group(creator=ana, title="G", member_ids=[bo.pk])
    subscribe(push, bo, "bo")
    send(ana, group, "hi")
    decide_now()
    services.leave_conversation(user=bo, conversation_id=group.pk)

    send_due()

    assert push.attempts == []
    assert rows(bo) == [("hi", "suppressed", "left")]
