"""The embedded default (`make run`): SQLite, the in-memory channel layer, no Redis, eager Celery.

These run in a process of their own (tests/test_embedded.py) with no DATABASE_URL or
REDIS_URL, so the SQLite branches of the services, selectors, search and API, and the
in-process presence store and channel layer, are the ones exercised.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from accounts.tokens import issue_pair, revoked_families, user_behind
from chatsite.asgi import application
from chatsite.gateway.auth import Credential, find_revoked
from messaging import search, selectors, services
from messaging.errors import NotAMember
from messaging.models import EmailDigest, Message, Notification, NotificationDue
from messaging.notifications import decide, sending
from tests.wirecheck import check_frame

pytestmark = pytest.mark.django_db


def send(user: User, conversation_id: int, body: str, cmid: Any = None) -> Message:
    return services.send_message(
        sender=user,
        conversation_id=conversation_id,
        client_msg_id=cmid or uuid.uuid4(),
        body=body,
    ).message


def test_the_embedded_default_is_sqlite_with_no_redis_and_eager_celery() -> None:
    assert connection.vendor == "sqlite"
    assert settings.REDIS_URL == ""
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].endswith("InMemoryChannelLayer")
    assert settings.CELERY_TASK_ALWAYS_EAGER is True


def test_sends_take_gap_free_seqs_replays_and_refusals_on_sqlite(
    ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    cmid = uuid.uuid4()
    first = send(ana, group.pk, "hi @bo", cmid)
    second = send(bo, group.pk, "hello")
    replay = send(ana, group.pk, "hi @bo", cmid)

    assert [first.seq, second.seq] == [2, 3]  # seq 1 is the group's "created"
    assert replay.pk == first.pk
    assert first.mentions == [bo.pk]
    assert NotificationDue.objects.filter(message=first).exists()
    with pytest.raises(NotAMember):
        send(cy, group.pk, "not a member")
    group.refresh_from_db()
    assert group.last_seq == 3  # the refused send gave its number back


def test_the_conversation_list_and_pages_read_the_same_on_sqlite(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for n in range(5):
        send(bo, chat.pk, f"m{n}")
    services.mark_read(user=ana, conversation_id=chat.pk, seq=2)

    (view,) = selectors.list_conversations_for_user(user=ana)
    assert (view.title, view.unread, view.last_seq, view.peer) == ("Bo", 3, 5, bo.pk)
    assert view.last_activity_at is not None and view.last_activity_at.tzinfo is not None
    after = selectors.list_messages_for_user(user=ana, conversation_id=chat.pk, after=3)
    assert ([m.body for m in after.messages], after.upto) == (["m3", "m4"], 5)
    before = selectors.list_messages_for_user(user=ana, conversation_id=chat.pk, before=3, limit=1)
    assert ([m.body for m in before.messages], before.has_more) == (["m1"], True)


def test_log_positions_and_credential_rechecks_read_many_ids_on_sqlite(ana: User, bo: User) -> None:
    """The hand-written `IN` of the SQLite branch (PostgreSQL takes one array)."""
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(bo, chat.pk, "one")
    nobody = 10**9
    assert selectors.get_log_positions(user_ids=[ana.pk, bo.pk, nobody]) == {
        ana.pk: 1,
        bo.pk: 1,
        nobody: 0,
    }
    assert selectors.get_log_positions(user_ids=[]) == {}
    good = Credential("jwt", ana.pk, ana.password, epoch=ana.login_epoch)
    stale = Credential("jwt", bo.pk, "an old password hash", epoch=bo.login_epoch)
    gone = Credential("jwt", nobody, "", family="never-revoked")
    assert find_revoked([good, stale, gone], now=0.0) == {1, 2}
    assert revoked_families(["never-revoked", ""]) == set()


def test_the_handshake_reads_the_user_with_every_field_converted_on_sqlite(ana: User) -> None:
    """SQLite gives datetimes as text and booleans as integers: the row is converted."""
    User.objects.filter(pk=ana.pk).update(last_seen=timezone.now())
    stored = User.objects.get(pk=ana.pk)
    found = user_behind(AccessToken(issue_pair(stored)["access"]))  # type: ignore[arg-type]
    assert found is not None
    fields = [f.attname for f in User._meta.concrete_fields]
    assert {f: getattr(found, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    assert isinstance(found.last_seen, datetime) and found.is_active is True


def test_search_finds_every_word_as_a_substring_on_sqlite(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(bo, chat.pk, "the needle is in the haystack")
    send(bo, chat.pk, "only hay here")

    page = search.search_messages_for_user(user=ana, query="needle hay")

    assert [h.message.body for h in page.hits] == ["the needle is in the haystack"]


def test_partitioning_the_message_table_is_refused_on_sqlite() -> None:
    with pytest.raises(CommandError, match="needs PostgreSQL"):
        call_command("partition_messages", partitions=4, stdout=io.StringIO())
    assert Message.objects.count() == 0  # the table is as it was


def test_the_rest_api_sends_and_pages_on_sqlite(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_pair(ana)['access']}")

    sent = client.post(
        f"/api/v1/conversations/{chat.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "over REST"},
        format="json",
    )
    listed = client.get(f"/api/v1/conversations/{chat.pk}/messages?after=0")
    conversations = client.get("/api/v1/conversations")

    assert sent.status_code == 201 and sent.json()["seq"] == 1
    assert [m["body"] for m in listed.json()["messages"]] == ["over REST"]
    assert [c["id"] for c in conversations.json()["results"]] == [chat.pk]


def test_an_image_upload_is_thumbnailed_inline_by_eager_celery(
    ana: User, settings: Any, tmp_path: Any
) -> None:
    """No broker: the thumbnail task runs in the upload, which answers `ready`."""
    settings.MEDIA_ROOT = tmp_path / "media"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_pair(ana)['access']}")
    image = io.BytesIO()
    Image.new("RGB", (640, 480), "orange").save(image, format="PNG")

    uploaded = client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile("photo.png", image.getvalue(), content_type="image/png")},
        format="multipart",
    )

    assert uploaded.status_code == 201
    assert uploaded.json()["thumbnail"] == "ready"
    thumb: Any = client.get(uploaded.json()["thumbnail_url"])
    assert thumb.status_code == 200
    with Image.open(io.BytesIO(b"".join(thumb.streaming_content))) as small:
        assert small.size == (320, 240)


def test_notifications_are_decided_and_emailed_on_sqlite(ana: User, make_user: Any) -> None:
    bo = make_user("bo2", email="bo@example.org")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(ana, chat.pk, "are you there?")
    NotificationDue.objects.update(due_at=timezone.now())

    decide.decide_due_messages(now=timezone.now())
    EmailDigest.objects.update(due_at=timezone.now())
    (user_id,) = sending.claim_due_digests(now=timezone.now())
    sending.send_email_digest(user_id)

    assert Notification.objects.get(user=bo, channel="push").reason == "no_devices"
    assert Notification.objects.get(user=bo, channel="email").decision == "sent"
    assert [m.to for m in mail.outbox] == [["bo@example.org"]]


@pytest.mark.django_db(transaction=True)
def test_a_socket_chats_over_the_in_memory_layer(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = issue_pair(ana)["access"], issue_pair(bo)["access"]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        sockets = [
            WebsocketCommunicator(
                application, "/ws/v1/", headers=[(b"authorization", f"Bearer {t}".encode())]
            )
            for t in tokens
        ]
        for ws in sockets:
            assert (await ws.connect())[0]
            check_frame(json.loads(await ws.receive_from(5)))
        a, b = sockets
        frame = {"type": "message.send", "conversation": chat.pk, "body": "embedded"}
        await a.send_to(text_data=json.dumps({**frame, "client_msg_id": str(uuid.uuid4())}))
        sent = check_frame(json.loads(await a.receive_from(5)))
        while (created := check_frame(json.loads(await b.receive_from(5))))["type"] != (
            "message.created"
        ):
            pass
        for ws in sockets:
            await ws.disconnect()
        return sent, created

    sent, created = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sent["type"] in ("message.sent", "message.created")
    assert created["message"]["body"] == "embedded"
