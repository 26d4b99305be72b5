"""The tabs of one browser share one WebSocket, in real Chromium against real gateways.

Each test runs twice: with a SharedWorker holding the socket, and with SharedWorker
deleted from the pages (`delete window.SharedWorker`), where the tabs elect a leader
with a Web Lock and relay over a BroadcastChannel. The gateway's `/metrics` gauge
`chat_ws_open_sockets` is the count of sockets (a browser's own view of a page's
sockets would not see one held by a worker).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from playwright.sync_api import BrowserContext, Page, expect
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import User
from bench.harness import http_get
from messaging import services
from messaging.errors import RateLimited
from messaging.models import Message
from tests.e2e.browser import (
    Web,
    bubbles,
    conversation,
    make_person,
    off_loop,
    online,
    open_direct,
    pretend_hidden,
    pretend_visible,
    send,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# How the tabs share the socket: the page's `chat.tabs.mode`.
MODES = {"shared-worker": "shared", "web-locks": "tabs"}


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def open_sockets(web: Web, gateway: int = 0) -> float:
    """The gateway's count of open authenticated WebSocket sessions."""
    status, body = http_get(f"{web.url(gateway)}/metrics", timeout=5)
    assert status == 200, body[:500]
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "chat_ws_open_sockets" and not sample.labels:
                return float(sample.value)
    raise AssertionError("no chat_ws_open_sockets on /metrics")


def sockets_become(web: Web, count: int, gateway: int = 0, timeout: float = 30.0) -> None:
    """Wait until the gateway counts `count` open sockets (closes are seen a bit later)."""
    deadline = time.monotonic() + timeout
    while (seen := open_sockets(web, gateway)) != count:
        assert time.monotonic() < deadline, f"{seen} sockets open at the gateway, not {count}"
        time.sleep(0.2)


def browser_of(web: Web, mode: str) -> BrowserContext:
    """One browser (a context: its tabs share storage, workers and locks)."""
    context = web.context()
    if mode == "web-locks":
        context.add_init_script("delete window.SharedWorker")
    return context


def log_in(web: Web, context: BrowserContext, user: User, name: str, gateway: int = 0) -> Page:
    return web.log_in(user, gateway=gateway, context=context, name=name)


def new_tab(web: Web, context: BrowserContext, name: str, path: str = "/") -> Page:
    page = web.watch.page(context.new_page(), name)
    page.goto(f"{web.url(0)}{path}")
    return page


def say(sender: User, chat_id: int, bodies: list[str]) -> None:
    for body in bodies:
        off_loop(
            services.send_message,
            sender=sender,
            conversation_id=chat_id,
            client_msg_id=uuid.uuid4(),
            body=body,
        )


def test_two_tabs_share_one_socket_and_see_each_others_messages(
    make_web: Callable[..., Web], mode: str
) -> None:
    """Two tabs of one browser hold one socket at the gateway; the second opens with the
    list and history at once, a message sent in one shows in the other, and logging out in
    one closes the socket for both."""
    web = make_web()
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    history = ["one", "two", "three"]
    say(bo, chat.pk, history)
    bo_page = log_in(web, browser_of(web, mode), bo, "bo", gateway=1)
    conversation(bo_page, "Ana").click()

    ana_browser = browser_of(web, mode)
    first = log_in(web, ana_browser, ana, "ana-1")
    assert first.evaluate("() => window.chat.tabs.mode") == MODES[mode]
    conversation(first, "Bo").click()
    expect(bubbles(first)).to_have_text(history)
    sockets_become(web, 1)

    second = new_tab(web, ana_browser, "ana-2", f"/#c{chat.pk}")
    online(second)
    expect(conversation(second, "Bo")).to_be_visible()
    expect(bubbles(second)).to_have_text(history)
    assert second.evaluate("() => window.chat.tabs.mode") == MODES[mode]
    assert open_sockets(web) == 1, "the second tab opened a socket of its own"

    send(second, "from the second tab")
    expect(bubbles(second)).to_have_text([*history, "from the second tab"])
    expect(bubbles(first)).to_have_text([*history, "from the second tab"])
    expect(bubbles(bo_page)).to_have_text([*history, "from the second tab"])
    send(bo_page, "back to both")
    expect(bubbles(first)).to_have_text([*history, "from the second tab", "back to both"])
    expect(bubbles(second)).to_have_text([*history, "from the second tab", "back to both"])
    assert Message.objects.filter(conversation=chat).count() == 5
    assert open_sockets(web) == 1

    # Log out in the second tab: the first loses its socket too and goes to the login page.
    second.get_by_role("button", name="Log out").click()
    second.wait_for_url("**/accounts/login/**")
    first.wait_for_url("**/accounts/login/**")
    sockets_become(web, 0)


def test_closing_the_first_tab_mid_conversation_loses_nothing(
    make_web: Callable[..., Web], mode: str
) -> None:
    """Bo sends a stream of messages while Ana closes the tab that opened the socket (in
    the Web Locks mode, the leader's): her other tab shows every message once, in order,
    on one socket, and what it sends after reaches Bo once."""
    web = make_web()
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat = open_direct(ana, bo)
    bo_page = log_in(web, browser_of(web, mode), bo, "bo", gateway=1)
    conversation(bo_page, "Ana").click()

    ana_browser = browser_of(web, mode)
    first = log_in(web, ana_browser, ana, "ana-1")
    conversation(first, "Bo").click()
    second = new_tab(web, ana_browser, "ana-2", f"/#c{chat.pk}")
    online(second)
    expect(second.locator("#chat-title")).to_have_text("Bo")
    if mode == "web-locks":
        assert first.evaluate("() => window.chat.tabs.hub !== null"), "the first tab leads"
        assert second.evaluate("() => window.chat.tabs.hub === null")
    sockets_become(web, 1)

    stream = [f"message {n}" for n in range(1, 31)]

    def bo_streams() -> None:
        try:
            for body in stream:
                cmid = uuid.uuid4()
                while True:
                    try:
                        services.send_message(
                            sender=bo, conversation_id=chat.pk, client_msg_id=cmid, body=body
                        )
                        break
                    except RateLimited as error:  # as a client does: later, same id
                        time.sleep(error.retry_after or 1)
                time.sleep(0.15)  # a steady stream (about the send rate), over the handover
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        streaming = pool.submit(bo_streams)
        expect(bubbles(second).filter(has_text="message 5")).to_have_count(1)
        first.close()
        streaming.result()

    expect(bubbles(second)).to_have_text(stream, timeout=45_000)
    sockets_become(web, 1)
    if mode == "web-locks":
        expect(second.locator("#conn-status")).to_have_attribute("data-state", "online")
        assert second.evaluate("() => window.chat.tabs.hub !== null"), "the second tab leads now"

    send(second, "still here")
    expect(bubbles(bo_page)).to_have_text([*stream, "still here"])
    expect(bubbles(second)).to_have_text([*stream, "still here"])
    rows = list(Message.objects.filter(conversation=chat).order_by("seq"))
    assert [m.body for m in rows] == [*stream, "still here"]


def test_a_message_notifies_once_per_browser_and_not_while_a_tab_is_visible(
    make_web: Callable[..., Web], mode: str
) -> None:
    """With both tabs hidden, a new message raises one browser notification, not one per
    tab; with one tab visible, the hidden one raises none (the user sees it already)."""
    web = make_web()
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    chat, _ = off_loop(services.create_direct_conversation, user=ana, other_user_id=bo.pk)
    ana_browser = browser_of(web, mode)
    first = log_in(web, ana_browser, ana, "ana-1")
    second = new_tab(web, ana_browser, "ana-2")
    online(second)
    sockets_become(web, 1)
    for page in (first, second):
        pretend_hidden(page)

    def settled(page: Page, count: int) -> None:
        page.wait_for_function(f"() => window.chat.tabs.claimsSettled >= {count}")

    def shown() -> int:
        return sum(p.evaluate("() => window.__notifications.length") for p in (first, second))

    say(bo, chat.pk, ["are you there?"])
    settled(first, 1)
    settled(second, 1)
    assert shown() == 1, "each hidden tab showed the notification"

    pretend_visible(first)
    say(bo, chat.pk, ["hello?"])
    settled(second, 2)
    assert shown() == 1, "a hidden tab notified while another tab was visible"


def test_the_user_is_away_only_when_every_tab_is_idle(
    make_web: Callable[..., Web], mode: str
) -> None:
    """Presence is the user's, not a tab's: one idle tab leaves Ana online while the other
    is in use; she is away when both are idle, and online again when one is used. (The
    server's answer to a presence subscription, sent behind the idle report on the same
    socket, says what it made of it.)"""
    web = make_web()
    ana = make_person("ana", "Ana")
    ana_browser = browser_of(web, mode)
    first = log_in(web, ana_browser, ana, "ana-1")
    second = new_tab(web, ana_browser, "ana-2")
    online(second)
    sockets_become(web, 1)

    def my_state(page: Page) -> str:
        """Ana's presence as the server answers it now (after every frame sent before)."""
        return str(
            page.evaluate(
                """async (me) => {
                    const answer = await window.chat.client.subscribePresence([me]);
                    return answer.users.find((u) => u.id === me).state;
                }""",
                ana.pk,
            )
        )

    assert my_state(first) == "online"
    first.evaluate("() => window.chat.client.activity(true)")
    assert my_state(first) == "online", "one idle tab made the user away"
    second.evaluate("() => window.chat.client.activity(true)")
    assert my_state(second) == "away"
    first.evaluate("() => window.chat.client.activity(false)")
    assert my_state(second) == "online"
