"""A push target registered by another account moves to it, and its owner is told.

The finding: registering another user's FCM token (or Web Push subscription) moves the
device with no trace. The move is kept by design (an install belongs to whoever signed
in last, so nobody keeps getting a previous user's notifications), but now it is logged
(ids only, never the token) and the previous owner gets a `security` push on each of
their other devices, decrypted here by a real local Web Push service, and an email.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail

from accounts.models import User
from messaging import devices
from messaging.models import Device
from tests.e2e.pushservice import PushService, vapid_keypair

pytestmark = pytest.mark.django_db(transaction=True)

APNS_TOKEN = "ab" * 32


@pytest.fixture
def push(settings: Any) -> Iterator[PushService]:
    public, private = vapid_keypair()
    with PushService(public, vapid_private=private) as service:
        settings.WEBPUSH_VAPID_PUBLIC_KEY = public
        settings.WEBPUSH_VAPID_PRIVATE_KEY = private
        settings.WEBPUSH_VAPID_SUBJECT = "mailto:ops@example.org"
        settings.PUSH_ENDPOINT_ALLOW = [service.origin]
        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
        yield service


def test_a_token_taken_by_another_account_is_logged_and_its_owner_told(
    push: PushService, ana: User, bo: User, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried: Bo registers the APNs token of Ana's phone as his own."""
    User.objects.filter(pk=ana.pk).update(email="ana@example.org")
    laptop, _ = devices.register_device(
        user=ana, platform="webpush", subscription=push.subscribe("ana-laptop"), name="Laptop"
    )
    phone, _ = devices.register_device(
        user=ana, platform="apns", token=APNS_TOKEN, name="Ana's iPhone"
    )

    with caplog.at_level(logging.WARNING, logger="messaging.devices"):
        moved, new_to_bo = devices.register_device(
            user=bo, platform="apns", token=APNS_TOKEN, name="mine now"
        )

    assert (moved.pk, moved.user_id, new_to_bo) == (phone.pk, bo.pk, True)
    (line,) = [r for r in caplog.records if r.name == "messaging.devices"]
    assert line.getMessage() == (
        f"push target {phone.pk} (apns) moved from user {ana.pk} to user {bo.pk}"
    )
    assert APNS_TOKEN not in caplog.text
    # Ana's laptop shows a notice (Celery runs eagerly here; the worker does in
    # production), naming the device as she called it.
    (shown,) = push.shown("ana-laptop")
    assert shown["type"] == "security"
    assert shown["title"] == "A device left your account"
    assert "“Ana's iPhone”" in shown["body"]
    (email,) = mail.outbox
    assert email.to == ["ana@example.org"]
    assert "Ana's iPhone" in email.body
    # Ana keeps her laptop; the phone is Bo's now.
    assert list(Device.objects.filter(user=ana).values_list("pk", flat=True)) == [laptop.pk]


def test_registering_your_own_device_again_tells_no_one(
    push: PushService, ana: User, caplog: pytest.LogCaptureFixture
) -> None:
    devices.register_device(
        user=ana, platform="webpush", subscription=push.subscribe("ana-laptop"), name="Laptop"
    )
    devices.register_device(user=ana, platform="apns", token=APNS_TOKEN, name="Phone")

    with caplog.at_level(logging.WARNING, logger="messaging.devices"):
        _, new = devices.register_device(user=ana, platform="apns", token=APNS_TOKEN, name="P2")

    assert new is False
    assert not [r for r in caplog.records if r.name == "messaging.devices"]
    assert push.shown("ana-laptop") == []
    assert mail.outbox == []
