"""JSON logs and one correlation id per message, followed across two gateways.

Two real gateways with `LOG_FORMAT=json` and `LOG_TRACE=INFO`. Ana (on the first) sends
a message to a group with Bo (on the second). What is checked in the processes' own log
files: the sender's gateway logs the frame and the stored message under one `cid`, and
the receiver's gateway logs forwarding that message to Bo under the same `cid`. An HTTP
request with `X-Request-ID` gets it echoed and one access line under that id, whose
path has no query string (a `?ticket=` or a search term never reaches a log).
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from bench.harness import Gateway
from tests.e2e.conftest import MakeDeployment
from tests.e2e.scenario import Fleet, drive, make_groups, make_users, mint_access

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def json_lines(gateway: Gateway) -> list[dict[str, Any]]:
    """Return the gateway's log lines that are ours (JSON objects), in order."""
    raw_lines = gateway.output().splitlines()
    lines = []
    for n, raw in enumerate(raw_lines):
        if not raw.startswith("{"):
            continue
        try:
            lines.append(json.loads(raw))
        except ValueError:
            if n < len(raw_lines) - 1:
                raise  # only the line being written may be incomplete
    return lines


def test_one_message_is_followed_by_its_cid_from_frame_to_the_receivers_gateway(
    make_deployment: MakeDeployment,
) -> None:
    deployment = make_deployment(gateways=2, env={"LOG_FORMAT": "json", "LOG_TRACE": "INFO"})
    first, second = deployment.gateways
    ana, bo = make_users("logu", 2)
    group = make_groups([ana, bo], 2, "Logs")[0]
    access = mint_access([ana, bo])
    fleet = Fleet(deployment.urls, seed=1)
    sender = fleet.add("ana", access[ana.pk], [group.id], urls=[first.ws_url])
    fleet.add("bo", access[bo.pk], [group.id], urls=[second.ws_url])

    async def scenario() -> dict[str, Any]:
        try:
            await fleet.connect(30)
            message = await sender.send(group.id, "follow me")
            await fleet.settle(20)
            return message
        finally:
            await fleet.close()

    message = drive(scenario, timeout=60)

    sent = json_lines(first)
    frame_in = [
        line
        for line in sent
        if line["logger"] == "chat.trace" and line.get("frame") == "message.send"
    ]
    assert len(frame_in) == 1, frame_in
    cid = frame_in[0]["cid"]
    assert frame_in[0]["user"] == ana.pk and len(cid) == 16
    stored = [line for line in sent if line["msg"] == "message stored" and line["cid"] == cid]
    assert [(s["message_id"], s["seq"]) for s in stored] == [(message["id"], message["seq"])]
    delivered = [
        line
        for line in json_lines(second)
        if line["logger"] == "chat.trace"
        and line.get("frame") == "message.created"
        and line["cid"] == cid
    ]
    assert [d["user"] for d in delivered] == [bo.pk]
    for line in sent + json_lines(second):
        assert {"ts", "level", "logger", "pid", "msg", "cid"} <= set(line)

    conn = http.client.HTTPConnection("127.0.0.1", first.port, timeout=10)
    try:
        conn.request(
            "GET",
            "/api/v1/conversations?ticket=not-for-logs",
            headers={"X-Request-ID": "req-test-42", "Authorization": f"Bearer {access[ana.pk]}"},
        )
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert response.getheader("X-Request-ID") == "req-test-42"

    # The access line is written after the response: wait for it to reach the log file.
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in json_lines(first) if line["logger"] == "chat.access"]
        mine = [line for line in lines if line["cid"] == "req-test-42"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 1, lines[-5:]
    assert (mine[0]["method"], mine[0]["path"], mine[0]["status"]) == (
        "GET",
        "/api/v1/conversations",
        200,
    )
    assert "not-for-logs" not in first.output()
