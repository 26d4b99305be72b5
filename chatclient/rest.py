"""Calls of the REST API for the reference client, standard library only.

`_call` sends JSON; `_upload` sends one file as multipart (with form fields). Both
authenticate with a Bearer access token (a string, or the pair `obtain_token` returns)
and raise `ChatError` with the server's error code.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

from chatclient.auth import _rest_error
from chatclient.errors import ChatError

Token = str | Mapping[str, str]


def _request(
    http_base: str,
    access_token: Token,
    method: str,
    path: str,
    data: bytes | None,
    content_type: str,
) -> urllib.request.Request:
    url = http_base.rstrip("/") + path
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"http_base must be an http(s) URL, not {http_base!r}")
    access = access_token if isinstance(access_token, str) else access_token["access"]
    return urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=data,
        method=method,
        headers={
            "Content-Type": content_type,
            "Accept": "application/json",
            "Authorization": f"Bearer {access}",
        },
    )


async def _call(
    http_base: str,
    access_token: Token,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    data = None if body is None else json.dumps(dict(body)).encode()
    request = _request(http_base, access_token, method, path, data, "application/json")
    return await asyncio.to_thread(_send, request, timeout)


async def _upload(
    http_base: str,
    access_token: Token,
    method: str,
    path: str,
    content: bytes,
    filename: str,
    fields: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send `content` as the multipart field `file` (named `filename`), with `fields`."""
    boundary = uuid.uuid4().hex
    safe_name = "".join(c for c in filename if c not in '"\r\n') or "file"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    ]
    parts.append(
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    body = b"".join([*parts, content, f"\r\n--{boundary}--\r\n".encode()])
    request = _request(
        http_base, access_token, method, path, body, f"multipart/form-data; boundary={boundary}"
    )
    return await asyncio.to_thread(_send, request, timeout)


def _send(request: urllib.request.Request, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
            answer: dict[str, Any] = json.loads(raw) if raw else {}
            return answer
    except urllib.error.HTTPError as exc:
        raise _rest_error(exc) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ChatError("unavailable", f"Cannot reach {request.full_url}: {exc}") from exc
