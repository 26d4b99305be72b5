"""The settings dialog's account part in real Chromium against real gateway processes.

A password change signs out the other browsers of the user and keeps the one it was
made in; busy until a time is shown to a contact and ends by itself; sign out
everywhere signs out every browser, this one too.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import Locator, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from accounts.models import User
from messaging import services
from tests.e2e.browser import (
    PASSWORD,
    Web,
    conversation,
    make_person,
    off_loop,
    online,
    shot,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NEW_PASSWORD = "a brand new passphrase 8"
LOGIN_PAGE = re.compile(r"/accounts/login/")


def open_settings(page: Page) -> Locator:
    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    expect(dialog.get_by_label("Display name")).to_be_focused()  # the values are in
    return dialog


def test_a_password_change_signs_out_the_other_browser_and_keeps_this_one(web: Web) -> None:
    # Tried: Ana, signed in in two browsers, changes her password in the first by
    # keyboard: a wrong current password and two new ones that differ are refused next
    # to their fields; then the change. The second browser lands on the login page
    # within the credential check interval; the first stays signed in and online (its
    # socket, closed with the old session, connects again); the new password logs in.
    ana = make_person("ana", "Ana Lima")
    first = web.log_in(ana, gateway=0)
    second = web.log_in(ana, gateway=1)
    dialog = open_settings(first)
    current = dialog.get_by_label("Current password")
    new = dialog.get_by_label("New password", exact=True)
    repeat = dialog.get_by_label("Repeat the new password")

    current.fill("not my password")
    new.fill(NEW_PASSWORD)
    repeat.fill(NEW_PASSWORD)
    repeat.press("Enter")
    error = first.locator("#password-current-error")
    expect(error).to_have_text("Your current password is not right.")
    expect(current).to_have_attribute("aria-invalid", "true")
    expect(current).to_be_focused()

    current.fill(PASSWORD)
    repeat.fill(NEW_PASSWORD + "x")
    repeat.press("Enter")
    expect(first.locator("#password-repeat-error")).to_have_text(
        "The two new passwords are not the same."
    )
    expect(repeat).to_be_focused()
    assert off_loop(lambda: User.objects.get(pk=ana.pk).password) == ana.password

    repeat.fill(NEW_PASSWORD)
    repeat.press("Enter")
    expect(first.locator("#password-done")).to_have_text(
        "Password changed. Every other device was signed out."
    )
    expect(current).to_have_value("")
    expect(error).to_be_hidden()
    shot(first, "settings-password-changed")

    second.wait_for_url(LOGIN_PAGE, timeout=15_000)
    dialog.get_by_role("button", name="Cancel").click()
    first.wait_for_timeout(3_000)  # past the next credential check of the first's socket
    online(first)
    assert not LOGIN_PAGE.search(first.url)
    first.reload()
    online(first)
    assert not LOGIN_PAGE.search(first.url)

    second.get_by_label("Username").fill("ana")
    second.get_by_label("Password").fill(NEW_PASSWORD)
    second.get_by_role("button", name="Log in").click()
    second.wait_for_url(f"{web.url(1)}/")
    online(second)


def test_busy_until_is_shown_to_a_contact_and_ends_by_itself(
    make_web: Callable[..., Web],
) -> None:
    # Tried: Ana sets "Busy until: 1 hour" in the settings dialog; Bo, her contact, sees
    # her busy. Then she sets a custom end a few seconds ahead (rather than wait an
    # hour): once it passes, Bo sees her online again without anyone doing anything,
    # her own toggle says available, and the stored status is available with no end.
    web = make_web(PRESENCE_SWEEP_INTERVAL="1")
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    off_loop(services.accept_request, user=bo, conversation_id=chat.pk)
    bo_page = web.log_in(bo, gateway=1)
    ana_page = web.log_in(ana, gateway=0)
    dot = conversation(bo_page, "Ana Lima").locator(".presence")
    expect(dot).to_have_attribute("data-state", "online")

    dialog = open_settings(ana_page)
    expect(ana_page.locator("#settings-busy-now")).to_have_text("You are available.")
    dialog.get_by_label("Busy until", exact=True).select_option(label="1 hour")
    dialog.get_by_role("button", name="Save").click()
    expect(ana_page.locator("#toast")).to_have_text("Settings saved.")
    expect(ana_page.locator("#busy-toggle")).to_have_attribute("aria-pressed", "true")
    expect(dot).to_have_attribute("data-state", "busy")
    stored = off_loop(lambda: User.objects.get(pk=ana.pk))
    assert stored.status == "busy" and stored.status_until is not None
    ahead = stored.status_until - timezone.now()
    assert timedelta(minutes=59) < ahead <= timedelta(hours=1)
    shot(bo_page, "settings-busy-seen-by-contact")

    # Now a custom end a few seconds ahead, typed in the date-time field (local time).
    dialog = open_settings(ana_page)
    expect(ana_page.locator("#settings-busy-now")).to_contain_text("You are busy until")
    dialog.get_by_label("Busy until", exact=True).select_option(label="A date and time…")
    custom = dialog.get_by_label("Busy until (date and time)")
    expect(custom).to_be_focused()
    local = ana_page.evaluate(
        """() => {
          const d = new Date(Date.now() + 6000), p = (n) => String(n).padStart(2, "0");
          return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T` +
                 `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
        }"""
    )
    custom.fill(local)
    custom.press("Enter")
    # Not the toast: the first save's "Settings saved." may still be showing.
    wait_until(
        lambda: off_loop(
            lambda: User.objects.filter(
                pk=ana.pk, status_until__lt=timezone.now() + timedelta(seconds=7)
            ).exists()
        )
    )
    until = off_loop(lambda: User.objects.get(pk=ana.pk).status_until)
    assert until is not None
    expect(dot).to_have_attribute("data-state", "busy")

    # It passes: Bo sees her online again without anyone doing anything, her own toggle
    # says available, and the stored status is available with no end.
    expect(dot).to_have_attribute("data-state", "online", timeout=20_000)
    assert timezone.now() >= until
    expect(ana_page.locator("#busy-toggle")).to_have_attribute("aria-pressed", "false")
    wait_until(
        lambda: off_loop(
            lambda: User.objects.filter(pk=ana.pk, status="available", status_until=None).exists()
        )
    )


def test_sign_out_everywhere_signs_out_every_browser(web: Web) -> None:
    # Tried: Ana, signed in in two browsers, asks to sign out everywhere, cancels the
    # confirmation (nothing happens), then confirms: both browsers land on the login
    # page, and the first one's session no longer opens the app.
    ana = make_person("ana", "Ana Lima")
    first = web.log_in(ana, gateway=0)
    second = web.log_in(ana, gateway=1)
    open_settings(first)
    button = first.get_by_role("button", name="Sign out everywhere")

    button.click()
    confirm = first.get_by_role("dialog", name="Sign out everywhere?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(button).to_be_focused()
    assert off_loop(lambda: User.objects.get(pk=ana.pk).login_epoch) == 0

    button.press("Enter")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Sign out everywhere").click()
    first.wait_for_url(LOGIN_PAGE, timeout=15_000)
    second.wait_for_url(LOGIN_PAGE, timeout=15_000)
    assert off_loop(lambda: User.objects.get(pk=ana.pk).login_epoch) == 1
    first.goto(f"{web.url(0)}/")
    first.wait_for_url(LOGIN_PAGE)


def change_password(page: Page) -> Locator:
    """Change Ana's password in the settings dialog by keyboard; return the dialog."""
    dialog = open_settings(page)
    dialog.get_by_label("Current password").fill(PASSWORD)
    dialog.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    dialog.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    dialog.get_by_label("Repeat the new password").press("Enter")
    expect(page.locator("#password-done")).to_have_text(
        "Password changed. Every other device was signed out."
    )
    return dialog


def stopped(page: Page) -> None:
    """Wait until the gateway has closed the page's socket (4401) and its client stopped."""
    expect(page.locator("#conn-status")).to_have_attribute(
        "data-state", "stopped", timeout=(settings.WS_AUTH_CHECK_INTERVAL + 10) * 1000
    )


def answer_late(page: Page, until: Callable[[], None]) -> Callable[[Route], None]:
    """A route handler that holds a request's answer back until `until()` returns.

    The request reaches the server at once. Playwright's `route.fetch` stores the
    answer's cookies in the browser at once too, where a real browser stores them with
    the answer: they are put back as they were until the answer is given.
    """

    def handle(route: Route) -> None:
        cookies = page.context.cookies()
        answer = route.fetch()
        page.context.clear_cookies()
        page.context.add_cookies(cookies)  # type: ignore[arg-type]
        until()
        route.fulfill(response=answer)

    return handle


def test_a_password_change_answered_after_the_socket_closed_keeps_this_browser(web: Web) -> None:
    # Tried: Ana changes her password, and its answer (which carries her page's new
    # session key) is held back until the gateway has closed her socket 4401, as it does
    # to every socket of the replaced session. The page waits for the answer before it
    # asks whether it is still signed in, so it stays signed in and online; it used to
    # ask at once, with the old key, and go to the login page.
    ana = make_person("ana", "Ana Lima")
    page = web.log_in(ana, gateway=0)

    def until_closed() -> None:  # the gateway has closed the page's socket 4401
        stopped(page)

    page.route("**/api/v1/users/me/password", answer_late(page, until_closed))
    dialog = change_password(page)
    dialog.get_by_role("button", name="Cancel").click()
    online(page)
    assert not LOGIN_PAGE.search(page.url)


def test_a_password_change_in_one_tab_keeps_the_other_tabs_of_the_browser(web: Web) -> None:
    # Tried: Ana has two tabs open and changes her password in the first; its answer
    # (the new session key, a cookie both tabs share) is held back until the gateway has
    # closed the second tab's socket 4401 too. The second tab hears of the change in
    # flight from the first and waits for it before it asks whether it is still signed in;
    # it used to ask at once, with the old key, and go to the login page.
    ana = make_person("ana", "Ana Lima")
    first = web.log_in(ana, gateway=0)
    second = web.watch.page(first.context.new_page(), "ana-2")
    second.goto(f"{web.url(0)}/")
    online(second)
    asked = []
    second.on("request", lambda r: asked.append(r.url) if r.url.endswith("/users/me") else None)

    def until_closed_and_asked() -> None:
        stopped(second)
        # Without the wait the second tab asks now, with the old key: give it the time.
        if not asked:
            with contextlib.suppress(PlaywrightTimeoutError):  # it waits, as it should
                second.wait_for_event("request", lambda r: r.url.endswith("/me"), timeout=2000)

    first.route("**/api/v1/users/me/password", answer_late(first, until_closed_and_asked))
    change_password(first)
    online(second)
    online(first)
    assert not LOGIN_PAGE.search(second.url)
    assert not LOGIN_PAGE.search(first.url)
