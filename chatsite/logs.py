"""Logs: one JSON object per line (LOG_FORMAT=json), a correlation id, an HTTP access log.

The correlation id (`cid`) names one piece of work across processes: an HTTP request
(taken from `X-Request-ID` when a proxy set one, else made here, and echoed back), or
one WebSocket frame. It lives in a context variable, so every line logged while the
work runs carries it (database threads copy the caller's context). A message's events
carry it beside the frame on the channel layer, so the receiver's gateway logs the same
`cid` when it forwards the message: with `LOG_TRACE=INFO` one message can be followed
from the sender's frame through the service to every gateway that delivered it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# Lines that follow one message (frame in, stored, forwarded): off unless LOG_TRACE=INFO.
trace = logging.getLogger("chat.trace")
access = logging.getLogger("chat.access")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Attributes every LogRecord has; anything else was passed in `extra` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "cid",
}


@contextlib.contextmanager
def correlated(cid: str | None) -> Iterator[None]:
    """Run the block as part of the work `cid` names (one send of a batch, say)."""
    token = correlation_id.set(cid)
    try:
        yield
    finally:
        correlation_id.reset(token)


def new_id() -> str:
    """Return a fresh correlation id (16 hex digits).

    From `random`, not `uuid4`: an id only has to differ from the others in the logs,
    and a gateway makes one per frame (`uuid4` read the kernel's random source each
    time: about 3% of an idle gateway's time). The module reseeds in a forked child, so
    worker processes do not repeat each other's ids.
    """
    return f"{random.getrandbits(64):016x}"


class CorrelationFilter(logging.Filter):
    """Give every record the current correlation id as `cid` (`-` outside any work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add `cid` unless the caller set one in `extra`."""
        if not getattr(record, "cid", None):
            record.cid = correlation_id.get() or "-"
        return True


class DropBeatTicks(logging.Filter):
    """Drop beat's line for every task it sends (the notification tick: one a second)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep everything but `Scheduler: Sending due task ...`."""
        return not str(record.msg).startswith("Scheduler: Sending due task")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, pid, message, cid, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the line (exceptions as one `exc` string, never several lines)."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
            "cid": getattr(record, "cid", None) or correlation_id.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class RequestLogMiddleware:
    """Give each HTTP request a correlation id and write one access line per request.

    The line has the method, the path without its query string (`?ticket=` and search
    terms must never reach a log), the status, the time taken and the `cid`; the
    response carries the id in `X-Request-ID`.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        """Serve the request (sync or async, as the stack is)."""
        if self.is_async:
            return self._acall(request)
        started, cid, token = self._begin(request)
        try:
            response = self.get_response(request)
        finally:
            correlation_id.reset(token)
        return self._finish(request, response, started, cid)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started, cid, token = self._begin(request)
        try:
            handler: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
            response = await handler(request)
        finally:
            correlation_id.reset(token)
        return self._finish(request, response, started, cid)

    def _begin(self, request: HttpRequest) -> tuple[float, str, Token[str | None]]:
        given = request.headers.get("X-Request-ID", "")
        cid = given if REQUEST_ID_RE.match(given) else new_id()
        return time.monotonic(), cid, correlation_id.set(cid)

    def _finish(
        self, request: HttpRequest, response: HttpResponse, started: float, cid: str
    ) -> HttpResponse:
        response["X-Request-ID"] = cid
        if access.isEnabledFor(logging.INFO):
            access.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "cid": cid,
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        return response
