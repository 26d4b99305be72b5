"""Metrics end to end: scrape a real gateway's `/metrics` and a real worker's port after traffic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import User
from bench.harness import free_port, http_get
from messaging import services
from tests.e2e.conftest import MakeDeployment, MakeWorkers
from tests.e2e.wsclient import bearer, drive, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    status, body = http_get(url, timeout=5)
    assert status == 200, body[:500]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def eventually(url: str, check: Callable[[Samples], bool], timeout: float = 20.0) -> Samples:
    """Scrape until `check` holds (processes count what happened just before, not at once)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_a_gateway_and_a_worker_count_real_traffic_on_their_metrics(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    ana: User,
    bo: User,
    tmp_path: Path,
) -> None:
    deployment = make_deployment(gateways=1)
    port = free_port()
    make_workers(
        deployment,
        workers=1,
        beat=True,
        env={
            "WORKER_METRICS_PORT": str(port),
            "WORKER_METRICS_ADDR": "127.0.0.1",
            # The harness kills with SIGKILL, so nothing removes the worker's metrics
            # directory: have it made under this test's own temporary directory.
            "TMPDIR": str(tmp_path),
        },
    )
    gateway_url = f"{deployment.http_urls[0]}/metrics"
    worker_url = f"http://127.0.0.1:{port}/metrics"
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = bearer(ana), bearer(bo)

    async def scenario() -> None:
        a, _ = await open_socket(deployment.urls[0], tokens[0])
        b, _ = await open_socket(deployment.urls[0], tokens[1])
        assert sample(scrape(gateway_url), "chat_ws_open_sockets") == 2
        sent = await a.request(
            type="message.send",
            conversation=conversation.pk,
            client_msg_id=str(uuid.uuid4()),
            body="counted",
        )
        assert sent["type"] == "message.sent"
        await b.until(lambda f: f["type"] == "message.created")
        await a.ws.close()
        await b.ws.close()

    drive(scenario)

    gateway = eventually(gateway_url, lambda s: sample(s, "chat_ws_open_sockets") == 0)
    assert sample(gateway, "chat_ws_open_sockets") == 0
    assert sample(gateway, "chat_ws_frames_received_total", type="message.send") == 1
    assert sample(gateway, "chat_ws_frames_sent_total", type="message.sent") == 1
    # Bo's socket only: Ana's sending socket had the message in its `message.sent`.
    assert sample(gateway, "chat_ws_frames_sent_total", type="message.created") == 1
    assert sample(gateway, "chat_ws_frames_sent_total", type="session.ready") == 2
    assert sample(gateway, "chat_send_latency_seconds_count") == 1
    assert sample(gateway, "chat_delivery_latency_seconds_count") == 1
    assert sample(gateway, "chat_ws_closes_total", code="1000") == 2
    assert (sample(gateway, "chat_db_pool_requests_total", database="default") or 0) > 0
    assert sample(gateway, "chat_fanout_events_dropped_total", reason="queue_full") == 0

    # Beat rings the notification tick every second; the worker's child runs it.
    tick = "messaging.tasks.notify_tick_task"
    worker = eventually(
        worker_url,
        lambda s: (sample(s, "chat_celery_tasks_total", task=tick, state="success") or 0) >= 1,
    )
    assert (sample(worker, "chat_celery_tasks_total", task=tick, state="success") or 0) >= 1
    # The message to Bo is due in NOTIFY_PUSH_DELAY (10 s): waiting, not yet due.
    assert sample(worker, "chat_notification_decisions_due") == 0
    assert sample(worker, "chat_celery_queue_length", queue="celery") is not None
    # The gateways' socket metrics are not a worker's.
    assert not any(name.startswith("chat_ws_") for name, _ in worker)
