""" "Download my data" in real Chromium against real gateway processes: the settings
button saves a zip of the person's own data, and a download too soon says when to
try again."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from messaging import services
from tests.e2e.browser import Web, make_person, off_loop, say

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_settings_download_my_data_saves_a_zip_and_then_says_when_to_retry(
    make_web: Any, tmp_path: Path
) -> None:
    # Tried: Ana downloads her data (a burst of 1 a day on this server), then asks
    # again at once: the zip holds her message and not Bo's, and the second answer
    # is the server's 429 shown in the dialog, not a file.
    web: Web = make_web(EXPORT_BURST="1", EXPORT_INTERVAL="86400")
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    say(ana, chat.pk, "my own words")
    say(bo, chat.pk, "bo's words")

    page = web.log_in(ana)
    page.get_by_role("button", name="Settings", exact=True).click()
    dialog = page.get_by_role("dialog", name="Settings")
    with page.expect_download() as saved:
        dialog.get_by_role("button", name="Download my data").click()
    assert saved.value.suggested_filename == "chat-data-ana.zip"
    path = tmp_path / "data.zip"
    saved.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        rows = [json.loads(line) for line in archive.read("data.jsonl").decode().splitlines()]
    bodies = {r["fields"]["body"] for r in rows if r["model"] == "messaging.message"}
    assert bodies == {"my own words"}
    expect(page.locator("#toast")).to_have_text("Saved chat-data-ana.zip")

    dialog.get_by_role("button", name="Download my data").click()
    expect(page.locator("#settings-error")).to_contain_text("try again in")
