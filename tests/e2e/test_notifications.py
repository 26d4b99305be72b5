"""Offline notifications end to end: gateways, a Celery worker and beat, a push service, SMTP.

Real gateway processes take the sends over the WebSocket (a send only writes rows); a
real `celery worker` and `celery beat` decide and send; the local Web Push service
checks VAPID, decrypts every push and records it; the local SMTP server keeps the
emails. Delays are short through the environment (`NOTIFY_PUSH_DELAY=1` ...). Absence
is proven after the worker has decided, from the database (`settled`), never by a
sleep that hopes it was long enough.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import requests

from accounts.models import User
from bench.harness import Deployment, Gateway, RedisServer
from chatclient import ChatClient, bearer_auth
from messaging import services
from messaging.devices import register_device
from messaging.models import (
    Conversation,
    Device,
    EmailDigest,
    Membership,
    Message,
    Notification,
    NotificationDue,
    PushWindow,
)
from tests.e2e.conftest import CeleryProcesses, MakeDeployment, MakeWorkers
from tests.e2e.mailserver import SmtpServer
from tests.e2e.pushservice import Answer, Delivery, PushService
from tests.e2e.wsclient import bearer, drive, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")

SITE_URL = "https://chat.example.org"
PUSH_DELAY = 1.0
EMAIL_DELAY = 2.0
LEASE = 8.0
POLL = 1.0
# Generous bound for "the worker got round to it" on a loaded two-CPU machine.
SOON = 20.0


# --- the stack -------------------------------------------------------------------------


def notify_env(
    push_service: PushService, smtp_server: SmtpServer, **overrides: str
) -> dict[str, str]:
    """Return the settings of gateways and Celery processes: short delays, local services.

    The gateways need them too: the send writes its `due_at` with their NOTIFY_PUSH_DELAY.
    """
    return {
        "NOTIFY_PUSH_DELAY": str(PUSH_DELAY),
        "NOTIFY_EMAIL_DELAY": str(EMAIL_DELAY),
        "NOTIFY_LEASE": str(LEASE),
        "NOTIFY_POLL_INTERVAL": str(POLL),
        "SITE_URL": SITE_URL,
        **push_service.worker_env(),
        **smtp_server.worker_env(),
        **overrides,
    }


def start_stack(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    env: Mapping[str, str],
    settings: Any,
    *,
    gateways: int = 1,
    workers: int = 1,
    beat: bool = True,
) -> tuple[Deployment, CeleryProcesses | None]:
    """Start gateways, then the worker(s) and beat; this process follows the same settings."""
    settings.PUSH_ENDPOINT_ALLOW = [o for o in env["PUSH_ENDPOINT_ALLOW"].split(",") if o]
    settings.NOTIFY_PUSH_DELAY = float(env["NOTIFY_PUSH_DELAY"])
    settings.NOTIFY_EMAIL_DELAY = float(env["NOTIFY_EMAIL_DELAY"])
    settings.SITE_URL = env["SITE_URL"]
    deployment = make_deployment(gateways=gateways, env=env)
    celery = None
    if workers or beat:
        celery = make_workers(deployment, workers=workers, beat=beat, env=env)
    return deployment, celery


def add_webpush_device(push_service: PushService, user: User, name: str) -> Device:
    """Subscribe `name` at the push service and register it as one of `user`'s devices.

    The service's origin (http://127.0.0.1:PORT) is in PUSH_ENDPOINT_ALLOW (`start_stack`).
    """
    subscription = push_service.subscribe(name)
    device, created = register_device(
        user=user, platform="webpush", subscription=subscription, name=name
    )
    assert created
    return device


# --- waiting ---------------------------------------------------------------------------


def eventually(
    probe: Callable[[], T | None], timeout: float = SOON, what: str = "", interval: float = 0.1
) -> T:
    """Return the first truthy result of `probe`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or probe}; last: {result!r}")
        time.sleep(interval)


def unsettled() -> list[str]:
    """Return what the notification pipeline still has to do ([] once it is idle)."""
    left = []
    if NotificationDue.objects.exists():
        left.append(f"{NotificationDue.objects.count()} messages to decide")
    pending = Notification.objects.filter(decision=Notification.Decision.PENDING).count()
    if pending:
        left.append(f"{pending} pending decisions")
    windows = PushWindow.objects.exclude(
        due_at__isnull=True, remove_due_at__isnull=True, dispatched_at__isnull=True
    ).count()
    if windows:
        left.append(f"{windows} push windows due or leased")
    digests = EmailDigest.objects.exclude(due_at__isnull=True, dispatched_at__isnull=True).count()
    if digests:
        left.append(f"{digests} emails due or leased")
    return left


def settled(timeout: float = SOON) -> None:
    """Wait until every message is decided and nothing is due, pending or leased.

    From then on nothing more can be sent without a new event: what the push service
    and the SMTP server hold is all there will be.
    """
    deadline = time.monotonic() + timeout
    while left := unsettled():
        if time.monotonic() > deadline:
            raise AssertionError(f"the pipeline did not settle within {timeout} s; left: {left}")
        time.sleep(0.1)


# --- the protocol and the REST API ----------------------------------------------------


def text(conversation: int, body: str) -> dict[str, Any]:
    return {
        "type": "message.send",
        "conversation": conversation,
        "client_msg_id": str(uuid.uuid4()),
        "body": body,
    }


def ws_send(url: str, token: str, conversation: int, *bodies: str) -> list[dict[str, Any]]:
    """Send `bodies` in order over one socket; return the stored messages (`message.sent`)."""
    stored: list[dict[str, Any]] = []

    async def scenario() -> None:
        socket, _ = await open_socket(url, token)
        for body in bodies:
            sent = await socket.request(**text(conversation, body))
            assert sent["type"] == "message.sent", sent
            stored.append(sent["message"])

    drive(scenario)
    return stored


def api(
    gateway: Gateway, token: str, method: str, path: str, body: Any = None
) -> requests.Response:
    return requests.request(
        method,
        f"{gateway.http_url}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def trace(gateway: Gateway, token: str, conversation: int, message: int) -> list[dict[str, Any]]:
    """Return the member's notification trace of a message, over REST."""
    answer = api(
        gateway, token, "GET", f"/conversations/{conversation}/messages/{message}/notifications"
    )
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def decided_trace(
    gateway: Gateway, token: str, conversation: int, message: int, timeout: float = SOON
) -> list[dict[str, Any]]:
    """Poll the trace until no row of it is pending; return it."""
    return eventually(
        lambda: (
            rows
            if (rows := trace(gateway, token, conversation, message))
            and all(r["decision"] != "pending" for r in rows)
            else None
        ),
        timeout,
        what=f"message {message}'s trace to be decided",
        interval=0.2,
    )


def visible(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the service worker leaves on screen: a `remove` push closes its Topic's notification."""
    return [p for p in shown if p.get("type") != "remove"]


def pushes_to(push_service: PushService, name: str) -> list[Delivery]:
    return push_service.deliveries(name)


# --- 1. end to end ---------------------------------------------------------------------


def test_a_message_to_an_offline_member_is_pushed_once_with_its_payload_and_traced_sent(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo offline with one Web Push device, when Ana sends over a gateway's socket,
    then within the delay plus a few seconds exactly one push reaches Bo's device,
    with the message's payload and headers, and Bo's trace says `sent` with a latency."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    sent_wall = time.time()
    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "hello Bo, lunch?")

    delivery = push_service.wait_for(lambda d: d.name == "bo-laptop", timeout=PUSH_DELAY + SOON)
    assert delivery.received_wall - sent_wall < PUSH_DELAY + 10
    assert delivery.received_wall - sent_wall >= PUSH_DELAY - 0.05
    assert delivery.payload == {
        "type": "message",
        "conversation": chat.pk,
        "seq": message["seq"],
        "message_id": message["id"],
        "sender": {"id": ana.pk, "display_name": "Ana"},
        "title": "Ana",
        "body": "hello Bo, lunch?",
        "unread": 1,
        "url": f"/#c{chat.pk}",
    }
    assert (delivery.topic, delivery.urgency) == (f"c{chat.pk}", "high")
    assert delivery.ttl > 0
    settled()
    assert len(pushes_to(push_service, "bo-laptop")) == 1
    assert push_service.rejections == []
    assert [a.name for a in push_service.attempts] == ["bo-laptop"]

    rows = trace(deployment.gateways[0], tokens["bo"], chat.pk, message["id"])
    assert [
        (r["kind"], r["channel"], r["device"], r["decision"], r["reason"], r["provider_status"])
        for r in rows
    ] == [("message", "webpush", laptop.pk, "sent", None, "201")]
    assert rows[0]["latency_ms"] is not None
    assert PUSH_DELAY * 1000 <= rows[0]["latency_ms"] < (PUSH_DELAY + 10) * 1000
    # The sender is not notified of her own message.
    assert trace(deployment.gateways[0], tokens["ana"], chat.pk, message["id"]) == []


# --- 2. delivered live -----------------------------------------------------------------


def test_a_message_delivered_live_is_not_pushed_and_traced_delivered(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo online in the reference client (which acknowledges `receipt.delivered`),
    when Ana sends, then once the worker has decided nothing was pushed and Bo's trace
    says `suppressed: delivered`."""
    # A longer delay: the receipt must be written before the decision, even on a busy box.
    env = notify_env(push_service, smtp_server, NOTIFY_PUSH_DELAY="3")
    deployment, _ = start_stack(make_deployment, make_workers, env, settings, gateways=2)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}
    stored: dict[str, Any] = {}

    async def scenario() -> None:
        client = ChatClient(deployment.urls[1:], bearer_auth(tokens["bo"]), name="bo")
        await client.connect()
        try:
            a, _ = await open_socket(deployment.urls[0], tokens["ana"])
            sent = await a.request(**text(chat.pk, "are you there?"))
            stored.update(sent["message"])
            got = await client.wait_for_message(lambda m: m["id"] == sent["message"]["id"])
            # The reference client leaves receipts to the app: this app acknowledges.
            await client.mark_delivered(chat.pk, got["seq"])
            rows = await asyncio.to_thread(
                decided_trace, deployment.gateways[0], tokens["bo"], chat.pk, got["id"]
            )
            assert [(r["channel"], r["device"], r["decision"], r["reason"]) for r in rows] == [
                ("webpush", laptop.pk, "suppressed", "delivered")
            ]
        finally:
            await client.close()

    drive(scenario)
    settled()
    assert Membership.objects.get(conversation=chat, user=bo).delivered_seq >= stored["seq"]
    assert push_service.attempts == []
    assert PushWindow.objects.filter(user=bo).count() == 0


# --- 3. coalescing ---------------------------------------------------------------------


def test_a_burst_coalesces_into_one_shown_push_with_the_newest_message_and_unread_count(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo offline, when Ana sends three messages quickly, then Bo's device shows one
    notification (by Topic) with the newest body and unread 3, at most one push went out
    per window, and every other message's trace says `coalesced` (or `sent`, if it went
    out in an earlier window)."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    add_webpush_device(push_service, bo, "bo-laptop")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    messages = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "one", "two", "three")

    push_service.wait_for(
        lambda d: d.name == "bo-laptop" and d.payload["seq"] == messages[-1]["seq"],
        timeout=PUSH_DELAY + SOON,
    )
    settled()
    shown = push_service.shown("bo-laptop")
    assert len(shown) == 1
    assert (shown[0]["body"], shown[0]["unread"], shown[0]["seq"]) == (
        "three",
        3,
        messages[-1]["seq"],
    )
    pushes = pushes_to(push_service, "bo-laptop")
    assert {d.topic for d in pushes} == {f"c{chat.pk}"}
    assert len(pushes) <= len(messages)
    # One push per window: a later push waits NOTIFY_PUSH_DELAY after the one before.
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(pushes)]
    assert all(gap >= PUSH_DELAY - 0.1 for gap in gaps), gaps
    decisions = {
        m["body"]: (r["decision"], r["reason"])
        for m in messages
        for r in decided_trace(deployment.gateways[0], tokens["bo"], chat.pk, m["id"])
    }
    assert decisions["three"] == ("sent", None)
    for body in ("one", "two"):
        assert decisions[body] in {("suppressed", "coalesced"), ("sent", None)}, decisions
    pushed_bodies = [d.payload["body"] for d in pushes]
    assert sorted(pushed_bodies) == sorted(b for b, d in decisions.items() if d[0] == "sent")


# --- 4. removal ------------------------------------------------------------------------


def test_reading_on_another_device_takes_the_push_back_under_the_same_topic(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given a push shown on Bo's laptop, when Bo reads the conversation on another
    device (REST `read`), then a `remove` push with Urgency normal and the same Topic
    reaches the laptop, and nothing is left on its screen."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}
    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "see you at noon")
    push_service.wait_for(lambda d: d.name == "bo-laptop", timeout=PUSH_DELAY + SOON)
    settled()
    assert visible(push_service.shown("bo-laptop"))[0]["seq"] == message["seq"]

    read = api(
        deployment.gateways[0], tokens["bo"], "POST", f"/conversations/{chat.pk}/read",
        {"seq": message["seq"]},
    )  # fmt: skip
    assert read.status_code == 200, read.text

    removal = push_service.wait_for(
        lambda d: d.name == "bo-laptop" and d.payload.get("type") == "remove", timeout=SOON
    )
    assert removal.payload == {
        "type": "remove",
        "conversation": chat.pk,
        "up_to_seq": message["seq"],
    }
    assert (removal.topic, removal.urgency) == (f"c{chat.pk}", "normal")
    assert removal.ttl > 0
    settled()
    assert push_service.shown("bo-laptop") == [removal.payload]  # replaced under its Topic
    assert visible(push_service.shown("bo-laptop")) == []
    assert len(pushes_to(push_service, "bo-laptop")) == 2
    rows = trace(deployment.gateways[0], tokens["bo"], chat.pk, message["id"])
    assert [(r["kind"], r["device"], r["decision"]) for r in rows] == [
        ("message", laptop.pk, "sent"),
        ("remove", laptop.pk, "sent"),
    ]


# --- 5. push service answers -----------------------------------------------------------


def test_a_410_deletes_the_device_and_the_trace_says_failed_gone(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo's subscription answers 410 Gone, when Ana sends, then the device row is
    deleted, nothing is delivered and the trace says `failed: gone` (status 410)."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    push_service.script("bo-laptop", 410)
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "anyone?")

    push_service.wait_for_attempt(lambda a: a.name == "bo-laptop", timeout=PUSH_DELAY + SOON)
    eventually(
        lambda: not Device.objects.filter(pk=laptop.pk).exists(), what="the device to be deleted"
    )
    settled()
    assert [(a.name, a.status) for a in push_service.attempts] == [("bo-laptop", 410)]
    assert push_service.deliveries() == []
    rows = trace(deployment.gateways[0], tokens["bo"], chat.pk, message["id"])
    assert [
        (r["channel"], r["device"], r["decision"], r["reason"], r["provider_status"]) for r in rows
    ] == [("webpush", None, "failed", "gone", "410")]
    # The device is gone for good: the next message finds no device at all.
    (later,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "still there?")
    rows = decided_trace(deployment.gateways[0], tokens["bo"], chat.pk, later["id"])
    assert [(r["channel"], r["decision"], r["reason"]) for r in rows] == [
        ("push", "suppressed", "no_devices")
    ]
    assert len(push_service.attempts) == 1


def test_a_429_is_retried_after_its_retry_after_and_delivered_once(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo's subscription answers 429 with Retry-After 1 once, when Ana sends, then
    the push is tried again no sooner than a second later, delivered once, and its trace
    row says `sent` after 2 attempts."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    push_service.script("bo-laptop", Answer(429, retry_after=1))
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "slow down?")

    push_service.wait_for_attempt(lambda a: a.status == 429, timeout=PUSH_DELAY + SOON)
    refused_at = time.monotonic()
    delivery = push_service.wait_for(lambda d: d.name == "bo-laptop", timeout=SOON)
    assert delivery.received_at - refused_at >= 1.0 - 0.1, "Retry-After was honoured"
    assert delivery.payload["message_id"] == message["id"]
    settled()
    assert [(a.name, a.status) for a in push_service.attempts] == [
        ("bo-laptop", 429),
        ("bo-laptop", 201),
    ]
    assert len(push_service.deliveries()) == 1
    row = Notification.objects.get(message_id=message["id"], user=bo)
    assert (row.decision, row.attempts, row.provider_status, row.device_id) == (
        "sent",
        2,
        "201",
        laptop.pk,
    )
    assert Device.objects.filter(pk=laptop.pk).exists()


# --- 6. R12: a worker killed mid-send ---------------------------------------------------


def test_r12_a_push_whose_worker_was_killed_mid_request_is_made_up_once_under_its_topic(
    record_property: Callable[[str, object], None],
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given the push service holds Bo's push request open, when the worker's whole
    process group is SIGKILLed then restarted 3 s later, then once the lease expires the
    push is sent again with the same Topic: Bo's device shows one notification, it came
    well within 60 s of the restart, and the trace ends `sent` once per device."""
    # PUSH_TIMEOUT above the hold: the worker must die waiting, not give up first. A
    # 5 s lease (8 s in the other tests) still outlasts the hold before the kill.
    env = notify_env(push_service, smtp_server, PUSH_TIMEOUT="30", NOTIFY_LEASE="5")
    deployment, celery = start_stack(make_deployment, make_workers, env, settings)
    assert celery is not None
    worker = celery.workers[0]
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    push_service.script("bo-laptop", Answer(201, hold=True))
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    (message,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "did you get this?")
    held = push_service.wait_for_held("bo-laptop", timeout=PUSH_DELAY + SOON)
    worker.kill_group()
    assert worker.group_pids() == []
    # The service had the whole request: it delivers it though the sender never heard back.
    assert push_service.release_held(deliver=True) == 1
    # Recorded by the service's request thread once released.
    eventually(lambda: len(pushes_to(push_service, "bo-laptop")) == 1, timeout=5)
    time.sleep(3)  # the scenario: the worker stays down for 3 s
    restarted = time.monotonic()
    worker.start()

    eventually(
        lambda: len(pushes_to(push_service, "bo-laptop")) >= 2,
        timeout=60,
        what="the push to be made up after the restart",
    )
    made_up = pushes_to(push_service, "bo-laptop")[1]
    record_property("made_up_after_restart_s", round(made_up.received_at - restarted, 2))
    assert made_up.received_at - restarted < 60
    settled()
    pushes = pushes_to(push_service, "bo-laptop")
    assert len(pushes) == 2, "the held one and the one made up"
    assert made_up.payload == held.payload
    assert {d.topic for d in pushes} == {f"c{chat.pk}"}
    assert push_service.shown("bo-laptop") == [held.payload]
    rows = list(Notification.objects.filter(message_id=message["id"], user=bo))
    assert [(r.kind, r.device_id, r.decision) for r in rows] == [("message", laptop.pk, "sent")]
    assert rows[0].attempts == 1


# --- 7. R14: no worker, then a broker restart -----------------------------------------


def test_r14_messages_sent_while_no_worker_runs_are_all_notified_once_it_starts(
    record_property: Callable[[str, object], None],
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
    cy: User,
) -> None:
    """Given beat runs but no worker for 30 s, when Ana sends to offline Bo and to a
    group with Bo and Cy meanwhile, then nothing is pushed; once a worker starts, each
    member gets one push per conversation with the newest message: none lost, none doubled."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings, workers=0)
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=ana, title="Trip", member_ids=[bo.pk, cy.pk])
    add_webpush_device(push_service, bo, "bo-laptop")
    add_webpush_device(push_service, cy, "cy-phone")
    tokens = {"ana": bearer(ana)}
    sent: dict[int, list[dict[str, Any]]] = {direct.pk: [], group.pk: []}
    plan = [
        (0.0, direct.pk, "d1"),
        (5.0, group.pk, "g1"),
        (10.0, direct.pk, "d2"),
        (15.0, group.pk, "g2"),
        (20.0, direct.pk, "d3"),
    ]

    async def scenario() -> None:
        socket, _ = await open_socket(deployment.urls[0], tokens["ana"])
        start = time.monotonic()
        for at, conversation, body in plan:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            answer = await socket.request(**text(conversation, body))
            assert answer["type"] == "message.sent", answer
            sent[conversation].append(answer["message"])
        await asyncio.sleep(max(0.0, start + 30.0 - time.monotonic()))

    drive(scenario)
    assert push_service.attempts == []
    assert NotificationDue.objects.count() == len(plan), "nobody decided anything"
    assert not Notification.objects.exists()

    started = time.monotonic()
    make_workers(deployment, workers=1, beat=False, env=env)

    settled(timeout=SOON + 10)
    record_property("settled_after_worker_start_s", round(time.monotonic() - started, 2))
    shown = {name: push_service.shown(name) for name in ("bo-laptop", "cy-phone")}
    newest_direct, newest_group = sent[direct.pk][-1], sent[group.pk][-1]
    assert sorted(
        (p["conversation"], p["body"], p["unread"]) for p in shown["bo-laptop"]
    ) == sorted([(direct.pk, newest_direct["body"], 3), (group.pk, newest_group["body"], 2)])
    assert [(p["conversation"], p["body"], p["unread"], p["title"]) for p in shown["cy-phone"]] == [
        (group.pk, newest_group["body"], 2, "Trip")
    ]
    # All decided in one tick: one push per member and conversation, nothing else.
    assert len(push_service.deliveries("bo-laptop")) == 2
    assert len(push_service.deliveries("cy-phone")) == 1
    assert push_service.rejections == []
    _assert_one_sent_per_member_and_conversation([bo, cy], [direct, group])


def _assert_one_sent_per_member_and_conversation(
    members: list[User], conversations: list[Conversation]
) -> None:
    """Each member's trace in each conversation: the newest message sent, the rest coalesced."""
    for conversation in conversations:
        newest = Message.objects.filter(conversation=conversation, kind="text").latest("seq")
        for member in members:
            if not Membership.objects.filter(conversation=conversation, user=member).exists():
                continue
            rows = Notification.objects.filter(
                user=member, conversation=conversation, kind="message"
            )
            got = sorted((r.seq, r.decision, r.reason) for r in rows)
            texts = Message.objects.filter(conversation=conversation, kind="text").order_by("seq")
            assert got == [
                (m.seq, "sent", "") if m.seq == newest.seq else (m.seq, "suppressed", "coalesced")
                for m in texts
            ], (member.username, conversation.pk, got)


def test_r14_a_broker_restart_delays_notifications_but_loses_none(
    record_property: Callable[[str, object], None],
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    redis_server: RedisServer,
    settings: Any,
    ana: User,
    bo: User,
    cy: User,
) -> None:
    """Given a worker and beat on the deployment's Redis, when that Redis is stopped while
    Ana's messages come due and started again (empty), then every member is notified once
    per conversation after it is back: what was due lived in PostgreSQL, not the broker."""
    env = notify_env(push_service, smtp_server)
    start_stack(make_deployment, make_workers, env, settings)
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=ana, title="Trip", member_ids=[bo.pk, cy.pk])
    add_webpush_device(push_service, bo, "bo-laptop")
    add_webpush_device(push_service, cy, "cy-phone")

    redis_server.stop()
    # The gateways need Redis for more than the broker; the sends are written here, as a
    # gateway would write them (a send only writes rows), while the broker is down.
    stored = [
        services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
        ).message
        for conversation, body in ((direct, "d1"), (group, "g1"), (direct, "d2"))
    ]
    due_by = max(m.created_at for m in stored).timestamp() + PUSH_DELAY
    time.sleep(max(0.0, due_by + 2 * POLL - time.time()))  # the scenario: due while down
    assert push_service.attempts == []
    redis_server.start()
    back = time.monotonic()

    settled(timeout=60)
    record_property("settled_after_broker_back_s", round(time.monotonic() - back, 2))
    shown = {name: push_service.shown(name) for name in ("bo-laptop", "cy-phone")}
    assert sorted((p["conversation"], p["body"], p["unread"]) for p in shown["bo-laptop"]) == [
        (direct.pk, "d2", 2),
        (group.pk, "g1", 1),
    ]
    assert [(p["conversation"], p["body"]) for p in shown["cy-phone"]] == [(group.pk, "g1")]
    assert len(push_service.deliveries("bo-laptop")) == 2
    assert len(push_service.deliveries("cy-phone")) == 1
    _assert_one_sent_per_member_and_conversation([bo, cy], [direct, group])


# --- 8. R15: the gateway dies right after the commit ----------------------------------


def test_r15_a_send_whose_gateway_is_killed_right_after_the_commit_is_still_notified(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Ana's send answered `message.sent` by gateway 0, when gateway 0 is SIGKILLed
    at once, then the worker still decides and pushes the message to offline Bo."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings, gateways=2)
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}
    stored: dict[str, Any] = {}

    async def scenario() -> None:
        socket, _ = await open_socket(deployment.urls[0], tokens["ana"])
        sent = await socket.request(**text(chat.pk, "before the crash"))
        deployment.gateways[0].kill()
        assert sent["type"] == "message.sent", sent
        stored.update(sent["message"])

    drive(scenario)
    assert not deployment.gateways[0].running

    delivery = push_service.wait_for(lambda d: d.name == "bo-laptop", timeout=PUSH_DELAY + SOON)
    assert (delivery.payload["message_id"], delivery.payload["body"]) == (
        stored["id"],
        "before the crash",
    )
    settled()
    assert len(push_service.deliveries()) == 1
    rows = trace(deployment.gateways[1], tokens["bo"], chat.pk, stored["id"])
    assert [(r["device"], r["decision"]) for r in rows] == [(laptop.pk, "sent")]


# --- 9. email --------------------------------------------------------------------------


def test_a_missed_message_email_lists_the_unread_and_one_click_turns_emails_off(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo with an email address and no devices, when Ana sends two messages, then
    after NOTIFY_EMAIL_DELAY one email lists both (text and HTML) with one-click
    List-Unsubscribe headers; when that URL is POSTed as a mail client does (no cookie,
    no CSRF token), then Bo's emails are off and a later message brings no email."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    User.objects.filter(pk=bo.pk).update(email="bo@example.org")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}

    first, second = ws_send(
        deployment.urls[0], tokens["ana"], chat.pk, "Lunch at 12:30?", "Or 13:00 <maybe>"
    )

    mail = smtp_server.wait_for(
        lambda m: "bo@example.org" in m.rcpt_tos, timeout=EMAIL_DELAY + SOON
    )
    sent_at = Message.objects.get(pk=first["id"]).created_at.timestamp()
    assert time.time() - sent_at >= EMAIL_DELAY - 0.05
    settled()
    assert len(smtp_server.messages) == 1
    assert mail.subject == "2 unread messages from Ana"
    assert mail.message["To"] == "bo@example.org"
    for body in ("Lunch at 12:30?", "Or 13:00 <maybe>"):
        assert body in mail.text
    assert "Lunch at 12:30?" in mail.html
    assert "Or 13:00 &lt;maybe&gt;" in mail.html, "escaped in HTML"
    assert f"{SITE_URL}/#c{chat.pk}" in mail.text
    # Folded onto its own line (the URL is long): unfolding keeps the leading space.
    unsubscribe = str(mail.message["List-Unsubscribe"]).strip()
    assert unsubscribe.startswith(f"<{SITE_URL}/notifications/unsubscribe/")
    assert unsubscribe.endswith("/>")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    rows = trace(deployment.gateways[0], tokens["bo"], chat.pk, second["id"])
    assert [(r["channel"], r["decision"], r["reason"]) for r in rows] == [
        ("push", "suppressed", "no_devices"),
        ("email", "sent", None),
    ]

    # The mail client's one-click POST (RFC 8058): plain HTTP, no cookie, no CSRF token.
    path = urlsplit(unsubscribe.strip("<>")).path
    answer = requests.post(
        f"{deployment.gateways[0].http_url}{path}",
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text[:500]
    bo.refresh_from_db()
    assert bo.email_notifications is False

    (later,) = ws_send(deployment.urls[0], tokens["ana"], chat.pk, "hello?")
    rows = decided_trace(deployment.gateways[0], tokens["bo"], chat.pk, later["id"])
    assert [(r["channel"], r["decision"], r["reason"]) for r in rows] == [
        ("push", "suppressed", "no_devices")
    ]
    settled()
    assert len(smtp_server.messages) == 1


# --- 10. mentions ----------------------------------------------------------------------


def test_at_the_mentions_level_only_a_message_naming_the_member_is_pushed(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    push_service: PushService,
    smtp_server: SmtpServer,
    settings: Any,
    ana: User,
    bo: User,
) -> None:
    """Given Bo set the group to `mentions` (REST PATCH), when Ana sends a message that
    does not name him and then one with `@bo`, then the first is `suppressed: level` and
    only the second is pushed."""
    env = notify_env(push_service, smtp_server)
    deployment, _ = start_stack(make_deployment, make_workers, env, settings)
    group = services.create_group(creator=ana, title="Trip", member_ids=[bo.pk])
    laptop = add_webpush_device(push_service, bo, "bo-laptop")
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}
    changed = api(
        deployment.gateways[0], tokens["bo"], "PATCH", f"/conversations/{group.pk}",
        {"notify": "mentions"},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json()["notify"] == "mentions"

    quiet, named = ws_send(
        deployment.urls[0], tokens["ana"], group.pk, "tickets are booked", "@bo bring the map"
    )

    delivery = push_service.wait_for(lambda d: d.name == "bo-laptop", timeout=PUSH_DELAY + SOON)
    settled()
    assert named["mentions"] == [bo.pk] and quiet["mentions"] == []
    assert (delivery.payload["message_id"], delivery.payload["body"]) == (
        named["id"],
        "@bo bring the map",
    )
    assert delivery.payload["title"] == "Trip"
    assert len(push_service.deliveries()) == 1
    quiet_rows = trace(deployment.gateways[0], tokens["bo"], group.pk, quiet["id"])
    assert [(r["device"], r["decision"], r["reason"]) for r in quiet_rows] == [
        (laptop.pk, "suppressed", "level")
    ]
    named_rows = trace(deployment.gateways[0], tokens["bo"], group.pk, named["id"])
    assert [(r["device"], r["decision"]) for r in named_rows] == [(laptop.pk, "sent")]
