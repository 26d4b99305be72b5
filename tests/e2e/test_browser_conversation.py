"""Replies and reactions in real Chromium against real gateway processes.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from messaging.models import Message
from tests.e2e.browser import Web, ana_writes_to_bo, bubbles, conversation, send, shot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

THUMBS = "\N{THUMBS UP SIGN}"


def test_a_reply_quotes_its_message_and_a_reaction_is_toggled_by_everyone(web: Web) -> None:
    """Tried: Bo replies to Ana's question from the message menu (right-click); both see
    the quote, and Ana's click on it shows the question. Bo reacts from the menu; Ana sees
    it live, adds hers with the reaction's button and takes it back."""
    ana_page, bo_page = ana_writes_to_bo(web)
    send(ana_page, "Dinner at 8?")
    conversation(bo_page, "Ana").click()
    expect(bubbles(bo_page)).to_have_text(["Dinner at 8?"])
    original = Message.objects.get(body="Dinner at 8?")
    question = bo_page.locator(f"#msg-{original.pk}")

    question.locator(".bubble").click(button="right")
    bo_page.get_by_role("menuitem", name="Reply").click()
    expect(bo_page.locator("#replying")).to_be_visible()
    expect(bo_page.locator("#replying")).to_contain_text("Replying to Ana:")
    expect(bo_page.locator("#replying-preview")).to_have_text("Dinner at 8?")
    expect(bo_page.locator("#composer-input")).to_be_focused()
    send(bo_page, "Yes, see you there")
    expect(bo_page.locator("#replying")).to_be_hidden()

    for page, who in ((bo_page, "Ana"), (ana_page, "You")):
        quote = page.locator("#message-list .msg").filter(has_text="see you there")
        expect(quote.locator(".reply-quote .reply-sender")).to_have_text(who)
        expect(quote.locator(".reply-quote .reply-preview")).to_have_text("Dinner at 8?")
    assert Message.objects.get(body="Yes, see you there").reply_to_id == original.pk

    ana_page.locator(".reply-quote").click()
    shown = ana_page.locator(f"#msg-{original.pk}")
    expect(shown).to_have_class(re.compile(r"\bhighlight\b"))
    expect(shown).to_be_focused()

    question.locator(".bubble").click(button="right")
    bo_page.get_by_role("menuitem", name="React with thumbs up").click()
    mine = ana_page.locator(f"#msg-{original.pk} .reaction")
    expect(mine).to_have_count(1)
    expect(mine).to_have_attribute("aria-pressed", "false")
    expect(mine).to_have_attribute("title", "Bo")
    expect(mine.locator(".reaction-count")).to_have_text("1")

    mine.click()
    expect(mine.locator(".reaction-count")).to_have_text("2")
    expect(mine).to_have_attribute("aria-pressed", "true")
    theirs = bo_page.locator(f"#msg-{original.pk} .reaction")
    expect(theirs.locator(".reaction-count")).to_have_text("2")
    shot(bo_page, "reply-and-reactions")
    mine.click()
    expect(mine.locator(".reaction-count")).to_have_text("1")
    expect(mine).to_have_attribute("aria-pressed", "false")
    expect(theirs.locator(".reaction-count")).to_have_text("1")

    original.refresh_from_db()
    reply = Message.objects.get(body="Yes, see you there")
    assert original.reactions == [[THUMBS, [reply.sender_id]]]
    expect(bubbles(ana_page)).to_have_count(2)
