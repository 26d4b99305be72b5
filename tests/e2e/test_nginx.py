"""The shipped deployment files, proven: nginx on deploy/nginx/chat.conf in front of gateways.

A real nginx (Debian's, `make /usr/sbin/nginx`) runs the shipped site with only its
example values replaced (tests/e2e/nginx.py): TLS on one free port, the redirecting
plain-HTTP server on another, two real uvicorn gateways as its upstream. Through that one
address: REST, WebSocket tickets, static files, the hidden /metrics, the body limit; and
the reference clients of R3 (tests/e2e/test_reliability_traffic.py) while one gateway is
SIGKILLed, checked by `chatclient.check()`. The access log is read after each to show
that no query string (no ticket) was written. The systemd units are checked against the
command lines the harness and the Makefile run.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shlex
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from websockets.asyncio.client import connect

from bench.harness import LOCALHOST, REPO_ROOT, Deployment, Gateway
from chatclient import obtain_token
from tests.e2e.conftest import MakeDeployment
from tests.e2e.nginx import NginxProxy
from tests.e2e.scenario import (
    PASSWORD,
    BatchLog,
    Fleet,
    Frame,
    Properties,
    drive,
    finish,
    make_groups,
    make_users,
    mint_access,
    think_times,
)

CONNECT_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 30.0
# As in production behind one nginx (deploy/systemd/chat.env.example); fast sends so
# the scenario is not throttled by the per-user rate.
GATEWAY_ENV = {"API_NUM_PROXIES": "1", "CHAT_SEND_RATE": "1000", "CHAT_SEND_BURST": "1000"}

# One line of the `chat_noquery` access log format of the shipped site.
ACCESS_LINE = re.compile(
    r'^(?P<client>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<uri>\S*) (?P<protocol>[^"]*)" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<duration>\S+) "
    r"upstream=(?P<upstream>.*) upstream_status=(?P<upstream_status>.*) "
    r'"(?P<agent>.*)"$'
)


@dataclass(frozen=True)
class Access:
    """One access log entry."""

    method: str
    uri: str
    status: int
    upstream: str

    @classmethod
    def parse(cls, line: str) -> Access:
        """Read one line; fail the test if it is not in the shipped format."""
        match = ACCESS_LINE.match(line)
        assert match is not None, f"not a chat_noquery line: {line!r}"
        return cls(match["method"], match["uri"], int(match["status"]), match["upstream"])


@dataclass
class Proxied:
    """Two gateways and the nginx in front of them."""

    deployment: Deployment
    nginx: NginxProxy
    tls: ssl.SSLContext

    def addresses(self) -> list[str]:
        """Return each gateway's address as nginx's $upstream_addr writes it."""
        return [f"{LOCALHOST}:{g.port}" for g in self.deployment.gateways]

    def access(self) -> list[Access]:
        """Return the access log so far."""
        return [Access.parse(line) for line in self.nginx.access_lines()]

    def get(self, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        """GET `path` from nginx over TLS; return status, headers and body."""
        conn = http.client.HTTPSConnection(
            LOCALHOST, self.nginx.https_port, timeout=15, context=self.tls
        )
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()


@pytest.fixture
def proxied(
    make_deployment: MakeDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Proxied]:
    """Return two started gateways behind a started nginx; nginx stops first."""
    deployment = make_deployment(gateways=2, env=GATEWAY_ENV)
    addresses = [f"{LOCALHOST}:{g.port}" for g in deployment.gateways]
    with NginxProxy(tmp_path / "nginx", addresses) as nginx:
        # The reference client (websockets) and urllib build their TLS context from the
        # defaults, which read the trusted certificates from SSL_CERT_FILE.
        monkeypatch.setenv("SSL_CERT_FILE", str(nginx.certificate))
        yield Proxied(deployment, nginx, ssl.create_default_context(cafile=nginx.certificate))


def wait_for_access(
    proxied: Proxied, done: Callable[[list[Access]], bool], timeout: float = 10.0
) -> list[Access]:
    """Return the access log once `done(entries)` holds.

    nginx writes a WebSocket's entry when the connection ends, a moment after the client
    saw it close.
    """
    deadline = time.monotonic() + timeout
    while True:
        entries = proxied.access()
        if done(entries):
            return entries
        assert time.monotonic() < deadline, f"the access log stopped at {entries}"
        time.sleep(0.05)


def assert_no_query_strings(proxied: Proxied, secrets: list[str]) -> None:
    """Assert that no access log line holds a query string or any of `secrets`."""
    text = proxied.nginx.access_log.read_text()
    assert "ticket=" not in text
    for secret in secrets:
        assert secret not in text
    assert all("?" not in entry.uri for entry in proxied.access())
    # Nothing fell through to the http-level log (format `combined`, query included).
    default = proxied.nginx.default_access_log
    assert not default.exists() or default.read_text() == "", default.read_text()


# --- REST, tickets, static files, /metrics, the body limit ---------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_rest_and_a_ticket_websocket_go_through_nginx_which_logs_no_query_string(
    proxied: Proxied,
) -> None:
    (user,) = make_users("ngxrest", 1)
    # The gateways check passwords with the production hasher, not the suite's MD5.
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])

    status, _headers, body = proxied.get("/healthz")
    assert (status, json.loads(body)["status"]) == (200, "ok")

    async def scenario() -> tuple[str, Frame]:
        pair = await obtain_token(proxied.nginx.https_url, user.username, PASSWORD)
        request = urllib.request.Request(  # noqa: S310 - the test's own https URL
            f"{proxied.nginx.https_url}/api/v1/ws-tickets",
            data=b"{}",
            method="POST",
            headers={
                "Authorization": f"Bearer {pair['access']}",
                "Content-Type": "application/json",
            },
        )

        def ask() -> Any:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                assert response.status == 201
                return json.loads(response.read())

        ticket = str((await asyncio.to_thread(ask))["ticket"])
        url = f"{proxied.nginx.wss_url}?ticket={ticket}&device=ngx-ticket"
        async with connect(url, ssl=proxied.tls, open_timeout=CONNECT_TIMEOUT) as ws:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                ready: Frame = json.loads(await ws.recv())
        return ticket, ready

    ticket, ready = drive(scenario, timeout=60)
    assert ready["type"] == "session.ready"
    assert ready["user"]["id"] == user.pk

    # The plain-HTTP server only redirects, and logs the path alone too.
    conn = http.client.HTTPConnection(LOCALHOST, proxied.nginx.http_port, timeout=15)
    try:
        conn.request("GET", f"/ws/v1/?ticket={ticket}")
        redirect = conn.getresponse()
        redirect.read()
    finally:
        conn.close()
    assert redirect.status == 301
    assert redirect.headers["Location"] == f"https://{LOCALHOST}/ws/v1/?ticket={ticket}"

    # /metrics is answered by nginx itself, whatever follows it.
    for path in ("/metrics", "/metrics/", "/metrics?name[]=up", "/%6Detrics"):
        assert proxied.get(path)[0] == 404, path

    # Static files come from the static root, not from a gateway: hashed names for good.
    (proxied.nginx.static_root / "app.0123456789ab.js").write_text("hashed();\n")
    (proxied.nginx.static_root / "app.js").write_text("plain();\n")
    status, headers, body = proxied.get("/static/app.0123456789ab.js")
    assert (status, body) == (200, b"hashed();\n")
    assert "immutable" in headers.get_all("Cache-Control", [])
    status, headers, body = proxied.get("/static/app.js")
    assert (status, body) == (200, b"plain();\n")
    assert "immutable" not in headers.get_all("Cache-Control", [])

    # A body over the gateways' limit stops at nginx (its headers alone say so).
    conn = http.client.HTTPSConnection(
        LOCALHOST, proxied.nginx.https_port, timeout=15, context=proxied.tls
    )
    try:
        conn.putrequest("POST", "/api/v1/attachments")
        conn.putheader("Content-Length", str(26 * 1024 * 1024 + 1))
        conn.endheaders()
        too_large = conn.getresponse()
        too_large.read()
    finally:
        conn.close()
    assert too_large.status == 413

    # 12 requests in all; the WebSocket's and the 413's entries come when their
    # connections end.
    entries = wait_for_access(proxied, lambda log: len(log) >= 12)
    # Through a gateway: the health check, the login, the ticket, the WebSocket.
    forwarded = [e for e in entries if e.upstream != "-"]
    assert sorted((e.method, e.uri, e.status) for e in forwarded) == [
        ("GET", "/healthz", 200),
        ("GET", "/ws/v1/", 101),
        ("POST", "/api/v1/auth/token", 200),
        ("POST", "/api/v1/ws-tickets", 201),
    ]
    assert {e.upstream for e in forwarded} <= set(proxied.addresses()), forwarded
    # Answered by nginx alone: the redirect, /metrics in all its spellings (logged as the
    # decoded path), the static files, the oversized body.
    assert sorted((e.method, e.uri, e.status) for e in entries if e.upstream == "-") == [
        ("GET", "/metrics", 404),
        ("GET", "/metrics", 404),
        ("GET", "/metrics", 404),
        ("GET", "/metrics/", 404),
        ("GET", "/static/app.0123456789ab.js", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/ws/v1/", 301),
        ("POST", "/api/v1/attachments", 413),
    ]
    assert_no_query_strings(proxied, [ticket])


# --- a gateway killed under traffic --------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_clients_of_a_gateway_killed_behind_nginx_reconnect_through_it_and_lose_nothing(
    proxied: Proxied, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    properties: Properties = request.node.user_properties
    victim, survivor = proxied.deployment.gateways
    victim_address, survivor_address = proxied.addresses()
    groups = make_groups(make_users("ngxu", 20), 5, "NGX")
    access = mint_access(u for g in groups for u in g.members)
    batches = BatchLog()
    # One URL for every client: nginx's. Which gateway a client lands on is nginx's call.
    fleet = Fleet([proxied.nginx.wss_url], seed=7, backoff_base=0.2, backoff_max=2.0, tap=batches)
    for group in groups:
        for user in group.members:
            fleet.add(user.username, access[user.pk], [group.id])
    sends_each = 8
    pauses = think_times(fleet.clients, sends_each, 0.2, 0.6, seed=7)
    cursors_at_kill: dict[str, int] = {}
    times: dict[str, float] = {}

    async def fault() -> None:
        await asyncio.sleep(1.2)  # mid-stream: every client has sent a message or two
        for name, client in fleet.clients.items():
            cursors_at_kill[name] = client.cursor(fleet.conversations[name][0])
        times["killed"] = time.time()
        await asyncio.to_thread(victim.kill)

    async def scenario() -> dict[str, Any]:
        try:
            await fleet.connect(CONNECT_TIMEOUT)
            await asyncio.gather(fault(), fleet.chat(pauses))
            delivery: dict[str, Any] = await fleet.settle(DELIVERY_TIMEOUT)
            return {**delivery, "all_connected": all(c.connected for c in fleet.clients.values())}
        finally:
            await fleet.close()

    started = time.monotonic()
    outcome = drive(scenario, timeout=120)
    reconnects = [r for r in fleet.history.reconnects if r.dropped_at >= times["killed"]]
    reconnected = {r.client for r in reconnects}
    # Resumed from the cursor, as in R3: no page fetched after a reconnect starts at or
    # below the cursor the client had when the gateway died.
    refetched = batches.refetched_below(reconnects, cursors_at_kill)
    # Every socket has its entry once it closed: the first ones and the reconnects.
    opened = len(fleet.clients) + len(reconnects)
    entries = wait_for_access(proxied, lambda log: sum(e.uri == "/ws/v1/" for e in log) >= opened)
    sockets = [e for e in entries if e.uri == "/ws/v1/"]
    served_by_victim = [e for e in sockets if e.upstream == victim_address and e.status == 101]
    # "dead, live": nginx tried the killed gateway first, was refused, went on.
    failed_over = [e for e in sockets if e.upstream == f"{victim_address}, {survivor_address}"]
    report = finish(
        "NGINX",
        fleet.history,
        fleet.views(),
        fleet.members,
        tmp_path=tmp_path,
        properties=properties,
        extra={
            **outcome,
            "clients": len(fleet.clients),
            "sockets_served_by_killed_gateway": len(served_by_victim),
            "reconnected": len(reconnected),
            "handshakes_failed_over_by_nginx": len(failed_over),
            "upstreams": sorted({e.upstream for e in sockets}),
            "runtime_s": round(time.monotonic() - started, 1),
        },
    )

    # Every handshake through nginx succeeded, though one gateway was dead: nginx skipped
    # it (proxy_next_upstream) instead of answering 502.
    assert {e.status for e in sockets} == {101}, sockets
    assert failed_over, "nginx never tried the killed gateway (least_conn should pick it)"
    assert reconnected, "no client was on the killed gateway"
    assert reconnected < set(fleet.clients), "the surviving gateway's clients were dropped too"
    # Exactly the killed gateway's sockets came back, each once, through nginx.
    assert len(reconnected) == len(reconnects) == len(served_by_victim), (
        reconnects,
        served_by_victim,
    )
    assert refetched == {}, f"fetched from below the cursor after reconnecting: {refetched}"
    assert outcome["all_connected"], "a client was not connected at the end"
    assert outcome["incomplete"] == {}, outcome
    assert report.ok, report.summary() + "\n" + "\n".join(report.details[:20])
    assert report.sent_ok == 20 * sends_each
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, 0)
    assert_no_query_strings(proxied, list(access.values()))
    # nginx's error lines quote the request line, query included; the refused handshakes
    # above would have written some, but the WebSocket location logs only critical ones.
    assert "/ws/v1/?" not in proxied.nginx.output()
    assert survivor.running


# --- the systemd units run what the harness and `make serve` run ---------------------------


def unit_command(name: str) -> list[str]:
    """Return the ExecStart= of deploy/systemd/`name`, split as systemd would."""
    text = (REPO_ROOT / "deploy" / "systemd" / name).read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    (line,) = [line for line in joined.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def make_command(variable: str) -> list[str]:
    """Return the Makefile's `variable = ...` command line (continuations joined), split."""
    text = re.sub(r"\\\n\s*", " ", (REPO_ROOT / "Makefile").read_text())
    (line,) = [line for line in text.splitlines() if line.startswith(f"{variable} = ")]
    return shlex.split(line.removeprefix(f"{variable} = "))


def without_address(command: list[str]) -> list[str]:
    """Return `command` without its interpreter and its --host/--port arguments."""
    rest = command[1:]
    kept: list[str] = []
    skip = False
    for arg in rest:
        if skip:
            skip = False
        elif arg in ("--host", "--port"):
            skip = True
        else:
            kept.append(arg)
    return kept


def test_the_units_run_the_command_lines_of_the_harness_and_the_makefile(tmp_path: Path) -> None:
    gateway = unit_command("chat-gateway@.service")
    assert gateway[0] == "/srv/chat/.venv/bin/python"
    assert gateway[gateway.index("--host") + 1] == "127.0.0.1"
    assert gateway[gateway.index("--port") + 1] == "%i"
    harness = Gateway({}, tmp_path).command()
    assert without_address(gateway) == without_address(harness)
    assert without_address(gateway) == without_address(make_command("GATEWAY"))
    assert unit_command("chat-worker.service")[1:] == make_command("WORKER")[1:]
    # systemd reads `%%` as one `%` (`-n thumbnails@%h`: Celery's host name).
    thumbnailer = [arg.replace("%%", "%") for arg in unit_command("chat-thumbnailer.service")]
    assert thumbnailer[1:] == make_command("THUMBNAILER")[1:]
    assert "--queues=thumbnails" in thumbnailer
    beat = unit_command("chat-beat.service")
    assert beat[1:7] == make_command("BEAT")[1:7]
