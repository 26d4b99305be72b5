"""The gateway's database thread pool: every ORM call of the async code runs through `db`.

Not `database_sync_to_async`: that runs every call of a process on one thread, which
caps a gateway at one database round trip at a time (ARCHITECTURE.md). Each of the
`WS_DB_THREADS` threads keeps its own connection.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from django.conf import settings
from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A queued call: what to run, in which context, and the future (of `loop`) to settle.
_Work = tuple[
    Callable[[], Any], contextvars.Context, asyncio.AbstractEventLoop, asyncio.Future[Any]
]


class DbPool:
    """`size` threads that run calls from a queue and settle an asyncio future for each.

    What `loop.run_in_executor(ThreadPoolExecutor)` wrapped in `asyncio.shield` does for
    us, without its three futures a call (a `concurrent.futures` future with its own
    condition, the asyncio future chained to it, the shield's), their callbacks and the
    executor's locks: about a twelfth of the gateways' CPU in a reconnect storm. A call
    whose caller was cancelled still runs (a send in flight is still stored); its result
    is dropped. The threads are started on first use; at exit they finish what was
    queued.
    """

    def __init__(self, size: int, name: str) -> None:
        """Make a pool of `size` threads named `name-N` (started on first use)."""
        self.size = size
        self.name = name
        self.queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def run(self, func: Callable[[], T]) -> asyncio.Future[T]:
        """Queue `func()` (in the caller's context); return a future of the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self.threads:
            self._start()
        self.queue.put((func, contextvars.copy_context(), loop, future))
        return future

    def _start(self) -> None:
        with self.lock:
            if self.threads:
                return
            threads = [
                threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True)
                for n in range(self.size)
            ]
            for thread in threads:
                thread.start()
            self.threads = threads
        atexit.register(self.stop)

    def _work(self) -> None:
        while (work := self.queue.get()) is not None:
            func, context, loop, future = work
            try:
                result, failure = context.run(func), None
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
                result, failure = None, exc
            # RuntimeError: the loop was closed meanwhile, and nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, failure)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the threads finish the queued calls, then end them (waiting `timeout` s)."""
        with self.lock:
            threads, self.threads = self.threads, []
        for _ in threads:
            self.queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _settle(future: asyncio.Future[Any], result: Any, failure: BaseException | None) -> None:
    if future.cancelled():
        return
    if failure is None:
        future.set_result(result)
    else:
        future.set_exception(failure)


_pool = DbPool(settings.WS_DB_THREADS, "gateway-db")

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
    return _submit(func, kwargs, None)


def db_by(start_by: float | None, func: Callable[..., T], /, **kwargs: Any) -> Awaitable[T]:
    """Like `db`, but raise `Shed` if no thread starts the work by `start_by` (monotonic).

    For a handshake: when the gateway is behind, the queue holds handshakes whose clients
    have given up waiting for `session.ready` and connected again; doing their work would
    only push the live ones past their clients' patience too (a reconnect storm that
    feeds itself). None: no limit.
    """
    return _submit(func, kwargs, start_by)


def _submit(func: Callable[..., T], kwargs: dict[str, Any], start_by: float | None) -> Awaitable[T]:
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
    return _pool.run(run)


K = TypeVar("K")
V = TypeVar("V")


class Held(Protocol):
    """A socket that sends no frame but the one it is held for while `held` is pending."""

    held: asyncio.Future[None] | None


S = TypeVar("S", bound=Held)
R = TypeVar("R")


class AnsweredInWindows(Generic[S, R, V]):
    """Answer the requests of many sockets with one `db` call per `window` seconds.

    Sockets that all ask the same question at their own pace (`ping`) would each cost a
    thread hop and a round trip; gathered for a window they cost one. `ask` returns at
    once, so the socket goes on with its frames and events while the window lasts (a
    socket handles one at a time: had it waited for its answer, every delivery to it
    would have waited too).

    When the window ends, every asking socket is held (`Held.held`: `FrameSocket` sends
    no other frame until it is done) from before `fetch` starts until its answer is
    sent. Whatever goes out after the answer was read from (a delivery, or the reply of
    a frame whose write ended after the read) goes out after the answer, so the client
    never holds something the answer does not count. `fetch` (in the database pool) gets the
    window's requests and returns one value for all of them; `answer(socket, request,
    value)` sends one answer, given the exception instead if `fetch` raised.
    """

    def __init__(
        self,
        fetch: Callable[[list[R]], V],
        answer: Callable[[S, R, V | Exception], Awaitable[None]],
        *,
        window: float,
    ) -> None:
        self.fetch = fetch
        self.answer = answer
        self.window = window
        self.waiting: list[tuple[S, R]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def ask(self, socket: S, request: R) -> None:
        """Queue `request` of `socket`; it is answered once the window ends."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.waiting = loop, []
        if not self.waiting:
            # In a context of its own: the batch must not inherit the first caller's.
            loop.call_later(self.window, self._flush, loop, context=contextvars.Context())
        self.waiting.append((socket, request))

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not loop or not self.waiting:
            return
        batch, self.waiting = self.waiting, []
        holds: list[asyncio.Future[None]] = []
        for socket, _ in batch:
            hold: asyncio.Future[None] = loop.create_future()
            socket.held = hold
            holds.append(hold)
        loop.create_task(self._answer(batch, holds))

    async def _answer(self, batch: list[tuple[S, R]], holds: list[asyncio.Future[None]]) -> None:
        try:
            value: V | Exception
            try:
                value = await db(functools.partial(self.fetch, [request for _, request in batch]))
            except Exception as exc:  # noqa: BLE001 - every socket is answered, not left held
                value = exc
            outcomes = await asyncio.gather(
                *(self._one(s, r, value, h) for (s, r), h in zip(batch, holds, strict=True)),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    logger.error("an answer failed", exc_info=outcome)
        finally:
            for (socket, _), hold in zip(batch, holds, strict=True):
                _release(socket, hold)

    async def _one(
        self, socket: S, request: R, value: V | Exception, hold: asyncio.Future[None]
    ) -> None:
        try:
            await self.answer(socket, request, value)
        finally:
            _release(socket, hold)


def _release(socket: Held, hold: asyncio.Future[None]) -> None:
    """Let `socket` go on, unless a later window holds it again."""
    if not hold.done():
        hold.set_result(None)
    if socket.held is hold:
        socket.held = None


class Batcher(Generic[K, V]):
    """Run calls of one kind together when they arrive faster than they are done.

    At most `limit` batches run at once. A call that arrives while fewer run starts a
    batch of its own at once (no added wait when the gateway is not busy); one that
    arrives while `limit` run waits for the first of them to end, and goes with the
    others that waited, at most `size` to a batch. `run` (in the database pool) gets
    the items of a batch and returns one outcome per item, in order: a value, or the
    exception to raise in that caller. If `run` raises, every caller of the batch gets
    the exception. A caller that stops waiting does not take its item out: once handed
    over, an item is run (a send in flight is still stored); its outcome is dropped.
    """

    def __init__(
        self,
        run: Callable[[list[K]], Sequence[V | Exception]],
        *,
        limit: int,
        size: int,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        """`observe`, if given, is told the size of each batch as it starts."""
        self.run = run
        self.limit = limit
        self.size = size
        self.observe = observe
        self.running = 0
        self.waiting: list[tuple[K, asyncio.Future[V]]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: K) -> V:
        """Hand `item` to the next batch; return its outcome (or raise its exception)."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.waiting, self.running = loop, [], 0
        future: asyncio.Future[V] = loop.create_future()
        self.waiting.append((item, future))
        if self.running < self.limit:
            self._start(loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self.waiting = self.waiting[: self.size], self.waiting[self.size :]
        self.running += 1
        if self.observe is not None:
            self.observe(len(batch))
        call = functools.partial(self.run, [item for item, _ in batch])
        # In a context of its own: the batch must not inherit the first caller's. A
        # callback on the pool's future, not a task: one object less a batch.
        done = asyncio.ensure_future(contextvars.Context().run(db, call))
        done.add_done_callback(functools.partial(self._finish, loop, batch))

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[K, asyncio.Future[V]]],
        done: asyncio.Future[Sequence[V | Exception]],
    ) -> None:
        failure = asyncio.CancelledError() if done.cancelled() else done.exception()
        outcomes: Sequence[V | BaseException] = (
            [failure] * len(batch) if failure is not None else done.result()
        )
        if len(outcomes) != len(batch):
            failure = RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
            outcomes = [failure] * len(batch)
        if self.loop is loop:
            self.running -= 1
            if self.waiting:
                self._start(loop)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
