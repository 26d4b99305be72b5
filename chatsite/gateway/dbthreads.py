"""The gateway's database thread pool: every ORM call of the async code runs through `db`.

Not `database_sync_to_async`: that runs every call of a process on one thread, which
caps a gateway at one database round trip at a time (ARCHITECTURE.md). Each of the
`WS_DB_THREADS` threads keeps its own connection.

The pool has two queues (`Lanes`): the work of sessions already open (`db`) and the work
of handshakes (`db_by`). A free thread takes live work first, so a reconnect storm's
hundreds of handshakes do not make every send, fetch and sync of the users still
connected wait behind them; at least one pick in `HANDSHAKE_SHARE` goes to a waiting
handshake, so connecting still progresses under a steady live load.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.db import close_old_connections, connection

T = TypeVar("T")

# A waiting handshake gets at least one pick in this many.
HANDSHAKE_SHARE = 4

_Job = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Lanes(Executor):
    """`workers` threads over two FIFO queues: live work first, handshakes after it."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self.live: collections.deque[_Job] = collections.deque()
        self.handshakes: collections.deque[_Job] = collections.deque()
        self.ready = threading.Condition()
        self.picks = 0
        self.threads: list[threading.Thread] = []
        self.closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue live work (a session's send, fetch, sync...)."""
        return self._put(self.live, fn, args, kwargs)

    def submit_handshake(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue a handshake's work: taken when no live work waits (or its share is due)."""
        return self._put(self.handshakes, fn, args, kwargs)

    def _put(
        self,
        lane: collections.deque[_Job],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Future[T]:
        future: Future[T] = Future()
        with self.ready:
            if self.closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            lane.append((future, fn, args, kwargs))
            if len(self.threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}_{len(self.threads)}", daemon=True
                )
                self.threads.append(thread)
                thread.start()
            self.ready.notify()
        return future

    def _take(self) -> _Job | None:
        with self.ready:
            while not self.live and not self.handshakes:
                if self.closed:
                    return None
                self.ready.wait()
            self.picks += 1
            if self.handshakes and (not self.live or self.picks % HANDSHAKE_SHARE == 0):
                return self.handshakes.popleft()
            return self.live.popleft()

    def _work(self) -> None:
        while (job := self._take()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)
            del job, future, fn, args, kwargs  # nothing of a finished job outlives it

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work once the queues are empty (all of it cancelled if asked)."""
        with self.ready:
            self.closed = True
            if cancel_futures:
                for lane in (self.live, self.handshakes):
                    while lane:
                        lane.popleft()[0].cancel()
            self.ready.notify_all()
        if wait:
            for thread in self.threads:
                thread.join()


_executor = Lanes(settings.WS_DB_THREADS, "gateway-db")

# How long a database thread trusts its connection after Django's per-request check
# (`close_old_connections`: maximum age, broken connections, and with health checks on a
# `SELECT 1` before the next query). Checked around every call, it was one extra round
# trip per send; now at most this often per thread, and again after any failed call.
DB_RECHECK_INTERVAL = 1.0
_db_thread = threading.local()


@functools.cache
def _pooled() -> bool:
    return bool(settings.DATABASES["default"].get("OPTIONS", {}).get("pool"))


class Shed(TimeoutError):
    """Work dropped before it started: whoever asked for it has stopped waiting."""


def db(func: Callable[..., T], /, **kwargs: Any) -> Awaitable[T]:
    """Run `func(**kwargs)` (a service, a selector, an ORM call) in the database pool."""
    return _submit(func, kwargs, None, handshake=False)


def db_by(start_by: float | None, func: Callable[..., T], /, **kwargs: Any) -> Awaitable[T]:
    """Run a handshake's work: after live work, and `Shed` if not started by `start_by`.

    For a handshake: when the gateway is behind, the queue holds handshakes whose clients
    have given up waiting for `session.ready` and connected again; doing their work would
    only push the live ones past their clients' patience too (a reconnect storm that
    feeds itself). None: no limit.
    """
    return _submit(func, kwargs, start_by, handshake=True)


def _submit(
    func: Callable[..., T], kwargs: dict[str, Any], start_by: float | None, *, handshake: bool
) -> Awaitable[T]:
    def run() -> T:
        now = time.monotonic()
        if start_by is not None and now > start_by:
            name = getattr(func, "__name__", "work")
            raise Shed(f"{name} not started by its deadline ({now - start_by:.1f} s late)")
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
        # A pooled connection is kept until then instead (at most DB_RECHECK_INTERVAL):
        # handed back after every call, each next call paid the pool's check, a round
        # trip per send (docs/performance.md).
        close_at = connection.close_at
        if close_at is not None and time.monotonic() >= close_at and not _pooled():
            connection.close()
        return result

    # What SyncToAsync(thread_sensitive=False) does that we need (the caller's context
    # variables; a cancelled caller does not cancel queued work), without its per-call
    # wrapping, a few percent of a busy gateway's CPU under bench.send_threads.
    submit = _executor.submit_handshake if handshake else _executor.submit
    future = asyncio.wrap_future(submit(contextvars.copy_context().run, run))
    return asyncio.shield(future)


K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Answer concurrent lookups of one kind with one `db` call per `window` seconds.

    Sockets that all ask the same question at their own pace (`ping`, say) would each
    cost a thread hop and a round trip; gathered for a few milliseconds they cost one.
    """

    def __init__(self, fetch: Callable[[list[K]], dict[K, V]], *, window: float) -> None:
        self.fetch = fetch
        self.window = window
        self.waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    async def get(self, key: K) -> V | None:
        """Return the value for `key` (None if the fetch did not name it)."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.waiting = loop, {}
        future: asyncio.Future[V | None] = loop.create_future()
        if not self.waiting:
            # In a context of its own: the batch must not inherit the first caller's.
            loop.call_later(self.window, self._flush, loop, context=contextvars.Context())
        self.waiting.setdefault(key, []).append(future)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop or not self.waiting:
            return
        batch, self.waiting = self.waiting, {}
        loop.create_task(self._answer(batch))

    async def _answer(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        keys = list(batch)
        try:
            values = await db(functools.partial(self.fetch, keys))
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure, not a hang
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(values.get(key))
