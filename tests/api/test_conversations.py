"""Conversations over REST: list, create, detail, rename, mute, members; same payloads as WS."""

from typing import Any

import pytest

from accounts.models import User
from messaging import selectors, wire
from messaging.models import Conversation, Membership, Message
from tests.api.conftest import Client, error_code, send

pytestmark = pytest.mark.django_db


def test_list_answers_conversations_as_session_ready_does(
    client_for: Client, ana: User, group: Conversation
) -> None:
    response = client_for(ana).get("/api/v1/conversations")

    assert response.status_code == 200
    expected = [
        wire.conversation_payload(v) for v in selectors.list_conversations_for_user(user=ana)
    ]
    assert response.json() == {"results": expected, "next": None}


def test_list_pages_by_activity_with_a_cursor(
    client_for: Client, ana: User, make_user: Any
) -> None:
    client = client_for(ana)
    others = [make_user() for _ in range(5)]
    ids = [
        client.post(
            "/api/v1/conversations", {"kind": "direct", "user": u.pk}, format="json"
        ).json()["id"]
        for u in others
    ]

    seen: list[int] = []
    url: str | None = "/api/v1/conversations?limit=2"
    while url:
        page = client.get(url).json()
        assert len(page["results"]) <= 2
        seen += [c["id"] for c in page["results"]]
        url = page["next"]

    assert seen == list(reversed(ids))


def test_direct_is_created_once_whoever_asks(client_for: Client, ana: User, bo: User) -> None:
    first = client_for(ana).post(
        "/api/v1/conversations", {"kind": "direct", "user": bo.pk}, format="json"
    )
    again = client_for(bo).post(
        "/api/v1/conversations", {"kind": "direct", "user": ana.pk}, format="json"
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["title"] == "Bo" and again.json()["title"] == "Ana"
    assert {m["id"] for m in first.json()["members"]} == {ana.pk, bo.pk}


def test_group_is_created_with_members_and_a_created_line(
    client_for: Client, ana: User, bo: User, cy: User
) -> None:
    response = client_for(ana).post(
        "/api/v1/conversations",
        {"kind": "group", "title": "Team", "members": [bo.pk, cy.pk], "public": True},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["title"], body["public"], body["last_seq"]) == (
        "group",
        "Team",
        True,
        1,
    )
    roles = {m["id"]: m["role"] for m in body["members"]}
    assert roles == {ana.pk: "owner", bo.pk: "member", cy.pk: "member"}
    created = Message.objects.get(conversation_id=body["id"], seq=1)
    assert created.system is not None and created.system["event"] == "created"


def test_create_checks_the_shape_and_names_the_field(client_for: Client, ana: User) -> None:
    client = client_for(ana)
    no_kind = client.post("/api/v1/conversations", {"user": 1}, format="json")
    no_user = client.post("/api/v1/conversations", {"kind": "direct"}, format="json")
    no_title = client.post("/api/v1/conversations", {"kind": "group", "title": " "}, format="json")
    unknown = client.post(
        "/api/v1/conversations", {"kind": "direct", "user": 10**12}, format="json"
    )

    assert no_kind.status_code == no_user.status_code == no_title.status_code == 400
    assert no_user.json()["error"]["details"]["field"] == "user"
    assert no_title.json()["error"]["details"]["field"] == "title"
    assert unknown.status_code == 404


def test_group_over_the_member_limit_is_a_conflict(
    client_for: Client, ana: User, bo: User, cy: User, settings: Any
) -> None:
    settings.CHAT_MAX_GROUP_MEMBERS = 2

    response = client_for(ana).post(
        "/api/v1/conversations",
        {"kind": "group", "title": "Big", "members": [bo.pk, cy.pk]},
        format="json",
    )

    assert response.status_code == 409
    assert error_code(response) == "group_full"


def test_detail_lists_members_with_markers(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    send(ana, group)

    body = client_for(bo).get(f"/api/v1/conversations/{group.pk}").json()

    assert body["id"] == group.pk and body["unread"] == 1
    assert body["members"] == [
        {
            "id": ana.pk,
            "username": "ana",
            "display_name": "Ana",
            "avatar_url": None,
            "role": "owner",
            "read_seq": 2,
            "delivered_seq": 2,
            "pending": False,
        },
        {
            "id": bo.pk,
            "username": "bo",
            "display_name": "Bo",
            "avatar_url": None,
            "role": "member",
            "read_seq": 1,
            "delivered_seq": 1,
            "pending": False,
        },
    ]


def test_rename_is_for_admins_and_is_logged(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    refused = client_for(bo).patch(
        f"/api/v1/conversations/{group.pk}", {"title": "Mine"}, format="json"
    )
    renamed = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}", {"title": "Team 2"}, format="json"
    )

    assert refused.status_code == 403
    assert renamed.status_code == 200 and renamed.json()["title"] == "Team 2"
    assert Message.objects.get(conversation=group, seq=2).system == {
        "event": "renamed",
        "users": [],
        "title": "Team 2",
    }


def test_mute_is_per_member(client_for: Client, ana: User, bo: User, group: Conversation) -> None:
    response = client_for(bo).patch(
        f"/api/v1/conversations/{group.pk}", {"muted": True}, format="json"
    )

    assert response.status_code == 200 and response.json()["muted"] is True
    assert Membership.objects.get(conversation=group, user=bo).muted
    assert not Membership.objects.get(conversation=group, user=ana).muted


def test_admins_add_members_and_others_cannot(
    client_for: Client, ana: User, bo: User, cy: User, group: Conversation
) -> None:
    refused = client_for(bo).post(
        f"/api/v1/conversations/{group.pk}/members", {"users": [cy.pk]}, format="json"
    )
    added = client_for(ana).post(
        f"/api/v1/conversations/{group.pk}/members", {"users": [cy.pk]}, format="json"
    )

    assert refused.status_code == 403
    assert added.status_code == 200
    assert cy.pk in {m["id"] for m in added.json()["members"]}


def test_anyone_joins_a_public_group_but_not_a_private_one(
    client_for: Client, ana: User, cy: User, group: Conversation
) -> None:
    public = (
        client_for(ana)
        .post(
            "/api/v1/conversations",
            {"kind": "group", "title": "Open", "public": True},
            format="json",
        )
        .json()
    )

    joined = client_for(cy).post(f"/api/v1/conversations/{public['id']}/members", {}, format="json")
    private = client_for(cy).post(f"/api/v1/conversations/{group.pk}/members", {}, format="json")

    assert joined.status_code == 200
    assert private.status_code == 403
    assert not Membership.objects.filter(conversation=group, user=cy).exists()


def test_leave_and_remove(
    client_for: Client, ana: User, bo: User, cy: User, group: Conversation
) -> None:
    client_for(ana).post(
        f"/api/v1/conversations/{group.pk}/members", {"users": [cy.pk]}, format="json"
    )

    removed = client_for(ana).delete(f"/api/v1/conversations/{group.pk}/members/{cy.pk}")
    left = client_for(bo).delete(f"/api/v1/conversations/{group.pk}/members/{bo.pk}")
    not_admin = client_for(bo).delete(f"/api/v1/conversations/{group.pk}/members/{ana.pk}")

    assert (removed.status_code, left.status_code) == (204, 204)
    assert not_admin.status_code == 403  # Bo is no longer a member
    assert list(
        Membership.objects.filter(conversation=group).values_list("user_id", flat=True)
    ) == [ana.pk]
    events_logged = list(
        Message.objects.filter(conversation=group, kind="system")
        .order_by("seq")
        .values_list("system__event", flat=True)
    )
    assert events_logged == ["created", "added", "removed", "left"]
