"""REST plumbing shared by every app's API: throttles, a bounded JSON parser, cursors, errors."""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.utils.urls import remove_query_param, replace_query_param

from chatsite import metrics, ratelimit
from chatsite.errors import BadRequest, DomainError, RateLimited
from chatsite.limits import MAX_ID, MAX_JSON_DEPTH
from chatsite.wire import json_too_deep


class AnyContent(BaseContentNegotiation):
    """Serve files whatever the Accept header says; errors still render as JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


class TooManyRequests(RateLimited):
    """A per-user request budget is spent; retry after `retry_after` (whole) seconds."""

    def __init__(self, retry_after: float, message: str | None = None):
        super().__init__(max(1, math.ceil(retry_after)), message)


class PayloadTooLarge(DomainError):
    """The request body is larger than this endpoint accepts."""

    code = "payload_too_large"
    http_status = 413
    default_message = "The request body is too large."


# --- throttles -------------------------------------------------------------------------


class UserThrottle(BaseThrottle):
    """A token bucket per signed-in user and scope, shared by all gateways through Redis.

    Anonymous requests pass: the endpoints open to them (token, register) have their
    own limits in their services (`accounts.login`, `accounts.services`). Over budget,
    this raises `rate_limited` with `retry_after` (rendered with a `Retry-After` header
    by `chatsite.api.exception_handler`).
    """

    scope: metrics.RateLimitKind = "api"
    rate_setting = "API_THROTTLE_RATE"
    burst_setting = "API_THROTTLE_BURST"

    def bucket(self, request: Request) -> str | None:
        """Return the bucket's key for this request, or None to let it through."""
        user = request.user
        if user is None or not user.is_authenticated:
            return None
        return f"user:{user.pk}"

    def limits(self) -> tuple[float, float]:
        """Return the refill rate per second and the burst, read from settings now."""
        return float(getattr(settings, self.rate_setting)), float(
            getattr(settings, self.burst_setting)
        )

    def allow_request(self, request: Request, view: Any) -> bool:
        """Take a token from the bucket, or raise TooManyRequests."""
        key = self.bucket(request)
        if key is None:
            return True
        rate, burst = self.limits()
        verdict = ratelimit.take(f"api:{self.scope}:{key}", rate=rate, burst=burst)
        if not verdict.allowed:
            metrics.count_rate_limited(self.scope)
            raise TooManyRequests(verdict.retry_after)
        return True


class UploadThrottle(UserThrottle):
    """Uploads per user (on top of the general budget)."""

    scope = "upload"
    rate_setting = "API_UPLOAD_RATE"
    burst_setting = "API_UPLOAD_BURST"


class SearchThrottle(UserThrottle):
    """Searches per user (on top of the general budget)."""

    scope = "search"
    rate_setting = "API_SEARCH_RATE"
    burst_setting = "API_SEARCH_BURST"


# --- parsing ---------------------------------------------------------------------------


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, refusing bodies over `API_MAX_JSON_BYTES` before reading them whole.

    A body nested deeper than `MAX_JSON_DEPTH` is refused before decoding (the decoder
    would recurse once per level), as WebSocket frames are (`messaging.frames`).
    """

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Read at most the limit (plus one byte to notice more), then parse as JSON."""
        limit = int(settings.API_MAX_JSON_BYTES)
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and str(declared).isdigit() and int(declared) > limit:
            raise PayloadTooLarge(details={"max_bytes": limit})
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(details={"max_bytes": limit})
        if json_too_deep(data.decode("latin-1")):
            raise BadRequest(
                f"The request body nests arrays and objects more than {MAX_JSON_DEPTH} deep.",
                details={"max_depth": MAX_JSON_DEPTH},
            )
        try:
            return super().parse(io.BytesIO(data), media_type, parser_context)
        except ParseError as exc:
            # DRF's message is "JSON parse error - <the decoder's>": say it for a person.
            reason = str(exc.__context__ or exc.detail)
            raise ParseError(
                {"message": "The request body is not valid JSON.", "reason": reason}
            ) from exc


# --- pages -----------------------------------------------------------------------------


def page_size(request: Request, *, default: int, maximum: int) -> int:
    """Return the `limit` query parameter (1..maximum), or `default` when absent."""
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise BadRequest(
            f"limit must be an integer between 1 and {maximum}.", details={"field": "limit"}
        )
    return int(raw)


def encode_cursor(position: dict[str, Any]) -> str:
    """Return an opaque cursor for a position in a list."""
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(request: Request) -> dict[str, Any] | None:
    """Return the position in the request's `cursor` parameter, None if absent."""
    raw = request.query_params.get("cursor")
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 1024:
            raise ValueError(raw)
        position = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not valid.", details={"field": "cursor"}) from exc
    if not isinstance(position, dict) or not all(map(_storable, position.values())):
        raise BadRequest("cursor is not valid.", details={"field": "cursor"})
    return position


def _storable(value: object) -> bool:
    """Return whether a cursor value can be sent to PostgreSQL as it is."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -(MAX_ID + 1) <= value <= MAX_ID
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    return False


def next_url(request: Request, position: dict[str, Any] | None) -> str | None:
    """Return the URL of the page after `position` (this request's URL, new cursor)."""
    if position is None:
        return None
    url = request.build_absolute_uri()
    return replace_query_param(url, "cursor", encode_cursor(position))


def first_page_url(request: Request) -> str:
    """Return this request's URL without a cursor (for documentation and tests)."""
    return remove_query_param(request.build_absolute_uri(), "cursor")


# --- Django-level errors under /api/ ---------------------------------------------------


def _error_body(code: str, message: str) -> dict[str, Any]:
    # Imported here: chatsite.api imports DRF's views, which import this module (the
    # parser and throttles named in REST_FRAMEWORK) while it is still loading.
    from chatsite.api import error_body

    return error_body(code, message)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer a request Django refused (its form limits, a bad Host): JSON under /api/."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    from chatsite.api import form_limit_error  # see _error_body

    over = form_limit_error(exception)
    if over is not None:
        over_status, body = over
        return JsonResponse(body, status=over_status)
    return JsonResponse(_error_body("bad_request", "The request is not valid."), status=400)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Answer an unknown URL: the JSON error under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(_error_body("not_found", "No such endpoint."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Answer an unhandled error: the JSON error under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            _error_body(
                "internal_error",
                "Something went wrong on our side; the request was not carried out.",
            ),
            status=500,
        )
    return defaults.server_error(request)


# --- strict JSON fields ----------------------------------------------------------------
# DRF turns 0 into "0" for a CharField, "1" into 1 for an IntegerField and 0 into False
# for a BooleanField. JSON bodies carry real types, so these fields take only the type
# the schema names (query parameters, which are always text, use DRF's own fields).


class StrictCharField(serializers.CharField):
    """A JSON string, and nothing else."""

    def to_internal_value(self, data: Any) -> str:
        """Refuse anything but a string."""
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (not a boolean, a float or a numeric string)."""

    def to_internal_value(self, data: Any) -> int:
        """Refuse anything but an integer."""
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean (not 0, 1 or "true")."""

    def to_internal_value(self, data: Any) -> bool:
        """Refuse anything but true or false."""
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictUUIDField(serializers.UUIDField):
    """A UUID written as a JSON string (not an integer)."""

    def to_internal_value(self, data: Any) -> Any:
        """Refuse anything but a string."""
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)
