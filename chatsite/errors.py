"""The base of every error a service may raise; transports render it in one place each."""

import math
from typing import Any


class DomainError(Exception):
    """A rule was broken; `code` is the wire error code, `http_status` its REST status."""

    code: str = "bad_request"
    http_status: int = 400
    default_message: str = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        """Return the error as the JSON-safe `{code, message, details}` object."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(DomainError):
    """A field is missing or has the wrong shape or value."""

    code = "bad_request"
    http_status = 400


class UnknownType(DomainError):
    """A WebSocket frame's `type` is not one the protocol knows."""

    code = "unknown_type"
    http_status = 400
    default_message = "Unknown frame type."


class InternalError(DomainError):
    """A bug on our side; the request was not carried out (and is logged)."""

    code = "internal_error"
    http_status = 500
    default_message = "Something went wrong on our side; the request was not carried out."


class Unavailable(DomainError):
    """A backing service (the database) is down or timed out; retry with the same ids."""

    code = "unavailable"
    http_status = 503
    default_message = "The service is temporarily unavailable; retry shortly."


class RateLimited(DomainError):
    """Too many calls in too short a time; retry after `retry_after` seconds."""

    code = "rate_limited"
    http_status = 429
    default_message = "Too many requests; slow down."

    def __init__(self, retry_after: float, message: str | None = None):
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


def in_minutes(seconds: float) -> str:
    """Return a wait as people say it: "1 minute", "15 minutes" (rounded up)."""
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


class RetryInMinutes(RateLimited):
    """A budget counted in minutes (logins, sign-ups): whole seconds, the wait in words."""

    template = "Too many attempts; try again in {wait}."

    def __init__(self, retry_after: float):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(seconds, self.template.format(wait=in_minutes(seconds)))
