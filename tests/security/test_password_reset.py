"""Password reset: budgets per address and per email, off without a mail server, no ERROR.

Tried (in the review): `/accounts/password_reset/` with no mail server configured, for
every known address; each request logged an ERROR, nothing limited how many. Here: the
page without a mail server (says it is unavailable, sends and logs nothing), N+1
requests for one email and from one address (the N+1th answers the same page and sends
nothing), a mail server that refuses (a warning, not an ERROR), and a forged Host (the
link still points at SITE_URL). The end-to-end flow, with a real gateway and SMTP
server, is in test_password_reset_e2e.py.
"""

from __future__ import annotations

import itertools
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts.models import User
from bench.harness import free_port

pytestmark = pytest.mark.django_db

PAGE = "/accounts/password_reset/"
DONE = "/accounts/password_reset/done/"
SENT = "If that address belongs to an account, we sent it a link"
# Buckets live in Redis for the whole run: every test asks from addresses of its own.
_addresses = itertools.count(random.randrange(1 << 22))


def new_address() -> str:
    n = next(_addresses)
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@pytest.fixture
def enabled(settings: Any) -> Any:
    """Turn the reset on (the suite's mail goes to `mail.outbox`)."""
    settings.PASSWORD_RESET_ENABLED = True
    settings.SITE_URL = "https://chat.example.com"
    return settings


@pytest.fixture
def account(make_user: Callable[..., User]) -> User:
    return make_user(f"reset-{uuid.uuid4().hex[:8]}", email=f"{uuid.uuid4().hex[:12]}@example.com")


def ask(email: str, address: str, **extra: Any) -> Any:
    return Client(REMOTE_ADDR=address).post(PAGE, {"email": email}, **extra)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_without_a_mail_server_the_page_says_reset_is_unavailable_and_sends_nothing(
    account: User, caplog: pytest.LogCaptureFixture
) -> None:
    # The suite runs without EMAIL_HOST, as the reviewed gateways did.
    page = Client().get(PAGE)
    asked = [ask(account.email, new_address()) for _ in range(3)]

    assert page.status_code == 200
    assert b"Password reset is unavailable" in page.content
    assert b"<form" not in page.content
    assert [r.status_code for r in asked] == [200] * 3
    assert all(b"Password reset is unavailable" in r.content for r in asked)
    assert mail.outbox == []
    assert errors_logged(caplog) == []


def test_a_reset_link_goes_to_the_accounts_email_with_site_url_whatever_the_host(
    enabled: Any, account: User, caplog: pytest.LogCaptureFixture
) -> None:
    enabled.ALLOWED_HOSTS = ["testserver", "evil.example"]

    answer = ask(account.email.upper(), new_address(), HTTP_HOST="evil.example")

    assert answer.status_code == 302 and answer["Location"] == DONE
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == [account.email]
    assert "https://chat.example.com/accounts/reset/" in str(sent.body)
    assert "evil.example" not in str(sent.body)
    assert account.username in str(sent.body)
    assert errors_logged(caplog) == []


def test_an_unknown_email_gets_the_same_answer_and_no_mail(enabled: Any) -> None:
    answer = ask(f"{uuid.uuid4().hex}@example.com", new_address())
    done = Client().get(DONE)

    assert answer.status_code == 302 and answer["Location"] == DONE
    assert SENT.encode() in done.content
    assert mail.outbox == []


def test_the_email_budget_refuses_the_next_request_with_the_same_answer(
    enabled: Any, account: User
) -> None:
    # From a new address each time: only the email's budget (3) is counted.
    enabled.PASSWORD_RESET_EMAIL_BURST = 3.0

    answers = [ask(account.email, new_address()) for _ in range(4)]

    assert [(a.status_code, a["Location"]) for a in answers] == [(302, DONE)] * 4
    assert len(mail.outbox) == 3


def test_the_address_budget_refuses_the_next_request_with_the_same_answer(
    enabled: Any, make_user: Callable[..., User]
) -> None:
    # One address asking for many accounts' emails: its budget (3) is counted.
    enabled.PASSWORD_RESET_ADDRESS_BURST = 3.0
    users = [
        make_user(f"many-{uuid.uuid4().hex[:8]}", email=f"{uuid.uuid4().hex[:12]}@example.com")
        for _ in range(4)
    ]
    address = new_address()

    answers = [ask(user.email, address) for user in users]

    assert [(a.status_code, a["Location"]) for a in answers] == [(302, DONE)] * 4
    assert [m.to for m in mail.outbox] == [[u.email] for u in users[:3]]


def test_a_mail_server_that_fails_is_a_warning_not_an_error(
    enabled: Any, account: User, caplog: pytest.LogCaptureFixture
) -> None:
    enabled.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    enabled.EMAIL_HOST = "127.0.0.1"
    enabled.EMAIL_PORT = free_port()  # nobody listens
    enabled.EMAIL_TIMEOUT = 2

    answer = ask(account.email, new_address())

    assert answer.status_code == 302 and answer["Location"] == DONE
    assert errors_logged(caplog) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"password reset email to user {account.pk} failed" in w for w in warnings)
