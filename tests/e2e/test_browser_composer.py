"""The composer's emoji (picker, `:shortcode:` completion) and drafts in real Chromium.

The emoji picker beside the composer works by keyboard (a search box, a grid the arrows
move in, Enter inserts at the caret, Escape closes) and lists the recent emoji first;
typing `:thu` offers emoji by shortcode. Drafts are kept per conversation across reloads
and reach the browser's other tabs; the conversation list shows them; sending clears them.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from messaging import services
from tests.e2e.browser import (
    Axe,
    Web,
    bubbles,
    cmid,
    conversation,
    make_person,
    off_loop,
    online,
    shot,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def picked(page: Page) -> str:
    """The accessible name (the emoji's name) of the picker's highlighted emoji."""
    grid = page.get_by_role("listbox", name="Emoji", exact=True)
    active = grid.get_attribute("aria-activedescendant")
    assert active, "no emoji is highlighted"
    return str(page.locator(f"#{active}").get_attribute("aria-label"))


def test_emoji_picker_and_shortcode_completion(web: Web) -> None:
    """Tried, by keyboard: the Emoji button opens the picker with the focus in its
    search box; "popper" finds the party popper; Down goes to the grid, Right and Down
    move (Down a row as drawn), Enter inserts at the composer's caret (mid-text), closes
    and gives the focus back; reopened, the emoji just used comes first; Escape closes
    with nothing inserted; search then Enter inserts the first match. Then `:thu` lists
    emoji by shortcode (Tab picks 👍), `:smi` + Enter picks without sending, a whole
    `:heart:` becomes ❤️; the message is sent. axe finds nothing serious in the picker.
    Without the feature there is no Emoji button, no completion: it fails at once."""
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    # (Not an empty chat: axe flags the empty message list's aria-label, a known issue.)
    off_loop(
        services.send_message,
        sender=bo,
        conversation_id=chat.pk,
        client_msg_id=cmid(1),
        body="How was the party?",
    )
    page = web.log_in(ana, bypass_csp=True)
    conversation(page, "Bo Berg").click()
    expect(bubbles(page)).to_have_count(1)
    composer = page.get_by_role("combobox", name="Message")
    expect(composer).to_be_focused()
    composer.fill("Hi there")
    for _ in range(5):
        composer.press("ArrowLeft")  # the caret after "Hi "

    button = page.get_by_role("button", name="Emoji", exact=True)
    picker = page.get_by_role("dialog", name="Emoji picker")
    search = picker.get_by_role("searchbox", name="Search emoji")
    grid = picker.get_by_role("listbox", name="Emoji", exact=True)
    options = grid.get_by_role("option")
    expect(picker).to_be_hidden()
    button.click()
    expect(picker).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(search).to_be_focused()
    search.press_sequentially("popper")
    expect(options).to_have_count(1)
    expect(options.first).to_have_attribute("aria-label", "party popper")
    search.fill("")
    expect(options.nth(100)).to_be_attached()  # every emoji again
    search.press("ArrowDown")
    expect(grid).to_be_focused()
    assert picked(page) == "grinning face"
    page.keyboard.press("ArrowRight")
    assert picked(page) == "smiling face with open mouth"
    page.keyboard.press("ArrowDown")  # the row below, 8 to a row
    assert picked(page) == "upside-down face"
    axe = Axe()
    axe.check(page, "emoji picker")
    axe.assert_clean()
    shot(page, "emoji-picker")
    page.keyboard.press("Enter")
    expect(picker).to_be_hidden()
    expect(composer).to_be_focused()
    expect(composer).to_have_value("Hi 🙃there")

    # Reopened by keyboard: the recent emoji comes first; Escape inserts nothing.
    composer.press("Tab")  # the button is next in the focus order
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(search).to_be_focused()
    expect(options.first).to_have_attribute("aria-label", "upside-down face")
    expect(grid.get_by_role("group").first).to_have_attribute("aria-label", "Recently used")
    page.keyboard.press("Escape")
    expect(picker).to_be_hidden()
    expect(composer).to_be_focused()
    expect(composer).to_have_value("Hi 🙃there")
    # Search, then Enter: the first match, at the caret (after the emoji inserted).
    button.click()
    search.press_sequentially("popper")
    search.press("Enter")
    expect(composer).to_have_value("Hi 🙃🎉there")
    expect(composer).to_be_focused()

    # `:shortcode:` completion in the composer's list.
    listbox = page.locator("#mention-list")
    expect(listbox).to_be_hidden()
    composer.fill("")
    composer.press_sequentially("good :thu")
    expect(listbox).to_be_visible()
    expect(listbox).to_have_attribute("aria-label", "Emoji")
    expect(composer).to_have_attribute("aria-expanded", "true")
    expect(listbox.get_by_role("option").first).to_contain_text(":thumbsup:")
    composer.press("Tab")
    expect(composer).to_have_value("good 👍")
    expect(listbox).to_be_hidden()
    composer.press_sequentially(" :smi")
    expect(listbox.get_by_role("option").first).to_contain_text(":smiley:")
    composer.press("Enter")  # picks; does not send
    expect(composer).to_have_value("good 👍 😃")
    composer.press_sequentially(" :heart:")  # a whole shortcode becomes its emoji
    expect(composer).to_have_value("good 👍 😃 ❤️")
    expect(bubbles(page)).to_have_count(1)
    composer.press("Enter")
    expect(bubbles(page)).to_have_text(["How was the party?", "good 👍 😃 ❤️"])


def test_drafts_survive_a_reload_reach_other_tabs_and_clear_on_send(web: Web) -> None:
    """Tried: Ana writes half a reply to Bo and goes to Cy's chat: Bo's row shows
    "Draft: ..." (marked) instead of Bo's last message; a second tab of her browser shows
    it too; after a reload of the first tab the row still shows it and opening Bo's chat
    puts it back in the composer; the second tab, showing Bo's chat, follows the text as
    the first tab changes it; sending it in the first clears it in both (the second
    tab's composer empties, its row shows the message sent). Without the feature the
    draft lives in one tab's memory: no "Draft:" row anywhere, nothing after the reload."""
    ana = make_person("ana", "Ana Lima")
    bo = make_person("bo", "Bo Berg")
    cy = make_person("cy", "Cy Park")
    bo_chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    off_loop(services.create_direct_conversation, user=ana, other_user_id=cy.pk)
    off_loop(
        services.send_message,
        sender=bo,
        conversation_id=bo_chat.pk,
        client_msg_id=cmid(1),
        body="Lunch at noon?",
    )
    first = web.log_in(ana, name="ana-1")
    bo_row = conversation(first, "Bo Berg")
    expect(bo_row.locator(".conv-preview")).to_have_text("Lunch at noon?")
    bo_row.click()
    composer = first.locator("#composer-input")
    composer.fill("Noon works, and")
    conversation(first, "Cy Park").click()
    expect(composer).to_have_value("")
    preview = bo_row.locator(".conv-preview")
    expect(preview).to_have_text("Draft: Noon works, and")
    expect(preview.locator(".draft-label")).to_have_text("Draft:")
    expect(preview.locator(".draft-label")).to_have_css("font-weight", "700")  # styled apart
    shot(first, "drafts")

    second = web.watch.page(first.context.new_page(), "ana-2")
    second.goto(f"{web.url(0)}/")
    online(second)
    second_preview = conversation(second, "Bo Berg").locator(".conv-preview")
    expect(second_preview).to_have_text("Draft: Noon works, and")

    first.reload()
    online(first)
    expect(conversation(first, "Bo Berg").locator(".conv-preview")).to_have_text(
        "Draft: Noon works, and"
    )
    conversation(first, "Bo Berg").click()
    expect(composer).to_have_value("Noon works, and")

    # The second tab shows Bo's chat and follows the draft as the first changes it.
    conversation(second, "Bo Berg").click()
    second_composer = second.locator("#composer-input")
    expect(second_composer).to_have_value("Noon works, and")
    composer.press("End")
    composer.press_sequentially(" you pick the place")
    expect(second_composer).to_have_value("Noon works, and you pick the place")
    composer.press("Enter")
    expect(bubbles(first)).to_contain_text(["Noon works, and you pick the place"])
    expect(second_composer).to_have_value("")
    conversation(second, "Cy Park").click()
    expect(second_preview).to_have_text("You: Noon works, and you pick the place")
    first.reload()
    online(first)
    conversation(first, "Bo Berg").click()
    expect(composer).to_have_value("")
