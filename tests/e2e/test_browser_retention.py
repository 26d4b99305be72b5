"""Retention in real Chromium against real gateway processes: when the server removes
old messages, an open conversation drops them at once, shows the notice that says why
its history ends, and the stored offline history forgets them too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect
from pytest_django.fixtures import SettingsWrapper

from messaging import services
from messaging.models import Message
from tests.e2e.browser import (
    Web,
    bubbles,
    conversation,
    make_person,
    off_loop,
    say,
    wait_stored,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NOTICE = "Messages older than 30 days are removed by the retention policy."


def test_an_open_chat_drops_removed_messages_and_shows_why_history_ends(
    web: Web, settings: SettingsWrapper
) -> None:
    # Tried: Ana has a chat with Bo open, its three oldest messages 40 days old; the
    # retention run removes them. Without the client's cut they would stay on screen
    # and in the stored history until the page was reloaded with an empty cache.
    settings.DELETE_AFTER_DAYS = 30
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    old = [say(bo, chat.pk, f"old {n}") for n in range(1, 4)]
    Message.objects.filter(pk__in=[m.pk for m in old]).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    say(bo, chat.pk, "still here")

    page = web.log_in(ana)
    conversation(page, "Bo").click()
    expect(bubbles(page).get_by_text("old 1", exact=True)).to_be_visible()
    wait_stored(page, ana, chat.pk, ["old 1", "old 2", "old 3", "still here"])

    assert off_loop(services.purge_expired, conversation_id=chat.pk, now=timezone.now()) == 3

    expect(page.locator("#message-list .msg.system").get_by_text(NOTICE)).to_be_visible()
    for n in range(1, 4):
        expect(bubbles(page).get_by_text(f"old {n}", exact=True)).to_have_count(0)
    expect(bubbles(page).get_by_text("still here", exact=True)).to_be_visible()
    wait_stored(page, ana, chat.pk, ["still here"])

    page.reload()
    conversation(page, "Bo").click()
    expect(page.locator("#message-list .msg.system").get_by_text(NOTICE)).to_be_visible()
    expect(bubbles(page).get_by_text("still here", exact=True)).to_be_visible()
    expect(bubbles(page).get_by_text("old 1", exact=True)).to_have_count(0)
