"""Notifications in the web app, in real Chromium against real gateway processes.

Per-conversation notify level and mute (the header's menu), the settings dialog's email part,
@mentions (highlighted, autocompleted in the composer), and the service worker showing
and taking back Web Push notifications, with the tab open and with it closed.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, CDPSession, Page, Worker, expect

from accounts.models import User
from messaging import devices, services
from messaging.models import Membership
from tests.e2e.browser import (
    PHONE,
    Web,
    bubbles,
    conversation,
    make_person,
    off_loop,
    online,
    shot,
    wait_until,
)
from tests.e2e.conftest import MakeWorkers
from tests.e2e.pushservice import PushService

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_notify_level_and_mute_are_set_from_the_conversation_header(web: Web) -> None:
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    off_loop(services.create_group, creator=ana, title="Book club", member_ids=[])
    page = web.log_in(ana)
    conversation(page, "Bo Berg").click()
    expect(page.locator("#chat-title")).to_have_text("Bo Berg")

    # By keyboard: the menu button opens on ArrowDown at the first item; arrows move.
    button = page.get_by_role("button", name="Notifications")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.focus()
    page.keyboard.press("ArrowDown")
    menu = page.get_by_role("menu", name="Notifications for this conversation")
    expect(menu).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    everything = menu.get_by_role("menuitemradio", name="All messages")
    mentions = menu.get_by_role("menuitemradio", name="Only @mentions")
    nothing = menu.get_by_role("menuitemradio", name="Nothing")
    mute = menu.get_by_role("menuitemcheckbox", name="Mute")
    expect(everything).to_be_focused()
    expect(everything).to_have_attribute("aria-checked", "true")
    expect(mute).to_have_attribute("aria-checked", "false")
    page.keyboard.press("ArrowDown")
    expect(mentions).to_be_focused()
    page.keyboard.press("Enter")
    expect(menu).to_be_hidden()
    expect(button).to_be_focused()  # the focus goes back to the menu button
    membership = Membership.objects.filter(user=ana, conversation=chat)
    wait_until(lambda: membership.get().notify == "mentions")
    expect(button).to_have_attribute("data-state", "mentions")

    # After a reload the server's answer is shown: still only @mentions.
    page.reload()
    online(page)
    conversation(page, "Bo Berg").click()
    button.click()
    expect(mentions).to_have_attribute("aria-checked", "true")
    expect(everything).to_have_attribute("aria-checked", "false")
    expect(nothing).to_have_attribute("aria-checked", "false")
    expect(mentions).to_be_focused()  # it opens at the checked item
    shot(page, "notify-menu")
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(button).to_be_focused()

    # Mute, with the mouse: the list shows the muted icon, the menu the checked box.
    expect(conversation(page, "Bo Berg").locator(".muted-mark")).to_have_count(0)
    button.click()
    mute.click()
    expect(conversation(page, "Bo Berg").locator(".muted-mark")).to_be_visible()
    label = re.compile(r"^Bo Berg, .*muted$")
    expect(conversation(page, "Bo Berg")).to_have_attribute("aria-label", label)
    wait_until(lambda: membership.get().muted)
    assert membership.get().notify == "mentions"  # the level is kept under mute
    button.click()
    expect(mute).to_have_attribute("aria-checked", "true")
    page.mouse.click(5, 790)  # a click elsewhere closes the menu
    expect(menu).to_be_hidden()
    shot(page, "notify-muted")

    # A muted conversation's unread messages do not count in the title.
    conversation(page, "Book club").click()
    off_loop(
        services.send_message,
        sender=bo,
        conversation_id=chat.pk,
        client_msg_id="00000000-0000-4000-8000-000000000001",
        body="are you there?",
    )
    expect(conversation(page, "Bo Berg").locator(".badge")).to_contain_text("1")
    expect(page).to_have_title("Chat")


def test_notify_menu_works_at_phone_width(web: Web) -> None:
    ana = make_person("ana", "Ana Lima")
    group = off_loop(services.create_group, creator=ana, title="Book club", member_ids=[])
    page = web.log_in(ana, viewport=PHONE)
    conversation(page, "Book club").click()
    button = page.get_by_role("button", name="Notifications")
    button.click()
    menu = page.get_by_role("menu", name="Notifications for this conversation")
    box = menu.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    shot(page, "notify-menu-phone")
    menu.get_by_role("menuitemradio", name="Nothing").click()
    wait_until(lambda: Membership.objects.get(user=ana, conversation=group).notify == "none")
    expect(button).to_have_attribute("data-state", "none")


def test_email_settings_dialog_saves_the_address_and_the_choice(web: Web) -> None:
    ana = make_person("ana", "Ana Lima")
    page = web.log_in(ana)
    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    expect(dialog).to_be_visible()
    email = dialog.get_by_label("Email address")
    checkbox = dialog.get_by_label("Email me about messages I miss")
    expect(dialog.get_by_label("Display name")).to_be_focused()  # once the values are in
    expect(email).to_have_value("")
    expect(checkbox).to_be_checked()

    # A bad address: the server's error shows next to the field, nothing is saved.
    email.fill("not an address")
    email.press("Enter")
    error = dialog.locator("#settings-email-error")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_be_focused()
    assert "settings-email-error" in (email.get_attribute("aria-describedby") or "")
    assert User.objects.get(pk=ana.pk).email == ""
    shot(page, "settings-bad-email")

    # A good one, and the checkbox off.
    email.fill("ana@example.com")
    expect(error).to_be_hidden()
    expect(email).not_to_have_attribute("aria-invalid", "true")
    checkbox.uncheck()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#toast")).to_have_text("Settings saved.")
    saved = User.objects.get(pk=ana.pk)
    assert (saved.email, saved.email_notifications) == ("ana@example.com", False)

    # Opened again after a reload: what was saved.
    page.reload()
    online(page)
    page.get_by_role("button", name="Settings", exact=True).click()
    expect(email).to_have_value("ana@example.com")
    expect(checkbox).not_to_be_checked()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()


def test_mentions_are_highlighted_and_autocompleted(web: Web) -> None:
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    bea = make_person("bea", "Bea Stone")
    make_person("bob", "Bob Outsider")  # not a member: never offered, never highlighted
    off_loop(services.create_group, creator=ana, title="Lunch", member_ids=[bo.pk, bea.pk])
    ana_page = web.log_in(ana, gateway=0)
    bo_page = web.log_in(bo, gateway=1)
    conversation(ana_page, "Lunch").click()
    conversation(bo_page, "Lunch").click()

    composer = ana_page.get_by_role("combobox", name="Message")
    listbox = ana_page.get_by_role("listbox", name="People to mention")
    options = listbox.get_by_role("option")
    expect(composer).to_have_attribute("aria-expanded", "false")
    composer.press_sequentially("hi @b")
    expect(listbox).to_be_visible()
    expect(composer).to_have_attribute("aria-expanded", "true")
    expect(options.locator(".mention-username")).to_have_text(["@bea", "@bo"])
    expect(options.locator(".mention-name")).to_have_text(["Bea Stone", "Bo Berg"])
    expect(options.first).to_have_attribute("aria-selected", "true")
    expect(composer).to_have_attribute("aria-activedescendant", f"mention-option-{bea.pk}")
    composer.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    expect(composer).to_have_attribute("aria-activedescendant", f"mention-option-{bo.pk}")
    shot(ana_page, "mention-autocomplete")
    composer.press("Enter")  # inserts; does not send
    expect(composer).to_have_value("hi @bo ")
    expect(listbox).to_be_hidden()
    expect(composer).to_have_attribute("aria-expanded", "false")
    assert composer.get_attribute("aria-activedescendant") is None
    expect(bubbles(ana_page)).to_have_count(0)

    # Display names match too; Escape closes, and the list stays closed for that word.
    composer.fill("")
    composer.press_sequentially("@sto")
    expect(options.locator(".mention-username")).to_have_text(["@bea"])
    composer.press("Escape")
    expect(listbox).to_be_hidden()
    composer.press_sequentially("n")
    expect(listbox).to_be_hidden()
    # Tab inserts as well; a mouse click on an option too.
    composer.fill("")
    composer.press_sequentially("@b")
    composer.press("Tab")
    expect(composer).to_have_value("@bea ")
    expect(composer).to_be_focused()
    composer.press_sequentially("and @bo")
    expect(options.locator(".mention-username")).to_have_text(["@bo"])
    options.first.click()
    expect(composer).to_have_value("@bea and @bo ")
    expect(composer).to_be_focused()

    composer.fill("hi @bo, lunch?")
    composer.press("Enter")
    expect(bubbles(bo_page)).to_have_text(["hi @bo, lunch?"])
    # On Bo's screen: `@bo` is a mention of Bo; on Ana's a mention of someone else.
    mention = bo_page.locator("#message-list .body .mention")
    expect(mention).to_have_text(["@bo"])
    expect(mention).to_have_class("mention mention-me")
    ana_mention = ana_page.locator("#message-list .body .mention")
    expect(ana_mention).to_have_text(["@bo"])
    expect(ana_mention).to_have_class("mention")

    # The server's rule: a trailing `.` ends the sentence; a non-member is plain text.
    ana_page.get_by_role("combobox", name="Message").fill("ask @BEA. or @bob")
    ana_page.get_by_role("combobox", name="Message").press("Enter")
    expect(bubbles(bo_page)).to_have_text(["hi @bo, lunch?", "ask @BEA. or @bob"])
    expect(bo_page.locator("#message-list .body .mention")).to_have_text(["@bo", "@BEA"])
    expect(bo_page.locator("#message-list .mention-me")).to_have_count(1)
    shot(bo_page, "mentions")


# --------------------------------------------------------------- the service worker and Web Push


class PushDriver:
    """Deliver pushes to the app's service worker through a DevTools session of `page`.

    Chromium's push service (FCM) is out of reach here, and no push subscription is
    needed: DevTools delivers a push straight into the worker's `push` event, as the
    "Push" button of DevTools' Application panel does. Exactly:

        cdp = context.new_cdp_session(page)   # the ServiceWorker domain is on page targets
        cdp.send("ServiceWorker.enable")      # then ServiceWorker.workerRegistrationUpdated
                                              # {registrations: [{registrationId, isDeleted,
                                              #   scopeURL: "<origin>/"}]} names the worker
        cdp.send("ServiceWorker.deliverPushMessage",
                 {"origin": "<origin>", "registrationId": id, "data": json.dumps(payload)})

    (`ServiceWorker.stopAllWorkers` stops the worker; a push starts it again.) The page
    may be any page of the context, even about:blank: the domain covers the context's
    workers. The `notifications` permission is granted to the origin beforehand
    (`showNotification` needs it).

    DevTools answers before the worker has the push; `wait_handled` waits until the
    worker counts every push sent as done (`self.pushesHandled` in sw.js). Nothing may read
    the notifications before that: Chromium's `getNotifications()` deletes from its store
    a notification written but not yet on display, unless it was created after the read
    began, so a read while a push is being shown can lose it for good (the notification
    stays on screen, and every later read lists it no more). This test once polled while
    two pushes were shown, and lost one of them that way in about one full run in three.
    """

    def __init__(self, context: BrowserContext, page: Page, origin: str) -> None:
        self.context = context
        self.page = page
        self.origin = origin
        self.sent = 0  # pushes delivered since the worker last started
        self.cdp: CDPSession = context.new_cdp_session(page)
        self.registrations: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.cdp.on("ServiceWorker.workerRegistrationUpdated", self._registrations)
        self.cdp.on("ServiceWorker.workerVersionUpdated", self._versions)
        self.cdp.send("ServiceWorker.enable")
        self.registration_id = self._wait_for_registration()

    def _registrations(self, event: dict[str, Any]) -> None:
        for registration in event["registrations"]:
            self.registrations[registration["registrationId"]] = registration

    def _versions(self, event: dict[str, Any]) -> None:
        for version in event["versions"]:
            self.versions[version["versionId"]] = version

    def _wait_for_registration(self) -> str:
        deadline = time.monotonic() + 10
        while True:
            for registration in self.registrations.values():
                if registration["scopeURL"] == f"{self.origin}/" and not registration["isDeleted"]:
                    return str(registration["registrationId"])
            assert time.monotonic() < deadline, f"no worker registered: {self.registrations}"
            self.page.wait_for_timeout(50)  # DevTools events are dispatched while waiting

    def stop_workers(self) -> None:
        """Stop the worker, as the browser does a while after its last tab closed."""
        self.cdp.send("ServiceWorker.stopAllWorkers")
        deadline = time.monotonic() + 10
        while not all(
            v["runningStatus"] == "stopped"
            for v in self.versions.values()
            if v["registrationId"] == self.registration_id
        ):
            assert time.monotonic() < deadline, f"the worker did not stop: {self.versions}"
            self.page.wait_for_timeout(50)
        self.sent = 0  # a push starts it again, counting from 0

    def push(self, payload: dict[str, Any]) -> None:
        self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": self.origin,
                "registrationId": self.registration_id,
                "data": json.dumps(payload),
            },
        )
        self.sent += 1

    def wait_handled(self) -> None:
        """Wait until the worker has finished every push sent since it last started."""
        (worker,) = self.context.service_workers  # the handle outlives a restart
        deadline = time.monotonic() + 10
        while (handled := worker.evaluate("() => self.pushesHandled")) < self.sent:
            assert time.monotonic() < deadline, f"{handled} of {self.sent} pushes handled"
            time.sleep(0.05)
        assert handled == self.sent, f"{handled} pushes handled, {self.sent} sent"


# What a page of the app, or the worker itself, reads of the notifications shown.
_FIELDS = "(shown) => shown.map((n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data}))"
SHOWN = f"""() => navigator.serviceWorker.ready
    .then((registration) => registration.getNotifications()).then({_FIELDS})"""
SHOWN_IN_WORKER = f"() => self.registration.getNotifications().then({_FIELDS})"


def _summary(shown: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((n["tag"], n["title"], n["body"]) for n in shown)


def shown_notifications(
    where: Page | Worker, expected: list[dict[str, Any]], *, after: PushDriver
) -> list[dict[str, Any]]:
    """The notifications shown once the worker handled the pushes `after` sent.

    `where` is a page of the app or the service worker itself; they must be `expected`
    (title, body, tag; any order).
    """
    after.wait_handled()
    script = SHOWN_IN_WORKER if isinstance(where, Worker) else SHOWN
    shown: list[dict[str, Any]] = where.evaluate(script)
    assert _summary(shown) == _summary(expected), f"shown: {shown}, expected: {expected}"
    return shown


def message_push(conversation_id: int, seq: int, body: str, **extra: Any) -> dict[str, Any]:
    """A `message` push as the worker sends it (messaging/notifications/payloads.py)."""
    return {
        "type": "message",
        "conversation": conversation_id,
        "seq": seq,
        "message_id": 9000 + seq,
        "sender": {"id": 3, "display_name": "Ana Lima"},
        "title": "Ana Lima",
        "body": body,
        "unread": 1,
        "url": f"/#c{conversation_id}",
        **extra,
    }


def app_page(web: Web, user: User) -> Page:
    """Log `user` in, allow notifications, and wait for the worker to control the page."""
    page = web.log_in(user)
    page.context.grant_permissions(["notifications"], origin=web.url(0))
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    return page


def test_service_worker_shows_a_message_push_and_a_remove_push_takes_it_back(web: Web) -> None:
    """Pushes go in by DevTools (`PushDriver`: `ServiceWorker.deliverPushMessage`, no push
    subscription); what shows is read with `registration.getNotifications()` in the page.
    """
    bo = make_person("bo", "Bo Berg")
    ana = make_person("ana", "Ana Lima")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    page = app_page(web, bo)
    pushes = PushDriver(page.context, page, web.url(0))

    pushes.push(message_push(chat.pk, 41, "Lunch at 12:30?"))
    (note,) = shown_notifications(
        page,
        [{"title": "Ana Lima", "body": "Lunch at 12:30?", "tag": f"conversation-{chat.pk}"}],
        after=pushes,
    )
    assert note["data"] == {"conversation": chat.pk, "seq": 41, "url": f"{web.url(0)}/#c{chat.pk}"}

    # A newer message of the same conversation replaces it (one notification per chat);
    # another conversation gets its own.
    pushes.push(message_push(chat.pk, 42, "Or at one?"))
    pushes.push(message_push(chat.pk + 1000, 7, "Elsewhere", title="Book club"))
    tag = f"conversation-{chat.pk}"
    shown_notifications(
        page,
        [
            {"title": "Ana Lima", "body": "Or at one?", "tag": tag},
            {"title": "Book club", "body": "Elsewhere", "tag": f"conversation-{chat.pk + 1000}"},
        ],
        after=pushes,
    )

    # A `remove` up to an older seq leaves the newer message shown; up to it, it goes.
    pushes.push({"type": "remove", "conversation": chat.pk, "up_to_seq": 41})
    shown_notifications(
        page,
        [
            {"title": "Ana Lima", "body": "Or at one?", "tag": tag},
            {"title": "Book club", "body": "Elsewhere", "tag": f"conversation-{chat.pk + 1000}"},
        ],
        after=pushes,
    )
    pushes.push({"type": "remove", "conversation": chat.pk, "up_to_seq": 42})
    shown_notifications(
        page,
        [{"title": "Book club", "body": "Elsewhere", "tag": f"conversation-{chat.pk + 1000}"}],
        after=pushes,
    )

    # Opening the conversation in the app closes its notification (the worker does it,
    # in turn with the pushes: `dismiss` in sw.js).
    pushes.push(message_push(chat.pk, 43, "Look here"))
    book_club = {"title": "Book club", "body": "Elsewhere", "tag": f"conversation-{chat.pk + 1000}"}
    shown_notifications(
        page, [{"title": "Ana Lima", "body": "Look here", "tag": tag}, book_club], after=pushes
    )
    conversation(page, "Ana Lima").click()
    expect(page).to_have_url(f"{web.url(0)}/#c{chat.pk}")
    deadline = time.monotonic() + 10
    while _summary(shown := page.evaluate(SHOWN)) != _summary([book_club]):
        assert time.monotonic() < deadline, f"shown: {shown}, expected: {[book_club]}"
        time.sleep(0.1)

    # While the app shows that very conversation (focused, visible), it needs no notice.
    assert page.evaluate("() => document.hasFocus() && document.visibilityState") == "visible"
    pushes.push(message_push(chat.pk, 44, "Seen already"))
    pushes.push(message_push(chat.pk + 1000, 8, "Not seen", title="Book club"))
    shown_notifications(
        page,
        [{"title": "Book club", "body": "Not seen", "tag": f"conversation-{chat.pk + 1000}"}],
        after=pushes,
    )


def test_removes_handled_between_message_pushes_lose_none_of_the_messages(web: Web) -> None:
    """Thirty message pushes (three rounds of ten), each followed at once by a `remove`.

    The `remove`s are of another conversation, so every message must stay shown.

    A `remove` reads the notifications shown; a read while a message push is between
    `showNotification()` and its display makes Chromium drop that notification from its
    store (see `PushDriver`). The worker handles one push at a time, so none is lost;
    handled all at once, one or two of the thirty were lost in each trial here.
    """
    bo = make_person("bo", "Bo Berg")
    page = app_page(web, bo)
    pushes = PushDriver(page.context, page, web.url(0))
    expected = []
    for round_ in range(3):
        for i in range(10):
            chat = 5000 + 100 * round_ + i
            pushes.push(message_push(chat, 1, f"Message {i}", title=f"Chat {chat}"))
            pushes.push({"type": "remove", "conversation": 9999, "up_to_seq": 5})
            expected.append(
                {"title": f"Chat {chat}", "body": f"Message {i}", "tag": f"conversation-{chat}"}
            )
        shown_notifications(page, expected, after=pushes)


def test_service_worker_shows_a_push_with_the_app_tab_closed(web: Web) -> None:
    """The app's tab is closed and the worker stopped; a push still shows its notification.

    The DevTools session (`PushDriver`: `ServiceWorker.enable`, `stopAllWorkers`,
    `deliverPushMessage`, no push subscription) lives on an about:blank tab of the same
    context, so no page of the app is open when the push arrives. What shows is read in
    the worker itself (Playwright's handle on it), then from a new tab of the app.
    """
    bo = make_person("bo", "Bo Berg")
    ana = make_person("ana", "Ana Lima")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    page = app_page(web, bo)
    context = page.context
    # Playwright's handle on the worker: it stays valid when the worker is restarted.
    (worker,) = context.service_workers

    # The DevTools session lives on a blank tab (no page of the app): the app's tab is
    # closed, and the worker stopped, as a while after the browser's last tab of the
    # site closed. The context (the browser profile) stays, with the worker registered.
    blank = context.new_page()
    pushes = PushDriver(context, blank, web.url(0))
    page.close()
    pushes.stop_workers()

    # The push starts the worker again; it shows the notification with no app page open
    # (read in the worker itself).
    pushes.push(message_push(chat.pk, 5, "Are you around?"))
    tag = f"conversation-{chat.pk}"
    shown_notifications(
        worker, [{"title": "Ana Lima", "body": "Are you around?", "tag": tag}], after=pushes
    )

    # A new tab of the app sees it too.
    reopened = web.watch.page(context.new_page(), "bo-again")
    reopened.goto(f"{web.url(0)}/")
    online(reopened)
    shown_notifications(
        reopened, [{"title": "Ana Lima", "body": "Are you around?", "tag": tag}], after=pushes
    )

    # Taken back with the app's tab closed again, by a `remove`.
    reopened.close()
    pushes.stop_workers()
    pushes.push({"type": "remove", "conversation": chat.pk, "up_to_seq": 5})
    shown_notifications(worker, [], after=pushes)


def test_a_message_to_a_closed_tab_is_pushed_by_the_worker_and_shown_by_the_service_worker(
    web: Web, make_workers: MakeWorkers, push_service: PushService, settings: Any
) -> None:
    """The whole chain, from Ana's send to Bo's screen with his app's tab closed.

    A real Celery worker and beat decide and send the push; the local Web Push service
    checks its VAPID signature and decrypts it with the subscription's private key, as
    Chromium's push service and Chromium would; the decrypted body goes into Bo's service
    worker by DevTools (`PushDriver`), since Chromium cannot reach its own push service
    here. Bo reading on another device then takes the notification back the same way.
    """
    settings.PUSH_ENDPOINT_ALLOW = [push_service.origin]
    # The send below is made here: its notification is due after this process's delay.
    settings.NOTIFY_PUSH_DELAY = 1.0
    make_workers(
        web.deployment,
        env={**push_service.worker_env(), "NOTIFY_PUSH_DELAY": "1", "NOTIFY_POLL_INTERVAL": "0.5"},
    )
    bo = make_person("bo", "Bo Berg")
    ana = make_person("ana", "Ana Lima")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    page = app_page(web, bo)
    # The push service Bo's browser would have subscribed to (its keys stay with the test).
    off_loop(
        devices.register_device,
        user=bo,
        platform="webpush",
        subscription=push_service.subscribe("bo-browser"),
        name="Chromium",
    )
    (worker,) = page.context.service_workers
    blank = page.context.new_page()
    pushes = PushDriver(page.context, blank, web.url(0))
    page.close()  # Bo's app is closed: nothing receives the message live
    pushes.stop_workers()

    message = off_loop(
        services.send_message,
        sender=ana,
        conversation_id=chat.pk,
        client_msg_id=_cmid(1),
        body="Are you coming tonight?",
    ).message

    delivered = push_service.wait_for(lambda d: d.name == "bo-browser", timeout=30)
    assert push_service.rejections == []  # signed and encrypted as the RFCs say
    assert (delivered.topic, delivered.urgency) == (f"c{chat.pk}", "high")
    assert delivered.payload["message_id"] == message.pk
    pushes.push(delivered.payload)
    tag = f"conversation-{chat.pk}"
    shown_notifications(
        worker,
        [{"title": "Ana Lima", "body": "Are you coming tonight?", "tag": tag}],
        after=pushes,
    )

    # Read on his phone: the worker sends a `remove`, and the notification goes.
    off_loop(services.mark_read, user=bo, conversation_id=chat.pk, seq=message.seq)
    removal = push_service.wait_for(lambda d: d.payload["type"] == "remove", timeout=30)
    assert removal.payload == {"type": "remove", "conversation": chat.pk, "up_to_seq": message.seq}
    pushes.push(removal.payload)
    shown_notifications(worker, [], after=pushes)


def _cmid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"
