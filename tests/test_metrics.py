"""Prometheus metrics in process: `/metrics` on the real ASGI app, and what moves the counters.

The end-to-end test (tests/e2e/test_metrics.py) scrapes a real gateway and a real worker;
these check each hook on the app itself, by the difference a call makes to a metric (the
registry is the process's own, shared with every other test of the run).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from asgiref.compatibility import is_double_callable
from channels.layers import InMemoryChannelLayer
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg_pool import ConnectionPool, PoolTimeout

from accounts.models import User
from accounts.tokens import issue_pair
from chatsite.asgi import application
from chatsite.gateway.fanout import Fanout
from chatsite.layers import _CountingQueue
from chatsite.metrics import LATENCY_BUCKETS, DatabasePoolCollector, FrameCounter, LoopHistogram
from messaging import services, taskmetrics, tasks
from messaging.errors import RateLimited
from messaging.models import Message, NotificationDue

GATEWAY_METRICS = {
    "chat_ws_open_sockets": "gauge",
    "chat_ws_frames_received": "counter",
    "chat_ws_frames_sent": "counter",
    "chat_send_latency_seconds": "histogram",
    "chat_delivery_latency_seconds": "histogram",
    "chat_fanout_events_dropped": "counter",
    "chat_ws_closes": "counter",
    "chat_rate_limited": "counter",
    "chat_ws_handshakes_shed": "counter",
    "chat_layer_subscribes_unconfirmed": "counter",
    "chat_rate_limits_local": "counter",
    "chat_db_pool_connections": "gauge",
    "chat_db_pool_connections_idle": "gauge",
    "chat_db_pool_requests_waiting": "gauge",
    "chat_db_pool_requests": "counter",
    "chat_db_pool_requests_queued": "counter",
    "chat_db_pool_wait_seconds": "counter",
    "chat_db_pool_request_errors": "counter",
}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def token_for(user: User) -> str:
    token = issue_pair(user)["access"]
    connection.close()  # the consumer's threads use their own connections
    return token


async def request(method: str, path: str) -> dict[str, Any]:
    communicator = HttpCommunicator(application, method, path, headers=[(b"host", b"localhost")])
    response: dict[str, Any] = await communicator.get_response()
    await communicator.wait()  # let the app finish (Django closes the request body then)
    return response


async def scrape() -> tuple[int, dict[bytes, bytes], str]:
    response = await request("GET", "/metrics")
    return response["status"], dict(response["headers"]), response["body"].decode()


def test_metrics_answers_in_prometheus_text_format_with_every_gateway_metric() -> None:
    status, headers, body = run(scrape)

    assert status == 200
    assert headers[b"Content-Type"].startswith(b"text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name, kind in GATEWAY_METRICS.items():
        assert families[name].type == kind, name
    # Every frame type of the protocol has its series from the start, and `other`.
    received = {s.labels["type"] for s in families["chat_ws_frames_received"].samples}
    assert {"message.send", "ping", "other"} <= received
    sent = {s.labels["type"] for s in families["chat_ws_frames_sent"].samples}
    assert {"message.sent", "message.created", "error", "other"} <= sent


def test_the_loop_histogram_exposes_what_prometheus_clients_histogram_does() -> None:
    # Tried: the same observations (below the first bound, on bounds, between, above the
    # last, zero) into the gateway's lock-free histogram and into prometheus_client's, each
    # in a registry of its own: the text Prometheus scrapes must be the same.
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = LoopHistogram("chat_x_seconds", "x.", buckets=LATENCY_BUCKETS, registry=ours)
    reference = Histogram("chat_x_seconds", "x.", buckets=LATENCY_BUCKETS, registry=theirs)
    for seconds in (0.0, 0.0005, 0.001, 0.0025, 0.003, 0.05, 0.7, 10.0, 11.0, 3600.0):
        fast.observe(seconds)
        reference.observe(seconds)
    assert generate_latest(ours) == generate_latest(theirs)
    assert b'chat_x_seconds_bucket{le="0.001"} 3.0' in generate_latest(ours)


def test_a_frame_counter_counts_known_types_from_zero_and_the_rest_as_other() -> None:
    registry = CollectorRegistry()
    counter = FrameCounter("chat_y", "y.", registry=registry).knowing(["ping", "sync"])
    for kind in ("ping", "ping", "nonsense", "sync"):
        counter.count(kind)
    counter.knowing(["pong"])

    def count(kind: str) -> float | None:
        return registry.get_sample_value("chat_y_total", {"type": kind})

    assert [count(k) for k in ("ping", "sync", "pong", "other", "nonsense")] == [
        2.0,
        1.0,
        0.0,
        1.0,
        None,
    ]


def test_metrics_takes_only_get_and_passes_other_paths_on() -> None:
    async def scenario() -> tuple[int, int]:
        post = await request("POST", "/metrics")
        other = await request("GET", "/metrics/x")
        return post["status"], other["status"]

    assert run(scenario) == (405, 404)


def test_the_application_is_asgi_3_to_both_servers_and_hands_on_without_a_coroutine() -> None:
    # Tried: what uvicorn and Daphne (asgiref) check to tell ASGI 3 from ASGI 2, on the
    # gateway's application, whose middlewares return the inner application's awaitable
    # instead of awaiting it. Taken for ASGI 2, every request would fail.
    assert asyncio.iscoroutinefunction(application.__call__)  # uvicorn's check (3.11)
    assert not is_double_callable(application)  # type: ignore[no-untyped-call]

    async def scenario() -> str:
        # A socket on an unknown path: the awaitable handed back is the first one that
        # has work to do (the handshake check), not a coroutine of a middleware in front.
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await queue.put({"type": "websocket.connect"})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws/other/", "headers": [], "query_string": b""}
        awaitable = application(scope, queue.get, send)
        name = awaitable.__qualname__  # type: ignore[attr-defined]
        await awaitable
        assert sent == [{"type": "websocket.close", "code": 1008}]
        return str(name)

    assert run(scenario) == "WebSocketAuthMiddleware.__call__"


@pytest.mark.django_db(transaction=True)
def test_a_send_moves_the_frame_counters_and_both_latency_histograms(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = token_for(ana), token_for(bo)
    before = {
        "in": value("chat_ws_frames_received_total", type="message.send"),
        "sent": value("chat_ws_frames_sent_total", type="message.sent"),
        "created": value("chat_ws_frames_sent_total", type="message.created"),
        "send_latency": value("chat_send_latency_seconds_count"),
        "delivery_latency": value("chat_delivery_latency_seconds_count"),
        "closes": value("chat_ws_closes_total", code="1000"),
        "open": value("chat_ws_open_sockets"),
    }

    async def scenario() -> dict[str, float]:
        a, b = (
            WebsocketCommunicator(
                application, "/ws/v1/", headers=[(b"authorization", f"Bearer {t}".encode())]
            )
            for t in tokens
        )
        for ws in (a, b):
            assert (await ws.connect())[0]
            assert json.loads(await ws.receive_from(5))["type"] == "session.ready"
        opened = value("chat_ws_open_sockets")
        frame = {
            "type": "message.send",
            "conversation": chat.pk,
            "client_msg_id": str(uuid.uuid4()),
            "body": "hi",
            "ref": "r1",
        }
        await a.send_to(text_data=json.dumps(frame))
        while json.loads(await a.receive_from(5))["type"] != "message.sent":
            pass
        while json.loads(await b.receive_from(5))["type"] != "message.created":
            pass
        await a.disconnect()
        await b.disconnect()
        return {"opened": opened}

    during = run(scenario)

    assert during["opened"] == before["open"] + 2
    assert value("chat_ws_open_sockets") == before["open"]
    assert value("chat_ws_frames_received_total", type="message.send") == before["in"] + 1
    assert value("chat_ws_frames_sent_total", type="message.sent") == before["sent"] + 1
    # Bo's socket only: Ana's sending socket had the message in its `message.sent`.
    assert value("chat_ws_frames_sent_total", type="message.created") == before["created"] + 1
    assert value("chat_send_latency_seconds_count") == before["send_latency"] + 1
    assert value("chat_delivery_latency_seconds_count") == before["delivery_latency"] + 1
    assert value("chat_ws_closes_total", code="1000") == before["closes"] + 2


@pytest.mark.django_db(transaction=True)
def test_our_own_close_code_is_counted_not_the_one_the_server_reports_after_it() -> None:
    before_other = value("chat_ws_frames_received_total", type="other")
    before_4401 = value("chat_ws_closes_total", code="4401")

    async def scenario() -> int:
        ws = WebsocketCommunicator(application, "/ws/v1/")  # no credentials
        assert (await ws.connect())[0]
        closed = await ws.receive_output(5)
        await ws.disconnect()  # the server reports 1000 after our 4401: ours counts
        return int(closed["code"])

    assert run(scenario) == 4401
    assert value("chat_ws_closes_total", code="4401") == before_4401 + 1
    assert value("chat_ws_frames_received_total", type="other") == before_other


@pytest.mark.django_db(transaction=True)
def test_a_frame_of_no_known_type_counts_as_other(ana: User) -> None:
    token = token_for(ana)
    before = value("chat_ws_frames_received_total", type="other")

    async def scenario() -> str:
        ws = WebsocketCommunicator(
            application, "/ws/v1/", headers=[(b"authorization", f"Bearer {token}".encode())]
        )
        assert (await ws.connect())[0]
        await ws.receive_from(5)  # session.ready
        await ws.send_to(text_data=json.dumps({"type": f"dance-{uuid.uuid4()}"}))
        await ws.send_to(text_data="not json")
        codes = [json.loads(await ws.receive_from(5))["code"] for _ in range(2)]
        await ws.disconnect()
        return ",".join(codes)

    assert run(scenario) == "unknown_type,bad_request"
    assert value("chat_ws_frames_received_total", type="other") == before + 2


@pytest.mark.django_db
def test_a_refused_send_counts_as_rate_limited(ana: User, bo: User, settings: Any) -> None:
    settings.CHAT_SEND_BURST, settings.CHAT_SEND_RATE = 1.0, 0.001
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    before = value("chat_rate_limited_total", kind="send")

    services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="one"
    )
    with pytest.raises(RateLimited):
        services.send_message(
            sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="two"
        )

    assert value("chat_rate_limited_total", kind="send") == before + 1


def test_a_full_fanout_queue_counts_what_it_drops(settings: Any) -> None:
    settings.CHAT_FANOUT_QUEUE = 1
    before = value("chat_fanout_events_dropped_total", reason="queue_full")

    async def scenario() -> None:
        fanout = Fanout(asyncio.get_running_loop(), InMemoryChannelLayer())
        event = {"type": "conv.event", "conversation": 1, "member_seq": 0, "frame": {}}
        # One batch is queued in one go: the second event finds the queue full.
        assert fanout.offer([("conv.1", event), ("conv.1", event)])
        await asyncio.sleep(0.05)
        for task in fanout.tasks:
            task.cancel()

    run(scenario)
    assert value("chat_fanout_events_dropped_total", reason="queue_full") == before + 1


def test_a_full_socket_inbox_counts_the_oldest_event_it_drops() -> None:
    before = value("chat_fanout_events_dropped_total", reason="inbox_full")

    async def scenario() -> list[int]:
        inbox = _CountingQueue(2)
        for n in range(3):
            inbox.put_nowait(n)
        return [inbox.get_nowait() for _ in range(inbox.qsize())]

    assert run(scenario) == [1, 2]
    assert value("chat_fanout_events_dropped_total", reason="inbox_full") == before + 1


def test_the_pool_collector_reports_waits_and_timeouts_from_the_pool_itself() -> None:
    database = settings.DATABASES["default"]
    dsn = psycopg.conninfo.make_conninfo(
        host=database["HOST"] or "127.0.0.1",
        port=str(database["PORT"] or 5432),
        user=database["USER"] or "postgres",
        dbname="postgres",
    )
    with ConnectionPool(dsn, min_size=1, max_size=1, timeout=5) as pool:
        pool.wait()
        held = pool.getconn()
        try:
            failed = threading.Event()

            def wait_in_vain() -> None:
                try:
                    pool.getconn(timeout=0.1)
                except PoolTimeout:
                    failed.set()

            thread = threading.Thread(target=wait_in_vain)
            thread.start()
            thread.join()
            assert failed.is_set()
        finally:
            pool.putconn(held)
        samples = {
            s.name: s.value
            for family in DatabasePoolCollector(lambda: {"test": pool}).collect()
            for s in family.samples
        }

    assert samples["chat_db_pool_connections"] == 1
    assert samples["chat_db_pool_connections_max"] == 1
    assert samples["chat_db_pool_requests_total"] == 2
    assert samples["chat_db_pool_requests_queued_total"] == 1
    assert samples["chat_db_pool_request_errors_total"] == 1
    assert samples["chat_db_pool_wait_seconds_total"] >= 0.1
    assert samples["chat_db_pool_requests_waiting"] == 0


@pytest.mark.django_db
def test_a_task_run_counts_its_outcome_by_name() -> None:
    name = "messaging.tasks.delete_old_notifications_task"
    before = value("chat_celery_tasks_total", task=name, state="success")

    tasks.delete_old_notifications_task.delay()  # eager here: the worker's signals fire alike

    assert value("chat_celery_tasks_total", task=name, state="success") == before + 1


@pytest.mark.django_db(transaction=True)
def test_the_backlog_counts_due_decisions_from_a_scrape_thread(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.send_message(sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="x")
    message = Message.objects.filter(conversation=chat, kind=Message.Kind.TEXT).get()
    NotificationDue.objects.filter(message=message).update(
        due_at=timezone.now() - timedelta(seconds=1)
    )
    found: list[int | None] = []

    # As the worker's metrics server does: on a thread of its own, connection closed after.
    thread = threading.Thread(target=lambda: found.append(taskmetrics.due_decisions()))
    thread.start()
    thread.join()

    assert found == [NotificationDue.objects.filter(due_at__lte=timezone.now()).count()]
    assert found[0] is not None and found[0] >= 1


def test_the_broker_queue_is_only_read_from_redis(settings: Any) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    assert taskmetrics.broker_queue_lengths() is None
