"""OpenAPI documentation helpers: the error body, documented error responses, the JWT scheme."""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response


class ErrorDetailSerializer(serializers.Serializer[Any]):
    """What went wrong: a wire error code (as on the WebSocket), a message, details."""

    code = serializers.CharField(help_text="The wire error code, e.g. `forbidden`.")
    message = serializers.CharField(help_text="A human-readable explanation.")
    details = serializers.DictField(
        required=False,
        help_text="Optional facts: `field` (the bad field), `retry_after` (s), limits.",
    )


class ErrorSerializer(serializers.Serializer[Any]):
    """Every REST failure: `{"error": {code, message, details}}`."""

    error = ErrorDetailSerializer()


_ERRORS: dict[int, tuple[str, str, str, dict[str, Any] | None]] = {
    400: (
        "A field is missing or has the wrong shape or value (`bad_request`, "
        "`empty_message`); `details.field` names it.",
        "bad_request",
        "The request is not valid.",
        {"field": "body"},
    ),
    401: (
        "No credentials, or they are wrong, expired or revoked (`unauthenticated`).",
        "unauthenticated",
        "Authentication credentials were not provided.",
        None,
    ),
    403: (
        "Not a member, no such conversation (never said which), a missing role, or a "
        "session request without its CSRF token (`forbidden`).",
        "forbidden",
        "You are not a member of this conversation.",
        None,
    ),
    404: (
        "No such object among those this user may see, or an id in the path that is not "
        "a number (`not_found`).",
        "not_found",
        "No such message in this conversation.",
        None,
    ),
    409: (
        "A `client_msg_id` reused for another message, or a group at its member "
        "limit (`conflict`, `group_full`).",
        "conflict",
        "This client_msg_id was already used for a different message.",
        {"client_msg_id": "6f0c2b4e-8a51-4c55-9b5a-1d8e7f3a9c01"},
    ),
    413: (
        "The body or upload is over the limit (`message_too_long`, `payload_too_large`); "
        "`GET /server/limits` lists the limits.",
        "payload_too_large",
        "The request body is too large.",
        {"max_bytes": 26214400},
    ),
    429: (
        "Too many requests (`rate_limited`); retry after the `Retry-After` header's "
        "seconds (also `details.retry_after`), with the same `client_msg_id` for sends.",
        "rate_limited",
        "Too many requests; slow down.",
        {"retry_after": 2},
    ),
    503: (
        "The database is unavailable or timed out (`unavailable`); retry shortly.",
        "unavailable",
        "The service is temporarily unavailable; retry shortly.",
        None,
    ),
}

# Every authenticated endpoint may answer these.
AUTHENTICATED = (401, 429, 503)


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """Return documented error responses (with an example each) for the given statuses."""
    wanted = sorted({*statuses})
    responses: dict[int, OpenApiResponse] = {}
    for status in wanted:
        description, code, message, details = _ERRORS[status]
        body: dict[str, Any] = {"code": code, "message": message}
        if details:
            body["details"] = details
        responses[status] = OpenApiResponse(
            ErrorSerializer,
            description=description,
            examples=[OpenApiExample(code, value={"error": body}, status_codes=[str(status)])],
        )
    return responses


class ChatJWTScheme(SimpleJWTScheme):  # type: ignore[no-untyped-call]
    """Document `accounts.authentication.JWTAuthentication` as the Bearer JWT scheme."""

    target_class = "accounts.authentication.JWTAuthentication"
    name = "jwtAuth"


class PresenceEntrySerializer(serializers.Serializer[Any]):
    """One user's derived presence, as in `presence.snapshot`."""

    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=["online", "away", "busy", "offline"])
    last_seen = serializers.DateTimeField(allow_null=True)


class PresenceListSerializer(serializers.Serializer[Any]):
    """The presence of the users asked for, in the order asked."""

    users = PresenceEntrySerializer(many=True)


class PresenceListSchema(OpenApiViewExtension):  # type: ignore[no-untyped-call]
    """Document `GET /presence` (presence/api.py) without changing its view."""

    target_class = "presence.api.PresenceListApi"

    def view_replacement(self) -> type[Any]:
        """Return the view with its schema: the `users` parameter, answer and errors."""
        # drf-spectacular has replaced the dotted path by the class itself by now.
        base: Any = self.target_class

        class Documented(base):  # type: ignore[misc]
            @extend_schema(
                operation_id="presence_list",
                tags=["presence"],
                parameters=[
                    OpenApiParameter(
                        "users",
                        str,
                        required=True,
                        description="Comma-separated user ids (at most 1,000).",
                        examples=[OpenApiExample("three users", value="1,2,3")],
                    )
                ],
                responses={200: PresenceListSerializer, **error_responses(400, *AUTHENTICATED)},
            )
            def get(self, request: Request) -> Response:
                return super().get(request)  # type: ignore[no-any-return]

        return Documented


# Swagger UI's own stylesheet sets inline styles; scripts stay same-origin only (the init
# script is fetched from this view with `?script`, not inlined).
DOCS_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI from our static files, with no inline script, under its own CSP."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Answer the page (or, with `?script`, its init script) with the docs policy."""
        response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        response["Content-Security-Policy"] = DOCS_POLICY
        return response
