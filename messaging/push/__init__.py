"""Push backends: one small interface per kind of push service (Web Push, FCM, APNs).

A backend turns a payload into one request to one device's push service and says what
came of it; the caller (`messaging.notifications`) records the decision and deletes the
device when the service says it is gone. Backends are configured from settings; one
without credentials is skipped with `provider_error`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from django.conf import settings

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


class _Pool:
    """The threads this process sends pushes on (made again after a fork)."""

    pid = 0
    executor: ThreadPoolExecutor | None = None
    size = 0


_pool = _Pool()
_pool_lock = threading.Lock()


def _executor(size: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if _pool.executor is None or _pool.pid != os.getpid() or _pool.size != size:
            _pool.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="push")
            _pool.pid, _pool.size = os.getpid(), size
        return _pool.executor


def send_all(sends: Sequence[Callable[[], PushResult]]) -> list[PushResult]:
    """Run the sends, up to `PUSH_CONCURRENCY` at once; answer their results in order.

    The requests of one process share its clients (one HTTP/2 connection to APNs,
    streams side by side; a pool of keep-alive connections elsewhere), so a worker
    waits for the slowest answer, not for the sum of them. A send that raises makes
    this raise, as one after another would.
    """
    size = max(1, int(settings.PUSH_CONCURRENCY))
    if len(sends) <= 1 or size == 1:
        return [send() for send in sends]
    futures = [_executor(size).submit(send) for send in sends]
    return [future.result() for future in futures]


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
