"""Sign-up, the profile (display name, busy status) and the user directory."""

from typing import Any

import pytest
from django.contrib.auth import authenticate

from accounts import services
from accounts.models import User
from tests.api.conftest import Client, error_code

pytestmark = pytest.mark.django_db

STRONG = "a long passphrase 42"


def register(client_for: Client, **fields: Any) -> Any:
    body = {"username": "newbie", "password": STRONG, "display_name": "New Bie", **fields}
    return client_for().post("/api/v1/auth/register", body, format="json")


def test_register_creates_an_account_that_can_log_in(client_for: Client) -> None:
    response = register(client_for)

    assert response.status_code == 201
    user = User.objects.get(username="newbie")
    assert response.json() == {
        "id": user.pk,
        "username": "newbie",
        "display_name": "New Bie",
        "avatar_url": None,
    }
    assert authenticate(username="newbie", password=STRONG) == user
    token = client_for().post(
        "/api/v1/auth/token", {"username": "newbie", "password": STRONG}, format="json"
    )
    assert token.status_code == 200


def test_register_answers_taken_and_reserved_names_alike(client_for: Client, ana: User) -> None:
    taken = register(client_for, username="ana")
    other_case = register(client_for, username="ANA")
    reserved = register(client_for, username="Admin")

    assert taken.status_code == other_case.status_code == reserved.status_code == 400
    assert taken.json() == other_case.json() == reserved.json()
    assert taken.json()["error"]["details"] == {"field": "username"}
    assert User.objects.filter(username__iexact="ana").count() == 1


def test_register_refuses_weak_passwords_and_odd_names(client_for: Client) -> None:
    weak = register(client_for, password="newbie")
    lookalike = register(client_for, username="\u0430na")  # Cyrillic a
    spoofing = register(client_for, display_name="evil\u202egnp.exe")

    assert weak.status_code == 400 and weak.json()["error"]["details"]["field"] == "password"
    assert lookalike.status_code == 400
    assert spoofing.status_code == 400
    assert not User.objects.filter(username="newbie").exists()


def test_register_answers_no_more_than_the_public_fields(client_for: Client) -> None:
    response = register(client_for)

    assert set(response.json()) == {"id", "username", "display_name", "avatar_url"}
    assert "sessionid" not in response.cookies


def test_register_is_throttled_per_address(client_for: Client, settings: Any) -> None:
    settings.REGISTER_BURST = 2.0
    client = client_for()
    client.defaults["REMOTE_ADDR"] = "203.0.113.77"
    answers = [
        client.post(
            "/api/v1/auth/register",
            {"username": f"burst{i}", "password": STRONG},
            format="json",
        )
        for i in range(3)
    ]

    assert [a.status_code for a in answers] == [201, 201, 429]
    assert int(answers[2]["Retry-After"]) >= 1
    assert error_code(answers[2]) == "rate_limited"


def test_register_can_be_closed(client_for: Client, settings: Any) -> None:
    settings.REGISTRATION_OPEN = False

    response = register(client_for)

    assert response.status_code == 403
    assert not User.objects.filter(username="newbie").exists()


def test_me_shows_and_changes_the_profile(client_for: Client, ana: User) -> None:
    client = client_for(ana)
    assert client.get("/api/v1/users/me").json() == {
        "id": ana.pk,
        "username": "ana",
        "display_name": "Ana",
        "avatar_url": None,
        "status": "available",
        "status_until": None,
        "email": "",
        "email_notifications": True,
        "group_adds": "everyone",
    }

    changed = client.patch(
        "/api/v1/users/me", {"display_name": "Ana B", "status": "busy"}, format="json"
    )

    assert changed.status_code == 200
    assert changed.json()["display_name"] == "Ana B"
    assert changed.json()["status"] == "busy"
    ana.refresh_from_db()
    assert (ana.display_name, ana.status) == ("Ana B", "busy")


def test_status_change_is_announced_after_commit(
    client_for: Client, ana: User, django_capture_on_commit_callbacks: Any
) -> None:
    heard: list[dict[str, Any]] = []

    def listen(**kwargs: Any) -> None:
        heard.append({"user_id": kwargs["user_id"], "status": kwargs["status"]})

    services.status_changed.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            client_for(ana).patch("/api/v1/users/me", {"status": "busy"}, format="json")
            client_for(ana).patch("/api/v1/users/me", {"status": "busy"}, format="json")
    finally:
        services.status_changed.disconnect(listen)

    assert heard == [{"user_id": ana.pk, "status": "busy"}]


def test_me_refuses_unknown_status(client_for: Client, ana: User) -> None:
    response = client_for(ana).patch("/api/v1/users/me", {"status": "away"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "status"


def test_directory_finds_by_username_or_display_name(
    client_for: Client, make_user: Any, ana: User
) -> None:
    make_user("zed", display_name="Ana's friend")
    make_user("bob", display_name="Robert")
    make_user("gone", display_name="Ana gone", is_active=False)

    found = client_for(ana).get("/api/v1/users", {"q": "ana"}).json()

    assert [u["username"] for u in found["results"]] == ["ana", "zed"]
    assert found["next"] is None


def test_directory_pages_with_a_cursor(client_for: Client, make_user: Any, ana: User) -> None:
    for i in range(5):
        make_user(f"page{i}")
    client = client_for(ana)

    seen: list[str] = []
    url: str | None = "/api/v1/users?q=page&limit=2"
    while url:
        page = client.get(url).json()
        seen += [u["username"] for u in page["results"]]
        url = page["next"]

    assert seen == [f"page{i}" for i in range(5)]


def test_directory_refuses_a_forged_cursor(client_for: Client, ana: User) -> None:
    response = client_for(ana).get("/api/v1/users", {"cursor": "bm90LWpzb24"})

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "cursor"


def test_anonymous_gets_401_on_profile_and_directory(client_for: Client) -> None:
    assert client_for().get("/api/v1/users/me").status_code == 401
    assert client_for().get("/api/v1/users").status_code == 401
