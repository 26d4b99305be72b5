"""The sign-up budget per client address, shared by the API and the sign-up page."""

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User

pytestmark = pytest.mark.django_db

STRONG = "a long passphrase 42"
NewAddress = Callable[[], str]


def api_signup(address: str, username: str) -> Any:
    client = APIClient(REMOTE_ADDR=address)
    body = {"username": username, "password": STRONG}
    return client.post("/api/v1/auth/register", body, format="json")


def page_signup(address: str, username: str) -> Any:
    client = Client(REMOTE_ADDR=address)
    body = {"username": username, "password1": STRONG, "password2": STRONG}
    return client.post("/accounts/signup/", body)


def test_the_api_and_the_page_take_sign_ups_from_one_budget_per_address(
    settings: Any, new_address: NewAddress
) -> None:
    settings.REGISTER_BURST = 2.0
    settings.REGISTER_INTERVAL = 360.0
    address, other = new_address(), new_address()

    by_api = api_signup(address, "first")
    by_page = page_signup(address, "second")
    refused_api = api_signup(address, "third")
    refused_page = page_signup(address, "fourth")
    elsewhere = page_signup(other, "fifth")

    assert by_api.status_code == 201
    assert by_page.status_code == 302
    assert refused_api.status_code == 429
    assert refused_api.json()["error"] == {
        "code": "rate_limited",
        "message": "Too many sign-ups from your network; try again in 6 minutes.",
        "details": {"retry_after": 360},
    }
    assert refused_api["Retry-After"] == "360"
    assert refused_page.status_code == 400
    assert "Too many sign-ups from your network; try again in 6 minutes." in (
        refused_page.content.decode()
    )
    assert elsewhere.status_code == 302
    assert sorted(User.objects.values_list("username", flat=True)) == ["fifth", "first", "second"]


def test_refused_sign_ups_cost_the_budget_too(
    settings: Any, new_address: NewAddress, make_user: Callable[..., User]
) -> None:
    settings.REGISTER_BURST = 2.0
    make_user("taken")
    address = new_address()

    probes = [api_signup(address, "taken"), page_signup(address, "taken")]
    after = api_signup(address, "fresh")

    assert [probes[0].status_code, probes[1].status_code] == [400, 400]
    assert after.status_code == 429
    assert not User.objects.filter(username="fresh").exists()


def test_a_closed_registration_takes_nothing_from_the_budget(
    settings: Any, new_address: NewAddress
) -> None:
    settings.REGISTER_BURST = 1.0
    address = new_address()
    settings.REGISTRATION_OPEN = False
    closed = [api_signup(address, f"closed{n}").status_code for n in range(3)]
    settings.REGISTRATION_OPEN = True

    opened = api_signup(address, "opened")

    assert closed == [403, 403, 403]
    assert opened.status_code == 201
