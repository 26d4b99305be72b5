"""Password reset end to end: a real gateway, a real SMTP server, a browser's requests.

Tried: ask for a reset of an account's email, follow the link from the mail the local
SMTP server received, set a new password there, log in with it; and ask once more than
the email's budget allows: the page answers the same, and no second mail comes.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

import pytest

from accounts.models import User
from bench.harness import http_post_json
from tests.e2e.conftest import MakeDeployment
from tests.e2e.mailserver import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SITE_URL = "http://chat.test"
NEW_PASSWORD = "a brand new and long passphrase 9"
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class Browser:
    """Cookies, CSRF tokens and redirects, as a browser does them (urllib)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[str, str]:
        """GET `path` (following redirects); return the final path and the page."""
        with self.opener.open(self.base + path, timeout=30) as response:
            return urllib.parse.urlsplit(response.url).path, response.read().decode()

    def submit(self, path: str, fields: dict[str, str]) -> tuple[str, str]:
        """Load the form at `path`, POST `fields` with its CSRF token; return where it led."""
        url, page = self.get(path)
        match = CSRF.search(page)
        assert match is not None, page
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": match[1], **fields}).encode()
        request = urllib.request.Request(self.base + url, data=body, method="POST")  # noqa: S310 - http://127.0.0.1
        with self.opener.open(request, timeout=30) as response:
            return urllib.parse.urlsplit(response.url).path, response.read().decode()


def test_a_reset_mail_arrives_its_link_sets_a_new_password_and_the_next_ask_is_refused(
    make_deployment: MakeDeployment,
    smtp_server: SmtpServer,
    make_user: Callable[..., User],
) -> None:
    make_user("resetana", email="ana@example.com")
    env = {**smtp_server.worker_env(), "SITE_URL": SITE_URL, "PASSWORD_RESET_EMAIL_BURST": "1"}
    gateway = make_deployment(gateways=1, env=env).gateways[0]
    browser = Browser(gateway.http_url)

    asked = browser.submit("/accounts/password_reset/", {"email": "ana@example.com"})
    mail = smtp_server.wait_for(lambda m: "ana@example.com" in m.rcpt_tos, timeout=20)
    again = browser.submit("/accounts/password_reset/", {"email": "ana@example.com"})
    time.sleep(1.5)  # a second mail, if one were sent, would be here by now
    mails = len(smtp_server.messages)

    link = re.search(rf"{re.escape(SITE_URL)}(/accounts/reset/\S+/)", mail.text)
    assert link is not None, mail.text
    landed, _ = browser.submit(
        link[1], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    status, token = http_post_json(
        f"{gateway.http_url}/api/v1/auth/token",
        {"username": "resetana", "password": NEW_PASSWORD},
    )
    reused, page = browser.get(link[1])

    assert asked[0] == again[0] == "/accounts/password_reset/done/"
    assert asked[1] == again[1] and "we sent it a link" in asked[1]
    assert mails == 1
    assert mail.subject == "Set a new password for chat.test"
    assert landed == "/accounts/reset/done/"
    assert status == 200 and "access" in token, json.dumps(token)
    assert "This link does not work" in page, reused
    assert " ERROR " not in gateway.output()
