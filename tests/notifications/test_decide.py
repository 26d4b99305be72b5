"""Deciding who is notified of a message once its delay is over (PostgreSQL, in process)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from accounts.models import User
from messaging import services
from messaging.errors import NotAMember
from messaging.models import (
    Conversation,
    Device,
    EmailDigest,
    Message,
    Notification,
    NotificationDue,
    NotifyLevel,
    PushWindow,
)
from messaging.notifications import decide

pytestmark = pytest.mark.django_db

LATER = timedelta(hours=1)


def send(user: User, conversation: Conversation, body: str = "hello") -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


def device_for(user: User, n: int = 1, platform: str = "fcm") -> Device:
    return Device.objects.create(user=user, platform=platform, token=f"tok-{user.pk}-{n}" * 3)


def decide_all() -> int:
    return decide.decide_due_messages(now=timezone.now() + LATER)


def trace(user: User, message: Message) -> list[tuple[str, str, str]]:
    return sorted(
        Notification.objects.filter(user=user, message=message).values_list(
            "channel", "decision", "reason"
        )
    )


def test_a_send_writes_its_due_row_in_the_same_transaction(
    ana: User, bo: User, cy: User, settings: Any
) -> None:
    settings.NOTIFY_PUSH_DELAY = 7.5
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    message = send(ana, chat)

    due = NotificationDue.objects.get(message=message)
    assert due.due_at - message.created_at == timedelta(seconds=7.5)
    # A refused send (not a member) rolls back: no message, no due row.
    with pytest.raises(NotAMember):
        send(cy, chat)
    assert NotificationDue.objects.count() == 1
    # A replay stores nothing new, so nothing more is due.
    assert message.client_msg_id is not None
    services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=message.client_msg_id, body="hello"
    )
    assert NotificationDue.objects.count() == 1


def test_nothing_is_due_when_notifications_are_off(ana: User, bo: User, settings: Any) -> None:
    settings.NOTIFY_ENABLED = False
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat)
    assert not NotificationDue.objects.exists()


def test_nothing_is_decided_before_the_delay_is_over(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    message = send(ana, chat)

    assert decide.decide_due_messages(now=timezone.now()) == 0
    assert NotificationDue.objects.filter(message=message).exists()
    assert decide_all() == 1
    assert not NotificationDue.objects.exists()


def test_each_rule_suppresses_with_its_reason_and_the_rest_are_pending(
    make_user: Callable[..., User],
) -> None:
    ana = make_user("ana", display_name="Ana")
    names = ["reader", "onliner", "muter", "silent", "picky", "named", "busy", "bare", "phone"]
    people = {n: make_user(n) for n in names}
    people["mailer"] = make_user("mailer", email="mailer@example.org")
    group = services.create_group(
        creator=ana, title="Everyone", member_ids=[u.pk for u in people.values()]
    )
    for name in ("reader", "onliner", "muter", "silent", "picky", "named", "busy", "phone"):
        device_for(people[name])
    services.set_muted(user=people["muter"], conversation_id=group.pk, muted=True)
    services.set_notify_level(
        user=people["silent"], conversation_id=group.pk, level=NotifyLevel.NONE
    )
    services.set_notify_level(
        user=people["picky"], conversation_id=group.pk, level=NotifyLevel.MENTIONS
    )
    services.set_notify_level(
        user=people["named"], conversation_id=group.pk, level=NotifyLevel.MENTIONS
    )
    User.objects.filter(pk=people["busy"].pk).update(status=User.Status.BUSY)

    message = send(ana, group, "lunch, @named?")
    services.mark_read(user=people["reader"], conversation_id=group.pk, seq=message.seq)
    services.mark_delivered(user=people["onliner"], conversation_id=group.pk, seq=message.seq)
    decide_all()

    expected = {
        "reader": [("fcm", "suppressed", "read")],
        "onliner": [("fcm", "suppressed", "delivered")],
        "muter": [("fcm", "suppressed", "muted")],
        "silent": [("fcm", "suppressed", "level")],
        "picky": [("fcm", "suppressed", "level")],
        "named": [("fcm", "pending", "")],
        "busy": [("fcm", "suppressed", "busy")],
        "bare": [("push", "suppressed", "no_devices")],
        "phone": [("fcm", "pending", "")],
        "mailer": [("email", "pending", ""), ("push", "suppressed", "no_devices")],
    }
    assert {n: trace(u, message) for n, u in people.items()} == expected
    assert trace(ana, message) == []  # the sender is never notified
    windows = PushWindow.objects.filter(conversation=group, due_at__isnull=False)
    assert {w.user_id for w in windows} == {people["named"].pk, people["phone"].pk}
    assert EmailDigest.objects.get(user=people["mailer"]).due_at == message.created_at + timedelta(
        seconds=300
    )


def test_read_comes_first_when_several_reasons_apply(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    device_for(bo)
    services.set_muted(user=bo, conversation_id=chat.pk, muted=True)
    User.objects.filter(pk=bo.pk).update(status=User.Status.BUSY)
    message = send(ana, chat)
    services.mark_read(user=bo, conversation_id=chat.pk, seq=message.seq)  # raises delivered too

    decide_all()

    assert trace(bo, message) == [("fcm", "suppressed", "read")]


def test_a_busy_status_that_ended_before_the_decision_does_not_suppress(
    ana: User, bo: User, cy: User
) -> None:
    # Tried: Bo is busy until 10 minutes from now, Cy until 2 hours from now; the message
    # is decided an hour later (LATER), when Bo's busy status has ended and Cy's has not.
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    device_for(bo)
    device_for(cy)
    now = timezone.now()
    User.objects.filter(pk=bo.pk).update(
        status=User.Status.BUSY, status_until=now + timedelta(minutes=10)
    )
    User.objects.filter(pk=cy.pk).update(
        status=User.Status.BUSY, status_until=now + timedelta(hours=2)
    )
    message = send(ana, group)

    decide_all()

    assert trace(bo, message) == [("fcm", "pending", "")]
    assert trace(cy, message) == [("fcm", "suppressed", "busy")]


def test_a_message_deleted_during_the_delay_notifies_no_one(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    device_for(bo)
    message = send(ana, chat)
    services.delete_message(user=ana, conversation_id=chat.pk, message_id=message.pk)

    decide_all()

    assert trace(bo, message) == [("fcm", "suppressed", "deleted")]
    assert not PushWindow.objects.filter(user=bo, due_at__isnull=False).exists()


def test_one_pending_row_per_device_and_a_window_due_at_once(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    phone, laptop = device_for(bo, 1), device_for(bo, 2, platform="apns")
    message = send(ana, chat)
    now = timezone.now() + LATER

    decide.decide_due_messages(now=now)

    rows = Notification.objects.filter(user=bo, message=message).order_by("device_key")
    assert [(r.device_id, r.channel, r.decision) for r in rows] == [
        (phone.pk, "fcm", "pending"),
        (laptop.pk, "apns", "pending"),
    ]
    assert PushWindow.objects.get(user=bo, conversation=chat).due_at == now


def test_a_window_that_just_pushed_waits_for_its_end(ana: User, bo: User, settings: Any) -> None:
    settings.NOTIFY_PUSH_DELAY = 10
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    device_for(bo)
    pushed_at = timezone.now()
    PushWindow.objects.create(user=bo, conversation=chat, pushed_at=pushed_at, pushed_seq=1)
    send(ana, chat)
    NotificationDue.objects.update(due_at=pushed_at)

    decide.decide_due_messages(now=pushed_at + timedelta(seconds=3))

    window = PushWindow.objects.get(user=bo, conversation=chat)
    assert window.due_at == pushed_at + timedelta(seconds=10)


def test_deciding_twice_changes_nothing(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    device_for(bo)
    message = send(ana, chat)
    decide_all()
    before = list(Notification.objects.values_list("pk", "decision"))

    # A worker killed after deciding but before deleting the due row decides it again.
    NotificationDue.objects.create(message=message, due_at=timezone.now())
    decide_all()

    assert list(Notification.objects.values_list("pk", "decision")) == before


@pytest.mark.django_db(transaction=True)
def test_concurrent_deciders_take_disjoint_rows(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for _ in range(3):
        send(ana, chat)
    # Another worker holds the oldest due row (SKIP LOCKED passes over it).
    oldest = NotificationDue.objects.order_by("due_at").first()
    assert oldest is not None
    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            table = NotificationDue._meta.db_table
            cursor.execute(
                f"SELECT 1 FROM {table} WHERE message_id = %s FOR UPDATE",  # noqa: S608 - ours
                [oldest.pk],
            )
        assert decide_all() == 2
        assert list(NotificationDue.objects.values_list("pk", flat=True)) == [oldest.pk]
    finally:
        other.rollback()
        other.close()


def test_old_trace_rows_are_cleaned_up_but_pending_ones_kept(
    ana: User, bo: User, settings: Any
) -> None:
    from messaging.notifications import sending

    settings.NOTIFY_TRACE_DAYS = 30
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for n in range(7):
        send(ana, chat, f"m{n}")
    decide_all()
    rows = list(Notification.objects.order_by("pk"))
    assert len(rows) == 7
    old = timezone.now() - timedelta(days=31)
    Notification.objects.filter(pk__in=[r.pk for r in rows[:5]]).update(created_at=old)
    Notification.objects.filter(pk=rows[0].pk).update(decision="pending")

    deleted = sending.delete_old_notifications(now=timezone.now(), batch=2)

    assert deleted == 4
    assert list(Notification.objects.order_by("pk").values_list("pk", flat=True)) == [
        rows[0].pk,
        rows[5].pk,
        rows[6].pk,
    ]
