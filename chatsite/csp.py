"""Content-Security-Policy on every HTML response: scripts and styles from our origin only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

Handler = Callable[[HttpRequest], Any]

# No 'unsafe-inline' anywhere: pages load ES modules from /static/ and carry data in
# <script type="application/json"> blocks, which are data, not scripts. `img-src blob:`
# lets the composer preview an image before it is uploaded.
_POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "media-src 'self' blob:",
    "worker-src 'self'",
    "manifest-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)


def policy_for(request: HttpRequest) -> str:
    """Return the policy for a page of this request's host (the WebSocket is same-host)."""
    # 'self' covers ws:/wss: to the same host in CSP Level 3, but not in every browser
    # still in use; name the socket's origin explicitly rather than allowing any ws: host.
    # get_host() is checked against ALLOWED_HOSTS, so no header can be injected through it.
    try:
        host = request.get_host()
    except DisallowedHost:
        return "; ".join((*_POLICY, "connect-src 'self'"))
    return "; ".join((*_POLICY, f"connect-src 'self' ws://{host} wss://{host}"))


def _add_policy(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    content_type = response.get("Content-Type", "")
    if content_type.startswith("text/html") and "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = policy_for(request)
    return response


@sync_and_async_middleware
def content_security_policy(get_response: Handler) -> Handler:
    """Add the policy to every HTML response that does not set its own."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponseBase:
            response = await get_response(request)
            return _add_policy(request, response)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _add_policy(request, get_response(request))

    return middleware
