"""Events: payloads are JSON-safe; broadcasts reach the real channel layer on commit only."""

import json
import uuid
from typing import Any

import pytest
from django.db import transaction

from accounts.models import User
from messaging import events, selectors, services, wire
from messaging.models import Message
from tests.conftest import Listener
from tests.wirecheck import check_frame


@pytest.mark.django_db
def test_every_event_builder_round_trips_through_json(ana: User, bo: User) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    message = services.send_message(
        sender=ana, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="héllo <b>"
    ).message
    system = Message.objects.get(conversation=group, seq=1)
    view = selectors.get_conversation_for_user(user=bo, conversation_id=group.pk)
    members = [
        wire.member_payload(m) for m in selectors.list_members(user=bo, conversation_id=group.pk)
    ]

    built: list[Any] = [
        wire.message_created_frame(message),
        wire.message_updated_frame(message),
        wire.message_created_frame(system),
        wire.receipt_updated_frame(
            conversation_id=group.pk, user_id=bo.pk, delivered_seq=2, read_seq=1
        ),
        wire.conversation_updated_frame(wire.conversation_payload(view, members), "joined"),
    ]

    for frame in built:
        assert json.loads(json.dumps(frame)) == frame
        check_frame(frame)
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
    assert (event["type"], event["conversation"]) == ("conv.event", conversation.pk)
    assert event["member_seq"] == 0  # direct conversations have no membership changes
    assert event["frame"] == wire.message_created_frame(sent.message)


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
    services.accept_request(user=bo, conversation_id=conversation.pk)  # strangers: a request
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

    edited, receipt, deleted = (listener.receive()["frame"] for _ in range(3))
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
    }
    assert (deleted["message"]["version"], deleted["message"]["deleted"]) == (3, True)


@pytest.mark.django_db(transaction=True)
def test_membership_changes_reach_the_users_own_group(
    ana: User, bo: User, listener: Listener
) -> None:
    listener.join(events.user_group(bo.pk))

    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)

    created_event, removed_event = listener.receive(), listener.receive()
    assert (created_event["type"], created_event["conversation"]) == ("user.event", group.pk)
    assert (created_event["member_seq"], removed_event["member_seq"]) == (1, 2)
    created, removed = created_event["frame"], removed_event["frame"]
    assert created["type"] == "conversation.updated" and created["reason"] == "created"
    assert created["conversation"]["id"] == group.pk
    assert created["conversation"]["last_seq"] == 1
    assert created["conversation"]["unread"] == 0 and created["conversation"]["read_seq"] == 1
    assert created["conversation"]["role"] == "member"  # bo; ana is the owner
    # A departure is told what every member may see of the conversation.
    assert removed == {
        "type": "conversation.updated",
        "conversation": {
            "id": group.pk,
            "kind": "group",
            "title": "Team",
            "public": False,
            "last_seq": 2,
            "description": "",
            "picture_url": None,
            "post_policy": "everyone",
        },
        "reason": "removed",
    }


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
