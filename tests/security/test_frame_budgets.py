"""Every frame type has a per-socket budget; past it the answer is `rate_limited`.

The finding: reads and state frames had no rate limit. One socket got 300 `sync` (each a
snapshot of every conversation) answered in 0.5 s, 100 `status.set` (each a database
write and a presence publish) in 0.4 s, and 100 `presence.subscribe` of 1,000 ids in
2.6 s. Now each frame class has a token bucket per socket (WS_FRAME_BUDGETS, in the
gateway's memory): a well-formed frame over it gets `error` `rate_limited` with
`retry_after` and its `ref`, nothing is done for it, and the socket stays open.

In process (the real ASGI application, auth and channel layer); the same floods against
real gateway processes are in tests/e2e/test_security.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection

from accounts import services as accounts_services
from accounts.models import User
from accounts.tokens import issue_pair
from chatsite import metrics
from chatsite.asgi import application
from chatsite.gateway.budgets import FrameBudgets
from messaging import frames, selectors, services
from messaging.consumers import ChatConsumer
from presence import services as presence_services
from tests.wirecheck import check_frame

pytestmark = pytest.mark.django_db(transaction=True)

Frame = dict[str, Any]


class Counted:
    """Wrap a function and count its calls (they run on the gateway's database threads)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
        return self.func(*args, **kwargs)


def limited_count() -> float:
    return metrics.RATE_LIMITED.labels(kind="frame")._value.get()  # type: ignore[no-any-return]


async def open_socket(token: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(
        application, "/ws/v1/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await ws.connect(timeout=10)
    assert connected
    ready = json.loads(await ws.receive_from(10))
    assert ready["type"] == "session.ready", ready
    return ws


async def flood(ws: WebsocketCommunicator, sent: list[Frame]) -> tuple[list[Frame], float]:
    """Send the frames back to back; return their answers in order and the time taken."""
    started = time.monotonic()
    count = len(sent)
    for n, frame in enumerate(sent):
        await ws.send_to(text_data=json.dumps({**frame, "ref": f"f{n}"}))
    answers: dict[str, Frame] = {}
    while len(answers) < count:
        answer = check_frame(json.loads(await ws.receive_from(20)))
        ref = answer.get("ref")
        if isinstance(ref, str) and ref.startswith("f"):
            answers[ref] = answer
    return [answers[f"f{n}"] for n in range(count)], time.monotonic() - started


async def ask(ws: WebsocketCommunicator, frame: Frame) -> Frame:
    await ws.send_to(text_data=json.dumps({**frame, "ref": "again"}))
    while True:
        answer = check_frame(json.loads(await ws.receive_from(10)))
        if answer.get("ref") == "again":
            return answer


def token_for(user: User) -> str:
    token = issue_pair(user)["access"]
    connection.close()  # the application's threads use their own connections
    return token


def refused(answers: list[Frame]) -> list[Frame]:
    limited = [a for a in answers if a["type"] == "error"]
    assert {a["code"] for a in limited} <= {"rate_limited"}, limited
    return limited


def test_300_syncs_in_a_burst_are_mostly_refused_and_the_socket_stays_usable(
    ana: User, bo: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: 300 `sync` frames sent back to back from one socket (before the fix all 300
    # were answered with a full snapshot). Then the client waits the `retry_after` it was
    # told and sends `sync` and `ping` again: both answered, the socket never closed.
    services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    snapshots = Counted(selectors.list_conversations_for_user)
    monkeypatch.setattr(selectors, "list_conversations_for_user", snapshots)
    token = token_for(ana)
    before = limited_count()

    async def scenario() -> tuple[list[Frame], float, Frame, Frame]:
        ws = await open_socket(token)
        answers, elapsed = await flood(ws, [{"type": "sync"}] * 300)
        await asyncio.sleep(refused(answers)[-1]["retry_after"])
        again = await ask(ws, {"type": "sync"})
        pong = await ask(ws, {"type": "ping"})
        await ws.disconnect()
        return answers, elapsed, again, pong

    answers, elapsed, again, pong = asyncio.run(asyncio.wait_for(scenario(), 60))

    limited = refused(answers)
    answered = [a for a in answers if a["type"] == "sync.state"]
    assert len(answered) + len(limited) == 300
    # A burst of 5, then 1/s while the flood was being answered.
    assert 5 <= len(answered) <= 5 + elapsed + 1, (len(answered), elapsed)
    assert all(0 < a["retry_after"] <= 1 for a in limited)
    assert limited_count() - before == len(limited)
    # The snapshot was read for `session.ready`, the answered syncs and the last one only.
    assert snapshots.calls == 1 + len(answered) + 1
    assert again["type"] == "sync.state" and pong["type"] == "pong"


def test_100_status_sets_write_at_most_the_burst_to_the_database(
    ana: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: 100 `status.set` frames alternating busy/available, back to back (before the
    # fix: 100 profile writes and 100 presence publishes). The writes are counted where
    # the service makes them.
    writes = Counted(accounts_services.update_profile)
    monkeypatch.setattr(presence_services, "update_profile", writes)
    token = token_for(ana)

    statuses = [{"type": "status.set", "status": ("busy", "available")[n % 2]} for n in range(100)]

    async def scenario() -> tuple[list[Frame], float]:
        ws = await open_socket(token)
        answers, elapsed = await flood(ws, statuses)
        await ws.disconnect()
        return answers, elapsed

    answers, elapsed = asyncio.run(asyncio.wait_for(scenario(), 60))

    limited = refused(answers)
    assert limited and all(a["retry_after"] > 0 for a in limited)
    assert 5 <= writes.calls <= 5 + elapsed + 1, (writes.calls, elapsed)
    assert len(answers) - len(limited) == writes.calls


def test_100_presence_subscribes_of_1000_ids_are_bounded(
    ana: User, make_user: Callable[..., User], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: 100 `presence.subscribe` frames of 1,000 ids each, back to back (before the
    # fix each one was a visibility query over 1,000 ids and a presence-store read).
    lookups = Counted(selectors.filter_visible_users)
    monkeypatch.setattr(selectors, "filter_visible_users", lookups)
    ids = list(range(1, 1001))
    token = token_for(ana)

    async def scenario() -> tuple[list[Frame], float, Frame]:
        ws = await open_socket(token)
        subscribe = {"type": "presence.subscribe", "users": ids}
        answers, elapsed = await flood(ws, [subscribe] * 100)
        await asyncio.sleep(refused(answers)[-1]["retry_after"])
        again = await ask(ws, {"type": "presence.subscribe", "users": ids[:3]})
        await ws.disconnect()
        return answers, elapsed, again

    answers, elapsed, again = asyncio.run(asyncio.wait_for(scenario(), 60))

    limited = refused(answers)
    answered = [a for a in answers if a["type"] == "presence.snapshot"]
    assert 5 <= len(answered) <= 5 + elapsed + 1, (len(answered), elapsed)
    assert lookups.calls == len(answered) + 1
    assert len(limited) == 100 - len(answered)
    assert again["type"] == "presence.snapshot" and len(again["users"]) == 3


def test_every_frame_type_but_message_send_has_a_budget_from_settings() -> None:
    # `message.send` keeps its per-user limit across gateways (CHAT_SEND_RATE).
    handled = set(ChatConsumer.HANDLERS)
    assert set(frames.BUDGET_CLASSES) == handled - {"message.send"}
    assert set(frames.BUDGET_CLASSES.values()) <= set(settings.WS_FRAME_BUDGETS)


def test_a_bucket_refills_at_its_rate_up_to_its_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    budgets = FrameBudgets({"sync": (1.0, 3.0)})
    assert [budgets.take("sync") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    clock[0] += 0.25
    assert budgets.take("sync") == 0.75
    clock[0] += 0.75
    assert budgets.take("sync") == 0.0
    clock[0] += 60  # a long pause refills to the burst, not beyond
    assert [budgets.take("sync") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    assert budgets.take("unknown") == 0.0 and budgets.take(None) == 0.0
