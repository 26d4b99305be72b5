"""Blocking, reports and delete for me in real Chromium against real gateway processes.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from accounts.models import User
from messaging import services
from messaging.models import Block, HiddenMessage, Message, Report
from tests.e2e.browser import (
    Axe,
    Web,
    ana_writes_to_bo,
    bubbles,
    conversation,
    make_person,
    off_loop,
    online,
    open_direct,
    say,
    send,
    shot,
    wait_stored,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_block_shows_a_notice_refuses_the_blocked_one_neutrally_and_unblock_restores(
    web: Web,
) -> None:
    """Tried: Ana blocks Bo from the chat's header (asked first): her composer gives way
    to a notice, her settings list him; Bo's message is refused with the neutral words;
    Ana unblocks, writes, and Bo gets it live."""
    axe = Axe()
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    open_direct(ana, bo)
    bo_page = web.log_in(bo, gateway=1)
    ana_page = web.log_in(ana, gateway=0, bypass_csp=True)
    conversation(ana_page, "Bo").click()
    send(ana_page, "Hello Bo")
    conversation(bo_page, "Ana").click()
    expect(bubbles(bo_page)).to_have_text(["Hello Bo"])

    block = ana_page.locator("#block-button")
    expect(block).to_have_text("Block")
    block.click()
    confirm = ana_page.get_by_role("dialog", name="Block Bo?")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Block").click()
    expect(ana_page.locator("#blocked-note")).to_be_visible()
    expect(ana_page.locator("#composer")).to_be_hidden()
    expect(block).to_have_text("Unblock")
    wait_until(lambda: Block.objects.filter(blocker__username="ana").exists())
    shot(ana_page, "blocked-chat")
    ana_page.get_by_role("button", name="Settings").click()
    blocked_list = ana_page.get_by_role("list", name="Blocked people")
    expect(blocked_list.get_by_role("listitem")).to_have_text(["BoUnblock"])
    expect(blocked_list.get_by_role("button", name="Unblock Bo")).to_be_visible()
    axe.check(ana_page, "settings with blocked people")
    ana_page.locator("#settings-cancel").click()

    send(bo_page, "Are you there?")
    failed = bo_page.locator("#message-list .msg.own").filter(has_text="Are you there?")
    expect(failed).to_contain_text("You cannot send messages to this conversation.")
    assert not Message.objects.filter(body="Are you there?").exists()

    block.click()
    expect(block).to_have_text("Block")
    expect(ana_page.locator("#blocked-note")).to_be_hidden()
    expect(ana_page.locator("#composer")).to_be_visible()
    send(ana_page, "Sorry, back")
    expect(bubbles(bo_page).filter(has_text="Sorry, back")).to_have_count(1)
    axe.check(ana_page, "chat header with block control")
    axe.assert_clean()


def test_delete_for_me_hides_on_my_other_tab_only_and_report_goes_to_staff(web: Web) -> None:
    """Tried: Bo deletes Ana's message for himself from the menu: it goes from his page
    and from his second browser live, stays on Ana's. Bo reports Ana's other message
    with a reason; staff have it."""
    ana_page, bo_page = ana_writes_to_bo(web)
    send(ana_page, "Keep this")
    send(ana_page, "Oops, wrong chat")
    send(ana_page, "Buy cheap watches")
    conversation(bo_page, "Ana").click()
    expect(bubbles(bo_page)).to_have_text(["Keep this", "Oops, wrong chat", "Buy cheap watches"])
    bo = User.objects.get(username="bo")
    bo_laptop = web.log_in(bo, gateway=0)
    conversation(bo_laptop, "Ana").click()
    expect(bubbles(bo_laptop)).to_have_count(3)

    oops = Message.objects.get(body="Oops, wrong chat")
    bo_page.locator(f"#msg-{oops.pk} .bubble").click(button="right")
    bo_page.get_by_role("menuitem", name="Delete for me").click()
    expect(bubbles(bo_page)).to_have_text(["Keep this", "Buy cheap watches"])
    expect(bubbles(bo_laptop)).to_have_text(["Keep this", "Buy cheap watches"])
    expect(bubbles(ana_page)).to_have_text(["Keep this", "Oops, wrong chat", "Buy cheap watches"])
    assert HiddenMessage.objects.filter(message=oops).count() == 1

    spam = Message.objects.get(body="Buy cheap watches")
    bo_page.locator(f"#msg-{spam.pk} .bubble").click(button="right")
    bo_page.get_by_role("menuitem", name="Report…").click()
    dialog = bo_page.get_by_role("dialog", name="Report message")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Reason").select_option("spam")
    dialog.get_by_label("Details (optional)").fill("Sent to everyone")
    shot(bo_page, "report-dialog")
    dialog.get_by_role("button", name="Report").click()
    expect(bo_page.locator("#toast")).to_contain_text("Reported")
    report = Report.objects.get()
    assert (report.message_id, report.reason, report.details) == (
        spam.pk,
        "spam",
        "Sent to everyone",
    )


def test_a_browser_that_was_offline_drops_what_another_device_deleted_for_me(web: Web) -> None:
    """Tried: Bo's browser has the chat stored; it goes offline, and meanwhile another
    of his devices deletes a message for him. Back online, the browser drops it from
    the screen and from its stored history (the hidden-ids sync), though the message
    itself never changed."""
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    chat = open_direct(ana, bo)
    history = ["first", "to hide", "last"]
    for body in history:
        say(ana, chat.pk, body)
    bo_page = web.log_in(bo)
    conversation(bo_page, "Ana").click()
    expect(bubbles(bo_page)).to_have_text(history)
    wait_stored(bo_page, bo, chat.pk, history)

    bo_page.context.set_offline(True)
    expect(bo_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    hidden = Message.objects.get(body="to hide")
    off_loop(services.hide_message, user=bo, conversation_id=chat.pk, message_id=hidden.pk)

    bo_page.context.set_offline(False)
    online(bo_page)
    expect(bubbles(bo_page)).to_have_text(["first", "last"])
    wait_stored(bo_page, bo, chat.pk, ["first", "last"])
