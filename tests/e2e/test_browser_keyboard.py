"""The keyboard in real Chromium: the quick switcher, arrows, Enter and Escape.

Ctrl+K (Cmd+K on a Mac) opens a quick switcher over conversations and people; the
arrow keys move through the search results; the New chat dialog's Enter starts a chat
with the highlighted person; Escape closes a dialog, or on a phone leaves the open
conversation for the list.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from messaging import services
from messaging.models import Conversation
from tests.e2e.browser import (
    PHONE,
    Axe,
    Web,
    cmid,
    conversation,
    make_person,
    off_loop,
    shot,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_quick_switcher_opens_conversations_and_starts_chats(web: Web) -> None:
    """Tried: Ctrl+K opens the switcher with the focus in its box; "book" highlights
    the group and Enter opens it; the arrow keys move the highlight and Enter opens the
    one highlighted; Escape closes it, the focus back in the composer; "dee", a person
    with no chat yet, starts a direct chat with her (stored on the server) and opens it.
    axe finds nothing serious in it. Without the feature Ctrl+K does nothing."""
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    dee = make_person("dee", "Dee Park")
    off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    off_loop(services.create_group, creator=ana, title="Book club", member_ids=[bo.pk])
    page = web.log_in(ana, bypass_csp=True)
    switcher = page.get_by_role("dialog", name="Jump to")
    box = switcher.get_by_role("combobox", name="Conversation or person")
    options = switcher.get_by_role("listbox", name="Matches").get_by_role("option")

    page.keyboard.press("ControlOrMeta+k")
    expect(switcher).to_be_visible()
    expect(box).to_be_focused()
    box.press_sequentially("book")
    expect(options.first).to_contain_text("Book club")
    expect(options.first).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(switcher).to_be_hidden()
    expect(page.locator("#chat-title")).to_have_text("Book club")
    composer = page.locator("#composer-input")
    expect(composer).to_be_focused()

    # From the composer: both conversations match "b"; Down, then Enter opens the second.
    composer.press("ControlOrMeta+k")
    expect(box).to_be_focused()
    box.press_sequentially("b")
    expect(options).to_have_count(2)
    second = options.nth(1).locator(".pick-name").inner_text()
    box.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    expect(options.first).to_have_attribute("aria-selected", "false")
    box.press("ArrowUp")
    box.press("ArrowUp")  # wraps around
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(page.locator("#chat-title")).to_have_text(second)

    # Escape closes it; the focus is back where it was.
    expect(composer).to_be_focused()
    page.keyboard.press("ControlOrMeta+k")
    expect(switcher).to_be_visible()
    page.keyboard.press("Escape")
    expect(switcher).to_be_hidden()
    expect(composer).to_be_focused()

    # A person with no chat yet: Enter starts one, as the New chat dialog does.
    page.keyboard.press("ControlOrMeta+k")
    box.press_sequentially("dee")
    expect(options.first).to_contain_text("Dee Park")
    expect(options.first).to_contain_text("start a chat")
    axe = Axe()
    axe.check(page, "quick switcher")
    axe.assert_clean()
    shot(page, "quick-switcher")
    box.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Dee Park")
    expect(conversation(page, "Dee Park")).to_be_visible()
    wait_until(
        lambda: off_loop(
            lambda: Conversation.objects.filter(kind="direct", memberships__user=dee)
            .filter(memberships__user=ana)
            .exists()
        )
    )


def test_arrows_enter_and_escape(web: Web) -> None:
    """Tried: in the New chat dialog, typing "b" then Down and Enter starts a chat with
    the second person found (before, Enter closed the dialog and did nothing); search
    results: Down from the box goes to the first result, Down and Up move between them,
    Up from the first goes back to the box; on a phone, Escape in the quick switcher
    closes it only, and Escape in a conversation goes back to the list, the focus on
    its row. Without the features: Enter closes the dialog, arrows do nothing in the
    results, Escape leaves the phone in the conversation."""
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    bea = make_person("bea", "Bea Stone")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    group = off_loop(services.create_group, creator=ana, title="Lunch club", member_ids=[bea.pk])
    for n, (sender, conversation_id, body) in enumerate(
        [(bo, chat.pk, "Sandwich at noon?"), (bea, group.pk, "Sandwich on Friday, everyone")]
    ):
        off_loop(
            services.send_message,
            sender=sender,
            conversation_id=conversation_id,
            client_msg_id=cmid(n + 1),
            body=body,
        )
    page = web.log_in(ana)

    # New chat: Enter starts a chat with the highlighted person.
    page.get_by_role("button", name="New chat").click()
    dialog = page.get_by_role("dialog", name="New chat")
    found = dialog.locator("#new-chat-results .pick")
    dialog.get_by_label("Find a person").press_sequentially("b")
    expect(found).to_have_count(2)
    expect(found.first).to_have_class(re.compile(r"\bactive\b"))
    second = found.nth(1).locator(".pick-name").inner_text()
    page.keyboard.press("ArrowDown")
    expect(found.nth(1)).to_have_class(re.compile(r"\bactive\b"))
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#chat-title")).to_have_text(second)

    # Search results: Down from the box, Down and Up between them, Up back to the box.
    search = page.get_by_label("Search messages")
    search.fill("sandwich")
    search.press("Enter")
    results = page.locator("#search-list .result")
    expect(results).to_have_count(2)
    search.press("ArrowDown")
    expect(results.first).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(results.nth(1)).to_be_focused()
    page.keyboard.press("ArrowDown")  # the last stays
    expect(results.nth(1)).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(results.first).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(search).to_be_focused()

    # A phone: Escape closes the switcher only, then leaves the conversation.
    phone = web.log_in(ana, viewport=PHONE, name="ana-phone")
    row = conversation(phone, "Bo Berg")
    row.click()
    shell = phone.locator("#shell")
    expect(shell).to_have_attribute("data-pane", "chat")
    expect(phone.locator("#chat-title")).to_be_focused()
    phone.keyboard.press("ControlOrMeta+k")
    switcher = phone.get_by_role("dialog", name="Jump to")
    expect(switcher).to_be_visible()
    phone.keyboard.press("Escape")
    expect(switcher).to_be_hidden()
    expect(shell).to_have_attribute("data-pane", "chat")
    phone.keyboard.press("Escape")
    expect(shell).to_have_attribute("data-pane", "list")
    expect(row).to_be_visible()
    expect(row).to_be_focused()
