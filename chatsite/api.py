"""The REST error format: every failure is `{"error": {code, message, details}}`."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
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
    response: Response | None = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        detail: Any = exc.detail
        details: dict[str, Any] = (
            {"fields": detail} if isinstance(detail, dict) else {"errors": detail}
        )
        first = next(iter(detail), None) if isinstance(detail, dict) else None
        if first is not None:
            details["field"] = first
        response.data = error_body(code, "The request is not valid.", details)
    else:
        response.data = error_body(code, str(exc.detail))
    return response
