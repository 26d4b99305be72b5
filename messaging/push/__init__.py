"""Push backends: one small interface per kind of push service (Web Push, FCM, APNs).

A backend turns a payload into one request to one device's push service and says what
came of it; the caller (`messaging.notifications`) records the decision and deletes the
device when the service says it is gone. Backends are configured from settings; one
without credentials is skipped with `provider_error`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from messaging.models import Device

Outcome = Literal["sent", "gone", "retry", "error", "refused"]


@dataclass(frozen=True)
class PushResult:
    """What one push request came to.

    `sent`: accepted; `gone`: the device no longer exists there (delete it); `retry`: try
    again later (429, 5xx, unreachable), after `retry_after` seconds if the service said;
    `error`: refused for good (other 4xx, no credentials); `refused`: never sent, the
    endpoint's address is not public (delete it).
    """

    outcome: Outcome
    status: str
    retry_after: float | None = None


class PushBackend(Protocol):
    """Send one payload to one device."""

    def problem(self) -> str | None:
        """Return why this backend cannot send (missing settings), or None."""

    def send(
        self, device: Device, payload: dict[str, Any], *, topic: str, urgency: str, ttl: int
    ) -> PushResult:
        """Send `payload` to `device`; never raise for the service's own answers."""


class _Unconfigured:
    """A platform we cannot send to yet: every push is `provider_error`."""

    def __init__(self, why: str) -> None:
        self.why = why

    def problem(self) -> str | None:
        return self.why

    def send(
        self, device: Device, payload: dict[str, Any], *, topic: str, urgency: str, ttl: int
    ) -> PushResult:
        return PushResult("error", self.why)


def backend_for(platform: str) -> PushBackend:
    """Return the backend of a device platform, as the settings configure it now."""
    if platform == Device.Platform.WEBPUSH:
        from messaging.push.webpush import WebPushBackend

        return WebPushBackend.from_settings()
    if platform == Device.Platform.FCM:
        from messaging.push.fcm import FcmBackend

        return FcmBackend.from_settings()
    if platform == Device.Platform.APNS:
        from messaging.push.apns import ApnsBackend

        return ApnsBackend.from_settings()
    return _Unconfigured(f"{platform} pushes are not supported")
