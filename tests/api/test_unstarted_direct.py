"""A direct chat is listed for the other person only once its first message arrives."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from accounts.models import User
from messaging import selectors, services, wire

pytestmark = pytest.mark.django_db


def listed(user: User) -> list[int]:
    return [view.id for view in wire.shown(selectors.list_conversations_for_user(user=user))]


def test_the_other_person_sees_a_direct_chat_with_its_first_message(
    ana: User, bo: User, client_for: Any
) -> None:
    # Tried: Ana opens a chat with Bo; the REST list, the sync list (`sync.state`) and
    # the app's bootstrap show it to Ana only (Bo's gateway still follows it). Ana's
    # first message lists it for Bo everywhere. Before, Bo saw the empty chat at once.
    chat, created = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    assert created
    assert listed(ana) == [chat.pk] and listed(bo) == []
    all_of_bo = selectors.list_conversations_for_user(user=bo)
    assert [(v.id, v.hidden) for v in all_of_bo] == [(chat.pk, True)]  # followed, not shown
    assert wire.sync_state_frame(None, all_of_bo)["conversations"] == []
    rest = client_for(bo).get("/api/v1/conversations").json()["results"]
    assert rest == []
    assert client_for(ana).get("/api/v1/conversations").json()["results"][0]["id"] == chat.pk

    services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="hi Bo"
    )
    assert listed(bo) == [chat.pk]
    rest = client_for(bo).get("/api/v1/conversations").json()["results"]
    assert [(c["id"], c["unread"]) for c in rest] == [(chat.pk, 1)]


def test_a_direct_chat_both_opened_is_listed_for_both_at_once(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    again, created = services.create_direct_conversation(user=bo, other_user_id=ana.pk)
    assert again.pk == chat.pk and not created
    assert listed(ana) == [chat.pk] and listed(bo) == [chat.pk]


def test_accepting_a_request_before_its_first_message_lists_it(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=chat.pk)
    assert listed(bo) == [chat.pk]
