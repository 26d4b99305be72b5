"""Tests of the fake push service, SMTP server and Celery processes: real protocol, failures."""

import json
import os
import re
import smtplib
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import pytest
import requests
from celery import Celery
from py_vapid import Vapid  # type: ignore[import-untyped,unused-ignore]
from pywebpush import WebPusher  # type: ignore[import-untyped,unused-ignore]

from bench.harness import LOCALHOST, Deployment, HarnessError, RedisServer, redis_db_url
from tests.e2e.conftest import MakeDeployment, MakeWorkers
from tests.e2e.mailserver import SmtpServer
from tests.e2e.pushservice import Answer, PushService, Trap, vapid_keypair

pytestmark = pytest.mark.e2e


def push(
    service: PushService,
    subscription: Mapping[str, Any],
    payload: Any,
    *,
    private_key: str | None = None,
    claims: dict[str, Any] | None = None,
    encrypt_to: Mapping[str, Any] | None = None,
    headers: dict[str, str | None] | None = None,
    timeout: float = 5.0,
) -> requests.Response:
    """Send a push the way the server does: pywebpush encode, py_vapid sign, plain POST."""
    body = WebPusher(dict(encrypt_to or subscription)).encode(
        json.dumps(payload).encode(), "aes128gcm"
    )["body"]
    vapid = Vapid.from_string(private_key or service.vapid_private)
    sent: dict[str, str | None] = {
        **vapid.sign({"aud": service.origin, "sub": "mailto:ops@example.com", **(claims or {})}),
        "TTL": "60",
        "Urgency": "high",
        "Topic": "c12",
        "Content-Encoding": "aes128gcm",
        **(headers or {}),
    }
    return requests.post(
        subscription["endpoint"],
        data=body,
        headers={k: v for k, v in sent.items() if v is not None},
        timeout=timeout,
    )


def test_vapid_keypair_is_raw_base64url_that_py_vapid_reads() -> None:
    public, private = vapid_keypair()

    assert re.fullmatch(r"[A-Za-z0-9_-]{87}", public), "65 bytes, no padding"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", private), "32 bytes, no padding"
    assert vapid_keypair() != (public, private)


def test_a_real_push_is_decrypted_and_recorded(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    push_service.subscribe("bo")
    payload = {"type": "message", "conversation": 12, "body": "héllo"}

    response = push(push_service, sub, payload)

    assert response.status_code == 201
    assert response.headers["Location"].startswith(f"{push_service.origin}/message/")
    delivery = push_service.wait_for(lambda d: d.name == "ana", timeout=1)
    assert delivery.payload == payload
    assert (delivery.topic, delivery.urgency, delivery.ttl) == ("c12", "high", 60)
    assert delivery.headers["content-encoding"] == "aes128gcm"
    assert push_service.deliveries("bo") == []
    assert push_service.rejections == []
    with pytest.raises(AssertionError, match=r"nothing matched within 0\.2 s"):
        push_service.wait_for(lambda d: d.name == "bo", timeout=0.2)
    assert sub["endpoint"].startswith(f"{push_service.origin}/push/")
    assert set(sub["keys"]) == {"p256dh", "auth"}


def test_vapid_parameters_in_either_order_with_spaces_are_accepted(
    push_service: PushService,
) -> None:
    sub = push_service.subscribe("ana")
    token = Vapid.from_string(push_service.vapid_private).sign(
        {"aud": push_service.origin, "sub": "https://chat.example.com"}
    )["Authorization"]
    t, k = re.fullmatch(r"vapid t=(\S+),k=(\S+)", token).groups()  # type: ignore[union-attr]

    for authorization in (f"vapid k={k}, t={t}", f"vapid t={t} ,  k={k}"):
        assert push(push_service, sub, {}, headers={"Authorization": authorization}).ok

    assert len(push_service.deliveries("ana")) == 2
    assert push_service.rejections == []


def test_bad_pushes_are_rejected_and_never_delivered(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    other = push_service.subscribe("bo")
    _other_public, other_private = vapid_keypair()
    now = int(time.time())
    token = Vapid.from_string(push_service.vapid_private).sign(
        {"aud": push_service.origin, "sub": "mailto:ops@example.com"}
    )["Authorization"]
    bad: dict[str, dict[str, Any]] = {
        "another VAPID key": {"private_key": other_private},
        "expired JWT": {"claims": {"exp": now - 60}},
        "JWT valid for 2 days": {"claims": {"exp": now + 2 * 86400}},
        "wrong aud": {"claims": {"aud": "http://127.0.0.1:1"}},
        "encrypted to another subscription": {"encrypt_to": other},
        "no TTL": {"headers": {"TTL": None}},
        "negative TTL": {"headers": {"TTL": "-1"}},
        "bad Urgency": {"headers": {"Urgency": "urgent"}},
        "Topic too long": {"headers": {"Topic": "t" * 33}},
        "Topic not base64url": {"headers": {"Topic": "c:12"}},
        "aesgcm encoding": {"headers": {"Content-Encoding": "aesgcm"}},
        "no Authorization": {"headers": {"Authorization": None}},
        "old WebPush scheme": {"headers": {"Authorization": "WebPush " + token.split()[1]}},
        "k but no t": {"headers": {"Authorization": token.split(",")[0].replace("t=", "k=")}},
    }
    # py_vapid refuses to sign an http: sub unless told not to check it.
    bad["sub not mailto/https"] = {"headers": {"Authorization": _token_with_sub(push_service)}}

    statuses = {
        reason: push(push_service, sub, {"n": 1}, **kwargs).status_code
        for reason, kwargs in bad.items()
    }

    assert all(status in (400, 401) for status in statuses.values()), statuses
    assert push_service.deliveries() == []
    assert len(push_service.rejections) == len(bad)
    assert [r.name for r in push_service.rejections] == ["ana"] * len(bad)
    reasons = " | ".join(r.reason for r in push_service.rejections)
    for fragment in ("not the subscription's VAPID key", "expired", "24 h", "aud", "decrypt"):
        assert fragment in reasons
    # And the same request done right is delivered.
    assert push(push_service, sub, {"n": 2}).status_code == 201
    assert [d.payload for d in push_service.deliveries()] == [{"n": 2}]


def _token_with_sub(service: PushService) -> str:
    vapid = Vapid.from_string(service.vapid_private)
    vapid.conf["no-strict"] = True
    header = vapid.sign({"aud": service.origin, "sub": "http://example.com"})
    return str(header["Authorization"])


def test_unknown_endpoint_is_404_and_oversized_body_413(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    unknown = {**sub, "endpoint": f"{push_service.origin}/push/nobody"}

    assert push(push_service, unknown, {}, encrypt_to=sub).status_code == 404
    assert push(push_service, sub, {"x": "y" * 5000}).status_code == 413
    assert push_service.attempts[0].name is None
    assert push_service.deliveries() == []


def test_scripted_answers_are_given_in_order_then_201(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    push_service.script("ana", 410, Answer(429, retry_after=7, body=b"slow down"), 500)

    first = push(push_service, sub, {"n": 1})
    second = push(push_service, sub, {"n": 2})
    third = push(push_service, sub, {"n": 3})
    fourth = push(push_service, sub, {"n": 4})

    assert first.status_code == 410
    assert (second.status_code, second.headers["Retry-After"], second.content) == (
        429,
        "7",
        b"slow down",
    )
    assert third.status_code == 500
    assert fourth.status_code == 201
    assert [(a.name, a.status, a.topic) for a in push_service.attempts] == [
        ("ana", 410, "c12"),
        ("ana", 429, "c12"),
        ("ana", 500, "c12"),
        ("ana", 201, "c12"),
    ]
    assert [d.payload for d in push_service.deliveries()] == [{"n": 4}]
    assert push_service.rejections == []


def test_unsubscribed_endpoint_answers_410(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    push_service.unsubscribe("ana")

    assert push(push_service, sub, {}).status_code == 410
    assert push_service.deliveries() == []


def test_a_later_push_with_the_same_topic_replaces_the_earlier(
    push_service: PushService,
) -> None:
    sub = push_service.subscribe("ana")

    push(push_service, sub, {"n": 1}, headers={"Topic": "c12"})
    push(push_service, sub, {"n": 2}, headers={"Topic": "c13"})
    push(push_service, sub, {"n": 3}, headers={"Topic": "c12", "Urgency": "normal"})
    push(push_service, sub, {"n": 4}, headers={"Topic": None})
    push(push_service, sub, {"n": 5}, headers={"Topic": None})

    assert len(push_service.deliveries("ana")) == 5
    assert push_service.shown("ana") == [{"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}]
    assert push_service.shown("bo") == []


def _push_in_thread(
    service: PushService, sub: Mapping[str, Any], payload: Any, timeout: float = 10.0
) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(push(service, sub, payload, timeout=timeout))
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_hold_keeps_the_request_open_until_released(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    push_service.script("ana", Answer(201, hold=True))
    thread, outcome = _push_in_thread(push_service, sub, {"n": 1})

    held = push_service.wait_for_held("ana", timeout=5)
    thread.join(0.5)

    assert thread.is_alive(), "the sender is still waiting for an answer"
    assert held.payload == {"n": 1}
    assert push_service.attempts[-1].status == "held"
    assert push_service.deliveries() == []
    assert push_service.release_held() == 1
    thread.join(5)
    assert outcome[0].status_code == 201
    assert push_service.deliveries() == [], "released without `deliver`: not delivered"
    assert push_service.held == []


def test_a_held_request_may_be_delivered_on_release(push_service: PushService) -> None:
    sub = push_service.subscribe("ana")
    push_service.script("ana", Answer(201, hold=True))

    # The sender gives up (as a killed worker would); the service still has the message.
    with pytest.raises(requests.ReadTimeout):
        push(push_service, sub, {"n": 1}, timeout=0.5)
    push_service.release_held(deliver=True)

    assert push_service.wait_for(timeout=5).payload == {"n": 1}


def test_close_drops_held_requests_unanswered() -> None:
    public, private = vapid_keypair()
    with PushService(public, vapid_private=private) as service:
        sub = service.subscribe("ana")
        service.script("ana", Answer(201, hold=True))
        thread, outcome = _push_in_thread(service, sub, {"n": 1})
        service.wait_for_held(timeout=5)
    thread.join(5)

    assert isinstance(outcome[0], requests.ConnectionError)
    assert service.deliveries() == []


def test_trap_records_connections_and_refuses_a_taken_port() -> None:
    with Trap() as trap:
        for _ in range(2):
            with socket.create_connection((LOCALHOST, trap.port), timeout=2) as conn:
                assert conn.recv(1) == b"", "closed at once"
        deadline = time.monotonic() + 2
        while len(trap.connections) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(trap.connections) == 2

        with pytest.raises(HarnessError, match="cannot listen"):
            Trap(port=trap.port).start()


def test_an_email_arrives_parsed_with_headers_and_envelope(smtp_server: SmtpServer) -> None:
    message = EmailMessage()
    message["From"] = "Chat <chat@localhost>"
    message["To"] = "ana@example.com"
    message["Subject"] = "Neue Nachricht von Bo ✉"
    message["List-Unsubscribe"] = "<http://127.0.0.1:8000/unsubscribe/abc>"
    message.set_content("Bo: hallo Ana\n")
    message.add_alternative("<p>Bo: hallo <b>Ana</b></p>", subtype="html")

    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.send_message(message, from_addr="bounce@localhost", to_addrs=["ana@example.com"])

    mail = smtp_server.wait_for(lambda m: "ana@example.com" in m.rcpt_tos, timeout=5)
    assert (mail.mail_from, mail.rcpt_tos) == ("bounce@localhost", ["ana@example.com"])
    assert mail.subject == "Neue Nachricht von Bo ✉"
    assert mail.message["To"] == "ana@example.com"
    assert mail.message["List-Unsubscribe"] == "<http://127.0.0.1:8000/unsubscribe/abc>"
    assert mail.text == "Bo: hallo Ana\n"
    assert "<b>Ana</b>" in mail.html
    assert smtp_server.worker_env() == {
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_server.port),
    }


def test_a_refused_email_is_not_kept_and_the_next_one_is(smtp_server: SmtpServer) -> None:
    smtp_server.refuse_next(1)
    message = EmailMessage()
    message["Subject"] = "hi"
    message.set_content("x")

    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.send_message(message, from_addr="a@localhost", to_addrs=["b@example.com"])
        client.send_message(message, from_addr="a@localhost", to_addrs=["b@example.com"])

    assert refused.value.smtp_code == 451
    assert len(smtp_server.refused) == 1
    assert [m.subject for m in smtp_server.messages] == ["hi"]
    with pytest.raises(AssertionError, match="no matching email"):
        smtp_server.wait_for(lambda m: m.subject == "never", timeout=0.2)


def _wait_log(process: Any, pattern: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, process.output()):
        assert time.monotonic() < deadline, f"{pattern!r} not in {process.name} log:\n" + (
            process.output()
        )
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_worker_and_beat_run_and_kill_group_leaves_nothing(make_workers: MakeWorkers) -> None:
    celery = make_workers(workers=1, beat=True, concurrency=2, env={"NOTIFY_POLL_INTERVAL": "1"})
    worker, beat = celery.workers[0], celery.beat
    assert beat is not None
    assert len(worker.group_pids()) == 3, "main process and two pool children"

    # A task sent through the private broker is run by the worker's pool.
    _wait_log(worker, _send_probe(celery.broker_url))
    # Beat publishes its schedule to the same broker.
    _wait_log(beat, r"Scheduler: Sending due task")

    for process in (worker, beat):
        pgid = process.pgid
        process.kill_group()
        assert not process.running
        assert process.group_pids() == []
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
        assert not process.crashed, "killed on purpose"


@pytest.mark.django_db(transaction=True)
def test_worker_terminates_warmly_and_restarts(make_workers: MakeWorkers) -> None:
    worker = make_workers(workers=1, beat=False, concurrency=1).workers[0]
    first_pid = worker.pid

    worker.terminate()
    assert worker.returncode == 0, worker.output()
    worker.start()

    assert worker.pid != first_pid
    assert len(worker.group_pids()) == 2
    assert len(re.findall(rf"{worker.name}@\S+ ready\.", worker.output())) == 2


def _send_probe(broker_url: str) -> str:
    task_id = str(uuid.uuid4())
    client = Celery("probe", broker=broker_url, set_as_current=False)
    try:
        client.send_task("celery.backend_cleanup", task_id=task_id)
    finally:
        client.close()
    return rf"Task celery.backend_cleanup\[{task_id}\] succeeded"


@pytest.mark.django_db(transaction=True)
def test_make_workers_joins_a_deployment(
    make_deployment: MakeDeployment, make_workers: MakeWorkers
) -> None:
    deployment = make_deployment(gateways=1)
    celery = make_workers(deployment, workers=1, beat=False, concurrency=1)
    worker = celery.workers[0]

    assert deployment.workers == [worker]
    assert celery.broker_url == redis_db_url(deployment.redis_url, 1)
    for name in ("DATABASE_URL", "REDIS_URL", "CHANNEL_LAYER_PREFIX", "REDIS_KEY_PREFIX"):
        assert worker.env[name] == deployment.env[name]
    _wait_log(worker, _send_probe(celery.broker_url))


@pytest.mark.django_db(transaction=True)
def test_a_deployment_with_workers_and_beat_starts_and_stops_them(
    db_url: str, redis_server: RedisServer, tmp_path: Any
) -> None:
    with Deployment(
        database_url=db_url,
        redis_url=redis_server.url,
        log_dir=tmp_path,
        gateways=1,
        workers=1,
        beat=True,
        worker_env={"NOTIFY_POLL_INTERVAL": "1"},
        worker_concurrency=1,
    ) as deployment:
        worker, beat = deployment.workers[0], deployment.beat
        assert beat is not None and worker.running and beat.running
        broker = redis_db_url(redis_server.url, 1)
        assert deployment.gateways[0].env["CELERY_BROKER_URL"] == broker
        assert worker.env["NOTIFY_POLL_INTERVAL"] == "1"
        assert "NOTIFY_POLL_INTERVAL" not in deployment.gateways[0].env
        _wait_log(worker, _send_probe(broker))
        pgids = [worker.pgid, beat.pgid]

    assert worker.returncode is not None and beat.returncode is not None
    assert not deployment.gateways[0].running
    for pgid in pgids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)


def test_a_deployment_without_workers_gives_gateways_no_broker(
    redis_server: RedisServer, tmp_path: Any
) -> None:
    deployment = Deployment(
        database_url="postgres://nowhere/test_x", redis_url=redis_server.url, log_dir=tmp_path
    )

    assert "CELERY_BROKER_URL" not in deployment.gateways[0].env
    assert deployment.workers == [] and deployment.beat is None
    assert deployment.processes == deployment.gateways
