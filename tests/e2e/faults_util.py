"""Helpers of the fault-injection end-to-end tests (RELIABILITY.md R6-R13).

Clients are the reference `ChatClient` sharing one `History`; `check()` is the verdict.
What is here: parties (a user and an access token minted before the event loop),
paced background traffic, an "any message applied" event to await instead of sleeping,
raw protocol sockets (for a client that stops reading, a lost ack, a wire tap), a
live-delivery probe, and the report every scenario publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.db import connection
from websockets.asyncio.client import ClientConnection, connect

from accounts.models import User
from accounts.tokens import issue_pair
from bench.harness import REPO_ROOT, Gateway, gateway_env
from chatclient import ChatClient, ChatError, CheckReport, History, bearer_auth
from chatclient.state import Message

logger = logging.getLogger(__name__)

Frame = dict[str, Any]

# Sends are rate limited per user (20 burst, 5/s); fault scenarios send faster on purpose.
FAST_SENDS = {"CHAT_SEND_RATE": "100000", "CHAT_SEND_BURST": "100000"}


# --- parties and clients ---------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """A client to be: its name in the history, its user id and an access token."""

    name: str
    user_id: int
    token: str


def party(user: User, name: str | None = None) -> Party:
    """Mint an access token for `user` (outside the event loop: it writes to the database)."""
    return Party(name or user.username, user.pk, issue_pair(user)["access"])


class Arrivals:
    """An event set whenever any client applies a message: await it instead of sleeping."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def on_message(self, message: Message, via: str) -> None:
        """Wake the waiters (the `on_message` hook of ChatClient)."""
        self._event.set()

    def poke(self) -> None:
        """Wake the waiters for a reason of the test's own (a send completed, say)."""
        self._event.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Return True once `predicate()` holds, False if `timeout` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._event.clear()
            # Bounded wait per round: some conditions (a reconnect) do not apply messages.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.25)):
                    await self._event.wait()
        return True


def make_client(
    urls: Sequence[str],
    who: Party,
    history: History,
    arrivals: Arrivals | None = None,
    **options: Any,
) -> ChatClient:
    """Return a ChatClient for `who` that records into `history` (not yet connected)."""
    return ChatClient(
        list(urls),
        bearer_auth(who.token),
        device=f"{who.name}-dev",
        name=who.name,
        history=history,
        on_message=arrivals.on_message if arrivals is not None else None,
        **options,
    )


async def connect_all(clients: Iterable[ChatClient]) -> None:
    """Connect every client at once."""
    await asyncio.gather(*(c.connect() for c in clients))


async def close_all(clients: Iterable[ChatClient]) -> None:
    """Close every client (errors of already-stopped clients are ignored)."""
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def settle(clients: Iterable[ChatClient], timeout: float = 30.0) -> None:
    """Run, now, the `sync` every client runs every 60 s: it repairs a lost last event."""
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(c.sync() for c in clients))


def views_of(clients: Iterable[ChatClient]) -> dict[str, dict[int, list[Message]]]:
    """Return every client's final views, keyed by client name."""
    return {c.name: c.views() for c in clients}


async def in_thread(func: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run an ORM call in a worker thread that closes its database connection after."""

    def run() -> Any:
        try:
            return func(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def ok_sends(history: History, since: float = 0.0) -> int:
    """Return the number of acknowledged sends invoked at or after `since`."""
    return sum(1 for s in history.sends if s.outcome == "ok" and s.invoked_at >= since)


# --- paced traffic ---------------------------------------------------------------------


class Traffic:
    """Senders that each send one message at a time to their conversations, until stopped.

    Each send waits for its `message.sent` (so its reply time is in the history), then
    the sender pauses `pause` seconds: traffic at a steady, bounded rate.
    """

    def __init__(
        self,
        senders: Sequence[tuple[ChatClient, Sequence[int]]],
        *,
        pause: float,
        body_size: int = 0,
        send_timeout: float | None = 60.0,
        arrivals: Arrivals | None = None,
    ) -> None:
        """Prepare the senders; nothing is sent before `start()`."""
        self.senders = senders
        self.pause = pause
        self.padding = "x" * body_size
        self.send_timeout = send_timeout
        self.arrivals = arrivals
        self.errors: list[str] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start every sender."""
        self._tasks = [
            asyncio.create_task(self._run(client, conversations), name=f"traffic:{client.name}")
            for client, conversations in self.senders
        ]

    async def stop(self) -> None:
        """Stop sending and wait for the sends in flight to finish."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _run(self, client: ChatClient, conversations: Sequence[int]) -> None:
        for number, conversation in enumerate(itertools.cycle(conversations), start=1):
            if self._stopping.is_set():
                return
            try:
                await client.send(
                    conversation,
                    f"{client.name} #{number} {self.padding}",
                    timeout=self.send_timeout,
                )
            except (ChatError, TimeoutError) as exc:
                self.errors.append(f"{client.name} #{number}: {exc!r}")
            if self.arrivals is not None:
                self.arrivals.poke()
            # The pacing between sends (time is the subject), cut short by stop().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.pause):
                    await self._stopping.wait()


# --- live delivery probe ---------------------------------------------------------------


async def measure_live_resume(
    prober: ChatClient,
    audiences: Mapping[int, Sequence[ChatClient]],
    *,
    history: History,
    arrivals: Arrivals,
    since: float,
    interval: float = 0.5,
    deadline: float = 20.0,
) -> dict[str, float | None]:
    """Probe each conversation until every member's client has live delivery again.

    `prober` sends a probe to every conversation every `interval` seconds. A client has
    resumed at the first probe it received live (`RecvRecord.via == "live"`), or, if it
    reconnected after `since`, at its new `session.ready` provided a probe then reached
    its view. Returns `"<conversation>/<client>" -> seconds after since` (None: not
    resumed within `deadline`). A lost probe followed by a live one is repaired by a
    fetch, so the figure may overstate the resume time by about one interval.

    Run it while the audience is quiet: a client that sends applies its own reply, sees
    the gap before it and fetches, and that fetch often beats the live event, so the
    history would say `fetch` though the socket's live path works.
    """
    probes: set[int] = set()
    resumed: dict[str, float] = {}
    wanted = {
        f"{c}/{client.name}": (c, client) for c, clients in audiences.items() for client in clients
    }

    done = asyncio.Event()

    async def probe() -> None:
        for number in itertools.count(1):
            for conversation in audiences:
                try:
                    message = await prober.send(conversation, f"probe {number}", timeout=10)
                except (ChatError, TimeoutError) as exc:
                    logger.info("probe %s in %s failed: %r", number, conversation, exc)
                    continue
                probes.add(int(message["id"]))
            # One round of probes per interval (the probe rate is the subject), and never
            # a cancelled send: it would be recorded as an unknown outcome.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await done.wait()
            if done.is_set():
                return

    def resumed_at(conversation: int, client: ChatClient) -> float | None:
        live = [
            r.received_at
            for r in history.recvs
            if r.client == client.name
            and r.conversation == conversation
            and r.message_id in probes
            and r.via == "live"
            and r.received_at >= since
        ]
        candidates = [min(live)] if live else []
        ready = [
            r.ready_at
            for r in history.reconnects
            if r.client == client.name and r.ready_at >= since
        ]
        if ready and any(int(m["id"]) in probes for m in client.view(conversation)):
            candidates.append(min(ready))
        return min(candidates) if candidates else None

    def all_resumed() -> bool:
        for key, (conversation, client) in wanted.items():
            if key not in resumed:
                at = resumed_at(conversation, client)
                if at is not None:
                    resumed[key] = at - since
        return len(resumed) == len(wanted)

    task = asyncio.create_task(probe(), name="live-probe")
    try:
        await arrivals.until(all_resumed, timeout=deadline)
    finally:
        done.set()
        await task
    return {key: resumed.get(key) for key in wanted}


# --- raw protocol sockets --------------------------------------------------------------


class RawSocket:
    """A raw protocol connection that keeps every frame it read (a wire tap)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Frame] = []

    async def send(self, **frame: Any) -> None:
        """Send one JSON frame."""
        await self.ws.send(json.dumps(frame))

    async def next(self, timeout: float = 10.0) -> Frame:
        """Return the next frame."""
        async with asyncio.timeout(timeout):
            frame: Frame = json.loads(await self.ws.recv())
        self.frames.append(frame)
        return frame

    async def until(self, match: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        """Return the next frame that matches (the others are kept in `frames`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - loop.time()))
            if match(frame):
                return frame

    async def request(self, timeout: float = 10.0, **frame: Any) -> Frame:
        """Send a frame with a fresh ref and return the frame that answers it."""
        ref = uuid.uuid4().hex[:12]
        await self.send(ref=ref, **frame)
        return await self.until(lambda f: f.get("ref") == ref, timeout)

    async def quiet(self, timeout: float = 10.0) -> list[Frame]:
        """Return the frames that arrive before the answer to a ping."""
        ref = uuid.uuid4().hex[:12]
        await self.send(type="ping", ref=ref)
        before: list[Frame] = []
        while True:
            frame = await self.next(timeout)
            if frame.get("ref") == ref:
                return before
            before.append(frame)

    async def close(self) -> None:
        """Close the connection (bounded: a peer that does not answer is dropped)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.ws.close()
        self.ws.transport.abort()


async def open_raw(
    url: str, token: str, *, device: str | None = None, rcvbuf: int | None = None
) -> tuple[RawSocket, Frame]:
    """Open a raw socket with a Bearer token; return it and its `session.ready`.

    `rcvbuf` sets a small kernel receive buffer before connecting (it also turns off
    Linux's receive-buffer autotuning, up to 32 MB here), so a client that stops reading
    fills the path to the server after a few megabytes, as a slow phone would.
    """
    target = f"{url}?device={device}" if device else url
    sock: socket.socket | None = None
    if rcvbuf is not None:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    ws = await connect(
        target,
        additional_headers={"Authorization": f"Bearer {token}"},
        sock=sock,
        # Our pings would time out while the test deliberately stops reading.
        ping_interval=None,
        max_size=None,
        compression=None,
    )
    raw = RawSocket(ws)
    ready = await raw.next()
    if ready.get("type") != "session.ready":
        await raw.close()
        raise AssertionError(f"expected session.ready, got {ready!r}")
    return raw, ready


# --- the gateway's side ----------------------------------------------------------------


async def wait_for_log(
    gateway: Gateway, needle: str, *, after: int, timeout: float
) -> float | None:
    """Return when `needle` appears in the gateway's log past offset `after` (None: timeout).

    The log file is the only signal the gateway gives of a server-side decision, so this
    polls it (every 50 ms, bounded by `timeout`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if needle in gateway.output()[after:]:
            return time.time()
        await asyncio.sleep(0.05)
    return None


class RssSampler:
    """Sample the resident memory of gateway processes in the background."""

    def __init__(self, gateways: Sequence[Gateway], every: float = 0.1) -> None:
        """Prepare sampling of `gateways` every `every` seconds."""
        self.gateways = gateways
        self.every = every
        self.samples: dict[str, list[int]] = {g.name: [] for g in gateways}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample of every running gateway."""
        for gateway in self.gateways:
            if gateway.running:
                self.samples[gateway.name].append(gateway.rss_bytes())

    def start(self) -> None:
        """Sample until `stop()`."""
        self.sample()
        self._task = asyncio.create_task(self._run(), name="rss-sampler")

    async def _run(self) -> None:
        while True:
            # A sampling period: time is the subject.
            await asyncio.sleep(self.every)
            self.sample()

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def baseline(self, name: str) -> int:
        """Return the first sample of a gateway."""
        return self.samples[name][0]

    def peak(self, name: str) -> int:
        """Return the highest sample of a gateway."""
        return max(self.samples[name])


# --- a database of its own (R8) --------------------------------------------------------

_SEED_SCRIPT = """
import json, sys
from accounts.models import User
from accounts.tokens import issue_pair
from messaging import services
names = {names!r}
users = [User.objects.create_user(username=n, password=None, display_name=n.title()) for n in names]
group = services.create_group(
    creator=users[0], title="outage", member_ids=[u.pk for u in users[1:]]
)
seed = {{
    "group": group.pk,
    "users": {{u.username: {{"id": u.pk, "token": issue_pair(u)["access"]}} for u in users}},
}}
sys.stdout.write("SEED " + json.dumps(seed) + "\\n")
"""

_DUMP_SCRIPT = """
import json, sys
from messaging.wire import message_payload
from messaging.models import Message
rows = [message_payload(m) for m in Message.objects.order_by("conversation_id", "seq")]
sys.stdout.write("DUMP " + json.dumps(rows) + "\\n")
"""


def manage_shell(database_url: str, script: str, marker: str) -> Any:
    """Run `script` in `manage.py shell` on `database_url`; return the JSON after `marker`."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO_ROOT,
        env=gateway_env({"DATABASE_URL": database_url}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith(marker + " "):
            return json.loads(line[len(marker) + 1 :])
    raise AssertionError(
        f"manage.py shell exited {result.returncode} without {marker}:\n"
        f"{result.stdout}\n{result.stderr}"
    )


def seed_database(database_url: str, names: Sequence[str]) -> dict[str, Any]:
    """Create users and a private group of all of them (first one owns it) in another database.

    Returns `{"group": id, "users": {name: {"id", "token"}}}`. The test process's ORM is
    on the pytest database, so this runs in a `manage.py shell` of its own.
    """
    seed: dict[str, Any] = manage_shell(
        database_url, _SEED_SCRIPT.format(names=list(names)), "SEED"
    )
    return seed


def dump_messages(database_url: str) -> dict[int, list[dict[str, Any]]]:
    """Return every message of another database, per conversation, as payloads."""
    rows: list[dict[str, Any]] = manage_shell(database_url, _DUMP_SCRIPT, "DUMP")
    truth: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        truth.setdefault(int(row["conversation"]), []).append(row)
    return truth


# --- reports ---------------------------------------------------------------------------


def publish(
    scenario: str,
    report: CheckReport,
    figures: Mapping[str, Any],
    *,
    record_property: Callable[[str, object], None],
    out_dir: Path,
) -> dict[str, Any]:
    """Log, attach (`record_property`) and write (JSON) a scenario's checker summary.

    The JSON goes to `out_dir/<scenario>.json`, and also to `$RELIABILITY_REPORT_DIR`
    when that is set (for CI artifacts).
    """
    summary: dict[str, Any] = {
        "scenario": scenario,
        "ok": report.ok,
        "sent_ok": report.sent_ok,
        "sent_fail": report.total("sent_fail"),
        "sent_unknown": report.total("sent_unknown"),
        "lost": report.lost,
        "duplicated": report.duplicated,
        "unknown_duplicated": report.unknown_duplicated,
        "unknown_missing": report.unknown_missing,
        "reordered": report.reordered,
        "gaps": report.gaps,
        "stale": report.stale,
        "isolation": report.isolation,
        "latency_ms": asdict(report.latency),
        "reconnect_ms": asdict(report.reconnect),
        **figures,
        "details": report.details[:30],
    }
    text = json.dumps(summary, default=str, indent=1)
    logger.info("%s\n%s\n%s", scenario, report.summary(), text)
    record_property(scenario, json.dumps(summary, default=str))
    (out_dir / f"{scenario}.json").write_text(text)
    extra = os.environ.get("RELIABILITY_REPORT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        (Path(extra) / f"{scenario}.json").write_text(text)
    return summary


def seconds(value: float) -> float:
    """Round a duration for a report."""
    return round(value, 3)
