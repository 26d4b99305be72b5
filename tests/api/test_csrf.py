"""CSRF (RELIABILITY.md S11): session-authenticated writes need the token; JWT ones do not."""

import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import User
from messaging.models import Conversation
from tests.api.conftest import Client as ApiClientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(ana: User) -> Client:
    """A browser signed in with a session, whose CSRF checks are enforced as in real life."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(ana)
    return client


def csrf_token(browser: Client) -> str:
    browser.get("/accounts/login/")
    return str(browser.cookies["csrftoken"].value)


WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("post", "/api/v1/conversations", {"kind": "group", "title": "From a forged form"}),
    ("patch", "/api/v1/users/me", {"status": "busy"}),
    ("post", "/api/v1/conversations/{c}/messages", {"client_msg_id": "", "body": "forged"}),
    ("post", "/api/v1/conversations/{c}/read", {"seq": 1}),
    ("post", "/api/v1/ws-tickets", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[w[1] for w in WRITES])
def test_session_write_without_csrf_token_is_403(
    browser: Client, group: Conversation, method: str, path: str, body: dict[str, Any]
) -> None:
    if "client_msg_id" in body:
        body = {**body, "client_msg_id": str(uuid.uuid4())}

    response = getattr(browser, method)(
        path.format(c=group.pk), body, content_type="application/json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "CSRF" in response.json()["error"]["message"]
    assert group.messages.filter(body="forged").count() == 0


def test_session_upload_without_csrf_token_is_403(browser: Client) -> None:
    response = browser.post("/api/v1/attachments", {"file": SimpleUploadedFile("a.txt", b"hello")})

    assert response.status_code == 403


def test_session_write_with_the_token_goes_through(browser: Client, group: Conversation) -> None:
    token = csrf_token(browser)

    response = browser.post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "from the browser"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )

    assert response.status_code == 201


def test_session_reads_need_no_token(browser: Client) -> None:
    assert browser.get("/api/v1/users/me").status_code == 200


def test_bearer_writes_need_no_token(client_for: ApiClientFactory, ana: User) -> None:
    client = client_for(ana)
    client.enforce_csrf_checks = True
    client.handler.enforce_csrf_checks = True

    response = client.patch("/api/v1/users/me", {"status": "busy"}, format="json")

    assert response.status_code == 200
