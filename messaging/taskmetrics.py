"""A Celery worker's Prometheus metrics: task outcomes, the notification backlog, the broker queue.

Loaded by every worker (`CELERY_IMPORTS`). With `WORKER_METRICS_PORT` set, the worker's
main process serves `/metrics` on that port (`WORKER_METRICS_ADDR`) from a thread.

Task outcomes are counted by Celery's signals where they fire: success, failure, retry
and internal errors in the prefork child that ran the task; revocations (an expired
tick, say), unknown and rejected messages in the main process. Every process of the
worker keeps its values in a file of the worker's own directory (prometheus_client's
multiprocess mode, set up in `chatsite/celery.py`), and a scrape adds them up: what a
child counted survives the child.

The backlog is read when Prometheus scrapes, never per task: one indexed count of the
notification decisions that are due and not yet made, and the broker's queue length
when the broker is Redis, each bounded by `SCRAPE_TIMEOUT`; a figure that cannot be
read in time is left out of that scrape (and logged), so the scrape itself still answers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable
from typing import Any

import psycopg
import redis
from celery import Task
from celery.signals import (  # type: ignore[attr-defined]  # celery-types lacks task_internal_error
    task_failure,
    task_internal_error,
    task_rejected,
    task_retry,
    task_revoked,
    task_success,
    task_unknown,
    worker_init,
    worker_process_shutdown,
)
from django.conf import settings
from django.db import connection
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from chatsite.celery import app
from messaging.models import NotificationDue

logger = logging.getLogger(__name__)

# Seconds one figure of a scrape may take (the database count, the broker's queue length).
SCRAPE_TIMEOUT = 1.0
# kombu's Redis transport keeps a queue's messages of priority p > 0 in `<queue>\x06\x16<p>`.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)

TASKS = Counter(
    "chat_celery_tasks",
    "Celery tasks finished, by task name and outcome (success, failure, retry, revoked, "
    "expired, internal_error; unknown and rejected messages count under task=other).",
    ["task", "state"],
)


def _count(task: object, state: str) -> None:
    # A task object's name is one of the app's registered tasks: a bounded label.
    name = task.name if isinstance(task, Task) and task.name else "other"
    TASKS.labels(task=name, state=state).inc()


@task_success.connect
def _on_success(sender: object = None, **_: Any) -> None:
    _count(sender, "success")


@task_failure.connect
def _on_failure(sender: object = None, **_: Any) -> None:
    _count(sender, "failure")


@task_retry.connect
def _on_retry(sender: object = None, **_: Any) -> None:
    _count(sender, "retry")


def _on_internal_error(sender: object = None, **_: Any) -> None:
    _count(sender, "internal_error")


task_internal_error.connect(_on_internal_error)


@task_revoked.connect
def _on_revoked(sender: object = None, expired: bool = False, **_: Any) -> None:
    _count(sender, "expired" if expired else "revoked")


@task_unknown.connect
def _on_unknown(**_: Any) -> None:
    _count(None, "unknown")


@task_rejected.connect
def _on_rejected(**_: Any) -> None:
    _count(None, "rejected")


# --- the backlog, read at scrape time ----------------------------------------------------


_COUNT_DUE_SQL = f"SELECT count(*) FROM {NotificationDue._meta.db_table} WHERE due_at <= %s"  # noqa: S608 - our table


def due_decisions(*, timeout: float = SCRAPE_TIMEOUT) -> int | None:
    """Return how many messages' notification decisions are due and not yet made.

    None if PostgreSQL did not answer within `timeout` seconds (or at all). On its own
    short connection, not Django's pool: the worker's main process must hold no pooled
    connection, or a child it forks later (to replace one that died) would inherit the
    pool with its sockets and share them with the parent.
    """
    now = timezone.now()
    if connection.vendor != "postgresql":
        return NotificationDue.objects.filter(due_at__lte=now).count()  # SQLite: no pool
    params = connection.get_connection_params()
    params["connect_timeout"] = max(1, math.ceil(timeout))
    try:
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute(f"SET statement_timeout = {max(1, round(timeout * 1000))}")
            row = conn.execute(_COUNT_DUE_SQL, [now]).fetchone()
    except psycopg.Error as exc:
        logger.warning("notification backlog not read: %r", exc)
        return None
    return int(row[0]) if row is not None else None


@functools.cache
def _broker_client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def broker_queue_lengths(*, timeout: float = SCRAPE_TIMEOUT) -> dict[str, int] | None:
    """Return the messages waiting in each of the app's queues on a Redis broker.

    None when the broker is not Redis or did not answer within `timeout` seconds.
    Messages a worker has taken but not acknowledged are not waiting: not counted.
    """
    url = str(settings.CELERY_BROKER_URL)
    if not url.startswith(("redis://", "rediss://")):
        return None
    # Every task goes to the default queue (no routes are configured).
    queues = [str(app.conf.task_default_queue)]
    keys = [
        [queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS]
        for queue in queues
    ]
    try:
        with _broker_client(url, timeout).pipeline(transaction=False) as pipe:
            for key in (key for group in keys for key in group):
                pipe.llen(key)
            lengths: list[int] = pipe.execute()  # type: ignore[no-untyped-call]
    except (redis.RedisError, OSError) as exc:
        logger.warning("broker queue length not read: %r", exc)
        return None
    steps = len(_PRIORITY_STEPS)
    return {
        queue: sum(lengths[index * steps : (index + 1) * steps])
        for index, queue in enumerate(queues)
    }


class BacklogCollector(Collector):
    """The notification backlog and the broker's queue lengths, read per scrape."""

    def collect(self) -> Iterable[Metric]:
        """Read both figures now (each bounded by SCRAPE_TIMEOUT)."""
        due = due_decisions()
        if due is not None:
            yield GaugeMetricFamily(
                "chat_notification_decisions_due",
                "Messages whose notification decision is due (NotificationDue.due_at passed) "
                "and not yet made, in PostgreSQL.",
                value=due,
            )
        lengths = broker_queue_lengths()
        if lengths is not None:
            family = GaugeMetricFamily(
                "chat_celery_queue_length",
                "Task messages waiting in the Redis broker, by queue.",
                labels=["queue"],
            )
            for queue, length in lengths.items():
                family.add_metric([queue], length)
            yield family


# A worker imports the module that defines the gateways' metrics too (services count
# through it): these would be series that stay 0 on every worker.
_GATEWAY_ONLY = ("chat_ws_", "chat_send_latency_", "chat_delivery_latency_", "chat_db_pool_")


class WorkerProcessesCollector(Collector):
    """The values every process of this worker wrote to `path`, added up; no gateway-only ones."""

    def __init__(self, path: str) -> None:
        self.processes = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        """Read and add up every process's file now."""
        for family in self.processes.collect():  # type: ignore[no-untyped-call]
            if not family.name.startswith(_GATEWAY_ONLY):
                yield family


def registry(path: str) -> CollectorRegistry:
    """Return the registry a worker serves: every process's values in `path`, and the backlog."""
    served = CollectorRegistry()
    served.register(WorkerProcessesCollector(path))
    served.register(BacklogCollector())
    return served


@worker_init.connect
def _serve(**_: Any) -> None:
    """Serve the worker's metrics from its main process, before the pool starts."""
    port = int(settings.WORKER_METRICS_PORT)
    if not port:
        return
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        # Only when prometheus_client was imported before chatsite/celery.py could set it up.
        logger.error("WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: no metrics")
        return
    start_http_server(port, addr=str(settings.WORKER_METRICS_ADDR), registry=registry(path))
    logger.info("metrics on http://%s:%d/metrics", settings.WORKER_METRICS_ADDR, port)


@worker_process_shutdown.connect
def _forget_child(**_: Any) -> None:
    """Drop a finished child's live gauges (its counters stay in the sums)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
