"""Events: payloads are JSON-safe; broadcasts reach the real channel layer on commit only."""

import json
import uuid

import pytest
from django.db import transaction

from accounts.models import User
from messaging import events, selectors, services
from messaging.models import Message
from tests.conftest import Listener


@pytest.mark.django_db
def test_every_event_builder_round_trips_through_json(ana: User, bo: User) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    message = services.send_message(
        sender=ana, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="héllo <b>"
    ).message
    system = Message.objects.get(conversation=group, seq=1)
    view = selectors.get_conversation_for_user(user=bo, conversation_id=group.pk)
    members = [
        events.member_payload(m) for m in selectors.list_members(user=bo, conversation_id=group.pk)
    ]

    built = [
        events.message_created_event(message),
        events.message_updated_event(message),
        events.message_created_event(system),
        events.receipt_updated_event(
            conversation_id=group.pk, user_id=bo.pk, delivered_seq=2, read_seq=1
        ),
        events.conversation_updated_event(events.conversation_payload(view, members), "joined"),
    ]

    for event in built:
        assert json.loads(json.dumps(event)) == event
    payload = built[0]["message"]
    assert payload["body"] == "héllo <b>"
    assert payload["created_at"].endswith("Z")
    assert payload["client_msg_id"] == str(message.client_msg_id)
    assert "system" not in payload
    assert built[2]["message"]["system"] == {
        "event": "created",
        "users": [ana.pk, bo.pk],
        "title": "Team",
    }
    assert built[4]["conversation"]["members"][0]["role"] == "owner"


@pytest.mark.django_db(transaction=True)
def test_message_is_broadcast_only_after_commit(ana: User, bo: User, listener: Listener) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = events.conversation_group(conversation.pk)
    listener.join(group)

    with transaction.atomic():
        sent = services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body="hi"
        )
        # Inside the transaction: a marker sent now arrives first, so nothing preceded it.
        marker = listener.mark(group)
        assert listener.receive() == marker

    event = listener.receive()
    assert event["type"] == "message.created"
    assert event["message"] == events.message_payload(sent.message)
    assert event["member_seq"] == 0  # direct conversations have no membership changes


@pytest.mark.django_db(transaction=True)
def test_rolled_back_send_broadcasts_nothing(ana: User, bo: User, listener: Listener) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = events.conversation_group(conversation.pk)
    listener.join(group)

    with pytest.raises(RuntimeError), transaction.atomic():
        services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body="hi"
        )
        raise RuntimeError("the caller's transaction fails after the send")

    marker = listener.mark(group)
    assert listener.receive() == marker
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_replay_broadcasts_nothing(ana: User, bo: User, listener: Listener) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = events.conversation_group(conversation.pk)
    cmid = uuid.uuid4()
    services.send_message(sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="x")
    listener.join(group)

    services.send_message(sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="x")

    marker = listener.mark(group)
    assert listener.receive() == marker


@pytest.mark.django_db(transaction=True)
def test_edit_delete_and_receipts_are_broadcast_to_the_conversation(
    ana: User, bo: User, listener: Listener
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    message = services.send_message(
        sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body="x"
    ).message
    listener.join(events.conversation_group(conversation.pk))

    services.edit_message(
        user=ana, conversation_id=conversation.pk, message_id=message.pk, body="y"
    )
    services.mark_read(user=bo, conversation_id=conversation.pk, seq=2)
    services.mark_read(user=bo, conversation_id=conversation.pk, seq=2)  # no change: no event
    services.delete_message(user=ana, conversation_id=conversation.pk, message_id=message.pk)

    edited, receipt, deleted = listener.receive(), listener.receive(), listener.receive()
    assert (edited["type"], edited["message"]["version"], edited["message"]["body"]) == (
        "message.updated",
        2,
        "y",
    )
    assert receipt == {
        "type": "receipt.updated",
        "conversation": conversation.pk,
        "user": bo.pk,
        "delivered_seq": 2,
        "read_seq": 2,
        "member_seq": 0,
    }
    assert (deleted["message"]["version"], deleted["message"]["deleted"]) == (3, True)


@pytest.mark.django_db(transaction=True)
def test_membership_changes_reach_the_users_own_group(
    ana: User, bo: User, listener: Listener
) -> None:
    listener.join(events.user_group(bo.pk))

    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)

    created, removed = listener.receive(), listener.receive()
    assert created["type"] == "conversation.updated" and created["reason"] == "created"
    assert created["conversation"]["id"] == group.pk
    assert created["conversation"]["last_seq"] == 1
    assert removed == {
        "type": "conversation.updated",
        "conversation": {"id": group.pk, "kind": "group"},
        "reason": "removed",
        "member_seq": 2,
    }
    assert created["member_seq"] == 1
    assert created["conversation"]["unread"] == 0 and created["conversation"]["read_seq"] == 1


@pytest.mark.django_db(transaction=True)
def test_send_succeeds_when_the_channel_layer_is_unreachable(
    ana: User, bo: User, settings, caplog: pytest.LogCaptureFixture
) -> None:
    from channels.layers import channel_layers

    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    # A Redis address where nothing listens (port 1 on loopback refuses at once).
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    channel_layers.backends.clear()
    try:
        result = services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body="hi"
        )
    finally:
        channel_layers.backends.clear()

    assert result.created and Message.objects.filter(pk=result.message.pk).exists()
    assert "fan-out of 1 event(s) failed" in caplog.text
