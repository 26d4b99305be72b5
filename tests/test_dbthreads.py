"""The gateway's database pool and its helpers: `db` runs calls in the pool's threads,
`AnsweredInWindows` answers many sockets' requests with one read, `Batcher` runs calls
together when they come faster than they are done; `db_by` drops work that no thread
could start in time."""

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest
from django.conf import settings

from chatsite.gateway.dbthreads import AnsweredInWindows, Batcher, Shed, db, db_by


class Asker:
    """A socket as `AnsweredInWindows` sees it: it has `held`, and records its answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held: asyncio.Future[None] | None = None
        self.answers: list[Any] = []


def test_requests_of_a_window_share_one_fetch_and_each_socket_gets_its_answer() -> None:
    """Tried: three sockets ask four times within one window; one fetch answers all, and
    each asker is held from the fetch's start until its own answer is sent."""
    calls: list[list[int]] = []
    held_during_fetch: list[bool] = []
    sockets = [Asker("a"), Asker("b"), Asker("c")]

    def fetch(keys: list[int]) -> dict[int, int]:
        calls.append(sorted(keys))
        held_during_fetch.extend(s.held is not None and not s.held.done() for s in sockets)
        return {k: k * 10 for k in keys if k != 3}

    async def answer(socket: Asker, key: int, found: dict[int, int] | Exception) -> None:
        assert socket.held is not None and not socket.held.done()  # held while answered
        socket.answers.append(found if isinstance(found, Exception) else found.get(key))

    batch: AnsweredInWindows[Asker, int, dict[int, int]] = AnsweredInWindows(
        fetch, answer, window=0.01
    )

    async def scenario() -> float:
        started = time.monotonic()
        for socket, key in zip([*sockets, sockets[1]], (1, 2, 3, 4), strict=True):
            batch.ask(socket, key)  # returns at once: the socket is not made to wait
        asked = time.monotonic() - started
        while any(s.held is not None or len(s.answers) < 1 for s in sockets):
            await asyncio.sleep(0.005)
        return asked

    assert asyncio.run(scenario()) < 0.01
    assert calls == [[1, 2, 3, 4]]
    assert held_during_fetch == [True, True, True]
    assert [s.answers for s in sockets] == [[10], [20, 40], [None]]  # 3 was not found
    assert all(s.held is None for s in sockets)  # released after


def test_a_failed_fetch_is_each_sockets_answer_and_the_next_window_fetches_again() -> None:
    attempts: list[int] = []
    socket = Asker("a")

    def fetch(keys: list[int]) -> dict[int, int]:
        attempts.append(len(keys))
        if len(attempts) == 1:
            raise ConnectionError("database down")
        return dict.fromkeys(keys, 1)

    async def answer(socket: Asker, key: int, found: dict[int, int] | Exception) -> None:
        socket.answers.append(found if isinstance(found, Exception) else found[key])

    batch: AnsweredInWindows[Asker, int, dict[int, int]] = AnsweredInWindows(
        fetch, answer, window=0.01
    )

    async def until_answered(count: int) -> None:
        while len(socket.answers) < count or socket.held is not None:
            await asyncio.sleep(0.005)

    async def scenario() -> None:
        batch.ask(socket, 1)
        batch.ask(socket, 2)
        await until_answered(2)
        batch.ask(socket, 1)
        await until_answered(3)

    asyncio.run(scenario())
    assert [type(a) for a in socket.answers[:2]] == [ConnectionError, ConnectionError]
    assert socket.answers[2] == 1
    assert attempts == [2, 1]


def test_an_answer_that_fails_still_releases_its_socket_and_the_others_are_answered() -> None:
    sockets = [Asker("broken"), Asker("fine")]

    async def answer(socket: Asker, key: int, found: Any) -> None:
        if socket.name == "broken":
            raise RuntimeError("a bug in one answer")
        socket.answers.append(key)

    batch: AnsweredInWindows[Asker, int, None] = AnsweredInWindows(
        lambda keys: None, answer, window=0.0
    )

    async def scenario() -> None:
        for key, socket in enumerate(sockets):
            batch.ask(socket, key)
        while sockets[1].held is not None or not sockets[1].answers:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert sockets[1].answers == [1]
    assert sockets[0].held is None  # not left holding the socket forever


def test_each_event_loop_gets_its_own_batches() -> None:
    socket = Asker("a")

    async def answer(socket: Asker, key: int, found: Any) -> None:
        socket.answers.append(found)

    batch: AnsweredInWindows[Asker, int, int] = AnsweredInWindows(
        lambda keys: 7, answer, window=0.0
    )

    async def ask(key: int) -> None:
        batch.ask(socket, key)
        while len(socket.answers) < key:
            await asyncio.sleep(0.001)

    asyncio.run(ask(1))
    asyncio.run(ask(2))  # a new loop: nothing of the old one is used
    assert socket.answers == [7, 7]


def test_work_no_thread_starts_by_its_deadline_is_dropped_unstarted() -> None:
    """Tried: every database thread busy for 0.5 s; a handshake's lookup with a 0.1 s
    deadline waits behind them and is dropped (`Shed`) without running, while one with a
    generous deadline and plain `db` work queued beside it run when the threads free up."""
    release = threading.Event()
    ran: list[str] = []

    def hold() -> None:
        release.wait(10)

    def lookup(name: str) -> str:
        ran.append(name)
        return name

    async def scenario() -> list[Any]:
        busy = [db(hold) for _ in range(settings.WS_DB_THREADS)]
        now = time.monotonic()
        late = db_by(now + 0.1, lookup, name="late")
        patient = db_by(now + 30, lookup, name="patient")
        plain = db(lookup, name="plain")
        asyncio.get_running_loop().call_later(0.5, release.set)
        await asyncio.gather(*busy)
        return list(await asyncio.gather(late, patient, plain, return_exceptions=True))

    late, patient, plain = asyncio.run(scenario())
    assert isinstance(late, Shed) and "lookup not started by its deadline" in str(late)
    assert (patient, plain) == ("patient", "plain")
    assert sorted(ran) == ["patient", "plain"]


def test_no_deadline_means_no_limit() -> None:
    async def answer(start_by: float | None) -> int:
        return await db_by(start_by, lambda: 42)

    assert asyncio.run(answer(None)) == 42
    with pytest.raises(Shed):
        asyncio.run(answer(time.monotonic() - 1))


def test_a_call_runs_in_the_callers_context_and_its_failure_reaches_the_caller() -> None:
    """Tried: a context variable set by the caller, read in the thread; a call that
    raises; a call that ends the thread's work with `SystemExit` (not an `Exception`)."""
    request = contextvars.ContextVar("request", default="none")

    def read() -> tuple[str, bool]:
        return request.get(), threading.current_thread() is threading.main_thread()

    def fail() -> None:
        raise ValueError("no such row")

    def leave() -> None:
        raise SystemExit(3)

    async def scenario() -> list[Any]:
        request.set("r-1")
        calls = asyncio.gather(db(read), db(fail), db(leave), return_exceptions=True)
        return list(await asyncio.wait_for(calls, 10))

    seen, failed, left = asyncio.run(scenario())
    assert seen == ("r-1", False)
    assert isinstance(failed, ValueError) and str(failed) == "no such row"
    assert isinstance(left, SystemExit) and left.code == 3

    async def again() -> int:
        return await db(lambda: 5)

    assert asyncio.run(again()) == 5  # the threads are still there


def test_a_cancelled_caller_does_not_cancel_its_call() -> None:
    """Tried: a caller cancelled while its call runs (a socket closed mid-send); the call
    still completes, its result is dropped, and the caller sees the cancellation."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def store() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "stored"

    errors: list[dict[str, Any]] = []

    async def scenario() -> bool:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        caller = asyncio.ensure_future(db(store))
        await asyncio.to_thread(started.wait, 10)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        await asyncio.to_thread(finished.wait, 10)
        # The thread then settles the cancelled future through the loop: no event marks
        # it, so the loop runs a while for it to arrive and fail, were it to.
        await asyncio.sleep(0.05)
        return caller.cancelled()

    assert asyncio.run(scenario()) is True
    assert finished.is_set()
    assert errors == []  # settling a cancelled caller's future is a no-op, not an error


class Gate:
    """A batch function that records its batches and, while closed, holds them in its thread."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Semaphore(0)
        self.open = threading.Event()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.started.release()
        assert self.open.wait(10)
        return [ValueError(f"no {i}") if i < 0 else i * 10 for i in items]

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.acquire, True, 10), "no batch started"


def test_calls_that_arrive_while_the_batches_run_go_together_in_the_next() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate, limit=2, size=3)

    async def scenario() -> list[Any]:
        # Given two batches running (the limit), each of one call that found no batch
        first = asyncio.ensure_future(batcher.submit(1))
        await gate.wait_started()
        second = asyncio.ensure_future(batcher.submit(2))
        await gate.wait_started()
        # When five more calls arrive meanwhile (one of them to fail)
        later = [asyncio.ensure_future(batcher.submit(n)) for n in (3, -4, 5, 6, 7)]
        await asyncio.sleep(0.05)
        assert gate.batches == [[1], [2]], "a call started beyond the limit"
        gate.open.set()
        return await asyncio.gather(first, second, *later, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    # Then they ran in batches of at most 3, in the order they came
    assert gate.batches == [[1], [2], [3, -4, 5], [6, 7]]
    # and each caller got its own outcome: a value, or its own exception
    assert outcomes[:3] + outcomes[4:] == [10, 20, 30, 50, 60, 70]
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "no -4"


def test_a_batch_that_fails_as_a_whole_fails_each_of_its_callers_and_the_next_runs() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int | Exception]:
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database down")
        return list(items)

    batcher: Batcher[int, int] = Batcher(run, limit=1, size=10)

    async def scenario() -> tuple[Any, int]:
        failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        return failed, await batcher.submit(3)

    failed, again = asyncio.run(scenario())
    # The first call ran alone and failed; the second waited for it, and ran next
    assert [type(f) for f in failed] == [ConnectionError, int]
    assert calls == [[1], [2], [3]]
    assert again == 3


def test_a_caller_that_stops_waiting_still_has_its_call_run() -> None:
    gate = Gate()
    batcher: Batcher[int, int] = Batcher(gate, limit=1, size=10)

    async def scenario() -> int:
        first = asyncio.ensure_future(batcher.submit(1))
        await gate.wait_started()
        # When a caller waiting for the next batch is cancelled (its socket closed)
        waiting = asyncio.ensure_future(batcher.submit(2))
        while not batcher.waiting:  # handed over
            await asyncio.sleep(0)
        waiting.cancel()
        gate.open.set()
        await first
        # Then its item still runs, and a later call is not held up by it
        return await batcher.submit(3)

    assert asyncio.run(scenario()) == 30
    assert gate.batches == [[1], [2], [3]]
