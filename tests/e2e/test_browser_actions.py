"""The message action menu in real Chromium against real gateway processes.

A message's actions (reply, copy, edit, delete) open from a menu: from the "⋯" button
beside the bubble (hover or keyboard), a right-click on the message, or a long press
on a phone. The menu is an ARIA menu (arrows, Escape, the focus back) placed beside
the bubble, never over the message's text.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import FloatRect, Locator, Page, expect

from messaging import services
from messaging.models import Conversation, Message
from tests.e2e.browser import (
    PHONE,
    Axe,
    Web,
    conversation,
    make_person,
    off_loop,
    send,
    shot,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LONG = "Shall we meet on Friday at noon at the usual place by the river? Bring the maps."


def disjoint(a: FloatRect | None, b: FloatRect | None) -> bool:
    assert a is not None and b is not None
    return (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def menu_beside(page: Page, message: Locator) -> Locator:
    """The open action menu, checked not to cover the message's text, and inside the screen."""
    menu = page.get_by_role("menu", name="Message actions")
    expect(menu).to_be_visible()
    box = menu.bounding_box()
    assert disjoint(box, message.locator(".body").bounding_box()), "the menu covers the text"
    viewport: Any = page.viewport_size
    assert box is not None and box["x"] >= 0 and box["y"] >= 0
    assert box["x"] + box["width"] <= viewport["width"]
    assert box["y"] + box["height"] <= viewport["height"]
    return menu


def long_press(page: Page, target: Locator) -> None:
    """Hold a finger on `target` for 800 ms (a touch, not a mouse: the phone's long press)."""
    box = target.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    page.wait_for_timeout(800)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_message_actions_open_from_a_menu_beside_the_bubble(web: Web) -> None:
    """Tried: on a desktop, Ana opens the menu of Bo's message from its "⋯" button (by
    the mouse, then by keyboard): a menu, first item focused, arrows move, Escape closes
    and gives the focus back to the button; a right-click on her own message offers
    six reactions, Reply, Copy text, Edit, Delete, Delete for me (hers: no Report): Copy
    puts the text on the clipboard, Edit starts an edit, Reply shows the reply bar for
    Bo's message, Delete asks first.
    On a phone, Bo's long press on Ana's message opens the menu too. Each time the menu
    is inside the screen and its box does not meet the text's; axe finds nothing serious
    in it.
    Without the menu there is no "More actions" button, no menu on a right-click or a
    long press, and no copy or reply at all."""
    axe = Axe()
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    ana_page = web.log_in(ana, bypass_csp=True, permissions=["clipboard-read", "clipboard-write"])
    bo_page = web.log_in(bo, gateway=1, viewport=PHONE, has_touch=True, is_mobile=True)
    conversation(ana_page, "Bo").click()
    send(ana_page, LONG)
    conversation(bo_page, "Ana").click()
    send(bo_page, "Yes, see you there")
    theirs = ana_page.locator("#message-list .msg.other")
    mine = ana_page.locator("#message-list .msg.own:not(.pending)")
    expect(theirs.locator(".body")).to_have_text(["Yes, see you there"])
    expect(mine.locator(".body")).to_have_text([LONG])

    # The "⋯" button of Bo's message: by the mouse, then by keyboard.
    theirs.hover()
    more = theirs.get_by_role("button", name="More actions")
    more.click()
    menu = menu_beside(ana_page, theirs)
    items = menu.get_by_role("menuitem")
    actions = menu.locator(".menu-item:not(.reaction-choice)")
    # Not mine: no edit, no delete for everyone; delete for me and report.
    expect(actions).to_have_text(["Reply", "Copy text", "Delete for me", "Report…"])
    expect(items).to_have_count(10)  # six reactions come first
    expect(items.first).to_be_focused()
    expect(more).to_have_attribute("aria-expanded", "true")
    axe.check(ana_page, "message action menu")
    ana_page.keyboard.press("ArrowDown")
    expect(items.nth(1)).to_be_focused()
    ana_page.keyboard.press("End")
    expect(items.last).to_be_focused()
    ana_page.keyboard.press("ArrowDown")
    expect(items.first).to_be_focused()
    ana_page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(more).to_be_focused()
    expect(more).to_have_attribute("aria-expanded", "false")
    more.press("Enter")
    expect(items.first).to_be_focused()
    ana_page.keyboard.press("End")
    for _ in range(3):
        ana_page.keyboard.press("ArrowUp")
    ana_page.keyboard.press("Enter")  # Reply
    expect(menu).to_be_hidden()
    composer = ana_page.locator("#composer-input")
    expect(composer).to_be_focused()
    expect(ana_page.locator("#replying")).to_contain_text("Replying to Bo:")
    expect(ana_page.locator("#replying-preview")).to_have_text("Yes, see you there")
    composer.press("Escape")
    expect(ana_page.locator("#replying")).to_be_hidden()

    # A right-click on my own message: all of them but Report; Copy, then Edit.
    mine.locator(".body").click(button="right")
    menu = menu_beside(ana_page, mine)
    expect(actions).to_have_text(["Reply", "Copy text", "Edit", "Delete", "Delete for me"])
    shot(ana_page, "message-actions")
    ana_page.keyboard.press("End")
    for _ in range(3):
        ana_page.keyboard.press("ArrowUp")
    ana_page.keyboard.press("Enter")
    expect(menu).to_be_hidden()
    expect(ana_page.locator("#toast")).to_have_text("Copied.")
    assert ana_page.evaluate("() => navigator.clipboard.readText()") == LONG
    mine.locator(".body").click(button="right")
    menu.get_by_role("menuitem", name="Edit").click()
    expect(ana_page.locator("#editing")).to_be_visible()
    expect(composer).to_have_value(LONG)
    composer.press("Escape")
    expect(ana_page.locator("#editing")).to_be_hidden()
    mine.locator(".body").click(button="right")
    ana_page.keyboard.press("End")
    ana_page.keyboard.press("ArrowUp")
    expect(menu.get_by_role("menuitem", name="Delete", exact=True)).to_be_focused()
    ana_page.keyboard.press("Enter")
    confirm = ana_page.get_by_role("dialog", name="Delete message?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(mine.locator(".body")).to_have_text([LONG])

    # A long press on a phone, on Ana's (long) message.
    bo_theirs = bo_page.locator("#message-list .msg.other")
    expect(bo_theirs.locator(".body")).to_have_text([LONG])
    long_press(bo_page, bo_theirs.locator(".body"))
    bo_menu = menu_beside(bo_page, bo_theirs)
    expect(bo_menu.locator(".menu-item:not(.reaction-choice)")).to_have_text(
        ["Reply", "Copy text", "Delete for me", "Report…"]
    )
    shot(bo_page, "message-actions-phone")
    bo_page.keyboard.press("Escape")
    expect(bo_menu).to_be_hidden()
    axe.assert_clean()


def test_a_lone_group_asks_first_a_new_chat_waits_for_its_message_and_readers_who_left_count(
    web: Web,
) -> None:
    """Tried: (b) Ana opens a direct chat with Bo: Bo's list, and his REST list, show
    nothing until her first message, which lists it for him live. (a) Ana creates a
    group with nobody else: "Create a group with only you?" asks first; Cancel creates
    nothing, OK creates it. (c) Bo and Cy read Ana's message in a group ("Read by 2 of
    2"); Cy leaves: it still says 2 of 2. Before: Bo saw the empty chat at once, the lone
    group was made without a word, and Cy's leaving made it "Read by 1 of 1"."""
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    cy = make_person("cy", "Cy")

    # (b) A direct chat shows up for the other person with its first message.
    bo_page = web.log_in(bo, gateway=1)  # online already: his gateway is told to follow it
    off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    ana_page = web.log_in(ana)
    expect(conversation(ana_page, "Bo")).to_be_visible()
    assert bo_page.request.get(f"{web.url(1)}/api/v1/conversations").json()["results"] == []
    expect(bo_page.locator("#conversation-list .conv")).to_have_count(0)
    conversation(ana_page, "Bo").click()
    send(ana_page, "Hi Bo, are you around?")
    expect(conversation(bo_page, "Ana")).to_be_visible()
    expect(conversation(bo_page, "Ana")).to_contain_text("1 unread")
    listed = bo_page.request.get(f"{web.url(1)}/api/v1/conversations").json()["results"]
    assert [c["title"] for c in listed] == ["Ana"]

    # (a) A group with nobody else asks first.
    ana_page.get_by_role("button", name="New group").click()
    ana_page.get_by_label("Group name").fill("Just me")
    ana_page.get_by_role("button", name="Create group").click()
    confirm = ana_page.get_by_role("dialog", name="Create a group with only you?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(ana_page.get_by_role("dialog", name="New group")).to_be_visible()
    assert not off_loop(lambda: Conversation.objects.filter(title="Just me").exists())
    ana_page.get_by_role("button", name="Create group").click()
    confirm.get_by_role("button", name="Create group").click()
    expect(ana_page.locator("#chat-title")).to_have_text("Just me")
    assert off_loop(lambda: Conversation.objects.filter(title="Just me").count()) == 1

    # (c) A reader who left still read it.
    trio = off_loop(services.create_group, creator=ana, title="Trio", member_ids=[bo.pk, cy.pk])
    conversation(ana_page, "Trio").click()
    send(ana_page, "Read this, both of you")
    mine = ana_page.locator("#message-list .msg.own:not(.pending)")
    expect(mine.locator(".body")).to_have_text(["Read this, both of you"])
    seq = off_loop(lambda: Message.objects.get(body="Read this, both of you").seq)
    for reader in (bo, cy):
        off_loop(services.mark_read, user=reader, conversation_id=trio.pk, seq=seq)
    marks = mine.locator(".marks.group")
    expect(marks).to_have_text("Read by 2 of 2")
    off_loop(services.leave_conversation, user=cy, conversation_id=trio.pk)
    expect(ana_page.locator("#message-list .msg.system")).to_contain_text(["Cy left."])
    expect(ana_page.locator("#chat-subtitle")).to_contain_text("2 members")  # Cy is gone
    expect(marks).to_have_text("Read by 2 of 2")
    expect(marks).to_have_attribute("data-state", "read")


def test_a_member_list_read_before_a_receipt_does_not_take_the_receipt_back(web: Web) -> None:
    # Tried: Ana's client asks for the group's members (opening it again) and the answer
    # is read from the database, but held on its way; meanwhile Bo and Cy read her
    # message and she sees "Read by 2 of 2" live. Then the held answer arrives, with the
    # markers as they were before. Before: it replaced the members, and the message
    # said "Read by 0 of 2" until the next receipt or sync (CI saw "1 of 2" when the
    # answer of a reload crossed the receipts).
    ana, bo, cy = make_person("ana", "Ana"), make_person("bo", "Bo"), make_person("cy", "Cy")
    trio = off_loop(services.create_group, creator=ana, title="Trio", member_ids=[bo.pk, cy.pk])
    page = web.log_in(ana)
    conversation(page, "Trio").click()
    send(page, "Read this, both of you")
    mine = page.locator("#message-list .msg.own:not(.pending)")
    expect(mine.locator(".body")).to_have_text(["Read this, both of you"])
    marks = mine.locator(".marks.group")
    expect(marks).to_have_text("Read by 0 of 2")

    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append((route, route.fetch()))  # the server's answer, read now, sent later

    page.route(f"**/api/v1/conversations/{trio.pk}", hold)
    with page.expect_request(f"**/api/v1/conversations/{trio.pk}"):
        conversation(page, "Trio").click()  # opening it again reads its members again
    for _ in range(100):  # the route handler runs while Playwright dispatches events
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the members were not read again"
    seq = off_loop(lambda: Message.objects.get(body="Read this, both of you").seq)
    for reader in (bo, cy):
        off_loop(services.mark_read, user=reader, conversation_id=trio.pk, seq=seq)
    expect(marks).to_have_text("Read by 2 of 2")

    route, answer = held[0]
    with page.expect_response(f"**/api/v1/conversations/{trio.pk}"):
        route.fulfill(response=answer)
    page.wait_for_timeout(300)  # the client applies the answer within a task or two
    expect(marks).to_have_text("Read by 2 of 2")
    expect(marks).to_have_attribute("data-state", "read")
