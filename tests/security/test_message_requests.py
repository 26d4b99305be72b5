"""Message requests: a stranger cannot learn your presence, receipts or typing by messaging you.

The finding: anyone could open a direct chat with anyone (201, no consent) or put up to
999 arbitrary people in a group, then subscribe to their presence and watch their read
receipts and typing. Now a direct chat from someone who is not a contact (contacts
share a conversation both have accepted), and a group add that the person's
`group_adds` setting does not allow, is a message request: the person may read it and
accept (or reply, which accepts) or decline; until then nothing of theirs is shared.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from chatsite.asgi import application
from messaging import selectors, services
from messaging.models import Conversation, Membership

pytestmark = pytest.mark.django_db(transaction=True)


def api(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user)['access']}")
    return client


def send(user: User, conversation: Conversation, body: str = "hi") -> None:
    services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    )


def pending(conversation: Conversation, user: User) -> bool:
    return not Membership.objects.get(conversation=conversation, user=user).accepted


def test_a_direct_chat_from_a_stranger_is_a_request_and_shares_nothing(ana: User, bo: User) -> None:
    """Tried: Mallory-Ana opens a chat with Bo, whom she does not know, and watches."""
    response = api(ana).post(
        "/api/v1/conversations", {"kind": "direct", "user": bo.pk}, format="json"
    )
    assert response.status_code == 201
    chat = Conversation.objects.get(pk=response.json()["id"])
    send(ana, chat, "hello stranger")
    services.mark_read(user=bo, conversation_id=chat.pk, seq=1)

    # Bo sees a request; Ana sees Bo as pending, with no read marker.
    assert api(bo).get(f"/api/v1/conversations/{chat.pk}").json()["request"] is True
    members = {
        m["id"]: m for m in api(ana).get(f"/api/v1/conversations/{chat.pk}").json()["members"]
    }
    assert members[bo.pk]["pending"] is True
    assert (members[bo.pk]["read_seq"], members[bo.pk]["delivered_seq"]) == (0, 0)
    assert api(ana).get(f"/api/v1/conversations/{chat.pk}").json()["request"] is False
    # Presence: neither sees the other.
    assert selectors.filter_visible_users(user=ana, user_ids=[bo.pk]) == set()
    assert selectors.filter_visible_users(user=bo, user_ids=[ana.pk]) == set()
    (entry,) = api(ana).get(f"/api/v1/presence?users={bo.pk}").json()["users"]
    assert (entry["state"], entry["last_seen"]) == ("offline", None)


def test_accepting_shares_presence_and_receipts_from_then_on(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat)

    answer = api(bo).post(f"/api/v1/conversations/{chat.pk}/accept")

    assert answer.status_code == 200 and answer.json()["request"] is False
    assert selectors.filter_visible_users(user=ana, user_ids=[bo.pk]) == {bo.pk}
    services.mark_read(user=bo, conversation_id=chat.pk, seq=1)
    members = {
        m["id"]: m for m in api(ana).get(f"/api/v1/conversations/{chat.pk}").json()["members"]
    }
    assert (members[bo.pk]["pending"], members[bo.pk]["read_seq"]) == (False, 1)
    # Accepting again changes nothing.
    assert api(bo).post(f"/api/v1/conversations/{chat.pk}/accept").status_code == 200


def test_replying_accepts(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat)

    send(bo, chat, "hi, who are you?")

    assert not pending(chat, bo)
    assert selectors.filter_visible_users(user=ana, user_ids=[bo.pk]) == {bo.pk}


def test_contacts_chat_without_a_request(ana: User, bo: User, cy: User) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    assert not pending(group, bo)  # group adds: everyone, by default

    chat, _ = services.create_direct_conversation(user=bo, other_user_id=ana.pk)
    stranger, _ = services.create_direct_conversation(user=bo, other_user_id=cy.pk)

    assert not pending(chat, ana)
    assert pending(stranger, cy)


def test_declining_leaves_and_the_requester_can_ask_again(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat, "buy my stuff")

    assert api(bo).post(f"/api/v1/conversations/{chat.pk}/decline").status_code == 204

    assert not Membership.objects.filter(conversation=chat, user=bo).exists()
    assert api(bo).get(f"/api/v1/conversations/{chat.pk}").status_code == 403
    send(ana, chat, "still there?")  # stored; Bo does not get it
    assert [c.id for c in selectors.list_conversations_for_user(user=bo)] == []
    # Opening the chat again asks again.
    again, created = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    assert (again.pk, created) == (chat.pk, False)
    assert pending(chat, bo)
    # Declining an accepted conversation is refused: that is leaving.
    services.accept_request(user=bo, conversation_id=chat.pk)
    refused = api(bo).post(f"/api/v1/conversations/{chat.pk}/decline")
    assert refused.status_code == 400
    assert pending(chat, bo) is False


@pytest.mark.parametrize(
    ("setting", "contact", "asked"),
    [
        ("everyone", False, False),
        ("contacts", True, False),
        ("contacts", False, True),
        ("nobody", True, True),
    ],
)
def test_group_adds_follow_the_persons_setting(
    make_user: Callable[..., User], setting: str, contact: bool, asked: bool
) -> None:
    """Tried: a stranger puts people in a group of 999 to watch them."""
    owner, person = make_user(), make_user()
    assert (
        api(person).patch("/api/v1/users/me", {"group_adds": setting}, format="json").status_code
        == 200
    )
    if contact:
        services.create_group(creator=person, title="Old friends", member_ids=[owner.pk])

    created = services.create_group(creator=owner, title="Watchers", member_ids=[person.pk])
    later = services.create_group(creator=owner, title="Watchers 2")
    services.add_members(actor=owner, conversation_id=later.pk, user_ids=[person.pk])

    assert pending(created, person) is asked
    assert pending(later, person) is asked


def test_a_bad_group_adds_value_is_refused(ana: User) -> None:
    response = api(ana).patch("/api/v1/users/me", {"group_adds": "strangers"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "group_adds"
    ana.refresh_from_db()
    assert ana.group_adds == "everyone"


def test_declining_a_group_request_logs_a_departure(ana: User, bo: User, settings: Any) -> None:
    User.objects.filter(pk=bo.pk).update(group_adds="nobody")
    bo.refresh_from_db()
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])

    services.decline_request(user=bo, conversation_id=group.pk)

    assert not Membership.objects.filter(conversation=group, user=bo).exists()
    assert group.messages.order_by("-seq").first().body == "Bo left."  # type: ignore[union-attr]


def test_a_pending_members_receipts_and_typing_reach_only_their_own_devices(
    ana: User, bo: User
) -> None:
    """Over the WebSocket: Bo reads and types in Ana's request; Ana's socket sees nothing."""
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat)

    access = {u.pk: tokens.issue_pair(u)["access"] for u in (ana, bo)}
    connection.close()  # the consumer's threads use their own connections

    def socket(user: User) -> WebsocketCommunicator:
        return WebsocketCommunicator(
            application,
            "/ws/v1/",
            headers=[(b"authorization", f"Bearer {access[user.pk]}".encode())],
        )

    async def frames_until_pong(ws: WebsocketCommunicator) -> list[dict[str, Any]]:
        await ws.send_to(text_data=json.dumps({"type": "ping", "ref": "p"}))
        seen: list[dict[str, Any]] = []
        while True:
            frame = json.loads(await ws.receive_from(5))
            if frame["type"] == "pong":
                return seen
            seen.append(frame)

    async def until(ws: WebsocketCommunicator, kind: str) -> dict[str, Any]:
        while True:
            frame = json.loads(await ws.receive_from(5))
            if frame["type"] == kind:
                return dict(frame)

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        a, b, b2 = socket(ana), socket(bo), socket(bo)
        for ws in (a, b, b2):
            assert (await ws.connect())[0]
            assert json.loads(await ws.receive_from(5))["type"] == "session.ready"
        await b.send_to(text_data=json.dumps({"type": "typing.start", "conversation": chat.pk}))
        await b.send_to(
            text_data=json.dumps({"type": "receipt.read", "conversation": chat.pk, "seq": 1})
        )
        # Bo's other device gets the receipt: it was written and published.
        own = await until(b2, "receipt.updated")
        # Ana, asked after it (a ping's round trip), got neither the receipt nor typing.
        at_ana = await frames_until_pong(a)

        # Bo accepts: Ana gets his markers, his devices the accepted view.
        def accept() -> None:
            try:
                services.accept_request(user=bo, conversation_id=chat.pk)
            finally:
                connection.close()

        await asyncio.get_running_loop().run_in_executor(None, accept)
        accepted = await until(b2, "conversation.updated")
        at_ana_after = await until(a, "receipt.updated")
        for ws in (a, b, b2):
            await ws.disconnect()
        return at_ana, own, {"accepted": accepted, "receipt": at_ana_after}

    at_ana, own, after = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert [f["type"] for f in at_ana] == []  # no receipt.updated, no typing
    assert (own["user"], own["read_seq"]) == (bo.pk, 1)
    assert after["accepted"]["reason"] == "accepted"
    assert after["accepted"]["conversation"]["request"] is False
    assert (after["receipt"]["user"], after["receipt"]["read_seq"]) == (bo.pk, 1)
