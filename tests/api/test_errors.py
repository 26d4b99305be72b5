"""Error messages a person can read: refused tokens, bad bodies, Django's form limits.

Every error's `message` is a sentence; what a program needs is in `details`.
"""

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as DjangoClient
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts import tokens
from accounts.models import User
from tests.api.conftest import Client

pytestmark = pytest.mark.django_db

EXPIRED = "Your access token has expired; refresh it or log in again."
INVALID = "Your access token is not valid; log in again."


def with_header(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


def expired_access(user: User) -> str:
    """Return an access token of `user` (a real login's) that expired an hour ago."""
    access = AccessToken(tokens.issue_pair(user)["access"])  # type: ignore[arg-type]
    access.set_exp(from_time=timezone.now() - timedelta(hours=1))
    return str(access)


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert "ErrorDetail" not in body["message"] and "{" not in body["message"]
    return body


def test_an_expired_access_token_is_refused_with_a_readable_message(ana: User) -> None:
    response = with_header(f"Bearer {expired_access(ana)}").get("/api/v1/users/me")

    assert response.status_code == 401
    assert error(response) == {
        "code": "unauthenticated",
        "message": EXPIRED,
        "details": {"token": "expired"},
    }
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"],
    ids=["garbage", "forged signature"],
)
def test_a_malformed_or_forged_access_token_is_refused_as_not_valid(header: str) -> None:
    response = with_header(header).get("/api/v1/users/me")

    assert response.status_code == 401
    assert error(response) == {
        "code": "unauthenticated",
        "message": INVALID,
        "details": {"token": "invalid"},
    }


def test_a_refresh_token_is_no_access_token(ana: User) -> None:
    refresh = tokens.issue_pair(ana)["refresh"]

    response = with_header(f"Bearer {refresh}").get("/api/v1/users/me")

    assert error(response)["details"] == {"token": "invalid"}


def test_a_bearer_header_without_one_token_says_how_it_should_look() -> None:
    response = with_header("Bearer two tokens").get("/api/v1/users/me")

    assert response.status_code == 401
    assert error(response) == {
        "code": "unauthenticated",
        "message": "The Authorization header must be `Bearer <access token>`.",
        "details": {"token": "malformed"},
    }


def test_a_logged_out_login_and_a_changed_password_say_so(
    ana: User, bo: User, client_for: Client
) -> None:
    pair = tokens.issue_pair(ana)
    tokens.revoke(pair["refresh"], ana)
    bo_access = tokens.issue_pair(bo)["access"]
    bo.set_password("a new long passphrase 9")
    bo.save()

    logged_out = with_header(f"Bearer {pair['access']}").get("/api/v1/users/me")
    changed = with_header(f"Bearer {bo_access}").get("/api/v1/users/me")

    assert error(logged_out)["message"] == "This login was logged out; log in again."
    assert error(logged_out)["details"] == {"token": "revoked"}
    assert error(changed)["message"] == "Your password was changed; log in again."
    assert error(changed)["details"] == {"token": "password_changed"}


def test_no_credentials_say_so_without_details(client_for: Client) -> None:
    response = client_for().get("/api/v1/users/me")

    assert response.status_code == 401
    assert error(response) == {
        "code": "unauthenticated",
        "message": "Authentication credentials were not provided.",
    }


def test_a_body_that_is_not_json_says_so_and_gives_the_reason(client_for: Client) -> None:
    response = client_for().post("/api/v1/auth/token", "{not json", content_type="application/json")

    assert response.status_code == 400
    body = error(response)
    assert body["message"] == "The request body is not valid JSON."
    assert body["details"]["reason"].startswith("Expecting property name")


def test_a_validation_error_names_the_field_and_the_problem(client_for: Client) -> None:
    response = client_for().post("/api/v1/auth/token", {"password": "x"}, format="json")

    assert response.status_code == 400
    body = error(response)
    assert body["message"] == "username: This field is required."
    assert body["details"] == {
        "field": "username",
        "fields": {"username": ["This field is required."]},
    }


def test_a_session_write_without_its_csrf_token_says_what_to_send(ana: User) -> None:
    browser = DjangoClient(enforce_csrf_checks=True)
    browser.force_login(ana)

    response = browser.patch(
        "/api/v1/users/me", {"status": "busy"}, content_type="application/json"
    )

    assert response.status_code == 403
    assert error(response) == {
        "code": "forbidden",
        "message": "The CSRF check failed: send the csrftoken cookie's value in an X-CSRFToken "
        "header.",
        "details": {"csrf": "CSRF cookie not set."},
    }


def test_more_form_fields_than_django_allows_are_a_json_400(
    client_for: Client, ana: User, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields: dict[str, Any] = {f"f{n}": "x" for n in range(10)}
    fields["file"] = SimpleUploadedFile("a.txt", b"hello")

    response = client_for(ana).post("/api/v1/attachments", fields, format="multipart")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert error(response) == {
        "code": "bad_request",
        "message": "The form has more than 5 fields.",
        "details": {"max_fields": 5},
    }


def test_more_form_files_than_django_allows_are_a_json_400(
    client_for: Client, ana: User, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = {f"file{n}": SimpleUploadedFile(f"{n}.txt", b"hi") for n in range(3)}

    response = client_for(ana).post("/api/v1/attachments", files, format="multipart")

    assert response.status_code == 400
    assert error(response)["details"] == {"max_files": 2}


def test_form_fields_over_djangos_memory_limit_are_a_json_413(
    client_for: Client, ana: User, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    fields = {"note": "x" * 5000, "file": SimpleUploadedFile("a.txt", b"hello")}

    response = client_for(ana).post("/api/v1/attachments", fields, format="multipart")

    assert response.status_code == 413
    assert error(response) == {
        "code": "payload_too_large",
        "message": "The form's fields (files aside) are larger than 1000 bytes.",
        "details": {"max_bytes": 1000},
    }


def test_a_request_django_refuses_before_any_view_is_json_under_api_only() -> None:
    browser = DjangoClient(HTTP_HOST="evil.example")

    api = browser.get("/api/v1/server/limits")
    page = browser.get("/accounts/login/")

    assert api.status_code == 400
    assert error(api) == {"code": "bad_request", "message": "The request is not valid."}
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")
