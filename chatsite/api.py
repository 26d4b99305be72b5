"""The REST error format: every failure is `{"error": {code, message, details}}`."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from chatsite.errors import DomainError

logger = logging.getLogger(__name__)

_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "bad_request",
    exceptions.ValidationError: "bad_request",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the JSON error body."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render domain, DRF and database errors in the one REST error format."""
    if isinstance(exc, DomainError):
        domain = Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
        retry_after = exc.details.get("retry_after")
        if retry_after is not None:
            domain["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
        return domain
    if isinstance(exc, OperationalError | InterfaceError) or type(exc) is DatabaseError:
        logger.warning("database unavailable: %r", exc)
        return Response(
            error_body("unavailable", "The service is temporarily unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    over = form_limit_error(exc)
    if over is not None:
        # Where Django would have logged it, had it reached Django's handler.
        logging.getLogger(f"django.security.{type(exc).__name__}").warning("%s", exc)
        over_status, over_body = over
        return Response(over_body, status=over_status)
    # As DRF does inside its own handler, so that these get the error format too.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response: Response | None = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(code, *_validation_message(exc.detail))
    else:
        response.data = error_body(code, *_message(exc))
    return response


def form_limit_error(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    """Return the status and body for a request over Django's form limits, else None.

    Django raises these while it parses a multipart or form body; they are not DRF's,
    so they would otherwise end as Django's HTML 400 page.
    """
    if isinstance(exc, TooManyFieldsSent):
        most = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        body = error_body(
            "bad_request", f"The form has more than {most} fields.", {"max_fields": most}
        )
        return 400, body
    if isinstance(exc, TooManyFilesSent):
        most = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        body = error_body(
            "bad_request", f"The form has more than {most} files.", {"max_files": most}
        )
        return 400, body
    if isinstance(exc, RequestDataTooBig):
        most = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        message = f"The form's fields (files aside) are larger than {most} bytes."
        return 413, error_body("payload_too_large", message, {"max_bytes": most})
    return None


def _sentence(text: object) -> str:
    """Return `text` as a sentence: stripped, ending in a full stop."""
    sentence = str(text).strip()
    return sentence if sentence.endswith((".", "!", "?")) else f"{sentence}."


def _message(exc: exceptions.APIException) -> tuple[str, dict[str, Any]]:
    """Return a DRF error's message for a person, and its structured details."""
    detail: Any = exc.detail
    if isinstance(detail, dict):
        # `{"message": ..., **details}` (ours), or simplejwt's `{"detail", "code", ...}`.
        message = detail.get("message") or detail.get("detail") or exc.default_detail
        rest = {k: v for k, v in detail.items() if k not in {"message", "detail"}}
        return _sentence(message), rest
    if isinstance(detail, list):
        return _sentence(detail[0] if detail else exc.default_detail), {}
    text = str(detail)
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        seconds = max(1, math.ceil(wait))
        return f"Too many requests; try again in {seconds} seconds.", {"retry_after": seconds}
    if isinstance(exc, exceptions.PermissionDenied) and text.startswith(_CSRF_PREFIX):
        return (
            "The CSRF check failed: send the csrftoken cookie's value in an X-CSRFToken header.",
            {"csrf": text.removeprefix(_CSRF_PREFIX)},
        )
    if isinstance(exc, exceptions.ParseError):
        return "The request body could not be read.", {"reason": text}
    return _sentence(text), {}


# DRF's SessionAuthentication refuses a write without its CSRF token with this prefix.
_CSRF_PREFIX = "CSRF Failed: "


def _validation_message(detail: Any) -> tuple[str, dict[str, Any]]:
    """Return a serializer error's message (the first problem, by field) and its details."""
    details: dict[str, Any] = {"fields": detail} if isinstance(detail, dict) else {"errors": detail}
    path, text = _first_error(detail)
    if isinstance(detail, dict) and path:
        details["field"] = path[0]
    where = ".".join(p for p in path if p != api_settings.NON_FIELD_ERRORS_KEY)
    message = f"{where}: {text}" if where else text
    return _sentence(message), details


def _first_error(detail: Any) -> tuple[list[str], str]:
    """Return the path to the first error in a serializer's nested errors, and its text."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            path, text = _first_error(value)
            return [str(key), *path], text
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if value:  # a list of items has {} for the items without errors
                path, text = _first_error(value)
                return ([str(index), *path] if isinstance(value, dict) else path), text
    if detail and not isinstance(detail, dict | list):
        return [], str(detail)
    return [], "The request is not valid."
