"""Register this install as a push target (`POST /api/v1/devices`), standard library only.

A mobile app sends its FCM registration token (`platform="fcm"`) or its APNs device
token (`platform="apns"`, 64 hex digits) once it has one and again whenever the OS
hands it a new one; a browser sends its Web Push subscription (`platform="webpush"`).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

from chatclient.auth import _rest_error
from chatclient.errors import ChatError

Platform = Literal["fcm", "apns", "webpush"]


async def register_device(
    http_base: str,
    access_token: str | Mapping[str, str],
    platform: Platform,
    *,
    token: str | None = None,
    subscription: Mapping[str, Any] | None = None,
    name: str = "",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Register (or refresh) a push target of the signed-in user; return the device.

    `access_token` is the access token or the `{access, refresh}` pair of
    `obtain_token`. The answer is `{id, platform, name, created_at, last_used_at}` plus
    `created`: True when the target is new to this user (201), False when it was
    already theirs (200; its name is updated). Raise `ChatError` with the REST error's
    code (`bad_request` for a malformed token) or `unavailable`.
    """
    url = http_base.rstrip("/") + "/api/v1/devices"
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"http_base must be an http(s) URL, not {http_base!r}")
    if (platform == "webpush") != (subscription is not None) or (
        platform != "webpush" and not token
    ):
        raise ValueError("fcm and apns need a token; webpush needs a subscription")
    access = access_token if isinstance(access_token, str) else access_token["access"]
    body: dict[str, Any] = {"platform": platform, "name": name}
    if platform == "webpush":
        body["subscription"] = dict(subscription or {})
    else:
        body["token"] = token
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {access}",
        },
    )
    status, device = await asyncio.to_thread(_post_status, request, timeout)
    if not isinstance(device.get("id"), int):
        raise ChatError("bad_response", "The device answer has no id.")
    return {**device, "created": status == 201}


def _post_status(request: urllib.request.Request, timeout: float) -> tuple[int, dict[str, Any]]:
    """Send `request`; return its status and JSON object (REST errors raise ChatError)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return response.status, answer
    except urllib.error.HTTPError as exc:
        raise _rest_error(exc) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise ChatError("unavailable", f"Cannot reach {request.full_url}: {exc}") from exc
