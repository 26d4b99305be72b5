"""The web app in real Chromium against real gateway processes: chat, outbox, XSS, CSP.

The browser, the deployments and the page helpers are in `tests/e2e/browser.py`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from playwright.sync_api import (
    FilePayload,
    expect,
)

from accounts.models import User
from bench.harness import REPO_ROOT, RedisServer, redis_db_url
from messaging import services
from messaging.models import Attachment, Membership, Message
from tests.e2e.browser import (
    PASSWORD,
    PHONE,
    Web,
    ana_writes_to_bo,
    bubbles,
    cmid,
    conversation,
    make_person,
    off_loop,
    online,
    open_direct,
    picture,
    png,
    pretend_hidden,
    pretend_visible,
    send,
    shot,
    wait_until,
)
from tests.e2e.conftest import MakeWorkers, fanout_lost, table_locked

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

XSS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '"><svg onload=alert(3)>',
    "javascript:alert(4)",
    '<a href="javascript:alert(5)">click me</a>',
    "<iframe src=javascript:alert(6)></iframe>",
    "'; alert(7); //",
    "{{7*7}} ${alert(8)} <b onmouseover=alert(9)>bold</b>",
    "&lt;script&gt;alert(10)&lt;/script&gt; &amp; <style>*{display:none}</style>",
]

# --------------------------------------------------------------------------- tests


def test_two_users_chat_live_with_typing_receipts_presence_and_search(
    web: Web, settings: Any
) -> None:
    settings.CHAT_SEND_BURST = 1000  # the seeding below, in this process only
    ana = make_person("ana", "Ana Lima")
    cy = make_person("cy", "Cy Park")
    # A group with a long history: scrollback and search must reach its start.
    group = off_loop(services.create_group, creator=cy, title="Book club", member_ids=[ana.pk])
    for n in range(80):
        body = f"filler {n}" if n else "needle in old history"
        off_loop(
            services.send_message,
            sender=cy,
            conversation_id=group.pk,
            client_msg_id=cmid(n),
            body=body,
        )
    off_loop(services.mark_read, user=ana, conversation_id=group.pk, seq=81)  # none unread

    # Bo signs up through the real page (on the other gateway), on a phone-sized screen.
    bo_page = web.watch.page(web.context(PHONE).new_page(), "bo")
    bo_page.goto(f"{web.url(1)}/")
    expect(bo_page).to_have_url(re.compile(r"/accounts/login/"))
    bo_page.get_by_role("link", name="Create an account").click()
    bo_page.get_by_label("Username").fill("bo")
    bo_page.get_by_label("Display name").fill("Bo Berg")
    bo_page.get_by_label("Password", exact=True).fill(PASSWORD)
    bo_page.get_by_label("Password again").fill(PASSWORD)
    bo_page.get_by_role("button", name="Sign up").click()
    online(bo_page)
    expect(bo_page.locator("#empty-list")).to_be_visible()
    shot(bo_page, "first-visit-phone")
    assert User.objects.get(username="bo").display_name == "Bo Berg"

    ana_page = web.log_in(ana, gateway=0)
    ana_page.context.grant_permissions(["notifications"])
    # Ana starts a direct chat with the keyboard alone: Tab to "New chat" (focus order:
    # skip link, status, log out, New chat), search the directory, pick, write.
    for _ in range(4):
        ana_page.keyboard.press("Tab")
    new_chat = ana_page.get_by_role("button", name="New chat")
    expect(new_chat).to_be_focused()
    assert new_chat.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
    ana_page.keyboard.press("Enter")
    expect(ana_page.get_by_label("Find a person")).to_be_focused()
    ana_page.keyboard.type("bo")
    pick = ana_page.locator("#new-chat-results").get_by_role("button", name=re.compile("Bo Berg"))
    expect(pick).to_be_visible()
    ana_page.keyboard.press("Tab")
    expect(pick).to_be_focused()
    ana_page.keyboard.press("Enter")
    expect(ana_page.locator("#chat-title")).to_have_text("Bo Berg")
    expect(ana_page.locator("#composer-input")).to_be_focused()
    ana_page.keyboard.type("Hi Bo! Lunch today?")
    ana_page.keyboard.press("Enter")
    expect(bubbles(ana_page)).to_have_text(["Hi Bo! Lunch today?"])

    # Bo gets it live: the conversation appears with an unread badge; the page title counts.
    expect(conversation(bo_page, "Ana Lima").locator(".badge")).to_contain_text("1")
    expect(bo_page).to_have_title("(1) Chat")
    # Ana is a stranger to Bo: a message request. Bo's device has it, but Ana learns
    # nothing of Bo (no "delivered", no presence) until Bo accepts.
    own_mark = ana_page.locator("#message-list .msg.own .marks").last
    expect(own_mark).to_have_attribute("data-state", "sent")
    expect(conversation(bo_page, "Ana Lima").locator(".request-mark")).to_have_text("Request")

    conversation(bo_page, "Ana Lima").click()
    expect(bubbles(bo_page)).to_have_text(["Hi Bo! Lunch today?"])
    expect(bo_page.locator("#message-list .day")).to_have_text(["Today"])
    expect(bo_page).to_have_title("Chat")
    expect(bo_page.locator("#request-bar")).to_be_visible()
    expect(own_mark).to_have_attribute("data-state", "sent")
    bo_page.get_by_role("button", name="Accept").click()
    expect(bo_page.locator("#request-bar")).to_be_hidden()
    # Accepted: Ana sees that Bo read it, and that he is online.
    expect(own_mark).to_have_attribute("data-state", "read")
    expect(conversation(ana_page, "Bo Berg").locator(".presence")).to_have_attribute(
        "data-state", "online"
    )

    # Typing shows on the other screen and goes away when the text is cleared.
    bo_page.locator("#composer-input").fill("Sure")
    bo_page.locator("#composer-input").press("!")
    expect(ana_page.locator("#typing")).to_have_text("Bo Berg is typing…")
    bo_page.locator("#composer-input").fill("")
    bo_page.locator("#composer-input").press("Backspace")
    expect(ana_page.locator("#typing")).to_have_text("")

    # A message while Ana's tab is hidden: a notification and the unread count in the title.
    pretend_hidden(ana_page)
    send(bo_page, "Sure! 12:30 at the usual place?")
    expect(bubbles(ana_page)).to_have_text(
        ["Hi Bo! Lunch today?", "Sure! 12:30 at the usual place?"]
    )
    expect(ana_page).to_have_title("(1) Chat")
    notes = ana_page.evaluate("() => window.__notifications")
    assert notes == [{"title": "Bo Berg", "body": "Sure! 12:30 at the usual place?"}]
    pretend_visible(ana_page)
    expect(ana_page).to_have_title("Chat")

    # Ana edits her message (Up in the empty composer) and Bo sees the new text.
    ana_page.locator("#composer-input").press("ArrowUp")
    expect(ana_page.locator("#editing")).to_be_visible()
    ana_page.locator("#composer-input").fill("Hi Bo! Lunch today or tomorrow?")
    ana_page.locator("#composer-input").press("Enter")
    first = bo_page.locator("#message-list .msg.other").first
    expect(first.locator(".body")).to_have_text("Hi Bo! Lunch today or tomorrow?")
    expect(first.locator(".edited")).to_be_visible()

    # Bo deletes his reply; Ana sees it gone.
    reply = bo_page.locator("#message-list .msg.own").last
    reply.hover()
    reply.get_by_role("button", name="Delete message").click()
    bo_page.locator("#dialog-confirm").get_by_role("button", name="Delete").click()
    expect(ana_page.locator("#message-list .msg.other").last).to_contain_text(
        "This message was deleted."
    )

    # A little more chat, with Bo typing: the picture of the app (docs/screenshot.png).
    ana_page.locator("#file-input").set_input_files(
        {"name": "the-place.png", "mimeType": "image/png", "buffer": picture()}
    )
    expect(ana_page.locator("#tray .tray-item.done")).to_have_count(1)
    send(ana_page, "Perfect, see you at 12:30. This is the place:")
    # Stored before Bo answers: sent at once, Bo's reply can take the earlier seq (Ana's
    # upload makes her send the slower one) and is then rightly shown above hers.
    expect(ana_page.locator("#message-list .msg.own:not(.pending) .body").last).to_have_text(
        "Perfect, see you at 12:30. This is the place:"
    )
    send(bo_page, "Booked a table by the window.")
    expect(bubbles(ana_page).last).to_have_text("Booked a table by the window.")
    expect(bo_page.locator("#message-list .attachment.image img")).to_have_js_property(
        "complete", True
    )
    expect(ana_page.locator("#message-list .msg.own .marks").last).to_have_attribute(
        "data-state", "read"
    )
    ana_page.get_by_role("button", name="Not now").click()  # the notifications banner
    expect(ana_page.locator("#notify-banner")).to_be_hidden()
    bo_page.locator("#composer-input").press_sequentially("On my way")
    expect(ana_page.locator("#typing")).to_have_text("Bo Berg is typing…")
    shot(ana_page, "chat-desktop")
    shot(bo_page, "chat-phone")

    # Presence: busy, then offline when Bo closes the app.
    ana_dot = conversation(ana_page, "Bo Berg").locator(".presence")
    bo_page.locator("#back").click()
    bo_page.get_by_role("button", name=re.compile("^Available")).click()
    expect(bo_page.locator("#busy-toggle")).to_have_attribute("aria-pressed", "true")
    expect(ana_dot).to_have_attribute("data-state", "busy")
    expect(ana_page.locator("#chat-subtitle")).to_have_text("Busy (do not disturb)")
    shot(bo_page, "list-phone")
    bo_page.close()
    expect(ana_dot).to_have_attribute("data-state", "offline")

    # The group: the newest page, then scrollback to the very first message.
    conversation(ana_page, "Book club").click()
    expect(bubbles(ana_page).last).to_have_text("filler 79")
    assert ana_page.locator("#message-list .msg .body", has_text="needle").count() == 0
    ana_page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
    expect(ana_page.locator("#message-list .msg.other .body").first).to_have_text(
        "needle in old history", timeout=30_000
    )
    expect(ana_page.locator("#message-list .msg.system").first).to_contain_text("created")
    expect(ana_page.locator("#load-older")).to_be_hidden()
    expect(ana_page.locator("#message-list .sender").first).to_have_text("Cy Park")

    # Search: the hit is highlighted, and opens the conversation at the message.
    conversation(ana_page, "Bo Berg").click()
    ana_page.get_by_label("Search messages").fill("needle")
    ana_page.get_by_label("Search messages").press("Enter")
    hit = ana_page.locator("#search-list .result").first
    expect(hit.locator("mark")).to_have_text(["needle"])
    expect(hit.locator(".result-title")).to_have_text("Book club")
    hit.click()
    expect(ana_page.locator("#chat-title")).to_have_text("Book club")
    target = ana_page.locator("#message-list .msg.highlight")
    expect(target).to_contain_text("needle in old history")
    expect(target).to_be_in_viewport()


def test_a_live_event_lost_on_the_way_is_shown_within_a_heartbeat(
    make_web: Callable[..., Web], settings: Any
) -> None:
    # A 2 s heartbeat; the periodic sync stays at 60 s, far beyond the waits below.
    web = make_web(gateways=1, WS_HEARTBEAT_INTERVAL="2")
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    ana_page = web.log_in(ana)
    conversation(ana_page, "Bo").click()

    def bo_says(body: str, n: int) -> None:
        off_loop(
            services.send_message,
            sender=bo,
            conversation_id=chat.pk,
            client_msg_id=cmid(n),
            body=body,
        )

    bo_says("Are you there?", 1)
    expect(bubbles(ana_page)).to_have_text(["Are you there?"])
    with fanout_lost(settings):  # stored, but its live event reaches no gateway
        bo_says("This one's event was lost.", 2)

    expect(bubbles(ana_page)).to_have_text(
        ["Are you there?", "This one's event was lost."], timeout=15_000
    )
    # The page's client noticed the gap at a pong and synced (its socket may be held by
    # the tabs' SharedWorker, whose frames the page's own websocket events do not see).
    assert ana_page.evaluate("() => window.chat.client.missedEventSyncs") > 0, "repaired by a sync"


def test_a_socket_never_greeted_is_given_up_after_10_s_and_another_is_opened(
    make_web: Callable[..., Web],
) -> None:
    """Tried: Ana's connection drops and the next one is accepted but never greeted (the
    gateway's read of her memberships waits on a lock of their table), so no
    `session.ready` comes. The client gives that socket up after 10 s, opens another with
    its backoff, and is online as soon as the lock goes. (A handshake that is not even
    accepted is closed by the server's own 10 s opening timeout.)"""
    web = make_web(gateways=1)
    ana = make_person("ana", "Ana")
    page = web.log_in(ana, socket_in_page=True)  # so that the page sees its sockets
    opened: list[float] = []
    page.on("websocket", lambda ws: opened.append(time.monotonic()))
    with table_locked(Membership._meta.db_table):
        page.context.set_offline(True)
        page.context.set_offline(False)  # back: the client connects again at once
        while len(opened) < 2:
            page.wait_for_timeout(100)
            assert not opened or time.monotonic() - opened[0] < 40, "no second socket"
        # The hung socket was kept for the whole 10 s before the client gave up on it.
        assert opened[1] - opened[0] >= 9.5
        expect(page.locator("#conn-status")).not_to_have_attribute("data-state", "online")
    online(page)


def test_offline_outbox_sends_each_message_once_in_order(web: Web) -> None:
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat = open_direct(ana, bo)
    bo_page = web.log_in(bo, gateway=1)
    ana_page = web.log_in(ana, gateway=0)
    # The service worker must control the page, so a reload without network opens the app.
    ana_page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    conversation(ana_page, "Bo").click()
    conversation(bo_page, "Ana").click()

    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    texts = ["first, offline", "second, offline", "third, offline"]
    for text in texts:
        send(ana_page, text)
    pending = ana_page.locator("#message-list .msg.pending")
    expect(pending).to_have_count(3)
    expect(pending.locator(".body")).to_have_text(texts)
    ids_before = pending.evaluate_all("els => els.map(e => e.dataset.clientMsgId)")

    ana_page.reload()  # from the service worker's cache: there is no network
    expect(pending).to_have_count(3)
    expect(pending.locator(".body")).to_have_text(texts)
    assert pending.evaluate_all("els => els.map(e => e.dataset.clientMsgId)") == ids_before
    assert Message.objects.filter(conversation=chat).count() == 0
    shot(ana_page, "outbox-offline")

    ana_page.context.set_offline(False)
    online(ana_page)
    expect(pending).to_have_count(0)
    expect(bubbles(ana_page)).to_have_text(texts)
    expect(bubbles(bo_page)).to_have_text(texts)
    ana_page.locator("#message-list .msg.own .marks").last.wait_for()

    rows = list(Message.objects.filter(conversation=chat).order_by("seq"))
    assert [m.body for m in rows] == texts
    assert [m.seq for m in rows] == [1, 2, 3]
    assert [str(m.client_msg_id) for m in rows] == ids_before
    # Nothing more arrives later (a late retry would be a replay, stored nowhere).
    ana_page.reload()
    online(ana_page)
    expect(bubbles(ana_page)).to_have_text(texts)
    assert Message.objects.filter(conversation=chat).count() == 3

    # Ana's gateway dies. Bo writes meanwhile (through the other gateway); Ana's page
    # reconnects with backoff once it is back and fetches what it missed.
    gateway = web.deployment.gateways[0]
    gateway.kill()
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "reconnecting")
    send(bo_page, "missed one")
    send(bo_page, "missed two")
    expect(bubbles(bo_page)).to_have_text([*texts, "missed one", "missed two"])
    gateway.start()
    # Full-jitter backoff (up to 30 s between tries): the next try comes within its cap.
    expect(ana_page.locator("#conn-status")).to_have_attribute(
        "data-state", "online", timeout=45_000
    )
    expect(bubbles(ana_page)).to_have_text([*texts, "missed one", "missed two"])
    assert Message.objects.filter(conversation=chat).count() == 5


def test_xss_corpus_renders_as_text_with_csp_on_every_page(web: Web) -> None:
    ana = make_person("ana", XSS[0])
    bo = make_person("bo", XSS[2])
    off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    title = XSS[1] + XSS[3]

    ana_page = web.log_in(ana, gateway=0)
    bo_page = web.log_in(bo, gateway=1)
    expect(ana_page.locator("#me-name")).to_have_text(XSS[0])
    expect(conversation(ana_page, XSS[2])).to_be_visible()

    # A public group whose title is an attack, made through the dialog.
    ana_page.get_by_role("button", name="New group").click()
    ana_page.get_by_label("Group name").fill(title)
    ana_page.get_by_label("Add people").fill("bo")
    ana_page.locator("#group-results").get_by_role("button").first.click()
    expect(ana_page.locator("#group-members .chip")).to_have_text([XSS[2]])
    ana_page.get_by_label("Public: anyone can find and join it").check()
    ana_page.get_by_role("button", name="Create group").click()
    expect(ana_page.locator("#chat-title")).to_have_text(title)

    for body in XSS:
        send(ana_page, body)
    expect(bubbles(ana_page)).to_have_count(len(XSS))

    # Files: one by the button (an attack as its name), one image, one dropped.
    names = [f"{XSS[0]}.txt", f"{XSS[2]}.png"]
    uploads: list[FilePayload] = [
        {"name": names[0], "mimeType": "text/plain", "buffer": b"just text"},
        {"name": names[1], "mimeType": "image/png", "buffer": png("teal")},
    ]
    ana_page.locator("#file-input").set_input_files(uploads)
    dropped = ana_page.evaluate_handle(
        """() => {
            const data = new DataTransfer();
            const name = "dropped <svg onload=alert(11)>.txt";
            data.items.add(new File(["dropped"], name, {type: "text/plain"}));
            return data;
        }"""
    )
    ana_page.dispatch_event("#chat-view", "dragenter", {"dataTransfer": dropped})
    expect(ana_page.locator("#drop-zone")).to_be_visible()
    ana_page.dispatch_event("#chat-view", "drop", {"dataTransfer": dropped})
    tray = ana_page.locator("#tray .tray-item")
    expect(tray).to_have_count(3)
    expect(ana_page.locator("#tray .tray-item.done")).to_have_count(3)
    expect(tray.locator("img")).to_have_count(1)  # the image's local preview
    send(ana_page, "three files")

    stored = list(Attachment.objects.order_by("pk").values_list("filename", flat=True))
    assert len(stored) == 3

    # Bo opens the group: every string is shown exactly as typed, as text.
    conversation(bo_page, title).click()
    expect(bo_page.locator("#chat-title")).to_have_text(title)
    expect(bubbles(bo_page)).to_have_text([*XSS, "three files"])
    images = Attachment.objects.filter(content_type="image/png").values_list("filename", flat=True)
    files = bo_page.locator("#message-list .attachment.file .file-name")
    expect(files).to_have_count(2)
    assert sorted(files.all_inner_texts()) == sorted(set(stored) - set(images))
    assert {names[0], "dropped <svg onload=alert(11)>.txt"} == set(stored) - set(images)
    image = bo_page.locator("#message-list .attachment.image img")
    expect(image).to_have_attribute("alt", next(iter(images)))
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") > 0
    expect(bo_page.locator("#message-list .sender").first).to_have_text(XSS[0])

    # Search highlights without turning the body into markup.
    bo_page.get_by_label("Search messages").fill("alert")
    bo_page.get_by_label("Search messages").press("Enter")
    expect(bo_page.locator("#search-list .result").first.locator("mark").first).to_be_visible()

    # Group info: members' names as text.
    bo_page.get_by_role("button", name="Group info").click()
    expect(bo_page.locator("#member-list .pick-name")).to_have_text([XSS[0], f"{XSS[2]} (you)"])
    bo_page.keyboard.press("Escape")

    # Browse public groups from a third user and join it.
    cy = make_person("cy", XSS[4])
    cy_page = web.log_in(cy, gateway=0)
    cy_page.get_by_role("button", name="Browse groups").click()
    cy_page.locator("#browse-results").get_by_role("button", name=f"Join {title}").click()
    expect(cy_page.locator("#chat-title")).to_have_text(title)
    expect(bubbles(cy_page)).to_have_text([*XSS, "three files"])
    expect(bo_page.locator("#message-list .msg.system").last).to_contain_text(XSS[4])

    # Cy leaves again; the others see it in the log.
    cy_page.get_by_role("button", name="Leave").click()
    cy_page.locator("#dialog-confirm").get_by_role("button", name="Leave").click()
    expect(cy_page.locator("#welcome")).to_be_visible()
    expect(conversation(cy_page, title)).to_have_count(0)
    expect(bo_page.locator("#message-list .msg.system").last).to_contain_text(f"{XSS[4]} left")

    for page in (ana_page, bo_page, cy_page):
        for selector in (
            "#message-list img[src='x']",
            "#message-list script",
            "#message-list svg[onload]",
            "#message-list iframe",
            "#message-list style",
            "[onerror], [onload], [onmouseover]",
            "a[href^='javascript']",
            "#conversation-list b, #message-list b, #search-list b",
        ):
            assert page.locator(selector).count() == 0, selector
    shot(bo_page, "xss-as-text")

    # The policy is on every HTML answer, including error pages.
    for path in ("/", "/accounts/login/", "/accounts/signup/", "/no-such-page/", "/admin/login/"):
        response = bo_page.request.get(f"{web.url(0)}{path}")
        assert "text/html" in response.headers["content-type"], path
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy, path
    bad_signup = ana_page.request.post(
        f"{web.url(0)}/accounts/signup/", form={"username": ""}, fail_on_status_code=False
    )
    assert bad_signup.status == 403  # no CSRF token
    assert "content-security-policy" in bad_signup.headers

    # Log out: back on the login page; the app needs a login again.
    cy_page.get_by_role("button", name="Log out").click()
    expect(cy_page).to_have_url(re.compile(r"/accounts/login/$"))
    cy_page.goto(f"{web.url(0)}/")
    expect(cy_page).to_have_url(re.compile(r"/accounts/login/"))


def test_a_direction_override_in_a_body_is_shown_as_a_mark_and_isolated(web: Web) -> None:
    """Tried: a body with U+202E (right-to-left override), the "annexe.exe" trick.

    The receiver sees the override as a visible `[U+202E]` mark instead of reversed text,
    and every body is isolated (`dir=auto`) so it cannot reorder the page around it.
    """
    ana_page, bo_page = ana_writes_to_bo(web)
    send(ana_page, "holiday\u202egpj.exe")

    conversation(bo_page, "Ana").click()
    body = bubbles(bo_page)
    expect(body).to_have_count(1)
    expect(body.locator(".bidi-control")).to_have_text("[U+202E]")
    expect(body).to_have_text("holiday[U+202E]gpj.exe")
    expect(body).to_have_attribute("dir", "auto")
    assert body.evaluate("el => getComputedStyle(el).unicodeBidi") == "isolate"
    # What is stored is what was typed: the mark is only how it is shown.
    assert Message.objects.get(kind="text").body == "holiday\u202egpj.exe"


def test_the_longest_message_in_any_script_is_sent_and_one_character_more_is_kept(
    web: Web,
) -> None:
    """Tried: 100,000 characters (the published limit) of a script that takes 3 bytes each
    in UTF-8 (300,000 bytes, over the old frame limit), then 100,000 emoji (200,000 of
    JavaScript's UTF-16 units, which the old client check counted), then 100,001.

    The first two are sent and shown to the other person; the third is refused before it
    is sent, with a message, and stays in the composer.
    """
    ana_page, bo_page = ana_writes_to_bo(web)
    conversation(bo_page, "Ana").click()
    longest = ["漢" * 100_000, "\U0001f600" * 100_000]
    for n, body in enumerate(longest, start=1):
        send(ana_page, body)
        expect(bubbles(bo_page)).to_have_count(n, timeout=30_000)
    assert [m.body for m in Message.objects.filter(kind="text").order_by("seq")] == longest
    shown = bubbles(bo_page).evaluate_all("els => els.map(el => [...el.textContent].length)")
    assert shown == [100_000, 100_000]

    send(ana_page, "漢" * 100_001)
    expect(ana_page.locator("#toast")).to_have_text(
        "A message can have at most 100,000 characters."
    )
    kept = ana_page.locator("#composer-input").input_value()
    assert len(kept) == 100_001
    # Refused before it was queued: no third bubble (an outbox entry shows as one at
    # once, "Sending"), nothing stored.
    expect(bubbles(ana_page)).to_have_count(2)
    assert Message.objects.filter(kind="text").count() == 2


def test_a_message_request_is_shown_and_accepted_or_declined(web: Web) -> None:
    """A stranger's direct chat arrives as a request; accepting shares receipts from then on."""
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    cy = make_person("cy", "Cy")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    spam, _ = off_loop(services.create_direct_conversation, user=cy, other_user_id=bo.pk)
    for sender, conv in ((ana, chat), (cy, spam)):
        off_loop(
            services.send_message,
            sender=sender,
            conversation_id=conv.pk,
            client_msg_id=uuid.uuid4(),
            body=f"hello from {sender.username}",
        )
    bo_page = web.log_in(bo, gateway=1)

    expect(conversation(bo_page, "Ana").locator(".request-mark")).to_have_text("Request")
    conversation(bo_page, "Ana").click()
    bar = bo_page.locator("#request-bar")
    expect(bar).to_be_visible()
    expect(bar).to_contain_text("Ana is not in your contacts")
    # Reading it shares nothing: Ana's marker of Bo stays at 0.
    expect(bubbles(bo_page)).to_have_text(["hello from ana"])
    # Bo's read is stored (after the receipt's coalescing window); who sees it is
    # tested in tests/security/test_message_requests.py.
    wait_until(lambda: Membership.objects.get(conversation=chat, user=bo).read_seq == 1)
    bo_page.get_by_role("button", name="Accept").click()
    expect(bar).to_be_hidden()
    expect(conversation(bo_page, "Ana").locator(".request-mark")).to_have_count(0)
    assert Membership.objects.get(conversation=chat, user=bo).accepted

    conversation(bo_page, "Cy").click()
    expect(bar).to_be_visible()
    bo_page.get_by_role("button", name="Decline").click()
    expect(conversation(bo_page, "Cy")).to_have_count(0)
    assert not Membership.objects.filter(conversation=spam, user=bo).exists()


# ------------------------------------------------- the pages' server side, without a browser


def test_an_image_shows_as_a_file_until_the_worker_makes_its_thumbnail(
    make_web: Callable[..., Web],
    make_workers: MakeWorkers,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """With a broker the upload answers `thumbnail: "pending"`: the file, then its preview."""
    env = {
        "CELERY_BROKER_URL": redis_db_url(redis_server.url, 1),
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    web = make_web(gateways=1, **env)
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    open_direct(ana, bo)
    ana_page = web.log_in(ana)
    bo_page = web.log_in(bo)
    conversation(ana_page, "Bo").click()
    conversation(bo_page, "Ana").click()

    ana_page.locator("#file-input").set_input_files(
        {"name": "view.png", "mimeType": "image/png", "buffer": picture()}
    )
    expect(ana_page.locator("#tray .tray-item.done")).to_have_count(1)
    send(ana_page, "the view")

    # No thumbnail worker yet: both see the image as a file, and nothing fails.
    for page in (ana_page, bo_page):
        expect(page.locator("#message-list .attachment.file .file-name")).to_have_text(["view.png"])
    assert Attachment.objects.get().thumbnail_status == "pending"

    make_workers(web.deployment, workers=1, beat=False, env=env, concurrency=1, queues="thumbnails")

    for page in (ana_page, bo_page):
        image = page.locator("#message-list .attachment.image img")
        expect(image).to_have_js_property("complete", True, timeout=40_000)
        assert image.evaluate("img => img.naturalWidth") == 320
        expect(page.locator("#message-list .attachment.file")).to_have_count(0)
    assert Attachment.objects.get().thumbnail_status == "ready"


def test_service_worker_is_served_from_the_root_with_what_it_caches(client: Client) -> None:
    response = client.get("/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert response["Cache-Control"] == "no-cache"
    header = response.content.decode().split("\n", 1)[0]
    config = json.loads(header.removeprefix("self.SW_CONFIG = ").removesuffix(";"))
    assert {"/static/js/app.js", "/static/js/client.js", "/static/css/app.css"} <= set(
        config["precache"]
    )
    # Every module of the app is precached (a forgotten one would break the offline app).
    scripts = REPO_ROOT / "static" / "js"
    modules = {f"/static/js/{p.relative_to(scripts)}" for p in scripts.rglob("*.js")}
    assert modules - {"/static/js/sw.js"} <= set(config["precache"])
    assert re.fullmatch(r"[0-9a-f]{16}", config["version"])


def test_signup_page_creates_an_account_and_logs_it_in(client: Client) -> None:
    page = client.get("/accounts/signup/")
    assert page.status_code == 200
    assert "'unsafe-inline'" not in page["Content-Security-Policy"]
    weak = client.post(
        "/accounts/signup/",
        {"username": "neo", "display_name": "", "password1": "12345678", "password2": "12345678"},
    )
    assert weak.status_code == 400
    assert b'aria-invalid="true"' in weak.content
    assert not User.objects.filter(username="neo").exists()
    made = client.post(
        "/accounts/signup/",
        {"username": "neo", "display_name": "Neo", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert made.status_code == 302 and made["Location"] == "/"
    assert client.get("/").status_code == 200
    client.logout()
    taken = client.post(
        "/accounts/signup/",
        {"username": "NEO", "display_name": "", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert taken.status_code == 400
    assert b"not available" in taken.content


def test_public_groups_list_shows_public_groups_only_to_signed_in_users(
    client: Client, make_user: Callable[..., User]
) -> None:
    ana, bo = make_user("ana"), make_user("bo")
    off_loop(
        services.create_group, creator=ana, title="Open <b>house</b>", member_ids=[], public=True
    )
    off_loop(services.create_group, creator=ana, title="Secret", member_ids=[], public=False)
    assert client.get("/app/public-groups").status_code == 401
    client.force_login(bo)
    listed = client.get("/app/public-groups").json()["results"]
    assert [(g["title"], g["joined"]) for g in listed] == [("Open <b>house</b>", False)]
    assert client.get("/app/public-groups", {"q": "nothing"}).json() == {"results": []}
