"""Accessibility of the web app in real Chromium: axe-core, the keyboard, announcements.

axe-core (pinned by `tests/e2e/package-lock.json`; `make test` installs it with
`npm ci --prefix tests/e2e`) is injected into every screen: the sign-in and sign-up
pages, the app with a conversation open, each dialog and menu, on a desktop and on a
phone-sized screen. A `serious` or `critical` violation fails the test, listed with its
rule, help page and the elements at fault. The pages' strict CSP forbids the injected
script, so these contexts bypass CSP (the other browser tests check the CSP itself).

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from accounts.models import User
from messaging import services
from tests.e2e.browser import (
    DESKTOP,
    PASSWORD,
    PHONE,
    Axe,
    Web,
    bubbles,
    cmid,
    conversation,
    make_person,
    off_loop,
    online,
    send,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def axe_page(web: Web, name: str, viewport: Any = DESKTOP) -> Page:
    """A new page in a context that lets axe in (CSP bypassed), watched as the others."""
    return web.watch.page(web.context(viewport, bypass_csp=True).new_page(), name)


def log_in(web: Web, user: User, viewport: Any = DESKTOP) -> Page:
    """Log `user` in through the login page, in a context that lets axe in."""
    return web.log_in(user, viewport=viewport, bypass_csp=True)


def dialog(page: Page, name: str) -> Locator:
    found = page.get_by_role("dialog", name=name)
    expect(found).to_be_visible()
    return found


def close_dialog(page: Page, name: str) -> None:
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name=name)).to_be_hidden()


def test_every_screen_has_no_serious_axe_violation(web: Web) -> None:
    """Tried: axe on the sign-in, sign-up and password reset pages; the app with no
    conversation, with a direct chat (both sides' messages, a pending one while
    offline, a message request) and a group open; every dialog (new chat with people
    found, new group with a member picked, public groups, members, settings, confirm),
    the notification menu, the mention list, search results; then the list, a
    conversation and two dialogs on a phone-sized screen. No serious or critical
    violation anywhere."""
    axe = Axe()
    base = web.url(0)

    # Signed out: the auth pages.
    visitor = axe_page(web, "visitor")
    visitor.goto(f"{base}/accounts/login/")
    axe.check(visitor, "sign-in")
    visitor.get_by_role("button", name="Log in").click()  # empty: the error is shown
    expect(visitor.get_by_role("alert")).to_be_visible()
    axe.check(visitor, "sign-in with an error")
    visitor.goto(f"{base}/accounts/signup/")
    axe.check(visitor, "sign-up")
    visitor.goto(f"{base}/accounts/password_reset/")
    axe.check(visitor, "password reset")

    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    cy = make_person("cy", "Cy Park")
    off_loop(services.create_group, creator=ana, title="Book club", member_ids=[bo.pk])

    # Cy, a stranger, writes to Ana: a message request.
    cy_page = log_in(web, cy)
    axe.check(cy_page, "app, empty")
    cy_page.get_by_role("button", name="New chat").click()
    new_chat = dialog(cy_page, "New chat")
    new_chat.get_by_label("Find a person").fill("ana")
    pick = new_chat.get_by_role("button", name=re.compile("Ana Lima"))
    expect(pick).to_be_visible()
    axe.check(cy_page, "new chat dialog with people found")
    pick.click()
    send(cy_page, "Hello Ana, we met at the book fair.")
    expect(cy_page.locator("#message-list .msg.own:not(.pending)")).to_have_count(1)

    ana_page = log_in(web, ana)
    conversation(ana_page, "Cy Park").click()
    expect(ana_page.locator("#request-bar")).to_be_visible()
    axe.check(ana_page, "message request")
    ana_page.get_by_role("button", name="Accept").click()
    expect(ana_page.locator("#request-bar")).to_be_hidden()
    send(ana_page, "Hi Cy! Yes, I remember.")
    expect(bubbles(cy_page)).to_have_count(2)
    send(cy_page, "Great. Shall we meet on Friday?")
    expect(bubbles(ana_page)).to_have_count(3)
    # A message written offline waits, shown as pending.
    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).not_to_have_attribute("data-state", "online")
    send(ana_page, "Friday works (sent when I am back online)")
    expect(ana_page.locator("#message-list .msg.pending")).to_have_count(1)
    axe.check(ana_page, "direct chat, offline, a pending message")
    ana_page.context.set_offline(False)
    online(ana_page)
    expect(ana_page.locator("#message-list .msg.pending")).to_have_count(0)
    axe.check(ana_page, "direct chat")

    # The notification menu, the confirm dialog (delete), search results.
    ana_page.get_by_role("button", name="Notifications").click()
    expect(ana_page.get_by_role("menu")).to_be_visible()
    axe.check(ana_page, "notification menu")
    ana_page.keyboard.press("Escape")
    expect(ana_page.get_by_role("menu")).to_be_hidden()
    own = ana_page.locator("#message-list .msg.own").last
    own.hover()
    own.get_by_role("button", name="Delete message").click()
    dialog(ana_page, "Delete message?")
    axe.check(ana_page, "confirm dialog")
    close_dialog(ana_page, "Delete message?")
    ana_page.get_by_label("Search messages").fill("Friday")
    ana_page.get_by_label("Search messages").press("Enter")
    expect(ana_page.locator("#search-list .result")).not_to_have_count(0)
    axe.check(ana_page, "search results")
    ana_page.get_by_role("button", name="Close", exact=True).click()

    # The group: system messages, members, the mention list.
    conversation(ana_page, "Book club").click()
    expect(ana_page.locator("#message-list .msg.system")).not_to_have_count(0)
    ana_page.locator("#composer-input").fill("@b")
    expect(ana_page.locator("#mention-list")).to_be_visible()
    axe.check(ana_page, "group, mention list")
    ana_page.locator("#composer-input").fill("")
    ana_page.get_by_role("button", name="Group info").click()
    members = dialog(ana_page, "Group info")
    expect(members.locator(".member")).to_have_count(2)
    axe.check(ana_page, "members dialog")
    close_dialog(ana_page, "Group info")

    # The sidebar's dialogs.
    ana_page.get_by_role("button", name="New group").click()
    new_group = dialog(ana_page, "New group")
    new_group.get_by_label("Add people").fill("bo")
    new_group.locator("#group-results").get_by_role("button", name=re.compile("Bo Berg")).click()
    expect(new_group.locator("#group-members li")).to_have_count(1)
    axe.check(ana_page, "new group dialog")
    close_dialog(ana_page, "New group")
    ana_page.get_by_role("button", name="Browse groups").click()
    dialog(ana_page, "Public groups")
    axe.check(ana_page, "public groups dialog")
    close_dialog(ana_page, "Public groups")
    ana_page.get_by_role("button", name="Settings", exact=True).click()
    expect(dialog(ana_page, "Settings").get_by_label("Display name")).to_be_focused()
    axe.check(ana_page, "settings dialog")
    close_dialog(ana_page, "Settings")

    # A phone-sized screen: the list, then a conversation over it.
    bo_page = log_in(web, bo, PHONE)
    axe.check(bo_page, "phone: list")
    conversation(bo_page, "Book club").click()
    expect(bo_page.locator("#chat-title")).to_have_text("Book club")
    axe.check(bo_page, "phone: conversation")
    bo_page.get_by_role("button", name="Group info").click()
    dialog(bo_page, "Group info")
    axe.check(bo_page, "phone: members dialog")
    close_dialog(bo_page, "Group info")
    bo_page.get_by_role("button", name="Back to conversations").click()
    bo_page.get_by_role("button", name="Settings", exact=True).click()
    expect(dialog(bo_page, "Settings").get_by_label("Display name")).to_be_focused()
    axe.check(bo_page, "phone: settings dialog")
    close_dialog(bo_page, "Settings")

    axe.assert_clean()


# Every text the live region is given, in order, recorded by the page itself.
RECORD_ANNOUNCEMENTS = """() => {
    window.__announced = [];
    const region = document.getElementById("announcer");
    new MutationObserver(() => {
        const text = region.textContent.trim();
        if (text) window.__announced.push(text);
    }).observe(region, { childList: true, characterData: true, subtree: true });
}"""


def announced(page: Page) -> list[str]:
    texts: list[str] = page.evaluate("() => window.__announced")
    return texts


def test_new_messages_are_announced_but_not_the_catch_up_after_a_reconnect(web: Web) -> None:
    """Tried: Ana has her chat with Bo open. Bo's new message is read out with his name
    ("Bo Berg: ..."); three messages from Cy in a group that is not open are summed up
    ("3 new messages from Cy Park in Book club"); an edit is not news. Then Ana's
    browser goes offline, Bo and Cy write meanwhile, and the catch-up fetch after the
    reconnect shows their messages without announcing them; the next live message is
    announced again. The live region is polite and outside what is shown."""
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    cy = make_person("cy", "Cy Park")
    direct, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    group = off_loop(services.create_group, creator=cy, title="Book club", member_ids=[ana.pk])
    sent = iter(range(1, 1000))

    def says(person: User, conversation_id: int, body: str) -> Any:
        return off_loop(
            services.send_message,
            sender=person,
            conversation_id=conversation_id,
            client_msg_id=cmid(next(sent)),
            body=body,
        )

    page = web.log_in(ana)
    region = page.locator("#announcer")
    expect(region).to_have_attribute("aria-live", "polite")
    expect(region).to_have_class(re.compile(r"\bvisually-hidden\b"))
    conversation(page, "Bo Berg").click()
    expect(page.locator("#chat-title")).to_have_text("Bo Berg")
    page.evaluate(RECORD_ANNOUNCEMENTS)

    lunch = says(bo, direct.pk, "Lunch at noon?")
    expect(bubbles(page)).to_have_text(["Lunch at noon?"])
    expect(region).to_have_text("Bo Berg: Lunch at noon?")
    off_loop(
        services.edit_message,
        user=bo,
        conversation_id=direct.pk,
        message_id=lunch.message.pk,
        body="Lunch at one?",
    )
    expect(bubbles(page)).to_have_text(["Lunch at one?"])

    for n in range(3):
        says(cy, group.pk, f"Chapter {n + 1} is wonderful")
    expect(conversation(page, "Book club").locator(".badge")).to_contain_text("3")
    expect(region).to_have_text("3 new messages from Cy Park in Book club")
    # A burst may be gathered into one announcement or two; the last gives the total.
    assert announced(page)[0] == "Bo Berg: Lunch at noon?"  # and not the edit
    for text in announced(page)[1:]:
        assert re.fullmatch(r"[123] new messages? from Cy Park in Book club", text), text

    # The catch-up after a reconnect is shown, not read out.
    before = len(announced(page))
    page.context.set_offline(True)
    expect(page.locator("#conn-status")).not_to_have_attribute("data-state", "online")
    says(bo, direct.pk, "Are you there?")
    says(bo, direct.pk, "Call me when you are back")
    says(cy, group.pk, "Chapter 4 next week")
    page.context.set_offline(False)
    online(page)
    expect(bubbles(page)).to_have_text(
        ["Lunch at one?", "Are you there?", "Call me when you are back"]
    )
    expect(conversation(page, "Book club").locator(".badge")).to_contain_text("4")
    says(bo, direct.pk, "Ah, there you are")
    expect(region).to_have_text("Bo Berg: Ah, there you are")
    assert announced(page)[before:] == ["Bo Berg: Ah, there you are"]


def focus_to(page: Page, key: str, selector: str, limit: int = 60) -> None:
    """Press `key` until the focused element matches `selector`; fail after `limit`."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement?.matches(s) === true", selector):
            return
        page.keyboard.press(key)
    focused = page.evaluate("() => document.activeElement?.outerHTML.slice(0, 160)")
    pytest.fail(f"{key} pressed {limit} times never reached {selector}; the focus is on {focused}")


def focus_is_visible(page: Page) -> bool:
    """The focused element shows it: :focus-visible with an outline (the composer: its row)."""
    return bool(
        page.evaluate(
            """() => {
                const el = document.activeElement;
                if (!el || !el.matches(":focus-visible")) return false;
                const ring = el.id === "composer-input" ? el.closest(".composer-row") : el;
                const style = getComputedStyle(ring);
                return el.id === "composer-input"
                    ? style.borderColor !== getComputedStyle(document.body).color
                    : style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
            }"""
        )
    )


def dialog_round_trip(page: Page, opener: str, name: str, first_field: str | None) -> None:
    """Enter on the focused opener opens the dialog; Escape closes it; the focus is back."""
    expect(page.locator(opener)).to_be_focused()
    assert focus_is_visible(page), f"no visible focus on {opener}"
    page.keyboard.press("Enter")
    found = dialog(page, name)
    if first_field is not None:
        expect(found.get_by_label(first_field, exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(found).to_be_hidden()
    expect(page.locator(opener)).to_be_focused()


def test_a_whole_session_works_by_keyboard_alone(web: Web) -> None:
    """Tried, without the mouse: log in; open and close (Escape) every dialog of the
    sidebar, the focus back on its opener each time; move in the conversation list with
    the arrow keys and open a chat; send; reach a message with the arrow keys and edit
    it, then delete it through its actions and the confirm dialog (Escape first: the
    focus is back on Delete); the notification menu with arrows and Escape; a group's
    members and leave dialogs; search and close it. The focus is always visible."""
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    direct, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    off_loop(services.create_group, creator=ana, title="Book club", member_ids=[bo.pk])
    off_loop(
        services.send_message,
        sender=bo,
        conversation_id=direct.pk,
        client_msg_id=cmid(1),
        body="Ping me when you read this",
    )

    page = web.watch.page(web.context().new_page(), "ana")
    base = web.url(0)
    page.goto(f"{base}/accounts/login/")
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("ana")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")
    online(page)

    # The sidebar's dialogs, each opened and closed from the keyboard.
    focus_to(page, "Tab", "#new-chat")
    dialog_round_trip(page, "#new-chat", "New chat", "Find a person")
    page.keyboard.press("Tab")
    dialog_round_trip(page, "#new-group", "New group", "Group name")
    page.keyboard.press("Tab")
    dialog_round_trip(page, "#browse-groups", "Public groups", "Search groups")
    page.keyboard.press("Tab")
    dialog_round_trip(page, "#settings-button", "Settings", "Display name")

    # The conversation list: Tab in, arrows between, Enter opens.
    focus_to(page, "Tab", "#conversation-list .conv")
    items = page.locator("#conversation-list .conv")
    expect(items).to_have_count(2)
    expect(items.first).to_be_focused()
    assert focus_is_visible(page)
    page.keyboard.press("ArrowDown")
    expect(items.nth(1)).to_be_focused()
    page.keyboard.press("ArrowDown")  # the last stays
    expect(items.nth(1)).to_be_focused()
    page.keyboard.press("Home")
    expect(items.first).to_be_focused()
    focus_to(page, "ArrowDown", '#conversation-list .conv[aria-label^="Bo Berg"]', limit=3)
    page.keyboard.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Bo Berg")
    expect(page.locator("#composer-input")).to_be_focused()

    # Send, then edit the message reached with the arrow keys.
    page.keyboard.type("Read it, typing with the keyboard")
    page.keyboard.press("Enter")
    mine = page.locator("#message-list .msg.own:not(.pending)")
    expect(mine.locator(".body")).to_have_text(["Read it, typing with the keyboard"])
    focus_to(page, "Shift+Tab", "#messages")
    assert focus_is_visible(page)
    page.keyboard.press("End")
    expect(mine.last).to_be_focused()
    assert focus_is_visible(page), "a message focused by the keyboard shows no focus"
    page.keyboard.press("ArrowUp")
    expect(page.locator("#message-list .msg.other").last).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(mine.last).to_be_focused()
    page.keyboard.press("Tab")
    expect(mine.last.get_by_role("button", name="Edit message")).to_be_focused()
    expect(mine.last.locator(".actions")).to_have_css("opacity", "1")
    page.keyboard.press("Enter")
    expect(page.locator("#editing")).to_be_visible()
    expect(page.locator("#composer-input")).to_be_focused()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("Read it, edited with the keyboard")
    page.keyboard.press("Enter")
    expect(mine.last.locator(".body")).to_have_text("Read it, edited with the keyboard")
    expect(mine.last.locator(".edited")).to_be_visible()

    # Delete it through its actions; the confirm dialog gives the focus back.
    focus_to(page, "Shift+Tab", "#messages")
    page.keyboard.press("End")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    delete = mine.last.get_by_role("button", name="Delete message")
    expect(delete).to_be_focused()
    page.keyboard.press("Enter")
    confirm = dialog(page, "Delete message?")
    expect(confirm.get_by_role("button", name="Delete")).to_be_focused()
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    expect(delete).to_be_focused()
    page.keyboard.press("Enter")
    confirm.get_by_role("button", name="Delete").press("Enter")
    expect(mine.last.locator(".body")).to_have_text("This message was deleted.")
    expect(mine.last).to_be_focused()  # not lost with the button that went away
    page.keyboard.press("Escape")
    expect(page.locator("#composer-input")).to_be_focused()

    # The notification menu: arrows in, between its items, Escape out.
    focus_to(page, "Shift+Tab", "#notify-button")
    page.keyboard.press("ArrowDown")
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    expect(menu.get_by_role("menuitemradio").first).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(menu.get_by_role("menuitemradio").nth(1)).to_be_focused()
    assert focus_is_visible(page)
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(page.locator("#notify-button")).to_be_focused()

    # The group: its members and the leave dialog (cancelled), back to where they were.
    focus_to(page, "Shift+Tab", "#conversation-list .conv")
    focus_to(page, "ArrowUp", '#conversation-list .conv[aria-label^="Book club"]', limit=3)
    page.keyboard.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Book club")
    focus_to(page, "Shift+Tab", "#members-button")
    dialog_round_trip(page, "#members-button", "Group info", None)
    page.keyboard.press("Tab")
    dialog_round_trip(page, "#leave-button", "Leave Book club?", None)

    # Search: type, Enter, the results; Escape closes them.
    focus_to(page, "Shift+Tab", "#search-input")
    page.keyboard.type("Ping")
    page.keyboard.press("Enter")
    expect(page.locator("#search-list .result")).to_have_count(1)
    page.keyboard.press("Escape")
    expect(page.locator("#search-results")).to_be_hidden()
    expect(page.locator("#search-input")).to_be_focused()
