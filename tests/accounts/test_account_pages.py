"""The account pages: an email at sign-up, the password change page in the app's look."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase 5"


def test_signup_keeps_an_optional_email_and_refuses_a_bad_one(
    new_address: Callable[[], str],
) -> None:
    client = Client(REMOTE_ADDR=new_address())
    fields = {"display_name": "", "password1": PASSWORD, "password2": PASSWORD}
    bad = client.post("/accounts/signup/", {**fields, "username": "neo", "email": "not-mail"})
    assert bad.status_code == 400
    assert b'id="id_email_error"' in bad.content
    assert not User.objects.filter(username="neo").exists()
    made = client.post(
        "/accounts/signup/", {**fields, "username": "neo", "email": " Neo@Example.COM "}
    )
    assert made.status_code == 302
    assert User.objects.get(username="neo").email == "Neo@example.com"
    client.logout()
    plain = client.post("/accounts/signup/", {**fields, "username": "trin", "email": ""})
    assert plain.status_code == 302
    assert User.objects.get(username="trin").email == ""


def test_the_password_change_page_is_the_apps_and_checks_the_current_password(
    make_user: Callable[..., User], new_address: Callable[[], str]
) -> None:
    client = Client(REMOTE_ADDR=new_address())
    user = make_user("ana")
    assert client.get("/accounts/password_change/").status_code == 302  # to log in
    client.force_login(user)
    page = client.get("/accounts/password_change/")
    assert page.status_code == 200
    assert b"auth-card" in page.content and b"/admin/" not in page.content
    wrong = client.post(
        "/accounts/password_change/",
        {"old_password": "nope", "new_password1": PASSWORD, "new_password2": PASSWORD},
    )
    assert wrong.status_code == 400
    assert b"Your current password is not right." in wrong.content
    done = client.post(
        "/accounts/password_change/",
        {"old_password": "pw-secret-1", "new_password1": PASSWORD, "new_password2": PASSWORD},
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/password_change/done/"
    after = client.get(done["Location"])
    assert after.status_code == 200 and b"/admin/" not in after.content
    assert client.get("/").status_code == 200  # this session stays signed in
    assert User.objects.get(pk=user.pk).check_password(PASSWORD)


def test_the_rest_sign_up_takes_an_optional_email(new_address: Callable[[], str]) -> None:
    client = Client(REMOTE_ADDR=new_address())
    made = client.post(
        "/api/v1/auth/register",
        {"username": "neo", "password": PASSWORD, "email": "neo@example.com"},
        content_type="application/json",
    )
    assert made.status_code == 201
    assert "email" not in made.json()  # others see no address
    assert User.objects.get(username="neo").email == "neo@example.com"
    bad = client.post(
        "/api/v1/auth/register",
        {"username": "trin", "password": PASSWORD, "email": "nope"},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "email"
