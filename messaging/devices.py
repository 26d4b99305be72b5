"""Push targets: register and remove a user's devices (Web Push, FCM, APNs).

A push target belongs to one user: registering a token another account holds moves it
to the caller (the install now belongs to whoever signed in last), so a device never
gets another person's notifications after a sign-out and sign-in.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
from typing import Any, TypedDict
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Coalesce
from django.dispatch import Signal

from accounts.models import User
from chatsite import text
from chatsite.errors import BadRequest, DomainError
from messaging.models import Device
from messaging.push.safehttp import origin_of

Platform = Device.Platform
logger = logging.getLogger(__name__)

# Sent after commit when a push target moves from one account to another:
# `previous_user_id`, `device_id`, `platform`, `name` (what its previous owner called it).
# The worker tells the previous owner on their other devices (`messaging.tasks`).
device_taken_over = Signal()

_FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-.]{16,1024}")
_APNS_TOKEN = re.compile(r"[0-9a-fA-F]{64}")
_BLOCKED_HOST_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


class SubscriptionKeys(TypedDict):
    """A Web Push subscription's keys, base64url text as the browser gives them."""

    p256dh: str
    auth: str


class Subscription(TypedDict):
    """A browser's `PushSubscription.toJSON()`: where to post, and the keys to encrypt to."""

    endpoint: str
    keys: SubscriptionKeys


class DeviceNotFound(DomainError):
    """No such device among the user's own (another user's device looks the same)."""

    code = "not_found"
    http_status = 404
    default_message = "No such device."


def _b64url_bytes(value: str, field: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+=*", value):
        raise BadRequest(f"{field} must be base64url.", details={"field": field})
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{field} must be base64url.", details={"field": field}) from exc


def _clean_endpoint(endpoint: str) -> str:
    """Return a Web Push endpoint if it is an https URL on a public host name."""
    field = "subscription.endpoint"
    if len(endpoint) > 1024:
        raise BadRequest("endpoint must be a URL.", details={"field": field})
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise BadRequest("endpoint must be a URL.", details={"field": field}) from exc
    host = (parts.hostname or "").rstrip(".").lower()
    if origin_of(endpoint) in {origin_of(o) for o in settings.PUSH_ENDPOINT_ALLOW}:
        if not host or parts.username or parts.password:
            raise BadRequest("endpoint must be a URL.", details={"field": field})
        return endpoint  # a push service the operator runs (PUSH_ENDPOINT_ALLOW)
    # The worker will POST to this URL: only https to a named public host (no address
    # literals, no local names, no credentials). This is a first filter only: the worker
    # checks the addresses the name resolves to when it sends (messaging/push/safehttp.py).
    if parts.scheme != "https" or not host or parts.username or parts.password:
        raise BadRequest("endpoint must be an https URL.", details={"field": field})
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise BadRequest("endpoint must name a host, not an address.", details={"field": field})
    if "." not in host or host == "localhost" or host.endswith(_BLOCKED_HOST_SUFFIXES):
        raise BadRequest("endpoint must be a public host.", details={"field": field})
    if port not in (None, 443):
        raise BadRequest("endpoint must use the https port.", details={"field": field})
    return endpoint


def _clean_subscription(subscription: Subscription | None) -> tuple[str, dict[str, str]]:
    """Return the endpoint and keys of a Web Push subscription, if well formed."""
    if subscription is None:
        raise BadRequest(
            "webpush needs a subscription {endpoint, keys}.", details={"field": "subscription"}
        )
    endpoint = _clean_endpoint(subscription["endpoint"])
    p256dh, auth = subscription["keys"]["p256dh"], subscription["keys"]["auth"]
    point = _b64url_bytes(p256dh, "subscription.keys.p256dh")
    if len(point) != 65 or point[0] != 4:
        raise BadRequest(
            "p256dh must be an uncompressed P-256 public key.",
            details={"field": "subscription.keys.p256dh"},
        )
    if len(_b64url_bytes(auth, "subscription.keys.auth")) != 16:
        raise BadRequest(
            "auth must be a 16-byte secret.", details={"field": "subscription.keys.auth"}
        )
    return endpoint, {"p256dh": p256dh, "auth": auth}


def _clean_token(platform: str, token: str | None) -> str:
    if token is None:
        raise BadRequest(f"{platform} needs a token.", details={"field": "token"})
    if platform == Platform.APNS:
        if not _APNS_TOKEN.fullmatch(token):
            raise BadRequest("An APNs token is 64 hex digits.", details={"field": "token"})
        return token.lower()
    if not _FCM_TOKEN.fullmatch(token):
        raise BadRequest("That is not an FCM registration token.", details={"field": "token"})
    return token


def _clean_name(name: str) -> str:
    return text.clean_name(name, field="name", max_length=100, required=False)


def register_device(
    *,
    user: User,
    platform: str,
    token: str | None = None,
    subscription: Subscription | None = None,
    name: str = "",
) -> tuple[Device, bool]:
    """Register a push target for `user`; return it and whether it is new to this user.

    Re-registering the same target updates it (keys, name). A user keeps at most
    `CHAT_MAX_DEVICES_PER_USER` devices; the longest unused ones give way.
    """
    keys: dict[str, Any] | None = None
    if platform == Platform.WEBPUSH:
        target, keys = _clean_subscription(subscription)
    else:
        target = _clean_token(platform, token)
    label = _clean_name(name)
    with transaction.atomic():
        device, created = Device.objects.select_for_update().get_or_create(
            platform=platform, token=target, defaults={"user": user, "keys": keys, "name": label}
        )
        new_to_user = created or device.user_id != user.pk
        if not created and new_to_user:
            _announce_takeover(device, user)
        if not created:
            device.user = user
            device.keys = keys
            device.name = label
            device.save(update_fields=["user", "keys", "name"])
        if new_to_user:
            _make_room(user, keep=device.pk)
    return device, new_to_user


def _announce_takeover(device: Device, user: User) -> None:
    """Log a push target moving to `user` and have its previous owner told after commit."""
    previous, device_id, platform, name = device.user_id, device.pk, device.platform, device.name
    # The token is a credential of sorts: never logged, only the ids.
    logger.warning(
        "push target %s (%s) moved from user %s to user %s",
        device_id,
        platform,
        previous,
        user.pk,
        extra={"device": device_id, "from_user": previous, "to_user": user.pk},
    )
    transaction.on_commit(
        lambda: device_taken_over.send(
            sender=Device,
            previous_user_id=previous,
            device_id=device_id,
            platform=platform,
            name=name,
        )
    )


def _make_room(user: User, *, keep: int) -> None:
    """Delete the user's least recently used devices beyond the limit (never `keep`)."""
    limit = int(settings.CHAT_MAX_DEVICES_PER_USER)
    stale = list(
        Device.objects.filter(user=user)
        .exclude(pk=keep)
        .order_by(Coalesce("last_used_at", "created_at").desc(), "-pk")
        .values_list("pk", flat=True)[limit - 1 :]
    )
    if stale:
        Device.objects.filter(pk__in=stale).delete()


def remove_device(*, user: User, device_id: int) -> None:
    """Delete one of the user's devices; someone else's is DeviceNotFound, like a missing one."""
    deleted, _ = Device.objects.filter(pk=device_id, user=user).delete()
    if not deleted:
        raise DeviceNotFound()
