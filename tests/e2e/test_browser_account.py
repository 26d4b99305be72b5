"""Account recovery in real Chromium against a real gateway and a real SMTP server.

An email given at sign-up receives a password reset link ("Forgot your password?" on
the login page); the link sets a new password, the old one stops working; the password
change page is the app's own, not the admin's.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.e2e.browser import Axe, Web, make_person, off_loop, online, shot
from tests.e2e.mailserver import SmtpServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FIRST = "first passphrase of ana 1"
SECOND = "second passphrase of ana 2"
THIRD = "third passphrase of ana 3"


def log_in(page: Page, base: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def no_admin(page: Page) -> None:
    """The page is in the app's look (its auth card) and links nowhere in the admin."""
    expect(page.locator(".auth-card")).to_be_visible()
    expect(page.locator('a[href*="/admin"]')).to_have_count(0)


def test_a_forgotten_password_is_reset_by_email_and_changed_in_the_apps_page(
    make_web: Callable[..., Web], smtp_server: SmtpServer
) -> None:
    """Tried: Ana signs up with an email address, logs out, follows "Forgot your
    password?", asks for a link; the mail reaches the SMTP server; its link sets a new
    password; the old one is refused, the new one logs in. Then the password change page
    (once Django admin's, with links into /admin/) is the app's: it changes the password
    again. axe finds nothing serious on the sign-up and change pages. Without an email
    field at sign-up there is no address to send the link to, and the change page is
    the admin's."""
    web = make_web(gateways=1, SITE_URL="http://chat.test", **smtp_server.worker_env())
    base = web.url()
    axe = Axe()
    page = web.watch.page(web.context(bypass_csp=True).new_page(), "ana")

    page.goto(f"{base}/accounts/signup/")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Display name").fill("Ana Lima")
    page.get_by_label("Email address").fill("ana@example.com")
    page.get_by_label("Password", exact=True).fill(FIRST)
    page.get_by_label("Password again").fill(FIRST)
    axe.check(page, "sign-up with an email")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/")
    online(page)
    assert off_loop(lambda: User.objects.get(username="ana").email) == "ana@example.com"

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/accounts/(login|logout)/"))
    page.goto(f"{base}/accounts/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email address").fill("ana@example.com")
    shot(page, "password-reset")
    page.get_by_role("button", name="Send the link").click()
    expect(page.locator("#reset-sent")).to_contain_text("we sent it a link")
    no_admin(page)

    mail = smtp_server.wait_for(lambda m: "ana@example.com" in m.rcpt_tos, timeout=20)
    link = re.search(r"http://chat\.test(/accounts/reset/\S+/)", mail.text)
    assert link is not None, mail.text
    page.goto(base + link[1])
    expect(page.get_by_role("heading", name="Set a new password")).to_be_visible()
    no_admin(page)
    page.get_by_label("New password", exact=True).fill(SECOND)
    page.get_by_label("New password confirmation").fill(SECOND)
    page.get_by_role("button", name="Set the password").click()
    expect(page.locator("#reset-complete")).to_be_visible()
    no_admin(page)

    log_in(page, base, FIRST)
    expect(page.locator("#login-error")).to_contain_text("didn't match")
    log_in(page, base, SECOND)
    page.wait_for_url(f"{base}/")
    online(page)

    page.goto(f"{base}/accounts/password_change/")
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    no_admin(page)
    axe.check(page, "password change")
    page.get_by_label("Current password").fill(SECOND)
    page.get_by_label("New password", exact=True).fill(THIRD)
    page.get_by_label("New password again").fill(THIRD)
    page.get_by_role("button", name="Change the password").click()
    expect(page.locator("#change-done")).to_be_visible()
    no_admin(page)
    page.get_by_role("link", name="Back to the chat").click()
    page.wait_for_url(f"{base}/")
    online(page)  # still signed in
    other = web.watch.page(web.context().new_page(), "ana elsewhere")
    log_in(other, base, THIRD)
    other.wait_for_url(f"{base}/")
    online(other)
    axe.assert_clean()


def test_notifications_refused_with_not_now_are_turned_on_from_settings(web: Web) -> None:
    """Tried: Ana answers the app's notification banner "Not now": it goes away and stays
    away after a reload. In Settings, browser notifications say off, with a button that
    offers them again; she allows them there (the browser grants), and settings say on.
    Without it, "Not now" was final: nothing in the app offered notifications again."""
    ana = make_person("ana", "Ana Lima")
    page = web.log_in(ana)
    banner = page.locator("#notify-banner")
    expect(banner).to_be_visible()
    banner.get_by_role("button", name="Not now").click()
    expect(banner).to_be_hidden()
    page.reload()
    online(page)
    expect(banner).to_be_hidden()

    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    expect(dialog.locator("#settings-browser")).to_have_text(
        "Browser notifications are off for this browser."
    )
    page.context.grant_permissions(["notifications"])
    dialog.get_by_role("button", name="Turn on browser notifications").click()
    expect(dialog.locator("#settings-browser")).to_have_text(
        "Browser notifications are on for this browser."
    )
    expect(dialog.get_by_role("button", name="Turn on browser notifications")).to_be_hidden()
