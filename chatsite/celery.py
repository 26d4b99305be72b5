"""The Celery application; tasks are discovered in each app's `tasks.py`."""

import atexit
import os
import shutil
import tempfile

from celery import Celery


def _share_metrics_between_worker_processes() -> None:
    """Keep metric values in files all processes of this worker write (multiprocess mode).

    Tasks run in the worker's prefork children, and a child's counts would die with it
    (a crash, `--max-tasks-per-child`) and never reach the main process that serves
    `WORKER_METRICS_PORT`. With `PROMETHEUS_MULTIPROC_DIR` set, prometheus_client keeps
    each process's values in a file there and the main process adds them all up
    (`messaging.taskmetrics`). It reads the variable when it is first imported, so this
    runs here: the first module any process of ours loads (`chatsite/__init__.py`),
    before Django and the tasks.

    The directory is this worker's own and goes when it exits; its counters restart from
    zero with the worker, which Prometheus's `rate()` expects. A directory given in
    `PROMETHEUS_MULTIPROC_DIR` is used as it is (empty it before each start).
    """
    if not os.environ.get("WORKER_METRICS_PORT") or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="chat-worker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not from a forked child that happens to run atexit
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


_share_metrics_between_worker_processes()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
