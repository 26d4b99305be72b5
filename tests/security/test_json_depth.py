"""Deeply nested JSON bodies: a 400 with the JSON error, no traceback in the log.

Tried: `POST /api/v1/auth/token` (and sign-up, and a message send) with 2,000 and
100,000 nested `[` or `{"a":`. Before the depth limit the decoder recursed once per
level, ran out of stack and the request ended as a 500 with a 75-line traceback logged
at ERROR each time.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from chatsite.limits import MAX_JSON_DEPTH
from messaging import frames
from messaging.models import Conversation
from tests.api.conftest import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a long and correct passphrase 7"
BODIES = {
    "2000 [": "[" * 2000,
    "100000 [": "[" * 100_000,
    '2000 {"a":': '{"a":' * 2000,
    '100000 {"a":': '{"a":' * 100_000,
    "2000 closed": "[" * 2000 + "]" * 2000,
}


@pytest.fixture(autouse=True)
def _open_budgets(settings: Any) -> None:
    settings.REGISTER_BURST = 10_000.0
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 10_000


def nested(depth: int) -> Any:
    """Return `[[...["x"]...]]`, `depth` arrays deep."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def post_raw(client: APIClient, path: str, body: str) -> Any:
    return client.generic("POST", path, body, content_type="application/json")


def endpoints(group: Conversation) -> list[str]:
    return [
        "/api/v1/auth/register",
        "/api/v1/auth/token",
        f"/api/v1/conversations/{group.pk}/messages",
    ]


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_deep_nesting_is_a_json_400_and_logs_no_error(
    client_for: Client,
    ana: User,
    group: Conversation,
    body: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    for path in endpoints(group):
        client = client_for(ana) if "/conversations/" in path else client_for()

        response = post_raw(client, path, body)

        assert response.status_code == 400, (path, response.content[:200])
        assert response.json() == {
            "error": {
                "code": "bad_request",
                "message": f"The request body nests arrays and objects more than "
                f"{MAX_JSON_DEPTH} deep.",
                "details": {"max_depth": MAX_JSON_DEPTH},
            }
        }
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_body_at_the_allowed_depth_is_read(client_for: Client, group: Conversation) -> None:
    # The whole body is one level: a field nested MAX_JSON_DEPTH - 1 more is allowed and
    # reaches validation (which refuses a list where a string belongs, as always).
    body = json.dumps({"username": nested(MAX_JSON_DEPTH - 1), "password": PASSWORD})
    too_deep = json.dumps({"username": nested(MAX_JSON_DEPTH), "password": PASSWORD})

    allowed = post_raw(client_for(), "/api/v1/auth/register", body)
    refused = post_raw(client_for(), "/api/v1/auth/register", too_deep)

    assert allowed.status_code == 400
    assert allowed.json()["error"]["details"]["fields"]["username"]
    assert refused.json()["error"]["details"] == {"max_depth": MAX_JSON_DEPTH}


def test_brackets_inside_strings_do_not_count(
    client_for: Client, ana: User, group: Conversation
) -> None:
    text = "[{" * 5000 + '"\\"[' + "]}" * 10
    sent = client_for(ana).post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": "7c6b1a3e-8f6b-4f0e-9a55-3f1f0e7d2b11", "body": text[:4000]},
        format="json",
    )
    registered = client_for().post(
        "/api/v1/auth/register", {"username": "brackets", "password": PASSWORD}, format="json"
    )

    assert sent.status_code == 201, sent.content[:300]
    assert sent.json()["body"] == text[:4000]
    assert registered.status_code == 201


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_a_deep_websocket_frame_is_a_bad_request_too(body: str) -> None:
    # The same rule on the other transport: a frame is refused before it is decoded.
    with pytest.raises(frames.BadFrame) as refused:
        frames.parse_envelope(body)

    assert refused.value.error.code == "bad_request"
    assert f"more than {MAX_JSON_DEPTH} deep" in refused.value.error.message
