"""Plumbing of the reliability scenarios: users and groups, a fleet of reference clients, reports.

Setup (users, groups, tokens) runs in the test's own thread before the event loop starts;
everything that talks to the gateways runs inside `drive()`. A scenario's clients share
one `History`, which `finish()` hands to the project's checker (`chatclient.check`),
with the database's rows as the truth the views are compared to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from django.db import connection

from accounts.models import User
from accounts.tokens import issue_pair
from chatclient import ChatClient, ChatError, CheckReport, History, Stats, bearer_auth, check
from chatclient.history import ReconnectRecord
from messaging import services, wire
from messaging.models import Message

logger = logging.getLogger(__name__)

T = TypeVar("T")
Frame = dict[str, Any]
Views = dict[str, dict[int, list[dict[str, Any]]]]
# A test item's `user_properties`: what pytest's `record_property` appends to. Tests append
# directly, because `record_property` warns under `--junitxml` (xunit2) and this suite
# turns warnings into errors.
Properties = list[tuple[str, object]]

PASSWORD = "pw-secret-1"


# --- setup, before the event loop -------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """A group conversation and its members, the creator first."""

    id: int
    members: list[User]


def make_users(prefix: str, count: int) -> list[User]:
    """Create `count` active users named `<prefix>000`, `<prefix>001`, ..."""
    return [
        User.objects.create_user(
            username=f"{prefix}{n:03d}", password=PASSWORD, display_name=f"{prefix}{n:03d}"
        )
        for n in range(count)
    ]


def make_groups(users: Sequence[User], size: int, title: str) -> list[Group]:
    """Split `users` into groups of `size` (the first of each creates it); log seq 1 each."""
    groups = []
    for start in range(0, len(users), size):
        members = list(users[start : start + size])
        conversation = services.create_group(
            creator=members[0],
            title=f"{title} {start // size + 1}",
            member_ids=[u.pk for u in members[1:]],
        )
        groups.append(Group(conversation.pk, members))
    return groups


def mint_access(users: Iterable[User]) -> dict[int, str]:
    """Return an access token per user id (it writes to the database: not inside the loop)."""
    return {user.pk: issue_pair(user)["access"] for user in users}


def think_times(
    names: Iterable[str], sends: int, low: float, high: float, seed: int
) -> dict[str, list[float]]:
    """Return, per client, `sends` pauses drawn uniformly from [low, high] seconds."""
    rng = random.Random(seed)
    return {name: [rng.uniform(low, high) for _ in range(sends)] for name in names}


# --- inside the event loop --------------------------------------------------------------


def drive(scenario: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run an async scenario on a fresh event loop; a hang fails instead of stalling the run."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await scenario()

    return asyncio.run(bounded())


async def in_thread(func: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a service call in a worker thread that closes its database connection after."""

    def run() -> T:
        try:
            return func(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


FrameTap = Callable[["TapClient", Frame], bool]


class TapClient(ChatClient):
    """The reference client with one test hook: every server frame passes `tap` first.

    `tap(client, frame)` returning False drops the frame before the client sees it (a
    reply lost on the way); tests also use it to count pushes. Nothing else changes.
    """

    def __init__(self, *args: Any, tap: FrameTap | None = None, **kwargs: Any) -> None:
        """Build the client (arguments as ChatClient's) with an optional frame tap."""
        super().__init__(*args, **kwargs)
        self.tap = tap

    def _dispatch(self, frame: Frame) -> None:
        if self.tap is not None and not self.tap(self, frame):
            return
        super()._dispatch(frame)

    async def drop_connection(self) -> None:
        """Close the open socket from the client's side; the client reconnects by itself."""
        session = self._session
        if session is not None:
            await session.ws.close()


class BatchLog:
    """A frame tap that notes, per client, each `messages.batch`: when, and its lowest version."""

    def __init__(self) -> None:
        self.lowest: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)

    def __call__(self, client: TapClient, frame: Frame) -> bool:
        if frame.get("type") == "messages.batch" and frame.get("messages"):
            lowest = min(int(m["version"]) for m in frame["messages"])
            self.lowest[client.name].append((time.time(), lowest))
        return True

    def refetched_below(
        self, reconnects: Iterable[ReconnectRecord], cursors: Mapping[str, int]
    ) -> dict[str, int]:
        """Return the clients that, after a reconnect, fetched from at or below `cursors`.

        A client that resumes from its cursor never does (from 0 it would start at seq 1).
        """
        return {
            r.client: lowest
            for r in reconnects
            for at, lowest in self.lowest[r.client]
            if at >= r.ready_at and lowest <= cursors[r.client]
        }


class Fleet:
    """Reference clients sharing one History, and which clients must see which conversation."""

    def __init__(self, urls: Sequence[str], *, seed: int, **options: Any) -> None:
        """Prepare an empty fleet; `options` are ChatClient options for every client."""
        self.urls = list(urls)
        self.history = History()
        self.clients: dict[str, TapClient] = {}
        self.conversations: dict[str, list[int]] = {}
        self.members: dict[int, set[str]] = defaultdict(set)
        self._seed = seed
        self._options = options

    def add(
        self,
        name: str,
        access: str,
        conversations: Iterable[int],
        *,
        urls: Sequence[str] | None = None,
        device: str | None = None,
        **options: Any,
    ) -> TapClient:
        """Add a client `name` (also its device id) that must see `conversations`."""
        client = TapClient(
            urls or self.urls,
            bearer_auth(access),
            device=device or name,
            name=name,
            history=self.history,
            # Reproducible gateway choices and jitter, different for every client.
            rng=random.Random(f"{self._seed}:{name}"),
            **{**self._options, **options},
        )
        self.clients[name] = client
        self.conversations[name] = list(conversations)
        for conversation in self.conversations[name]:
            self.members[conversation].add(name)
        return client

    async def chat(self, pauses: Mapping[str, Sequence[float]]) -> None:
        """Let each client think, then send (to its first conversation), once per pause."""

        async def talk(name: str) -> None:
            client = self.clients[name]
            conversation = self.conversations[name][0]
            for n, pause in enumerate(pauses[name]):
                await asyncio.sleep(pause)
                await client.send(conversation, f"{name} says {n}")

        await asyncio.gather(*(talk(name) for name in pauses))

    async def connect(self, timeout: float) -> None:
        """Connect every client at once and wait for all their `session.ready`s."""
        await asyncio.gather(*(c.connect(timeout) for c in self.clients.values()))

    async def close(self) -> None:
        """Close every client (their views stay readable)."""
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)

    def views(self) -> Views:
        """Return every client's final views."""
        return {name: client.views() for name, client in self.clients.items()}

    def acknowledged(self) -> dict[int, set[str]]:
        """Return the client_msg_ids of the acknowledged sends, per conversation."""
        cmids: dict[int, set[str]] = defaultdict(set)
        for send in self.history.sends:
            if send.outcome == "ok":
                cmids[send.conversation].add(send.client_msg_id)
        return cmids

    async def await_delivery(
        self, timeout: float, names: Iterable[str] | None = None
    ) -> dict[str, int]:
        """Wait until each client's views hold every acknowledged send of its conversations.

        Returns, per client still incomplete at `timeout`, how many messages it lacks
        (empty when all arrived). Waits on the clients' own updates, never polls.
        """
        expected = self.acknowledged()
        deadline = asyncio.get_running_loop().time() + timeout
        chosen = list(self.clients) if names is None else list(names)

        async def one(name: str) -> int:
            client = self.clients[name]
            missing = {
                (conversation, cmid)
                for conversation in self.conversations[name]
                for cmid in expected.get(conversation, set())
            }

            def arrived(update: dict[str, Any]) -> bool:
                if update.get("type") == "message.applied":
                    cmid = update["message"].get("client_msg_id")
                    missing.discard((int(update["conversation"]), str(cmid)))
                return not missing

            if not missing:
                return 0
            remaining = max(0.1, deadline - asyncio.get_running_loop().time())
            try:
                await client.wait_for(arrived, timeout=remaining)
            except (TimeoutError, ChatError):  # ChatError: the client stopped for good
                return len(missing)
            return 0

        counts = await asyncio.gather(*(one(name) for name in chosen))
        return {name: count for name, count in zip(chosen, counts, strict=True) if count}

    async def settle(self, timeout: float) -> dict[str, dict[str, int]]:
        """Wait for delivery, then `sync` the clients still missing messages (as every 60 s).

        Returns `needed_sync` (client -> messages missing after `timeout`: live delivery
        and gap repair did not bring them) and `incomplete` (still missing after the
        sync and another `timeout / 2`).
        """
        missing = await self.await_delivery(timeout)
        if not missing:
            return {"needed_sync": {}, "incomplete": {}}
        await asyncio.gather(*(self.clients[n].sync() for n in missing), return_exceptions=True)
        return {
            "needed_sync": missing,
            "incomplete": await self.await_delivery(timeout / 2, missing),
        }


# --- after the event loop ---------------------------------------------------------------


def database_truth(conversation_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Return each conversation's messages as the database holds them, in seq order."""
    return {
        conversation: [
            dict(wire.message_payload(m))
            for m in Message.objects.filter(conversation_id=conversation)
            .order_by("seq")
            .prefetch_related("attachments")
        ]
        for conversation in conversation_ids
    }


def delivery_figures(history: History, members: Mapping[int, Iterable[str]]) -> dict[str, Any]:
    """Return how the other members first got each acknowledged send, and how fast.

    The checker's latency counts live pushes only; a member that saw a gap fetches, and
    the fetch may bring a message before its push. Here any first receipt counts, so
    the figure is what a user waits, whatever the path.
    """
    audience = {c: set(names) for c, names in members.items()}
    first: dict[tuple[str, int], tuple[float, str]] = {}
    for recv in history.recvs:
        key = (recv.client, recv.message_id)
        if key not in first or recv.received_at < first[key][0]:
            first[key] = (recv.received_at, recv.via)
    waits: list[float] = []
    paths: Counter[str] = Counter()
    for send in history.sends:
        if send.outcome != "ok" or send.message_id is None:
            continue
        for client in sorted(audience.get(send.conversation, set()) - {send.client}):
            got = first.get((client, send.message_id))
            if got is None:
                paths["never"] += 1
                continue
            waits.append(got[0] - send.invoked_at)
            paths[got[1]] += 1
    acks = Stats.of_seconds(
        s.completed_at - s.invoked_at for s in history.sends if s.outcome == "ok"
    )
    return {
        "first_receipt_ms": asdict(Stats.of_seconds(waits)),
        "first_receipt_via": dict(paths),
        "send_ack_ms": asdict(acks),
    }


def finish(
    scenario: str,
    history: History,
    views: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]],
    members: Mapping[int, Iterable[str]],
    *,
    tmp_path: Path,
    properties: Properties,
    extra: Mapping[str, Any] | None = None,
) -> CheckReport:
    """Run the checker against the database's truth and write its report three ways.

    The summary goes to the log (shown with the test's output), to the test's properties
    (`user_properties`, which report plugins read) and, with every detail, to
    `<tmp_path>/<scenario>-report.json`; the history goes to `<scenario>-history.json`.
    """
    truth = database_truth(members)
    report = check(history, views=views, members=members, truth=truth)
    data = report.as_dict()
    summary = {
        "scenario": scenario,
        "ok": report.ok,
        **data["totals"],
        "latency_ms": data["latency_ms"],
        "reconnect_ms": data["reconnect_ms"],
        **delivery_figures(history, members),
        **(extra or {}),
    }
    path = tmp_path / f"{scenario}-report.json"
    path.write_text(json.dumps({**summary, "checker": data}, indent=2), encoding="utf-8")
    history.dump(tmp_path / f"{scenario}-history.json")
    properties.append((scenario, json.dumps(summary)))
    logger.info(
        "%s (%s):\n%s\n%s", scenario, path, report.summary(), json.dumps(extra or {}, indent=1)
    )
    return report
