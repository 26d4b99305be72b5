"""APNs over HTTP/2 with token auth (an ES256 provider JWT).

One HTTP/2 connection per worker process, reused for every push (httpx with
`http2=True` keeps one connection per origin and multiplexes on it). The provider JWT
is made once and renewed every `JWT_RENEW` seconds (Apple refuses one older than an
hour) or when APNs answers 403 `ExpiredProviderToken` (then the push is tried once more
at once). The payload is at most 4 KB: the preview is cut until it fits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from django.conf import settings

from messaging.models import Device
from messaging.push import PushResult
from messaging.push.webpush import _retry_after

logger = logging.getLogger(__name__)

MAX_PAYLOAD = 4096
# Renewed well before Apple's one hour, and no more often than every 20 minutes.
JWT_RENEW = 50 * 60
GONE_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"})


class _ProcessState:
    """The HTTP/2 client and the provider JWT of this worker process.

    The client is httpx's asyncio one, on an event loop of its own thread: the sync
    client, used from several threads at once, can send a new stream's HEADERS after a
    later stream's (h2 `StreamIDTooLowError` at the server: a PROTOCOL_ERROR that ends
    the connection). On one loop, streams open in order and run side by side on the
    one connection; sending threads wait for their own answer.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: httpx.AsyncClient | None = None
        self.client_key: tuple[str, float] | None = None
        self.token: tuple[tuple[str, str, str], str, float] | None = None


_state = _ProcessState()
_state_lock = threading.Lock()


def _here() -> _ProcessState:
    global _state  # one state per process, replaced after a fork
    if _state.pid != os.getpid():
        _state = _ProcessState()
    return _state


def _loop() -> asyncio.AbstractEventLoop:
    with _state_lock:
        state = _here()
        if state.loop is None:
            state.loop = asyncio.new_event_loop()
            threading.Thread(target=state.loop.run_forever, name="apns", daemon=True).start()
        return state.loop


def _client(ca_file: str) -> httpx.AsyncClient:
    """Return the process's client (on its loop: call from a coroutine running there)."""
    state = _here()
    key = (ca_file, settings.PUSH_TIMEOUT)
    if state.client is None or state.client_key != key:
        verify: ssl.SSLContext | bool = True
        if ca_file:
            verify = ssl.create_default_context(cafile=ca_file)
        state.client = httpx.AsyncClient(
            http2=True,
            verify=verify,
            timeout=httpx.Timeout(settings.PUSH_TIMEOUT),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        state.client_key = key
    return state.client


def apns_body(payload: dict[str, Any], *, thread: str, limit: int = MAX_PAYLOAD) -> bytes:
    """Return the APNs JSON of a push, at most `limit` bytes (the preview cut to fit)."""
    if payload.get("type") in ("message", "security"):
        extra = {k: v for k, v in payload.items() if k not in ("title", "body", "badge")}
        aps: dict[str, Any] = {
            "alert": {"title": payload.get("title", ""), "body": payload.get("body", "")},
            "sound": "default",
            "thread-id": thread,
            "mutable-content": 1,
        }
        if payload.get("type") == "message":
            aps["badge"] = int(payload.get("badge", payload.get("unread", 0)))
    else:
        extra = dict(payload)
        aps = {"content-available": 1, "thread-id": thread}

    def encode(text: str) -> bytes:
        if "alert" in aps:
            aps["alert"]["body"] = text
        return json.dumps({"aps": aps, **extra}, ensure_ascii=False).encode()

    text = str(aps["alert"]["body"]) if "alert" in aps else ""
    body = encode(text)
    if len(body) <= limit or not text:
        return body
    low, high = 0, len(text)  # the longest cut of the preview that fits
    while low < high:
        middle = (low + high + 1) // 2
        if len(encode(text[:middle] + "…")) <= limit:
            low = middle
        else:
            high = middle - 1
    return encode(text[:low] + "…")


@dataclass(frozen=True)
class ApnsBackend:
    """Send APNs notifications with the token-auth key of the settings."""

    endpoint: str
    key_file: str
    key_id: str
    team_id: str
    topic: str
    ca_file: str

    @classmethod
    def from_settings(cls) -> ApnsBackend:
        """Build the backend from the APNS_* settings."""
        return cls(
            settings.APNS_ENDPOINT,
            settings.APNS_KEY_FILE,
            settings.APNS_KEY_ID,
            settings.APNS_TEAM_ID,
            settings.APNS_TOPIC,
            settings.APNS_CA_FILE,
        )

    def problem(self) -> str | None:
        """Say what is missing to send (a setting, or a key we cannot sign with)."""
        for name in ("key_file", "key_id", "team_id", "topic"):
            if not getattr(self, name):
                return f"APNS_{name.upper()} is not set"
        try:
            self._jwt()
        except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
            return f"APNS_KEY_FILE is not a usable .p8 key: {exc}"
        return None

    def _jwt(self, *, fresh: bool = False) -> str:
        state = _here()
        key = (self.key_file, self.key_id, self.team_id)
        now = time.time()
        if (
            state.token is not None
            and not fresh
            and state.token[0] == key
            and now - state.token[2] < JWT_RENEW
        ):
            return state.token[1]
        with open(self.key_file, encoding="utf-8") as handle:
            private_key = handle.read()
        token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            private_key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        state.token = (key, token, now)
        return token

    def send(
        self, device: Device, payload: dict[str, Any], *, topic: str, urgency: str, ttl: int
    ) -> PushResult:
        """POST one notification to the device token over the process's HTTP/2 connection."""
        problem = self.problem()
        if problem:
            return PushResult("error", problem)
        alert = payload.get("type") in ("message", "security")
        body = apns_body(payload, thread=topic)
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "alert" if alert else "background",
            "apns-priority": "10" if alert and urgency == "high" else "5",
            "apns-collapse-id": topic[:64],
            "apns-expiration": str(int(time.time()) + ttl),
            "content-type": "application/json",
        }
        url = f"{self.endpoint}/3/device/{device.token}"
        try:
            answer = self._post(url, body, headers, fresh=False)
            reason = _reason(answer)
            if answer.status_code == 403 and reason == "ExpiredProviderToken":
                answer = self._post(url, body, headers, fresh=True)
        except httpx.HTTPError as exc:
            return PushResult("retry", f"unreachable: {type(exc).__name__}: {exc}")
        status = answer.status_code
        reason = _reason(answer)
        label = f"{status} {reason}".strip()
        if status == 200:
            return PushResult("sent", label)
        if status == 410 or reason in GONE_REASONS:
            return PushResult("gone", label)
        if status in (429, 503) or status >= 500:
            return PushResult("retry", label, _retry_after(answer.headers.get("retry-after")))
        return PushResult("error", label)

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], *, fresh: bool
    ) -> httpx.Response:
        token = self._jwt(fresh=fresh)
        signed = {**headers, "authorization": f"bearer {token}"}

        async def post() -> httpx.Response:
            return await _client(self.ca_file).post(url, content=body, headers=signed)

        future = asyncio.run_coroutine_threadsafe(post(), _loop())
        try:
            # The client's own timeout ends the request first; this only guards the wait.
            return future.result(timeout=settings.PUSH_TIMEOUT * 3 + 5)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise httpx.TimeoutException("no answer from the APNs client") from exc


def _reason(answer: httpx.Response) -> str:
    """Return the `reason` of an APNs error answer, or ''."""
    if not answer.content:
        return ""
    try:
        data = answer.json()
    except ValueError:
        return ""
    return str(data.get("reason", "")) if isinstance(data, dict) else ""
