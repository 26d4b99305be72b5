"""Push targets: Web Push subscriptions, FCM and APNs tokens; validated, owned by one user."""

import base64
from typing import Any

import pytest

from accounts.models import User
from messaging.models import Device
from tests.api.conftest import Client

pytestmark = pytest.mark.django_db

P256DH = base64.urlsafe_b64encode(b"\x04" + b"\x11" * 64).rstrip(b"=").decode()
AUTH = base64.urlsafe_b64encode(b"\x22" * 16).rstrip(b"=").decode()
FCM = "dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx" + "x" * 100
APNS = "ab" * 32


def webpush(
    endpoint: str = "https://fcm.googleapis.com/fcm/send/abc123", **keys: str
) -> dict[str, Any]:
    return {
        "platform": "webpush",
        "subscription": {"endpoint": endpoint, "keys": {"p256dh": P256DH, "auth": AUTH, **keys}},
        "name": "Firefox",
    }


@pytest.mark.parametrize(
    "body",
    [
        webpush(),
        {"platform": "fcm", "token": FCM, "name": "Pixel"},
        {"platform": "apns", "token": APNS.upper(), "name": "iPhone"},
    ],
    ids=["webpush", "fcm", "apns"],
)
def test_register_each_platform(client_for: Client, ana: User, body: dict[str, Any]) -> None:
    response = client_for(ana).post("/api/v1/devices", body, format="json")

    assert response.status_code == 201
    device = Device.objects.get(pk=response.json()["id"])
    assert (device.user, device.platform, device.name) == (ana, body["platform"], body["name"])
    assert set(response.json()) == {"id", "platform", "name", "created_at", "last_used_at"}
    if body["platform"] == "apns":
        assert device.token == APNS
    if body["platform"] == "webpush":
        assert device.keys == {"p256dh": P256DH, "auth": AUTH}


def test_registering_again_updates_and_answers_200(client_for: Client, ana: User) -> None:
    first = client_for(ana).post(
        "/api/v1/devices", {"platform": "apns", "token": APNS}, format="json"
    )
    again = client_for(ana).post(
        "/api/v1/devices", {"platform": "apns", "token": APNS, "name": "renamed"}, format="json"
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Device.objects.get().name == "renamed"


def test_a_token_moves_to_whoever_registers_it_last(
    client_for: Client, ana: User, bo: User
) -> None:
    client_for(ana).post("/api/v1/devices", {"platform": "fcm", "token": FCM}, format="json")

    moved = client_for(bo).post("/api/v1/devices", {"platform": "fcm", "token": FCM}, format="json")

    assert moved.status_code == 201
    assert Device.objects.get().user == bo


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "apns", "token": "ab" * 31}, "token"),
        ({"platform": "apns", "token": "zz" * 32}, "token"),
        ({"platform": "fcm", "token": "short"}, "token"),
        ({"platform": "fcm"}, "token"),
        ({"platform": "webpush"}, "subscription"),
        ({"platform": "sms", "token": FCM}, "platform"),
        (webpush("http://fcm.googleapis.com/x"), "subscription.endpoint"),
        (webpush("https://127.0.0.1/x"), "subscription.endpoint"),
        (webpush("https://[::1]/x"), "subscription.endpoint"),
        (webpush("https://localhost/x"), "subscription.endpoint"),
        (webpush("https://metadata.internal/x"), "subscription.endpoint"),
        (webpush("https://user:pw@push.example.com/x"), "subscription.endpoint"),
        (webpush("https://push.example.com:8443/x"), "subscription.endpoint"),
        (webpush(p256dh="AAAA"), "subscription.keys.p256dh"),
        (webpush(auth="not base64!"), "subscription.keys.auth"),
    ],
)
def test_malformed_targets_are_400_naming_the_field(
    client_for: Client, ana: User, body: dict[str, Any], field: str
) -> None:
    response = client_for(ana).post("/api/v1/devices", body, format="json")

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details.get("field") == field or field in details.get("fields", {})
    assert not Device.objects.exists()


def test_a_user_keeps_a_bounded_number_of_devices(
    client_for: Client, ana: User, settings: Any
) -> None:
    settings.CHAT_MAX_DEVICES_PER_USER = 2
    client = client_for(ana)
    ids = [
        client.post(
            "/api/v1/devices", {"platform": "apns", "token": f"{i:064x}"}, format="json"
        ).json()["id"]
        for i in range(3)
    ]

    assert sorted(Device.objects.filter(user=ana).values_list("pk", flat=True)) == ids[1:]


def test_delete_own_device_and_others_are_404(client_for: Client, ana: User, bo: User) -> None:
    mine = (
        client_for(ana)
        .post("/api/v1/devices", {"platform": "apns", "token": APNS}, format="json")
        .json()
    )
    theirs = (
        client_for(bo)
        .post("/api/v1/devices", {"platform": "fcm", "token": FCM}, format="json")
        .json()
    )

    foreign = client_for(ana).delete(f"/api/v1/devices/{theirs['id']}")
    missing = client_for(ana).delete(f"/api/v1/devices/{theirs['id'] + 1000}")
    deleted = client_for(ana).delete(f"/api/v1/devices/{mine['id']}")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert deleted.status_code == 204
    assert list(Device.objects.values_list("user_id", flat=True)) == [bo.pk]
