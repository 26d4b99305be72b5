"""The REST API of group admins: settings, roles, picture, and sends in admins-only groups."""

import io
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from accounts.models import User
from messaging.models import Conversation, Membership, Message

from .conftest import Client, error_code

pytestmark = pytest.mark.django_db


def png(color: str = "red") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 120), color).save(buffer, format="PNG")
    return SimpleUploadedFile("p.png", buffer.getvalue(), content_type="image/png")


def log_length(group: Conversation) -> int:
    return Conversation.objects.get(pk=group.pk).last_seq


def test_settings_of_a_group_are_in_its_payload(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    mine = client_for(ana).get(f"/api/v1/conversations/{group.pk}").json()
    theirs = client_for(bo).get("/api/v1/conversations").json()["results"][0]

    assert (mine["role"], mine["post_policy"], mine["description"]) == ("owner", "everyone", "")
    assert mine["picture_url"] is None
    assert (theirs["id"], theirs["role"]) == (group.pk, "member")


def test_the_owner_changes_description_and_post_policy_in_one_request(
    client_for: Client, ana: User, group: Conversation
) -> None:
    response = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}",
        {"description": "Board news only", "post_policy": "admins"},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["description"], body["post_policy"]) == ("Board news only", "admins")
    events = list(
        Message.objects.filter(conversation=group, kind=Message.Kind.SYSTEM)
        .order_by("seq")
        .values_list("system__event", flat=True)
    )
    assert events == ["created", "description", "post_policy"]


def test_a_plain_member_cannot_change_settings(
    client_for: Client, bo: User, group: Conversation
) -> None:
    seq = log_length(group)

    response = client_for(bo).patch(
        f"/api/v1/conversations/{group.pk}", {"post_policy": "admins"}, format="json"
    )

    assert response.status_code == 403 and error_code(response) == "forbidden"
    assert "owner and admins" in response.json()["error"]["message"]
    assert log_length(group) == seq


def test_a_bad_setting_refuses_the_whole_request(
    client_for: Client, ana: User, group: Conversation
) -> None:
    # A valid rename with a description over the limit: neither is applied.
    seq = log_length(group)
    response = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}",
        {"title": "Renamed", "description": "x" * 2001},
        format="json",
    )
    unknown = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}", {"post_policy": "owners"}, format="json"
    )
    not_text = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}", {"description": 5}, format="json"
    )

    assert response.status_code == 400 and error_code(response) == "bad_request"
    assert response.json()["error"]["details"]["field"] == "description"
    assert unknown.status_code == 400 and not_text.status_code == 400
    stored = Conversation.objects.get(pk=group.pk)
    assert (stored.title, stored.description, stored.last_seq) == ("Team", "", seq)


def test_roles_through_the_members_endpoint(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    url = f"/api/v1/conversations/{group.pk}/members/{bo.pk}"

    refused = client_for(bo).patch(url, {"role": "admin"}, format="json")
    made = client_for(ana).patch(url, {"role": "admin"}, format="json")
    owner = client_for(ana).patch(url, {"role": "owner"}, format="json")
    stepped_down = client_for(bo).patch(url, {"role": "member"}, format="json")

    assert refused.status_code == 403
    assert made.status_code == 200
    assert {m["id"]: m["role"] for m in made.json()["members"]}[bo.pk] == "admin"
    assert owner.status_code == 400  # not a role to give
    assert stepped_down.status_code == 200 and stepped_down.json()["role"] == "member"
    assert Membership.objects.get(conversation=group, user=bo).role == "member"


def test_a_role_for_someone_not_in_the_group_is_not_found(
    client_for: Client, ana: User, group: Conversation, cy: User
) -> None:
    response = client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}/members/{cy.pk}", {"role": "admin"}, format="json"
    )

    assert response.status_code == 404 and error_code(response) == "not_found"


def test_a_plain_member_cannot_send_to_an_admins_only_group(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}", {"post_policy": "admins"}, format="json"
    )
    seq = log_length(group)

    response = client_for(bo).post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "hello?"},
        format="json",
    )

    assert response.status_code == 403 and error_code(response) == "admins_only"
    assert response.json()["error"]["message"] == "Only the group's admins can send messages here."
    assert log_length(group) == seq


def test_group_picture_upload_and_removal(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    url = f"/api/v1/conversations/{group.pk}/picture"

    refused = client_for(bo).put(url, {"file": png()}, format="multipart")
    not_a_picture = client_for(ana).put(
        url,
        {"file": SimpleUploadedFile("a.png", b"%PDF-1.4 not an image", "image/png")},
        format="multipart",
    )
    no_file = client_for(ana).put(url, {}, format="multipart")
    assert (refused.status_code, not_a_picture.status_code, no_file.status_code) == (403, 400, 400)
    assert Conversation.objects.get(pk=group.pk).picture == ""

    stored = client_for(ana).put(url, {"file": png()}, format="multipart")
    assert stored.status_code == 200
    picture_url = stored.json()["picture_url"]
    assert picture_url and picture_url.startswith("/api/v1/avatars/")
    served = client_for(bo).get(picture_url)
    assert served.status_code == 200 and served["Content-Type"] in ("image/jpeg", "image/png")
    streamed: Any = served
    assert b"".join(streamed.streaming_content).startswith(b"\xff\xd8")  # read (and closed)

    removed = client_for(ana).delete(url)
    assert removed.status_code == 200 and removed.json()["picture_url"] is None
