"""Replies: a message quotes another of its conversation; the payload shows it as it is now."""

import uuid
from typing import Any

import pytest

from accounts.models import User
from messaging import selectors, services, wire
from messaging.errors import BadRequest, Conflict, NotAMember
from messaging.models import Conversation, Message

pytestmark = pytest.mark.django_db


def send(user: User, conversation: Conversation, body: str = "hello", **extra: Any) -> Message:
    return services.send_message(
        sender=user,
        conversation_id=conversation.pk,
        client_msg_id=extra.pop("client_msg_id", uuid.uuid4()),
        body=body,
        **extra,
    ).message


def test_a_reply_carries_the_sender_and_the_first_100_characters_of_what_it_quotes(
    ana: User, bo: User
) -> None:
    group = services.create_group(creator=ana, title="Trip", member_ids=[bo.pk])
    question = send(ana, group, "Which day suits you? " + "x" * 200)

    answer = send(bo, group, "Friday", reply_to=question.pk)

    assert answer.reply_to_id == question.pk
    shown = wire.message_payload(answer)["reply_to"]
    assert shown == {
        "id": question.pk,
        "seq": question.seq,
        "sender": ana.pk,
        "preview": question.body[:100],
        "deleted": False,
    }
    # The same when read back in a page (one query for all quoted messages).
    page = selectors.list_messages_for_user(user=ana, conversation_id=group.pk, after=0)
    assert [wire.message_payload(m)["reply_to"] for m in page.messages][-2:] == [None, shown]


def test_a_reply_shows_the_quoted_message_as_it_is_now_edited_or_deleted(
    ana: User, bo: User
) -> None:
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    first = send(ana, conversation, "see you at 8")
    reply = send(bo, conversation, "ok", reply_to=first.pk)

    services.edit_message(
        user=ana, conversation_id=conversation.pk, message_id=first.pk, body="see you at 9"
    )
    page = selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, after=0)
    edited = next(m for m in page.messages if m.pk == reply.pk)
    quote = wire.message_payload(edited)["reply_to"]
    assert quote is not None and quote["preview"] == "see you at 9"

    services.delete_message(user=ana, conversation_id=conversation.pk, message_id=first.pk)
    page = selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, after=0)
    gone = next(m for m in page.messages if m.pk == reply.pk)
    assert wire.message_payload(gone)["reply_to"] == {
        "id": first.pk,
        "seq": first.seq,
        "sender": ana.pk,
        "preview": "",
        "deleted": True,
    }
    # A deleted reply shows nothing of what it quoted.
    services.delete_message(user=bo, conversation_id=conversation.pk, message_id=reply.pk)
    assert wire.message_payload(Message.objects.get(pk=reply.pk))["reply_to"] is None


def test_a_reply_to_a_message_that_is_gone_says_so(ana: User, bo: User) -> None:
    """A quoted row removed from the table (a purge) shows as deleted, without a seq."""
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    first = send(ana, conversation, "old news")
    reply = send(bo, conversation, "indeed", reply_to=first.pk)
    Message.objects.filter(conversation=conversation, pk=first.pk).delete()

    assert wire.message_payload(Message.objects.get(pk=reply.pk))["reply_to"] == {
        "id": first.pk,
        "seq": None,
        "sender": None,
        "preview": "",
        "deleted": True,
    }


def test_only_a_visible_text_message_of_the_same_conversation_can_be_quoted(
    ana: User, bo: User, cy: User
) -> None:
    """Tried: another conversation's message, a system line, a deleted message, a missing
    id, and a message from before the sender joined a private group."""
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    before_cy = send(ana, group, "before Cy came")
    services.add_members(actor=ana, conversation_id=group.pk, user_ids=[cy.pk])
    other = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    elsewhere = send(ana, other, "elsewhere")
    system_line = Message.objects.get(conversation=group, seq=1)
    deleted = send(ana, group, "oops")
    services.delete_message(user=ana, conversation_id=group.pk, message_id=deleted.pk)
    stored_before = Message.objects.filter(conversation=group).count()

    for who, target in (
        (bo, elsewhere.pk),
        (bo, system_line.pk),
        (bo, deleted.pk),
        (bo, 10**12),
        (cy, before_cy.pk),
    ):
        with pytest.raises(BadRequest) as refused:
            send(who, group, "re", reply_to=target)
        assert refused.value.details == {"field": "reply_to"}

    assert Message.objects.filter(conversation=group).count() == stored_before


def test_a_non_member_learns_only_that_it_is_not_a_member(ana: User, bo: User, cy: User) -> None:
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    first = send(ana, conversation, "private")

    with pytest.raises(NotAMember):
        send(cy, conversation, "re", reply_to=first.pk)
    with pytest.raises(NotAMember):
        send(cy, conversation, "re", reply_to=10**12)


def test_a_retry_is_a_replay_and_the_same_id_quoting_another_message_is_a_conflict(
    ana: User, bo: User
) -> None:
    conversation = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    one, two = send(ana, conversation, "one"), send(ana, conversation, "two")
    cmid = uuid.uuid4()
    reply = send(bo, conversation, "this one", reply_to=one.pk, client_msg_id=cmid)

    again = send(bo, conversation, "this one", reply_to=one.pk, client_msg_id=cmid)
    with pytest.raises(Conflict):
        send(bo, conversation, "this one", reply_to=two.pk, client_msg_id=cmid)
    with pytest.raises(Conflict):
        send(bo, conversation, "this one", client_msg_id=cmid)

    assert again.pk == reply.pk
    assert Message.objects.filter(conversation=conversation, sender=bo).count() == 1
