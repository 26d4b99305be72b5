"""Replies and reactions in real Chromium against real gateway processes.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from messaging import services
from messaging.models import Message
from tests.e2e.browser import (
    Web,
    ana_writes_to_bo,
    bubbles,
    conversation,
    make_person,
    off_loop,
    open_direct,
    send,
    shot,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

THUMBS = "\N{THUMBS UP SIGN}"


def test_a_reply_quotes_its_message_and_a_reaction_is_toggled_by_everyone(web: Web) -> None:
    """Tried: Bo replies to Ana's question from the message menu (right-click); both see
    the quote, and Ana's click on it shows the question. Bo reacts from the menu; Ana sees
    it live, adds hers with the reaction's button and takes it back. The question stays
    highlighted, and the focus where it was, through those redraws, until Ana moves on."""
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
    # Drawn again with the reaction: still highlighted, the focus still on it.
    expect(shown).to_have_class(re.compile(r"\bhighlight\b"))
    expect(shown).to_be_focused()

    mine.click()
    expect(mine.locator(".reaction-count")).to_have_text("2")
    expect(mine).to_have_attribute("aria-pressed", "true")
    expect(mine).to_be_focused()  # the same button, in the message drawn again
    expect(shown).to_have_class(re.compile(r"\bhighlight\b"))
    theirs = bo_page.locator(f"#msg-{original.pk} .reaction")
    expect(theirs.locator(".reaction-count")).to_have_text("2")
    shot(bo_page, "reply-and-reactions")
    mine.click()
    expect(mine.locator(".reaction-count")).to_have_text("1")
    expect(mine).to_have_attribute("aria-pressed", "false")
    expect(theirs.locator(".reaction-count")).to_have_text("1")
    ana_page.locator("#composer-input").click()
    expect(shown).not_to_have_class(re.compile(r"\bhighlight\b"))

    original.refresh_from_db()
    reply = Message.objects.get(body="Yes, see you there")
    assert original.reactions == [[THUMBS, [reply.sender_id]]]
    expect(bubbles(ana_page)).to_have_count(2)


def test_a_quote_far_back_loads_the_history_between_and_shows_the_original(
    web: Web, settings: Any
) -> None:
    """Tried: a reply to a question 2,100 messages back (past the 40 pages of 50 the app
    once gave up after). Ana opens the chat (its newest page only) and clicks the quote:
    the pages between load, and the question shows highlighted with the focus on it."""
    settings.CHAT_SEND_RATE = settings.CHAT_SEND_BURST = 1_000_000.0  # seeding, not a user
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    chat = open_direct(ana, bo)

    def seed() -> None:
        ask = services.send_message(
            sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="Which day?"
        ).message
        for n in range(2_100):
            services.send_message(
                sender=ana if n % 2 else bo,
                conversation_id=chat.pk,
                client_msg_id=uuid.uuid4(),
                body=f"chatter {n}",
            )
        services.send_message(
            sender=bo,
            conversation_id=chat.pk,
            client_msg_id=uuid.uuid4(),
            body="Tuesday, as you asked",
            reply_to=ask.pk,
        )

    off_loop(seed)
    question = Message.objects.get(body="Which day?")
    ana_page = web.log_in(ana, gateway=0)
    conversation(ana_page, "Bo").click()
    quote = ana_page.locator("#message-list .msg").filter(has_text="Tuesday, as you asked")
    expect(quote.locator(".reply-preview")).to_have_text("Which day?")
    assert ana_page.locator(f"#msg-{question.pk}").count() == 0  # not loaded yet

    quote.locator(".reply-quote").click()

    shown = ana_page.locator(f"#msg-{question.pk}")
    expect(shown).to_have_class(re.compile(r"\bhighlight\b"), timeout=60_000)
    expect(shown).to_be_focused()
    expect(shown).to_be_in_viewport()
