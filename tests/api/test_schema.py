"""The OpenAPI schema and docs, the published limits, and the doc serializers vs the payloads."""

import json
from typing import Any, NotRequired, get_origin, get_type_hints

import pytest
from django.conf import settings as django_settings
from drf_spectacular.validation import validate_schema
from rest_framework import serializers
from rest_framework.test import APIClient

from chatsite.limits import MAX_FRAME_BYTES
from messaging import wire
from messaging.api import serializers as s
from messaging.api.views import server_limits
from tests.api.conftest import Client

pytestmark = pytest.mark.django_db

# PROTOCOL.md section 4, less `GET /presence` (the presence issue's).
CONTRACT = {
    "/api/v1/auth/register": {"post"},
    "/api/v1/auth/token": {"post"},
    "/api/v1/auth/token/refresh": {"post"},
    "/api/v1/ws-tickets": {"post"},
    "/api/v1/users/me": {"get", "patch"},
    "/api/v1/users": {"get"},
    "/api/v1/conversations": {"get", "post"},
    "/api/v1/conversations/{conversation_id}": {"get", "patch"},
    "/api/v1/conversations/{conversation_id}/members": {"post"},
    "/api/v1/conversations/{conversation_id}/members/{user_id}": {"delete"},
    "/api/v1/conversations/{conversation_id}/messages": {"get", "post"},
    "/api/v1/conversations/{conversation_id}/messages/{message_id}": {"patch", "delete"},
    "/api/v1/conversations/{conversation_id}/read": {"post"},
    "/api/v1/attachments": {"post"},
    "/api/v1/attachments/{attachment_id}": {"get"},
    "/api/v1/search": {"get"},
    "/api/v1/devices": {"post"},
    "/api/v1/devices/{device_id}": {"delete"},
    "/api/v1/server/limits": {"get"},
}


@pytest.fixture
def schema() -> dict[str, Any]:
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return dict(json.loads(response.content))


def test_schema_is_valid_openapi_3_and_covers_the_contract(schema: dict[str, Any]) -> None:
    validate_schema(schema)  # type: ignore[no-untyped-call]

    assert schema["openapi"].startswith("3.")
    for path, methods in CONTRACT.items():
        assert methods <= set(schema["paths"][path]), path


def test_every_operation_documents_its_errors_with_the_error_body(schema: dict[str, Any]) -> None:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            errors = {code: r for code, r in operation["responses"].items() if code >= "400"}
            assert errors, f"{method} {path}"
            for response in errors.values():
                body = response["content"]["application/json"]
                assert body["schema"] == {"$ref": "#/components/schemas/Error"}
                assert body["examples"], f"{method} {path}"
            if operation.get("security") != [{}]:
                assert "401" in errors, f"{method} {path}"


def test_schema_has_examples_and_both_auth_schemes(schema: dict[str, Any]) -> None:
    send = schema["paths"]["/api/v1/conversations/{conversation_id}/messages"]["post"]

    assert send["requestBody"]["content"]["application/json"]["examples"]
    assert {"jwtAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"


def test_docs_page_loads_swagger_ui_from_our_own_static_files() -> None:
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in page
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs"):
        assert cdn not in page
    assert "<script>" not in page  # the init script is a same-origin file
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy
    script = APIClient().get("/api/docs/", {"script": ""})
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()


def test_server_limits_publish_the_enforced_settings(client_for: Client, settings: Any) -> None:
    settings.CHAT_MAX_UPLOAD_BYTES = 12345

    response = client_for().get("/api/v1/server/limits")

    assert response.status_code == 200
    limits = response.json()
    assert limits == server_limits()
    assert limits["max_upload_bytes"] == 12345
    assert limits["max_message_length"] == django_settings.CHAT_MAX_MESSAGE_LENGTH
    assert limits["max_group_members"] == django_settings.CHAT_MAX_GROUP_MEMBERS
    assert (limits["send_rate"], limits["send_burst"]) == (
        django_settings.CHAT_SEND_RATE,
        django_settings.CHAT_SEND_BURST,
    )
    assert limits["fetch_max_limit"] == django_settings.CHAT_FETCH_MAX_LIMIT
    assert limits["ws_max_frame_bytes"] == MAX_FRAME_BYTES
    rate, burst = django_settings.WS_FRAME_BUDGETS["status"]
    assert limits["ws_frame_budgets"]["status"] == {
        "rate": rate,
        "burst": burst,
        "frames": ["activity", "status.set"],
    }
    assert "message.send" not in str(limits["ws_frame_budgets"])
    assert set(limits) == set(s.LimitsSerializer().fields)


def keys_of(typed: Any) -> tuple[set[str], set[str]]:
    # events.py postpones annotations, so NotRequired shows only in the resolved hints.
    hints = get_type_hints(typed, include_extras=True)
    optional = {k for k, hint in hints.items() if get_origin(hint) is NotRequired}
    return set(hints) - optional, optional


def fields_of(serializer: serializers.Serializer[Any]) -> tuple[set[str], set[str]]:
    fields = serializer.fields
    return (
        {n for n, f in fields.items() if f.required is not False},
        {n for n, f in fields.items() if f.required is False},
    )


@pytest.mark.parametrize(
    ("payload", "serializer"),
    [
        (wire.MessagePayload, s.MessageSerializer()),
        (wire.AttachmentPayload, s.AttachmentSerializer()),
        (wire.SystemPayload, s.SystemSerializer()),
        (wire.MemberPayload, s.MemberSerializer()),
        (wire.ConversationPayload, s.ConversationDetailSerializer()),
    ],
    ids=lambda v: getattr(v, "__name__", type(v).__name__),
)
def test_documented_fields_are_the_payload_builders_fields(
    payload: Any, serializer: serializers.Serializer[Any]
) -> None:
    required, optional = keys_of(payload)
    doc_required, doc_optional = fields_of(serializer)
    if payload is wire.ConversationPayload:
        # `members` is documented as required on the detail answer, optional in general.
        doc_required.discard("members")
        doc_optional.add("members")

    assert (doc_required, doc_optional) == (required, optional)
