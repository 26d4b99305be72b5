"""Blocking, reports and delete for me over REST."""

import uuid
from typing import Any

import pytest

from accounts.models import User
from messaging import services, wire
from messaging.models import Block, Conversation, HiddenMessage, Report
from tests.api.conftest import Client, error_code, send

pytestmark = pytest.mark.django_db


def direct(a: User, b: User) -> Conversation:
    return services.create_direct_conversation(user=a, other_user_id=b.pk)[0]


def post_message(client: Any, conversation: Conversation, body: str = "hi") -> Any:
    payload = {"client_msg_id": str(uuid.uuid4()), "body": body}
    return client.post(f"/api/v1/conversations/{conversation.pk}/messages", payload, format="json")


# --- blocking ---------------------------------------------------------------------------


def test_put_blocks_delete_unblocks_and_the_list_shows_it(
    client_for: Client, ana: User, bo: User
) -> None:
    client = client_for(ana)
    answer = client.put(f"/api/v1/users/{bo.pk}/block")
    assert answer.status_code == 200
    assert answer.json()["user"]["id"] == bo.pk
    assert client.put(f"/api/v1/users/{bo.pk}/block").status_code == 200  # idempotent
    listed = client.get("/api/v1/blocks").json()["results"]
    assert listed == [wire.block_payload(Block.objects.get())]
    assert client_for(bo).get("/api/v1/blocks").json()["results"] == []

    assert client.delete(f"/api/v1/users/{bo.pk}/block").status_code == 204
    assert client.get("/api/v1/blocks").json()["results"] == []
    assert client.delete(f"/api/v1/users/{bo.pk}/block").status_code == 204


def test_blocking_yourself_or_nobody_is_refused(client_for: Client, ana: User) -> None:
    client = client_for(ana)
    assert client.put(f"/api/v1/users/{ana.pk}/block").status_code == 400
    missing = client.put("/api/v1/users/999999999/block")
    assert (missing.status_code, error_code(missing)) == (404, "not_found")
    assert client_for().put(f"/api/v1/users/{ana.pk}/block").status_code == 401


def test_sending_between_a_blocked_pair_is_a_neutral_403_both_ways(
    client_for: Client, ana: User, bo: User
) -> None:
    chat = direct(ana, bo)
    client_for(ana).put(f"/api/v1/users/{bo.pk}/block")

    from_blocked = post_message(client_for(bo), chat)
    from_blocker = post_message(client_for(ana), chat)
    assert from_blocked.status_code == from_blocker.status_code == 403
    assert from_blocked.json() == from_blocker.json()
    assert error_code(from_blocked) == "cannot_send"
    assert from_blocked.json()["error"]["message"] == (
        "You cannot send messages to this conversation."
    )

    client_for(ana).delete(f"/api/v1/users/{bo.pk}/block")
    assert post_message(client_for(bo), chat).status_code == 201


def test_blocks_are_rate_limited(client_for: Client, ana: User, bo: User, monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "BLOCK_BURST", 1.0)
    monkeypatch.setattr(services, "BLOCK_RATE", 0.001)
    client = client_for(ana)
    assert client.put(f"/api/v1/users/{bo.pk}/block").status_code == 200
    limited = client.delete(f"/api/v1/users/{bo.pk}/block")
    assert (limited.status_code, error_code(limited)) == (429, "rate_limited")
    assert Block.objects.count() == 1


# --- reports ----------------------------------------------------------------------------


def report_url(conversation: Conversation, message_id: int) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages/{message_id}/report"


def test_report_answers_201_then_200(client_for: Client, ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat, "buy now")
    client = client_for(bo)
    first = client.post(report_url(chat, message.pk), {"reason": "spam"}, format="json")
    assert first.status_code == 201
    report = Report.objects.get()
    assert first.json() == wire.report_payload(report)
    assert (report.reporter_id, report.reason, report.details) == (bo.pk, "spam", "")
    again = client.post(
        report_url(chat, message.pk), {"reason": "other", "details": "x"}, format="json"
    )
    assert (again.status_code, again.json()["id"]) == (200, report.pk)


def test_report_checks_the_reason_its_length_and_membership(
    client_for: Client, ana: User, bo: User, cy: User
) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat)
    url = report_url(chat, message.pk)
    assert client_for(bo).post(url, {"reason": "meh"}, format="json").status_code == 400
    too_long = {"reason": "other", "details": "x" * 1001}
    assert client_for(bo).post(url, too_long, format="json").status_code == 400
    outsider = client_for(cy).post(url, {"reason": "spam"}, format="json")
    assert (outsider.status_code, error_code(outsider)) == (403, "forbidden")
    missing = client_for(bo).post(report_url(chat, 10**9), {"reason": "spam"}, format="json")
    assert missing.status_code == 404
    assert not Report.objects.exists()


def test_reports_are_rate_limited(
    client_for: Client, ana: User, bo: User, group: Conversation, monkeypatch: Any
) -> None:
    monkeypatch.setattr(services, "REPORT_BURST", 1.0)
    monkeypatch.setattr(services, "REPORT_RATE", 0.001)
    one, two = send(ana, group, "1"), send(ana, group, "2")
    client = client_for(bo)
    assert (
        client.post(report_url(group, one.pk), {"reason": "spam"}, format="json").status_code == 201
    )
    limited = client.post(report_url(group, two.pk), {"reason": "spam"}, format="json")
    assert (limited.status_code, error_code(limited)) == (429, "rate_limited")


# --- delete for me ----------------------------------------------------------------------


def test_hide_removes_the_message_from_the_users_history_only(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    keep, gone = send(ana, group, "keep"), send(ana, group, "gone")
    answer = client_for(bo).post(f"/api/v1/conversations/{group.pk}/messages/{gone.pk}/hide")
    assert answer.status_code == 200
    assert answer.json() == wire.hidden_payload(HiddenMessage.objects.get())

    def bodies(user: User, query: str = "") -> list[str]:
        page = client_for(user).get(f"/api/v1/conversations/{group.pk}/messages{query}").json()
        return [m["body"] for m in page["messages"] if m["kind"] == "text"]

    assert bodies(bo) == ["keep"]
    assert bodies(bo, f"?after={keep.version - 1}") == ["keep"]
    assert bodies(ana) == ["keep", "gone"]


def test_hide_is_for_members_only(
    client_for: Client, ana: User, cy: User, group: Conversation
) -> None:
    message = send(ana, group)
    outsider = client_for(cy).post(f"/api/v1/conversations/{group.pk}/messages/{message.pk}/hide")
    assert (outsider.status_code, error_code(outsider)) == (403, "forbidden")
    assert not HiddenMessage.objects.exists()


def test_hidden_messages_sync_from_a_cursor(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    one, two = send(ana, group, "1"), send(ana, group, "2")
    client = client_for(bo)
    client.post(f"/api/v1/conversations/{group.pk}/messages/{one.pk}/hide")
    everything = client.get("/api/v1/hidden-messages").json()
    assert [h["message"] for h in everything["results"]] == [one.pk]
    assert everything["has_more"] is False
    client.post(f"/api/v1/conversations/{group.pk}/messages/{two.pk}/hide")
    since = client.get(f"/api/v1/hidden-messages?after={everything['cursor']}").json()
    assert [h["message"] for h in since["results"]] == [two.pk]
    assert client_for(ana).get("/api/v1/hidden-messages").json()["results"] == []
    assert client.get("/api/v1/hidden-messages?after=-1").status_code == 400
