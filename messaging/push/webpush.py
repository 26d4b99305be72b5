"""Web Push: RFC 8030 delivery, RFC 8291 encryption (aes128gcm), RFC 8292 VAPID.

pywebpush encrypts the payload to the subscription's keys and py-vapid signs the JWT;
the request itself goes through `safehttp` (no SSRF, no redirects, bounded answer).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from py_vapid import Vapid
from pywebpush import WebPusher, WebPushException

from messaging.models import Device
from messaging.push import PushResult, safehttp

logger = logging.getLogger(__name__)

# A VAPID JWT may live 24 h (RFC 8292); ours live 12 h and are made per request.
JWT_LIFETIME = 12 * 3600


def _retry_after(value: str | None) -> float | None:
    """Return a Retry-After header's delay in seconds (it may be seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class WebPushBackend:
    """Send Web Push messages signed with the VAPID key of the settings."""

    private_key: str
    subject: str

    @classmethod
    def from_settings(cls) -> WebPushBackend:
        """Build the backend from WEBPUSH_VAPID_PRIVATE_KEY and WEBPUSH_VAPID_SUBJECT."""
        return cls(settings.WEBPUSH_VAPID_PRIVATE_KEY, settings.WEBPUSH_VAPID_SUBJECT)

    def problem(self) -> str | None:
        """Say what is missing to send (no key, or a key py-vapid cannot read)."""
        if not self.private_key:
            return "WEBPUSH_VAPID_PRIVATE_KEY is not set"
        try:
            self._vapid()
        except (ValueError, TypeError, binascii.Error) as exc:
            return f"WEBPUSH_VAPID_PRIVATE_KEY is not a raw P-256 key: {exc}"
        return None

    def _vapid(self) -> Vapid:
        return _vapid_from(self.private_key)

    def send(
        self, device: Device, payload: dict[str, Any], *, topic: str, urgency: str, ttl: int
    ) -> PushResult:
        """Encrypt `payload` to the subscription, sign, and POST it to its endpoint."""
        problem = self.problem()
        if problem:
            return PushResult("error", problem)
        subscription = {"endpoint": device.token, "keys": dict(device.keys or {})}
        try:
            body = WebPusher(subscription).encode(
                json.dumps(payload, ensure_ascii=False).encode(), "aes128gcm"
            )["body"]
        except (WebPushException, ValueError, TypeError, binascii.Error) as exc:
            return PushResult("error", f"cannot encrypt to this subscription: {exc}")
        claims = {
            "aud": safehttp.origin_of(device.token),
            "sub": self.subject,
            "exp": int(time.time()) + JWT_LIFETIME,
        }
        headers = {
            **self._vapid().sign(claims),
            "TTL": str(ttl),
            "Urgency": urgency,
            "Topic": topic,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        try:
            answer = safehttp.post(
                device.token,
                body,
                headers,
                timeout=settings.PUSH_TIMEOUT,
                allow=settings.PUSH_ENDPOINT_ALLOW,
            )
        except safehttp.Refused as exc:
            return PushResult("refused", f"refused: {exc}")
        except safehttp.TransportError as exc:
            return PushResult("retry", f"unreachable: {exc}")
        status = answer.status
        if 200 <= status < 300:
            return PushResult("sent", str(status))
        if status in (404, 410):
            return PushResult("gone", str(status))
        if status == 429 or status >= 500:
            return PushResult("retry", str(status), _retry_after(answer.headers.get("retry-after")))
        return PushResult("error", f"{status} {answer.body[:200].decode(errors='replace')}".strip())


_vapids: dict[str, Vapid] = {}


def _vapid_from(private_key: str) -> Vapid:
    vapid = _vapids.get(private_key)
    if vapid is None:
        vapid = _vapids[private_key] = Vapid.from_string(private_key=private_key)
    return vapid


def generate_vapid_keys() -> tuple[str, str]:
    """Return a new VAPID key pair: (public, private), base64url raw P-256, no padding."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return b64(public), b64(private)
