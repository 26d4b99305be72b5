"""Messages over REST: send (201 / 200 replay / 409), fetch, edit, delete, read; WS payloads."""

import uuid
from typing import Any

import pytest

from accounts.models import User
from messaging import wire
from messaging.models import Conversation, Membership, Message
from tests.api.conftest import Client, error_code, send

pytestmark = pytest.mark.django_db


def post_message(client: Any, conversation: Conversation, body: str = "hi", **extra: Any) -> Any:
    payload = {"client_msg_id": str(extra.pop("cmid", uuid.uuid4())), "body": body, **extra}
    return client.post(f"/api/v1/conversations/{conversation.pk}/messages", payload, format="json")


def test_send_answers_201_with_the_websocket_payload(
    client_for: Client, ana: User, group: Conversation
) -> None:
    response = post_message(client_for(ana), group, "hello <b>there</b>")

    assert response.status_code == 201
    message = Message.objects.get(pk=response.json()["id"])
    assert response.json() == wire.message_payload(message)
    assert (message.seq, message.body) == (2, "hello <b>there</b>")


def test_replay_answers_200_with_the_original_and_stores_nothing(
    client_for: Client, ana: User, group: Conversation
) -> None:
    cmid = uuid.uuid4()
    first = post_message(client_for(ana), group, "once", cmid=cmid)
    again = post_message(client_for(ana), group, "once", cmid=cmid)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert Message.objects.filter(conversation=group, kind="text").count() == 1


def test_reused_client_msg_id_with_another_body_is_409(
    client_for: Client, ana: User, group: Conversation
) -> None:
    cmid = uuid.uuid4()
    post_message(client_for(ana), group, "once", cmid=cmid)

    response = post_message(client_for(ana), group, "other", cmid=cmid)

    assert response.status_code == 409
    assert error_code(response) == "conflict"


def test_send_limits_are_the_services(
    client_for: Client, ana: User, group: Conversation, settings: Any
) -> None:
    settings.CHAT_MAX_MESSAGE_LENGTH = 10
    client = client_for(ana)

    too_long = post_message(client, group, "x" * 11)
    empty = post_message(client, group, "   ")
    bad_id = client.post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": "nope", "body": "x"},
        format="json",
    )

    assert (too_long.status_code, error_code(too_long)) == (413, "message_too_long")
    assert (empty.status_code, error_code(empty)) == (400, "empty_message")
    assert bad_id.status_code == 400
    assert bad_id.json()["error"]["details"]["field"] == "client_msg_id"


def test_send_rate_limit_answers_429_with_retry_after(
    client_for: Client, ana: User, group: Conversation, settings: Any
) -> None:
    settings.CHAT_SEND_BURST = 2.0
    settings.CHAT_SEND_RATE = 0.1
    client = client_for(ana)

    answers = [post_message(client, group, f"m{i}").status_code for i in range(2)]
    limited = post_message(client, group, "late")

    assert answers == [201, 201]
    assert limited.status_code == 429
    assert int(limited["Retry-After"]) >= 1
    assert limited.json()["error"]["details"]["retry_after"] > 0


def test_json_body_over_the_limit_is_413(
    client_for: Client, ana: User, group: Conversation, settings: Any
) -> None:
    settings.API_MAX_JSON_BYTES = 1000

    response = post_message(client_for(ana), group, "x" * 2000)

    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


def test_fetch_after_returns_changes_by_version_with_upto(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    first = send(ana, group, "one")
    send(bo, group, "two")
    client_for(ana).patch(
        f"/api/v1/conversations/{group.pk}/messages/{first.pk}", {"body": "one!"}, format="json"
    )

    batch = client_for(bo).get(f"/api/v1/conversations/{group.pk}/messages", {"after": 2}).json()

    assert [(m["seq"], m["version"], m["body"]) for m in batch["messages"]] == [
        (3, 3, "two"),
        (2, 4, "one!"),
    ]
    assert (batch["upto"], batch["has_more"]) == (4, False)


def test_fetch_before_returns_older_pages_in_seq_order(
    client_for: Client, ana: User, group: Conversation
) -> None:
    for i in range(5):
        send(ana, group, f"m{i}")

    page = (
        client_for(ana)
        .get(f"/api/v1/conversations/{group.pk}/messages", {"before": 5, "limit": 2})
        .json()
    )

    assert [m["seq"] for m in page["messages"]] == [3, 4]
    assert (page["upto"], page["has_more"]) == (None, True)


def test_fetch_rejects_bad_parameters(client_for: Client, ana: User, group: Conversation) -> None:
    client = client_for(ana)
    url = f"/api/v1/conversations/{group.pk}/messages"

    assert client.get(url, {"after": "x"}).status_code == 400
    assert client.get(url, {"limit": 201}).status_code == 400
    both = client.get(url, {"after": 1, "before": 2})
    assert both.status_code == 400 and both.json()["error"]["details"]["field"] == "before"


def test_edit_and_delete_own_message(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    message = send(bo, group, "typo")
    client = client_for(bo)
    url = f"/api/v1/conversations/{group.pk}/messages/{message.pk}"

    edited = client.patch(url, {"body": "fixed"}, format="json")
    deleted = client.delete(url)

    assert edited.status_code == 200
    assert (edited.json()["body"], edited.json()["version"]) == ("fixed", 3)
    assert edited.json()["edited_at"] is not None
    assert deleted.status_code == 200
    assert (deleted.json()["deleted"], deleted.json()["body"], deleted.json()["version"]) == (
        True,
        "",
        4,
    )


def test_others_cannot_edit_and_missing_messages_are_404(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    message = send(ana, group, "mine")
    base = f"/api/v1/conversations/{group.pk}/messages"

    edit = client_for(bo).patch(f"{base}/{message.pk}", {"body": "yours"}, format="json")
    delete = client_for(bo).delete(f"{base}/{message.pk}")
    missing = client_for(bo).delete(f"{base}/{message.pk + 1000}")

    assert (edit.status_code, delete.status_code) == (403, 403)
    assert (missing.status_code, error_code(missing)) == (404, "not_found")


def test_a_reply_over_rest_quotes_its_message_and_a_bad_reply_to_is_refused(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    question = send(ana, group, "who brings the cake?")
    client = client_for(bo)

    answered = post_message(client, group, "me", reply_to=question.pk)
    as_text = post_message(client, group, "me", reply_to=str(question.pk))
    missing = post_message(client, group, "me", reply_to=question.pk + 1000)

    assert answered.status_code == 201
    assert answered.json()["reply_to"]["preview"] == "who brings the cake?"
    assert (as_text.status_code, as_text.json()["error"]["details"]["field"]) == (
        400,
        "reply_to",
    )
    assert (missing.status_code, missing.json()["error"]["details"]) == (
        400,
        {"field": "reply_to"},
    )
    assert Message.objects.filter(conversation=group, sender=bo).count() == 1


def test_react_and_take_it_back_with_the_emoji_in_the_path(
    client_for: Client, ana: User, bo: User, cy: User, group: Conversation
) -> None:
    """PUT adds (a repeat is harmless), DELETE takes back; words, a non-member and a
    missing message are refused with JSON errors and leave the message as it was."""
    message = send(ana, group, "lunch?")
    base = f"/api/v1/conversations/{group.pk}/messages/{message.pk}/reactions"
    thumbs = "%F0%9F%91%8D"  # U+1F44D, percent-encoded UTF-8

    added = client_for(bo).put(f"{base}/{thumbs}")
    again = client_for(bo).put(f"{base}/{thumbs}")
    words = client_for(bo).put(f"{base}/yes")
    outsider = client_for(cy).put(f"{base}/{thumbs}")
    missing = client_for(bo).put(
        f"/api/v1/conversations/{group.pk}/messages/{message.pk + 1000}/reactions/{thumbs}"
    )
    shown = added.json()

    assert added.status_code == 200
    assert shown["reactions"] == [{"emoji": "\N{THUMBS UP SIGN}", "count": 1, "users": [bo.pk]}]
    assert (again.status_code, again.json()["version"]) == (200, shown["version"])
    assert (words.status_code, error_code(words)) == (400, "bad_request")
    assert words.json()["error"]["details"] == {"field": "emoji"}
    assert (outsider.status_code, missing.status_code) == (403, 404)
    message.refresh_from_db()
    assert (message.version, message.reactions) == (
        shown["version"],
        [["\N{THUMBS UP SIGN}", [bo.pk]]],
    )

    removed = client_for(bo).delete(f"{base}/{thumbs}")
    assert removed.status_code == 200
    assert (removed.json()["reactions"], removed.json()["version"]) == ([], shown["version"] + 1)


def test_read_raises_markers_and_never_lowers_them(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    send(ana, group)
    send(ana, group)
    client = client_for(bo)

    up = client.post(f"/api/v1/conversations/{group.pk}/read", {"seq": 3}, format="json")
    down = client.post(f"/api/v1/conversations/{group.pk}/read", {"seq": 1}, format="json")
    past = client.post(f"/api/v1/conversations/{group.pk}/read", {"seq": 99}, format="json")

    assert up.json() == {"conversation": group.pk, "delivered_seq": 3, "read_seq": 3}
    assert down.json()["read_seq"] == 3 and past.json()["read_seq"] == 3
    assert Membership.objects.get(conversation=group, user=bo).read_seq == 3


def test_send_broadcasts_message_created_after_commit(
    client_for: Client,
    ana: User,
    group: Conversation,
    listener: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from messaging.events import conversation_group

    listener.join(conversation_group(group.pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = post_message(client_for(ana), group, "live")

    event = listener.receive()["frame"]
    assert event["type"] == "message.created"
    assert event["message"] == response.json()
