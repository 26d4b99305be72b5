"""Account settings over REST: password change, sign out everywhere, busy until a time."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services
from accounts.models import User
from tests.accounts.conftest import PASSWORD, api_login

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a brand new passphrase 8"
PASSWORD_PATH = "/api/v1/users/me/password"
ME = "/api/v1/users/me"
MakeUser = Callable[..., User]


def bearer(access: str, address: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def browser(user: User, address: str = "127.0.0.1") -> Client:
    client = Client(REMOTE_ADDR=address)
    client.force_login(user)
    return client


def change(client: Any, current: str = PASSWORD, new: str = NEW_PASSWORD) -> Any:
    body = {"current_password": current, "new_password": new}
    return client.post(PASSWORD_PATH, body, content_type="application/json")


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# --- change password ------------------------------------------------------------------


def test_a_password_change_answers_a_new_pair_and_ends_every_other_login(
    make_user: MakeUser, new_address: Callable[[], str]
) -> None:
    # Tried: Ana is signed in with two token pairs and a browser session; she changes her
    # password with the first pair. The answer is a new pair that works; the old pairs
    # (access and refresh) and the session are refused; the new password logs in.
    ana = make_user("ana")
    address = new_address()
    first = api_login(address, "ana").json()
    second = api_login(address, "ana").json()
    web = browser(ana)
    assert web.get(ME).status_code == 200

    response = change(bearer(first["access"], address))

    assert response.status_code == 200, response.content
    fresh = response.json()
    assert set(fresh) == {"access", "refresh"}
    assert bearer(fresh["access"]).get(ME).status_code == 200
    for old in (first, second):
        refused = bearer(old["access"]).get(ME)
        assert refused.status_code == 401
        assert refused.json()["error"]["details"]["token"] == "password_changed"
        refresh = APIClient().post(
            "/api/v1/auth/token/refresh", {"refresh": old["refresh"]}, format="json"
        )
        assert refresh.status_code == 401
    assert web.get(ME).status_code in (401, 403)
    ana.refresh_from_db()
    assert ana.check_password(NEW_PASSWORD) and not ana.check_password(PASSWORD)
    assert api_login(new_address(), "ana", NEW_PASSWORD).status_code == 200


def test_a_password_change_from_the_web_keeps_that_session_and_ends_the_others(
    make_user: MakeUser,
) -> None:
    # Tried: Ana is signed in in two browsers and changes her password in the first.
    # The first browser stays signed in (its session now carries the new hash); the
    # second is signed out.
    ana = make_user("ana")
    first, second = browser(ana), browser(ana)

    response = change(first)

    assert response.status_code == 200, response.content
    assert first.get(ME).status_code == 200
    assert first.get("/").status_code == 200
    assert second.get(ME).status_code in (401, 403)
    assert second.get("/").status_code == 302


def test_a_weak_or_missing_new_password_is_refused_with_the_problems_as_data(
    make_user: MakeUser, new_address: Callable[[], str]
) -> None:
    # Tried: new passwords the validators refuse (too short and common; the username),
    # the current one again, an empty one, and a body without the fields. Each is a 400
    # and the stored password and the caller's token are unchanged.
    ana = make_user("ana")
    stored = ana.password
    address = new_address()
    client = bearer(api_login(address, "ana").json()["access"], address)

    short = change(client, new="abc")
    same_as_name = change(client, new="ana")
    same = change(client, new=PASSWORD)
    empty = change(client, new="")
    shapeless = client.post(PASSWORD_PATH, {"password": "x"}, format="json")

    assert short.status_code == 400
    assert error(short)["details"]["field"] == "new_password"
    problems = error(short)["details"]["errors"]
    assert isinstance(problems, list) and any("short" in p for p in problems)
    assert same_as_name.status_code == 400 and error(same_as_name)["details"]["errors"]
    assert same.status_code == 400 and error(same)["details"]["field"] == "new_password"
    assert empty.status_code == 400
    assert shapeless.status_code == 400
    ana.refresh_from_db()
    assert ana.password == stored
    assert client.get(ME).status_code == 200


def test_anonymous_callers_cannot_change_a_password_or_sign_out_everywhere() -> None:
    # Tried: both endpoints without credentials.
    client = APIClient()
    assert change(client).status_code == 401
    assert client.post("/api/v1/auth/logout-all").status_code == 401


# --- sign out everywhere --------------------------------------------------------------


def test_sign_out_everywhere_ends_every_token_and_session_the_callers_too(
    make_user: MakeUser, new_address: Callable[[], str]
) -> None:
    # Tried: Ana with two token pairs and a browser session signs out everywhere from
    # the browser. Every token (access and refresh) and the session, the caller's own,
    # are refused; Bo's login is untouched; Ana's password is unchanged and a fresh
    # login works.
    ana = make_user("ana")
    make_user("bo")
    stored = ana.password
    address = new_address()
    pairs = [api_login(address, "ana").json() for _ in range(2)]
    bos = api_login(address, "bo").json()
    web = browser(ana)

    response = web.post("/api/v1/auth/logout-all")

    assert response.status_code == 204
    for pair in pairs:
        refused = bearer(pair["access"]).get(ME)
        assert refused.status_code == 401
        assert refused.json()["error"]["details"]["token"] == "revoked"
        refresh = APIClient().post(
            "/api/v1/auth/token/refresh", {"refresh": pair["refresh"]}, format="json"
        )
        assert refresh.status_code == 401
    assert web.get(ME).status_code in (401, 403)
    assert bearer(bos["access"]).get(ME).status_code == 200
    ana.refresh_from_db()
    assert ana.password == stored and ana.login_epoch == 1
    fresh = api_login(new_address(), "ana").json()
    assert bearer(fresh["access"]).get(ME).status_code == 200


def test_sign_out_everywhere_with_a_token_ends_it_and_later_logins_live_through_refreshes(
    make_user: MakeUser, new_address: Callable[[], str]
) -> None:
    # Tried: a native client signs out everywhere with its Bearer token, then uses it;
    # a browser session from before is refused too. A login made afterwards works, and
    # so do the tokens its refresh token is rotated into (they keep the new epoch).
    ana = make_user("ana")
    other = browser(ana)
    address = new_address()
    client = bearer(api_login(address, "ana").json()["access"], address)

    assert client.post("/api/v1/auth/logout-all").status_code == 204
    assert client.get(ME).status_code == 401
    assert other.get(ME).status_code in (401, 403)

    later = api_login(address, "ana").json()
    rotated = APIClient().post(
        "/api/v1/auth/token/refresh", {"refresh": later["refresh"]}, format="json"
    )
    assert rotated.status_code == 200, rotated.content
    assert bearer(rotated.json()["access"]).get(ME).status_code == 200
    again = APIClient().post(
        "/api/v1/auth/token/refresh", {"refresh": rotated.json()["refresh"]}, format="json"
    )
    assert again.status_code == 200, again.content


# --- busy until -------------------------------------------------------------------------


def test_busy_until_a_time_is_stored_and_shown_in_the_profile(make_user: MakeUser) -> None:
    # Tried: busy for an hour, then busy with no end (the end goes), then busy until a
    # time again and available (the end goes too).
    ana = make_user("ana")
    client = browser(ana)
    until = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)

    busy = client.patch(
        ME, {"status": "busy", "status_until": until.isoformat()}, content_type="application/json"
    )

    assert busy.status_code == 200, busy.content
    assert busy.json()["status"] == "busy"
    assert datetime.fromisoformat(busy.json()["status_until"]) == until
    ana.refresh_from_db()
    assert (ana.status, ana.status_until) == ("busy", until)

    sticky = client.patch(ME, {"status": "busy"}, content_type="application/json")
    assert sticky.json()["status_until"] is None
    ana.refresh_from_db()
    assert ana.status_until is None

    client.patch(
        ME, {"status": "busy", "status_until": until.isoformat()}, content_type="application/json"
    )
    available = client.patch(ME, {"status": "available"}, content_type="application/json")
    assert available.json()["status"] == "available"
    assert available.json()["status_until"] is None
    ana.refresh_from_db()
    assert (ana.status, ana.status_until) == ("available", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "busy", "status_until": "past"}, "status_until"),
        ({"status": "busy", "status_until": "far"}, "status_until"),
        ({"status": "available", "status_until": "soon"}, "status_until"),
        ({"status_until": "soon"}, "status_until"),
        ({"status": "busy", "status_until": "tomorrow at nine"}, "status_until"),
        ({"status": "busy", "status_until": 1700000000}, "status_until"),
    ],
    ids=["past", "over-30-days", "with-available", "alone-while-available", "not-a-time", "number"],
)
def test_bad_status_until_is_refused_and_nothing_changes(
    make_user: MakeUser, body: dict[str, Any], field: str
) -> None:
    # Tried: an end in the past, more than 30 days ahead, with status available, alone
    # while available, words, and a number. Each is a 400 naming the field; the stored
    # status, its end and the display name sent along are unchanged.
    ana = make_user("ana")
    now = timezone.now()
    times = {
        "past": now - timedelta(minutes=1),
        "far": now + timedelta(days=31),
        "soon": now + timedelta(hours=1),
    }
    value = body.get("status_until")
    if isinstance(value, str) and value in times:
        body = {**body, "status_until": times[value].isoformat()}

    response = browser(ana).patch(
        ME, {**body, "display_name": "Changed"}, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert error(response)["details"]["field"] == field
    ana.refresh_from_db()
    assert (ana.status, ana.status_until, ana.display_name) == ("available", None, "Ana")


def test_an_ended_busy_status_reads_as_available_and_the_sweep_clears_and_announces_it(
    make_user: MakeUser, django_capture_on_commit_callbacks: Any
) -> None:
    # Tried: Ana busy until a time that then passes (the row is moved back in time, as the
    # clock would). Before any sweep, every reader sees available; the sweep clears the
    # row once and announces it once; a second sweep does nothing; Bo's busy status with
    # a later end is left alone.
    ana, bo = make_user("ana"), make_user("bo")
    soon = timezone.now() + timedelta(minutes=5)
    services.update_profile(user=ana, status="busy", status_until=soon)
    services.update_profile(user=bo, status="busy", status_until=soon + timedelta(hours=1))
    ended = timezone.now() - timedelta(seconds=1)
    User.objects.filter(pk=ana.pk).update(status_until=ended)
    heard: list[tuple[int, str]] = []

    def listen(**kwargs: Any) -> None:
        heard.append((kwargs["user_id"], kwargs["status"]))

    ana.refresh_from_db()
    assert ana.current_status == "available"
    profile = browser(ana).get(ME).json()
    assert (profile["status"], profile["status_until"]) == ("available", None)

    services.status_changed.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            first = services.expire_statuses()
            second = services.expire_statuses()
    finally:
        services.status_changed.disconnect(listen)

    assert (first, second) == ([ana.pk], [])
    assert heard == [(ana.pk, "available")]
    ana.refresh_from_db()
    bo.refresh_from_db()
    assert (ana.status, ana.status_until) == ("available", None)
    assert (bo.status, bo.current_status) == ("busy", "busy")
