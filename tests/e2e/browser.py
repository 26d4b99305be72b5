"""The browser tests' Chromium, deployments with browser contexts, and page helpers.

Debian's chromium (`/usr/bin/chromium`; `make test` installs it) driven by Playwright.
Every page is served by a gateway of a real deployment on the test database; users log
in through the real login page, and the session cookie authenticates the WebSocket.
Screenshots go to `test-artifacts/browser/` (gitignored). The fixtures (`playwright`,
`browser`, `make_web`, `web`) are registered for every end-to-end module by
`tests/e2e/conftest.py`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection
from PIL import Image, ImageDraw
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Playwright,
    Response,
    ViewportSize,
    WebSocket,
    expect,
    sync_playwright,
)

from accounts.models import User
from bench.harness import REPO_ROOT, Deployment
from messaging import services
from messaging.models import Message

if TYPE_CHECKING:
    from tests.e2e.conftest import MakeDeployment

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
PASSWORD = "correct-horse-77"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
# Presence: a clean close shows `offline` after the grace (1 s instead of 5).
GATEWAY_ENV = {"PRESENCE_GRACE": "1"}


expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Start Playwright; Django may be used from this thread meanwhile (see below)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    # Playwright's sync API runs an asyncio loop in this thread, which makes Django
    # refuse ORM calls here ("async context"). The test only waits on the browser while
    # it uses the ORM, so nothing runs concurrently: tell Django so for this module.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    manager = sync_playwright()
    driver = manager.start()
    try:
        yield driver
    finally:
        driver.stop()
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


# A fake microphone and camera (a tone, a test pattern) that need no permission prompt.
FAKE_MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def launch_chromium(playwright: Playwright, extra_args: list[str] | None = None) -> Browser:
    """Start the Debian Chromium headless with our flags (and `extra_args`)."""
    args = [*CHROMIUM_ARGS, *(extra_args or [])]
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = launch_chromium(playwright)
    try:
        yield chromium
    finally:
        chromium.close()


@dataclass
class Watch:
    """What the pages of one test did that they must not: dialogs, errors, missing CSP."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    documents: list[tuple[str, str | None]] = field(default_factory=list)
    # The frames each page's sockets sent, parsed, by page name.
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def page(self, page: Page, name: str) -> Page:
        def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(f"{name}: {dialog.type} {dialog.message!r}")
            dialog.dismiss()

        def on_console(message: ConsoleMessage) -> None:
            if "Content Security Policy" in message.text:
                self.csp_violations.append(f"{name}: {message.text}")

        def on_response(response: Response) -> None:
            if response.request.resource_type == "document":
                self.documents.append(
                    (response.url, response.headers.get("content-security-policy"))
                )

        sent = self.sent.setdefault(name, [])

        def on_websocket(ws: WebSocket) -> None:
            ws.on("framesent", lambda data: sent.append(json.loads(data)))

        page.on("websocket", on_websocket)
        page.on("dialog", on_dialog)
        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"{name}: {exc}"))
        page.on("response", on_response)
        return page

    def check(self) -> None:
        assert self.dialogs == [], "a JavaScript dialog opened"
        assert self.errors == [], "a page threw"
        assert self.csp_violations == [], "the pages broke their own CSP"
        assert self.documents, "no page was loaded"
        for url, policy in self.documents:
            assert policy, f"no Content-Security-Policy on {url}"
            assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, url
            assert "script-src 'self'" in policy, url


@dataclass
class Web:
    """A deployment of two gateways and the browser contexts of one test."""

    deployment: Deployment
    browser: Browser
    watch: Watch
    contexts: list[BrowserContext] = field(default_factory=list)

    def url(self, gateway: int = 0) -> str:
        return self.deployment.http_urls[gateway]

    def context(self, viewport: ViewportSize = DESKTOP, **options: Any) -> BrowserContext:
        context = self.browser.new_context(viewport=viewport, **options)
        self.contexts.append(context)
        return context

    def log_in(
        self,
        user: User,
        *,
        gateway: int = 0,
        viewport: ViewportSize = DESKTOP,
        context: BrowserContext | None = None,
        name: str | None = None,
        socket_in_page: bool = False,
        **options: Any,
    ) -> Page:
        """Log `user` in through the login page in a new context; wait for the socket.

        `options` are the new context's (`bypass_csp=True` lets axe-core in); `context`
        instead opens the page as a new tab of that one (a browser already open), watched
        under `name` (the username by default). `socket_in_page`: the new context has no
        SharedWorker, so the tab holds the browser's socket itself (the Web Locks leader)
        and `watch.sent` sees its frames.
        """
        if context is None:
            context = self.context(viewport, **options)
            if socket_in_page:
                context.add_init_script("delete window.SharedWorker")
        page = self.watch.page(context.new_page(), name or user.username)
        self.sign_in(page, user, gateway=gateway)
        return page

    def sign_in(self, page: Page, user: User, *, gateway: int = 0) -> None:
        """Sign `user` in on the login page, in `page` (a tab already open); wait for the socket."""
        base = self.url(gateway)
        page.goto(f"{base}/accounts/login/")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
        online(page)


@pytest.fixture
def make_web(make_deployment: MakeDeployment, browser: Browser) -> Iterator[Callable[..., Web]]:
    """Return a factory of deployments with browser contexts; checks the pages' conduct after."""
    made: list[Web] = []

    def make(gateways: int = 2, **env: str) -> Web:
        deployment = make_deployment(gateways=gateways, env={**GATEWAY_ENV, **env})
        made.append(Web(deployment, browser, Watch()))
        return made[-1]

    try:
        yield make
        for web in made:
            web.watch.check()
    finally:
        for web in made:
            for context in web.contexts:
                context.close()


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    """Two gateways and a clean set of browser contexts."""
    return make_web()


def off_loop(func: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run a service call in a worker thread (its broadcasts need a thread with no loop)."""

    def run() -> Any:
        try:
            return func(**kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@functools.cache
def gateway_hash() -> str:
    """Return PASSWORD hashed as the gateways check it (PBKDF2, full strength), once a run.

    Every user of these tests gets this one hash: a million rounds cost ~0.3 s per user on
    this machine, and the gateways still check them all at each login.
    """
    hasher = PBKDF2PasswordHasher()
    return hasher.encode(PASSWORD, hasher.salt())


def make_person(username: str, display_name: str) -> User:
    """Create a user whose password the gateways can check (they hash with PBKDF2)."""
    # The test process hashes with MD5 for speed; gateway processes do not accept it.
    return User.objects.create(
        username=username, display_name=display_name, password=gateway_hash()
    )


def online(page: Page) -> None:
    expect(page.locator("#conn-status")).to_have_attribute("data-state", "online")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def conversation(page: Page, title: str) -> Any:
    """The conversation list's button whose title is exactly `title`."""
    return page.locator("#conversation-list .conv").filter(
        has=page.locator(".conv-title").get_by_text(title, exact=True)
    )


def bubbles(page: Page) -> Any:
    return page.locator("#message-list .msg:not(.system) .body")


def send(page: Page, text: str) -> None:
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a database condition (the browser side uses Playwright's own waits)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def picture() -> bytes:
    """A small landscape: sky, sun, hills (an image to attach)."""
    image = Image.new("RGB", (640, 400), "#bfdbfe")
    draw = ImageDraw.Draw(image)
    for y in range(220):
        draw.line([(0, y), (640, y)], fill=(191 - y // 4, 219 - y // 6, 254))
    draw.ellipse((470, 50, 550, 130), fill="#fde68a")
    draw.polygon(
        [(0, 400), (0, 250), (160, 190), (330, 260), (460, 210), (640, 270), (640, 400)],
        fill="#4d7c0f",
    )
    draw.polygon(
        [(0, 400), (0, 320), (220, 270), (420, 330), (640, 300), (640, 400)], fill="#3f6212"
    )
    draw.rectangle((280, 250, 360, 320), fill="#fef3c7")
    draw.polygon([(270, 250), (320, 215), (370, 250)], fill="#b91c1c")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, format="PNG")
    return out.getvalue()


def cmid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def open_direct(user: User, other: User) -> Any:
    """Open the direct chat of two users as if each had started it (listed for both at once).

    A direct chat one person opened is listed for the other only with its first message.
    """
    chat, _ = off_loop(services.create_direct_conversation, user=user, other_user_id=other.pk)
    off_loop(services.create_direct_conversation, user=other, other_user_id=user.pk)
    return chat


def ana_writes_to_bo(web: Web) -> tuple[Page, Page]:
    """Open a direct chat from Ana to Bo, each logged in on a gateway of their own.

    Return Ana's page, showing the chat, and Bo's.
    """
    ana = make_person("ana", "Ana")
    bo = make_person("bo", "Bo")
    open_direct(ana, bo)
    bo_page = web.log_in(bo, gateway=1)
    ana_page = web.log_in(ana, gateway=0)
    conversation(ana_page, "Bo").click()
    return ana_page, bo_page


def pretend_hidden(page: Page) -> None:
    """Make the page report itself hidden and record notifications instead of showing them."""
    page.evaluate(
        """() => {
            window.__notifications = [];
            Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
            Object.defineProperty(
                document, "visibilityState", {configurable: true, get: () => "hidden"}
            );
            window.Notification = class {
                static permission = "granted";
                constructor(title, options) {
                    window.__notifications.push({title, body: options.body});
                }
                addEventListener() {}
                close() {}
            };
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )


def pretend_visible(page: Page) -> None:
    page.evaluate(
        """() => {
            delete document.hidden;
            delete document.visibilityState;
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )


# --- the offline history, and messages written by the server side ----------------------

READ_HISTORY = """async (name) => {
  const names = (await indexedDB.databases()).map((d) => d.name);
  if (!names.includes(name)) return null;
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open(name);
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  try {
    if (!db.objectStoreNames.contains("pages")) return {};
    const pages = await new Promise((resolve, reject) => {
      const req = db.transaction("pages").objectStore("pages").getAll();
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    const out = {};
    for (const page of pages) {
      out[page.id] = page.messages
        .filter((m) => m.kind === "text")
        .map((m) => (m.deleted ? "(deleted)" : m.body));
    }
    return out;
  } finally {
    db.close();
  }
}"""

DATABASES = "async () => (await indexedDB.databases()).map((d) => d.name)"

# The display names of a stored conversation's members ([] when not stored).
READ_MEMBER_NAMES = """async ([name, id]) => {
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open(name);
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  try {
    if (!db.objectStoreNames.contains("conversations")) return [];
    const record = await new Promise((resolve, reject) => {
      const req = db.transaction("conversations").objectStore("conversations").get(id);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return (record?.members || []).map((m) => m.display_name).filter(Boolean).sort();
  } finally {
    db.close();
  }
}"""


def history_db(user: User) -> str:
    return f"chat-history-{user.pk}"


def stored(page: Page, user: User) -> dict[str, list[str]] | None:
    result: dict[str, list[str]] | None = page.evaluate(READ_HISTORY, history_db(user))
    return result


def wait_stored(page: Page, user: User, chat_id: int, bodies: list[str]) -> None:
    """Wait until the page has written `bodies` as the conversation's stored history."""
    wait_until(lambda: (stored(page, user) or {}).get(str(chat_id)) == bodies)


def say(sender: User, chat_id: int, body: str) -> Message:
    result = off_loop(
        services.send_message,
        sender=sender,
        conversation_id=chat_id,
        client_msg_id=uuid.uuid4(),
        body=body,
    )
    message: Message = result.message
    return message


def controlled_and_cached(page: Page) -> None:
    """Wait until the service worker controls the page and has the app page cached."""
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    cached = "async () => (await caches.match('/', { ignoreVary: true })) !== undefined"
    wait_until(lambda: bool(page.evaluate(cached)))


# --- accessibility: axe-core ---------------------------------------------------------

AXE = REPO_ROOT / "tests" / "e2e" / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.1 A and AA, and axe's best practices (landmarks, headings, regions).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
FAILING_IMPACTS = {"serious", "critical"}


class Axe:
    """Run axe-core on screens of pages; collect the serious and critical violations."""

    def __init__(self) -> None:
        if not AXE.exists():
            pytest.fail(f"{AXE} is missing: `make test` installs it (npm ci --prefix tests/e2e)")
        self.source: Path = AXE
        self.screens: list[str] = []
        self.problems: list[str] = []

    def check(self, page: Page, screen: str) -> None:
        """Run axe on the page as it is now, as the screen called `screen`."""
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.add_script_tag(path=str(self.source))
        result: dict[str, Any] = page.evaluate(
            """async (tags) => {
                const r = await axe.run(document, {
                    runOnly: { type: "tag", values: tags },
                    resultTypes: ["violations"],
                });
                return { violations: r.violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                    nodes: v.nodes.map((n) => ({
                        target: n.target.join(" "), impact: n.impact,
                        summary: n.failureSummary, html: n.html.slice(0, 200),
                    })),
                })) };
            }""",
            AXE_TAGS,
        )
        self.screens.append(screen)
        for violation in result["violations"]:
            nodes = [n for n in violation["nodes"] if n["impact"] in FAILING_IMPACTS]
            if not nodes:
                continue
            lines = [
                f"[{screen}] {violation['id']} ({violation['impact']}): {violation['help']}",
                f"    {violation['helpUrl']}",
            ]
            for node in nodes:
                summary = " ".join(node["summary"].split())
                lines.append(f"    - {node['target']}: {summary}\n      {node['html']}")
            self.problems.append("\n".join(lines))

    def assert_clean(self) -> None:
        assert self.screens, "axe ran on no screen"
        assert not self.problems, (
            f"{len(self.problems)} serious or critical accessibility violations:\n"
            + "\n".join(self.problems)
        )
