"""The sign-up budget counts the address the settings say to trust, not a client's header.

Tried: 12 `POST /api/v1/auth/register` to a real gateway, each with another
`X-Forwarded-For`. uvicorn by default takes the client address from that header on any
connection from 127.0.0.1, so every request counted as a new address and all 12 were
created. Gateways now leave the header to the application (`chatsite.clientaddr`),
which reads it only with `API_NUM_PROXIES` set and from an `API_TRUSTED_PROXIES` peer.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from bench.harness import LOCALHOST, Gateway
from tests.e2e.conftest import MakeDeployment
from tests.e2e.nginx import NginxProxy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long and correct passphrase 7"


def register(
    gateway: Gateway | http.client.HTTPConnection, username: str, forwarded_for: str
) -> tuple[int, Any]:
    conn = (
        gateway
        if isinstance(gateway, http.client.HTTPConnection)
        else http.client.HTTPConnection(LOCALHOST, gateway.port, timeout=30)
    )
    try:
        body = json.dumps({"username": username, "password": PASSWORD})
        headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for}
        conn.request("POST", "/api/v1/auth/register", body, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_a_forged_forwarded_for_does_not_buy_more_sign_ups(
    make_deployment: MakeDeployment,
) -> None:
    # Default settings (API_NUM_PROXIES=0, REGISTER_BURST=10): the 12 requests come from
    # one TCP peer, 127.0.0.1, whatever they claim.
    gateway = make_deployment(gateways=1).gateways[0]

    answers = [register(gateway, f"forged{n}", f"198.51.100.{n}") for n in range(12)]

    statuses = [status for status, _ in answers]
    assert statuses == [201] * 10 + [429] * 2, statuses
    refused = answers[-1][1]["error"]
    assert refused["code"] == "rate_limited"
    assert refused["message"].startswith("Too many sign-ups from your network; try again in ")
    assert refused["details"]["retry_after"] >= 1


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(
    make_deployment: MakeDeployment,
) -> None:
    # nginx's setup: one proxy on 127.0.0.1 appends the client's address. A budget of
    # one sign-up per address: distinct addresses each get theirs, a repeated one is
    # refused, and entries a client wrote before the proxy's do not matter.
    env = {"API_NUM_PROXIES": "1", "API_TRUSTED_PROXIES": "127.0.0.1", "REGISTER_BURST": "1"}
    gateway = make_deployment(gateways=1, env=env).gateways[0]

    firsts = [register(gateway, f"proxied{n}", f"203.0.113.{n}")[0] for n in range(4)]
    again = register(gateway, "proxied-again", "203.0.113.0")[0]
    prefixed = register(gateway, "proxied-prefixed", "192.0.2.99, 203.0.113.1")[0]

    assert firsts == [201] * 4
    assert again == 429
    assert prefixed == 429


def test_a_proxy_count_without_a_trusted_peer_reads_no_header(
    make_deployment: MakeDeployment,
) -> None:
    # API_NUM_PROXIES=1 but the proxy is elsewhere: a process on the gateway's own host
    # (127.0.0.1, not trusted) cannot pick its address either.
    env = {"API_NUM_PROXIES": "1", "API_TRUSTED_PROXIES": "192.0.2.1", "REGISTER_BURST": "2"}
    gateway = make_deployment(gateways=1, env=env).gateways[0]

    statuses = [register(gateway, f"direct{n}", f"203.0.113.{n}")[0] for n in range(3)]

    assert statuses == [201, 201, 429]


def test_through_nginx_the_budget_counts_the_address_nginx_saw(
    make_deployment: MakeDeployment, tmp_path: Path
) -> None:
    # The shipped nginx site in front, API_NUM_PROXIES=1 as in deploy/systemd/chat.env:
    # nginx appends the real peer (127.0.0.1) to whatever the client sent, and that
    # entry is the one counted, so forged entries buy nothing.
    env = {"API_NUM_PROXIES": "1", "REGISTER_BURST": "2"}
    gateway = make_deployment(gateways=1, env=env).gateways[0]
    with NginxProxy(tmp_path / "nginx", [f"{LOCALHOST}:{gateway.port}"]) as nginx:
        tls = ssl.create_default_context(cafile=nginx.certificate)

        def through_nginx() -> http.client.HTTPConnection:
            return http.client.HTTPSConnection(LOCALHOST, nginx.https_port, timeout=30, context=tls)

        statuses = [register(through_nginx(), f"nginx{n}", f"198.51.100.{n}")[0] for n in range(3)]

    assert statuses == [201, 201, 429]
