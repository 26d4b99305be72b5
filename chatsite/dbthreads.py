"""The gateway's database thread pool: every ORM call of the async code runs through `db`.

Not `database_sync_to_async`: that runs every call of a process on one thread, which
caps a gateway at one database round trip at a time (ARCHITECTURE.md). Each of the
`WS_DB_THREADS` threads keeps its own connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections, connection

T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=settings.WS_DB_THREADS, thread_name_prefix="gateway-db")

# How long a database thread trusts its connection after Django's per-request check
# (`close_old_connections`: maximum age, broken connections, and with health checks on a
# `SELECT 1` before the next query). Checked around every call, it was one extra round
# trip per send; now at most this often per thread, and again after any failed call.
DB_RECHECK_INTERVAL = 1.0
_db_thread = threading.local()


def db(func: Callable[..., T], /, **kwargs: Any) -> Awaitable[T]:
    """Run `func(**kwargs)` (a service, a selector, an ORM call) in the database pool."""

    def run() -> T:
        now = time.monotonic()
        if now >= getattr(_db_thread, "recheck_at", 0.0):
            close_old_connections()
            _db_thread.recheck_at = now + DB_RECHECK_INTERVAL
        try:
            result = func(**kwargs)
        except BaseException:
            # The failure may have broken the connection: Django closes it now if so,
            # and the next call checks it first.
            close_old_connections()
            _db_thread.recheck_at = 0.0
            raise
        # Past CONN_MAX_AGE (at once with 0, as the test suite sets it) the connection is
        # closed now, as after a request; the health check waits for the next recheck.
        close_at = connection.close_at
        if close_at is not None and time.monotonic() >= close_at:
            connection.close()
        return result

    # What SyncToAsync(thread_sensitive=False) does that we need (the caller's context
    # variables; a cancelled caller does not cancel queued work), without its per-call
    # wrapping, a few percent of a busy gateway's CPU under bench.send_threads.
    future = asyncio.get_running_loop().run_in_executor(
        _executor, contextvars.copy_context().run, run
    )
    return asyncio.shield(future)
