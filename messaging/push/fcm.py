"""FCM HTTP v1: OAuth 2 from a service account, then one POST per message.

The access token comes from the service account's `token_uri` (an RS256 JWT assertion,
RFC 7523) and is cached per worker process until shortly before it expires. Requests go
through one pooled httpx client per worker process. The endpoint and the credentials
are settings (`FCM_ENDPOINT`, `FCM_CREDENTIALS_FILE`), so tests use a local server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from messaging.models import Device
from messaging.push import PushResult
from messaging.push.webpush import _retry_after

logger = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
ASSERTION_LIFETIME = 3600
# A cached token is used until this many seconds before it expires.
TOKEN_MARGIN = 60
_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FIELDS = ("project_id", "client_email", "private_key", "token_uri")


class _ProcessState:
    """The HTTP client and the tokens of this worker process (a fork starts afresh)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.client: httpx.Client | None = None
        self.tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self.accounts: dict[str, tuple[int, dict[str, Any]]] = {}


_state = _ProcessState()


def _here() -> _ProcessState:
    global _state  # one state per process, replaced after a fork
    if _state.pid != os.getpid():
        _state = _ProcessState()
    return _state


_client_lock = threading.Lock()


def _client() -> httpx.Client:
    with _client_lock:  # sends run on several threads (`push.send_all`): one client
        return _make_client()


def _make_client() -> httpx.Client:
    state = _here()
    if state.client is None:
        timeout = httpx.Timeout(settings.PUSH_TIMEOUT)
        state.client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=10),
        )
    return state.client


def _load(path: str) -> dict[str, Any]:
    """Return the service account of `path`, its key parsed (cached per process and mtime).

    Parsing an RSA key checks it, which costs tens of milliseconds: once, not per push.
    """
    state = _here()
    mtime = os.stat(path).st_mtime_ns
    cached = state.accounts.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [f for f in _FIELDS if not data.get(f)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private_key is not an RSA key")
    data["key"] = key
    state.accounts[path] = (mtime, data)
    return data


def data_of(payload: dict[str, Any]) -> dict[str, str]:
    """Return a payload as FCM `data`: every value a string (objects as JSON)."""
    return {
        key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for key, value in payload.items()
    }


@dataclass(frozen=True)
class FcmBackend:
    """Send FCM messages with the service account of the settings."""

    credentials_file: str
    endpoint: str

    @classmethod
    def from_settings(cls) -> FcmBackend:
        """Build the backend from FCM_CREDENTIALS_FILE and FCM_ENDPOINT."""
        return cls(settings.FCM_CREDENTIALS_FILE, settings.FCM_ENDPOINT)

    def problem(self) -> str | None:
        """Say what is missing to send (no credentials file, or one we cannot read)."""
        if not self.credentials_file:
            return "FCM_CREDENTIALS_FILE is not set"
        try:
            _load(self.credentials_file)
        except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
            return f"FCM_CREDENTIALS_FILE is not a usable service-account JSON: {exc}"
        return None

    def _token(self, account: dict[str, Any], *, fresh: bool = False) -> str:
        """Return a cached access token, or ask the token URI for a new one."""
        state = _here()
        key = (account["client_email"], account["token_uri"])
        now = time.time()
        cached = state.tokens.get(key)
        if cached is not None and not fresh and cached[1] - TOKEN_MARGIN > now:
            return cached[0]
        assertion = jwt.encode(
            {
                "iss": account["client_email"],
                "scope": SCOPE,
                "aud": account["token_uri"],
                "iat": int(now),
                "exp": int(now) + ASSERTION_LIFETIME,
            },
            account["key"],
            algorithm="RS256",
            headers={"kid": account.get("private_key_id", "")},
        )
        answer = _client().post(
            account["token_uri"], data={"grant_type": _GRANT, "assertion": assertion}
        )
        answer.raise_for_status()
        body = answer.json()
        token = str(body["access_token"])
        state.tokens[key] = (token, now + float(body.get("expires_in", 3600)))
        return token

    def send(
        self, device: Device, payload: dict[str, Any], *, topic: str, urgency: str, ttl: int
    ) -> PushResult:
        """POST one message to the device's registration token."""
        problem = self.problem()
        if problem:
            return PushResult("error", problem)
        account = _load(self.credentials_file)
        message = {
            "message": {
                "token": device.token,
                "data": data_of(payload),
                "android": {
                    "collapse_key": topic,
                    "priority": "HIGH" if urgency == "high" else "NORMAL",
                    "ttl": f"{ttl}s",
                },
            }
        }
        url = f"{self.endpoint}/v1/projects/{account['project_id']}/messages:send"
        try:
            answer = self._post(account, url, message)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status == 429 or status >= 500:
                return PushResult("retry", f"oauth {status}")
            return PushResult("error", f"oauth {status} {exc.response.text[:160]}".strip())
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            return PushResult("retry", f"unreachable: {type(exc).__name__}: {exc}")
        status = answer.status_code
        if 200 <= status < 300:
            return PushResult("sent", str(status))
        code = _error_code(answer)
        if status == 404 or code == "UNREGISTERED":
            return PushResult("gone", f"{status} {code}".strip())
        if status == 429 or status >= 500:
            return PushResult(
                "retry", f"{status} {code}".strip(), _retry_after(answer.headers.get("retry-after"))
            )
        return PushResult("error", f"{status} {code or answer.text[:160]}".strip())

    def _post(self, account: dict[str, Any], url: str, message: dict[str, Any]) -> httpx.Response:
        """POST with the cached token; once more with a new one if it was refused (401)."""
        answer = _client().post(
            url, json=message, headers={"Authorization": f"Bearer {self._token(account)}"}
        )
        if answer.status_code == 401:
            token = self._token(account, fresh=True)
            answer = _client().post(url, json=message, headers={"Authorization": f"Bearer {token}"})
        return answer


def _error_code(answer: httpx.Response) -> str:
    """Return the FCM error code of an answer (`UNREGISTERED`, ...), or ''."""
    try:
        error = answer.json().get("error", {})
    except ValueError:
        return ""
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))
