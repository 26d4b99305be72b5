"""Unread messages in real Chromium against real gateway processes.

Opening a conversation with unread messages starts at the first of them, under an
"N unread messages" divider, and marks read only what was shown; scrolling down marks
the rest. The browser, the deployments and the helpers are those of
`tests/e2e/browser.py`.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect
from pytest_django.fixtures import SettingsWrapper

from accounts.models import User
from bench.harness import REPO_ROOT
from messaging import services
from messaging.models import Membership
from tests.e2e.browser import Web, bubbles, conversation, make_person, off_loop, shot, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(REPO_ROOT) / "docs" / "screenshots"


def say(sender: User, chat_id: int, body: str) -> int:
    result = off_loop(
        services.send_message,
        sender=sender,
        conversation_id=chat_id,
        client_msg_id=uuid.uuid4(),
        body=body,
    )
    seq: int = result.message.seq
    return seq


def read_seq(user: User, chat_id: int) -> int:
    return Membership.objects.get(user=user, conversation_id=chat_id).read_seq


def test_opening_starts_at_the_first_unread_and_marks_read_only_what_was_shown(
    web: Web, settings: SettingsWrapper
) -> None:
    # Tried: Ana has read Bo's first 30 messages; Bo sends 60 more while she is away
    # (the first unread one is older than the newest page the client loads). Ana opens
    # the chat: the divider says "60 unread messages" (not "99+", not "40"), the first
    # unread message is in view and the newest is not; the server's read marker moved
    # to what is visible and no further, and the list's badge shows what is left. After
    # scrolling to the bottom the marker is at the newest and the badge is gone.
    # Without the feature the chat opens at the newest and marks all 60 read.
    settings.CHAT_SEND_BURST = 1000
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    seen = 0
    for n in range(1, 31):
        seen = say(bo, chat.pk, f"old {n}")
    Membership.objects.filter(user=ana, conversation=chat).update(read_seq=seen)
    seqs = [say(bo, chat.pk, f"new {n}") for n in range(1, 61)]

    page = web.log_in(ana)
    badge = conversation(page, "Bo").locator(".badge")
    expect(badge).to_contain_text("60")
    conversation(page, "Bo").click()

    divider = page.locator("#message-list .unread-divider")
    expect(divider).to_have_text("60 unread messages")
    expect(divider).to_be_in_viewport()
    expect(bubbles(page).get_by_text("new 1", exact=True)).to_be_in_viewport()
    expect(bubbles(page).get_by_text("new 60", exact=True)).not_to_be_in_viewport()
    wait_until(lambda: read_seq(ana, chat.pk) >= seqs[0])
    assert read_seq(ana, chat.pk) < seqs[-1]
    expect(badge).to_have_text(re.compile(r"^[1-9][0-9]? unread$"))
    page.screenshot(path=str(SCREENSHOTS / "unread-divider.png"))
    shot(page, "unread-divider")

    page.locator("#messages").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    wait_until(lambda: read_seq(ana, chat.pk) == seqs[-1])
    expect(badge).to_have_count(0)
    expect(divider).to_have_text("60 unread messages")  # it stays while the chat is open
