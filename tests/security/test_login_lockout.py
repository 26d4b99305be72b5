"""The login lockout at its three doors: the token endpoint, the login page, the admin.

All three log in through `accounts.login.authenticate_login`: failures count per
username and client address (and per address across usernames), whichever door they
were made at. The password change checks the current password against the same
budgets (`accounts.login.change_password`): a fourth door.
"""

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.login import LoginLocked, authenticate_login
from accounts.models import User
from tests.accounts.conftest import (
    LOCKED_PAGE,
    PASSWORD,
    WRONG_ADMIN,
    WRONG_PAGE,
    admin_login,
    api_login,
    page_error,
    page_login,
)

pytestmark = pytest.mark.django_db

NewAddress = Callable[[], str]
MakeUser = Callable[..., User]


def fail(door: Callable[..., Any], address: str, username: str, times: int) -> list[Any]:
    return [door(address, username, f"wrong {n}") for n in range(times)]


def test_five_failures_on_the_api_lock_the_login_page_from_that_address_only(
    ana: User, new_address: NewAddress
) -> None:
    attacker, home = new_address(), new_address()

    failures = fail(api_login, attacker, "ana", 5)
    api_refused = api_login(attacker, "ana")
    page_refused = page_login(attacker, "ana")
    page_elsewhere = page_login(home, "ana")

    assert [f.status_code for f in failures] == [401] * 5
    assert failures[0].json()["error"] == {
        "code": "unauthenticated",
        "message": "Invalid username or password.",
    }
    assert api_refused.status_code == 429
    assert api_refused.json()["error"] == {
        "code": "rate_limited",
        "message": "Too many failed logins; try again in 3 minutes.",
        "details": {"retry_after": 180},
    }
    assert api_refused["Retry-After"] == "180"
    assert page_refused.status_code == 200
    assert page_error(page_refused) == "Too many failed logins; try again in 3 minutes."
    assert "_auth_user_id" not in page_refused.client.session
    assert page_elsewhere.status_code == 302 and page_elsewhere["Location"] == "/"
    assert page_elsewhere.client.session["_auth_user_id"] == str(ana.pk)


def test_five_failures_on_the_login_page_lock_the_api_from_that_address_only(
    ana: User, new_address: NewAddress
) -> None:
    attacker, home = new_address(), new_address()

    failures = fail(page_login, attacker, "ana", 5)
    refused = api_login(attacker, "ana")
    elsewhere = api_login(home, "ana")

    assert [page_error(f) for f in failures] == [WRONG_PAGE] * 5
    assert refused.status_code == 429
    assert elsewhere.status_code == 200
    assert set(elsewhere.json()) == {"access", "refresh"}


def test_the_admin_locks_a_staff_login_out_after_three_failures_from_an_address(
    make_user: MakeUser, new_address: NewAddress
) -> None:
    make_user("boss", is_staff=True, is_superuser=True)
    attacker, home = new_address(), new_address()

    failures = fail(admin_login, attacker, "boss", 3)
    refused = admin_login(attacker, "boss")
    elsewhere = admin_login(home, "boss")
    api_same_address = api_login(attacker, "boss")

    assert [page_error(f).startswith(WRONG_ADMIN) for f in failures] == [True] * 3
    assert page_error(refused).startswith(LOCKED_PAGE)
    assert elsewhere.status_code == 302 and elsewhere["Location"] == "/admin/"
    # Three of the five failures the other doors allow are used up, not all of them.
    assert api_same_address.status_code == 200


def test_a_lockout_earned_on_the_api_also_closes_the_admin_from_that_address(
    make_user: MakeUser, new_address: NewAddress
) -> None:
    make_user("boss", is_staff=True, is_superuser=True)
    attacker = new_address()

    fail(api_login, attacker, "boss", 5)
    refused = admin_login(attacker, "boss")

    assert page_error(refused).startswith(LOCKED_PAGE)


def test_the_admin_answers_non_staff_and_unknown_users_alike_and_counts_both(
    ana: User, new_address: NewAddress
) -> None:
    address = new_address()

    right_but_not_staff = [admin_login(address, "ana") for _ in range(3)]
    locked = admin_login(address, "ana")
    unknown = admin_login(new_address(), "nobody")

    assert [page_error(r) for r in right_but_not_staff] == [page_error(unknown)] * 3
    assert page_error(unknown).startswith(WRONG_ADMIN)
    assert page_error(locked).startswith(LOCKED_PAGE)
    assert all("_auth_user_id" not in r.client.session for r in right_but_not_staff)


def test_an_address_that_fails_on_many_usernames_is_refused_for_every_username(
    ana: User, new_address: NewAddress, settings: Any
) -> None:
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 4
    sprayer, home = new_address(), new_address()

    sprayed = [api_login(sprayer, f"guess{n}", "123456") for n in range(4)]
    refused_api = api_login(sprayer, "ana")
    refused_page = page_login(sprayer, "ana")
    elsewhere = api_login(home, "ana")

    assert [s.status_code for s in sprayed] == [401] * 4
    assert refused_api.status_code == 429
    assert page_error(refused_page).startswith(LOCKED_PAGE)
    assert elsewhere.status_code == 200


def test_addresses_of_one_ipv6_64_network_share_their_budget(
    ana: User, settings: Any, new_address: NewAddress
) -> None:
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 3
    prefix = "fd00:" + ":".join(new_address().split(".")[1:]) + ":0"

    sprayed = [api_login(f"{prefix}::{n + 1}", f"guess{n}", "123456") for n in range(3)]
    refused = api_login(f"{prefix}::99", "ana")

    assert [s.status_code for s in sprayed] == [401] * 3
    assert refused.status_code == 429


def test_unknown_usernames_get_the_same_answers_as_known_ones(
    ana: User, new_address: NewAddress
) -> None:
    address = new_address()

    def shape(response: Any) -> Any:
        return response.status_code, response.json(), response.get("Retry-After")

    known = fail(api_login, address, "ana", 6)
    unknown = fail(api_login, address, "nobody", 6)
    known_page = page_login(new_address(), "ana", "wrong")
    unknown_page = page_login(new_address(), "nobody", "wrong")

    assert [shape(r) for r in unknown] == [shape(r) for r in known]
    assert [r.status_code for r in known] == [401] * 5 + [429]
    assert page_error(unknown_page) == page_error(known_page) != ""


def test_the_forwarded_address_is_the_one_locked_out_behind_a_trusted_proxy(
    ana: User, new_address: NewAddress, settings: Any
) -> None:
    settings.API_NUM_PROXIES = 1
    settings.API_TRUSTED_PROXIES = ["*"]
    proxy, attacker, home = new_address(), new_address(), new_address()

    def via_proxy(client_ip: str, password: str) -> Any:
        client = APIClient(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=client_ip)
        body = {"username": "ana", "password": password}
        return client.post("/api/v1/auth/token", body, format="json")

    failures = [via_proxy(attacker, f"wrong {n}") for n in range(5)]
    refused = via_proxy(attacker, PASSWORD)
    elsewhere = via_proxy(home, PASSWORD)

    assert [f.status_code for f in failures] == [401] * 5
    assert refused.status_code == 429
    assert elsewhere.status_code == 200


def test_a_lockout_says_its_wait_in_whole_seconds_and_minutes() -> None:
    assert LoginLocked(179.2).details == {"retry_after": 180}
    assert LoginLocked(179.2).message == "Too many failed logins; try again in 3 minutes."
    assert LoginLocked(0.2).message == "Too many failed logins; try again in 1 minute."


def test_the_service_returns_the_user_for_the_right_password(
    ana: User, new_address: NewAddress
) -> None:
    assert authenticate_login(username="ana", password=PASSWORD, address=new_address()) == ana


def test_a_wrong_current_password_is_refused_and_counts_toward_the_login_lockout(
    make_user: MakeUser, new_address: NewAddress, settings: Any
) -> None:
    # Tried: someone holding Ana's token guesses her current password from one address.
    # Each wrong guess is a 400 naming the field and changes nothing; after
    # LOGIN_FAILURE_LIMIT guesses the right password is refused too (429), and so is a
    # login of Ana from that address: the change endpoint is no way around the lockout.
    settings.LOGIN_FAILURE_LIMIT = 2
    ana = make_user("ana")
    stored = ana.password
    address = new_address()
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_login(address, 'ana').json()['access']}")

    def change(current: str) -> Any:
        body = {"current_password": current, "new_password": "a brand new passphrase 8"}
        return client.post("/api/v1/users/me/password", body, format="json")

    wrong = [change(f"guess {n}") for n in range(2)]
    locked = change(PASSWORD)

    for answer in wrong:
        assert answer.status_code == 400
        assert answer.json()["error"]["details"] == {"field": "current_password"}
        assert answer.json()["error"]["message"] == "Your current password is not right."
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) >= 1
    assert api_login(address, "ana").status_code == 429
    ana.refresh_from_db()
    assert ana.password == stored
    assert client.get("/api/v1/users/me").status_code == 200
