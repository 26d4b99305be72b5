"""Offline history in real Chromium against real gateway processes.

The web client keeps the conversation list and the newest pages of each conversation in
IndexedDB (static/js/history-store.js): the app opens with history without a network,
catches up with `after=<stored cursor>` when the network returns, and signing out (or
another user signing in) leaves none of it behind.

The browser, the deployments and the helpers are those of `tests/e2e/browser.py`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect
from pytest_django.fixtures import SettingsWrapper

from messaging import services
from messaging.models import Message
from tests.e2e.browser import (
    DATABASES,
    READ_MEMBER_NAMES,
    Web,
    bubbles,
    controlled_and_cached,
    conversation,
    history_db,
    make_person,
    off_loop,
    online,
    say,
    send,
    shot,
    stored,
    wait_stored,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


# Reads a user's offline history as the page stores it: {conversation id: [bodies or
# "(deleted)"]}, or null when the database does not exist.
def fetches(frames: list[dict[str, Any]], chat_id: int) -> list[dict[str, Any]]:
    return [
        f for f in frames if f.get("type") == "messages.fetch" and f.get("conversation") == chat_id
    ]


def test_an_offline_reload_shows_history_and_catches_up_after_the_cursor(web: Web) -> None:
    # Tried: Ana reads her chat with Bo, and a group she is added to while the app is
    # open arrives live; she opens it. Offline, she reloads: the group (which only the
    # store knows: the cached app page predates it) is shown with its history and its
    # sender's name, then the chat with Bo with its history, and a message she types
    # there waits as pending. Bo writes meanwhile. Back online, her message
    # is stored once, Bo's arrive, and the chat is caught up with `messages.fetch`
    # `after=<stored cursor>`, never by reloading its newest page.
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    cy = make_person("cy", "Cy")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    history = ["old one", "old two", "old three"]
    for body in history:
        last = say(bo, chat.pk, body)

    ana_page = web.log_in(ana, socket_in_page=True)  # its frames are read below
    controlled_and_cached(ana_page)
    conversation(ana_page, "Bo").click()
    expect(bubbles(ana_page)).to_have_text(history)
    group = off_loop(services.create_group, creator=cy, title="Book club", member_ids=[ana.pk])
    say(cy, group.pk, "welcome to the club")
    conversation(ana_page, "Book club").click()
    expect(ana_page.locator("#message-list .sender")).to_have_text(["Cy"])
    wait_stored(ana_page, ana, chat.pk, history)
    wait_stored(ana_page, ana, group.pk, ["welcome to the club"])
    names = [history_db(ana), group.pk]
    wait_until(lambda: ana_page.evaluate(READ_MEMBER_NAMES, names) == ["Ana", "Cy"])

    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    ana_page.reload()  # the app shell from the service worker, history from IndexedDB
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    expect(bubbles(ana_page)).to_have_text(["welcome to the club"])
    expect(ana_page.locator("#message-list .sender")).to_have_text(["Cy"])  # stored names
    expect(conversation(ana_page, "Bo")).to_be_visible()
    conversation(ana_page, "Bo").click()
    expect(bubbles(ana_page)).to_have_text(history)
    send(ana_page, "typed offline")
    pending = ana_page.locator("#message-list .msg.pending")
    expect(pending.locator(".body")).to_have_text(["typed offline"])
    shot(ana_page, "offline-history")

    away = ["while you were away", "and once more"]
    for body in away:
        say(bo, chat.pk, body)
    frames = web.watch.sent.setdefault("ana", [])
    mark = len(frames)

    ana_page.context.set_offline(False)
    online(ana_page)
    expect(pending).to_have_count(0)
    expect(bubbles(ana_page)).to_have_text([*history, *away, "typed offline"])
    wait_until(lambda: Message.objects.filter(conversation=chat, body="typed offline").count() == 1)
    assert Message.objects.filter(conversation=chat, sender=ana).count() == 1

    caught_up = fetches(frames[mark:], chat.pk)
    assert caught_up, "the chat was not fetched after the network returned"
    assert all("after" in f for f in caught_up), caught_up  # no newest-page reload
    assert caught_up[0]["after"] >= last.seq
    assert caught_up[0]["after"] < Message.objects.get(body=away[0]).seq
    # The store follows: what arrived after is written too.
    wait_stored(ana_page, ana, chat.pk, [*history, *away, "typed offline"])


def test_another_user_on_the_same_browser_never_sees_the_stored_history(web: Web) -> None:
    # Tried: Ana's history is stored, she signs out, Bo signs in in the same browser:
    # neither the page nor IndexedDB holds anything of Ana's. Then Bo's session ends
    # without a sign-out (cookies gone) and Cy signs in there: Bo's stored history is
    # deleted on Cy's start, and Cy's page shows none of it.
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    cy = make_person("cy", "Cy")
    dee = make_person("dee", "Dee")
    ana_chat, _ = off_loop(services.create_direct_conversation, user=dee, other_user_id=ana.pk)
    say(dee, ana_chat.pk, "a secret for ana")
    bo_chat, _ = off_loop(services.create_direct_conversation, user=dee, other_user_id=bo.pk)
    say(dee, bo_chat.pk, "a secret for bo")

    page = web.log_in(ana)
    conversation(page, "Dee").click()
    expect(bubbles(page)).to_have_text(["a secret for ana"])
    wait_stored(page, ana, ana_chat.pk, ["a secret for ana"])

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    web.sign_in(page, bo)
    expect(conversation(page, "Dee")).to_be_visible()
    conversation(page, "Dee").click()
    expect(bubbles(page)).to_have_text(["a secret for bo"])
    assert history_db(ana) not in page.evaluate(DATABASES)
    expect(page.locator("body")).not_to_contain_text("a secret for ana")
    wait_stored(page, bo, bo_chat.pk, ["a secret for bo"])

    page.context.clear_cookies()  # Bo's session ends elsewhere: no sign-out here
    web.sign_in(page, cy)
    wait_until(lambda: history_db(bo) not in page.evaluate(DATABASES))
    assert history_db(cy) in page.evaluate(DATABASES)
    expect(page.locator("body")).not_to_contain_text("a secret for bo")
    expect(page.locator("body")).not_to_contain_text("Dee")


def test_an_edit_and_a_delete_show_after_an_offline_reload(web: Web) -> None:
    # Tried: with the chat open, Bo edits one of his messages and deletes another (live
    # `message.updated` events); Ana's page reloads offline and shows the edited text
    # and the deleted notice, not the old versions.
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    keep = say(bo, chat.pk, "a message with a tpyo")
    drop = say(bo, chat.pk, "a message to take back")
    say(bo, chat.pk, "the last word")

    ana_page = web.log_in(ana)
    controlled_and_cached(ana_page)
    conversation(ana_page, "Bo").click()
    expect(bubbles(ana_page)).to_have_text(
        ["a message with a tpyo", "a message to take back", "the last word"]
    )
    off_loop(
        services.edit_message,
        user=bo,
        conversation_id=chat.pk,
        message_id=keep.pk,
        body="a message without a typo",
    )
    off_loop(services.delete_message, user=bo, conversation_id=chat.pk, message_id=drop.pk)
    after = ["a message without a typo", "This message was deleted.", "the last word"]
    expect(bubbles(ana_page)).to_have_text(after)
    wait_stored(ana_page, ana, chat.pk, ["a message without a typo", "(deleted)", "the last word"])

    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    ana_page.reload()
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    expect(bubbles(ana_page)).to_have_text(after)
    expect(ana_page.locator("#message-list .edited")).to_have_count(1)
    expect(ana_page.locator("#message-list")).not_to_contain_text("tpyo")
    expect(ana_page.locator("#message-list")).not_to_contain_text("take back")


# IndexedDB failing for the offline history only: opening its database throws (private
# mode), or every write to it throws (quota).
NO_HISTORY_DB = """(() => {
  const open = IDBFactory.prototype.open;
  IDBFactory.prototype.open = function (name, ...rest) {
    if (String(name).startsWith("chat-history-")) {
      throw new DOMException("The operation failed.", "UnknownError");
    }
    return open.call(this, name, ...rest);
  };
})();"""
FULL_DISK = """(() => {
  const put = IDBObjectStore.prototype.put;
  IDBObjectStore.prototype.put = function (...args) {
    if (this.name === "pages" || this.name === "conversations") {
      throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
    }
    return put.apply(this, args);
  };
})();"""


@pytest.mark.parametrize("failure", [NO_HISTORY_DB, FULL_DISK], ids=["no-database", "full-disk"])
def test_the_app_works_as_before_when_indexeddb_fails(web: Web, failure: str) -> None:
    # Tried: Ana's browser cannot open the history database, or cannot write to it. The
    # app loads her history from the server, sends and receives, shows no error (no
    # toast, nothing thrown: the fixture checks), and stores nothing.
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    say(bo, chat.pk, "hello from the server")

    context = web.context()
    context.add_init_script(failure)
    page = web.watch.page(context.new_page(), "ana")
    web.sign_in(page, ana)
    conversation(page, "Bo").click()
    expect(bubbles(page)).to_have_text(["hello from the server"])
    send(page, "an answer")
    wait_until(lambda: Message.objects.filter(conversation=chat, body="an answer").count() == 1)
    expect(bubbles(page)).to_have_text(["hello from the server", "an answer"])
    expect(page.locator("#message-list .msg.pending")).to_have_count(0)
    say(bo, chat.pk, "and a live one")
    expect(bubbles(page)).to_have_text(["hello from the server", "an answer", "and a live one"])
    expect(page.locator("#toast")).to_be_hidden()
    assert not (stored(page, ana) or {}).get(str(chat.pk))


def test_a_gap_wider_than_the_reset_limit_reloads_the_newest_page(
    web: Web, settings: SettingsWrapper
) -> None:
    # Tried: Ana's chat is stored; while she is offline Bo writes more than the client's
    # reset limit (1000 log numbers). Back online, the stale stored page is not caught
    # up message by message: the newest page is loaded instead (`messages.fetch`
    # without `after`), shown, and stored in place of the old one.
    settings.CHAT_SEND_BURST = settings.CHAT_SEND_RATE = 100_000.0  # Bo's flood, below
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    say(bo, chat.pk, "before the flood")

    ana_page = web.log_in(ana, socket_in_page=True)  # its frames are read below
    controlled_and_cached(ana_page)
    conversation(ana_page, "Bo").click()
    expect(bubbles(ana_page)).to_have_text(["before the flood"])
    wait_stored(ana_page, ana, chat.pk, ["before the flood"])

    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    ana_page.reload()
    expect(bubbles(ana_page)).to_have_text(["before the flood"])
    for n in range(1001):
        say(bo, chat.pk, f"flood {n}")
    frames = web.watch.sent.setdefault("ana", [])
    mark = len(frames)

    ana_page.context.set_offline(False)
    online(ana_page)
    expect(bubbles(ana_page).last).to_have_text("flood 1000")
    expect(ana_page.locator("#message-list")).not_to_contain_text("before the flood")
    reloads = fetches(frames[mark:], chat.pk)
    assert reloads and "after" not in reloads[0], reloads  # the newest page, not after=
    newest = [f"flood {n}" for n in range(1001 - 40, 1001)]
    wait_stored(ana_page, ana, chat.pk, newest)


# The stored conversations: their ids, most recently active first.
READ_CONVERSATION_IDS = """async (name) => {
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open(name);
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  try {
    const records = await new Promise((resolve, reject) => {
      const req = db.transaction("conversations").objectStore("conversations").getAll();
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return records.map((r) => r.id);
  } finally {
    db.close();
  }
}"""


def test_the_store_keeps_the_newest_200_messages_of_the_100_latest_conversations(
    web: Web, settings: SettingsWrapper
) -> None:
    # Tried: Ana is in 101 groups and a chat with Bo. The store keeps the 100 most
    # recently active conversations (the oldest group is left out). While she is
    # offline Bo writes 250 messages; back online they are caught up, and the store
    # keeps the newest 200 of the chat, which an offline reload shows, with older
    # messages still to load.
    settings.CHAT_SEND_BURST = settings.CHAT_SEND_RATE = 100_000.0
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    cy = make_person("cy", "Cy")
    groups = [
        off_loop(services.create_group, creator=cy, title=f"Group {n}", member_ids=[ana.pk])
        for n in range(101)
    ]
    chat, _ = off_loop(services.create_direct_conversation, user=bo, other_user_id=ana.pk)
    say(bo, chat.pk, "hello")

    ana_page = web.log_in(ana)
    controlled_and_cached(ana_page)
    conversation(ana_page, "Bo").click()
    expect(bubbles(ana_page)).to_have_text(["hello"])
    wait_stored(ana_page, ana, chat.pk, ["hello"])

    def stored_ids() -> set[int]:
        return set(ana_page.evaluate(READ_CONVERSATION_IDS, history_db(ana)))

    wait_until(lambda: len(stored_ids()) == 100)
    assert chat.pk in stored_ids()
    assert groups[0].pk not in stored_ids()  # the least recently active
    assert groups[-1].pk in stored_ids()

    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    flood = [f"message {n}" for n in range(250)]
    for body in flood:
        say(bo, chat.pk, body)
    ana_page.context.set_offline(False)
    online(ana_page)
    expect(bubbles(ana_page).last).to_have_text("message 249")
    expect(bubbles(ana_page)).to_have_count(251)  # caught up after the cursor: all of it
    wait_stored(ana_page, ana, chat.pk, flood[-200:])

    ana_page.context.set_offline(True)
    expect(ana_page.locator("#conn-status")).to_have_attribute("data-state", "offline")
    ana_page.reload()
    expect(bubbles(ana_page)).to_have_count(200)
    expect(bubbles(ana_page).first).to_have_text("message 50")
    expect(ana_page.locator("#load-older")).to_be_visible()
