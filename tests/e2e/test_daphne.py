"""Daphne stays supported: the same application behind two Daphne gateways.

The default gateway server is uvicorn (docs/operations.md says why); Daphne is what
`make run` serves and a supported alternative. What is tried here against two real
Daphne processes, started as docs/operations.md gives the command: the protocol's frame
limit (a frame at the 1.25 MiB limit answered; one byte more, 1.5 MiB and 4 MiB closed
1009, not dropped), the handshake refusals (no credential: 4401; a foreign Origin: refused before
accept), and a group chat across both gateways with nothing lost, duplicated or
reordered.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from accounts.tokens import issue_pair
from bench.harness import Deployment, http_get
from tests.e2e.conftest import MakeDeployment
from tests.e2e.scenario import (
    Fleet,
    Properties,
    drive,
    finish,
    make_groups,
    make_users,
    mint_access,
    think_times,
)
from tests.e2e.test_security import (
    FRAME_LIMIT,
    MakeUser,
    close_code,
    connect_ready,
    padded_ping,
    receive,
    reply_to,
    run,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def daphne(make_deployment: MakeDeployment) -> Deployment:
    return make_deployment(
        gateways=2, server="daphne", env={"CHAT_SEND_RATE": "1000", "CHAT_SEND_BURST": "1000"}
    )


class TestUnderDaphne:
    def test_frames_over_the_limit_are_closed_1009_up_to_four_mebibytes(
        self, daphne: Deployment, make_user: MakeUser
    ) -> None:
        # Tried: a `ping` of exactly the frame limit (1.25 MiB), then on fresh sockets the
        # limit + 1 byte, 1.5 MiB and 4 MiB.
        token = issue_pair(make_user("ana"))["access"]
        url = daphne.urls[0]

        async def scenario() -> tuple[Any, list[int | None], Any]:
            ws = await connect_ready(url, token=token)
            await ws.send(padded_ping(FRAME_LIMIT))
            at_limit = await receive(ws)
            await ws.close()
            codes = []
            for size in (FRAME_LIMIT + 1, 1536 * 1024, 4 * 1024 * 1024):
                ws = await connect_ready(url, token=token)
                # Daphne may close (1009) and reset the socket before a 4 MiB frame is all
                # written: the send then raises, and the close code is what counts.
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(padded_ping(size))
                codes.append(await close_code(ws))
            async with await connect_ready(url, token=token) as fresh:
                pong = await reply_to(fresh, {"type": "ping"})
            return at_limit, codes, pong

        at_limit, codes, pong = run(scenario())

        assert at_limit["type"] == "pong"
        assert codes == [1009, 1009, 1009]
        assert pong["type"] == "pong"

    def test_handshakes_without_credentials_or_from_a_foreign_origin_are_refused(
        self, daphne: Deployment
    ) -> None:
        # Tried: no credential at all; a foreign Origin (refused before accept: HTTP 403).
        async def scenario() -> tuple[int | None, int]:
            async with connect(daphne.urls[1]) as ws:
                code = await close_code(ws)
            try:
                async with connect(daphne.urls[1], origin="https://evil.example"):  # type: ignore[arg-type]
                    status = 101
            except InvalidStatus as exc:
                status = exc.response.status_code
            return code, status

        code, status = run(scenario())

        assert code == 4401
        assert status == 403
        assert http_get(f"{daphne.gateways[1].http_url}/healthz")[0] == 200

    def test_a_group_chat_across_two_daphne_gateways_loses_nothing(
        self, daphne: Deployment, tmp_path: Path, properties: Properties
    ) -> None:
        groups = make_groups(make_users("dph", 12), 6, "Daphne")
        access = mint_access(u for g in groups for u in g.members)
        fleet = Fleet(daphne.urls, seed=5)
        for group in groups:
            for user in group.members:
                fleet.add(user.username, access[user.pk], [group.id])
        sends_each = 5
        pauses = think_times(fleet.clients, sends_each, 0.05, 0.2, seed=5)

        async def scenario() -> dict[str, Any]:
            try:
                await fleet.connect(60)
                await fleet.chat(pauses)
                return await fleet.settle(30)
            finally:
                await fleet.close()

        outcome = drive(scenario, timeout=120)
        on = {c.gateway_url for c in fleet.clients.values()}
        report = finish(
            "daphne",
            fleet.history,
            fleet.views(),
            fleet.members,
            tmp_path=tmp_path,
            properties=properties,
            extra=outcome,
        )

        assert on == set(daphne.urls), "the clients used both gateways"
        assert outcome["incomplete"] == {}, outcome
        assert report.ok, report.summary()
        assert report.sent_ok == 12 * sends_each
        assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
