"""Fault scenarios R6-R9, R11 and R13 of RELIABILITY.md, end to end.

Real gateway processes (uvicorn), a private Redis per test, PostgreSQL (the test database,
or a throwaway cluster where the test stops it), and the reference client `ChatClient`
recording a `History` that `check()` judges: no loss of acknowledged sends, exactly once,
one order, no gaps, isolation. Each test publishes its checker summary and measured
bounds (log, `record_property`, `<tmp_path>/<scenario>.json`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from accounts.models import User
from bench.harness import PostgresCluster, RedisServer, migrate
from chatclient import ChatClient, ChatError, CheckReport, History, SendRecord, Stats, check
from messaging import services
from messaging.models import Message
from tests.e2e.conftest import MakeDeployment
from tests.e2e.faults_util import (
    FAST_SENDS,
    Arrivals,
    Frame,
    Party,
    RawSocket,
    RssSampler,
    Traffic,
    close_all,
    connect_all,
    dump_messages,
    in_thread,
    make_client,
    measure_live_resume,
    ok_sends,
    open_raw,
    party,
    publish,
    seconds,
    seed_database,
    settle,
    views_of,
    wait_for_log,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RecordProperty = Any  # pytest's record_property fixture: (name, value) -> None
T = TypeVar("T")


def _make_users(make_user: Any, prefix: str, count: int) -> list[User]:
    return [make_user(f"{prefix}{n}") for n in range(1, count + 1)]


def _unresumed_detail(
    resume: dict[str, float | None],
    clients: dict[str, ChatClient],
    history: History,
    since: float,
    redis_server: RedisServer,
) -> dict[str, Any]:
    """Describe the clients that did not get live delivery back (for the failure report)."""
    detail: dict[str, Any] = {}
    for key, value in resume.items():
        if value is not None:
            continue
        name = key.split("/", 1)[1]
        live = [
            r.received_at - since for r in history.recvs if r.client == name and r.via == "live"
        ]
        detail[key] = {
            "connected": clients[name].connected,
            "gateway": clients[name].gateway_url,
            "live_after_restart": sum(1 for t in live if t >= 0),
            "last_live_s": seconds(max(live)) if live else None,
            "reconnects": [
                seconds(r.ready_at - since) for r in history.reconnects if r.client == name
            ],
        }
    if detail:
        with redis_server.client() as redis:
            detail["groups"] = {
                key.decode(): [m.decode()[-8:] for m in redis.zrange(key, 0, -1)]
                for key in redis.keys("*group*")
            }
    return detail


# --- R6 --------------------------------------------------------------------------------

R6_RESUME_BOUND = 10.0  # s after Redis is back (RELIABILITY.md R6)
# A gateway writes its Redis sentinel at its first periodic tick, about a second after
# its first socket; R6 proper restarts Redis well after that (a wipe before it is the
# subject of the next test), with room for a tick delayed on a loaded machine.
WARM_UP = 3.0


def test_r6_redis_restart_mid_traffic_keeps_sends_ok_and_live_delivery_resumes(
    make_deployment: MakeDeployment,
    redis_server: RedisServer,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    # Given three private groups of three senders each, plus a prober in all of them,
    # with clients pinned alternately to the two gateways.
    prober_user = make_user("r6probe")
    senders = _make_users(make_user, "r6u", 9)
    groups: dict[int, list[User]] = {}
    for index in range(3):
        members = senders[index * 3 : index * 3 + 3]
        group = services.create_group(
            creator=prober_user, title=f"r6-{index}", member_ids=[u.pk for u in members]
        )
        groups[group.pk] = members
    parties = [party(u) for u in [prober_user, *senders]]
    deployment = make_deployment(gateways=2, env=FAST_SENDS)
    figures: dict[str, Any] = {}

    async def scenario() -> tuple[History, dict[str, Any], dict[int, set[str]]]:
        history, arrivals = History(), Arrivals()
        clients = {
            p.name: make_client([deployment.urls[i % 2]], p, history, arrivals)
            for i, p in enumerate(parties)
        }
        errors: list[str] = []

        def traffic() -> Traffic:
            flow = Traffic(
                [(clients[u.username], [c]) for c, members in groups.items() for u in members],
                pause=0.05,
                arrivals=arrivals,
            )
            flow.errors = errors
            return flow

        await connect_all(clients.values())
        connected_at = time.time()
        before = traffic()
        try:
            before.start()
            # Mid-traffic: sends flowing, and the gateways past their first group check
            # (the first seconds of a gateway are the subject of the next test).
            assert await arrivals.until(
                lambda: ok_sends(history) >= 60 and time.time() - connected_at >= WARM_UP,
                timeout=30,
            )
            # When Redis restarts mid-traffic (group memberships and queued events are gone).
            fault_at = time.time()
            await asyncio.to_thread(redis_server.restart)
            back_at = time.time()
        finally:
            await before.stop()

        # Then live delivery comes back on every socket: the senders pause while the
        # probe measures it (see measure_live_resume), then send again.
        resume = await measure_live_resume(
            clients[prober_user.username],
            {c: [clients[u.username] for u in members] for c, members in groups.items()},
            history=history,
            arrivals=arrivals,
            since=back_at,
            deadline=R6_RESUME_BOUND + 10,
        )
        figures["unresumed"] = _unresumed_detail(resume, clients, history, back_at, redis_server)
        after, resumed_at = traffic(), time.time()
        try:
            after.start()
            assert await arrivals.until(lambda: ok_sends(history, resumed_at) >= 60, timeout=30)
        finally:
            await after.stop()
        await settle(clients.values())
        await close_all(clients.values())

        figures["redis_down_s"] = seconds(back_at - fault_at)
        figures["resume_s"] = resume
        during = [
            s for s in history.sends if s.invoked_at <= back_at and s.completed_at >= fault_at
        ]
        figures["sends_across_restart"] = len(during)
        figures["max_send_s_across_restart"] = seconds(
            max((s.completed_at - s.invoked_at for s in during), default=0.0)
        )
        figures["max_send_s"] = seconds(max(s.completed_at - s.invoked_at for s in history.sends))
        figures["traffic_errors"] = errors
        audience = {
            c: {prober_user.username, *(u.username for u in us)} for c, us in groups.items()
        }
        return history, views_of(clients.values()), audience

    started = time.monotonic()
    history, views, audience = asyncio.run(scenario())
    report = check(history, views=views, members=audience)
    figures["runtime_s"] = seconds(time.monotonic() - started)
    figures["fanout_failures_logged"] = sum(
        1
        for g in deployment.gateways
        for line in g.output().splitlines()
        if "fan-out" in line and "failed" in line
    )
    figures["gateway_rejoins_logged"] = sum(
        g.output().count("re-joining them") for g in deployment.gateways
    )
    publish("R6", report, figures, record_property=record_property, out_dir=tmp_path)

    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    assert figures["traffic_errors"] == []
    assert all(s.outcome == "ok" for s in history.sends), "every send must succeed"
    assert figures["sends_across_restart"] > 0
    unresumed = [k for k, v in figures["resume_s"].items() if v is None]
    assert not unresumed, f"no live delivery within the deadline for {unresumed}"
    slowest = max(figures["resume_s"].values())
    assert slowest <= R6_RESUME_BOUND, f"live delivery resumed only after {slowest:.1f} s"


def test_r6_redis_wiped_in_a_gateways_first_second_still_resumes_live_delivery(
    make_deployment: MakeDeployment,
    redis_server: RedisServer,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    """Redis loses the groups right after the first sockets of fresh gateways joined them.

    A restart that does not break the consumers' connections (or a FLUSHALL, used here
    to make it deterministic) wipes every group membership. The gateway notices a lost
    Redis by its sentinel key, but it writes that key only at its first periodic check,
    about a second after its first socket: a wipe before then looks like a first run.
    """
    # Given a fresh deployment whose first sockets just joined their groups.
    owner = make_user("r6wowner")
    listeners = _make_users(make_user, "r6w", 4)
    group = services.create_group(
        creator=owner, title="r6-wipe", member_ids=[u.pk for u in listeners]
    )
    parties = [party(u) for u in [owner, *listeners]]
    deployment = make_deployment(gateways=2, env=FAST_SENDS)
    figures: dict[str, Any] = {}

    async def scenario() -> tuple[History, dict[str, Any], dict[str, float | None]]:
        history, arrivals = History(), Arrivals()
        clients = {
            p.name: make_client([deployment.urls[i % 2]], p, history, arrivals)
            for i, p in enumerate(parties)
        }
        await connect_all(clients.values())
        # When Redis loses everything at once.
        await asyncio.to_thread(redis_server.flushall)
        wiped_at = time.time()
        # Then live delivery must come back within the R6 bound.
        resume = await measure_live_resume(
            clients[owner.username],
            {group.pk: [clients[u.username] for u in listeners]},
            history=history,
            arrivals=arrivals,
            since=wiped_at,
            deadline=R6_RESUME_BOUND + 5,
        )
        figures["unresumed"] = _unresumed_detail(resume, clients, history, wiped_at, redis_server)
        await settle(clients.values())
        await close_all(clients.values())
        return history, views_of(clients.values()), resume

    started = time.monotonic()
    history, views, resume = asyncio.run(scenario())
    report = check(history, views=views, members={group.pk: {p.name for p in parties}})
    figures["resume_s"] = resume
    figures["runtime_s"] = seconds(time.monotonic() - started)
    figures["gateway_rejoins_logged"] = sum(
        g.output().count("re-joining them") for g in deployment.gateways
    )
    publish("R6-wipe-at-start", report, figures, record_property=record_property, out_dir=tmp_path)

    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    unresumed = [k for k, v in resume.items() if v is None]
    assert not unresumed, (
        f"live delivery never came back for {unresumed} (gateways logged "
        f"{figures['gateway_rejoins_logged']} re-joins): Gateway._check_groups treats the "
        "first sentinel it writes as a first run, not as a lost Redis"
    )
    slowest = max(v for v in resume.values() if v is not None)
    assert slowest <= R6_RESUME_BOUND


# --- R7 --------------------------------------------------------------------------------

R7_PAUSE = 5.0  # s of CLIENT PAUSE ALL
# A send may wait on Redis at most REDIS_SOCKET_TIMEOUT (1 s: the rate limit's EVAL); the
# rest of its reply time is the database and a loaded 2-core machine.
R7_REDIS_BOUND = 1.0
R7_SEND_BOUND = R7_REDIS_BOUND + 1.0


def test_r7_redis_paused_no_send_waits_on_redis_more_than_a_second(
    make_deployment: MakeDeployment,
    redis_server: RedisServer,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    # Given two groups of three senders, clients pinned alternately to two gateways.
    users = _make_users(make_user, "r7u", 6)
    groups = {
        services.create_group(
            creator=members[0], title=f"r7-{n}", member_ids=[u.pk for u in members[1:]]
        ).pk: members
        for n, members in enumerate((users[:3], users[3:]))
    }
    parties = [party(u) for u in users]
    deployment = make_deployment(gateways=2, env=FAST_SENDS)
    log_offsets = [len(g.output()) for g in deployment.gateways]
    figures: dict[str, Any] = {}

    async def scenario() -> tuple[History, dict[str, Any], float]:
        history, arrivals = History(), Arrivals()
        clients = {
            p.name: make_client([deployment.urls[i % 2]], p, history, arrivals)
            for i, p in enumerate(parties)
        }
        await connect_all(clients.values())
        traffic = Traffic(
            [(clients[u.username], [c]) for c, members in groups.items() for u in members],
            pause=0.05,
            arrivals=arrivals,
        )
        try:
            traffic.start()
            assert await arrivals.until(lambda: ok_sends(history) >= 30, timeout=30)
            # When Redis holds every client's commands for 5 s.
            paused_at = time.time()
            await asyncio.to_thread(redis_server.pause, R7_PAUSE)
            # The outage is the subject: let the traffic run through all of it.
            await asyncio.sleep(R7_PAUSE + 0.5)
            resumed_at = paused_at + R7_PAUSE
            assert await arrivals.until(lambda: ok_sends(history, resumed_at) >= 30, timeout=30)
        finally:
            await traffic.stop()
        await settle(clients.values())
        await close_all(clients.values())
        figures["traffic_errors"] = traffic.errors
        return history, views_of(clients.values()), paused_at

    started = time.monotonic()
    history, views, paused_at = asyncio.run(scenario())
    members = {c: {u.username for u in us} for c, us in groups.items()}
    report = check(history, views=views, members=members)

    # Every send whose reply was awaited while Redis was paused.
    during = [
        s
        for s in history.sends
        if s.completed_at >= paused_at and s.invoked_at < paused_at + R7_PAUSE
    ]
    replies = sorted(s.completed_at - s.invoked_at for s in during)
    logs = [g.output()[offset:] for g, offset in zip(deployment.gateways, log_offsets, strict=True)]
    figures["sends_during_pause"] = len(during)
    figures["max_send_s_during_pause"] = seconds(replies[-1]) if replies else None
    figures["p50_send_s_during_pause"] = seconds(replies[len(replies) // 2]) if replies else None
    before = [s.completed_at - s.invoked_at for s in history.sends if s.completed_at < paused_at]
    figures["max_send_s_before_pause"] = seconds(max(before, default=0.0))
    figures["fanout_failures_logged"] = sum(
        1 for log in logs for line in log.splitlines() if "fan-out" in line and "failed" in line
    )
    figures["rate_limit_skips_logged"] = sum(
        log.count("rate limits decided in this process") for log in logs
    )
    figures["gateways_alive"] = all(g.running for g in deployment.gateways)
    figures["runtime_s"] = seconds(time.monotonic() - started)
    publish("R7", report, figures, record_property=record_property, out_dir=tmp_path)

    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    assert figures["traffic_errors"] == []
    assert all(s.outcome == "ok" for s in history.sends)
    assert len(during) >= 6, "the traffic must keep sending through the pause"
    assert replies[-1] <= R7_SEND_BOUND, (
        f"a send took {replies[-1]:.2f} s while Redis was paused (bound {R7_SEND_BOUND} s)"
    )
    # Before a failed rate-limit call let the process decide for a while, every send of
    # the pause waited out the timeout (p50 1.006 s; 30 sends in 5 s instead of 400+).
    assert replies[len(replies) // 2] < R7_REDIS_BOUND / 2, (
        "sends kept waiting on the paused Redis: each met the rate limit's timeout"
    )
    assert figures["fanout_failures_logged"] > 0, "a fan-out that failed must be logged"
    assert figures["gateways_alive"]


# --- R8 --------------------------------------------------------------------------------

R8_OUTAGE = 5.0  # s with PostgreSQL stopped
R8_NORMAL_AFTER = 5.0  # s after the restart by which service must be normal


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """Return the status and JSON body of a request (errors included, never raised)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the harness
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw[:200].decode(errors="replace")}


def test_r8_postgres_outage_answers_unavailable_and_retries_land_once(
    make_deployment: MakeDeployment,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    # Given a throwaway PostgreSQL (this test stops it) holding four users in one group,
    # and two gateways on it.
    names = ["r8ana", "r8bo", "r8cy", "r8dee"]
    figures: dict[str, Any] = {}
    with PostgresCluster(dbname="r8") as cluster:
        migrate(cluster.url)
        seed = seed_database(cluster.url, names)
        group = int(seed["group"])
        parties = [Party(n, seed["users"][n]["id"], seed["users"][n]["token"]) for n in names]
        deployment = make_deployment(gateways=2, env=FAST_SENDS, database_url=cluster.url)
        errors_seen: list[tuple[str, str]] = []
        closes: list[tuple[str, Any, float]] = []

        def watcher(name: str) -> Any:
            def on_event(frame: dict[str, Any]) -> None:
                if frame.get("type") == "error":
                    errors_seen.append((name, str(frame.get("code"))))
                elif frame.get("type") == "client.disconnected":
                    closes.append((name, frame.get("code"), time.time()))

            return on_event

        async def scenario() -> tuple[History, dict[str, Any]]:
            history, arrivals = History(), Arrivals()
            clients = {
                p.name: make_client(
                    [deployment.urls[i % 2]], p, history, arrivals, on_event=watcher(p.name)
                )
                for i, p in enumerate(parties)
            }
            await connect_all(clients.values())
            raw, _ = await open_raw(deployment.urls[0], parties[0].token, device="r8-raw")
            retry_frame: dict[str, Any] = {
                "type": "message.send",
                "conversation": group,
                "client_msg_id": str(uuid.uuid4()),
                "body": "sent during the outage, retried after it",
            }
            traffic = Traffic(
                [(c, [group]) for c in clients.values()], pause=0.1, arrivals=arrivals
            )
            try:
                traffic.start()
                assert await arrivals.until(lambda: ok_sends(history) >= 20, timeout=30)

                # When PostgreSQL stops for 5 s.
                await asyncio.to_thread(cluster.stop)
                down_at = time.time()
                # Then a send is answered `unavailable` (the frame names the send) ...
                during = await raw.request(**retry_frame)
                figures["raw_reply_during_outage"] = {
                    k: during.get(k) for k in ("type", "code", "client_msg_id")
                }
                # ... a new socket is accepted and closed 1013 (try again later) ...
                figures["handshake_during_outage"] = await _first_answer(
                    deployment.urls[1], parties[1].token
                )
                # ... and HTTP answers 503, never 500.
                figures["http_during_outage"] = {
                    "POST /api/v1/auth/token": await asyncio.to_thread(
                        _http,
                        "POST",
                        f"{deployment.http_urls[1]}/api/v1/auth/token",
                        {"username": "r8ana", "password": "wrong-password"},
                    ),
                    "GET /healthz": await asyncio.to_thread(
                        _http, "GET", f"{deployment.http_urls[1]}/healthz"
                    ),
                }
                # The outage is the subject: the traffic keeps trying through all of it.
                await asyncio.sleep(max(0.0, down_at + R8_OUTAGE - time.time()))
                figures["gateways_alive_during_outage"] = all(
                    g.running for g in deployment.gateways
                )
                await asyncio.to_thread(cluster.start)
                up_at = time.time()

                # The same client_msg_id retried after the restart lands once.
                replies = [await _send_until_stored(raw, retry_frame, timeout=15)]
                replies.append(await raw.request(**retry_frame))

                # Service is normal 5 s after the restart: fresh sends succeed at once.
                await asyncio.sleep(max(0.0, up_at + R8_NORMAL_AFTER - time.time()))
                normal_at = time.time()
                fresh = await asyncio.gather(
                    *(
                        c.send(group, f"{c.name}: normal again", timeout=10)
                        for c in clients.values()
                    )
                )
            finally:
                await traffic.stop()
            await settle(clients.values())
            closing_at = time.time()
            await raw.close()
            await close_all(clients.values())

            figures["traffic_errors"] = traffic.errors
            figures["retry_replies"] = [
                {k: r.get(k) for k in ("type", "code", "client_msg_id")}
                | {"id": r.get("message", {}).get("id"), "seq": r.get("message", {}).get("seq")}
                for r in replies
            ]
            figures["retry_cmid"] = retry_frame["client_msg_id"]
            figures["fresh_ids"] = [m["id"] for m in fresh]
            # Sends that were waiting for an answer at some point of the outage.
            outage_sends = [
                s for s in history.sends if s.invoked_at < up_at and s.completed_at > down_at
            ]
            figures["sends_across_outage"] = len(outage_sends)
            figures["max_attempts"] = max(s.attempts for s in history.sends)
            figures["last_outage_send_landed_s_after_restart"] = seconds(
                max((s.completed_at for s in outage_sends), default=up_at) - up_at
            )
            figures["client_disconnects"] = [(n, code) for n, code, at in closes if at < closing_at]
            normal = [s for s in history.sends if s.invoked_at >= normal_at]
            figures["sends_after_normal"] = len(normal)
            figures["max_send_s_after_normal"] = seconds(
                max(s.completed_at - s.invoked_at for s in normal)
            )
            figures["max_attempts_after_normal"] = max(s.attempts for s in normal)
            return history, views_of(clients.values())

        started = time.monotonic()
        history, views = asyncio.run(scenario())
        truth = dump_messages(cluster.url)
        figures["gateways_alive"] = all(g.running for g in deployment.gateways)
        logs = "".join(g.output() for g in deployment.gateways)
        deployment.stop()

    report = check(history, views=views, members={group: set(names)}, truth=truth)
    codes = sorted({code for _, code in errors_seen})
    figures["error_codes_seen_by_clients"] = codes
    figures["unavailable_frames"] = sum(1 for _, code in errors_seen if code == "unavailable")
    figures["asgi_crashes_logged"] = logs.count("Exception in ASGI application")
    figures["runtime_s"] = seconds(time.monotonic() - started)
    cmid = figures["retry_cmid"]
    figures["rows_for_retried_cmid"] = sum(
        1 for rows in truth.values() for m in rows if m.get("client_msg_id") == cmid
    )
    publish("R8", report, figures, record_property=record_property, out_dir=tmp_path)

    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    assert figures["traffic_errors"] == []
    assert all(s.outcome == "ok" for s in history.sends)
    assert figures["raw_reply_during_outage"] == {
        "type": "error",
        "code": "unavailable",
        "client_msg_id": cmid,
    }
    http = figures["http_during_outage"]
    for name, (status, body) in http.items():
        assert status == 503, f"{name} answered {status} during the outage: {body}"
    assert http["POST /api/v1/auth/token"][1]["error"]["code"] == "unavailable"
    assert figures["handshake_during_outage"] == "close 1013"
    assert figures["unavailable_frames"] > 0
    assert codes == ["unavailable"], f"clients saw error codes {codes}"
    assert figures["gateways_alive_during_outage"] and figures["gateways_alive"]
    assert figures["asgi_crashes_logged"] == 0
    assert figures["client_disconnects"] == [], "no socket is dropped for a database outage"
    assert figures["sends_across_outage"] >= len(names)
    assert [r["type"] for r in figures["retry_replies"]] == ["message.sent", "message.sent"]
    assert len({(r["id"], r["seq"]) for r in figures["retry_replies"]}) == 1
    assert figures["rows_for_retried_cmid"] == 1
    assert figures["max_attempts_after_normal"] == 1, "sends 5 s after the restart need no retry"
    assert figures["max_send_s_after_normal"] < 2.0


async def _first_answer(url: str, token: str) -> str:
    """Open a socket and return what comes first: `frame <type>`, `close <code>`, `http <n>`."""
    try:
        async with asyncio.timeout(15):
            ws = await connect(
                url, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
            )
            try:
                return f"frame {json.loads(await ws.recv()).get('type')}"
            except ConnectionClosed as exc:
                return f"close {exc.rcvd.code if exc.rcvd is not None else 1006}"
            finally:
                await ws.close()
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}"


async def _send_until_stored(raw: RawSocket, frame: dict[str, Any], timeout: float) -> Frame:
    """Retry `frame` (same client_msg_id) while the answer is `unavailable`; return the reply."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply = await raw.request(**frame)
        if reply.get("code") != "unavailable" or loop.time() > deadline:
            return reply
        # The client's retry delay after `unavailable` (a full-jitter backoff in ChatClient).
        await asyncio.sleep(0.2)


# --- R9 --------------------------------------------------------------------------------

R9_MESSAGES = 1000
R9_BODY = 8 * 1024  # ~8 MB in all: more than the kernel buffers between the two ends hold
R9_RSS_BOUND = 400 * 1024 * 1024
R9_WS_SEND_TIMEOUT = 5.0  # the gateway's default, named in docs/protocol.md
R9_CLOSE_SLACK = 10.0  # s past the last send plus WS_SEND_TIMEOUT, on a loaded machine


def test_r9_a_client_that_stops_reading_is_closed_4429_with_bounded_memory_and_resyncs(
    make_deployment: MakeDeployment,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    # Given a group with two senders, a reader on the slow client's gateway, and a slow
    # client whose socket has a 32 KiB receive buffer.
    first, second, reader, slow = (
        make_user(f"r9{n}") for n in ("first", "second", "reader", "slow")
    )
    group = services.create_group(
        creator=first, title="r9", member_ids=[second.pk, reader.pk, slow.pk]
    ).pk
    parties = {u.username: party(u) for u in (first, second, reader, slow)}
    deployment = make_deployment(
        gateways=2, env={**FAST_SENDS, "WS_SEND_TIMEOUT": str(R9_WS_SEND_TIMEOUT)}
    )
    slow_gateway = deployment.gateways[0]
    figures: dict[str, Any] = {}

    async def scenario() -> tuple[History, dict[str, Any]]:
        history, arrivals = History(), Arrivals()
        clients = {
            "r9first": make_client([deployment.urls[1]], parties["r9first"], history, arrivals),
            "r9second": make_client([deployment.urls[0]], parties["r9second"], history, arrivals),
            "r9reader": make_client([deployment.urls[0]], parties["r9reader"], history, arrivals),
        }
        await connect_all(clients.values())
        raw, _ = await open_raw(
            slow_gateway.ws_url, parties["r9slow"].token, device="r9slow-raw", rcvbuf=32 * 1024
        )
        sampler = RssSampler(deployment.gateways)
        sampler.start()
        log_offset = len(slow_gateway.output())

        # When the slow client stops reading while 1,000 messages of 8 KB arrive.
        raw.ws.transport.pause_reading()
        stopped_at = time.time()
        closed = asyncio.create_task(
            wait_for_log(slow_gateway, "outbound queue full", after=log_offset, timeout=180)
        )
        in_flight = asyncio.Semaphore(16)
        padding = "y" * R9_BODY

        async def send(number: int) -> None:
            client = clients["r9first"] if number % 2 else clients["r9second"]
            async with in_flight:
                await client.send(group, f"{number} {padding}", timeout=60)

        await asyncio.gather(*(send(n) for n in range(R9_MESSAGES)))
        all_sent_at = time.time()
        async with asyncio.timeout(R9_WS_SEND_TIMEOUT + R9_CLOSE_SLACK + 60):
            closed_at = await closed

        # Then the server has closed it; reading again shows what it sent, then the close.
        raw.ws.transport.resume_reading()
        frames, close_code = await _drain(raw, timeout=60)
        await sampler.stop()

        # And the slow user, back with the reference client, resyncs to the whole log.
        clients["r9slow"] = make_client([slow_gateway.ws_url], parties["r9slow"], history, arrivals)
        reconnect_started = time.time()
        await clients["r9slow"].connect()
        await settle(clients.values(), timeout=60)
        figures["slow_resync_s"] = seconds(time.time() - reconnect_started)
        await close_all(clients.values())

        figures["sent_s"] = seconds(all_sent_at - stopped_at)
        figures["close_s_after_stop"] = seconds(closed_at - stopped_at) if closed_at else None
        figures["close_s_after_last_send"] = seconds(closed_at - all_sent_at) if closed_at else None
        figures["close_code_seen_by_slow_client"] = close_code
        figures["frames_buffered_for_slow_client"] = frames
        for gateway in deployment.gateways:
            name = gateway.name
            figures[f"{name}_rss_mb"] = {
                "baseline": round(sampler.baseline(name) / 2**20, 1),
                "peak": round(sampler.peak(name) / 2**20, 1),
                "growth": round((sampler.peak(name) - sampler.baseline(name)) / 2**20, 1),
            }
        figures["rss_peak_bytes"] = max(sampler.peak(g.name) for g in deployment.gateways)
        reader_live = [r for r in history.recvs if r.client == "r9reader" and r.via == "live"]
        sent_at = {s.message_id: s.invoked_at for s in history.sends if s.outcome == "ok"}
        reader_latency = Stats.of_seconds(
            r.received_at - sent_at[r.message_id] for r in reader_live if r.message_id in sent_at
        )
        figures["reader_live_share"] = round(len(reader_live) / R9_MESSAGES, 3)
        figures["reader_latency_ms"] = asdict(reader_latency)
        figures["reader_reconnects"] = sum(1 for r in history.reconnects if r.client == "r9reader")
        return history, views_of(clients.values())

    started = time.monotonic()
    history, views = asyncio.run(scenario())
    report = check(history, views=views, members={group: set(parties)})
    figures["runtime_s"] = seconds(time.monotonic() - started)
    publish("R9", report, figures, record_property=record_property, out_dir=tmp_path)

    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    assert report.sent_ok == R9_MESSAGES
    assert figures["close_s_after_last_send"] is not None, "the slow socket was never closed"
    assert figures["close_s_after_last_send"] <= R9_WS_SEND_TIMEOUT + R9_CLOSE_SLACK
    assert figures["close_code_seen_by_slow_client"] == 4429
    assert figures["rss_peak_bytes"] < R9_RSS_BOUND
    assert figures["reader_reconnects"] == 0
    assert len(views["r9slow"][group]) >= R9_MESSAGES
    # The reader on the slow client's gateway was never held up for a WS_SEND_TIMEOUT.
    assert figures["reader_latency_ms"]["p99"] < R9_WS_SEND_TIMEOUT * 1000


async def _drain(raw: RawSocket, timeout: float) -> tuple[int, int | None]:
    """Read until the server's close; return the frames read and the close code (1006: none)."""
    frames = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                await raw.ws.recv()
                frames += 1
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd is not None else 1006
    except TimeoutError:
        return frames, None


def _server_side_open(server_port: int, client_port: int) -> bool:
    """Answer whether a process (the gateway) still holds its end of this TCP connection.

    A socket closed with data the peer never took stays in the kernel for a while as an
    orphan (FIN_WAIT1, no inode): it no longer costs the gateway a file descriptor.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                ports = int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)
                if ports == (server_port, client_port) and inode != "0":
                    return True
    return False


def test_r9_a_client_that_never_reads_again_loses_its_connection_after_the_close(
    make_deployment: MakeDeployment, make_user: Any
) -> None:
    # Tried: a client stops reading for good while a group's messages pile up for it.
    # The gateway closes it 4429, and the close frame waits behind megabytes the client
    # will never read. The gateway must not hold that connection (a file descriptor and
    # its buffer) for ever: it aborts it CLOSE_TIMEOUT seconds after the close. Without
    # the abort the gateway's end stays open as long as the client's.
    from chatsite.gateway.websocket import CLOSE_TIMEOUT

    sender, slow = make_user("r9psender"), make_user("r9pslow")
    group = services.create_group(creator=sender, title="r9p", member_ids=[slow.pk]).pk
    deployment = make_deployment(gateways=1, env={**FAST_SENDS, "WS_SEND_TIMEOUT": "2"})
    gateway = deployment.gateways[0]
    server_port = urllib.parse.urlsplit(gateway.ws_url).port
    assert server_port is not None
    writing, stuck = party(sender), party(slow)

    async def scenario() -> tuple[bool, float | None, float | None]:
        writer = make_client([gateway.ws_url], writing, History())
        await writer.connect()
        raw, _ = await open_raw(gateway.ws_url, stuck.token, rcvbuf=32 * 1024)
        client_port = raw.ws.transport.get_extra_info("sockname")[1]
        raw.ws.transport.pause_reading()
        log_offset = len(gateway.output())
        closed = asyncio.create_task(
            wait_for_log(gateway, "outbound queue full", after=log_offset, timeout=120)
        )
        padding = "z" * 8192
        number = 0
        while not closed.done() and number < 2000:  # ~16 MB at most
            number += 1
            await writer.send(group, f"{number} {padding}", timeout=60)
        closed_at = await closed
        held_after_close = _server_side_open(server_port, client_port)
        gone_at = None
        deadline = time.monotonic() + CLOSE_TIMEOUT + 20
        while time.monotonic() < deadline:
            if not _server_side_open(server_port, client_port):
                gone_at = time.time()
                break
            await asyncio.sleep(0.2)
        raw.ws.transport.abort()
        await writer.close()
        return held_after_close, closed_at, gone_at

    held_after_close, closed_at, gone_at = asyncio.run(scenario())
    assert closed_at is not None, "the client that stopped reading was never closed 4429"
    # The close was queued behind unread data, so the connection outlived the close...
    assert held_after_close
    # ...and then the gateway let it go, without the client's help.
    assert gone_at is not None, f"the gateway still held the connection {CLOSE_TIMEOUT + 20} s on"


# --- R11 -------------------------------------------------------------------------------


def _system_seq(conversation_id: int, event: str) -> int:
    """Return the seq of the latest system message of `event` in a conversation."""
    seq = (
        Message.objects.filter(conversation_id=conversation_id, kind="system", system__event=event)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    assert seq is not None, f"no {event} in conversation {conversation_id}"
    return int(seq)


async def _fetch_all(raw: RawSocket, conversation: int) -> list[dict[str, Any]] | str:
    """Page through `messages.fetch after=0`; return the messages, or the error code."""
    messages: list[dict[str, Any]] = []
    after = 0
    while True:
        batch = await raw.request(
            type="messages.fetch", conversation=conversation, after=after, limit=200
        )
        if batch.get("type") == "error":
            return str(batch.get("code"))
        messages.extend(batch["messages"])
        if not batch["has_more"]:
            return messages
        after = int(batch["upto"])


def _search(base: str, token: str, query: str, conversation: int) -> tuple[int, list[int]]:
    """Search as PROTOCOL.md section 4 says; return the status and the seqs of the hits."""
    url = (
        f"{base}/api/v1/search?{urllib.parse.urlencode({'q': query, 'conversation': conversation})}"
    )
    seqs: list[int] = []
    for _ in range(50):
        request = urllib.request.Request(  # noqa: S310 - loopback URL built by the harness
            url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                page = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, seqs
        seqs += [int(hit["message"]["seq"]) for hit in page.get("results", [])]
        if not page.get("next"):
            break
        url = str(page["next"])
    return 200, seqs


def test_r11_a_member_removed_mid_stream_and_re_added_never_sees_the_gap(
    make_deployment: MakeDeployment,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    # Given a private group in which two members talk steadily while the third, cy,
    # watches with the reference client and with a raw socket that keeps every frame.
    owner, talker, cy = make_user("r11owner"), make_user("r11talker"), make_user("r11cy")
    group = services.create_group(
        creator=owner, title="r11", member_ids=[talker.pk, cy.pk], public=False
    ).pk
    parties = {u.username: party(u) for u in (owner, talker, cy)}
    deployment = make_deployment(gateways=2, env=FAST_SENDS)
    figures: dict[str, Any] = {}

    def notice(reason: str) -> Callable[[dict[str, Any]], bool]:
        return lambda u: u.get("type") == "conversation.updated" and u.get("reason") == reason

    async def scenario() -> tuple[History, dict[str, Any], RawSocket, int, int]:
        history, arrivals = History(), Arrivals()
        clients = {
            name: make_client([deployment.urls[i % 2]], p, history, arrivals)
            for i, (name, p) in enumerate(parties.items())
        }
        await connect_all(clients.values())
        watcher = clients["r11cy"]
        tap, _ = await open_raw(deployment.urls[1], parties["r11cy"].token, device="r11cy-tap")
        traffic = Traffic(
            [(clients["r11owner"], [group]), (clients["r11talker"], [group])],
            pause=0.05,
            arrivals=arrivals,
        )
        try:
            traffic.start()
            assert await arrivals.until(lambda: ok_sends(history) >= 20, timeout=30)

            # When cy is removed mid-stream ...
            removed_notice = asyncio.ensure_future(watcher.wait_for(notice("removed"), 15))
            await asyncio.sleep(0)  # let the waiter register before the removal
            await in_thread(
                services.remove_member, actor=owner, conversation_id=group, user_id=cy.pk
            )
            removed = await in_thread(_system_seq, conversation_id=group, event="removed")
            await removed_notice
            mark = time.time()
            assert await arrivals.until(lambda: ok_sends(history, mark) >= 20, timeout=30)

            # ... every way of reading the conversation is refused while cy is out ...
            try:
                await watcher.fetch(group, after=0)
                figures["client_fetch_while_removed"] = "answered"
            except ChatError as exc:
                figures["client_fetch_while_removed"] = exc.code
            figures["raw_fetch_while_removed"] = await _fetch_all(tap, group)
            state = await tap.request(type="sync")
            figures["in_sync_state_while_removed"] = group in [
                c["id"] for c in state["conversations"]
            ]
            try:
                await watcher.send(group, "cy while removed", timeout=10)
                figures["send_while_removed"] = "stored"
            except ChatError as exc:
                figures["send_while_removed"] = exc.code
            figures["search_while_removed"] = await asyncio.to_thread(
                _search, deployment.http_urls[0], parties["r11cy"].token, "r11talker", group
            )

            # ... and cy, added back later, gets the stream live again.
            joined_notice = asyncio.ensure_future(watcher.wait_for(notice("joined"), 15))
            await asyncio.sleep(0)
            await in_thread(
                services.add_members, actor=owner, conversation_id=group, user_ids=[cy.pk]
            )
            readded = await in_thread(_system_seq, conversation_id=group, event="added")
            await joined_notice
            assert await arrivals.until(
                lambda: any(
                    r.client == "r11cy" and r.via == "live" and r.seq > readded
                    for r in history.recvs
                ),
                timeout=15,
            ), "cy gets no live message after the re-add"
            mark = time.time()
            assert await arrivals.until(lambda: ok_sends(history, mark) >= 20, timeout=30)
        finally:
            await traffic.stop()
        await settle(clients.values())
        figures["raw_fetch_after_readd"] = await _fetch_all(tap, group)
        await tap.quiet()  # every frame the server sent the tap is in tap.frames now
        await tap.close()
        await close_all(clients.values())
        figures["traffic_errors"] = traffic.errors
        return history, views_of(clients.values()), tap, removed, readded

    started = time.monotonic()
    history, views, tap, removed, readded = asyncio.run(scenario())
    log = sorted(Message.objects.filter(conversation_id=group).values_list("seq", flat=True))
    report = check(
        history,
        views=views,
        members={group: set(parties)},
        excluded={group: {"r11cy": (removed, readded)}},
    )
    # Search: the brief of this file predates it (the REST issue brings `GET
    # /api/v1/search`, in progress as this is written). Its status goes in the report; the
    # test fails on a hit inside the gap whenever it answers 200. Whether it answers 200
    # at all is the REST suite's business, not this scenario's.
    search_status, search_seqs = _search(
        deployment.http_urls[1], parties["r11cy"].token, "r11talker", group
    )
    figures["search_after_readd"] = {"status": search_status, "hits": len(search_seqs)}
    leaked_search = [s for s in search_seqs if removed <= s < readded]
    leaked_wire = sorted(
        int(f["message"]["seq"])
        for f in tap.frames
        if f.get("type") in ("message.created", "message.updated")
        and f["message"]["conversation"] == group
        and removed <= int(f["message"]["seq"]) < readded
    )
    fetched = figures.pop("raw_fetch_after_readd")
    fetched_seqs = [int(m["seq"]) for m in fetched] if isinstance(fetched, list) else fetched
    figures.update(
        removed_at_seq=removed,
        readded_at_seq=readded,
        log_length=len(log),
        gap=[removed, readded - 1],
        wire_leaks=leaked_wire,
        search_leaks=leaked_search,
        fetch_after_readd_first_seq=min(fetched_seqs) if isinstance(fetched_seqs, list) else None,
        runtime_s=seconds(time.monotonic() - started),
    )
    publish("R11", report, figures, record_property=record_property, out_dir=tmp_path)

    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    assert figures["traffic_errors"] == []
    assert removed < readded - 10, "the stream must go on while cy is out"
    assert leaked_wire == [], "live frames of the gap reached cy's other socket"
    assert figures["client_fetch_while_removed"] == "forbidden"
    assert figures["raw_fetch_while_removed"] == "forbidden"
    assert figures["in_sync_state_while_removed"] is False
    assert figures["send_while_removed"] == "forbidden"
    # A private group shows a re-added member the log from the re-add on (docs/protocol.md
    # "Who sees what"), so a fetch from 0 shows exactly the seqs from `readded` on.
    assert fetched_seqs == [s for s in log if s >= readded]
    assert figures["search_while_removed"][1] == [], "search answered cy while removed"
    assert leaked_search == [], f"search showed cy seqs {leaked_search} of the gap"


# --- R13 -------------------------------------------------------------------------------

R13_USERS = ("r13ana", "r13bo", "r13cy")
# (user, conversation) pairs a send may use: a group of all three and a direct ana-bo.
R13_MEMBERSHIPS = (
    ("r13ana", "group"),
    ("r13bo", "group"),
    ("r13cy", "group"),
    ("r13ana", "direct"),
    ("r13bo", "direct"),
)
R13_SETTINGS = settings(
    max_examples=15,
    stateful_step_count=30,
    deadline=None,
    database=None,  # nothing written to .hypothesis/
    # No shrinking: every shrink step replays the machine against live processes and
    # could take minutes; the failing example is reported unshrunk.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class _Sent:
    user: str
    conversation: int
    client_msg_id: str
    body: str
    message_id: int | None = None
    seq: int | None = None


@dataclass
class _MachineContext:
    """What every example of the machine shares: one deployment and its users."""

    urls: list[str]
    parties: dict[str, Party]
    conversations: dict[str, int]
    members: dict[int, set[str]]
    redis_server: RedisServer
    histories: list[History] = field(default_factory=list)
    last_views: dict[str, Any] = field(default_factory=dict)
    rules: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)


class ChatMachine(RuleBasedStateMachine):
    """Clients that send, resend, lose acks, come and go while Redis is flushed.

    Invariants: after each step, every open client's views are in seq order and agree on
    which message holds each seq; at teardown (every user back, every lost ack retried
    with its client_msg_id, every client synced) the checker holds: no ok send lost, none
    stored twice, one order, no gaps.
    """

    def __init__(self, ctx: _MachineContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.loop = asyncio.new_event_loop()
        self.history = History()
        self.clients: dict[str, ChatClient | None] = dict.fromkeys(R13_USERS)
        self.acked: list[_Sent] = []
        self.unacked: list[_Sent] = []
        self.numbers = itertools.count(1)
        self.sends_since_flush = 0
        for name in R13_USERS:
            self._do(self._open(name))

    # --- plumbing ----------------------------------------------------------------------

    def _do(self, work: Awaitable[T], timeout: float = 30.0) -> T:
        async def bounded() -> T:
            async with asyncio.timeout(timeout):
                return await work

        return self.loop.run_until_complete(bounded())

    async def _open(self, name: str) -> None:
        client = make_client(self.ctx.urls, self.ctx.parties[name], self.history)
        await client.connect()
        self.clients[name] = client

    def _count(self, rule_name: str) -> None:
        self.ctx.rules[rule_name] += 1

    # --- rules -------------------------------------------------------------------------

    @rule(who=st.sampled_from(R13_MEMBERSHIPS), count=st.integers(1, 4))
    def send(self, who: tuple[str, str], count: int) -> None:
        """Send `count` messages at once (a burst, so sends outnumber the other steps)."""
        name, key = who
        client = self.clients[name]
        if client is None:
            return  # offline: nothing to send with
        self._count("send")
        conversation = self.ctx.conversations[key]
        bodies = [f"{name} says {next(self.numbers)}" for _ in range(count)]

        async def burst() -> list[dict[str, Any]]:
            return list(
                await asyncio.gather(*(client.send(conversation, b, timeout=20) for b in bodies))
            )

        messages = self._do(burst())
        self.sends_since_flush += count
        for body, message in zip(bodies, messages, strict=True):
            self.acked.append(
                _Sent(
                    name,
                    conversation,
                    message["client_msg_id"],
                    body,
                    message["id"],
                    message["seq"],
                )
            )

    @precondition(lambda self: bool(self.acked))
    @rule(data=st.data())
    def duplicate_send(self, data: st.DataObject) -> None:
        sent = data.draw(st.sampled_from(self.acked), label="resend")
        client = self.clients[sent.user]
        if client is None:
            return
        self._count("duplicate_send")
        again = self._do(
            client.send(sent.conversation, sent.body, client_msg_id=sent.client_msg_id, timeout=20)
        )
        assert (again["id"], again["seq"]) == (sent.message_id, sent.seq), (
            "a replay must answer the original"
        )

    @rule(who=st.sampled_from(R13_MEMBERSHIPS), abrupt=st.booleans())
    def lost_ack(self, who: tuple[str, str], abrupt: bool) -> None:
        """Send on a socket of its own and drop it before the reply: the outcome is unknown."""
        name, key = who
        self._count("lost_ack")
        lost = _Sent(
            name,
            self.ctx.conversations[key],
            str(uuid.uuid4()),
            f"{name} lost {next(self.numbers)}",
        )
        invoked_at = time.time()
        self._do(self._send_and_drop(lost, abrupt=abrupt))
        self.history.record(
            SendRecord(
                client=name,
                conversation=lost.conversation,
                client_msg_id=lost.client_msg_id,
                invoked_at=invoked_at,
                completed_at=time.time(),
                outcome="unknown",
                error_code="lost_ack",
                attempts=1,
            )
        )
        self.unacked.append(lost)

    async def _send_and_drop(self, lost: _Sent, *, abrupt: bool) -> None:
        url = random.choice(self.ctx.urls)  # spread over the gateways
        raw, _ = await open_raw(url, self.ctx.parties[lost.user].token, device=f"{lost.user}-lossy")
        await raw.send(
            type="message.send",
            conversation=lost.conversation,
            client_msg_id=lost.client_msg_id,
            body=lost.body,
            ref="never-read",
        )
        if abrupt:
            raw.ws.transport.abort()  # the network dies: no close handshake, no reply
        await raw.close()  # a clean close that never reads the reply (after abort: no-op)

    @precondition(lambda self: bool(self.unacked))
    @rule(data=st.data())
    def retry_lost_ack(self, data: st.DataObject) -> None:
        lost = data.draw(st.sampled_from(self.unacked), label="retry")
        client = self.clients[lost.user]
        if client is None:
            return
        self._count("retry_lost_ack")
        message = self._do(
            client.send(lost.conversation, lost.body, client_msg_id=lost.client_msg_id, timeout=20)
        )
        self.unacked.remove(lost)
        self.acked.append(
            _Sent(
                lost.user,
                lost.conversation,
                lost.client_msg_id,
                lost.body,
                message["id"],
                message["seq"],
            )
        )

    @rule(name=st.sampled_from(R13_USERS))
    def disconnect(self, name: str) -> None:
        client = self.clients[name]
        if client is None:
            return
        self._count("disconnect")
        self._do(client.close())
        self.clients[name] = None

    @rule(name=st.sampled_from(R13_USERS))
    def reconnect(self, name: str) -> None:
        if self.clients[name] is not None:
            return
        self._count("reconnect")
        self._do(self._open(name))

    @rule(name=st.sampled_from(R13_USERS))
    def drop_connection(self, name: str) -> None:
        """Kill the TCP connection under an open client: it reconnects from its cursors."""
        client = self.clients[name]
        # The reference client has no "drop" hook; its session's socket is the way in.
        session = getattr(client, "_session", None) if client is not None else None
        if session is None:
            return
        self._count("drop_connection")
        session.ws.transport.abort()

    # Only after some traffic: a flush of an idle Redis tests nothing new.
    @precondition(lambda self: self.sends_since_flush > 0)
    @rule()
    def flush_redis(self) -> None:
        self._count("flush_redis")
        self.ctx.redis_server.flushall()
        self.sends_since_flush = 0

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def no_open_client_was_stopped_by_the_server(self) -> None:
        stopped = {n: c.closed_code for n, c in self.clients.items() if c is not None and c.closed}
        # 4409 here means the server counted dead sockets against the 10-socket cap (see
        # test_r13_sends_whose_ack_was_lost_leave_no_connection_slot_behind).
        assert not stopped, f"the server stopped clients for good: {stopped}"

    @invariant()
    def views_are_ordered_and_agree(self) -> None:
        holder: dict[tuple[int, int], tuple[int, str]] = {}
        for name, client in self.clients.items():
            if client is None:
                continue
            for conversation, view in client.views().items():
                seqs = [int(m["seq"]) for m in view]
                assert seqs == sorted(set(seqs)), f"{name}: view of {conversation} out of order"
                for message in view:
                    key = (conversation, int(message["seq"]))
                    first = holder.setdefault(key, (int(message["id"]), name))
                    assert first[0] == int(message["id"]), (
                        f"seq {key}: message {first[0]} for {first[1]}, {message['id']} for {name}"
                    )

    def teardown(self) -> None:
        try:
            report = self._do(self._finish(), timeout=120)
        finally:
            open_clients = [c for c in self.clients.values() if c is not None]
            with contextlib.suppress(Exception):
                self._do(close_all(open_clients), timeout=30)
            _close_loop(self.loop)
        assert report.ok, report.summary() + "\n" + "\n".join(report.details)

    async def _finish(self) -> CheckReport:
        for name in R13_USERS:
            if self.clients[name] is None:
                await self._open(name)
        clients = {name: c for name, c in self.clients.items() if c is not None}
        for lost in list(self.unacked):
            await clients[lost.user].send(
                lost.conversation, lost.body, client_msg_id=lost.client_msg_id, timeout=20
            )
            self.unacked.remove(lost)
        await settle(clients.values())
        views = views_of(clients.values())
        report = check(self.history, views=views, members=self.ctx.members)
        self.ctx.histories.append(self.history)
        self.ctx.last_views = views
        self.ctx.examples.append(
            {"sent_ok": report.sent_ok, "unknown": report.total("sent_unknown"), "ok": report.ok}
        )
        return report


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on `loop` and close it."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def test_r13_state_machine_of_sends_resends_lost_acks_reconnects_and_flushes_keeps_invariants(
    make_deployment: MakeDeployment,
    redis_server: RedisServer,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    # Given one deployment for the whole machine, three users, a group and a direct chat.
    ana, bo, cy = (make_user(name) for name in R13_USERS)
    group = services.create_group(creator=ana, title="r13", member_ids=[bo.pk, cy.pk]).pk
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    deployment = make_deployment(gateways=2, env=FAST_SENDS)
    ctx = _MachineContext(
        urls=deployment.urls,
        parties={u.username: party(u) for u in (ana, bo, cy)},
        conversations={"group": group, "direct": direct.pk},
        members={group: set(R13_USERS), direct.pk: {"r13ana", "r13bo"}},
        redis_server=redis_server,
    )

    # When the machine runs its examples; then every invariant held (asserted inside).
    started = time.monotonic()
    machine_error: str | None = None
    try:
        # hypothesis leaves run_state_machine_as_test unannotated.
        run_state_machine_as_test(  # type: ignore[no-untyped-call]
            lambda: ChatMachine(ctx), settings=R13_SETTINGS
        )
    except BaseException as exc:
        machine_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise
    finally:
        # And over all (completed) examples together, the last views hold every
        # acknowledged send. Published even when an example failed.
        history = History()
        for part in ctx.histories:
            history.extend(part)
        report = check(history, views=ctx.last_views, members=ctx.members)
        figures = {
            "examples": ctx.examples,
            "rules_run": dict(ctx.rules),
            "machine_error": machine_error,
            "runtime_s": seconds(time.monotonic() - started),
        }
        publish("R13", report, figures, record_property=record_property, out_dir=tmp_path)
    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
    assert len(ctx.examples) >= R13_SETTINGS.max_examples


R13_LOST_ACKS = 12  # more than WS_MAX_CONNECTIONS_PER_USER (10)


def test_r13_sends_whose_ack_was_lost_leave_no_connection_slot_behind(
    make_deployment: MakeDeployment,
    redis_server: RedisServer,
    make_user: Any,
    record_property: RecordProperty,
    tmp_path: Path,
) -> None:
    """Found by the R13 machine: a socket that goes away while its send is in flight.

    Each lost ack here is a socket that sends `message.send` and closes (cleanly) before
    the reply; the same client_msg_id is then retried on the user's live socket. The
    gateway must forget the closed socket: its slot in the per-user registry (the
    10-socket cap, `<prefix>:conns:<user>`) must go, or the user's live socket is the
    one evicted (4409, which stops a client for good).
    """
    # Given a user with one live socket (the reference client) in a direct conversation.
    ana, bo = make_user("r13lossy"), make_user("r13peer")
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    lossy, peer = party(ana), party(bo)
    deployment = make_deployment(gateways=1, env=FAST_SENDS)
    registry_key = f"{deployment.channel_layer_prefix}:conns:{ana.pk}"
    figures: dict[str, Any] = {"registered_after_each": []}

    async def registered_once_settled(at_most: int) -> int:
        """Return the registry's size once it is `at_most` or less (or after 10 s)."""
        deadline = time.monotonic() + 10
        while True:
            with redis_server.client() as redis:
                size = int(redis.zcard(registry_key))
            if size <= at_most or time.monotonic() > deadline:
                return size
            await asyncio.sleep(0.05)

    async def scenario() -> tuple[History, dict[str, Any]]:
        history = History()
        clients = {p.name: make_client(deployment.urls, p, history) for p in (lossy, peer)}
        await connect_all(clients.values())
        live = clients[lossy.name]
        # When twelve sends in a row lose their ack, each retried on the live socket.
        for number in range(R13_LOST_ACKS):
            lost = _Sent(lossy.name, direct.pk, str(uuid.uuid4()), f"lost ack {number}")
            raw, _ = await open_raw(deployment.urls[0], lossy.token, device="r13-lossy")
            invoked_at = time.time()
            await raw.send(
                type="message.send",
                conversation=lost.conversation,
                client_msg_id=lost.client_msg_id,
                body=lost.body,
            )
            await raw.close()  # before the reply: the ack is lost
            history.record(
                SendRecord(
                    client=lossy.name,
                    conversation=lost.conversation,
                    client_msg_id=lost.client_msg_id,
                    invoked_at=invoked_at,
                    completed_at=time.time(),
                    outcome="unknown",
                    error_code="lost_ack",
                    attempts=1,
                )
            )
            try:
                await live.send(
                    lost.conversation, lost.body, client_msg_id=lost.client_msg_id, timeout=20
                )
            except ChatError as exc:
                figures["live_socket_stopped_after"] = {"lost_acks": number + 1, "error": str(exc)}
                break
            # The gone socket's slot goes once its in-flight send has finished, which on a
            # loaded machine can be after the retry's answer: wait for it (a leak never
            # gets there) rather than read the registry at one arbitrary moment.
            figures["registered_after_each"].append(await registered_once_settled(2))
        figures["registered_at_the_end"] = await registered_once_settled(1)
        figures["live_socket_close_code"] = live.closed_code
        if not live.closed:
            await settle(clients.values())
        await close_all(clients.values())
        return history, views_of(clients.values())

    history, views = asyncio.run(scenario())
    report = check(history, views=views, members={direct.pk: {lossy.name, peer.name}})
    figures["errors_logged_for_gone_clients"] = (
        deployment.gateways[0].output().count("frame message.send failed")
    )
    publish("R13-lost-acks", report, figures, record_property=record_property, out_dir=tmp_path)

    assert figures["live_socket_close_code"] is None, (
        f"the live socket was closed {figures['live_socket_close_code']} after "
        f"{figures.get('live_socket_stopped_after')}; registry sizes "
        f"{figures['registered_after_each']}: ChatConsumer.receive lets the failed reply "
        "to a gone client escape, so disconnect() never unregisters it"
    )
    # Each gone socket's slot went (the live socket and at most the one just closed),
    # and in the end only the live socket is registered.
    assert max(figures["registered_after_each"]) <= 2, figures["registered_after_each"]
    assert figures["registered_at_the_end"] == 1, figures
    assert report.ok, report.summary() + "\n" + "\n".join(report.details)
