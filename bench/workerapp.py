"""The product's Celery app for a `--pool threads` worker, with celery#6941 worked around.

With late acks (CELERY_TASK_ACKS_LATE) and a prefetch of one task per thread, a threads
pool acknowledges finished tasks from its threads while the consumer's event loop sleeps
in epoll; once `concurrency` tasks are unacknowledged the loop asks Redis for nothing
more and only wakes when a timer fires, so the worker stalls for seconds at a time
(https://github.com/celery/celery/issues/6941). A timer every 0.1 s wakes it. The bench
runs `-A bench.workerapp` only for the threads pool variant that says so; the product
itself (`-A chatsite`) has no such timer.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from chatsite.celery import app

__all__ = ["app"]

WAKE_INTERVAL = 0.1


def _nothing() -> None:
    """Wake the consumer's event loop so that pending acks and fetches go out."""


@worker_ready.connect
def _wake_threads_pool(sender: Any = None, **_: Any) -> None:
    if sender is not None and type(sender.pool).__module__.endswith(".thread"):
        sender.timer.call_repeatedly(WAKE_INTERVAL, _nothing)
