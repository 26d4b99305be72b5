"""Graceful drain: a SIGTERMed gateway hands its clients to the other one, spread out.

Two real gateways, reference clients chatting in groups across both. One gateway gets
SIGTERM mid-traffic (as systemd or a rolling deploy sends it). What is checked: while it
drains, its health checks answer 503 and it refuses new WebSocket handshakes with HTTP
503 (so a load balancer or client goes elsewhere) but still answers REST; every client
on it gets a `reconnect` frame, leaves at its own moment within the window and comes
back on the other gateway, without a 1012 close; the process exits by itself once they
are gone; and no message is lost, duplicated or reordered.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bench.harness import http_get
from tests.e2e.conftest import MakeDeployment
from tests.e2e.scenario import (
    Fleet,
    Frame,
    Properties,
    TapClient,
    drive,
    finish,
    make_groups,
    make_users,
    mint_access,
    think_times,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DRAIN_SECONDS = 3.0
DRAIN_GRACE = 1.0


class ReconnectFrames:
    """A frame tap that records when each client got `reconnect`, and its delay."""

    def __init__(self) -> None:
        self.got: dict[str, tuple[float, int]] = {}

    def __call__(self, client: TapClient, frame: Frame) -> bool:
        if frame.get("type") == "reconnect":
            self.got[client.name] = (time.time(), int(frame["after_ms"]))
        return True


def test_a_sigtermed_gateway_drains_its_clients_to_the_other_and_exits(
    make_deployment: MakeDeployment, tmp_path: Path, properties: Properties
) -> None:
    deployment = make_deployment(
        gateways=2,
        env={
            "WS_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "WS_DRAIN_GRACE": str(DRAIN_GRACE),
            "CHAT_SEND_RATE": "1000",
            "CHAT_SEND_BURST": "1000",
        },
    )
    victim, other = deployment.gateways
    groups = make_groups(make_users("dr", 24), 6, "Drain")
    access = mint_access(u for g in groups for u in g.members)
    tap = ReconnectFrames()
    close_codes: list[int | None] = []

    def on_event(frame: Frame) -> None:
        if frame.get("type") == "client.disconnected":
            close_codes.append(frame.get("code"))

    fleet = Fleet(
        deployment.urls, seed=7, backoff_base=0.2, backoff_max=2.0, tap=tap, on_event=on_event
    )
    for group in groups:
        for user in group.members:
            fleet.add(user.username, access[user.pk], [group.id])
    sends_each = 15  # about 5 s of traffic: it goes on through the whole drain
    pauses = think_times(fleet.clients, sends_each, 0.2, 0.5, seed=7)
    probes: dict[str, Any] = {}
    on_victim: list[str] = []
    times: dict[str, float] = {}

    async def probe_while_draining() -> None:
        await asyncio.sleep(0.5)
        status, body = await asyncio.to_thread(http_get, f"{victim.http_url}/healthz")
        probes["healthz"] = (status, json.loads(body))
        probes["readyz"] = (await asyncio.to_thread(http_get, f"{victim.http_url}/readyz"))[0]
        probes["rest_schema"] = (
            await asyncio.to_thread(http_get, f"{victim.http_url}/api/asyncapi.json")
        )[0]
        token = access[groups[0].members[0].pk]
        try:
            async with connect(
                victim.ws_url, additional_headers={"Authorization": f"Bearer {token}"}
            ):
                probes["handshake"] = "accepted"
        except InvalidStatus as exc:
            probes["handshake"] = exc.response.status_code
            probes["handshake_body"] = json.loads(exc.response.body or b"{}")

    async def fault() -> None:
        await asyncio.sleep(1.5)  # mid-stream: every client has sent a message or two
        on_victim.extend(n for n, c in fleet.clients.items() if c.gateway_url == victim.ws_url)
        times["sigterm"] = time.time()
        probe = asyncio.create_task(probe_while_draining())
        # terminate() sends SIGTERM and waits for the exit (SIGKILL only after 20 s).
        await asyncio.to_thread(victim.terminate, 20.0)
        times["exited"] = time.time()
        await probe
        # The last to leave may still be on its way over: wait until all are back.
        async with asyncio.timeout(20):
            while not all(
                fleet.clients[n].connected and fleet.clients[n].gateway_url == other.ws_url
                for n in on_victim
            ):
                await asyncio.sleep(0.05)

    async def scenario() -> dict[str, Any]:
        try:
            await fleet.connect(60)
            await asyncio.gather(fault(), fleet.chat(pauses))
            return await fleet.settle(30)
        finally:
            await fleet.close()

    outcome = drive(scenario, timeout=180)
    reconnects = [r for r in fleet.history.reconnects if r.dropped_at >= times["sigterm"]]
    moved = {r.client for r in reconnects}
    left_at = sorted(r.dropped_at - times["sigterm"] for r in reconnects)
    report = finish(
        "drain",
        fleet.history,
        fleet.views(),
        fleet.members,
        tmp_path=tmp_path,
        properties=properties,
        extra={
            **outcome,
            "on_drained_gateway": len(on_victim),
            "left_after_s": [round(t, 2) for t in left_at],
            "reconnected_to": dict(Counter(r.gateway_url for r in reconnects)),
            "exit_after_s": round(times["exited"] - times["sigterm"], 2),
            "probes": probes,
            "close_codes": dict(Counter(close_codes)),
        },
    )

    assert on_victim, "no client was on the drained gateway"
    assert victim.returncode == -signal.SIGTERM, "it exited by itself, not SIGKILLed"
    assert probes["healthz"][0] == 503 and probes["healthz"][1]["status"] == "draining"
    assert probes["readyz"] == 503
    assert probes["rest_schema"] == 200, "HTTP is still served while draining"
    assert probes["handshake"] == 503, "a new socket is sent elsewhere"
    assert probes["handshake_body"]["error"]["code"] == "unavailable"
    assert set(tap.got) == set(on_victim), "exactly the drained gateway's clients were told"
    assert all(0 <= after <= DRAIN_SECONDS * 1000 for _, after in tap.got.values())
    assert moved >= set(on_victim), f"never came back: {set(on_victim) - moved}"
    assert {r.gateway_url for r in reconnects} == {other.ws_url}
    assert all(c.drain_moves == 1 for n, c in fleet.clients.items() if n in on_victim)
    # They left at their own moments, spread over the window, not all at once.
    assert len(left_at) < 2 or left_at[-1] - left_at[0] > 0.3, left_at
    # No client waited for the server's 1012: each left when told.
    assert 1012 not in close_codes, close_codes
    assert outcome["incomplete"] == {}, outcome
    assert report.ok, report.summary() + "\n" + "\n".join(report.details[:20])
    assert report.sent_ok == 24 * sends_each
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
