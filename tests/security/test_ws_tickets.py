"""A WebSocket ticket is bound to the login and the password it was minted under.

The finding: a ticket minted before a password change still opened a socket after it
(the password was read when the ticket was redeemed, not when it was minted), and a
ticket minted before a logout delivered the whole `session.ready` snapshot before the
gateway's credential check closed it 4401. Now a ticket carries the user's session auth
hash (which changes with the password) and its login (token family or session key), and
the handshake checks both before the consumer sends anything: a void ticket's socket is
closed 4401 with no frame before the close.

Each test mints tickets through the real endpoint (`POST /api/v1/ws-tickets`) from a JWT
login (`POST /api/v1/auth/token`) and from a browser session (the login page), changes
the password on the password-change page or logs out through the real logout endpoint
and page, then redeems the tickets on the in-process ASGI application.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client

from accounts.models import User
from chatsite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a long and correct passphrase 7"
NEW_PASSWORD = "a brand new passphrase 8"
CLOSE_UNAUTHENTICATED = 4401


@pytest.fixture
def victim(make_user: Callable[..., User]) -> User:
    user = make_user("victim")
    user.set_password(PASSWORD)
    user.save(update_fields=["password"])
    return user


class JwtLogin:
    """A native client: a JWT pair from the token endpoint, tickets minted with it."""

    def __init__(self, password: str = PASSWORD) -> None:
        self.http = Client()
        reply = self.http.post(
            "/api/v1/auth/token",
            {"username": "victim", "password": password},
            content_type="application/json",
        )
        assert reply.status_code == 200, reply.content
        self.pair: dict[str, str] = reply.json()

    def ticket(self) -> str:
        reply = self.http.post(
            "/api/v1/ws-tickets", HTTP_AUTHORIZATION=f"Bearer {self.pair['access']}"
        )
        assert reply.status_code == 201, reply.content
        return str(reply.json()["ticket"])

    def log_out(self) -> None:
        reply = self.http.post(
            "/api/v1/auth/logout",
            {"refresh": self.pair["refresh"]},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {self.pair['access']}",
        )
        assert reply.status_code == 204, reply.content


class BrowserLogin:
    """A web page: logged in through the login page, tickets minted with the cookie."""

    def __init__(self, password: str = PASSWORD) -> None:
        self.http = Client()
        reply = self.http.post("/accounts/login/", {"username": "victim", "password": password})
        assert reply.status_code == 302, reply.content
        assert settings.SESSION_COOKIE_NAME in self.http.cookies

    def ticket(self) -> str:
        reply = self.http.post("/api/v1/ws-tickets")
        assert reply.status_code == 201, reply.content
        return str(reply.json()["ticket"])

    def log_out(self) -> None:
        reply = self.http.post("/accounts/logout/")
        assert reply.status_code in (200, 302), reply.content

    def change_password(self, old: str, new: str) -> None:
        reply = self.http.post(
            "/accounts/password_change/",
            {"old_password": old, "new_password1": new, "new_password2": new},
        )
        assert reply.status_code == 302, reply.content


Login = JwtLogin | BrowserLogin
LOGINS: dict[str, Callable[..., Login]] = {"jwt": JwtLogin, "session": BrowserLogin}


def redeem(ticket: str) -> list[dict[str, Any]]:
    """Open a socket with `ticket`; return everything the server sent until it closed.

    Frames are `{"frame": ...}`, the close is `{"close": code}`; a socket still open
    after its first frame is closed by the client (so `session.ready` ends the list).
    """
    connection.close()  # the application's threads use their own connections

    async def scenario() -> list[dict[str, Any]]:
        ws = WebsocketCommunicator(application, f"/ws/v1/?ticket={ticket}")
        connected, code = await ws.connect(timeout=10)
        if not connected:
            return [{"close": code}]
        seen: list[dict[str, Any]] = []
        while True:
            output = await ws.receive_output(timeout=10)
            if output["type"] == "websocket.close":
                seen.append({"close": output.get("code")})
                return seen
            seen.append({"frame": json.loads(output["text"])})
            if seen[-1]["frame"]["type"] == "session.ready":
                await ws.disconnect()
                return seen

    return asyncio.run(asyncio.wait_for(scenario(), 30))


def opened(outputs: list[dict[str, Any]]) -> bool:
    return [o.get("frame", {}).get("type") for o in outputs] == ["session.ready"]


@pytest.mark.parametrize("kind", ["jwt", "session"])
def test_a_ticket_minted_before_a_password_change_is_refused_before_any_frame(
    kind: str, victim: User
) -> None:
    # Tried: the victim mints a ticket (from a JWT login, or from the web page's session);
    # then the password is changed on the password-change page (the attacker holds the
    # ticket, the owner reacts by changing the password); then the ticket is redeemed.
    # Before the fix it opened a socket and received `session.ready`. A fresh ticket
    # from a login with the new password opens one (so the refusal is not vacuous).
    login = LOGINS[kind]()
    ticket = login.ticket()
    BrowserLogin().change_password(PASSWORD, NEW_PASSWORD)

    assert redeem(ticket) == [{"close": CLOSE_UNAUTHENTICATED}]
    assert opened(redeem(LOGINS[kind](NEW_PASSWORD).ticket()))


@pytest.mark.parametrize("kind", ["jwt", "session"])
def test_a_ticket_minted_before_a_logout_is_refused_before_any_frame(
    kind: str, victim: User
) -> None:
    # Tried: a ticket minted from a login (JWT pair, or the web page's session) that then
    # logs out (the logout endpoint, or the logout page), redeemed afterwards. Before the
    # fix the socket opened, sent the full `session.ready` snapshot, and only then was
    # closed 4401 by the periodic credential check. A ticket of another, live login of
    # the same user, minted before the logout too, still opens: only that login is void.
    login = LOGINS[kind]()
    ticket = login.ticket()
    other = LOGINS[kind]().ticket()
    login.log_out()

    assert redeem(ticket) == [{"close": CLOSE_UNAUTHENTICATED}]
    assert opened(redeem(other))


@pytest.mark.parametrize("kind", ["jwt", "session"])
def test_a_fresh_ticket_after_logging_in_again_opens_a_socket(kind: str, victim: User) -> None:
    # Tried: log out, log in again, mint a new ticket: it opens a socket (the binding does
    # not lock the user out); the old ticket stays refused, and the new one is single-use.
    login = LOGINS[kind]()
    old = login.ticket()
    login.log_out()
    fresh = LOGINS[kind]().ticket()

    assert redeem(old) == [{"close": CLOSE_UNAUTHENTICATED}]
    assert opened(redeem(fresh))
    assert redeem(fresh) == [{"close": CLOSE_UNAUTHENTICATED}]
