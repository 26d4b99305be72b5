"""APNs end to end: a real gateway, Celery worker and beat, a local APNs over TLS + HTTP/2.

The server (`bench.pushfakes.ApnsServer`, built on `h2`) checks the provider JWT
(`kid`, `iss`, `iat`), the headers and the 4 KB limit, answers what each test scripts,
and counts its TLS connections. The worker trusts its self-signed certificate through
APNS_CA_FILE.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from accounts.models import User
from bench.pushfakes import Answer, ApnsServer
from messaging import services
from messaging.models import Device, Notification
from messaging.push.apns import MAX_PAYLOAD, apns_body
from tests.e2e.conftest import MakeDeployment, MakeWorkers
from tests.e2e.test_notifications import SOON, api, decided_trace, eventually, settled, ws_send
from tests.e2e.wsclient import bearer
from tests.push.stack import PUSH_DELAY, add_device, mobile_env, start

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def token(n: int) -> str:
    return f"{n:064x}"


def test_apns_body_is_cut_to_4_kb_with_the_preview_shortened() -> None:
    """A preview too long for 4 KB is cut (ending in an ellipsis) so the whole JSON fits,
    and the rest of the payload is kept; a short one is left alone. Proves the cut: the
    uncut body would be over 4 KB. A security notice is an alert too (no badge)."""
    payload = {
        "type": "message",
        "conversation": 7,
        "title": "Ana",
        "body": "é" * 5000,
        "unread": 2,
    }
    body = apns_body(payload, thread="c7")
    assert len(json.dumps(payload, ensure_ascii=False).encode()) > MAX_PAYLOAD
    assert MAX_PAYLOAD - 8 < len(body) <= MAX_PAYLOAD
    decoded = json.loads(body)
    assert decoded["aps"]["alert"]["body"].endswith("…")
    assert decoded["aps"]["alert"]["title"] == "Ana"
    assert (decoded["aps"]["badge"], decoded["aps"]["thread-id"], decoded["conversation"]) == (
        2,
        "c7",
        7,
    )
    short = json.loads(apns_body({**payload, "body": "hi"}, thread="c7"))
    assert short["aps"]["alert"]["body"] == "hi"
    notice = json.loads(
        apns_body(
            {"type": "security", "title": "A device left", "body": "…", "url": "/"}, thread="x"
        )
    )
    assert notice["aps"]["alert"] == {"title": "A device left", "body": "…"}


def test_apns_alerts_carry_the_total_unread_badge_and_a_removal_over_one_connection(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    apns_server: ApnsServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo offline with an iPhone, when Ana writes in a direct chat and then twice in
    a group, then the alerts carry apns-push-type alert, priority 10, apns-collapse-id and
    thread-id c<id>, and a badge counting Bo's unread across both conversations (1, then
    3); when Bo reads the direct chat, a `background` push with the same collapse id takes
    it back. Every push went over one HTTP/2 connection with one provider JWT."""
    env = mobile_env(apns_server.worker_env())
    deployment, _ = start(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    iphone = add_device(bo, "apns", token(1), "bo-iphone")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (first,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "hi Bo")
    apns_server.wait_for(lambda: apns_server.sent(iphone.token), PUSH_DELAY + SOON, "the alert")
    ws_send(deployment.urls[0], tokens["ana"], group.pk, "team lunch", "at noon")
    last = apns_server.wait_for(
        lambda: [
            p
            for p in apns_server.sent(iphone.token)
            if p.payload.get("aps", {}).get("alert", {}).get("body") == "at noon"
        ],
        PUSH_DELAY + SOON,
        "the group's alert",
    )[0]
    settled()
    alert = apns_server.sent(iphone.token)[0]
    assert alert.payload["aps"] == {
        "alert": {"title": "Ana", "body": "hi Bo"},
        "badge": 1,
        "sound": "default",
        "thread-id": f"c{chat.pk}",
        "mutable-content": 1,
    }
    assert (alert.payload["type"], alert.payload["message_id"]) == ("message", first["id"])
    assert {
        k: alert.headers[k] for k in ("apns-push-type", "apns-priority", "apns-collapse-id")
    } == {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-collapse-id": f"c{chat.pk}",
    }
    assert last.payload["aps"]["badge"] == 3, "1 unread in the chat + 2 in the group"
    assert last.payload["aps"]["alert"]["title"] == "Team"
    assert last.payload["aps"]["thread-id"] == f"c{group.pk}"

    read = api(
        deployment.gateways[0], tokens["bo"], "POST", f"/conversations/{chat.pk}/read",
        {"seq": first["seq"]},
    )  # fmt: skip
    assert read.status_code == 200, read.text
    removal = apns_server.wait_for(
        lambda: [p for p in apns_server.sent(iphone.token) if p.payload.get("type") == "remove"],
        SOON,
        "the removal",
    )[0]
    assert removal.payload == {
        "aps": {"content-available": 1, "thread-id": f"c{chat.pk}"},
        "type": "remove",
        "conversation": chat.pk,
        "up_to_seq": first["seq"],
    }
    assert (removal.headers["apns-push-type"], removal.headers["apns-priority"]) == (
        "background",
        "5",
    )
    assert removal.headers["apns-collapse-id"] == f"c{chat.pk}"
    settled()
    assert apns_server.connections == 1
    assert len({p.bearer for p in apns_server.attempts()}) == 1
    assert apns_server.rejections == []


def test_apns_error_answers_delete_renew_retry_or_fail(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    apns_server: ApnsServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given four iPhones of Bo answering 410 Unregistered, 400 BadDeviceToken, 403
    ExpiredProviderToken once, and 429/503 four times, when Ana sends, then: the first
    two are deleted (`failed: gone`); the third is sent after one JWT renewal in the same
    attempt; the fourth is tried 4 times (3 retries) then fails `provider_error`. Then a
    fifth iPhone answering ExpiredProviderToken twice fails `provider_error` after
    renewing once only.

    The fifth comes with a second message: APNs refuses an expired JWT for every device,
    so a phone refusing even the renewed JWT, beside the phone whose renewal must
    succeed, could make that renewal fail too, depending on which of them sent with the
    other's fresh JWT first (the order of requests on one connection)."""
    env = mobile_env(apns_server.worker_env())
    deployment, _ = start(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    phones = [add_device(bo, "apns", token(n), f"bo-iphone-{n}") for n in range(1, 5)]
    gone, bad, renewed, busy = phones
    apns_server.script(gone.token, Answer(410, "Unregistered"))
    apns_server.script(bad.token, Answer(400, "BadDeviceToken"))
    apns_server.script(renewed.token, Answer(403, "ExpiredProviderToken"))
    apns_server.script(
        busy.token,
        *(Answer(status, "TooManyRequests", retry_after=0) for status in (429, 503, 429, 429)),
    )
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "ping")
    decided_trace(deployment.gateways[0], tokens["bo"], chat.pk, message["id"], timeout=60)
    settled()
    rows = {r.device_key: r for r in Notification.objects.filter(message_id=message["id"], user=bo)}
    outcome = {
        d.name: (rows[d.pk].decision, rows[d.pk].reason, rows[d.pk].attempts) for d in phones
    }
    assert outcome == {
        gone.name: ("failed", "gone", 1),
        bad.name: ("failed", "gone", 1),
        renewed.name: ("sent", "", 1),
        busy.name: ("failed", "provider_error", 4),
    }
    assert set(Device.objects.filter(user=bo).values_list("pk", flat=True)) == {
        renewed.pk,
        busy.pk,
    }
    attempts = [p.status for p in apns_server.attempts(renewed.token)]
    assert attempts == [403, 200]
    first, second = apns_server.attempts(renewed.token)
    assert first.bearer != second.bearer, "the provider JWT was renewed"
    # The fourth phone's pushes run beside the others, so the JWT the third phone left
    # expired may answer one of its requests 403 (0 or 1 times, by timing). Such a 403 is
    # followed by a request with a renewed JWT, never the same one.
    busy_pushes = apns_server.attempts(busy.token)
    assert [p.status for p in busy_pushes if p.status != 403] == [429, 503, 429, 429]
    assert sum(p.status == 403 for p in busy_pushes) <= 1
    for before, after in itertools.pairwise(busy_pushes):
        if before.status == 403:
            assert after.bearer != before.bearer, "an expired JWT was sent again"

    expired = add_device(bo, "apns", token(5), "bo-iphone-5")
    apns_server.script(
        expired.token, Answer(403, "ExpiredProviderToken"), Answer(403, "ExpiredProviderToken")
    )
    (again,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "ping again")
    decided_trace(deployment.gateways[0], tokens["bo"], chat.pk, again["id"], timeout=60)
    settled()
    row = Notification.objects.get(message_id=again["id"], user=bo, device_key=expired.pk)
    assert (row.decision, row.reason, row.attempts) == ("failed", "provider_error", 1)
    assert row.provider_status == "403 ExpiredProviderToken"
    expired_pushes = apns_server.attempts(expired.token)
    assert [p.status for p in expired_pushes] == [403, 403]
    assert expired_pushes[0].bearer != expired_pushes[1].bearer, "renewed once"
    assert Device.objects.filter(pk=expired.pk).exists()
    assert apns_server.rejections == []


def test_apns_pushes_to_several_devices_go_side_by_side_on_one_connection(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    apns_server: ApnsServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given six iPhones of Bo on a server that answers each request after 0.5 s, one of
    them 410 Unregistered, when Ana sends, then the worker has several requests in flight
    at once (PUSH_CONCURRENCY) on its one HTTP/2 connection, each phone gets exactly one
    request, five are sent and the gone one is deleted, with no protocol error."""
    env = mobile_env(apns_server.worker_env(), PUSH_CONCURRENCY="8")
    deployment, _ = start(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    phones = [add_device(bo, "apns", token(n), f"bo-iphone-{n}") for n in range(1, 7)]
    apns_server.default = Answer(delay=0.5)
    apns_server.script(phones[0].token, Answer(410, "Unregistered", delay=0.5))

    (message,) = ws_send(deployment.urls[0], bearer(ana), chat.pk, "all of them")
    decided_trace(deployment.gateways[0], bearer(bo), chat.pk, message["id"], timeout=60)
    settled()

    assert apns_server.max_in_flight > 1, "the requests went one after another"
    assert sorted(p.token for p in apns_server.attempts()) == sorted(p.token for p in phones)
    assert {p.token for p in apns_server.sent()} == {p.token for p in phones[1:]}
    assert not Device.objects.filter(pk=phones[0].pk).exists()
    assert apns_server.connections == 1
    assert apns_server.rejections == []


def test_apns_push_whose_worker_was_killed_mid_request_is_shown_once(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    apns_server: ApnsServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given APNs holds the request to Bo's iPhone unanswered, when the worker's whole
    process group is SIGKILLed and restarted, then once the lease expires the push is sent
    again with the same apns-collapse-id (so the phone shows one notification), and the
    trace ends `sent` once for the device, well within 60 s of the restart."""
    # A 5 s lease (8 s in the other tests) still outlasts the hold before the kill.
    env = mobile_env(apns_server.worker_env(), PUSH_TIMEOUT="30", NOTIFY_LEASE="5")
    deployment, celery = start(make_deployment, make_workers, env, settings)
    worker = celery.workers[0]
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    iphone = add_device(bo, "apns", token(9), "bo-iphone")
    apns_server.script(iphone.token, Answer(200, hold=True))
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "did you get this?")
    apns_server.wait_for(lambda: apns_server.held, PUSH_DELAY + SOON, "the held request")
    worker.kill_group()
    assert worker.group_pids() == []
    restarted = time.monotonic()
    worker.start()

    eventually(
        lambda: len(apns_server.sent(iphone.token)) >= 2,
        timeout=60,
        what="the push to be made up after the restart",
    )
    settled()
    held, made_up = apns_server.sent(iphone.token)
    assert made_up.received_at - restarted < 60
    assert made_up.payload == held.payload
    assert {p.headers["apns-collapse-id"] for p in (held, made_up)} == {f"c{chat.pk}"}
    assert apns_server.connections == 2, "one per worker process lifetime"
    rows = list(Notification.objects.filter(message_id=message["id"], user=bo))
    assert [(r.kind, r.device_id, r.decision, r.attempts) for r in rows] == [
        ("message", iphone.pk, "sent", 1)
    ]
