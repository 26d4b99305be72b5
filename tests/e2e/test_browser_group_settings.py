"""Group info in real Chromium against real gateway processes: settings, roles, members.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import FilePayload, expect

from messaging import services
from messaging.models import Conversation, Membership, Message
from tests.e2e.browser import (
    Axe,
    Web,
    bubbles,
    conversation,
    make_person,
    off_loop,
    picture,
    send,
    shot,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_owner_manages_the_group_and_members_see_it_live(web: Web) -> None:
    """Tried: Ana (owner) opens Group info, renames the group, describes it, makes it
    admins-only and gives it a picture; Bo (plain member, other gateway) sees his composer
    give way to a note and the group's picture, while his panel is read-only. Ana makes
    Bo admin: his composer comes back and he sends. Ana adds Cy from the panel's search
    and removes her again; every change is a line in the log."""
    axe = Axe()
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    make_person("cy", "Cy")
    group = off_loop(services.create_group, creator=ana, title="Board", member_ids=[bo.pk])
    bo_page = web.log_in(bo, gateway=1, bypass_csp=True)
    ana_page = web.log_in(ana, gateway=0, bypass_csp=True)
    conversation(ana_page, "Board").click()
    conversation(bo_page, "Board").click()

    ana_page.get_by_role("button", name="Group info").click()
    panel = ana_page.get_by_role("dialog", name="Group info")
    expect(panel).to_be_visible()
    expect(panel.locator("#member-list .member")).to_have_count(2)
    name = panel.get_by_label("Name")
    name.fill("Board news")
    panel.get_by_label("Description").fill("Decisions of the board, nothing else.")
    panel.get_by_label("Who can send messages").select_option("admins")
    panel.get_by_role("button", name="Save changes").click()
    wait_until(lambda: Conversation.objects.get(pk=group.pk).post_policy == "admins")
    stored = Conversation.objects.get(pk=group.pk)
    assert (stored.title, stored.description) == (
        "Board news",
        "Decisions of the board, nothing else.",
    )
    with ana_page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="Change picture").click()
    board: FilePayload = {"name": "board.png", "mimeType": "image/png", "buffer": picture()}
    chooser.value.set_files(files=[board])
    expect(panel.locator("#group-picture img")).to_be_visible()
    expect(panel.get_by_role("button", name="Remove picture")).to_be_visible()
    axe.check(ana_page, "group info, owner")
    shot(ana_page, "group-info-owner")

    # Bo, on the other gateway: the header follows, the composer gives way to a note.
    expect(bo_page.locator("#chat-title")).to_have_text("Board news")
    expect(bo_page.locator("#admins-only-note")).to_be_visible()
    expect(bo_page.locator("#composer")).to_be_hidden()
    expect(bo_page.locator("#chat-avatar img")).to_be_visible()
    bo_page.get_by_role("button", name="Group info").click()
    bo_panel = bo_page.get_by_role("dialog", name="Group info")
    expect(bo_panel.get_by_label("Description")).to_have_value(
        "Decisions of the board, nothing else."
    )
    expect(bo_panel.get_by_label("Name")).to_have_attribute("readonly", "")
    expect(bo_panel.get_by_label("Who can send messages")).to_be_disabled()
    expect(bo_panel.get_by_role("button", name="Save changes")).to_be_hidden()
    expect(bo_panel.get_by_role("button", name="Make Ana an admin")).to_have_count(0)
    axe.check(bo_page, "group info, member")

    # Ana makes Bo an admin: Bo's open panel and composer follow live.
    panel.get_by_role("button", name="Make Bo an admin").click()
    expect(panel.locator(f'#member-list .member[data-user="{bo.pk}"] .role')).to_have_text("admin")
    expect(bo_panel.get_by_role("button", name="Save changes")).to_be_visible()
    bo_panel.get_by_role("button", name="Close").click()
    expect(bo_page.locator("#composer")).to_be_visible()
    expect(bo_page.locator("#admins-only-note")).to_be_hidden()
    send(bo_page, "Board meets at ten")
    expect(bubbles(ana_page).filter(has_text="Board meets at ten")).to_have_count(1)
    assert Membership.objects.get(conversation=group, user=bo).role == "admin"

    # Ana adds Cy from the panel's search, then removes her.
    panel.get_by_label("Add members").fill("cy")
    panel.get_by_role("list", name="People to add to the group").get_by_role("button").filter(
        has_text="Cy"
    ).click()
    expect(panel.locator("#member-list .member")).to_have_count(3)
    expect(panel.locator("#group-add-status")).to_have_text("Cy was added.")
    panel.get_by_role("button", name="Remove Cy from the group").click()
    expect(panel.locator("#member-list .member")).to_have_count(2)
    panel.get_by_role("button", name="Close").click()

    events = list(
        Message.objects.filter(conversation=group, kind=Message.Kind.SYSTEM)
        .order_by("seq")
        .values_list("system__event", flat=True)
    )
    assert events == [
        "created",
        "renamed",
        "description",
        "post_policy",
        "picture",
        "role",
        "added",
        "removed",
    ]
    # The log's lines show in both pages.
    expect(
        ana_page.locator("#message-list .msg.system").filter(has_text="Ana made Bo an admin.")
    ).to_have_count(1)
    expect(
        bo_page.locator("#message-list .msg.system").filter(
            has_text="Ana changed who can send messages: only admins."
        )
    ).to_have_count(1)
    axe.assert_clean()


def test_a_refused_change_shows_why_and_keeps_the_settings(web: Web) -> None:
    """Tried: Ana saves an empty name (refused in the page) and a picture that is not an
    image (refused by the server): both say why in the panel, nothing changes."""
    ana, bo = make_person("ana", "Ana"), make_person("bo", "Bo")
    group = off_loop(services.create_group, creator=ana, title="Board", member_ids=[bo.pk])
    page = web.log_in(ana, gateway=0)
    conversation(page, "Board").click()
    page.get_by_role("button", name="Group info").click()
    panel = page.get_by_role("dialog", name="Group info")
    expect(panel.locator("#member-list .member")).to_have_count(2)

    panel.get_by_label("Name").fill("   ")
    panel.get_by_role("button", name="Save changes").click()
    expect(panel.get_by_role("alert")).to_have_text("A group needs a name.")

    with page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="Change picture").click()
    notes: FilePayload = {"name": "notes.png", "mimeType": "image/png", "buffer": b"just text"}
    chooser.value.set_files(files=[notes])
    expect(panel.get_by_role("alert")).to_contain_text("Could not change the picture")
    expect(panel.get_by_role("alert")).to_contain_text("not a picture")
    stored = Conversation.objects.get(pk=group.pk)
    assert (stored.title, stored.picture, stored.last_seq) == ("Board", "", 1)
