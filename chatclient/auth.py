"""Handshake credentials: obtain a JWT pair over REST and turn it into handshake headers."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from chatclient.errors import ChatError

Auth = Callable[[], Awaitable[dict[str, str]]]


async def obtain_token(
    http_base: str, username: str, password: str, *, timeout: float = 10.0
) -> dict[str, str]:
    """POST the credentials to `{http_base}/api/v1/auth/token`; return `{access, refresh}`.

    Raise `ChatError` with the REST error's code (e.g. `bad_request`, `rate_limited`)
    when the server refuses, and `ChatError("unavailable")` when it cannot be reached.
    """
    url = http_base.rstrip("/") + "/api/v1/auth/token"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"http_base must be an http(s) URL, not {http_base!r}")
    payload = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    body = await asyncio.to_thread(_post, request, timeout)
    access, refresh = body.get("access"), body.get("refresh")
    if not isinstance(access, str) or not isinstance(refresh, str):
        raise ChatError("bad_response", "The token answer has no access/refresh pair.")
    return {"access": access, "refresh": refresh}


def _post(request: urllib.request.Request, timeout: float) -> dict[str, Any]:
    """Send `request` and return its JSON object, or raise ChatError from the REST error."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise _rest_error(exc) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ChatError("unavailable", f"Cannot reach {request.full_url}: {exc}") from exc


def _rest_error(exc: urllib.error.HTTPError) -> ChatError:
    """Build a ChatError from a REST error answer `{"error": {code, message, details}}`."""
    try:
        error = json.loads(exc.read()).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    retry_after = exc.headers.get("Retry-After") if exc.headers else None
    return ChatError(
        str(error.get("code") or f"http_{exc.code}"),
        str(error.get("message") or exc.reason),
        error.get("details") if isinstance(error.get("details"), Mapping) else None,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def bearer_auth(token: str | Mapping[str, str]) -> Auth:
    """Return an auth callable that sends `Authorization: Bearer <access token>`.

    `token` is the access token, or the `{access, refresh}` pair from `obtain_token`.
    """
    access = token if isinstance(token, str) else token["access"]

    async def auth() -> dict[str, str]:
        return {"Authorization": f"Bearer {access}"}

    return auth
