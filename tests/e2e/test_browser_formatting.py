"""Formatted messages and the image viewer in real Chromium: the Markdown subset, links
without a scheme, attacks written in formatting shown as text, and images opened inside
the app.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Dialog, expect

from accounts.models import User
from messaging import services
from messaging.models import Conversation
from tests.e2e.browser import (
    Axe,
    Web,
    ana_writes_to_bo,
    bubbles,
    conversation,
    make_person,
    off_loop,
    picture,
    png,
    say,
    send,
    shot,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FORMATTED = "\n".join(
    [
        "Plan for *Saturday* with _everyone_, ~not Sunday~ and **@bo**:",
        "- bring `snacks`",
        "- see www.example.com and example.org/path?q=1",
        "1. meet at 9",
        "2. leave at 5",
        "> the weather looks fine",
        "```",
        "if *this* == _that_:",
        "    go()",
        "```",
        "snake_case_name, 2*3*4, e.g. notes.txt stay as they are",
    ]
)

ATTACKS = [
    "**<img src=x onerror=alert(1)>**",
    "_<script>alert(2)</script>_",
    "`</code><script>alert(3)</script>`",
    "[click](javascript:alert(4)) *javascript:alert(5)*",
    '> "><svg onload=alert(6)>',
    "- <iframe src=javascript:alert(7)></iframe>",
    "```\n<b onmouseover=alert(8)>bold</b>\n```",
    '~"quoted" <a href="javascript:alert(9)">x</a>~',
]


def direct_of(ana: User, bo: User) -> Conversation:
    """The direct conversation of the two (one per pair: asking again finds it)."""
    direct: Conversation = off_loop(
        services.create_direct_conversation, user=ana, other_user_id=bo.pk
    )[0]
    return direct


def test_bold_italic_strike_code_quotes_lists_and_links_without_a_scheme(web: Web) -> None:
    """Tried: every marker of the subset in one message, a mention inside bold, markers
    inside a code block and inside words (which stay as typed), two addresses without a
    scheme and two that only look like one (`e.g.`, `notes.txt`)."""
    ana_page, bo_page = ana_writes_to_bo(web)
    ana, bo = User.objects.get(username="ana"), User.objects.get(username="bo")
    say(ana, direct_of(ana, bo).pk, FORMATTED)
    conversation(bo_page, "Ana").click()
    body = bubbles(bo_page).last
    expect(body).to_contain_text("Plan for Saturday")

    expect(body.locator("strong.md").first).to_have_text("Saturday")
    expect(body.locator("em.md")).to_have_text(["everyone"])
    expect(body.locator("s.md")).to_have_text(["not Sunday"])
    expect(body.locator("strong.md .mention")).to_have_text(["@bo"])
    expect(body.locator("code.md-code")).to_have_text(["snacks"])
    expect(body.locator("ul > li")).to_have_count(2)
    expect(body.locator("ol > li")).to_have_text(["meet at 9", "leave at 5"])
    expect(body.locator("blockquote.md-quote")).to_have_text("the weather looks fine")
    expect(body.locator("pre.md-pre code")).to_have_text("if *this* == _that_:\n    go()")
    links = body.locator("a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://www.example.com/")
    expect(links.nth(0)).to_have_text("www.example.com")
    expect(links.nth(1)).to_have_attribute("href", "https://example.org/path?q=1")
    expect(body).to_contain_text("snake_case_name, 2*3*4, e.g. notes.txt stay as they are")
    # The list's preview and the search results show the text without its markers.
    expect(conversation(bo_page, "Ana").locator(".conv-preview")).to_contain_text(
        "Plan for Saturday with everyone, not Sunday"
    )
    bo_page.get_by_label("Search messages").fill("weather")
    bo_page.get_by_label("Search messages").press("Enter")
    expect(bo_page.locator("#search-list .result mark").first).to_have_text("weather")
    bo_page.get_by_label("Search messages").fill("Saturday")
    bo_page.get_by_label("Search messages").press("Enter")
    expect(bo_page.locator("#search-list .result").first.locator("strong.md")).to_have_count(1)
    bo_page.keyboard.press("Escape")
    shot(bo_page, "formatting")

    # What the other side typed is what its own (sent) bubble shows too.
    expect(bubbles(ana_page).last.locator("strong.md").first).to_have_text("Saturday")


def test_attacks_written_in_formatting_render_as_text(web: Web) -> None:
    """Tried: markup and javascript: URLs inside every kind of formatting; none becomes an
    element or a link, nothing runs, and the text is shown as typed, markers aside."""
    ana_page, bo_page = ana_writes_to_bo(web)
    ana, bo = User.objects.get(username="ana"), User.objects.get(username="bo")
    direct = direct_of(ana, bo)
    alerts: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        alerts.append(dialog.message)
        dialog.dismiss()

    bo_page.on("dialog", on_dialog)
    for body in ATTACKS:
        say(ana, direct.pk, body)
    conversation(bo_page, "Ana").click()
    shown = bubbles(bo_page)
    expect(shown).to_have_count(len(ATTACKS))

    expect(shown.nth(0).locator("strong.md")).to_have_text("<img src=x onerror=alert(1)>")
    expect(shown.nth(1).locator("em.md")).to_have_text("<script>alert(2)</script>")
    expect(shown.nth(2).locator("code.md-code")).to_have_text("</code><script>alert(3)</script>")
    expect(shown.nth(3)).to_have_text("[click](javascript:alert(4)) javascript:alert(5)")
    expect(shown.nth(4).locator("blockquote")).to_have_text('"><svg onload=alert(6)>')
    expect(shown.nth(6).locator("pre code")).to_have_text("<b onmouseover=alert(8)>bold</b>")
    for page in (ana_page, bo_page):
        for selector in (
            "#message-list img",
            "#message-list script",
            "#message-list svg[onload]",
            "#message-list iframe",
            "#message-list b",
            "[onerror], [onload], [onmouseover]",
            "a[href^='javascript']",
        ):
            assert page.locator(selector).count() == 0, selector
        assert page.locator("#message-list .body a").count() == 0
    assert alerts == []


def test_a_longest_message_of_markers_renders(web: Web) -> None:
    """100,000 characters of unmatched and nested markers: the page renders it (the
    formatter is bounded) and stays usable."""
    _, bo_page = ana_writes_to_bo(web)
    ana, bo = User.objects.get(username="ana"), User.objects.get(username="bo")
    body = ("*_ ~a" * 20_000)[:100_000]
    say(ana, direct_of(ana, bo).pk, body)
    say(ana, direct_of(ana, bo).pk, "after the long one")
    conversation(bo_page, "Ana").click()
    expect(bubbles(bo_page).last).to_have_text("after the long one", timeout=30_000)
    assert len(bubbles(bo_page).first.inner_text()) > 50_000


def test_images_open_in_a_viewer_with_zoom_next_previous_and_download(web: Web) -> None:
    """Tried: two images in a chat; a click on the first opens the viewer (not a new tab)
    at full size; Right shows the next, + zooms in, 0 fits again, Escape closes and gives
    the focus back to the thumbnail. axe finds nothing serious in the viewer."""
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    ana_page = web.log_in(ana, gateway=0)
    bo_page = web.log_in(bo, gateway=1, bypass_csp=True)  # axe is injected below
    conversation(ana_page, "Bo").click()
    for name, data in (("view.png", picture()), ("teal.png", png("teal"))):
        ana_page.locator("#file-input").set_input_files(
            {"name": name, "mimeType": "image/png", "buffer": data}
        )
        expect(ana_page.locator("#tray .tray-item.done")).to_have_count(1)
        send(ana_page, f"look: {name}")
        expect(ana_page.locator("#tray .tray-item")).to_have_count(0)
    conversation(bo_page, "Ana").click()
    thumbnails = bo_page.locator("#message-list .attachment.image")
    expect(thumbnails).to_have_count(2)

    pages_before = len(bo_page.context.pages)
    thumbnails.first.click()
    viewer = bo_page.get_by_role("dialog", name="view.png")
    expect(viewer).to_be_visible()
    assert len(bo_page.context.pages) == pages_before  # no new tab
    full = bo_page.locator("#viewer-image")
    expect(full).to_have_js_property("complete", True)
    assert full.evaluate("img => img.naturalWidth") == 640  # the file, not its thumbnail
    expect(viewer.locator("#viewer-meta")).to_contain_text("Ana")
    expect(viewer.locator("#viewer-position")).to_have_text("1 of 2")
    first_url = thumbnails.first.get_attribute("href")
    expect(viewer.get_by_role("link", name="Download")).to_have_attribute(
        "href", re.compile(re.escape(first_url or "-") + "$")
    )
    axe = Axe()
    axe.check(bo_page, "image viewer")
    axe.assert_clean()
    shot(bo_page, "image-viewer")

    box = bo_page.locator("#dialog-viewer")  # named after the image it shows
    bo_page.keyboard.press("ArrowRight")
    expect(bo_page.get_by_role("dialog", name="teal.png")).to_be_visible()
    expect(box.locator("#viewer-position")).to_have_text("2 of 2")
    # The zoom steps are factors of the image's natural size: pressed before teal.png has
    # loaded, both steps are of a 0-pixel-wide image and measure the same 2 px (it is
    # sized again once loaded), which is what this test would then be measuring.
    expect(full).to_have_js_property("naturalWidth", 64)
    expect(full).to_have_js_property("complete", True)
    bo_page.keyboard.press("+")
    expect(box.locator("#viewer-stage")).to_have_class(re.compile(r"\bzoomed\b"))
    width = full.evaluate("img => img.getBoundingClientRect().width")
    bo_page.keyboard.press("+")
    wider = full.evaluate("img => img.getBoundingClientRect().width")
    assert wider > width
    bo_page.keyboard.press("0")
    expect(box.locator("#viewer-stage")).not_to_have_class(re.compile(r"\bzoomed\b"))
    bo_page.keyboard.press("ArrowRight")  # wraps around to the first
    expect(box.locator("#viewer-position")).to_have_text("1 of 2")

    bo_page.keyboard.press("Escape")
    expect(bo_page.locator("#dialog-viewer")).to_be_hidden()
    expect(thumbnails.first).to_be_focused()
