"""Fixtures of the account tests: a fresh client address per test, the three login doors.

Rate-limit buckets live in Redis for the whole run (one key prefix per run), and every
test client comes from 127.0.0.1 unless told otherwise: each test takes addresses of
its own, so one test's failed logins never lock another test out.
"""

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

PASSWORD = "pw-secret-1"  # tests/conftest.py's `make_user`
LOCKED_PAGE = "Too many failed logins; try again in"
WRONG_PAGE = "Your username and password didn&#x27;t match. Please try again."
WRONG_ADMIN = "Please enter the correct username and password for a staff account."

_addresses = itertools.count(random.randrange(1 << 22))


@pytest.fixture
def new_address() -> Callable[[], str]:
    """Return a factory of client addresses no other test of this run uses (10.0.0.0/8)."""

    def make() -> str:
        n = next(_addresses)
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    return make


def api_login(address: str, username: str, password: str = PASSWORD) -> Any:
    """POST /api/v1/auth/token from `address`; return the response."""
    client = APIClient(REMOTE_ADDR=address)
    body = {"username": username, "password": password}
    return client.post("/api/v1/auth/token", body, format="json")


def page_login(address: str, username: str, password: str = PASSWORD) -> Any:
    """Submit the login page's form from `address`; return the response."""
    client = Client(REMOTE_ADDR=address)
    return client.post("/accounts/login/", {"username": username, "password": password})


def admin_login(address: str, username: str, password: str = PASSWORD) -> Any:
    """Submit the admin's login form from `address`; return the response."""
    client = Client(REMOTE_ADDR=address)
    body = {"username": username, "password": password, "next": "/admin/"}
    return client.post("/admin/login/?next=/admin/", body)


def page_error(response: Any) -> str:
    """Return the page's error text (or "" if it shows none)."""
    html: str = response.content.decode()
    for marker in (LOCKED_PAGE, WRONG_PAGE, WRONG_ADMIN):
        start = html.find(marker)
        if start >= 0:
            return html[start : html.index("<", start)].strip()
    return ""
