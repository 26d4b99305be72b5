"""SENTRY_DSN turns on error reports: an ERROR line of ours reaches a Sentry endpoint.

Sentry is an outside service, so a local HTTP endpoint stands in for it, speaking its
protocol: sentry-sdk POSTs an envelope (gzip, one JSON line per header and item) to
`/api/<project>/envelope/` of the DSN's host. What is tried: a process with SENTRY_DSN
set logs a failed frame the way the gateway does (`logger.exception`); the envelope
that arrives carries the exception and no personal data. A process without SENTRY_DSN
sends nothing.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bench.harness import LOCALHOST, free_port
from tests.test_settings import run

CRASH = (
    "import logging, django; django.setup(); import sentry_sdk\n"
    "log = logging.getLogger('chatsite.gateway.socket')\n"
    "try:\n"
    "    raise ZeroDivisionError('frame handler bug')\n"
    "except ZeroDivisionError:\n"
    "    log.exception('frame %s failed', 'message.send')\n"
    "sentry_sdk.flush(5)\n"
)


class _Endpoint(http.server.ThreadingHTTPServer):
    envelopes: list[tuple[str, list[dict[str, Any]]]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Endpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        self.server.envelopes.append((self.path, items))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def sentry_endpoint() -> Iterator[_Endpoint]:
    server = _Endpoint((LOCALHOST, free_port()), _Handler)
    server.envelopes = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_error_logged_by_the_gateway_is_reported_to_sentry(sentry_endpoint: _Endpoint) -> None:
    port = sentry_endpoint.server_address[1]
    result = run(
        {"SENTRY_DSN": f"http://publickey@{LOCALHOST}:{port}/42", "SENTRY_ENVIRONMENT": "ci"},
        "-c",
        CRASH,
    )

    assert result.returncode == 0, result.stderr
    events = [
        item
        for path, items in sentry_endpoint.envelopes
        if path == "/api/42/envelope/"
        for item in items
        if "exception" in item
    ]
    assert len(events) == 1, sentry_endpoint.envelopes
    event = events[0]
    (exc,) = event["exception"]["values"]
    assert (exc["type"], exc["value"]) == ("ZeroDivisionError", "frame handler bug")
    assert event["logentry"]["formatted"] == "frame message.send failed"
    assert event["environment"] == "ci"
    assert "user" not in event or "ip_address" not in event.get("user", {})


def test_without_a_dsn_nothing_is_sent(sentry_endpoint: _Endpoint) -> None:
    result = run({}, "-c", CRASH)

    assert result.returncode == 0, result.stderr
    assert sentry_endpoint.envelopes == []
