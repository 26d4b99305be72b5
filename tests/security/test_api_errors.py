"""Errors under /api/ from a production gateway are the JSON error, with sentences.

Tried (in the review, DJANGO_DEBUG=0): a multipart POST over Django's form limits to an
/api/ endpoint (answered with Django's HTML 400 page then), and requests without or
with broken credentials (whose 401 messages were Python reprs). Here against a real
gateway with debug off: 2,000 form fields, a form over DATA_UPLOAD_MAX_MEMORY_SIZE, a
deeply nested JSON body, and the 401s.
"""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any

import pytest

from bench.harness import LOCALHOST, Gateway
from tests.e2e.conftest import MakeDeployment

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "security-test-" + "k" * 50,
    "DJANGO_HTTPS": "0",
}
JSON = "application/json"


def post(
    gateway: Gateway, path: str, body: bytes, content_type: str, token: str | None = None
) -> tuple[int, str, Any]:
    conn = http.client.HTTPConnection(LOCALHOST, gateway.port, timeout=30)
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = token
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type") or ""
        return response.status, kind, json.loads(raw) if "json" in kind else raw[:200]
    finally:
        conn.close()


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    )
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


def is_sentence(message: str) -> bool:
    return message[:1].isupper() and message.endswith(".") and "{" not in message


def log_in(gateway: Gateway) -> str:
    """Sign up and log in through the gateway (its secret key signs the token)."""
    account = {"username": "formfilled", "password": "a long and correct passphrase 7"}
    created = post(gateway, "/api/v1/auth/register", json.dumps(account).encode(), JSON)
    assert created[0] == 201, created
    status, _, pair = post(gateway, "/api/v1/auth/token", json.dumps(account).encode(), JSON)
    assert status == 200, pair
    return f"Bearer {pair['access']}"


def test_over_djangos_form_limits_api_answers_json(make_deployment: MakeDeployment) -> None:
    gateway = make_deployment(gateways=1, env=PRODUCTION).gateways[0]
    token = log_in(gateway)

    fields = post(
        gateway, "/api/v1/attachments", *multipart({f"f{n}": "x" for n in range(2000)}), token
    )
    memory = post(gateway, "/api/v1/attachments", *multipart({"note": "x" * 3_000_000}), token)
    nested = post(gateway, "/api/v1/auth/token", b"[" * 2000, JSON)

    assert fields == (
        400,
        "application/json",
        {
            "error": {
                "code": "bad_request",
                "message": "The form has more than 1000 fields.",
                "details": {"max_fields": 1000},
            }
        },
    )
    assert memory[:2] == (413, "application/json"), memory
    assert memory[2]["error"]["code"] == "payload_too_large"
    assert nested[:2] == (400, "application/json"), nested
    assert "Traceback" not in gateway.output()


def test_401_messages_are_sentences(make_deployment: MakeDeployment) -> None:
    gateway = make_deployment(gateways=1, env=PRODUCTION).gateways[0]
    body, kind = b"{}", JSON

    answers = [
        post(gateway, "/api/v1/conversations", body, kind),
        post(gateway, "/api/v1/conversations", body, kind, "Bearer not-a-jwt"),
        post(gateway, "/api/v1/conversations", body, kind, "Bearer"),
        post(gateway, "/api/v1/conversations", body, kind, "Basic Zm9vOmJhcg=="),
    ]

    for status, content_type, answer in answers:
        assert (status, content_type) == (401, "application/json"), answer
        assert answer["error"]["code"] == "unauthenticated"
        assert is_sentence(answer["error"]["message"]), answer
