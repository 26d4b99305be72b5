"""Log lines: JSON objects with a correlation id; request ids from proxies checked."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
from django.test import Client

from chatsite.logs import CorrelationFilter, JsonFormatter, correlation_id

pytestmark = pytest.mark.django_db


def test_a_request_id_from_the_proxy_is_echoed_and_a_forged_one_replaced(client: Client) -> None:
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="edge-7f3a.1")
    # Tried: a newline and a quote, to forge a second log line.
    forged = client.get("/healthz", HTTP_X_REQUEST_ID='x"\n{"level":"ERROR"}')
    missing = client.get("/healthz")

    assert kept["X-Request-ID"] == "edge-7f3a.1"
    assert re.fullmatch(r"[0-9a-f]{16}", forged["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{16}", missing["X-Request-ID"])
    assert forged["X-Request-ID"] != missing["X-Request-ID"]


def test_a_json_line_is_one_object_with_the_cid_extras_and_the_traceback() -> None:
    record = logging.LogRecord("chat.test", logging.ERROR, __file__, 1, "failed %s", ("x",), None)
    record.conversation = 7
    token = correlation_id.set("abc123")
    try:
        CorrelationFilter().filter(record)
        try:
            raise ValueError("boom")
        except ValueError:
            record.exc_info = sys.exc_info()
        line = JsonFormatter().format(record)
    finally:
        correlation_id.reset(token)

    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "failed x" and data["cid"] == "abc123"
    assert data["conversation"] == 7 and data["level"] == "ERROR"
    assert "ValueError: boom" in data["exc"]
