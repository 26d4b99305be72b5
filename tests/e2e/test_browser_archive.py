"""Archived history in real Chromium against real gateway processes: an archived chat
reads as it did (scrolling back loads the archived pages), and an edit of an archived
message says why it cannot be done."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from messaging import archive, services
from messaging.models import ArchiveSegment, Message
from tests.api.test_archive import use_archive_folder
from tests.e2e.browser import Web, bubbles, conversation, make_person, off_loop, say

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_archived_chat_reads_as_before_and_its_messages_cannot_be_edited(
    make_web: Any, settings: Any, tmp_path: Path
) -> None:
    """Tried: Ana and Bo's chat of 120 messages, 40 days old, is archived (segments of
    25) but for its newest two. Ana opens it: the newest show; scrolling up loads the
    archived pages back to the first message, in order. She then tries to edit her own
    archived message: the app says it is archived and the message is unchanged."""
    root = tmp_path / "archive"
    settings.CHAT_SEND_BURST = 10_000.0
    settings.ARCHIVE_SEGMENT_MESSAGES = 25
    use_archive_folder(settings, root)
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    sent = [say(ana if n % 2 else bo, chat.pk, f"line {n:03d}") for n in range(120)]
    Message.objects.filter(conversation=chat).update(created_at=timezone.now() - timedelta(days=40))
    say(bo, chat.pk, "new one")
    say(ana, chat.pk, "new two")
    moved = off_loop(
        archive.archive_conversation, conversation_id=chat.pk, cutoff=timezone.now() - timedelta(30)
    )
    assert moved >= 120 and ArchiveSegment.objects.filter(conversation=chat).count() >= 5

    web: Web = make_web(ARCHIVE_ROOT=str(root))
    page = web.log_in(ana)
    conversation(page, "Bo").click()
    expect(bubbles(page).get_by_text("new two", exact=True)).to_be_visible()
    for _ in range(40):  # scroll to the top until the first archived message is in
        if bubbles(page).first.inner_text() == "line 000":
            break
        page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
        page.wait_for_timeout(250)
    expect(bubbles(page).first).to_have_text("line 000")
    expect(bubbles(page)).to_have_text(
        [f"line {n:03d}" for n in range(120)] + ["new one", "new two"]
    )
    expect(page.locator("#load-older")).to_be_hidden()

    mine = sent[1]  # "line 001", Ana's
    page.locator(f"#msg-{mine.pk}").hover()
    page.locator(f"#msg-{mine.pk}").get_by_role("button", name="Edit message").click()
    page.locator("#composer-input").fill("line 001 changed")
    page.locator("#composer-input").press("Enter")
    expect(page.locator("#toast")).to_contain_text(
        "This message is archived; archived messages cannot be changed."
    )
    expect(page.locator(f"#msg-{mine.pk} .body")).to_have_text("line 001")
    found = archive.find_one(chat.pk, mine.pk)
    assert found is not None and found.body == "line 001" and found.edited_at is None
