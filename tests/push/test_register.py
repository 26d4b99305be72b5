"""The reference client registers mobile push targets on a real gateway (`POST /devices`)."""

from __future__ import annotations

import asyncio

import pytest

from accounts.models import User
from chatclient import ChatError, register_device
from messaging.models import Device
from tests.e2e.conftest import MakeDeployment
from tests.e2e.wsclient import bearer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_chatclient_register_device_registers_fcm_and_apns_tokens(
    make_deployment: MakeDeployment, bo: User
) -> None:
    """`register_device` makes an FCM and an APNs device of the signed-in user (created
    True), re-registering the same token updates its name (created False), and a
    malformed APNs token is the REST error `bad_request`. Without the function (or with a
    wrong body) no Device row appears."""
    deployment = make_deployment(gateways=1)
    base = deployment.gateways[0].http_url
    access = bearer(bo)
    apns_token = "ab" * 32

    android = asyncio.run(
        register_device(base, access, "fcm", token="fcm-token-bo-phone-0001", name="Pixel")
    )
    iphone = asyncio.run(register_device(base, access, "apns", token=apns_token, name="iPhone"))
    again = asyncio.run(register_device(base, access, "apns", token=apns_token, name="iPhone 15"))

    assert (android["platform"], android["name"], android["created"]) == ("fcm", "Pixel", True)
    assert (iphone["platform"], iphone["created"]) == ("apns", True)
    assert (again["id"], again["name"], again["created"]) == (iphone["id"], "iPhone 15", False)
    assert sorted(Device.objects.filter(user=bo).values_list("platform", "token")) == [
        ("apns", apns_token),
        ("fcm", "fcm-token-bo-phone-0001"),
    ]
    with pytest.raises(ChatError) as refused:
        asyncio.run(register_device(base, access, "apns", token="not-hex"))
    assert refused.value.code == "bad_request"
