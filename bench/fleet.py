"""The load side: fleets of reference clients (`chatclient.ChatClient`) and what they saw.

Message scenarios run their clients on the harness's own event loop and read the shared
`History` afterwards: a send's `invoked_at` and each other member's first `received_at`
of the same `client_msg_id` give one delivery and its latency (live push, gap fetch or
catch-up, whichever came first). Idle-socket scenarios need more sockets than one
process may open (the hard open-file limit is 20,000 here), so they run in load worker
processes (`IdleWorkers`), each holding at most `SOCKETS_PER_WORKER` clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.layers import percentile
from chatclient import ChatClient, History, bearer_auth

Progress = Callable[[str], None]

SOCKETS_PER_WORKER = 7_000
CONNECT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Account:
    """A provisioned user and an access token for it."""

    user_id: int
    token: str


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Return count, p50/p95/p99/max and mean of `seconds`, in milliseconds."""
    if not seconds:
        return {"count": 0}
    return {
        "count": len(seconds),
        "p50": round(1000 * percentile(seconds, 50), 2),
        "p95": round(1000 * percentile(seconds, 95), 2),
        "p99": round(1000 * percentile(seconds, 99), 2),
        "max": round(1000 * max(seconds), 2),
        "mean": round(1000 * sum(seconds) / len(seconds), 2),
    }


def make_client(
    account: Account,
    urls: Sequence[str],
    *,
    name: str,
    history: History | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    on_message: Callable[[dict[str, Any], Any], None] | None = None,
) -> ChatClient:
    """Return a reference client for `account` (not connected yet), with default backoff."""
    return ChatClient(
        list(urls),
        bearer_auth(account.token),
        device=f"bench-{account.user_id}",
        name=name,
        history=history,
        on_event=on_event,
        on_message=on_message,
    )


async def connect_all(
    clients: Sequence[ChatClient],
    *,
    concurrency: int,
    progress: Progress | None = None,
    label: str = "clients",
) -> dict[str, Any]:
    """Connect every client (at most `concurrency` handshakes at once); return the timings.

    A client that fails to connect within CONNECT_TIMEOUT is closed and counted.
    """
    slots = asyncio.Semaphore(concurrency)
    durations: list[float] = []
    failures: list[str] = []
    done = 0

    async def one(client: ChatClient) -> None:
        nonlocal done
        async with slots:
            started = time.monotonic()
            try:
                await client.connect(timeout=CONNECT_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
                failures.append(f"{client.name}: {exc!r}")
                await client.close()
            else:
                durations.append(time.monotonic() - started)
            done += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(2.0)
            if progress is not None:
                progress(f"  {done}/{len(clients)} {label} connected")

    started = time.monotonic()
    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(one(c) for c in clients))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    elapsed = time.monotonic() - started
    return {
        "clients": len(clients),
        "connected": len(durations),
        "failed": len(failures),
        "failures": failures[:10],
        "seconds": round(elapsed, 3),
        "per_second": round(len(durations) / elapsed, 1) if elapsed > 0 else math.nan,
        "handshake_ms": summary_ms(durations),
    }


async def close_all(clients: Iterable[ChatClient], concurrency: int = 500) -> int:
    """Close every client, `concurrency` at a time; return how many did not close in 15 s."""
    slots = asyncio.Semaphore(concurrency)
    hung = 0

    async def one(client: ChatClient) -> None:
        nonlocal hung
        async with slots:
            try:
                async with asyncio.timeout(15):
                    await client.close()
            except TimeoutError:
                hung += 1

    await asyncio.gather(*(one(c) for c in clients))
    return hung


# --- deliveries ---------------------------------------------------------------------------


@dataclass
class Deliveries:
    """Sends and their deliveries to the other members, read from a History."""

    latencies: list[float] = field(default_factory=list)
    expected: int = 0
    delivered: int = 0
    sends_ok: int = 0
    sends_failed: int = 0
    first_send: float = math.nan
    last_receipt: float = math.nan

    @property
    def lost(self) -> int:
        """Return how many expected deliveries never arrived."""
        return self.expected - self.delivered


def deliveries(
    history: History,
    recipients: Mapping[int, Sequence[str]],
    *,
    since: float = 0.0,
) -> Deliveries:
    """Match every send invoked at or after `since` with its receipts by the other members.

    `recipients[conversation]` names the clients that should receive a message of that
    conversation (the sender's own client is left out per message). A failed send
    expects nothing; a send of unknown outcome that reached nobody counts as lost.
    """
    first: dict[tuple[str, str], float] = {}
    for recv in history.recvs:
        if recv.client_msg_id is None or recv.via == "reply":
            continue
        key = (recv.client_msg_id, recv.client)
        seen = first.get(key)
        if seen is None or recv.received_at < seen:
            first[key] = recv.received_at
    result = Deliveries()
    last = -math.inf
    first_send = math.inf
    for send in history.sends:
        if send.invoked_at < since:
            continue
        if send.outcome == "fail":
            result.sends_failed += 1
            continue
        if send.outcome == "ok":
            result.sends_ok += 1
        first_send = min(first_send, send.invoked_at)
        for client in recipients[send.conversation]:
            if client == send.client:
                continue
            result.expected += 1
            at = first.get((send.client_msg_id, client))
            if at is None:
                continue
            result.delivered += 1
            result.latencies.append(at - send.invoked_at)
            last = max(last, at)
    result.first_send = first_send if first_send != math.inf else math.nan
    result.last_receipt = last if last != -math.inf else math.nan
    return result


def members_by_conversation(clients: Mapping[str, Sequence[int]]) -> dict[int, list[str]]:
    """Invert client name -> conversations into conversation -> client names."""
    result: dict[int, list[str]] = defaultdict(list)
    for name, conversations in clients.items():
        for conversation in conversations:
            result[conversation].append(name)
    return dict(result)


async def open_loop(
    rate: float, duration: float, send: Callable[[int], Coroutine[Any, Any, Any]]
) -> list[asyncio.Task[Any]]:
    """Start `send(0)`, `send(1)`, ... as tasks, `rate` per second for `duration` s.

    Open loop: a send starts when its time comes whether or not earlier ones were
    answered, so a slow server shows up as latency, not as a lower offered rate.
    Returns the send tasks (await them to wait for the answers).
    """
    tasks: list[asyncio.Task[Any]] = []
    total = max(1, round(rate * duration))
    started = time.monotonic()
    issued = 0
    while issued < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while issued < due:
            tasks.append(asyncio.create_task(send(issued), name=f"send {issued}"))
            issued += 1
        await asyncio.sleep(max(0.0, started + issued / rate - time.monotonic()))
    return tasks


async def offer_load(
    senders: Sequence[tuple[ChatClient, int]],
    rate: float,
    duration: float,
    *,
    tag: str,
) -> list[asyncio.Task[Any]]:
    """Send `open_loop` at `rate` per second for `duration` s, round-robin over `senders`."""

    def send(n: int) -> Coroutine[Any, Any, Any]:
        client, conversation = senders[n % len(senders)]
        return client.send(conversation, f"{tag} {n}", timeout=30.0)

    return await open_loop(rate, duration, send)


async def settle(tasks: Sequence[asyncio.Task[Any]], timeout: float) -> int:
    """Wait up to `timeout` for send tasks; cancel the rest; return how many failed."""
    if not tasks:
        return 0
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return sum(1 for t in tasks if t.cancelled() or t.exception() is not None)


# --- idle sockets in worker processes ----------------------------------------------------


def _worker_main(
    conn: Connection, urls: list[str], accounts: list[tuple[int, str]], concurrency: int
) -> None:
    """Entry point of a load worker process (see `IdleWorkers`)."""
    asyncio.run(_idle_worker(conn, urls, accounts, concurrency))


async def _idle_worker(
    conn: Connection, urls: list[str], accounts: list[tuple[int, str]], concurrency: int
) -> None:
    pongs = 0

    def on_event(frame: dict[str, Any]) -> None:
        nonlocal pongs
        if frame.get("type") == "pong":
            pongs += 1

    clients = [
        make_client(
            Account(uid, token),
            [urls[uid % len(urls)]],
            name=f"idle-{uid}",
            on_event=on_event,
        )
        for uid, token in accounts
    ]

    def tell(message: object) -> None:
        conn.send(message)

    result = await connect_all(
        clients, concurrency=concurrency, progress=lambda line: tell(("progress", line))
    )
    tell(("connected", result))
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command == "stats":
            tell(("stats", {"pongs": pongs, "open": sum(1 for c in clients if c.connected)}))
        elif command == "close":
            await close_all(clients)
            tell(("closed", None))
        elif command == "exit":
            return


class IdleWorkers:
    """Load worker processes that open and hold idle authenticated sockets."""

    def __init__(
        self,
        urls: Sequence[str],
        accounts: Sequence[Account],
        *,
        concurrency: int,
        progress: Progress,
    ) -> None:
        """Split `accounts` over as few workers as the open-file limit allows."""
        self.progress = progress
        count = max(1, math.ceil(len(accounts) / SOCKETS_PER_WORKER))
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for n in range(count):
            share = [(a.user_id, a.token) for a in accounts[n::count]]
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(child, list(urls), share, max(1, concurrency // count)),
                name=f"bench-idle-{n}",
                daemon=True,
            )
            process.start()
            child.close()
            self._workers.append((process, parent))

    @property
    def pids(self) -> list[int]:
        """Return the pid of every worker."""
        return [p.pid for p, _ in self._workers if p.pid is not None]

    def _await(self, kind: str, timeout: float) -> list[Any]:
        """Collect one `kind` answer per worker, printing progress lines meanwhile."""
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        last_progress: dict[int, str] = {}
        last_print = 0.0
        while len(answers) < len(self._workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"load workers did not answer {kind!r} in {timeout:.0f} s")
            for index, (process, conn) in enumerate(self._workers):
                if index in answers:
                    continue
                if not process.is_alive() and not conn.poll():
                    raise RuntimeError(f"load worker {process.name} exited ({process.exitcode})")
                while conn.poll(0.05):
                    got, value = conn.recv()
                    if got == "progress":
                        last_progress[index] = value.strip()
                    elif got == kind:
                        answers[index] = value
                        break
            if last_progress and time.monotonic() - last_print > 2.0:
                last_print = time.monotonic()
                self.progress("  " + "; ".join(last_progress[i] for i in sorted(last_progress)))
        return [answers[i] for i in range(len(self._workers))]

    def connected(self, timeout: float) -> list[dict[str, Any]]:
        """Wait until every worker has connected its share; return their timings."""
        return self._await("connected", timeout)

    def stats(self) -> dict[str, int]:
        """Return the summed heartbeat answers (pongs) and open sockets of all workers."""
        for _, conn in self._workers:
            conn.send("stats")
        totals: dict[str, int] = defaultdict(int)
        for answer in self._await("stats", 60):
            for key, value in answer.items():
                totals[key] += value
        return dict(totals)

    def close(self, before_exit: Callable[[], None] | None = None) -> None:
        """Close every socket, call `before_exit()` (workers still alive), then end them."""
        with contextlib.suppress(Exception):
            for _, conn in self._workers:
                conn.send("close")
            self._await("closed", 120)
        if before_exit is not None:
            before_exit()
        for process, conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send("exit")
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()


def merge_connect_results(results: Sequence[Mapping[str, Any]], elapsed: float) -> dict[str, Any]:
    """Combine the workers' connect timings (they ran at the same time)."""
    connected = sum(r["connected"] for r in results)
    return {
        "clients": sum(r["clients"] for r in results),
        "connected": connected,
        "failed": sum(r["failed"] for r in results),
        "failures": [f for r in results for f in r["failures"]][:10],
        "seconds": round(elapsed, 3),
        "per_second": round(connected / elapsed, 1) if elapsed > 0 else math.nan,
        "handshake_ms_p50_per_worker": [r["handshake_ms"].get("p50") for r in results],
        "handshake_ms_p99_per_worker": [r["handshake_ms"].get("p99") for r in results],
        "workers": len(results),
    }
