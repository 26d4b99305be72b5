"""The profile photo in real Chromium against real gateway processes.

Ana picks a landscape picture in the settings dialog, places the square with the keys
and the mouse (the preview follows), saves it: it shows in her header and, live, in Bo's
conversation list and chat header; removing it brings the initials back, live too.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.e2e.browser import Web, ana_writes_to_bo, conversation, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AVATAR_PATH = r"^/api/v1/avatars/[0-9a-f]{64}-256\.(jpg|png)$"


def landscape() -> bytes:
    """A 600 x 300 PNG: its left half red, its right half blue."""
    image = Image.new("RGB", (600, 300), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 300, 300))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def loaded_picture(page: Page, selector: str) -> str:
    """Wait until `selector` is an image the browser loaded at 256 x 256; return its src."""
    handle = page.wait_for_function(
        """(selector) => {
            const img = document.querySelector(selector);
            return img && img.complete && img.naturalWidth === 256 && img.naturalHeight === 256
                ? img.getAttribute("src") : null;
        }""",
        arg=selector,
    )
    src = handle.json_value()
    assert isinstance(src, str)
    return src


def test_a_cropped_photo_shows_in_my_header_and_live_in_my_contacts_list_and_header(
    web: Web,
) -> None:
    """Tried: Ana (in a direct chat with Bo, who has it open) picks a 600 x 300 picture
    with "Change photo"; the crop view offers the centred square. Shift+Right three
    times moves it to the right half, "-" ten times shrinks it to 240, a mouse drag to
    the far bottom right puts it in that corner; the preview is blue. Save: her header
    shows the 256 x 256 picture (blue: the square she chose); Bo's list row and chat
    header show it without a reload. Remove photo: initials again, on both pages."""
    ana_page, bo_page = ana_writes_to_bo(web)
    conversation(bo_page, "Ana").click()
    expect(bo_page.locator("#chat-avatar")).to_have_text("A")

    ana_page.get_by_role("button", name="Settings", exact=True).click()
    dialog = ana_page.get_by_role("dialog", name="Settings")
    expect(dialog.get_by_label("Display name")).to_be_focused()  # the values are in
    expect(dialog.get_by_role("button", name="Remove photo")).to_be_hidden()
    with ana_page.expect_file_chooser() as chooser:
        dialog.get_by_role("button", name="Change photo").click()
    chooser.value.set_files({"name": "beach.png", "mimeType": "image/png", "buffer": landscape()})
    canvas = ana_page.locator("#settings-photo-canvas")
    expect(canvas).to_be_focused()
    expect(canvas).to_have_attribute("aria-valuetext", "Square of 300 pixels at 150, 0")
    for _ in range(3):
        canvas.press("Shift+ArrowRight")
    expect(canvas).to_have_attribute("aria-valuetext", "Square of 300 pixels at 300, 0")
    for _ in range(10):
        canvas.press("-")
    expect(canvas).to_have_attribute("aria-valuetext", "Square of 240 pixels at 330, 30")
    box = canvas.bounding_box()
    assert box is not None
    # The square's middle, in CSS pixels (the canvas shows the picture at 320 / 600).
    scale = box["width"] / 600
    ana_page.mouse.move(box["x"] + 450 * scale, box["y"] + 150 * scale)
    ana_page.mouse.down()
    ana_page.mouse.move(box["x"] + box["width"] + 40, box["y"] + box["height"] + 40, steps=5)
    ana_page.mouse.up()
    expect(canvas).to_have_attribute("aria-valuetext", "Square of 240 pixels at 360, 60")
    preview = ana_page.evaluate(
        """() => Array.from(document.getElementById("settings-photo-preview")
            .getContext("2d").getImageData(48, 48, 1, 1).data)"""
    )
    assert preview[2] > 200 and preview[0] < 60, preview

    dialog.get_by_role("button", name="Save photo").click()
    expect(ana_page.locator("#settings-photo-status")).to_have_text("Photo saved.")
    expect(dialog.get_by_role("button", name="Remove photo")).to_be_visible()
    mine = loaded_picture(ana_page, "#me-avatar img")
    assert re.fullmatch(AVATAR_PATH, mine), mine
    wait_until(lambda: bool(User.objects.get(username="ana").avatar))
    stored = ana_page.request.get(web.url(0) + mine)
    assert stored.ok and stored.headers["x-content-type-options"] == "nosniff"
    square = Image.open(io.BytesIO(stored.body())).convert("RGB")
    assert square.size == (256, 256)
    r, g, b = square.getpixel((128, 128))  # type: ignore[misc]
    assert b > 200 and r < 60, (r, g, b)

    # Bo, on the other gateway, sees it live: in the list and in the open chat's header.
    row = conversation(bo_page, "Ana")
    expect(row.locator(".avatar img")).to_have_attribute("src", mine)
    assert loaded_picture(bo_page, "#chat-avatar img") == mine

    dialog.get_by_role("button", name="Remove photo").click()
    expect(ana_page.locator("#settings-photo-status")).to_have_text("Photo removed.")
    expect(ana_page.locator("#me-avatar img")).to_have_count(0)
    expect(bo_page.locator("#chat-avatar")).to_have_text("A")
    expect(row.locator(".avatar img")).to_have_count(0)
    expect(row.locator(".avatar")).to_have_text("A")
