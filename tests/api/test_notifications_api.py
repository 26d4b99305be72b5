"""The notification settings and trace over REST, and the one-click email unsubscribe."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from accounts.models import User
from messaging import services
from messaging.models import Device, Membership, Message
from messaging.notifications import decide, payloads
from tests.api.conftest import Client

pytestmark = pytest.mark.django_db


def send(user: User, conversation_id: int, body: str) -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation_id, client_msg_id=uuid.uuid4(), body=body
    ).message


def test_notify_level_is_set_per_member_and_shown_in_the_conversation(
    client_for: Client, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.create_direct_conversation(user=bo, other_user_id=ana.pk)  # listed for Bo too
    client = client_for(bo)

    changed = client.patch(
        f"/api/v1/conversations/{chat.pk}", {"notify": "mentions"}, format="json"
    )

    assert changed.status_code == 200
    assert changed.json()["notify"] == "mentions"
    assert Membership.objects.get(conversation=chat, user=bo).notify == "mentions"
    assert Membership.objects.get(conversation=chat, user=ana).notify == "all"  # only mine
    listed = client.get("/api/v1/conversations").json()["results"]
    assert [(c["id"], c["notify"], c["muted"]) for c in listed] == [(chat.pk, "mentions", False)]


@pytest.mark.parametrize("bad", ["loud", "", None, 3, ["all"]])
def test_an_unknown_notify_level_is_refused_and_nothing_changes(
    client_for: Client, ana: User, bo: User, bad: Any
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    response = client_for(bo).patch(
        f"/api/v1/conversations/{chat.pk}", {"notify": bad}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "notify"
    assert Membership.objects.get(conversation=chat, user=bo).notify == "all"


def test_a_non_member_cannot_set_a_notify_level(
    client_for: Client, ana: User, bo: User, cy: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    response = client_for(cy).patch(
        f"/api/v1/conversations/{chat.pk}", {"notify": "none"}, format="json"
    )
    assert response.status_code == 403


def test_email_and_email_notifications_are_part_of_the_profile(
    client_for: Client, ana: User
) -> None:
    client = client_for(ana)

    changed = client.patch(
        "/api/v1/users/me",
        {"email": " Ana@Example.ORG ", "email_notifications": False},
        format="json",
    )

    assert changed.status_code == 200
    assert changed.json()["email"] == "Ana@example.org"  # the domain is lower-cased
    assert changed.json()["email_notifications"] is False
    ana.refresh_from_db()
    assert (ana.email, ana.email_notifications) == ("Ana@example.org", False)
    assert client.patch("/api/v1/users/me", {"email": ""}, format="json").json()["email"] == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not an address"}, "email"),
        ({"email": "a@b@c"}, "email"),
        ({"email": "x" * 250 + "@example.org"}, "email"),
        ({"email_notifications": "yes"}, "email_notifications"),
        ({"email": 5}, "email"),
    ],
)
def test_a_bad_email_setting_is_refused_and_the_profile_kept(
    client_for: Client, ana: User, body: dict[str, Any], field: str
) -> None:
    User.objects.filter(pk=ana.pk).update(email="ana@example.org")

    response = client_for(ana).patch("/api/v1/users/me", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == field
    ana.refresh_from_db()
    assert (ana.email, ana.email_notifications) == ("ana@example.org", True)


def test_devices_are_listed_without_their_tokens(client_for: Client, ana: User, bo: User) -> None:
    mine = Device.objects.create(user=ana, platform="fcm", token="a" * 40, name="Pixel")
    Device.objects.create(user=bo, platform="fcm", token="b" * 40, name="Not mine")

    answer = client_for(ana).get("/api/v1/devices")

    assert answer.status_code == 200
    assert answer.json()["next"] is None
    assert [
        (d["id"], d["platform"], d["name"], d["last_used_at"]) for d in answer.json()["results"]
    ] == [(mine.pk, "fcm", "Pixel", None)]
    assert "a" * 40 not in answer.content.decode()


def test_the_trace_shows_pending_during_the_delay_then_each_decision(
    client_for: Client, ana: User, bo: User, cy: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    phone = Device.objects.create(user=bo, platform="fcm", token="p" * 40)
    User.objects.filter(pk=bo.pk).update(email="bo@example.org")
    message = send(ana, chat.pk, "are you there?")
    url = f"/api/v1/conversations/{chat.pk}/messages/{message.pk}/notifications"

    during = client_for(bo).get(url).json()["results"]
    assert [(r["channel"], r["device"], r["decision"], r["reason"]) for r in during] == [
        ("fcm", phone.pk, "pending", None),
        ("email", None, "pending", None),
    ]

    User.objects.filter(pk=bo.pk).update(status=User.Status.BUSY)
    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))
    after = client_for(bo).get(url).json()["results"]
    assert [(r["kind"], r["channel"], r["device"], r["decision"], r["reason"]) for r in after] == [
        ("message", "fcm", phone.pk, "suppressed", "busy"),
        ("message", "email", None, "suppressed", "busy"),
    ]
    assert all(r["at"].endswith("Z") for r in after)
    # The sender's own trace is empty; a non-member learns nothing (as for a missing id).
    assert client_for(ana).get(url).json() == {"results": []}
    assert client_for(cy).get(url).status_code == 403
    missing = client_for(bo).get(f"/api/v1/conversations/{chat.pk}/messages/999999/notifications")
    assert missing.status_code == 404


def test_mentions_of_members_are_stored_with_the_message_and_in_its_payload(
    client_for: Client, ana: User, bo: User, cy: User, make_user: Any
) -> None:
    outsider = make_user("eve")
    group = services.create_group(creator=ana, title="Trip", member_ids=[bo.pk, cy.pk])
    body = "@BO and @cy. see mail@bo.org; @eve is not here, nor is @nobody"

    answer = client_for(ana).post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": body},
        format="json",
    )

    assert answer.status_code == 201
    assert answer.json()["mentions"] == sorted([bo.pk, cy.pk])
    assert Message.objects.get(pk=answer.json()["id"]).mentions == sorted([bo.pk, cy.pk])
    assert outsider.pk not in answer.json()["mentions"]
    # An edit names other people: the stored mentions follow the body.
    edited = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}/messages/{answer.json()['id']}",
        {"body": "only @cy now"},
        format="json",
    )
    assert edited.json()["mentions"] == [cy.pk]


def test_one_click_unsubscribe_needs_no_cookie_and_no_csrf_token(ana: User) -> None:
    User.objects.filter(pk=ana.pk).update(email="ana@example.org")
    url = payloads.unsubscribe_url(ana).removeprefix("http://127.0.0.1:8000")
    browser = DjangoClient(enforce_csrf_checks=True)

    # Opening the link (a mail scanner does) asks; it does not unsubscribe.
    page = browser.get(url)
    assert page.status_code == 200
    assert b"Turn emails off" in page.content
    assert User.objects.get(pk=ana.pk).email_notifications is True

    done = browser.post(url, {"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert b"Emails are off" in done.content
    assert User.objects.get(pk=ana.pk).email_notifications is False
    assert browser.post(url, {"List-Unsubscribe": "One-Click"}).status_code == 200  # idempotent


@pytest.mark.parametrize("token", ["nonsense", "MQ:1v2x3y:forged"])
def test_a_forged_unsubscribe_link_changes_nothing(ana: User, token: str) -> None:
    response = DjangoClient().post(f"/notifications/unsubscribe/{token}/")
    assert response.status_code == 404
    assert User.objects.get(pk=ana.pk).email_notifications is True
