"""Errors the client raises: server `error` frames, lost connections, a stopped session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Error codes after which the same request may succeed if sent again later.
RETRYABLE_CODES = frozenset({"unavailable", "rate_limited"})
DEFAULT_RETRY_AFTER = 1.0  # seconds, for a `rate_limited` error without `retry_after`


class ChatError(Exception):
    """The server answered an `error` frame (`code` is the wire error code)."""

    def __init__(
        self,
        code: str,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        *,
        ref: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message or code
        self.details = dict(details or {})
        self.ref = ref
        self.retry_after = retry_after
        super().__init__(f"{code}: {self.message}")

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ChatError:
        """Build the error of an `error` frame."""
        retry_after = frame.get("retry_after")
        details = frame.get("details")
        return cls(
            str(frame.get("code") or "error"),
            str(frame.get("message") or ""),
            details if isinstance(details, Mapping) else None,
            ref=frame.get("ref") if isinstance(frame.get("ref"), str) else None,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )


class ConnectionLost(ChatError):
    """The connection dropped before the reply to a request arrived."""

    def __init__(self, message: str = "The connection was lost before the reply.") -> None:
        super().__init__("connection_lost", message)


class SessionClosed(ChatError):
    """The client stopped: `close()` was called, or the server closed with 4401 or 4409."""

    def __init__(self, close_code: int | None, message: str = "") -> None:
        self.close_code = close_code
        text = message or (
            "closed by the client" if close_code is None else f"closed by the server ({close_code})"
        )
        super().__init__("closed", text, {"close_code": close_code})
