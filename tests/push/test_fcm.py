"""FCM HTTP v1 end to end: a real gateway, Celery worker and beat, a local OAuth + FCM server.

The server checks the RS256 assertion (issuer, audience, scope, key id), the bearer
token and the message's shape; it records what it accepted. Absence is proven after the
pipeline has settled (`settled`), never by a sleep.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from bench.pushfakes import Answer, FcmServer
from messaging import services
from messaging.models import Device, Notification
from messaging.push.fcm import TOKEN_MARGIN, FcmBackend
from tests.e2e.conftest import MakeDeployment, MakeWorkers
from tests.e2e.test_notifications import (
    SOON,
    api,
    decided_trace,
    eventually,
    settled,
    trace,
    ws_send,
)
from tests.e2e.wsclient import bearer
from tests.push.stack import PUSH_DELAY, add_device, mobile_env, start

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = "fcm-token-bo-phone-0001"
TABLET = "fcm-token-bo-tablet-002"


def test_fcm_message_and_removal_pushes_with_one_cached_oauth_token(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    fcm_server: FcmServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo offline with an Android phone, when Ana sends, then one FCM message with
    string `data`, `collapse_key` c<id> and priority HIGH reaches the phone and is traced
    sent; when Bo reads elsewhere a `remove` goes out with priority NORMAL under the same
    collapse key; both used one OAuth token (cached); once the server stops taking that
    token (401) a new one is fetched and the next message still goes out once.
    Without the FCM backend nothing reaches the server and the trace says provider_error."""
    env = mobile_env(fcm_server.worker_env())
    deployment, _ = start(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    phone = add_device(bo, "fcm", PHONE, "bo-phone")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}
    gateway = deployment.gateways[0]

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "lunch at 1?")
    (push,) = fcm_server.wait_for(lambda: fcm_server.sent(PHONE), PUSH_DELAY + SOON, "a push")
    assert push.payload == {
        "type": "message",
        "conversation": str(chat.pk),
        "seq": str(message["seq"]),
        "message_id": str(message["id"]),
        "sender": json.dumps({"id": ana.pk, "display_name": "Ana"}),
        "title": "Ana",
        "body": "lunch at 1?",
        "unread": "1",
        "url": f"/#c{chat.pk}",
    }
    assert push.headers == {"collapse_key": f"c{chat.pk}", "priority": "HIGH"}
    settled()
    rows = trace(gateway, tokens["bo"], chat.pk, message["id"])
    assert [(r["channel"], r["device"], r["decision"], r["provider_status"]) for r in rows] == [
        ("fcm", phone.pk, "sent", "200")
    ]

    read = api(
        gateway, tokens["bo"], "POST", f"/conversations/{chat.pk}/read", {"seq": message["seq"]}
    )
    assert read.status_code == 200, read.text
    fcm_server.wait_for(lambda: len(fcm_server.sent(PHONE)) == 2, SOON, "the removal")
    removal = fcm_server.sent(PHONE)[1]
    assert removal.payload == {
        "type": "remove",
        "conversation": str(chat.pk),
        "up_to_seq": str(message["seq"]),
    }
    assert removal.headers == {"collapse_key": f"c{chat.pk}", "priority": "NORMAL"}
    assert removal.bearer == push.bearer, "the token was cached, not fetched per send"
    assert len(fcm_server.token_requests) == 1

    # The token expires at the server: the worker gets a 401, fetches a new one once.
    with fcm_server.lock:
        fcm_server.tokens.clear()
    (later,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "still on?")
    fcm_server.wait_for(lambda: len(fcm_server.sent(PHONE)) == 3, PUSH_DELAY + SOON, "a push")
    settled()
    assert len(fcm_server.token_requests) == 2
    assert fcm_server.sent(PHONE)[2].bearer != push.bearer
    assert fcm_server.sent(PHONE)[2].payload["body"] == "still on?"
    row = Notification.objects.get(message_id=later["id"], user=bo)
    assert (row.decision, row.attempts) == ("sent", 1)
    assert fcm_server.rejections == ["bad bearer token"]


def test_fcm_unregistered_or_404_deletes_the_device(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    fcm_server: FcmServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo's phone answers 404 UNREGISTERED and his tablet 400 with errorCode
    UNREGISTERED, when Ana sends, then both devices are deleted and traced
    `failed: gone`; a third device answering 400 INVALID_ARGUMENT is kept and traced
    `failed: provider_error`. Without the error mapping the devices would stay."""
    env = mobile_env(fcm_server.worker_env())
    deployment, _ = start(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    phone = add_device(bo, "fcm", PHONE, "bo-phone")
    tablet = add_device(bo, "fcm", TABLET, "bo-tablet")
    watch = add_device(bo, "fcm", "fcm-token-bo-watch-0003", "bo-watch")
    fcm_server.script(PHONE, Answer(404))
    fcm_server.script(TABLET, Answer(400, reason="UNREGISTERED"))
    fcm_server.script(watch.token, Answer(400, reason="INVALID_ARGUMENT"))
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "anyone?")
    rows = decided_trace(deployment.gateways[0], tokens["bo"], chat.pk, message["id"])
    settled()
    assert sorted(
        (r["channel"], r["decision"], r["reason"], r["provider_status"]) for r in rows
    ) == [
        ("fcm", "failed", "gone", "400 UNREGISTERED"),
        ("fcm", "failed", "gone", "404 UNREGISTERED"),
        ("fcm", "failed", "provider_error", "400 INVALID_ARGUMENT"),
    ]
    assert not Device.objects.filter(pk__in=[phone.pk, tablet.pk]).exists()
    assert Device.objects.filter(pk=watch.pk).exists()
    assert fcm_server.sent() == []


def test_fcm_without_credentials_is_provider_error_with_one_warning_at_worker_start(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    fcm_server: FcmServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given a worker with no FCM_CREDENTIALS_FILE, when Ana sends Bo (an Android phone)
    two messages in two conversations, then nothing reaches FCM, both traces say
    `failed: provider_error`, the device is kept, and the worker logged the reason once,
    at start, not per message."""
    env = mobile_env()  # no FCM settings
    deployment, celery = start(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    phone = add_device(bo, "fcm", PHONE, "bo-phone")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (first,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "one")
    (second,) = ws_send(deployment.urls[0], tokens["ana"], group.pk, "two")
    for conversation, message in ((chat.pk, first), (group.pk, second)):
        rows = decided_trace(deployment.gateways[0], tokens["bo"], conversation, message["id"])
        assert [(r["channel"], r["decision"], r["reason"]) for r in rows] == [
            ("fcm", "failed", "provider_error")
        ]
    settled()
    assert Device.objects.filter(pk=phone.pk).exists()
    assert fcm_server.attempts() == []
    log = eventually(lambda: celery.workers[0].output(), what="the worker log")
    assert log.count("fcm devices will get provider_error: FCM_CREDENTIALS_FILE is not set") == 1


def test_fcm_oauth_token_is_reused_until_it_is_about_to_expire(
    tmp_path: Path, settings: Any
) -> None:
    """The backend (in this process, as a pool process runs it) asks the token URI once
    and reuses the token for every push while it has more than TOKEN_MARGIN left; past
    that it asks again. The server hands out tokens living TOKEN_MARGIN + 4 s. Without
    the cache every push would fetch a token; without the expiry check the third push
    would use the old token."""
    with FcmServer(tmp_path, token_lifetime=TOKEN_MARGIN + 4) as server:
        for name, value in server.worker_env().items():
            setattr(settings, name, value)
        backend = FcmBackend.from_settings()
        phone = Device(platform="fcm", token=PHONE)
        payload = {"type": "remove", "conversation": 1, "up_to_seq": 2}

        def push() -> str:
            result = backend.send(phone, payload, topic="c1", urgency="normal", ttl=60)
            assert result.outcome == "sent", result
            return server.sent()[-1].bearer

        first, second = push(), push()
        assert first == second
        assert len(server.token_requests) == 1
        eventually(lambda: server.tokens[first] - TOKEN_MARGIN < time.time(), timeout=10)
        assert push() != first
        assert len(server.token_requests) == 2
        assert server.rejections == []
